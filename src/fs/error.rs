//! Errors of filesystem operations and their errno mapping.
//!
//! Every operation of the filesystem core returns [`FsError`]; the FUSE glue in
//! `mod.rs` turns it into an errno with [`FsError::errno`] at the very edge, so the
//! operations stay testable without a kernel. Backend failures keep their
//! [`BackendError`] so logs show what the store said, while the errno comes from
//! [`BackendError::errno`].

use crate::backend::BackendError;

#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("name too long")]
    NameTooLong,
    #[error("file too large for the backend ({0} bytes at most)")]
    FileTooBig(u64),
    #[error("invalid name or argument: {0}")]
    Invalid(&'static str),
    #[error("read-only file system")]
    ReadOnly,
    #[error("not supported: {0}")]
    NotSupported(&'static str),
    #[error("operation not permitted: {0}")]
    Perm(&'static str),
    #[error("unknown inode {0}")]
    StaleInode(u64),
    #[error("unknown file handle {0}")]
    BadHandle(u64),
    #[error("no such attribute")]
    NoData,
    #[error("buffer too small")]
    Range,
    #[error("{}", super::unsupported::refusal(*.0))]
    Refused(super::unsupported::Refused),
}

pub type FsResult<T> = Result<T, FsError>;

impl FsError {
    pub fn errno(&self) -> i32 {
        match self {
            FsError::Backend(e) => e.errno(),
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::FileTooBig(_) => libc::EFBIG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::ReadOnly => libc::EROFS,
            FsError::NotSupported(_) => libc::ENOTSUP,
            FsError::Perm(_) => libc::EPERM,
            FsError::StaleInode(_) => libc::ESTALE,
            FsError::BadHandle(_) => libc::EBADF,
            FsError::NoData => libc::ENODATA,
            FsError::Range => libc::ERANGE,
            FsError::Refused(op) => super::unsupported::refusal(*op).errno,
        }
    }

    /// A backend "not found" becomes ENOENT; used where a missing object is a normal answer.
    pub fn is_not_found(&self) -> bool {
        match self {
            FsError::NotFound => true,
            FsError::Backend(e) => e.is_not_found(),
            _ => false,
        }
    }
}
