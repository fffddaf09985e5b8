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
use crate::object::ErrorKind;
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
    let backend = open_backend(rt, args, &bucket, false, None)?;
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
    parse_parts(&text)
}

/// The lines of a parts file: `[NUMBER ]HANDLE`, blank lines and `#` comments skipped.
fn parse_parts(text: &str) -> Result<Vec<(u32, PartHandle)>> {
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
                            Err(crate::backend::BackendError { kind: ErrorKind::NoSuchUpload, .. }) => {}
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

#[cfg(test)]
mod tests {
    use super::*;

    fn part(n: u32) -> PartHandle {
        PartHandle { upload_id: "u-1".into(), part_number: n, etag: format!("\"e{n}\""), size: 5 << 20 }
    }

    #[test]
    fn parts_files() {
        let text = format!("# parts\n\n{}\n 7  {} \n", part(1).to_text(), part(2).to_text());
        let got = parse_parts(&text).unwrap();
        assert_eq!(got, vec![(1, part(1)), (7, part(2))]);
        assert!(parse_parts("x bfs-part:00").is_err());
        assert!(parse_parts("99999999999 bfs-part:00").is_err());
    }

    /// Seeded fuzzing of parts files (what `upload complete --parts` reads): lines built
    /// from handles, numbers and garbage, and handles cut or altered anywhere. No panic;
    /// a line either gives back the handle it was made from or is an error.
    #[test]
    fn fuzz_parts_files() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9a475);
        for case in 0..3_000 {
            let mut text = String::new();
            let mut want = Vec::new();
            let mut broken = false;
            for _ in 0..rng.gen_range(0..6) {
                let p = PartHandle {
                    upload_id: (0..rng.gen_range(0..12)).map(|_| rng.gen_range(' '..'\u{2FF}')).collect(),
                    part_number: rng.gen(),
                    etag: (0..rng.gen_range(0..40)).map(|_| rng.gen_range(' '..'~')).collect(),
                    size: rng.gen(),
                };
                let mut h = p.to_text();
                match rng.gen_range(0..6) {
                    0 => {
                        h.truncate(rng.gen_range(0..h.len()));
                        broken = true;
                    }
                    1 => {
                        let at = rng.gen_range(0..h.len());
                        h.replace_range(at..at + 1, ["g", "0", " ", "\u{e9}", "{", ":"][rng.gen_range(0..6)]);
                        broken = true; // (or not: "0" may land on a "0"; then the line still parses)
                    }
                    2 => {
                        let n: u32 = rng.gen();
                        text.push_str(&format!("{n}\t{h}\n"));
                        want.push((n, p));
                        continue;
                    }
                    3 => text.push_str("# comment\n\n"),
                    _ => {}
                }
                want.push((p.part_number, p));
                text.push_str(&h);
                text.push('\n');
            }
            match parse_parts(&text) {
                Ok(got) => {
                    if !broken {
                        assert_eq!(got, want, "case {case}: {text:?}");
                    }
                }
                Err(e) => assert!(broken, "case {case}: {text:?}: {e:#}"),
            }
        }
    }
}
