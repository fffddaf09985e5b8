//! The client's request body, watched on its way into s3s.
//!
//! s3s reads the whole body of an XML request (DeleteObjects, CompleteMultipartUpload,
//! ...) itself, and answers a body that fails to arrive (shorter than its
//! Content-Length, the connection cut) with 500 InternalError, before any handler of
//! ours runs: the fuzzing of issue 14 found it. That is the client's fault, and S3 says
//! 400 IncompleteBody. So the body is handed to s3s through [`Watched`], which remembers
//! a failed read, and [`explain`] turns a server error answered to such a request into
//! that 400. Bodies our handlers read themselves get the same answer from
//! `body::BodyStatus`; a genuine server error on a request whose body arrived whole
//! is left alone.
//!
//! The same wrapper bounds aws-chunked uploads (`x-amz-content-sha256:
//! STREAMING-...`): s3s holds a whole chunk in memory before it can check the
//! chunk's signature, and a chunk may declare up to 4 GiB, so one signed request
//! could make the gateway hold gigabytes (issue 14's memory bound). [`ChunkScan`]
//! follows the framing as the bytes pass and fails the body at the first chunk
//! header declaring more than [`MAX_CHUNK`]; [`explain`] answers that 400
//! InvalidRequest naming the limit. SDKs send chunks of 64 KiB (aws-sdk-rust,
//! minio-go) to 1 MiB (botocore), far below it. Malformed framing is left to s3s,
//! which rejects it.

use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use s3s::{HttpError, HttpResponse};

/// Largest aws-chunked chunk accepted: 16 MiB, 16 to 256 times what SDKs send.
pub const MAX_CHUNK: u64 = 16 << 20;

/// What became of a request body, shared between [`Watched`] and [`explain`].
#[derive(Default)]
pub struct BodyOutcome(AtomicU8);

const FAILED: u8 = 1;
const CHUNK_TOO_LARGE: u8 = 2;

impl BodyOutcome {
    fn set(&self, v: u8) {
        self.0.store(v, Ordering::Relaxed);
    }
}

/// A request body that records whether reading it failed.
pub struct Watched<B> {
    inner: Pin<Box<B>>,
    outcome: Arc<BodyOutcome>,
    chunks: Option<ChunkScan>,
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<s3s::StdError>,
{
    type Data = Bytes;
    type Error = s3s::StdError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, s3s::StdError>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        match r {
            Poll::Ready(Some(Err(e))) => {
                self.outcome.set(FAILED);
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(Some(Ok(frame))) => {
                let this = &mut *self;
                if let (Some(scan), Some(data)) = (this.chunks.as_mut(), frame.data_ref()) {
                    if let Err(size) = scan.feed(data) {
                        this.outcome.set(CHUNK_TOO_LARGE);
                        let msg =
                            format!("aws-chunked chunk of {size} bytes is over the limit of {MAX_CHUNK}");
                        return Poll::Ready(Some(Err(msg.into())));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            other => other.map(|o| o.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Follows aws-chunked framing (`HEX-SIZE[;ext]\r\n DATA \r\n`, ending with a
/// chunk of size 0 and optional trailers) to see every declared chunk size.
#[derive(Debug)]
pub struct ChunkScan(Scan);

#[derive(Debug)]
enum Scan {
    /// The bytes of a chunk header so far (at most [`MAX_HEADER`]).
    Header(Vec<u8>),
    /// Bytes of data and its CRLF still to pass.
    Data(u64),
    /// The final chunk, or framing s3s will reject: nothing more to watch.
    Done,
}

/// s3s rejects chunk headers longer than this itself.
const MAX_HEADER: usize = 1024;

impl Default for ChunkScan {
    fn default() -> Self {
        ChunkScan(Scan::Header(Vec::new()))
    }
}

impl ChunkScan {
    /// Takes the next bytes of the body; `Err(size)` at a header declaring a chunk
    /// over [`MAX_CHUNK`].
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), u64> {
        while !bytes.is_empty() {
            match &mut self.0 {
                Scan::Done => return Ok(()),
                Scan::Data(left) => {
                    let n = (*left).min(bytes.len() as u64);
                    *left -= n;
                    bytes = &bytes[n as usize..];
                    if *left == 0 {
                        self.0 = Scan::Header(Vec::new());
                    }
                }
                Scan::Header(line) => {
                    let Some(nl) = bytes.iter().position(|&b| b == b'\n') else {
                        line.extend_from_slice(bytes);
                        if line.len() > MAX_HEADER {
                            self.0 = Scan::Done;
                        }
                        return Ok(());
                    };
                    line.extend_from_slice(&bytes[..nl]);
                    bytes = &bytes[nl + 1..];
                    self.0 = match declared_size(line) {
                        Some(size) if size > MAX_CHUNK => return Err(size),
                        // +2: the CRLF after the data
                        Some(size) if size > 0 => Scan::Data(size + 2),
                        _ => Scan::Done,
                    };
                }
            }
        }
        Ok(())
    }
}

/// The hex size at the start of a chunk header line; None if it is not one.
fn declared_size(line: &[u8]) -> Option<u64> {
    let end = line.iter().position(|&b| b == b';' || b == b'\r').unwrap_or(line.len());
    let hex = std::str::from_utf8(&line[..end]).ok()?;
    if hex.is_empty() || hex.len() > 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// `req` with its body watched, and what became of the body.
pub fn watch<B>(req: hyper::Request<B>) -> (hyper::Request<s3s::Body>, Arc<BodyOutcome>)
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    B::Error: Into<s3s::StdError>,
{
    let outcome = Arc::new(BodyOutcome::default());
    let streaming =
        req.headers().get("x-amz-content-sha256").is_some_and(|v| v.as_bytes().starts_with(b"STREAMING-"));
    let chunks = streaming.then(ChunkScan::default);
    let o = outcome.clone();
    (req.map(|inner| s3s::Body::http_body(Watched { inner: Box::pin(inner), outcome: o, chunks })), outcome)
}

/// The answer to send: a server error for a request whose body failed to arrive
/// becomes 400 IncompleteBody, any error for a chunk over [`MAX_CHUNK`] 400
/// InvalidRequest.
pub fn explain(
    resp: Result<HttpResponse, HttpError>,
    outcome: &BodyOutcome,
) -> Result<HttpResponse, HttpError> {
    let (server_error, success) = match &resp {
        Ok(r) => (r.status().is_server_error(), r.status().is_success()),
        Err(_) => (true, false),
    };
    let (code, message) = match outcome.0.load(Ordering::Relaxed) {
        CHUNK_TOO_LARGE if !success => (
            "InvalidRequest",
            format!("An aws-chunked chunk is larger than this server accepts ({} MiB)", MAX_CHUNK >> 20),
        ),
        FAILED if server_error => (
            "IncompleteBody",
            "You did not provide the number of bytes specified by the Content-Length HTTP header".to_string(),
        ),
        _ => return resp,
    };
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    let mut r = HttpResponse::new(s3s::Body::from(body));
    *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    Ok(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framing(sizes: &[u64]) -> Vec<u8> {
        let mut out = Vec::new();
        for &n in sizes.iter().chain([0].iter()) {
            out.extend_from_slice(format!("{n:x};chunk-signature={}\r\n", "a".repeat(64)).as_bytes());
            out.extend(std::iter::repeat_n(b'x', n as usize));
            out.extend_from_slice(b"\r\n");
        }
        out
    }

    #[test]
    fn sees_every_chunk_size_whatever_the_frame_cuts() {
        let ok = framing(&[65536, 1, MAX_CHUNK, 300]);
        let mut big = framing(&[65536, MAX_CHUNK + 1]);
        big.truncate(65536 + 200);
        for cut in [1usize, 7, 100, 4096, 1 << 20] {
            let mut scan = ChunkScan::default();
            assert!(ok.chunks(cut).all(|c| scan.feed(c).is_ok()), "cut {cut}");
            assert!(matches!(scan.0, Scan::Done), "cut {cut}: {:?}", scan.0);
            let mut scan = ChunkScan::default();
            let first_err = big.chunks(cut).find_map(|c| scan.feed(c).err());
            assert_eq!(first_err, Some(MAX_CHUNK + 1), "cut {cut}");
        }
    }

    #[test]
    fn leaves_garbage_to_s3s() {
        for body in [&b"zz;chunk-signature=\r\n"[..], b"ffffffffffffffffff\r\n", &[b'1'; 3000]] {
            let mut scan = ChunkScan::default();
            assert!(scan.feed(body).is_ok());
        }
    }
}
