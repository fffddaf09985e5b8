//! Sequential read-ahead for one open file, pinned to one object version.
//!
//! # Design
//!
//! The prefetcher keeps a queue of *chunks*: contiguous, ascending byte ranges
//! of the object, each a running ranged GET (a spawned task, so chunks
//! download in parallel) behind a shared future that any number of reads can
//! await. Reading is split in two so that no lock is held across a request:
//! [`Prefetcher::plan`] is synchronous (the handle calls it under its lock)
//! and only classifies the read, updates the queue and hands back a
//! [`ReadPlan`]: the chunk futures that hold the bytes, plus any range to fetch
//! on its own. [`ReadPlan::read`] then awaits them after the lock is released,
//! so concurrent reads of one file wait for their own bytes only. Every read is
//! classified:
//!
//! - **Sequential**: it starts at most [`SEQUENTIAL_SLACK`] after where the
//!   previous read ended, or inside the chunks already queued (the kernel may
//!   reorder or skip a little). Chunks wholly behind the read (by more than
//!   [`KEEP_BEHIND`], which absorbs small backward reorders) are dropped, and
//!   when less than half a window (a large window: less than the window minus
//!   one request) is queued ahead of the read, the queue is topped up to one
//!   window past the read and the window doubles, from
//!   `initial_window` (1 MiB) up to `max_window` (`--read-ahead`); a first read of
//!   a large object at offset 0 in large blocks opens with a ladder of pieces
//!   queued at once instead (see [`Prefetcher::spawn_ladder`]). A top-up is
//!   split into requests of at most `request_size` (8 MiB) that run
//!   concurrently, so a large window becomes several parallel ranged GETs;
//!   once the window is that large, requests are whole `request_size` pieces
//!   on `request_size` boundaries of the object, so their download buffers are
//!   recycled ([`crate::buffers`]) instead of mapped and faulted in anew.
//! - **Random**: anything else. The queue is dropped, the window goes back to
//!   its initial size, and exactly the requested range is fetched, by the read
//!   itself (it is not queued: a random reader downloads what it asks for and
//!   nothing more, and concurrent random reads never cancel each other). If
//!   the next read continues where this one ended, read-ahead starts again
//!   from there.
//!
//! Objects no larger than the initial window are fetched whole on first read.
//!
//! Read-ahead memory is reserved from the mount's [`MemoryLimiter`] with
//! `try_reserve` only: when the budget is used up we read ahead less (down to
//! just the bytes the current read needs, which are fetched without a
//! reservation), and never wait, so readers can never deadlock with writers
//! or with each other. Read-ahead also leaves [`WRITER_SHARE`] of the budget
//! free, because writers *do* wait for memory and read-ahead buffers of files
//! that are open but idle would otherwise be able to starve them forever.
//! Reservations live as long as their chunk stays queued and its download
//! runs (a cancelled read of the embedded store finishes on the blocking pool).
//!
//! Every GET carries `If-Match` with the ETag seen at open: if the object is
//! replaced while the file is open, reads fail with an I/O error instead of
//! returning a mix of two versions. A GET that returns fewer bytes than asked
//! (a misbehaving server) is an I/O error, never a hole handed out as data.
//! Reads at or past the end return nothing. A chunk that failed is forgotten
//! with the rest of the queue by the next plan, so a retry starts from
//! scratch. Dropping the prefetcher (or a random read's plan) cancels the
//! downloads that no read is waiting for, and frees their buffers.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::task::AbortHandle;
use tracing::Instrument;

use crate::backend::{BackendError, BackendResult, GetOptions, StorageBackend};
use crate::memory::{self, MemoryLimiter, Reservation};
use crate::object::ErrorKind;

const TARGET: &str = "bucketfs::read";
const MIB: u64 = 1024 * 1024;

/// How far from the previous read's end a read still counts as sequential.
pub const SEQUENTIAL_SLACK: u64 = 256 * 1024;
/// Consumed bytes kept behind the read position, so reordered reads still hit.
pub const KEEP_BEHIND: u64 = MIB;
/// Read-ahead queued at once by a handle's first large read at offset 0 ([`Prefetcher::spawn_ladder`]).
pub const LADDER_TOP: u64 = 16 * MIB;
/// A first read at least this large (the kernel asks for blocks this size when the
/// application reads in blocks of a MiB or more) opens with the ladder.
pub const LADDER_MIN_READ: u64 = 512 * 1024;
/// Fraction (1/n) of the memory budget read-ahead never takes, so writers always progress.
pub const WRITER_SHARE: u64 = 4;

#[derive(Clone, Debug)]
pub struct PrefetchConfig {
    /// Read-ahead after the first sequential read; also the "small object" size.
    pub initial_window: u64,
    /// Largest read-ahead window (`--read-ahead`).
    pub max_window: u64,
    /// Largest single ranged GET; larger windows are split into concurrent requests.
    pub request_size: u64,
}

impl Default for PrefetchConfig {
    fn default() -> Self {
        PrefetchConfig { initial_window: MIB, max_window: 64 * MIB, request_size: 8 * MIB }
    }
}

impl PrefetchConfig {
    /// The defaults with the maximum window from `--read-ahead`.
    pub fn with_max_window(max_window: u64) -> Self {
        let d = Self::default();
        PrefetchConfig { max_window: max_window.max(d.initial_window), ..d }
    }
}

/// The bytes of one chunk, shared by every read that wants them.
type ChunkFuture = Shared<BoxFuture<'static, BackendResult<Bytes>>>;

/// Aborts a chunk's download when neither the queue nor any read holds it any more.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

struct Chunk {
    range: Range<u64>,
    data: ChunkFuture,
    abort: Arc<AbortOnDrop>,
    _reservation: Option<Arc<Reservation>>,
}

impl Chunk {
    /// Whether the chunk is known to have failed (only once some read awaited it).
    fn failed(&self) -> bool {
        matches!(self.data.peek(), Some(Err(_)))
    }
}

/// One source of a read's bytes.
enum Piece {
    /// `want` out of a queued chunk that starts at `start`.
    Chunk { start: u64, want: Range<u64>, data: ChunkFuture, _abort: Arc<AbortOnDrop> },
    /// A range fetched by this read alone (cancelled if the read is dropped).
    Fetch(BoxFuture<'static, BackendResult<Bytes>>),
}

/// What one read has to await, built under the handle's lock by [`Prefetcher::plan`]
/// and awaited without it.
pub struct ReadPlan {
    len: u64,
    pieces: Vec<Piece>,
}

impl ReadPlan {
    fn empty() -> Self {
        ReadPlan { len: 0, pieces: Vec::new() }
    }

    /// Whether the plan fetches a range of its own instead of (only) queued chunks.
    pub fn fetches_alone(&self) -> bool {
        self.pieces.iter().any(|p| matches!(p, Piece::Fetch(_)))
    }

    /// Awaits the pieces (concurrently) and returns the read's bytes.
    pub async fn read(self) -> BackendResult<Bytes> {
        let len = self.len;
        let waits = self.pieces.into_iter().map(|piece| async move {
            match piece {
                Piece::Chunk { start, want, data, _abort } => {
                    let d = data.await?;
                    let (s, e) = ((want.start - start) as usize, (want.end - start) as usize);
                    if e > d.len() {
                        return Err(BackendError::io(format!("short read: chunk of {} bytes", d.len())));
                    }
                    Ok(d.slice(s..e))
                }
                Piece::Fetch(f) => f.await,
            }
        });
        let mut parts = futures::future::try_join_all(waits).await?;
        if parts.len() == 1 {
            return Ok(parts.pop().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity(len as usize);
        for p in parts {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }
}

/// Read-ahead state of one open file.
pub struct Prefetcher {
    backend: Arc<dyn StorageBackend>,
    memory: MemoryLimiter,
    key: String,
    size: u64,
    etag: Option<String>,
    cfg: PrefetchConfig,
    window: u64,
    /// End of the previous read; None before the first read.
    last_end: Option<u64>,
    /// Contiguous ascending ranges.
    chunks: VecDeque<Chunk>,
}

impl Prefetcher {
    /// Reads of `key`, `size` bytes long, pinned to `etag` (empty = not pinned).
    pub fn new(
        backend: Arc<dyn StorageBackend>,
        memory: MemoryLimiter,
        key: String,
        size: u64,
        etag: String,
        cfg: PrefetchConfig,
    ) -> Self {
        let etag = (!etag.is_empty()).then_some(etag);
        let window = cfg.initial_window.max(1);
        Prefetcher { backend, memory, key, size, etag, cfg, window, last_end: None, chunks: VecDeque::new() }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Current read-ahead window (for tests and debugging).
    pub fn window(&self) -> u64 {
        self.window
    }

    /// Bytes queued or downloaded ahead of (and just behind) the read position.
    pub fn buffered_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.range.end - c.range.start).sum()
    }

    /// Up to `len` bytes at `offset`; empty at or past the end. (Plans and awaits
    /// in one go: for callers that hold the prefetcher alone.)
    pub async fn read(&mut self, offset: u64, len: u64) -> BackendResult<Bytes> {
        self.plan(offset, len).read().await
    }

    /// Classifies a read of up to `len` bytes at `offset`, starts whatever
    /// requests it needs, and returns what to await for its bytes. Never waits.
    pub fn plan(&mut self, offset: u64, len: u64) -> ReadPlan {
        if offset >= self.size || len == 0 {
            return ReadPlan::empty();
        }
        let end = offset.saturating_add(len).min(self.size);
        if self.chunks.iter().any(Chunk::failed) {
            // forget everything: a retry starts from scratch instead of hitting a failed chunk
            self.chunks.clear();
            self.window = self.cfg.initial_window.max(1);
            self.last_end = None;
        }
        let plan = if self.size <= self.cfg.initial_window && self.chunks.is_empty() {
            let reservation = self.reserve_read_ahead(self.size);
            self.spawn_chunk(0..self.size, reservation);
            self.assemble(offset, end)
        } else if self.opens_a_long_read(offset, len) {
            self.spawn_ladder();
            self.assemble(offset, end)
        } else if self.is_sequential(offset) {
            while self.chunks.front().is_some_and(|c| c.range.end.saturating_add(KEEP_BEHIND) <= offset) {
                self.chunks.pop_front();
            }
            if self.chunks.back().is_some_and(|c| c.range.end < offset) {
                // skipped forward past everything queued
                self.chunks.clear();
            }
            self.top_up(offset, end);
            self.assemble(offset, end)
        } else {
            tracing::debug!(target: TARGET, key = %self.key, offset, "random read: read-ahead reset");
            self.chunks.clear();
            self.window = self.cfg.initial_window.max(1);
            ReadPlan { len: end - offset, pieces: vec![self.fetch_alone(offset..end)] }
        };
        self.last_end = Some(end);
        plan
    }

    /// The first read of the handle, at offset 0, in large blocks, of an object many
    /// times the opening ladder: a reader that is most likely about to read on.
    fn opens_a_long_read(&self, offset: u64, len: u64) -> bool {
        offset == 0
            && self.last_end.is_none()
            && self.chunks.is_empty()
            && len >= LADDER_MIN_READ
            && self.size >= 4 * LADDER_TOP
    }

    /// Queues `initial_window` pieces doubling in size up to [`LADDER_TOP`] at once
    /// (1, 1, 2, 4, 8 MiB), and leaves the window there. Growing the window one
    /// read at a time costs a stall of one round trip: the kernel asks for the
    /// second block only once the first is answered, and what that read queues
    /// arrives a round trip later, after the reader has drained the first chunk
    /// (measured at 20 ms: the second GET started 46 ms after the first; a cold
    /// 256 MiB read took 0.99 s against curl's 0.84 s). The small first piece
    /// keeps the first answer as quick as before; the cost of a wrong guess is
    /// at most `LADDER_TOP` downloaded for a reader that stops after one block.
    fn spawn_ladder(&mut self) {
        let mut start = 0;
        let mut piece = self.cfg.initial_window.max(1);
        let top = LADDER_TOP.max(piece).min(self.cfg.max_window).min(self.size);
        while start < top {
            let stop = (start + piece).min(top);
            match self.reserve_read_ahead(stop - start) {
                Some(r) => self.spawn_chunk(start..stop, Some(r)),
                // no memory: the first piece is fetched for the read, nothing ahead
                None if start == 0 => self.spawn_chunk(start..stop, None),
                None => break,
            }
            if start > 0 {
                piece *= 2;
            }
            start = stop;
        }
        self.window = self.chunks.back().map_or(0, |c| c.range.end).max(self.cfg.initial_window.max(1));
    }

    fn is_sequential(&self, offset: u64) -> bool {
        let buffered = match (self.chunks.front(), self.chunks.back()) {
            (Some(f), Some(b)) => f.range.start <= offset && offset < b.range.end,
            _ => false,
        };
        let near_last = match self.last_end {
            None => offset == 0,
            // forward only: a small backward step is served from KEEP_BEHIND or fetched exactly
            Some(l) => offset >= l && offset - l <= SEQUENTIAL_SLACK,
        };
        buffered || near_last
    }

    /// Queues requests so that at least `end` and, memory allowing, one window past it are covered.
    fn top_up(&mut self, offset: u64, end: u64) {
        let queued_end = self.chunks.back().map_or(offset, |c| c.range.end);
        let request_size = self.cfg.request_size.max(1);
        let aligned = self.window >= request_size;
        // A small window is refilled when half of it is consumed. A large one is kept
        // full a request at a time: refilled in halves, the four or more requests of a
        // refill shared the bandwidth and all finished together, so the one the reader
        // needed next came last (at 20 ms a 64 MiB window stalled the reader about a
        // round trip per 32 MiB); one at a time, the next-needed request is the oldest.
        let refill_below = if aligned { self.window - request_size } else { self.window / 2 };
        if queued_end >= end && queued_end - end >= refill_below {
            return;
        }
        let mut target = end.saturating_add(self.window).min(self.size);
        if aligned {
            // Whole requests on request_size boundaries of the object: every chunk of a
            // long read is the same size, so its buffer is recycled (crate::buffers;
            // split evenly, the sizes changed with every top-up and none was reused).
            target = target.div_ceil(request_size).saturating_mul(request_size).min(self.size);
        }
        let total = target.saturating_sub(queued_end);
        if total == 0 {
            return;
        }
        // unaligned (a window smaller than a request): pieces of equal size
        let piece = total.div_ceil(total.div_ceil(request_size));
        let mut start = queued_end;
        let mut complete = true;
        while start < target {
            let stop = if aligned { (start / request_size + 1) * request_size } else { start + piece };
            let stop = stop.min(target);
            match self.reserve_read_ahead(stop - start) {
                Some(r) => self.spawn_chunk(start..stop, Some(r)),
                None if start < end => {
                    // memory is short: fetch only what this read needs, and stop reading ahead
                    self.spawn_chunk(start..end, None);
                    complete = false;
                    break;
                }
                None => {
                    complete = false;
                    break;
                }
            }
            start = stop;
        }
        self.window = if complete {
            self.window.saturating_mul(2).min(self.cfg.max_window.max(self.cfg.initial_window))
        } else {
            self.cfg.initial_window.max(1)
        };
    }

    /// Memory for read-ahead, if available now without eating into the writers' share.
    fn reserve_read_ahead(&self, bytes: u64) -> Option<Reservation> {
        let headroom = self.memory.limit_bytes() / WRITER_SHARE;
        if self.memory.available_bytes() < bytes.saturating_add(headroom) {
            return None;
        }
        self.memory.try_reserve(bytes)
    }

    /// Starts one pinned ranged GET in the background and queues it.
    fn spawn_chunk(&mut self, range: Range<u64>, reservation: Option<Reservation>) {
        // held by the queue and by the download (a dropped chunk's store read may still be
        // filling its buffer: that memory is not free until it ends)
        let reservation = reservation.map(Arc::new);
        let get = get_exact(self.backend.clone(), self.key.clone(), range.clone(), self.etag.clone());
        let task = tokio::spawn(memory::covering(reservation.clone(), get));
        let abort = Arc::new(AbortOnDrop(task.abort_handle()));
        let data = async move {
            match task.await {
                Ok(res) => res,
                Err(e) => Err(BackendError::other(format!("read task failed: {e}")).with_source(e)),
            }
        }
        .boxed()
        .shared();
        self.chunks.push_back(Chunk { range, data, abort, _reservation: reservation });
    }

    /// A read of exactly `range`, run by the read that awaits it.
    fn fetch_alone(&self, range: Range<u64>) -> Piece {
        Piece::Fetch(get_exact(self.backend.clone(), self.key.clone(), range, self.etag.clone()).boxed())
    }

    /// The pieces holding `offset..end`: queued chunks, and a fetch of its own for what lies before them.
    fn assemble(&self, offset: u64, end: u64) -> ReadPlan {
        let mut pieces = Vec::new();
        let mut pos = offset;
        let front = self.chunks.front().map_or(end, |c| c.range.start);
        if pos < front {
            // a read just before the queue (reordered backwards): fetch it on its own
            let stop = front.min(end);
            pieces.push(self.fetch_alone(pos..stop));
            pos = stop;
        }
        for chunk in &self.chunks {
            if pos >= end {
                break;
            }
            if chunk.range.end <= pos {
                continue;
            }
            if chunk.range.start > pos {
                break;
            }
            let stop = chunk.range.end.min(end);
            pieces.push(Piece::Chunk {
                start: chunk.range.start,
                want: pos..stop,
                data: chunk.data.clone(),
                _abort: chunk.abort.clone(),
            });
            pos = stop;
        }
        if pos < end {
            // chunks are contiguous and topped up past `end`, so only a short
            // top-up (no memory) leaves this: fetch the rest on its own
            pieces.push(self.fetch_alone(pos..end));
        }
        ReadPlan { len: end - offset, pieces }
    }
}

/// [`get_pinned`] that fails with an I/O error unless it got all of `range`.
async fn get_exact(
    backend: Arc<dyn StorageBackend>,
    key: String,
    range: Range<u64>,
    etag: Option<String>,
) -> BackendResult<Bytes> {
    let want = range.end - range.start;
    let data = get_pinned(backend, key, range, etag).await?;
    if data.len() as u64 != want {
        // with a pinned ETag this means a misbehaving server: never return a hole as data
        return Err(BackendError::io(format!("short read: {} of {want} bytes", data.len())));
    }
    Ok(data)
}

/// One ranged GET pinned to `etag` (when given). A changed
/// object (`PreconditionFailed`) becomes an I/O error: for a reader the file went bad.
pub async fn get_pinned(
    backend: Arc<dyn StorageBackend>,
    key: String,
    range: Range<u64>,
    etag: Option<String>,
) -> BackendResult<Bytes> {
    let opts = GetOptions { if_match: etag };
    let span =
        tracing::debug_span!(target: TARGET, "get_range", key = %key, start = range.start, end = range.end);
    match backend.get_range(&key, Some(range), &opts).instrument(span).await {
        Ok(res) => Ok(res.data),
        Err(e) => Err(match e {
            BackendError { kind: ErrorKind::PreconditionFailed, .. } => {
                BackendError::io(format!("{key} changed on the server while open"))
            }
            e => e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;
    use crate::backend::test_backend::InstrumentedBackend;
    use crate::backend::PutOptions;

    async fn setup(size: u64, memory: u64) -> (Arc<InstrumentedBackend>, Prefetcher, Vec<u8>, MemoryLimiter) {
        let backend = InstrumentedBackend::with_min_part(MIB);
        let data: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
        let meta = backend.inner.put("o", Bytes::from(data.clone()), &PutOptions::default()).await.unwrap();
        let memory = MemoryLimiter::new(memory);
        let p = Prefetcher::new(
            backend.clone(),
            memory.clone(),
            "o".into(),
            meta.size,
            meta.etag,
            PrefetchConfig::with_max_window(32 * MIB),
        );
        (backend, p, data, memory)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn window_grows_to_the_maximum_with_parallel_requests() {
        let (backend, mut p, data, _memory) = setup(96 * MIB, 256 * MIB).await;
        backend.get_delay_ms.store(10, SeqCst);
        let mut pos = 0u64;
        let mut windows = Vec::new();
        while pos < 96 * MIB {
            let b = p.read(pos, 128 * 1024).await.unwrap();
            assert_eq!(&b[..], &data[pos as usize..][..b.len()]);
            pos += b.len() as u64;
            windows.push(p.window());
        }
        assert_eq!(windows[0], 2 * MIB, "starts at 1 MiB and doubles");
        assert!(windows.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(*windows.last().unwrap(), 32 * MIB);
        assert!(backend.max_gets_running.load(SeqCst) >= 2, "large windows are fetched in parallel");
        assert!(backend.gets.load(SeqCst) <= 24, "{} requests", backend.gets.load(SeqCst));
        assert!(p.buffered_bytes() <= 32 * MIB + KEEP_BEHIND + 8 * MIB);
    }

    #[tokio::test]
    async fn a_first_large_read_at_zero_queues_the_ladder_at_once() {
        let ranges = |p: &Prefetcher| p.chunks.iter().map(|c| c.range.clone()).collect::<Vec<_>>();
        // a big object read in MiB blocks from the start: 1, 1, 2, 4, 8 MiB in flight together
        let (backend, mut p, data, _memory) = setup(64 * MIB, 256 * MIB).await;
        let b = p.read(0, MIB).await.unwrap();
        assert_eq!(&b[..], &data[..MIB as usize]);
        let m = MIB;
        assert_eq!(ranges(&p), vec![0..m, m..2 * m, 2 * m..4 * m, 4 * m..8 * m, 8 * m..16 * m]);
        assert_eq!(p.window(), LADDER_TOP);
        // the next blocks are served from the ladder without a request
        for i in 1..8 {
            let b = p.read(i * MIB, MIB).await.unwrap();
            assert_eq!(&b[..], &data[(i * MIB) as usize..][..MIB as usize]);
        }
        assert_eq!(backend.gets.load(SeqCst), 5);

        // small first reads (cat, dd bs=4k), a read elsewhere, a smaller object: the
        // window grows from one request as before
        for (size, offset, len) in [(64 * MIB, 0, 128 * 1024), (64 * MIB, 4096, MIB), (63 * MIB, 0, MIB)] {
            let (backend, mut p, _data, _memory) = setup(size, 256 * MIB).await;
            p.read(offset, len).await.unwrap();
            assert!(p.chunks.len() <= 1, "{size} {offset} {len}: {:?}", ranges(&p));
            assert!(backend.get_bytes.load(SeqCst) <= 2 * MIB);
        }
    }

    #[tokio::test]
    async fn a_large_window_fetches_whole_aligned_requests() {
        let (_backend, mut p, _data, _memory) = setup(200 * MIB + 12_345, 256 * MIB).await;
        let mut pos = 0u64;
        while pos < 120 * MIB {
            pos += p.read(pos, 1000 * 1000).await.unwrap().len() as u64;
            if p.window() > 8 * MIB {
                // every request queued since: 8 MiB pieces between multiples of 8 MiB
                // (so their buffers are recycled), whatever the read size
                for c in p.chunks.iter().filter(|c| c.range.start >= 24 * MIB) {
                    assert_eq!(c.range.end % (8 * MIB), 0, "{:?}", c.range);
                    assert_eq!(c.range.end - c.range.start, 8 * MIB, "{:?}", c.range);
                }
            }
        }
    }

    #[tokio::test]
    async fn random_read_resets_the_window() {
        let (backend, mut p, data, _memory) = setup(64 * MIB, 256 * MIB).await;
        for i in 0..20u64 {
            p.read(i * 128 * 1024, 128 * 1024).await.unwrap();
        }
        assert!(p.window() > MIB);
        let before = backend.get_bytes.load(SeqCst);
        let b = p.read(50 * MIB, 1000).await.unwrap();
        assert_eq!(&b[..], &data[50 * MIB as usize..][..1000]);
        assert_eq!(p.window(), MIB);
        assert_eq!(p.buffered_bytes(), 0, "older read-ahead dropped, the random read not queued");
        // let already-started read-ahead requests finish before counting
        tokio::task::yield_now().await;
        assert!(backend.get_bytes.load(SeqCst) - before <= 1000 + 16 * MIB);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn planned_reads_run_concurrently_and_never_cancel_each_other() {
        let (backend, mut p, data, _memory) = setup(64 * MIB, 256 * MIB).await;
        backend.get_delay_ms.store(50, SeqCst);
        // 8 scattered reads planned one after another (as under the handle's lock),
        // each random: every one clears the queue, none may cancel another's request
        let offsets: Vec<u64> = (0..8u64).map(|i| (i * 37 % 61) * MIB + 12_345).collect();
        let plans: Vec<_> = offsets.iter().map(|&o| (o, p.plan(o, 16 * 1024))).collect();
        assert!(plans.iter().all(|(_, plan)| plan.fetches_alone()), "random reads fetch on their own");
        assert_eq!(p.buffered_bytes(), 0);
        let reads = plans.into_iter().map(|(o, plan)| async move { (o, plan.read().await) });
        for (o, got) in futures::future::join_all(reads).await {
            assert_eq!(&got.unwrap()[..], &data[o as usize..][..16 * 1024], "offset {o}");
        }
        assert_eq!(backend.gets.load(SeqCst), 8);
        assert_eq!(backend.get_bytes.load(SeqCst), 8 * 16 * 1024, "exactly what was asked");
        assert!(backend.max_gets_running.load(SeqCst) >= 4, "{}", backend.max_gets_running.load(SeqCst));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_of_one_chunk_share_its_request() {
        let (backend, mut p, data, _memory) = setup(64 * MIB, 256 * MIB).await;
        backend.get_delay_ms.store(20, SeqCst);
        // the kernel's read-ahead: several sequential reads in flight at once
        let plans: Vec<_> = (0..8u64).map(|i| (i * 128 * 1024, p.plan(i * 128 * 1024, 128 * 1024))).collect();
        assert!(plans.iter().all(|(_, plan)| !plan.fetches_alone()), "all served by read-ahead chunks");
        let reads = plans.into_iter().map(|(o, plan)| async move { (o, plan.read().await) });
        for (o, got) in futures::future::join_all(reads).await {
            assert_eq!(&got.unwrap()[..], &data[o as usize..][..128 * 1024]);
        }
        // every request was a read-ahead chunk (the window doubled with each top-up)
        assert!(backend.gets.load(SeqCst) <= 9, "{}", backend.gets.load(SeqCst));
        assert!(backend.get_bytes.load(SeqCst) <= 33 * MIB);
    }

    #[tokio::test]
    async fn a_short_answer_is_an_error_and_the_next_read_starts_afresh() {
        let (backend, mut p, data, _memory) = setup(16 * MIB, 256 * MIB).await;
        backend.get_short_by.store(1, SeqCst);
        let e = p.read(0, 4096).await.unwrap_err();
        assert!(
            matches!(e, ref e if e.kind() == crate::object::ErrorKind::Io && e.context().contains("short read")),
            "{e}"
        );
        let e = p.read(8 * MIB, 4096).await.unwrap_err();
        assert!(
            matches!(e, ref e if e.kind() == crate::object::ErrorKind::Io && e.context().contains("short read")),
            "random: {e}"
        );
        backend.get_short_by.store(0, SeqCst);
        // the failed chunk is forgotten, not served again
        assert_eq!(&p.read(0, 4096).await.unwrap()[..], &data[..4096]);
        assert_eq!(&p.read(4096, 4096).await.unwrap()[..], &data[4096..8192]);
    }

    #[tokio::test]
    async fn dropping_the_prefetcher_cancels_its_read_ahead() {
        let (backend, mut p, _data, memory) = setup(64 * MIB, 256 * MIB).await;
        backend.get_delay_ms.store(60_000, SeqCst);
        let _ = p.plan(0, 128 * 1024);
        tokio::task::yield_now().await;
        assert!(p.buffered_bytes() > MIB);
        assert!(memory.available_bytes() < memory.limit_bytes());
        drop(p);
        for _ in 0..100 {
            if backend.gets_running.load(SeqCst) == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(backend.gets_running.load(SeqCst), 0, "requests cancelled");
        assert_eq!(memory.available_bytes(), memory.limit_bytes(), "buffers freed");
    }

    #[tokio::test]
    async fn no_memory_means_no_read_ahead_but_reads_work() {
        let (backend, mut p, data, memory) = setup(8 * MIB, MIB).await;
        let _all = memory.reserve(MIB).await;
        let mut pos = 0u64;
        while pos < 8 * MIB {
            let b = p.read(pos, 128 * 1024).await.unwrap();
            assert_eq!(&b[..], &data[pos as usize..][..b.len()]);
            pos += b.len() as u64;
        }
        // one request per read: nothing beyond what was asked
        assert_eq!(backend.get_bytes.load(SeqCst), 8 * MIB);
        assert_eq!(backend.gets.load(SeqCst), 64);
    }

    #[tokio::test]
    async fn read_ahead_leaves_the_writers_share_of_memory() {
        let (_backend, mut p, data, memory) = setup(64 * MIB, 8 * MIB).await;
        let mut pos = 0u64;
        let mut min_available = u64::MAX;
        while pos < 64 * MIB {
            let b = p.read(pos, 128 * 1024).await.unwrap();
            assert_eq!(&b[..], &data[pos as usize..][..b.len()]);
            pos += b.len() as u64;
            min_available = min_available.min(memory.available_bytes());
        }
        assert!(min_available >= 2 * MIB, "read-ahead left only {min_available} bytes");
        assert!(min_available < 6 * MIB, "read-ahead should still use the rest: {min_available}");
    }
}
