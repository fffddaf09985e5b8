//! The replaced-drive monitor: a disk swapped (or wiped) under a running mount
//! or `bucketfs serve` is noticed, formatted into its slot and healed in the
//! background, without anyone running `bucketfs heal`.
//!
//! Why polling: every few seconds each set's background worker looks for a
//! drive directory that exists and is empty (a new disk mounted where the dead
//! one was; only `lost+found` may be there). inotify would not see a disk mounted over
//! the directory, and a stat per drive every few seconds costs nothing. Until it
//! is adopted such a drive is offline (no system directory); it is marked as
//! being healed *before* its system directory is recreated, so that its empty
//! "not found" answers are never trusted.
//!
//! The heal that follows is paced to [`HEAL_RATE`] bytes rewritten per second
//! so that it does not starve the foreground, and reports progress three ways:
//! the log (the serve log, or a mount's), and `.bucketfs.sys/heal-status.json`
//! on the healed drive, which `bucketfs heal --status` reads without taking the
//! drive locks (the store stays open in its own process).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::drives::{self, SYS_DIR};
use super::error::{StoreError, StoreResult};
use super::heal::HealSummary;
use super::set::ErasureSet;

/// How often each set looks for replaced drives (the issue asks for 10 s).
pub const CHECK_INTERVAL: Duration = Duration::from_secs(3);
/// Pace of a replaced drive's background heal: bytes rewritten per second.
pub const HEAL_RATE: u64 = 128 << 20;
const STATUS_FILE: &str = "heal-status.json";
/// How often progress goes to the log and the status file.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// Progress of the background heal of one replaced drive.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HealStatus {
    /// `healing`, `done`, `incomplete` (some objects failed) or `stopped` (store closed).
    pub state: String,
    pub started_unix: u64,
    pub updated_unix: u64,
    pub objects_scanned: u64,
    pub objects_healed: u64,
    pub objects_failed: u64,
    pub bytes: u64,
}

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn write_status(drive: &Path, st: &HealStatus) {
    let path = drive.join(SYS_DIR).join(STATUS_FILE);
    let r = serde_json::to_vec_pretty(st)
        .map_err(|e| StoreError::Format(e.to_string()))
        .and_then(|b| drives::write_file_durable(&path, &b));
    if let Err(e) = r {
        tracing::warn!(drive = %drive.display(), error = %e, "could not record heal progress");
    }
}

/// The heal status recorded on each drive that has one (drives never replaced have none).
pub fn read_heal_status(drives: &[PathBuf]) -> Vec<(PathBuf, HealStatus)> {
    drives
        .iter()
        .filter_map(|d| {
            let b = std::fs::read(d.join(SYS_DIR).join(STATUS_FILE)).ok()?;
            Some((d.clone(), serde_json::from_slice(&b).ok()?))
        })
        .collect()
}

/// True for a drive directory with nothing in it but a fresh file system's
/// `lost+found`. A drive that merely lost its `format.json` (or one being
/// deleted right now, entry by entry) is not taken for a new disk.
fn is_empty_drive(d: &Path) -> bool {
    match std::fs::read_dir(d) {
        Ok(rd) => rd.flatten().all(|e| e.file_name() == "lost+found"),
        Err(_) => false,
    }
}

impl ErasureSet {
    /// Formats every drive of this set that came back empty into its slot;
    /// returns the slots adopted.
    pub(crate) fn adopt_replaced_drives(&self) -> Vec<usize> {
        let mut adopted = Vec::new();
        for slot in 0..self.drives.len() {
            let d = &self.drives[slot];
            if !is_empty_drive(d) {
                continue;
            }
            match self.adopt(slot) {
                Ok(()) => {
                    tracing::warn!(drive = %d.display(), slot, "replaced drive detected; formatted, healing");
                    adopted.push(slot);
                }
                Err(e) => tracing::warn!(drive = %d.display(), error = %e, "could not adopt replaced drive"),
            }
        }
        adopted
    }

    fn adopt(&self, slot: usize) -> StoreResult<()> {
        // Any healthy drive of the set carries the deployment's layout and its own place in it.
        let (ref_slot, reference) = (0..self.drives.len())
            .filter(|&s| s != slot)
            .find_map(|s| drives::read_format(&self.drives[s]).ok().flatten().map(|f| (s, f)))
            .ok_or_else(|| StoreError::Format("no formatted drive left in the set".into()))?;
        let ids = reference.layout().concat();
        let ref_pos = ids
            .iter()
            .position(|id| *id == reference.this)
            .ok_or_else(|| StoreError::Format("a drive's format does not list itself".into()))?;
        self.mark_healing(slot);
        drives::prepare_drive(&self.drives[slot])?;
        let lock = drives::lock_drive(&self.drives[slot])?;
        self.locks.lock().unwrap_or_else(|e| e.into_inner())[slot] = lock;
        drives::format_replacement(&self.drives[slot], &reference, ref_pos - ref_slot + slot)
    }

    /// Heals every object of the set onto `slots` at [`HEAL_RATE`], recording progress.
    pub(crate) fn heal_replaced(&self, slots: &[usize]) {
        let started = Instant::now();
        let mut st = HealStatus {
            state: "healing".into(),
            started_unix: unix_now(),
            updated_unix: unix_now(),
            ..Default::default()
        };
        let report = |st: &HealStatus| {
            for &s in slots {
                write_status(&self.drives[s], st);
            }
        };
        report(&st);
        let mut last_report = Instant::now();
        let note = |sum: &HealSummary, st: &mut HealStatus| {
            st.objects_scanned = sum.scanned;
            st.objects_healed = sum.healed;
            st.objects_failed = sum.failed;
            st.bytes = sum.bytes;
            st.updated_unix = unix_now();
        };
        let r = self.heal_with(None, false, &mut |_, _, sum| {
            if self.is_closing() {
                return false;
            }
            // Pace: sleep until the bytes written so far fit the rate.
            let due = Duration::from_secs_f64(sum.bytes as f64 / HEAL_RATE as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(wait);
            }
            if last_report.elapsed() >= REPORT_EVERY {
                note(sum, &mut st);
                tracing::info!(
                    objects = sum.scanned,
                    healed = sum.healed,
                    failed = sum.failed,
                    bytes = sum.bytes,
                    "healing replaced drive"
                );
                report(&st);
                last_report = Instant::now();
            }
            true
        });
        match r {
            Ok(sum) => {
                note(&sum, &mut st);
                st.state = if self.is_closing() {
                    "stopped"
                } else if sum.failed > 0 {
                    "incomplete"
                } else {
                    "done"
                }
                .into();
                tracing::info!(%sum, state = %st.state, "heal of replaced drive finished");
            }
            Err(e) => {
                st.state = "incomplete".into();
                tracing::warn!(error = %e, "heal of replaced drive failed");
            }
        }
        report(&st);
    }
}
