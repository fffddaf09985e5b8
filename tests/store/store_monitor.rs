//! The replaced-drive monitor against a running `bucketfs serve`: a drive
//! wiped under the server (an empty directory in its place) is formatted into
//! its slot and healed without any manual command, with its progress in the
//! serve log and in `bucketfs heal --status`; the healed drive then carries
//! real shards (the data reads back with two *other* drives gone).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bucketfs::backend::{GetOptions, PutOptions};
use bucketfs::store::{Store, StoreConfig};

const BIN: &str = env!("CARGO_BIN_EXE_bucketfs");

fn body(i: usize) -> Vec<u8> {
    let len = [50, 200 * 1024, 2 * 1024 * 1024 + 3][i % 3];
    (0..len).map(|j| (j * 7 + i * 13) as u8).collect()
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn heal_status(spec: &str) -> String {
    let out = Command::new(BIN).args(["heal", "--status", "--drives", spec]).output().unwrap();
    assert!(out.status.success(), "heal --status: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn drive_wiped_under_serve_is_restored_by_the_monitor() {
    let tmp = tempfile::tempdir().unwrap();
    let d: Vec<PathBuf> = (1..=6).map(|i| tmp.path().join(format!("d{i}"))).collect();
    let spec = format!("{}/d{{1...6}}", tmp.path().display());
    let s = Store::open(StoreConfig { drives: d.clone(), parity: None }).unwrap();
    s.make_bucket("bkt").unwrap();
    for i in 0..30 {
        s.put_object("bkt", &format!("obj/{i}"), &body(i), &PutOptions::default()).unwrap();
    }
    s.close();
    drop(s);
    assert!(heal_status(&spec).contains("no replaced drive"));

    let log = tmp.path().join("serve.log");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut serve = Command::new(BIN)
        .args(["serve", "--drives", &spec, "--address", &format!("127.0.0.1:{port}")])
        .env("BUCKETFS_ACCESS_KEY", "monitor-key")
        .env("BUCKETFS_SECRET_KEY", "monitor-secret")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    wait_until("serve listening", Duration::from_secs(30), || {
        assert!(serve.try_wait().unwrap().is_none(), "serve exited: {}", read(&log));
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    // The disk dies and an empty one is mounted in its place.
    std::fs::remove_dir_all(&d[2]).unwrap();
    std::fs::create_dir(&d[2]).unwrap();
    wait_until("replaced drive formatted", Duration::from_secs(10), || {
        d[2].join(".bucketfs.sys/format.json").exists()
    });
    wait_until("heal finished", Duration::from_secs(120), || heal_status(&spec).contains(": done"));
    let status = heal_status(&spec);
    assert!(
        status.contains(&format!("{}: done (30 objects scanned, 30 healed, 0 failed", d[2].display())),
        "{status}"
    );
    let text = read(&log);
    assert!(text.contains("replaced drive detected"), "serve log: {text}");
    assert!(text.contains("heal of replaced drive finished"), "serve log: {text}");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(serve.id() as i32, libc::SIGTERM) };
    assert!(serve.wait().unwrap().success());

    // The rebuilt drive is real: lose two others and everything still reads.
    for i in [0, 4] {
        std::fs::remove_dir_all(&d[i]).unwrap();
    }
    // Opening formats the two as empty replacements; until healed they answer
    // nothing, so every read needs the four others, the rebuilt d3 among them.
    let s = Store::open(StoreConfig { drives: d.clone(), parity: None }).unwrap();
    for i in 0..30 {
        let (_, got) = s.get_object("bkt", &format!("obj/{i}"), None, &GetOptions::default()).unwrap();
        assert!(got == body(i), "obj/{i} differs after the heal");
    }
    s.close();
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}
