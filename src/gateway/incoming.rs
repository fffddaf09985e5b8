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

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use s3s::{HttpError, HttpResponse};

/// A request body that records whether reading it failed.
pub struct Watched<B> {
    inner: Pin<Box<B>>,
    failed: Arc<AtomicBool>,
}

impl<B: Body<Data = Bytes>> Body for Watched<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = self.inner.as_mut().poll_frame(cx);
        if let Poll::Ready(Some(Err(_))) = &r {
            self.failed.store(true, Ordering::Relaxed);
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

/// `req` with its body watched, and the flag that says whether the body failed.
pub fn watch<B>(req: hyper::Request<B>) -> (hyper::Request<s3s::Body>, Arc<AtomicBool>)
where
    B: Body<Data = Bytes> + Send + Sync + 'static,
    s3s::StdError: From<B::Error>,
{
    let failed = Arc::new(AtomicBool::new(false));
    let flag = failed.clone();
    (req.map(|inner| s3s::Body::http_body(Watched { inner: Box::pin(inner), failed: flag })), failed)
}

/// The answer to send: a server error for a request whose body failed to arrive
/// becomes 400 IncompleteBody.
pub fn explain(
    resp: Result<HttpResponse, HttpError>,
    failed: &AtomicBool,
) -> Result<HttpResponse, HttpError> {
    let server_error = match &resp {
        Ok(r) => r.status().is_server_error(),
        Err(_) => true,
    };
    if !server_error || !failed.load(Ordering::Relaxed) {
        return resp;
    }
    let body = "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>IncompleteBody</Code>\
        <Message>You did not provide the number of bytes specified by the Content-Length HTTP header</Message></Error>";
    let mut r = HttpResponse::new(s3s::Body::from(body.to_string()));
    *r.status_mut() = hyper::StatusCode::BAD_REQUEST;
    r.headers_mut()
        .insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/xml"));
    Ok(r)
}
