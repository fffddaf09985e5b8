//! `bucketfs serve --access-log FILE`: one line per HTTP request.
//!
//! Tests and operators need the server's own account of what a client sent
//! (how many GETs a sparse read cost, which parts a resumed upload re-sent),
//! independent of the client's counters. Each line is written when the
//! response head is ready:
//!
//! ```text
//! GET /bucket/key?partNumber=2 206 range="bytes=0-9,20-29" len=1234
//! ```
//!
//! fields separated by single spaces: method, path with query, status, the
//! `Range` header (`-` if none), and the request's `Content-Length` (`-` if
//! none). Query parameters that carry credentials (`X-Amz-Signature`,
//! `X-Amz-Credential`, `X-Amz-Security-Token`) are dropped, so the log never
//! holds secrets or signatures. Lines are appended with one `write` each, so
//! concurrent requests never interleave within a line.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Where request lines go; cheap to clone.
#[derive(Clone)]
pub struct AccessLog {
    file: Arc<Mutex<File>>,
}

impl AccessLog {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self { file: Arc::new(Mutex::new(file)) })
    }

    /// Formats the request part of a line before the request is handed on.
    pub fn request_line<B>(req: &hyper::Request<B>) -> String {
        let header = |name: hyper::header::HeaderName| {
            req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("-").to_owned()
        };
        let path = req.uri().path();
        let query = req.uri().query().map(redact_query).unwrap_or_default();
        let sep = if query.is_empty() { "" } else { "?" };
        format!(
            "{} {path}{sep}{query} {{status}} range=\"{}\" len={}",
            req.method(),
            header(hyper::header::RANGE),
            header(hyper::header::CONTENT_LENGTH)
        )
    }

    /// Writes `line` with its `{status}` placeholder filled in.
    pub fn write(&self, line: &str, status: u16) {
        let mut text = line.replacen("{status}", &status.to_string(), 1);
        text.push('\n');
        // A failed log write must not fail the request; say so once per failure.
        let mut file = self.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.write_all(text.as_bytes()) {
            tracing::warn!("access log write failed: {e}");
        }
    }
}

fn redact_query(query: &str) -> String {
    const SECRET_PARAMS: [&str; 3] = ["x-amz-signature", "x-amz-credential", "x-amz-security-token"];
    query
        .split('&')
        .filter(|kv| {
            let name = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            !SECRET_PARAMS.contains(&name.as_str())
        })
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_and_credential_are_dropped() {
        let q =
            "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKID%2F2026&X-Amz-Signature=abc&partNumber=2";
        assert_eq!(redact_query(q), "X-Amz-Algorithm=AWS4-HMAC-SHA256&partNumber=2");
    }

    #[test]
    fn line_has_method_path_range_and_length() {
        let req = hyper::Request::get("/b/k?uploadId=u1")
            .header("range", "bytes=0-9,20-29")
            .header("content-length", "0")
            .body(())
            .unwrap();
        let line = AccessLog::request_line(&req);
        assert_eq!(line, "GET /b/k?uploadId=u1 {status} range=\"bytes=0-9,20-29\" len=0");
    }
}
