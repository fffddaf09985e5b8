//! Microsoft Entra ID (OAuth) tokens for Blob requests, from the official
//! `azure_identity` crate: the Azure CLI's login, workload identity (AKS) and
//! managed identity (VMs, App Service, Functions).
//!
//! Which source is used is decided without the network when the mount starts
//! (see [`EntraSource::detect`]); the first token is fetched by the mount's
//! bucket check, so a missing `az login` or an identity without access fails
//! the mount with a clear message. Tokens are cached here until five minutes
//! before they expire: the Azure CLI credential runs `az` for every token it
//! is asked for, which takes about a second.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_core::credentials::TokenCredential;
use tokio::sync::Mutex;

use crate::backend::http;
use crate::backend::{BackendError, BackendResult};

/// The scope of Azure Storage's data plane.
const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";
/// A token is renewed this long before it expires.
const RENEW_BEFORE: Duration = Duration::from_secs(300);
/// Longest wait for one token (the CLI, the identity endpoint).
const TOKEN_TIMEOUT: Duration = Duration::from_secs(30);

/// An error of the crate on one line, without secrets.
fn one_line(e: &azure_core::Error) -> String {
    http::redact(&e.to_string()).split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `BUCKETFS_AZURE_AUTH` forces a source: `cli`, `workload` or `msi`.
pub const AUTH_ENV: &str = "BUCKETFS_AZURE_AUTH";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntraSource {
    AzureCli,
    WorkloadIdentity,
    ManagedIdentity,
}

impl EntraSource {
    /// The source the environment points to, if any: `BUCKETFS_AZURE_AUTH`
    /// first; else workload identity when its variables are set (AKS injects
    /// them), else the Azure CLI when `az` is on the PATH, else managed identity
    /// when App Service / Functions / Arc announce an identity endpoint. On a
    /// VM the instance metadata service announces nothing: set
    /// `BUCKETFS_AZURE_AUTH=msi` there.
    pub fn detect() -> BackendResult<Option<EntraSource>> {
        let set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
        if let Ok(forced) = std::env::var(AUTH_ENV) {
            return match forced.trim() {
                "cli" | "azcli" => Ok(Some(EntraSource::AzureCli)),
                "workload" => Ok(Some(EntraSource::WorkloadIdentity)),
                "msi" | "managed-identity" => Ok(Some(EntraSource::ManagedIdentity)),
                "" => Ok(None),
                other => Err(BackendError::invalid_argument(format!(
                    "{AUTH_ENV}={other:?}: expected cli, workload or msi"
                ))),
            };
        }
        if set("AZURE_FEDERATED_TOKEN_FILE") && set("AZURE_CLIENT_ID") && set("AZURE_TENANT_ID") {
            return Ok(Some(EntraSource::WorkloadIdentity));
        }
        if on_path("az") {
            return Ok(Some(EntraSource::AzureCli));
        }
        if set("IDENTITY_ENDPOINT") || set("MSI_ENDPOINT") {
            return Ok(Some(EntraSource::ManagedIdentity));
        }
        Ok(None)
    }

    pub fn describe(self) -> &'static str {
        match self {
            EntraSource::AzureCli => "Azure CLI login",
            EntraSource::WorkloadIdentity => "workload identity",
            EntraSource::ManagedIdentity => "managed identity",
        }
    }
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|dir| dir.join(program).is_file()))
}

/// A cached bearer token from one [`EntraSource`].
pub struct EntraToken {
    source: EntraSource,
    credential: Arc<dyn TokenCredential>,
    cached: Mutex<Option<(String, SystemTime)>>,
}

impl fmt::Debug for EntraToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entra ID token ({})", self.source.describe())
    }
}

impl EntraToken {
    pub fn new(source: EntraSource) -> BackendResult<EntraToken> {
        let credential: Arc<dyn TokenCredential> = match source {
            EntraSource::AzureCli => azure_identity::AzureCliCredential::new(None).map(|c| c as _),
            EntraSource::WorkloadIdentity => {
                azure_identity::WorkloadIdentityCredential::new(None).map(|c| c as _)
            }
            EntraSource::ManagedIdentity => {
                azure_identity::ManagedIdentityCredential::new(None).map(|c| c as _)
            }
        }
        .map_err(|e| {
            BackendError::access_denied(format!("cannot use the {}: {}", source.describe(), one_line(&e)))
        })?;
        Ok(EntraToken { source, credential, cached: Mutex::new(None) })
    }

    pub fn source(&self) -> EntraSource {
        self.source
    }

    /// The `Authorization` header value: a cached token, or a new one.
    pub async fn bearer(&self) -> BackendResult<String> {
        let mut cached = self.cached.lock().await;
        if let Some((token, renew_at)) = &*cached {
            if SystemTime::now() < *renew_at {
                return Ok(format!("Bearer {token}"));
            }
        }
        let got = tokio::time::timeout(TOKEN_TIMEOUT, self.credential.get_token(&[STORAGE_SCOPE], None))
            .await
            .map_err(|_| {
                BackendError::access_denied(format!(
                    "no Entra ID token from the {} within {} s",
                    self.source.describe(),
                    TOKEN_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| {
                let hint = match self.source {
                    EntraSource::AzureCli => {
                        " (run `az login`, or set AZURE_STORAGE_KEY / AZURE_STORAGE_SAS_TOKEN)"
                    }
                    _ => "",
                };
                BackendError::access_denied(format!(
                    "cannot get an Entra ID token from the {}: {}{hint}",
                    self.source.describe(),
                    one_line(&e)
                ))
            })?;
        let expires = SystemTime::UNIX_EPOCH
            + Duration::from_secs(u64::try_from(got.expires_on.unix_timestamp()).unwrap_or(0));
        let renew_at = expires.checked_sub(RENEW_BEFORE).unwrap_or(SystemTime::UNIX_EPOCH);
        let token = got.token.secret().to_owned();
        *cached = Some((token.clone(), renew_at));
        Ok(format!("Bearer {token}"))
    }
}
