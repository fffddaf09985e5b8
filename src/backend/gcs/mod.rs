//! The Google Cloud Storage backend: `gs://bucket[/prefix]`. Object reads and
//! writes go through the official `google-cloud-storage` crate ([`data`]);
//! listing, deleting, composing and copying are JSON API requests over
//! reqwest here, because the crate offers those only through its gRPC
//! `StorageControl` client, which fake-gcs-server and many private endpoints
//! do not speak. Credentials (Application Default Credentials) come from the
//! official `google-cloud-auth` crate and serve both paths.
//!
//! Design:
//! - Versions: an object's `generation` is its [`ObjectMeta::etag`]. Reads
//!   pinned with `GetOptions::if_match` send `ifGenerationMatch` and also check
//!   the `x-goog-generation` of the answer (emulators ignore the parameter), so
//!   a file replaced mid-read fails with `PreconditionFailed`. Writes map
//!   `if_none_match_any` to `ifGenerationMatch=0` and `if_match` to
//!   `ifGenerationMatch=<generation>`.
//! - Multi-range reads: GCS serves one range per request, so `get_ranges` runs
//!   up to [`PARALLEL_GETS`] single-range reads at once; that is as cheap as a
//!   multi-range request in latency, so `Capabilities::multi_range` is true.
//! - Listings carry content type and user metadata (`list_metadata`).
//! - Multipart uploads are emulated with temporary objects and `compose`
//!   (see [`multipart`]); everything under [`RESERVED_PREFIX`] is hidden from
//!   listings.
//! - Credentials: `--no-sign-request` is anonymous. Otherwise ADC
//!   (`GOOGLE_APPLICATION_CREDENTIALS`, gcloud's application-default file, the
//!   metadata server). With `--endpoint` (emulators, private endpoints) the
//!   metadata server is not asked: ADC is used only when a credentials file is
//!   named or present, else requests are anonymous. Tokens never reach a log
//!   or an error.

mod data;
mod multipart;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use google_cloud_auth::credentials::{CacheableResource, Credentials};
use reqwest::{Method, RequestBuilder, Response};
use serde::Deserialize;
use tracing::{debug, info, Instrument};

use super::http::{self, Ctx};
use super::*;
use crate::object::ErrorKind;

pub(crate) const TARGET: &str = "bucketfs::backend::gcs";
use super::marker_multipart::hidden;
pub use super::marker_multipart::RESERVED_PREFIX;
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";
const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.read_write";
/// Single-range reads in flight at once for one `get_ranges` call.
pub const PARALLEL_GETS: usize = 8;
const CREDENTIALS_PROBE_TIMEOUT: Duration = Duration::from_secs(10);
const MIB: u64 = 1024 * 1024;

/// Options of a GCS mount, filled by the CLI.
#[derive(Clone, Debug, Default)]
pub struct GcsConfig {
    pub bucket: String,
    /// `--endpoint URL` (fake-gcs-server, private endpoints); default storage.googleapis.com.
    pub endpoint: Option<String>,
    /// `--no-sign-request`: anonymous requests (public buckets).
    pub anonymous: bool,
}

/// How requests are authorized.
enum Auth {
    Anonymous,
    Adc(Credentials),
}

pub struct GcsBackend {
    bucket: String,
    endpoint: String,
    http: reqwest::Client,
    /// The `google-cloud-storage` client: object reads and writes ([`data`]).
    storage: google_cloud_storage::client::Storage,
    auth: Arc<Auth>,
    retries: std::sync::atomic::AtomicU64,
}

/// An object resource of the JSON API (numbers travel as strings).
#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
pub(crate) struct GcsObject {
    name: String,
    #[serde(default)]
    size: Option<String>,
    #[serde(default)]
    generation: Option<String>,
    #[serde(default)]
    updated: Option<String>,
    #[serde(default)]
    time_created: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct ObjectList {
    #[serde(default)]
    items: Vec<GcsObject>,
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default)]
    next_page_token: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(rename_all = "camelCase")]
struct RewriteResponse {
    #[serde(default)]
    done: bool,
    #[serde(default)]
    rewrite_token: Option<String>,
    #[serde(default)]
    resource: Option<GcsObject>,
}

impl GcsObject {
    fn into_meta(self) -> ObjectMeta {
        let time = self.updated.as_deref().or(self.time_created.as_deref());
        ObjectMeta {
            size: self.size.as_deref().and_then(|s| s.parse().ok()).unwrap_or(0),
            etag: self.generation.unwrap_or_default(),
            last_modified: time.map(parse_rfc3339).unwrap_or(SystemTime::UNIX_EPOCH),
            content_type: self.content_type,
            user_metadata: self
                .metadata
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect(),
            key: self.name,
        }
    }
}

pub(crate) fn parse_rfc3339(s: &str) -> SystemTime {
    s.parse::<jiff::Timestamp>().map(SystemTime::from).unwrap_or(SystemTime::UNIX_EPOCH)
}

impl GcsBackend {
    /// Resolves credentials; does not contact the bucket (see `check_bucket`).
    pub async fn connect(cfg: GcsConfig) -> BackendResult<GcsBackend> {
        if cfg.bucket.is_empty() {
            return Err(BackendError::invalid_argument("empty bucket name"));
        }
        let endpoint = cfg.endpoint.clone().unwrap_or_else(|| DEFAULT_ENDPOINT.to_owned());
        let endpoint = endpoint.trim_end_matches('/').to_owned();
        let auth = resolve_auth(&cfg).await?;
        let storage = data::storage_client(&endpoint, &auth).await?;
        Ok(GcsBackend {
            bucket: cfg.bucket,
            endpoint,
            http: http::client()?,
            storage,
            auth: Arc::new(auth),
            retries: Default::default(),
        })
    }

    /// Creates the bucket (emulators and `bucketfs mb`); `project` is required by real GCS.
    pub async fn create_bucket(&self, project: Option<&str>) -> BackendResult<()> {
        let q = http::query(&[("project", project)]);
        let url = format!("{}/storage/v1/b{}{q}", self.endpoint, if q.is_empty() { "" } else { "?" });
        let body = Bytes::from(serde_json::json!({ "name": self.bucket }).to_string());
        let r = self
            .call_raw("create_bucket", "", Method::POST, &url, |rb| {
                rb.header("content-type", "application/json").body(body.clone())
            })
            .await?;
        match r {
            Ok(_) | Err((409, _)) => Ok(()),
            Err((status, msg)) => Err(http::classify(status, "", &msg, self.ctx("create_bucket", ""))),
        }
    }

    /// Every object under `prefix`, reserved ones included (tests check cleanup with it).
    pub async fn list_raw_for_tests(&self, prefix: &str) -> BackendResult<Vec<ObjectMeta>> {
        multipart::list_all(self, prefix).await
    }

    fn ctx<'a>(&'a self, op: &'static str, key: &'a str) -> Ctx<'a> {
        Ctx { target: "gcs", op, key, retries: &self.retries, endpoint: &self.endpoint }
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/storage/v1/b/{}/o/{}", self.endpoint, http::encode(&self.bucket), http::encode(key))
    }

    fn objects_url(&self) -> String {
        format!("{}/storage/v1/b/{}/o", self.endpoint, http::encode(&self.bucket))
    }

    /// A request with the authorization headers of the moment (tokens are cached
    /// and refreshed by the credentials object).
    async fn request(&self, method: Method, url: &str) -> BackendResult<RequestBuilder> {
        let mut rb = self.http.request(method, url);
        if let Auth::Adc(creds) = &*self.auth {
            match creds.headers(::http::Extensions::new()).await {
                Ok(CacheableResource::New { data, .. }) => rb = rb.headers(data),
                Ok(CacheableResource::NotModified) => {}
                Err(e) => {
                    return Err(BackendError::access_denied(format!(
                        "cannot get a Google access token: {}",
                        http::redact(&e.to_string())
                    )))
                }
            }
        }
        Ok(rb)
    }

    /// Sends `method url` (shaped by `build`) with retries; an error status
    /// becomes a [`BackendError`].
    async fn call<F>(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: &str,
        build: F,
    ) -> BackendResult<Response>
    where
        F: Fn(RequestBuilder) -> RequestBuilder + Send + Sync,
    {
        self.call_raw(op, key, method, url, build)
            .await?
            .map_err(|(status, msg)| http::classify(status, "", &msg, self.ctx(op, key)))
    }

    /// Like [`Self::call`] but hands back an error answer as (status, message).
    async fn call_raw<F>(
        &self,
        op: &'static str,
        key: &str,
        method: Method,
        url: &str,
        build: F,
    ) -> BackendResult<Result<Response, (u16, String)>>
    where
        F: Fn(RequestBuilder) -> RequestBuilder + Send + Sync,
    {
        let span = tracing::debug_span!(target: TARGET, "gcs", op, key = %key);
        async {
            let r = http::send(self.ctx(op, key), || async {
                Ok(build(self.request(method.clone(), url).await?))
            })
            .await?;
            if r.status().is_success() {
                return Ok(Ok(r));
            }
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            debug!(target: TARGET, status, "failed");
            Ok(Err((status, error_message(&text))))
        }
        .instrument(span)
        .await
    }

    /// JSON body of a successful answer.
    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        r: Response,
        op: &'static str,
        key: &str,
    ) -> BackendResult<T> {
        let body = http::body(r, self.ctx(op, key)).await?;
        serde_json::from_slice(&body).map_err(|e| {
            BackendError::io(format!("{op} {key:?}: unexpected answer from {}: {e}", self.endpoint))
                .with_source(e)
        })
    }

    /// One page of a listing (no hiding of the reserved prefix).
    async fn list_raw(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let max = if req.max_keys == 0 { 1000 } else { req.max_keys.min(1000) }.to_string();
        let q = http::query(&[
            ("prefix", Some(&req.prefix)),
            ("delimiter", req.delimiter.as_deref()),
            ("pageToken", req.continuation.as_deref()),
            ("maxResults", Some(&max)),
        ]);
        let url = format!("{}?{q}", self.objects_url());
        let r = self
            .call("list", &req.prefix, Method::GET, &url, |rb| rb)
            .await
            .map_err(|e| self.bucket_error(e))?;
        let page: ObjectList = self.json(r, "list", &req.prefix).await?;
        Ok(ListPage {
            objects: page.items.into_iter().map(GcsObject::into_meta).collect(),
            common_prefixes: page.prefixes,
            next_continuation: page.next_page_token.filter(|t| !t.is_empty()),
        })
    }

    /// A 404 on a bucket-level request means the bucket is missing.
    fn bucket_error(&self, e: BackendError) -> BackendError {
        match e {
            BackendError { kind: ErrorKind::NotFound, .. } => {
                BackendError::no_such_bucket(self.bucket.clone())
            }
            e => e,
        }
    }
}

#[async_trait]
impl StorageBackend for GcsBackend {
    fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "gcs",
            // GCS refuses several ranges in one request; `get_ranges` fans out
            // single-range reads in parallel, which costs no more latency.
            multi_range: MultiRangeMode::ParallelSingles,
            parallel_multipart: true,
            // compose has no minimum source size; 5 MiB keeps request counts sane.
            min_part_size: 5 * MIB,
            max_part_size: 5 * 1024 * MIB,
            // A composite object has at most 1024 components.
            max_parts: multipart::MAX_PARTS,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: true,
            list_attrs: true,
            // each part is a temporary object, readable at its generation
            readable_upload_parts: true,
        }
    }

    async fn check_bucket(&self) -> BackendResult<()> {
        // Listing (not bucket metadata) works for anonymous readers of public buckets too.
        let req = ListRequest::probe();
        match self.list_raw(&req).await {
            Ok(_) => Ok(()),
            Err(e @ BackendError { kind: ErrorKind::AccessDenied, .. }) => Err(e.map_context(|m| format!(
                "bucket {:?}: {m}; check GOOGLE_APPLICATION_CREDENTIALS / gcloud auth application-default login, or try --no-sign-request for a public bucket{}",
                self.bucket,
                if matches!(*self.auth, Auth::Anonymous) { " (no credentials were found; requests were anonymous)" } else { "" }
            ))),
            Err(e @ BackendError { kind: ErrorKind::Unavailable | ErrorKind::Throttled, .. }) => {
                Err(e.map_context(|m| format!("bucket {:?}: {m}", self.bucket)))
            }
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let url = self.object_url(key);
        let r = self.call("head", key, Method::GET, &url, |rb| rb).await?;
        let obj: GcsObject = self.json(r, "head", key).await?;
        Ok(obj.into_meta())
    }

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        // Our continuation is "<last prefix returned>\n<GCS page token>" (object names
        // cannot contain a newline): some servers (fake-gcs-server) repeat every prefix on
        // each page, so a prefix at or before one already returned is dropped. On GCS,
        // whose later pages only hold later prefixes, this removes nothing.
        let (seen, token) = match req.continuation.as_deref().and_then(|c| c.split_once('\n')) {
            Some((seen, token)) => (Some(seen.to_owned()), Some(token.to_owned())),
            None => (None, req.continuation.clone()),
        };
        let inner = ListRequest { continuation: token, ..req.clone() };
        let mut page = self.list_raw(&inner).await?;
        page.objects.retain(|o| !hidden(&o.key));
        page.common_prefixes.retain(|p| !hidden(p) && seen.as_ref().is_none_or(|s| p > s));
        let last = page.common_prefixes.iter().max().cloned().or(seen).unwrap_or_default();
        page.next_continuation = page.next_continuation.map(|t| format!("{last}\n{t}"));
        Ok(page)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        self.get_range_impl(key, range, opts).await
    }

    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        // Built in a loop, not a closure: async_trait futures must be Send.
        let mut reads = Vec::with_capacity(ranges.len());
        for r in ranges {
            let r = r.clone();
            reads.push(async move {
                if r.start >= r.end {
                    return Ok(Bytes::new());
                }
                self.get_range_impl(key, Some(r), opts).await.map(|g| g.data)
            });
        }
        futures::stream::iter(reads).buffered(PARALLEL_GETS).try_collect().await
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let generation = if opts.if_none_match_any { Some("0") } else { opts.if_match.as_deref() };
        self.upload("put", key, data, opts.content_type.as_deref(), &opts.user_metadata, generation).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let url = self.object_url(key);
        match self.call("delete", key, Method::DELETE, &url, |rb| rb).await {
            Ok(_) | Err(BackendError { kind: ErrorKind::NotFound, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        let body = match metadata {
            Some(o) => {
                let mut res = serde_json::json!({});
                if let Some(ct) = &o.content_type {
                    res["contentType"] = ct.clone().into();
                }
                res["metadata"] = serde_json::to_value(&o.user_metadata).unwrap_or_default();
                Bytes::from(res.to_string())
            }
            None => Bytes::new(),
        };
        let base = format!(
            "{}/storage/v1/b/{b}/o/{}/rewriteTo/b/{b}/o/{}",
            self.endpoint,
            http::encode(src),
            http::encode(dst),
            b = http::encode(&self.bucket)
        );
        let mut token: Option<String> = None;
        loop {
            let q = http::query(&[("rewriteToken", token.as_deref())]);
            let url = if q.is_empty() { base.clone() } else { format!("{base}?{q}") };
            let r = self
                .call("copy", src, Method::POST, &url, |rb| {
                    let rb = rb.header("content-type", "application/json");
                    if body.is_empty() {
                        rb.header("content-length", "0")
                    } else {
                        rb.body(body.clone())
                    }
                })
                .await?;
            let rw: RewriteResponse = self.json(r, "copy", src).await?;
            if rw.done {
                return match rw.resource {
                    Some(o) => Ok(o.into_meta()),
                    None => self.head(dst).await,
                };
            }
            token = rw.rewrite_token.filter(|t| !t.is_empty());
            if token.is_none() {
                return Err(BackendError::io(format!("copy {src:?}: rewrite neither done nor continued")));
            }
        }
    }
}

/// The `message` of a JSON API error body (`{"error":{"code":..,"message":..}}`).
fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        #[serde(default)]
        message: String,
    }
    serde_json::from_str::<Outer>(body)
        .map(|o| o.error.message)
        .unwrap_or_else(|_| body.chars().take(200).collect::<String>().trim().to_owned())
}

async fn resolve_auth(cfg: &GcsConfig) -> BackendResult<Auth> {
    if cfg.anonymous {
        return Ok(Auth::Anonymous);
    }
    let named = std::env::var_os("GOOGLE_APPLICATION_CREDENTIALS").filter(|v| !v.is_empty());
    if let Some(path) = &named {
        if !std::path::Path::new(path).is_file() {
            return Err(BackendError::access_denied(format!(
                "GOOGLE_APPLICATION_CREDENTIALS names {}, which is not a readable file",
                std::path::Path::new(path).display()
            )));
        }
    }
    let gcloud_file = gcloud_adc_file().filter(|p| p.is_file());
    if cfg.endpoint.is_some() && named.is_none() && gcloud_file.is_none() {
        info!(target: TARGET, "custom endpoint and no credentials file; using anonymous access");
        return Ok(Auth::Anonymous);
    }
    let creds =
        google_cloud_auth::credentials::Builder::default().with_scopes([SCOPE]).build().map_err(|e| {
            BackendError::access_denied(format!(
                "cannot load Google credentials: {}",
                http::redact(&e.to_string())
            ))
        })?;
    match tokio::time::timeout(CREDENTIALS_PROBE_TIMEOUT, creds.headers(::http::Extensions::new())).await {
        Ok(Ok(_)) => {
            debug!(target: TARGET, "application default credentials loaded");
            Ok(Auth::Adc(creds))
        }
        Ok(Err(e)) if named.is_some() || gcloud_file.is_some() => Err(BackendError::access_denied(format!(
            "the Google credentials file gives no access token: {}",
            http::redact(&e.to_string())
        ))),
        Err(_) if named.is_some() || gcloud_file.is_some() => Err(BackendError::access_denied(
            "timed out getting an access token from the Google credentials file",
        )),
        _ => {
            info!(target: TARGET, "no Google credentials found (no credentials file, no metadata server); using anonymous access");
            Ok(Auth::Anonymous)
        }
    }
}

/// gcloud's `application_default_credentials.json`.
fn gcloud_adc_file() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("CLOUDSDK_CONFIG") {
        return Some(std::path::PathBuf::from(dir).join("application_default_credentials.json"));
    }
    let home = std::env::var_os("HOME")?;
    Some(std::path::PathBuf::from(home).join(".config/gcloud/application_default_credentials.json"))
}
