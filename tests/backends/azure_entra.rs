//! Entra ID tokens on the Azure backend, from the Azure CLI (through the
//! `azure_identity` crate). A stand-in `az` on the PATH prints a token the way
//! `az account get-access-token -o json` does (or fails like a logged-out CLI);
//! a small recording server stands in for the blob service, because Azurite
//! accepts bearer tokens only over HTTPS.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bucketfs::backend::azure::config::{AzureConfig, AzureRequest};
use bucketfs::backend::azure::AzureBackend;
use bucketfs::backend::ErrorKind;
use bucketfs::backend::{BackendError, ListRequest, StorageBackend};

use crate::common;

pub(crate) const TOKEN: &str = "entra-test-token";

/// A directory holding an `az` that records each call in `calls` and either
/// prints a token valid for an hour or fails as a logged-out CLI does.
pub(crate) fn fake_az(logged_in: bool) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let expires =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 3600;
    let body = if logged_in {
        format!("echo '{{\"accessToken\":\"{TOKEN}\",\"expires_on\":{expires},\"tokenType\":\"Bearer\"}}'")
    } else {
        "echo \"ERROR: Please run 'az login' to setup account.\" >&2; exit 1".to_owned()
    };
    let script = dir.path().join("az");
    std::fs::write(&script, format!("#!/bin/sh\necho \"$*\" >> {}\n{body}\n", calls.display())).unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, calls)
}

/// The environment of a user with only the Azure CLI: no key, no SAS.
pub(crate) fn cli_only_env(az_dir: &Path) {
    for (k, _) in std::env::vars() {
        if k.starts_with("AZURE_")
            || k == "BUCKETFS_AZURE_AUTH"
            || k == "IDENTITY_ENDPOINT"
            || k == "MSI_ENDPOINT"
        {
            std::env::remove_var(k);
        }
    }
    std::env::set_var("PATH", format!("{}:/usr/bin:/bin", az_dir.display()));
}

/// Answers every request with an empty blob listing, as an account with the
/// hierarchical namespace (`x-ms-is-hns-enabled: true`), and records its
/// `authorization` header.
fn recording_blob_service() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}/acct", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let mut reader = BufReader::new(conn.try_clone().unwrap());
            let mut auth = String::from("(none)");
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':') {
                    if name.eq_ignore_ascii_case("authorization") {
                        auth = value.trim().to_owned();
                    }
                }
            }
            log.lock().unwrap().push(auth);
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults ContainerName=\"c\"><Blobs></Blobs><NextMarker /></EnumerationResults>";
            let mut out = conn;
            let _ = write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: application/xml\r\nx-ms-is-hns-enabled: true\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (endpoint, seen)
}

fn request(endpoint: &str) -> AzureRequest {
    AzureRequest {
        container: "c".into(),
        account: Some("acct".into()),
        endpoint: Some(endpoint.into()),
        anonymous: false,
        dfs: false,
    }
}

#[tokio::test]
async fn azure_cli_token_signs_every_request_and_is_reused() {
    let (dir, calls) = fake_az(true);
    cli_only_env(dir.path());
    let (endpoint, seen) = recording_blob_service();
    let cfg = AzureConfig::resolve(&request(&endpoint)).unwrap();
    assert_eq!(format!("{:?}", cfg.credential), "Azure CLI login");
    let b = AzureBackend::new(cfg).unwrap();
    b.check_bucket().await.unwrap();
    for _ in 0..3 {
        b.list(&ListRequest { prefix: "d/".into(), ..Default::default() }).await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert!(seen.iter().all(|a| *a == format!("Bearer {TOKEN}")), "{seen:?}");
    let calls = std::fs::read_to_string(&calls).unwrap();
    assert_eq!(calls.lines().count(), 1, "one `az` run for four requests: {calls}");
    assert!(
        calls.contains("account get-access-token") && calls.contains("https://storage.azure.com/.default"),
        "{calls}"
    );
}

#[tokio::test]
async fn logged_out_azure_cli_is_a_clear_access_error() {
    let (dir, _calls) = fake_az(false);
    cli_only_env(dir.path());
    let (endpoint, seen) = recording_blob_service();
    let b = AzureBackend::new(AzureConfig::resolve(&request(&endpoint)).unwrap()).unwrap();
    let e = b.check_bucket().await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "{e:?}");
    assert!(e.to_string().contains("az login"), "{e}");
    assert!(seen.lock().unwrap().is_empty(), "no request goes out without a token");
}

/// The mount fails at once, naming `az login`, when the CLI is there but logged out.
#[test]
fn mount_with_logged_out_azure_cli_fails_at_mount_time() {
    let (dir, _calls) = fake_az(false);
    let (endpoint, _seen) = recording_blob_service();
    let mnt = tempfile::tempdir().unwrap();
    let path = format!("{}:/usr/bin:/bin", dir.path().display());
    let (code, err, _) = common::run_bucketfs_env(
        &["--endpoint", &endpoint, "--account", "acct", "wasb://c", mnt.path().to_str().unwrap()],
        &[
            ("AZURE_STORAGE_KEY", None),
            ("AZURE_STORAGE_SAS_TOKEN", None),
            ("AZURE_STORAGE_CONNECTION_STRING", None),
            ("BUCKETFS_AZURE_AUTH", None),
            ("PATH", Some(&path)),
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("az login"), "{err}");
    assert!(!common::is_mounted(mnt.path()));
}

#[test]
fn unknown_auth_mode_is_refused() {
    std::env::set_var("BUCKETFS_AZURE_AUTH", "kerberos");
    for k in ["AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CONNECTION_STRING"] {
        std::env::remove_var(k);
    }
    let e = AzureConfig::resolve(&request("http://127.0.0.1:1/acct")).unwrap_err();
    assert!(e.to_string().contains("BUCKETFS_AZURE_AUTH") && e.to_string().contains("msi"), "{e}");
}

/// A `wasb://` mount of an account with the hierarchical namespace says, in one log
/// line, that `abfs://` gives atomic rename.
#[test]
fn wasb_mount_of_a_hierarchical_namespace_account_points_to_abfs() {
    let (endpoint, seen) = recording_blob_service();
    std::env::set_var("AZURE_STORAGE_KEY", crate::cloud_support::AZ_KEY);
    let m = common::Mount::try_start_source("wasb://c/sub", &["--endpoint", &endpoint, "--account", "acct"])
        .unwrap_or_else(|e| panic!("{e}"));
    let log = m.log_text();
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("abfs://")).collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("abfs://c@acct.dfs.core.windows.net/sub") && lines[0].contains("atomic rename"),
        "{log}"
    );
    assert!(seen.lock().unwrap().iter().all(|a| a.starts_with("SharedKey acct:")));
}
