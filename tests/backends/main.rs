//! Integration tests of the storage backends against real servers (moto, SeaweedFS,
//! rclone, fake-gcs-server, Azurite, crafted servers), the upload contract and journal,
//! the CLI tools and the parser fuzzers.
//!
//! One test binary per group (issue 16): each integration-test binary links the whole
//! dependency set, so 41 of them cost most of a clean CI build. Each file below is
//! a module; filter with `cargo nextest run --test backends <module>::`.

#[path = "../cloud_support/mod.rs"]
mod cloud_support;
#[path = "../common/mod.rs"]
mod common;
#[path = "../s3_support/mod.rs"]
mod s3_support;
#[path = "../tool_support/mod.rs"]
mod tool_support;

mod abfs;
mod azure_entra;
mod capabilities;
mod cli_transfer;
mod cli_validation;
mod cloud_backends;
mod fuzz_parsers;
mod s3_moto;
mod s3_multirange;
mod s3_multirange_servers;
mod s3_seaweed;
mod test_tools;
mod upload_contract;
mod upload_journal;
