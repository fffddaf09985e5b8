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

use super::source::{BackendKind, Source};
use crate::backend::local::LocalBackend;
use crate::backend::prefixed::PrefixedBackend;
use crate::backend::s3::{config::S3Config, S3Backend};
use crate::backend::StorageBackend;
use crate::store::{parse_drive_spec, Store, StoreConfig};

/// Backend selection and credentials flags (flattened into the mount's and other commands' flags).
#[derive(Args, Debug, Clone, Default)]
pub struct BackendArgs {
    // --- embedded store ---
    #[arg(
        long,
        env = "BUCKETFS_DRIVES",
        value_name = "SPEC",
        help = "Drive directories for local:// (see `bucketfs mb --help`)"
    )]
    pub drives: Option<String>,
    #[arg(long, help = "Parity shards per object for local://")]
    pub parity: Option<usize>,

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
    #[arg(long, help = "Server-side encryption with S3-managed keys (SSE-S3)")]
    pub sse: bool,
    #[arg(long = "sse-kms", alias = "sse_kms", num_args = 0..=1, default_missing_value = "", value_name = "KEY_ID",
          help = "Server-side encryption with KMS (the bucket's default key if no KEY_ID)")]
    pub sse_kms: Option<String>,
    #[arg(long = "storage-class", alias = "storage_class")]
    pub storage_class: Option<String>,
    #[arg(long = "requester-pays", alias = "requester_pays")]
    pub requester_pays: bool,
}

impl BackendArgs {
    /// Checks what can be checked without touching the network (drive spec present and
    /// well-formed, backend built), so the mount fails before it daemonizes.
    pub fn preflight(&self, source: &Source) -> Result<()> {
        self.drives_for(source).map(|_| ())
    }

    fn drives_for(&self, source: &Source) -> Result<Vec<PathBuf>> {
        match source.kind {
            BackendKind::Local => {
                let spec = self.drives.clone().ok_or_else(|| {
                    anyhow!(
                        "local:// needs --drives SPEC (or BUCKETFS_DRIVES), e.g. --drives '/data/d{{1...4}}'"
                    )
                })?;
                parse_drive_spec(&spec).map_err(|e| anyhow!("{e}"))
            }
            BackendKind::S3 => Ok(Vec::new()),
            BackendKind::Gcs => bail!("the Google Cloud Storage backend is not built yet"),
            BackendKind::Azure { .. } => bail!("the Azure Blob backend is not built yet"),
        }
    }
}

/// Connects to `source`'s bucket, checks it, and roots the result at the source's prefix.
/// `debug` turns on per-request logging of the remote client.
pub fn open_backend(
    rt: &tokio::runtime::Runtime,
    args: &BackendArgs,
    source: &Source,
    debug: bool,
) -> Result<Arc<dyn StorageBackend>> {
    let drives = args.drives_for(source)?;
    let backend: Arc<dyn StorageBackend> = match source.kind {
        BackendKind::Local => {
            let store =
                Store::open(StoreConfig { drives, parity: args.parity }).map_err(|e| anyhow!("{e}"))?;
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
                debug,
            };
            Arc::new(rt.block_on(S3Backend::connect(cfg)).map_err(|e| anyhow!("{source}: {e}"))?)
        }
        _ => bail!("backend not built yet"),
    };
    rt.block_on(backend.check_bucket()).map_err(|e| anyhow!("{source}: {e}"))?;
    Ok(PrefixedBackend::wrap(backend, &source.prefix))
}
