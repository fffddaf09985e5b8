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

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::sync_channel;
use std::sync::Arc;

use md5::{Digest, Md5};

use super::bitrot::{self, HASH_LEN};
use super::drives::{sync_dir, SYS_DIR};
use super::erasure::{EncodedBlock, Erasure, BLOCK_SIZE};
use super::error::{IoContext, StoreError, StoreResult};
use super::object::INLINE_MAX;
use super::set::{quorum_error, ErasureSet};

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
}
