//! `bucketfs cp URL FILE`: parallel ranged GETs pinned to the object's ETag into
//! a temp file, resumable chunk by chunk (see the module above).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{anyhow, bail, Context, Result};
use serde::{Deserialize, Serialize};

use super::progress::{Progress, RateLimit};
use super::{default_state_dir, mib, read_at, CpArgs};
use crate::backend::{BackendError, GetOptions};
use crate::cli::upload_cmd::open_uploader;
use crate::object::ErrorKind;
use crate::upload::contract::ContractError;
use crate::upload::retry::with_retries;

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

pub(super) fn download(rt: &tokio::runtime::Runtime, a: &CpArgs) -> Result<()> {
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
    let limit = RateLimit::new(a.limit_rate);
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
