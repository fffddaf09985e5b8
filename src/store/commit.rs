//! Making a staged version visible, atomically per drive and crash-safely
//! across drives.
//!
//! Under the key's lock, after checking preconditions against the current
//! version, each participating drive:
//! 1. renames the data dir into the object dir (invisible: no metadata names it);
//! 2. hard-links the current `%meta` to `%meta.prev`, then renames the new
//!    `%meta` over it (atomic per drive);
//! 3. once every drive is done, drops `%meta.prev` and trashes the old data dir.
//!
//! A crash between 2 and 3 leaves some drives on the new version and some on
//! the old; readers consider both `%meta` and `%meta.prev` (read.rs), so
//! whichever version still has read quorum is served, never a mix. Fewer than
//! the write quorum of drives switching is rolled back.

use std::fs::{self, File};
use std::io::Write;
use std::path::PathBuf;

use super::drives::sync_dir;
use super::error::{IoContext, StoreError, StoreResult};
use super::meta::{self, ObjMeta};
use super::paths::{self, DATA_DIR_PREFIX, META_FILE, PREV_META_FILE};
use super::set::{quorum_error, ErasureSet};
use crate::object::PutOptions;

/// What [`ErasureSet::commit`] makes visible.
pub(crate) struct Commit {
    pub meta: ObjMeta,
    pub inline: Option<Vec<Vec<u8>>>,
    /// Per slot: directory to rename to `<objdir>/%d.<data_dir>`; `None` for
    /// inline objects or slots that do not take part.
    pub data_src: Vec<Option<PathBuf>>,
    pub slots: Vec<bool>,
    pub tmp_id: String,
}

impl ErasureSet {
    /// Runs `f` for every slot in `slots` on its own thread; results by slot.
    pub(crate) fn par_slots<T: Send>(
        &self,
        slots: &[bool],
        f: impl Fn(usize) -> StoreResult<T> + Sync,
    ) -> Vec<Option<StoreResult<T>>> {
        let f = &f;
        std::thread::scope(|s| {
            let hs: Vec<_> =
                slots.iter().enumerate().map(|(slot, &on)| on.then(|| s.spawn(move || f(slot)))).collect();
            hs.into_iter()
                .map(|h| {
                    h.map(|h| {
                        h.join().unwrap_or_else(|_| Err(StoreError::Corrupt("drive thread panicked".into())))
                    })
                })
                .collect()
        })
    }

    /// Makes a staged version visible (see the module docs for the protocol).
    pub(crate) fn commit(
        &self,
        bucket: &str,
        key: &str,
        c: Commit,
        pre: &PutOptions,
    ) -> StoreResult<ObjMeta> {
        let rel = paths::key_to_relpath(key)?;
        let need = Self::write_quorum(c.meta.erasure.data, c.meta.erasure.parity);
        let meta = &c.meta;
        // 1. metadata into tmp, fsynced.
        let res = self.par_slots(&c.slots, |slot| {
            let inline: &[u8] = match (&c.inline, meta.erasure.shard_of(slot)) {
                (Some(frames), Some(shard)) => &frames[shard],
                _ => &[],
            };
            self.check_online(slot)?;
            let dir = self.tmp_dir(slot, &c.tmp_id);
            fs::create_dir_all(&dir).ctx(&dir)?;
            let p = dir.join(META_FILE);
            let mut f = File::create(&p).ctx(&p)?;
            f.write_all(&meta::encode(meta, inline)).ctx(&p)?;
            f.sync_all().ctx(&p)?;
            sync_dir(&dir)
        });
        let (slots, got, last_err) = tally(res);
        if got < need {
            self.remove_tmp(&c.tmp_id);
            return Err(quorum_error("write", got, need, last_err));
        }
        // 2. under the key lock: preconditions, then swap in.
        let _g = self.key_lock(bucket, key);
        let old = match self.resolve(bucket, key, false) {
            Ok(r) => Some(r.meta),
            Err(StoreError::NotFound { .. }) => None,
            Err(e) if pre.if_match.is_some() || pre.if_none_match_any => {
                self.remove_tmp(&c.tmp_id);
                return Err(e);
            }
            Err(_) => None,
        };
        let failed = if pre.if_none_match_any && old.is_some() {
            Some("object already exists (If-None-Match: *)".to_string())
        } else if let Some(want) = &pre.if_match {
            match &old {
                Some(o) if &o.etag == want => None,
                Some(o) => Some(format!("ETag is {:?}, not {want:?} (If-Match)", o.etag)),
                None => Some("object does not exist (If-Match)".to_string()),
            }
        } else {
            None
        };
        if let Some(why) = failed {
            self.remove_tmp(&c.tmp_id);
            return Err(StoreError::PreconditionFailed(format!("{bucket}/{key}: {why}")));
        }
        let data_name = meta.data_dir.as_ref().map(|d| format!("{DATA_DIR_PREFIX}{d}"));
        let res = self.par_slots(&slots, |slot| {
            let objdir = self.obj_dir(slot, bucket, &rel);
            let existed = objdir.is_dir();
            let mut attempt = 0;
            loop {
                // A concurrent delete may rmdir an empty parent between mkdir and rename.
                fs::create_dir_all(&objdir).ctx(&objdir)?;
                let r = (|| -> std::io::Result<()> {
                    if let (Some(src), Some(name)) = (&c.data_src[slot], &data_name) {
                        if src.exists() {
                            fs::rename(src, objdir.join(name))?;
                        }
                    }
                    let cur = objdir.join(META_FILE);
                    let prev = objdir.join(PREV_META_FILE);
                    let _ = fs::remove_file(&prev);
                    match fs::hard_link(&cur, &prev) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(e),
                    }
                    fs::rename(self.tmp_dir(slot, &c.tmp_id).join(META_FILE), &cur)
                })();
                match r {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempt < 3 => attempt += 1,
                    Err(e) => return Err(StoreError::io(&objdir, e)),
                }
            }
            sync_dir(&objdir)?;
            if !existed {
                // New directories are only durable once their parents are synced too.
                let stop = self.drives[slot].join(bucket);
                let mut dir = objdir.parent();
                while let Some(d) = dir {
                    sync_dir(d)?;
                    if d == stop {
                        break;
                    }
                    dir = d.parent();
                }
            }
            Ok(())
        });
        let (done, got, last_err) = tally(res);
        if got < need {
            for slot in (0..self.drives.len()).filter(|&s| done[s]) {
                let objdir = self.obj_dir(slot, bucket, &rel);
                let cur = objdir.join(META_FILE);
                let prev = objdir.join(PREV_META_FILE);
                let _ = if prev.exists() { fs::rename(&prev, &cur) } else { fs::remove_file(&cur) };
                if let Some(name) = &data_name {
                    let _ = self.move_to_trash_path(&self.drives[slot], &objdir.join(name));
                }
            }
            self.remove_tmp(&c.tmp_id);
            return Err(quorum_error("write", got, need, last_err));
        }
        // 3. every drive that took part is on the new version: drop the old one.
        for slot in (0..self.drives.len()).filter(|&s| done[s]) {
            let objdir = self.obj_dir(slot, bucket, &rel);
            let _ = fs::remove_file(objdir.join(PREV_META_FILE));
            if let Some(od) = old.as_ref().and_then(|o| o.data_dir.as_ref()) {
                if Some(od) != meta.data_dir.as_ref() {
                    let _ = self.move_to_trash_path(
                        &self.drives[slot],
                        &objdir.join(format!("{DATA_DIR_PREFIX}{od}")),
                    );
                }
            }
        }
        self.remove_tmp(&c.tmp_id);
        if got < self.drives.len() {
            self.queue_heal(bucket, key);
        }
        Ok(c.meta)
    }
}

/// Splits per-slot results into (succeeded slots, count, last error).
pub(crate) fn tally<T>(res: Vec<Option<StoreResult<T>>>) -> (Vec<bool>, usize, Option<StoreError>) {
    let mut ok = vec![false; res.len()];
    let mut last = None;
    for (slot, r) in res.into_iter().enumerate() {
        match r {
            Some(Ok(_)) => ok[slot] = true,
            Some(Err(e)) => {
                tracing::warn!(slot, error = %e, "drive operation failed");
                last = Some(e)
            }
            None => {}
        }
    }
    let n = ok.iter().filter(|&&b| b).count();
    (ok, n, last)
}
