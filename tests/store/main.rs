//! Integration tests of the embedded store and `bucketfs serve`: objects, sets, pools,
//! heal, scanner, usage, metrics, the S3 gateway and its fuzzing.
//!
//! One test binary per group (issue 16): each integration-test binary links the whole
//! dependency set, so 41 of them cost most of a clean CI build. Each file below is
//! a module; filter with `cargo nextest run --test store <module>::`.

#[path = "../cloud_support/mod.rs"]
mod cloud_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../s3_support/mod.rs"]
mod s3_support;
#[path = "../tool_support/mod.rs"]
mod tool_support;

mod gateway_fuzz;
mod gateway_lifecycle;
mod gateway_s3;
mod serve_metrics;
mod store_monitor;
mod store_nospace;
mod store_objects;
mod store_pools;
mod store_process;
mod store_repair_backoff;
mod store_scanner;
mod store_sets;
mod store_usage;
