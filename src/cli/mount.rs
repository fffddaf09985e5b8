//! Mounting: validate everything that can be validated, build the backend, start the
//! FUSE session, report readiness, then wait for a signal or an external unmount.
//!
//! Stop sequence on SIGTERM/SIGINT: commit every dirty open file (so a clean stop
//! never loses data), then unmount; if the mount is busy, detach it lazily so the
//! mountpoint never stays behind as "transport endpoint is not connected".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fuser::{Config, MountOption, SessionACL};
use tracing::{info, warn};

use super::args::MountArgs;
use super::backend::open_backend;
use super::daemon::{self, Readiness};
use super::source::{parse_source, Source};
use crate::backend::attr_index::AttrIndexBackend;
use crate::backend::metered::MeteredBackend;
use crate::backend::StorageBackend;
use crate::fs::handle::{HandleConfig, HandleContext};
use crate::fs::{BucketFs, FsConfig};
use crate::memory::MemoryLimiter;
use crate::metrics::Metrics;
use crate::read::MultiRangeConfig;
use crate::upload::journal;

/// Smallest `--memory-limit` that still lets one part upload while another buffers.
const MIN_MEMORY_LIMIT: u64 = 32 << 20;

pub fn run(args: MountArgs) -> Result<()> {
    // The fmt subscriber starts no threads, so it is safe to set up before fork.
    super::init_logging(args.debug_fuse, args.debug_s3);
    let source = parse_source(args.source.as_deref().unwrap_or_default()).map_err(|e| anyhow!(e))?;
    let mountpoint = check_mountpoint(args.mountpoint.as_deref().unwrap_or(Path::new("")))?;
    if args.memory_limit < MIN_MEMORY_LIMIT {
        bail!("--memory-limit must be at least 32M");
    }
    if args.memory_limit < 2 * args.part_size {
        bail!(
            "--memory-limit ({}) must hold at least two parts of --part-size ({})",
            args.memory_limit,
            args.part_size
        );
    }
    args.backend.preflight(&source)?;

    let readiness =
        if args.foreground { None } else { Some(daemon::daemonize().context("cannot daemonize")?) };
    match serve(&args, &source, &mountpoint, readiness) {
        Ok(()) => Ok(()),
        Err((e, Some(r))) => {
            r.fail(&format!("{e:#}"));
            std::process::exit(1);
        }
        Err((e, None)) => Err(e),
    }
}

/// Fails early, with the path in the message, for the mountpoint mistakes users make.
fn check_mountpoint(p: &Path) -> Result<PathBuf> {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => bail!("mountpoint {} is not a directory", p.display()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => {
            // A previous daemon was killed and left its mount behind; detach it so the
            // user does not have to know the fusermount incantation.
            warn!("mountpoint {} is a dead FUSE mount; detaching it", p.display());
            lazy_unmount(p);
            if !std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
                bail!(
                    "mountpoint {} is a dead mount that could not be detached (try: fusermount3 -u -z {})",
                    p.display(),
                    p.display()
                );
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("mountpoint {} does not exist", p.display())
        }
        Err(e) => bail!("mountpoint {}: {e}", p.display()),
    }
    p.canonicalize().with_context(|| format!("mountpoint {}", p.display()))
}

fn lazy_unmount(p: &Path) {
    if let Ok(c) = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()) {
        // SAFETY: a valid NUL-terminated path.
        let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        if rc != 0 {
            // not root: ask the setuid helper
            let _ = std::process::Command::new("fusermount3").args(["-u", "-z"]).arg(p).status();
        }
    }
}

type ServeError = (anyhow::Error, Option<Readiness>);

fn serve(
    args: &MountArgs,
    source: &Source,
    mountpoint: &Path,
    readiness: Option<Readiness>,
) -> Result<(), ServeError> {
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bucketfs-rt").build()
    {
        Ok(rt) => rt,
        Err(e) => return Err((anyhow!("cannot start the runtime: {e}"), readiness)),
    };
    let backend = match open_backend(&rt, &args.backend, source, args.debug_s3) {
        Ok(b) => b,
        Err(e) => return Err((e, readiness)),
    };
    let metrics = Arc::new(Metrics::default());
    // every request of this mount is counted and traced in one place
    let backend = MeteredBackend::wrap(backend, metrics.clone());
    // symlinks and --enable-perms attributes visible in S3 listings (above the meter: its requests count)
    let backend = AttrIndexBackend::wrap_if_needed(backend, crate::fs::INDEXED_METADATA);
    let backend = if args.read_only { backend } else { journaled(&rt, args, source, backend) };
    let handles = Arc::new(HandleContext {
        backend: backend.clone(),
        memory: MemoryLimiter::new(args.memory_limit),
        metrics: metrics.clone(),
        cfg: HandleConfig {
            part_size: args.part_size,
            read_ahead: args.read_ahead,
            max_parts_in_flight: 4,
            spool_dir: args.cache_dir.clone().unwrap_or_else(|| std::env::temp_dir().join("bucketfs-spool")),
            multi_range: args
                .enable_multi_range
                .then(|| MultiRangeConfig::new(args.multi_range_batch_size, args.multi_range_threshold)),
        },
    });
    if let Some(multi_range) = &handles.cfg.multi_range {
        // says now, once, when the backend is known not to batch (later if a probe finds out)
        multi_range.usable_with(backend.as_ref());
    }
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fs_cfg = FsConfig {
        uid: args.uid.unwrap_or(uid),
        gid: args.gid.unwrap_or(gid),
        file_mode: args.file_mode,
        dir_mode: args.dir_mode,
        stat_cache_ttl: args.stat_cache_ttl,
        type_cache_ttl: args.type_cache_ttl,
        enable_perms: args.enable_perms,
        read_only: args.read_only,
    };
    let sweep_backend = backend.clone();
    let fs = BucketFs::new(rt.handle().clone(), backend, fs_cfg, handles);
    let controller = fs.controller();

    let mut options = vec![
        MountOption::FSName(source.to_string()),
        MountOption::Subtype("bucketfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoAtime,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    options.push(if args.read_only { MountOption::RO } else { MountOption::RW });
    let mut config = Config::default();
    config.mount_options = options;
    // allow_other only when asked: other users' access is a security decision.
    config.acl = if args.allow_other { SessionACL::All } else { SessionACL::Owner };
    config.n_threads = Some(8);
    config.clone_fd = true;

    let mut session = match fuser::Session::new(fs, mountpoint, &config) {
        Ok(s) => s,
        Err(e) => return Err((anyhow!("cannot mount on {}: {e}", mountpoint.display()), readiness)),
    };
    // Run the session on our own thread rather than `Session::spawn`: spawn moves the
    // mount out of the slot `unmount_callable` shares, which made our SIGTERM unmount a
    // silent no-op and left a dead mountpoint behind.
    let mut unmounter = session.unmount_callable();
    let session_thread =
        match std::thread::Builder::new().name("fuse-session".into()).spawn(move || session.run()) {
            Ok(t) => t,
            Err(e) => return Err((anyhow!("cannot start the FUSE session: {e}"), readiness)),
        };
    info!(source = %source, mountpoint = %mountpoint.display(), "mounted");
    if !args.stale_upload_age.is_zero() {
        rt.spawn(sweep_stale_uploads(sweep_backend, args.stale_upload_age));
    }
    if let Some(r) = readiness {
        if let Err(e) = r.ready(args.log_file.as_deref()) {
            warn!("cannot report readiness: {e}");
        }
    } else {
        eprintln!("bucketfs: {source} mounted on {} (Ctrl-C to unmount)", mountpoint.display());
    }

    let signalled = rt.block_on(async {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return false;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return true,
                _ = int.recv() => return true,
                _ = tick.tick() => if session_thread.is_finished() { return false },
            }
        }
    });
    if signalled {
        info!("signal received: committing open files, then unmounting");
        let failed = rt.block_on(controller.commit_all());
        if failed > 0 {
            warn!("{failed} open file(s) could not be committed");
        }
        if let Err(e) = unmounter.unmount() {
            warn!("unmount failed ({e}); detaching lazily");
            lazy_unmount(mountpoint);
        }
    }
    // After a lazy detach the kernel keeps the session until the last open file is
    // closed; everything is committed by now, so wait briefly and then exit (closing
    // /dev/fuse ends the session) rather than hang on an application's open file.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !session_thread.is_finished() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if session_thread.is_finished() {
        match session_thread.join() {
            Ok(Err(e)) => warn!("FUSE session ended with an error: {e}"),
            Err(_) => warn!("FUSE session thread panicked"),
            Ok(Ok(())) => {}
        }
    } else {
        warn!("files still open on the detached mount; exiting (their content was committed)");
        std::process::exit(0);
    }
    // Uploads still running in the runtime have been committed above; give stragglers a moment.
    rt.shutdown_timeout(Duration::from_secs(5));
    Ok(())
}

/// Aborts the uploads that dead mounts of this bucket left in their journals, then
/// journals this mount's own (see `upload::journal`). Journal trouble costs only the
/// early clean-up, never the mount.
fn journaled(
    rt: &tokio::runtime::Runtime,
    args: &MountArgs,
    source: &Source,
    backend: Arc<dyn StorageBackend>,
) -> Arc<dyn StorageBackend> {
    let root = match &args.cache_dir {
        Some(d) => d.join("journal"),
        None => journal::default_root(),
    };
    let identity = format!(
        "{source} endpoint={} drives={}",
        args.backend.endpoint.as_deref().unwrap_or(""),
        args.backend.drives.as_deref().unwrap_or("")
    );
    let dir = journal::journal_dir(&root, &identity);
    let recovery = async {
        tokio::time::timeout(Duration::from_secs(60), journal::recover(&dir, backend.as_ref())).await
    };
    match rt.block_on(recovery) {
        Ok(r) if r.journals > 0 => {
            info!(journals = r.journals, aborted = r.aborted, "cleaned up after dead mounts of this bucket")
        }
        Ok(_) => {}
        Err(_) => warn!("recovering the upload journals in {} timed out", dir.display()),
    }
    match journal::Journal::create(&dir) {
        Ok(j) => journal::JournaledBackend::wrap(backend, Arc::new(j)),
        Err(e) => {
            warn!("no upload journal, a crash will leave uploads for the age-based sweep: {e}");
            backend
        }
    }
}

/// Aborts multipart uploads under the mount older than `age`: what crashed writers
/// (ours or other clients') left behind, invisible but billed. Age is the only safe
/// signal here: a younger upload may belong to a live writer elsewhere.
async fn sweep_stale_uploads(backend: Arc<dyn StorageBackend>, age: Duration) {
    let uploads = match backend.list_multipart("").await {
        Ok(u) => u,
        Err(e) => {
            warn!("cannot list pending multipart uploads: {e}");
            return;
        }
    };
    let cutoff = std::time::SystemTime::now().checked_sub(age).unwrap_or(std::time::UNIX_EPOCH);
    let mut aborted = 0;
    for u in uploads.iter().filter(|u| u.initiated < cutoff) {
        match backend.abort_multipart(&u.key, &u.upload_id).await {
            Ok(()) => aborted += 1,
            Err(e) => warn!(key = %u.key, "cannot abort stale multipart upload: {e}"),
        }
    }
    if aborted > 0 {
        info!("aborted {aborted} stale multipart upload(s) older than {age:?}");
    }
}
