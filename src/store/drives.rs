//! Drive specs, per-drive locking, free space.
//!
//! A drive is a directory. Everything the store keeps for itself lives under
//! `<drive>/.bucketfs.sys/` (bucket names cannot start with '.', so it never
//! collides with a bucket):
//! - `lock`: flock'ed for the lifetime of the process, and holding the pid and
//!   command line of the owner so that a second process can name it;
//! - `format.json`: which deployment, pool and set the drive belongs to and its
//!   slot (format.rs, which also reconciles them on open);
//! - `pools.json`: the deployment's server pools, once it has more than one
//!   (pools.rs);
//! - `tmp/`, `trash/`, `multipart/`: staging, deleted data, uploads.
//!
//! A spec is one pool's drives (`/a,/b` or `/d{1...8}`); several pools are
//! several specs, or one string with specs separated by [`POOL_SEPARATOR`].
//! A new pool of more than 16 drives is split into equal erasure sets
//! (`set_size_for`).

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::error::{IoContext, StoreError, StoreResult};
pub use super::format::{
    format_replacement, read_format, reconcile_formats, Format, FormatResult, SET_DISTRIBUTION,
};

pub const SYS_DIR: &str = ".bucketfs.sys";
/// Drives in one spec: 16 sets of 16.
pub const MAX_DRIVES: usize = 256;
/// Largest erasure set a new deployment is given (MinIO's limit).
pub const MAX_SET_SIZE: usize = 16;
/// Separates server pools in one string (`BUCKETFS_DRIVES`, fstab `drives=`):
/// a character no drive path in practice contains, and that needs quoting in
/// a shell anyway, unlike whitespace, which paths may contain.
pub const POOL_SEPARATOR: char = ';';

/// Size of the erasure sets `n` drives are split into: all of them up to 16;
/// beyond, the largest size from 2 to 16 that divides `n` (as MinIO chooses).
pub fn set_size_for(n: usize) -> StoreResult<usize> {
    if n <= MAX_SET_SIZE {
        return Ok(n);
    }
    (2..=MAX_SET_SIZE).rev().find(|s| n % s == 0).ok_or_else(|| {
        StoreError::Config(format!(
            "{n} drives cannot be split into equal erasure sets of 2 to {MAX_SET_SIZE} drives; \
             use a drive count with such a divisor (e.g. {} or {})",
            n - n % MAX_SET_SIZE,
            n + (MAX_SET_SIZE - n % MAX_SET_SIZE) % MAX_SET_SIZE
        ))
    })
}

/// Parses `"/a,/b"` or MinIO's ellipsis form `"/data/d{1...4}"` (mixable).
pub fn parse_drive_spec(spec: &str) -> StoreResult<Vec<PathBuf>> {
    let err = |reason: String| StoreError::DriveSpec { spec: spec.into(), reason };
    let mut out: Vec<PathBuf> = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            return Err(err("empty drive in list".into()));
        }
        for p in expand_ellipsis(item).map_err(err)? {
            if !p.starts_with('/') {
                return Err(err(format!("drive path {p:?} is not absolute")));
            }
            let p = PathBuf::from(p);
            if out.contains(&p) {
                return Err(err(format!("drive {} is listed twice", p.display())));
            }
            out.push(p);
        }
    }
    if out.is_empty() || out.len() > MAX_DRIVES {
        return Err(err(format!("need 1 to {MAX_DRIVES} drives, got {}", out.len())));
    }
    Ok(out)
}

/// Parses several drive specs, one per server pool: each string may itself
/// hold several pools separated by [`POOL_SEPARATOR`] (how `BUCKETFS_DRIVES`
/// and a single fstab option carry them). No drive may appear twice.
pub fn parse_pool_specs<S: AsRef<str>>(specs: &[S]) -> StoreResult<Vec<Vec<PathBuf>>> {
    let mut pools: Vec<Vec<PathBuf>> = Vec::new();
    for spec in specs {
        for one in spec.as_ref().split(POOL_SEPARATOR) {
            if one.trim().is_empty() && spec.as_ref().contains(POOL_SEPARATOR) {
                // A trailing or doubled separator: nothing to parse, but say so.
                return Err(StoreError::DriveSpec {
                    spec: spec.as_ref().into(),
                    reason: format!("empty server pool between {POOL_SEPARATOR:?} separators"),
                });
            }
            let drives = parse_drive_spec(one.trim())?;
            for d in &drives {
                if let Some(p) = pools.iter().position(|pool| pool.contains(d)) {
                    return Err(StoreError::DriveSpec {
                        spec: one.trim().into(),
                        reason: format!("drive {} is already in pool {}", d.display(), p + 1),
                    });
                }
            }
            pools.push(drives);
        }
    }
    if pools.is_empty() {
        return Err(StoreError::Config("no drive spec given".into()));
    }
    Ok(pools)
}

/// The pools given as repeated flags, as one string ([`POOL_SEPARATOR`]
/// between them), or `None` when none was given.
pub fn join_pool_specs(specs: &[String]) -> Option<String> {
    (!specs.is_empty()).then(|| specs.join(&POOL_SEPARATOR.to_string()))
}

/// Expands every `{a...b}` (decimal, inclusive, zero padding kept) in `item`.
fn expand_ellipsis(item: &str) -> Result<Vec<String>, String> {
    let Some(open) = item.find('{') else {
        if item.contains('}') || item.contains("...") {
            return Err(format!("malformed ellipsis in {item:?}"));
        }
        return Ok(vec![item.to_string()]);
    };
    let close = item[open..].find('}').map(|i| i + open).ok_or(format!("unclosed '{{' in {item:?}"))?;
    let inner = &item[open + 1..close];
    let (a, b) = inner.split_once("...").ok_or(format!("expected {{N...M}} in {item:?}"))?;
    let parse = |s: &str| s.parse::<u32>().map_err(|_| format!("bad number {s:?} in {item:?}"));
    let (lo, hi) = (parse(a)?, parse(b)?);
    if lo > hi {
        return Err(format!("empty range {{{a}...{b}}}"));
    }
    if (hi - lo) as usize >= MAX_DRIVES {
        return Err(format!("range {{{a}...{b}}} has more than {MAX_DRIVES} drives"));
    }
    let width = if a.len() > 1 && a.starts_with('0') { a.len() } else { 0 };
    let mut out = Vec::new();
    for n in lo..=hi {
        let head = format!("{}{:0width$}", &item[..open], n, width = width);
        for tail in expand_ellipsis(&item[close + 1..])? {
            out.push(format!("{head}{tail}"));
        }
    }
    Ok(out)
}

/// An exclusive, process-lifetime lock on one drive.
#[derive(Debug)]
pub struct DriveLock {
    _file: File,
}

fn holder_of(file: &mut File) -> String {
    let mut s = String::new();
    let _ = file.seek(SeekFrom::Start(0)).and_then(|_| file.read_to_string(&mut s));
    let s = s.trim().to_string();
    if s.is_empty() {
        "unknown process".into()
    } else {
        s
    }
}

/// Takes the drive's flock; fails with `Locked` naming the holder.
pub fn lock_drive(drive: &Path) -> StoreResult<DriveLock> {
    let path = drive.join(SYS_DIR).join("lock");
    let mut file =
        OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).ctx(&path)?;
    // SAFETY: plain syscall on a descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(StoreError::Locked { path: drive.to_path_buf(), holder: holder_of(&mut file) });
        }
        return Err(StoreError::io(&path, e));
    }
    let cmd = fs::read("/proc/self/cmdline")
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " ").trim().to_string())
        .unwrap_or_default();
    let info = format!("pid {} ({})\n", std::process::id(), cmd);
    file.set_len(0).ctx(&path)?;
    file.seek(SeekFrom::Start(0)).ctx(&path)?;
    file.write_all(info.as_bytes()).ctx(&path)?;
    Ok(DriveLock { _file: file })
}

/// Creates the drive directory (only if its parent exists) and the system dirs.
pub fn prepare_drive(drive: &Path) -> StoreResult<()> {
    if !drive.is_dir() {
        match drive.parent() {
            Some(parent) if parent.is_dir() => fs::create_dir(drive)
                .or_else(|e| if e.kind() == std::io::ErrorKind::AlreadyExists { Ok(()) } else { Err(e) })
                .ctx(drive)?,
            _ => {
                return Err(StoreError::Config(format!(
                    "drive {} does not exist and neither does its parent directory",
                    drive.display()
                )))
            }
        }
    }
    for sub in ["", "tmp", "trash", "multipart"] {
        let p = drive.join(SYS_DIR).join(sub);
        fs::create_dir_all(&p).ctx(&p)?;
    }
    Ok(())
}

/// Writes a file durably: temp file, fsync, rename, fsync of the directory.
pub fn write_file_durable(path: &Path, data: &[u8]) -> StoreResult<()> {
    let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
    let mut f = File::create(&tmp).ctx(&tmp)?;
    f.write_all(data).ctx(&tmp)?;
    f.sync_all().ctx(&tmp)?;
    fs::rename(&tmp, path).ctx(path)?;
    if let Some(dir) = path.parent() {
        sync_dir(dir)?;
    }
    Ok(())
}

pub fn sync_dir(dir: &Path) -> StoreResult<()> {
    File::open(dir).and_then(|d| d.sync_all()).ctx(dir)
}

/// `(total, available)` bytes of the file system holding `path` (available:
/// what an unprivileged writer may still use), or `None` if it cannot be asked.
pub fn space(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: a valid C string and a zeroed statvfs for the call to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// Whether the file system holding `path` keeps the Unix convention that a
/// directory's link count is 2 plus its number of subdirectories, so that a
/// count of 2 proves a directory has none (the "leaf optimization" of find(1)).
/// Only file systems known to keep it: ext2/3/4, XFS and tmpfs. Btrfs (always 1),
/// network and FUSE file systems do not, and are read in full.
pub fn counts_subdirs(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const EXT: u32 = 0xEF53;
    const XFS: u32 = 0x5846_5342;
    const TMPFS: u32 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else { return false };
    // SAFETY: a valid C string and a zeroed statfs for the call to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    // f_type is a signed word on some targets; the magic numbers fit in 32 bits
    matches!(st.f_type as u32, EXT | XFS | TMPFS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_list_and_ellipsis() {
        assert_eq!(parse_drive_spec("/a").unwrap(), vec![PathBuf::from("/a")]);
        assert_eq!(parse_drive_spec("/a, /b").unwrap(), vec![PathBuf::from("/a"), PathBuf::from("/b")]);
        let v = parse_drive_spec("/data/d{1...4}").unwrap();
        assert_eq!(v, (1..=4).map(|i| PathBuf::from(format!("/data/d{i}"))).collect::<Vec<_>>());
        let v = parse_drive_spec("/m{1...2}/x{01...02}").unwrap();
        assert_eq!(
            v,
            ["/m1/x01", "/m1/x02", "/m2/x01", "/m2/x02"].iter().map(PathBuf::from).collect::<Vec<_>>()
        );
        assert_eq!(parse_drive_spec("/d{1...32}").unwrap().len(), 32);
        assert_eq!(parse_drive_spec("/d{1...256}").unwrap().len(), 256);
    }

    #[test]
    fn pool_specs() {
        let p = parse_pool_specs(&["/a{1...2}; /b{1...3}", "/c"]).unwrap();
        assert_eq!(p.iter().map(Vec::len).collect::<Vec<_>>(), vec![2, 3, 1]);
        assert_eq!(p[1][0], PathBuf::from("/b1"));
        assert_eq!(
            parse_pool_specs(&["/a,/b"]).unwrap(),
            vec![vec![PathBuf::from("/a"), PathBuf::from("/b")]]
        );
        let e = parse_pool_specs(&["/a{1...2}", "/a2,/c"]).unwrap_err().to_string();
        assert!(e.contains("/a2 is already in pool 1"), "{e}");
        let e = parse_pool_specs(&["/a;"]).unwrap_err().to_string();
        assert!(e.contains("empty server pool"), "{e}");
        assert!(parse_pool_specs::<&str>(&[]).is_err());
    }

    #[test]
    fn spec_errors() {
        for bad in [
            "",
            "/a,,/b",
            "rel/path",
            "/d{1...257}",
            "/d{3...1}",
            "/d{1..3}",
            "/d{1...",
            "/a,/a",
            "/d{x...3}",
        ] {
            assert!(parse_drive_spec(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn sets_as_minio_splits_them() {
        for (n, size) in [(1, 1), (4, 4), (16, 16), (18, 9), (24, 12), (32, 16), (48, 16), (20, 10), (34, 2)]
        {
            assert_eq!(set_size_for(n).unwrap(), size, "{n} drives");
        }
        let e = set_size_for(17).unwrap_err().to_string();
        assert!(e.contains("17 drives cannot be split"), "{e}");
    }
}
