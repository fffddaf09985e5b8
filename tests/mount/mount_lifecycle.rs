//! Daemon lifecycle: readiness, clear errors for bad input, clean stop, crash and
//! remount, and mounting from fstab through mount(8).

use crate::common;

use std::fs;
use std::io::Write;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn bad_input_fails_fast_with_a_clear_message() {
    let drives = Drives::new(4);
    drives.make_bucket("exists");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let file = tmp.path().join("file");
    fs::write(&file, b"").unwrap();
    let m = mnt.to_str().unwrap();
    let bad_drives = format!("{}/sub/d{{1...4}}", file.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--drives", &drives.spec, "local://missing", m], "missing"),
        (vec!["--drives", &drives.spec, "local://exists", "/no/such/dir"], "does not exist"),
        (vec!["--drives", &drives.spec, "local://exists", file.to_str().unwrap()], "not a directory"),
        (vec!["--drives", &bad_drives, "local://exists", m], "sub"),
        (vec!["--bogus-flag", "--drives", &drives.spec, "local://exists", m], "--bogus-flag"),
        (vec!["-o", "allow_othr", "--drives", &drives.spec, "local://exists", m], "allow_othr"),
        (vec!["local://exists", m], "--drives"),
        (vec!["--endpoint", "http://127.0.0.1:1", "gs://bucket", m], "127.0.0.1:1"),
        (vec!["--endpoint", "http://127.0.0.1:9", "s3://bucket", m], "127.0.0.1:9"),
        (vec!["--drives", &drives.spec, "--part-size", "8Q", "local://exists", m], "8Q"),
    ];
    for (args, needle) in cases {
        let (code, stderr, took) = run_bucketfs(&args);
        assert_ne!(code, 0, "{args:?} should fail");
        assert!(stderr.contains(needle), "{args:?}: stderr {stderr:?} should mention {needle:?}");
        assert!(took < Duration::from_secs(5), "{args:?} took {took:?}");
        assert!(!is_mounted(&mnt));
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn daemon_exits_zero_once_live_and_external_umount_ends_it() {
    let drives = Drives::new(4);
    drives.make_bucket("daemon");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let (code, stderr, _) =
        run_bucketfs(&["--drives", &drives.spec, "local://daemon", mnt.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    // live as soon as the parent returned
    assert!(is_mounted(&mnt));
    fs::write(mnt.join("hello"), b"world").unwrap();
    assert_eq!(fs::read(mnt.join("hello")).unwrap(), b"world");
    // a second mount of the same drives is refused (the store is locked) with the holder named
    let mnt2 = tmp.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    let (code, stderr, _) =
        run_bucketfs(&["--drives", &drives.spec, "local://daemon", mnt2.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.to_lowercase().contains("lock") || stderr.contains("in use"), "{stderr}");
    sh(&format!("umount {}", mnt.display()));
    // the daemon notices and exits, releasing the drives
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (code, _, _) =
            run_bucketfs(&["--drives", &drives.spec, "local://daemon", mnt2.to_str().unwrap()]);
        if code == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "drives still locked after umount");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(fs::read(mnt2.join("hello")).unwrap(), b"world");
    sh(&format!("umount {}", mnt2.display()));
}

#[test]
fn sigterm_commits_files_still_open_and_leaves_no_dead_mount() {
    let drives = Drives::new(4);
    drives.make_bucket("term");
    let mut m = Mount::start(&drives, "term", &[]);
    let data = pattern(3 << 20, 5);
    let mut f = fs::File::create(m.path("open-at-stop")).unwrap();
    f.write_all(&data).unwrap();
    // the file is still open when the daemon is asked to stop
    let t = Instant::now();
    assert!(m.stop(), "clean exit on SIGTERM");
    assert!(t.elapsed() < Duration::from_secs(15), "stop took {:?}", t.elapsed());
    assert!(!is_mounted(&m.mnt), "mountpoint left behind");
    assert!(fs::metadata(&m.mnt).unwrap().is_dir(), "mountpoint not usable after stop");
    drop(f);
    let m2 = Mount::start(&drives, "term", &[]);
    assert!(fs::read(m2.path("open-at-stop")).unwrap() == data);
}

#[test]
fn kill_9_mid_write_then_remount_keeps_committed_files_and_no_partial_one() {
    let drives = Drives::new(4);
    drives.make_bucket("crash");
    let mut m = Mount::start(&drives, "crash", &[]);
    let committed = pattern(9 << 20, 1);
    fs::write(m.path("committed"), &committed).unwrap();
    let target = m.path("interrupted");
    let written = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let progress = written.clone();
    let writer = std::thread::spawn(move || {
        let mut f = match fs::File::create(&target) {
            Ok(f) => f,
            Err(_) => return,
        };
        let chunk = pattern(1 << 20, 2);
        for _ in 0..400 {
            if f.write_all(&chunk).is_err() {
                return;
            }
            progress.fetch_add(1 << 20, std::sync::atomic::Ordering::SeqCst);
        }
    });
    // crash well inside the write: after 64 of 400 MiB (several parts uploaded)
    let deadline = Instant::now() + Duration::from_secs(60);
    while written.load(std::sync::atomic::Ordering::SeqCst) < 64 << 20 {
        assert!(Instant::now() < deadline, "writer made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    m.kill9();
    let _ = writer.join();
    assert!(
        drives.pending_uploads("crash") > 0,
        "the interrupted write should have left a multipart upload: {}",
        sh(&format!("find {} | head -40", drives.drive(1).display()))
    );
    // the next mount sweeps uploads older than --stale-upload-age
    let mut m2 = Mount::start(&drives, "crash", &["--stale-upload-age", "1ms"]);
    assert!(fs::read(m2.path("committed")).unwrap() == committed);
    match fs::metadata(m2.path("interrupted")) {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::NotFound),
        // the file may exist only if it was committed whole (e.g. empty at create)
        Ok(md) => assert!(md.len() == 0 || md.len() == 400 << 20, "partial file of {} bytes", md.len()),
    }
    // The sweep runs in the background once mounted: poll (stop, count, mount again,
    // which sweeps again) until it is done, rather than trust a fixed sleep.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        std::thread::sleep(Duration::from_millis(300));
        assert!(m2.stop());
        let left = drives.pending_uploads("crash");
        if left == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "{left} stale upload(s) left behind after 60 s of sweeps");
        m2 = Mount::start(&drives, "crash", &["--stale-upload-age", "1ms"]);
    }
}

#[test]
fn fstab_entry_mounts_with_mount_t() {
    let drives = Drives::new(4);
    drives.make_bucket("fstab");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let fstab = tmp.path().join("fstab");
    // the goofys-style `prog#source` form of type fuse; mount.fuse3 strips _netdev/nofail
    fs::write(
        &fstab,
        format!(
            "{BIN}#local://fstab {} fuse _netdev,nofail,allow_other,--file-mode=0666,uid=1234,--drives={},stat_cache_ttl=5s 0 0\n",
            mnt.display(),
            drives.spec
        ),
    )
    .unwrap();
    sh(&format!("mount -T {} {}", fstab.display(), mnt.display()));
    assert!(is_mounted(&mnt));
    fs::write(mnt.join("x"), b"via fstab").unwrap();
    let md = fs::metadata(mnt.join("x")).unwrap();
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(md.permissions().mode() & 0o777, 0o666);
    assert_eq!(md.uid(), 1234);
    sh(&format!("umount {}", mnt.display()));
    assert!(!is_mounted(&mnt));
}

#[test]
fn a_dead_mountpoint_left_by_kill_9_is_detached_by_the_next_mount() {
    let drives = Drives::new(4);
    drives.make_bucket("deadmount");
    let mut m = Mount::start(&drives, "deadmount", &[]);
    fs::write(m.path("kept"), b"kept").unwrap();
    let pid = m.child.as_ref().unwrap().id() as i32;
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let _ = m.child.take().unwrap().wait();
    let err = fs::metadata(&m.mnt).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOTCONN), "expected a dead mount");
    let (code, stderr, _) =
        run_bucketfs(&["--drives", &drives.spec, "local://deadmount", m.mnt.to_str().unwrap()]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(fs::read(m.path("kept")).unwrap(), b"kept");
    sh(&format!("umount {}", m.mnt.display()));
}

/// Issue 14: a daemon started from a terminal writes its `--log-file` without colour codes
/// (its logging was set up for the terminal, then its stderr became the file).
#[test]
fn a_daemons_log_file_has_no_colour_codes() {
    use std::os::fd::FromRawFd;
    let drives = Drives::new(4);
    drives.make_bucket("colour");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).unwrap();
    let log = tmp.path().join("bucketfs.log");
    // stderr on a pseudo-terminal, as when started by hand
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty fills two descriptors on success; the name and settings are optional.
    let r = unsafe {
        libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), std::ptr::null())
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both descriptors were just opened and are owned here only.
    let (_master, slave) = unsafe { (fs::File::from_raw_fd(master), fs::File::from_raw_fd(slave)) };
    let status = std::process::Command::new(BIN)
        .args(["--drives", &drives.spec, "--debug-fuse", "--log-file", log.to_str().unwrap()])
        .args(["local://colour", mnt.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(slave)
        .status()
        .unwrap();
    assert!(status.success(), "{status}");
    fs::write(mnt.join("f"), b"logged").unwrap();
    assert_eq!(fs::read(mnt.join("f")).unwrap(), b"logged");
    assert!(std::process::Command::new("umount").arg(&mnt).status().unwrap().success());
    let t0 = Instant::now();
    let text = loop {
        let text = fs::read_to_string(&log).unwrap_or_default();
        if text.contains("bucketfs::fs") || t0.elapsed() > Duration::from_secs(10) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(text.contains("bucketfs::fs"), "the log has the --debug-fuse lines: {text}");
    assert!(!text.contains('\x1b'), "colour codes in the log file: {:?}", &text[..text.len().min(300)]);
}

#[test]
fn the_mount_reads_ahead_1_mib_at_a_time() {
    // The kernel caps FUSE read-ahead at its bdi default (128 KiB) whatever `init`
    // asks for; as root the daemon raises its own mount's bdi to 1 MiB (issue 11:
    // a cold sequential read in 128 KiB FUSE reads cost a fifth more daemon CPU).
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipping: only root may set a bdi's read-ahead");
        return;
    }
    let drives = Drives::new(4);
    drives.make_bucket("readahead");
    let m = Mount::start(&drives, "readahead", &[]);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = m.mnt.to_string_lossy();
    let dev = info
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(&want))
        .and_then(|l| l.split(' ').nth(2))
        .expect("the mount in mountinfo")
        .to_string();
    let kib = fs::read_to_string(format!("/sys/class/bdi/{dev}/read_ahead_kb")).unwrap();
    assert_eq!(kib.trim(), "1024", "read-ahead of bdi {dev}");
}

#[test]
fn a_stop_sent_the_moment_the_mount_appears_is_a_clean_stop() {
    // SIGTERM the instant mountinfo shows the mount (a service manager, a test
    // harness): the daemon's handlers must already be in place, or the default action
    // kills it and leaves a dead mountpoint (one CI run of tests/upload_journal).
    let drives = Drives::new(4);
    drives.make_bucket("quickstop");
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).unwrap();
    for round in 0..10 {
        let mut child = std::process::Command::new(BIN)
            .args(["-f", "--drives", &drives.spec, "local://quickstop"])
            .arg(&mnt)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&mnt) && Instant::now() < deadline {
            std::hint::spin_loop();
        }
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let dead = is_mounted(&mnt);
        if dead {
            force_unmount(&mnt);
        }
        assert!(status.success() && !dead, "round {round}: {status}, mount left behind: {dead}");
    }
}
