//! The object API: put, head, get, delete, copy.
//!
//! This file holds the public entry points and what glues them together; the
//! mechanics live next to it: `write.rs` (streaming encode into temp dirs),
//! `commit.rs` (crash-safe multi-drive commit), `read.rs` (version resolution
//! and range reads with parity fallback).

use std::fs;
use std::io::Read;
use std::ops::Range;
use std::path::{Path, PathBuf};

use super::erasure::{Erasure, BLOCK_SIZE};
use super::error::{StoreError, StoreResult};
use super::meta::{self, ErasureInfo, ObjMeta, PartInfo};
use super::paths::{self, DATA_DIR_PREFIX};
use super::set::ErasureSet;
use crate::object::{GetOptions, ObjectMeta, PutOptions};

pub(crate) use super::commit::{tally, Commit};
pub(crate) use super::read::Resolved;

/// Objects whose shard file would be at most this big live inside `%meta`.
pub const INLINE_MAX: u64 = 128 * 1024;

pub(crate) fn info(key: &str, m: &ObjMeta) -> ObjectMeta {
    ObjectMeta {
        key: key.to_string(),
        size: m.size,
        etag: m.etag.clone(),
        last_modified: m.mtime(),
        content_type: m.content_type.clone(),
        user_metadata: m.user_metadata.clone(),
    }
}

/// Per-key rotation: shard i goes to drive (start + i) mod n.
pub(crate) fn distribution(key: &str, n: usize) -> Vec<usize> {
    let start = (xxhash_rust::xxh3::xxh3_64(key.as_bytes()) % n as u64) as usize;
    (0..n).map(|i| (start + i) % n).collect()
}

impl ErasureSet {
    pub(crate) fn obj_dir(&self, slot: usize, bucket: &str, rel: &Path) -> PathBuf {
        self.drives[slot].join(bucket).join(rel)
    }

    /// Writes an object from a reader, streaming it in 1 MiB blocks.
    #[tracing::instrument(level = "debug", skip(self, reader, opts))]
    pub fn put_object_reader(
        &self,
        bucket: &str,
        key: &str,
        reader: &mut dyn Read,
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        paths::key_to_relpath(key)?;
        let er = Erasure::new(self.data, self.parity)?;
        let dist = distribution(key, self.drives.len());
        let data_dir = uuid::Uuid::new_v4().simple().to_string();
        let rel_file = PathBuf::from(format!("{DATA_DIR_PREFIX}{data_dir}")).join("part.1");
        let staged = self.stage(reader, &er, &dist, &rel_file, true)?;
        let etag = hex::encode(staged.md5);
        let inline = staged.inline.is_some();
        let meta = ObjMeta {
            version_id: uuid::Uuid::new_v4().to_string(),
            size: staged.size,
            mtime_ns: meta::now_ns(),
            etag: etag.clone(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
            erasure: self.erasure_info(&er, dist),
            data_dir: (!inline).then_some(data_dir.clone()),
            parts: vec![PartInfo { number: 1, size: staged.size, etag, file: "part.1".into() }],
        };
        let data_src = (0..self.drives.len())
            .map(|slot| {
                (!inline && staged.ok[slot])
                    .then(|| self.tmp_dir(slot, &staged.tmp_id).join(format!("{DATA_DIR_PREFIX}{data_dir}")))
            })
            .collect();
        let c = Commit { meta, inline: staged.inline, data_src, slots: staged.ok, tmp_id: staged.tmp_id };
        let m = self.commit(bucket, key, c, opts)?;
        Ok(info(key, &m))
    }

    /// Writes an object from memory.
    pub fn put_object(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        opts: &PutOptions,
    ) -> StoreResult<ObjectMeta> {
        let mut r = data;
        self.put_object_reader(bucket, key, &mut r, opts)
    }

    pub(crate) fn erasure_info(&self, er: &Erasure, distribution: Vec<usize>) -> ErasureInfo {
        ErasureInfo {
            data: er.data,
            parity: er.parity,
            block_size: BLOCK_SIZE,
            distribution,
            bitrot: "xxh3-128".into(),
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn head_object(&self, bucket: &str, key: &str) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        Ok(info(key, &self.resolve(bucket, key, false)?.meta))
    }

    /// The object's metadata and the sizes of the parts it was uploaded in (one for a
    /// plain PUT), for S3 `GET ?partNumber=N`.
    pub fn object_part_sizes(&self, bucket: &str, key: &str) -> StoreResult<(ObjectMeta, Vec<u64>)> {
        self.require_bucket(bucket)?;
        let m = self.resolve(bucket, key, false)?.meta;
        let sizes = if m.parts.len() <= 1 { vec![m.size] } else { m.parts.iter().map(|p| p.size).collect() };
        Ok((info(key, &m), sizes))
    }

    /// Reads one range (`None` = whole object; clamped to the object's end).
    pub fn get_object(
        &self,
        bucket: &str,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<u8>)> {
        let ranges = [range.unwrap_or(0..u64::MAX)];
        let (m, mut v) = self.get_object_ranges(bucket, key, &ranges, opts)?;
        Ok((m, v.pop().unwrap_or_default()))
    }

    /// Reads several ranges of one version of an object, each clamped to its end.
    #[tracing::instrument(level = "debug", skip(self, ranges, opts), fields(n = ranges.len()))]
    pub fn get_object_ranges(
        &self,
        bucket: &str,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> StoreResult<(ObjectMeta, Vec<Vec<u8>>)> {
        self.require_bucket(bucket)?;
        // Reads take no lock: a concurrent overwrite may trash the version being
        // read (its files vanish, never change). Then the read fails and is
        // retried on the new version; a failure on an unchanged version is real.
        let mut attempt = 0;
        loop {
            let r = self.resolve(bucket, key, true)?;
            if let Some(want) = &opts.if_match {
                if &r.meta.etag != want {
                    return Err(StoreError::PreconditionFailed(format!(
                        "{bucket}/{key}: ETag is {:?}, not {want:?} (If-Match)",
                        r.meta.etag
                    )));
                }
            }
            match self.read_resolved(bucket, key, &r, ranges) {
                Ok(data) => return Ok((info(key, &r.meta), data)),
                Err(e) if attempt < 3 => {
                    let now = self.resolve(bucket, key, false).map(|n| n.meta.version_id);
                    if now.as_ref().ok() == Some(&r.meta.version_id) {
                        return Err(e);
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Deletes an object (S3 semantics: deleting a missing key succeeds).
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn delete_object(&self, bucket: &str, key: &str) -> StoreResult<()> {
        self.require_bucket(bucket)?;
        let rel = paths::key_to_relpath(key)?;
        let _g = self.key_lock(bucket, key);
        match self.resolve(bucket, key, false) {
            Ok(_) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        for slot in 0..self.drives.len() {
            let objdir = self.obj_dir(slot, bucket, &rel);
            self.trash_object_files(slot, &objdir)?;
            self.remove_empty_parents(slot, bucket, &objdir);
        }
        Ok(())
    }

    /// Moves the metadata and data dirs of one object dir to the trash (children stay).
    pub(crate) fn trash_object_files(&self, slot: usize, objdir: &Path) -> StoreResult<()> {
        let Ok(rd) = fs::read_dir(objdir) else { return Ok(()) };
        let mut names: Vec<_> = rd
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_str().map(|s| paths::unescape_component(s).is_none()).unwrap_or(false))
            .collect();
        // Metadata first, so a crash in between leaves no metadata without data.
        names.sort_by_key(|n| !n.to_str().unwrap_or_default().starts_with("%meta"));
        for name in names {
            self.move_to_trash_path(&self.drives[slot], &objdir.join(name))?;
        }
        Ok(())
    }

    /// Removes now-empty object directories up to (not including) the bucket dir.
    pub(crate) fn remove_empty_parents(&self, slot: usize, bucket: &str, objdir: &Path) {
        let stop = self.drives[slot].join(bucket);
        let mut dir = Some(objdir);
        while let Some(d) = dir {
            if d == stop || !d.starts_with(&stop) || fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }

    /// Server-side copy, streamed block by block. `metadata: None` keeps the source's.
    pub fn copy_object(
        &self,
        bucket: &str,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> StoreResult<ObjectMeta> {
        self.copy_object_to(self, bucket, src, dst, metadata)
    }

    /// Copies `src` of this set to `dst` in `to` (this set or another one of the
    /// store: the destination key may hash to a different set).
    #[tracing::instrument(level = "debug", skip(self, to, metadata))]
    pub fn copy_object_to(
        &self,
        to: &ErasureSet,
        bucket: &str,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        paths::key_to_relpath(dst)?;
        let r = self.resolve(bucket, src, true)?;
        let opts = metadata.cloned().unwrap_or(PutOptions {
            content_type: r.meta.content_type.clone(),
            user_metadata: r.meta.user_metadata.clone(),
            ..Default::default()
        });
        let mut reader =
            ObjectReader { store: self, bucket, key: src, r: &r, pos: 0, buf: Vec::new(), at: 0 };
        to.put_object_reader(bucket, dst, &mut reader, &opts)
    }
}

/// A `Read` over one resolved version, fetching 1 MiB at a time.
struct ObjectReader<'a> {
    store: &'a ErasureSet,
    bucket: &'a str,
    key: &'a str,
    r: &'a Resolved,
    pos: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.buf.len() {
            if self.pos >= self.r.meta.size {
                return Ok(0);
            }
            let end = (self.pos + BLOCK_SIZE as u64).min(self.r.meta.size);
            let mut v = self
                .store
                .read_resolved(self.bucket, self.key, self.r, std::slice::from_ref(&(self.pos..end)))
                .map_err(std::io::Error::other)?;
            self.buf = v.pop().unwrap_or_default();
            self.at = 0;
            self.pos = end;
        }
        let n = out.len().min(self.buf.len() - self.at);
        out[..n].copy_from_slice(&self.buf[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
