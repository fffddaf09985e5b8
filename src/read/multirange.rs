//! Multi-range read-ahead for sparse readers (`--enable-multi-range`).
//!
//! # Design
//!
//! A [`MultiRangeReader`] sits in front of the [`Prefetcher`](super::Prefetcher)
//! of one open file. Every read is recorded in the handle's [`ReadPattern`];
//! while the recent reads are not sparse (see [`GapAnalysis::is_sparse`]) the
//! reader answers `None` and the ordinary sequential read-ahead serves the read.
//! When they are sparse, reads are served from *pieces*: ranges fetched by a
//! batched request, kept (downloading or downloaded) until read or evicted.
//! Batches come from two sources:
//!
//! - **Extrapolation**: when the recent reads follow a stride or a repeating
//!   cycle ([`ReadPattern::predict`]), the next reads up to twice a horizon are
//!   predicted ([`BATCHES_AHEAD`] batches, or [`PARALLEL_HORIZON`] ranges where
//!   batches are parallel single-range GETs), and as soon as `batch_size` of
//!   them are neither fetched nor downloading, up to a horizon of them are
//!   requested in the background. So the requests for the next batches are
//!   sent while the current one is still being read, and every request
//!   carries a full batch.
//! - **Coalescing of concurrent reads**: FUSE delivers the preads of several
//!   threads (or an async reader) on one file concurrently, each in its own
//!   task. A sparse read that misses while other reads of the handle are in
//!   flight opens a *collection window* ([`COALESCE_WINDOW`]): it becomes the
//!   leader, waits for the window, and meanwhile every other sparse miss joins
//!   its batch (until the batch holds `batch_size` ranges; a full batch ends
//!   the wait at once) instead of sending its own request. The leader then sends one request for the whole batch
//!   and wakes the joiners, which find their bytes in the new pieces. The first
//!   read of a burst arrives alone, so a handle that saw concurrent reads keeps
//!   opening windows for [`CONCURRENCY_MEMORY`] more reads; a handle that never
//!   did never waits: a lone random reader pays no window, and a lone strided
//!   reader is served by extrapolation. While reads are concurrent, their
//!   arrival order is noise, so a miss is coalesced rather than sent at once
//!   with extrapolated ranges.
//!
//! This is why the handle's state lock is *not* taken by these reads
//! (`FileHandle` finds this reader through a slot of its own): everything here
//! lives behind one `std::sync::Mutex` that is never held across an `.await`,
//! and the downloads are spawned tasks shared by all readers that want them.
//! (Reads this reader declines go to the prefetcher, which plans under the
//! handle's lock but awaits without it, so they do not queue either.)
//!
//! Wanted ranges are merged when closer than [`MERGE_GAP`] and split into
//! requests of at most `batch_size` ranges. How a batch is fetched is decided
//! by [`StorageBackend::multi_range_mode`], never by the backend's name:
//! `Native` sends one `get_ranges` call, `ParallelSingles` (S3
//! servers without multi-range, GCS, Azure) sends the batch's ranges as
//! concurrent single-range GETs: one round trip of wall time per batch, and
//! predicted reads are still fetched ahead. Concurrent misses are not
//! collected in that mode (each would cost its own request anyway, so the
//! collection window would only add latency): they go straight to the
//! ordinary path. `Probe` (an S3 server not asked yet) is served as plain
//! single-range reads, with nothing fetched ahead, while a probe
//! ([`StorageBackend::probe_multi_range`]: S3 sends a HEAD asking for two 1-byte
//! ranges), sent in the background the first time a handle reads sparsely (one
//! round trip before a batch needs it), finds out which of the two it is:
//! when the first batch was the probe, a single-range server made it cost two
//! round trips (the refused multi-range GET, then the batch's single GETs), and
//! concurrent readers lost a round trip to it. Only `Unsupported` (no backend
//! answers it today) turns the reader off, with one "flag ignored" line per mount.
//!
//! - **The whole lattice of a shuffled reader**: a reader of fixed-size records
//!   in random order (a sampler, a shuffled training epoch) has no stride, but
//!   its record starts lie on a lattice ([`ReadPattern::lattice`]). Once one is
//!   found and all its records fit [`LATTICE_MAX_BYTES`], every record not yet
//!   read is fetched, once, [`PARALLEL_HORIZON`] at a time, and kept until read:
//!   the reader's order no longer matters (issue 11: 200 shuffled 16 KiB reads
//!   cost a round trip each; s3fs streams 506 MiB through them instead). Fetching
//!   only the next few lattice points does not work for a random order: most
//!   reads then miss, and evicting unread records to make room refetches them.
//!   The lattice is looked for whether the reads come one at a time or from
//!   several threads at once: it does not depend on their order, so it is the one
//!   prediction that concurrent readers can use (issue 11: 8 threads preading 64
//!   shuffled records waited 8 round trips; once 12 records are seen, the rest are
//!   on their way).
//!
//! Where a batch is parallel single-range GETs, each range is its own download,
//! so a read waits for its own range, not for the slowest of its batch.
//! Downloads nobody is waiting for take a slot per range, [`PARALLEL_HORIZON`]
//! slots per handle; reads that wait go straight out.
//!
//! Predicted ranges are widened by the predictor to cover page-rounded kernel
//! reads (see [`ReadPattern::predict`]); a prediction that overlaps a piece
//! already fetched or downloading counts as present, so a re-estimate that
//! shifted by a page does not fetch the same record twice.
//!
//! **Failures never reach the application as new errors**: when a batch fails
//! (or returns a piece of the wrong length), each read that wanted bytes from
//! it is retried as its own pinned single-range read, so the application sees
//! exactly what single-range reads would have given it. Every request carries
//! `If-Match` with the ETag seen at open, like the prefetcher's.
//!
//! Pieces are bounded: at most [`MAX_PIECES_PER_BATCH`] batches' worth per
//! handle (oldest evicted first); read-ahead memory for predicted ranges is
//! reserved from the mount's [`MemoryLimiter`] with `try_reserve` (no memory,
//! no prediction), while ranges that reads are waiting for are fetched
//! regardless, as the prefetcher does.
//!
//! Counters ([`Metrics`]): `multi_range_parallel_batches` (batches of several
//! ranges sent as concurrent single-range reads), `multi_range_requests`
//! (requests that carried more than one range in one round trip), `multi_range_ranges` (ranges those
//! requests returned), `multi_range_requests_saved` (ranges minus requests:
//! the single-range requests they replaced) and `multi_range_bytes_overfetched`
//! (bytes fetched by batches that no read used, counted when a piece is
//! evicted or the file closed).

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::future::{BoxFuture, FutureExt, Shared};
use tokio::task::AbortHandle;
use tracing::Instrument;

use super::pattern::{merge_close, split_batches, ReadPattern, MERGE_GAP};
use super::prefetcher::{get_pinned, WRITER_SHARE};
use crate::backend::{BackendError, BackendResult, ErrorKind, GetOptions, MultiRangeMode, StorageBackend};
use crate::memory::{self, MemoryLimiter, Reservation};
use crate::metrics::Metrics;

const TARGET: &str = "bucketfs::read";

/// How long the leader of a batch of concurrent reads waits for others to join.
/// (Most of the time a batch fills up first: the window only bounds the wait of a partial one.)
pub const COALESCE_WINDOW: Duration = Duration::from_millis(4);
/// Reads without another read in flight before a handle stops waiting for company.
pub const CONCURRENCY_MEMORY: usize = 8;
/// Pieces kept per handle, in batches.
pub const MAX_PIECES_PER_BATCH: usize = 4;
/// Predicted reads kept in flight when batches are parallel single-range GETs. A
/// batch then saves no request, only round trips, so what pays is depth: a strided
/// reader at 20 ms round trip waits once per horizon instead of once per batch
/// (issue 11: 200 strided preads took 1.7 s with 5 ahead).
pub const PARALLEL_HORIZON: usize = 32;
/// Most bytes of lattice records fetched for one handle (issue 11's shuffled reader:
/// 200 records of 16 KiB, widened to pages and tolerance, about 7 MiB).
pub const LATTICE_MAX_BYTES: u64 = 32 * 1024 * 1024;
/// Most lattice records fetched for one handle.
pub const LATTICE_MAX_RECORDS: usize = 2048;
/// Batches in flight ahead of a strided reader where a batch is one request. One
/// batch ahead made the reader wait a round trip per batch (issue 11: 200 strided
/// preads through `bucketfs serve` at 20 ms took 1.13 s for 42 GETs); the requests
/// are the same, sent earlier.
pub const BATCHES_AHEAD: usize = 4;
/// How much wider than the next predicted read a later one may be and still be fetched.
const FAR_PREDICTION_SLACK: u64 = 32 * 1024;
/// Longest predicted range (reads are at most 1 MiB through FUSE; this bounds odd patterns).
const MAX_PREDICTED_LEN: u64 = 8 * 1024 * 1024;

/// `--enable-multi-range` tunables of one mount.
#[derive(Clone, Debug)]
pub struct MultiRangeConfig {
    /// Most ranges per request (`--multi-range-batch-size`, default 5).
    pub batch_size: usize,
    /// Smallest total gap worth skipping (`--multi-range-threshold`, default 1 MiB).
    pub threshold: u64,
    /// Shared by the clones of one mount's config: the "flag ignored" line is logged once.
    ignored_logged: Arc<AtomicBool>,
}

impl Default for MultiRangeConfig {
    fn default() -> Self {
        MultiRangeConfig::new(5, 1024 * 1024)
    }
}

impl MultiRangeConfig {
    pub fn new(batch_size: usize, threshold: u64) -> Self {
        MultiRangeConfig { batch_size: batch_size.max(1), threshold, ignored_logged: Arc::default() }
    }

    /// Whether `backend` batches sparse reads (every mode but `Unsupported`, which no
    /// backend reports today); if not, says once per mount that the flag is ignored.
    pub fn usable_with(&self, backend: &dyn StorageBackend) -> bool {
        if backend.capabilities().multi_range != MultiRangeMode::Unsupported {
            return true;
        }
        if !self.ignored_logged.swap(true, Ordering::Relaxed) {
            tracing::warn!(target: TARGET, backend = backend.capabilities().name,
                "--enable-multi-range ignored: this backend serves one range per request");
        }
        false
    }
}

type BatchFuture = Shared<BoxFuture<'static, BackendResult<Arc<Vec<Bytes>>>>>;

/// Aborts a batch's download when the last piece that wants it is dropped.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// One fetched (or downloading) range.
struct Piece {
    range: Range<u64>,
    batch: BatchFuture,
    /// Index of this range in its batch's answer.
    index: usize,
    /// Bytes of this piece handed to reads (capped at its length when counted).
    served: u64,
    /// A lattice record: kept until read, however many pieces come after it.
    lattice: bool,
    _abort: Arc<AbortOnDrop>,
    _reservation: Option<Arc<Reservation>>,
}

/// Concurrent misses collected by a leader during [`COALESCE_WINDOW`].
struct OpenBatch {
    /// Names the batch for its leader (a full batch stays open while a new one collects).
    id: u64,
    ranges: Vec<Range<u64>>,
    closed: Shared<BoxFuture<'static, ()>>,
    /// Wakes the leader when the batch is full.
    full: Arc<tokio::sync::Notify>,
}

struct State {
    pattern: ReadPattern,
    pieces: VecDeque<Piece>,
    /// Batches being collected; only the newest one takes joiners.
    open: Vec<OpenBatch>,
    next_batch_id: u64,
    /// The handle's lattice was fetched (once per handle: see the module header).
    lattice_fetched: bool,
    /// This handle sent a probe of the backend's multi-range support.
    probed: bool,
}

/// Counts the reads in flight on one handle (all of them, not only sparse ones).
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a sparse read does after looking at the state.
enum Step {
    /// A piece holds (or will hold) the bytes.
    Piece { batch: BatchFuture, index: usize, start: u64 },
    /// Wait for the leader's batch, then look again.
    Join(Shared<BoxFuture<'static, ()>>),
    /// Collect concurrent misses, then fetch them together.
    Lead(u64, tokio::sync::oneshot::Sender<()>, Arc<tokio::sync::Notify>),
    /// A single-range read of exactly the wanted bytes.
    Single,
}

/// Multi-range read-ahead of one open file, pinned to one object version.
pub struct MultiRangeReader {
    backend: Arc<dyn StorageBackend>,
    memory: MemoryLimiter,
    metrics: Arc<Metrics>,
    key: String,
    size: u64,
    etag: Option<String>,
    cfg: MultiRangeConfig,
    in_flight: AtomicUsize,
    /// Reads left before the handle counts as single-threaded again.
    concurrency: AtomicUsize,
    /// Downloads of predicted ranges in flight at once (see the module header).
    ahead: Arc<tokio::sync::Semaphore>,
    state: Mutex<State>,
}

impl MultiRangeReader {
    /// Reads of `key`, `size` bytes long, pinned to `etag` (empty = not pinned).
    pub fn new(
        backend: Arc<dyn StorageBackend>,
        memory: MemoryLimiter,
        metrics: Arc<Metrics>,
        key: String,
        size: u64,
        etag: String,
        cfg: MultiRangeConfig,
    ) -> Self {
        let cfg = MultiRangeConfig { batch_size: cfg.batch_size.max(1), ..cfg };
        MultiRangeReader {
            backend,
            memory,
            metrics,
            key,
            size,
            etag: (!etag.is_empty()).then_some(etag),
            cfg,
            in_flight: AtomicUsize::new(0),
            concurrency: AtomicUsize::new(0),
            ahead: Arc::new(tokio::sync::Semaphore::new(PARALLEL_HORIZON)),
            state: Mutex::new(State {
                pattern: ReadPattern::new(),
                pieces: VecDeque::new(),
                open: Vec::new(),
                next_batch_id: 0,
                lattice_fetched: false,
                probed: false,
            }),
        }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// Marks one read of the handle in flight until the guard is dropped.
    pub fn enter(&self) -> InFlight<'_> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) > 0 {
            self.concurrency.store(CONCURRENCY_MEMORY, Ordering::Relaxed);
        } else {
            let _ = self.concurrency.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |c| c.checked_sub(1));
        }
        InFlight(&self.in_flight)
    }

    /// Other reads are in flight, or were during the last few reads (the first
    /// read of a burst of concurrent reads arrives alone, and should wait too).
    fn concurrent(&self) -> bool {
        self.in_flight.load(Ordering::SeqCst) > 1 || self.concurrency.load(Ordering::Relaxed) > 0
    }

    /// Records a read served elsewhere (the first read of the file, by the prefetcher).
    pub fn note(&self, range: Range<u64>) {
        self.lock().pattern.record(range.start..range.end.min(self.size));
    }

    /// Bytes held in pieces (downloading or downloaded), for tests.
    pub fn buffered_bytes(&self) -> u64 {
        self.lock().pieces.iter().map(|p| p.range.end - p.range.start).sum()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Serves `len` bytes at `offset` when the handle reads sparsely; `None`
    /// means "not sparse (or nothing to batch): use the ordinary read path".
    pub async fn read(&self, offset: u64, len: u64) -> Option<BackendResult<Bytes>> {
        if offset >= self.size || len == 0 {
            return None;
        }
        if !self.cfg.usable_with(self.backend.as_ref()) {
            return None;
        }
        let want = offset..offset.saturating_add(len).min(self.size);
        let mut joined = false;
        loop {
            let step = {
                let mut st = self.lock();
                if !joined {
                    st.pattern.record(want.clone());
                }
                let sparse = st.pattern.analysis().is_sparse(self.cfg.threshold);
                if sparse && !st.probed {
                    st.probed = true;
                    self.probe();
                }
                if sparse {
                    // with other reads in flight, arrival order is noise: coalesce them instead
                    let concurrent = self.concurrent();
                    self.extrapolate(&mut st, &want, !concurrent);
                }
                if let Some(step) = Self::find_piece(&mut st, &want) {
                    step
                } else if joined {
                    // the batch did not cover this range (it failed to start, or was full)
                    Step::Single
                } else if !sparse {
                    return None;
                } else if let Some(open) = st.open.last_mut().filter(|o| o.ranges.len() < self.cfg.batch_size)
                {
                    open.ranges.push(want.clone());
                    if open.ranges.len() >= self.cfg.batch_size {
                        open.full.notify_one();
                    }
                    Step::Join(open.closed.clone())
                } else if self.concurrent() && !self.parallel_singles() {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let closed = rx.map(|_| ()).boxed().shared();
                    let full = Arc::new(tokio::sync::Notify::new());
                    let id = st.next_batch_id;
                    st.next_batch_id += 1;
                    st.open.push(OpenBatch { id, ranges: vec![want.clone()], closed, full: full.clone() });
                    Step::Lead(id, tx, full)
                } else {
                    // sparse but nothing to batch it with (or batching would not save a
                    // request): a plain single-range read, now
                    return None;
                }
            };
            match step {
                Step::Piece { batch, index, start } => {
                    return Some(self.serve(batch, index, start, &want).await)
                }
                Step::Single => return Some(self.single(want).await),
                Step::Join(closed) => {
                    closed.await;
                    joined = true;
                }
                Step::Lead(id, tx, full) => {
                    if self.cfg.batch_size > 1 {
                        let _ = tokio::time::timeout(COALESCE_WINDOW, full.notified()).await;
                    }
                    {
                        let mut st = self.lock();
                        let ranges = match st.open.iter().position(|o| o.id == id) {
                            Some(i) => st.open.remove(i).ranges,
                            None => Vec::new(),
                        };
                        tracing::debug!(target: TARGET, key = %self.key, reads = ranges.len(),
                            "coalesced concurrent sparse reads");
                        self.fetch(&mut st, &ranges, true);
                    }
                    let _ = tx.send(());
                    joined = true;
                }
            }
        }
    }

    /// Starts a background batch for predicted reads once a full batch of them is
    /// missing; with `ride_along`, a missing `want` is fetched with the predictions.
    fn extrapolate(&self, st: &mut State, want: &Range<u64>, ride_along: bool) {
        // nothing is fetched ahead until the probe has answered: read-ahead sent as
        // single GETs meanwhile cost a strided reader 32 GETs that a multi-range
        // server would have answered in 7
        if self.probing() {
            return;
        }
        let horizon = self.horizon();
        let predicted = st.pattern.predict(2 * horizon, self.size);
        // a lattice does not depend on arrival order, so concurrent readers (8 threads
        // preading shuffled records of one file: issue 11) find it too
        if predicted.is_empty() && !st.lattice_fetched {
            self.fetch_lattice(st, want);
        }
        // a prediction's margin grows with its distance and shrinks as the pattern
        // lasts: far ones are fetched once they are nearly as tight as the next one
        // (4 batches ahead on a young stride fetched 4 MB for 1 MB of records)
        let tight = predicted.first().map_or(0, |r| r.end - r.start) + FAR_PREDICTION_SLACK;
        let missing: Vec<Range<u64>> = predicted
            .into_iter()
            .take_while(|r| r.end - r.start <= tight)
            .map(|r| r.start..r.end.min(r.start + MAX_PREDICTED_LEN))
            .filter(|r| r != want && !st.pieces.iter().any(|p| overlaps(&p.range, r)))
            .collect();
        // the current read, when it misses, rides along with the first batch
        let current_missing = !st.pieces.iter().any(|p| covers(&p.range, want));
        if ride_along && current_missing && !missing.is_empty() {
            let mut ranges = vec![want.clone()];
            ranges.extend(missing.into_iter().take(horizon - 1));
            self.fetch(st, &ranges, true);
        } else if missing.len() >= self.cfg.batch_size {
            let n = missing.len().min(horizon);
            self.fetch(st, &missing[..n], false);
        }
    }

    /// Every record of the lattice the recent reads lie on that no piece holds yet,
    /// `want` first when it misses, if they all fit [`LATTICE_MAX_BYTES`].
    fn fetch_lattice(&self, st: &mut State, want: &Range<u64>) {
        let Some(lattice) = st.pattern.lattice() else { return };
        // numbered from the lowest start seen: the file's first records have negative numbers
        let (first, last) = (lattice.index_of(0) - 1, lattice.index_of(self.size.saturating_sub(1)) + 1);
        if last - first >= LATTICE_MAX_RECORDS as i64 {
            return;
        }
        let records: Vec<Range<u64>> = (first..=last).filter_map(|k| lattice.record(k, self.size)).collect();
        let bytes: u64 = records.iter().map(|r| r.end - r.start).sum();
        if bytes > LATTICE_MAX_BYTES {
            return;
        }
        st.lattice_fetched = true;
        let held = |r: &Range<u64>| st.pieces.iter().any(|p| covers(&p.range, r));
        let want_missing = !held(want);
        // records read already are not fetched again: a shuffled reader visits each once
        let read = |r: &Range<u64>| st.pattern.records().any(|seen| overlaps(seen, r));
        let ahead: Vec<Range<u64>> =
            records.into_iter().filter(|r| !held(r) && !read(r) && !overlaps(r, want)).collect();
        tracing::debug!(target: TARGET, key = %self.key, stride = lattice.stride, records = ahead.len(), bytes,
            "shuffled records on a lattice: fetching all of them");
        if want_missing {
            // the current read, whether or not it is on the lattice, waits for its own GET
            self.fetch(st, std::slice::from_ref(want), true);
        }
        self.fetch_pieces(st, &ahead, false, true);
    }

    /// On a backend that has not found out yet whether it answers multi-range GETs
    /// (S3 servers), asks about two 1-byte ranges ([`StorageBackend::probe_multi_range`],
    /// a HEAD on S3) in the background, as soon as the handle reads sparsely.
    /// Until it answers, reads go out singly and nothing is fetched ahead (see the
    /// module header): issue 11's 8 threads waited 85 ms for a round of reads that
    /// was the probe instead of 35. A probe that fails (the connection broke) leaves
    /// the backend unprobed: this handle keeps reading singly, the next one probes.
    /// Both ranges lie in the first 64 KiB of the object, so a server that answers a
    /// GET probe (Alibaba OSS) with the whole object serves them from its first bytes;
    /// they are apart, so a server that joins neighbouring ranges into one still has to
    /// answer with two.
    fn probe(&self) {
        if !self.probing() || self.size < 3 {
            return;
        }
        let second = self.size.min(65537) - 1;
        let probe = [0..1, second..second + 1];
        let (backend, key) = (self.backend.clone(), self.key.clone());
        let opts = GetOptions { if_match: self.etag.clone() };
        let span = tracing::debug_span!(target: TARGET, "multi_range_probe", key = %key);
        tokio::spawn(
            async move {
                if let Err(e) = backend.probe_multi_range(&key, &probe, &opts).await {
                    tracing::debug!(target: TARGET, error = %e, "multi-range probe failed");
                }
            }
            .instrument(span),
        );
    }

    /// The backend does not know yet whether it answers multi-range GETs.
    fn probing(&self) -> bool {
        self.backend.capabilities().multi_range == MultiRangeMode::Probe
    }

    /// Whether a batch is fetched as parallel single-range GETs (asked each time: an
    /// S3 backend's mode changes once its probe has answered; until then, singles
    /// cost no round trip more than a multi-range GET would).
    fn parallel_singles(&self) -> bool {
        matches!(
            self.backend.capabilities().multi_range,
            MultiRangeMode::ParallelSingles | MultiRangeMode::Probe
        )
    }

    /// Predicted reads fetched ahead: one batch where a batch is one request, a
    /// deeper window where it is parallel single-range GETs anyway.
    fn horizon(&self) -> usize {
        if self.parallel_singles() {
            PARALLEL_HORIZON.max(self.cfg.batch_size)
        } else {
            BATCHES_AHEAD * self.cfg.batch_size
        }
    }

    /// Fetches `ranges` (merged, in batches); `demanded`: a read waits for them
    /// (fetched even without a memory reservation).
    fn fetch(&self, st: &mut State, ranges: &[Range<u64>], demanded: bool) {
        self.fetch_pieces(st, ranges, demanded, false)
    }

    /// [`fetch`](Self::fetch); `lattice`: the pieces are kept until read.
    fn fetch_pieces(&self, st: &mut State, ranges: &[Range<u64>], demanded: bool, lattice: bool) {
        let merged = merge_close(ranges, MERGE_GAP);
        let singles = self.parallel_singles();
        if singles && merged.len() > 1 {
            Metrics::inc(&self.metrics.multi_range_parallel_batches);
        }
        // predictions reach twice a horizon ahead: room for all of them and a batch
        let max_pieces =
            (MAX_PIECES_PER_BATCH * self.cfg.batch_size).max(2 * self.horizon() + self.cfg.batch_size);
        // parallel singles: one download per range, so a read waits only for its own
        for batch in split_batches(&merged, if singles { 1 } else { self.cfg.batch_size }) {
            let bytes: u64 = batch.iter().map(|r| r.end - r.start).sum();
            let reservation = self.reserve(bytes).map(Arc::new);
            if reservation.is_none() && !demanded {
                tracing::debug!(target: TARGET, key = %self.key, bytes, "no memory for multi-range read-ahead");
                return;
            }
            let fetch = fetch_batch(
                self.backend.clone(),
                self.metrics.clone(),
                self.key.clone(),
                batch.clone(),
                self.etag.clone(),
            );
            // reads waiting go out at once; read-ahead takes a slot per range (a
            // probing backend answers a batch with one GET per range on a single-range
            // server: one slot per batch let 32 batches send 152 GETs at once)
            let slots = (!demanded).then(|| (self.ahead.clone(), batch.len().min(PARALLEL_HORIZON) as u32));
            let fetch = async move {
                let _slot = match slots {
                    Some((s, n)) => Some(
                        s.acquire_many_owned(n).await.map_err(|e| BackendError::wrap(ErrorKind::Other, e))?,
                    ),
                    None => None,
                };
                fetch.await
            };
            // the download holds the memory too, until its (maybe cancelled) work ends
            let task = tokio::spawn(memory::covering(reservation.clone(), fetch));
            let abort = Arc::new(AbortOnDrop(task.abort_handle()));
            let shared: BatchFuture = async move {
                match task.await {
                    Ok(res) => res.map(Arc::new),
                    Err(e) => {
                        Err(BackendError::other(format!("multi-range task failed: {e}")).with_source(e))
                    }
                }
            }
            .boxed()
            .shared();
            for (index, range) in batch.into_iter().enumerate() {
                Self::evict(st, max_pieces, |old| self.account_overfetch(old));
                st.pieces.push_back(Piece {
                    range,
                    batch: shared.clone(),
                    index,
                    served: 0,
                    lattice,
                    _abort: abort.clone(),
                    _reservation: reservation.clone(),
                });
            }
        }
    }

    /// Makes room for one more piece among at most `max`: the oldest piece already
    /// read goes first, then the oldest; lattice records not read yet do not count
    /// (their number is bounded by [`LATTICE_MAX_RECORDS`] when they are fetched).
    /// (Evicting by age alone dropped predictions the reader had not reached yet
    /// once 4 batches were kept ahead, and it read them singly.)
    fn evict(st: &mut State, max: usize, mut evicted: impl FnMut(&Piece)) {
        let evictable = |p: &Piece| !p.lattice || p.served > 0;
        while st.pieces.iter().filter(|p| evictable(p)).count() >= max {
            let read = st.pieces.iter().position(|p| p.served > 0);
            let Some(i) = read.or_else(|| st.pieces.iter().position(evictable)) else { break };
            if let Some(old) = st.pieces.remove(i) {
                evicted(&old);
            }
        }
    }

    /// The piece holding all of `want`, counted as served.
    fn find_piece(st: &mut State, want: &Range<u64>) -> Option<Step> {
        let piece = st.pieces.iter_mut().rev().find(|p| covers(&p.range, want))?;
        piece.served = piece.served.saturating_add(want.end - want.start);
        Some(Step::Piece { batch: piece.batch.clone(), index: piece.index, start: piece.range.start })
    }

    /// `want` out of a batch's answer; on any failure, a single-range read of `want`.
    async fn serve(
        &self,
        batch: BatchFuture,
        index: usize,
        start: u64,
        want: &Range<u64>,
    ) -> BackendResult<Bytes> {
        match batch.await {
            Ok(parts) => {
                if let Some(data) = parts.get(index) {
                    let (s, e) = ((want.start - start) as usize, (want.end - start) as usize);
                    if e <= data.len() {
                        return Ok(data.slice(s..e));
                    }
                }
                tracing::debug!(target: TARGET, key = %self.key, "multi-range answer too short; reading singly");
            }
            Err(e) => {
                tracing::debug!(target: TARGET, key = %self.key, error = %e, "multi-range request failed; reading singly");
            }
        }
        self.single(want.clone()).await
    }

    async fn single(&self, want: Range<u64>) -> BackendResult<Bytes> {
        get_pinned(self.backend.clone(), self.key.clone(), want, self.etag.clone()).await
    }

    fn reserve(&self, bytes: u64) -> Option<Reservation> {
        let headroom = self.memory.limit_bytes() / WRITER_SHARE;
        if self.memory.available_bytes() < bytes.saturating_add(headroom) {
            return None;
        }
        self.memory.try_reserve(bytes)
    }

    fn account_overfetch(&self, piece: &Piece) {
        let len = piece.range.end - piece.range.start;
        Metrics::add(&self.metrics.multi_range_bytes_overfetched, len.saturating_sub(piece.served));
    }
}

impl Drop for MultiRangeReader {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        let pieces = std::mem::take(&mut st.pieces);
        for p in &pieces {
            self.account_overfetch(p);
        }
    }
}

fn covers(outer: &Range<u64>, inner: &Range<u64>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end
}

fn overlaps(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

/// One batch: a single `get_ranges` request where the backend has one (or is
/// probing), concurrent single-range reads otherwise. Every part must have
/// exactly the requested length.
async fn fetch_batch(
    backend: Arc<dyn StorageBackend>,
    metrics: Arc<Metrics>,
    key: String,
    ranges: Vec<Range<u64>>,
    etag: Option<String>,
) -> BackendResult<Vec<Bytes>> {
    let mode = backend.capabilities().multi_range;
    let span = tracing::debug_span!(target: TARGET, "multi_range", key = %key, ranges = ranges.len(), ?mode);
    let parts = async {
        match mode {
            // (a batch of several ranges is only made for a `Native` backend: see parallel_singles)
            MultiRangeMode::Native if ranges.len() > 1 => {
                let opts = GetOptions { if_match: etag };
                let parts = backend.get_ranges(&key, &ranges, &opts).await?;
                let n = ranges.len() as u64;
                Metrics::inc(&metrics.multi_range_requests);
                Metrics::add(&metrics.multi_range_ranges, n);
                Metrics::add(&metrics.multi_range_requests_saved, n - 1);
                Ok(parts)
            }
            _ => {
                if ranges.len() > 1 {
                    Metrics::inc(&metrics.multi_range_parallel_batches);
                }
                let reads =
                    ranges.iter().map(|r| get_pinned(backend.clone(), key.clone(), r.clone(), etag.clone()));
                futures::future::try_join_all(reads).await
            }
        }
    }
    .instrument(span)
    .await?;
    if parts.len() != ranges.len()
        || parts.iter().zip(&ranges).any(|(p, r)| p.len() as u64 != r.end - r.start)
    {
        return Err(BackendError::io(format!("{key:?}: multi-range answer with parts of the wrong length")));
    }
    Ok(parts)
}

#[cfg(test)]
#[path = "multirange_tests.rs"]
mod tests;
