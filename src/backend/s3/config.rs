//! Mount options of the S3 backend and the construction of the SDK client.
//!
//! [`S3Config`] is what the CLI fills from its flags. [`build_client`] turns it
//! into an `aws_sdk_s3::Client` with the choices a FUSE mount needs rather
//! than the SDK's defaults:
//!
//! - Credentials: `--no-sign-request` means anonymous; `--profile` means that
//!   profile only (like the AWS CLI, an explicit profile beats `AWS_*`
//!   variables); otherwise the SDK's default chain (environment, shared
//!   files, SSO, web identity, ECS, instance metadata) with a short IMDS
//!   timeout so a laptop without IMDS does not stall the mount. When that chain
//!   finds nothing we fall back to anonymous access, which works for public
//!   buckets and fails with AccessDenied (at `check_bucket`) for the rest.
//! - Region: `--region`, else `AWS_REGION`/profile, else `us-east-1`; the
//!   backend then corrects it from the bucket's `x-amz-bucket-region` (see
//!   `S3Backend::check_bucket`), which is why the region chain here skips IMDS.
//! - Addressing: a custom `--endpoint` uses path style (what MinIO, SeaweedFS
//!   and Ceph expect out of the box) unless `--subdomain` is given.
//! - Timeouts: a short connect timeout on every request so that an unreachable
//!   endpoint fails in seconds; per-operation attempt timeouts are set by the
//!   callers (a 5 GiB part upload must not be cut by them, a HEAD must).
//! - Checksums: only when an operation requires them. The SDK's default
//!   (a CRC on every upload, sent as an aws-chunked trailer) is refused by
//!   several S3-compatible servers, and response validation is meaningless for
//!   ranged and multi-range reads.

use std::time::Duration;

use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::environment::region::EnvironmentVariableRegionProvider;
use aws_config::meta::region::RegionProviderChain;
use aws_config::profile::{ProfileFileCredentialsProvider, ProfileFileRegionProvider};
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_s3::config::{
    Credentials, ProvideCredentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::Client;
use tracing::{debug, info};

use super::retry;
use crate::backend::{BackendError, BackendResult};

/// Region used when nothing else names one; S3 redirects from there are corrected.
pub const FALLBACK_REGION: &str = "us-east-1";
/// Connect timeout of every request: an unreachable endpoint must fail fast.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// Time to the response headers of requests whose answer is small or streamed.
pub const SHORT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the credential chain may take at connect before we call it empty.
const CREDENTIALS_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Options of an S3 mount, filled by the CLI.
#[derive(Clone, Debug, Default)]
pub struct S3Config {
    pub bucket: String,
    /// `--endpoint URL`: path-style addressing unless `subdomain`.
    pub endpoint: Option<String>,
    /// `--subdomain`: virtual-host style even with a custom endpoint.
    pub subdomain: bool,
    /// `--region`; `None` detects it from the bucket.
    pub region: Option<String>,
    /// `--profile`.
    pub profile: Option<String>,
    /// `--no-sign-request`: anonymous requests.
    pub no_sign_request: bool,
    /// `--sse`: SSE-S3 (AES256) on every write.
    pub sse: bool,
    /// `--sse-kms [KEY]`: SSE-KMS on every write (empty = the bucket's default key).
    pub sse_kms: Option<String>,
    pub storage_class: Option<String>,
    pub requester_pays: bool,
    /// `--sign-payload`: SigV4 over the SHA-256 of every upload body, instead of
    /// `UNSIGNED-PAYLOAD` (see [`crate::backend::s3`]'s header, "Upload bodies").
    pub sign_payload: bool,
    pub debug: bool,
}

impl S3Config {
    /// The endpoint as named in error messages (never carries credentials).
    pub fn endpoint_label(&self, region: &str) -> String {
        match &self.endpoint {
            Some(e) => e.clone(),
            None => format!("https://s3.{region}.amazonaws.com"),
        }
    }
}

/// Where the credentials came from, for one log line at mount.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CredentialSource {
    Anonymous,
    Profile,
    DefaultChain,
}

/// Everything needed to (re)build a client, e.g. after a region correction.
#[derive(Clone, Debug)]
pub struct ClientFactory {
    cfg: S3Config,
    sdk: aws_config::SdkConfig,
    pub credentials: CredentialSource,
    /// Shared by every client this factory builds, so a region switch keeps the count.
    pub retries: crate::backend::retry::RetryCounter,
}

impl ClientFactory {
    /// Resolves credentials and the initial region; makes no request to the bucket.
    pub async fn new(cfg: &S3Config) -> BackendResult<(ClientFactory, String)> {
        let region = initial_region(cfg).await;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .retry_config(retry::standard())
            .timeout_config(TimeoutConfig::builder().connect_timeout(CONNECT_TIMEOUT).build());
        if let Some(p) = &cfg.profile {
            // Used by the loader for other profile settings (e.g. endpoint_url, retries).
            loader = loader.profile_name(p);
        }
        let source = if cfg.no_sign_request {
            loader = loader.no_credentials();
            CredentialSource::Anonymous
        } else {
            let (provider, source) = match &cfg.profile {
                Some(p) => (
                    SharedCredentialsProvider::new(
                        ProfileFileCredentialsProvider::builder().profile_name(p).build(),
                    ),
                    CredentialSource::Profile,
                ),
                None => (
                    SharedCredentialsProvider::new(
                        DefaultCredentialsChain::builder().imds_client(short_imds_client()).build().await,
                    ),
                    CredentialSource::DefaultChain,
                ),
            };
            match probe_credentials(&provider).await {
                Ok(()) => {
                    loader = loader.credentials_provider(provider);
                    source
                }
                Err(why) if cfg.profile.is_some() => {
                    return Err(BackendError::access_denied(format!(
                        "no usable credentials in profile {:?}: {why}",
                        cfg.profile.as_deref().unwrap_or_default()
                    )));
                }
                Err(why) => {
                    info!(target: "bucketfs::backend::s3", "no credentials found ({why}); using anonymous access");
                    loader = loader.no_credentials();
                    CredentialSource::Anonymous
                }
            }
        };
        let sdk = loader.load().await;
        debug!(target: "bucketfs::backend::s3", region = %region, credentials = ?source, "S3 client configured");
        Ok((
            ClientFactory { cfg: cfg.clone(), sdk, credentials: source, retries: Default::default() },
            region,
        ))
    }

    /// A client for `region` (all other settings from the mount options).
    pub fn client(&self, region: &str) -> Client {
        let mut b = aws_sdk_s3::config::Builder::from(&self.sdk)
            .region(Region::new(region.to_owned()))
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .interceptor(self.retries.clone());
        if let Some(e) = &self.cfg.endpoint {
            b = b.endpoint_url(e.clone()).force_path_style(!self.cfg.subdomain);
        }
        Client::from_conf(b.build())
    }
}

/// `--region`, else the environment / profile, else [`FALLBACK_REGION`]. IMDS is
/// left out on purpose: the bucket tells its region anyway.
async fn initial_region(cfg: &S3Config) -> String {
    if let Some(r) = &cfg.region {
        return r.clone();
    }
    let mut profile = ProfileFileRegionProvider::builder();
    if let Some(p) = &cfg.profile {
        profile = profile.profile_name(p);
    }
    let chain =
        RegionProviderChain::first_try(EnvironmentVariableRegionProvider::new()).or_else(profile.build());
    match chain.region().await {
        Some(r) => r.to_string(),
        None => FALLBACK_REGION.to_owned(),
    }
}

/// IMDS answers within milliseconds where it exists; one short attempt is enough
/// to tell it is absent.
fn short_imds_client() -> aws_config::imds::Client {
    aws_config::imds::Client::builder()
        .connect_timeout(Duration::from_millis(500))
        .read_timeout(Duration::from_millis(500))
        .max_attempts(1)
        .build()
}

/// Asks the provider once so that "no credentials anywhere" is known at connect.
/// The error text comes from the provider and names sources, never secrets.
async fn probe_credentials(p: &SharedCredentialsProvider) -> Result<(), String> {
    match tokio::time::timeout(CREDENTIALS_PROBE_TIMEOUT, p.provide_credentials()).await {
        Ok(Ok(c)) => {
            let _: Credentials = c;
            Ok(())
        }
        // CredentialsError's Display is its kind only (e.g. "the credential provider was
        // not enabled"); its source, which might quote a file, is not printed.
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("timed out looking for credentials".into()),
    }
}
