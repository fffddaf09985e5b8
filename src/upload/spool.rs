//! Local temp files holding a file's whole content for non-sequential writes.
//!
//! A [`SpoolFile`] is an anonymous file in the spool directory (created if
//! missing): `tempfile` unlinks it at creation, so the kernel reclaims it when
//! the handle is dropped, even if the daemon crashes. Its length is the file's
//! logical length; holes read as zeros, as on any POSIX file.
//!
//! File I/O runs on tokio's blocking pool with positional reads and writes, so
//! several handles can use their spools without blocking the runtime and no
//! shared file cursor needs locking.
//!
//! [`SpoolFile::upload`] stores the content on commit: a single `put` when it
//! fits in the first part, otherwise a multipart upload that reads one part at
//! a time from disk (after reserving that part's memory) and hands it to a
//! [`StreamingUpload`], which keeps up to `max_parts_in_flight` in flight.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use tracing::Instrument;

use super::{StreamingUpload, UploadParams};
use crate::backend::{BackendError, BackendResult, ObjectMeta, PutOptions};

const TARGET: &str = "bucketfs::upload";

pub struct SpoolFile {
    file: Arc<File>,
    len: u64,
}

fn io_err(what: &str, e: std::io::Error) -> BackendError {
    BackendError::io(format!("spool file {what}: {e}")).with_source(e)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(std::io::Error::other)?
}

impl SpoolFile {
    /// Creates an empty, already unlinked spool file in `dir` (creating `dir` if needed).
    pub async fn create(dir: &Path) -> BackendResult<SpoolFile> {
        let dir: PathBuf = dir.to_path_buf();
        let file = blocking(move || {
            std::fs::create_dir_all(&dir)?;
            tempfile::tempfile_in(&dir)
        })
        .await
        .map_err(|e| io_err("create", e))?;
        Ok(SpoolFile { file: Arc::new(file), len: 0 })
    }

    /// Logical length of the content.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub async fn write_at(&mut self, offset: u64, data: &[u8]) -> BackendResult<()> {
        if data.is_empty() {
            return Ok(());
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or_else(|| BackendError::invalid_argument("write past the maximum offset"))?;
        let file = self.file.clone();
        let buf = data.to_vec();
        blocking(move || file.write_all_at(&buf, offset)).await.map_err(|e| io_err("write", e))?;
        self.len = self.len.max(end);
        Ok(())
    }

    /// Reads up to `len` bytes at `offset`; short only at the end of the content.
    pub async fn read_at(&self, offset: u64, len: u64) -> BackendResult<Bytes> {
        if offset >= self.len || len == 0 {
            return Ok(Bytes::new());
        }
        let n = len.min(self.len - offset) as usize;
        let file = self.file.clone();
        let buf = blocking(move || {
            let mut buf = vec![0u8; n];
            let mut done = 0;
            while done < n {
                match file.read_at(&mut buf[done..], offset + done as u64) {
                    // the file is never shorter than `len` (set_len extends it), but a hole
                    // at the end would read as zeros anyway
                    Ok(0) => break,
                    Ok(k) => done += k,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(buf)
        })
        .await
        .map_err(|e| io_err("read", e))?;
        Ok(Bytes::from(buf))
    }

    /// Truncates or extends (with zeros) to `len`.
    pub async fn set_len(&mut self, len: u64) -> BackendResult<()> {
        let file = self.file.clone();
        blocking(move || file.set_len(len)).await.map_err(|e| io_err("truncate", e))?;
        self.len = len;
        Ok(())
    }

    /// Stores the whole content under `key`: `put` if it fits in one part, else multipart.
    /// A failed multipart upload is aborted before the error is returned.
    pub async fn upload(
        &self,
        params: &UploadParams,
        key: &str,
        opts: &PutOptions,
    ) -> BackendResult<ObjectMeta> {
        if self.len <= params.plan.first_part_size() {
            let _reservation = params.memory.reserve(self.len).await;
            let data = self.read_at(0, self.len).await?;
            let size = data.len() as u64;
            let span = tracing::debug_span!(target: TARGET, "put", key = %key, size);
            return params.backend.put(key, data, opts).instrument(span).await;
        }
        let mut upload = StreamingUpload::new(params.clone(), key.to_string(), opts.clone());
        match self.feed(&mut upload, params).await {
            Ok(()) => upload.finish().await,
            Err(e) => {
                upload.abort().await;
                Err(e)
            }
        }
    }

    async fn feed(&self, upload: &mut StreamingUpload, params: &UploadParams) -> BackendResult<()> {
        let mut offset = 0;
        while offset < self.len {
            let part = upload.next_part_size()?.min(self.len - offset);
            // reserve before reading so a large spool never holds more than the budget
            let reservation = params.memory.reserve(part).await;
            let data = self.read_at(offset, part).await?;
            if data.len() as u64 != part {
                return Err(BackendError::io("spool file shorter than its length"));
            }
            upload.push_part(data, reservation).await?;
            offset += part;
        }
        Ok(())
    }
}
