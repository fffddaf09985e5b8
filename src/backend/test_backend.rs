//! A [`MemoryBackend`] wrapper for tests of the handle layer: counts requests and
//! bytes, measures how many parts are uploaded concurrently, and injects failures.

use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use crate::backend::forward::backend_wrapper;
use crate::backend::memory::MemoryBackend;
use crate::backend::*;

#[derive(Default)]
pub(crate) struct InstrumentedBackend {
    pub inner: MemoryBackend,
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub gets_running: AtomicU64,
    pub max_gets_running: AtomicU64,
    /// Milliseconds each `get_range` sleeps, so that concurrency shows.
    pub get_delay_ms: AtomicU64,
    /// `get_range` returns this many bytes fewer than it read (a misbehaving server).
    pub get_short_by: AtomicU64,
    pub puts: AtomicU64,
    pub creates: AtomicU64,
    pub parts: AtomicU64,
    pub parts_running: AtomicU64,
    pub max_parts_running: AtomicU64,
    pub part_bytes_running: AtomicU64,
    pub max_part_bytes_running: AtomicU64,
    pub fail_upload_part: AtomicBool,
    /// `read_part` calls (parts of an open upload read back).
    pub part_reads: AtomicU64,
    pub fail_read_part: AtomicBool,
    /// Milliseconds each `upload_part` sleeps, so that concurrency shows.
    pub part_delay_ms: AtomicU64,
    /// `get_ranges` calls (each one request) and the ranges they asked for.
    pub multi_gets: AtomicU64,
    pub multi_get_ranges: AtomicU64,
    pub max_multi_get_ranges: AtomicU64,
    /// `probe_multi_range` calls and the ranges they asked about.
    pub probes: AtomicU64,
    pub probe_ranges: AtomicU64,
    /// Makes `get_ranges` fail, as a broken multi-range answer would.
    pub fail_get_ranges: AtomicBool,
    /// Overrides the inner backend's `Capabilities::multi_range`.
    pub mode: std::sync::Mutex<Option<MultiRangeMode>>,
    /// What `retries()` reports.
    pub retries: AtomicU64,
    /// Keys another client creates (with the body `theirs`) just before our next
    /// `put` of them: the race a check-then-write create loses.
    pub created_by_another: std::sync::Mutex<Vec<String>>,
}

pub(crate) fn small_part_caps(min_part_size: u64) -> Capabilities {
    Capabilities { min_part_size, ..MemoryBackend::new().capabilities() }
}

impl InstrumentedBackend {
    pub fn with_min_part(min_part_size: u64) -> Arc<Self> {
        Self::with_capabilities(small_part_caps(min_part_size))
    }

    pub fn with_capabilities(caps: Capabilities) -> Arc<Self> {
        Arc::new(InstrumentedBackend { inner: MemoryBackend::with_capabilities(caps), ..Default::default() })
    }
}

backend_wrapper! {
    impl StorageBackend for InstrumentedBackend {
        fn capabilities(&self) -> Capabilities {
            let caps = self.inner.capabilities();
            match *self.mode.lock().unwrap() {
                Some(multi_range) => Capabilities { multi_range, ..caps },
                None => caps,
            }
        }
        fn retries(&self) -> u64 {
            self.retries.load(Ordering::Relaxed)
        }
        async fn get_range(
            &self,
            key: &str,
            range: Option<Range<u64>>,
            opts: &GetOptions,
        ) -> BackendResult<GetResult> {
            /// Counts a GET as running until it ends, even when it is cancelled.
            struct Running<'a>(&'a AtomicU64);
            impl Drop for Running<'_> {
                fn drop(&mut self) {
                    self.0.fetch_sub(1, Ordering::SeqCst);
                }
            }
            self.gets.fetch_add(1, Ordering::SeqCst);
            let running = self.gets_running.fetch_add(1, Ordering::SeqCst) + 1;
            let _running = Running(&self.gets_running);
            self.max_gets_running.fetch_max(running, Ordering::SeqCst);
            let delay = self.get_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let mut r = self.inner.get_range(key, range, opts).await?;
            let short = (self.get_short_by.load(Ordering::SeqCst) as usize).min(r.data.len());
            r.data.truncate(r.data.len() - short);
            self.get_bytes.fetch_add(r.data.len() as u64, Ordering::SeqCst);
            Ok(r)
        }
        async fn get_ranges(
            &self,
            key: &str,
            ranges: &[Range<u64>],
            opts: &GetOptions,
        ) -> BackendResult<Vec<Bytes>> {
            self.multi_gets.fetch_add(1, Ordering::SeqCst);
            self.multi_get_ranges.fetch_add(ranges.len() as u64, Ordering::SeqCst);
            self.max_multi_get_ranges.fetch_max(ranges.len() as u64, Ordering::SeqCst);
            let delay = self.get_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            if self.fail_get_ranges.load(Ordering::SeqCst) {
                return Err(BackendError::io("injected get_ranges failure"));
            }
            let parts = self.inner.get_ranges(key, ranges, opts).await?;
            self.get_bytes.fetch_add(parts.iter().map(|p| p.len() as u64).sum(), Ordering::SeqCst);
            Ok(parts)
        }
        async fn probe_multi_range(&self, key: &str, ranges: &[Range<u64>], opts: &GetOptions) -> BackendResult<()> {
            self.probes.fetch_add(1, Ordering::SeqCst);
            self.probe_ranges.fetch_add(ranges.len() as u64, Ordering::SeqCst);
            self.inner.probe_multi_range(key, ranges, opts).await
        }
        async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
            self.puts.fetch_add(1, Ordering::SeqCst);
            let raced = {
                let mut keys = self.created_by_another.lock().unwrap();
                let at = keys.iter().position(|k| k == key);
                at.map(|i| keys.remove(i)).is_some()
            };
            if raced {
                self.inner.put(key, Bytes::from_static(b"theirs"), &PutOptions::default()).await?;
            }
            self.inner.put(key, data, opts).await
        }
    }
    impl MultipartStore for InstrumentedBackend {
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
            self.creates.fetch_add(1, Ordering::SeqCst);
            self.inner.create_multipart(key, opts).await
        }
        async fn upload_part(
            &self,
            key: &str,
            upload_id: &str,
            part_number: u32,
            data: Bytes,
        ) -> BackendResult<CompletedPart> {
            self.parts.fetch_add(1, Ordering::SeqCst);
            let size = data.len() as u64;
            let running = self.parts_running.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_parts_running.fetch_max(running, Ordering::SeqCst);
            let bytes = self.part_bytes_running.fetch_add(size, Ordering::SeqCst) + size;
            self.max_part_bytes_running.fetch_max(bytes, Ordering::SeqCst);
            let delay = self.part_delay_ms.load(Ordering::SeqCst);
            if delay > 0 {
                tokio::time::sleep(Duration::from_millis(delay)).await;
            }
            let res = if self.fail_upload_part.load(Ordering::SeqCst) {
                Err(BackendError::unavailable("injected upload_part failure"))
            } else {
                self.inner.upload_part(key, upload_id, part_number, data).await
            };
            self.parts_running.fetch_sub(1, Ordering::SeqCst);
            self.part_bytes_running.fetch_sub(size, Ordering::SeqCst);
            res
        }
        async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
            self.part_reads.fetch_add(1, Ordering::SeqCst);
            if self.fail_read_part.load(Ordering::SeqCst) {
                return Err(BackendError::unavailable("injected read_part failure"));
            }
            self.inner.read_part(key, upload_id, part).await
        }
    }
    forward to inner: [
        check_bucket, head, list, delete, copy, complete_multipart, abort_multipart, list_multipart,
    ]
}
