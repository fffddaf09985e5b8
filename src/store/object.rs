//! Object writes, reads and deletes.
//!
//! **Write** (`put_object_reader`): the input is consumed in 1 MiB blocks;
//! each block is encoded and its shards are handed to one writer thread per
//! drive over a bounded channel (memory stays at a few blocks whatever the
//! object size) while another thread computes the MD5 ETag. Shards land in
//! `<drive>/.bucketfs.sys/tmp/<id>/`, are fsynced, and only then committed
//! under the key's lock (see [`Store::commit`]):
//! 1. rename the data dir into the object dir (invisible: no metadata names it);
//! 2. hard-link the current `%meta` to `%meta.prev`, then rename the new
//!    `%meta` over it (atomic per drive);
//! 3. once every drive is done, drop `%meta.prev` and trash the old data dir.
//!
//! A crash between 2 and 3 leaves some drives on the new version and some on
//! the old; readers consider both `%meta` and `%meta.prev`, so whichever
//! version still has read quorum is served, never a mix.
//!
//! **Read**: metadata from all drives, grouped by version id; the newest
//! version present on at least `data` drives wins. Per needed block the data
//! shards are read (one thread per drive for big reads); a missing or corrupt
//! shard makes that block fall back to parity, and queues a heal.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::bitrot::{self, PartLayout, HASH_LEN};
use super::drives::{sync_dir, SYS_DIR};
use super::erasure::{EncodedBlock, Erasure, BLOCK_SIZE};
use super::error::{IoContext, StoreError, StoreResult};
use super::meta::{self, ErasureInfo, ObjMeta, PartInfo};
use super::paths::{self, DATA_DIR_PREFIX, META_FILE, PREV_META_FILE};
use super::{quorum_error, Store};
use crate::backend::{GetOptions, ObjectMeta, PutOptions};

/// Objects whose shard file would be at most this big live inside `%meta`.
pub const INLINE_MAX: u64 = 128 * 1024;

/// Bytes of a shard file after which its writeback is started.
const WRITEBACK_STEP: u64 = 4 << 20;

/// The version of an object chosen by a read.
pub(crate) struct Resolved {
    pub meta: ObjMeta,
    /// Per slot: this version's inline shard bytes (empty if not inline) when the
    /// drive holds this version's metadata.
    pub holders: Vec<Option<Vec<u8>>>,
    /// Some drive lacks this version or has unreadable metadata.
    pub damaged: bool,
}

/// Data staged in `tmp/<tmp_id>/` on the drives, not yet visible.
pub(crate) struct Staged {
    pub tmp_id: String,
    pub ok: Vec<bool>,
    pub size: u64,
    pub md5: [u8; 16],
    /// Per shard index: the whole bitrot-framed shard when the data is inline.
    pub inline: Option<Vec<Vec<u8>>>,
}

/// What [`Store::commit`] makes visible.
pub(crate) struct Commit {
    pub meta: ObjMeta,
    pub inline: Option<Vec<Vec<u8>>>,
    /// Per slot: directory to rename to `<objdir>/%d.<data_dir>`; `None` for
    /// inline objects or slots that do not take part.
    pub data_src: Vec<Option<PathBuf>>,
    pub slots: Vec<bool>,
    pub tmp_id: String,
}

pub(crate) fn info(key: &str, m: &ObjMeta) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: m.size,
        etag: m.etag.clone(),
        last_modified: m.mtime(),
        content_type: m.content_type.clone(),
        user_metadata: m.user_metadata.clone(),
    }
}

/// Per-key rotation: shard i goes to drive (start + i) mod n.
pub(crate) fn distribution(key: &str, n: usize) -> Vec<usize> {
    let start = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % n as u64) as usize;
    (0..n).map(|i| (start + i) % n).collect()
}

/// Reads until `buf` is full or EOF; returns bytes read.
pub(crate) fn read_full(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn next_block(r: &mut dyn Read) -> StoreResult<Vec<u8>> {
    let mut b = vec![0u8; BLOCK_SIZE];
    let n = read_full(r, &mut b).ctx(Path::new("<object input>"))?;
    b.truncate(n);
    Ok(b)
}

/// Writes one shard's frames to `path`, draining `rx` even after an error so the
/// producer never blocks on a failed drive.
fn shard_writer(
    path: &Path,
    online: bool,
    shard: usize,
    rx: std::sync::mpsc::Receiver<Arc<EncodedBlock>>,
) -> StoreResult<()> {
    let mut res: StoreResult<BufWriter<File>> = (|| {
        if !online {
            return Err(StoreError::Quorum {
                kind: "write",
                got: 0,
                need: 1,
                detail: "drive offline".into(),
            });
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).ctx(dir)?;
        }
        Ok(BufWriter::with_capacity(64 * 1024, File::create(path).ctx(path)?))
    })();
    let (mut written, mut started) = (0u64, 0u64);
    for blk in rx {
        if let Ok(w) = res.as_mut() {
            let chunk = blk.shard(shard);
            let r = w.write_all(&bitrot::hash(chunk)).and_then(|_| w.write_all(chunk));
            if let Err(e) = r {
                res = Err(StoreError::io(path, e));
                continue;
            }
            written += (HASH_LEN + chunk.len()) as u64;
            // Start writeback early so the final fsync does not wait for the whole file.
            if written - started >= WRITEBACK_STEP && w.flush().is_ok() {
                // SAFETY: plain syscall on a descriptor we own; failure only loses the hint.
                unsafe {
                    libc::sync_file_range(
                        w.get_ref().as_raw_fd(),
                        started as i64,
                        (written - started) as i64,
                        libc::SYNC_FILE_RANGE_WRITE,
                    );
                }
                started = written;
            }
        }
    }
    let w = res?;
    let f = w.into_inner().map_err(|e| StoreError::io(path, e.into_error()))?;
    f.sync_all().ctx(path)?;
    // Make the new entries durable so the later rename cannot lose them.
    let mut dir = path.parent();
    while let Some(d) = dir {
        sync_dir(d)?;
        if d.file_name().map(|n| n.len() == 32).unwrap_or(false) {
            break; // reached tmp/<id>
        }
        dir = d.parent();
    }
    Ok(())
}

impl Store {
    pub(crate) fn obj_dir(&self, slot: usize, bucket: &str, rel: &Path) -> PathBuf {
        self.drives[slot].join(bucket).join(rel)
    }

    /// Fails for a drive whose directory vanished, so that no write recreates it.
    pub(crate) fn check_online(&self, slot: usize) -> StoreResult<()> {
        if self.drive_online(slot) {
            Ok(())
        } else {
            Err(StoreError::Quorum {
                kind: "write",
                got: 0,
                need: 1,
                detail: format!("drive {} is offline", self.drives[slot].display()),
            })
        }
    }

    pub(crate) fn tmp_dir(&self, slot: usize, tmp_id: &str) -> PathBuf {
        self.drives[slot].join(SYS_DIR).join("tmp").join(tmp_id)
    }

    pub(crate) fn remove_tmp(&self, tmp_id: &str) {
        for slot in 0..self.drives.len() {
            let _ = fs::remove_dir_all(self.tmp_dir(slot, tmp_id));
        }
    }

    /// Erasure-codes `reader` into `tmp/<id>/<rel_file>` on every drive, or keeps it
    /// in memory when `allow_inline` and the shard would be small enough.
    pub(crate) fn stage(
        &self,
        reader: &mut dyn Read,
        er: &Erasure,
        dist: &[usize],
        rel_file: &Path,
        allow_inline: bool,
    ) -> StoreResult<Staged> {
        let n = self.drives.len();
        let tmp_id = uuid::Uuid::new_v4().simple().to_string();
        // Buffer blocks while the data could still be inlined (at most INLINE_MAX * data bytes).
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut shard_size = 0u64;
        let mut eof = false;
        loop {
            let b = next_block(reader)?;
            if b.is_empty() {
                eof = true;
                break;
            }
            shard_size += (HASH_LEN + er.shard_len(b.len())) as u64;
            let short = b.len() < BLOCK_SIZE;
            pending.push(b);
            if !allow_inline || shard_size > INLINE_MAX {
                break;
            }
            if short {
                eof = true;
                break;
            }
        }
        if allow_inline && eof && shard_size <= INLINE_MAX {
            let mut md5 = Md5::new();
            let mut frames = vec![Vec::new(); n];
            let mut size = 0u64;
            for b in pending {
                md5.update(&b);
                size += b.len() as u64;
                let enc = er.encode(b)?;
                for (i, f) in frames.iter_mut().enumerate() {
                    f.extend_from_slice(&bitrot::hash(enc.shard(i)));
                    f.extend_from_slice(enc.shard(i));
                }
            }
            return Ok(Staged {
                tmp_id,
                ok: vec![true; n],
                size,
                md5: md5.finalize().into(),
                inline: Some(frames),
            });
        }

        let mut size = 0u64;
        let (results, md5) = std::thread::scope(|s| -> StoreResult<_> {
            let mut txs = Vec::with_capacity(n);
            let mut handles = Vec::with_capacity(n);
            for (shard, &slot) in dist.iter().enumerate() {
                let (tx, rx) = sync_channel::<Arc<EncodedBlock>>(2);
                let path = self.tmp_dir(slot, &tmp_id).join(rel_file);
                let online = self.drive_online(slot);
                txs.push(Some(tx));
                handles.push((slot, s.spawn(move || shard_writer(&path, online, shard, rx))));
            }
            let (mtx, mrx) = sync_channel::<(Arc<EncodedBlock>, usize)>(2);
            let md5h = s.spawn(move || {
                let mut h = Md5::new();
                for (blk, len) in mrx {
                    h.update(&blk.buf[..len]);
                }
                <[u8; 16]>::from(h.finalize())
            });
            let mut feed = |b: Vec<u8>| -> StoreResult<()> {
                let len = b.len();
                size += len as u64;
                let enc = Arc::new(er.encode(b)?);
                let _ = mtx.send((enc.clone(), len));
                for tx in txs.iter_mut() {
                    if let Some(t) = tx {
                        if t.send(enc.clone()).is_err() {
                            *tx = None;
                        }
                    }
                }
                Ok(())
            };
            let mut res = Ok(());
            for b in pending.drain(..) {
                if res.is_ok() {
                    res = feed(b);
                }
            }
            while res.is_ok() && !eof {
                match next_block(reader) {
                    Ok(b) if b.is_empty() => eof = true,
                    Ok(b) => res = feed(b),
                    Err(e) => res = Err(e),
                }
            }
            // Closing the channels is what ends the writer threads.
            drop(txs);
            drop(mtx);
            let md5 = md5h.join().unwrap_or_default();
            let mut results: Vec<Option<StoreResult<()>>> = (0..n).map(|_| None).collect();
            for (slot, h) in handles {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(StoreError::Corrupt("shard writer thread panicked".into())));
                results[slot] = Some(r);
            }
            res.map(|_| (results, md5))
        })
        .inspect_err(|_| self.remove_tmp(&tmp_id))?;
        let mut ok = vec![false; n];
        let mut last_err = None;
        for (slot, r) in results.into_iter().enumerate() {
            match r {
                Some(Ok(())) => ok[slot] = true,
                Some(Err(e)) => {
                    tracing::warn!(drive = %self.drives[slot].display(), error = %e, "shard write failed");
                    last_err = Some(e);
                }
                None => {}
            }
        }
        let got = ok.iter().filter(|&&b| b).count();
        let need = Self::write_quorum(er.data, er.parity);
        if got < need {
            self.remove_tmp(&tmp_id);
            return Err(quorum_error("write", got, need, last_err));
        }
        Ok(Staged { tmp_id, ok, size, md5, inline: None })
    }

    /// Writes an object from a reader, streaming it in 1 MiB blocks.
    #[tracing::instrument(level = "debug", skip(self, reader, opts))]
    pub fn put_object_reader(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut dyn Read,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        paths::key_to_relpath(key)?;
        let er = Erasure::new(self.data, self.parity)?;
        let dist = distribution(key, self.drives.len());
        let data_dir = uuid::Uuid::new_v4().simple().to_string();
        let rel_file = PathBuf::from(format!("{DATA_DIR_PREFIX}{data_dir}")).join("part.1");
        let staged = self.stage(reader, &er, &dist, &rel_file, true)?;
        let etag = hex::encode(staged.md5);
        let inline = staged.inline.is_some();
        let meta = ObjMeta {
            version_id: uuid::Uuid::new_v4().to_string(),
            size: staged.size,
            mtime_ns: meta::now_ns(),
            etag: etag.clone(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
            erasure: self.erasure_info(&er, dist),
            data_dir: (!inline).then_some(data_dir.clone()),
            parts: vec![PartInfo { number: 1, size: staged.size, etag, file: "part.1".into() }],
        };
        let data_src = (0..self.drives.len())
            .map(|slot| {
                (!inline && staged.ok[slot])
                    .then(|| self.tmp_dir(slot, &staged.tmp_id).join(format!("{DATA_DIR_PREFIX}{data_dir}")))
            })
            .collect();
        let c = Commit { meta, inline: staged.inline, data_src, slots: staged.ok, tmp_id: staged.tmp_id };
        let m = self.commit(bucket, key, c, opts)?;
        Ok(info(key, &m))
    }

    /// Writes an object from memory.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let mut r = data;
        self.put_object_reader(bucket, key, &mut r, opts)
    }

    pub(crate) fn erasure_info(&self, er: &Erasure, distribution: Vec<usize>) -> ErasureInfo {
        ErasureInfo {
            data: er.data,
            parity: er.parity,
            block_size: BLOCK_SIZE,
            distribution,
            bitrot: "xxh3-128".into(),
        }
    }

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
            sync_dir(&objdir)
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

    /// Reads every drive's metadata and picks the newest version with read quorum.
    pub(crate) fn resolve(&self, bucket: &str, key: &str, with_inline: bool) -> StoreResult<Resolved> {
        let rel = paths::key_to_relpath(key)?;
        let n = self.drives.len();
        // (meta, per-slot inline) per version
        let mut cands: Vec<(ObjMeta, Vec<Option<Vec<u8>>>)> = Vec::new();
        let mut errors = 0usize;
        let mut bad_meta = false;
        let mut add = |m: ObjMeta, inline: Vec<u8>, slot: usize| match cands
            .iter_mut()
            .find(|(c, _)| c.version_id == m.version_id)
        {
            Some((_, h)) => {
                if h[slot].is_none() {
                    h[slot] = Some(inline)
                }
            }
            None => {
                let mut h = vec![None; n];
                h[slot] = Some(inline);
                cands.push((m, h));
            }
        };
        for slot in 0..n {
            let dir = self.obj_dir(slot, bucket, &rel);
            match meta::read(&dir.join(META_FILE), with_inline) {
                Ok(Ok((m, i))) => add(m, i, slot),
                Ok(Err(e)) => {
                    tracing::warn!(drive = slot, bucket, key, error = %e, "bad metadata");
                    bad_meta = true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => {}
                Err(_) => errors += 1,
            }
            // Only present while a commit is in flight or was interrupted.
            if let Ok(Ok((m, i))) = meta::read(&dir.join(PREV_META_FILE), with_inline) {
                add(m, i, slot);
            }
        }
        cands.sort_by(|a, b| (b.0.mtime_ns, &b.0.version_id).cmp(&(a.0.mtime_ns, &a.0.version_id)));
        let max_found = cands.iter().map(|(_, h)| h.iter().flatten().count()).max().unwrap_or(0);
        for (m, holders) in cands.iter() {
            let count = holders.iter().flatten().count();
            if count >= m.erasure.data {
                let damaged = bad_meta || count < n;
                return Ok(Resolved { meta: m.clone(), holders: holders.clone(), damaged });
            }
        }
        let need = cands.iter().map(|(m, _)| m.erasure.data).min().unwrap_or(self.data);
        let unknown = errors + (0..n).filter(|&s| !self.drive_online(s) || self.is_healing(s)).count();
        // The object may exist on the drives we could not read: then we cannot say.
        if unknown > 0 && max_found + unknown >= need {
            return Err(StoreError::Quorum {
                kind: "read",
                got: max_found,
                need,
                detail: format!("{bucket}/{key}: {unknown} drive(s) offline or failing"),
            });
        }
        Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        Ok(info(key, &self.resolve(bucket, key, false)?.meta))
    }

    /// Reads one range (`None` = whole object; clamped to the object's end).
    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<u8>)> {
        let ranges = [range.unwrap_or(0..u64::MAX)];
        let (m, mut v) = self.get_object_ranges(bucket, key, &ranges, opts)?;
        Ok((m, v.pop().unwrap_or_default()))
    }

    /// Reads several ranges of one version of an object, each clamped to its end.
    #[tracing::instrument(level = "debug", skip(self, ranges, opts), fields(n = ranges.len()))]
    pub fn get_object_ranges(
        &self,
        bucket: &str,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<Vec<u8>>)> {
        self.require_bucket(bucket)?;
        let r = self.resolve(bucket, key, true)?;
        if let Some(want) = &opts.if_match {
            if &r.meta.etag != want {
                return Err(StoreError::PreconditionFailed(format!(
                    "{bucket}/{key}: ETag is {:?}, not {want:?} (If-Match)",
                    r.meta.etag
                )));
            }
        }
        let data = self.read_resolved(bucket, key, &r, ranges)?;
        Ok((info(key, &r.meta), data))
    }

    /// Reads the verified chunk of `shard` for each block, `None` where missing or corrupt.
    fn read_shard_chunks(
        &self,
        bucket: &str,
        rel: &Path,
        r: &Resolved,
        part: usize,
        shard: usize,
        blocks: &[u64],
    ) -> Vec<Option<Vec<u8>>> {
        let m = &r.meta;
        let slot = m.erasure.distribution[shard];
        let layout = PartLayout { size: m.parts[part].size, data: m.erasure.data };
        if m.is_inline() {
            let Some(inline) = r.holders[slot].as_ref() else { return vec![None; blocks.len()] };
            return blocks
                .iter()
                .map(|&b| {
                    let off = layout.frame_offset(b) as usize;
                    inline.get(off..off + layout.frame_len(b)).and_then(bitrot::verify).map(|c| c.to_vec())
                })
                .collect();
        }
        let dd = m.data_dir.as_deref().unwrap_or_default();
        let path =
            self.obj_dir(slot, bucket, rel).join(format!("{DATA_DIR_PREFIX}{dd}")).join(&m.parts[part].file);
        let Ok(f) = File::open(&path) else { return vec![None; blocks.len()] };
        blocks
            .iter()
            .map(|&b| {
                let off = layout.frame_offset(b);
                let mut h = [0u8; HASH_LEN];
                let mut chunk = vec![0u8; layout.chunk_len(b)];
                f.read_exact_at(&mut h, off).ok()?;
                f.read_exact_at(&mut chunk, off + HASH_LEN as u64).ok()?;
                if bitrot::hash(&chunk) != h {
                    tracing::warn!(path = %path.display(), block = b, "bitrot detected");
                    return None;
                }
                Some(chunk)
            })
            .collect()
    }

    /// Reads `blocks` of part `part`; returns each block's data chunks.
    pub(crate) fn read_part_blocks(
        &self,
        bucket: &str,
        rel: &Path,
        r: &Resolved,
        part: usize,
        blocks: &[u64],
        damaged: &mut bool,
    ) -> StoreResult<Vec<Vec<Vec<u8>>>> {
        let m = &r.meta;
        let (d, n) = (m.erasure.data, m.erasure.data + m.erasure.parity);
        let layout = PartLayout { size: m.parts[part].size, data: d };
        let bytes: u64 = blocks.iter().map(|&b| layout.chunk_len(b) as u64).sum();
        let read_set = |shards: Range<usize>, which: &[u64]| -> Vec<Vec<Option<Vec<u8>>>> {
            if bytes < 256 * 1024 || m.is_inline() {
                shards.map(|s| self.read_shard_chunks(bucket, rel, r, part, s, which)).collect()
            } else {
                std::thread::scope(|sc| {
                    let hs: Vec<_> = shards
                        .map(|s| sc.spawn(move || self.read_shard_chunks(bucket, rel, r, part, s, which)))
                        .collect();
                    hs.into_iter().map(|h| h.join().unwrap_or_else(|_| vec![None; which.len()])).collect()
                })
            }
        };
        // Data shards first: for a healthy object that is all we read.
        let data_shards = read_set(0..d, blocks);
        let mut out: Vec<Vec<Vec<u8>>> = Vec::with_capacity(blocks.len());
        let bad: Vec<usize> =
            (0..blocks.len()).filter(|&i| data_shards.iter().any(|s| s[i].is_none())).collect();
        let mut per_block: Vec<Vec<Option<Vec<u8>>>> =
            (0..blocks.len()).map(|i| data_shards.iter().map(|s| s[i].clone()).collect()).collect();
        drop(data_shards);
        if !bad.is_empty() {
            *damaged = true;
            let which: Vec<u64> = bad.iter().map(|&i| blocks[i]).collect();
            let parity = read_set(d..n, &which);
            let er = Erasure::new(d, n - d)?;
            for (j, &i) in bad.iter().enumerate() {
                let mut shards: Vec<Option<Vec<u8>>> = per_block[i].clone();
                shards.extend(parity.iter().map(|p| p[j].clone()));
                let good = shards.iter().filter(|s| s.is_some()).count();
                if good < d {
                    return Err(StoreError::Quorum {
                        kind: "read",
                        got: good,
                        need: d,
                        detail: format!(
                            "{bucket}/{}: block {} of part {} has too few intact shards",
                            rel.display(),
                            blocks[i],
                            m.parts[part].number
                        ),
                    });
                }
                er.reconstruct(&mut shards, true)?;
                shards.truncate(d);
                per_block[i] = shards;
            }
        }
        for blk in per_block {
            out.push(blk.into_iter().map(|c| c.unwrap_or_default()).collect());
        }
        Ok(out)
    }

    /// Deletes an object (S3 semantics: deleting a missing key succeeds).
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<()> {
        self.require_bucket(bucket)?;
        let rel = paths::key_to_relpath(key)?;
        let _g = self.key_lock(bucket, key);
        match self.resolve(bucket, key, false) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        for slot in 0..self.drives.len() {
            let objdir = self.obj_dir(slot, bucket, &rel);
            self.trash_object_files(slot, &objdir)?;
            self.remove_empty_parents(slot, bucket, &objdir);
        }
        Ok(())
    }

    /// Moves the metadata and data dirs of one object dir to the trash (children stay).
    pub(crate) fn trash_object_files(&self, slot: usize, objdir: &Path) -> StoreResult<()> {
        let Ok(rd) = fs::read_dir(objdir) else { return Ok(()) };
        let mut names: Vec<_> = rd
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_str().map(|s| paths::unescape_component(s).is_none()).unwrap_or(false))
            .collect();
        // Metadata first, so a crash in between leaves no metadata without data.
        names.sort_by_key(|n| !n.to_str().unwrap_or_default().starts_with("%meta"));
        for name in names {
            self.move_to_trash_path(&self.drives[slot], &objdir.join(name))?;
        }
        Ok(())
    }

    /// Removes now-empty object directories up to (not including) the bucket dir.
    pub(crate) fn remove_empty_parents(&self, slot: usize, bucket: &str, objdir: &Path) {
        let stop = self.drives[slot].join(bucket);
        let mut dir = Some(objdir);
        while let Some(d) = dir {
            if d == stop || !d.starts_with(&stop) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Server-side copy, streamed block by block. `metadata: None` keeps the source's.
    #[tracing::instrument(level = "debug", skip(self, metadata))]
    pub fn copy_object(
        &self,
        bucket: &str,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        paths::key_to_relpath(dst)?;
        let r = self.resolve(bucket, src, true)?;
        let opts = metadata.cloned().unwrap_or(PutOptions {
            content_type: r.meta.content_type.clone(),
            user_metadata: r.meta.user_metadata.clone(),
            ..Default::default()
        });
        let mut reader =
            ObjectReader { store: self, bucket, key: src, r: &r, pos: 0, buf: Vec::new(), at: 0 };
        self.put_object_reader(bucket, dst, &mut reader, &opts)
    }
}

/// A `Read` over one resolved version, fetching 1 MiB at a time.
struct ObjectReader<'a> {
    store: &'a Store,
    bucket: &'a str,
    key: &'a str,
    r: &'a Resolved,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.r.meta.size {
                return Ok(0);
            }
            let end = (self.pos + BLOCK_SIZE as u64).min(self.r.meta.size);
            let mut v = self
                .store
                .read_resolved(self.bucket, self.key, self.r, std::slice::from_ref(&(self.pos..end)))
                .map_err(std::io::Error::other)?;
            self.buf = v.pop().unwrap_or_default();
            self.at = 0;
            self.pos = end;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
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
