//! Mapping of S3 failures to [`BackendError`].
//!
//! The SDK reports four kinds of failure; each becomes the variant the
//! filesystem needs to choose an errno:
//! - a service error (the server answered with an error status): by S3 error
//!   code first, then by HTTP status, because HEAD answers have no body and so
//!   no code, and S3-compatible servers are loose with codes;
//! - a dispatch failure (DNS, refused or reset connection, connect timeout) and
//!   a timeout: `Unavailable`, naming the endpoint so that a mount failure says
//!   where it tried to go;
//! - a response that could not be parsed: `Io`;
//! - a request that could not be built: `InvalidArgument`.
//!
//! Messages carry the operation, the key and the server's code, never request
//! headers or credentials: for authentication codes even the server's message
//! is left out, since some servers echo the access key id or the string to sign.

use std::error::Error as StdError;

use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

use crate::backend::BackendError;

/// Where a failure happened, for the error message.
#[derive(Clone, Copy, Debug)]
pub struct Ctx<'a> {
    pub op: &'static str,
    pub key: &'a str,
    pub bucket: &'a str,
    pub endpoint: &'a str,
}

/// Error codes that concern authentication; their messages are not repeated.
const AUTH_CODES: &[&str] = &[
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "AllAccessDisabled",
    "ExpiredToken",
    "InvalidToken",
    "TokenRefreshRequired",
    "AccountProblem",
    "InvalidSecurity",
];

/// Maps any SDK error of an operation to a backend error, keeping the SDK error as
/// its source (for code that inspects the raw answer; its Debug holds the response,
/// never the signed request).
pub fn map_sdk_error<E>(err: SdkError<E>, ctx: Ctx<'_>) -> BackendError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    describe_sdk_error(&err, ctx).with_source(err)
}

/// The kind and message of an SDK error, without the source.
fn describe_sdk_error<E>(err: &SdkError<E>, ctx: Ctx<'_>) -> BackendError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match err {
        SdkError::ServiceError(se) => {
            let status = se.raw().status().as_u16();
            let e = se.err();
            classify(status, e.code(), e.message(), ctx)
        }
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() { "connection timed out".to_owned() } else { root_cause(err) };
            BackendError::unavailable(format!(
                "cannot reach {} ({} {:?}): {why}",
                ctx.endpoint, ctx.op, ctx.key
            ))
        }
        SdkError::TimeoutError(_) => BackendError::unavailable(format!(
            "{} {:?}: no answer from {} in time",
            ctx.op, ctx.key, ctx.endpoint
        )),
        SdkError::ResponseError(_) => BackendError::io(format!(
            "{} {:?}: unreadable response from {}: {}",
            ctx.op,
            ctx.key,
            ctx.endpoint,
            root_cause(err)
        )),
        SdkError::ConstructionFailure(_) => BackendError::invalid_argument(format!(
            "{} {:?}: cannot build the request: {}",
            ctx.op,
            ctx.key,
            root_cause(err)
        )),
        _ => BackendError::other(format!("{} {:?}: {}", ctx.op, ctx.key, root_cause(err))),
    }
}

/// Maps an error answer (status, S3 code, message) to a backend error.
pub fn classify(status: u16, code: Option<&str>, message: Option<&str>, ctx: Ctx<'_>) -> BackendError {
    let (op, key) = (ctx.op, ctx.key);
    let code_s = code.unwrap_or("");
    let detail = || {
        let msg = if AUTH_CODES.contains(&code_s) { "" } else { message.unwrap_or("") };
        let msg: String = msg.chars().take(200).collect();
        match (code_s, msg.is_empty()) {
            ("", true) => format!("{op} {key:?}: HTTP {status}"),
            ("", false) => format!("{op} {key:?}: HTTP {status}: {msg}"),
            (c, true) => format!("{op} {key:?}: {c} (HTTP {status})"),
            (c, false) => format!("{op} {key:?}: {c} (HTTP {status}): {msg}"),
        }
    };
    match code_s {
        "NoSuchBucket" => return BackendError::no_such_bucket(ctx.bucket),
        "NoSuchKey" => return BackendError::not_found(key),
        "NoSuchUpload" => return BackendError::no_such_upload(detail()),
        "EntityTooSmall" => return BackendError::entity_too_small(detail()),
        "PreconditionFailed" | "ConditionalRequestConflict" => return BackendError::precondition_failed(key),
        "KeyTooLongError" => return BackendError::name_too_long(key, "key too long"),
        "InvalidArgument" | "InvalidRequest" | "InvalidPart" | "InvalidPartOrder" | "InvalidRange"
        | "EntityTooLarge" | "InvalidBucketName" | "MalformedXML" | "InvalidDigest" | "BadDigest" => {
            return BackendError::invalid_argument(detail())
        }
        // S3's answer to too high a request rate (a 503): its own kind, not an outage.
        "SlowDown" | "TooManyRequests" => return BackendError::throttled(detail()),
        "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
            return BackendError::unavailable(detail())
        }
        "NotImplemented" => return BackendError::not_supported(detail()),
        // Ceph RGW's user/bucket quota, MinIO's bucket quota, and our gateway's
        // answer for a drive's disk quota: EDQUOT, not "disk full".
        "QuotaExceeded" | "XMinioAdminBucketQuotaExceeded" => return BackendError::quota_exceeded(detail()),
        "XMinioStorageFull" => return BackendError::no_space(detail()),
        c if AUTH_CODES.contains(&c) => return BackendError::access_denied(detail()),
        _ => {}
    }
    match status {
        404 => BackendError::not_found(key),
        412 => BackendError::precondition_failed(key),
        401 | 403 => BackendError::access_denied(detail()),
        501 => BackendError::not_supported(detail()),
        507 => BackendError::no_space(detail()),
        400 | 411 | 413 | 416 => BackendError::invalid_argument(detail()),
        429 => BackendError::throttled(detail()),
        500..=599 => BackendError::unavailable(detail()),
        _ => BackendError::other(detail()),
    }
}

/// The innermost error message (e.g. "Connection refused (os error 111)"), which
/// is what a user needs; the outer layers only repeat "dispatch failure".
fn root_cause(err: &(dyn StdError + 'static)) -> String {
    let mut cur: &(dyn StdError + 'static) = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// The `x-amz-bucket-region` header of a failed request, when the server named
/// the bucket's region (S3 does on redirects and region mismatches).
pub fn bucket_region_hint<E>(err: &SdkError<E>) -> Option<String> {
    err.raw_response()?.headers().get("x-amz-bucket-region").map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ErrorKind;

    const CTX: Ctx<'static> = Ctx { op: "get", key: "a/b", bucket: "bk", endpoint: "http://127.0.0.1:1" };

    #[test]
    fn codes_win_over_statuses() {
        assert!(
            matches!(classify(404, Some("NoSuchBucket"), None, CTX), e if e.kind == ErrorKind::NoSuchBucket && e.context() == "bk")
        );
        assert!(
            matches!(classify(404, Some("NoSuchKey"), None, CTX), e if e.kind == ErrorKind::NotFound && e.context() == "a/b")
        );
        assert!(matches!(
            classify(404, Some("NoSuchUpload"), None, CTX),
            BackendError { kind: ErrorKind::NoSuchUpload, .. }
        ));
        assert!(matches!(
            classify(400, Some("EntityTooSmall"), None, CTX),
            BackendError { kind: ErrorKind::EntityTooSmall, .. }
        ));
        assert!(matches!(
            classify(400, Some("InvalidArgument"), None, CTX),
            BackendError { kind: ErrorKind::InvalidArgument, .. }
        ));
        assert_eq!(classify(503, Some("SlowDown"), None, CTX).kind(), ErrorKind::Throttled);
        assert_eq!(classify(503, Some("ServiceUnavailable"), None, CTX).kind(), ErrorKind::Unavailable);
        assert_eq!(classify(429, None, None, CTX).kind(), ErrorKind::Throttled);
        // a quota is EDQUOT whoever answers it (RGW 403, our gateway); a full disk ENOSPC
        assert_eq!(classify(403, Some("QuotaExceeded"), None, CTX).errno(), libc::EDQUOT);
        assert_eq!(classify(400, Some("XMinioAdminBucketQuotaExceeded"), None, CTX).errno(), libc::EDQUOT);
        assert_eq!(classify(507, Some("XMinioStorageFull"), None, CTX).errno(), libc::ENOSPC);
        assert!(matches!(
            classify(501, Some("NotImplemented"), None, CTX),
            BackendError { kind: ErrorKind::NotSupported, .. }
        ));
        assert!(matches!(
            classify(409, Some("ConditionalRequestConflict"), None, CTX),
            BackendError { kind: ErrorKind::PreconditionFailed, .. }
        ));
    }

    #[test]
    fn bodiless_answers_map_by_status() {
        assert!(matches!(classify(404, None, None, CTX), BackendError { kind: ErrorKind::NotFound, .. }));
        assert!(matches!(
            classify(412, None, None, CTX),
            BackendError { kind: ErrorKind::PreconditionFailed, .. }
        ));
        assert!(matches!(classify(403, None, None, CTX), BackendError { kind: ErrorKind::AccessDenied, .. }));
        assert!(matches!(classify(500, None, None, CTX), BackendError { kind: ErrorKind::Unavailable, .. }));
        assert!(
            matches!(classify(418, Some("Teapot"), Some("short and stout"), CTX), e if e.kind == ErrorKind::Other && e.context().contains("Teapot"))
        );
    }

    #[test]
    fn auth_messages_are_not_repeated() {
        let e = classify(403, Some("InvalidAccessKeyId"), Some("key AKIDEXAMPLE does not exist"), CTX);
        let s = e.to_string();
        assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }));
        assert!(s.contains("InvalidAccessKeyId") && !s.contains("AKIDEXAMPLE"), "{s}");
        let e = classify(403, Some("SignatureDoesNotMatch"), Some("StringToSign AWS4-HMAC-SHA256 ..."), CTX);
        assert!(!e.to_string().contains("StringToSign"));
    }

    #[test]
    fn the_sdk_error_is_kept_as_the_source() {
        use aws_sdk_s3::operation::get_object::GetObjectError;
        let sdk = SdkError::<GetObjectError>::construction_failure(std::io::Error::other("bad header"));
        let e = map_sdk_error(sdk, CTX);
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("bad header"), "{e}");
        let src = e.source().expect("the SDK error is kept");
        assert!(src.downcast_ref::<SdkError<GetObjectError>>().is_some(), "{src:?}");
    }
}
