//! One erasure set: the drives every shard of an object is spread over.
//!
//! A [`super::Store`] is one or more sets; an object lives wholly inside the
//! set its key hashes to, so each set is an independent MinIO-style erasure
//! group: `data + parity = drives of the set`, quorums counted within the set,
//! its own striped key locks and its own background worker (trash purge and
//! heals of objects that reads found damaged). Keeping the per-set state here
//! lets the object, read, write, commit, list, multipart and heal code stay
//! exactly what it was for a single set; only routing lives in `mod.rs`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use super::drives::{DriveLock, SYS_DIR};
use super::error::{StoreError, StoreResult};
use super::paths;

/// Work for the background thread.
enum BgTask {
    HealObject {
        bucket: String,
        key: String,
    },
    /// Heal everything onto these freshly formatted slots (paced, with progress).
    HealReplaced(Vec<usize>),
    PurgeTrash,
    /// Periodic: look for replaced drives (monitor.rs) and purge the trash now and then.
    Tick,
}

const LOCK_STRIPES: usize = 256;

fn stripe<'a>(locks: &'a [Mutex<()>], name: &str) -> MutexGuard<'a, ()> {
    let h = xxhash_rust::xxh3::xxh3_64(name.as_bytes()) as usize % locks.len();
    locks[h].lock().unwrap_or_else(|e| e.into_inner())
}

pub struct ErasureSet {
    pub(super) drives: Vec<PathBuf>,
    /// Per drive, whether its file system's link counts prove a directory a leaf
    /// (`drives::counts_subdirs`), asked once here rather than at every listing.
    pub(super) counts_subdirs: Vec<bool>,
    pub(super) data: usize,
    pub(super) parity: usize,
    pub(super) deployment_id: String,
    /// In-process per-key write locks (striped). Cross-process exclusion is the drive flock.
    key_locks: Vec<Mutex<()>>,
    /// Per-upload locks, a separate stripe set: completing an upload holds its upload
    /// lock while it takes the key lock to commit, and with one shared set the two could
    /// fall on the same stripe and deadlock (1 completion in 256 did, in a test).
    upload_locks: Vec<Mutex<()>>,
    bg: Mutex<Option<Sender<BgTask>>>,
    bg_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Slots formatted as empty replacements and not yet fully healed: their
    /// "not found" answers mean nothing.
    pub(super) healing: Vec<AtomicBool>,
    /// A trash purge is already queued (deletes are frequent; one purge serves all).
    purge_queued: AtomicBool,
    /// Set by `close`: the worker skips whatever is still queued.
    closing: AtomicBool,
    /// The drives' flocks; a replaced drive's is swapped for one on its new lock file.
    pub(super) locks: Mutex<Vec<DriveLock>>,
    /// Per-drive repair backoff: after a heal's write to a drive fails (full, or
    /// failing), heals leave that drive alone until the pause ends, so that a
    /// full drive is not retried once per object in a tight loop (issue 14
    /// measured 476 log lines). See [`RepairBackoff`].
    repair_backoff: Vec<Mutex<RepairBackoff>>,
    /// Repairs left undone because their drive was paused; `heal_with` counts
    /// them as failed so a pass over a paused drive never reports it healed.
    pub(super) repair_skipped: std::sync::atomic::AtomicU64,
    /// Totals of this set's scanner passes (metrics).
    pub scanner_stats: super::scanner::ScannerStats,
    /// What this set's writes pay their block buffers from (see `write.rs`).
    pub(super) write_budget: super::write::WriteBudgetSlot,
}

/// First pause after a failed repair write to a drive; doubles per failure.
pub const REPAIR_BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// Longest pause: a drive that stays full is retried every 5 minutes.
pub const REPAIR_BACKOFF_MAX: Duration = Duration::from_secs(300);

/// One drive's repair backoff state.
#[derive(Debug, Default)]
struct RepairBackoff {
    /// Current pause (zero = the drive takes repairs normally).
    step: Duration,
    /// Repairs onto the drive resume at this instant.
    until: Option<Instant>,
}

impl std::fmt::Debug for ErasureSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErasureSet")
            .field("drives", &self.drives)
            .field("data", &self.data)
            .field("parity", &self.parity)
            .finish()
    }
}

impl ErasureSet {
    /// Builds a set over drives that [`super::Store::open`] has already locked and
    /// whose formats it reconciled, and starts the set's background worker.
    /// `replaced` are slots (within this set) formatted as empty replacements.
    pub(crate) fn start(
        drives: Vec<PathBuf>,
        locks: Vec<DriveLock>,
        parity: usize,
        deployment_id: String,
        replaced: &[usize],
    ) -> StoreResult<Arc<ErasureSet>> {
        let n = drives.len();
        let store = Arc::new(ErasureSet {
            counts_subdirs: drives.iter().map(|d| super::drives::counts_subdirs(d)).collect(),
            drives,
            data: n - parity,
            parity,
            deployment_id,
            key_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            upload_locks: (0..LOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            bg: Mutex::new(None),
            bg_thread: Mutex::new(None),
            purge_queued: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            healing: (0..n).map(|s| AtomicBool::new(replaced.contains(&s))).collect(),
            locks: Mutex::new(locks),
            repair_backoff: (0..n).map(|_| Mutex::new(RepairBackoff::default())).collect(),
            repair_skipped: std::sync::atomic::AtomicU64::new(0),
            scanner_stats: Default::default(),
            write_budget: Default::default(),
        });
        // Leftovers of writes interrupted by a crash: nothing references them.
        for d in &store.drives {
            let tmp = d.join(SYS_DIR).join("tmp");
            if let Ok(rd) = fs::read_dir(&tmp) {
                for e in rd.flatten() {
                    let _ = store.move_to_trash_path(d, &e.path());
                }
            }
        }
        let (tx, rx) = mpsc::channel();
        *store.bg.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let weak = Arc::downgrade(&store);
        let handle = std::thread::Builder::new()
            .name("bucketfs-store-bg".into())
            .spawn(move || background(weak, rx))
            .map_err(|e| StoreError::io(Path::new("background thread"), e))?;
        *store.bg_thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        store.schedule(BgTask::PurgeTrash);
        if !replaced.is_empty() {
            store.schedule(BgTask::HealReplaced(replaced.to_vec()));
        }
        Ok(store)
    }

    pub fn drives(&self) -> &[PathBuf] {
        &self.drives
    }

    /// `(data, parity)` used for new objects.
    pub fn layout(&self) -> (usize, usize) {
        (self.data, self.parity)
    }

    pub fn deployment_id(&self) -> &str {
        &self.deployment_id
    }

    /// Shards that must be written for a write with `data`/`parity` to succeed.
    pub fn write_quorum(data: usize, parity: usize) -> usize {
        if data == parity {
            data + 1
        } else {
            data
        }
    }

    fn schedule(&self, t: BgTask) {
        if let Some(tx) = self.bg.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(t);
        }
    }

    /// Queues a background heal of one object (heal-on-read).
    pub(crate) fn queue_heal(&self, bucket: &str, key: &str) {
        tracing::debug!(bucket, key, "queueing heal");
        self.schedule(BgTask::HealObject { bucket: bucket.into(), key: key.into() });
    }

    pub(crate) fn key_lock(&self, bucket: &str, key: &str) -> MutexGuard<'_, ()> {
        stripe(&self.key_locks, &format!("{bucket}/{key}"))
    }

    /// Serializes the part and completion operations of one multipart upload. Lock order:
    /// upload lock, then key lock; never the other way round.
    pub(crate) fn upload_lock(&self, bucket: &str, upload_id: &str) -> MutexGuard<'_, ()> {
        stripe(&self.upload_locks, &format!("{bucket}/{upload_id}"))
    }

    pub(crate) fn sys(&self, slot: usize) -> PathBuf {
        self.drives[slot].join(SYS_DIR)
    }

    /// A drive is online while its system directory exists.
    pub fn drive_online(&self, slot: usize) -> bool {
        self.sys(slot).is_dir()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    pub fn is_healing(&self, slot: usize) -> bool {
        self.healing[slot].load(Ordering::Relaxed)
    }

    /// From now on `slot`'s "not found" answers mean nothing (it came back empty).
    pub(crate) fn mark_healing(&self, slot: usize) {
        self.healing[slot].store(true, Ordering::Release);
    }

    /// True while repairs onto `slot` are paused after a failed write to it.
    pub(crate) fn repair_paused(&self, slot: usize) -> bool {
        let b = self.repair_backoff[slot].lock().unwrap_or_else(|e| e.into_inner());
        b.until.is_some_and(|t| Instant::now() < t)
    }

    /// A heal's write to `slot` failed: pause repairs onto it for the next
    /// backoff step (1 s doubling to 5 min). Logged here, once per step, so a
    /// full drive costs one log line per pause rather than one per object.
    pub(crate) fn repair_failed(&self, slot: usize, err: &StoreError) {
        let mut b = self.repair_backoff[slot].lock().unwrap_or_else(|e| e.into_inner());
        b.step = if b.step.is_zero() { REPAIR_BACKOFF_FIRST } else { (b.step * 2).min(REPAIR_BACKOFF_MAX) };
        b.until = Some(Instant::now() + b.step);
        tracing::warn!(
            drive = %self.drives[slot].display(),
            error = %err,
            no_space = err.is_no_space(),
            retry_in_secs = b.step.as_secs(),
            "repair onto drive failed; pausing repairs onto it"
        );
    }

    /// A heal wrote to `slot`: any backoff is over.
    pub(crate) fn repair_succeeded(&self, slot: usize) {
        let mut b = self.repair_backoff[slot].lock().unwrap_or_else(|e| e.into_inner());
        if !b.step.is_zero() {
            tracing::info!(drive = %self.drives[slot].display(), "repair onto drive succeeded again; backoff reset");
            *b = RepairBackoff::default();
        }
    }

    pub(crate) fn set_healed(&self) {
        for h in &self.healing {
            h.store(false, Ordering::Relaxed);
        }
    }

    /// Slots worth asking in a listing: online, not being rebuilt, at most
    /// `parity + 1` of them (any object lives on at least `data` drives, so
    /// any `parity + 1` drives include one that has it).
    pub(crate) fn list_slots(&self, bucket: &str) -> Vec<usize> {
        let mut v: Vec<usize> = (0..self.drives.len())
            .filter(|&s| !self.is_healing(s) && self.drives[s].join(bucket).is_dir())
            .collect();
        v.truncate(self.parity + 1);
        v
    }

    /// Moves `path` (on `drive`) into the drive's trash; the background thread deletes it.
    pub(crate) fn move_to_trash_path(&self, drive: &Path, path: &Path) -> StoreResult<()> {
        let dst = drive.join(SYS_DIR).join("trash").join(uuid::Uuid::new_v4().simple().to_string());
        match fs::rename(path, &dst) {
            Ok(()) => {
                if !self.purge_queued.swap(true, Ordering::AcqRel) {
                    self.schedule(BgTask::PurgeTrash);
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Deletes everything in every drive's trash now.
    pub fn purge_trash(&self) {
        for d in &self.drives {
            let trash = d.join(SYS_DIR).join("trash");
            if let Ok(rd) = fs::read_dir(&trash) {
                for e in rd.flatten() {
                    let p = e.path();
                    let r = if p.is_dir() { fs::remove_dir_all(&p) } else { fs::remove_file(&p) };
                    if let Err(e) = r {
                        tracing::warn!(path = %p.display(), error = %e, "could not purge trash entry");
                    }
                }
            }
        }
    }

    // ----- buckets -----

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn make_bucket(&self, bucket: &str) -> StoreResult<()> {
        paths::validate_bucket(bucket)?;
        if self.bucket_exists(bucket)? {
            return Err(StoreError::BucketExists(bucket.into()));
        }
        let mut ok = 0;
        let mut last_err = None;
        for d in &self.drives {
            let p = d.join(bucket);
            match fs::create_dir(&p) {
                Ok(()) => ok += 1,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => ok += 1,
                Err(e) => last_err = Some(StoreError::io(&p, e)),
            }
        }
        let need = Self::write_quorum(self.data, self.parity);
        if ok < need {
            for d in &self.drives {
                let _ = fs::remove_dir(d.join(bucket));
            }
            return Err(quorum_error("write", ok, need, last_err));
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn bucket_exists(&self, bucket: &str) -> StoreResult<bool> {
        paths::validate_bucket(bucket)?;
        Ok(self.drives.iter().any(|d| d.join(bucket).is_dir()))
    }

    pub(crate) fn require_bucket(&self, bucket: &str) -> StoreResult<()> {
        if self.bucket_exists(bucket)? {
            Ok(())
        } else {
            Err(StoreError::NoSuchBucket(bucket.into()))
        }
    }

    /// Deletes an empty bucket (no objects and no multipart uploads).
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn delete_bucket(&self, bucket: &str) -> StoreResult<()> {
        self.require_bucket(bucket)?;
        let page =
            self.list_objects(bucket, &crate::object::ListRequest { max_keys: 1, ..Default::default() })?;
        if !page.objects.is_empty() || !self.list_multipart_uploads(bucket, "")?.is_empty() {
            return Err(StoreError::BucketNotEmpty(bucket.into()));
        }
        for (slot, d) in self.drives.iter().enumerate() {
            let p = d.join(bucket);
            if p.is_dir() {
                // Only empty directories (left behind by deletes) can remain here.
                self.move_to_trash_path(d, &p)?;
            }
            let _ = self.move_to_trash_path(d, &self.sys(slot).join("multipart").join(bucket));
        }
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn list_buckets(&self) -> StoreResult<Vec<String>> {
        let mut set = std::collections::BTreeSet::new();
        for d in &self.drives {
            let Ok(rd) = fs::read_dir(d) else { continue };
            for e in rd.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    if paths::validate_bucket(name).is_ok() && e.path().is_dir() {
                        set.insert(name.to_string());
                    }
                }
            }
        }
        Ok(set.into_iter().collect())
    }
}

/// Builds the error for a missed quorum, preferring QuotaExceeded or NoSpace when a
/// drive refused the write for room.
pub(crate) fn quorum_error(
    kind: &'static str,
    got: usize,
    need: usize,
    last: Option<StoreError>,
) -> StoreError {
    match last {
        Some(e) if e.is_quota() => {
            StoreError::QuotaExceeded(format!("{kind} quorum lost ({got} of {need}): {e}"))
        }
        Some(e) if e.is_no_space() => {
            StoreError::NoSpace(format!("{kind} quorum lost ({got} of {need}): {e}"))
        }
        Some(e) => StoreError::Quorum { kind, got, need, detail: e.to_string() },
        None => StoreError::Quorum { kind, got, need, detail: "drives offline".into() },
    }
}

fn background(store: Weak<ErasureSet>, rx: Receiver<BgTask>) {
    let mut last_purge = std::time::Instant::now();
    let mut last_scan = std::time::Instant::now();
    loop {
        let task = match rx.recv_timeout(super::monitor::CHECK_INTERVAL) {
            Ok(t) => t,
            Err(RecvTimeoutError::Timeout) => BgTask::Tick,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let Some(s) = store.upgrade() else { return };
        if s.closing.load(Ordering::Acquire) {
            return;
        }
        match task {
            BgTask::PurgeTrash => {
                s.purge_queued.store(false, Ordering::Release);
                s.purge_trash();
                last_purge = std::time::Instant::now();
            }
            BgTask::HealObject { bucket, key } => {
                if let Err(e) = s.heal_object(&bucket, &key, true) {
                    tracing::warn!(bucket, key, error = %e, "background heal failed");
                }
            }
            BgTask::HealReplaced(slots) => s.heal_replaced(&slots),
            BgTask::Tick => {
                let slots = s.adopt_replaced_drives();
                if !slots.is_empty() {
                    s.heal_replaced(&slots);
                }
                if last_scan.elapsed() >= super::scanner::SCAN_INTERVAL {
                    match s.scan(super::scanner::GENTLE_DUTY) {
                        Ok(r) => tracing::info!(
                            objects = r.heal.scanned,
                            healed = r.heal.healed,
                            failed = r.heal.failed,
                            deep_checked = r.deep_checked,
                            stale_tmp_removed = r.stale_tmp_removed,
                            uploads_expired = r.uploads_expired,
                            "scanner pass finished"
                        ),
                        Err(e) => tracing::warn!(error = %e, "scanner pass failed"),
                    }
                    last_scan = std::time::Instant::now();
                }
                if last_purge.elapsed() >= Duration::from_secs(30) {
                    s.purge_trash();
                    last_purge = std::time::Instant::now();
                }
            }
        }
    }
}

impl ErasureSet {
    /// Stops the background worker, waiting for its current task (a heal can
    /// take a while). Afterwards dropping the last `Arc` releases the drive
    /// locks at once; without it they are released when the worker finishes
    /// its task. Call before handing the drives to another process.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.bg.lock().unwrap_or_else(|e| e.into_inner()).take();
        let handle = self.bg_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for ErasureSet {
    fn drop(&mut self) {
        // Dropping the sender ends the background thread.
        self.close();
    }
}

#[cfg(test)]
mod lock_tests {
    use super::super::{Store, StoreConfig};
    use super::*;

    /// Completing an upload holds its upload lock while taking the key lock; with one
    /// shared stripe set some key fell on the upload's stripe and the thread deadlocked.
    #[test]
    fn upload_lock_never_blocks_key_locks() {
        let dir = tempfile::tempdir().unwrap();
        let drives = (0..2).map(|i| dir.path().join(format!("d{i}"))).collect();
        let whole = Store::open(StoreConfig { drives, parity: None }).unwrap();
        let store = whole.sets()[0].clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let s = store.clone();
        std::thread::spawn(move || {
            let _upload = s.upload_lock("bkt", "some-upload-id");
            for i in 0..4 * LOCK_STRIPES {
                drop(s.key_lock("bkt", &format!("key-{i}")));
            }
            tx.send(()).unwrap();
        });
        let done = rx.recv_timeout(std::time::Duration::from_secs(10));
        whole.close();
        assert!(done.is_ok(), "a key lock waited on the held upload lock");
    }
}
