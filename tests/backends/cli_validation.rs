//! Issue 14: command-line input is checked before anything is mounted, and the errors
//! name what is wrong: `--part-size` outside the backend's limits (with the limits),
//! a bucket name against S3's naming rules (with the rule), and an endpoint that never
//! answers (with its address, within 5 s).

use crate::common;
use crate::s3_support;

use std::fs;
use std::net::TcpListener;
use std::time::Duration;

use common::*;

/// A mountpoint in its own temp dir.
fn mountpoint() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap().to_owned();
    (tmp, m)
}

fn assert_fails_fast(args: &[&str], env: &[(&str, Option<&str>)], needles: &[&str]) {
    let (code, stderr, took) = run_bucketfs_env(args, env);
    assert_ne!(code, 0, "{args:?} should fail");
    for n in needles {
        assert!(stderr.contains(n), "{args:?}: stderr {stderr:?} should mention {n:?}");
    }
    assert!(took < Duration::from_secs(5), "{args:?} took {took:?}: {stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// Credentials in the environment, so no credential discovery (IMDS, SSO) takes time.
const AWS_ENV: &[(&str, Option<&str>)] = &[
    ("AWS_ACCESS_KEY_ID", Some(s3_support::ACCESS_KEY)),
    ("AWS_SECRET_ACCESS_KEY", Some(s3_support::SECRET_KEY)),
    ("AWS_REGION", Some("us-east-1")),
    ("AWS_EC2_METADATA_DISABLED", Some("true")),
    ("AWS_PROFILE", None),
    ("AWS_CONFIG_FILE", Some("/dev/null")),
    ("AWS_SHARED_CREDENTIALS_FILE", Some("/dev/null")),
];

#[test]
fn part_size_outside_the_backends_limits_is_refused_with_the_limits() {
    let drives = Drives::new(4);
    drives.make_bucket("parts");
    let (_tmp, m) = mountpoint();
    for size in ["0", "1", "4M", "6G", "9000000T"] {
        let args = ["--drives", &drives.spec, "--part-size", size, "local://parts", &m];
        assert_fails_fast(&args, &[], &["--part-size", "5M to 5G"]);
    }
    // over S3 (bucketfs serve), the same limits are S3's
    let g = s3_support::gateway();
    let bucket = s3_support::unique_bucket("parts");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&g.endpoint, &bucket));
    let src = format!("s3://{bucket}");
    let args = ["--endpoint", &g.endpoint, "--part-size", "1M", &src, &m];
    assert_fails_fast(&args, AWS_ENV, &["--part-size 1M", "s3", "5M to 5G"]);
    // at the limit: mounts
    let (code, stderr, _) =
        run_bucketfs(&["--drives", &drives.spec, "--part-size", "5M", "local://parts", &m]);
    assert_eq!(code, 0, "{stderr}");
    sh(&format!("umount {m}"));
}

#[test]
fn s3_bucket_names_are_checked_against_the_naming_rules() {
    let (_tmp, m) = mountpoint();
    let g = s3_support::gateway();
    // never valid: refused before any request
    for (name, rule) in [("ab", "3 to 63"), ("bad!name", "only lowercase letters")] {
        let src = format!("s3://{name}");
        assert_fails_fast(&["--endpoint", "http://127.0.0.1:9", &src, &m], AWS_ENV, &[name, rule]);
    }
    // valid on some servers (legacy AWS buckets, relaxed servers): tried, and the rule is
    // named when the server refuses
    for (name, rule) in [("Bad_Bucket", "capitals"), ("bad_bucket", "no '_'"), ("-abc", "begin and end")] {
        let src = format!("s3://{name}");
        assert_fails_fast(
            &["--endpoint", &g.endpoint, &src, &m],
            AWS_ENV,
            &[name, "breaks an S3 naming rule", rule],
        );
    }
}

/// Accepts connections and never answers (what a hung server or a wrong port that
/// happens to listen looks like).
fn silent_server() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let held = l.try_clone().unwrap();
    std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in held.incoming().flatten() {
            conns.push(c); // held open, never read or answered
        }
    });
    (l, port)
}

/// A blackhole on 127.0.0.1 (no route to test one for real: sandboxes intercept or
/// refuse outside addresses): a listening socket whose accept queue is full and never
/// drained, so the kernel drops further SYNs and a connect hangs until it times out.
/// Returns the port and what must stay alive.
fn blackhole() -> (u16, std::os::fd::OwnedFd, Vec<std::net::TcpStream>) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain socket calls on a descriptor owned here; sockaddr_in is fully set.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let owned = std::os::fd::OwnedFd::from_raw_fd(fd);
        let mut addr: libc::sockaddr_in = std::mem::zeroed();
        addr.sin_family = libc::AF_INET as libc::sa_family_t;
        addr.sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 1]);
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        assert_eq!(libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len), 0);
        assert_eq!(libc::listen(fd, 0), 0);
        let mut got_len = len;
        libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut got_len);
        let port = u16::from_be(addr.sin_port);
        let mut fill = Vec::new();
        let to = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        while let Ok(s) = std::net::TcpStream::connect_timeout(&to, Duration::from_millis(300)) {
            fill.push(s);
            assert!(fill.len() < 64, "the accept queue never filled");
        }
        (port, owned, fill)
    }
}

#[test]
fn a_silent_endpoint_fails_the_mount_within_5_s_naming_its_address() {
    let (_tmp, m) = mountpoint();
    let (_server, port) = silent_server();
    let addr = format!("127.0.0.1:{port}");
    let endpoint = format!("http://{addr}");
    let home = tempfile::tempdir().unwrap();
    let home = home.path().to_str().unwrap();
    assert_fails_fast(&["--endpoint", &endpoint, "s3://silent", &m], AWS_ENV, &[&addr]);
    let gcs_env = [("HOME", Some(home)), ("GOOGLE_APPLICATION_CREDENTIALS", None)];
    assert_fails_fast(&["--endpoint", &endpoint, "--no-sign-request", "gs://silent", &m], &gcs_env, &[&addr]);
    let az_endpoint = format!("{endpoint}/devstoreaccount1");
    let az_env = [
        ("AZURE_STORAGE_ACCOUNT", Some("devstoreaccount1")),
        ("AZURE_STORAGE_KEY", Some("Zm9vYmFy")),
        ("HOME", Some(home)),
    ];
    assert_fails_fast(&["--endpoint", &az_endpoint, "wasb://silent", &m], &az_env, &[&addr]);
    // a blackholed address (SYNs dropped): named too, within 5 s
    let (port, _socket, _fill) = blackhole();
    let addr = format!("127.0.0.1:{port}");
    assert_fails_fast(&["--endpoint", &format!("http://{addr}"), "s3://silent", &m], AWS_ENV, &[&addr]);
    assert!(!is_mounted(std::path::Path::new(&m)));
}

/// `--scanner-speed` takes gentle, fast, max, off or a percentage 1-100 for
/// mounts (also as `-o scanner_speed=`) and `bucketfs serve`; anything else is
/// refused before the store is opened, naming the value and what is accepted.
#[test]
fn scanner_speed_is_parsed_and_bad_values_are_refused() {
    let drives = Drives::new(4);
    drives.make_bucket("pace");
    let (_tmp, m) = mountpoint();
    for bad in ["fastest", "0", "101", "-5", "nan", "10%%", ""] {
        let flag = format!("--scanner-speed={bad}");
        let args = ["--drives", &drives.spec, &flag, "local://pace", &m];
        assert_fails_fast(&args, &[], &["--scanner-speed", "gentle", "percentage 1-100"]);
        let args = ["serve", "--drives", &drives.spec, &flag, "--address", "127.0.0.1:1"];
        assert_fails_fast(&args, &[], &["--scanner-speed", "gentle", "percentage 1-100"]);
    }
    assert!(!is_mounted(std::path::Path::new(&m)));
    // good values get past parsing: serve then fails on its address, not the speed
    for good in ["gentle", "FAST", "max", "off", "25", "2.5%"] {
        let args =
            ["serve", "--drives", &drives.spec, "--scanner-speed", good, "--address", "not-an-address"];
        let (code, stderr, _) = run_bucketfs_env(
            &args,
            &[("BUCKETFS_ACCESS_KEY", Some("k")), ("BUCKETFS_SECRET_KEY", Some("secretsecret"))],
        );
        assert_ne!(code, 0);
        assert!(stderr.contains("--address") && !stderr.contains("scanner"), "{good}: {stderr}");
    }
    // and mounts come up with a speed given either way
    for extra in [&["--scanner-speed", "off"][..], &["-o", "scanner_speed=30%"][..]] {
        let mut mnt = Mount::start(&drives, "pace", extra);
        fs::write(mnt.path("f"), b"x").unwrap();
        assert_eq!(fs::read(mnt.path("f")).unwrap(), b"x");
        assert!(mnt.stop());
    }
}
