//! Server pools: several drive specs forming one store that grows without
//! moving data (MinIO's server pools).
//!
//! Each pool is what a single spec has always been: its own erasure sets, its
//! own format.json per drive (format.rs; pools after the first are version 3
//! and record their index), all pools sharing the deployment id, so the set
//! an object hashes to *within* a pool uses the same SipHash key everywhere.
//! The deployment's list of pools (drive and set counts) is in
//! `.bucketfs.sys/pools.json` on every drive once there is more than one
//! pool, so that leaving a pool out of the spec is refused instead of silently
//! hiding its objects; old pools' format.json and data are never rewritten.
//!
//! Routing (as MinIO does it):
//! - an existing object stays in its pool: every operation on a key first
//!   asks each pool's set for that key and goes where it is (the newest copy
//!   if, after a race, two pools hold one);
//! - a new object goes to a pool chosen at random, weighted by the free space
//!   of the set its key hashes to in each pool (sets over 99 % full or
//!   without room for the object's shards get no weight);
//! - a multipart upload's pool is chosen at create time; the upload's
//!   directory lives there, and parts, listing of parts, completion and abort
//!   find it by asking each pool for the upload id;
//! - listings merge every set of every pool (list.rs `merge_pages`; a key in
//!   two pools is listed once, the newest).

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::drives::{self, read_format, SYS_DIR};
use super::error::{StoreError, StoreResult};
use super::format::{reconcile_pool, FormatResult, PoolContext};
use super::set::ErasureSet;
use super::Store;

const POOLS_FILE: &str = "pools.json";
/// A set more than this full (per mille of its drives' bytes) takes no new
/// objects while another pool has room (MinIO's `diskFillFraction`, 0.99).
const FULL_PER_MILLE: u64 = 990;

/// One pool's place in the store's flat lists of drives and sets.
#[derive(Clone, Debug)]
pub(super) struct Pool {
    pub drives: Range<usize>,
    pub sets: Range<usize>,
}

/// `pools.json`: the deployment's pools, in the order they were added.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PoolsFile {
    deployment_id: String,
    pools: Vec<PoolRecord>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct PoolRecord {
    drives: usize,
    sets: usize,
}

fn read_pools_file(drive: &Path) -> Option<PoolsFile> {
    let b = std::fs::read(drive.join(SYS_DIR).join(POOLS_FILE)).ok()?;
    serde_json::from_slice(&b).ok()
}

/// Reconciles every pool's formats (formatting new pools into the deployment)
/// and records the pool list; the drives are already locked.
pub(super) fn reconcile_pools(pools: &[Vec<PathBuf>]) -> StoreResult<Vec<FormatResult>> {
    let multi = pools.len() > 1;
    // The deployment is the one the first formatted drive (in spec order) names.
    let formats: Vec<Vec<Option<drives::Format>>> =
        pools.iter().map(|p| p.iter().map(|d| read_format(d).ok().flatten()).collect()).collect();
    let deployment = formats.iter().flatten().flatten().next().map(|f| f.deployment_id.clone());
    // How many pools it has: the highest pool index formatted on any given
    // drive, or the longest pools.json.
    let mut recorded: Option<PoolsFile> = None;
    let mut known = 0;
    if let Some(dep) = &deployment {
        for f in formats.iter().flatten().flatten().filter(|f| &f.deployment_id == dep) {
            known = known.max(f.pool_index() + 1);
        }
        for d in pools.iter().flatten() {
            if let Some(pf) = read_pools_file(d).filter(|pf| &pf.deployment_id == dep) {
                if pf.pools.len() > recorded.as_ref().map_or(0, |r| r.pools.len()) {
                    recorded = Some(pf);
                }
            }
        }
        known = known.max(recorded.as_ref().map_or(0, |r| r.pools.len()));
    }
    if pools.len() < known {
        let missing = recorded
            .as_ref()
            .map(|r| {
                let sizes: Vec<String> = r.pools[pools.len()..]
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("pool {} has {} drives", pools.len() + i + 1, p.drives))
                    .collect();
                format!(" ({})", sizes.join(", "))
            })
            .unwrap_or_default();
        return Err(StoreError::Format(format!(
            "the deployment has {known} server pools but {} drive spec(s) were given{missing}; give every \
             pool's --drives, in the order the pools were added",
            pools.len()
        )));
    }
    let mut out: Vec<FormatResult> = Vec::with_capacity(pools.len());
    for (i, drives) in pools.iter().enumerate() {
        let new_pool = formats[i].iter().all(Option::is_none);
        if new_pool && i < known {
            return Err(StoreError::Format(format!(
                "pool {} ({} drives from {}) has no formatted drive, but the deployment already has {known} \
                 pools: wrong --drives spec for pool {}?",
                i + 1,
                drives.len(),
                drives[0].display(),
                i + 1
            )));
        }
        let dep = out.first().map(|fr| fr.deployment_id.clone()).or_else(|| deployment.clone());
        let label = if multi { format!("pool {}: ", i + 1) } else { String::new() };
        let fr = reconcile_pool(drives, &PoolContext { index: i, deployment: dep.as_deref(), label })?;
        if new_pool && deployment.is_some() {
            tracing::warn!(
                pool = i + 1,
                drives = drives.len(),
                first = %drives[0].display(),
                "formatted a new server pool; existing objects stay in their pools"
            );
        }
        out.push(fr);
    }
    if multi {
        let file = PoolsFile {
            deployment_id: out[0].deployment_id.clone(),
            pools: out
                .iter()
                .zip(pools)
                .map(|(fr, d)| PoolRecord { drives: d.len(), sets: fr.set_sizes.len() })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&file).map_err(|e| StoreError::Format(e.to_string()))?;
        for d in pools.iter().flatten() {
            if read_pools_file(d).as_ref() != Some(&file) {
                drives::write_file_durable(&d.join(SYS_DIR).join(POOLS_FILE), &bytes)?;
            }
        }
    }
    Ok(out)
}

impl Store {
    /// Number of server pools.
    pub fn pool_count(&self) -> usize {
        self.pools.len()
    }

    /// The erasure sets of pool `p`.
    pub fn pool_sets(&self, p: usize) -> &[std::sync::Arc<ErasureSet>] {
        &self.sets[self.pools[p].sets.clone()]
    }

    /// The drives of pool `p`, in spec order.
    pub fn pool_drives(&self, p: usize) -> &[PathBuf] {
        &self.drives[self.pools[p].drives.clone()]
    }

    /// The set `key` hashes to in pool `p`.
    pub(super) fn pool_set(&self, p: usize, key: &str) -> &ErasureSet {
        let r = &self.pools[p].sets;
        &self.sets[r.start + super::siphash::set_of(key, r.len(), self.set_key)]
    }

    /// The pool holding `key` (the newest copy if several do), or `None`.
    pub fn pool_of(&self, bucket: &str, key: &str) -> StoreResult<Option<usize>> {
        if self.pools.len() == 1 {
            return Ok(Some(0));
        }
        let mut best: Option<(usize, std::time::SystemTime)> = None;
        for p in 0..self.pools.len() {
            match self.pool_set(p, key).head_object(bucket, key) {
                Ok(m) => {
                    if best.is_none_or(|(_, t)| m.last_modified > t) {
                        best = Some((p, m.last_modified));
                    }
                }
                Err(StoreError::NotFound { .. } | StoreError::NoSuchBucket(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(best.map(|(p, _)| p))
    }

    /// Where a read of `key` goes: its pool, or the first (which answers "not found").
    pub(super) fn read_pool(&self, bucket: &str, key: &str) -> StoreResult<usize> {
        Ok(self.pool_of(bucket, key)?.unwrap_or(0))
    }

    /// Where a write of `key` goes: its pool if it exists, else a new choice.
    /// `size` (when known) keeps objects off sets without room for them.
    pub(super) fn write_pool(&self, bucket: &str, key: &str, size: Option<u64>) -> StoreResult<usize> {
        if self.pools.len() == 1 {
            return Ok(0);
        }
        match self.pool_of(bucket, key)? {
            Some(p) => Ok(p),
            None => Ok(self.choose_new_pool(key, size)),
        }
    }

    /// MinIO's `getAvailablePoolIdx`: random, weighted by the free bytes of the
    /// set `key` hashes to in each pool. With no room anywhere, the first pool
    /// (whose write then fails with the drives' own "no space" error).
    fn choose_new_pool(&self, key: &str, size: Option<u64>) -> usize {
        let weights: Vec<u64> =
            (0..self.pools.len()).map(|p| set_weight(self.pool_set(p, key), size)).collect();
        let total: u128 = weights.iter().map(|&w| w as u128).sum();
        if total == 0 {
            return 0;
        }
        let mut pick = uuid::Uuid::new_v4().as_u128() % total;
        for (p, &w) in weights.iter().enumerate() {
            if pick < w as u128 {
                return p;
            }
            pick -= w as u128;
        }
        weights.len() - 1
    }

    /// The pool holding upload `id` of `key` (the first if none does, which
    /// then answers "no such upload").
    pub(super) fn upload_pool(&self, bucket: &str, key: &str, id: &str) -> usize {
        if self.pools.len() == 1 {
            return 0;
        }
        (0..self.pools.len()).find(|&p| self.pool_set(p, key).has_upload(bucket, key, id)).unwrap_or(0)
    }

    /// Makes every bucket exist in every set: a pool added to a deployment
    /// starts without the buckets the older pools have.
    pub(super) fn spread_buckets(&self) -> StoreResult<()> {
        for b in self.list_buckets()? {
            for s in &self.sets {
                if !s.bucket_exists(&b)? {
                    s.make_bucket(&b)?;
                }
            }
        }
        Ok(())
    }
}

/// Free bytes of `set` as a pool-choice weight: 0 when over 99 % full, or
/// when some online drive cannot take its shard of a `size`-byte object.
fn set_weight(set: &ErasureSet, size: Option<u64>) -> u64 {
    let (data, _) = set.layout();
    let shard = size.map(|s| s.div_ceil(data.max(1) as u64)).unwrap_or(0);
    let (mut total, mut avail) = (0u64, 0u64);
    for d in set.drives() {
        let Some((t, a)) = drives::space(d) else { continue };
        if a < shard {
            return 0;
        }
        total += t;
        avail += a;
    }
    if total == 0 || (total - avail.min(total)) as u128 * 1000 > total as u128 * FULL_PER_MILLE as u128 {
        return 0;
    }
    avail
}
