//! The FUSE filesystem.
pub mod handle;
