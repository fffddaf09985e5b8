//! Shared harness of the integration tests: temporary drive sets, real FUSE mounts of
//! the `bucketfs` binary built with the tests, and small file helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfs::backend::local::LocalBackend;
use bucketfs::backend::{PutOptions, StorageBackend};
use bucketfs::store::{parse_drive_spec, Store, StoreConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_bucketfs");

/// A set of empty drive directories in a temp dir.
pub struct Drives {
    pub dir: tempfile::TempDir,
    pub spec: String,
}

impl Drives {
    pub fn new(n: usize) -> Drives {
        Drives::new_in(&test_root(), n)
    }

    /// `n` drives under `root` (e.g. a tmpfs the test mounted).
    pub fn new_in(root: &Path, n: usize) -> Drives {
        let dir = tempfile::Builder::new().prefix("bfs-drives").tempdir_in(root).unwrap();
        let spec = format!("{}/d{{1...{n}}}", dir.path().display());
        Drives { dir, spec }
    }

    /// Creates a bucket with the CLI (also checks that `mb` works).
    pub fn make_bucket(&self, name: &str) {
        let out = Command::new(BIN).args(["mb", "--drives", &self.spec, name]).output().unwrap();
        assert!(out.status.success(), "mb failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    /// Writes objects straight into the store (no mount may be running on these drives).
    pub fn put_objects(&self, bucket: &str, objects: impl IntoIterator<Item = (String, Vec<u8>)>) {
        let drives = parse_drive_spec(&self.spec).unwrap();
        let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
        let backend = Arc::new(LocalBackend::new(store, bucket));
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let mut tasks = Vec::new();
            for (k, v) in objects {
                let b = backend.clone();
                tasks.push(tokio::spawn(async move {
                    b.put(&k, v.into(), &PutOptions::default()).await.unwrap()
                }));
                if tasks.len() >= 16 {
                    for t in tasks.drain(..) {
                        t.await.unwrap();
                    }
                }
            }
            for t in tasks {
                t.await.unwrap();
            }
        });
        // release the drive locks now, not when the background worker finishes
        backend.store().close();
    }

    /// In-progress multipart uploads in `bucket` (no mount may be running on these drives).
    pub fn pending_uploads(&self, bucket: &str) -> usize {
        let drives = parse_drive_spec(&self.spec).unwrap();
        let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
        let n = store.list_multipart_uploads(bucket, "").unwrap().len();
        store.close();
        n
    }

    pub fn drive(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("d{i}"))
    }
}

/// Where test temp dirs go: on disk (not tmpfs), under the target dir, so big files are fine.
pub fn test_root() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// A small tmpfs mounted for a test (a drive that fills up); unmounted when dropped.
pub struct Tmpfs(PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// Mounts a tmpfs of `size` (e.g. `16m`) on `path`; None where that is not allowed (not root).
pub fn tmpfs(path: &Path, size: &str) -> Option<Tmpfs> {
    std::fs::create_dir_all(path).ok()?;
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
        .arg(path)
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then(|| Tmpfs(path.to_path_buf()))
}

pub fn is_mounted(mnt: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = mnt.to_string_lossy();
    info.lines().any(|l| l.split(' ').nth(4) == Some(&want))
}

/// A foreground `bucketfs -f` process with its mountpoint.
pub struct Mount {
    pub mnt: PathBuf,
    _mnt_dir: tempfile::TempDir,
    pub child: Option<Child>,
    pub log: PathBuf,
}

impl Mount {
    /// Mounts `local://bucket` from `drives` with extra flags; waits until the mount is live.
    pub fn start(drives: &Drives, bucket: &str, extra: &[&str]) -> Mount {
        Self::try_start(drives, bucket, extra).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(drives: &Drives, bucket: &str, extra: &[&str]) -> Result<Mount, String> {
        let mut args = vec!["--drives", drives.spec.as_str()];
        args.extend_from_slice(extra);
        Self::try_start_source(&format!("local://{bucket}"), &args)
    }

    /// Mounts any SOURCE (e.g. `s3://bucket` with `--endpoint`) with extra flags.
    pub fn try_start_source(source: &str, extra: &[&str]) -> Result<Mount, String> {
        let mnt_dir = tempfile::Builder::new().prefix("bfs-mnt").tempdir_in(test_root()).unwrap();
        let mnt = mnt_dir.path().join("m");
        std::fs::create_dir(&mnt).unwrap();
        let log = mnt_dir.path().join("log");
        let logf = std::fs::File::create(&log).unwrap();
        // short caches so tests see other clients' changes soon, unless a test sets its own
        let mut ttls = vec![];
        for flag in ["--stat-cache-ttl", "--type-cache-ttl"] {
            if !extra.contains(&flag) {
                ttls.extend([flag, "1s"]);
            }
        }
        let child = Command::new(BIN)
            .arg("-f")
            .args(&ttls)
            .args(extra)
            .arg(source)
            .arg(&mnt)
            .stdin(Stdio::null())
            .stdout(logf.try_clone().unwrap())
            .stderr(logf)
            .env("RUST_LOG", "warn,bucketfs=debug")
            // a test server busy with a test's own load (Azurite after 2,000 writes) may
            // take longer than the 4 s a silent endpoint gets (tests/backends/cli_validation.rs)
            .env("BUCKETFS_BUCKET_CHECK_TIMEOUT", "60")
            .spawn()
            .unwrap();
        let mut m = Mount { mnt, _mnt_dir: mnt_dir, child: Some(child), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if is_mounted(&m.mnt) {
                return Ok(m);
            }
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                m.child = None;
                return Err(format!("bucketfs exited ({status}) before mounting: {}", m.log_text()));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("mount did not come up in 20 s: {}", m.log_text()))
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.mnt.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    /// SIGTERM, then waits for a clean exit; returns whether it unmounted cleanly.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                let clean = st.success() && !is_mounted(&self.mnt);
                if !clean {
                    // the failing test's stderr then says why
                    eprintln!("unclean stop ({st}); mount log:\n{}", self.log_text());
                }
                return clean;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                force_unmount(&self.mnt);
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9 the daemon (as a crash would) and clear the dead mount.
    pub fn kill9(&mut self) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = self.child.take().unwrap().wait();
        }
        force_unmount(&self.mnt);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if self.child.is_some() && !self.stop() {
            eprintln!("mount log:\n{}", self.log_text());
        }
        if is_mounted(&self.mnt) {
            force_unmount(&self.mnt);
        }
    }
}

pub fn force_unmount(mnt: &Path) {
    let _ = Command::new("umount").arg("-l").arg(mnt).stderr(Stdio::null()).status();
}

/// Deterministic pseudo-random bytes (xorshift), so failures are reproducible.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Runs a shell command, asserting success; returns stdout.
pub fn sh(cmd: &str) -> String {
    let out: Output = Command::new("bash").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "`{cmd}` failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs the bucketfs binary with args; returns (exit code, stderr, elapsed).
pub fn run_bucketfs(args: &[&str]) -> (i32, String, Duration) {
    let t = Instant::now();
    let out = Command::new(BIN).args(args).stdin(Stdio::null()).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), t.elapsed())
}

/// [`run_bucketfs`] with environment changes (`None` removes the variable).
pub fn run_bucketfs_env(args: &[&str], env: &[(&str, Option<&str>)]) -> (i32, String, Duration) {
    let t = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args).stdin(Stdio::null());
    for (k, v) in env {
        match v {
            Some(v) => cmd.env(k, v),
            None => cmd.env_remove(k),
        };
    }
    let out = cmd.output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned(), t.elapsed())
}
