//! The S3 backend: any S3-compatible server (AWS S3, MinIO, SeaweedFS, Ceph RGW,
//! moto, ...) through the official AWS SDK for Rust.
//!
//! Design:
//! - One `aws_sdk_s3::Client` per mount, built by [`config::ClientFactory`]
//!   (credential chain, path-style addressing for custom endpoints, short
//!   connect timeout, standard retries from [`retry`]). The client sits behind
//!   a lock only so that it can be swapped when the bucket's region turns out
//!   to differ from the configured one: every request goes through
//!   [`S3Backend::run`], which on a region redirect (`x-amz-bucket-region`)
//!   rebuilds the client for that region and retries once. A wrong region is
//!   thus corrected, never fatal.
//! - Every request runs in a debug span under target `bucketfs::backend::s3`
//!   (enabled by `--debug_s3`) that records the operation, key, outcome and time.
//! - Errors become [`BackendError`] through [`errors`]; no credential ever
//!   reaches a message.
//! - Reads live in `read.rs`: ranged GETs pinned with `If-Match`, and
//!   multi-range GETs sent with the SDK's own `GetObject` (it passes any
//!   `Range` value through and hands back the body as a stream, which is all a
//!   multi-range request needs; see [`multirange`] for the answers handled).
//! - Upload bodies (`PutObject`, `UploadPart`) are sent as `UNSIGNED-PAYLOAD`
//!   unless `--sign-payload`: the request is still signed, its body's SHA-256 is
//!   not. Why: on a CPU without SHA extensions the SDK's SHA-256 was 74 % of the
//!   daemon's CPU while writing (perf, 256 MiB to SeaweedFS, 2026-11-29), which
//!   capped a write at about 30 MB/s on a 2-core machine; rclone and
//!   mountpoint-s3 send unsigned payloads too. TLS (or TCP on plain http) carries
//!   the integrity; `--sign-payload` is for plain-http endpoints across networks
//!   nobody trusts.
//! - Multipart uploads and server-side copies live in `multipart.rs`; the XML
//!   answers the SDK refuses from some servers are parsed in [`xml`].
//!   Conditions of a write (`If-None-Match: *`, `If-Match`) given at
//!   `create_multipart` are remembered per upload id and sent with
//!   `CompleteMultipartUpload`, where S3 evaluates them.

pub mod config;
pub mod errors;
mod multipart;
pub mod multirange;
mod read;
pub mod retry;
pub mod xml;

use std::collections::{BTreeMap, HashMap};
use std::error::Error as StdError;
use std::future::Future;
use std::ops::Range;
use std::sync::{Mutex, RwLock};
use std::time::{Instant, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::types::{Delete, ObjectIdentifier, RequestPayer, ServerSideEncryption, StorageClass};
use aws_sdk_s3::Client;
use bytes::Bytes;
use tracing::{debug, info, warn, Instrument};

pub use config::S3Config;
use config::{ClientFactory, CONNECT_TIMEOUT, SHORT_ATTEMPT_TIMEOUT};
use errors::Ctx;
use multirange::ProbeState;

use super::*;
use crate::object::ErrorKind;

/// Tracing target of every S3 request span.
pub(crate) const TARGET: &str = "bucketfs::backend::s3";
/// Largest number of keys in one DeleteObjects request (an S3 limit).
const DELETE_BATCH: usize = 1000;
const MIB: u64 = 1024 * 1024;

/// The live client and the region it signs for.
struct Conn {
    client: Client,
    region: String,
    endpoint: String,
}

/// Content type and metadata a multipart upload was created with, plus the
/// conditions to send at completion.
#[derive(Clone, Debug)]
struct PendingUpload {
    opts: PutOptions,
}

pub struct S3Backend {
    cfg: S3Config,
    factory: ClientFactory,
    conn: RwLock<Conn>,
    probe: ProbeState,
    pending: Mutex<HashMap<String, PendingUpload>>,
}

impl S3Backend {
    /// Builds the client (credentials, region, addressing); does not contact the bucket.
    pub async fn connect(cfg: S3Config) -> Result<S3Backend, BackendError> {
        if cfg.bucket.is_empty() {
            return Err(BackendError::invalid_argument("empty bucket name"));
        }
        let (factory, region) = ClientFactory::new(&cfg).await?;
        let conn = Conn { client: factory.client(&region), endpoint: cfg.endpoint_label(&region), region };
        Ok(S3Backend {
            cfg,
            factory,
            conn: RwLock::new(conn),
            probe: ProbeState::default(),
            pending: Mutex::new(HashMap::new()),
        })
    }

    /// The region requests are currently signed for.
    pub fn region(&self) -> String {
        self.conn.read().map(|c| c.region.clone()).unwrap_or_default()
    }

    /// What multi-range probing has found so far.
    pub fn multi_range_support(&self) -> multirange::Support {
        self.probe.get()
    }

    pub(crate) fn retry_counter(&self) -> &crate::backend::retry::RetryCounter {
        &self.factory.retries
    }

    fn client(&self) -> Client {
        match self.conn.read() {
            Ok(c) => c.client.clone(),
            Err(p) => p.into_inner().client.clone(),
        }
    }

    fn endpoint(&self) -> String {
        match self.conn.read() {
            Ok(c) => c.endpoint.clone(),
            Err(p) => p.into_inner().endpoint.clone(),
        }
    }

    /// Switches to `region` if it differs from the current one; returns whether it did.
    fn switch_region(&self, region: &str) -> bool {
        let mut c = match self.conn.write() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if c.region == region || region.is_empty() {
            return false;
        }
        info!(target: TARGET, bucket = %self.cfg.bucket, from = %c.region, to = %region, "bucket is in another region; switching");
        c.client = self.factory.client(region);
        c.region = region.to_owned();
        c.endpoint = self.cfg.endpoint_label(region);
        true
    }

    fn map_err<E>(&self, op: &'static str, key: &str, e: SdkError<E>) -> BackendError
    where
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let endpoint = self.endpoint();
        errors::map_sdk_error(e, Ctx { op, key, bucket: &self.cfg.bucket, endpoint: &endpoint })
    }

    /// Runs one SDK request in a debug span, correcting the region once if the
    /// server says the bucket lives elsewhere. Returns the raw SDK result for
    /// callers that look at the status (e.g. 416); most use [`Self::run`].
    async fn run_raw<T, E, F, Fut>(&self, op: &'static str, key: &str, f: F) -> Result<T, SdkError<E>>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        let span = tracing::debug_span!(target: TARGET, "s3", op, key = %key);
        async {
            let started = Instant::now();
            let mut res = f(self.client()).await;
            if let Err(e) = &res {
                if is_region_error(e) {
                    if let Some(r) = errors::bucket_region_hint(e) {
                        if self.switch_region(&r) {
                            res = f(self.client()).await;
                        }
                    }
                }
            }
            let ms = started.elapsed().as_millis() as u64;
            match &res {
                Ok(_) => debug!(target: TARGET, ms, "ok"),
                Err(e) => {
                    let status = e.raw_response().map(|r| r.status().as_u16());
                    let code = match e {
                        SdkError::ServiceError(se) => se.err().code(),
                        _ => None,
                    };
                    debug!(target: TARGET, ms, ?status, code, "failed");
                }
            }
            res
        }
        .instrument(span)
        .await
    }

    /// [`Self::run_raw`] with the error mapped to a [`BackendError`].
    async fn run<T, E, F, Fut>(&self, op: &'static str, key: &str, f: F) -> BackendResult<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, SdkError<E>>>,
        E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    {
        self.run_raw(op, key, f).await.map_err(|e| self.map_err(op, key, e))
    }

    fn payer(&self) -> Option<RequestPayer> {
        self.cfg.requester_pays.then_some(RequestPayer::Requester)
    }

    /// Server-side encryption settings of every write.
    fn sse(&self) -> (Option<ServerSideEncryption>, Option<String>) {
        match &self.cfg.sse_kms {
            Some(k) => (Some(ServerSideEncryption::AwsKms), (!k.is_empty()).then(|| k.clone())),
            None if self.cfg.sse => (Some(ServerSideEncryption::Aes256), None),
            None => (None, None),
        }
    }

    fn storage_class(&self) -> Option<StorageClass> {
        self.cfg.storage_class.as_deref().map(StorageClass::from)
    }

    fn bucket(&self) -> &str {
        &self.cfg.bucket
    }
}

/// Per-request overrides of small or streamed requests: their answer (or its
/// headers) must come within [`SHORT_ATTEMPT_TIMEOUT`]; uploads and copies of
/// gigabytes are left without one.
pub(crate) fn short_timeouts() -> aws_sdk_s3::config::Builder {
    aws_sdk_s3::config::Builder::default().timeout_config(
        aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .operation_attempt_timeout(SHORT_ATTEMPT_TIMEOUT)
            .build(),
    )
}

/// Whether the failure is the server telling us the bucket is in another region.
fn is_region_error<E: ProvideErrorMetadata>(e: &SdkError<E>) -> bool {
    let status = e.raw_response().map(|r| r.status().as_u16());
    let code = match e {
        SdkError::ServiceError(se) => se.err().code(),
        _ => None,
    };
    matches!(status, Some(301 | 307 | 400))
        || matches!(
            code,
            Some("PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException")
        )
}

/// ETags travel quoted; the backend interface keeps them bare.
pub(crate) fn bare_etag(e: Option<&str>) -> String {
    e.unwrap_or_default().trim_matches('"').to_owned()
}

pub(crate) fn system_time(t: Option<&aws_sdk_s3::primitives::DateTime>) -> SystemTime {
    t.and_then(|t| SystemTime::try_from(*t).ok()).unwrap_or(SystemTime::UNIX_EPOCH)
}

pub(crate) fn user_metadata(m: Option<&HashMap<String, String>>) -> BTreeMap<String, String> {
    m.map(|m| m.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect()).unwrap_or_default()
}

fn to_sdk_metadata(m: &BTreeMap<String, String>) -> Option<HashMap<String, String>> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

/// `bucket/key` percent-encoded for `x-amz-copy-source` (slashes kept).
pub(crate) fn copy_source(bucket: &str, key: &str) -> String {
    crate::percent::encode_path(&format!("{bucket}/{key}"))
}

#[async_trait]
impl StorageBackend for S3Backend {
    fn retries(&self) -> u64 {
        self.factory.retries.retries()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "s3",
            // Native only once a server has proven it answers multipart/byteranges.
            multi_range: match self.probe.get() {
                multirange::Support::Multi => MultiRangeMode::Native,
                // the first batch of sparse reads probes the endpoint
                multirange::Support::Unknown => MultiRangeMode::Probe,
                // a single-range server: each batch becomes parallel single-range GETs
                multirange::Support::Single => MultiRangeMode::ParallelSingles,
            },
            parallel_multipart: true,
            min_part_size: 5 * MIB,
            max_part_size: 5 * 1024 * MIB,
            max_parts: 10_000,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: false,
            list_attrs: false,
            // S3 has no request that reads a part of an unfinished upload
            readable_upload_parts: false,
        }
    }

    async fn check_bucket(&self) -> BackendResult<()> {
        let bucket = self.bucket().to_owned();
        let quick = || {
            short_timeouts().retry_config(retry::quick()).timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(CONNECT_TIMEOUT)
                    .operation_attempt_timeout(std::time::Duration::from_secs(5))
                    .operation_timeout(std::time::Duration::from_secs(8))
                    .build(),
            )
        };
        let res = self
            .run_raw("check_bucket", "", |c| {
                c.head_bucket().bucket(&bucket).customize().config_override(quick()).send()
            })
            .await;
        match res {
            Ok(out) => {
                // Auto-detection: the bucket names its region; the configured one may be a guess.
                if let Some(r) = out.bucket_region() {
                    if self.cfg.endpoint.is_none() || self.cfg.region.is_none() {
                        self.switch_region(r);
                    }
                }
                Ok(())
            }
            Err(e) => {
                let status = e.raw_response().map(|r| r.status().as_u16());
                Err(match (status, self.map_err("check_bucket", "", e)) {
                    // HEAD answers have no body, so no NoSuchBucket code: 404 says it.
                    (Some(404), _) => BackendError::no_such_bucket(bucket),
                    (_, e @ BackendError { kind: ErrorKind::Unavailable | ErrorKind::Throttled, .. }) => {
                        e.map_context(|m| format!("bucket {bucket:?}: {m}"))
                    }
                    (_, BackendError { kind: ErrorKind::AccessDenied, .. }) => {
                        BackendError::access_denied(format!(
                            "bucket {bucket:?} at {}: check the credentials ({:?}) or try --no-sign-request",
                            self.endpoint(),
                            self.factory.credentials
                        ))
                    }
                    (_, other) => other,
                })
            }
        }
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let out = self
            .run("head", key, |c| {
                c.head_object()
                    .bucket(self.bucket())
                    .key(key)
                    .set_request_payer(self.payer())
                    .customize()
                    .config_override(short_timeouts())
                    .send()
            })
            .await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: out.content_length().unwrap_or(0).max(0) as u64,
            etag: bare_etag(out.e_tag()),
            last_modified: system_time(out.last_modified()),
            content_type: out.content_type().map(str::to_owned),
            user_metadata: user_metadata(out.metadata()),
        })
    }

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let max_keys = if req.max_keys == 0 { None } else { Some(req.max_keys.min(1000) as i32) };
        let out = self
            .run("list", &req.prefix, |c| {
                c.list_objects_v2()
                    .bucket(self.bucket())
                    .prefix(&req.prefix)
                    .set_delimiter(req.delimiter.clone())
                    .set_continuation_token(req.continuation.clone())
                    .set_max_keys(max_keys)
                    .set_request_payer(self.payer())
                    .customize()
                    .config_override(short_timeouts())
                    .send()
            })
            .await?;
        let objects = out
            .contents()
            .iter()
            .filter_map(|o| {
                Some(ObjectMeta {
                    key: o.key()?.to_owned(),
                    size: o.size().unwrap_or(0).max(0) as u64,
                    etag: bare_etag(o.e_tag()),
                    last_modified: system_time(o.last_modified()),
                    content_type: None,
                    user_metadata: BTreeMap::new(),
                })
            })
            .collect();
        let common_prefixes =
            out.common_prefixes().iter().filter_map(|p| p.prefix().map(str::to_owned)).collect();
        let next_continuation = if out.is_truncated() == Some(true) {
            out.next_continuation_token().map(str::to_owned)
        } else {
            None
        };
        Ok(ListPage { objects, common_prefixes, next_continuation })
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        read::get_range(self, key, range, opts).await
    }

    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        read::get_ranges(self, key, ranges, opts).await
    }

    async fn probe_multi_range(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<()> {
        read::probe(self, key, ranges, opts).await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let size = data.len() as u64;
        let (sse, kms) = self.sse();
        let out = self
            .run("put", key, |c| {
                let req = c
                    .put_object()
                    .bucket(self.bucket())
                    .key(key)
                    .body(data.clone().into())
                    .content_length(size as i64)
                    .set_content_type(opts.content_type.clone())
                    .set_metadata(to_sdk_metadata(&opts.user_metadata))
                    .set_if_none_match(opts.if_none_match_any.then(|| "*".to_owned()))
                    .set_if_match(opts.if_match.as_ref().map(|e| format!("\"{e}\"")))
                    .set_server_side_encryption(sse.clone())
                    .set_ssekms_key_id(kms.clone())
                    .set_storage_class(self.storage_class())
                    .set_request_payer(self.payer())
                    .customize();
                if self.cfg.sign_payload { req } else { req.disable_payload_signing() }.send()
            })
            .await?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size,
            etag: bare_etag(out.e_tag()),
            last_modified: SystemTime::now(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
        })
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let res = self
            .run("delete", key, |c| {
                c.delete_object()
                    .bucket(self.bucket())
                    .key(key)
                    .set_request_payer(self.payer())
                    .customize()
                    .config_override(short_timeouts())
                    .send()
            })
            .await;
        match res {
            Ok(_) | Err(BackendError { kind: ErrorKind::NotFound, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn delete_many(&self, keys: &[String]) -> BackendResult<Vec<(String, BackendError)>> {
        let mut failed = Vec::new();
        for batch in keys.chunks(DELETE_BATCH) {
            let objects: Vec<ObjectIdentifier> =
                batch.iter().filter_map(|k| ObjectIdentifier::builder().key(k).build().ok()).collect();
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| BackendError::invalid_argument(format!("delete_many: {e}")))?;
            let res = self
                .run("delete_many", &batch[0], |c| {
                    c.delete_objects()
                        .bucket(self.bucket())
                        .delete(delete.clone())
                        .set_request_payer(self.payer())
                        .customize()
                        .config_override(short_timeouts())
                        .send()
                })
                .await;
            match res {
                Ok(out) => {
                    let endpoint = self.endpoint();
                    for e in out.errors() {
                        let key = e.key().unwrap_or_default();
                        let ctx = Ctx { op: "delete_many", key, bucket: self.bucket(), endpoint: &endpoint };
                        let err = errors::classify(0, e.code(), e.message(), ctx);
                        if !err.is_not_found() {
                            failed.push((key.to_owned(), err));
                        }
                    }
                }
                // Some S3-compatible servers lack DeleteObjects: delete one by one.
                Err(BackendError { kind: ErrorKind::NotSupported, .. }) => {
                    warn!(target: TARGET, "DeleteObjects not supported by the server; deleting keys one by one");
                    for k in batch {
                        if let Err(e) = self.delete(k).await {
                            failed.push((k.clone(), e));
                        }
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(failed)
    }

    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        multipart::copy(self, src, dst, metadata).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_source_encodes_all_but_unreserved_and_slash() {
        assert_eq!(copy_source("bk", "a/b c+d%é"), "bk/a/b%20c%2Bd%25%C3%A9");
    }

    #[test]
    fn etags_lose_their_quotes() {
        assert_eq!(bare_etag(Some("\"abc-2\"")), "abc-2");
        assert_eq!(bare_etag(None), "");
    }
}
