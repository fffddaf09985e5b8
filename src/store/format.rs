//! `format.json`: which deployment, server pool, erasure set and slot a drive
//! belongs to, and reconciling the formats of one pool's drives on open.
//!
//! Versions: 1 (one set, `drives`), 2 (several sets, `sets`) and 3 (a server
//! pool after the first: `sets` plus `pool`, its 0-based index). The first pool
//! keeps writing 1 or 2, so a deployment that never grew is byte-for-byte what
//! it was before pools existed and older builds still open it; a later pool is
//! version 3 so that a build without pools refuses it rather than opening one
//! pool as if it were the whole store. Pools are tied together by the shared
//! `deployment_id`; the list of pools itself is in `pools.json` (pools.rs).

use std::fs;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drives::{set_size_for, write_file_durable, SYS_DIR};
use super::error::{StoreError, StoreResult};

const FORMAT_FILE: &str = "format.json";
const FORMAT_NAME: &str = "bucketfs-erasure";
/// How an object's set is chosen (recorded so that a later change is detected).
pub const SET_DISTRIBUTION: &str = "siphash-2-4-mod";

/// Contents of `format.json`. Version 1 has one set (`drives`); versions 2
/// and 3 have `sets` and `distribution_algo` instead; version 3 adds `pool`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Format {
    pub version: u32,
    pub format: String,
    pub deployment_id: String,
    /// Version 1: drive ids of the one set, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drives: Vec<String>,
    /// Versions 2 and 3: drive ids of each erasure set of the pool, in slot order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sets: Vec<Vec<String>>,
    /// Versions 2 and 3: how an object's set is chosen ([`SET_DISTRIBUTION`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub distribution_algo: Option<String>,
    /// Version 3: index of the server pool (1 or more; absent means the first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<usize>,
    /// This drive's id (one of the drives).
    pub this: String,
}

impl Format {
    /// The pool's erasure sets, whichever version wrote the file.
    pub fn layout(&self) -> Vec<Vec<String>> {
        if self.version == 1 {
            vec![self.drives.clone()]
        } else {
            self.sets.clone()
        }
    }

    /// 0-based index of the server pool this drive belongs to.
    pub fn pool_index(&self) -> usize {
        self.pool.unwrap_or(0)
    }

    pub(crate) fn new(deployment_id: &str, sets: Vec<Vec<String>>, this: String, pool: usize) -> Format {
        let mut f = Format {
            version: 2,
            format: FORMAT_NAME.into(),
            deployment_id: deployment_id.into(),
            drives: Vec::new(),
            sets,
            distribution_algo: Some(SET_DISTRIBUTION.into()),
            pool: None,
            this,
        };
        if pool > 0 {
            f.version = 3;
            f.pool = Some(pool);
        } else if f.sets.len() == 1 {
            // One set: version 1, so that older builds still open the drives.
            f.version = 1;
            f.drives = f.sets.pop().unwrap_or_default();
            f.distribution_algo = None;
        }
        f
    }
}

pub fn read_format(drive: &Path) -> StoreResult<Option<Format>> {
    let path = drive.join(SYS_DIR).join(FORMAT_FILE);
    match fs::read(&path) {
        Ok(b) => {
            let f: Format = serde_json::from_slice(&b)
                .map_err(|e| StoreError::Format(format!("{} is corrupt: {e}", path.display())))?;
            let sets_ok = !f.sets.is_empty()
                && f.sets.iter().all(|s| !s.is_empty())
                && f.distribution_algo.as_deref() == Some(SET_DISTRIBUTION);
            let known = match f.version {
                1 => !f.drives.is_empty() && f.pool.is_none(),
                2 => sets_ok && f.pool.is_none(),
                3 => sets_ok && f.pool.is_some_and(|p| p >= 1),
                _ => false,
            };
            if f.format != FORMAT_NAME || !known {
                return Err(StoreError::Format(format!(
                    "{}: unsupported format {:?} version {} (set distribution {:?}, pool {:?})",
                    path.display(),
                    f.format,
                    f.version,
                    f.distribution_algo,
                    f.pool
                )));
            }
            Ok(Some(f))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io(&path, e)),
    }
}

fn write_format(drive: &Path, f: &Format) -> StoreResult<()> {
    let data = serde_json::to_vec_pretty(f).map_err(|e| StoreError::Format(e.to_string()))?;
    write_file_durable(&drive.join(SYS_DIR).join(FORMAT_FILE), &data)
}

/// Result of reconciling one pool's formats.
pub struct FormatResult {
    pub deployment_id: String,
    /// Number of drives in each erasure set, in spec order.
    pub set_sizes: Vec<usize>,
    /// Slots (in the pool's spec) whose drive was empty and has just been
    /// formatted (need healing).
    pub replaced: Vec<usize>,
}

/// Which pool is being reconciled, and the deployment the other pools belong to.
pub struct PoolContext<'a> {
    /// 0-based index of the pool in the spec.
    pub index: usize,
    /// The deployment id found on another pool's drives (or chosen for pool 1
    /// of a new deployment); a brand-new pool joins it.
    pub deployment: Option<&'a str>,
    /// Prefix of error messages: empty for a single pool, "pool N: " otherwise.
    pub label: String,
}

/// Checks (or creates) the format of every drive of a one-pool store; `drives`
/// are already locked.
pub fn reconcile_formats(drives: &[PathBuf]) -> StoreResult<FormatResult> {
    reconcile_pool(drives, &PoolContext { index: 0, deployment: None, label: String::new() })
}

/// Checks (or creates) the format of every drive of one pool.
pub fn reconcile_pool(drives: &[PathBuf], ctx: &PoolContext<'_>) -> StoreResult<FormatResult> {
    let label = &ctx.label;
    let mut formats = Vec::with_capacity(drives.len());
    for d in drives {
        formats.push(read_format(d)?);
    }
    let n = drives.len();
    let Some(reference) = formats.iter().flatten().next().cloned() else {
        // A brand new pool (of a new deployment, or joining `ctx.deployment`).
        let size = set_size_for(n)?;
        let deployment_id =
            ctx.deployment.map(String::from).unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let sets: Vec<Vec<String>> =
            (0..n / size).map(|_| (0..size).map(|_| uuid::Uuid::new_v4().to_string()).collect()).collect();
        let ids: Vec<String> = sets.concat();
        for (i, d) in drives.iter().enumerate() {
            write_format(d, &Format::new(&deployment_id, sets.clone(), ids[i].clone(), ctx.index))?;
        }
        return Ok(FormatResult { deployment_id, set_sizes: vec![size; n / size], replaced: Vec::new() });
    };
    let first = formats.iter().position(|x| x.is_some()).unwrap_or(0);
    let layout = reference.layout();
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        if f.pool_index() != ctx.index {
            return Err(StoreError::Format(format!(
                "pool order mismatch: {} is listed in pool {} (--drives spec {}) but was formatted as part of \
                 pool {}; give the pools' --drives specs in the order the pools were added",
                drives[i].display(),
                ctx.index + 1,
                ctx.index + 1,
                f.pool_index() + 1
            )));
        }
        if f.deployment_id != reference.deployment_id {
            return Err(StoreError::Format(format!(
                "{label}drives belong to different deployments: {} is in deployment {} but {} is in {}; \
                 refusing to mix them",
                drives[i].display(),
                f.deployment_id,
                drives[first].display(),
                reference.deployment_id
            )));
        }
        if f.layout() != layout {
            return Err(StoreError::Format(format!(
                "{label}drive {} disagrees with the other drives about the sets' membership",
                drives[i].display()
            )));
        }
    }
    if let Some(dep) = ctx.deployment.filter(|d| *d != reference.deployment_id) {
        return Err(StoreError::Format(format!(
            "drives belong to different deployments: pool {}'s {} is in deployment {} but the other pools \
             are in {dep}; refusing to mix them",
            ctx.index + 1,
            drives[first].display(),
            reference.deployment_id
        )));
    }
    let ids: Vec<String> = layout.concat();
    if ids.len() != n {
        let what = if label.is_empty() { "the deployment" } else { "the pool" };
        return Err(StoreError::Format(format!(
            "{label}{what} has {} drives ({} erasure sets) but the spec lists {n}",
            ids.len(),
            layout.len()
        )));
    }
    for (i, f) in formats.iter().enumerate() {
        let Some(f) = f else { continue };
        let slot = ids.iter().position(|id| *id == f.this);
        if slot != Some(i) {
            return Err(StoreError::Format(format!(
                "{label}drive order mismatch: {} is listed at position {} but was formatted as drive {} of the \
                 {}; list the drives in their original order",
                drives[i].display(),
                i + 1,
                slot.map(|s| (s + 1).to_string()).unwrap_or_else(|| "?".into()),
                if label.is_empty() { "deployment" } else { "pool" }
            )));
        }
    }
    let formatted = formats.iter().filter(|f| f.is_some()).count();
    let mut replaced = Vec::new();
    if formatted < n {
        if formatted * 2 < n {
            return Err(StoreError::Format(format!(
                "{label}only {formatted} of {n} drives carry a format; refusing to format the others \
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

/// Formats an empty drive into slot `slot` of the pool `reference` describes.
pub fn format_replacement(drive: &Path, reference: &Format, slot: usize) -> StoreResult<()> {
    let mut nf = reference.clone();
    nf.this = reference.layout().concat().get(slot).cloned().ok_or_else(|| {
        StoreError::Format(format!("slot {slot} is not part of deployment {}", reference.deployment_id))
    })?;
    write_format(drive, &nf)?;
    tracing::warn!(drive = %drive.display(), slot, "formatted empty replacement drive");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_1_format_is_one_set() {
        let v1 =
            r#"{"version":1,"format":"bucketfs-erasure","deployment_id":"x","drives":["a","b"],"this":"a"}"#;
        let f: Format = serde_json::from_str(v1).unwrap();
        assert_eq!(f.layout(), vec![vec!["a".to_string(), "b".to_string()]]);
        assert_eq!(f.pool_index(), 0);
        let f2 = Format::new("x", vec![vec!["a".into()], vec!["b".into()]], "b".into(), 0);
        let json = serde_json::to_string(&f2).unwrap();
        assert!(
            json.contains(r#""version":2"#)
                && json.contains(SET_DISTRIBUTION)
                && !json.contains(r#""drives""#)
                && !json.contains(r#""pool""#)
        );
        assert_eq!(Format::new("x", vec![vec!["a".into(), "b".into()]], "a".into(), 0), f);
    }

    /// A later pool is version 3 with its index, even with one set, so builds
    /// without pools refuse it; a version 1 or 2 file naming a pool is refused.
    #[test]
    fn later_pools_are_version_3() {
        let f = Format::new("x", vec![vec!["a".into(), "b".into()]], "a".into(), 1);
        let json = serde_json::to_string(&f).unwrap();
        assert!(json.contains(r#""version":3"#) && json.contains(r#""pool":1"#), "{json}");
        assert_eq!(f.layout(), vec![vec!["a".to_string(), "b".to_string()]]);
        assert_eq!(f.pool_index(), 1);
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(SYS_DIR)).unwrap();
        write_format(dir.path(), &f).unwrap();
        assert_eq!(read_format(dir.path()).unwrap(), Some(f));
        let bad = r#"{"version":2,"format":"bucketfs-erasure","deployment_id":"x","sets":[["a"]],
            "distribution_algo":"siphash-2-4-mod","pool":1,"this":"a"}"#;
        fs::write(dir.path().join(SYS_DIR).join(FORMAT_FILE), bad).unwrap();
        let e = read_format(dir.path()).unwrap_err().to_string();
        assert!(e.contains("unsupported format"), "{e}");
    }
}
