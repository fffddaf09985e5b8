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
//!
//! The background pace is set per deployment with [`set_speed`]
//! (`--scanner-speed`); the set's worker calls [`ErasureSet::scan`], which
//! looks it up. On-demand passes ([`ErasureSet::scan_at`], `Store::scan`) take
//! an explicit duty. Each pass records its usage in `usage.json` on every
//! drive of its set so `bucketfs du` can show it while another process holds
//! the drives.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::drives::{self, SYS_DIR};
use super::error::{StoreError, StoreResult};
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

/// `--scanner-speed fast`: busy half the time.
pub const FAST_DUTY: f64 = 0.5;
/// File (in each drive's system dir) holding the usage its set's last pass counted.
pub const USAGE_FILE: &str = "usage.json";

/// Pace of the background scanner (`--scanner-speed`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScannerSpeed {
    /// No background passes (on-demand ones still run).
    Off,
    /// Busy this fraction (0 < duty <= 1) of the pass's time.
    Duty(f64),
}

impl Default for ScannerSpeed {
    fn default() -> Self {
        ScannerSpeed::Duty(GENTLE_DUTY)
    }
}

impl std::str::FromStr for ScannerSpeed {
    type Err = String;
    /// `gentle` (10 %), `fast` (50 %), `max` (100 %), `off`, or a percentage `1`..`100` (`%` optional).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("invalid scanner speed {s:?}: expected gentle (10%), fast (50%), max (100%), off, or a percentage 1-100")
        };
        match s.trim().to_ascii_lowercase().as_str() {
            "gentle" => Ok(ScannerSpeed::Duty(GENTLE_DUTY)),
            "fast" => Ok(ScannerSpeed::Duty(FAST_DUTY)),
            "max" => Ok(ScannerSpeed::Duty(1.0)),
            "off" => Ok(ScannerSpeed::Off),
            t => {
                let n: f64 = t.strip_suffix('%').unwrap_or(t).trim().parse().map_err(|_| bad())?;
                if n.is_finite() && n > 0.0 && n <= 100.0 {
                    Ok(ScannerSpeed::Duty(n / 100.0))
                } else {
                    Err(bad())
                }
            }
        }
    }
}

impl std::fmt::Display for ScannerSpeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScannerSpeed::Off => f.write_str("off"),
            ScannerSpeed::Duty(d) => write!(f, "{}%", d * 100.0),
        }
    }
}

/// Background speed per deployment id. A process-wide table because each
/// set's worker (set.rs) only knows its set; a deployment is open at most
/// once per process (the drive locks), so the id names one store.
static SPEEDS: Mutex<BTreeMap<String, ScannerSpeed>> = Mutex::new(BTreeMap::new());

/// Sets the background scanner speed of the deployment `deployment_id`.
pub(super) fn set_speed(deployment_id: &str, speed: ScannerSpeed) {
    SPEEDS.lock().unwrap_or_else(|e| e.into_inner()).insert(deployment_id.to_string(), speed);
}

fn speed_of(deployment_id: &str) -> Option<ScannerSpeed> {
    SPEEDS.lock().unwrap_or_else(|e| e.into_inner()).get(deployment_id).copied()
}

/// Usage one set's last pass counted, as written to its drives' `usage.json`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The set's drives, in order: identifies the set.
    pub set: Vec<PathBuf>,
    pub updated_unix: u64,
    pub buckets: BTreeMap<String, BucketUsage>,
    /// What the pass that counted this usage did (absent in records of
    /// versions before it was added), for `bucketfs stats --drives`.
    #[serde(default)]
    pub last_pass: Option<PassRecord>,
}

/// One finished scanner pass of a set, as recorded beside its usage.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PassRecord {
    pub started_unix: u64,
    pub finished_unix: u64,
    pub objects: u64,
    pub healed: u64,
    pub failed: u64,
    pub deep_checked: u64,
    pub stale_tmp_removed: u64,
    pub uploads_expired: u64,
    /// Passes this set finished since its process opened the store.
    pub passes_since_start: u64,
}

/// The newest usage record of each set found on `drives` (no lock taken).
pub fn read_usage(drives: &[PathBuf]) -> Vec<UsageRecord> {
    let mut by_set: BTreeMap<Vec<PathBuf>, UsageRecord> = BTreeMap::new();
    for d in drives {
        let Ok(b) = std::fs::read(d.join(SYS_DIR).join(USAGE_FILE)) else { continue };
        let Ok(r) = serde_json::from_slice::<UsageRecord>(&b) else { continue };
        match by_set.get(&r.set) {
            Some(old) if old.updated_unix >= r.updated_unix => {}
            _ => {
                by_set.insert(r.set.clone(), r);
            }
        }
    }
    by_set.into_values().collect()
}

/// Running totals of a set's scanner passes since the store was opened, for
/// `bucketfs serve`'s metrics (relaxed atomics: figures for humans).
#[derive(Debug, Default)]
pub struct ScannerStats {
    /// Passes finished (an interrupted pass does not count).
    pub passes: AtomicU64,
    pub objects_scanned: AtomicU64,
    pub objects_healed: AtomicU64,
    pub objects_failed: AtomicU64,
    pub deep_checked: AtomicU64,
    pub stale_tmp_removed: AtomicU64,
    pub uploads_expired: AtomicU64,
    /// Objects visited by the pass running now (0 when none runs).
    pub current_pass_objects: AtomicU64,
    /// 1 while a pass runs.
    pub running: AtomicU64,
    /// When the last pass finished (Unix seconds; 0 = never).
    pub last_pass_unix: AtomicU64,
}

/// Objects and bytes of one bucket (no versioning: one version per object).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
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
    /// The background worker's pass: at the deployment's `--scanner-speed`
    /// if one was set ([`set_speed`]), else at `duty`; `off` skips the pass.
    pub fn scan(&self, duty: f64) -> StoreResult<ScanReport> {
        match speed_of(&self.deployment_id) {
            Some(ScannerSpeed::Off) => Ok(ScanReport::default()),
            Some(ScannerSpeed::Duty(d)) => self.scan_at(d),
            None => self.scan_at(duty),
        }
    }

    /// One scanner pass at duty cycle `duty` (0 < duty <= 1; 1 = full speed).
    pub fn scan_at(&self, duty: f64) -> StoreResult<ScanReport> {
        let duty = duty.clamp(0.001, 1.0);
        let stats = &self.scanner_stats;
        stats.current_pass_objects.store(0, Ordering::Relaxed);
        stats.running.store(1, Ordering::Relaxed);
        let started_unix = unix_now();
        let rep = self.scan_pass(duty);
        stats.running.store(0, Ordering::Relaxed);
        stats.current_pass_objects.store(0, Ordering::Relaxed);
        let rep = rep?;
        stats.stale_tmp_removed.fetch_add(rep.stale_tmp_removed, Ordering::Relaxed);
        stats.uploads_expired.fetch_add(rep.uploads_expired, Ordering::Relaxed);
        stats.objects_scanned.fetch_add(rep.heal.scanned, Ordering::Relaxed);
        stats.objects_healed.fetch_add(rep.heal.healed, Ordering::Relaxed);
        stats.objects_failed.fetch_add(rep.heal.failed, Ordering::Relaxed);
        stats.deep_checked.fetch_add(rep.deep_checked, Ordering::Relaxed);
        if !self.is_closing() {
            let passes = stats.passes.fetch_add(1, Ordering::Relaxed) + 1;
            let now = unix_now();
            stats.last_pass_unix.store(now, Ordering::Relaxed);
            let pass = PassRecord {
                started_unix,
                finished_unix: now,
                objects: rep.heal.scanned,
                healed: rep.heal.healed,
                failed: rep.heal.failed,
                deep_checked: rep.deep_checked,
                stale_tmp_removed: rep.stale_tmp_removed,
                uploads_expired: rep.uploads_expired,
                passes_since_start: passes,
            };
            self.record_usage(&rep.usage, pass);
        }
        Ok(rep)
    }

    fn scan_pass(&self, duty: f64) -> StoreResult<ScanReport> {
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
            self.scanner_stats.current_pass_objects.fetch_add(1, Ordering::Relaxed);
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

    /// Writes a finished pass's usage to every drive of the set (best effort:
    /// a drive that cannot take it is skipped, the others still carry it).
    fn record_usage(&self, usage: &BTreeMap<String, BucketUsage>, pass: PassRecord) {
        let rec = UsageRecord {
            set: self.drives.clone(),
            updated_unix: pass.finished_unix,
            buckets: usage.clone(),
            last_pass: Some(pass),
        };
        let bytes = match serde_json::to_vec_pretty(&rec) {
            Ok(b) => b,
            Err(e) => {
                return tracing::warn!(error = %StoreError::Format(e.to_string()), "could not encode usage")
            }
        };
        for d in &self.drives {
            if let Err(e) = drives::write_file_durable(&d.join(SYS_DIR).join(USAGE_FILE), &bytes) {
                tracing::debug!(drive = %d.display(), error = %e, "could not record usage");
            }
        }
    }
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::ScannerSpeed;

    #[test]
    fn speeds_parse_and_bad_ones_are_refused() {
        assert_eq!("gentle".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Duty(0.1)));
        assert_eq!("Fast".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Duty(0.5)));
        assert_eq!("max".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Duty(1.0)));
        assert_eq!("off".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Off));
        assert_eq!("25".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Duty(0.25)));
        assert_eq!("100%".parse::<ScannerSpeed>(), Ok(ScannerSpeed::Duty(1.0)));
        for bad in ["", "0", "101", "-1", "nan", "inf", "quick", "5%%"] {
            let e = bad.parse::<ScannerSpeed>().unwrap_err();
            assert!(e.contains("percentage 1-100"), "{bad}: {e}");
        }
    }
}
