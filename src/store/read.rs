//! The range-read path: bytes go straight from the shard files into the
//! caller's buffers.
//!
//! Every requested range is cut into segments, one per (block, data shard)
//! piece it covers. Each data shard's segments are served by one thread that
//! reads the frame's hash and then the chunk *directly into the output buffer*
//! when the segment is a whole chunk (verifying the hash in place), or into a
//! scratch buffer when only part of the chunk is wanted. So a healthy read of
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
use super::erasure::BLOCK_SIZE;
use super::error::StoreResult;
use super::object::Resolved;
use super::paths::{self, DATA_DIR_PREFIX};
use super::Store;

/// One piece of an output range that lives in one chunk.
struct Seg<'a> {
    part: usize,
    block: u64,
    shard: usize,
    chunk_off: usize,
    buf: &'a mut [u8],
}

/// Reads below this many bytes stay on the calling thread.
const PARALLEL_MIN: usize = 256 * 1024;

impl Store {
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
        let mut outs: Vec<Vec<u8>> = ranges.iter().map(|x| vec![0u8; (x.end - x.start) as usize]).collect();
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
        for seg in segs {
            let layout = PartLayout { size: m.parts[seg.part].size, data: m.erasure.data };
            let slot = m.erasure.distribution[seg.shard];
            let off = layout.frame_offset(seg.block);
            let cl = layout.chunk_len(seg.block);
            let ok = if m.is_inline() {
                let frame = r.holders[slot]
                    .as_ref()
                    .and_then(|i| i.get(off as usize..off as usize + HASH_LEN + cl))
                    .and_then(bitrot::verify);
                match frame {
                    Some(c) => {
                        let n = seg.buf.len();
                        seg.buf.copy_from_slice(&c[seg.chunk_off..seg.chunk_off + n]);
                        true
                    }
                    None => false,
                }
            } else {
                if open.as_ref().map(|(p, _)| *p) != Some(seg.part) {
                    let path = self
                        .obj_dir(slot, bucket, rel)
                        .join(format!("{DATA_DIR_PREFIX}{}", m.data_dir.as_deref().unwrap_or_default()))
                        .join(&m.parts[seg.part].file);
                    open = Some((seg.part, File::open(path).ok()));
                }
                match open.as_ref().and_then(|(_, f)| f.as_ref()) {
                    None => false,
                    Some(f) => {
                        let mut h = [0u8; HASH_LEN];
                        let whole = seg.chunk_off == 0 && seg.buf.len() == cl;
                        f.read_exact_at(&mut h, off).is_ok()
                            && if whole {
                                f.read_exact_at(seg.buf, off + HASH_LEN as u64).is_ok()
                                    && bitrot::hash(seg.buf) == h
                            } else {
                                scratch.resize(cl, 0);
                                let good = f.read_exact_at(&mut scratch, off + HASH_LEN as u64).is_ok()
                                    && bitrot::hash(&scratch) == h;
                                if good {
                                    let n = seg.buf.len();
                                    seg.buf.copy_from_slice(&scratch[seg.chunk_off..seg.chunk_off + n]);
                                }
                                good
                            }
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
}
