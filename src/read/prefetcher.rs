//! Sequential read-ahead for one open file, pinned to one object version.
//!
//! # Design
//!
//! The prefetcher keeps a queue of *chunks*: contiguous, ascending byte ranges
//! of the object, each either a running ranged GET (a spawned task, so chunks
//! download in parallel) or the bytes it returned. Every read is classified:
//!
//! - **Sequential**: it starts at most [`SEQUENTIAL_SLACK`] after where the
//!   previous read ended, or inside the chunks already queued (the kernel may
//!   reorder or skip a little). Chunks wholly behind the read (by more than
//!   [`KEEP_BEHIND`], which absorbs small backward reorders) are dropped, and
//!   when less than half a window is queued ahead of the read, the queue is
//!   topped up to one window past the read and the window doubles, from
//!   `initial_window` (1 MiB) up to `max_window` (`--read-ahead`). A top-up is
//!   split into requests of at most `request_size` (8 MiB) that run
//!   concurrently, so a large window becomes several parallel ranged GETs.
//! - **Random**: anything else. The queue is dropped, the window goes back to
//!   its initial size, and exactly the requested range is fetched. If the next
//!   read continues where this one ended, read-ahead starts again from there.
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
//! Reservations live as long as their chunk.
//!
//! Every GET carries `If-Match` with the ETag seen at open: if the object is
//! replaced while the file is open, reads fail with an I/O error instead of
//! returning a mix of two versions. Reads at or past the end return nothing.
//! Dropping the prefetcher cancels its running requests and frees its buffers.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::backend::{BackendError, BackendResult, GetOptions, StorageBackend};
use crate::memory::{MemoryLimiter, Reservation};

const TARGET: &str = "bucketfs::read";
const MIB: u64 = 1024 * 1024;

/// How far from the previous read's end a read still counts as sequential.
pub const SEQUENTIAL_SLACK: u64 = 256 * 1024;
/// Consumed bytes kept behind the read position, so reordered reads still hit.
pub const KEEP_BEHIND: u64 = MIB;
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

enum ChunkState {
    Pending(JoinHandle<BackendResult<Bytes>>),
    Ready(Bytes),
}

struct Chunk {
    range: Range<u64>,
    state: ChunkState,
    _reservation: Option<Reservation>,
}

impl Chunk {
    async fn data(&mut self) -> BackendResult<Bytes> {
        if let ChunkState::Pending(handle) = &mut self.state {
            let data = handle.await.map_err(|e| BackendError::Other(format!("read task failed: {e}")))??;
            if data.len() as u64 != self.range.end - self.range.start {
                // with a pinned ETag this means a misbehaving server: never return a hole as data
                return Err(BackendError::Io(format!(
                    "short read: {} of {} bytes",
                    data.len(),
                    self.range.end - self.range.start
                )));
            }
            self.state = ChunkState::Ready(data);
        }
        match &self.state {
            ChunkState::Ready(d) => Ok(d.clone()),
            ChunkState::Pending(_) => Err(BackendError::Other("chunk not ready".into())),
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if let ChunkState::Pending(h) = &self.state {
            h.abort();
        }
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

    /// Up to `len` bytes at `offset`; empty at or past the end.
    pub async fn read(&mut self, offset: u64, len: u64) -> BackendResult<Bytes> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let end = offset.saturating_add(len).min(self.size);
        let res = self.read_inner(offset, end).await;
        if res.is_err() {
            // forget everything: a retry starts from scratch instead of hitting a failed chunk
            self.chunks.clear();
            self.window = self.cfg.initial_window.max(1);
            self.last_end = None;
        } else {
            self.last_end = Some(end);
        }
        res
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

    async fn read_inner(&mut self, offset: u64, end: u64) -> BackendResult<Bytes> {
        if self.size <= self.cfg.initial_window && self.chunks.is_empty() {
            let reservation = self.reserve_read_ahead(self.size);
            self.spawn_chunk(0..self.size, reservation);
        } else if self.is_sequential(offset) {
            while self.chunks.front().is_some_and(|c| c.range.end.saturating_add(KEEP_BEHIND) <= offset) {
                self.chunks.pop_front();
            }
            if self.chunks.back().is_some_and(|c| c.range.end < offset) {
                // skipped forward past everything queued
                self.chunks.clear();
            }
            self.top_up(offset, end);
        } else {
            tracing::debug!(target: TARGET, key = %self.key, offset, "random read: read-ahead reset");
            self.chunks.clear();
            self.window = self.cfg.initial_window.max(1);
            self.spawn_chunk(offset..end, None);
        }
        self.assemble(offset, end).await
    }

    /// Queues requests so that at least `end` and, memory allowing, one window past it are covered.
    fn top_up(&mut self, offset: u64, end: u64) {
        let queued_end = self.chunks.back().map_or(offset, |c| c.range.end);
        if queued_end >= end && queued_end - end >= self.window / 2 {
            return;
        }
        let target = end.saturating_add(self.window).min(self.size);
        let total = target.saturating_sub(queued_end);
        if total == 0 {
            return;
        }
        let request_size = self.cfg.request_size.max(1);
        let pieces = total.div_ceil(request_size);
        let piece = total.div_ceil(pieces);
        let mut start = queued_end;
        let mut complete = true;
        while start < target {
            let stop = (start + piece).min(target);
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

    fn spawn_chunk(&mut self, range: Range<u64>, reservation: Option<Reservation>) {
        let handle = self.fetch(range.clone());
        self.chunks.push_back(Chunk { range, state: ChunkState::Pending(handle), _reservation: reservation });
    }

    /// Starts one pinned ranged GET in the background.
    fn fetch(&self, range: Range<u64>) -> JoinHandle<BackendResult<Bytes>> {
        let task = get_pinned(self.backend.clone(), self.key.clone(), range, self.etag.clone());
        tokio::spawn(task)
    }

    /// Copies `offset..end` out of the queued chunks, fetching directly what lies before them.
    async fn assemble(&mut self, offset: u64, end: u64) -> BackendResult<Bytes> {
        let mut pieces: Vec<Bytes> = Vec::new();
        let mut pos = offset;
        let front = self.chunks.front().map_or(end, |c| c.range.start);
        if pos < front {
            // a read just before the queue (reordered backwards): fetch it on its own
            let stop = front.min(end);
            let handle = self.fetch(pos..stop);
            let mut chunk =
                Chunk { range: pos..stop, state: ChunkState::Pending(handle), _reservation: None };
            pieces.push(chunk.data().await?);
            pos = stop;
        }
        for chunk in self.chunks.iter_mut() {
            if pos >= end {
                break;
            }
            if chunk.range.end <= pos {
                continue;
            }
            if chunk.range.start > pos {
                break;
            }
            let data = chunk.data().await?;
            let stop = chunk.range.end.min(end);
            pieces.push(data.slice((pos - chunk.range.start) as usize..(stop - chunk.range.start) as usize));
            pos = stop;
        }
        if pos < end {
            return Err(BackendError::Other(format!("read-ahead gap at {pos} in {}", self.key)));
        }
        if pieces.len() == 1 {
            return Ok(pieces.pop().unwrap_or_default());
        }
        let mut out = BytesMut::with_capacity((end - offset) as usize);
        for p in pieces {
            out.extend_from_slice(&p);
        }
        Ok(out.freeze())
    }
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
            BackendError::PreconditionFailed(_) => {
                BackendError::Io(format!("{key} changed on the server while open"))
            }
            e => e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::SeqCst;

    use super::*;
    use crate::backend::PutOptions;
    use crate::upload::test_backend::InstrumentedBackend;

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
        assert_eq!(p.buffered_bytes(), 1000, "older read-ahead dropped");
        // let already-started read-ahead requests finish before counting
        tokio::task::yield_now().await;
        assert!(backend.get_bytes.load(SeqCst) - before <= 1000 + 16 * MIB);
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
