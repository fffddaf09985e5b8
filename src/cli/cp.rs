//! `bucketfs cp SRC DST`: a local file to a bucket URL, or back, in parallel parts.
//!
//! Upload: the file is cut into parts (`--part-size`, grown so the file fits the
//! backend's part count), sent `--parallel` at a time through the multipart
//! contract, each part retried with exponential backoff. Before the first part
//! is sent, the upload handle is saved in a state file keyed by (source path,
//! size, mtime, destination, part size) under `--state-dir`. A rerun with the
//! same arguments finds it, lists the parts the server already has, and skips
//! each one whose size and checksum (the part's ETag, an MD5 on S3 and the
//! embedded store) match the local bytes; anything else is sent again. The
//! state file goes when the upload completes. A backend that cannot list parts
//! starts over (its old upload is aborted).
//!
//! Download: a HEAD, then parallel ranged GETs pinned to the object's ETag,
//! written in place into `DST.bucketfs-tmp`, renamed over DST at the end. A
//! state file records each chunk written (with its xxh3); a rerun of the same
//! version keeps the temp file and fetches only the chunks not recorded or not
//! matching their checksum. Another version of the object starts over.
//!
//! Progress goes to stderr: a redrawn bar with rate and ETA on a terminal,
//! one plain line per part otherwise.

use std::io::{IsTerminal, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::Args;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::args::parse_size;
use super::backend::BackendArgs;
use super::upload_cmd::{open_uploader, runtime};
use crate::backend::{BackendError, GetOptions, PutOptions};
use crate::object::ErrorKind;
use crate::upload::contract::{ContractError, PartHandle, UploadHandle};

#[derive(Args, Debug)]
pub struct CpArgs {
    /// Local file or bucket URL (s3://bucket/key, local://bucket/key, ...).
    pub src: String,
    /// Bucket URL or local path; a URL ending in `/` or a local directory takes SRC's file name.
    pub dst: String,
    /// Part size (grown if the file would need more parts than the backend allows).
    #[arg(long = "part-size", value_parser = parse_size, default_value = "8M")]
    pub part_size: u64,
    /// Parts transferred at once.
    #[arg(long, default_value = "4")]
    pub parallel: usize,
    /// Attempts per part before giving up.
    #[arg(long, default_value = "5")]
    pub retries: u32,
    /// Cap on the transfer rate in bytes per second (e.g. 20M).
    #[arg(long = "limit-rate", value_parser = parse_size)]
    pub limit_rate: Option<u64>,
    /// Where resume state is kept (default: $XDG_CACHE_HOME/bucketfs/cp or ~/.cache/bucketfs/cp).
    #[arg(long = "state-dir")]
    pub state_dir: Option<PathBuf>,
    /// Plain progress lines even on a terminal; nothing but errors with --quiet.
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub backend: BackendArgs,
}

fn is_url(s: &str) -> bool {
    s.contains("://")
}

pub fn run(a: CpArgs) -> Result<()> {
    if a.parallel == 0 || a.retries == 0 {
        bail!("--parallel and --retries must be at least 1");
    }
    let rt = runtime()?;
    match (is_url(&a.src), is_url(&a.dst)) {
        (false, true) => upload(&rt, &a),
        (true, false) => download(&rt, &a),
        (true, true) => bail!("bucket-to-bucket copies are not supported; copy through a local file"),
        (false, false) => bail!("one of SRC and DST must be a bucket URL (use cp(1) for local copies)"),
    }
}

fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME").filter(|d| !d.is_empty()).map(|h| PathBuf::from(h).join(".cache"))
        })
        .unwrap_or_else(std::env::temp_dir);
    base.join("bucketfs/cp")
}

#[derive(Serialize, Deserialize)]
struct ResumeState {
    handle: String,
    part_size: u64,
}

/// Shared progress of one copy: a bar on a terminal, plain lines otherwise.
struct Progress {
    total: u64,
    done: AtomicU64,
    sent_this_run: AtomicU64,
    parts_total: u32,
    parts_done: AtomicU64,
    started: Instant,
    tty: bool,
    quiet: bool,
}

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

impl Progress {
    fn new(total: u64, parts_total: u32, quiet: bool) -> Arc<Self> {
        Arc::new(Progress {
            total,
            done: AtomicU64::new(0),
            sent_this_run: AtomicU64::new(0),
            parts_total,
            parts_done: AtomicU64::new(0),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal() && !quiet,
            quiet,
        })
    }

    fn skipped(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.parts_done.fetch_add(1, Ordering::Relaxed);
    }

    fn rate_eta(&self) -> (f64, String) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.sent_this_run.load(Ordering::Relaxed) as f64 / secs;
        let left = self.total.saturating_sub(self.done.load(Ordering::Relaxed));
        let eta = if rate > 0.0 { format!("{:.0}s", left as f64 / rate) } else { "?".into() };
        (rate, eta)
    }

    fn part_done(&self, n: u32, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.sent_this_run.fetch_add(bytes, Ordering::Relaxed);
        let k = self.parts_done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.tty && !self.quiet {
            let (rate, eta) = self.rate_eta();
            eprintln!(
                "part {n} done ({k}/{} parts, {} of {}, {}/s, ETA {eta})",
                self.parts_total,
                mib(self.done.load(Ordering::Relaxed)),
                mib(self.total),
                mib(rate as u64)
            );
        }
    }

    fn draw(&self) {
        if !self.tty {
            return;
        }
        let done = self.done.load(Ordering::Relaxed);
        let frac = if self.total == 0 { 1.0 } else { done as f64 / self.total as f64 };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let (rate, eta) = self.rate_eta();
        eprint!(
            "\r[{}{}] {:3.0}% {} / {} {}/s ETA {eta}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            mib(done),
            mib(self.total),
            mib(rate as u64)
        );
        let _ = std::io::stderr().flush();
    }

    fn finish(&self) {
        if self.tty {
            self.draw();
            eprintln!();
        }
    }
}

/// Spaces transfers so the average rate stays under a cap.
struct RateLimit {
    bytes_per_sec: u64,
    next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    /// Books the next slot for `bytes` on the schedule: the instant the transfer may
    /// start (`now` or the end of the previous booking, whichever is later).
    async fn book(&self, now: tokio::time::Instant, bytes: u64) -> tokio::time::Instant {
        let mut next = self.next.lock().await;
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec.max(1) as f64);
        start
    }

    async fn wait(limit: &Option<Arc<RateLimit>>, bytes: u64) {
        let Some(l) = limit else { return };
        let start = l.book(tokio::time::Instant::now(), bytes).await;
        tokio::time::sleep_until(start).await;
    }
}

/// Retries `op` with exponential backoff (0.2 s, 0.4 s, ... up to 5 s) on transient errors.
async fn with_retries<T, F, Fut>(what: &str, attempts: u32, mut op: F) -> Result<T, ContractError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ContractError>>,
{
    let mut delay = Duration::from_millis(200);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(ContractError::Backend(e)) if attempt < attempts && transient(&e) => {
                tracing::warn!("{what}: {e}; retrying in {delay:?} (attempt {attempt} of {attempts})");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

fn transient(e: &BackendError) -> bool {
    e.kind().is_transient() || e.kind() == ErrorKind::Other
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

fn upload(rt: &tokio::runtime::Runtime, a: &CpArgs) -> Result<()> {
    let src = std::fs::canonicalize(&a.src).with_context(|| a.src.clone())?;
    let meta = std::fs::metadata(&src).with_context(|| a.src.clone())?;
    if !meta.is_file() {
        bail!("{} is not a regular file", src.display());
    }
    let mut dst = a.dst.clone();
    let (_, dst_path) =
        crate::cli::source::parse_source(&dst).map(|s| ((), s.prefix)).map_err(|e| anyhow!(e))?;
    if dst.ends_with('/') || dst_path.is_empty() {
        let name = src.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("no file name in SRC"))?;
        dst = format!("{}/{name}", dst.trim_end_matches('/'));
    }
    let (up, path) = open_uploader(rt, &a.backend, &dst)?;
    let caps = up.backend().capabilities();
    let size = meta.len();
    let url = format!("{}/{path}", up.bucket_url());

    let part_size =
        a.part_size.max(caps.min_part_size).max(size.div_ceil(caps.max_parts as u64)).min(caps.max_part_size);
    if size <= part_size {
        let data = std::fs::read(&src)?;
        rt.block_on(up.backend().put(&path, Bytes::from(data), &PutOptions::default()))
            .map_err(|e| anyhow!("{url}: {e}"))?;
        if !a.quiet {
            eprintln!("copied {} to {url} ({})", src.display(), mib(size));
        }
        return Ok(());
    }
    let nparts = size.div_ceil(part_size) as u32;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let identity = format!("{} {size} {mtime_ns} -> {url} part={part_size}", src.display());
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("{}", state_dir.display()))?;
    let state_file = state_dir.join(format!("{:016x}.json", xxhash_rust::xxh3::xxh3_64(identity.as_bytes())));
    let file = Arc::new(std::fs::File::open(&src)?);
    let range = |n: u32| {
        let off = (n as u64 - 1) * part_size;
        (off, part_size.min(size - off))
    };

    // resume: the parts the server holds that match the local bytes
    let mut stored: Vec<PartHandle> = Vec::new();
    let mut handle = None;
    if let Some(st) =
        std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice::<ResumeState>(&b).ok())
    {
        if let Ok(h) = UploadHandle::parse(&st.handle) {
            match rt.block_on(up.list_parts(&h)) {
                Ok(parts) => {
                    for p in parts {
                        if p.part_number < 1 || p.part_number > nparts {
                            continue;
                        }
                        let (off, len) = range(p.part_number);
                        if p.size == len
                            && read_at(&file, off, len).map(|d| md5_hex(&d)).ok().as_deref()
                                == Some(p.etag.as_str())
                        {
                            stored.push(p);
                        }
                    }
                    handle = Some(h);
                }
                Err(ContractError::UnknownUpload(_)) => {}
                Err(e) => {
                    let _ = rt.block_on(up.abort(&h, &h.key));
                    tracing::info!("cannot resume ({e}); starting over");
                }
            }
        }
    }
    let resumed = handle.is_some();
    let handle = match handle {
        Some(h) => h,
        None => {
            let h = rt.block_on(up.start_upload(&path)).map_err(|e| anyhow!("{url}: {e}"))?;
            let st = ResumeState { handle: h.to_text(), part_size };
            std::fs::write(&state_file, serde_json::to_vec(&st)?)
                .with_context(|| format!("{}", state_file.display()))?;
            h
        }
    };
    let progress = Progress::new(size, nparts, a.quiet);
    for p in &stored {
        progress.skipped(p.size);
    }
    if resumed && !a.quiet {
        eprintln!("resuming {url}: {} of {nparts} parts already stored", stored.len());
    }
    let limit = a.limit_rate.map(|r| {
        Arc::new(RateLimit { bytes_per_sec: r, next: tokio::sync::Mutex::new(tokio::time::Instant::now()) })
    });
    let todo: Vec<u32> = (1..=nparts).filter(|n| !stored.iter().any(|p| p.part_number == *n)).collect();
    let sent: Arc<Mutex<Vec<PartHandle>>> = Arc::new(Mutex::new(stored));
    let result: Result<(), ContractError> = rt.block_on(async {
        // parts go one at a time to a backend that cannot take them concurrently
        let parallel = if caps.parallel_multipart { a.parallel } else { 1 };
        let sem = Arc::new(tokio::sync::Semaphore::new(parallel));
        let mut tasks = tokio::task::JoinSet::new();
        let ticker = {
            let p = progress.clone();
            tokio::spawn(async move {
                loop {
                    p.draw();
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            })
        };
        let mut first_err = None;
        for n in todo {
            let permit =
                sem.clone().acquire_owned().await.map_err(|e| BackendError::wrap(ErrorKind::Other, e))?;
            // stop scheduling once a part has failed for good
            while let Some(r) = tasks.try_join_next() {
                if let Ok(Err(e)) = r {
                    first_err.get_or_insert(e);
                }
            }
            if first_err.is_some() {
                break;
            }
            let (up, h, file, progress, sent, limit) =
                (up.clone(), handle.clone(), file.clone(), progress.clone(), sent.clone(), limit.clone());
            let (off, len) = range(n);
            let retries = a.retries;
            tasks.spawn(async move {
                let _permit = permit;
                let data = tokio::task::spawn_blocking(move || read_at(&file, off, len))
                    .await
                    .map_err(|e| BackendError::wrap(ErrorKind::Other, e))?
                    .map_err(|e| BackendError::io(format!("reading the source: {e}")))?;
                RateLimit::wait(&limit, len).await;
                let p =
                    with_retries(&format!("part {n}"), retries, || up.put_part(&h, n, data.clone())).await?;
                progress.part_done(n, len);
                sent.lock().unwrap_or_else(|e| e.into_inner()).push(p);
                Ok::<(), ContractError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            match r {
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(e) => {
                    first_err.get_or_insert(BackendError::wrap(ErrorKind::Other, e).into());
                }
                Ok(Ok(())) => {}
            }
        }
        ticker.abort();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    });
    progress.finish();
    if let Err(e) = result {
        bail!("{url}: {e} (rerun the same command to resume)");
    }
    let parts: Vec<(u32, PartHandle)> =
        sent.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|p| (p.part_number, p.clone())).collect();
    let done = rt
        .block_on(with_retries("complete", a.retries, || up.complete(&handle, &handle.key, &parts)))
        .map_err(|e| anyhow!("{url}: {e}"))?;
    let _ = std::fs::remove_file(&state_file);
    if !a.quiet {
        eprintln!(
            "copied {} to {url} ({}, {nparts} parts, {:.1}s)",
            src.display(),
            mib(done.size),
            progress.started.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// What an interrupted download has already written into its temp file.
#[derive(Serialize, Deserialize, Default)]
struct DownloadState {
    etag: String,
    size: u64,
    /// Chunk index -> xxh3 of the bytes written for it.
    done: std::collections::BTreeMap<u32, u64>,
}

fn save_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = tmp_path(path);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn download(rt: &tokio::runtime::Runtime, a: &CpArgs) -> Result<()> {
    let (up, key) = open_uploader(rt, &a.backend, &a.src)?;
    let url = format!("{}/{key}", up.bucket_url());
    let backend = up.backend().clone();
    let meta = rt.block_on(backend.head(&key)).map_err(|e| anyhow!("{url}: {e}"))?;
    let mut dst = PathBuf::from(&a.dst);
    if dst.is_dir() || a.dst.ends_with('/') {
        dst = dst.join(key.rsplit('/').next().unwrap_or(&key));
    }
    let dst = std::path::absolute(&dst)?;
    let tmp = tmp_path(&dst);
    let chunk = a.part_size.max(1 << 20);
    let n = meta.size.div_ceil(chunk).max(1) as u32;
    let range = |i: u32| {
        let off = i as u64 * chunk;
        (off, (off + chunk).min(meta.size))
    };

    // resume: chunks an interrupted run wrote, of this very version, that still check out
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("{}", state_dir.display()))?;
    let identity = format!("{url} -> {} chunk={chunk}", dst.display());
    let state_file =
        state_dir.join(format!("{:016x}.get.json", xxhash_rust::xxh3::xxh3_64(identity.as_bytes())));
    let old: Option<DownloadState> =
        std::fs::read(&state_file).ok().and_then(|b| serde_json::from_slice(&b).ok());
    let reusable = old.filter(|st| {
        st.etag == meta.etag
            && st.size == meta.size
            && std::fs::metadata(&tmp).map(|m| m.len() == meta.size).unwrap_or(false)
    });
    let (file, mut state) = match reusable {
        Some(st) => (std::fs::OpenOptions::new().read(true).write(true).open(&tmp)?, st),
        None => {
            let f = std::fs::File::create(&tmp).with_context(|| format!("{}", tmp.display()))?;
            f.set_len(meta.size)?;
            (f, DownloadState { etag: meta.etag.clone(), size: meta.size, done: Default::default() })
        }
    };
    state.done.retain(|i, hash| {
        let (off, end) = range(*i);
        *i < n && read_at(&file, off, end - off).map(|d| xxhash_rust::xxh3::xxh3_64(&d)).ok() == Some(*hash)
    });
    let progress = Progress::new(meta.size, n, a.quiet);
    for i in state.done.keys() {
        let (off, end) = range(*i);
        progress.skipped(end - off);
    }
    if !state.done.is_empty() && !a.quiet {
        eprintln!("resuming {url}: {} of {n} ranges already here", state.done.len());
    }
    let todo: Vec<u32> = (0..n).filter(|i| !state.done.contains_key(i)).collect();
    save_atomically(&state_file, &serde_json::to_vec(&state)?)?;
    let state = Arc::new(Mutex::new(state));
    let file = Arc::new(file);
    let pin = GetOptions { if_match: Some(meta.etag.clone()) };
    let limit = a.limit_rate.map(|r| {
        Arc::new(RateLimit { bytes_per_sec: r, next: tokio::sync::Mutex::new(tokio::time::Instant::now()) })
    });
    let res: Result<(), ContractError> = rt.block_on(async {
        let sem = Arc::new(tokio::sync::Semaphore::new(a.parallel));
        let mut tasks = tokio::task::JoinSet::new();
        for i in todo {
            let permit =
                sem.clone().acquire_owned().await.map_err(|e| BackendError::wrap(ErrorKind::Other, e))?;
            let (b, key, pin, file, progress, limit) =
                (backend.clone(), key.clone(), pin.clone(), file.clone(), progress.clone(), limit.clone());
            let (state, state_file) = (state.clone(), state_file.clone());
            let (off, end) = range(i);
            let retries = a.retries;
            tasks.spawn(async move {
                let _permit = permit;
                RateLimit::wait(&limit, end - off).await;
                let got = with_retries(&format!("range {off}-{end}"), retries, || async {
                    Ok(b.get_range(&key, Some(off..end), &pin).await?)
                })
                .await?;
                if got.data.len() as u64 != end - off {
                    return Err(BackendError::io(format!("short read at {off}: object changed?")).into());
                }
                let hash = xxhash_rust::xxh3::xxh3_64(&got.data);
                let f = file.clone();
                tokio::task::spawn_blocking(move || {
                    f.write_all_at(&got.data, off)?;
                    // recorded only once written, so a resumed run never trusts unwritten bytes
                    let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
                    st.done.insert(i, hash);
                    save_atomically(&state_file, &serde_json::to_vec(&*st).unwrap_or_default())
                })
                .await
                .map_err(|e| BackendError::wrap(ErrorKind::Other, e))?
                .map_err(|e| BackendError::wrap(ErrorKind::Io, e))?;
                progress.part_done(i + 1, end - off);
                progress.draw();
                Ok::<(), ContractError>(())
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| BackendError::wrap(ErrorKind::Other, e))??;
        }
        Ok(())
    });
    progress.finish();
    if let Err(e) = res {
        bail!("{url}: {e} (rerun the same command to resume)");
    }
    file.sync_all()?;
    std::fs::rename(&tmp, &dst).with_context(|| format!("{}", dst.display()))?;
    let _ = std::fs::remove_file(&state_file);
    if !a.quiet {
        eprintln!("copied {url} to {} ({})", dst.display(), mib(meta.size));
    }
    Ok(())
}

fn tmp_path(dst: &Path) -> PathBuf {
    let mut s = dst.as_os_str().to_owned();
    s.push(".bucketfs-tmp");
    PathBuf::from(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[tokio::test]
    async fn parts_are_retried_on_transient_errors_only() {
        let calls = AtomicU32::new(0);
        let r = with_retries("t", 5, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(BackendError::io("reset").into()),
                1 => Err(BackendError::unavailable("503").into()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!((r.unwrap(), calls.load(Ordering::SeqCst)), (7, 3));

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries("t", 5, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ContractError::UnknownUpload("u".into()))
        })
        .await;
        assert!(matches!(r, Err(ContractError::UnknownUpload(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a dead upload is not retried");

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries("t", 2, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(BackendError::io("down").into())
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "gives up after --retries attempts");
    }

    #[tokio::test]
    async fn rate_limit_spaces_transfers() {
        // The schedule, not the clock: each booking starts where the previous one's
        // bytes at the capped rate end (no sleeping, so no timing to race).
        let l =
            RateLimit { bytes_per_sec: 1 << 20, next: tokio::sync::Mutex::new(tokio::time::Instant::now()) };
        let t0 = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(l.book(t0, 100 << 10).await, t0, "the first one goes at once");
        let second = l.book(t0, 100 << 10).await;
        assert_eq!(
            second - t0,
            Duration::from_secs_f64(100.0 / 1024.0),
            "after the first's bytes at 1 MiB/s"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.book(later, 1).await, later, "an idle gap is not saved up for a burst");
        RateLimit::wait(&None, u64::MAX).await; // no limit: returns at once
    }
}
