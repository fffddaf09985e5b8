//! `--memory-limit` bounds the daemon's resident memory, not only its bookkeeping.
//!
//! Issue 14 measured 587 MB peak RSS at `--memory-limit 256M` with four 1 GiB
//! writers and four random readers, and 491 MB still resident afterwards: a
//! container sized to the limit would be OOM-killed with uncommitted writes.
//! Here the same load runs through a real FUSE mount of the embedded store
//! (which runs in the daemon, so its encode and read buffers count too), and the
//! kernel's own high-water mark (`VmHWM` in /proc/PID/status) must stay under the
//! limit plus 64 MiB; once the load stops, resident memory must fall back.

use crate::common;

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::{pattern, test_root, tmpfs, Drives, Mount};
use rand::{rngs::StdRng, Rng, SeedableRng};

const MIB: usize = 1 << 20;
const LIMIT_MIB: u64 = 256;
/// What the daemon may hold beyond its budget: code, stacks, caches, requests the
/// kernel has in flight.
const SLACK_MIB: u64 = 64;
const WRITERS: u64 = 4;
const WRITER_MIB: usize = 1024;
const READERS: u64 = 4;
const READER_FILE_MIB: usize = 256;

/// A field of /proc/PID/status, in KiB.
fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Writes `mib` MiB made of one repeated 1 MiB block (so any byte can be checked).
fn write_file(path: std::path::PathBuf, mib: usize, block: Arc<Vec<u8>>) {
    let mut f = File::create(&path).unwrap();
    for _ in 0..mib {
        f.write_all(&block).unwrap();
    }
    // close commits: an error here would be a lost write
    f.sync_all().unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

fn check(block: &[u8], offset: u64, got: &[u8]) {
    for (i, b) in got.iter().enumerate() {
        let want = block[((offset + i as u64) % MIB as u64) as usize];
        assert_eq!(*b, want, "byte {} differs", offset + i as u64);
    }
}

#[test]
fn rss_stays_under_the_limit_with_writers_and_random_readers() {
    // 5 GiB written, 10 GiB stored with parity: on disk that once filled a shared CI
    // disk and failed this and a concurrent SeaweedFS test; in RAM (a tmpfs, whose pages
    // are not the daemon's RSS) where the test may mount one. The test runs alone
    // (.config/nextest.toml).
    let scratch = test_root().join(format!("mem-{}", std::process::id()));
    let _tmpfs = tmpfs(&scratch, "11g");
    let drives = Drives::new_in(&scratch, 4);
    drives.make_bucket("mem");
    let limit = format!("{LIMIT_MIB}M");
    let m = Mount::start(&drives, "mem", &["--memory-limit", &limit]);
    let pid = m.child.as_ref().unwrap().id();
    let blocks: Vec<Arc<Vec<u8>>> = (0..8).map(|s| Arc::new(pattern(MIB, 100 + s))).collect();

    let setup: Vec<_> = (0..READERS)
        .map(|i| {
            let (path, block) = (m.path(&format!("r{i}")), blocks[i as usize].clone());
            thread::spawn(move || write_file(path, READER_FILE_MIB, block))
        })
        .collect();
    setup.into_iter().for_each(|t| t.join().unwrap());

    let writing = Arc::new(AtomicBool::new(true));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (path, block) = (m.path(&format!("r{i}")), blocks[i as usize].clone());
            let (writing, reads) = (writing.clone(), reads.clone());
            thread::spawn(move || {
                let f = File::open(&path).unwrap();
                let size = f.metadata().unwrap().len();
                let mut rng = StdRng::seed_from_u64(i);
                let mut buf = vec![0u8; MIB];
                // at least 200 reads each, and on until the writers are done
                let mut n = 0;
                while n < 200 || writing.load(Ordering::SeqCst) {
                    let len = [4096, 65536, MIB][rng.gen_range(0..3)];
                    let offset = rng.gen_range(0..size - len as u64);
                    f.read_exact_at(&mut buf[..len], offset).unwrap();
                    check(&block, offset, &buf[..len]);
                    n += 1;
                }
                reads.fetch_add(n, Ordering::SeqCst);
            })
        })
        .collect();
    let writers: Vec<_> = (0..WRITERS)
        .map(|i| {
            let (path, block) = (m.path(&format!("w{i}")), blocks[(READERS + i) as usize].clone());
            thread::spawn(move || write_file(path, WRITER_MIB, block))
        })
        .collect();
    writers.into_iter().for_each(|t| t.join().unwrap());
    writing.store(false, Ordering::SeqCst);
    readers.into_iter().for_each(|t| t.join().unwrap());

    let peak_mib = status_kib(pid, "VmHWM") / 1024;
    eprintln!("peak RSS {peak_mib} MiB, {} random reads", reads.load(Ordering::SeqCst));
    assert!(
        peak_mib < LIMIT_MIB + SLACK_MIB,
        "peak RSS {peak_mib} MiB with --memory-limit {LIMIT_MIB}M (allowed: {} MiB)",
        LIMIT_MIB + SLACK_MIB
    );

    // everything written is there, byte for byte where sampled
    for i in 0..WRITERS {
        let f = File::open(m.path(&format!("w{i}"))).unwrap();
        assert_eq!(f.metadata().unwrap().len(), (WRITER_MIB * MIB) as u64);
        let mut buf = vec![0u8; 4096];
        for offset in [0, 123_456_789, (WRITER_MIB * MIB - 4096) as u64] {
            f.read_exact_at(&mut buf, offset).unwrap();
            check(&blocks[(READERS + i) as usize], offset, &buf);
        }
    }

    // idle: freed buffers go back to the kernel (the trimmer runs after 2 quiet seconds)
    let idle_limit_kib = 96 * 1024;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut rss = status_kib(pid, "VmRSS");
    while rss >= idle_limit_kib && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(500));
        rss = status_kib(pid, "VmRSS");
    }
    assert!(rss < idle_limit_kib, "{} MiB still resident after the load ended", rss / 1024);
}
