//! Counts and traces every backend request in one place.
//!
//! The mount wraps its backend once in [`MeteredBackend`]; the filesystem, file
//! handles, read-ahead and uploads all go through the wrapper, so `bucketfs stats`
//! sees every request by kind, the bytes moved, and failures, without any layer
//! counting for itself (and so without double counts). Each request also runs in a
//! debug span under target `bucketfs::backend`, which `--debug_s3` enables.
//! `requests_in_flight` and `requests_in_flight_peak` show how many requests
//! overlap: the latency a mount hides on a slow network.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use tracing::Instrument;

use super::*;
use crate::metrics::Metrics;

pub struct MeteredBackend {
    inner: Arc<dyn StorageBackend>,
    metrics: Arc<Metrics>,
}

impl MeteredBackend {
    pub fn wrap(inner: Arc<dyn StorageBackend>, metrics: Arc<Metrics>) -> Arc<dyn StorageBackend> {
        Arc::new(MeteredBackend { inner, metrics })
    }

    /// Runs one request: counts it in `counter`, in `requests_failed` if it fails, and traces it.
    async fn run<T>(
        &self,
        counter: &AtomicU64,
        span: tracing::Span,
        fut: impl std::future::Future<Output = BackendResult<T>>,
    ) -> BackendResult<T> {
        Metrics::inc(counter);
        let _in_flight = InFlight::enter(&self.metrics);
        let res = fut.instrument(span.clone()).await;
        if let Err(e) = &res {
            // a missing object is an answer, not a failure
            if !e.is_not_found() {
                Metrics::inc(&self.metrics.requests_failed);
            }
            span.in_scope(|| tracing::debug!(target: "bucketfs::backend", error = %e, "request failed"));
        }
        res
    }
}

/// Counts one request as running until dropped (also when the request is cancelled).
struct InFlight<'a>(&'a Metrics);

impl<'a> InFlight<'a> {
    fn enter(m: &'a Metrics) -> Self {
        let now = m.requests_in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        m.requests_in_flight_peak.fetch_max(now, Ordering::Relaxed);
        InFlight(m)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.requests_in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

macro_rules! span {
    ($name:literal $(, $k:ident = $v:expr)*) => {
        tracing::debug_span!(target: "bucketfs::backend", $name $(, $k = $v)*)
    };
}

#[async_trait]
impl StorageBackend for MeteredBackend {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn retries(&self) -> u64 {
        self.inner.retries()
    }
    async fn check_bucket(&self) -> BackendResult<()> {
        self.run(&self.metrics.requests_head, span!("check_bucket"), self.inner.check_bucket()).await
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        self.run(&self.metrics.requests_head, span!("head", key = key), self.inner.head(key)).await
    }
    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let s = span!("list", prefix = req.prefix.as_str(), max_keys = req.max_keys);
        self.run(&self.metrics.requests_list, s, self.inner.list(req)).await
    }
    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        let s = span!(
            "get",
            key = key,
            start = range.as_ref().map(|r| r.start),
            end = range.as_ref().map(|r| r.end)
        );
        let r = self.run(&self.metrics.requests_get, s, self.inner.get_range(key, range, opts)).await?;
        Metrics::add(&self.metrics.bytes_read, r.data.len() as u64);
        Ok(r)
    }
    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        let s = span!("get_ranges", key = key, ranges = ranges.len());
        let r = self.run(&self.metrics.requests_get, s, self.inner.get_ranges(key, ranges, opts)).await?;
        Metrics::add(&self.metrics.bytes_read, r.iter().map(|b| b.len() as u64).sum());
        Ok(r)
    }
    async fn probe_multi_range(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<()> {
        let s = span!("probe_multi_range", key = key, ranges = ranges.len());
        self.run(&self.metrics.requests_head, s, self.inner.probe_multi_range(key, ranges, opts)).await
    }
    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let n = data.len() as u64;
        let s = span!("put", key = key, size = n);
        let m = self.run(&self.metrics.requests_put, s, self.inner.put(key, data, opts)).await?;
        Metrics::add(&self.metrics.bytes_written, n);
        Ok(m)
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.run(&self.metrics.requests_delete, span!("delete", key = key), self.inner.delete(key)).await
    }
    async fn delete_many(&self, keys: &[String]) -> BackendResult<Vec<(String, BackendError)>> {
        let s = span!("delete_many", keys = keys.len());
        self.run(&self.metrics.requests_delete, s, self.inner.delete_many(keys)).await
    }
    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        let s = span!("copy", src = src, dst = dst);
        self.run(&self.metrics.requests_copy, s, self.inner.copy(src, dst, metadata)).await
    }
    async fn rename(&self, src: &str, dst: &str) -> BackendResult<()> {
        let s = span!("rename", src = src, dst = dst);
        self.run(&self.metrics.requests_copy, s, self.inner.rename(src, dst)).await
    }
}

#[async_trait]
impl MultipartStore for MeteredBackend {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
        let s = span!("create_multipart", key = key);
        self.run(&self.metrics.requests_multipart, s, self.inner.create_multipart(key, opts)).await
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let n = data.len() as u64;
        let s = span!("upload_part", key = key, part_number = part_number, size = n);
        let p = self
            .run(
                &self.metrics.requests_multipart,
                s,
                self.inner.upload_part(key, upload_id, part_number, data),
            )
            .await?;
        Metrics::add(&self.metrics.bytes_written, n);
        Ok(p)
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta> {
        let s = span!("complete_multipart", key = key, parts = parts.len());
        self.run(&self.metrics.requests_multipart, s, self.inner.complete_multipart(key, upload_id, parts))
            .await
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
        let s = span!("abort_multipart", key = key);
        self.run(&self.metrics.requests_multipart, s, self.inner.abort_multipart(key, upload_id)).await
    }
    async fn list_parts(&self, key: &str, upload_id: &str) -> BackendResult<Vec<CompletedPart>> {
        let s = span!("list_parts", key = key);
        self.run(&self.metrics.requests_list, s, self.inner.list_parts(key, upload_id)).await
    }
    async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
        let s = span!("read_part", key = key, part_number = part.part_number, size = part.size);
        let data =
            self.run(&self.metrics.requests_get, s, self.inner.read_part(key, upload_id, part)).await?;
        Metrics::add(&self.metrics.bytes_read, data.len() as u64);
        Ok(data)
    }
    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let s = span!("list_multipart", prefix = prefix);
        self.run(&self.metrics.requests_list, s, self.inner.list_multipart(prefix)).await
    }
    async fn abort_multipart_under(&self, prefix: &str) -> BackendResult<usize> {
        let s = span!("abort_multipart_under", prefix = prefix);
        self.run(&self.metrics.requests_multipart, s, self.inner.abort_multipart_under(prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering::Relaxed;

    use super::*;
    use crate::backend::memory::MemoryBackend;

    #[tokio::test]
    async fn counts_requests_bytes_and_failures() {
        let m = Arc::new(Metrics::default());
        let b = MeteredBackend::wrap(Arc::new(MemoryBackend::new()), m.clone());
        b.put("k", Bytes::from_static(b"hello"), &PutOptions::default()).await.unwrap();
        b.get_range("k", Some(1..3), &GetOptions::default()).await.unwrap();
        assert!(b.head("missing").await.is_err());
        let bad = GetOptions { if_match: Some("nope".into()) };
        assert!(b.get_range("k", None, &bad).await.is_err());
        b.list(&ListRequest::default()).await.unwrap();
        assert_eq!(m.requests_put.load(Relaxed), 1);
        assert_eq!(m.bytes_written.load(Relaxed), 5);
        assert_eq!(m.requests_get.load(Relaxed), 2);
        assert_eq!(m.bytes_read.load(Relaxed), 2);
        assert_eq!(m.requests_head.load(Relaxed), 1);
        assert_eq!(m.requests_list.load(Relaxed), 1);
        // the 412 counts as a failure, the 404 does not
        assert_eq!(m.requests_failed.load(Relaxed), 1);
    }
}
