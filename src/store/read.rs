//! The read path: version resolution and range reads.
//!
//! **Resolution** (`resolve`): `%meta` and, if present, `%meta.prev` are read
//! from every drive and grouped by version id; the newest version held by at
//! least `data` drives (the read quorum) wins. Considering `%meta.prev` is what
//! makes an interrupted multi-drive commit fall back to the old version. When
//! nothing qualifies the answer is `NotFound`, unless drives that are offline,
//! failing or being rebuilt could hold the object: then `Quorum`.
//!
//! **Range reads**: bytes go straight from the shard files into the caller's
//! buffers.
//!
//! Every requested range is cut into segments, one per (block, data shard)
//! piece it covers. Each data shard's segments are served by one thread that
//! reads the frame's hash and then the chunk *directly into the output buffer*
//! when the segment is a whole chunk (verifying the hash in place), or reads the
//! whole frame (hash and chunk, one read) into a scratch buffer when only part of
//! the chunk is wanted; a file opened for such a partial read is marked for random
//! access, so the kernel does not read the frames after it ahead. So a healthy read of
//! a whole object touches every byte once and never reads parity. Segments
//! that fail (missing file, short read, bitrot) are refilled from a
//! reconstruction of their blocks via `read_part_blocks`, which falls back to
//! parity, and the object is queued for healing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::bitrot::{self, PartLayout, HASH_LEN};
use super::erasure::{Erasure, BLOCK_SIZE};
use super::error::{StoreError, StoreResult};
use super::meta::{self, ObjMeta};
use super::paths::{self, DATA_DIR_PREFIX, META_FILE, PREV_META_FILE};
use super::set::ErasureSet;

/// The version of an object chosen by a read.
pub(crate) struct Resolved {
    pub meta: ObjMeta,
    /// Per slot: this version's inline shard bytes (empty if not inline) when the
    /// drive holds this version's metadata.
    pub holders: Vec<Option<Vec<u8>>>,
    /// Some drive lacks this version or has unreadable metadata.
    pub damaged: bool,
}

/// One piece of an output range that lives in one chunk.
struct Seg<'a> {
    part: usize,
    block: u64,
    shard: usize,
    chunk_off: usize,
    buf: &'a mut [u8],
}

impl Seg<'_> {
    /// Copies this segment's bytes out of its verified chunk; false if there is none.
    fn fill_from(&mut self, chunk: Option<&[u8]>) -> bool {
        let Some(c) = chunk else { return false };
        let n = self.buf.len();
        self.buf.copy_from_slice(&c[self.chunk_off..self.chunk_off + n]);
        true
    }
}

/// Reads below this many bytes stay on the calling thread.
const PARALLEL_MIN: usize = 256 * 1024;

impl ErasureSet {
    /// Reads ranges (clamped to the object's end) of a resolved version.
    pub(crate) fn read_resolved(
        &self,
        bucket: &str,
        key: &str,
        r: &Resolved,
        ranges: &[Range<u64>],
    ) -> StoreResult<Vec<Vec<u8>>> {
        let m = &r.meta;
        let rel = paths::key_to_relpath(key)?;
        let d = m.erasure.data;
        let ranges: Vec<Range<u64>> = ranges
            .iter()
            .map(|x| {
                let s = x.start.min(m.size);
                s..x.end.clamp(s, m.size)
            })
            .collect();
        let mut offs = Vec::with_capacity(m.parts.len());
        let mut o = 0u64;
        for p in &m.parts {
            offs.push(o);
            o += p.size;
        }
        // Recycled buffers (crate::buffers; the callers hand them out through
        // `buffers::freeze`): a fresh one per read-ahead chunk was mapped, faulted in
        // and zeroed page by page, then unmapped.
        let mut outs: Vec<Vec<u8>> = ranges
            .iter()
            .map(|x| {
                let len = (x.end - x.start) as usize;
                let mut v = crate::buffers::take(len);
                v.resize(len, 0);
                v
            })
            .collect();
        let total: usize = outs.iter().map(Vec::len).sum();
        let mut per_shard: Vec<Vec<Seg>> = (0..d).map(|_| Vec::new()).collect();
        for (x, out) in ranges.iter().zip(outs.iter_mut()) {
            let mut rest: &mut [u8] = out;
            let mut pos = x.start;
            while pos < x.end {
                let pi = offs.partition_point(|&po| po <= pos) - 1;
                let in_part = pos - offs[pi];
                let block = in_part / BLOCK_SIZE as u64;
                let in_block = (in_part % BLOCK_SIZE as u64) as usize;
                let layout = PartLayout { size: m.parts[pi].size, data: d };
                let cl = layout.chunk_len(block);
                let shard = in_block / cl;
                let chunk_off = in_block % cl;
                // The last chunk of a block may be zero padded past the block's end.
                let chunk_data = cl.min(layout.block_len(block) - shard * cl);
                let take = ((chunk_data - chunk_off) as u64).min(x.end - pos) as usize;
                let (buf, tail) = std::mem::take(&mut rest).split_at_mut(take);
                rest = tail;
                per_shard[shard].push(Seg { part: pi, block, shard, chunk_off, buf });
                pos += take as u64;
            }
        }
        let failed: Vec<Seg> = if total < PARALLEL_MIN || m.is_inline() {
            per_shard.into_iter().flat_map(|segs| self.fill_segments(bucket, &rel, r, segs)).collect()
        } else {
            let rel = &rel;
            std::thread::scope(|sc| {
                let hs: Vec<_> = per_shard
                    .into_iter()
                    .map(|segs| sc.spawn(move || self.fill_segments(bucket, rel, r, segs)))
                    .collect();
                // A panicked reader thread loses its segments; treat as an error below.
                hs.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
            })
        };
        let mut damaged = r.damaged;
        if !failed.is_empty() {
            damaged = true;
            let mut by_part: BTreeMap<usize, BTreeSet<u64>> = BTreeMap::new();
            for s in &failed {
                by_part.entry(s.part).or_default().insert(s.block);
            }
            let mut rebuilt: BTreeMap<(usize, u64), Vec<Vec<u8>>> = BTreeMap::new();
            for (part, blocks) in by_part {
                let list: Vec<u64> = blocks.into_iter().collect();
                let chunks = self.read_part_blocks(bucket, &rel, r, part, &list, &mut damaged)?;
                for (b, c) in list.into_iter().zip(chunks) {
                    rebuilt.insert((part, b), c);
                }
            }
            for s in failed {
                let c = &rebuilt[&(s.part, s.block)][s.shard];
                let n = s.buf.len();
                s.buf.copy_from_slice(&c[s.chunk_off..s.chunk_off + n]);
            }
        }
        if damaged {
            self.queue_heal(bucket, key);
        }
        Ok(outs)
    }

    /// Fills the segments of one data shard; returns those that could not be read intact.
    fn fill_segments<'a>(&self, bucket: &str, rel: &Path, r: &Resolved, segs: Vec<Seg<'a>>) -> Vec<Seg<'a>> {
        let m = &r.meta;
        let mut failed = Vec::new();
        let mut open: Option<(usize, Option<File>)> = None;
        let mut scratch = Vec::new();
        for mut seg in segs {
            let layout = PartLayout { size: m.parts[seg.part].size, data: m.erasure.data };
            let slot = m.erasure.distribution[seg.shard];
            let off = layout.frame_offset(seg.block);
            let cl = layout.chunk_len(seg.block);
            let whole = seg.chunk_off == 0 && seg.buf.len() == cl;
            let ok = if m.is_inline() {
                let chunk = r.holders[slot]
                    .as_ref()
                    .and_then(|i| i.get(off as usize..off as usize + HASH_LEN + cl))
                    .and_then(bitrot::verify);
                seg.fill_from(chunk)
            } else {
                if open.as_ref().map(|(p, _)| *p) != Some(seg.part) {
                    let path = self
                        .obj_dir(slot, bucket, rel)
                        .join(format!("{DATA_DIR_PREFIX}{}", m.data_dir.as_deref().unwrap_or_default()))
                        .join(&m.parts[seg.part].file);
                    let file = File::open(path).ok();
                    if let (Some(f), false) = (&file, whole) {
                        advise_random(f);
                    }
                    open = Some((seg.part, file));
                }
                match open.as_ref().and_then(|(_, f)| f.as_ref()) {
                    None => false,
                    Some(f) if whole => {
                        let mut h = [0u8; HASH_LEN];
                        f.read_exact_at(&mut h, off).is_ok()
                            && f.read_exact_at(seg.buf, off + HASH_LEN as u64).is_ok()
                            && bitrot::hash(seg.buf) == h
                    }
                    Some(f) => {
                        // the whole frame (hash and chunk) in one read: the hash covers the chunk
                        scratch.resize(HASH_LEN + cl, 0);
                        let chunk =
                            f.read_exact_at(&mut scratch, off).ok().and_then(|()| bitrot::verify(&scratch));
                        seg.fill_from(chunk)
                    }
                }
            };
            if !ok {
                tracing::warn!(bucket, key = %rel.display(), slot, block = seg.block, "shard block missing or corrupt");
                failed.push(seg);
            }
        }
        failed
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
        // With no copy found at all that needs a whole write quorum of unknown
        // drives (every committed write reached one), so lookups of absent keys
        // stay "not found" while a few drives are down.
        let could_exist = if max_found == 0 {
            unknown >= Self::write_quorum(self.data, self.parity)
        } else {
            max_found + unknown >= need
        };
        if unknown > 0 && could_exist {
            return Err(StoreError::Quorum {
                kind: "read",
                got: max_found,
                need,
                detail: format!("{bucket}/{key}: {unknown} drive(s) offline or failing"),
            });
        }
        Err(StoreError::NotFound { bucket: bucket.into(), key: key.into() })
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
}

/// Tells the kernel that `f` is read at scattered offsets, so that a read of one
/// frame does not pull in the frames after it. A sparse reader's 16 KiB range costs
/// one frame (a whole shard chunk, for its hash); with the kernel's read-ahead on
/// (8 MiB on this project's test machine) `bucketfs serve` read 245 MB from disk for
/// issue 11's 200 strided reads of 16 KiB, twice what it asked for. Only a hint: a
/// file system that ignores it reads ahead as before.
fn advise_random(f: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: posix_fadvise only reads its integer arguments; the descriptor is open.
    let _ = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_RANDOM) };
}
