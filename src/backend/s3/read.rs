//! Reads: single-range GETs and multi-range GETs with fallback.
//!
//! A single-range read is a `GetObject` with `Range: bytes=a-b` and, when the
//! caller pinned a version, `If-Match: "etag"`, so an object replaced between
//! two reads of one open file fails with `PreconditionFailed` instead of
//! mixing two versions. A read that starts at or past the end of the object
//! (S3 answers 416) returns no bytes, with the object's metadata from a HEAD.
//! The body is collected after the SDK returned the headers; a connection that
//! breaks during the body is re-requested (the SDK retries only up to the
//! headers), up to [`crate::backend::retry::BODY_ATTEMPTS`] times.
//!
//! A multi-range read goes through `GetObject` too: the SDK signs and sends
//! any `Range` value unchanged and exposes `Content-Type`, `Content-Range` and
//! the body as a stream, which is all [`multirange`] needs to classify the
//! answer and to stop reading a `200` whole-object body early (dropping the
//! stream closes the connection instead of draining it). No raw signed request
//! is needed. The requested ranges are normalized (sorted, merged), sent in
//! chunks of [`multirange::MAX_RANGES_PER_REQUEST`] (50 on Alibaba OSS, whose
//! multi-range GETs also carry `x-oss-multi-range-behavior: multi-range`), and
//! whatever an answer did not cover is fetched with parallel single-range GETs.
//! Once the endpoint is known to be single-range, only the parallel
//! single-range GETs are used.

use std::ops::Range;

use aws_sdk_s3::operation::get_object::GetObjectOutput;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info, warn};

use super::multirange::{self, Answer, Part, Support, WholeBodyCollector};
use super::{bare_etag, short_timeouts, system_time, user_metadata, S3Backend, TARGET};
use crate::backend::*;

/// Single-range GETs in flight at once for one `get_ranges` call.
const PARALLEL_GETS: usize = 8;

pub(super) async fn get_range(
    b: &S3Backend,
    key: &str,
    range: Option<Range<u64>>,
    opts: &GetOptions,
) -> BackendResult<GetResult> {
    if range.as_ref().is_some_and(|r| r.start >= r.end) {
        // HTTP cannot express an empty range; only the metadata (and pin) matter.
        return super::super::empty_read(b, key, opts).await;
    }
    let header = range.as_ref().and_then(|r| multirange::range_header(std::slice::from_ref(r)));
    let mut attempt = 1;
    loop {
        let res = send_get(b, "get", key, header.clone(), opts).await;
        let out = match res {
            Ok(out) => out,
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => {
                // The range starts at or past the end of the object: clamp to nothing.
                return super::super::empty_read(b, key, opts).await;
            }
            Err(e) => return Err(b.map_err("get", key, e)),
        };
        let meta = meta_of(key, &out);
        let len = out.content_length().unwrap_or(0).max(0) as usize;
        match read_body(out.body, len).await {
            Ok(data) => return Ok(GetResult { meta, data }),
            Err(e) if attempt < crate::backend::retry::BODY_ATTEMPTS => {
                debug!(target: TARGET, key, attempt, error = %e, "GET body broke; retrying");
                b.retry_counter().body_retry();
                tokio::time::sleep(crate::backend::retry::backoff(attempt)).await;
                attempt += 1;
            }
            Err(e) => {
                let msg = format!("get {key:?}: body from {} broke: {e}", b.endpoint());
                return Err(BackendError::io(msg).with_source(e));
            }
        }
    }
}

/// The whole body, copied segment by segment into one buffer of `len` bytes
/// (Content-Length) taken from [`crate::buffers`]: each segment is dropped as soon
/// as it is copied, so the HTTP client reuses its read buffer, and the result's
/// buffer is a recycled one (see that module for the CPU this saves).
async fn read_body(
    mut body: aws_sdk_s3::primitives::ByteStream,
    len: usize,
) -> Result<Bytes, aws_sdk_s3::primitives::ByteStreamError> {
    // a lying Content-Length costs a reallocation, never a wrong answer
    let mut buf = crate::buffers::take(len.min(MAX_PREALLOCATED));
    while let Some(segment) = body.next().await {
        buf.extend_from_slice(&segment?);
    }
    Ok(crate::buffers::freeze(buf))
}

/// Largest body buffer allocated up front from a server's Content-Length.
const MAX_PREALLOCATED: usize = 64 * 1024 * 1024;

async fn send_get(
    b: &S3Backend,
    op: &'static str,
    key: &str,
    range: Option<String>,
    opts: &GetOptions,
) -> Result<GetObjectOutput, aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>> {
    // Alibaba OSS sends the whole object for several ranges unless asked not to
    let oss_multi = op == "get_ranges" && multirange::alibaba_oss(b.cfg.endpoint.as_deref());
    b.run_raw(op, key, |c| {
        c.get_object()
            .bucket(b.bucket())
            .key(key)
            .set_range(range.clone())
            .set_if_match(opts.if_match.as_ref().map(|e| format!("\"{e}\"")))
            .set_request_payer(b.payer())
            .customize()
            .config_override(short_timeouts())
            .mutate_request(move |req| {
                if oss_multi {
                    let (name, value) = multirange::OSS_MULTI_RANGE_HEADER;
                    req.headers_mut().insert(name, value);
                }
            })
            .send()
    })
    .await
}

fn meta_of(key: &str, out: &GetObjectOutput) -> ObjectMeta {
    // A 206 carries the object's size after the slash of Content-Range.
    let size = out
        .content_range()
        .and_then(|cr| multirange::parse_content_range(cr).ok())
        .and_then(|(_, _, total)| total)
        .unwrap_or_else(|| out.content_length().unwrap_or(0).max(0) as u64);
    ObjectMeta {
        key: key.to_owned(),
        size,
        etag: bare_etag(out.e_tag()),
        last_modified: system_time(out.last_modified()),
        content_type: out.content_type().map(str::to_owned),
        user_metadata: user_metadata(out.metadata()),
    }
}

pub(super) async fn get_ranges(
    b: &S3Backend,
    key: &str,
    ranges: &[Range<u64>],
    opts: &GetOptions,
) -> BackendResult<Vec<Bytes>> {
    let wanted = multirange::normalize(ranges);
    let mut got: Vec<Option<Bytes>> = vec![None; wanted.len()];
    if wanted.len() > 1 && b.probe.get() != Support::Single {
        // Built in a loop, not a closure: async_trait futures must be Send, and
        // closures over borrowed slices trip the compiler's higher-ranked checks.
        let mut requests = Vec::new();
        let oss = multirange::alibaba_oss(b.cfg.endpoint.as_deref());
        for chunk in wanted.chunks(multirange::max_ranges_per_request(oss)) {
            requests.push(multi_request(b, key, chunk, opts));
        }
        let answers = futures::future::try_join_all(requests).await?;
        got = answers.into_iter().flatten().collect();
    }
    // Whatever is still missing: parallel single-range GETs.
    let mut singles = Vec::new();
    for i in (0..wanted.len()).filter(|&i| got[i].is_none()) {
        let r = wanted[i].clone();
        singles.push(async move { get_range(b, key, Some(r), opts).await.map(|g| (i, g.data)) });
    }
    let fetched: Vec<(usize, Bytes)> =
        futures::stream::iter(singles).buffer_unordered(PARALLEL_GETS).try_collect().await?;
    for (i, d) in fetched {
        got[i] = Some(d);
    }
    // Cut each requested range out of the normalized range that contains it.
    Ok(ranges
        .iter()
        .map(|r| {
            if r.start >= r.end {
                return Bytes::new();
            }
            let i = wanted.partition_point(|w| w.end <= r.start);
            match (wanted.get(i), got.get(i).and_then(|g| g.as_ref())) {
                (Some(w), Some(data)) => {
                    let len = data.len() as u64;
                    let s = (r.start - w.start).min(len);
                    let e = (r.end - w.start).min(len);
                    data.slice(s as usize..e as usize)
                }
                _ => Bytes::new(),
            }
        })
        .collect())
}

/// One multi-range request for `chunk` (normalized ranges); per range its
/// bytes or `None` for "fetch it singly". Only real failures of the object
/// (missing, changed, forbidden) are errors.
async fn multi_request(
    b: &S3Backend,
    key: &str,
    chunk: &[Range<u64>],
    opts: &GetOptions,
) -> BackendResult<Vec<Option<Bytes>>> {
    let none = || vec![None; chunk.len()];
    let out = match send_get(b, "get_ranges", key, multirange::range_header(chunk), opts).await {
        Ok(out) => out,
        Err(e) => {
            let status = e.raw_response().map(|r| r.status().as_u16());
            return match status {
                // 400 (s3s: one range only), 501 (rclone): the server refuses multi-range.
                Some(400 | 501) => {
                    single_range_endpoint(b, &format!("HTTP {}", status.unwrap_or(0)));
                    Ok(none())
                }
                // 416: no requested range is inside the object. A multi-range
                // server says this too, so it proves nothing about support.
                Some(416) => Ok(none()),
                _ => Err(b.map_err("get_ranges", key, e)),
            };
        }
    };
    let answer = multirange::classify_answer(out.content_type(), out.content_range());
    let content_length = out.content_length().filter(|&l| l >= 0).map(|l| l as u64);
    let mut body = out.body;
    match answer {
        Ok(Answer::Multipart { boundary }) => {
            let cap =
                chunk.iter().map(|r| r.end - r.start + multirange::PART_OVERHEAD_ALLOWANCE).sum::<u64>();
            let data = match read_capped(&mut body, cap).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    warn!(target: TARGET, key, "multipart/byteranges answer larger than requested; not trusting it");
                    single_range_endpoint(b, "oversized multipart answer");
                    return Ok(none());
                }
                Err(e) => {
                    debug!(target: TARGET, key, error = %e, "multi-range body broke; fetching singly");
                    return Ok(none());
                }
            };
            match multirange::parse_byteranges(&data, &boundary) {
                Ok(parts) => {
                    b.probe.saw_multi();
                    let got = multirange::assemble(chunk, &parts, None);
                    let missing = got.iter().filter(|g| g.is_none()).count();
                    if missing > 0 {
                        debug!(target: TARGET, key, missing, "multipart answer did not cover every range");
                    }
                    Ok(got)
                }
                Err(e) => {
                    warn!(target: TARGET, key, error = %e, "unparsable multipart/byteranges answer");
                    single_range_endpoint(b, "unparsable multipart answer");
                    Ok(none())
                }
            }
        }
        Ok(Answer::Single { start, end, total }) => {
            // Ceph RGW style: only the first range was served; keep it.
            single_range_endpoint(b, "206 with one range");
            match read_capped(&mut body, end - start).await {
                Ok(Some(data)) if data.len() as u64 == end - start => {
                    Ok(multirange::assemble(chunk, &[Part { start, data, total }], total))
                }
                _ => Ok(none()),
            }
        }
        Ok(Answer::Whole) => {
            single_range_endpoint(b, "200 with the whole object");
            let mut c = WholeBodyCollector::new(chunk, multirange::WHOLE_BODY_SKIP_LIMIT);
            let mut eof = false;
            loop {
                match body.try_next().await {
                    Ok(Some(bytes)) => {
                        if !c.feed(&bytes) {
                            break;
                        }
                    }
                    Ok(None) => {
                        // A body shorter than announced is a broken connection, not the end.
                        eof = content_length.is_none_or(|l| l == c.position());
                        break;
                    }
                    Err(e) => {
                        debug!(target: TARGET, key, error = %e, "whole-object body broke; fetching the rest singly");
                        break;
                    }
                }
            }
            debug!(target: TARGET, key, read = c.position(), ?content_length, "stopped reading a whole-object answer");
            // Dropping `body` here closes the connection without reading the rest.
            drop(body);
            Ok(c.finish(eof))
        }
        Err(e) => {
            warn!(target: TARGET, key, error = %e, "unusable answer to a multi-range GET");
            single_range_endpoint(b, "unusable answer");
            Ok(none())
        }
    }
}

/// Finds out whether the endpoint answers multi-range GETs by asking for `ranges`
/// with a HEAD: a server that serves them answers `206` with a
/// `multipart/byteranges` Content-Type (`bucketfs serve`, nginx); anything else
/// (`200`, a `206` of one range, `400`, `416`, `501`) means one range per request.
///
/// Why not a GET, as the first batch of ranges used to be: most servers answer a
/// multi-range GET with the whole object, and some start reading all of it at once.
/// SeaweedFS spent 0.25-0.9 s of CPU on a 512 MiB object's whole-object answer
/// after we had read 1 byte of it and closed the connection (more the longer the
/// connection stayed open), and issue 11's 64 preads from 8 threads, which probe
/// while they read, took 0.6-0.9 s instead of 0.25 s. A HEAD has no body to read.
///
/// A HEAD that says yes is checked by the first real answer: one that is not
/// multipart turns the endpoint single-range ([`multi_request`]). Alibaba OSS
/// serves several ranges only to a GET carrying its header (and then answers
/// multipart, never the whole object), so it is probed with that GET.
pub(super) async fn probe(
    b: &S3Backend,
    key: &str,
    ranges: &[Range<u64>],
    opts: &GetOptions,
) -> BackendResult<()> {
    let wanted = multirange::normalize(ranges);
    if wanted.len() < 2 || b.probe.get() != Support::Unknown {
        return Ok(());
    }
    if multirange::alibaba_oss(b.cfg.endpoint.as_deref()) {
        return get_ranges(b, key, &wanted, opts).await.map(drop);
    }
    let res = b
        .run_raw("probe_multi_range", key, |c| {
            c.head_object()
                .bucket(b.bucket())
                .key(key)
                .set_range(multirange::range_header(&wanted))
                .set_if_match(opts.if_match.as_ref().map(|e| format!("\"{e}\"")))
                .set_request_payer(b.payer())
                .customize()
                .config_override(short_timeouts())
                .send()
        })
        .await;
    match res {
        Ok(out) => match multirange::classify_answer(out.content_type(), out.content_range()) {
            Ok(Answer::Multipart { .. }) => {
                b.probe.saw_multi();
                info!(target: TARGET, endpoint = %b.endpoint(), "endpoint serves multi-range GETs");
            }
            _ => single_range_endpoint(b, "HEAD with two ranges answered without multipart/byteranges"),
        },
        Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
            // refused (s3s: one range only; rclone: 501), or 416: the server found
            // neither range inside an object that holds both (the read path asks only
            // about ranges inside the object): not a server to send several ranges to
            Some(status @ (400 | 416 | 501)) => {
                single_range_endpoint(b, &format!("HEAD with two ranges: HTTP {status}"))
            }
            _ => return Err(b.map_err("probe_multi_range", key, e)),
        },
    }
    Ok(())
}

fn single_range_endpoint(b: &S3Backend, why: &str) {
    if b.probe.saw_single() {
        info!(target: TARGET, endpoint = %b.endpoint(), why, "endpoint does not serve multi-range GETs; using parallel single-range GETs");
    }
}

/// Reads a whole body unless it exceeds `cap` bytes (then `Ok(None)`).
async fn read_capped(
    body: &mut aws_sdk_s3::primitives::ByteStream,
    cap: u64,
) -> Result<Option<Bytes>, String> {
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.try_next().await.map_err(|e| e.to_string())? {
        if (buf.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf.freeze()))
}
