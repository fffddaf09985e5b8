//! Multi-range GETs against crafted HTTP servers on 127.0.0.1 that answer the
//! way real servers do (see docs/README-s3.md): nginx's `206
//! multipart/byteranges`, Ceph RGW's `206` with only the first range, AWS's
//! and MinIO's `200` with the whole object (of a large object: we must not
//! download it), s3s's `400`. Also: an unreachable endpoint fails fast.
//! The backend reaches them with anonymous requests and path-style URLs.

use crate::s3_support;
use bucketfs::backend::ErrorKind;

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfs::backend::s3::{multirange::Support, S3Backend, S3Config};
use bucketfs::backend::*;
use bytes::Bytes;
use s3_support::*;

#[derive(Clone, Copy, PartialEq)]
enum Mode {
    /// 206 multipart/byteranges, parts in reverse order with adjacent ranges coalesced.
    Nginx,
    /// 206 carrying only the first range.
    FirstRangeOnly,
    /// 200 with the whole object.
    Whole,
    /// 400 InvalidArgument.
    Reject,
    /// A HEAD with ranges answered as nginx would, a GET with ranges with the whole object.
    LyingHead,
    /// Every other GET fails with 503 SlowDown (the first one included); the rest as `FirstRangeOnly`.
    Flaky,
    /// Like AWS for a bucket in eu-central-1: requests signed for another
    /// region get 301 with `x-amz-bucket-region`; then single-range answers.
    Regional,
}

/// Byte `i` of the served object.
fn byte_at(i: u64) -> u8 {
    (i.wrapping_mul(2654435761) >> 7) as u8
}

fn expected(r: &std::ops::Range<u64>, size: u64) -> Vec<u8> {
    (r.start..r.end.min(size)).map(byte_at).collect()
}

struct Crafted {
    endpoint: String,
    /// Body bytes successfully written to sockets.
    served: Arc<AtomicU64>,
    /// GET requests with more than one range.
    multi_requests: Arc<AtomicU64>,
    gets: Arc<AtomicU64>,
}

fn start(mode: Mode, size: u64) -> Crafted {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let served = Arc::new(AtomicU64::new(0));
    let multi_requests = Arc::new(AtomicU64::new(0));
    let gets = Arc::new(AtomicU64::new(0));
    let (s, m, g) = (served.clone(), multi_requests.clone(), gets.clone());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let (s, m, g) = (s.clone(), m.clone(), g.clone());
            std::thread::spawn(move || {
                let _ = serve(conn, mode, size, &s, &m, &g);
            });
        }
    });
    Crafted { endpoint: format!("http://127.0.0.1:{port}"), served, multi_requests, gets }
}

fn parse_ranges(h: &str) -> Vec<(u64, u64)> {
    h.trim()
        .strip_prefix("bytes=")
        .unwrap_or("")
        .split(',')
        .filter_map(|p| {
            let (a, b) = p.trim().split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect()
}

fn write_body(conn: &mut TcpStream, from: u64, to: u64, served: &AtomicU64) -> std::io::Result<()> {
    let mut pos = from;
    while pos < to {
        let n = (to - pos).min(64 * 1024);
        let chunk: Vec<u8> = (pos..pos + n).map(byte_at).collect();
        conn.write_all(&chunk)?;
        served.fetch_add(n, Ordering::Relaxed);
        pos += n;
    }
    Ok(())
}

fn serve(
    mut conn: TcpStream,
    mode: Mode,
    size: u64,
    served: &AtomicU64,
    multi: &AtomicU64,
    gets: &AtomicU64,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    let mut range = None;
    let mut auth = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        if line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            if k.trim().eq_ignore_ascii_case("range") {
                range = Some(v.trim().to_owned());
            }
            if k.trim().eq_ignore_ascii_case("authorization") {
                auth = v.trim().to_owned();
            }
        }
    }
    let method = request_line.split_whitespace().next().unwrap_or("");
    let head = "ETag: \"v1\"\r\nLast-Modified: Sun, 01 Nov 2026 00:00:00 GMT\r\nConnection: close\r\n";
    if mode == Mode::Regional && !auth.contains("/eu-central-1/s3/") {
        let body = if method == "HEAD" {
            ""
        } else {
            "<Error><Code>PermanentRedirect</Code><Message>use the right endpoint</Message></Error>"
        };
        write!(
            conn,
            "HTTP/1.1 301 Moved Permanently\r\nx-amz-bucket-region: eu-central-1\r\nConnection: close\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )?;
        return Ok(());
    }
    let ranges = range.as_deref().map(parse_ranges).unwrap_or_default();
    // A HEAD with several ranges (the probe) is answered as the GET would be, without the body.
    let head_only = method == "HEAD";
    if head_only && ranges.len() < 2 {
        write!(conn, "HTTP/1.1 200 OK\r\n{head}Content-Length: 0\r\n\r\n")?;
        return Ok(());
    }
    let nth_get = if head_only { 1 } else { gets.fetch_add(1, Ordering::Relaxed) };
    if mode == Mode::Flaky && nth_get % 2 == 0 {
        let body = "<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>";
        write!(conn, "HTTP/1.1 503 Slow Down\r\nConnection: close\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len())?;
        return Ok(());
    }
    if ranges.len() > 1 && !head_only {
        multi.fetch_add(1, Ordering::Relaxed);
    }
    let clamp = |(a, b): (u64, u64)| (a, b.min(size - 1));
    let mode = match mode {
        Mode::LyingHead if head_only => Mode::Nginx,
        Mode::LyingHead => Mode::Whole,
        m => m,
    };
    match (ranges.len(), mode) {
        (0, _) | (2.., Mode::Whole | Mode::LyingHead) => {
            write!(conn, "HTTP/1.1 200 OK\r\n{head}Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n")?;
            if head_only {
                return Ok(());
            }
            write_body(&mut conn, 0, size, served)
        }
        (2.., Mode::Reject) => {
            let body = "<?xml version=\"1.0\"?><Error><Code>InvalidArgument</Code><Message>multiple ranges</Message></Error>";
            write!(conn, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\r\n{body}", body.len())
        }
        (1, _) | (2.., Mode::FirstRangeOnly | Mode::Regional | Mode::Flaky) => {
            let (a, b) = clamp(ranges[0]);
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\n{head}Content-Type: application/octet-stream\r\nContent-Range: bytes {a}-{b}/{size}\r\nContent-Length: {}\r\n\r\n",
                b - a + 1
            )?;
            if head_only {
                return Ok(());
            }
            write_body(&mut conn, a, b + 1, served)
        }
        (_, Mode::Nginx) => {
            // Coalesce ranges closer than 100 bytes, then answer in reverse order.
            let mut sorted: Vec<(u64, u64)> =
                ranges.iter().copied().filter(|r| r.0 < size).map(clamp).collect();
            sorted.sort();
            let mut parts: Vec<(u64, u64)> = Vec::new();
            for r in sorted {
                match parts.last_mut() {
                    Some(l) if r.0 <= l.1 + 100 => l.1 = l.1.max(r.1),
                    _ => parts.push(r),
                }
            }
            parts.reverse();
            let boundary = "00000000000000000042";
            let mut body = Vec::new();
            for (a, b) in &parts {
                body.extend_from_slice(
                    format!("\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\nContent-Range: bytes {a}-{b}/{size}\r\n\r\n").as_bytes(),
                );
                body.extend((*a..=*b).map(byte_at));
            }
            body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
            write!(
                conn,
                "HTTP/1.1 206 Partial Content\r\n{head}Content-Type: multipart/byteranges; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )?;
            if head_only {
                return Ok(());
            }
            conn.write_all(&body)?;
            served.fetch_add(body.len() as u64, Ordering::Relaxed);
            Ok(())
        }
    }
}

async fn anonymous(endpoint: &str) -> S3Backend {
    hermetic_env();
    let cfg = S3Config {
        bucket: "bk".into(),
        endpoint: Some(endpoint.into()),
        no_sign_request: true,
        ..Default::default()
    };
    S3Backend::connect(cfg).await.unwrap()
}

fn check(got: &[Bytes], ranges: &[std::ops::Range<u64>], size: u64) {
    assert_eq!(got.len(), ranges.len());
    for (g, r) in got.iter().zip(ranges) {
        assert_eq!(&g[..], &expected(r, size)[..], "range {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_style_byteranges_are_parsed_in_one_request() {
    let size = 1 << 20;
    let srv = start(Mode::Nginx, size);
    let b = anonymous(&srv.endpoint).await;
    b.check_bucket().await.unwrap();
    assert_eq!(b.capabilities().multi_range, MultiRangeMode::Probe, "the first batch probes");
    let ranges = [500_000..500_010, 0..10, 50..60, 1_000_000..1_100_000, 20..30, 9..12, 7..7];
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    check(&got, &ranges, size);
    assert_eq!(srv.gets.load(Ordering::Relaxed), 1, "one request for all ranges");
    assert_eq!(b.multi_range_support(), Support::Multi);
    assert_eq!(b.capabilities().multi_range, MultiRangeMode::Native);
    let pinned = GetOptions { if_match: Some("v1".into()) };
    let got = b.get_ranges("obj", &ranges[..3], &pinned).await.unwrap();
    check(&got, &ranges[..3], size);
    assert_eq!(srv.gets.load(Ordering::Relaxed), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_range_only_answers_are_completed_singly() {
    let size = 100_000;
    let srv = start(Mode::FirstRangeOnly, size);
    let b = anonymous(&srv.endpoint).await;
    let ranges = [10..20, 5000..5100, 99_990..100_100];
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    check(&got, &ranges, size);
    assert_eq!(srv.gets.load(Ordering::Relaxed), 3, "the first range was kept, two fetched singly");
    assert_eq!(b.multi_range_support(), Support::Single);
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    check(&got, &ranges, size);
    assert_eq!(srv.multi_requests.load(Ordering::Relaxed), 1, "never asked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejected_multi_range_falls_back_to_parallel_singles() {
    let size = 100_000;
    let srv = start(Mode::Reject, size);
    let b = anonymous(&srv.endpoint).await;
    let ranges = [10..20, 5000..5100, 70_000..70_001];
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    check(&got, &ranges, size);
    assert_ne!(b.capabilities().multi_range, MultiRangeMode::Native);
    assert_eq!(b.multi_range_support(), Support::Single);
    assert_eq!(
        b.capabilities().multi_range,
        MultiRangeMode::ParallelSingles,
        "--enable-multi-range batches become parallel single-range GETs"
    );
    b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    assert_eq!(srv.multi_requests.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whole_object_answer_of_a_large_object_is_not_downloaded() {
    let size = 1u64 << 30; // 1 GiB, generated on the fly
    let srv = start(Mode::Whole, size);
    let b = anonymous(&srv.endpoint).await;
    let far = 700 << 20;
    let ranges = [0..100, 4096..8192, far..far + 100, size - 10..size + 10];
    let t0 = Instant::now();
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    check(&got, &ranges, size);
    let served = srv.served.load(Ordering::Relaxed);
    eprintln!("served {served} bytes of a {size}-byte object");
    // What we read plus what socket buffers absorbed; far from the 1 GiB body.
    assert!(served < 64 << 20, "served {served} bytes for a few KiB of ranges");
    assert!(t0.elapsed() < Duration::from_secs(20));
    assert_eq!(b.multi_range_support(), Support::Single);
    assert_ne!(b.capabilities().multi_range, MultiRangeMode::Native);
    // Known single-range now: only single GETs from here on.
    b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    assert_eq!(srv.multi_requests.load(Ordering::Relaxed), 1);
}

/// The read path's probe is a HEAD with two ranges: every kind of server is told
/// apart by it without a GET, so none starts sending a whole object.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_probe_tells_every_kind_of_server_apart_without_a_get() {
    let probe = [0..1, 65536..65537];
    for (mode, want) in [
        (Mode::Nginx, Support::Multi),
        (Mode::FirstRangeOnly, Support::Single),
        (Mode::Whole, Support::Single),
        (Mode::Reject, Support::Single),
    ] {
        let srv = start(mode, 1 << 30);
        let b = anonymous(&srv.endpoint).await;
        assert_eq!(b.capabilities().multi_range, MultiRangeMode::Probe);
        b.probe_multi_range("obj", &probe, &GetOptions::default()).await.unwrap();
        assert_eq!(b.multi_range_support(), want);
        assert_eq!(srv.gets.load(Ordering::Relaxed), 0, "no GET was sent");
        assert_eq!(srv.served.load(Ordering::Relaxed), 0, "no byte of the object was sent");
        // answered once: the next probe asks nothing
        b.probe_multi_range("obj", &probe, &GetOptions::default()).await.unwrap();
        assert_eq!(srv.gets.load(Ordering::Relaxed), 0);
    }
    // a HEAD that says yes is checked by the first real answer: a server whose GETs
    // send the whole object after all becomes single-range, and the bytes are right
    let size = 1 << 20;
    let srv = start(Mode::LyingHead, size);
    let b = anonymous(&srv.endpoint).await;
    b.probe_multi_range("obj", &probe, &GetOptions::default()).await.unwrap();
    assert_eq!(b.capabilities().multi_range, MultiRangeMode::Native);
    let ranges = [10..20, 5000..5100, 700_000..700_010];
    check(&b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap(), &ranges, size);
    assert_eq!(b.multi_range_support(), Support::Single);
    assert_eq!(b.capabilities().multi_range, MultiRangeMode::ParallelSingles);
}

/// 503 SlowDown is retried with backoff, and every retry is counted for `bucketfs stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_down_answers_are_retried_and_counted() {
    let size = 10_000;
    let srv = start(Mode::Flaky, size);
    let b = anonymous(&srv.endpoint).await;
    assert_eq!(b.retries(), 0);
    for r in [0..10, 500..600, 9_990..10_000] {
        let got = b.get_range("obj", Some(r.clone()), &GetOptions::default()).await.unwrap();
        assert_eq!(&got.data[..], &expected(&r, size)[..]);
    }
    assert_eq!(srv.gets.load(Ordering::Relaxed), 6, "each GET failed once, then succeeded");
    assert_eq!(b.retries(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_fast_and_names_it() {
    hermetic_env();
    let port = free_port(); // bound then released: nothing listens there
    let endpoint = format!("http://127.0.0.1:{port}");
    let t0 = Instant::now();
    let b = S3Backend::connect(config(&endpoint, "bk")).await.unwrap();
    let e = b.check_bucket().await.unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(5), "took {:?}", t0.elapsed());
    assert!(matches!(e, BackendError { kind: ErrorKind::Unavailable, .. }), "{e:?}");
    let msg = e.to_string();
    assert!(msg.contains(&endpoint), "{msg}");
    assert!(!msg.contains(SECRET_KEY) && !msg.contains(ACCESS_KEY), "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_region_is_corrected_from_the_bucket() {
    let srv = start(Mode::Regional, 1000);
    let cfg = S3Config { region: Some("us-west-2".into()), ..config(&srv.endpoint, "bk") };
    let b = S3Backend::connect(cfg).await.unwrap();
    assert_eq!(b.region(), "us-west-2");
    b.check_bucket().await.expect("corrected, not fatal");
    assert_eq!(b.region(), "eu-central-1");
    let got = b.get_range("obj", Some(0..10), &GetOptions::default()).await.unwrap();
    assert_eq!(&got.data[..], &expected(&(0..10), 1000)[..]);

    // Also when the redirect comes on an ordinary request rather than at mount.
    let b = S3Backend::connect(S3Config { region: Some("ap-south-1".into()), ..config(&srv.endpoint, "bk") })
        .await
        .unwrap();
    let got = b.get_range("obj", Some(5..9), &GetOptions::default()).await.unwrap();
    assert_eq!(&got.data[..], &expected(&(5..9), 1000)[..]);
    assert_eq!(b.region(), "eu-central-1");
}
