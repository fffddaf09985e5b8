//! Healing: rebuilding missing or corrupt shards and metadata.
//!
//! For each object the version is resolved as for a read (newest version on a
//! read quorum of drives). A drive needs its *metadata* rewritten if its
//! `%meta` is missing, unreadable or names another version; it needs its
//! *shards* rebuilt if a part file is missing or has the wrong size
//! (shallow), or if any block fails its bitrot hash (deep). Rebuilding reads
//! each block through the normal read path (which itself falls back to parity),
//! re-encodes it and writes only the missing shards, to the temp dir first and
//! then renamed into place, like any write. When every drive is healthy the
//! leftovers of interrupted commits (`%meta.prev`, data dirs of other
//! versions) are moved to the trash.

use std::fmt;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::PathBuf;

use super::bitrot::{self, PartLayout};
use super::drives::sync_dir;
use super::erasure::Erasure;
use super::error::{IoContext, StoreError, StoreResult};
use super::meta;
use super::paths::{self, DATA_DIR_PREFIX, META_FILE, PREV_META_FILE};
use super::set::ErasureSet;
use crate::object::ListRequest;

/// Totals of one heal run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealSummary {
    pub scanned: u64,
    pub healed: u64,
    pub failed: u64,
    /// Bytes of shards and metadata rewritten.
    pub bytes: u64,
}

impl fmt::Display for HealSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} objects scanned, {} healed, {} failed, {} bytes rewritten",
            self.scanned, self.healed, self.failed, self.bytes
        )
    }
}

/// Blocks rebuilt per batch (bounds memory to a few MiB).
const HEAL_BATCH: u64 = 8;

impl ErasureSet {
    /// Heals every object of `bucket` (or of all buckets). `deep` verifies every
    /// shard block's hash; otherwise presence and sizes are checked.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn heal(&self, bucket: Option<&str>, deep: bool) -> StoreResult<HealSummary> {
        self.heal_with(bucket, deep, &mut |_, _, _| true)
    }

    /// [`Self::heal`] calling `after_object` with each object's bucket and
    /// listing entry and the running totals: the scanner counts usage there, the drive monitor paces itself and reports progress there, and
    /// stops the pass early (returning `false`) when the store closes.
    pub(crate) fn heal_with(
        &self,
        bucket: Option<&str>,
        deep: bool,
        after_object: &mut dyn FnMut(&str, &crate::object::ObjectMeta, &HealSummary) -> bool,
    ) -> StoreResult<HealSummary> {
        let buckets = match bucket {
            Some(b) => {
                self.require_bucket(b)?;
                vec![b.to_string()]
            }
            None => self.list_buckets()?,
        };
        let mut sum = HealSummary::default();
        let skipped_before = self.repair_skipped.load(std::sync::atomic::Ordering::Relaxed);
        for b in &buckets {
            for (slot, d) in self.drives.iter().enumerate() {
                if self.drive_online(slot) && !d.join(b).is_dir() {
                    fs::create_dir_all(d.join(b)).ctx(&d.join(b))?;
                }
            }
            let mut token = None;
            loop {
                let req = ListRequest { continuation: token.take(), max_keys: 1000, ..Default::default() };
                let page = self.list_objects(b, &req)?;
                for o in &page.objects {
                    sum.scanned += 1;
                    match self.heal_object(b, &o.key, deep) {
                        Ok(0) => {}
                        Ok(bytes) => {
                            sum.healed += 1;
                            sum.bytes += bytes;
                        }
                        Err(e) => {
                            tracing::warn!(bucket = %b, key = %o.key, error = %e, "heal failed");
                            sum.failed += 1;
                        }
                    }
                    if !after_object(b, o, &sum) {
                        return Ok(sum);
                    }
                }
                match page.next_continuation {
                    Some(t) => token = Some(t),
                    None => break,
                }
            }
        }
        // Objects whose repair waited on a paused drive are not healed: count them
        // as failed, so a replaced drive that is full is never reported healed.
        sum.failed +=
            self.repair_skipped.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(skipped_before);
        if bucket.is_none() && sum.failed == 0 {
            self.set_healed();
        }
        self.purge_trash();
        Ok(sum)
    }

    /// Heals one object; returns the bytes rewritten (0 = it was healthy).
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn heal_object(&self, bucket: &str, key: &str, deep: bool) -> StoreResult<u64> {
        let rel = paths::key_to_relpath(key)?;
        let _g = self.key_lock(bucket, key);
        let r = match self.resolve(bucket, key, true) {
            Ok(r) => r,
            Err(StoreError::NotFound { .. }) => {
                self.remove_dangling(bucket, &rel);
                return Ok(0);
            }
            Err(e) => return Err(e),
        };
        let m = &r.meta;
        let n = self.drives.len();
        let dd = m.data_dir.as_ref().map(|d| format!("{DATA_DIR_PREFIX}{d}"));
        let mut need_meta = vec![false; n];
        let mut need_data = vec![false; n];
        for slot in 0..n {
            if !self.drive_online(slot) {
                continue;
            }
            let objdir = self.obj_dir(slot, bucket, &rel);
            let cur = meta::read(&objdir.join(META_FILE), false).ok().and_then(|x| x.ok());
            need_meta[slot] = cur.map(|(c, _)| c.version_id != m.version_id).unwrap_or(true);
            let Some(shard) = m.erasure.shard_of(slot) else { continue };
            let _ = shard;
            need_data[slot] = match (&r.holders[slot], &dd) {
                (None, _) => true,
                (Some(inline), None) => {
                    let l = PartLayout { size: m.size, data: m.erasure.data };
                    inline.len() as u64 != l.shard_file_size() || (deep && !frames_ok(inline, &l))
                }
                (Some(_), Some(dd)) => m.parts.iter().any(|p| {
                    let l = PartLayout { size: p.size, data: m.erasure.data };
                    let path = objdir.join(dd).join(&p.file);
                    match fs::metadata(&path) {
                        Ok(md) if md.len() == l.shard_file_size() => {
                            deep && !fs::read(&path).map(|b| frames_ok(&b, &l)).unwrap_or(false)
                        }
                        _ => true,
                    }
                }),
            };
            if need_data[slot] {
                need_meta[slot] = true;
            }
            // A drive whose last repair write failed (full or failing) is left
            // alone until its backoff ends; the other drives are still repaired.
            if need_meta[slot] && self.repair_paused(slot) {
                tracing::debug!(bucket, key, slot, "repair onto drive paused; skipped");
                self.repair_skipped.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                need_meta[slot] = false;
                need_data[slot] = false;
            }
        }
        if !need_meta.iter().any(|&b| b) {
            if (0..n).all(|s| self.drive_online(s)) {
                self.cleanup_leftovers(bucket, &rel, m.data_dir.as_deref());
            }
            return Ok(0);
        }
        tracing::info!(bucket, key, ?need_data, ?need_meta, "healing object");
        let er = Erasure::new(m.erasure.data, m.erasure.parity)?;
        let tmp_id = uuid::Uuid::new_v4().simple().to_string();
        let res = self.rebuild(bucket, &rel, &r, &er, &need_data, &need_meta, &tmp_id);
        self.remove_tmp(&tmp_id);
        let bytes = match res {
            Ok(b) => {
                (0..n).filter(|&s| need_meta[s]).for_each(|s| self.repair_succeeded(s));
                b
            }
            Err(e) => {
                // A write that failed on one of the drives being repaired pauses
                // repairs onto that drive (set.rs: backoff, logged once per step).
                if let StoreError::Io { path, .. } = &e {
                    if let Some(s) = (0..n).find(|&s| need_meta[s] && path.starts_with(&self.drives[s])) {
                        self.repair_failed(s, &e);
                    }
                }
                return Err(e);
            }
        };
        if (0..n).all(|s| self.drive_online(s)) {
            self.cleanup_leftovers(bucket, &rel, m.data_dir.as_deref());
        }
        Ok(bytes)
    }

    #[allow(clippy::too_many_arguments)]
    fn rebuild(
        &self,
        bucket: &str,
        rel: &std::path::Path,
        r: &super::object::Resolved,
        er: &Erasure,
        need_data: &[bool],
        need_meta: &[bool],
        tmp_id: &str,
    ) -> StoreResult<u64> {
        let m = &r.meta;
        let n = self.drives.len();
        let mut bytes = 0u64;
        let mut inline_frames: Vec<Vec<u8>> = vec![Vec::new(); n];
        let targets: Vec<usize> = (0..n).filter(|&s| need_data[s]).collect();
        for (pi, p) in m.parts.iter().enumerate() {
            if targets.is_empty() {
                break;
            }
            let l = PartLayout { size: p.size, data: m.erasure.data };
            let mut writers: Vec<(usize, PathBuf, BufWriter<File>)> = Vec::new();
            if !m.is_inline() {
                for &slot in &targets {
                    let path = self.tmp_dir(slot, tmp_id).join(&p.file);
                    let dir = self.tmp_dir(slot, tmp_id);
                    fs::create_dir_all(&dir).ctx(&dir)?;
                    writers.push((slot, path.clone(), BufWriter::new(File::create(&path).ctx(&path)?)));
                }
            }
            let mut b = 0;
            while b < l.blocks() {
                let batch: Vec<u64> = (b..(b + HEAL_BATCH).min(l.blocks())).collect();
                let mut damaged = false;
                let chunks = self.read_part_blocks(bucket, rel, r, pi, &batch, &mut damaged)?;
                for (bi, data_chunks) in batch.iter().zip(chunks) {
                    let mut buf: Vec<u8> = data_chunks.concat();
                    buf.truncate(l.block_len(*bi));
                    let enc = er.encode(buf)?;
                    for &slot in &targets {
                        let shard = m.erasure.shard_of(slot).unwrap_or(0);
                        let chunk = enc.shard(shard);
                        let h = bitrot::hash(chunk);
                        bytes += (h.len() + chunk.len()) as u64;
                        if m.is_inline() {
                            inline_frames[slot].extend_from_slice(&h);
                            inline_frames[slot].extend_from_slice(chunk);
                        } else if let Some((_, path, w)) = writers.iter_mut().find(|(s, _, _)| *s == slot) {
                            w.write_all(&h).and_then(|_| w.write_all(chunk)).ctx(path)?;
                        }
                    }
                }
                b += HEAL_BATCH;
            }
            for (slot, path, w) in writers {
                let f = w.into_inner().map_err(|e| StoreError::io(&path, e.into_error()))?;
                f.sync_all().ctx(&path)?;
                let dst_dir = self
                    .obj_dir(slot, bucket, rel)
                    .join(format!("{DATA_DIR_PREFIX}{}", m.data_dir.as_deref().unwrap_or_default()));
                fs::create_dir_all(&dst_dir).ctx(&dst_dir)?;
                fs::rename(&path, dst_dir.join(&p.file)).ctx(&dst_dir)?;
                sync_dir(&dst_dir)?;
            }
        }
        for slot in (0..n).filter(|&s| need_meta[s]) {
            let inline: &[u8] = if !m.is_inline() {
                &[]
            } else if need_data[slot] {
                &inline_frames[slot]
            } else {
                r.holders[slot].as_deref().unwrap_or_default()
            };
            let buf = meta::encode(m, inline);
            let objdir = self.obj_dir(slot, bucket, rel);
            fs::create_dir_all(&objdir).ctx(&objdir)?;
            super::drives::write_file_durable(&objdir.join(META_FILE), &buf)?;
            bytes += buf.len() as u64;
        }
        Ok(bytes)
    }

    /// Trashes the remains of an object present on fewer drives than its read
    /// quorum (an interrupted delete, or a write whose rollback failed), which a
    /// listing would otherwise show. Only when every drive answered, so that
    /// "not found" is certain.
    fn remove_dangling(&self, bucket: &str, rel: &std::path::Path) {
        if (0..self.drives.len()).any(|s| !self.drive_online(s) || self.is_healing(s)) {
            return;
        }
        // Unreadable metadata could be a damaged copy of a real version: keep everything.
        let unreadable = (0..self.drives.len())
            .any(|s| matches!(meta::read(&self.obj_dir(s, bucket, rel).join(META_FILE), false), Ok(Err(_))));
        if unreadable {
            return;
        }
        for slot in 0..self.drives.len() {
            let objdir = self.obj_dir(slot, bucket, rel);
            if objdir.join(META_FILE).exists() || objdir.join(PREV_META_FILE).exists() {
                tracing::info!(bucket, key = %rel.display(), slot, "removing dangling object remains");
                let _ = self.trash_object_files(slot, &objdir);
                self.remove_empty_parents(slot, bucket, &objdir);
            }
        }
    }

    /// Drops `%meta.prev` and data dirs of other versions (all drives healthy).
    fn cleanup_leftovers(&self, bucket: &str, rel: &std::path::Path, keep: Option<&str>) {
        let keep = keep.map(|d| format!("{DATA_DIR_PREFIX}{d}"));
        for slot in 0..self.drives.len() {
            let objdir = self.obj_dir(slot, bucket, rel);
            let _ = fs::remove_file(objdir.join(PREV_META_FILE));
            let Ok(rd) = fs::read_dir(&objdir) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if name.starts_with(DATA_DIR_PREFIX) && Some(name) != keep.as_deref() {
                    let _ = self.move_to_trash_path(&self.drives[slot], &e.path());
                }
            }
        }
    }
}

/// Verifies every frame of a whole shard buffer.
fn frames_ok(buf: &[u8], l: &PartLayout) -> bool {
    (0..l.blocks()).all(|b| {
        let off = l.frame_offset(b) as usize;
        buf.get(off..off + l.frame_len(b)).and_then(bitrot::verify).is_some()
    })
}
