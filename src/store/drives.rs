//! Drive specs, per-drive locking and `format.json`.
//!
//! A drive is a directory. Everything the store keeps for itself lives under
//! `<drive>/.bucketfs.sys/` (bucket names cannot start with '.', so it never
//! collides with a bucket):
//! - `lock`: flock'ed for the lifetime of the process, and holding the pid and
//!   command line of the owner so that a second process can name it;
//! - `format.json`: which deployment the drive belongs to and its slot;
//! - `tmp/`, `trash/`, `multipart/`: staging, deleted data, uploads.
//!
//! Opening reconciles the formats of all drives: they must belong to one
//! deployment and appear in the spec in the order recorded at format time. A
//! drive without a format is an empty replacement and is formatted into its
//! slot (and reported so the caller heals it); that is only allowed when at
//! least half of the drives still carry the format, so that a typo in the spec
//! cannot silently turn into a fresh deployment over old data.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::error::{IoContext, StoreError, StoreResult};

pub const SYS_DIR: &str = ".bucketfs.sys";
pub const MAX_DRIVES: usize = 32;
const FORMAT_FILE: &str = "format.json";
const FORMAT_NAME: &str = "bucketfs-erasure";

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

/// Contents of `format.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Format {
    pub version: u32,
    pub format: String,
    pub deployment_id: String,
    /// Drive ids of the set, in slot order.
    pub drives: Vec<String>,
    /// This drive's id (one of `drives`).
    pub this: String,
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

pub fn read_format(drive: &Path) -> StoreResult<Option<Format>> {
    let path = drive.join(SYS_DIR).join(FORMAT_FILE);
    match fs::read(&path) {
        Ok(b) => {
            let f: Format = serde_json::from_slice(&b)
                .map_err(|e| StoreError::Format(format!("{} is corrupt: {e}", path.display())))?;
            if f.format != FORMAT_NAME || f.version != 1 {
                return Err(StoreError::Format(format!(
                    "{}: unsupported format {:?} version {}",
                    path.display(),
                    f.format,
                    f.version
                )));
            }
            Ok(Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
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

fn write_format(drive: &Path, f: &Format) -> StoreResult<()> {
    let data = serde_json::to_vec_pretty(f).map_err(|e| StoreError::Format(e.to_string()))?;
    write_file_durable(&drive.join(SYS_DIR).join(FORMAT_FILE), &data)
}

/// Result of reconciling the drives' formats.
pub struct FormatResult {
    pub deployment_id: String,
    /// Slots whose drive was empty and has just been formatted (need healing).
    pub replaced: Vec<usize>,
}

/// Checks (or creates) the format of every drive; `drives` are already locked.
pub fn reconcile_formats(drives: &[PathBuf]) -> StoreResult<FormatResult> {
    let mut formats = Vec::with_capacity(drives.len());
    for d in drives {
        formats.push(read_format(d)?);
    }
    let n = drives.len();
    let Some(reference) = formats.iter().flatten().next().cloned() else {
        // A brand new deployment.
        let deployment_id = uuid::Uuid::new_v4().to_string();
        let ids: Vec<String> = (0..n).map(|_| uuid::Uuid::new_v4().to_string()).collect();
        for (i, d) in drives.iter().enumerate() {
            let f = Format {
                version: 1,
                format: FORMAT_NAME.into(),
                deployment_id: deployment_id.clone(),
                drives: ids.clone(),
                this: ids[i].clone(),
            };
            write_format(d, &f)?;
        }
        return Ok(FormatResult { deployment_id, replaced: Vec::new() });
    };
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        if f.deployment_id != reference.deployment_id {
            return Err(StoreError::Format(format!(
                "drives belong to different deployments: {} is in deployment {} but {} is in {}; \
                 refusing to mix them",
                drives[i].display(),
                f.deployment_id,
                drives[formats.iter().position(|x| x.is_some()).unwrap_or(0)].display(),
                reference.deployment_id
            )));
        }
        if f.drives != reference.drives {
            return Err(StoreError::Format(format!(
                "drive {} disagrees with the other drives about the set's membership",
                drives[i].display()
            )));
        }
    }
    if reference.drives.len() != n {
        return Err(StoreError::Format(format!(
            "the deployment has {} drives but the spec lists {n}",
            reference.drives.len()
        )));
    }
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        let slot = reference.drives.iter().position(|id| *id == f.this);
        if slot != Some(i) {
            return Err(StoreError::Format(format!(
                "drive order mismatch: {} is listed at position {} but was formatted as drive {} of the set; \
                 list the drives in their original order",
                drives[i].display(),
                i + 1,
                slot.map(|s| (s + 1).to_string()).unwrap_or_else(|| "?".into())
            )));
        }
    }
    let formatted = formats.iter().filter(|f| f.is_some()).count();
    let mut replaced = Vec::new();
    if formatted < n {
        if formatted * 2 < n {
            return Err(StoreError::Format(format!(
                "only {formatted} of {n} drives carry a format; refusing to format the others \
                 (wrong drive spec?)"
            )));
        }
        for (i, f) in formats.iter().enumerate() {
            if f.is_some() {
                continue;
            }
            let mut nf = reference.clone();
            nf.this = reference.drives[i].clone();
            write_format(&drives[i], &nf)?;
            tracing::warn!(drive = %drives[i].display(), slot = i, "formatted empty replacement drive");
            replaced.push(i);
        }
    }
    Ok(FormatResult { deployment_id: reference.deployment_id, replaced })
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
    }

    #[test]
    fn spec_errors() {
        for bad in
            ["", "/a,,/b", "rel/path", "/d{1...33}", "/d{3...1}", "/d{1..3}", "/d{1...", "/a,/a", "/d{x...3}"]
        {
            assert!(parse_drive_spec(bad).is_err(), "{bad:?} accepted");
        }
    }
}
