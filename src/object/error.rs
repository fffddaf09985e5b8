//! [`BackendError`], the error of every storage operation, and the errno the
//! filesystem reports for it.

/// Cloneable so that one failed request can be reported to every read waiting for it.
#[derive(Clone, Debug, thiserror::Error)]
pub enum BackendError {
    #[error("not found: {0}")]
    NotFound(String),
    #[error("bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("no such multipart upload: {0}")]
    NoSuchUpload(String),
    #[error("part too small: {0}")]
    EntityTooSmall(String),
    #[error("operation not supported by this backend: {0}")]
    NotSupported(String),
    #[error("access denied: {0}")]
    AccessDenied(String),
    #[error("no space left on the storage: {0}")]
    NoSpace(String),
    /// A quota of the storage refused the write (a drive's disk quota in the
    /// embedded store, Ceph RGW's and MinIO's bucket or user quotas): EDQUOT.
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    /// Not enough healthy drives or replicas to satisfy a read or write quorum.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored data failed its integrity check and could not be reconstructed.
    #[error("data corruption: {0}")]
    Corrupt(String),
    #[error("I/O error: {0}")]
    Io(String),
    #[error("{0}")]
    Other(String),
}

impl BackendError {
    /// The errno the filesystem reports for this error.
    pub fn errno(&self) -> i32 {
        match self {
            BackendError::NotFound(_) | BackendError::NoSuchBucket(_) => libc::ENOENT,
            BackendError::PreconditionFailed(_) => libc::EEXIST,
            BackendError::InvalidKey { reason, .. } if reason.contains("long") => libc::ENAMETOOLONG,
            BackendError::InvalidKey { .. } | BackendError::InvalidArgument(_) => libc::EINVAL,
            BackendError::NotSupported(_) => libc::ENOTSUP,
            BackendError::AccessDenied(_) => libc::EACCES,
            BackendError::NoSpace(_) => libc::ENOSPC,
            BackendError::QuotaExceeded(_) => libc::EDQUOT,
            BackendError::NoSuchUpload(_)
            | BackendError::EntityTooSmall(_)
            | BackendError::Unavailable(_)
            | BackendError::Corrupt(_)
            | BackendError::Io(_)
            | BackendError::Other(_) => libc::EIO,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, BackendError::NotFound(_))
    }
}

pub type BackendResult<T> = Result<T, BackendError>;
