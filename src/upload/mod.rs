//! Writing file content to the backend: streaming multipart uploads and spool files.
//!
//! A file handle writes in one of two ways:
//! - [`StreamingUpload`]: while writes arrive strictly at the end of the file,
//!   parts are buffered in memory (each part's bytes reserved from the shared
//!   [`MemoryLimiter`] before buffering) and uploaded in the background as soon
//!   as they are full, so closing a large file only waits for the last parts.
//!   Nothing is created on the backend until the first part is full; a file
//!   smaller than one part becomes a single `put`.
//! - [`SpoolFile`]: any other write pattern (random writes, overwrites, appends
//!   to existing objects, truncation) goes to an unlinked local temp file which
//!   is uploaded on commit, with `put` when small or through the same
//!   [`StreamingUpload`] machinery part by part when large, so a multi-GiB spool
//!   is never read into memory at once.
//!
//! Part sizes come from [`PartSizePlan`], which grows them so that a file can
//! reach the backend's object size limit.
//!
//! [`contract`] is the multipart upload contract (handles that travel between
//! processes) used by `bucketfs cp` and `bucketfs upload`, and [`retry`] sends
//! its parts again after transient failures (`bucketfs cp --retries`); [`journal`] records
//! a mount's in-flight uploads so the next mount can abort a dead one's.

pub mod contract;
pub mod journal;
pub mod part_size;
pub mod retry;
pub mod spool;
pub mod streaming;

use std::sync::Arc;

pub use part_size::PartSizePlan;
pub use spool::SpoolFile;
pub use streaming::StreamingUpload;

use crate::backend::StorageBackend;
use crate::memory::MemoryLimiter;

/// What an upload needs from its mount: shared by every upload of one handle.
#[derive(Clone)]
pub struct UploadParams {
    pub backend: Arc<dyn StorageBackend>,
    pub memory: MemoryLimiter,
    pub plan: PartSizePlan,
    /// Parts uploaded concurrently; already 1 when the backend cannot take parallel parts.
    pub max_parts_in_flight: usize,
}

impl UploadParams {
    /// Derives the part plan and concurrency from the backend's capabilities.
    pub fn new(
        backend: Arc<dyn StorageBackend>,
        memory: MemoryLimiter,
        part_size: u64,
        max_parts_in_flight: usize,
    ) -> Self {
        let caps = backend.capabilities();
        let plan = PartSizePlan::new(part_size, &caps);
        let max_parts_in_flight = if caps.parallel_multipart { max_parts_in_flight.max(1) } else { 1 };
        UploadParams { backend, memory, plan, max_parts_in_flight }
    }
}
