//! The mount's upload journal: a daemon killed with SIGKILL mid-upload leaves a
//! multipart upload on the server; the next mount of the same bucket aborts it at
//! once (the age-based sweep is switched off here), and leaves alone the upload of
//! another writer that is still alive.

use crate::common;
use crate::s3_support;

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfs::backend::MultipartStore;
use common::*;

/// Writes 400 MiB to `path` from a thread; returns the bytes-written counter.
fn slow_big_write(path: std::path::PathBuf) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let written = Arc::new(AtomicU64::new(0));
    let progress = written.clone();
    let t = std::thread::spawn(move || {
        let Ok(mut f) = std::fs::File::create(&path) else { return };
        let chunk = pattern(1 << 20, 2);
        for _ in 0..400 {
            if f.write_all(&chunk).is_err() {
                return;
            }
            progress.fetch_add(1 << 20, Ordering::SeqCst);
        }
    });
    (written, t)
}

fn wait_for(written: &AtomicU64, bytes: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while written.load(Ordering::SeqCst) < bytes {
        assert!(Instant::now() < deadline, "writer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn next_mount_aborts_a_killed_daemons_uploads_and_spares_a_live_writers() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("journal");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let s3 = rt.block_on(s3_support::backend(&gw.endpoint, &bucket));
    let cache = tempfile::tempdir_in(test_root()).unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_owned();
    let source = format!("s3://{bucket}");
    let flags =
        ["--endpoint", gw.endpoint.as_str(), "--stale-upload-age", "0", "--cache-dir", cache_dir.as_str()];

    // another writer's upload, alive throughout
    let (code, err, _) =
        run_bucketfs(&["upload", "start", &format!("{source}/other"), "--endpoint", &gw.endpoint]);
    assert_eq!(code, 0, "{err}");

    let mut m = Mount::try_start_source(&source, &flags).unwrap_or_else(|e| panic!("{e}"));
    let (written, writer) = slow_big_write(m.path("interrupted"));
    wait_for(&written, 48 << 20);
    m.kill9();
    let _ = writer.join();
    let pending = rt.block_on(s3.list_multipart("")).unwrap();
    assert!(
        pending.iter().any(|u| u.key == "interrupted"),
        "no upload left by the killed daemon: {pending:?}"
    );

    let mut m2 = Mount::try_start_source(&source, &flags).unwrap_or_else(|e| panic!("{e}"));
    let pending = rt.block_on(s3.list_multipart("")).unwrap();
    let keys: Vec<&str> = pending.iter().map(|u| u.key.as_str()).collect();
    assert_eq!(keys, vec!["other"], "the next mount must abort exactly the dead daemon's uploads");
    assert!(m2.stop());
}

#[test]
fn embedded_store_next_mount_leaves_no_pending_upload() {
    let drives = Drives::new(4);
    drives.make_bucket("journal");
    let cache = tempfile::tempdir_in(test_root()).unwrap();
    let cache_dir = cache.path().to_str().unwrap().to_owned();
    let flags = ["--stale-upload-age", "0", "--cache-dir", cache_dir.as_str()];
    let mut m = Mount::start(&drives, "journal", &flags);
    let (written, writer) = slow_big_write(m.path("interrupted"));
    wait_for(&written, 48 << 20);
    m.kill9();
    let _ = writer.join();
    assert!(drives.pending_uploads("journal") > 0, "the killed daemon left no upload");
    let mut m2 = Mount::start(&drives, "journal", &flags);
    assert!(m2.stop());
    assert_eq!(drives.pending_uploads("journal"), 0, "the next mount left the dead daemon's upload");
}
