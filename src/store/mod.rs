//! The embedded erasure-coded object store behind `local://`.
//!
//! Modelled on MinIO's single-node, multi-drive deployment, with our own
//! on-disk format (docs/STORE-FORMAT.md). One [`Store`] is one or more *server
//! pools* ([`pools`]), each a drive spec of up to 256 drive directories split
//! into *erasure sets* of at most 16 ([`set::ErasureSet`]). An object lives in
//! one pool (where it was first written; new objects go to the pool with the
//! most free space, weighted at random) and, there, wholly in the set its key
//! hashes to (SipHash-2-4 keyed with the deployment id, modulo the pool's
//! number of sets), where it is cut into 1 MiB
//! blocks, each Reed-Solomon coded into `data + parity = set size` shards, and
//! shard `i` goes to drive `distribution[i]` of the set (a per-key rotation).
//! Every shard block carries an xxh3-128 hash, so corruption is detected and
//! repaired from the other shards rather than returned.
//!
//! Why sets: coding over more than 16 shards buys little safety for a lot of
//! per-object work (every object touches every drive), and independent sets
//! let a failure of `parity` drives in *each* set be survived. Why pools: a
//! store grows by adding a spec without moving data. This file only opens the
//! deployment and routes each call to the set(s) it concerns (pools.rs picks
//! the pool); what a set does with an object is the set's business.
//!
//! The store is synchronous (std::fs plus scoped threads, one per drive, for
//! shard I/O); the async adapter in `backend/local.rs` runs it on tokio's
//! blocking pool. Each set has a background thread that purges the trash and
//! heals objects that reads found damaged.
//!
//! Module map: [`drives`] (spec, lock, set sizes), [`format`] (format.json),
//! [`pools`] (pools.json, pool choice), [`siphash`] (set choice), [`set`] (one
//! erasure set), [`paths`] (key -> path),
//! [`erasure`] + [`bitrot`] (coding and hashing), [`meta`] (metadata file),
//! [`object`] (put/get/delete/copy, with `write.rs`, `commit.rs`, `read.rs`),
//! [`list`], [`multipart`] (with `uploads.rs`: routing), [`heal`], [`monitor`] (replaced drives),
//! [`scanner`] (background pass: heal, garbage, usage).

pub mod bitrot;
mod commit;
pub mod drives;
pub mod erasure;
pub mod error;
pub mod format;
pub mod heal;
pub mod list;
pub mod meta;
pub mod monitor;
pub mod multipart;
pub mod object;
pub mod paths;
pub mod pools;
mod read;
pub mod scanner;
pub mod set;
pub mod siphash;
mod uploads;
mod write;

use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use drives::{parse_drive_spec, parse_pool_specs};
pub use error::{StoreError, StoreResult};
pub use heal::HealSummary;
pub use set::ErasureSet;
pub use write::WriteBudget;

use crate::object::{GetOptions, ListPage, ListRequest, ObjectMeta, PutOptions};
use drives::DriveLock;

/// How a one-pool store is opened ([`Store::open_pools`] takes several).
#[derive(Clone, Debug, Default)]
pub struct StoreConfig {
    pub drives: Vec<PathBuf>,
    /// Parity shards per object; `None` picks MinIO's default for the set size.
    pub parity: Option<usize>,
}

/// A deployment: its pools' erasure sets and the key that places objects in them.
pub struct Store {
    /// Every pool's drives, pool after pool.
    drives: Vec<PathBuf>,
    /// Every pool's sets, pool after pool.
    sets: Vec<Arc<ErasureSet>>,
    pools: Vec<pools::Pool>,
    /// With several pools: held from choosing a key's pool until its write is
    /// done, so two writers of a new key cannot put it in two pools.
    route_locks: Vec<std::sync::Mutex<()>>,
    deployment_id: String,
    /// SipHash key: the deployment id's 16 bytes.
    set_key: [u8; 16],
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("drives", &self.drives)
            .field("sets", &self.sets.len())
            .field("pools", &self.pools.len())
            .finish()
    }
}

impl Store {
    /// Opens (formatting on first use) the drives and starts each set's background worker.
    pub fn open(cfg: StoreConfig) -> StoreResult<Arc<Store>> {
        Self::open_pools(vec![cfg.drives], cfg.parity)
    }

    /// Opens a store of one or more server pools (one drive list each, in the
    /// order the pools were added; a pool whose drives are all empty joins the
    /// deployment as a new pool).
    #[tracing::instrument(level = "debug", skip(pool_drives), fields(pools = pool_drives.len()))]
    pub fn open_pools(pool_drives: Vec<Vec<PathBuf>>, parity: Option<usize>) -> StoreResult<Arc<Store>> {
        if pool_drives.is_empty() {
            return Err(StoreError::Config("no drives given".into()));
        }
        let mut seen = std::collections::HashSet::new();
        for drives in &pool_drives {
            let n = drives.len();
            if n == 0 || n > drives::MAX_DRIVES {
                return Err(StoreError::Config(format!("need 1 to {} drives, got {n}", drives::MAX_DRIVES)));
            }
            for d in drives {
                if !d.is_absolute() {
                    return Err(StoreError::Config(format!("drive {} is not an absolute path", d.display())));
                }
                if !seen.insert(d.clone()) {
                    return Err(StoreError::Config(format!("drive {} is listed twice", d.display())));
                }
            }
        }
        let all: Vec<PathBuf> = pool_drives.concat();
        let mut locks = Vec::with_capacity(all.len());
        for d in &all {
            drives::prepare_drive(d)?;
            locks.push(lock_with_retry(d)?);
        }
        // Refuse a bad parity before anything is formatted: check it against the
        // sets recorded on each pool's drives, or those a new pool would get.
        for drives in &pool_drives {
            let recorded = drives.iter().find_map(|d| drives::read_format(d).ok().flatten());
            let smallest = match &recorded {
                Some(f) => f.layout().iter().map(Vec::len).min().unwrap_or(drives.len()),
                None => drives::set_size_for(drives.len())?,
            };
            parity_for(parity, smallest)?;
        }
        let results = pools::reconcile_pools(&pool_drives)?;
        let mut sets = Vec::new();
        let mut pools = Vec::with_capacity(results.len());
        let mut locks = locks.into_iter();
        let mut drive_base = 0;
        for (fr, drives) in results.iter().zip(&pool_drives) {
            let first_set = sets.len();
            let mut start = 0;
            for &size in &fr.set_sizes {
                let set_parity = parity_for(parity, size)?;
                let replaced: Vec<usize> = fr
                    .replaced
                    .iter()
                    .filter(|&&s| s >= start && s < start + size)
                    .map(|s| s - start)
                    .collect();
                let set_locks: Vec<DriveLock> = locks.by_ref().take(size).collect();
                let set_drives = drives[start..start + size].to_vec();
                sets.push(ErasureSet::start(
                    set_drives,
                    set_locks,
                    set_parity,
                    fr.deployment_id.clone(),
                    &replaced,
                )?);
                start += size;
            }
            pools.push(pools::Pool {
                drives: drive_base..drive_base + drives.len(),
                sets: first_set..sets.len(),
            });
            drive_base += drives.len();
        }
        let deployment_id = results[0].deployment_id.clone();
        let store = Arc::new(Store {
            drives: all,
            sets,
            pools,
            route_locks: (0..256).map(|_| std::sync::Mutex::new(())).collect(),
            set_key: set_key(&deployment_id),
            deployment_id,
        });
        if store.pools.len() > 1 {
            store.spread_buckets()?;
        }
        Ok(store)
    }

    /// All drives, in spec order (pool after pool).
    pub fn drives(&self) -> &[PathBuf] {
        &self.drives
    }

    /// The erasure sets, in spec order (pool after pool).
    pub fn sets(&self) -> &[Arc<ErasureSet>] {
        &self.sets
    }

    /// `(data, parity)` used for new objects (of the first set; all sets of a
    /// pool have the same size, but pools may differ: see [`Store::pool_sets`]).
    pub fn layout(&self) -> (usize, usize) {
        self.sets[0].layout()
    }

    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// Index of the set `key` hashes to in the first pool (with one pool:
    /// the set it lives in). See [`Store::pool_of`] for the pool.
    pub fn set_of(&self, key: &str) -> usize {
        siphash::set_of(key, self.pools[0].sets.len(), self.set_key)
    }

    /// Serialises choosing `key`'s pool and writing it (several pools only).
    fn route_lock(&self, bucket: &str, key: &str) -> Option<std::sync::MutexGuard<'_, ()>> {
        if self.pools.len() == 1 {
            return None;
        }
        let h = xxhash_rust::xxh3::xxh3_64(format!("{bucket}/{key}").as_bytes()) as usize;
        Some(self.route_locks[h % self.route_locks.len()].lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The set holding `key` (or where a read answers that it does not exist).
    fn read_set(&self, bucket: &str, key: &str) -> StoreResult<&ErasureSet> {
        Ok(self.pool_set(self.read_pool(bucket, key)?, key))
    }

    /// Shards that must be written for a write with `data`/`parity` to succeed.
    pub fn write_quorum(data: usize, parity: usize) -> usize {
        ErasureSet::write_quorum(data, parity)
    }

    /// Stops every set's background worker (see [`ErasureSet::close`]).
    pub fn close(&self) {
        for s in &self.sets {
            s.close();
        }
    }

    /// Deletes everything in every drive's trash now.
    pub fn purge_trash(&self) {
        for s in &self.sets {
            s.purge_trash();
        }
    }

    // ----- buckets: a bucket exists in every set -----

    pub fn make_bucket(&self, bucket: &str) -> StoreResult<()> {
        if self.bucket_exists(bucket)? {
            return Err(StoreError::BucketExists(bucket.into()));
        }
        for (i, s) in self.sets.iter().enumerate() {
            match s.make_bucket(bucket) {
                Ok(()) | Err(StoreError::BucketExists(_)) => {}
                Err(e) => {
                    for made in &self.sets[..i] {
                        let _ = made.delete_bucket(bucket);
                    }
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    pub fn bucket_exists(&self, bucket: &str) -> StoreResult<bool> {
        for s in &self.sets {
            if s.bucket_exists(bucket)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes an empty bucket (no objects and no multipart uploads in any set).
    pub fn delete_bucket(&self, bucket: &str) -> StoreResult<()> {
        if !self.bucket_exists(bucket)? {
            return Err(StoreError::NoSuchBucket(bucket.into()));
        }
        let one = ListRequest { max_keys: 1, ..Default::default() };
        if !self.list_objects(bucket, &one)?.objects.is_empty()
            || !self.list_multipart_uploads(bucket, "")?.is_empty()
        {
            return Err(StoreError::BucketNotEmpty(bucket.into()));
        }
        for s in &self.sets {
            match s.delete_bucket(bucket) {
                Ok(()) | Err(StoreError::NoSuchBucket(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    pub fn list_buckets(&self) -> StoreResult<Vec<String>> {
        let mut all = std::collections::BTreeSet::new();
        for s in &self.sets {
            all.extend(s.list_buckets()?);
        }
        Ok(all.into_iter().collect())
    }

    // ----- objects: each lives in one pool, in the set of its key -----

    pub fn put_object_reader(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut dyn Read,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let _route = self.route_lock(bucket, key);
        self.pool_set(self.write_pool(bucket, key, None)?, key).put_object_reader(bucket, key, reader, opts)
    }

    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let _route = self.route_lock(bucket, key);
        let size = Some(data.len() as u64);
        self.pool_set(self.write_pool(bucket, key, size)?, key).put_object(bucket, key, data, opts)
    }

    pub fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectMeta> {
        self.read_set(bucket, key)?.head_object(bucket, key)
    }

    pub fn object_part_sizes(&self, bucket: &str, key: &str) -> StoreResult<(ObjectMeta, Vec<u64>)> {
        self.read_set(bucket, key)?.object_part_sizes(bucket, key)
    }

    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<u8>)> {
        self.read_set(bucket, key)?.get_object(bucket, key, range, opts)
    }

    pub fn get_object_ranges(
        &self,
        bucket: &str,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<Vec<u8>>)> {
        self.read_set(bucket, key)?.get_object_ranges(bucket, key, ranges, opts)
    }

    /// Deletes `key` from every pool (normally one holds it; after a race two may).
    pub fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<()> {
        let _route = self.route_lock(bucket, key);
        for p in 0..self.pools.len() {
            self.pool_set(p, key).delete_object(bucket, key)?;
        }
        Ok(())
    }

    /// Server-side copy within a bucket; the two keys may live in different
    /// sets and pools (the destination goes where a put of it would).
    pub fn copy_object(
        &self,
        bucket: &str,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> StoreResult<ObjectMeta> {
        let from = self.read_set(bucket, src)?;
        let _route = self.route_lock(bucket, dst);
        let size =
            if self.pools.len() > 1 { from.head_object(bucket, src).ok().map(|m| m.size) } else { None };
        from.copy_object_to(
            self.pool_set(self.write_pool(bucket, dst, size)?, dst),
            bucket,
            src,
            dst,
            metadata,
        )
    }

    /// One page of an S3 listing, merged from every set's page (of every pool).
    pub fn list_objects(&self, bucket: &str, req: &ListRequest) -> StoreResult<ListPage> {
        if self.sets.len() == 1 {
            return self.sets[0].list_objects(bucket, req);
        }
        let mut pages = Vec::with_capacity(self.sets.len());
        for s in &self.sets {
            pages.push(s.list_objects(bucket, req)?);
        }
        Ok(list::merge_pages(pages, req.max_keys))
    }

    // ----- healing -----

    /// Heals every object of `bucket` (or of all buckets) in every set.
    pub fn heal(&self, bucket: Option<&str>, deep: bool) -> StoreResult<HealSummary> {
        let mut total = HealSummary::default();
        for s in &self.sets {
            let one = s.heal(bucket, deep)?;
            total.scanned += one.scanned;
            total.healed += one.healed;
            total.failed += one.failed;
            total.bytes += one.bytes;
        }
        Ok(total)
    }

    /// One data-scanner pass over every set at duty cycle `duty` (see scanner.rs).
    pub fn scan(&self, duty: f64) -> StoreResult<scanner::ScanReport> {
        let mut total = scanner::ScanReport::default();
        for s in &self.sets {
            total.merge(s.scan_at(duty)?);
        }
        Ok(total)
    }

    /// Sets the pace of the background scanner passes (`--scanner-speed`).
    pub fn set_scanner_speed(&self, speed: scanner::ScannerSpeed) {
        scanner::set_speed(&self.deployment_id, speed);
    }

    /// Heals one object in every pool (a pool without it drops any dangling
    /// pieces); returns the bytes rewritten (0 = it was healthy).
    pub fn heal_object(&self, bucket: &str, key: &str, deep: bool) -> StoreResult<u64> {
        (0..self.pools.len())
            .try_fold(0, |n, p| Ok(n + self.pool_set(p, key).heal_object(bucket, key, deep)?))
    }
}

/// The parity for sets of `size` drives: the override or MinIO's default,
/// refused when it leaves no data shard or exceeds half the set.
fn parity_for(requested: Option<usize>, size: usize) -> StoreResult<usize> {
    let parity = requested.unwrap_or_else(|| erasure::default_parity(size));
    if parity > size / 2 || parity >= size {
        return Err(StoreError::Config(format!(
            "parity {parity} is too high for erasure sets of {size} drives (at most {} and at least one data shard)",
            size / 2
        )));
    }
    Ok(parity)
}

/// The SipHash key of a deployment: its id's 16 bytes. Ids are UUIDs; anything
/// else (a hand-edited format.json) is hashed to 16 bytes so it still works.
fn set_key(deployment_id: &str) -> [u8; 16] {
    uuid::Uuid::parse_str(deployment_id)
        .map(|u| *u.as_bytes())
        .unwrap_or_else(|_| xxhash_rust::xxh3::xxh3_128(deployment_id.as_bytes()).to_le_bytes())
}

/// Takes a drive lock; a lock held by this very process is retried briefly because
/// it is usually a just-dropped Store whose background thread is finishing.
fn lock_with_retry(d: &Path) -> StoreResult<DriveLock> {
    let me = format!("pid {} ", std::process::id());
    for _ in 0..40 {
        match drives::lock_drive(d) {
            Err(StoreError::Locked { holder, .. }) if holder.starts_with(&me) => {
                std::thread::sleep(Duration::from_millis(50))
            }
            r => return r,
        }
    }
    drives::lock_drive(d)
}
