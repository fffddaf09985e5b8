//! Multi-range GET: request building, answer classification, the
//! `multipart/byteranges` parser and the per-mount probe state.
//!
//! One `Range: bytes=a-b,c-d,...` request can return many sparse pieces of an
//! object in one round trip, but few S3 servers honour it (see the table in
//! `docs/README-s3.md`). Every answer is therefore classified by its headers:
//!
//! - `206` with `Content-Type: multipart/byteranges; boundary=X`: the real
//!   thing. [`parse_byteranges`] splits the body using each part's
//!   `Content-Range` length (not a boundary search, which binary data could
//!   fool) and then checks that a delimiter follows. [`assemble`] maps parts
//!   back to the requested ranges by offset, so coalesced or reordered parts
//!   are fine; ranges no part covers are reported missing and fetched singly.
//! - `206` with a `Content-Range`: the server served only one range (Ceph RGW
//!   serves the first, silently); keep it and fetch the rest singly.
//! - `200` (no `Content-Range`): the whole object. [`WholeBodyCollector`]
//!   keeps what the requested ranges need and tells the caller to stop as
//!   soon as the next needed byte is more than [`WHOLE_BODY_SKIP_LIMIT`] away,
//!   so a multi-gigabyte object is never streamed to the end.
//! - an error status (400 from s3s, 501 from rclone): fall back to parallel
//!   single-range GETs.
//!
//! The outcome is remembered in [`ProbeState`], once per mount: `Unknown`
//! until the first multi-range request (probing lazily costs nothing on mounts
//! that never read sparsely, and needs no object to exist at mount time),
//! then `Multi` after a correct multipart answer or `Single` after any other,
//! after which no multi-range request is sent again (the read path then fetches
//! each batch as parallel single-range GETs).
//!
//! Alibaba Cloud OSS answers a multi-range GET with the whole object unless the
//! request carries `x-oss-multi-range-behavior: multi-range`, and then takes at
//! most [`OSS_MAX_RANGES`] ranges: [`alibaba_oss`] recognises its endpoints
//! (host `*.aliyuncs.com`), whose multi-range GETs carry [`OSS_MULTI_RANGE_HEADER`]
//! and are cut at that many ranges.

use std::ops::Range;
use std::sync::atomic::{AtomicU8, Ordering};

use bytes::Bytes;

/// Most ranges sent in one request; keeps the header far below servers' 8 KiB limits.
pub const MAX_RANGES_PER_REQUEST: usize = 64;
/// The request header (name, value) without which Alibaba OSS answers a
/// multi-range GET with the whole object.
pub const OSS_MULTI_RANGE_HEADER: (&str, &str) = ("x-oss-multi-range-behavior", "multi-range");
/// Most ranges Alibaba OSS serves in one multi-range GET.
pub const OSS_MAX_RANGES: usize = 50;
/// On a `200` answer, the largest gap we read through rather than drop the connection.
pub const WHOLE_BODY_SKIP_LIMIT: u64 = 2 * 1024 * 1024;
/// A multipart answer may exceed the requested bytes by this much per part (headers).
pub const PART_OVERHEAD_ALLOWANCE: u64 = 4096;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MultiRangeError {
    #[error("Content-Type has no multipart/byteranges boundary")]
    NoBoundary,
    #[error("bad Content-Range {0:?}")]
    BadContentRange(String),
    #[error("malformed multipart/byteranges body: {0}")]
    Malformed(&'static str),
}

/// What the endpoint is known to do with a multi-range request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Unknown,
    Multi,
    Single,
}

/// Per-mount memory of [`Support`]; `Single` is final.
#[derive(Debug, Default)]
pub struct ProbeState(AtomicU8);

impl ProbeState {
    pub fn get(&self) -> Support {
        match self.0.load(Ordering::Relaxed) {
            1 => Support::Multi,
            2 => Support::Single,
            _ => Support::Unknown,
        }
    }
    /// Records a correct multipart answer (unless the endpoint was already found single-range).
    pub fn saw_multi(&self) {
        let _ = self.0.compare_exchange(0, 1, Ordering::Relaxed, Ordering::Relaxed);
    }
    /// Records any answer that was not a correct multipart one; returns true when this changed the state.
    pub fn saw_single(&self) -> bool {
        self.0.swap(2, Ordering::Relaxed) != 2
    }
}

/// Whether `endpoint` (a URL or bare host, as given to `--endpoint`) is Alibaba
/// Cloud OSS: its host is `aliyuncs.com` or ends with `.aliyuncs.com`.
pub fn alibaba_oss(endpoint: Option<&str>) -> bool {
    let Some(e) = endpoint else { return false };
    let rest = e.split_once("://").map_or(e, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match host_port.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host_port,
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "aliyuncs.com" || host.ends_with(".aliyuncs.com")
}

/// Most ranges per multi-range GET to this endpoint.
pub fn max_ranges_per_request(oss: bool) -> usize {
    if oss {
        OSS_MAX_RANGES
    } else {
        MAX_RANGES_PER_REQUEST
    }
}

/// Sorts, drops empty and merges overlapping or touching ranges: the set of
/// byte ranges actually sent, fewest parts for the server to produce.
pub fn normalize(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut v: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    v.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(v.len());
    for r in v {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `bytes=a-b,c-d` (inclusive ends) for non-empty ranges; `None` when there are none.
pub fn range_header(ranges: &[Range<u64>]) -> Option<String> {
    let mut s = String::from("bytes=");
    let mut any = false;
    for r in ranges.iter().filter(|r| r.start < r.end) {
        if any {
            s.push(',');
        }
        s.push_str(&format!("{}-{}", r.start, r.end - 1));
        any = true;
    }
    any.then_some(s)
}

/// How a server answered a multi-range request, from its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `206 multipart/byteranges` with this boundary.
    Multipart { boundary: String },
    /// `206` carrying one range: `start..end` of an object of `total` bytes.
    Single { start: u64, end: u64, total: Option<u64> },
    /// `200`: the whole object from offset 0.
    Whole,
}

/// Classifies a successful answer by `Content-Type` and `Content-Range`.
pub fn classify_answer(
    content_type: Option<&str>,
    content_range: Option<&str>,
) -> Result<Answer, MultiRangeError> {
    if let Some(ct) = content_type {
        if is_byteranges(ct) {
            return boundary_of(ct)
                .map(|boundary| Answer::Multipart { boundary })
                .ok_or(MultiRangeError::NoBoundary);
        }
    }
    match content_range {
        Some(cr) => {
            let (start, end, total) = parse_content_range(cr)?;
            Ok(Answer::Single { start, end, total })
        }
        None => Ok(Answer::Whole),
    }
}

fn is_byteranges(ct: &str) -> bool {
    ct.split(';').next().is_some_and(|t| t.trim().eq_ignore_ascii_case("multipart/byteranges"))
}

/// The `boundary` parameter of a `multipart/byteranges` Content-Type, unquoted.
pub fn boundary_of(ct: &str) -> Option<String> {
    if !is_byteranges(ct) {
        return None;
    }
    for param in ct.split(';').skip(1) {
        let (name, value) = param.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("boundary") {
            let v = value.trim();
            let v = v.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(v);
            return (!v.is_empty() && v.len() <= 200).then(|| v.to_owned());
        }
    }
    None
}

/// Parses `bytes a-b/total` (or `bytes a-b/*`) into an exclusive range and the total size.
pub fn parse_content_range(v: &str) -> Result<(u64, u64, Option<u64>), MultiRangeError> {
    let bad = || MultiRangeError::BadContentRange(v.chars().take(100).collect());
    let rest = v.trim().strip_prefix("bytes").ok_or_else(bad)?.trim_start();
    let (span, total) = rest.split_once('/').ok_or_else(bad)?;
    let (a, b) = span.trim().split_once('-').ok_or_else(bad)?;
    let start: u64 = a.trim().parse().map_err(|_| bad())?;
    let last: u64 = b.trim().parse().map_err(|_| bad())?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse::<u64>().map_err(|_| bad())?),
    };
    if last < start || total.is_some_and(|t| last >= t) {
        return Err(bad());
    }
    // `bytes 0-18446744073709551615/*` from a hostile server: no end fits a u64 (found by tests/backends/fuzz_parsers.rs)
    Ok((start, last.checked_add(1).ok_or_else(bad)?, total))
}

/// One part of a `multipart/byteranges` body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Part {
    pub start: u64,
    pub data: Bytes,
    pub total: Option<u64>,
}

/// Splits a `multipart/byteranges` body (RFC 9110 §14.6; LF-only line ends
/// tolerated). Each part must have a `Content-Range`; its data is a zero-copy
/// slice of `body`.
pub fn parse_byteranges(body: &Bytes, boundary: &str) -> Result<Vec<Part>, MultiRangeError> {
    use MultiRangeError::Malformed;
    let b = &body[..];
    let delim = format!("--{boundary}");
    let delim = delim.as_bytes();
    // The first delimiter may follow a preamble, but must start a line.
    let mut i = find_delimiter(b, delim).ok_or(Malformed("no boundary delimiter"))?;
    let mut parts = Vec::new();
    loop {
        i += delim.len();
        if b[i..].starts_with(b"--") {
            return if parts.is_empty() { Err(Malformed("no parts")) } else { Ok(parts) };
        }
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
            i += 1; // transport padding after a delimiter
        }
        i = eol(b, i).ok_or(Malformed("delimiter not followed by a line end"))?;
        let mut range = None;
        loop {
            let (line, next) = read_line(b, i).ok_or(Malformed("part headers not terminated"))?;
            i = next;
            if line.is_empty() {
                break;
            }
            let line = std::str::from_utf8(line).map_err(|_| Malformed("non-UTF-8 part header"))?;
            let (name, value) = line.split_once(':').ok_or(Malformed("part header without a colon"))?;
            if name.trim().eq_ignore_ascii_case("content-range") {
                range = Some(parse_content_range(value)?);
            }
        }
        let (start, end, total) = range.ok_or(Malformed("part without Content-Range"))?;
        if let Some(Part { total: Some(t0), .. }) = parts.first() {
            if total.is_some_and(|t| t != *t0) {
                return Err(Malformed("parts disagree on the object size"));
            }
        }
        let len = usize::try_from(end - start).map_err(|_| Malformed("part too large"))?;
        let data_end =
            i.checked_add(len).filter(|&e| e <= b.len()).ok_or(Malformed("part data truncated"))?;
        parts.push(Part { start, data: body.slice(i..data_end), total });
        i = eol(b, data_end).ok_or(Malformed("part data longer than its Content-Range"))?;
        if !b[i..].starts_with(delim) {
            return Err(Malformed("part data not followed by a boundary delimiter"));
        }
    }
}

fn find_delimiter(b: &[u8], delim: &[u8]) -> Option<usize> {
    let mut from = 0;
    while from + delim.len() <= b.len() {
        let off = b[from..].windows(delim.len()).position(|w| w == delim)?;
        let at = from + off;
        if at == 0 || b[at - 1] == b'\n' {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Index after a CRLF or LF at `i`.
fn eol(b: &[u8], i: usize) -> Option<usize> {
    if b[i..].starts_with(b"\r\n") {
        Some(i + 2)
    } else if b[i..].starts_with(b"\n") {
        Some(i + 1)
    } else {
        None
    }
}

/// The line starting at `i` without its terminator, and the index after it.
fn read_line(b: &[u8], i: usize) -> Option<(&[u8], usize)> {
    let n = b[i..].iter().position(|&c| c == b'\n')?;
    let line = &b[i..i + n];
    Some((line.strip_suffix(b"\r").unwrap_or(line), i + n + 1))
}

/// For each requested range, its bytes from the parts that cover it, or `None`
/// when no part does (the caller fetches those singly). `total` clamps ranges
/// that pass the end of the object.
pub fn assemble(ranges: &[Range<u64>], parts: &[Part], total: Option<u64>) -> Vec<Option<Bytes>> {
    let total = total.or_else(|| parts.iter().find_map(|p| p.total));
    ranges
        .iter()
        .map(|r| {
            let end = total.map_or(r.end, |t| r.end.min(t));
            if r.start >= end {
                // Empty, or wholly past the end of the object: nothing to read.
                return (r.start >= r.end || total.is_some()).then(Bytes::new);
            }
            parts.iter().find_map(|p| {
                let p_end = p.start + p.data.len() as u64;
                (p.start <= r.start && end <= p_end)
                    .then(|| p.data.slice((r.start - p.start) as usize..(end - p.start) as usize))
            })
        })
        .collect()
}

/// Collects the requested ranges from a whole-object (`200`) body, chunk by
/// chunk, and says when reading further is not worth it.
#[derive(Debug)]
pub struct WholeBodyCollector {
    ranges: Vec<Range<u64>>,
    bufs: Vec<Vec<u8>>,
    pos: u64,
    skip_limit: u64,
}

impl WholeBodyCollector {
    pub fn new(ranges: &[Range<u64>], skip_limit: u64) -> Self {
        WholeBodyCollector {
            ranges: ranges.to_vec(),
            bufs: vec![Vec::new(); ranges.len()],
            pos: 0,
            skip_limit,
        }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Takes the next chunk of the body; returns false when the caller should
    /// stop reading (everything collected, or the next needed byte is too far).
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let (c0, c1) = (self.pos, self.pos + chunk.len() as u64);
        for (r, buf) in self.ranges.iter().zip(self.bufs.iter_mut()) {
            let want = r.start + buf.len() as u64;
            if want < r.end && want >= c0 && want < c1 {
                let to = r.end.min(c1);
                buf.extend_from_slice(&chunk[(want - c0) as usize..(to - c0) as usize]);
            }
        }
        self.pos = c1;
        match self.next_needed() {
            None => false,
            Some(n) => n.saturating_sub(self.pos) <= self.skip_limit,
        }
    }

    fn next_needed(&self) -> Option<u64> {
        self.ranges
            .iter()
            .zip(&self.bufs)
            .filter(|(r, b)| r.start + (b.len() as u64) < r.end)
            .map(|(r, b)| r.start + b.len() as u64)
            .min()
    }

    /// Per range: its bytes, or `None` if not fully read. With `eof`, the body
    /// was read to its end, so short ranges ran past the end of the object.
    pub fn finish(self, eof: bool) -> Vec<Option<Bytes>> {
        let pos = self.pos;
        self.ranges
            .iter()
            .zip(self.bufs)
            .map(|(r, b)| {
                let complete = r.start + b.len() as u64 >= r.end.min(if eof { pos } else { u64::MAX });
                complete.then(|| Bytes::from(b))
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "multirange_tests.rs"]
mod tests;
