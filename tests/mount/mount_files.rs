//! File operations through a real FUSE mount over the embedded store, checked with
//! ordinary tools and std::fs.

use crate::common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};

use common::*;

#[test]
fn round_trip_from_empty_to_200_mib() {
    let drives = Drives::new(4);
    drives.make_bucket("roundtrip");
    let mut m = Mount::start(&drives, "roundtrip", &[]);
    let sizes: [usize; 10] =
        [0, 1, 4095, 4096, 100 << 10, (1 << 20) + 1, (8 << 20) - 1, (8 << 20) + 1, 33 << 20, 200 << 20];
    let src_dir = tempfile::tempdir_in(test_root()).unwrap();
    for (i, &n) in sizes.iter().enumerate() {
        let data = pattern(n, i as u64);
        let src = src_dir.path().join(format!("s{i}"));
        fs::write(&src, &data).unwrap();
        // three writers: std::fs, cp, dd with an odd block size
        fs::write(m.path(&format!("std{i}")), &data).unwrap();
        sh(&format!("cp {} {}", src.display(), m.path(&format!("cp{i}")).display()));
        sh(&format!(
            "dd if={} of={} bs=777k status=none",
            src.display(),
            m.path(&format!("dd{i}")).display()
        ));
        for w in ["std", "cp", "dd"] {
            let p = m.path(&format!("{w}{i}"));
            assert_eq!(fs::metadata(&p).unwrap().len(), n as u64, "{w}{i} size");
            sh(&format!("cmp {} {}", src.display(), p.display()));
        }
    }
    // persisted: a fresh mount reads the same bytes
    assert!(m.stop(), "clean stop");
    let m2 = Mount::start(&drives, "roundtrip", &[]);
    for (i, &n) in sizes.iter().enumerate() {
        let got = fs::read(m2.path(&format!("dd{i}"))).unwrap();
        assert_eq!(got.len(), n);
        assert!(got == pattern(n, i as u64), "content of dd{i} after remount");
    }
}

#[test]
fn random_writes_appends_overwrites_and_truncate() {
    let drives = Drives::new(4);
    drives.make_bucket("randomwrites");
    let mut m = Mount::start(&drives, "randomwrites", &[]);
    let mut model = vec![0u8; 0];
    let p = m.path("random.bin");
    {
        // out-of-order writes with holes, like a torrent client or a database
        let f = OpenOptions::new().create(true).write(true).read(true).truncate(true).open(&p).unwrap();
        for (k, off) in [(1u64, 5_000_000u64), (2, 0), (3, 12_345), (4, 2_000_000), (5, 4_999_000)] {
            let chunk = pattern(300_000, k);
            f.write_at(&chunk, off).unwrap();
            let end = off as usize + chunk.len();
            if model.len() < end {
                model.resize(end, 0);
            }
            model[off as usize..end].copy_from_slice(&chunk);
        }
        // reading back through the same handle sees the unflushed writes
        let mut buf = vec![0u8; 1000];
        f.read_exact_at(&mut buf, 12_345).unwrap();
        assert_eq!(&buf[..], &model[12_345..13_345]);
    }
    assert!(fs::read(&p).unwrap() == model, "random writes");

    // append to an existing object
    let tail = pattern(3_000_000, 9);
    OpenOptions::new().append(true).open(&p).unwrap().write_all(&tail).unwrap();
    model.extend_from_slice(&tail);
    assert!(fs::read(&p).unwrap() == model, "append");

    // overwrite in place, without truncation
    let mut f = OpenOptions::new().write(true).open(&p).unwrap();
    f.seek(SeekFrom::Start(100)).unwrap();
    f.write_all(b"hello in the middle").unwrap();
    drop(f);
    model[100..119].copy_from_slice(b"hello in the middle");
    assert!(fs::read(&p).unwrap() == model, "overwrite");

    // truncate shorter and longer, with the truncate(1) tool and set_len
    sh(&format!("truncate -s 1000000 {}", p.display()));
    model.truncate(1_000_000);
    assert!(fs::read(&p).unwrap() == model, "truncate shorter");
    OpenOptions::new().write(true).open(&p).unwrap().set_len(1_500_000).unwrap();
    model.resize(1_500_000, 0);
    assert!(fs::read(&p).unwrap() == model, "extend with set_len");
    sh(&format!("truncate -s 0 {}", p.display()));
    assert_eq!(fs::metadata(&p).unwrap().len(), 0);
    fs::write(&p, &model).unwrap();

    // a sequential writer that seeks back to patch a header (zip/tar style)
    let q = m.path("patched.bin");
    let body = pattern(20 << 20, 77);
    let mut f = fs::File::create(&q).unwrap();
    f.write_all(&[0u8; 16]).unwrap();
    f.write_all(&body).unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(b"HEADER-PATCHED!!").unwrap();
    drop(f);
    let got = fs::read(&q).unwrap();
    assert_eq!(&got[..16], b"HEADER-PATCHED!!");
    assert!(got[16..] == body[..], "body after header patch");

    assert!(m.stop());
    let m2 = Mount::start(&drives, "randomwrites", &[]);
    assert!(fs::read(m2.path("random.bin")).unwrap() == model, "after remount");
}

#[test]
fn directories_symlinks_rename_unlink_xattrs_and_stats() {
    let drives = Drives::new(4);
    drives.make_bucket("dirs");
    let m = Mount::start(&drives, "dirs", &[]);
    fs::create_dir_all(m.path("a/b/c")).unwrap();
    fs::write(m.path("a/b/c/f.txt"), b"x").unwrap();
    assert!(m.path("a/b").is_dir());
    // rmdir of a non-empty directory fails with ENOTEMPTY
    let e = fs::remove_dir(m.path("a/b/c")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    fs::remove_file(m.path("a/b/c/f.txt")).unwrap();
    fs::remove_dir(m.path("a/b/c")).unwrap();
    assert!(!m.path("a/b/c").exists());
    // an empty directory made with mkdir survives a listing round trip
    let names: Vec<_> = fs::read_dir(m.path("a")).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, vec!["b"]);

    // files: rename, replace, unlink
    fs::write(m.path("one"), b"1").unwrap();
    fs::write(m.path("two"), b"2").unwrap();
    fs::rename(m.path("one"), m.path("a/uno")).unwrap();
    assert_eq!(fs::read(m.path("a/uno")).unwrap(), b"1");
    assert!(!m.path("one").exists());
    sh(&format!("mv -f {} {}", m.path("two").display(), m.path("a/uno").display()));
    assert_eq!(fs::read(m.path("a/uno")).unwrap(), b"2");
    assert_eq!(fs::read(m.path("nope")).unwrap_err().kind(), std::io::ErrorKind::NotFound);

    // symlinks
    std::os::unix::fs::symlink("a/uno", m.path("link")).unwrap();
    assert_eq!(fs::read_link(m.path("link")).unwrap().to_str(), Some("a/uno"));
    assert_eq!(fs::read(m.path("link")).unwrap(), b"2");
    assert!(fs::symlink_metadata(m.path("link")).unwrap().file_type().is_symlink());
    sh(&format!("ln -s /does/not/exist {}", m.path("dangling").display()));
    assert_eq!(fs::read_link(m.path("dangling")).unwrap().to_str(), Some("/does/not/exist"));

    // user xattrs are object metadata
    let f = m.path("a/uno");
    set_xattr(&f, "user.color", b"blue");
    assert_eq!(get_xattr(&f, "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(fs::read(&f).unwrap(), b"2", "xattr keeps content");
    // other namespaces are not supported (ENOTSUP, not "not set"): `ls -l` then
    // stops asking every file for its SELinux label and ACL
    for name in ["security.selinux", "system.posix_acl_access"] {
        assert_eq!(get_xattr_errno(&f, name), libc::EOPNOTSUPP, "{name}");
    }

    // modes: default file and dir modes
    assert_eq!(fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o644);
    assert_eq!(fs::metadata(m.path("a")).unwrap().permissions().mode() & 0o777, 0o755);
    assert_eq!(fs::metadata(&f).unwrap().uid(), unsafe { libc::getuid() });

    // statfs answers
    sh(&format!("df {}", m.mnt.display()));

    // counters of the live mount
    let (code, _, _) = run_bucketfs(&["stats", m.mnt.to_str().unwrap()]);
    assert_eq!(code, 0);
    let out = std::process::Command::new(BIN).args(["stats", m.mnt.to_str().unwrap()]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let puts: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("requests_put "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no requests_put in {text}"));
    assert!(puts >= 3, "stats show our puts: {text}");
}

#[test]
fn concurrent_readers_and_writers() {
    let drives = Drives::new(4);
    drives.make_bucket("conc");
    let m = Mount::start(&drives, "conc", &[]);
    let shared = pattern(12 << 20, 1000);
    fs::write(m.path("shared"), &shared).unwrap();
    std::thread::scope(|s| {
        for t in 0..6u64 {
            let m = &m;
            let shared = &shared;
            s.spawn(move || {
                let mine = pattern((3 << 20) + t as usize * 4099, t);
                fs::write(m.path(&format!("w{t}")), &mine).unwrap();
                let mut f = fs::File::open(m.path("shared")).unwrap();
                let mut buf = Vec::new();
                f.read_to_end(&mut buf).unwrap();
                assert!(buf == *shared, "reader {t}");
                assert!(fs::read(m.path(&format!("w{t}"))).unwrap() == mine, "writer {t}");
            });
        }
    });
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 7);
}

fn set_xattr(p: &std::path::Path, name: &str, value: &[u8]) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let rc = unsafe { libc::setxattr(c.as_ptr(), n.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
    assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
}

fn get_xattr_errno(p: &std::path::Path, name: &str) -> i32 {
    xattr(p, name).expect_err(name)
}

fn get_xattr(p: &std::path::Path, name: &str) -> Option<Vec<u8>> {
    xattr(p, name).ok()
}

/// The value of attribute `name`, or getxattr(2)'s errno.
fn xattr(p: &std::path::Path, name: &str) -> Result<Vec<u8>, i32> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 4096];
    let rc = unsafe { libc::getxattr(c.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}
