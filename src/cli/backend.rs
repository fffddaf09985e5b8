//! Where a bucket lives and how to reach it: the flags shared by the mount and the
//! commands that talk to a bucket directly, and the one function that turns a
//! [`Source`] plus those flags into a connected [`StorageBackend`].
//!
//! Every backend is checked (bucket exists, credentials work) before it is handed
//! out, so a mistake is reported at mount or command start, never on first use.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Result};
use clap::Args;

use super::source::{s3_bucket_name_problem, BackendKind, Source};
use crate::backend::abfs::AbfsBackend;
use crate::backend::azure::{AzureBackend, AzureConfig, AzureRequest};
use crate::backend::gcs::{GcsBackend, GcsConfig};
use crate::backend::local::LocalBackend;
use crate::backend::prefixed::PrefixedBackend;
use crate::backend::s3::{config::S3Config, S3Backend};
use crate::backend::StorageBackend;
use crate::memory::MemoryLimiter;
use crate::store::{parse_pool_specs, Store, WriteBudget};

/// Longest wait for a remote bucket to answer the first check: a silent endpoint fails
/// the mount (or command) within 5 s, with its address named.
/// `BUCKETFS_BUCKET_CHECK_TIMEOUT` (seconds) overrides it, for a server known to be
/// slow to answer (the tests' Azurite right after thousands of writes took longer).
const BUCKET_CHECK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(4);

fn bucket_check_timeout() -> std::time::Duration {
    std::env::var("BUCKETFS_BUCKET_CHECK_TIMEOUT")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|s| *s > 0)
        .map(std::time::Duration::from_secs)
        .unwrap_or(BUCKET_CHECK_TIMEOUT)
}

/// Backend selection and credentials flags (flattened into the mount's and other commands' flags).
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    // --- embedded store ---
    #[arg(
        long,
        env = "BUCKETFS_DRIVES",
        value_name = "SPEC",
        action = clap::ArgAction::Append,
        help = "Drive directories for local://; repeat for server pools (see `bucketfs mb --help`)"
    )]
    pub drives: Vec<String>,
    #[arg(long, help = "Parity shards per object for local://")]
    pub parity: Option<usize>,
    /// Pace of the embedded store's background scanner (heal, garbage, usage):
    /// gentle (10% duty, default), fast (50%), max, off, or a percentage 1-100.
    #[arg(long = "scanner-speed", value_name = "SPEED", default_value = "gentle")]
    pub scanner_speed: crate::store::scanner::ScannerSpeed,

    // --- remote ---
    #[arg(long, help = "Endpoint URL of an S3-compatible server")]
    pub endpoint: Option<String>,
    #[arg(long)]
    pub region: Option<String>,
    #[arg(long)]
    pub profile: Option<String>,
    #[arg(long, help = "Virtual-host style addressing even with --endpoint")]
    pub subdomain: bool,
    #[arg(long = "no-sign-request", alias = "no_sign_request", help = "Anonymous access (public buckets)")]
    pub no_sign_request: bool,
    #[arg(
        long = "sign-payload",
        alias = "sign_payload",
        help = "Sign the SHA-256 of every S3 upload body (default: UNSIGNED-PAYLOAD, as rclone and mountpoint-s3 send; \
                  worth it on plain-http endpoints across untrusted networks, costs CPU on every byte written)"
    )]
    pub sign_payload: bool,
    #[arg(long, help = "Server-side encryption with S3-managed keys (SSE-S3)")]
    pub sse: bool,
    #[arg(long = "sse-kms", alias = "sse_kms", num_args = 0..=1, default_missing_value = "", value_name = "KEY_ID",
          help = "Server-side encryption with KMS (the bucket's default key if no KEY_ID)")]
    pub sse_kms: Option<String>,
    #[arg(long = "storage-class", alias = "storage_class")]
    pub storage_class: Option<String>,
    #[arg(long = "requester-pays", alias = "requester_pays")]
    pub requester_pays: bool,

    // --- Azure ---
    #[arg(
        long,
        env = "AZURE_STORAGE_ACCOUNT",
        value_name = "NAME",
        help = "Azure storage account of wasb:// and abfs:// (also wasb://container@ACCOUNT.blob.core.windows.net, abfs://filesystem@ACCOUNT.dfs.core.windows.net)"
    )]
    pub account: Option<String>,
}

impl BackendArgs {
    /// Checks what can be checked without touching the network (drive spec present and
    /// well-formed, backend built), so the mount fails before it daemonizes.
    pub fn preflight(&self, source: &Source) -> Result<()> {
        if source.kind == BackendKind::S3 {
            if let Some(p) = s3_bucket_name_problem(&source.bucket).filter(|p| p.hard) {
                bail!("invalid bucket name {:?}: {} (S3 bucket naming rules)", source.bucket, p.rule);
            }
        }
        self.drives_for(source).map(|_| ())
    }

    /// Where a remote backend's requests go, for messages: the endpoint if given, else the
    /// service's public one.
    fn address(&self, source: &Source) -> String {
        if let Some(e) = &self.endpoint {
            return e.clone();
        }
        match &source.kind {
            BackendKind::S3 => match &self.region {
                Some(r) => format!("https://s3.{r}.amazonaws.com"),
                None => "https://s3.amazonaws.com".into(),
            },
            BackendKind::Gcs => "https://storage.googleapis.com".into(),
            BackendKind::Azure { account, dfs } => {
                let service = if *dfs { "dfs" } else { "blob" };
                let account = account.as_ref().or(self.account.as_ref()).map_or("ACCOUNT", |a| a.as_str());
                format!("https://{account}.{service}.core.windows.net")
            }
            BackendKind::Local => String::new(),
        }
    }

    /// The embedded store's pools (one drive list each); empty for remote backends.
    fn drives_for(&self, source: &Source) -> Result<Vec<Vec<PathBuf>>> {
        match source.kind {
            BackendKind::Local => {
                if self.drives.is_empty() {
                    bail!(
                        "local:// needs --drives SPEC (or BUCKETFS_DRIVES), e.g. --drives '/data/d{{1...4}}'"
                    );
                }
                parse_pool_specs(&self.drives).map_err(|e| anyhow!("{e}"))
            }
            BackendKind::S3 | BackendKind::Gcs => Ok(Vec::new()),
            BackendKind::Azure { .. } => {
                // Account and credentials are known without the network: fail before daemonizing.
                AzureConfig::resolve(&self.azure_request(source)).map_err(|e| anyhow!("{source}: {e}"))?;
                Ok(Vec::new())
            }
        }
    }
}

impl BackendArgs {
    /// What the Azure backend is told: account from the URL, else `--account` / `AZURE_STORAGE_ACCOUNT`.
    fn azure_request(&self, source: &Source) -> AzureRequest {
        let account = match &source.kind {
            BackendKind::Azure { account: Some(a), .. } => Some(a.clone()),
            _ => self.account.clone(),
        };
        AzureRequest {
            container: source.bucket.clone(),
            account,
            endpoint: self.endpoint.clone(),
            anonymous: self.no_sign_request,
            dfs: matches!(source.kind, BackendKind::Azure { dfs: true, .. }),
        }
    }
}

/// Connects to `source`'s bucket, checks it, and roots the result at the source's prefix.
/// `debug` turns on per-request logging of the remote client. With `memory` (a mount's
/// `--memory-limit`), an embedded store's write buffers are paid for from it too.
pub fn open_backend(
    rt: &tokio::runtime::Runtime,
    args: &BackendArgs,
    source: &Source,
    debug: bool,
    memory: Option<&MemoryLimiter>,
) -> Result<Arc<dyn StorageBackend>> {
    let drives = args.drives_for(source)?;
    // a wasb:// mount, asked after its check whether abfs:// would serve it better
    let mut blob_service: Option<Arc<AzureBackend>> = None;
    let backend: Arc<dyn StorageBackend> = match source.kind {
        BackendKind::Local => {
            let store = Store::open_pools(drives, args.parity).map_err(|e| anyhow!("{e}"))?;
            store.set_scanner_speed(args.scanner_speed);
            if let Some(memory) = memory {
                store.set_write_budget(store_write_budget(memory));
            }
            Arc::new(LocalBackend::new(store, &source.bucket))
        }
        BackendKind::S3 => {
            let cfg = S3Config {
                bucket: source.bucket.clone(),
                endpoint: args.endpoint.clone(),
                subdomain: args.subdomain,
                region: args.region.clone(),
                profile: args.profile.clone(),
                no_sign_request: args.no_sign_request,
                sse: args.sse,
                sse_kms: args.sse_kms.clone(),
                storage_class: args.storage_class.clone(),
                requester_pays: args.requester_pays,
                sign_payload: args.sign_payload,
                debug,
            };
            Arc::new(rt.block_on(S3Backend::connect(cfg)).map_err(|e| anyhow!("{source}: {e}"))?)
        }
        BackendKind::Gcs => {
            let cfg = GcsConfig {
                bucket: source.bucket.clone(),
                endpoint: args.endpoint.clone(),
                anonymous: args.no_sign_request,
            };
            Arc::new(rt.block_on(GcsBackend::connect(cfg)).map_err(|e| anyhow!("{source}: {e}"))?)
        }
        BackendKind::Azure { dfs, .. } => {
            let cfg =
                AzureConfig::resolve(&args.azure_request(source)).map_err(|e| anyhow!("{source}: {e}"))?;
            if dfs {
                Arc::new(AbfsBackend::new(cfg).map_err(|e| anyhow!("{source}: {e}"))?)
            } else {
                let az = Arc::new(AzureBackend::new(cfg).map_err(|e| anyhow!("{source}: {e}"))?);
                blob_service = Some(az.clone());
                az
            }
        }
    };
    let checked = match source.kind {
        BackendKind::Local => Ok(rt.block_on(backend.check_bucket())),
        // a server that accepts connections and never answers, or a blackholed address,
        // must not hold the mount for the SDKs' whole retry budget
        _ => {
            rt.block_on(async { tokio::time::timeout(bucket_check_timeout(), backend.check_bucket()).await })
        }
    };
    match checked {
        Ok(Ok(())) => {
            if let Some(az) = &blob_service {
                suggest_abfs(rt, az, source);
            }
        }
        Ok(Err(e)) => {
            let hint = match s3_bucket_name_problem(&source.bucket) {
                Some(p) if source.kind == BackendKind::S3 => {
                    format!(" (bucket name {:?} breaks an S3 naming rule: {})", source.bucket, p.rule)
                }
                _ => String::new(),
            };
            bail!("{source}: {e}{hint}");
        }
        Err(_) => bail!(
            "{source}: no answer from {} within {} s (is the endpoint right, and is the server up and reachable?)",
            args.address(source),
            bucket_check_timeout().as_secs()
        ),
    }
    Ok(PrefixedBackend::wrap(backend, &source.prefix))
}

/// Says in one log line that `abfs://` gives real directories and atomic rename when
/// a `wasb://` mount's account has the hierarchical namespace. Advice only: an account
/// that does not answer within seconds, or refuses, changes nothing.
fn suggest_abfs(rt: &tokio::runtime::Runtime, az: &AzureBackend, source: &Source) {
    // the timer needs the runtime: made inside it
    let asked = rt.block_on(async {
        tokio::time::timeout(std::time::Duration::from_secs(5), az.hierarchical_namespace()).await
    });
    if let Ok(Ok(true)) = asked {
        let prefix = if source.prefix.is_empty() { String::new() } else { format!("/{}", source.prefix) };
        tracing::warn!(
            target: "bucketfs::cli",
            "{source}: account {:?} has the hierarchical namespace (Data Lake Storage Gen2): abfs://{}@{}.dfs.core.windows.net{prefix} gives real directories and atomic rename of files and directories in one request",
            az.cfg.account,
            source.bucket,
            az.cfg.account
        );
    }
}

/// The slice of a mount's `--memory-limit` the embedded store's writes take their block
/// buffers from: an eighth of it, at most 64 MiB (a write streams with about 4 blocks
/// of 1 MiB plus parity, so that is several writes at full speed; more wait for each
/// other). It is reserved for good at mount time, so read-ahead and write parts share
/// what is left and the sum stays under the limit. A separate slice rather than the
/// shared pool: the upload layer holds a part's reservation while the store writes it,
/// so if the store also waited on that pool, parts could hold every byte and wait forever.
fn store_write_budget(memory: &MemoryLimiter) -> Arc<WriteBudget> {
    const MAX: u64 = 64 << 20;
    let want = (memory.limit_bytes() / 8).min(MAX);
    match memory.try_reserve(want) {
        Some(r) => WriteBudget::new(want, Some(Box::new(r))),
        // (a fresh limiter has it all; nothing to reserve from means a tiny limit)
        None => WriteBudget::new(want, None),
    }
}
