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
use super::guard_fs;
use super::mountinfo;
use super::source::{parse_source, Source};
use crate::backend::attr_index::AttrIndexBackend;
use crate::backend::metered::MeteredBackend;
use crate::backend::write_retry::WriteRetryBackend;
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
    // a daemon's stderr goes to its log file once it is ready: no colour codes then
    super::init_logging(args.debug_fuse, args.debug_s3, args.foreground && super::stderr_is_terminal());
    let source = parse_source(args.source.as_deref().unwrap_or_default()).map_err(|e| anyhow!(e))?;
    let mountpoint = check_mountpoint(args.mountpoint.as_deref().unwrap_or(Path::new("")))?;
    if !args.allow_stacking {
        check_not_a_mount(&mountpoint)?;
    }
    if args.memory_limit < MIN_MEMORY_LIMIT {
        bail!("--memory-limit must be at least 32M");
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

/// Refuses a mountpoint that is already a mount point: a second mount would hide the
/// first (and one `fusermount3 -u` would then take both down).
fn check_not_a_mount(mountpoint: &Path) -> Result<()> {
    if let Some(top) = mountinfo::mounts_at(mountpoint).last() {
        bail!(
            "{} is already a mount point ({} {}); unmount it first (fusermount3 -u {}), or pass \
             --allow-stacking (fstab: allow_stacking) to mount on top of it",
            mountpoint.display(),
            top.fstype,
            top.source,
            mountpoint.display()
        );
    }
    Ok(())
}

/// `n` bytes as the CLI's sizes are written (`5M`, `5G`, `4000M`), exact.
fn size_text(n: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if n >= 1 << shift && n % (1 << shift) == 0 {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// `--part-size` within what the backend accepts, and `--memory-limit` large enough for it.
fn check_part_size(args: &MountArgs, backend: &dyn StorageBackend) -> Result<()> {
    let caps = backend.capabilities();
    let (min, max) = (caps.min_part_size, caps.max_part_size);
    if args.part_size < min || args.part_size > max {
        bail!(
            "--part-size {} is outside the part size limits of {} ({} to {})",
            size_text(args.part_size),
            caps.name,
            size_text(min),
            size_text(max)
        );
    }
    if args.memory_limit < args.part_size.saturating_mul(2) {
        bail!(
            "--memory-limit ({}) must hold at least two parts of --part-size ({})",
            size_text(args.memory_limit),
            size_text(args.part_size)
        );
    }
    Ok(())
}

/// FUSE mounts are listed as `fuse` (mount(2) by root, as fuser does it) or
/// `fuse.bucketfs` (through fusermount3, which adds the subtype).
fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype.starts_with("fuse.")
}

/// Whether the top of a mount `stack` (bottom first) is a bucketfs mount of `source`
/// that is not one of the mounts that were there `before` (their ids).
fn top_is_ours(stack: &[mountinfo::MountEntry], source: &str, before: &[u64]) -> Result<(), String> {
    match stack.last() {
        Some(top) if !before.contains(&top.id) && is_fuse(&top.fstype) && top.source == source => Ok(()),
        Some(top) => Err(format!("{} {} (mount id {})", top.fstype, top.source, top.id)),
        None => Err("nothing".into()),
    }
}

/// Waits (briefly: the kernel lists a mount once mount(2) returns; the fusermount3
/// path may lag a moment) until the mount a lookup of `mountpoint` sees is the one this
/// process just made; an error names what is there instead.
fn our_mount_is_on_top(mountpoint: &Path, source: &Source, before: &[u64]) -> Result<mountinfo::MountEntry> {
    let want = source.to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        let mut stack = mountinfo::mounts_at(mountpoint);
        match top_is_ours(&stack, &want, before) {
            Ok(()) => return Ok(stack.pop().expect("top_is_ours saw a top")),
            Err(seen) if std::time::Instant::now() >= deadline => bail!(
                "mounting on {} did not take effect: the mount there is {seen}, not this bucketfs mount of {want}",
                mountpoint.display()
            ),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// Read-ahead of the mount's bdi, KiB: the 1 MiB our `init` asks for.
const READ_AHEAD_KIB: u32 = 1024;

/// Lets the kernel read ahead 1 MiB at a time. The kernel takes the smaller of the
/// read-ahead `init` asks for and its bdi default (128 KiB), so a cold sequential read
/// arrived as 128 KiB FUSE reads; raising the mount's own bdi (`/sys/class/bdi/MAJ:MIN`,
/// root only) makes them 1 MiB: daemon CPU for a 512 MiB read fell by a fifth
/// (0.88 to 0.70 s; issue 11, where sequential reads are CPU-bound on 2 cores). 4 MiB
/// was slower again. Without root this is skipped: reads work, in smaller pieces.
fn raise_read_ahead(dev: &str) {
    let path = Path::new("/sys/class/bdi").join(dev).join("read_ahead_kb");
    match std::fs::write(&path, READ_AHEAD_KIB.to_string()) {
        Ok(()) => tracing::debug!(path = %path.display(), kib = READ_AHEAD_KIB, "read-ahead raised"),
        Err(e) => tracing::debug!(path = %path.display(), "read-ahead left at the kernel's default: {e}"),
    }
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
    // before any worker thread exists: RSS must follow the --memory-limit budget
    crate::allocator::tune();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().thread_name("bucketfs-rt").build()
    {
        Ok(rt) => rt,
        Err(e) => return Err((anyhow!("cannot start the runtime: {e}"), readiness)),
    };
    let memory = MemoryLimiter::new(args.memory_limit);
    let backend = match open_backend(&rt, &args.backend, source, args.debug_s3, Some(&memory)) {
        Ok(b) => b,
        Err(e) => return Err((e, readiness)),
    };
    if let Err(e) = check_part_size(args, backend.as_ref()) {
        return Err((e, readiness));
    }
    let metrics = Arc::new(Metrics::default());
    // every request of this mount is counted and traced in one place
    let backend = MeteredBackend::wrap(backend, metrics.clone());
    // writes wait out an outage of the service (above the meter: every attempt is a request)
    let backend = WriteRetryBackend::wrap(backend, args.write_timeout);
    // symlinks and --enable-perms attributes visible in S3 listings (above the meter: its requests count)
    let backend = AttrIndexBackend::wrap_if_needed(backend, crate::fs::INDEXED_METADATA);
    let backend = if args.read_only { backend } else { journaled(&rt, args, source, backend) };
    let handles = Arc::new(HandleContext {
        backend: backend.clone(),
        memory,
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
    crate::allocator::spawn_trimmer(handles.memory.clone());
    crate::buffers::set_pool_limit(args.memory_limit);
    if let Some(multi_range) = &handles.cfg.multi_range {
        // says now, once, if the backend cannot batch at all (none today: a backend without
        // multi-range GETs, or one a probe finds out, gets parallel single-range batches)
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
        lookup_fetches_listing: source.kind != super::source::BackendKind::Local,
    };
    let sweep_backend = backend.clone();
    let fs = BucketFs::new(rt.handle().clone(), backend, fs_cfg, handles);
    let controller = fs.controller();
    // keeps the end of the session from unmounting a mount that is not ours (see guard_fs)
    let session_end = guard_fs::SessionEnd::new(mountpoint);
    let fs = guard_fs::Guarded::new(fs, session_end.clone());

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

    // SIGTERM and SIGINT are ours from before the mount appears: a stop sent as soon as
    // the mount shows in mountinfo (a test harness, a service manager) arrived before
    // the handlers below existed, killed the daemon by the default action and left a
    // dead mountpoint (seen once in CI: tests/upload_journal's second mount).
    let signals = {
        use tokio::signal::unix::{signal, SignalKind};
        let _rt = rt.enter();
        (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    };
    let before: Vec<u64> = mountinfo::mounts_at(mountpoint).iter().map(|m| m.id).collect();
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
    // Readiness only for a mount that is ours and visible: never for one that was
    // there before, or one another mount has since covered.
    // (No unmount on failure: unmounting goes by path and would take down whatever is
    // on top, which is then not ours; our session ends when the process exits.)
    match our_mount_is_on_top(mountpoint, source, &before) {
        Ok(ours) => {
            session_end.set_our_id(ours.id);
            raise_read_ahead(&ours.dev);
        }
        Err(e) => return Err((e, readiness)),
    }
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
        let (Ok(mut term), Ok(mut int)) = signals else {
            return false;
        };
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        loop {
            tokio::select! {
                _ = term.recv() => return true,
                _ = int.recv() => return true,
                _ = tick.tick() => if session_thread.is_finished() || session_end.parked() { return false },
            }
        }
    });
    if signalled {
        info!("signal received: committing open files, then unmounting");
        let failed = rt.block_on(controller.commit_all());
        if failed > 0 {
            warn!("{failed} open file(s) could not be committed");
        }
        // (unmounting goes by path: only while the path shows our mount)
        if session_end.ours_on_top() {
            session_end.unmounting();
            if let Err(e) = unmounter.unmount() {
                warn!("unmount failed ({e}); detaching lazily");
                lazy_unmount(mountpoint);
            }
        } else {
            warn!(
                "another mount now covers ours on {}; leaving it alone (ours ends with this process)",
                mountpoint.display()
            );
            rt.shutdown_timeout(Duration::from_secs(5));
            std::process::exit(0);
        }
    }
    // After a lazy detach the kernel keeps the session until the last open file is
    // closed; everything is committed by now, so wait briefly and then exit (closing
    // /dev/fuse ends the session) rather than hang on an application's open file.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !session_thread.is_finished() && !session_end.parked() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if session_end.parked() {
        // unmounted from outside, and something else is on the path now: exit without
        // letting the session thread unmount it
        rt.shutdown_timeout(Duration::from_secs(5));
        std::process::exit(0);
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
        crate::store::drives::join_pool_specs(&args.backend.drives).unwrap_or_default()
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

#[cfg(test)]
mod tests {
    use super::*;
    use mountinfo::MountEntry;

    fn entry(id: u64, fstype: &str, source: &str) -> MountEntry {
        MountEntry {
            id,
            dev: "0:1".into(),
            mount_point: "/mnt/b".into(),
            fstype: fstype.into(),
            source: source.into(),
        }
    }

    #[test]
    fn readiness_only_for_our_new_mount_on_top() {
        let ours = entry(40, "fuse.bucketfs", "local://photos");
        assert!(top_is_ours(std::slice::from_ref(&ours), "local://photos", &[]).is_ok());
        assert!(top_is_ours(&[entry(7, "ext4", "/dev/sdb1"), ours.clone()], "local://photos", &[7]).is_ok());
        // the mount that was there before, even of the same source
        assert!(top_is_ours(std::slice::from_ref(&ours), "local://photos", &[40]).is_err());
        // another file system, or another bucketfs mount, on top of ours
        let err =
            top_is_ours(&[ours.clone(), entry(41, "tmpfs", "tmpfs")], "local://photos", &[]).unwrap_err();
        assert!(err.contains("tmpfs"), "{err}");
        assert!(
            top_is_ours(&[ours, entry(42, "fuse.bucketfs", "s3://other")], "local://photos", &[]).is_err()
        );
        // (mounted by root through mount(2), the type has no subtype)
        assert!(top_is_ours(&[entry(43, "fuse", "local://photos")], "local://photos", &[]).is_ok());
        assert_eq!(top_is_ours(&[], "local://photos", &[]).unwrap_err(), "nothing");
    }

    #[test]
    fn sizes_are_written_as_the_flags_take_them() {
        assert_eq!(size_text(5 << 20), "5M");
        assert_eq!(size_text(5 << 30), "5G");
        assert_eq!(size_text(4000 << 20), "4000M");
        assert_eq!(size_text(0), "0");
        assert_eq!(size_text(1000), "1000");
        assert_eq!(size_text(3 << 40), "3T");
    }
}
