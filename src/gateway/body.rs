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

use std::io::{self, Read};

use bytes::Bytes;
use futures::StreamExt;
use s3s::dto::StreamingBlob;
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

/// Starts pumping `body` (none = empty) and returns the reader end.
pub fn reader(body: Option<StreamingBlob>) -> ChannelReader {
    let (tx, rx) = mpsc::channel(DEPTH);
    if let Some(mut body) = body {
        tokio::spawn(async move {
            loop {
                let item = match tokio::time::timeout(BODY_IDLE_TIMEOUT, body.next()).await {
                    Ok(None) => break,
                    Ok(Some(chunk)) => chunk.map_err(|e| io::Error::other(format!("request body: {e}"))),
                    Err(_) => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("request body: nothing received for {BODY_IDLE_TIMEOUT:?}"),
                    )),
                };
                let failed = item.is_err();
                // The store stopped reading (it failed): nothing left to do.
                if tx.send(item).await.is_err() || failed {
                    break;
                }
            }
        });
    }
    ChannelReader { rx, cur: Bytes::new() }
}
