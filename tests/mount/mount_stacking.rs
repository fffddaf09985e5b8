//! Issue 14: mounting on a path that is already a mount point is refused with a clear
//! message and a non-zero exit (a duplicate fstab line must not hide the real bucket,
//! and one `umount` must not take two mounts down), unless `--allow-stacking` (fstab:
//! `allow_stacking`) asks for it; the first mount keeps working either way.

use crate::common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::*;

/// How many mounts sit on `mnt`.
fn mounts_on(mnt: &Path) -> usize {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mnt.to_string_lossy();
    info.lines().filter(|l| l.split(' ').nth(4) == Some(&want)).count()
}

#[test]
fn a_second_mount_on_a_live_mountpoint_is_refused_and_the_first_keeps_working() {
    let (a, b) = (Drives::new(4), Drives::new(4));
    a.make_bucket("first");
    b.make_bucket("second");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let (code, stderr, _) = run_bucketfs(&["--drives", &a.spec, "local://first", m]);
    assert_eq!(code, 0, "{stderr}");
    fs::write(mnt.join("from-first"), b"first bucket").unwrap();

    // daemonized, foreground, and through fstab options: all refused, fast, naming the mount
    for extra in [&[][..], &["-f"][..], &["-o", "rw,nofail,_netdev"][..]] {
        let mut args = vec!["--drives", &b.spec];
        args.extend_from_slice(extra);
        args.extend(["local://second", m]);
        let (code, stderr, took) = run_bucketfs(&args);
        assert_ne!(code, 0, "{args:?} stacked a second mount: {stderr}");
        assert!(stderr.contains("already a mount point"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("local://first") && stderr.contains("--allow-stacking"),
            "{args:?}: {stderr}"
        );
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert_eq!(mounts_on(&mnt), 1, "{args:?}");
        // the first mount is untouched and still serves reads and writes
        assert_eq!(fs::read(mnt.join("from-first")).unwrap(), b"first bucket");
        fs::write(mnt.join("still-writable"), b"yes").unwrap();
    }

    // asked for explicitly (fstab spelling): stacked on top; unmounting it uncovers the first
    let (code, stderr, _) = run_bucketfs(&["--drives", &b.spec, "-o", "allow_stacking", "local://second", m]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(mounts_on(&mnt), 2);
    assert!(!mnt.join("from-first").exists(), "the second mount should be the one seen");
    fs::write(mnt.join("from-second"), b"second bucket").unwrap();
    sh(&format!("umount {m}"));
    assert_eq!(mounts_on(&mnt), 1);
    assert_eq!(fs::read(mnt.join("from-first")).unwrap(), b"first bucket");
    assert!(!mnt.join("from-second").exists());
    sh(&format!("umount {m}"));
    assert_eq!(mounts_on(&mnt), 0);
}

/// Any file system counts, not only bucketfs: a tmpfs mounted on the mountpoint is refused too.
#[test]
fn a_mountpoint_with_another_file_system_on_it_is_refused() {
    let drives = Drives::new(4);
    drives.make_bucket("overtmpfs");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    sh(&format!("mount -t tmpfs -o size=1m bfs-test-tmpfs {m}"));
    fs::write(mnt.join("on-tmpfs"), b"t").unwrap();
    let (code, stderr, _) = run_bucketfs(&["--drives", &drives.spec, "local://overtmpfs", m]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("already a mount point") && stderr.contains("tmpfs"), "{stderr}");
    assert_eq!(mounts_on(&mnt), 1);
    assert_eq!(fs::read(mnt.join("on-tmpfs")).unwrap(), b"t");
    sh(&format!("umount {m}"));
}
