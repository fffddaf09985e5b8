//! Where an Azure container lives and how requests to it are authorized.
//!
//! Sources, first match wins:
//! - Account: `wasb://container@ACCOUNT.blob.core.windows.net`, else `--account` /
//!   `AZURE_STORAGE_ACCOUNT`, else the connection string's `AccountName`.
//! - Credentials: `--no-sign-request` (anonymous, public containers), else
//!   `AZURE_STORAGE_SAS_TOKEN`, else `AZURE_STORAGE_KEY` (Shared Key signing), else
//!   `AZURE_STORAGE_CONNECTION_STRING` (`AccountKey` or `SharedAccessSignature`;
//!   `UseDevelopmentStorage=true` means Azurite's well-known account), else an
//!   Entra ID token (Azure CLI, workload or managed identity; see [`super::entra`]).
//! - Endpoint: `--endpoint` (the blob service URL; for Azurite
//!   `http://127.0.0.1:10000/devstoreaccount1`), else the connection string's
//!   `BlobEndpoint`, else `https://ACCOUNT.blob.core.windows.net`. For `abfs://`
//!   ([`AzureRequest::dfs`]) the Data Lake service: `--endpoint` as given, else the
//!   connection string's `BlobEndpoint` with `.blob.` read as `.dfs.` (connection
//!   strings have no DFS field), else `https://ACCOUNT.dfs.core.windows.net`.
//!
//! Everything here is resolved without the network, so a missing account or
//! credential fails the mount before it daemonizes. Keys and SAS tokens are
//! kept out of `Debug` output and error messages.

use std::fmt;
use std::sync::Arc;

use base64::Engine;

use super::entra::{EntraSource, EntraToken, AUTH_ENV};
use crate::backend::{BackendError, BackendResult};

/// Azurite's documented development account and key (public, not a secret).
const DEV_ACCOUNT: &str = "devstoreaccount1";
const DEV_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// What the CLI knows: container, account and endpoint flags.
#[derive(Clone, Debug, Default)]
pub struct AzureRequest {
    pub container: String,
    pub account: Option<String>,
    pub endpoint: Option<String>,
    pub anonymous: bool,
    /// The Data Lake Storage Gen2 (DFS) service of `abfs://` rather than the blob service.
    pub dfs: bool,
}

#[derive(Clone)]
pub enum Credential {
    Anonymous,
    /// Decoded account key (Shared Key).
    Key(Vec<u8>),
    /// SAS token without the leading `?`.
    Sas(String),
    /// Microsoft Entra ID bearer tokens.
    Entra(Arc<EntraToken>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Credential::Anonymous => "anonymous",
            Credential::Key(_) => "account key",
            Credential::Sas(_) => "SAS token",
            Credential::Entra(t) => t.source().describe(),
        })
    }
}

#[derive(Clone, Debug)]
pub struct AzureConfig {
    pub account: String,
    pub container: String,
    /// Blob service URL (DFS service URL for `abfs://`) without a trailing `/`.
    pub endpoint: String,
    pub credential: Credential,
}

/// The fields of a connection string that matter here.
#[derive(Default, Debug)]
struct ConnectionString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
    protocol: Option<String>,
    suffix: Option<String>,
}

fn parse_connection_string(s: &str) -> ConnectionString {
    let mut c = ConnectionString::default();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = part.split_once('=') else { continue };
        match k.trim() {
            "AccountName" => c.account = Some(v.to_owned()),
            "AccountKey" => c.key = Some(v.to_owned()),
            "SharedAccessSignature" => c.sas = Some(v.to_owned()),
            "BlobEndpoint" => c.blob_endpoint = Some(v.to_owned()),
            "DefaultEndpointsProtocol" => c.protocol = Some(v.to_owned()),
            "EndpointSuffix" => c.suffix = Some(v.to_owned()),
            "UseDevelopmentStorage" if v.eq_ignore_ascii_case("true") => {
                c.account = Some(DEV_ACCOUNT.into());
                c.key = Some(DEV_KEY.into());
                c.blob_endpoint = Some(format!("http://127.0.0.1:10000/{DEV_ACCOUNT}"));
            }
            _ => {}
        }
    }
    c
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

impl AzureConfig {
    pub fn resolve(req: &AzureRequest) -> BackendResult<AzureConfig> {
        if req.container.is_empty() {
            return Err(BackendError::invalid_argument("empty container name"));
        }
        let conn =
            env("AZURE_STORAGE_CONNECTION_STRING").map(|s| parse_connection_string(&s)).unwrap_or_default();
        let account = req.account.clone().filter(|a| !a.is_empty()).or_else(|| conn.account.clone()).ok_or_else(|| {
            BackendError::invalid_argument(
                "no Azure storage account: set AZURE_STORAGE_ACCOUNT or --account, or use wasb://container@ACCOUNT.blob.core.windows.net",
            )
        })?;
        if !account.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(BackendError::invalid_argument(format!(
                "invalid Azure storage account name {account:?}"
            )));
        }
        let credential = if req.anonymous {
            Credential::Anonymous
        } else if let Some(sas) = env("AZURE_STORAGE_SAS_TOKEN") {
            Credential::Sas(sas.trim_start_matches('?').to_owned())
        } else if let Some(key) = env("AZURE_STORAGE_KEY") {
            Credential::Key(decode_key(&key, "AZURE_STORAGE_KEY")?)
        } else if let Some(key) = &conn.key {
            Credential::Key(decode_key(key, "the AccountKey of AZURE_STORAGE_CONNECTION_STRING")?)
        } else if let Some(sas) = &conn.sas {
            Credential::Sas(sas.trim_start_matches('?').to_owned())
        } else if let Some(source) = EntraSource::detect()? {
            Credential::Entra(Arc::new(EntraToken::new(source)?))
        } else {
            return Err(BackendError::access_denied(format!(
                "no Azure credentials for account {account:?}: set AZURE_STORAGE_KEY, AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING, log in with `az login`, set {AUTH_ENV}=msi on a VM with a managed identity (or --no-sign-request for a public container)"
            )));
        };
        let service = if req.dfs { "dfs" } else { "blob" };
        let endpoint = match (&req.endpoint, &conn.blob_endpoint) {
            (Some(e), _) => e.clone(),
            (None, Some(e)) if req.dfs => e.replacen(".blob.", ".dfs.", 1),
            (None, Some(e)) => e.clone(),
            (None, None) => format!(
                "{}://{account}.{service}.{}",
                conn.protocol.as_deref().unwrap_or("https"),
                conn.suffix.as_deref().unwrap_or("core.windows.net")
            ),
        };
        Ok(AzureConfig {
            account,
            container: req.container.clone(),
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            credential,
        })
    }
}

fn decode_key(key: &str, what: &str) -> BackendResult<Vec<u8>> {
    base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| BackendError::invalid_argument(format!("{what} is not a base64 account key")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_strings() {
        let c = parse_connection_string(
            "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=a2V5;EndpointSuffix=core.windows.net",
        );
        assert_eq!((c.account.as_deref(), c.key.as_deref()), (Some("acct"), Some("a2V5")));
        let c = parse_connection_string("UseDevelopmentStorage=true");
        assert_eq!(c.account.as_deref(), Some(DEV_ACCOUNT));
        assert!(c.blob_endpoint.unwrap().starts_with("http://127.0.0.1:10000/"));
    }

    #[test]
    fn credentials_never_print() {
        let s = format!("{:?}", Credential::Sas("sv=1&sig=SECRET".into()));
        assert!(!s.contains("SECRET"));
        let s = format!("{:?}", Credential::Key(b"SECRET".to_vec()));
        assert!(!s.contains("SECRET"));
    }
}
