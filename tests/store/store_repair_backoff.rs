//! A full drive makes background repair back off (issue 14): heals onto a
//! drive whose write failed pause for 1 s doubling to 5 min, and log once per
//! pause, instead of retrying onto it once per object in a tight loop (the
//! issue counted 476 log lines). Reads meanwhile go on from the other drives.
//!
//! Uses a real store with one small tmpfs drive filled to the brim (root);
//! skipped with a message otherwise. Counts come from the store's own log
//! lines, captured by a tracing subscriber installed for this binary.

use crate::common;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucketfs::backend::{GetOptions, PutOptions};
use bucketfs::store::{Store, StoreConfig};
use common::tmpfs;

/// The log, kept in memory so the test can count lines.
#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Capture {
    fn count(&self, needle: &str) -> usize {
        String::from_utf8_lossy(&self.0.lock().unwrap()).lines().filter(|l| l.contains(needle)).count()
    }
}

const OBJECTS: usize = 64;

#[test]
fn heal_on_read_backs_off_from_a_full_drive() {
    let tmp = tempfile::tempdir().unwrap();
    let d: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("disk{i}"))).collect();
    let Some(m0) = tmpfs(&d[0], "2m") else {
        eprintln!("skipping: cannot mount tmpfs here");
        return;
    };
    let log = Capture::default();
    let w = log.clone();
    tracing_subscriber::fmt()
        .with_env_filter("bucketfs=debug")
        .with_ansi(false)
        .with_writer(move || w.clone())
        .init();

    let s = Store::open(StoreConfig { drives: d.clone(), parity: Some(1) }).unwrap();
    s.make_bucket("bkt").unwrap();
    // Fill disk0 completely: every shard and metadata write to it now fails with ENOSPC.
    let mut filler = std::fs::File::create(d[0].join("filler")).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while filler.write_all(&chunk).is_ok() {}
    drop(filler);

    let body = |i: usize| vec![i as u8; 48 << 10];
    let start = Instant::now();
    for i in 0..OBJECTS {
        // 3 + 1: the full drive's shard fails, the write still has its quorum.
        s.put_object("bkt", &format!("k{i}"), &body(i), &PutOptions::default()).unwrap();
    }
    // Every read finds disk0's copy missing and queues a heal-on-read.
    for i in 0..OBJECTS {
        let got = s.get_object("bkt", &format!("k{i}"), None, &GetOptions::default()).unwrap().1;
        assert_eq!(got, body(i), "k{i}");
    }
    // Wait until the background worker has handled each queued heal (writes
    // that missed a shard queue one too): it either tried (and logged "healing
    // object") or skipped the paused drive.
    let queued = log.count("queueing heal");
    assert!(queued >= OBJECTS, "reads queued {queued} heals");
    let deadline = Instant::now() + Duration::from_secs(60);
    let handled = || log.count("healing object") + log.count("repair onto drive paused; skipped");
    while handled() < queued && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = start.elapsed().as_secs_f64();
    assert!(handled() >= queued, "only {} of {queued} heals handled", handled());

    let failures = log.count("repair onto drive failed; pausing repairs onto it");
    let heal_failed = log.count("background heal failed");
    let attempts = log.count("healing object");
    // One attempt per backoff step that could have ended within the run
    // (pauses of 1, 2, 4 ... s), plus the first: with 64 objects and no backoff
    // every read would have retried onto the full drive.
    let steps = (elapsed + 1.0).log2().floor() as usize + 1;
    eprintln!("{OBJECTS} heals in {elapsed:.1}s: {attempts} attempts, {failures} backoff lines, {heal_failed} heal failures");
    assert!(failures >= 1, "no repair was tried onto the full drive");
    assert!(failures <= steps + 1, "{failures} failed repairs onto the full drive (allowed {})", steps + 1);
    assert!(attempts <= steps + 1, "{attempts} repair attempts (allowed {})", steps + 1);
    assert!(heal_failed <= steps + 1, "{heal_failed} heal failures logged (allowed {})", steps + 1);
    assert!(attempts < OBJECTS / 4);

    // Everything still reads while repair is paused.
    for i in 0..OBJECTS {
        assert_eq!(s.get_object("bkt", &format!("k{i}"), None, &GetOptions::default()).unwrap().1, body(i));
    }
    // A full pass over a paused drive does not claim it healed.
    let sum = s.heal(Some("bkt"), false).unwrap();
    assert!(sum.failed > 0, "{sum}");
    s.close();
    drop(s);
    drop(m0);
}
