//! A disk quota is EDQUOT to the application, through a real mount.
//!
//! Issue 14: "the error at close names the cause (EIO for a server error, ENOSPC
//! for a full store, EDQUOT where it applies)". A quota applies where the drives'
//! file system enforces one for the store: here the embedded store's four drives
//! live in a btrfs subvolume (a loop-mounted image) with a 16 MiB qgroup limit,
//! which btrfs enforces for root too and answers with EDQUOT. A 40 MiB file
//! written through a `local://` mount must fail with EDQUOT (not ENOSPC, not EIO)
//! from `write` or `close`, and the mount must go on: after the failure a small
//! file is stored and reads back.
//!
//! Needs root, loop devices and btrfs-progs (`make deps` installs it); without
//! root or /dev/loop-control the test says so and skips, as the tmpfs tests do. (This kernel has no
//! tmpfs, ext4 or XFS quota support; btrfs qgroups are built in.)

use crate::common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{pattern, test_root, Drives, Mount};

/// A loop-mounted btrfs image whose subvolume `sv` has a qgroup limit; unmounted when dropped.
struct QuotaFs {
    mnt: PathBuf,
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.mnt).status();
    }
}

fn run(cmd: &str, args: &[&str]) {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e} (btrfs-progs is installed by `make deps`)"));
    assert!(out.status.success(), "{cmd} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn quota_fs(dir: &Path, limit: &str) -> QuotaFs {
    let image = dir.join("btrfs.img");
    std::fs::File::create(&image).unwrap().set_len(256 << 20).unwrap();
    run("mkfs.btrfs", &["-q", "-f", image.to_str().unwrap()]);
    let mnt = dir.join("fs");
    std::fs::create_dir(&mnt).unwrap();
    run("mount", &["-o", "loop", image.to_str().unwrap(), mnt.to_str().unwrap()]);
    let fs = QuotaFs { mnt };
    let m = fs.mnt.to_str().unwrap();
    run("btrfs", &["quota", "enable", m]);
    run("btrfs", &["subvolume", "create", &format!("{m}/sv")]);
    run("btrfs", &["qgroup", "limit", limit, &format!("{m}/sv")]);
    fs
}

/// Writes `data` and closes; the first error of write, fsync or close.
fn store(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(data)?;
    f.sync_all()
}

#[test]
fn a_drive_quota_is_edquot_and_the_mount_goes_on() {
    if unsafe { libc::geteuid() } != 0 || !std::path::Path::new("/dev/loop-control").exists() {
        eprintln!("skipping: mounting a btrfs image needs root and loop devices");
        return;
    }
    let dir = tempfile::Builder::new().prefix("bfs-quota").tempdir_in(test_root()).unwrap();
    let fs = quota_fs(dir.path(), "16M");
    let drives = Drives::new_in(&fs.mnt.join("sv"), 4);
    drives.make_bucket("quota");
    let m = Mount::start(&drives, "quota", &["--part-size", "5M"]);

    // 2 data + 2 parity shards: 40 MiB needs 80 MiB of the subvolume's 16 MiB
    let err = store(&m.path("big"), &pattern(40 << 20, 1)).expect_err("40 MiB stored under a 16 MiB quota");
    assert_eq!(err.raw_os_error(), Some(libc::EDQUOT), "{err}");

    // the failed upload gave its space back (btrfs counts freed extents at the
    // next transaction commit): a small file fits, and reads back
    run("btrfs", &["filesystem", "sync", fs.mnt.to_str().unwrap()]);
    let small = pattern(1 << 20, 2);
    store(&m.path("small"), &small).expect("a small file after the failure");
    assert_eq!(std::fs::read(m.path("small")).unwrap(), small);
    drop(m);
    drop(drives);
    drop(fs);
}
