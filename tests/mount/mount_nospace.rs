//! A full store is ENOSPC to the application, through a real mount.
//!
//! Issue 14 saw a full drive reported as EIO. Here the embedded store's four
//! drives are 16 MiB tmpfs mounts (root only; skipped with a message
//! otherwise); a file larger than the drives can hold is written through a
//! `local://` mount with the default write timeout, and the application must
//! get ENOSPC (no retries: a full drive is not an outage) from `write` or
//! `close`, and the mount must stay usable: the space is freed again and a
//! small file is stored afterwards.

use crate::common;

use std::io::Write;
use std::path::Path;

use common::{pattern, test_root, tmpfs, Drives, Mount};

/// Writes `data` and closes; the first error of write, fsync or close.
fn store(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn a_full_store_is_enospc_and_the_mount_goes_on() {
    let dir = tempfile::Builder::new().prefix("bfs-nospace").tempdir_in(test_root()).unwrap();
    let mut drives_mounted = Vec::new();
    for i in 1..=4 {
        match tmpfs(&dir.path().join(format!("d{i}")), "16m") {
            Some(t) => drives_mounted.push(t),
            None => {
                eprintln!("skipping: cannot mount tmpfs here (needs root)");
                return;
            }
        }
    }
    let spec = format!("{}/d{{1...4}}", dir.path().display());
    let drives = Drives { dir, spec };
    drives.make_bucket("full");
    let m = Mount::start(&drives, "full", &["--part-size", "5M"]);

    // 2 data + 2 parity shards: 40 MiB needs 20 MiB on each 16 MiB drive
    let err = store(&m.path("big"), &pattern(40 << 20, 1)).expect_err("40 MiB stored on 4 x 16 MiB drives");
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");

    // the failed upload gave its space back: a small file fits, and reads back
    let small = pattern(1 << 20, 2);
    store(&m.path("small"), &small).expect("a small file after the failure");
    assert_eq!(std::fs::read(m.path("small")).unwrap(), small);
    drop(m);
    drop(drives_mounted);
}
