//! `bucketfs serve --metrics-address HOST:PORT`: Prometheus metrics of the
//! gateway and its store, on a port of their own.
//!
//! Why a separate listener: the S3 port demands SigV4 on every request,
//! while scrapers expect plain `GET /metrics`; a port of its own can be bound
//! to a private interface without exposing anything unsigned on the S3 one.
//! The metrics carry drive paths and bucket names but never credentials.
//!
//! What is counted, and where:
//! - per request (hooked around the s3s service in `mod.rs` by [`Probe`]): the
//!   S3 API (classified here from method, path, query and copy header, so the
//!   label set is bounded), the status, body bytes in and out as they cross
//!   the socket, and the latency from the request's arrival to the end of its
//!   response body (the body's drop), in a histogram per API;
//! - per scrape (read from the store, see [`render`]): drive state and space,
//!   the progress of replaced-drive heals (their `heal-status.json`), the
//!   scanner's running totals and per-bucket usage (its `usage.json`).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::{Prom, LATENCY_BUCKETS};
use crate::store::monitor::HealStatus;
use crate::store::scanner::{BucketUsage, ScannerStats};
use crate::store::Store;

/// A family rendered from one figure of a record: name, help, and the getter.
type Figure<T, V> = (&'static str, &'static str, fn(&T) -> V);

/// Latency observations of one API.
#[derive(Default)]
struct Histogram {
    /// Per bucket of [`LATENCY_BUCKETS`], then +Inf (not cumulative).
    counts: [u64; LATENCY_BUCKETS.len() + 1],
    sum: f64,
}

/// Request counters of one `bucketfs serve`.
#[derive(Default)]
pub struct GatewayMetrics {
    /// (API, HTTP status or "error") -> requests finished.
    requests: Mutex<BTreeMap<(&'static str, String), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    in_flight: AtomicI64,
}

impl GatewayMetrics {
    fn record(&self, api: &'static str, status: String, secs: f64) {
        *self.requests.lock().unwrap_or_else(|e| e.into_inner()).entry((api, status)).or_default() += 1;
        let mut lat = self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let h = lat.entry(api).or_default();
        let i = LATENCY_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(LATENCY_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += secs;
    }

    /// The request families, in text format.
    fn render_requests(&self, p: &mut Prom) {
        p.family("bucketfs_s3_requests_total", "counter", "S3 requests finished, by API and HTTP status.");
        for ((api, status), n) in self.requests.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            p.sample("bucketfs_s3_requests_total", &[("api", api), ("status", status)], *n as f64);
        }
        p.family("bucketfs_s3_requests_in_flight", "gauge", "S3 requests whose response has not ended yet.");
        p.sample("bucketfs_s3_requests_in_flight", &[], self.in_flight.load(Ordering::Relaxed) as f64);
        p.family(
            "bucketfs_s3_received_bytes_total",
            "counter",
            "Request body bytes received (as sent, aws-chunked framing included).",
        );
        p.sample("bucketfs_s3_received_bytes_total", &[], self.bytes_in.load(Ordering::Relaxed) as f64);
        p.family("bucketfs_s3_sent_bytes_total", "counter", "Response body bytes sent.");
        p.sample("bucketfs_s3_sent_bytes_total", &[], self.bytes_out.load(Ordering::Relaxed) as f64);
        p.family(
            "bucketfs_s3_request_duration_seconds",
            "histogram",
            "Time from a request's arrival to the end of its response body, by API.",
        );
        for (api, h) in self.latency.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            p.histogram(
                "bucketfs_s3_request_duration_seconds",
                &[("api", api)],
                &LATENCY_BUCKETS,
                &h.counts,
                h.sum,
            );
        }
    }
}

/// The whole exposition: requests, then the store's state (blocking: reads
/// small files from the drives).
pub fn render(m: &GatewayMetrics, store: &Store) -> String {
    let mut p = Prom::default();
    m.render_requests(&mut p);
    render_drives(&mut p, store);
    render_heals(&mut p, store);
    render_scanner(&mut p, store);
    render_usage(&mut p, store);
    p.finish()
}

fn render_drives(p: &mut Prom, store: &Store) {
    p.family("bucketfs_drive_state", "gauge", "1 for the drive's current state: online, offline or healing.");
    for (si, set) in store.sets().iter().enumerate() {
        for (slot, d) in set.drives().iter().enumerate() {
            let now = if !set.drive_online(slot) {
                "offline"
            } else if set.is_healing(slot) {
                "healing"
            } else {
                "online"
            };
            let (set_s, drive) = (si.to_string(), d.display().to_string());
            for state in ["online", "offline", "healing"] {
                let labels = [("set", set_s.as_str()), ("drive", drive.as_str()), ("state", state)];
                p.sample("bucketfs_drive_state", &labels, f64::from(u8::from(state == now)));
            }
        }
    }
    let space: Vec<_> = store.drives().iter().map(|d| (d, crate::store::drives::space(d))).collect();
    p.family("bucketfs_drive_total_bytes", "gauge", "Size of the file system holding the drive.");
    for (d, s) in &space {
        if let Some((total, _)) = s {
            p.sample("bucketfs_drive_total_bytes", &[("drive", &d.display().to_string())], *total as f64);
        }
    }
    p.family("bucketfs_drive_free_bytes", "gauge", "Bytes available to bucketfs on the drive's file system.");
    for (d, s) in &space {
        if let Some((_, free)) = s {
            p.sample("bucketfs_drive_free_bytes", &[("drive", &d.display().to_string())], *free as f64);
        }
    }
}

/// Progress of replaced-drive heals, as recorded on the healed drives.
fn render_heals(p: &mut Prom, store: &Store) {
    let found = crate::store::monitor::read_heal_status(store.drives());
    p.family(
        "bucketfs_heal_state",
        "gauge",
        "1 for the state of the last heal of a replaced drive: healing, done, incomplete or stopped.",
    );
    for (d, st) in &found {
        let drive = d.display().to_string();
        for state in ["healing", "done", "incomplete", "stopped"] {
            p.sample(
                "bucketfs_heal_state",
                &[("drive", &drive), ("state", state)],
                f64::from(u8::from(st.state == state)),
            );
        }
    }
    let figures: [Figure<HealStatus, u64>; 4] = [
        ("bucketfs_heal_objects_scanned", "Objects the heal of a replaced drive has visited.", |s| {
            s.objects_scanned
        }),
        ("bucketfs_heal_objects_healed", "Objects the heal of a replaced drive has rewritten.", |s| {
            s.objects_healed
        }),
        ("bucketfs_heal_objects_failed", "Objects the heal of a replaced drive could not repair.", |s| {
            s.objects_failed
        }),
        ("bucketfs_heal_bytes", "Bytes the heal of a replaced drive has rewritten.", |s| s.bytes),
    ];
    for (name, help, get) in figures {
        p.family(name, "gauge", help);
        for (d, st) in &found {
            p.sample(name, &[("drive", &d.display().to_string())], get(st) as f64);
        }
    }
}

/// The scanner's totals since the store was opened, summed over the sets.
fn render_scanner(p: &mut Prom, store: &Store) {
    let sum =
        |get: fn(&ScannerStats) -> u64| -> u64 { store.sets().iter().map(|s| get(&s.scanner_stats)).sum() };
    let counters: [Figure<ScannerStats, u64>; 7] = [
        ("bucketfs_scanner_passes_total", "Scanner passes finished (one per erasure set and pass).", |s| {
            s.passes.load(Ordering::Relaxed)
        }),
        ("bucketfs_scanner_objects_scanned_total", "Objects visited by scanner passes.", |s| {
            s.objects_scanned.load(Ordering::Relaxed)
        }),
        ("bucketfs_scanner_objects_healed_total", "Objects scanner passes repaired.", |s| {
            s.objects_healed.load(Ordering::Relaxed)
        }),
        ("bucketfs_scanner_objects_failed_total", "Objects scanner passes could not repair.", |s| {
            s.objects_failed.load(Ordering::Relaxed)
        }),
        ("bucketfs_scanner_deep_checked_total", "Objects whose every block scanner passes hashed.", |s| {
            s.deep_checked.load(Ordering::Relaxed)
        }),
        (
            "bucketfs_scanner_stale_tmp_removed_total",
            "Stale temporary entries scanner passes removed.",
            |s| s.stale_tmp_removed.load(Ordering::Relaxed),
        ),
        (
            "bucketfs_scanner_uploads_expired_total",
            "Expired multipart uploads scanner passes aborted.",
            |s| s.uploads_expired.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        p.family(name, "counter", help);
        p.sample(name, &[], sum(get) as f64);
    }
    p.family("bucketfs_scanner_running", "gauge", "Erasure sets whose scanner pass is running now.");
    p.sample("bucketfs_scanner_running", &[], sum(|s| s.running.load(Ordering::Relaxed)) as f64);
    p.family(
        "bucketfs_scanner_current_pass_objects",
        "gauge",
        "Objects visited so far by the passes running now.",
    );
    p.sample(
        "bucketfs_scanner_current_pass_objects",
        &[],
        sum(|s| s.current_pass_objects.load(Ordering::Relaxed)) as f64,
    );
    let last = store.sets().iter().map(|s| s.scanner_stats.last_pass_unix.load(Ordering::Relaxed)).max();
    p.family(
        "bucketfs_scanner_last_pass_timestamp_seconds",
        "gauge",
        "When the last scanner pass finished (Unix time; 0 = none since start).",
    );
    p.sample("bucketfs_scanner_last_pass_timestamp_seconds", &[], last.unwrap_or(0) as f64);
}

/// Per-bucket usage as the scanner last recorded it on the drives (this
/// process's passes or an earlier one's: `usage.json` outlives restarts).
fn render_usage(p: &mut Prom, store: &Store) {
    let recs = crate::store::scanner::read_usage(store.drives());
    let mut usage: BTreeMap<String, BucketUsage> = BTreeMap::new();
    for r in &recs {
        for (b, u) in &r.buckets {
            let t = usage.entry(b.clone()).or_default();
            t.objects += u.objects;
            t.bytes += u.bytes;
            t.versions += u.versions;
        }
    }
    let figures: [Figure<BucketUsage, u64>; 3] = [
        ("bucketfs_bucket_objects", "Objects in the bucket, as the scanner last counted.", |u| u.objects),
        ("bucketfs_bucket_bytes", "Bytes of the bucket's objects, as the scanner last counted.", |u| u.bytes),
        ("bucketfs_bucket_versions", "Object versions in the bucket, as the scanner last counted.", |u| {
            u.versions
        }),
    ];
    for (name, help, get) in figures {
        p.family(name, "gauge", help);
        for (b, u) in &usage {
            p.sample(name, &[("bucket", b)], get(u) as f64);
        }
    }
    // The oldest set's record bounds how stale the sums above may be.
    let oldest = recs.iter().map(|r| r.updated_unix).min().unwrap_or(0);
    p.family(
        "bucketfs_usage_updated_timestamp_seconds",
        "gauge",
        "When the oldest erasure set's usage was counted (Unix time; 0 = never).",
    );
    p.sample("bucketfs_usage_updated_timestamp_seconds", &[], oldest as f64);
}

/// The S3 API a request calls, from its method, path (path-style addressing,
/// the only one `serve` offers), query and copy header. Unknown shapes are
/// `Other`, so the label set stays bounded whatever clients send.
pub fn api_name(method: &http::Method, uri: &http::Uri, headers: &http::HeaderMap) -> &'static str {
    use http::Method;
    let path = uri.path().trim_start_matches('/');
    let (bucket, key) = match path.split_once('/') {
        Some((b, k)) => (b, k),
        None => (path, ""),
    };
    let q: Vec<&str> =
        uri.query().unwrap_or("").split('&').map(|kv| kv.split('=').next().unwrap_or("")).collect();
    let has = |name: &str| q.contains(&name);
    let copy = headers.contains_key("x-amz-copy-source");
    if bucket.is_empty() {
        return if method == Method::GET { "ListBuckets" } else { "Other" };
    }
    if key.is_empty() {
        return match *method {
            Method::GET if has("uploads") => "ListMultipartUploads",
            Method::GET if has("location") => "GetBucketLocation",
            Method::GET if has("versioning") => "GetBucketVersioning",
            Method::GET if uri.query().unwrap_or("").split('&').any(|kv| kv == "list-type=2") => {
                "ListObjectsV2"
            }
            Method::GET if q.iter().all(|k| LIST_PARAMS.contains(k)) => "ListObjects",
            Method::HEAD => "HeadBucket",
            Method::PUT if q.iter().all(|k| k.is_empty()) => "CreateBucket",
            Method::DELETE if q.iter().all(|k| k.is_empty()) => "DeleteBucket",
            Method::POST if has("delete") => "DeleteObjects",
            _ => "Other",
        };
    }
    match *method {
        Method::GET if has("uploadId") => "ListParts",
        Method::GET if has("tagging") || has("acl") || has("attributes") => "Other",
        Method::GET => "GetObject",
        Method::HEAD => "HeadObject",
        Method::PUT if has("partNumber") && has("uploadId") => {
            if copy {
                "UploadPartCopy"
            } else {
                "UploadPart"
            }
        }
        Method::PUT if has("tagging") || has("acl") => "Other",
        Method::PUT if copy => "CopyObject",
        Method::PUT => "PutObject",
        Method::POST if has("uploads") => "CreateMultipartUpload",
        Method::POST if has("uploadId") => "CompleteMultipartUpload",
        Method::DELETE if has("uploadId") => "AbortMultipartUpload",
        Method::DELETE => "DeleteObject",
        _ => "Other",
    }
}

/// Query parameters of a ListObjects (v1) request.
const LIST_PARAMS: [&str; 6] = ["", "prefix", "delimiter", "marker", "max-keys", "encoding-type"];

/// One request being measured: started when it arrives, recorded when its
/// response body is dropped (sent in full, or the connection went away).
pub struct Probe {
    metrics: Arc<GatewayMetrics>,
    api: &'static str,
    t0: Instant,
}

impl Probe {
    pub fn start<B>(metrics: &Arc<GatewayMetrics>, req: &http::Request<B>) -> Probe {
        metrics.in_flight.fetch_add(1, Ordering::Relaxed);
        Probe {
            metrics: metrics.clone(),
            api: api_name(req.method(), req.uri(), req.headers()),
            t0: Instant::now(),
        }
    }

    /// The request with its body counted into the received bytes.
    pub fn count_request(&self, req: http::Request<hyper::body::Incoming>) -> http::Request<s3s::Body> {
        let m = self.metrics.clone();
        req.map(|b| s3s::Body::http_body(Counted { inner: Box::pin(b), count: m, inbound: true, done: None }))
    }

    /// The response with its body counted into the sent bytes; the request is
    /// recorded when that body is dropped.
    pub fn finish(self, resp: http::Response<s3s::Body>) -> http::Response<s3s::Body> {
        let status = resp.status().as_u16().to_string();
        let m = self.metrics.clone();
        let done = Some(Done { probe: self, status });
        resp.map(|b| s3s::Body::http_body(Counted { inner: Box::pin(b), count: m, inbound: false, done }))
    }

    /// The service failed without a response (hyper drops the connection).
    pub fn failed(self) {
        drop(Done { probe: self, status: "error".into() });
    }
}

struct Done {
    probe: Probe,
    status: String,
}

impl Drop for Done {
    fn drop(&mut self) {
        let p = &self.probe;
        p.metrics.in_flight.fetch_sub(1, Ordering::Relaxed);
        p.metrics.record(p.api, std::mem::take(&mut self.status), p.t0.elapsed().as_secs_f64());
    }
}

/// A body that adds the length of every data frame passing through to a counter.
struct Counted<B> {
    inner: Pin<Box<B>>,
    count: Arc<GatewayMetrics>,
    inbound: bool,
    /// Recorded on drop (responses only).
    #[allow(dead_code)]
    done: Option<Done>,
}

impl<B> Body for Counted<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                let c = if self.inbound { &self.count.bytes_in } else { &self.count.bytes_out };
                c.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Answers `GET /metrics` (anything else: 404) on `listener` until the process ends.
pub async fn serve_metrics(
    listener: tokio::net::TcpListener,
    metrics: Arc<GatewayMetrics>,
    store: Arc<Store>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("metrics accept failed: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let (metrics, store) = (metrics.clone(), store.clone());
        let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
            let (metrics, store) = (metrics.clone(), store.clone());
            async move {
                let resp = if req.method() == http::Method::GET && req.uri().path() == "/metrics" {
                    let text = tokio::task::spawn_blocking(move || render(&metrics, &store))
                        .await
                        .unwrap_or_else(|e| format!("# rendering failed: {e}\n"));
                    http::Response::builder()
                        .header("content-type", "text/plain; version=0.0.4; charset=utf-8")
                        .body(s3s::Body::from(text))
                } else {
                    http::Response::builder()
                        .status(404)
                        .body(s3s::Body::from("only GET /metrics is served here\n".to_string()))
                };
                resp
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(super::HEADER_READ_TIMEOUT)
            .serve_connection(hyper_util::rt::TokioIo::new(stream), svc);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("metrics connection ended: {e}");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(method: &str, uri: &str, copy: bool) -> &'static str {
        let mut h = http::HeaderMap::new();
        if copy {
            h.insert("x-amz-copy-source", "b/src".parse().unwrap());
        }
        api_name(&method.parse().unwrap(), &uri.parse().unwrap(), &h)
    }

    #[test]
    fn requests_are_named_by_their_s3_api() {
        assert_eq!(api("GET", "/", false), "ListBuckets");
        assert_eq!(api("GET", "/b?list-type=2&prefix=a", false), "ListObjectsV2");
        assert_eq!(api("GET", "/b?prefix=a&marker=x", false), "ListObjects");
        assert_eq!(api("GET", "/b?uploads&prefix=a", false), "ListMultipartUploads");
        assert_eq!(api("GET", "/b?location", false), "GetBucketLocation");
        assert_eq!(api("GET", "/b?policy", false), "Other");
        assert_eq!(api("HEAD", "/b", false), "HeadBucket");
        assert_eq!(api("PUT", "/b", false), "CreateBucket");
        assert_eq!(api("PUT", "/b/", false), "CreateBucket");
        assert_eq!(api("DELETE", "/b", false), "DeleteBucket");
        assert_eq!(api("POST", "/b?delete", false), "DeleteObjects");
        assert_eq!(api("GET", "/b/k/x", false), "GetObject");
        assert_eq!(api("GET", "/b/k?partNumber=2", false), "GetObject");
        assert_eq!(api("GET", "/b/k?uploadId=u", false), "ListParts");
        assert_eq!(api("HEAD", "/b/k", false), "HeadObject");
        assert_eq!(api("PUT", "/b/k", false), "PutObject");
        assert_eq!(api("PUT", "/b/k", true), "CopyObject");
        assert_eq!(api("PUT", "/b/k?partNumber=1&uploadId=u", false), "UploadPart");
        assert_eq!(api("PUT", "/b/k?partNumber=1&uploadId=u", true), "UploadPartCopy");
        assert_eq!(api("POST", "/b/k?uploads", false), "CreateMultipartUpload");
        assert_eq!(api("POST", "/b/k?uploadId=u", false), "CompleteMultipartUpload");
        assert_eq!(api("DELETE", "/b/k?uploadId=u", false), "AbortMultipartUpload");
        assert_eq!(api("DELETE", "/b/k", false), "DeleteObject");
        assert_eq!(api("PATCH", "/b/k", false), "Other");
        assert_eq!(api("POST", "/", false), "Other");
    }

    #[test]
    fn latency_lands_in_its_bucket_and_counts_by_status() {
        let m = GatewayMetrics::default();
        m.record("GetObject", "200".into(), 0.003);
        m.record("GetObject", "200".into(), 20.0);
        m.record("GetObject", "404".into(), 0.001);
        let mut p = Prom::default();
        m.render_requests(&mut p);
        let text = p.finish();
        for line in [
            "bucketfs_s3_requests_total{api=\"GetObject\",status=\"200\"} 2\n",
            "bucketfs_s3_requests_total{api=\"GetObject\",status=\"404\"} 1\n",
            "bucketfs_s3_request_duration_seconds_bucket{api=\"GetObject\",le=\"0.001\"} 1\n",
            "bucketfs_s3_request_duration_seconds_bucket{api=\"GetObject\",le=\"0.0025\"} 1\n",
            "bucketfs_s3_request_duration_seconds_bucket{api=\"GetObject\",le=\"0.005\"} 2\n",
            "bucketfs_s3_request_duration_seconds_bucket{api=\"GetObject\",le=\"10\"} 2\n",
            "bucketfs_s3_request_duration_seconds_bucket{api=\"GetObject\",le=\"+Inf\"} 3\n",
            "bucketfs_s3_request_duration_seconds_count{api=\"GetObject\"} 3\n",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
    }
}
