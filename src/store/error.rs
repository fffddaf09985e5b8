//! The one error type of the embedded store.
//!
//! Every fallible store function returns [`StoreError`]. Variants are chosen so
//! that the backend adapter (`src/backend/local.rs`) can map them onto
//! `BackendError` without parsing messages: not-found, precondition, invalid
//! key, quorum loss, corruption and ENOSPC each have their own variant.

use std::io;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("invalid drive spec {spec:?}: {reason}")]
    DriveSpec { spec: String, reason: String },
    #[error("invalid store configuration: {0}")]
    Config(String),
    /// format.json disagreement: mixed deployments, wrong drive order, unknown drives.
    #[error("drive format error: {0}")]
    Format(String),
    #[error("drive {path} is locked by another process ({holder}); stop it or use other drives")]
    Locked { path: PathBuf, holder: String },
    #[error("invalid bucket name {name:?}: {reason}")]
    InvalidBucketName { name: String, reason: String },
    #[error("invalid key {key:?}: {reason}")]
    InvalidKey { key: String, reason: String },
    /// A key or one of its components over the length limit: its own variant so
    /// that the filesystem answers ENAMETOOLONG without reading the reason.
    #[error("invalid key {key:?}: {reason}")]
    KeyTooLong { key: String, reason: String },
    #[error("bucket does not exist: {0}")]
    NoSuchBucket(String),
    #[error("bucket already exists: {0}")]
    BucketExists(String),
    #[error("bucket is not empty: {0}")]
    BucketNotEmpty(String),
    #[error("object not found: {bucket}/{key}")]
    NotFound { bucket: String, key: String },
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("no such multipart upload: {0}")]
    NoSuchUpload(String),
    #[error("invalid part: {0}")]
    InvalidPart(String),
    #[error("part too small: {0}")]
    EntityTooSmall(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Fewer healthy drives answered than the operation's quorum needs.
    #[error("insufficient {kind} quorum: {got} of {need} drives needed ({detail})")]
    Quorum { kind: &'static str, got: usize, need: usize, detail: String },
    /// Stored bytes failed their bitrot check and too few good shards remain.
    #[error("data corruption: {0}")]
    Corrupt(String),
    #[error("no space left on drive(s): {0}")]
    NoSpace(String),
    /// A drive's file system refused the write for the disk quota of the
    /// user the store runs as (EDQUOT): space exists, but not for us.
    #[error("disk quota exceeded on drive(s): {0}")]
    QuotaExceeded(String),
    #[error("I/O error on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

pub type StoreResult<T> = Result<T, StoreError>;

impl StoreError {
    /// Wraps an I/O error with the path it happened on (the bare io::Error rarely says).
    pub fn io(path: &Path, source: io::Error) -> Self {
        StoreError::Io { path: path.to_path_buf(), source }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, StoreError::NotFound { .. })
    }

    /// True for ENOSPC and EDQUOT: no room to write (repair backs off alike).
    pub fn is_no_space(&self) -> bool {
        match self {
            StoreError::NoSpace(_) | StoreError::QuotaExceeded(_) => true,
            StoreError::Io { source, .. } => is_enospc(source),
            _ => false,
        }
    }

    /// True for EDQUOT: the application is told "quota exceeded", not "disk full",
    /// since freeing space elsewhere on the disk would not help (issue 14).
    pub fn is_quota(&self) -> bool {
        match self {
            StoreError::QuotaExceeded(_) => true,
            StoreError::Io { source, .. } => source.raw_os_error() == Some(libc::EDQUOT),
            _ => false,
        }
    }
}

pub fn is_enospc(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}

/// Extension to attach a path to `io::Result`s with `?`.
pub trait IoContext<T> {
    fn ctx(self, path: &Path) -> StoreResult<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn ctx(self, path: &Path) -> StoreResult<T> {
        self.map_err(|e| StoreError::io(path, e))
    }
}
