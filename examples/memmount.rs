//! Mounts an in-memory bucket, for trying the filesystem by hand.
//!
//! ```text
//! cargo run --example memmount -- /mnt/x [--enable-perms] [--read-only] [--ttl SECS]
//! ```
//! The bucket starts with a few objects (a file, an implicit directory, a
//! directory marker, a symlink, a file and a directory sharing a name, and a
//! directory of 2500 objects). Ctrl-C commits open files and unmounts.
//! `RUST_LOG=bucketfs::fs=debug` shows every FUSE operation.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bucketfs::backend::memory::MemoryBackend;
use bucketfs::backend::{PutOptions, StorageBackend};
use bucketfs::fs::handle::{HandleConfig, HandleContext};
use bucketfs::fs::{BucketFs, FsConfig};
use bucketfs::memory::MemoryLimiter;
use bucketfs::metrics::Metrics;
use bytes::Bytes;
use fuser::MountOption;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mountpoint) = args.first().cloned() else {
        eprintln!("usage: memmount MOUNTPOINT [--enable-perms] [--read-only] [--ttl SECS]");
        std::process::exit(2);
    };
    let flag = |f: &str| args.iter().any(|a| a == f);
    let ttl = args
        .iter()
        .position(|a| a == "--ttl")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(60));
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();

    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    let mem = Arc::new(MemoryBackend::new());
    rt.block_on(seed(&mem));
    let backend: Arc<dyn StorageBackend> = mem;
    let spool = std::env::temp_dir().join("bucketfs-memmount-spool");
    let handles = Arc::new(HandleContext {
        backend: backend.clone(),
        memory: MemoryLimiter::new(256 << 20),
        metrics: Arc::new(Metrics::default()),
        cfg: HandleConfig {
            part_size: 8 << 20,
            read_ahead: 8 << 20,
            max_parts_in_flight: 4,
            spool_dir: spool,
            multi_range: None,
        },
    });
    // SAFETY of the numbers: only used as the owner shown for every entry
    let (uid, gid) = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
    let cfg = FsConfig {
        uid,
        gid,
        file_mode: 0o644,
        dir_mode: 0o755,
        stat_cache_ttl: ttl,
        type_cache_ttl: ttl,
        enable_perms: flag("--enable-perms"),
        read_only: flag("--read-only"),
        // in-process: no round trip for a lookup's listing to save
        lookup_fetches_listing: false,
    };
    let fs = BucketFs::new(rt.handle().clone(), backend, cfg, handles);
    let ctl = fs.controller();
    let mut config = fuser::Config::default();
    config.mount_options = vec![MountOption::FSName("bucketfs-mem".into()), MountOption::DefaultPermissions];
    config.n_threads = Some(4);
    let session = match fuser::spawn_mount(fs, &mountpoint, &config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("mount failed: {e}");
            std::process::exit(1);
        }
    };
    eprintln!("mounted on {mountpoint}; Ctrl-C to unmount");
    rt.block_on(async {
        let _ = tokio::signal::ctrl_c().await;
        let failed = ctl.commit_all().await;
        eprintln!("committed open files ({failed} failed)");
    });
    drop(session);
}

async fn seed(mem: &MemoryBackend) {
    let put = |k: &'static str, v: &'static [u8], md: &[(&str, &str)]| {
        let opts = PutOptions {
            user_metadata: md.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<BTreeMap<_, _>>(),
            ..Default::default()
        };
        async move { mem.put(k, Bytes::from_static(v), &opts).await.expect("seed") }
    };
    put("hello.txt", b"hello, world\n", &[]).await;
    put("implicit/inner.txt", b"inside an implicit directory\n", &[]).await;
    put("marked/", b"", &[]).await;
    put("link", b"hello.txt", &[("bucketfs-type", "symlink")]).await;
    put("twin", b"hidden by the directory", &[]).await;
    put("twin/child", b"child\n", &[]).await;
    for i in 0..2500 {
        let k = format!("many/f{i:05}");
        mem.put(&k, Bytes::from(vec![b'x'; 5000]), &PutOptions::default()).await.expect("seed");
    }
}
