//! [`BackendError`], the error of every storage operation: a [`ErrorKind`]
//! that decides what the filesystem does (the errno, whether to retry), a
//! context naming the operation and key for people, and the underlying error
//! (SDK, HTTP client, I/O, store) kept as its source rather than flattened
//! into text.
//!
//! Decisions are taken on the kind only, never on the message: the message is
//! free to change, and a server's wording never changes an errno.

use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;

/// What went wrong, as far as the layers above need to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The object does not exist: ENOENT.
    NotFound,
    /// The bucket does not exist: ENOENT.
    NoSuchBucket,
    /// A conditional request's condition failed (`If-Match`, `If-None-Match: *`): EEXIST.
    PreconditionFailed,
    /// The key cannot be stored (bad characters, `..`, a segment the backend refuses): EINVAL.
    InvalidKey,
    /// The key, or one of its segments, is longer than the backend allows: ENAMETOOLONG.
    NameTooLong,
    /// A directory the backend keeps as a real one (Azure Data Lake) still has
    /// entries, so the server refused to delete it: ENOTEMPTY.
    DirectoryNotEmpty,
    /// A request the backend refused as malformed: EINVAL.
    InvalidArgument,
    /// The multipart upload does not exist (finished, aborted or never started): EIO.
    NoSuchUpload,
    /// A part other than the last is smaller than the backend's minimum: EIO.
    EntityTooSmall,
    /// The backend has no such operation: ENOTSUP.
    NotSupported,
    /// The credentials were refused or lack a permission: EACCES.
    AccessDenied,
    /// The server asked us to slow down (S3 `SlowDown`, HTTP 429, Azure
    /// `ServerBusy`): transient, EIO once the retries ran out.
    Throttled,
    /// The storage is full: ENOSPC.
    NoSpace,
    /// A quota of the storage refused the write (a drive's disk quota in the
    /// embedded store, Ceph RGW's and MinIO's bucket or user quotas): EDQUOT.
    QuotaExceeded,
    /// Not reachable, or not enough healthy drives or replicas for a quorum: EIO.
    Unavailable,
    /// Stored data failed its integrity check and could not be reconstructed: EIO.
    Corrupt,
    /// A local or transport I/O failure (a body that broke mid-stream): EIO.
    Io,
    /// Anything else: EIO.
    Other,
}

impl ErrorKind {
    /// The errno the filesystem reports for an error of this kind.
    pub fn errno(self) -> i32 {
        match self {
            ErrorKind::NotFound | ErrorKind::NoSuchBucket => libc::ENOENT,
            ErrorKind::PreconditionFailed => libc::EEXIST,
            ErrorKind::NameTooLong => libc::ENAMETOOLONG,
            ErrorKind::DirectoryNotEmpty => libc::ENOTEMPTY,
            ErrorKind::InvalidKey | ErrorKind::InvalidArgument => libc::EINVAL,
            ErrorKind::NotSupported => libc::ENOTSUP,
            ErrorKind::AccessDenied => libc::EACCES,
            ErrorKind::NoSpace => libc::ENOSPC,
            ErrorKind::QuotaExceeded => libc::EDQUOT,
            ErrorKind::NoSuchUpload
            | ErrorKind::EntityTooSmall
            | ErrorKind::Throttled
            | ErrorKind::Unavailable
            | ErrorKind::Corrupt
            | ErrorKind::Io
            | ErrorKind::Other => libc::EIO,
        }
    }

    /// Failures that a later attempt may not meet: the server was unreachable,
    /// overloaded or throttling us, or a transfer broke.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorKind::Throttled | ErrorKind::Unavailable | ErrorKind::Io)
    }

    /// What the message starts with; the text users have always seen.
    fn prefix(self) -> &'static str {
        match self {
            ErrorKind::NotFound => "not found: ",
            ErrorKind::NoSuchBucket => "bucket does not exist: ",
            ErrorKind::PreconditionFailed => "precondition failed: ",
            ErrorKind::InvalidKey | ErrorKind::NameTooLong => "invalid key ",
            ErrorKind::InvalidArgument => "invalid argument: ",
            ErrorKind::DirectoryNotEmpty => "directory not empty: ",
            ErrorKind::NoSuchUpload => "no such multipart upload: ",
            ErrorKind::EntityTooSmall => "part too small: ",
            ErrorKind::NotSupported => "operation not supported by this backend: ",
            ErrorKind::AccessDenied => "access denied: ",
            ErrorKind::Throttled => "storage busy, asked to slow down: ",
            ErrorKind::NoSpace => "no space left on the storage: ",
            ErrorKind::QuotaExceeded => "quota exceeded: ",
            ErrorKind::Unavailable => "storage unavailable: ",
            ErrorKind::Corrupt => "data corruption: ",
            ErrorKind::Io => "I/O error: ",
            ErrorKind::Other => "",
        }
    }
}

/// The error of a storage operation. Cloneable (the source is shared) so that
/// one failed request can be reported to every read waiting for it.
///
/// `kind` is public so that callers can match on it in patterns
/// (`Err(BackendError { kind: ErrorKind::NotFound, .. })`); an error is made
/// only through the constructors, which keep the message format in one place.
#[derive(Clone)]
pub struct BackendError {
    pub kind: ErrorKind,
    /// The operation, key and server detail, for people (never credentials).
    context: String,
    source: Option<Arc<dyn StdError + Send + Sync>>,
}

impl BackendError {
    pub fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        BackendError { kind, context: context.into(), source: None }
    }

    /// An error whose message is its source's (an I/O error, a failed task), of `kind`.
    pub fn wrap(kind: ErrorKind, source: impl StdError + Send + Sync + 'static) -> Self {
        Self::new(kind, String::new()).with_source(source)
    }

    /// Keeps `source` as the cause, for code that inspects it (an `io::Error`'s
    /// errno); the message stays the context, which should already say what the
    /// source says in words fit for a user. Sources must not carry credentials
    /// (Debug shows them): strip URLs first (`reqwest::Error::without_url`).
    pub fn with_source(mut self, source: impl StdError + Send + Sync + 'static) -> Self {
        self.source = Some(Arc::new(source));
        self
    }

    /// Like [`BackendError::with_source`] for an already shared or boxed source.
    pub fn with_shared_source(mut self, source: Arc<dyn StdError + Send + Sync>) -> Self {
        self.source = Some(source);
        self
    }

    pub fn not_found(key: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, key)
    }
    pub fn no_such_bucket(bucket: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoSuchBucket, bucket)
    }
    pub fn precondition_failed(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, context)
    }
    pub fn invalid_key(key: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::InvalidKey, format!("{key:?}: {reason}"))
    }
    /// A key (or a segment of it) over the backend's length limit.
    pub fn name_too_long(key: &str, reason: impl fmt::Display) -> Self {
        Self::new(ErrorKind::NameTooLong, format!("{key:?}: {reason}"))
    }
    pub fn directory_not_empty(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::DirectoryNotEmpty, context)
    }
    pub fn invalid_argument(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, context)
    }
    pub fn no_such_upload(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoSuchUpload, context)
    }
    pub fn entity_too_small(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::EntityTooSmall, context)
    }
    pub fn not_supported(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotSupported, context)
    }
    pub fn access_denied(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::AccessDenied, context)
    }
    pub fn throttled(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Throttled, context)
    }
    pub fn no_space(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::NoSpace, context)
    }
    pub fn quota_exceeded(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::QuotaExceeded, context)
    }
    pub fn unavailable(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, context)
    }
    pub fn corrupt(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Corrupt, context)
    }
    pub fn io(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Io, context)
    }
    pub fn other(context: impl Into<String>) -> Self {
        Self::new(ErrorKind::Other, context)
    }

    /// The same error (kind and source) with its context rewritten, for a caller
    /// that knows more about what was asked (which bucket, what to check).
    pub fn map_context(mut self, f: impl FnOnce(&str) -> String) -> Self {
        self.context = f(&self.context);
        self
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the kind's prefix and the source (a key, or the
    /// operation and the server's detail).
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The errno the filesystem reports for this error; from the kind only.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    pub fn is_not_found(&self) -> bool {
        self.kind == ErrorKind::NotFound
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.kind.prefix(), self.context)?;
        // The source is shown only when it is the whole message (`wrap`): a
        // constructor's context already says what the user needs, redacted (a
        // reqwest error's text would carry the URL, and with it a SAS token).
        if let (Some(s), true) = (&self.source, self.context.is_empty()) {
            write!(f, "{s}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("BackendError");
        d.field("kind", &self.kind).field("context", &self.context);
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl StdError for BackendError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn StdError + 'static))
    }
}

pub type BackendResult<T> = Result<T, BackendError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_wording_and_sources_are_kept() {
        assert_eq!(BackendError::not_found("a/b").to_string(), "not found: a/b");
        assert_eq!(BackendError::precondition_failed("k").to_string(), "precondition failed: k");
        assert_eq!(
            BackendError::invalid_key("a\0b", "NUL in key").to_string(),
            "invalid key \"a\\0b\": NUL in key"
        );
        assert_eq!(BackendError::other("plain").to_string(), "plain");
        let io = std::io::Error::from_raw_os_error(libc::ECONNRESET);
        let e = BackendError::io("reading k: connection reset").with_source(io);
        assert_eq!(e.to_string(), "I/O error: reading k: connection reset");
        let cause = e.source().expect("source kept").downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(cause.raw_os_error(), Some(libc::ECONNRESET));
        assert!(e.clone().source().is_some(), "clones share the source");
        let e = BackendError::wrap(ErrorKind::Unavailable, std::io::Error::other("quorum lost"));
        assert_eq!(e.to_string(), "storage unavailable: quorum lost");
    }

    #[test]
    fn errno_comes_from_the_kind_not_the_text() {
        // a reason that says "long" does not make an ordinary invalid key ENAMETOOLONG
        assert_eq!(BackendError::invalid_key("k", "too long a story").errno(), libc::EINVAL);
        assert_eq!(BackendError::name_too_long("k", "over 1024 bytes").errno(), libc::ENAMETOOLONG);
        assert_eq!(BackendError::throttled("SlowDown").errno(), libc::EIO);
        assert_eq!(BackendError::quota_exceeded("q").errno(), libc::EDQUOT);
        assert!(matches!(BackendError::not_found("k"), BackendError { kind: ErrorKind::NotFound, .. }));
    }
}
