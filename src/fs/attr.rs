//! Attributes: mapping object metadata to `stat` results, and the user-metadata
//! names bucketfs stores.
//!
//! Objects have a size, a Last-Modified date and user metadata; everything else
//! in a `struct stat` is synthesised from the mount configuration. The user
//! metadata names written by bucketfs all start with `bucketfs-`:
//!
//! | name             | value                                   | meaning |
//! |------------------|-----------------------------------------|---------|
//! | `bucketfs-type`  | `symlink`                               | the object is a symlink; its content is the target |
//! | `bucketfs-mode`  | octal permission bits, e.g. `644`       | `chmod`; a new file's mode with `--enable-perms` |
//! | `bucketfs-uid`   | decimal                                 | `chown`; a new file's creator with `--enable-perms` |
//! | `bucketfs-gid`   | decimal                                 | `chgrp`; a new file's group with `--enable-perms` |
//! | `bucketfs-mtime` | `SECONDS.NANOSECONDS` since the epoch   | `touch`/`utimes` |
//! | `bucketfs-target`| a symlink's target, `%XX`-encoded       | copy of the content of a short symlink, so `readlink` after a listing needs no GET |
//! | `bucketfs-type`  | `fifo`, `socket`, `char`, `block`       | a special file made by `mknod`/`mkfifo`: an empty object that only marks it |
//! | `bucketfs-rdev`  | decimal `dev_t`                         | device number of a `char`/`block` special file |
//! | `bucketfs-atime` | `SECONDS.NANOSECONDS` since the epoch   | an access time set by `touch -a`/`utimensat` (reads never update it) |
//!
//! Special files are objects because the kernel, not the filesystem, serves their
//! I/O: FUSE never opens a FIFO, socket or device node, it only needs `stat` to say
//! what the entry is. Storing the mark like a symlink's keeps them across remounts
//! and visible in listings (the listing index carries the type on S3).
//!
//! `ctime` is the object's Last-Modified date: every change bucketfs stores (content,
//! chmod, chown, utimes, xattrs) writes the object or copies it onto itself, so that
//! date moves exactly when a status change was stored, while `mtime` may be a stored
//! `bucketfs-mtime` from `touch -d`.
//!
//! Stored entries are shown whatever the flags (as s3fs does), so `rsync -a`,
//! `cp -a`, `tar -xp` and `install -m` work on a default mount and what they set
//! is seen after a remount. `--enable-perms` adds that every new file and
//! directory records its creator and requested mode, for mounts shared by
//! several users (`--allow-other`); without it, entries never chmod'ed show the
//! mount's `--uid`, `--gid`, `--file-mode` and `--dir-mode`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{FileAttr, FileType, INodeNo};

use super::cache::{Cached, Kind};
use super::FsConfig;
use crate::backend::ObjectMeta;

pub const META_TYPE: &str = "bucketfs-type";
pub const META_MODE: &str = "bucketfs-mode";
pub const META_UID: &str = "bucketfs-uid";
pub const META_GID: &str = "bucketfs-gid";
pub const META_MTIME: &str = "bucketfs-mtime";
pub const META_ATIME: &str = "bucketfs-atime";
pub const META_RDEV: &str = "bucketfs-rdev";
pub const TYPE_SYMLINK: &str = "symlink";
pub const TYPE_FIFO: &str = "fifo";
pub const TYPE_SOCKET: &str = "socket";
pub const TYPE_CHAR: &str = "char";
pub const TYPE_BLOCK: &str = "block";
/// A copy of a short symlink target (percent-encoded), so `readlink` of a listed or
/// looked-up symlink needs no GET; the object's content stays the authority.
pub const META_TARGET: &str = "bucketfs-target";
/// Longest encoded target kept in [`META_TARGET`] (metadata and listing-index keys are small).
pub const TARGET_META_MAX: usize = 200;
/// The names a listing must carry for `ls -l` to need no request per entry; kept in
/// the listing index on backends whose listings omit user metadata (`backend::attr_index`).
pub const INDEXED_METADATA: &[&str] =
    &[META_TYPE, META_MODE, META_UID, META_GID, META_MTIME, META_ATIME, META_RDEV, META_TARGET];

/// Bytes of a symlink target kept as they are in [`META_TARGET`]: printable ASCII
/// but `%` (header values must be ASCII).
const TARGET_UNSAFE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ').add(b'%');

/// `target` for [`META_TARGET`], `%XX`-encoded; `None` when too long to keep.
pub fn encode_target(target: &[u8]) -> Option<String> {
    let out = percent_encoding::percent_encode(target, TARGET_UNSAFE).to_string();
    (out.len() <= TARGET_META_MAX).then_some(out)
}

/// The target in [`META_TARGET`]; `None` for a malformed or empty value.
pub fn decode_target(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    let out: Vec<u8> = percent_encoding::percent_decode_str(s).collect();
    (!malformed && !out.is_empty()).then_some(out)
}

/// `st_blksize`: a hint for buffer sizes of tools like `cp`.
const BLKSIZE: u32 = 4096;

pub fn is_symlink(meta: &ObjectMeta) -> bool {
    meta.user_metadata.get(META_TYPE).map(String::as_str) == Some(TYPE_SYMLINK)
}

/// The marker value of `bucketfs-type` for a special file of `S_IFMT` type `fmt`;
/// `None` for regular files, directories and symlinks (which have their own ways).
pub fn special_type_name(fmt: u32) -> Option<&'static str> {
    match fmt {
        libc::S_IFIFO => Some(TYPE_FIFO),
        libc::S_IFSOCK => Some(TYPE_SOCKET),
        libc::S_IFCHR => Some(TYPE_CHAR),
        libc::S_IFBLK => Some(TYPE_BLOCK),
        _ => None,
    }
}

/// The special file type an object is marked with, if any.
fn special_type(meta: &ObjectMeta) -> Option<FileType> {
    match meta.user_metadata.get(META_TYPE).map(String::as_str)? {
        TYPE_FIFO => Some(FileType::NamedPipe),
        TYPE_SOCKET => Some(FileType::Socket),
        TYPE_CHAR => Some(FileType::CharDevice),
        TYPE_BLOCK => Some(FileType::BlockDevice),
        _ => None,
    }
}

pub fn format_mtime(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

pub fn parse_mtime(s: &str) -> Option<SystemTime> {
    let (secs, nanos) = match s.split_once('.') {
        Some((a, b)) => (a.parse::<u64>().ok()?, {
            // accept fewer than 9 fractional digits ("1.5" = 1.5 s)
            if b.is_empty() || b.len() > 9 || !b.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            b.parse::<u32>().ok()? * 10u32.pow(9 - b.len() as u32)
        }),
        None => (s.parse::<u64>().ok()?, 0),
    };
    UNIX_EPOCH.checked_add(Duration::new(secs, nanos))
}

pub fn parse_mode(s: &str) -> Option<u16> {
    u16::from_str_radix(s, 8).ok().filter(|m| *m <= 0o7777)
}

/// Owner, group, permission bits and mtime of an object: stored metadata where
/// present (chmod/chown/utimes store it, with or without `--enable-perms`), the
/// mount's defaults otherwise.
struct Perms {
    perm: u16,
    uid: u32,
    gid: u32,
    mtime: Option<SystemTime>,
    atime: Option<SystemTime>,
}

fn perms(meta: Option<&ObjectMeta>, default_mode: u16, cfg: &FsConfig) -> Perms {
    let mut p = Perms { perm: default_mode, uid: cfg.uid, gid: cfg.gid, mtime: None, atime: None };
    if let Some(m) = meta {
        let um = &m.user_metadata;
        if let Some(v) = um.get(META_MODE).and_then(|s| parse_mode(s)) {
            p.perm = v;
        }
        if let Some(v) = um.get(META_UID).and_then(|s| s.parse().ok()) {
            p.uid = v;
        }
        if let Some(v) = um.get(META_GID).and_then(|s| s.parse().ok()) {
            p.gid = v;
        }
        p.mtime = um.get(META_MTIME).and_then(|s| parse_mtime(s));
        p.atime = um.get(META_ATIME).and_then(|s| parse_mtime(s));
    }
    p
}

/// The attributes the kernel sees for an entry. `size_override` is the current
/// size of a file open for writing (unflushed writes count).
pub fn to_attr(
    ino: u64,
    c: &Cached,
    size_override: Option<u64>,
    cfg: &FsConfig,
    mount_time: SystemTime,
) -> FileAttr {
    let meta = c.meta.as_ref();
    let (kind, default_mode, nlink) = match c.kind {
        Kind::Dir => (FileType::Directory, cfg.dir_mode, 2),
        Kind::File => (meta.and_then(special_type).unwrap_or(FileType::RegularFile), cfg.file_mode, 1),
        Kind::Symlink => (FileType::Symlink, 0o777, 1),
    };
    let rdev = match kind {
        FileType::CharDevice | FileType::BlockDevice => {
            meta.and_then(|m| m.user_metadata.get(META_RDEV)?.parse().ok()).unwrap_or(0)
        }
        _ => 0,
    };
    let p = perms(meta, default_mode, cfg);
    let size = match c.kind {
        Kind::Dir => 4096,
        _ => size_override.or(meta.map(|m| m.size)).unwrap_or(0),
    };
    let stored = meta.map(|m| m.last_modified).unwrap_or(mount_time);
    let mtime = p.mtime.unwrap_or(stored);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: size.div_ceil(512),
        atime: p.atime.unwrap_or(mtime),
        mtime,
        // the last stored change of any kind (see the header); never before the mtime
        ctime: stored.max(mtime),
        crtime: mtime,
        kind,
        // symlink permissions are never checked by Linux; report the customary 0777
        perm: if c.kind == Kind::Symlink { 0o777 } else { p.perm },
        nlink,
        uid: p.uid,
        gid: p.gid,
        rdev,
        blksize: BLKSIZE,
        flags: 0,
    }
}

pub fn file_type(k: Kind) -> FileType {
    match k {
        Kind::Dir => FileType::Directory,
        Kind::File => FileType::RegularFile,
        Kind::Symlink => FileType::Symlink,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg(enable_perms: bool) -> FsConfig {
        FsConfig {
            uid: 1000,
            gid: 100,
            file_mode: 0o644,
            dir_mode: 0o755,
            stat_cache_ttl: Duration::from_secs(60),
            type_cache_ttl: Duration::from_secs(60),
            enable_perms,
            read_only: false,
            lookup_fetches_listing: true,
        }
    }

    fn obj(size: u64, md: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            key: "k".into(),
            size,
            etag: "e".into(),
            last_modified: UNIX_EPOCH + Duration::from_secs(1_000_000),
            content_type: None,
            user_metadata: md.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<BTreeMap<_, _>>(),
        }
    }

    #[test]
    fn symlink_targets_round_trip() {
        for t in [&b"../a b/c"[..], "d\u{e9}j\u{e0}".as_bytes(), b"100%"] {
            let e = encode_target(t).unwrap();
            assert!(e.bytes().all(|b| b.is_ascii_graphic()), "{e}");
            assert_eq!(decode_target(&e).unwrap(), t);
        }
        assert!(encode_target(&[b'x'; TARGET_META_MAX + 1]).is_none());
        assert!(decode_target("%G0").is_none() && decode_target("").is_none());
    }

    #[test]
    fn mtime_round_trips() {
        let t = UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789);
        assert_eq!(format_mtime(t), "1700000000.123456789");
        assert_eq!(parse_mtime(&format_mtime(t)), Some(t));
        assert_eq!(parse_mtime("5"), Some(UNIX_EPOCH + Duration::from_secs(5)));
        assert_eq!(parse_mtime("1.5"), Some(UNIX_EPOCH + Duration::from_millis(1500)));
        assert_eq!(parse_mtime("x"), None);
        assert_eq!(parse_mtime("1.-5"), None);
    }

    #[test]
    fn files_use_mount_defaults() {
        let a = to_attr(7, &Cached::object(obj(1000, &[])), None, &cfg(false), UNIX_EPOCH);
        assert_eq!(a.ino, INodeNo(7));
        assert_eq!(
            (a.kind, a.perm, a.uid, a.gid, a.size, a.nlink),
            (FileType::RegularFile, 0o644, 1000, 100, 1000, 1)
        );
        assert_eq!(a.blocks, 2);
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(1_000_000));
        let grown = to_attr(7, &Cached::object(obj(1000, &[])), Some(5000), &cfg(false), UNIX_EPOCH);
        assert_eq!(grown.size, 5000);
    }

    #[test]
    fn stored_perms_are_shown_with_or_without_enable_perms() {
        let md = [(META_MODE, "600"), (META_UID, "0"), (META_GID, "5"), (META_MTIME, "42.5")];
        let c = Cached::object(obj(1, &md));
        let off = to_attr(2, &c, None, &cfg(false), UNIX_EPOCH);
        assert_eq!((off.perm, off.uid, off.gid), (0o600, 0, 5));
        let plain = to_attr(2, &Cached::object(obj(1, &[])), None, &cfg(false), UNIX_EPOCH);
        assert_eq!((plain.perm, plain.uid, plain.gid), (0o644, 1000, 100));
        let on = to_attr(2, &c, None, &cfg(true), UNIX_EPOCH);
        assert_eq!((on.perm, on.uid, on.gid), (0o600, 0, 5));
        assert_eq!(on.mtime, UNIX_EPOCH + Duration::from_millis(42_500));
        // garbage is ignored, not trusted
        let bad = Cached::object(obj(1, &[(META_MODE, "999999"), (META_UID, "-1")]));
        let a = to_attr(2, &bad, None, &cfg(true), UNIX_EPOCH);
        assert_eq!((a.perm, a.uid), (0o644, 1000));
    }

    #[test]
    fn dirs_and_symlinks() {
        let d = to_attr(1, &Cached::dir(None), None, &cfg(false), UNIX_EPOCH + Duration::from_secs(9));
        assert_eq!((d.kind, d.perm, d.nlink), (FileType::Directory, 0o755, 2));
        assert_eq!(d.mtime, UNIX_EPOCH + Duration::from_secs(9));
        let s = Cached::object(obj(6, &[(META_TYPE, TYPE_SYMLINK)]));
        assert_eq!(s.kind, Kind::Symlink);
        let a = to_attr(3, &s, None, &cfg(false), UNIX_EPOCH);
        assert_eq!((a.kind, a.perm, a.size), (FileType::Symlink, 0o777, 6));
    }

    #[test]
    fn special_files_show_their_type_and_device() {
        let fifo = Cached::object(obj(0, &[(META_TYPE, TYPE_FIFO)]));
        assert_eq!(fifo.kind, Kind::File);
        let a = to_attr(4, &fifo, None, &cfg(false), UNIX_EPOCH);
        assert_eq!((a.kind, a.rdev, a.size), (FileType::NamedPipe, 0, 0));
        let chr = Cached::object(obj(0, &[(META_TYPE, TYPE_CHAR), (META_RDEV, "259"), (META_MODE, "600")]));
        let a = to_attr(5, &chr, None, &cfg(false), UNIX_EPOCH);
        assert_eq!((a.kind, a.rdev, a.perm), (FileType::CharDevice, 259, 0o600));
        let blk = Cached::object(obj(0, &[(META_TYPE, TYPE_BLOCK), (META_RDEV, "x")]));
        assert_eq!(to_attr(5, &blk, None, &cfg(false), UNIX_EPOCH).rdev, 0, "garbage is not trusted");
        let sock = Cached::object(obj(0, &[(META_TYPE, TYPE_SOCKET), (META_RDEV, "7")]));
        let a = to_attr(6, &sock, None, &cfg(false), UNIX_EPOCH);
        assert_eq!((a.kind, a.rdev), (FileType::Socket, 0), "only devices have a device number");
        let odd = Cached::object(obj(0, &[(META_TYPE, "whatever")]));
        assert_eq!(to_attr(6, &odd, None, &cfg(false), UNIX_EPOCH).kind, FileType::RegularFile);
        for (fmt, name) in
            [(libc::S_IFIFO, TYPE_FIFO), (libc::S_IFSOCK, TYPE_SOCKET), (libc::S_IFBLK, TYPE_BLOCK)]
        {
            assert_eq!(special_type_name(fmt), Some(name));
        }
        assert_eq!(special_type_name(libc::S_IFREG), None);
    }

    #[test]
    fn atime_and_ctime() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let plain = to_attr(2, &Cached::object(obj(1, &[])), None, &cfg(false), UNIX_EPOCH);
        assert_eq!((plain.atime, plain.ctime), (t0, t0));
        // touch -d stores an mtime; the object's date is when that change was stored
        let c = Cached::object(obj(1, &[(META_MTIME, "5"), (META_ATIME, "7.25")]));
        let a = to_attr(2, &c, None, &cfg(false), UNIX_EPOCH);
        assert_eq!(a.mtime, UNIX_EPOCH + Duration::from_secs(5));
        assert_eq!(a.atime, UNIX_EPOCH + Duration::from_millis(7250));
        assert_eq!(a.ctime, t0);
    }
}
