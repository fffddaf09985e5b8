//! bucketfs: mount object-storage buckets as a directory.
//!
//! Layers, top to bottom (see docs/ARCHITECTURE.md; `scripts/module-graph.sh` checks every arrow goes down):
//! - [`cli`]: argument parsing, fstab option translation, daemonizing (anyhow lives here only).
//! - [`fs`]: the FUSE filesystem: inodes, directories, file handles.
//! - [`gateway`]: `bucketfs serve`, the S3 API over the embedded store (s3s), beside `fs`.
//! - [`read`] and [`upload`]: read-ahead and streaming multipart writes used by file handles.
//! - [`backend`]: the `StorageBackend` trait and one module per object store.
//! - [`store`]: the embedded erasure-coded object store behind `local://`.
//! - [`object`]: the leaf both use: object metadata, listing and read/write options, parts, [`object::BackendError`].
//! - [`percent`]: URL percent-encoding shared by backends and gateway (a leaf).
//! - [`memory`] and [`allocator`]: the `--memory-limit` budget, and keeping resident memory to it.

pub mod allocator;
pub mod backend;
pub mod buffers;
pub mod cli;
pub mod fs;
pub mod gateway;
pub mod memory;
pub mod metrics;
pub mod object;
pub mod percent;
pub mod read;
pub mod store;
pub mod upload;
