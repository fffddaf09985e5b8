//! POSIX rules through a real mount (issue 12): special files, an unlinked file
//! still open, parent directory times, path and size limits, errno of the
//! namespace operations, O_SYNC and fsyncdir, and the size after
//! write/truncate/close/reopen/truncate 2,000 times with and without mmap; directory
//! link counts, times of an O_TRUNC open, the key limit under a `bucket:prefix`
//! mount, a renamed file still open for reading, and other users' new entries.
//! Embedded store (`local://`) and S3 over `bucketfs serve`. The same rules on
//! the in-memory backend: src/fs/tests/posix.rs.

use crate::common;
use crate::s3_support;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

fn errno_of<T>(r: std::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error().unwrap_or(-1),
    }
}

fn last_errno(rc: libc::c_int) -> i32 {
    if rc == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn s3_mount(extra: &[&str]) -> impl Fn() -> Mount {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("posix");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let endpoint = gw.endpoint.clone();
    let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
    move || {
        let mut args = vec!["--endpoint", &endpoint, "--region", "us-east-1"];
        args.extend(extra.iter().map(String::as_str));
        Mount::try_start_source(&format!("s3://{bucket}"), &args).unwrap_or_else(|e| panic!("{e}"))
    }
}

/// `type rdev mode` of a path, as stat(2) shows it.
fn kind_of(p: &Path) -> String {
    let m = fs::symlink_metadata(p).unwrap();
    let t = m.file_type();
    let kind = if t.is_fifo() {
        "fifo"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "char"
    } else if t.is_block_device() {
        "block"
    } else if t.is_file() {
        "file"
    } else {
        "other"
    };
    format!("{kind} {:#x} {:o}", m.rdev(), m.mode() & 0o7777)
}

fn special_files(start: impl Fn() -> Mount) {
    let mut m = start();
    let d = m.path("special");
    fs::create_dir(&d).unwrap();
    unsafe {
        assert_eq!(libc::mkfifo(cpath(&d.join("fifo")).as_ptr(), 0o640), 0, "mkfifo");
        let dev = libc::makedev(1, 3);
        assert_eq!(last_errno(libc::mknod(cpath(&d.join("null")).as_ptr(), libc::S_IFCHR | 0o600, dev)), 0);
        let dev = libc::makedev(8, 1);
        assert_eq!(last_errno(libc::mknod(cpath(&d.join("disk")).as_ptr(), libc::S_IFBLK | 0o600, dev)), 0);
    }
    let sock = std::os::unix::net::UnixListener::bind(d.join("sock")).expect("bind a Unix socket");
    drop(sock);
    // a FIFO works between processes of this machine
    let fifo = d.join("fifo");
    let writer = std::thread::spawn(move || fs::write(fifo, b"through the pipe").unwrap());
    assert_eq!(fs::read(d.join("fifo")).unwrap(), b"through the pipe");
    writer.join().unwrap();
    let names = ["disk", "fifo", "null", "sock"];
    let before: Vec<String> = names.iter().map(|n| kind_of(&d.join(n))).collect();
    assert_eq!(before, ["block 0x801 600", "fifo 0x0 640", "char 0x103 600", "socket 0x0 755"]);
    // hard links stay refused, clearly
    assert_eq!(errno_of(fs::hard_link(d.join("fifo"), d.join("again"))), libc::ENOTSUP);
    assert!(m.stop(), "clean stop:\n{}", m.log_text());

    let m2 = start();
    let d = m2.path("special");
    let after: Vec<String> = names.iter().map(|n| kind_of(&d.join(n))).collect();
    assert_eq!(after, before, "types and devices are stored");
    // listings show the types too (ls -l is answered from the listing)
    let ls = sh(&format!("ls -l {} | cut -c1", d.display()));
    let mut kinds: Vec<&str> = ls.lines().filter(|l| *l != "t").collect();
    kinds.sort();
    assert_eq!(kinds, ["b", "c", "p", "s"], "{ls}");
    for n in names {
        fs::remove_file(d.join(n)).unwrap();
    }
    fs::remove_dir(&d).unwrap();
}

#[test]
fn special_files_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("special");
    special_files(|| Mount::start(&drives, "special", &[]));
}

#[test]
fn special_files_over_s3() {
    special_files(s3_mount(&[]));
}

/// The temporary-file pattern: create, unlink, then use the descriptor.
fn unlinked_files(m: &Mount) {
    let p = m.path("tmpfile");
    let mut f = OpenOptions::new().read(true).write(true).create_new(true).open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    f.write_all(b"scratch data").unwrap();
    let st = f.metadata().unwrap();
    assert_eq!((st.nlink(), st.len()), (0, 12), "fstat of an unlinked file");
    f.seek(SeekFrom::Start(0)).unwrap();
    let mut back = String::new();
    f.read_to_string(&mut back).unwrap();
    assert_eq!(back, "scratch data");
    drop(f);
    assert!(!p.exists(), "closing it did not bring it back");
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);

    // a stored file open for reading: fstat keeps working
    fs::write(&p, b"stored").unwrap();
    let f = File::open(&p).unwrap();
    fs::remove_file(&p).unwrap();
    let st = f.metadata().unwrap();
    assert_eq!((st.nlink(), st.len()), (0, 6));
    // ... and so do reads, of a file larger than any read-ahead window too
    let big: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(&p, &big).unwrap();
    let mut f = File::open(&p).unwrap();
    let mut head = [0u8; 4096];
    f.read_exact(&mut head).unwrap();
    fs::remove_file(&p).unwrap();
    assert!(!p.exists());
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    assert_eq!(head[..], big[..4096]);
    assert!(rest == big[4096..], "reads through a descriptor of an unlinked file");
    drop(f);
    assert!(!p.exists(), "closing it did not bring it back");
}

#[test]
fn unlinked_open_files_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("unlinked");
    unlinked_files(&Mount::start(&drives, "unlinked", &[]));
}

#[test]
fn unlinked_open_files_over_s3() {
    unlinked_files(&s3_mount(&[])());
}

#[test]
fn limits_times_and_errnos() {
    let drives = Drives::new(4);
    drives.make_bucket("rules");
    let m = Mount::start(&drives, "rules", &[]);
    // paths up to the 1,024-byte key limit work, longer ones are ENAMETOOLONG
    let part = "p".repeat(200);
    let mut dir = m.mnt.clone();
    let mut rel = 0;
    for _ in 0..4 {
        dir = dir.join(&part);
        rel += part.len() + 1;
        fs::create_dir(&dir).unwrap();
    }
    let fits = "f".repeat(1024 - rel);
    fs::write(dir.join(&fits), b"deep").unwrap();
    assert_eq!(fs::read(dir.join(&fits)).unwrap(), b"deep");
    assert_eq!(errno_of(fs::write(dir.join(format!("{fits}g")), b"x")), libc::ENAMETOOLONG);
    assert_eq!(errno_of(fs::create_dir(dir.join("e".repeat(fits.len())))), libc::ENAMETOOLONG);
    // truncate beyond what the backend can store
    let f = m.path("f");
    fs::write(&f, b"abc").unwrap();
    let r = OpenOptions::new().write(true).open(&f).unwrap().set_len(1 << 60);
    assert_eq!(errno_of(r), libc::EFBIG);
    assert_eq!(fs::read(&f).unwrap(), b"abc");

    // parent times move with its entries (as seen by this mount)
    let d = m.path("d");
    fs::create_dir(&d).unwrap();
    let mut before = fs::metadata(&d).unwrap();
    let steps: [(&str, &dyn Fn()); 5] = [
        ("create", &|| fs::write(d.join("a"), b"1").unwrap()),
        ("mkdir", &|| fs::create_dir(d.join("sub")).unwrap()),
        ("rename", &|| fs::rename(d.join("a"), d.join("b")).unwrap()),
        ("unlink", &|| fs::remove_file(d.join("b")).unwrap()),
        ("rmdir", &|| fs::remove_dir(d.join("sub")).unwrap()),
    ];
    for (name, step) in steps {
        std::thread::sleep(Duration::from_millis(5)); // so the clock can move
        step();
        let now = fs::metadata(&d).unwrap();
        let t = |m: &fs::Metadata| (m.mtime(), m.mtime_nsec());
        let c = |m: &fs::Metadata| (m.ctime(), m.ctime_nsec());
        assert!(t(&now) > t(&before) && c(&now) > c(&before), "{name}: {:?} -> {:?}", t(&before), t(&now));
        before = now;
    }

    // errno rules
    fs::create_dir(m.path("full")).unwrap();
    fs::write(m.path("full/x"), b"x").unwrap();
    fs::create_dir(m.path("empty")).unwrap();
    assert_eq!(errno_of(fs::remove_dir(m.path("full"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::remove_dir(&f)), libc::ENOTDIR);
    assert_eq!(errno_of(fs::remove_file(m.path("empty"))), libc::EISDIR);
    assert_eq!(errno_of(fs::rename(&f, m.path("empty"))), libc::EISDIR);
    assert_eq!(errno_of(fs::rename(m.path("empty"), &f)), libc::ENOTDIR);
    assert_eq!(errno_of(fs::rename(m.path("empty"), m.path("full"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(OpenOptions::new().write(true).create_new(true).open(&f)), libc::EEXIST);
    assert_eq!(errno_of(OpenOptions::new().write(true).open(m.path("empty"))), libc::EISDIR);
    assert_eq!(errno_of(fs::read_dir(f.join("x"))), libc::ENOTDIR);

    // utimensat: UTIME_OMIT keeps a time, UTIME_NOW sets it; both are stored
    let ts = |sec: i64, nsec: i64| libc::timespec { tv_sec: sec, tv_nsec: nsec };
    let set = |times: [libc::timespec; 2]| unsafe {
        libc::utimensat(libc::AT_FDCWD, cpath(&f).as_ptr(), times.as_ptr(), 0)
    };
    assert_eq!(set([ts(1_000_000_000, 5), ts(1_100_000_000, 7)]), 0);
    let st = fs::metadata(&f).unwrap();
    assert_eq!(
        (st.atime(), st.atime_nsec(), st.mtime(), st.mtime_nsec()),
        (1_000_000_000, 5, 1_100_000_000, 7)
    );
    assert_eq!(set([ts(0, libc::UTIME_OMIT), ts(1_200_000_000, 0)]), 0);
    let st = fs::metadata(&f).unwrap();
    assert_eq!((st.atime(), st.mtime()), (1_000_000_000, 1_200_000_000));
    assert_eq!(set([ts(0, libc::UTIME_NOW), ts(0, libc::UTIME_OMIT)]), 0);
    let st = fs::metadata(&f).unwrap();
    assert!(st.atime() > 1_600_000_000 && st.mtime() == 1_200_000_000);
}

/// write, truncate, close, reopen, truncate, fstat (and lseek, and an mmap read of
/// the last byte): the size seen is the last truncate's every time.
fn truncate_loop(m: &Mount, name: &str, with_mmap: bool, rounds: usize) {
    let p = m.path(name);
    for i in 0..rounds {
        let data = pattern(100 + (i * 37) % 3000, i as u64);
        let first = (i * 13) % 2500;
        let second = (i * 29) % 4000 + 1;
        let mut f = OpenOptions::new().read(true).write(true).create(true).truncate(true).open(&p).unwrap();
        f.write_all(&data).unwrap();
        f.set_len(first as u64).unwrap();
        drop(f);
        let mut f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        f.set_len(second as u64).unwrap();
        assert_eq!(f.metadata().unwrap().len(), second as u64, "round {i}: fstat");
        assert_eq!(f.seek(SeekFrom::End(0)).unwrap(), second as u64, "round {i}: lseek(SEEK_END)");
        if with_mmap {
            use std::os::fd::AsRawFd;
            let last = unsafe {
                let ptr = libc::mmap(
                    std::ptr::null_mut(),
                    second,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    f.as_raw_fd(),
                    0,
                );
                assert_ne!(ptr, libc::MAP_FAILED, "round {i}: mmap");
                let b = *(ptr as *const u8).add(second - 1);
                libc::munmap(ptr, second);
                b
            };
            let want = if second <= first.min(data.len()) { data[second - 1] } else { 0 };
            assert_eq!(last, want, "round {i}: last byte through mmap");
        }
        drop(f);
    }
    assert_eq!(fs::metadata(&p).unwrap().len(), ((rounds - 1) * 29 % 4000 + 1) as u64);
}

/// Drives in memory (/dev/shm) when there is one: the loop is about the sizes this
/// mount reports, and 6,000 commits to drives that fsync took minutes on a busy disk.
fn memory_drives() -> Drives {
    let base = if Path::new("/dev/shm").is_dir() { PathBuf::from("/dev/shm") } else { test_root() };
    let dir = tempfile::Builder::new().prefix("bfs-drives").tempdir_in(base).unwrap();
    let spec = format!("{}/d{{1...4}}", dir.path().display());
    Drives { dir, spec }
}

#[test]
fn size_after_reopen_and_truncate_2000_times() {
    let drives = memory_drives();
    drives.make_bucket("loop");
    truncate_loop(&Mount::start(&drives, "loop", &[]), "plain", false, 2000);
}

#[test]
fn size_after_reopen_and_truncate_2000_times_through_mmap() {
    let drives = memory_drives();
    drives.make_bucket("loop");
    truncate_loop(&Mount::start(&drives, "loop", &[]), "mapped", true, 2000);
}

/// O_SYNC writes and fsyncdir store before close: another S3 client sees them.
#[test]
fn o_sync_and_fsyncdir_store_before_close_over_s3() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("sync");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let m = Mount::try_start_source(
        &format!("s3://{bucket}"),
        &["--endpoint", &gw.endpoint, "--region", "us-east-1"],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let client = rt.block_on(s3_support::admin_client(&gw.endpoint));
    let stored = |key: &str| -> Option<Vec<u8>> {
        rt.block_on(async {
            let r = client.get_object().bucket(&bucket).key(key).send().await.ok()?;
            Some(r.body.collect().await.ok()?.into_bytes().to_vec())
        })
    };
    let mut f =
        OpenOptions::new().write(true).create(true).custom_flags(libc::O_SYNC).open(m.path("s")).unwrap();
    f.write_all(b"first").unwrap();
    assert_eq!(stored("s").as_deref(), Some(&b"first"[..]), "an O_SYNC write returns once stored");
    f.write_all(b" second").unwrap();
    assert_eq!(stored("s").as_deref(), Some(&b"first second"[..]));
    drop(f);

    fs::create_dir(m.path("d")).unwrap();
    let mut f = File::create(m.path("d/pending")).unwrap();
    f.write_all(b"entry").unwrap();
    assert_eq!(stored("d/pending"), None, "not committed before close or fsync");
    File::open(m.path("d")).unwrap().sync_all().unwrap();
    assert_eq!(stored("d/pending").as_deref(), Some(&b"entry"[..]), "fsyncdir stored the directory's entry");
    drop(f);
}

/// `sh -c cmd` as user `uid` (group `uid`, no supplementary groups); its exit status.
fn as_user(uid: u32, cmd: &str) -> bool {
    std::process::Command::new("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()])
        .args(["sh", "-c", cmd])
        .status()
        .unwrap()
        .success()
}

/// With --enable-perms a sticky directory protects each user's entries from the
/// others (the kernel checks the owners bucketfs records), and after a remount too.
#[test]
fn sticky_directories_with_enable_perms() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as other users");
        return;
    }
    let drives = Drives::new(4);
    drives.make_bucket("sticky");
    let start = || Mount::start(&drives, "sticky", &["--enable-perms", "--allow-other"]);
    let mut m = start();
    // the suite's temp dirs are private; the other users must reach the mount point
    let mut up = m.mnt.clone();
    while up.pop() && up != Path::new("/") {
        sh(&format!("chmod o+x {}", up.display()));
    }
    let t = m.path("shared");
    fs::create_dir(&t).unwrap();
    sh(&format!("chmod 1777 {}", t.display()));
    let (alice, bob) = (65534, 1); // nobody and daemon
    let mine = t.join("mine").display().to_string();
    assert!(as_user(alice, &format!("echo a > {mine}")), "create in a sticky dir");
    assert!(!as_user(bob, &format!("rm -f {mine}")), "another user's entry is protected");
    assert!(!as_user(bob, &format!("mv {mine} {}/taken", t.display())));
    assert!(m.stop(), "clean stop:\n{}", m.log_text());
    let m = start();
    let t = m.path("shared");
    assert_eq!(fs::metadata(&t).unwrap().mode() & 0o7777, 0o1777, "sticky bit stored");
    assert_eq!(fs::metadata(t.join("mine")).unwrap().uid(), alice);
    assert!(!as_user(bob, &format!("rm -f {}", t.join("mine").display())));
    assert!(as_user(alice, &format!("rm {}", t.join("mine").display())), "the owner may");
}

/// A directory's link count is 2 plus its subdirectories (as this mount has seen
/// them: made, looked up, renamed in), and follows mkdir, rename and rmdir.
fn link_counts(m: &Mount) {
    let nlink = |rel: &str| fs::metadata(m.path(rel)).unwrap().nlink();
    fs::create_dir(m.path("a")).unwrap();
    fs::create_dir(m.path("b")).unwrap();
    assert_eq!((nlink("a"), nlink("b")), (2, 2));
    fs::create_dir(m.path("a/one")).unwrap();
    fs::create_dir(m.path("a/two")).unwrap();
    fs::write(m.path("a/file"), b"files do not count").unwrap();
    assert_eq!(nlink("a"), 4);
    fs::rename(m.path("a/one"), m.path("b/one")).unwrap();
    assert_eq!((nlink("a"), nlink("b")), (3, 3), "a rename moves the subdirectory's '..'");
    fs::create_dir(m.path("b/one/deep")).unwrap();
    fs::rename(m.path("b"), m.path("a/b")).unwrap();
    assert_eq!((nlink("a"), nlink("a/b"), nlink("a/b/one")), (4, 3, 3), "counts move with a renamed tree");
    fs::remove_dir(m.path("a/two")).unwrap();
    assert_eq!(nlink("a"), 3);
    assert_eq!(fs::metadata(&m.mnt).unwrap().nlink(), 3, "the root counts its subdirectory");
}

#[test]
fn directory_link_counts_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("links");
    link_counts(&Mount::start(&drives, "links", &[]));
}

#[test]
fn directory_link_counts_over_s3() {
    link_counts(&s3_mount(&[])());
}

/// open(O_TRUNC) of a non-empty file moves its mtime and ctime at once, even when
/// closed without a write (the empty content is stored at the release), and a
/// stored utimes mtime no longer applies.
#[test]
fn o_trunc_moves_the_times_at_open() {
    let drives = Drives::new(4);
    drives.make_bucket("trunc");
    let mut m = Mount::start(&drives, "trunc", &[]);
    let p = m.path("f");
    fs::write(&p, b"old content").unwrap();
    let old = libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 0 };
    let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(&p).as_ptr(), [old, old].as_ptr(), 0) };
    assert_eq!(rc, 0);
    assert_eq!(fs::metadata(&p).unwrap().mtime(), 1_000_000_000);
    drop(OpenOptions::new().write(true).truncate(true).open(&p).unwrap());
    let st = fs::metadata(&p).unwrap();
    assert_eq!(st.len(), 0);
    assert!(
        st.mtime() > 1_000_000_000 && st.ctime() >= st.mtime(),
        "mtime {} ctime {}",
        st.mtime(),
        st.ctime()
    );
    assert!(m.stop(), "clean stop:\n{}", m.log_text());
    let m = Mount::start(&drives, "trunc", &[]);
    let st = fs::metadata(m.path("f")).unwrap();
    assert_eq!(st.len(), 0, "the truncation was stored");
    assert!(st.mtime() > 1_000_000_000, "the stored utimes mtime was dropped");
}

/// Under a `bucket:prefix` mount the prefix counts towards the 1,024-byte key: a path
/// that fits the mount but not the store is ENAMETOOLONG (it was EINVAL, from the
/// store refusing to list under a too-long prefix), and one that fits works.
#[test]
fn key_limit_under_a_prefix_mount() {
    let drives = Drives::new(4);
    drives.make_bucket("deep");
    let prefix = "a-mount-prefix"; // the key is "a-mount-prefix/" + path
    let m = Mount::start(&drives, &format!("deep/{prefix}"), &[]);
    let part = "p".repeat(200);
    let mut dir = m.mnt.clone();
    let mut rel = 0;
    for _ in 0..4 {
        dir = dir.join(&part);
        rel += part.len() + 1;
        fs::create_dir(&dir).unwrap();
    }
    let room = 1024 - prefix.len() - 1 - rel; // longest name whose key fits
    fs::write(dir.join("f".repeat(room)), b"fits").unwrap();
    assert_eq!(fs::read(dir.join("f".repeat(room))).unwrap(), b"fits");
    fs::create_dir(dir.join("d".repeat(room - 1))).unwrap(); // its marker ends in '/'
    for n in [room + 1, room + 5] {
        assert_eq!(errno_of(fs::write(dir.join("g".repeat(n)), b"x")), libc::ENAMETOOLONG, "create {n}");
        assert_eq!(errno_of(fs::create_dir(dir.join("e".repeat(n)))), libc::ENAMETOOLONG, "mkdir {n}");
        assert_eq!(errno_of(fs::metadata(dir.join("e".repeat(n)))), libc::ENAMETOOLONG, "stat {n}");
    }
    assert_eq!(errno_of(fs::create_dir(dir.join("e".repeat(room)))), libc::ENAMETOOLONG, "marker too long");
}

/// A file open for reading that is renamed stays readable through its descriptor.
fn renamed_while_open(m: &Mount) {
    let data = pattern(3 << 20, 7);
    fs::write(m.path("before"), &data).unwrap();
    let mut f = File::open(m.path("before")).unwrap();
    let mut head = vec![0; 4096];
    f.read_exact(&mut head).unwrap();
    fs::rename(m.path("before"), m.path("after")).unwrap();
    let mut rest = Vec::new();
    f.read_to_end(&mut rest).unwrap();
    head.extend(rest);
    assert!(head == data, "read back {} bytes", head.len());
    assert_eq!(f.metadata().unwrap().len(), data.len() as u64);
}

#[test]
fn renamed_open_file_stays_readable_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("moved");
    renamed_while_open(&Mount::start(&drives, "moved", &["--read-ahead", "128K"]));
}

#[test]
fn renamed_open_file_stays_readable_over_s3() {
    renamed_while_open(&s3_mount(&["--read-ahead", "128K"])());
}

/// With default flags and --allow-other, what another user creates is shown as
/// theirs (stored only because it differs from the mount's owner), so they can
/// write in their directory and chmod their files, after a remount too.
#[test]
fn other_users_own_what_they_create_with_default_flags() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to act as other users");
        return;
    }
    let drives = Drives::new(4);
    drives.make_bucket("owners");
    let start = || Mount::start(&drives, "owners", &["--allow-other"]);
    let mut m = start();
    let mut up = m.mnt.clone();
    while up.pop() && up != Path::new("/") {
        sh(&format!("chmod o+x {}", up.display()));
    }
    let shared = m.path("shared");
    fs::create_dir(&shared).unwrap();
    sh(&format!("chmod 1777 {}", shared.display()));
    let nobody = 65534;
    let d = shared.join("mine");
    assert!(as_user(nobody, &format!("mkdir {0} && echo x > {0}/f && chmod 600 {0}/f", d.display())));
    let (dm, fm) = (fs::metadata(&d).unwrap(), fs::metadata(d.join("f")).unwrap());
    assert_eq!((dm.uid(), dm.gid(), fm.uid(), fm.mode() & 0o777), (nobody, nobody, nobody, 0o600));
    assert_eq!(fs::metadata(m.path("shared")).unwrap().uid(), 0, "the mount owner's entries store no owner");
    assert!(m.stop(), "clean stop:\n{}", m.log_text());
    let m = start();
    let d = m.path("shared/mine");
    assert_eq!((fs::metadata(&d).unwrap().uid(), fs::metadata(d.join("f")).unwrap().uid()), (nobody, nobody));
    assert!(as_user(nobody, &format!("echo y > {0}/g && rm {0}/f {0}/g && rmdir {0}", d.display())));
}

/// chmod, chown, an atime-only utimensat and setxattr change the ctime, never the
/// mtime (the object is rewritten with a new date, so the mtime is kept in its
/// metadata), after a remount too; a truncate by path is new content and moves it.
fn mtime_stays(start: impl Fn() -> Mount) {
    let mut m = start();
    let (f, d) = (m.path("f"), m.path("d"));
    fs::write(&f, b"content").unwrap();
    fs::create_dir(&d).unwrap();
    let when = |p: &Path| {
        let st = fs::metadata(p).unwrap();
        (st.mtime(), st.mtime_nsec())
    };
    // past the test mounts' 1 s stat cache (and the mtime's second): the times seen
    // are the stored ones (over S3 the date a PUT answers and the date a HEAD shows
    // can differ), and a new object date would show
    std::thread::sleep(Duration::from_millis(1200));
    let (f0, d0) = (when(&f), when(&d));
    let ctime = |p: &Path| fs::metadata(p).unwrap().ctime();
    for p in [&f, &d] {
        sh(&format!("chmod 600 {0} && chown 1:1 {0}", p.display()));
        let rc = unsafe { libc::setxattr(cpath(p).as_ptr(), c"user.k".as_ptr(), b"v".as_ptr().cast(), 1, 0) };
        assert_eq!(rc, 0, "setxattr");
        let omit = libc::timespec { tv_sec: 0, tv_nsec: libc::UTIME_OMIT };
        let atime = libc::timespec { tv_sec: 1_000_000_000, tv_nsec: 0 };
        let rc = unsafe { libc::utimensat(libc::AT_FDCWD, cpath(p).as_ptr(), [atime, omit].as_ptr(), 0) };
        assert_eq!(rc, 0);
        assert!(ctime(p) > f0.0, "{}: ctime moved", p.display());
    }
    assert_eq!((when(&f), when(&d)), (f0, d0), "mtimes kept");
    assert!(m.stop(), "clean stop:\n{}", m.log_text());
    let m = start();
    let (f, d) = (m.path("f"), m.path("d"));
    assert_eq!((when(&f), when(&d)), (f0, d0), "mtimes kept after a remount");
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o777, 0o600);
    // a truncate by path (no descriptor) stores new content: the mtime moves
    let rc = unsafe { libc::truncate(cpath(&f).as_ptr(), 3) };
    assert_eq!(rc, 0);
    assert!(when(&f) > f0, "truncate moved the mtime");
    assert_eq!(fs::read(&f).unwrap(), b"con");
}

#[test]
fn metadata_changes_keep_the_mtime_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("mtimes");
    mtime_stays(|| Mount::start(&drives, "mtimes", &[]));
}

#[test]
fn metadata_changes_keep_the_mtime_over_s3() {
    mtime_stays(s3_mount(&[]));
}

/// A renamed file keeps its mtime (the copy a rename makes on S3 has a new date).
fn rename_keeps_mtime(m: &Mount) {
    fs::write(m.path("src"), b"content").unwrap();
    let when = |p: &Path| {
        let st = fs::metadata(p).unwrap();
        (st.mtime(), st.mtime_nsec())
    };
    // the stored mtime, not the one the kernel cached from the last write: the commit
    // stamps the object a fraction of a millisecond later (a CI run saw 0.5 ms)
    std::thread::sleep(Duration::from_millis(1100));
    let t0 = when(&m.path("src"));
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64 <= t0.0
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    fs::rename(m.path("src"), m.path("dst")).unwrap();
    assert_eq!(when(&m.path("dst")), t0, "mtime after a rename");
    std::thread::sleep(Duration::from_millis(1100)); // past the 1 s stat cache of the test mounts
    assert_eq!(when(&m.path("dst")), t0, "mtime as stored");
}

#[test]
fn rename_keeps_the_mtime_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("moves");
    rename_keeps_mtime(&Mount::start(&drives, "moves", &[]));
}

#[test]
fn rename_keeps_the_mtime_over_s3() {
    rename_keeps_mtime(&s3_mount(&[])());
}

/// A file opened with O_TRUNC and closed without a write is committed at its release,
/// which may still be running when the file is unlinked: the unlink waits for it,
/// so the file does not come back and its directory can be removed.
fn unlink_after_truncating_open(m: &Mount) {
    for i in 0..50 {
        let d = m.path(&format!("d{i}"));
        fs::create_dir(&d).unwrap();
        fs::write(d.join("f"), b"test\n").unwrap();
        drop(OpenOptions::new().write(true).truncate(true).open(d.join("f")).unwrap());
        fs::remove_file(d.join("f")).unwrap();
        fs::remove_dir(&d).unwrap_or_else(|e| panic!("round {i}: rmdir: {e}"));
    }
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0);
}

#[test]
fn unlink_waits_for_a_release_commit_over_s3() {
    unlink_after_truncating_open(&s3_mount(&[])());
}

#[test]
fn unlink_waits_for_a_release_commit_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("release");
    unlink_after_truncating_open(&Mount::start(&drives, "release", &[]));
}
