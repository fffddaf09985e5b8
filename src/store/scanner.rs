//! The data scanner: one pass over a set that heals what is damaged, removes
//! garbage and counts usage.
//!
//! Why a pass built on the heal walk: healing already lists every object,
//! compares every drive's metadata and shard files with the resolved version
//! and, when all drives are healthy, trashes what no version references
//! (`%meta.prev`, orphaned `%d.*` data dirs, remains of objects below read
//! quorum). The scanner adds what a heal does not do: a deep (bitrot) check
//! on a sample of objects, stale temp entries (writes that died without a
//! restart to clean them), multipart uploads past their expiry, and per-bucket
//! usage. Its pace is a duty cycle: after each object it sleeps so that it is
//! busy only `duty` of the time, which bounds its share of a disk's
//! throughput without knowing the disk's speed.

use std::collections::BTreeMap;
use std::time::{Duration, Instant, SystemTime};

use super::drives::SYS_DIR;
use super::error::StoreResult;
use super::heal::HealSummary;
use super::set::ErasureSet;

/// A temp entry older than this belongs to no write still running.
pub const STALE_TMP: Duration = Duration::from_secs(3600);
/// Multipart uploads idle this long are aborted (their parts trashed).
pub const UPLOAD_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// One object in this many gets a deep (every block hashed) check per pass.
const DEEP_SAMPLE: u64 = 64;
/// Time between background passes (each set's worker runs them).
pub const SCAN_INTERVAL: Duration = Duration::from_secs(600);
/// The gentle default: busy 10 % of the time.
pub const GENTLE_DUTY: f64 = 0.1;

/// Objects and bytes of one bucket (no versioning: one version per object).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BucketUsage {
    pub objects: u64,
    pub bytes: u64,
    pub versions: u64,
}

/// What one scanner pass found and did.
#[derive(Clone, Debug, Default)]
pub struct ScanReport {
    pub heal: HealSummary,
    pub deep_checked: u64,
    pub usage: BTreeMap<String, BucketUsage>,
    pub stale_tmp_removed: u64,
    pub uploads_expired: u64,
}

impl ScanReport {
    /// Adds another set's report into this one.
    pub fn merge(&mut self, o: ScanReport) {
        self.heal.scanned += o.heal.scanned;
        self.heal.healed += o.heal.healed;
        self.heal.failed += o.heal.failed;
        self.heal.bytes += o.heal.bytes;
        self.deep_checked += o.deep_checked;
        self.stale_tmp_removed += o.stale_tmp_removed;
        self.uploads_expired += o.uploads_expired;
        for (b, u) in o.usage {
            let t = self.usage.entry(b).or_default();
            t.objects += u.objects;
            t.bytes += u.bytes;
            t.versions += u.versions;
        }
    }
}

impl ErasureSet {
    /// One scanner pass at duty cycle `duty` (0 < duty <= 1; 1 = full speed).
    pub fn scan(&self, duty: f64) -> StoreResult<ScanReport> {
        let duty = duty.clamp(0.001, 1.0);
        let mut rep = ScanReport::default();
        for slot in 0..self.drives.len() {
            let Ok(rd) = std::fs::read_dir(self.drives[slot].join(SYS_DIR).join("tmp")) else { continue };
            for e in rd.flatten() {
                let age = e
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok());
                if age.is_some_and(|a| a >= STALE_TMP)
                    && self.move_to_trash_path(&self.drives[slot], &e.path()).is_ok()
                {
                    rep.stale_tmp_removed += 1;
                }
            }
        }
        for b in self.list_buckets()? {
            rep.uploads_expired += self.expire_uploads(&b, UPLOAD_EXPIRY)? as u64;
        }
        let mut last = Instant::now();
        let mut usage: BTreeMap<String, BucketUsage> = BTreeMap::new();
        let mut deep = 0;
        let sum = self.heal_with(None, false, &mut |bucket, o, sum| {
            let u = usage.entry(bucket.to_string()).or_default();
            u.objects += 1;
            u.versions += 1;
            u.bytes += o.size;
            if xxhash_rust::xxh3::xxh3_64(o.key.as_bytes()) % DEEP_SAMPLE == sum.scanned % DEEP_SAMPLE {
                deep += 1;
                if let Err(e) = self.heal_object(bucket, &o.key, true) {
                    tracing::warn!(bucket, key = %o.key, error = %e, "scanner: deep check failed");
                }
            }
            let busy = last.elapsed();
            std::thread::sleep(busy.mul_f64((1.0 - duty) / duty));
            last = Instant::now();
            !self.is_closing()
        })?;
        rep.heal = sum;
        rep.deep_checked = deep;
        rep.usage = usage;
        Ok(rep)
    }
}
