//! A multipart upload fed sequentially, with parts uploaded in the background.
//!
//! Bytes are appended to an in-memory part buffer whose full size is reserved
//! from the mount's [`MemoryLimiter`](crate::memory::MemoryLimiter) *before*
//! the first byte is buffered, so a writer that outruns the network waits for
//! memory instead of growing without bound. A full part is only handed off when
//! the next byte arrives (or on [`StreamingUpload::finish`]): that way a file of
//! at most one part never creates a multipart upload and is stored with a
//! single `put`, and `create_multipart` is only issued once a full part exists.
//!
//! Handed-off parts are uploaded by spawned tasks, at most
//! `max_parts_in_flight` at a time (1 when the backend cannot take parallel
//! parts); each task owns its part's memory reservation, so memory is returned
//! as soon as the part is stored. The first failed part fails the upload: the
//! caller then either [`abort`](StreamingUpload::abort)s or lets `finish`
//! abort, so no multipart upload is left behind on the backend. Dropping an
//! unfinished upload also aborts it, in a background task.
//!
//! # Writes that are not at the end
//!
//! A file handle streams without any local copy (issue 13: a 100 GiB `cp`
//! must not need 100 GiB of cache disk), so [`write_at`](StreamingUpload::write_at)
//! accepts a write elsewhere only where this upload still holds the bytes it
//! changes, in memory:
//!
//! - the part being buffered;
//! - the first part, kept (its memory stays reserved) until the upload finishes,
//!   because the common non-sequential pattern of a sequential writer is to come
//!   back and fill in a header at offset 0 once the data is written (archivers,
//!   muxers, the "write at offset 0 after 100 MiB");
//! - the most recent parts, up to a window given by the caller
//!   ([`retaining_recent_parts`](StreamingUpload::retaining_recent_parts)): a
//!   writer that seeks back a little (a zip writer filling in the sizes of the
//!   entry it just wrote, a muxer patching its last index) finds them there. A
//!   part is only kept while at least half of the mount's memory budget is free
//!   when it is handed off, and unchanged ones are let go as soon as it is not,
//!   so kept parts never starve other writers or read-ahead.
//!
//! A patched part is uploaded again under its part number before completing;
//! S3, the embedded store, GCS's part objects and Azure's blocks all replace a
//! part re-sent under the same number. A write a little past the end (at most
//! one part) fills the gap with zeros, as a hole would read.
//!
//! A write into an uploaded part that is no longer held is served where the
//! backend can read a part of an unfinished upload back
//! (`Capabilities::readable_upload_parts`: the embedded store and GCS) and the
//! caller asked for it ([`reading_back_parts`](StreamingUpload::reading_back_parts)):
//! once every part upload has ended (so the part's ETag is known and no older
//! copy can land later), the part is read back at that ETag into memory reserved
//! like a retained part's, patched, and kept as a patched part until it is
//! re-sent at completion. Parts keep their sizes, so the layout stays valid,
//! and the upload is completed only by `finish`: nothing is ever visible early.
//! When the budget cannot give the memory at once, this upload's own patched
//! parts are sent now and let go (they can be read back again), and if it still
//! cannot, the write is refused. Anything else
//! ([`Rewrite::Refused`]) is for the caller to decide (see `fs::handle`): on S3
//! and Azure the parts of an unfinished upload cannot be read back, and an
//! upload can only be completed under the key it was created with.

use bytes::Bytes;
use tokio::task::JoinSet;
use tracing::Instrument;

use super::UploadParams;
use crate::backend::{BackendError, BackendResult, CompletedPart, ObjectMeta, PutOptions};
use crate::memory::Reservation;
use crate::object::ErrorKind;

const TARGET: &str = "bucketfs::upload";

#[path = "streaming_rewrite.rs"]
mod rewrite;
pub use rewrite::Rewrite;

pub struct StreamingUpload {
    params: UploadParams,
    key: String,
    opts: PutOptions,
    upload_id: Option<String>,
    /// Part number of the part being buffered (1-based).
    next_part: u32,
    /// Bytes handed off in parts; `buffer` holds the bytes from here on.
    handed_off: u64,
    buffer: Vec<u8>,
    /// Reservation for the part being buffered; taken before buffering its first byte.
    buffer_reservation: Option<Reservation>,
    in_flight: JoinSet<BackendResult<CompletedPart>>,
    completed: Vec<CompletedPart>,
    /// Bytes accepted so far.
    len: u64,
    /// Keep a copy of part 1 once handed off, so that a header rewrite needs no local copy.
    retain_first: bool,
    /// Bytes of the most recent parts (after part 1) kept in memory; 0 keeps none.
    recent_window: u64,
    /// Handed-off parts still held in memory, in part number order.
    retained: Vec<RetainedPart>,
    /// Read a part that is not held back from the backend to rewrite it, where the
    /// backend can (`Capabilities::readable_upload_parts`).
    read_back: bool,
    /// Finished or aborted: nothing left to clean up on drop.
    done: bool,
}

/// A part as sent, kept with its memory reservation (part 1 until the upload
/// finishes, a recent one while it is in the window and memory allows).
struct RetainedPart {
    number: u32,
    /// Offset of its first byte in the file.
    start: u64,
    data: Bytes,
    _reservation: Reservation,
    /// Changed since it was sent: must be sent again before completing (so it is
    /// never let go before that).
    patched: bool,
}

impl RetainedPart {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// Zeros written into a gap left by a write past the end.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

impl StreamingUpload {
    /// Nothing is sent to the backend until a full part has been buffered.
    pub fn new(params: UploadParams, key: String, opts: PutOptions) -> Self {
        StreamingUpload {
            params,
            key,
            opts,
            upload_id: None,
            next_part: 1,
            handed_off: 0,
            buffer: Vec::new(),
            buffer_reservation: None,
            in_flight: JoinSet::new(),
            completed: Vec::new(),
            len: 0,
            retain_first: false,
            recent_window: 0,
            retained: Vec::new(),
            read_back: false,
            done: false,
        }
    }

    /// Keeps part 1 in memory until the upload finishes, so that
    /// [`write_at`](Self::write_at) can rewrite it (a file handle's streams do;
    /// spool uploads, which never rewrite, do not).
    pub fn retaining_first_part(mut self) -> Self {
        self.retain_first = true;
        self
    }

    /// Also keeps up to `window` bytes of the most recently handed-off parts in
    /// memory while the memory budget is at most half used, so that
    /// [`write_at`](Self::write_at) can rewrite them too (see the module docs).
    pub fn retaining_recent_parts(mut self, window: u64) -> Self {
        self.recent_window = window;
        self
    }

    /// Lets [`write_at`](Self::write_at) rewrite an uploaded part that is no longer
    /// held by reading it back, on a backend that can (see the module docs). For a
    /// stream with no other copy of its bytes; one with a local copy is cheaper to
    /// continue from that copy.
    pub fn reading_back_parts(&mut self) {
        self.read_back = true;
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// The options the object will be stored with (fixed when the upload is created).
    pub fn options(&self) -> &PutOptions {
        &self.opts
    }

    /// Changes the key and options while nothing has been sent yet; false once the
    /// multipart upload exists (its key and options can no longer change).
    pub fn retarget(&mut self, key: &str, opts: &PutOptions) -> bool {
        if self.upload_id.is_some() {
            return false;
        }
        self.key = key.to_string();
        self.opts = opts.clone();
        true
    }

    /// Bytes accepted so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a multipart upload exists on the backend.
    pub fn is_started(&self) -> bool {
        self.upload_id.is_some()
    }

    /// Size of the part that the next byte belongs to.
    fn current_part_size(&self) -> BackendResult<u64> {
        match self.params.plan.part_size(self.next_part) {
            0 => Err(BackendError::invalid_argument(format!(
                "{}: file exceeds the backend's maximum object size ({} bytes)",
                self.key,
                self.params.plan.max_object_size()
            ))),
            n => Ok(n),
        }
    }

    /// Appends `data`; waits for memory or for in-flight parts when needed.
    pub async fn write(&mut self, mut data: &[u8]) -> BackendResult<()> {
        while !data.is_empty() {
            let part_size = self.current_part_size()?;
            if self.buffer.len() as u64 >= part_size {
                self.hand_off_buffer().await?;
                continue;
            }
            if self.buffer_reservation.is_none() {
                self.buffer_reservation = Some(self.params.memory.reserve(part_size).await);
                // A recycled buffer (crate::buffers): a fresh 8 MiB one was mapped, faulted in
                // and zeroed page by page, then unmapped after its upload; page faults, zeroing
                // and memory-cgroup charging were a third of the daemon's CPU on a 256 MiB
                // write (perf, SeaweedFS at 0 ms). Capacity up front avoids re-copies.
                self.buffer = crate::buffers::take(part_size as usize);
            }
            let n = ((part_size - self.buffer.len() as u64) as usize).min(data.len());
            self.buffer.extend_from_slice(&data[..n]);
            self.len += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    /// Size the next [`push_part`](Self::push_part) must have (unless it is the last).
    pub fn next_part_size(&self) -> BackendResult<u64> {
        self.current_part_size()
    }

    /// Uploads a whole part that the caller has already read and reserved memory for
    /// (used to upload spool files). Only valid while nothing is buffered through `write`;
    /// a part shorter than [`next_part_size`](Self::next_part_size) must be the last.
    pub async fn push_part(&mut self, data: Bytes, reservation: Reservation) -> BackendResult<()> {
        if !self.buffer.is_empty() {
            return Err(BackendError::other("push_part after buffered writes"));
        }
        let part_size = self.current_part_size()?;
        if data.len() as u64 > part_size {
            return Err(BackendError::other(format!("part of {} bytes exceeds {part_size}", data.len())));
        }
        self.len += data.len() as u64;
        self.handed_off += data.len() as u64;
        self.start_part(data, Some(reservation)).await
    }

    async fn hand_off_buffer(&mut self) -> BackendResult<()> {
        let data = crate::buffers::freeze(std::mem::take(&mut self.buffer));
        let (number, start) = (self.next_part, self.handed_off);
        self.handed_off += data.len() as u64;
        let reservation = match self.buffer_reservation.take() {
            Some(r) => r,
            // unreachable in practice: buffered bytes always come with a reservation
            None => self.params.memory.reserve(data.len() as u64).await,
        };
        let keep = if self.retain_first && number == 1 { true } else { self.make_room(data.len() as u64) };
        if keep {
            // the retained copy shares the part's memory and carries its reservation
            let part =
                RetainedPart { number, start, data: data.clone(), _reservation: reservation, patched: false };
            self.retained.push(part);
            return self.start_part(data, None).await;
        }
        self.start_part(data, Some(reservation)).await
    }

    /// Whether a recent part of `len` bytes may be kept, letting go of the oldest
    /// unchanged ones to make room; under memory pressure lets go of all of them.
    fn make_room(&mut self, len: u64) -> bool {
        // part 1 of a stream that retains it is kept regardless and not counted
        let first = self.retain_first;
        let recent = move |p: &RetainedPart| !(first && p.number == 1);
        let memory = &self.params.memory;
        if memory.available_bytes() < memory.limit_bytes() / 2 {
            self.retained.retain(|p| p.patched || !recent(p));
            return false;
        }
        if len > self.recent_window {
            return false;
        }
        loop {
            let held: u64 = self.retained.iter().filter(|p| recent(p)).map(|p| p.data.len() as u64).sum();
            if held + len <= self.recent_window {
                return true;
            }
            match self.retained.iter().position(|p| recent(p) && !p.patched) {
                Some(i) => drop(self.retained.remove(i)),
                None => return false,
            }
        }
    }

    async fn ensure_started(&mut self) -> BackendResult<String> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let span = tracing::debug_span!(target: TARGET, "create_multipart", key = %self.key);
        let id = self.params.backend.create_multipart(&self.key, &self.opts).instrument(span).await?;
        tracing::debug!(target: TARGET, key = %self.key, upload_id = %id, "multipart upload started");
        self.upload_id = Some(id.clone());
        Ok(id)
    }

    /// Spawns the upload of one part once fewer than `max_parts_in_flight` are running.
    async fn start_part(&mut self, data: Bytes, reservation: Option<Reservation>) -> BackendResult<()> {
        let upload_id = self.ensure_started().await?;
        // surface failures early instead of buffering more parts for a dead upload
        while let Some(res) = self.in_flight.try_join_next() {
            self.record(res)?;
        }
        while self.in_flight.len() >= self.params.max_parts_in_flight {
            self.join_one().await?;
        }
        let part_number = self.next_part;
        self.next_part += 1;
        let backend = self.params.backend.clone();
        let key = self.key.clone();
        let size = data.len();
        let span = tracing::debug_span!(target: TARGET, "upload_part", key = %key, part_number, size);
        self.in_flight.spawn(
            async move {
                // The part's memory is returned when the upload ends, successful or not;
                // a store write an abort leaves running on a blocking thread keeps it
                // until it has finished (see memory::covering).
                let reservation = reservation.map(std::sync::Arc::new);
                let upload = backend.upload_part(&key, &upload_id, part_number, data);
                let res = crate::memory::covering(reservation, upload).await;
                if let Err(e) = &res {
                    tracing::debug!(target: TARGET, error = %e, "part upload failed");
                }
                res
            }
            .instrument(span),
        );
        Ok(())
    }

    async fn join_one(&mut self) -> BackendResult<()> {
        match self.in_flight.join_next().await {
            Some(res) => self.record(res),
            None => Ok(()),
        }
    }

    fn record(
        &mut self,
        res: Result<BackendResult<CompletedPart>, tokio::task::JoinError>,
    ) -> BackendResult<()> {
        let part =
            res.map_err(|e| BackendError::other(format!("part upload task failed: {e}")).with_source(e))??;
        self.completed.push(part);
        Ok(())
    }

    /// Stores everything written: one `put` if the multipart upload never started,
    /// else uploads the last part and completes. On error the upload is aborted.
    pub async fn finish(mut self) -> BackendResult<ObjectMeta> {
        let res = self.finish_inner().await;
        if res.is_err() {
            self.abort_inner().await;
        }
        self.done = true;
        res
    }

    async fn finish_inner(&mut self) -> BackendResult<ObjectMeta> {
        if self.upload_id.is_none() {
            let data = crate::buffers::freeze(std::mem::take(&mut self.buffer));
            let size = data.len() as u64;
            let span = tracing::debug_span!(target: TARGET, "put", key = %self.key, size);
            let res = self.params.backend.put(&self.key, data, &self.opts).instrument(span).await;
            self.buffer_reservation = None;
            return res;
        }
        if !self.buffer.is_empty() {
            self.hand_off_buffer().await?;
        }
        while !self.in_flight.is_empty() {
            self.join_one().await?;
        }
        self.resend_patched_parts().await?;
        self.completed.sort_by_key(|p| p.part_number);
        let upload_id = self.upload_id.clone().unwrap_or_default();
        let span = tracing::debug_span!(target: TARGET, "complete_multipart", key = %self.key, parts = self.completed.len());
        let res = self
            .params
            .backend
            .complete_multipart(&self.key, &upload_id, &self.completed)
            .instrument(span)
            .await;
        let meta = res?;
        self.upload_id = None;
        Ok(meta)
    }

    /// Cancels running part uploads and aborts the multipart upload, if any.
    pub async fn abort(mut self) {
        self.abort_inner().await;
        self.done = true;
    }

    async fn abort_inner(&mut self) {
        self.in_flight.abort_all();
        // wait so that no part lands after the abort and recreates state on the server
        while self.in_flight.join_next().await.is_some() {}
        self.buffer = Vec::new();
        self.buffer_reservation = None;
        self.retained.clear();
        if let Some(id) = self.upload_id.take() {
            let span =
                tracing::debug_span!(target: TARGET, "abort_multipart", key = %self.key, upload_id = %id);
            match self.params.backend.abort_multipart(&self.key, &id).instrument(span).await {
                Ok(()) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. }) => {}
                Err(e) => {
                    tracing::warn!(target: TARGET, key = %self.key, upload_id = %id, error = %e,
                        "could not abort multipart upload; `bucketfs` lists it among the bucket's pending uploads");
                }
            }
        }
    }
}

impl Drop for StreamingUpload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let Some(id) = self.upload_id.take() else { return };
        // dropped without finish/abort (e.g. a handle dropped mid-write): abort in the background
        self.in_flight.abort_all();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let backend = self.params.backend.clone();
            let key = std::mem::take(&mut self.key);
            rt.spawn(async move {
                if let Err(e) = backend.abort_multipart(&key, &id).await {
                    tracing::debug!(target: TARGET, key = %key, error = %e, "background abort failed");
                }
            });
        }
    }
}
