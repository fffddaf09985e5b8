//! POSIX rules of issue 12 on the in-memory backend: special files, an unlinked
//! file still open, parent directory times, name and size limits, stored atimes.
//! The same rules through a real mount are in tests/mount/mount_posix.rs.

use std::time::{Duration, SystemTime};

use fuser::{FileType, TimeOrNow};

use super::*;
use crate::fs::core::KEY_MAX;

#[tokio::test]
async fn mknod_makes_marked_special_files() {
    let (mem, fs) = setup();
    let e = fs.mknod(ROOT_INO, n("empty"), libc::S_IFREG | 0o644, 0, 0, Caller::default()).await.unwrap();
    assert_eq!((e.attr.kind, e.attr.size), (FileType::RegularFile, 0));
    assert!(exists(&mem, "empty").await);
    let kinds = [
        ("fifo", libc::S_IFIFO, FileType::NamedPipe, 0),
        ("sock", libc::S_IFSOCK, FileType::Socket, 0),
        ("chr", libc::S_IFCHR, FileType::CharDevice, 0x0103),
        ("blk", libc::S_IFBLK, FileType::BlockDevice, 0x0801),
    ];
    for (name, fmt, kind, rdev) in kinds {
        let e = fs.mknod(ROOT_INO, n(name), fmt | 0o640, 0, rdev, Caller::default()).await.unwrap();
        assert_eq!((e.attr.kind, e.attr.rdev, e.attr.perm, e.attr.size), (kind, rdev, 0o640, 0), "{name}");
        let md = mem.head(name).await.unwrap().user_metadata;
        assert!(md.contains_key(attr::META_TYPE), "{name}: {md:?}");
    }
    assert_eq!(
        errno(fs.mknod(ROOT_INO, n("fifo"), libc::S_IFIFO, 0, 0, Caller::default()).await),
        libc::EEXIST
    );
    // a fresh mount (nothing cached) sees the same types
    let fs2 = make(mem.clone(), cfg());
    for (name, _, kind, rdev) in kinds {
        let a = fs2.lookup(ROOT_INO, n(name)).await.unwrap().attr;
        assert_eq!((a.kind, a.rdev), (kind, rdev), "{name} after remount");
    }
    fs2.unlink(ROOT_INO, n("fifo")).await.unwrap();
    assert!(!exists(&mem, "fifo").await);
}

#[tokio::test]
async fn an_unlinked_open_file_keeps_its_attributes_with_no_links() {
    let (mem, fs) = setup();
    put(&mem, "tmp", b"hello").await;
    let ino = ino_of(&fs, "tmp").await;
    let fh = fs.open(ino, libc::O_RDONLY).await.unwrap();
    fs.unlink(ROOT_INO, n("tmp")).await.unwrap();
    assert!(!exists(&mem, "tmp").await);
    let (a, _) = fs.getattr(ino).await.unwrap();
    assert_eq!((a.nlink, a.size, a.kind), (0, 5, FileType::RegularFile));
    assert_eq!(errno(fs.lookup(ROOT_INO, n("tmp")).await), libc::ENOENT);
    fs.release(fh).await.unwrap();
    assert_eq!(errno(fs.getattr(ino).await), libc::ENOENT, "no descriptor holds it any more");

    // created here and never committed: the handle alone says what it is
    let who = Caller::default();
    let (e, fh) = fs.create(ROOT_INO, n("new"), libc::S_IFREG | 0o600, 0, libc::O_RDWR, who).await.unwrap();
    fs.unlink(ROOT_INO, n("new")).await.unwrap();
    let (a, _) = fs.getattr(e.attr.ino.0).await.unwrap();
    assert_eq!((a.nlink, a.size, a.perm), (0, 0, 0o600));
    fs.release(fh).await.unwrap();
    assert!(!exists(&mem, "new").await, "closing it did not bring it back");
}

#[tokio::test]
async fn creating_and_removing_entries_moves_the_parents_times() {
    let (mem, fs) = setup();
    put(&mem, "d/old", b"x").await;
    let d = ino_of(&fs, "d").await;
    let t0 = fs.getattr(d).await.unwrap().0.mtime;
    let moved = |before: SystemTime, a: &fuser::FileAttr| a.mtime > before && a.ctime == a.mtime;
    let who = Caller::default();
    let steps: Vec<&str> = vec!["mkdir", "mknod", "symlink", "rename", "unlink", "rmdir"];
    let mut before = t0;
    for step in steps {
        std::thread::sleep(Duration::from_millis(2)); // the clock must be able to move
        match step {
            "mkdir" => drop(fs.mkdir(d, n("sub"), 0o755, 0, who).await.unwrap()),
            "mknod" => drop(fs.mknod(d, n("node"), libc::S_IFREG | 0o644, 0, 0, who).await.unwrap()),
            "symlink" => drop(fs.symlink(d, n("ln"), std::path::Path::new("old"), who).await.unwrap()),
            "rename" => fs.rename(d, n("node"), ROOT_INO, n("moved"), 0).await.unwrap(),
            "unlink" => fs.unlink(d, n("ln")).await.unwrap(),
            _ => fs.rmdir(d, n("sub")).await.unwrap(),
        }
        let (a, _) = fs.getattr(d).await.unwrap();
        assert!(moved(before, &a), "{step}: {:?} -> {:?}", before, a.mtime);
        before = a.mtime;
    }
    // an explicit utimes afterwards wins (tar and rsync set directory times last)
    let past = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    fs.setattr(d, None, None, None, None, None, Some(TimeOrNow::SpecificTime(past)), None).await.unwrap();
    assert_eq!(fs.getattr(d).await.unwrap().0.mtime, past);
}

#[tokio::test]
async fn paths_longer_than_any_key_are_enametoolong() {
    let (mem, fs) = setup();
    // components of 200 bytes: the key limit, not NAME_MAX, is what stops them
    let part = "p".repeat(200);
    let mut dir = ROOT_INO;
    let mut path = String::new();
    while path.len() + 201 <= KEY_MAX - 2 {
        dir = fs.mkdir(dir, n(&part), 0o755, 0, Caller::default()).await.unwrap().attr.ino.0;
        path = if path.is_empty() { part.clone() } else { format!("{path}/{part}") };
    }
    // a file name that brings the key to exactly KEY_MAX bytes works
    let fits = "f".repeat(KEY_MAX - path.len() - 1);
    fs.mknod(dir, n(&fits), libc::S_IFREG | 0o644, 0, 0, Caller::default()).await.unwrap();
    assert!(exists(&mem, &format!("{path}/{fits}")).await);
    let over = format!("{fits}g");
    let who = Caller::default();
    assert_eq!(errno(fs.mknod(dir, n(&over), libc::S_IFREG, 0, 0, who).await), libc::ENAMETOOLONG);
    assert_eq!(errno(fs.lookup(dir, n(&over)).await), libc::ENAMETOOLONG);
    // a directory needs one byte more for its marker key
    assert_eq!(errno(fs.mkdir(dir, n(&fits), 0o755, 0, who).await), libc::EEXIST);
    let dir_fits = "e".repeat(fits.len());
    assert_eq!(errno(fs.mkdir(dir, n(&dir_fits), 0o755, 0, who).await), libc::ENAMETOOLONG);
}

#[tokio::test]
async fn truncate_beyond_the_backends_largest_object_is_efbig() {
    let (mem, fs) = setup();
    put(&mem, "f", b"abc").await;
    let f = ino_of(&fs, "f").await;
    let huge = fs.max_file_size() + 1;
    let r = fs.setattr(f, None, None, None, Some(huge), None, None, None).await;
    assert_eq!(errno(r), libc::EFBIG);
    assert_eq!(mem.head("f").await.unwrap().size, 3, "nothing changed");
}

#[tokio::test]
async fn an_explicit_atime_is_stored_and_shown() {
    let (mem, fs) = setup();
    put(&mem, "f", b"abc").await;
    let f = ino_of(&fs, "f").await;
    let (a, m) =
        (SystemTime::UNIX_EPOCH + Duration::from_secs(7), SystemTime::UNIX_EPOCH + Duration::from_secs(9));
    let (at, mt) = (Some(TimeOrNow::SpecificTime(a)), Some(TimeOrNow::SpecificTime(m)));
    let (got, _) = fs.setattr(f, None, None, None, None, at, mt, None).await.unwrap();
    assert_eq!((got.atime, got.mtime), (a, m));
    assert!(got.ctime > m, "ctime is when the change was stored");
    // UTIME_OMIT of the mtime (only the atime given) keeps the stored mtime
    let later = SystemTime::UNIX_EPOCH + Duration::from_secs(11);
    let (got, _) = fs
        .setattr(f, None, None, None, None, Some(TimeOrNow::SpecificTime(later)), None, None)
        .await
        .unwrap();
    assert_eq!((got.atime, got.mtime), (later, m));
    let fs2 = make(mem.clone(), cfg());
    let a2 = fs2.lookup(ROOT_INO, n("f")).await.unwrap().attr;
    assert_eq!((a2.atime, a2.mtime), (later, m), "stored, not cached");
}

#[tokio::test]
async fn a_chmod_waiting_for_the_commit_moves_the_ctime_at_once() {
    let (mem, fs) = setup();
    let who = Caller::default();
    let (e, fh) = fs.create(ROOT_INO, n("new"), libc::S_IFREG | 0o644, 0, libc::O_RDWR, who).await.unwrap();
    let ino = e.attr.ino.0;
    let before = fs.getattr(ino).await.unwrap().0.ctime;
    std::thread::sleep(Duration::from_millis(2)); // the clock must be able to move
    let (a, _) = fs.setattr(ino, Some(0o600), None, None, None, None, None, None).await.unwrap();
    assert_eq!(a.perm, 0o600);
    assert!(a.ctime > before, "{before:?} -> {:?}", a.ctime);
    assert!(!exists(&mem, "new").await, "stashed for the commit, not stored yet");
    fs.release(fh).await.unwrap();
    assert_eq!(
        mem.head("new").await.unwrap().user_metadata.get(attr::META_MODE).map(String::as_str),
        Some("600")
    );
}
