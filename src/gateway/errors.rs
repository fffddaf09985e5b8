//! Maps store errors onto S3 error codes.
//!
//! The store has one variant per condition a client can act on, so the
//! mapping is a plain match; anything else is an InternalError whose message
//! is the store's (paths of drives, never credentials).

use s3s::{S3Error, S3ErrorCode};

use crate::store::StoreError;

pub fn to_s3(e: StoreError) -> S3Error {
    use S3ErrorCode as C;
    let code = match &e {
        StoreError::NoSuchBucket(_) => C::NoSuchBucket,
        StoreError::NotFound { .. } => C::NoSuchKey,
        StoreError::BucketExists(_) => C::BucketAlreadyOwnedByYou,
        StoreError::BucketNotEmpty(_) => C::BucketNotEmpty,
        StoreError::InvalidBucketName { .. } => C::InvalidBucketName,
        StoreError::InvalidKey { .. } | StoreError::InvalidArgument(_) => C::InvalidArgument,
        // S3's own code for it, which the S3 backend reads as ENAMETOOLONG.
        StoreError::KeyTooLong { .. } => C::KeyTooLongError,
        StoreError::PreconditionFailed(_) => C::PreconditionFailed,
        StoreError::NoSuchUpload(_) => C::NoSuchUpload,
        StoreError::InvalidPart(_) => C::InvalidPart,
        StoreError::EntityTooSmall(_) => C::EntityTooSmall,
        // Too few drives: retrying later may succeed once drives return.
        StoreError::Quorum { .. } => C::ServiceUnavailable,
        // Ceph RGW's code (403) for a quota, which our S3 client reads as EDQUOT.
        _ if e.is_quota() => C::Custom("QuotaExceeded".into()),
        // MinIO's code for a full disk; clients treat it as a server error.
        _ if e.is_no_space() => C::Custom("XMinioStorageFull".into()),
        _ => C::InternalError,
    };
    // s3s knows no status for custom codes: 403 for a quota as RGW answers,
    // 507 (the HTTP word for it) for a full disk.
    let status = match &code {
        C::Custom(c) if c == "QuotaExceeded" => Some(hyper::StatusCode::FORBIDDEN),
        C::Custom(_) => Some(hyper::StatusCode::INSUFFICIENT_STORAGE),
        _ => None,
    };
    let mut err = S3Error::with_message(code, e.to_string());
    if let Some(status) = status {
        err.set_status_code(status);
    }
    err
}

/// A failed `spawn_blocking` (the closure panicked or the runtime is closing).
pub fn join(e: tokio::task::JoinError) -> S3Error {
    S3Error::with_message(S3ErrorCode::InternalError, format!("store task failed: {e}"))
}
