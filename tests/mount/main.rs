//! Integration tests through a real FUSE mount of the bucketfs binary, over the embedded
//! store and real S3, GCS and Azure test servers.
//!
//! One test binary per group (issue 16): each integration-test binary links the whole
//! dependency set, so 41 of them cost most of a clean CI build. Each file below is
//! a module; filter with `cargo nextest run --test mount <module>::`.

#[path = "../cloud_support/mod.rs"]
mod cloud_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../s3_support/mod.rs"]
mod s3_support;
#[path = "../tool_support/mod.rs"]
mod tool_support;

mod mount_abfs;
mod mount_cloud;
mod mount_dirs;
mod mount_files;
mod mount_lifecycle;
mod mount_listing;
mod mount_memory;
mod mount_multirange;
mod mount_nospace;
mod mount_outage;
mod mount_posix;
mod mount_quota;
mod mount_s3;
mod mount_stacking;
mod mount_streaming;
mod mount_tools;
