//! The data path of the GCS backend: object reads and writes through the
//! official `google-cloud-storage` crate (its HTTP `Storage` client).
//!
//! Why only reads and writes: the crate's `Storage` client speaks the JSON /
//! XML media endpoints, but listing, deleting, composing and copying live in
//! its `StorageControl` client, which is gRPC only. fake-gcs-server (our test
//! server) and many private endpoints speak no gRPC, so those calls stay plain
//! JSON requests in [`super`]. Both share one set of credentials.
//!
//! - Retries are ours, not the crate's: the client is built with `NeverRetry`
//!   and `NeverResume`, and [`GcsBackend::with_retries`] re-sends transient
//!   failures with the S3 backend's backoff, so `bucketfs stats` counts them
//!   like every other backend's.
//! - Reads pinned to a generation send `ifGenerationMatch` and also compare the
//!   generation the answer reports (emulators ignore the parameter).
//! - Writes are single requests of at most one part (large files are
//!   compose-based multipart uploads, see [`super::multipart`]); the crate
//!   checks the CRC32C the server reports against the bytes sent.

use std::collections::BTreeMap;
use std::future::Future;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use google_cloud_storage::client::Storage;
use google_cloud_storage::model::Object;
use google_cloud_storage::model_ext::ReadRange;
use tracing::{debug, Instrument};

use super::super::http::{self, Ctx};
use super::super::{BackendError, BackendResult, GetOptions, GetResult, ObjectMeta};
use super::{Auth, GcsBackend, TARGET};

/// Builds the crate's client for `endpoint` with the backend's credentials.
pub(super) async fn storage_client(endpoint: &str, auth: &Auth) -> BackendResult<Storage> {
    let creds = match auth {
        Auth::Anonymous => google_cloud_auth::credentials::anonymous::Builder::new().build(),
        Auth::Adc(c) => c.clone(),
    };
    Storage::builder()
        .with_endpoint(endpoint)
        .with_credentials(creds)
        .with_retry_policy(google_cloud_gax::retry_policy::NeverRetry)
        .with_read_resume_policy(google_cloud_storage::read_resume_policy::NeverResume)
        // Every write is one request: a payload is at most one part (5 GiB, which GCS
        // takes in one request), and resuming is done per part by the compose-based
        // multipart upload. (The crate's resumable sessions also address the session
        // URL without its port, which breaks emulators on a non-default port.)
        .with_resumable_upload_threshold(usize::MAX)
        .build()
        .await
        .map_err(|e| {
            BackendError::other(format!("cannot build the GCS client: {}", http::redact(&e.to_string())))
        })
}

impl GcsBackend {
    /// The crate names buckets by resource name.
    fn bucket_resource(&self) -> String {
        format!("projects/_/buckets/{}", self.bucket)
    }

    /// Runs `attempt` until it succeeds, fails for good, or has been tried
    /// [`http::MAX_ATTEMPTS`] times; transient failures are counted as retries.
    async fn with_retries<T, F, Fut>(&self, op: &'static str, key: &str, attempt: F) -> BackendResult<T>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = google_cloud_storage::Result<T>>,
    {
        let span = tracing::debug_span!(target: TARGET, "gcs", op, key = %key);
        async {
            let mut n = 1;
            loop {
                let started = std::time::Instant::now();
                match attempt().await {
                    Ok(v) => {
                        debug!(target: TARGET, ms = started.elapsed().as_millis() as u64, "done");
                        return Ok(v);
                    }
                    Err(e) if n < http::MAX_ATTEMPTS && is_transient(&e) => {
                        debug!(target: TARGET, attempt = n, status = ?e.http_status_code(), "transient failure; retrying");
                        self.retries.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(super::super::retry::backoff(n)).await;
                        n += 1;
                    }
                    Err(e) => return Err(self.crate_error(e, op, key)),
                }
            }
        }
        .instrument(span)
        .await
    }

    /// A [`BackendError`] for an error of the crate; no header or token is ever
    /// part of its text, but it goes through [`http::redact`] all the same. The
    /// crate's error is kept as the source (what it says is the message already).
    fn crate_error(&self, e: google_cloud_storage::Error, op: &'static str, key: &str) -> BackendError {
        let ctx = Ctx { target: "gcs", op, key, retries: &self.retries, endpoint: &self.endpoint };
        let text = http::redact(&e.to_string());
        let mapped = match e.http_status_code() {
            Some(status) => http::classify(status, "", &text, ctx),
            None if e.is_authentication() => {
                BackendError::access_denied(format!("{op} {key:?}: cannot authenticate: {text}"))
            }
            None if e.is_timeout() || e.is_connect() || e.is_io() || e.is_transport() => {
                BackendError::unavailable(format!("{op} {key:?} at {}: {text}", self.endpoint))
            }
            None => BackendError::io(format!("{op} {key:?} at {}: {text}", self.endpoint)),
        };
        mapped.with_source(e)
    }

    /// Uploads `data` as one object. `generation_match`: `Some("0")` = must not exist.
    pub(super) async fn upload(
        &self,
        op: &'static str,
        key: &str,
        data: Bytes,
        content_type: Option<&str>,
        metadata: &BTreeMap<String, String>,
        generation_match: Option<&str>,
    ) -> BackendResult<ObjectMeta> {
        let generation = match generation_match {
            Some(g) => Some(parse_generation(g, key)?),
            None => None,
        };
        let bucket = self.bucket_resource();
        let obj = self
            .with_retries(op, key, || {
                let mut w = self
                    .storage
                    .write_object(&bucket, key, data.clone())
                    .set_content_type(content_type.unwrap_or("application/octet-stream"));
                if !metadata.is_empty() {
                    w = w.set_metadata(metadata.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                if let Some(g) = generation {
                    w = w.set_if_generation_match(g);
                }
                // Buffered: the unbuffered single-shot upload sends its checksum as a
                // trailing multipart part, which fake-gcs-server stores as data.
                w.send_buffered()
            })
            .await?;
        Ok(object_meta(obj))
    }

    /// One ranged read (`None`: the whole object), pinned to `opts.if_match` if given.
    pub(super) async fn get_range_impl(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return super::super::empty_read(self, key, opts).await;
        }
        let pinned = match &opts.if_match {
            Some(g) => Some(parse_generation(g, key)?),
            None => None,
        };
        let bucket = self.bucket_resource();
        let read = self
            .with_retries("get", key, || async {
                let mut req = self.storage.read_object(&bucket, key);
                if let Some(r) = &range {
                    req = req.set_read_range(ReadRange::segment(r.start, r.end - r.start));
                }
                if let Some(g) = pinned {
                    req = req.set_if_generation_match(g);
                }
                let mut resp = match req.send().await {
                    Ok(resp) => resp,
                    // The range starts at or past the end.
                    Err(e) if e.http_status_code() == Some(416) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let highlights = resp.object();
                let mut data = Vec::new();
                while let Some(chunk) = resp.next().await {
                    data.extend_from_slice(&chunk?);
                }
                Ok(Some((highlights, Bytes::from(data))))
            })
            .await?;
        let Some((h, data)) = read else {
            // no bytes: the object's metadata
            return super::super::empty_read(self, key, opts).await;
        };
        if pinned.is_some_and(|g| g != h.generation) {
            return Err(BackendError::precondition_failed(key));
        }
        // Servers that omit x-goog-stored-content-length (fake-gcs-server) give no
        // size; a whole-object read knows it anyway.
        let size = match (u64::try_from(h.size).unwrap_or(0), &range) {
            (0, None) => data.len() as u64,
            (size, _) => size,
        };
        let meta = ObjectMeta {
            key: key.to_owned(),
            size,
            etag: h.generation.to_string(),
            // A media download reports no modification time; head and list do.
            last_modified: SystemTime::UNIX_EPOCH,
            content_type: Some(h.content_type).filter(|c| !c.is_empty()),
            user_metadata: h.metadata.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
        };
        Ok(GetResult { meta, data })
    }
}

fn is_transient(e: &google_cloud_storage::Error) -> bool {
    match e.http_status_code() {
        Some(s) => s == 408 || s == 429 || (500..600).contains(&s),
        None => e.is_timeout() || e.is_connect() || e.is_io() || e.is_transport(),
    }
}

/// Our etags on GCS are generations (decimal numbers).
fn parse_generation(g: &str, key: &str) -> BackendResult<i64> {
    g.parse().map_err(|_| BackendError::precondition_failed(key))
}

fn object_meta(o: Object) -> ObjectMeta {
    let modified = o.update_time.or(o.create_time).and_then(|t| SystemTime::try_from(t).ok());
    ObjectMeta {
        key: o.name,
        size: u64::try_from(o.size).unwrap_or(0),
        etag: o.generation.to_string(),
        last_modified: modified.unwrap_or(SystemTime::UNIX_EPOCH),
        content_type: Some(o.content_type).filter(|c| !c.is_empty()),
        user_metadata: o.metadata.into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect(),
    }
}
