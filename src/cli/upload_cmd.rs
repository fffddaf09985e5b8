//! `bucketfs upload start|put-part|complete|abort` and `bucketfs uploads list|abort`:
//! the multipart upload contract (`upload::contract`) from the shell, so several
//! machines can each upload their share of one file, and leaked uploads can be
//! found and cleaned up.
//!
//! Handles are printed on stdout, one per line, and read back from arguments or
//! a parts file; a handle names its bucket, so the later commands need only the
//! flags that reach that bucket (`--endpoint`, `--drives`, ...), not the URL.

use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use clap::{Args, Subcommand};

use super::args::{parse_duration, parse_size};
use super::backend::{open_backend, BackendArgs};
use super::source::{parse_source, Source};
use crate::upload::contract::{MultipartUploader, PartHandle, UploadHandle};

#[derive(Args, Debug)]
pub struct UploadArgs {
    #[command(subcommand)]
    pub cmd: UploadCmd,
}

#[derive(Subcommand, Debug)]
pub enum UploadCmd {
    /// Start a multipart upload to URL; prints its handle.
    Start {
        /// Destination, e.g. s3://bucket/dir/file.
        url: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Upload part N (from 1) of an upload from FILE; prints the part's handle.
    PutPart {
        handle: String,
        part_number: u32,
        file: PathBuf,
        /// Where the part starts in FILE.
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        /// Bytes to send (default: to the end of FILE).
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Join the parts listed in FILE (part handles, one a line; `-` = stdin); prints the written version.
    Complete {
        handle: String,
        #[arg(long, value_name = "FILE")]
        parts: PathBuf,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Abort an upload; its parts are deleted and the handle stops working.
    Abort {
        handle: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

#[derive(Args, Debug)]
pub struct UploadsArgs {
    #[command(subcommand)]
    pub cmd: UploadsCmd,
}

#[derive(Subcommand, Debug)]
pub enum UploadsCmd {
    /// List pending multipart uploads under URL (a bucket or a directory in it).
    List {
        url: String,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Abort pending multipart uploads under URL; prints how many.
    Abort {
        url: String,
        /// Only uploads started longer ago than this (e.g. 48h).
        #[arg(long = "older-than", value_parser = parse_duration)]
        older_than: Option<Duration>,
        #[command(flatten)]
        backend: BackendArgs,
    },
}

pub(super) fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("cannot start the runtime")
}

/// The contract over `url`'s bucket, and the path `url` names in it.
pub(super) fn open_uploader(
    rt: &tokio::runtime::Runtime,
    args: &BackendArgs,
    url: &str,
) -> Result<(MultipartUploader, String)> {
    if !url.contains("://") {
        bail!("{url:?} is not a bucket URL (s3://bucket/key, local://bucket/key, gs://..., wasb://...)");
    }
    let source = parse_source(url).map_err(|e| anyhow!(e))?;
    let bucket = Source { prefix: String::new(), ..source.clone() };
    let backend = open_backend(rt, args, &bucket, false)?;
    Ok((MultipartUploader::new(backend, &bucket.to_string()), source.prefix))
}

fn uploader_for(
    rt: &tokio::runtime::Runtime,
    args: &BackendArgs,
    h: &UploadHandle,
) -> Result<MultipartUploader> {
    Ok(open_uploader(rt, args, &format!("{}/", h.bucket_url))?.0)
}

fn read_region(file: &PathBuf, offset: u64, length: Option<u64>) -> Result<Bytes> {
    let mut f = std::fs::File::open(file).with_context(|| format!("{}", file.display()))?;
    let size = f.metadata()?.len();
    if offset > size {
        bail!("--offset {offset} is past the end of {} ({size} bytes)", file.display());
    }
    let len = length.unwrap_or(size - offset);
    if offset + len > size {
        bail!("--offset {offset} --length {len} passes the end of {} ({size} bytes)", file.display());
    }
    f.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len as usize);
    f.take(len).read_to_end(&mut buf)?;
    Ok(Bytes::from(buf))
}

/// Part handles from a parts file: one handle per line, optionally after its number.
fn read_parts(path: &PathBuf) -> Result<Vec<(u32, PartHandle)>> {
    let text = if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s)?;
        s
    } else {
        std::fs::read_to_string(path).with_context(|| format!("{}", path.display()))?
    };
    let mut parts = Vec::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')) {
        let (n, h) = match line.split_once(char::is_whitespace) {
            Some((n, h)) => (Some(n.parse::<u32>().with_context(|| format!("part number in {line:?}"))?), h),
            None => (None, line),
        };
        let p = PartHandle::parse(h)?;
        parts.push((n.unwrap_or(p.part_number), p));
    }
    Ok(parts)
}

pub fn upload(a: UploadArgs) -> Result<()> {
    let rt = runtime()?;
    match a.cmd {
        UploadCmd::Start { url, backend } => {
            let (up, path) = open_uploader(&rt, &backend, &url)?;
            let h = rt.block_on(up.start_upload(&path))?;
            println!("{}", h.to_text());
        }
        UploadCmd::PutPart { handle, part_number, file, offset, length, backend } => {
            let h = UploadHandle::parse(&handle)?;
            let data = read_region(&file, offset, length)?;
            let up = uploader_for(&rt, &backend, &h)?;
            let p = rt.block_on(up.put_part(&h, part_number, data))?;
            println!("{}", p.to_text());
        }
        UploadCmd::Complete { handle, parts, backend } => {
            let h = UploadHandle::parse(&handle)?;
            let parts = read_parts(&parts)?;
            let up = uploader_for(&rt, &backend, &h)?;
            let done = rt.block_on(up.complete(&h, &h.key, &parts))?;
            eprintln!(
                "completed {} ({} bytes, {} parts, etag {})",
                h.url(),
                done.size,
                parts.len(),
                done.etag
            );
            println!("{}", done.to_text());
        }
        UploadCmd::Abort { handle, backend } => {
            let h = UploadHandle::parse(&handle)?;
            let up = uploader_for(&rt, &backend, &h)?;
            rt.block_on(up.abort(&h, &h.key))?;
            eprintln!("aborted the upload to {}", h.url());
        }
    }
    Ok(())
}

fn age(t: SystemTime) -> String {
    let s = SystemTime::now().duration_since(t).unwrap_or_default().as_secs();
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        _ => format!("{}h", s / 3600),
    }
}

pub fn uploads(a: UploadsArgs) -> Result<()> {
    let rt = runtime()?;
    match a.cmd {
        UploadsCmd::List { url, backend } => {
            let (up, path) = open_uploader(&rt, &backend, &url)?;
            let list = rt.block_on(up.list_uploads(&path))?;
            for u in &list {
                println!("{}/{}\t{}\tstarted {} ago", up.bucket_url(), u.key, u.upload_id, age(u.initiated));
            }
            println!("{} pending upload(s)", list.len());
        }
        UploadsCmd::Abort { url, older_than, backend } => {
            let (up, path) = open_uploader(&rt, &backend, &url)?;
            let n = match older_than {
                None => rt.block_on(up.abort_uploads_under(&path))?,
                Some(age) => {
                    let cutoff = SystemTime::now().checked_sub(age).unwrap_or(SystemTime::UNIX_EPOCH);
                    let list = rt.block_on(up.list_uploads(&path))?;
                    let mut n = 0;
                    for u in list.iter().filter(|u| u.initiated <= cutoff) {
                        match rt.block_on(up.backend().abort_multipart(&u.key, &u.upload_id)) {
                            Ok(()) => n += 1,
                            Err(crate::backend::BackendError::NoSuchUpload(_)) => {}
                            Err(e) => eprintln!("bucketfs: cannot abort {}: {e}", u.key),
                        }
                    }
                    n
                }
            };
            println!("aborted {n} upload(s)");
        }
    }
    Ok(())
}
