//! Tests of the filesystem operations against the in-memory backend (no FUSE).
//!
//! They avoid `FileHandle` methods (implemented in the handles work), so open,
//! read and write are covered by the integration tests instead.

use std::ffi::OsStr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fuser::FileType;

use super::cache::Kind;
use super::inode::ROOT_INO;
use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::{Capabilities, PutOptions};
use crate::fs::handle::{HandleConfig, HandleContext};
use crate::memory::MemoryLimiter;
use crate::metrics::Metrics;

mod posix;

fn cfg() -> FsConfig {
    FsConfig {
        uid: 1000,
        gid: 1000,
        file_mode: 0o644,
        dir_mode: 0o755,
        stat_cache_ttl: Duration::from_secs(60),
        type_cache_ttl: Duration::from_secs(60),
        enable_perms: false,
        read_only: false,
        lookup_fetches_listing: true,
    }
}

fn make(mem: Arc<MemoryBackend>, cfg: FsConfig) -> Fs {
    make_on(mem, cfg)
}

fn make_on(backend: Arc<dyn StorageBackend>, cfg: FsConfig) -> Fs {
    let handles = Arc::new(HandleContext {
        backend: backend.clone(),
        memory: MemoryLimiter::new(64 << 20),
        metrics: Arc::new(Metrics::default()),
        cfg: HandleConfig {
            part_size: 8 << 20,
            read_ahead: 1 << 20,
            max_parts_in_flight: 2,
            spool_dir: std::env::temp_dir(),
            multi_range: None,
        },
    });
    Fs::new(backend, cfg, handles)
}

fn setup() -> (Arc<MemoryBackend>, Fs) {
    let mem = Arc::new(MemoryBackend::new());
    (mem.clone(), make(mem, cfg()))
}

async fn put(mem: &MemoryBackend, key: &str, data: &[u8]) {
    mem.put(key, Bytes::copy_from_slice(data), &PutOptions::default()).await.unwrap();
}

async fn exists(mem: &MemoryBackend, key: &str) -> bool {
    mem.head(key).await.is_ok()
}

fn n(s: &str) -> &OsStr {
    OsStr::new(s)
}

async fn ino_of(fs: &Fs, path: &str) -> u64 {
    let mut ino = ROOT_INO;
    for part in path.split('/') {
        ino = fs
            .lookup(ino, n(part))
            .await
            .unwrap_or_else(|e| panic!("lookup {part} of {path}: {e}"))
            .attr
            .ino
            .0;
    }
    ino
}

fn errno<T: std::fmt::Debug>(r: FsResult<T>) -> i32 {
    r.expect_err("expected an error").errno()
}

async fn names(fs: &Fs, ino: u64) -> Vec<(String, Kind)> {
    fs.list_all(ino).await.unwrap().into_iter().map(|e| (e.name, e.kind)).collect()
}

#[tokio::test]
async fn lookup_files_and_directories() {
    let (mem, fs) = setup();
    put(&mem, "f", b"hello").await;
    put(&mem, "implicit/x", b"1").await;
    put(&mem, "marked/", b"").await;
    let f = fs.lookup(ROOT_INO, n("f")).await.unwrap();
    assert_eq!((f.attr.kind, f.attr.size, f.attr.perm, f.attr.uid), (FileType::RegularFile, 5, 0o644, 1000));
    let d = fs.lookup(ROOT_INO, n("implicit")).await.unwrap();
    assert_eq!((d.attr.kind, d.attr.perm), (FileType::Directory, 0o755));
    let m = fs.lookup(ROOT_INO, n("marked")).await.unwrap();
    assert_eq!(m.attr.kind, FileType::Directory);
    assert_eq!(errno(fs.lookup(ROOT_INO, n("missing")).await), libc::ENOENT);
    assert_eq!(errno(fs.lookup(ROOT_INO, n(&"x".repeat(256))).await), libc::ENAMETOOLONG);
    assert_eq!(errno(fs.lookup(f.attr.ino.0, n("under-a-file")).await), libc::ENOTDIR);
    // stable inode while the kernel holds it
    let again = fs.lookup(ROOT_INO, n("f")).await.unwrap();
    assert_eq!(again.attr.ino, f.attr.ino);
    assert_eq!(fs.inodes.lookups(f.attr.ino.0), Some(2));
    let x = fs.lookup(d.attr.ino.0, n("x")).await.unwrap();
    assert_eq!(x.attr.size, 1);
}

#[tokio::test]
async fn directory_wins_over_file_of_same_name() {
    let (mem, fs) = setup();
    put(&mem, "a", b"file").await;
    put(&mem, "a/b", b"child").await;
    let a = fs.lookup(ROOT_INO, n("a")).await.unwrap();
    assert_eq!(a.attr.kind, FileType::Directory);
    let listed = names(&fs, ROOT_INO).await;
    assert_eq!(listed, vec![(".".into(), Kind::Dir), ("..".into(), Kind::Dir), ("a".into(), Kind::Dir)]);
}

#[tokio::test]
async fn negative_lookups_are_cached_for_type_ttl() {
    let (mem, fs) = setup();
    assert_eq!(errno(fs.lookup(ROOT_INO, n("late")).await), libc::ENOENT);
    put(&mem, "late", b"x").await;
    assert_eq!(errno(fs.lookup(ROOT_INO, n("late")).await), libc::ENOENT, "served from the negative cache");

    let mut c = cfg();
    c.type_cache_ttl = Duration::ZERO;
    c.stat_cache_ttl = Duration::ZERO;
    let mem2 = Arc::new(MemoryBackend::new());
    let fs2 = make(mem2.clone(), c);
    assert_eq!(errno(fs2.lookup(ROOT_INO, n("late")).await), libc::ENOENT);
    put(&mem2, "late", b"x").await;
    assert!(fs2.lookup(ROOT_INO, n("late")).await.is_ok(), "no caching with zero TTLs");
}

#[tokio::test]
async fn listing_merges_pages_and_skips_markers() {
    let (mem, fs) = setup();
    for k in ["d/", "d/a", "d/b", "d/b/x", "d/b.txt", "d/c/", "d/e/f/g", "d/.", "d//weird"] {
        put(&mem, k, b"12345").await;
    }
    let d = ino_of(&fs, "d").await;
    let got = names(&fs, d).await;
    let want: Vec<(String, Kind)> = [
        (".", Kind::Dir),
        ("..", Kind::Dir),
        ("a", Kind::File),
        ("b", Kind::Dir),
        ("b.txt", Kind::File),
        ("c", Kind::Dir),
        ("e", Kind::Dir),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), *b))
    .collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn file_and_directory_twins_across_pages() {
    let (mem, fs) = setup();
    // "n" lands on the first page, "n/" on the second, with 1000 keys between them
    put(&mem, "n", b"file").await;
    for i in 0..1000 {
        put(&mem, &format!("n.{i:04}"), b"x").await;
    }
    put(&mem, "n/inner", b"x").await;
    put(&mem, "z", b"x").await;
    let got = names(&fs, ROOT_INO).await;
    assert_eq!(got.len(), 2 + 1 + 1000 + 1);
    let ns: Vec<&str> = got.iter().map(|(a, _)| a.as_str()).collect();
    let pos_n: Vec<usize> = ns.iter().enumerate().filter(|(_, s)| **s == "n").map(|(i, _)| i).collect();
    assert_eq!(pos_n.len(), 1, "the name appears once");
    assert_eq!(got[pos_n[0]].1, Kind::Dir);
    assert_eq!(ns.last(), Some(&"z"));
    let mut sorted = ns[2..].to_vec();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), ns.len() - 2);
}

#[tokio::test]
async fn large_directory_is_listed_completely_and_primes_the_stat_cache() {
    // listings that carry bucketfs's attributes, as every real backend's do (S3 through the index)
    let caps = Capabilities { list_attrs: true, ..MemoryBackend::new().capabilities() };
    let mem = Arc::new(MemoryBackend::with_capabilities(caps));
    let fs = make(mem.clone(), cfg());
    let big = vec![7u8; 5000];
    for i in 0..2500 {
        put(&mem, &format!("big/f{i:05}"), &big).await;
    }
    put(&mem, "big/small", b"tiny").await;
    let d = ino_of(&fs, "big").await;
    let got = names(&fs, d).await;
    assert_eq!(got.len(), 2 + 2501);
    // remove the objects behind the cache's back: stats come from the listing
    for i in 0..2500 {
        mem.delete(&format!("big/f{i:05}")).await.unwrap();
    }
    let e = fs.lookup(d, n("f01234")).await.unwrap();
    assert_eq!(e.attr.size, 5000);
    assert_eq!(e.ttl, Duration::from_secs(60));
    // so is a small one: the listing says it is no symlink
    mem.delete("big/small").await.unwrap();
    assert_eq!(fs.lookup(d, n("small")).await.unwrap().attr.size, 4);
}

#[tokio::test]
async fn untyped_listing_entries_are_checked_with_a_head() {
    // a listing that carries no attributes at all: any entry may be a symlink or carry a mode
    let (mem, fs) = setup();
    put(&mem, "d/small", b"tiny").await;
    put(&mem, "d/big", &[1u8; 5000]).await;
    let d = ino_of(&fs, "d").await;
    assert_eq!(names(&fs, d).await.len(), 4);
    mem.delete("d/small").await.unwrap();
    mem.delete("d/big").await.unwrap();
    assert_eq!(errno(fs.lookup(d, n("small")).await), libc::ENOENT);
    assert_eq!(errno(fs.lookup(d, n("big")).await), libc::ENOENT);
}

#[tokio::test]
async fn readdir_offsets_resume_and_rewind() {
    let (mem, fs) = setup();
    for i in 0..10 {
        put(&mem, &format!("f{i}"), b"x").await;
    }
    let fh = fs.opendir(ROOT_INO).unwrap();
    let mut first = Vec::new();
    fs.fill_dir(ROOT_INO, fh, 0, |e| {
        first.push((e.name.to_owned(), e.offset));
        first.len() == 5 // buffer full after 5: the 5th is not taken
    })
    .await
    .unwrap();
    let taken: Vec<_> = first[..4].to_vec();
    let next_off = taken.last().unwrap().1;
    let mut rest = Vec::new();
    fs.fill_dir(ROOT_INO, fh, next_off, |e| {
        rest.push(e.name.to_owned());
        false
    })
    .await
    .unwrap();
    let mut all: Vec<String> = taken.iter().map(|(a, _)| a.clone()).collect();
    all.extend(rest);
    assert_eq!(all.len(), 12);
    assert_eq!(all[4], "f2");
    // rewind
    let mut again = Vec::new();
    fs.fill_dir(ROOT_INO, fh, 0, |e| {
        again.push(e.name.to_owned());
        false
    })
    .await
    .unwrap();
    assert_eq!(again, all);
    fs.releasedir(fh);
}

#[tokio::test]
async fn readdirplus_counts_only_entries_sent() {
    let (mem, fs) = setup();
    for i in 0..5 {
        put(&mem, &format!("f{i}"), &vec![0u8; 5000]).await;
    }
    let fh = fs.opendir(ROOT_INO).unwrap();
    let mut sent = Vec::new();
    fs.fill_dir_plus(ROOT_INO, fh, 0, |e, attr, _ttl| {
        if sent.len() == 4 {
            return true;
        }
        sent.push((e.name.to_owned(), attr.ino.0, attr.size));
        false
    })
    .await
    .unwrap();
    assert_eq!(sent.len(), 4);
    let (ref name, ino, size) = sent[2];
    assert_eq!((name.as_str(), size), ("f0", 5000));
    assert_eq!(fs.inodes.lookups(ino), Some(1));
    assert_eq!(fs.inodes.peek("f2"), None, "the refused entry holds no inode");
    assert_eq!(fs.inodes.peek("f1").and_then(|i| fs.inodes.lookups(i)), Some(1));
}

#[tokio::test]
async fn mkdir_rmdir() {
    let (mem, fs) = setup();
    let d = fs.mkdir(ROOT_INO, n("d"), 0o755, 0o022, Caller::default()).await.unwrap();
    assert_eq!(d.attr.kind, FileType::Directory);
    assert!(exists(&mem, "d/").await);
    assert_eq!(errno(fs.mkdir(ROOT_INO, n("d"), 0o755, 0, Caller::default()).await), libc::EEXIST);
    let d = d.attr.ino.0;
    let s = fs.mkdir(d, n("sub"), 0o755, 0, Caller::default()).await.unwrap();
    assert_eq!(names(&fs, d).await.len(), 3);
    assert_eq!(errno(fs.rmdir(ROOT_INO, n("d")).await), libc::ENOTEMPTY);
    fs.rmdir(d, n("sub")).await.unwrap();
    assert!(!exists(&mem, "d/sub/").await);
    assert_eq!(errno(fs.getattr(s.attr.ino.0).await), libc::ENOENT);
    put(&mem, "d/file", b"x").await;
    assert_eq!(errno(fs.rmdir(ROOT_INO, n("d")).await), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rmdir(d, n("file")).await), libc::ENOTDIR);
    fs.unlink(d, n("file")).await.unwrap();
    fs.rmdir(ROOT_INO, n("d")).await.unwrap();
    assert!(!exists(&mem, "d/").await);
    assert_eq!(errno(fs.lookup(ROOT_INO, n("d")).await), libc::ENOENT);
}

#[tokio::test]
async fn unlink_files_not_directories() {
    let (mem, fs) = setup();
    put(&mem, "f", b"x").await;
    put(&mem, "d/x", b"x").await;
    let f = fs.lookup(ROOT_INO, n("f")).await.unwrap().attr.ino.0;
    fs.unlink(ROOT_INO, n("f")).await.unwrap();
    assert!(!exists(&mem, "f").await);
    assert_eq!(errno(fs.lookup(ROOT_INO, n("f")).await), libc::ENOENT);
    assert_eq!(errno(fs.getattr(f).await), libc::ENOENT);
    assert_eq!(errno(fs.unlink(ROOT_INO, n("d")).await), libc::EISDIR);
    assert_eq!(errno(fs.unlink(ROOT_INO, n("nope")).await), libc::ENOENT);
}

#[tokio::test]
async fn symlinks_are_marked_objects() {
    let (mem, fs) = setup();
    let l =
        fs.symlink(ROOT_INO, n("l"), std::path::Path::new("../target/x"), Caller::default()).await.unwrap();
    assert_eq!((l.attr.kind, l.attr.size), (FileType::Symlink, 11));
    let obj = mem.get_range("l", None, &Default::default()).await.unwrap();
    assert_eq!(&obj.data[..], b"../target/x");
    assert_eq!(obj.meta.user_metadata.get("bucketfs-type").map(String::as_str), Some("symlink"));
    assert_eq!(&fs.readlink(l.attr.ino.0).await.unwrap()[..], b"../target/x");
    // a fresh mount recognises it, from a listing and from a lookup
    let fs2 = make(mem.clone(), cfg());
    assert_eq!(names(&fs2, ROOT_INO).await[2], ("l".into(), Kind::Symlink));
    let fs3 = make(mem.clone(), cfg());
    assert_eq!(fs3.lookup(ROOT_INO, n("l")).await.unwrap().attr.kind, FileType::Symlink);
    assert_eq!(
        errno(fs.symlink(ROOT_INO, n("l"), std::path::Path::new("x"), Caller::default()).await),
        libc::EEXIST
    );
    put(&mem, "plain", b"x").await;
    let p = fs.lookup(ROOT_INO, n("plain")).await.unwrap().attr.ino.0;
    assert_eq!(errno(fs.readlink(p).await), libc::EINVAL);
}

#[tokio::test]
async fn rename_files() {
    let (mem, fs) = setup();
    put(&mem, "a", b"content").await;
    put(&mem, "b", b"other").await;
    put(&mem, "d/x", b"x").await;
    let a = fs.lookup(ROOT_INO, n("a")).await.unwrap().attr.ino.0;
    assert_eq!(
        errno(fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), libc::RENAME_NOREPLACE).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), libc::RENAME_EXCHANGE).await),
        libc::EINVAL
    );
    assert_eq!(errno(fs.rename(ROOT_INO, n("a"), ROOT_INO, n("d"), 0).await), libc::EISDIR);
    fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap();
    assert!(!exists(&mem, "a").await);
    let b = mem.get_range("b", None, &Default::default()).await.unwrap();
    assert_eq!(&b.data[..], b"content");
    assert_eq!(fs.inode(a).unwrap().0, "b", "the inode follows the rename");
    assert_eq!(errno(fs.lookup(ROOT_INO, n("a")).await), libc::ENOENT);
    assert_eq!(fs.lookup(ROOT_INO, n("b")).await.unwrap().attr.size, 7);
    let d = ino_of(&fs, "d").await;
    fs.rename(ROOT_INO, n("b"), d, n("moved"), 0).await.unwrap();
    assert!(exists(&mem, "d/moved").await && !exists(&mem, "b").await);
}

#[tokio::test]
async fn rename_directories_without_limit() {
    let (mem, fs) = setup();
    put(&mem, "src/", b"").await;
    for i in 0..1500 {
        put(&mem, &format!("src/f{i}"), b"x").await;
    }
    put(&mem, "src/deep/er/file", b"deep").await;
    put(&mem, "srcsibling", b"keep").await;
    put(&mem, "full/x", b"x").await;
    put(&mem, "afile", b"x").await;
    let src = ino_of(&fs, "src").await;
    let deep = ino_of(&fs, "src/deep/er/file").await;
    assert_eq!(errno(fs.rename(ROOT_INO, n("src"), ROOT_INO, n("full"), 0).await), libc::ENOTEMPTY);
    assert_eq!(errno(fs.rename(ROOT_INO, n("src"), ROOT_INO, n("afile"), 0).await), libc::ENOTDIR);
    fs.rename(ROOT_INO, n("src"), ROOT_INO, n("dst"), 0).await.unwrap();
    assert!(exists(&mem, "dst/").await);
    assert!(exists(&mem, "dst/f1499").await);
    assert!(exists(&mem, "dst/deep/er/file").await);
    assert!(!exists(&mem, "src/f0").await && !exists(&mem, "src/").await);
    assert!(exists(&mem, "srcsibling").await);
    assert_eq!(fs.inode(src).unwrap().0, "dst");
    assert_eq!(fs.inode(deep).unwrap().0, "dst/deep/er/file");
    assert_eq!(errno(fs.lookup(ROOT_INO, n("src")).await), libc::ENOENT);
    let dst = ino_of(&fs, "dst").await;
    assert_eq!(names(&fs, dst).await.len(), 2 + 1500 + 1);
    // over an empty directory
    fs.mkdir(ROOT_INO, n("empty"), 0o755, 0, Caller::default()).await.unwrap();
    fs.rename(ROOT_INO, n("dst"), ROOT_INO, n("empty"), 0).await.unwrap();
    assert!(exists(&mem, "empty/f0").await && !exists(&mem, "dst/f0").await);
}

#[tokio::test]
async fn rename_uses_native_rename_when_available() {
    let caps = Capabilities { rename: true, ..MemoryBackend::new().capabilities() };
    let mem = Arc::new(MemoryBackend::with_capabilities(caps));
    let fs = make(mem.clone(), cfg());
    put(&mem, "a", b"x").await;
    let etag = mem.head("a").await.unwrap().etag;
    fs.rename(ROOT_INO, n("a"), ROOT_INO, n("b"), 0).await.unwrap();
    assert!(!exists(&mem, "a").await);
    assert_eq!(mem.head("b").await.unwrap().etag, etag, "moved, not rewritten");
    assert_eq!(mem.renames.load(std::sync::atomic::Ordering::Relaxed), 1);
    // a directory: one native rename per key under it (its marker included)
    fs.mkdir(ROOT_INO, n("d"), 0o755, 0, Caller::default()).await.unwrap();
    put(&mem, "d/f1", b"1").await;
    put(&mem, "d/f2", b"2").await;
    fs.rename(ROOT_INO, n("d"), ROOT_INO, n("e"), 0).await.unwrap();
    assert!(exists(&mem, "e/f1").await && exists(&mem, "e/f2").await && !exists(&mem, "d/f1").await);
    assert_eq!(mem.renames.load(std::sync::atomic::Ordering::Relaxed), 4);
}

#[tokio::test]
async fn xattrs_map_to_user_metadata() {
    let (mem, fs) = setup();
    put(&mem, "f", b"data").await;
    let f = ino_of(&fs, "f").await;
    fs.setxattr(f, n("user.Color"), b"blue", 0).await.unwrap();
    fs.setxattr(f, n("user.bin"), b"\x00\x01", 0).await.unwrap();
    let m = mem.head("f").await.unwrap();
    assert_eq!(m.user_metadata.get("bucketfs-xattr-%43olor").map(String::as_str), Some("blue"));
    assert_eq!(m.user_metadata.get("bucketfs-xattr-bin").map(String::as_str), Some("hex:0001"));
    let data = mem.get_range("f", None, &Default::default()).await.unwrap().data;
    assert_eq!(&data[..], b"data", "content kept");
    assert_eq!(fs.getxattr(f, n("user.Color")).await.unwrap(), b"blue");
    assert_eq!(fs.getxattr(f, n("user.bin")).await.unwrap(), b"\x00\x01");
    assert_eq!(fs.listxattr(f).await.unwrap(), b"user.Color\0user.bin\0");
    assert_eq!(errno(fs.setxattr(f, n("user.Color"), b"x", libc::XATTR_CREATE).await), libc::EEXIST);
    assert_eq!(errno(fs.setxattr(f, n("user.nope"), b"x", libc::XATTR_REPLACE).await), libc::ENODATA);
    fs.removexattr(f, n("user.Color")).await.unwrap();
    assert_eq!(errno(fs.getxattr(f, n("user.Color")).await), libc::ENODATA);
    assert_eq!(errno(fs.removexattr(f, n("user.Color")).await), libc::ENODATA);
    assert_eq!(errno(fs.getxattr(f, n("security.selinux")).await), libc::ENOTSUP);
    assert_eq!(errno(fs.removexattr(f, n("system.posix_acl_access")).await), libc::ENOTSUP);
    assert_eq!(errno(fs.setxattr(f, n("trusted.x"), b"1", 0).await), libc::ENOTSUP);
    // directories keep theirs on the marker, created for implicit directories
    put(&mem, "d/x", b"x").await;
    let d = ino_of(&fs, "d").await;
    fs.setxattr(d, n("user.k"), b"v", 0).await.unwrap();
    assert!(exists(&mem, "d/").await);
    assert_eq!(fs.getxattr(d, n("user.k")).await.unwrap(), b"v");
}

#[tokio::test]
async fn root_exposes_stats() {
    let (mem, fs) = setup();
    put(&mem, "f", b"x").await;
    fs.lookup(ROOT_INO, n("f")).await.unwrap();
    fs.lookup(ROOT_INO, n("f")).await.unwrap();
    let s = String::from_utf8(fs.getxattr(ROOT_INO, n("user.bucketfs.stats")).await.unwrap()).unwrap();
    assert!(s.contains("stat_cache_hits 1\n"), "{s}");
    assert!(s.contains("stat_cache_misses 1\n"), "{s}");
    assert!(fs.listxattr(ROOT_INO).await.unwrap().starts_with(b"user.bucketfs.stats\0"));
    assert_eq!(errno(fs.setxattr(ROOT_INO, n("user.x"), b"1", 0).await), libc::EPERM);
    let (root, _) = fs.getattr(ROOT_INO).await.unwrap();
    assert_eq!(root.kind, FileType::Directory);
}

#[tokio::test]
async fn chmod_chown_touch_are_stored_without_enable_perms() {
    let (mem, fs) = setup();
    put(&mem, "f", b"x").await;
    let f = ino_of(&fs, "f").await;
    // a no-op stores nothing
    let (a, _) = fs.setattr(f, Some(0o100644), Some(1000), Some(1000), None, None, None, None).await.unwrap();
    assert_eq!(a.perm, 0o644);
    assert!(mem.head("f").await.unwrap().user_metadata.is_empty());
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    let when = Some(fuser::TimeOrNow::SpecificTime(t));
    let (a, _) = fs.setattr(f, Some(0o100600), Some(0), Some(5), None, None, when, None).await.unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.mtime), (0o600, 0, 5, t));
    let m = mem.head("f").await.unwrap().user_metadata;
    assert_eq!(m.get("bucketfs-mode").map(String::as_str), Some("600"));
    assert_eq!(m.get("bucketfs-mtime").map(String::as_str), Some("1500000000.000000000"));
    // seen by a new mount with default flags
    let fs2 = make(mem.clone(), cfg());
    let e = fs2.lookup(ROOT_INO, n("f")).await.unwrap();
    assert_eq!((e.attr.perm, e.attr.uid, e.attr.gid, e.attr.mtime), (0o600, 0, 5, t));
    // a new file keeps the mode it was created with (tar and ssh-keygen rely on it);
    // its creator is recorded only when not the mount's owner (another user of an
    // --allow-other mount must be able to chmod its file and write in its directory)
    let owner = Caller { uid: 1000, gid: 1000 };
    let (_, fh) = fs.create(ROOT_INO, n("new"), 0o100600, 0o022, libc::O_WRONLY, owner).await.unwrap();
    fs.release(fh).await.unwrap();
    let e = make(mem.clone(), cfg()).lookup(ROOT_INO, n("new")).await.unwrap();
    assert_eq!((e.attr.perm, e.attr.uid), (0o600, 1000));
    let md = mem.head("new").await.unwrap().user_metadata;
    assert!(!md.contains_key("bucketfs-uid") && !md.contains_key("bucketfs-gid"), "{md:?}");
    let other = Caller { uid: 9, gid: 1000 };
    let (_, fh) = fs.create(ROOT_INO, n("theirs"), 0o100644, 0o022, libc::O_WRONLY, other).await.unwrap();
    fs.release(fh).await.unwrap();
    let e = make(mem.clone(), cfg()).lookup(ROOT_INO, n("theirs")).await.unwrap();
    assert_eq!((e.attr.perm, e.attr.uid, e.attr.gid), (0o644, 9, 1000));
    let md = mem.head("theirs").await.unwrap().user_metadata;
    assert!(md.contains_key("bucketfs-uid") && !md.contains_key("bucketfs-gid"), "{md:?}");
    // the default mode is not stored at all
    let (_, fh) = fs.create(ROOT_INO, n("plain"), 0o100666, 0o022, libc::O_WRONLY, owner).await.unwrap();
    fs.release(fh).await.unwrap();
    assert!(mem.head("plain").await.unwrap().user_metadata.is_empty());
    let d = fs.mkdir(ROOT_INO, n("private"), 0o700, 0o022, Caller::default()).await.unwrap();
    assert_eq!(d.attr.perm, 0o700);
}

#[tokio::test]
async fn chmod_chown_touch_with_enable_perms() {
    let mem = Arc::new(MemoryBackend::new());
    let mut c = cfg();
    c.enable_perms = true;
    let fs = make(mem.clone(), c);
    put(&mem, "f", b"content").await;
    let f = ino_of(&fs, "f").await;
    fs.setxattr(f, n("user.keep"), b"me", 0).await.unwrap();
    let t = std::time::UNIX_EPOCH + Duration::from_secs(1_234_567);
    let (a, _) = fs
        .setattr(
            f,
            Some(0o100600),
            Some(0),
            Some(7),
            None,
            None,
            Some(fuser::TimeOrNow::SpecificTime(t)),
            None,
        )
        .await
        .unwrap();
    assert_eq!((a.perm, a.uid, a.gid, a.mtime), (0o600, 0, 7, t));
    let m = mem.head("f").await.unwrap().user_metadata;
    assert_eq!(m.get("bucketfs-mode").map(String::as_str), Some("600"));
    assert_eq!(m.get("bucketfs-uid").map(String::as_str), Some("0"));
    assert_eq!(m.get("bucketfs-mtime").map(String::as_str), Some("1234567.000000000"));
    assert!(m.contains_key("bucketfs-xattr-keep"));
    // a new mount sees the same attributes
    let mut c = cfg();
    c.enable_perms = true;
    let fs2 = make(mem.clone(), c);
    put(&mem, "other", b"x").await;
    let names2 = names(&fs2, ROOT_INO).await;
    assert_eq!(names2.len(), 4);
    let e = fs2.lookup(ROOT_INO, n("f")).await.unwrap();
    assert_eq!((e.attr.perm, e.attr.uid, e.attr.gid), (0o600, 0, 7));
    // truncate to zero keeps the metadata
    let (a, _) = fs.setattr(f, None, None, None, Some(0), None, None, None).await.unwrap();
    assert_eq!((a.size, a.perm), (0, 0o600));
    assert_eq!(mem.head("f").await.unwrap().size, 0);
    // mkdir records mode and owner
    let d = fs.mkdir(ROOT_INO, n("d"), 0o750, 0o022, Caller { uid: 5, gid: 6 }).await.unwrap();
    assert_eq!((d.attr.perm, d.attr.uid, d.attr.gid), (0o750, 5, 6));
}

#[tokio::test]
async fn read_only_refuses_mutations() {
    let mem = Arc::new(MemoryBackend::new());
    put(&mem, "f", b"x").await;
    let mut c = cfg();
    c.read_only = true;
    let fs = make(mem.clone(), c);
    let f = ino_of(&fs, "f").await;
    assert_eq!(errno(fs.mkdir(ROOT_INO, n("d"), 0o755, 0, Caller::default()).await), libc::EROFS);
    assert_eq!(errno(fs.unlink(ROOT_INO, n("f")).await), libc::EROFS);
    assert_eq!(errno(fs.rename(ROOT_INO, n("f"), ROOT_INO, n("g"), 0).await), libc::EROFS);
    assert_eq!(errno(fs.setxattr(f, n("user.a"), b"1", 0).await), libc::EROFS);
    assert_eq!(errno(fs.open(f, libc::O_WRONLY).await), libc::EROFS);
    assert_eq!(errno(fs.setattr(f, None, None, None, Some(0), None, None, None).await), libc::EROFS);
    assert!(exists(&mem, "f").await);
}

#[tokio::test]
async fn forget_drops_inodes() {
    let (mem, fs) = setup();
    put(&mem, "f", b"x").await;
    let f = fs.lookup(ROOT_INO, n("f")).await.unwrap().attr.ino.0;
    fs.lookup(ROOT_INO, n("f")).await.unwrap();
    fs.forget(f, 2);
    assert_eq!(errno(fs.getattr(f).await), libc::ESTALE);
}

#[tokio::test]
async fn size_after_close_reopen_truncate_is_the_new_one_while_the_old_handle_awaits_release() {
    // the kernel's `release` of a closed handle comes after `close` returned, so the
    // old handle (with the old size) is still open when the program reopens
    let (_mem, fs) = setup();
    for round in 0..40 {
        let name = format!("f{round}");
        let (e, old) =
            fs.create(ROOT_INO, n(&name), 0o100644, 0, libc::O_RDWR, Caller::default()).await.unwrap();
        let ino = e.attr.ino.0;
        fs.write(old, 0, &[7u8; 1000]).await.unwrap();
        fs.flush(old).await.unwrap(); // close(); release not yet
        let mut handles = vec![old];
        for (i, size) in [300u64, 40, 700, 5].into_iter().enumerate() {
            let fh = fs.open(ino, libc::O_RDWR).await.unwrap();
            fs.setattr(ino, None, None, None, Some(size), None, None, Some(fh)).await.unwrap();
            let (a, _) = fs.getattr(ino).await.unwrap();
            assert_eq!(a.size, size, "round {round}, step {i}: stale size");
            fs.flush(fh).await.unwrap();
            handles.push(fh);
        }
        for fh in handles {
            fs.release(fh).await.unwrap();
        }
        let (a, _) = fs.getattr(ino).await.unwrap();
        assert_eq!(a.size, 5, "round {round}: after every release");
    }
}

#[tokio::test]
async fn a_lookups_first_page_serves_the_next_readdir_but_never_hides_our_changes() {
    let (mem, fs) = setup();
    put(&mem, "d/a", b"x").await;
    let d = ino_of(&fs, "d").await; // the lookup lists d's first page and keeps it
                                    // another client's object after the lookup: the readdir right after shows the
                                    // lookup's view (the request it saves), and only once
    put(&mem, "d/b", b"x").await;
    assert_eq!(names(&fs, d).await.len(), 3, "., .., a: the kept page");
    assert_eq!(names(&fs, d).await.len(), 4, "listed afresh");

    // what this mount changes in the directory drops the kept page
    put(&mem, "e/a", b"x").await;
    let e = ino_of(&fs, "e").await;
    fs.mkdir(e, n("sub"), 0o755, 0o022, Caller::default()).await.unwrap();
    assert!(names(&fs, e).await.contains(&("sub".to_string(), Kind::Dir)), "made here after the lookup");
    put(&mem, "f/a", b"x").await;
    put(&mem, "f/b", b"x").await;
    let f = ino_of(&fs, "f").await;
    fs.unlink(f, n("a")).await.unwrap();
    assert_eq!(names(&fs, f).await.len(), 3, "removed here after the lookup");

    // and with the option off, the lookup lists two keys and keeps nothing
    let mem = Arc::new(MemoryBackend::new());
    let fs = make(mem.clone(), FsConfig { lookup_fetches_listing: false, ..cfg() });
    put(&mem, "d/a", b"x").await;
    let d = ino_of(&fs, "d").await;
    put(&mem, "d/b", b"x").await;
    assert_eq!(names(&fs, d).await.len(), 4);
}

#[tokio::test]
async fn o_excl_create_is_a_conditional_write_where_the_backend_has_one() {
    let excl = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    // another client creates the name between our lookup and our commit: with
    // conditional writes our commit fails and theirs stays
    let (mem, fs) = setup();
    assert!(mem.capabilities().conditional_put);
    let (_, fh) = fs.create(ROOT_INO, n("lock"), 0o100644, 0o022, excl, Caller::default()).await.unwrap();
    fs.write(fh, 0, b"mine").await.unwrap();
    put(&mem, "lock", b"theirs").await;
    assert_eq!(errno(fs.flush(fh).await), libc::EEXIST);
    let _ = fs.release(fh).await;
    assert_eq!(&mem.get_range("lock", None, &Default::default()).await.unwrap().data[..], b"theirs");

    // no race: the first commit claims the name, later commits of the handle replace it
    let (_, fh) = fs.create(ROOT_INO, n("mine"), 0o100644, 0o022, excl, Caller::default()).await.unwrap();
    fs.write(fh, 0, b"one").await.unwrap();
    fs.flush(fh).await.unwrap();
    fs.write(fh, 3, b"two").await.unwrap();
    fs.release(fh).await.unwrap();
    assert_eq!(&mem.get_range("mine", None, &Default::default()).await.unwrap().data[..], b"onetwo");

    // without O_EXCL, or without conditional writes, the last commit wins as before
    let (_, fh) =
        fs.create(ROOT_INO, n("plain"), 0o100644, 0o022, libc::O_WRONLY, Caller::default()).await.unwrap();
    fs.write(fh, 0, b"mine").await.unwrap();
    put(&mem, "plain", b"theirs").await;
    fs.release(fh).await.unwrap();
    assert_eq!(&mem.get_range("plain", None, &Default::default()).await.unwrap().data[..], b"mine");
    let caps = Capabilities { conditional_put: false, ..MemoryBackend::new().capabilities() };
    let mem = Arc::new(MemoryBackend::with_capabilities(caps));
    let fs = make(mem.clone(), cfg());
    let (_, fh) = fs.create(ROOT_INO, n("lock"), 0o100644, 0o022, excl, Caller::default()).await.unwrap();
    fs.write(fh, 0, b"mine").await.unwrap();
    put(&mem, "lock", b"theirs").await;
    fs.release(fh).await.unwrap();
    assert_eq!(&mem.get_range("lock", None, &Default::default()).await.unwrap().data[..], b"mine");
}

#[tokio::test]
async fn mkdir_mknod_and_symlink_lose_a_race_with_eexist_where_writes_are_conditional() {
    use crate::backend::test_backend::InstrumentedBackend;
    // another client creates each name between our existence check and our write
    for conditional_put in [true, false] {
        let caps = Capabilities { conditional_put, ..MemoryBackend::new().capabilities() };
        let b = InstrumentedBackend::with_capabilities(caps);
        let fs = make_on(b.clone(), cfg());
        *b.created_by_another.lock().unwrap() = vec!["d/".into(), "f".into(), "l".into()];
        let who = Caller::default();
        let made = [
            fs.mkdir(ROOT_INO, n("d"), 0o755, 0o022, who).await.map(|_| ()),
            fs.mknod(ROOT_INO, n("f"), libc::S_IFREG | 0o644, 0o022, 0, who).await.map(|_| ()),
            fs.symlink(ROOT_INO, n("l"), std::path::Path::new("target"), who).await.map(|_| ()),
        ];
        for (key, r) in ["d/", "f", "l"].into_iter().zip(made) {
            let stored = b.inner.get_range(key, None, &Default::default()).await.unwrap().data;
            if conditional_put {
                assert_eq!(errno(r), libc::EEXIST, "{key}");
                assert_eq!(&stored[..], b"theirs", "{key}: the other client's object stays");
            } else {
                // without conditional writes the last write wins, as before
                assert!(r.is_ok(), "{key}: {r:?}");
                assert_ne!(&stored[..], b"theirs", "{key}");
            }
        }
    }
}
