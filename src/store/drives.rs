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
//! deployment and appear in the spec in the order recorded at format time.
//! A new deployment of more than 16 drives is split into equal erasure sets
//! (`set_size_for`), recorded in format.json (version 2); version 1 files, one
//! set of up to 32 drives, are still read and keep their single set. A
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
/// Drives in one spec: 16 sets of 16.
pub const MAX_DRIVES: usize = 256;
/// Largest erasure set a new deployment is given (MinIO's limit).
pub const MAX_SET_SIZE: usize = 16;
const FORMAT_FILE: &str = "format.json";
const FORMAT_NAME: &str = "bucketfs-erasure";
/// How an object's set is chosen (recorded so that a later change is detected).
pub const SET_DISTRIBUTION: &str = "siphash-2-4-mod";

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

/// Contents of `format.json`. Version 1 has one set (`drives`); version 2 has
/// `sets` and `distribution_algo` instead.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Format {
    pub version: u32,
    pub format: String,
    pub deployment_id: String,
    /// Version 1: drive ids of the one set, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<String>,
    /// Version 2: drive ids of each erasure set, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<Vec<String>>,
    /// Version 2: how an object's set is chosen ([`SET_DISTRIBUTION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_algo: Option<String>,
    /// This drive's id (one of the drives).
    pub this: String,
}

impl Format {
    /// The erasure sets, whichever version wrote the file.
    pub fn layout(&self) -> Vec<Vec<String>> {
        if self.version == 1 {
            vec![self.drives.clone()]
        } else {
            self.sets.clone()
        }
    }

    fn new(deployment_id: &str, sets: Vec<Vec<String>>, this: String) -> Format {
        if sets.len() == 1 {
            // One set: version 1, so that older builds still open the drives.
            let drives = sets.into_iter().next().unwrap_or_default();
            return Format {
                version: 1,
                format: FORMAT_NAME.into(),
                deployment_id: deployment_id.into(),
                drives,
                sets: Vec::new(),
                distribution_algo: None,
                this,
            };
        }
        Format {
            version: 2,
            format: FORMAT_NAME.into(),
            deployment_id: deployment_id.into(),
            drives: Vec::new(),
            sets,
            distribution_algo: Some(SET_DISTRIBUTION.into()),
            this,
        }
    }
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
            let known = match f.version {
                1 => !f.drives.is_empty(),
                2 => {
                    !f.sets.is_empty()
                        && f.sets.iter().all(|s| !s.is_empty())
                        && f.distribution_algo.as_deref() == Some(SET_DISTRIBUTION)
                }
                _ => false,
            };
            if f.format != FORMAT_NAME || !known {
                return Err(StoreError::Format(format!(
                    "{}: unsupported format {:?} version {} (set distribution {:?})",
                    path.display(),
                    f.format,
                    f.version,
                    f.distribution_algo
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
    /// Number of drives in each erasure set, in spec order.
    pub set_sizes: Vec<usize>,
    /// Slots (in the whole spec) whose drive was empty and has just been
    /// formatted (need healing).
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
        let size = set_size_for(n)?;
        let deployment_id = uuid::Uuid::new_v4().to_string();
        let sets: Vec<Vec<String>> =
            (0..n / size).map(|_| (0..size).map(|_| uuid::Uuid::new_v4().to_string()).collect()).collect();
        let ids: Vec<String> = sets.concat();
        for (i, d) in drives.iter().enumerate() {
            write_format(d, &Format::new(&deployment_id, sets.clone(), ids[i].clone()))?;
        }
        return Ok(FormatResult { deployment_id, set_sizes: vec![size; n / size], replaced: Vec::new() });
    };
    let layout = reference.layout();
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
        if f.layout() != layout {
            return Err(StoreError::Format(format!(
                "drive {} disagrees with the other drives about the sets' membership",
                drives[i].display()
            )));
        }
    }
    let ids: Vec<String> = layout.concat();
    if ids.len() != n {
        return Err(StoreError::Format(format!(
            "the deployment has {} drives ({} erasure sets) but the spec lists {n}",
            ids.len(),
            layout.len()
        )));
    }
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        let slot = ids.iter().position(|id| *id == f.this);
        if slot != Some(i) {
            return Err(StoreError::Format(format!(
                "drive order mismatch: {} is listed at position {} but was formatted as drive {} of the deployment; \
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
            format_replacement(&drives[i], &reference, i)?;
            replaced.push(i);
        }
    }
    Ok(FormatResult {
        deployment_id: reference.deployment_id,
        set_sizes: layout.iter().map(Vec::len).collect(),
        replaced,
    })
}

/// Formats an empty drive into slot `slot` of the deployment `reference` describes.
pub fn format_replacement(drive: &Path, reference: &Format, slot: usize) -> StoreResult<()> {
    let mut nf = reference.clone();
    nf.this = reference.layout().concat().get(slot).cloned().ok_or_else(|| {
        StoreError::Format(format!("slot {slot} is not part of deployment {}", reference.deployment_id))
    })?;
    write_format(drive, &nf)?;
    tracing::warn!(drive = %drive.display(), slot, "formatted empty replacement drive");
    Ok(())
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

    #[test]
    fn version_1_format_is_one_set() {
        let v1 =
            r#"{"version":1,"format":"bucketfs-erasure","deployment_id":"x","drives":["a","b"],"this":"a"}"#;
        let f: Format = serde_json::from_str(v1).unwrap();
        assert_eq!(f.layout(), vec![vec!["a".to_string(), "b".to_string()]]);
        let f2 = Format::new("x", vec![vec!["a".into()], vec!["b".into()]], "b".into());
        let json = serde_json::to_string(&f2).unwrap();
        assert!(
            json.contains(r#""version":2"#)
                && json.contains(SET_DISTRIBUTION)
                && !json.contains(r#""drives""#)
        );
        assert_eq!(Format::new("x", vec![vec!["a".into(), "b".into()]], "a".into()), f);
    }
}
