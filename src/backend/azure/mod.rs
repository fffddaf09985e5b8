//! The Azure Blob Storage backend: `wasb://container[/prefix]` through the Blob
//! REST API over HTTPS (reqwest, rustls), signed with Shared Key, a SAS token or
//! an Entra ID bearer token from the official `azure_identity` crate ([`entra`]).
//!
//! Why no Azure SDK crate for the blobs: the official `azure_storage_blob`
//! (1.x) authorizes with Entra ID token credentials only (no account key, so
//! no Azurite without extra set-up), and the older `azure_storage_blobs`
//! (0.21) is retired upstream and brings its own HTTP stack (`http-types`, an
//! older reqwest) beside ours. Shared Key signing is one HMAC ([`sign`]), and
//! the dozen calls below are plain requests, so a direct client is smaller
//! than either. Tokens, the part worth an SDK, come from `azure_identity`.
//!
//! Design:
//! - Blobs are block blobs. `put` is one Put Blob; multipart uploads are Put
//!   Block + Put Block List (see [`multipart`]), whose uncommitted blocks are
//!   invisible until the list is committed.
//! - Versions: the blob's ETag. Ranged reads send `If-Match`, conditional
//!   writes `If-Match` / `If-None-Match: *`.
//! - Multi-range: Azure serves one range per request, so
//!   `Capabilities::multi_range` is false and the trait's sequential
//!   `get_ranges` is used; with `--enable-multi-range` the read path fetches
//!   each batch as parallel single-range reads (`MultiRangeMode::ParallelSingles`).
//! - User metadata names must be C# identifiers on Azure; other names (like
//!   `bucketfs-mode`) are stored hex-encoded behind [`META_ESCAPE`] and decoded
//!   on the way back, so the filesystem sees the names it wrote.
//! - Errors: `x-ms-error-code` first, then the status; see [`classify`].

pub mod config;
pub mod entra;
mod multipart;

use std::collections::BTreeMap;
use std::ops::Range;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use hmac::{KeyInit, Mac};
use reqwest::{Method, Response};
use serde::Deserialize;
use tracing::{debug, Instrument};

pub use config::{AzureConfig, AzureRequest, Credential};

use super::http::{self, Ctx};
use super::*;
use crate::object::ErrorKind;

pub(crate) const TARGET: &str = "bucketfs::backend::azure";
use super::marker_multipart::hidden;
pub use super::marker_multipart::RESERVED_PREFIX;
const API_VERSION: &str = "2021-12-02";
/// Prefix of a hex-encoded metadata name.
pub const META_ESCAPE: &str = "bfsx_";
const MIB: u64 = 1024 * 1024;
/// Largest Put Blob (single request) body.
const MAX_PUT: u64 = 5000 * MIB;

pub struct AzureBackend {
    pub(crate) cfg: AzureConfig,
    http: reqwest::Client,
    retries: std::sync::atomic::AtomicU64,
}

/// One request before signing: everything the signature covers.
pub(crate) struct Req<'a> {
    method: Method,
    /// Blob name, or `None` for a container-level request.
    blob: Option<&'a str>,
    /// Query parameters (unencoded).
    query: Vec<(&'static str, String)>,
    /// Headers; `x-ms-*` ones are signed as canonicalized headers.
    headers: Vec<(String, String)>,
    body: Bytes,
}

impl<'a> Req<'a> {
    pub(crate) fn new(method: Method, blob: Option<&'a str>) -> Self {
        Req { method, blob, query: Vec::new(), headers: Vec::new(), body: Bytes::new() }
    }
    pub(crate) fn q(mut self, k: &'static str, v: impl Into<String>) -> Self {
        self.query.push((k, v.into()));
        self
    }
    pub(crate) fn h(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.headers.push((k.into().to_ascii_lowercase(), v.into()));
        self
    }
    /// The write conditions of `opts` (`If-None-Match: *`, `If-Match`), on the blob
    /// service and (for creates and renames) the Data Lake service alike.
    pub(crate) fn conditions(mut self, opts: &PutOptions) -> Self {
        if opts.if_none_match_any {
            self = self.h("if-none-match", "*");
        }
        if let Some(e) = &opts.if_match {
            self = self.h("if-match", quote(e));
        }
        self
    }
    pub(crate) fn body(mut self, b: Bytes) -> Self {
        self.body = b;
        self
    }
    fn header(&self, name: &str) -> &str {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("")
    }
}

impl AzureBackend {
    pub fn new(cfg: AzureConfig) -> BackendResult<AzureBackend> {
        Ok(AzureBackend { cfg, http: http::client()?, retries: Default::default() })
    }

    /// Creates the container (Azurite and `bucketfs mb`); an existing one is fine.
    pub async fn create_container(&self) -> BackendResult<()> {
        let r = Req::new(Method::PUT, None).q("restype", "container");
        match self.call_raw("create_container", "", r).await? {
            Ok(_) => Ok(()),
            Err(e) if e.code == "ContainerAlreadyExists" => Ok(()),
            Err(e) => Err(e.into_error(self.ctx("create_container", ""), &self.cfg.container)),
        }
    }

    /// Whether the account has the hierarchical namespace (Get Account Information's
    /// `x-ms-is-hns-enabled`), where `abfs://` has real directories and atomic renames.
    pub async fn hierarchical_namespace(&self) -> BackendResult<bool> {
        let r = Req::new(Method::GET, None).q("restype", "account").q("comp", "properties");
        let resp = self.call("account_info", "", r).await?;
        let v = resp.headers().get("x-ms-is-hns-enabled").and_then(|v| v.to_str().ok());
        Ok(v.is_some_and(|v| v.eq_ignore_ascii_case("true")))
    }

    pub(crate) fn ctx<'a>(&'a self, op: &'static str, key: &'a str) -> Ctx<'a> {
        Ctx { target: "azure", op, key, retries: &self.retries, endpoint: &self.cfg.endpoint }
    }

    /// URL path of the container or a blob in it (encoded).
    pub(crate) fn path(&self, blob: Option<&str>) -> String {
        let base_path = url_path(&self.cfg.endpoint);
        match blob {
            Some(b) => format!("{base_path}/{}/{}", http::encode(&self.cfg.container), http::encode_path(b)),
            None => format!("{base_path}/{}", http::encode(&self.cfg.container)),
        }
    }

    fn blob_url(&self, blob: &str) -> String {
        let origin = &self.cfg.endpoint[..self.cfg.endpoint.len() - url_path(&self.cfg.endpoint).len()];
        let mut url = format!("{origin}{}", self.path(Some(blob)));
        if let Credential::Sas(sas) = &self.cfg.credential {
            url.push('?');
            url.push_str(sas);
        }
        url
    }

    /// The signed request of one attempt (fresh `x-ms-date`).
    async fn build(&self, r: &Req<'_>) -> BackendResult<reqwest::RequestBuilder> {
        let path = self.path(r.blob);
        let origin = &self.cfg.endpoint[..self.cfg.endpoint.len() - url_path(&self.cfg.endpoint).len()];
        let mut query: Vec<String> =
            r.query.iter().map(|(k, v)| format!("{k}={}", http::encode(v))).collect();
        if let Credential::Sas(sas) = &self.cfg.credential {
            query.push(sas.clone());
        }
        let url = if query.is_empty() {
            format!("{origin}{path}")
        } else {
            format!("{origin}{path}?{}", query.join("&"))
        };
        let mut headers = r.headers.clone();
        headers.push(("x-ms-date".into(), httpdate::fmt_http_date(SystemTime::now())));
        headers.push(("x-ms-version".into(), API_VERSION.into()));
        let mut rb = self.http.request(r.method.clone(), url);
        if let Credential::Key(key) = &self.cfg.credential {
            let to_sign = string_to_sign(r, &headers, &self.cfg.account, &path);
            let sig = sign(key, &to_sign);
            headers.push(("authorization".into(), format!("SharedKey {}:{sig}", self.cfg.account)));
        }
        if let Credential::Entra(token) = &self.cfg.credential {
            headers.push(("authorization".into(), token.bearer().await?));
        }
        for (k, v) in &headers {
            rb = rb.header(k.as_str(), v.as_str());
        }
        if !r.body.is_empty() {
            rb = rb.body(r.body.clone());
        } else if matches!(r.method, Method::PUT | Method::POST | Method::PATCH) {
            // Azure wants a Content-Length on every write (a DFS flush is an empty PATCH);
            // reqwest sends none for an empty body.
            rb = rb.header("content-length", "0");
        }
        Ok(rb)
    }

    /// Sends with retries; an error answer becomes a [`BackendError`].
    pub(crate) async fn call(&self, op: &'static str, key: &str, r: Req<'_>) -> BackendResult<Response> {
        self.call_raw(op, key, r).await?.map_err(|e| e.into_error(self.ctx(op, key), &self.cfg.container))
    }

    /// Like [`Self::call`] but hands back an error answer as an [`ErrorAnswer`].
    pub(crate) async fn call_raw(
        &self,
        op: &'static str,
        key: &str,
        r: Req<'_>,
    ) -> BackendResult<Result<Response, ErrorAnswer>> {
        let span = tracing::debug_span!(target: TARGET, "azure", op, key = %key);
        async {
            let resp = http::send(self.ctx(op, key), || self.build(&r)).await?;
            if resp.status().is_success() {
                return Ok(Ok(resp));
            }
            let status = resp.status().as_u16();
            let code =
                resp.headers().get("x-ms-error-code").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let text = resp.text().await.unwrap_or_default();
            debug!(target: TARGET, status, code = %code, "failed");
            Ok(Err(ErrorAnswer { status, code, message: xml_message(&text) }))
        }
        .instrument(span)
        .await
    }

    async fn list_raw(&self, req: &ListRequest, include_metadata: bool) -> BackendResult<ListPage> {
        let max = if req.max_keys == 0 { 1000 } else { req.max_keys.min(5000) };
        let mut r = Req::new(Method::GET, None)
            .q("restype", "container")
            .q("comp", "list")
            .q("prefix", req.prefix.clone())
            .q("maxresults", max.to_string());
        if let Some(d) = &req.delimiter {
            r = r.q("delimiter", d.clone());
        }
        if let Some(m) = &req.continuation {
            r = r.q("marker", m.clone());
        }
        if include_metadata {
            r = r.q("include", "metadata");
        }
        let resp = self.call("list", &req.prefix, r).await?;
        let body = http::body(resp, self.ctx("list", &req.prefix)).await?;
        let text = String::from_utf8_lossy(&body);
        let parsed: EnumerationResults = quick_xml::de::from_str(&text).map_err(|e| {
            BackendError::io(format!(
                "list {:?}: unexpected answer from {}: {e}",
                req.prefix, self.cfg.endpoint
            ))
            .with_source(e)
        })?;
        let mut page = ListPage::default();
        for entry in parsed.blobs.entries {
            match entry {
                BlobEntry::Blob(b) => page.objects.push(b.into_meta()),
                BlobEntry::BlobPrefix(p) => page.common_prefixes.push(p.name),
            }
        }
        page.next_continuation = parsed.next_marker.filter(|m| !m.is_empty());
        Ok(page)
    }

    pub(crate) async fn get_range_impl(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        if range.as_ref().is_some_and(|r| r.start >= r.end) {
            return super::empty_read(self, key, opts).await;
        }
        let mut attempt = 1;
        loop {
            let mut r = Req::new(Method::GET, Some(key));
            if let Some(rg) = &range {
                r = r.h("x-ms-range", http::range_value(rg));
            }
            if let Some(e) = &opts.if_match {
                r = r.h("if-match", quote(e));
            }
            let resp = match self.call_raw("get", key, r).await? {
                Ok(resp) => resp,
                Err(e) if e.status == 416 => return super::empty_read(self, key, opts).await,
                Err(e) => return Err(e.into_error(self.ctx("get", key), &self.cfg.container)),
            };
            let meta = meta_from_headers(key, &resp);
            match resp.bytes().await {
                Ok(data) => return Ok(GetResult { meta, data }),
                Err(e) if attempt < super::retry::BODY_ATTEMPTS => {
                    debug!(target: TARGET, key, attempt, error = %http::root_cause(&e), "GET body broke; retrying");
                    self.retries.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(super::retry::backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    let msg = format!(
                        "get {key:?}: body from {} broke: {}",
                        self.cfg.endpoint,
                        http::root_cause(&e)
                    );
                    // without_url: the URL may carry a SAS token, and Debug shows a source
                    return Err(BackendError::io(msg).with_source(e.without_url()));
                }
            }
        }
    }

    /// Headers of content type, metadata and write conditions.
    fn write_headers<'a>(&self, mut r: Req<'a>, opts: &PutOptions, content_type_header: &str) -> Req<'a> {
        if let Some(ct) = &opts.content_type {
            r = r.h(content_type_header, ct.clone());
        }
        for (k, v) in &opts.user_metadata {
            r = r.h(format!("x-ms-meta-{}", encode_meta_name(k)), v.clone());
        }
        r.conditions(opts)
    }
}

/// The path part of a URL (`http://h:1/acct` -> `/acct`, `https://h` -> ``).
fn url_path(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[after_scheme + i..],
        None => "",
    }
}

pub(crate) fn quote(etag: &str) -> String {
    format!("\"{etag}\"")
}

/// The Shared Key string-to-sign (Blob service, version 2015-02-21 and later).
fn string_to_sign(r: &Req<'_>, headers: &[(String, String)], account: &str, path: &str) -> String {
    let len = if r.body.is_empty() { String::new() } else { r.body.len().to_string() };
    let mut ms: Vec<(String, String)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("x-ms-"))
        .map(|(k, v)| (k.clone(), v.trim().to_owned()))
        .collect();
    ms.sort();
    let mut s = format!(
        "{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n{}\n",
        r.method.as_str(),
        r.header("content-encoding"),
        r.header("content-language"),
        len,
        r.header("content-md5"),
        r.header("content-type"),
        "", // Date: x-ms-date is used
        r.header("if-modified-since"),
        r.header("if-match"),
        r.header("if-none-match"),
        r.header("if-unmodified-since"),
        r.header("range"),
    );
    for (k, v) in ms {
        s.push_str(&format!("{k}:{v}\n"));
    }
    s.push('/');
    s.push_str(account);
    s.push_str(path);
    let mut q: Vec<(String, String)> =
        r.query.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
    q.sort();
    for (k, v) in q {
        s.push_str(&format!("\n{k}:{v}"));
    }
    s
}

/// Base64 HMAC-SHA256 of `s` with the account key.
fn sign(key: &[u8], s: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(s.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// A metadata name as stored on Azure (C# identifier rules).
pub fn encode_meta_name(name: &str) -> String {
    let ident = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if ident && !name.to_ascii_lowercase().starts_with(META_ESCAPE) {
        name.to_owned()
    } else {
        format!("{META_ESCAPE}{}", hex::encode(name.as_bytes()))
    }
}

pub fn decode_meta_name(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    match lower
        .strip_prefix(META_ESCAPE)
        .and_then(|h| hex::decode(h).ok())
        .and_then(|b| String::from_utf8(b).ok())
    {
        Some(n) => n,
        None => lower,
    }
}

pub(crate) fn meta_from_headers(key: &str, r: &Response) -> ObjectMeta {
    let h = r.headers();
    let get = |n: &str| h.get(n).and_then(|v| v.to_str().ok());
    let size = http::content_range_total(get("content-range"))
        .or_else(|| get("content-length").and_then(|v| v.parse().ok()))
        .unwrap_or(0);
    let user_metadata = h
        .iter()
        .filter_map(|(n, v)| {
            Some((decode_meta_name(n.as_str().strip_prefix("x-ms-meta-")?), v.to_str().ok()?.to_owned()))
        })
        .collect();
    ObjectMeta {
        key: key.to_owned(),
        size,
        etag: get("etag").unwrap_or_default().trim_matches('"').to_owned(),
        last_modified: get("last-modified")
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .unwrap_or(SystemTime::UNIX_EPOCH),
        content_type: get("content-type").map(str::to_owned),
        user_metadata,
    }
}

/// What a write of `size` bytes with `opts` stored, as its answer tells (the ETag).
pub(crate) fn written_meta(key: &str, size: u64, answer: &Response, opts: &PutOptions) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size,
        etag: meta_from_headers(key, answer).etag,
        last_modified: SystemTime::now(),
        content_type: opts.content_type.clone(),
        user_metadata: opts.user_metadata.clone(),
    }
}

/// An error answer: status, `x-ms-error-code`, message.
#[derive(Debug)]
pub(crate) struct ErrorAnswer {
    pub(crate) status: u16,
    pub(crate) code: String,
    message: String,
}

impl ErrorAnswer {
    pub(crate) fn into_error(self, ctx: Ctx<'_>, container: &str) -> BackendError {
        classify(self.status, &self.code, &self.message, ctx, container)
    }
}

/// Azure error codes first, then the status.
fn classify(status: u16, code: &str, message: &str, ctx: Ctx<'_>, container: &str) -> BackendError {
    match code {
        // the Data Lake (DFS) service's codes beside the blob service's: abfs shares this
        "ContainerNotFound" | "FilesystemNotFound" => BackendError::no_such_bucket(container),
        "BlobNotFound" | "PathNotFound" | "SourcePathNotFound" => BackendError::not_found(ctx.key),
        "DirectoryNotEmpty" => BackendError::directory_not_empty(format!("{} {:?}", ctx.op, ctx.key)),
        "PathAlreadyExists" => BackendError::precondition_failed(ctx.key),
        "ConditionNotMet" | "BlobAlreadyExists" | "TargetConditionNotMet" | "SourceConditionNotMet" => {
            BackendError::precondition_failed(ctx.key)
        }
        "InvalidBlockList" | "InvalidBlockId" => BackendError::invalid_argument(format!(
            "{} {:?}: {code}: a named part was never uploaded",
            ctx.op, ctx.key
        )),
        "RequestBodyTooLarge" | "InvalidRange" => {
            BackendError::invalid_argument(format!("{} {:?}: {code}", ctx.op, ctx.key))
        }
        // The server's message for auth failures quotes the string it signed; leave it out.
        "AuthenticationFailed"
        | "AuthorizationFailure"
        | "AuthorizationPermissionMismatch"
        | "InvalidAuthenticationInfo"
        | "NoAuthenticationInformation" => BackendError::access_denied(format!(
            "{} {:?}: {code} (HTTP {status}) at {}",
            ctx.op, ctx.key, ctx.endpoint
        )),
        // the account's or partition's request rate is over its target (a 503)
        "ServerBusy" => BackendError::throttled(format!("{} {:?}: {code} (HTTP {status})", ctx.op, ctx.key)),
        "ResourceNotFound" if ctx.key.is_empty() => BackendError::no_such_bucket(container),
        _ => http::classify(status, code, message, ctx),
    }
}

/// The `<Message>` of an Azure error body, first line only.
fn xml_message(body: &str) -> String {
    let m = body.split_once("<Message>").and_then(|(_, rest)| rest.split_once("</Message>")).map(|(m, _)| m);
    m.unwrap_or("").lines().next().unwrap_or("").to_owned()
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: Blobs,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Deserialize, Debug, Default)]
struct Blobs {
    #[serde(rename = "$value", default)]
    entries: Vec<BlobEntry>,
}

#[derive(Deserialize, Debug)]
enum BlobEntry {
    Blob(BlobItem),
    BlobPrefix(PrefixItem),
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct PrefixItem {
    name: String,
}

#[derive(Deserialize, Debug)]
#[serde(rename_all = "PascalCase")]
struct BlobItem {
    name: String,
    properties: BlobProperties,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Deserialize, Debug)]
struct BlobProperties {
    #[serde(rename = "Content-Length", default)]
    content_length: u64,
    #[serde(rename = "Etag", default)]
    etag: String,
    #[serde(rename = "Last-Modified", default)]
    last_modified: String,
    #[serde(rename = "Content-Type", default)]
    content_type: Option<String>,
}

impl BlobItem {
    fn into_meta(self) -> ObjectMeta {
        ObjectMeta {
            size: self.properties.content_length,
            etag: self.properties.etag.trim_matches('"').to_owned(),
            last_modified: httpdate::parse_http_date(&self.properties.last_modified)
                .unwrap_or(SystemTime::UNIX_EPOCH),
            content_type: self.properties.content_type.filter(|c| !c.is_empty()),
            user_metadata: self
                .metadata
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (decode_meta_name(&k), v))
                .collect(),
            key: self.name,
        }
    }
}

#[async_trait]
impl StorageBackend for AzureBackend {
    fn retries(&self) -> u64 {
        self.retries.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "azure",
            // One range per request: `--enable-multi-range` batches become parallel single-range reads.
            multi_range: MultiRangeMode::ParallelSingles,
            parallel_multipart: true,
            // Blocks have no minimum size; 5 MiB keeps request counts sane.
            min_part_size: 5 * MIB,
            max_part_size: multipart::MAX_BLOCK,
            max_parts: multipart::MAX_BLOCKS,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: true,
            list_attrs: true,
            // uncommitted blocks cannot be read
            readable_upload_parts: false,
        }
    }

    async fn check_bucket(&self) -> BackendResult<()> {
        let req = ListRequest::probe();
        match self.list_raw(&req, false).await {
            Ok(_) => Ok(()),
            Err(BackendError { kind: ErrorKind::NotFound, .. }) => {
                Err(BackendError::no_such_bucket(self.cfg.container.clone()))
            }
            Err(e @ BackendError { kind: ErrorKind::AccessDenied, .. }) => {
                let what = match self.cfg.credential {
                    Credential::Entra(_) => {
                        "that the identity has a Storage Blob Data role on the account or container"
                    }
                    _ => "the account name and its key or SAS token",
                };
                Err(e.map_context(|m| {
                    format!(
                        "container {:?} of account {:?}: {m}; check {what} (credentials: {:?})",
                        self.cfg.container, self.cfg.account, self.cfg.credential
                    )
                }))
            }
            Err(e @ BackendError { kind: ErrorKind::Unavailable | ErrorKind::Throttled, .. }) => Err(e
                .map_context(|m| {
                    format!("account {:?}: {m}; check the account name and --endpoint", self.cfg.account)
                })),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let resp = self.call("head", key, Req::new(Method::HEAD, Some(key))).await?;
        Ok(meta_from_headers(key, &resp))
    }

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let mut page = self.list_raw(req, true).await?;
        page.objects.retain(|o| !hidden(&o.key));
        page.common_prefixes.retain(|p| !hidden(p));
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

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let size = data.len() as u64;
        if size > MAX_PUT {
            return Err(BackendError::invalid_argument(format!(
                "put {key:?}: {size} bytes exceed one Put Blob (5000 MiB)"
            )));
        }
        let r = Req::new(Method::PUT, Some(key)).h("x-ms-blob-type", "BlockBlob").body(data);
        let r = self.write_headers(r, opts, "x-ms-blob-content-type");
        let resp = self.call("put", key, r).await?;
        Ok(written_meta(key, size, &resp, opts))
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        match self.call("delete", key, Req::new(Method::DELETE, Some(key))).await {
            Ok(_) | Err(BackendError { kind: ErrorKind::NotFound, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        // Pin the copy to the version we saw, so the metadata returned describes it.
        let source = self.head(src).await?;
        let mut r = Req::new(Method::PUT, Some(dst))
            .h("x-ms-copy-source", self.blob_url(src))
            .h("x-ms-source-if-match", quote(&source.etag));
        if let Some(o) = metadata {
            let plain = PutOptions { user_metadata: o.user_metadata.clone(), ..Default::default() };
            r = self.write_headers(r, &plain, "x-ms-blob-content-type");
        }
        let resp = self.call("copy", src, r).await?;
        let mut status = resp
            .headers()
            .get("x-ms-copy-status")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("success")
            .to_owned();
        // Copies within an account are usually synchronous; poll the rare pending one.
        let t0 = std::time::Instant::now();
        while status == "pending" {
            if t0.elapsed() > Duration::from_secs(3600) {
                return Err(BackendError::unavailable(format!(
                    "copy {src:?} -> {dst:?}: still pending after an hour"
                )));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            let h = self.call("copy", dst, Req::new(Method::HEAD, Some(dst))).await?;
            status = h
                .headers()
                .get("x-ms-copy-status")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("success")
                .to_owned();
        }
        if status != "success" {
            return Err(BackendError::io(format!("copy {src:?} -> {dst:?}: copy status {status}")));
        }
        if let Some(ct) = metadata.and_then(|o| o.content_type.as_ref()) {
            // Copy Blob cannot set the content type; Set Blob Properties does.
            let r = Req::new(Method::PUT, Some(dst))
                .q("comp", "properties")
                .h("x-ms-blob-content-type", ct.clone());
            self.call("copy", dst, r).await?;
        }
        self.head(dst).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_names_round_trip() {
        for n in ["mode", "bucketfs-mode", "a.b", "bfsx_abc", "x_y", "1abc"] {
            let e = encode_meta_name(n);
            assert!(e.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'), "{e}");
            assert_eq!(decode_meta_name(&e), n);
        }
    }

    #[test]
    fn errors_by_code_then_status() {
        let retries = std::sync::atomic::AtomicU64::new(0);
        let ctx =
            Ctx { target: "azure", op: "get", key: "k", endpoint: "http://127.0.0.1:1", retries: &retries };
        let kind = |status, code| classify(status, code, "", ctx, "c").kind();
        assert_eq!(kind(503, "ServerBusy"), ErrorKind::Throttled);
        assert_eq!(kind(503, "ServiceUnavailable"), ErrorKind::Unavailable);
        assert_eq!(kind(404, "ContainerNotFound"), ErrorKind::NoSuchBucket);
        assert_eq!(kind(403, "AuthenticationFailed"), ErrorKind::AccessDenied);
    }

    #[test]
    fn url_paths() {
        assert_eq!(url_path("http://127.0.0.1:10000/devstoreaccount1"), "/devstoreaccount1");
        assert_eq!(url_path("https://acct.blob.core.windows.net"), "");
    }

    #[test]
    fn lists_parse() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="x" ContainerName="c"><Prefix>a/</Prefix><MaxResults>2</MaxResults><Delimiter>/</Delimiter><Blobs><Blob><Name>a/f</Name><Properties><Creation-Time>Sun, 22 Nov 2026 06:00:00 GMT</Creation-Time><Last-Modified>Sun, 22 Nov 2026 06:00:00 GMT</Last-Modified><Etag>0x8DC</Etag><Content-Length>5</Content-Length><Content-Type>text/plain</Content-Type><BlobType>BlockBlob</BlobType></Properties><Metadata><bfsx_6275636b657466732d6d6f6465>644</bfsx_6275636b657466732d6d6f6465></Metadata></Blob><BlobPrefix><Name>a/d/</Name></BlobPrefix></Blobs><NextMarker>tok</NextMarker></EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(r.next_marker.as_deref(), Some("tok"));
        assert_eq!(r.blobs.entries.len(), 2);
        let BlobEntry::Blob(b) = &r.blobs.entries[0] else { panic!() };
        assert_eq!(b.properties.content_length, 5);
        let empty = r#"<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>"#;
        let r: EnumerationResults = quick_xml::de::from_str(empty).unwrap();
        assert!(r.blobs.entries.is_empty());
    }
}
