//! Open file handles: reads through read-ahead, writes streamed or spooled, committed on flush.
//!
//! INTERFACE CONTRACT (used by src/fs/mod.rs; bodies are written in the handles work):

use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

use crate::backend::{BackendResult, ObjectMeta, PutOptions, StorageBackend};
use crate::memory::MemoryLimiter;
use crate::metrics::Metrics;

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

/// One open file. All methods take `&self`: FUSE calls arrive on several threads.
pub struct FileHandle {
    _private: (),
}

impl FileHandle {
    /// `existing`: the object's metadata when it exists (None for a new file).
    pub fn open(ctx: Arc<HandleContext>, key: String, existing: Option<ObjectMeta>, mode: OpenMode) -> Self {
        let _ = (ctx, key, existing, mode);
        todo!()
    }
    /// Reads up to `size` bytes at `offset`; sees this handle's own unflushed writes.
    pub async fn read(&self, offset: u64, size: u32) -> BackendResult<Bytes> {
        let _ = (offset, size);
        todo!()
    }
    /// Writes `data` at `offset` (ignored for append mode, which writes at the end); returns bytes written.
    pub async fn write(&self, offset: u64, data: &[u8]) -> BackendResult<u32> {
        let _ = (offset, data);
        todo!()
    }
    /// ftruncate through this handle.
    pub async fn set_len(&self, size: u64) -> BackendResult<()> {
        let _ = size;
        todo!()
    }
    /// Current logical size, including unflushed writes.
    pub fn size(&self) -> u64 {
        todo!()
    }
    pub fn is_dirty(&self) -> bool {
        todo!()
    }
    /// The key this handle writes to (changes when the file is renamed while open).
    pub fn set_key(&self, key: String) {
        let _ = key;
        todo!()
    }
    /// Makes the written content durable and visible (flush, fsync, release). No-op when clean.
    /// Returns the new object's metadata when something was committed.
    pub async fn commit(&self, opts: &PutOptions) -> BackendResult<Option<ObjectMeta>> {
        let _ = opts;
        todo!()
    }
    /// Drops unflushed content and aborts any in-progress upload.
    pub async fn discard(&self) {
        todo!()
    }
}
