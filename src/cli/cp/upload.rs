//! `bucketfs cp FILE URL`: parts cut by the mount's [`PartSizePlan`], sent in
//! parallel with retries, resumable from a state file (see the module above).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::progress::{Progress, RateLimit};
use super::{default_state_dir, mib, read_at, CpArgs};
use crate::backend::{BackendError, PutOptions};
use crate::cli::upload_cmd::open_uploader;
use crate::object::ErrorKind;
use crate::upload::contract::{ContractError, PartHandle, UploadHandle};
use crate::upload::part_size::PartSizePlan;
use crate::upload::retry::{send_part_with_retries, with_retries};

#[derive(Serialize, Deserialize)]
struct ResumeState {
    handle: String,
    /// The plan's first part size (the identity in the file name names the whole plan).
    part_size: u64,
}

fn md5_hex(data: &[u8]) -> String {
    hex::encode(Md5::digest(data))
}

/// `(offset, length)` of each part of a `size`-byte file cut by `plan`, part 1 first;
/// an error if the plan's parts cannot hold the file.
fn layout(plan: &PartSizePlan, size: u64) -> Result<Vec<(u64, u64)>> {
    let mut parts = Vec::new();
    let mut off = 0;
    while off < size {
        let len = plan.part_size(parts.len() as u32 + 1);
        if len == 0 {
            bail!(
                "{size} bytes need more than the backend's {} parts (at most {} bytes)",
                plan.max_parts(),
                plan.max_object_size()
            );
        }
        parts.push((off, len.min(size - off)));
        off += len.min(size - off);
    }
    Ok(parts)
}

pub(super) fn upload(rt: &tokio::runtime::Runtime, a: &CpArgs) -> Result<()> {
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

    // The mount's plan: `--part-size` first (clamped to the backend's limits), growing
    // with the part number so that any file the backend can hold fits its part count.
    let plan = PartSizePlan::new(a.part_size, &caps);
    if size <= plan.first_part_size() {
        let data = std::fs::read(&src)?;
        rt.block_on(up.backend().put(&path, Bytes::from(data), &PutOptions::default()))
            .map_err(|e| anyhow!("{url}: {e}"))?;
        if !a.quiet {
            eprintln!("copied {} to {url} ({})", src.display(), mib(size));
        }
        return Ok(());
    }
    let cuts = layout(&plan, size).map_err(|e| anyhow!("{url}: {e}"))?;
    let nparts = cuts.len() as u32;
    let mtime_ns = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    let (first, every) = (plan.first_part_size(), plan.double_every());
    let identity = format!("{} {size} {mtime_ns} -> {url} part={first}x2/{every}", src.display());
    let state_dir = a.state_dir.clone().unwrap_or_else(default_state_dir);
    std::fs::create_dir_all(&state_dir).with_context(|| format!("{}", state_dir.display()))?;
    let state_file = state_dir.join(format!("{:016x}.json", xxhash_rust::xxh3::xxh3_64(identity.as_bytes())));
    let file = Arc::new(std::fs::File::open(&src)?);
    let range = |n: u32| cuts[n as usize - 1];

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
            let st = ResumeState { handle: h.to_text(), part_size: first };
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
    let limit = RateLimit::new(a.limit_rate);
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
                let p = send_part_with_retries(&up, &h, n, data, retries).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Capabilities;

    fn caps(min: u64, max: u64, parts: u32) -> Capabilities {
        use crate::backend::StorageBackend;
        let base = crate::backend::memory::MemoryBackend::new().capabilities();
        Capabilities { min_part_size: min, max_part_size: max, max_parts: parts, ..base }
    }

    #[test]
    fn layout_follows_the_plan_and_covers_the_file() {
        let plan = PartSizePlan::new(10, &caps(10, 40, 4));
        // parts grow: the plan's sizes, the last one cut to what is left
        let want: Vec<(u64, u64)> = (1..=4u32)
            .scan(0u64, |off, n| {
                let len = plan.part_size(n);
                let r = (*off, len);
                *off += len;
                Some(r)
            })
            .collect();
        let total: u64 = want.iter().map(|p| p.1).sum();
        assert_eq!(layout(&plan, total).unwrap(), want);
        let short = layout(&plan, total - 1).unwrap();
        assert_eq!(short.len(), 4);
        assert_eq!(short[3].1, want[3].1 - 1);
        assert_eq!(layout(&plan, 1).unwrap(), [(0, 1)]);
        assert!(layout(&plan, 0).unwrap().is_empty());
        let e = layout(&plan, total + 1).unwrap_err().to_string();
        assert!(e.contains("more than the backend's 4 parts"), "{e}");
    }
}
