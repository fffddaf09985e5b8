//! Writes ride out an outage of the storage service (`--write-timeout`).
//!
//! Issue 14: with the server down for more than 2-3 s, every write in flight
//! failed at `close`. Here a real `bucketfs serve` (own drives, own port) is
//! killed in the middle of a multipart write and of a small file's write and
//! kept down for 30 s; then it is started again on the same drives and port.
//! Through a real FUSE mount with the default write timeout the application
//! only waits: `close` succeeds and the objects hold every byte. A second mount
//! with `--write-timeout 3s` gets EIO at `close` instead of hanging on, and the
//! multipart upload its failed write abandoned is aborted once the server is
//! back, while that mount still runs (not only by the next mount's journal).

use crate::common;
use crate::s3_support;

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use common::{pattern, sh, test_root, Mount};

const MIB: usize = 1 << 20;
const OUTAGE: Duration = Duration::from_secs(30);

/// `bucketfs serve` over `drives` on `port`; its log goes to `log`.
fn start_server(drives: &str, port: u16, log: &Path) -> Child {
    let logf = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    let child = Command::new(common::BIN)
        .args(["serve", "--drives", drives, "--address", &format!("127.0.0.1:{port}")])
        .env("BUCKETFS_ACCESS_KEY", s3_support::ACCESS_KEY)
        .env("BUCKETFS_SECRET_KEY", s3_support::SECRET_KEY)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(logf.try_clone().unwrap())
        .stderr(logf)
        .spawn()
        .unwrap();
    assert!(
        s3_support::wait_own_port(child.id(), port, Duration::from_secs(30)),
        "bucketfs serve did not listen on {port}: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    child
}

fn stop_server(mut child: Child) {
    // SIGKILL: a crashed or cut-off server, not one that finishes its requests
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn writes_wait_for_a_server_that_is_down_for_30_s() {
    s3_support::hermetic_env();
    let dir = tempfile::Builder::new().prefix("bfs-outage").tempdir_in(test_root()).unwrap();
    let drives: Vec<String> =
        (1..=4).map(|i| dir.path().join(format!("d{i}")).display().to_string()).collect();
    let drives = drives.join(",");
    let log = dir.path().join("serve.log");
    let port = s3_support::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let server = start_server(&drives, port, &log);
    let bucket = "outage";
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&endpoint, bucket));

    let source = format!("s3://{bucket}");
    let common_flags = ["--endpoint", endpoint.as_str(), "--region", "us-east-1", "--part-size", "5M"];
    let patient = Mount::try_start_source(&source, &common_flags).unwrap_or_else(|e| panic!("{e}"));
    let mut impatient_flags = common_flags.to_vec();
    impatient_flags.extend(["--write-timeout", "3s"]);
    let impatient = Mount::try_start_source(&source, &impatient_flags).unwrap_or_else(|e| panic!("{e}"));

    // files open before the outage (a lookup of a new name during it fails: reads do
    // not wait); a multipart write stores its first part before the outage, the rest during it
    let big = pattern(23 * MIB, 1);
    let small = pattern(100_000, 2);
    let mut big_file = File::create(patient.path("big")).unwrap();
    let mut small_file = File::create(patient.path("small")).unwrap();
    let mut lost_file = File::create(impatient.path("lost")).unwrap();
    big_file.write_all(&big[..6 * MIB]).unwrap();
    // a multipart upload (its first 5 MiB part stored) that the outage will make fail
    lost_file.write_all(&pattern(6 * MIB, 3)).unwrap();
    thread::sleep(Duration::from_secs(1));
    stop_server(server);
    let rest = big[6 * MIB..].to_vec();
    let big_writer = thread::spawn(move || {
        big_file.write_all(&rest)?;
        big_file.sync_all()
    });
    let small_writer = {
        let data = small.clone();
        thread::spawn(move || {
            small_file.write_all(&data)?;
            small_file.sync_all()
        })
    };
    // the mount that may wait 3 s gives up while the server is still down
    lost_file.write_all(&pattern(1000, 3)).unwrap();
    let err = lost_file
        .sync_all()
        .expect_err("a write with --write-timeout 3s succeeded while the server was down");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    assert!(!big_writer.is_finished() && !small_writer.is_finished(), "writes did not wait for the server");

    thread::sleep(OUTAGE);
    let server = start_server(&drives, port, &log);
    big_writer.join().unwrap().expect("the multipart write failed although the server came back");
    small_writer.join().unwrap().expect("the small write failed although the server came back");

    // the failed write's upload goes away while its mount still runs
    let pending = || {
        let out = Command::new(common::BIN)
            .args(["uploads", "list", &source, "--endpoint", &endpoint, "--region", "us-east-1"])
            .output()
            .unwrap();
        assert!(out.status.success(), "uploads list: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let list = pending();
        if list.ends_with("0 pending upload(s)\n") {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the abandoned upload is still there: {list}");
        thread::sleep(Duration::from_secs(1));
    }

    let stats = sh(&format!("{} stats {}", common::BIN, patient.mnt.display()));
    let retries = stats.lines().find_map(|l| l.strip_prefix("retries ")).unwrap_or("0");
    assert!(retries.parse::<u64>().unwrap() > 0, "no retries counted: {stats}");

    // what the server holds now, read through a fresh mount
    drop(patient);
    drop(lost_file);
    drop(impatient);
    let check = Mount::try_start_source(&source, &common_flags).unwrap_or_else(|e| panic!("{e}"));
    assert!(std::fs::read(check.path("big")).unwrap() == big, "big differs");
    assert_eq!(std::fs::read(check.path("small")).unwrap(), small);
    drop(check);
    stop_server(server);
}
