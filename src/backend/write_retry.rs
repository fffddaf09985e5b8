//! Writes that ride out an outage of the storage service (`--write-timeout`).
//!
//! Each backend retries a failed request a few times within seconds (the S3
//! SDK's standard strategy, `http.rs` for GCS and Azure), which covers a lost
//! packet but not a server restart: issue 14 measured every write in flight
//! failing at `close` when the server was down for more than 2-3 s. This
//! wrapper sits above the meter (each attempt counts as a request) and keeps
//! retrying the calls that store data (`put`, `create_multipart`,
//! `upload_part`, `complete_multipart`, `abort_multipart`, so that an
//! abandoned upload is still cleaned up, and `read_part`, which a write into a
//! streamed file's uploaded bytes waits on) with exponential backoff and jitter,
//! for as long as the service stays unreachable, up to the write timeout after
//! the first failure. The application's `write`/`close` waits meanwhile. Only
//! errors an outage causes are retried (`Unavailable`: connection refused or
//! timed out, 5xx, throttling, drives offline; `Io`: an answer cut off); an
//! answer such as "no space", "access denied" or "precondition failed" is
//! returned at once. Reads are not retried here: a reader gets its error after
//! the backend's own retries, as before.
//!
//! Re-sending is safe: a part replaces the same part number, a put the same
//! key. Where an earlier attempt may have succeeded without its answer
//! arriving, the retry's error is checked: a complete answered "no such upload"
//! succeeded if the key now holds a multipart object of as many parts (its ETag
//! ends in `-N`), and an abort answered "no such upload" has nothing left to do.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio::time::Instant;

use super::forward::backend_wrapper;
use super::retry::backoff;
use super::*;
use crate::object::ErrorKind;

const TARGET: &str = "bucketfs::backend";

pub struct WriteRetryBackend {
    inner: Arc<dyn StorageBackend>,
    timeout: Duration,
    /// Attempts this layer re-sent (added to the inner backend's own retries).
    retried: AtomicU64,
}

impl WriteRetryBackend {
    /// Wraps `inner` so that its writes retry for up to `timeout` after their first
    /// failure; a zero timeout returns `inner` unchanged.
    pub fn wrap(inner: Arc<dyn StorageBackend>, timeout: Duration) -> Arc<dyn StorageBackend> {
        if timeout.is_zero() {
            return inner;
        }
        Arc::new(WriteRetryBackend { inner, timeout, retried: AtomicU64::new(0) })
    }

    /// Runs `attempt` until it succeeds, fails in a way an outage does not explain, or
    /// the write timeout has passed since its first failure. Returns the last result and
    /// whether an earlier attempt failed in a way that may have hidden a success.
    async fn retry<T, F, Fut>(&self, op: &'static str, key: &str, attempt: F) -> (BackendResult<T>, bool)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = BackendResult<T>>,
    {
        let mut first_failure: Option<Instant> = None;
        let mut retry = 0;
        loop {
            let res = attempt().await;
            let err = match &res {
                Err(e) if is_outage(e) => e,
                _ => return (res, first_failure.is_some()),
            };
            let since = *first_failure.get_or_insert_with(Instant::now);
            let elapsed = since.elapsed();
            if elapsed >= self.timeout {
                tracing::warn!(target: TARGET, op, key, error = %err, waited_s = elapsed.as_secs(),
                    "giving up: the storage service stayed unavailable for the whole --write-timeout");
                return (res, true);
            }
            retry += 1;
            let wait = backoff(retry).min(self.timeout - elapsed);
            tracing::info!(target: TARGET, op, key, error = %err, retry_in_ms = wait.as_millis() as u64,
                "write failed; retrying while the storage service is unavailable");
            tokio::time::sleep(wait).await;
            self.retried.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Failures an outage explains (and that a later attempt may not meet).
fn is_outage(e: &BackendError) -> bool {
    e.kind().is_transient()
}

backend_wrapper! {
    impl StorageBackend for WriteRetryBackend {
        fn retries(&self) -> u64 {
            self.inner.retries() + self.retried.load(Ordering::Relaxed)
        }
        async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
            self.retry("put", key, || self.inner.put(key, data.clone(), opts)).await.0
        }
    }
    impl MultipartStore for WriteRetryBackend {
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
            self.retry("create_multipart", key, || self.inner.create_multipart(key, opts)).await.0
        }
        async fn upload_part(
            &self,
            key: &str,
            upload_id: &str,
            part_number: u32,
            data: Bytes,
        ) -> BackendResult<CompletedPart> {
            let attempt = || self.inner.upload_part(key, upload_id, part_number, data.clone());
            self.retry("upload_part", key, attempt).await.0
        }
        async fn complete_multipart(
            &self,
            key: &str,
            upload_id: &str,
            parts: &[CompletedPart],
        ) -> BackendResult<ObjectMeta> {
            let attempt = || self.inner.complete_multipart(key, upload_id, parts);
            match self.retry("complete_multipart", key, attempt).await {
                (Err(e @ BackendError { kind: ErrorKind::NoSuchUpload, .. }), true) => {
                    // an earlier attempt may have completed it and lost the answer
                    match self.inner.head(key).await {
                        Ok(meta) if meta.etag.trim_matches('"').ends_with(&format!("-{}", parts.len())) => {
                            tracing::info!(target: TARGET, key, "upload was completed by an attempt whose answer was lost");
                            Ok(meta)
                        }
                        _ => Err(e),
                    }
                }
                (res, _) => res,
            }
        }
        async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
            match self.retry("abort_multipart", key, || self.inner.abort_multipart(key, upload_id)).await {
                (Err(BackendError { kind: ErrorKind::NoSuchUpload, .. }), true) => Ok(()),
                (res, _) => res,
            }
        }
        async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
            self.retry("read_part", key, || self.inner.read_part(key, upload_id, part)).await.0
        }
    }
    forward to inner: [
        capabilities, check_bucket, head, list, get_range, get_ranges, probe_multi_range, delete, delete_many, copy,
        rename, list_parts, list_multipart, abort_multipart_under,
    ]
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use super::*;
    use crate::backend::memory::MemoryBackend;

    fn layer(timeout: Duration) -> WriteRetryBackend {
        WriteRetryBackend { inner: Arc::new(MemoryBackend::new()), timeout, retried: AtomicU64::new(0) }
    }

    /// An attempt that fails with `error()` `failures` times, then succeeds; counts attempts.
    async fn flaky(attempts: &AtomicU32, failures: u32, error: fn() -> BackendError) -> BackendResult<u32> {
        let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
        if n <= failures {
            Err(error())
        } else {
            Ok(n)
        }
    }

    #[tokio::test]
    async fn an_outage_shorter_than_the_timeout_is_ridden_out() {
        let b = layer(Duration::from_secs(60));
        let attempts = AtomicU32::new(0);
        let unreachable = || BackendError::unavailable("cannot reach 127.0.0.1:1");
        let (res, hidden) = b.retry("put", "k", || flaky(&attempts, 3, unreachable)).await;
        assert_eq!(res.unwrap(), 4);
        assert!(hidden, "earlier attempts failed");
        assert_eq!(b.retries(), 3, "counted for bucketfs stats");
        let cut = || BackendError::io("answer cut off");
        let attempts = AtomicU32::new(0);
        assert!(b.retry("upload_part", "k", || flaky(&attempts, 1, cut)).await.0.is_ok());
    }

    #[tokio::test]
    async fn answers_an_outage_does_not_explain_are_returned_at_once() {
        let b = layer(Duration::from_secs(60));
        for error in [
            (|| BackendError::no_space("drive full")) as fn() -> BackendError,
            || BackendError::quota_exceeded("disk quota"),
            || BackendError::access_denied("no"),
            || BackendError::precondition_failed("k"),
            || BackendError::invalid_argument("part too big"),
        ] {
            let attempts = AtomicU32::new(0);
            let (res, hidden) = b.retry("put", "k", || flaky(&attempts, 1, error)).await;
            assert_eq!(res.unwrap_err().errno(), error().errno());
            assert!(!hidden);
            assert_eq!(attempts.load(Ordering::SeqCst), 1, "{:?} not retried", error());
        }
        assert_eq!(b.retries(), 0);
    }

    #[tokio::test]
    async fn an_outage_longer_than_the_timeout_fails_with_its_error() {
        let b = layer(Duration::from_millis(300));
        let attempts = AtomicU32::new(0);
        let unreachable = || BackendError::unavailable("cannot reach 127.0.0.1:1");
        let (res, _) = b.retry("put", "k", || flaky(&attempts, u32::MAX, unreachable)).await;
        assert!(matches!(res, Err(BackendError { kind: ErrorKind::Unavailable, .. })), "{res:?}");
        assert!(attempts.load(Ordering::SeqCst) >= 2, "retried before giving up");
    }

    #[tokio::test]
    async fn a_zero_timeout_adds_no_layer() {
        let inner: Arc<dyn StorageBackend> = Arc::new(MemoryBackend::new());
        assert!(Arc::ptr_eq(&WriteRetryBackend::wrap(inner.clone(), Duration::ZERO), &inner));
    }
}
