//! Plumbing shared by the backends that speak plain HTTPS through `reqwest`
//! (Google Cloud Storage's JSON API and Azure Blob's REST API): the client,
//! a retry loop for transient failures, error classification by status, and
//! small encoding helpers.
//!
//! Retries: connection failures, 408, 429 and 5xx answers are retried up to
//! [`MAX_ATTEMPTS`] times with the S3 backend's backoff. Every request these
//! backends send is idempotent or made so by its preconditions (a part upload
//! replaces the same temporary object, a conditional write re-sent after a lost
//! answer fails with a precondition error rather than writing twice), so all of
//! them may be retried. Bodies are `Bytes` and cloned per attempt.
//!
//! Error messages name the operation, key and endpoint, never a header: the
//! credentials travel in headers or in a SAS query string, and URLs are not
//! printed (see [`redact`]).

use std::error::Error as StdError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::{RequestBuilder, Response, StatusCode};
use tracing::debug;

use super::retry::backoff;
use super::BackendError;

pub const MAX_ATTEMPTS: u32 = 4;
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to the response headers; bodies of any size are not cut.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(60);

pub fn client() -> Result<reqwest::Client, BackendError> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(HEADER_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| {
            BackendError::other(format!("cannot build the HTTP client: {}", root_cause(&e)))
                .with_source(e.without_url())
        })
}

/// What a request was about, for spans and error messages.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub target: &'static str,
    pub op: &'static str,
    pub key: &'a str,
    pub endpoint: &'a str,
    /// Counts re-sent attempts, for `StorageBackend::retries` (`bucketfs stats`).
    pub retries: &'a AtomicU64,
}

/// Sends the request built by `build` (called once per attempt), retrying
/// transient failures. Returns the final answer whatever its status; a
/// transport failure after the last attempt becomes `Unavailable`.
pub async fn send<F, Fut>(ctx: Ctx<'_>, build: F) -> Result<Response, BackendError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<RequestBuilder, BackendError>>,
{
    let mut attempt = 1;
    loop {
        let req = build().await?;
        let started = std::time::Instant::now();
        let res = req.send().await;
        let ms = started.elapsed().as_millis() as u64;
        match res {
            Ok(r) if is_transient(r.status()) && attempt < MAX_ATTEMPTS => {
                debug!(target: "bucketfs::backend::http", backend = ctx.target, op = ctx.op, key = ctx.key, ms, status = r.status().as_u16(), attempt, "transient answer; retrying");
            }
            Ok(r) => {
                debug!(target: "bucketfs::backend::http", backend = ctx.target, op = ctx.op, key = ctx.key, ms, status = r.status().as_u16(), "done");
                return Ok(r);
            }
            Err(e) if attempt < MAX_ATTEMPTS && !e.is_builder() => {
                debug!(target: "bucketfs::backend::http", backend = ctx.target, op = ctx.op, key = ctx.key, ms, error = %root_cause(&e), attempt, "request failed; retrying");
            }
            Err(e) => {
                let msg = format!("{} {:?} at {}: {}", ctx.op, ctx.key, ctx.endpoint, root_cause(&e));
                // without_url: the URL may carry a SAS token, and a source is shown by Debug
                return Err(BackendError::unavailable(msg).with_source(e.without_url()));
            }
        }
        ctx.retries.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(backoff(attempt)).await;
        attempt += 1;
    }
}

fn is_transient(s: StatusCode) -> bool {
    s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS || s == StatusCode::REQUEST_TIMEOUT
}

/// Maps an error answer to a backend error by its status; `message` is the
/// server's explanation (already stripped of anything secret by the caller).
pub fn classify(status: u16, code: &str, message: &str, ctx: Ctx<'_>) -> BackendError {
    let msg: String = message.chars().take(200).collect();
    let detail = match (code.is_empty(), msg.is_empty()) {
        (true, true) => format!("{} {:?}: HTTP {status}", ctx.op, ctx.key),
        (true, false) => format!("{} {:?}: HTTP {status}: {msg}", ctx.op, ctx.key),
        (false, true) => format!("{} {:?}: {code} (HTTP {status})", ctx.op, ctx.key),
        (false, false) => format!("{} {:?}: {code} (HTTP {status}): {msg}", ctx.op, ctx.key),
    };
    match status {
        404 => BackendError::not_found(ctx.key),
        409 | 412 => BackendError::precondition_failed(ctx.key),
        401 | 403 => BackendError::access_denied(format!("{detail} at {}", ctx.endpoint)),
        501 => BackendError::not_supported(detail),
        507 => BackendError::no_space(detail),
        400 | 411 | 413 | 416 => BackendError::invalid_argument(detail),
        // GCS's rate limit answer (Azure's is 503 ServerBusy, by code in azure/)
        429 => BackendError::throttled(detail),
        408 | 500..=599 => BackendError::unavailable(detail),
        _ => BackendError::other(detail),
    }
}

/// Reads a whole answer body; a broken body is `Io`.
pub async fn body(r: Response, ctx: Ctx<'_>) -> Result<bytes::Bytes, BackendError> {
    r.bytes().await.map_err(|e| {
        let msg = format!("{} {:?}: body from {} broke: {}", ctx.op, ctx.key, ctx.endpoint, root_cause(&e));
        BackendError::io(msg).with_source(e.without_url())
    })
}

/// The innermost error message ("Connection refused (os error 111)"), which is
/// what a user needs; reqwest's outer layers name the URL, which may carry a SAS.
pub fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    redact(&cur.to_string())
}

/// Removes query strings from URLs in a message (a SAS token is a query string).
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for word in s.split_inclusive(' ') {
        if word.contains("://") {
            if let Some((before, _)) = word.split_once('?') {
                out.push_str(before);
                out.push_str("?… ");
                continue;
            }
        }
        out.push_str(word);
    }
    out
}

/// The shared percent-encoders, re-exported because every URL built here uses them.
pub use crate::percent::{encode, encode_path};

/// `a=1&b=2` with values encoded; `None` values are left out.
pub fn query(pairs: &[(&str, Option<&str>)]) -> String {
    pairs.iter().filter_map(|(k, v)| v.map(|v| format!("{k}={}", encode(v)))).collect::<Vec<_>>().join("&")
}

/// `Range` header value of a half-open range (must not be empty).
pub fn range_value(r: &std::ops::Range<u64>) -> String {
    format!("bytes={}-{}", r.start, r.end - 1)
}

/// The object size after the slash of a `Content-Range: bytes a-b/size`.
pub fn content_range_total(v: Option<&str>) -> Option<u64> {
    v?.rsplit('/').next()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_query_strings() {
        let s =
            redact("error sending request for url (https://a.blob.core.windows.net/c/k?sv=1&sig=SECRET) x");
        assert!(!s.contains("SECRET"), "{s}");
        assert!(s.contains("https://a.blob.core.windows.net/c/k"), "{s}");
    }

    #[test]
    fn statuses_choose_the_kind() {
        let retries = AtomicU64::new(0);
        let ctx =
            Ctx { target: "gcs", op: "put", key: "k", endpoint: "http://127.0.0.1:1", retries: &retries };
        let kind = |status| classify(status, "", "", ctx).kind();
        assert_eq!(kind(429), crate::object::ErrorKind::Throttled);
        assert_eq!(kind(503), crate::object::ErrorKind::Unavailable);
        assert_eq!(kind(412), crate::object::ErrorKind::PreconditionFailed);
        assert_eq!(kind(404), crate::object::ErrorKind::NotFound);
    }

    #[test]
    fn encodings() {
        assert_eq!(query(&[("prefix", Some("a/")), ("x", None), ("d", Some("/"))]), "prefix=a%2F&d=%2F");
        assert_eq!(content_range_total(Some("bytes 2-5/11")), Some(11));
        assert_eq!(range_value(&(2..6)), "bytes=2-5");
    }
}
