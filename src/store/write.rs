//! Streaming, erasure-coding a write into the drives' temp dirs.
//!
//! The input is consumed in 1 MiB blocks; each block is encoded and its shards
//! are handed to one writer thread per drive over a bounded channel (memory
//! stays at a few blocks whatever the object size) while another thread
//! computes the MD5 ETag. Shards land in `<drive>/.bucketfs.sys/tmp/<id>/`
//! with their bitrot frames, writeback is started every few MiB so the final
//! fsync is short, and nothing is visible until `commit.rs` renames it into
//! place. Data small enough to be inlined (shard file <= 128 KiB) is kept in
//! memory instead and ends up inside `%meta`.
//!
//! Memory: every block's buffers (the data read, padded, plus its parity shards) are
//! paid for from the store's [`WriteBudget`] before the block is read, and returned
//! when the last shard writer has written it. A mount gives the store a slice of its
//! `--memory-limit` ([`Store::set_write_budget`]); without one (`bucketfs serve`, tools)
//! writes are bounded only by the channel depths. Waiting for the budget never fails a
//! write, and cannot deadlock: a write waits only while it holds no block that is not
//! already on its way to the drives, and those are freed by the writer threads, which
//! need no memory. (A block kept back for a possible inline write is the exception, so
//! a second such block is taken only if it is free at once; otherwise the write stops
//! trying to inline and streams.) The slice is separate from the reservations of the
//! upload and read layers above, which hold theirs while the store writes: drawing
//! both from one pool could leave every byte held by parts waiting for the store.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use std::sync::{Condvar, Mutex};

use md5::{Digest, Md5};

use super::bitrot::{self, HASH_LEN};
use super::drives::{sync_dir, SYS_DIR};
use super::erasure::{EncodedBlock, Erasure, BLOCK_SIZE};
use super::error::{IoContext, StoreError, StoreResult};
use super::object::INLINE_MAX;
use super::set::{quorum_error, ErasureSet};
use super::Store;

/// Bytes of a shard file after which its writeback is started.
const WRITEBACK_STEP: u64 = 4 << 20;

/// Data staged in `tmp/<tmp_id>/` on the drives, not yet visible.
pub(crate) struct Staged {
    pub tmp_id: String,
    pub ok: Vec<bool>,
    pub size: u64,
    pub md5: [u8; 16],
    /// Per shard index: the whole bitrot-framed shard when the data is inline.
    pub inline: Option<Vec<Vec<u8>>>,
}

/// Bytes the store's writes may hold in block buffers at once, shared by all its writes.
pub struct WriteBudget {
    total: u64,
    available: Mutex<u64>,
    /// The least ever available: how close the writes came to the limit.
    low_water: std::sync::atomic::AtomicU64,
    freed: Condvar,
    /// Whatever pays for the slice upstream (the mount's reservation from its
    /// `--memory-limit`), held as long as the budget lives.
    _paid_by: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl std::fmt::Debug for WriteBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBudget")
            .field("total", &self.total)
            .field("available", &self.available())
            .finish()
    }
}

impl WriteBudget {
    /// A budget of `bytes`; `paid_by` is kept alive with it.
    pub fn new(bytes: u64, paid_by: Option<Box<dyn std::any::Any + Send + Sync>>) -> Arc<WriteBudget> {
        let total = bytes.max(1);
        Arc::new(WriteBudget {
            total,
            available: Mutex::new(total),
            low_water: std::sync::atomic::AtomicU64::new(total),
            freed: Condvar::new(),
            _paid_by: paid_by,
        })
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    pub fn available(&self) -> u64 {
        *self.available.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The least that was ever available.
    pub fn low_water(&self) -> u64 {
        self.low_water.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn taken(&self, avail: &mut u64, n: u64) {
        *avail -= n;
        self.low_water.fetch_min(*avail, std::sync::atomic::Ordering::Relaxed);
    }

    /// Waits until `bytes` (at most the whole budget, so one block always fits) are free.
    fn take(self: &Arc<Self>, bytes: u64) -> BlockMemory {
        let n = bytes.min(self.total);
        let mut avail = self.available.lock().unwrap_or_else(|p| p.into_inner());
        while *avail < n {
            avail = self.freed.wait(avail).unwrap_or_else(|p| p.into_inner());
        }
        self.taken(&mut avail, n);
        BlockMemory { budget: Some(self.clone()), bytes: n }
    }

    /// Takes `bytes` only if they are free now.
    fn try_take(self: &Arc<Self>, bytes: u64) -> Option<BlockMemory> {
        let n = bytes.min(self.total);
        let mut avail = self.available.lock().unwrap_or_else(|p| p.into_inner());
        (*avail >= n).then(|| {
            self.taken(&mut avail, n);
            BlockMemory { budget: Some(self.clone()), bytes: n }
        })
    }
}

/// Bytes of a [`WriteBudget`] held for one block; returned on drop.
struct BlockMemory {
    budget: Option<Arc<WriteBudget>>,
    bytes: u64,
}

impl Drop for BlockMemory {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take() {
            *b.available.lock().unwrap_or_else(|p| p.into_inner()) += self.bytes;
            b.freed.notify_all();
        }
    }
}

/// The budget slot of an erasure set (empty: writes are not budgeted).
pub(crate) type WriteBudgetSlot = std::sync::RwLock<Option<Arc<WriteBudget>>>;

impl Store {
    /// Makes every write of this store pay for its block buffers from `budget`.
    pub fn set_write_budget(&self, budget: Arc<WriteBudget>) {
        for set in &self.sets {
            *set.write_budget.write().unwrap_or_else(|p| p.into_inner()) = Some(budget.clone());
        }
    }
}

/// An encoded block and the budget bytes paying for it, freed together when the last
/// consumer (shard writers, the MD5 thread) drops it.
struct Block {
    enc: EncodedBlock,
    _memory: Option<BlockMemory>,
}

/// Bytes one block of `er` occupies: its padded data buffer plus the parity shards.
pub(crate) fn block_cost(er: &Erasure) -> u64 {
    (er.shard_len(BLOCK_SIZE) * er.total()) as u64
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

fn next_block(r: &mut dyn Read, er: &Erasure) -> StoreResult<Vec<u8>> {
    // with room for the padding `encode` adds, so that it never reallocates (a
    // 1 MiB buffer padded by a byte would grow to 2 MiB)
    let mut b = er.block_buffer();
    b.resize(BLOCK_SIZE, 0);
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
    rx: std::sync::mpsc::Receiver<Arc<Block>>,
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
            let chunk = blk.enc.shard(shard);
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

impl ErasureSet {
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
        let budget = self.write_budget.read().unwrap_or_else(|p| p.into_inner()).clone();
        let cost = block_cost(er);
        // Paid for before the block is allocated: waits (never fails) while the budget is spent.
        let pay = || budget.as_ref().map(|b| b.take(cost));
        // Buffer blocks while the data could still be inlined (at most INLINE_MAX * data bytes).
        let mut pending: Vec<(Vec<u8>, Option<BlockMemory>)> = Vec::new();
        let mut shard_size = 0u64;
        let mut eof = false;
        let mut inline = allow_inline;
        loop {
            let memory = match (&budget, pending.is_empty()) {
                (Some(b), false) => match b.try_take(cost) {
                    Some(m) => Some(m),
                    // waiting now would hold the kept-back block: stream instead
                    None => {
                        inline = false;
                        break;
                    }
                },
                _ => pay(),
            };
            let b = next_block(reader, er)?;
            if b.is_empty() {
                eof = true;
                break;
            }
            shard_size += (HASH_LEN + er.shard_len(b.len())) as u64;
            let short = b.len() < BLOCK_SIZE;
            pending.push((b, memory));
            if !inline || shard_size > INLINE_MAX {
                break;
            }
            if short {
                eof = true;
                break;
            }
        }
        if inline && eof && shard_size <= INLINE_MAX {
            let mut md5 = Md5::new();
            let mut frames = vec![Vec::new(); n];
            let mut size = 0u64;
            for (b, _memory) in pending {
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
                let (tx, rx) = sync_channel::<Arc<Block>>(2);
                let path = self.tmp_dir(slot, &tmp_id).join(rel_file);
                let online = self.drive_online(slot);
                txs.push(Some(tx));
                handles.push((slot, s.spawn(move || shard_writer(&path, online, shard, rx))));
            }
            let (mtx, mrx) = sync_channel::<(Arc<Block>, usize)>(2);
            let md5h = s.spawn(move || {
                let mut h = Md5::new();
                for (blk, len) in mrx {
                    h.update(&blk.enc.buf[..len]);
                }
                <[u8; 16]>::from(h.finalize())
            });
            let mut feed = |b: Vec<u8>, memory: Option<BlockMemory>| -> StoreResult<()> {
                let len = b.len();
                size += len as u64;
                let enc = Arc::new(Block { enc: er.encode(b)?, _memory: memory });
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
            for (b, memory) in pending.drain(..) {
                if res.is_ok() {
                    res = feed(b, memory);
                }
            }
            while res.is_ok() && !eof {
                // every earlier block is in the pipeline: waiting here holds nothing back
                let memory = pay();
                match next_block(reader, er) {
                    Ok(b) if b.is_empty() => eof = true,
                    Ok(b) => res = feed(b, memory),
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::PutOptions;
    use crate::store::StoreConfig;

    fn bytes(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect()
    }

    /// Concurrent writes under a budget of two blocks all succeed (none fails or
    /// deadlocks waiting for memory), store the right bytes, never hold more than the
    /// budget, and give it all back.
    #[test]
    fn writes_pay_their_blocks_from_the_budget_and_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let drives = (0..4).map(|i| dir.path().join(format!("d{i}"))).collect();
        let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
        store.make_bucket("bkt").unwrap();
        let er = Erasure::new(2, 2).unwrap();
        let budget = WriteBudget::new(2 * block_cost(&er), None);
        store.set_write_budget(budget.clone());
        std::thread::scope(|s| {
            for t in 0..6u8 {
                let store = &store;
                s.spawn(move || {
                    // small (inline), just over a block, and several blocks
                    for (i, n) in [1000, BLOCK_SIZE + 1, 5 * BLOCK_SIZE + 7].into_iter().enumerate() {
                        let data = bytes(n, t * 3 + i as u8);
                        let key = format!("k{t}-{i}");
                        store.put_object_reader("bkt", &key, &mut &data[..], &PutOptions::default()).unwrap();
                        let (_, got) = store.get_object("bkt", &key, None, &Default::default()).unwrap();
                        assert!(got == data, "{key} differs");
                    }
                });
            }
        });
        assert_eq!(budget.available(), budget.total(), "every block's memory is returned");
        assert_eq!(budget.low_water(), 0, "the writes waited for the budget");
    }

    /// A budget smaller than one block still lets writes through, one block at a time.
    #[test]
    fn a_budget_below_one_block_is_clamped_not_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let drives = (0..2).map(|i| dir.path().join(format!("d{i}"))).collect();
        let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
        store.make_bucket("bkt").unwrap();
        let budget = WriteBudget::new(4096, None);
        store.set_write_budget(budget.clone());
        let data = bytes(3 * BLOCK_SIZE, 9);
        store.put_object_reader("bkt", "k", &mut &data[..], &PutOptions::default()).unwrap();
        assert!(store.get_object("bkt", "k", None, &Default::default()).unwrap().1 == data);
        assert_eq!(budget.available(), 4096);
    }
}
