//! Bridges an async request body (`StreamingBlob`) to the blocking `Read`
//! the store consumes.
//!
//! A tokio task pulls chunks from the body and sends them through a bounded
//! channel of [`DEPTH`] chunks; the store runs in `spawn_blocking` and reads
//! from the other end with `blocking_recv`. Memory per upload is therefore a
//! few body chunks (hyper's are at most tens of KiB), not the object size.
//! A body error reaches the store as an `io::Error`, which aborts the write;
//! so does a client that stops sending for [`BODY_IDLE_TIMEOUT`] (otherwise a
//! stalled upload would hold a blocking thread and its part files forever).
//! The [`BodyStatus`] of a client's body remembers which of the two happened, so
//! the client gets S3's answer (400 IncompleteBody / RequestTimeout) rather than
//! the 500 of the store's aborted write.

use std::io::{self, Read};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
use s3s::{S3Error, S3ErrorCode};
use tokio::sync::mpsc;

/// Chunks in flight between the network task and the store thread.
const DEPTH: usize = 8;
/// Longest wait for the next chunk of a request body.
pub const BODY_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// How a client's request body failed, if it did.
#[derive(Clone, Debug, PartialEq)]
enum Failure {
    /// The body ended early (fewer bytes than its Content-Length, a cut connection,
    /// an undecodable aws-chunked body).
    Incomplete(String),
    /// Nothing arrived for [`BODY_IDLE_TIMEOUT`].
    Stalled,
    /// An aws-chunked chunk's signature is not the one its bytes call for.
    BadChunkSignature,
}

/// s3s's aws-chunked decoder reports a wrong chunk signature as an error whose type is
/// private to it; its text is all there is to tell it from a framing error. A change of
/// that text only turns the 403 into a 400 (still the client's fault).
fn is_chunk_signature_mismatch(e: &s3s::StdError) -> bool {
    e.to_string().contains("SignatureMismatch")
}

/// Whether the request body a [`ChannelReader`] delivers arrived whole; shared with the
/// task that pumps it.
#[derive(Clone, Default)]
pub struct BodyStatus(Arc<Mutex<Option<Failure>>>);

impl BodyStatus {
    fn set(&self, f: Failure) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        slot.get_or_insert(f);
    }

    /// The error to answer for a write that failed with `e`: a failed body is the
    /// client's fault (400, as S3 answers), whatever the store made of it.
    pub fn explain(&self, e: S3Error) -> S3Error {
        let failure = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match failure {
            None => e,
            Some(Failure::Incomplete(why)) => S3Error::with_message(
                S3ErrorCode::IncompleteBody,
                format!("You did not provide the number of bytes specified by the Content-Length HTTP header ({why})"),
            ),
            Some(Failure::BadChunkSignature) => S3Error::with_message(
                S3ErrorCode::SignatureDoesNotMatch,
                "The request signature we calculated does not match the signature you provided (an aws-chunked chunk)",
            ),
            Some(Failure::Stalled) => S3Error::with_message(
                S3ErrorCode::RequestTimeout,
                format!("Your socket connection to the server was not read from or written to within the timeout period ({BODY_IDLE_TIMEOUT:?})"),
            ),
        }
    }
}

/// Starts pumping `body` (none = empty) and returns the reader end.
pub fn reader(body: Option<StreamingBlob>) -> ChannelReader {
    client_reader(body, None).0
}

/// [`reader`] for a client's request body, with the status that tells a failed body
/// from a failed store. `declared` is the body's Content-Length: for an aws-chunked body
/// it is `x-amz-decoded-content-length` (s3s puts it there), and s3s's decoder does not
/// hold the chunks to it: a body cut at a chunk boundary, without its final empty chunk,
/// ends cleanly with fewer bytes. Such a body fails here (400 IncompleteBody), before the
/// store commits it.
pub fn client_reader(body: Option<StreamingBlob>, declared: Option<u64>) -> (ChannelReader, BodyStatus) {
    let (tx, rx) = mpsc::channel(DEPTH);
    let status = BodyStatus::default();
    if let Some(mut body) = body {
        let status = status.clone();
        tokio::spawn(async move {
            let mut received = 0u64;
            loop {
                let item = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
                    Ok(None) => match declared {
                        Some(n) if n != received => {
                            let why = format!("{received} bytes for a declared {n}");
                            status.set(Failure::Incomplete(why.clone()));
                            Err(io::Error::other(format!("request body: {why}")))
                        }
                        _ => break,
                    },
                    Ok(Some(Ok(chunk))) => {
                        received += chunk.len() as u64;
                        match declared {
                            Some(n) if received > n => {
                                let why = format!("more than the declared {n} bytes");
                                status.set(Failure::Incomplete(why.clone()));
                                Err(io::Error::other(format!("request body: {why}")))
                            }
                            _ => Ok(chunk),
                        }
                    }
                    Ok(Some(Err(e))) if is_chunk_signature_mismatch(&e) => {
                        status.set(Failure::BadChunkSignature);
                        Err(io::Error::other(format!("request body: {e}")))
                    }
                    Ok(Some(Err(e))) => {
                        status.set(Failure::Incomplete(e.to_string()));
                        Err(io::Error::other(format!("request body: {e}")))
                    }
                    Err(_) => {
                        status.set(Failure::Stalled);
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            format!("request body: nothing received for {BODY_IDLE_TIMEOUT:?}"),
                        ))
                    }
                };
                let failed = item.is_err();
                // The store stopped reading (it failed): nothing left to do.
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    (ChannelReader { rx, cur: Bytes::new() }, status)
}
