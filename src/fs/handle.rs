//! Open file handles: reads through read-ahead, writes streamed or spooled, committed on flush.
//!
//! # Design
//!
//! A handle's content is in one of three states ([`Content`]):
//!
//! - **Remote**: no local copy. Reads go through a [`Prefetcher`] pinned to the
//!   ETag of the committed object (`base`), or return nothing when the content
//!   is empty (new file, `O_TRUNC`, `set_len(0)`).
//! - **Streaming**: the content was empty (no object yet, or an empty one: a
//!   new file committed at its opener's first close) and the writes so far were
//!   sequential. They go to a [`StreamingUpload`] (parts uploaded in the
//!   background, memory bounded by `--memory-limit`) and to **no local disk**
//!   for a write-only handle, so a 100 GiB `cp` needs no 100 GiB cache. Writes
//!   and truncations away from the end are served by the upload itself where
//!   it still holds the bytes in memory: the part being buffered, the first
//!   part (rewriting a header at offset 0 after the data is the common case),
//!   the most recent parts up to 1/16 of `--memory-limit` (64 MiB by default;
//!   a zip writer filling in the entry it just wrote, a muxer patching its
//!   index) while at least half the memory budget is free, or a gap of at most
//!   one part after the end, filled with zeros. Patched parts are sent again at
//!   commit under their part numbers.
//!   On a backend that can read a part of an unfinished upload back
//!   (`Capabilities::readable_upload_parts`: the embedded store and GCS), a
//!   write into an uploaded part no longer in memory reads that part back into
//!   the memory budget, patches it and re-sends it at commit, so a write-only
//!   handle rewrites anywhere with no local disk; if the budget cannot hold
//!   the part even after this handle's own patched parts are sent and let go,
//!   the write is refused as below, and a failed read back fails just that
//!   write (EIO) with the upload intact.
//!   Otherwise (S3, Azure) a write-only handle refuses any other
//!   non-sequential write (into bytes uploaded and no longer in memory), and
//!   on every backend a truncation below the part being filled, with EINVAL,
//!   and nothing written before is lost. On S3 and Azure this cannot be
//!   served without keeping every byte twice: the parts of an unfinished
//!   multipart upload cannot be read back, and it can only be completed under
//!   the key it was created with, so finishing it somewhere hidden to fetch
//!   it back would need every stream created under a temporary key and copied
//!   server side to its name at every commit (a second full write of every
//!   file; no backend has a native rename), while completing it under the
//!   file's own name would show a partial file.
//!   A **read-write** handle may read back what it wrote, so it also tees its
//!   writes into a [`SpoolFile`] while the cache disk has room; with the tee,
//!   any other pattern (a write elsewhere, a `set_len`, a rename while open,
//!   upload options that differ at commit) aborts the multipart upload and
//!   continues from the spool, which holds every byte. A tee write that fails
//!   (full cache disk) drops the tee and the handle goes on as a write-only one
//!   (with the first part and the buffered one held in memory, not the recent
//!   ones; parts are read back where the backend can).
//! - **Spooled**: the whole content is in a local spool file. Entered on the
//!   first write or `set_len` that is not a stream from an empty file (an
//!   append to or overwrite of an existing object, a truncate of a committed
//!   file); an existing object's content is fetched into the spool at that
//!   moment (pinned to its ETag, several ranged GETs at a time). Committed with
//!   `put` or a part-by-part multipart upload read from disk.
//!
//! Nothing is visible on the backend until [`FileHandle::commit`]. A failed
//! part upload or commit of a stream aborts its multipart upload and the
//! handle's new content is lost: later writes and commits report the failure
//! (EIO) and the object keeps its old content. A failed commit of spooled
//! content leaves it dirty in the spool, so a later commit (another fsync, or
//! release) can retry. After a successful commit of spooled content the spool
//! stays as the handle's clean copy; after a stream the content is the new
//! object again (remote).
//!
//! Multipart uploads take their content type and user metadata when they are
//! created, before the commit's [`PutOptions`] are known: streaming uploads use
//! the options set with [`FileHandle::set_upload_options`] (default: those of
//! the object opened, then those of the last commit). If `commit` is given
//! different options once the multipart upload exists, the streamed upload is
//! aborted and the spool uploaded with the right ones: correct, but it sends
//! the file twice. (Files smaller than a part are unaffected: they are only
//! `put` at commit, with the commit's options and current key.)
//!
//! Locking: one `tokio::sync::Mutex` per handle guards the state. Writes,
//! truncation and commits hold it across their backend calls; reads never do:
//! a remote read takes it only to let the prefetcher plan the read (classify it,
//! queue read-ahead, start requests) and awaits the planned requests after
//! releasing it, and sparse reads with `--enable-multi-range` do not take it at
//! all, so concurrent reads of one file reach the backend concurrently. A read
//! that races with a write may return the bytes from before the write. Reads of
//! local content (the spool) are served under the lock. `size`, `is_dirty` and
//! `set_key` are synchronous, so they use atomics and a std mutex that is never
//! held across an `.await`.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tracing::Instrument;

use crate::backend::{BackendError, BackendResult, ObjectMeta, PutOptions, StorageBackend};
use crate::memory::MemoryLimiter;
use crate::metrics::Metrics;
use crate::read::{get_pinned, MultiRangeConfig, MultiRangeReader, PrefetchConfig, Prefetcher};
use crate::upload::streaming::Rewrite;
use crate::upload::{SpoolFile, StreamingUpload, UploadParams};

/// Size of the ranged GETs that copy an existing object into a spool file.
const SPOOL_FETCH_SIZE: u64 = 8 * 1024 * 1024;

/// A stream without a local copy keeps its most recent parts, up to this share of
/// `--memory-limit` (64 MiB of the default 1 GiB), for writers that seek back.
const RECENT_PARTS_SHARE: u64 = 16;

/// Tunables of file handles, from the command line.
#[derive(Clone, Debug)]
pub struct HandleConfig {
    /// First multipart part size (`--part-size`, default 8 MiB); grows so files can reach the backend's max size.
    pub part_size: u64,
    /// Largest read-ahead window (`--read-ahead`, default 64 MiB).
    pub read_ahead: u64,
    /// Parts uploaded concurrently per file.
    pub max_parts_in_flight: usize,
    /// Directory for spool files of random writes (created if missing).
    pub spool_dir: PathBuf,
    /// `--enable-multi-range` and its tunables; None when off.
    pub multi_range: Option<MultiRangeConfig>,
}

/// Shared by all handles of one mount.
pub struct HandleContext {
    pub backend: Arc<dyn StorageBackend>,
    pub memory: MemoryLimiter,
    pub metrics: Arc<Metrics>,
    pub cfg: HandleConfig,
}

/// How the file was opened.
#[derive(Clone, Copy, Debug, Default)]
pub struct OpenMode {
    pub read: bool,
    pub write: bool,
    /// O_TRUNC, or a newly created file: the old content is discarded.
    pub truncate: bool,
    pub append: bool,
}

/// Where a handle's current content lives (see the module docs).
enum Content {
    Remote,
    /// `tee`: a local copy of every byte, kept for read-write handles while the disk has room.
    Streaming {
        upload: Box<StreamingUpload>,
        tee: Option<SpoolFile>,
    },
    Spooled(SpoolFile),
}

struct State {
    content: Content,
    /// The object shown while `Remote`; None means empty content.
    base: Option<ObjectMeta>,
    /// The object last known to be stored under the key; restored by `discard`.
    committed: Option<ObjectMeta>,
    prefetcher: Option<Prefetcher>,
    /// Options streaming uploads are created with.
    upload_opts: PutOptions,
    /// Why the new content was lost (a stream's part upload or commit failed):
    /// reported by every later write and commit until the content is replaced.
    lost: Option<BackendError>,
}

/// One open file. All methods take `&self`: FUSE calls arrive on several threads.
pub struct FileHandle {
    ctx: Arc<HandleContext>,
    mode: OpenMode,
    upload: UploadParams,
    key: std::sync::Mutex<String>,
    size: AtomicU64,
    dirty: AtomicBool,
    state: tokio::sync::Mutex<State>,
    /// Sparse-read batching in front of the prefetcher (`--enable-multi-range`) for
    /// the current remote content. Outside `state` so that a read can reach it
    /// without queueing behind the prefetcher's lock (which would reorder the
    /// sequential reads the prefetcher sees); set and cleared under `state`.
    multi_range: std::sync::Mutex<Option<Arc<MultiRangeReader>>>,
}

/// Metadata-only options (conditions apply to one commit, not to later generations).
fn metadata_of(opts: &PutOptions) -> PutOptions {
    PutOptions {
        content_type: opts.content_type.clone(),
        user_metadata: opts.user_metadata.clone(),
        ..Default::default()
    }
}

fn same_options(a: &PutOptions, b: &PutOptions) -> bool {
    a.content_type == b.content_type
        && a.user_metadata == b.user_metadata
        && a.if_match == b.if_match
        && a.if_none_match_any == b.if_none_match_any
}

impl FileHandle {
    /// `existing`: the object's metadata when it exists (None for a new file).
    pub fn open(ctx: Arc<HandleContext>, key: String, existing: Option<ObjectMeta>, mode: OpenMode) -> Self {
        let upload = UploadParams::new(
            ctx.backend.clone(),
            ctx.memory.clone(),
            ctx.cfg.part_size,
            ctx.cfg.max_parts_in_flight,
        );
        let base = if mode.truncate { None } else { existing.clone() };
        // a new file, or a truncation of a non-empty one, must be stored even if nothing is written
        let dirty = mode.write && existing.as_ref().is_none_or(|m| mode.truncate && m.size > 0);
        let upload_opts = existing.as_ref().map_or_else(PutOptions::default, |m| PutOptions {
            content_type: m.content_type.clone(),
            user_metadata: m.user_metadata.clone(),
            ..Default::default()
        });
        FileHandle {
            size: AtomicU64::new(base.as_ref().map_or(0, |m| m.size)),
            dirty: AtomicBool::new(dirty),
            key: std::sync::Mutex::new(key),
            state: tokio::sync::Mutex::new(State {
                content: Content::Remote,
                base,
                committed: existing,
                prefetcher: None,
                upload_opts,
                lost: None,
            }),
            multi_range: std::sync::Mutex::new(None),
            ctx,
            mode,
            upload,
        }
    }

    fn current_key(&self) -> String {
        self.key.lock().map(|k| k.clone()).unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Reads up to `size` bytes at `offset`; sees this handle's own unflushed writes.
    pub async fn read(&self, offset: u64, size: u32) -> BackendResult<Bytes> {
        // Sparse reads are served without the state lock, so that concurrent
        // reads can be batched (see read::multirange); the others take it only
        // to plan their requests, which they await after releasing it.
        let sparse = self.multi_range_reader();
        let _in_flight = sparse.as_ref().map(|r| r.enter());
        if let Some(reader) = &sparse {
            if let Some(res) = reader.read(offset, size as u64).await {
                return res;
            }
        }
        let plan = {
            let mut st = self.state.lock().await;
            let st = &mut *st;
            match &st.content {
                Content::Streaming { tee: Some(spool), .. } | Content::Spooled(spool) => {
                    return spool.read_at(offset, size as u64).await;
                }
                Content::Streaming { upload, tee: None } => {
                    return upload.read_at(offset..offset.saturating_add(size as u64)).ok_or_else(|| {
                        BackendError::invalid_argument(
                            "this handle streams its writes: bytes already uploaded cannot be read back \
                             before the file is closed (open it read-write to keep a local copy)",
                        )
                    });
                }
                Content::Remote => {
                    let Some(base) = &st.base else { return Ok(Bytes::new()) };
                    let key = self.current_key();
                    if sparse.is_none() {
                        self.start_multi_range(&key, base, offset..offset.saturating_add(size as u64));
                    }
                    let prefetcher = match &mut st.prefetcher {
                        Some(p) if p.key() == key => p,
                        slot => slot.insert(Prefetcher::new(
                            self.ctx.backend.clone(),
                            self.ctx.memory.clone(),
                            key,
                            base.size,
                            base.etag.clone(),
                            PrefetchConfig::with_max_window(self.ctx.cfg.read_ahead),
                        )),
                    };
                    prefetcher.plan(offset, size as u64)
                }
            }
        };
        plan.read().await
    }

    /// The multi-range reader of the current remote content, if one was started.
    fn multi_range_reader(&self) -> Option<Arc<MultiRangeReader>> {
        let slot = self.multi_range.lock().unwrap_or_else(|p| p.into_inner());
        let key = self.current_key();
        slot.as_ref().filter(|r| r.key() == key).cloned()
    }

    /// Starts multi-range reading of `base` (called under the state lock while the
    /// content is remote) when the mount enables it and the backend can batch.
    fn start_multi_range(&self, key: &str, base: &ObjectMeta, first_read: std::ops::Range<u64>) {
        let Some(cfg) = &self.ctx.cfg.multi_range else { return };
        if !cfg.usable_with(self.ctx.backend.as_ref()) {
            return;
        }
        let reader = MultiRangeReader::new(
            self.ctx.backend.clone(),
            self.ctx.memory.clone(),
            self.ctx.metrics.clone(),
            key.to_owned(),
            base.size,
            base.etag.clone(),
            cfg.clone(),
        );
        reader.note(first_read);
        *self.multi_range.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(reader));
    }

    /// Forgets the multi-range reader (the content changed, or left the backend).
    fn stop_multi_range(&self) {
        *self.multi_range.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// Writes `data` at `offset` (ignored for append mode, which writes at the end); returns bytes written.
    pub async fn write(&self, offset: u64, data: &[u8]) -> BackendResult<u32> {
        let len = u32::try_from(data.len())
            .map_err(|_| BackendError::invalid_argument("write larger than 4 GiB"))?;
        let mut st = self.state.lock().await;
        let st = &mut *st;
        if let Some(e) = &st.lost {
            return Err(e.clone());
        }
        let offset = if self.mode.append { self.size.load(Ordering::SeqCst) } else { offset };
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| BackendError::invalid_argument("write past the maximum offset"))?;
        if data.is_empty() {
            return Ok(0);
        }
        if matches!(st.content, Content::Remote) {
            // An empty base holds nothing to keep, so it streams like no base: `dd of=f`
            // and a shell's `cmd > f` open a new f, dup the descriptor and close the
            // original before writing, which commits f empty (a new file exists from its
            // opener's first close); every byte went through the spool after that.
            let empty = st.base.as_ref().is_none_or(|b| b.size == 0);
            if empty && offset <= self.ctx.cfg.part_size {
                self.start_streaming(st).await;
            } else {
                self.load_spool(st, u64::MAX).await?;
            }
        }
        if let Content::Streaming { upload, tee } = &mut st.content {
            match (upload.write_at(offset, data).await, tee) {
                (Ok(Rewrite::Written), tee) => {
                    if let Some(spool) = tee {
                        if let Err(e) = spool.write_at(offset, data).await {
                            tracing::info!(target: "bucketfs::upload", error = %e,
                                "local copy of a streamed file dropped (cache disk full?); streaming on without it");
                            *tee = None;
                            upload.reading_back_parts();
                        }
                    }
                }
                // the stream cannot take it (or failed), but the tee holds every byte: go on from there
                (Ok(_), Some(_)) => self.stop_streaming(st).await,
                (Err(e), Some(_)) => {
                    tracing::debug!(target: "bucketfs::upload", error = %e,
                        "streaming upload failed; continuing from the local copy");
                    self.stop_streaming(st).await;
                }
                (Ok(Rewrite::Refused), None) => {
                    let at = upload.len();
                    tracing::info!(target: "bucketfs::upload", key = %self.current_key(), offset, streamed = at,
                        "write refused: a write-only handle streams its file and cannot change bytes already uploaded");
                    return Err(BackendError::invalid_argument(format!(
                        "non-sequential write at {offset} into the {at} bytes already streamed to the backend"
                    )));
                }
                // the upload is intact: this write fails, and may be tried again
                (Ok(Rewrite::ReadBackFailed(e)), None) => {
                    tracing::warn!(target: "bucketfs::upload", key = %self.current_key(), offset, error = %e,
                        "write failed: could not read back the uploaded part it changes");
                    return Err(e);
                }
                (Err(e), _) => return Err(self.lose_stream(st, e).await),
            }
        }
        if let Content::Spooled(spool) = &mut st.content {
            spool.write_at(offset, data).await?;
        }
        self.size.fetch_max(end, Ordering::SeqCst);
        self.dirty.store(true, Ordering::SeqCst);
        Ok(len)
    }

    /// Starts streaming an empty content; read-write handles also keep a local copy.
    async fn start_streaming(&self, st: &mut State) {
        let tee = if self.mode.read {
            match SpoolFile::create(&self.ctx.cfg.spool_dir).await {
                Ok(spool) => Some(spool),
                Err(e) => {
                    tracing::info!(target: "bucketfs::upload", error = %e, "no local copy for a read-write stream");
                    None
                }
            }
        } else {
            None
        };
        let mut upload =
            StreamingUpload::new(self.upload.clone(), self.current_key(), st.upload_opts.clone())
                .retaining_first_part();
        if tee.is_none() {
            // no local copy: the recent parts in memory, and the parts a backend can
            // read back, are all a writer that seeks back can rewrite
            upload = upload.retaining_recent_parts(self.ctx.memory.limit_bytes() / RECENT_PARTS_SHARE);
            upload.reading_back_parts();
        }
        st.content = Content::Streaming { upload: Box::new(upload), tee };
    }

    /// A stream failed with `e` (a part upload or its commit): its bytes are gone.
    /// Aborts the upload, keeps the committed object, and remembers the error
    /// for later writes and commits. Returns `e`.
    async fn lose_stream(&self, st: &mut State, e: BackendError) -> BackendError {
        if let Content::Streaming { upload, .. } = std::mem::replace(&mut st.content, Content::Remote) {
            upload.abort().await;
        }
        tracing::error!(target: "bucketfs::upload", key = %self.current_key(), error = %e,
            "streaming upload failed; the file's new content is lost and its old content kept");
        st.lost = Some(e.clone());
        e
    }

    /// Aborts the streaming upload; the tee becomes the content (only called with a tee).
    async fn stop_streaming(&self, st: &mut State) {
        if !matches!(st.content, Content::Streaming { tee: Some(_), .. }) {
            return;
        }
        if let Content::Streaming { upload, tee: Some(spool) } =
            std::mem::replace(&mut st.content, Content::Remote)
        {
            upload.abort().await;
            st.content = Content::Spooled(spool);
        }
    }

    /// Copies a remote content of at most `max` bytes into the spool, so that the
    /// handle keeps reading it after its object is deleted (an unlink while open:
    /// the temporary-file pattern, and POSIX). `Ok(false)` when it is larger.
    pub async fn keep_local_copy(&self, max: u64) -> BackendResult<bool> {
        let mut st = self.state.lock().await;
        let st = &mut *st;
        if !matches!(st.content, Content::Remote) {
            return Ok(true);
        }
        if st.base.as_ref().is_some_and(|b| b.size > max) {
            return Ok(false);
        }
        self.load_spool(st, u64::MAX).await?;
        Ok(true)
    }

    /// Moves a `Remote` content into a new spool file, copying the first `limit` bytes of `base`.
    async fn load_spool(&self, st: &mut State, limit: u64) -> BackendResult<()> {
        // our own read-ahead buffers would only compete with the copy for memory
        st.prefetcher = None;
        self.stop_multi_range();
        let mut spool = SpoolFile::create(&self.ctx.cfg.spool_dir).await?;
        if let Some(base) = &st.base {
            let len = base.size.min(limit);
            let key = self.current_key();
            let etag = (!base.etag.is_empty()).then(|| base.etag.clone());
            let span = tracing::debug_span!(target: "bucketfs::read", "load_spool", key = %key, len);
            let ranges = (0..len.div_ceil(SPOOL_FETCH_SIZE))
                .map(|i| i * SPOOL_FETCH_SIZE..((i + 1) * SPOOL_FETCH_SIZE).min(len));
            let fetches = futures::stream::iter(ranges).map(|r| {
                let backend = self.ctx.backend.clone();
                let (memory, key, etag) = (self.ctx.memory.clone(), key.clone(), etag.clone());
                async move {
                    let reservation = memory.reserve(r.end - r.start).await;
                    let data = get_pinned(backend, key, r.clone(), etag).await?;
                    if data.len() as u64 != r.end - r.start {
                        return Err(BackendError::io(format!(
                            "short read at {} while copying to spool",
                            r.start
                        )));
                    }
                    Ok::<_, BackendError>((r.start, data, reservation))
                }
            });
            let mut fetches = fetches.buffered(self.ctx.cfg.max_parts_in_flight.clamp(1, 8));
            async {
                while let Some(res) = fetches.next().await {
                    let (offset, data, _reservation) = res?;
                    spool.write_at(offset, &data).await?;
                }
                spool.set_len(len).await
            }
            .instrument(span)
            .await?;
        }
        st.content = Content::Spooled(spool);
        Ok(())
    }

    /// ftruncate through this handle.
    pub async fn set_len(&self, size: u64) -> BackendResult<()> {
        let mut st = self.state.lock().await;
        let st = &mut *st;
        if size == self.size.load(Ordering::SeqCst) {
            return Ok(());
        }
        if size == 0 {
            // nothing to keep: back to an empty content that a sequential writer can stream again
            if let Content::Streaming { upload, .. } = std::mem::replace(&mut st.content, Content::Remote) {
                upload.abort().await;
            }
            st.base = None;
            st.prefetcher = None;
            self.stop_multi_range();
        } else {
            if let Some(e) = &st.lost {
                return Err(e.clone());
            }
            if matches!(st.content, Content::Remote) {
                self.load_spool(st, size).await?;
            }
            if let Content::Streaming { upload, tee } = &mut st.content {
                match upload.truncate(size).await {
                    Ok(true) => {
                        if let Some(spool) = tee {
                            spool.set_len(size).await?;
                        }
                    }
                    Ok(false) | Err(_) if tee.is_some() => self.stop_streaming(st).await,
                    Ok(false) => {
                        return Err(BackendError::invalid_argument(format!(
                            "truncate to {size} would cut bytes already streamed to the backend"
                        )))
                    }
                    Err(e) => return Err(self.lose_stream(st, e).await),
                }
            }
            if let Content::Spooled(spool) = &mut st.content {
                spool.set_len(size).await?;
            }
        }
        self.size.store(size, Ordering::SeqCst);
        self.dirty.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Current logical size, including unflushed writes.
    pub fn size(&self) -> u64 {
        self.size.load(Ordering::SeqCst)
    }

    pub fn is_dirty(&self) -> bool {
        self.dirty.load(Ordering::SeqCst)
    }

    /// The key this handle writes to (changes when the file is renamed while open).
    pub fn set_key(&self, key: String) {
        match self.key.lock() {
            Ok(mut k) => *k = key,
            Err(p) => *p.into_inner() = key,
        }
    }

    /// Content type and user metadata for multipart uploads this handle starts from now
    /// on; pass the options the next `commit` will get so streamed uploads need no redo.
    pub async fn set_upload_options(&self, opts: &PutOptions) {
        self.state.lock().await.upload_opts = opts.clone();
    }

    /// Makes the written content durable and visible (flush, fsync, release). No-op when clean.
    /// Returns the new object's metadata when something was committed.
    pub async fn commit(&self, opts: &PutOptions) -> BackendResult<Option<ObjectMeta>> {
        let mut st = self.state.lock().await;
        let st = &mut *st;
        if let Some(e) = &st.lost {
            return Err(e.clone());
        }
        if !self.is_dirty() {
            return Ok(None);
        }
        let key = self.current_key();
        let meta = match std::mem::replace(&mut st.content, Content::Remote) {
            Content::Remote => {
                // dirty without local content: the content is empty
                let span = tracing::debug_span!(target: "bucketfs::upload", "put", key = %key, size = 0);
                self.ctx.backend.put(&key, Bytes::new(), opts).instrument(span).await?
            }
            Content::Streaming { mut upload, tee } => {
                let unchanged = upload.key() == key && same_options(upload.options(), opts);
                if unchanged || upload.retarget(&key, opts) {
                    match upload.finish().await {
                        Ok(meta) => meta,
                        Err(e) => {
                            // the tee still holds every byte: keep it dirty for a retry
                            if let Some(spool) = tee {
                                st.content = Content::Spooled(spool);
                                return Err(e);
                            }
                            return Err(self.lose_stream(st, e).await);
                        }
                    }
                } else if let Some(spool) = tee {
                    tracing::info!(target: "bucketfs::upload", key = %key,
                        "renamed or options changed since the upload started: uploading again from the local copy");
                    upload.abort().await;
                    let res = spool.upload(&self.upload, &key, opts).await;
                    st.content = Content::Spooled(spool);
                    res?
                } else {
                    // A multipart upload's key and metadata are fixed when it starts, and
                    // its bytes are held nowhere else: store it as it is, then copy it
                    // server side to the current key with the current metadata (`cp -p`
                    // sets the mode through the descriptor before closing).
                    let streamed_to = upload.key().to_owned();
                    let res = match upload.finish().await {
                        Ok(_) => self.ctx.backend.copy(&streamed_to, &key, Some(opts)).await,
                        Err(e) => Err(e),
                    };
                    if streamed_to != key {
                        if let Err(e) = self.ctx.backend.delete(&streamed_to).await {
                            tracing::warn!(target: "bucketfs::upload", key = %streamed_to, error = %e,
                                "could not remove the name a renamed file was streamed to");
                        }
                    }
                    match res {
                        Ok(meta) => meta,
                        Err(e) => return Err(self.lose_stream(st, e).await),
                    }
                }
            }
            Content::Spooled(spool) => {
                let res = spool.upload(&self.upload, &key, opts).await;
                st.content = Content::Spooled(spool);
                res?
            }
        };
        st.committed = Some(meta.clone());
        st.base = Some(meta.clone());
        st.prefetcher = None;
        self.stop_multi_range();
        st.upload_opts = metadata_of(opts);
        self.dirty.store(false, Ordering::SeqCst);
        Ok(Some(meta))
    }

    /// Drops unflushed content and aborts any in-progress upload.
    pub async fn discard(&self) {
        let mut st = self.state.lock().await;
        let st = &mut *st;
        if let Content::Streaming { upload, .. } = std::mem::replace(&mut st.content, Content::Remote) {
            upload.abort().await;
        }
        st.lost = None;
        st.base = st.committed.clone();
        st.prefetcher = None;
        self.stop_multi_range();
        self.size.store(st.base.as_ref().map_or(0, |m| m.size), Ordering::SeqCst);
        self.dirty.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
#[path = "handle_tests.rs"]
mod tests;
