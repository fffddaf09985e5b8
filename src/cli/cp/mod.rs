//! `bucketfs cp SRC DST`: a local file to a bucket URL, or back, in parallel parts.
//!
//! Upload (`upload.rs`): the file is cut into parts by the same
//! [`PartSizePlan`](crate::upload::part_size::PartSizePlan) as a mount's writes
//! (`--part-size` first, growing so the file fits the backend's part count),
//! sent `--parallel` at a time through the multipart contract, each part retried
//! with exponential backoff by [`crate::upload::retry`]. Before the first part
//! is sent, the upload handle is saved in a state file keyed by (source path,
//! size, mtime, destination, part plan) under `--state-dir`. A rerun with the
//! same arguments finds it, lists the parts the server already has, and skips
//! each one whose size and checksum (the part's ETag, an MD5 on S3 and the
//! embedded store) match the local bytes; anything else is sent again. The
//! state file goes when the upload completes. A backend that cannot list parts
//! starts over (its old upload is aborted).
//!
//! Download (`download.rs`): a HEAD, then parallel ranged GETs pinned to the object's ETag,
//! written in place into `DST.bucketfs-tmp`, renamed over DST at the end. A
//! state file records each chunk written (with its xxh3); a rerun of the same
//! version keeps the temp file and fetches only the chunks not recorded or not
//! matching their checksum. Another version of the object starts over.
//!
//! Progress (`progress.rs`) goes to stderr: a redrawn bar with rate and ETA on a terminal,
//! one plain line per part otherwise.

use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use anyhow::{bail, Result};
use bytes::Bytes;
use clap::Args;

use super::args::parse_size;
use super::backend::BackendArgs;
use super::upload_cmd::runtime;

mod download;
mod progress;
mod upload;

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
        (false, true) => upload::upload(&rt, &a),
        (true, false) => download::download(&rt, &a),
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

fn mib(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1u64 << 20) as f64)
}

fn read_at(file: &std::fs::File, offset: u64, len: u64) -> std::io::Result<Bytes> {
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}
