//! Multipart uploads, persisted on the drives.
//!
//! Layout on every drive, under `.bucketfs.sys/multipart/<bucket>/<upload-id>/`:
//! - `upload.json`: key, options, initiation time, erasure layout and
//!   distribution (fixed at creation, from the final key, so parts are already
//!   on the drives the object will use);
//! - `data/part.N.<pid>`: the part's bitrot-framed shard; `<pid>` is unique per
//!   `put_part` call so a retried part never overwrites bytes that an older
//!   `part.N.json` still describes;
//! - `part.N.json`: number, size, md5 ETag and the shard file name; renamed
//!   into place after the shard, so it is the atomic switch between retries.
//!
//! Because all state is on disk, a part uploaded by one process can be
//! completed by a later one, and a part can be read back before completion
//! (`read_part`: decoded from its shard files like an object's part). `complete` writes the object metadata naming the
//! part files and renames the whole `data/` directory into the object dir as
//! its data dir: no part is copied.

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};

use super::bitrot::{self, PartLayout};
use super::drives::{write_file_durable, SYS_DIR};
use super::erasure::{Erasure, BLOCK_SIZE};
use super::error::{IoContext, StoreError, StoreResult};
use super::meta::{self, ErasureInfo, ObjMeta, PartInfo};
use super::object::{distribution, info, tally, Commit};
use super::paths;
use super::set::{quorum_error, ErasureSet};
use crate::object::{CompletedPart, MultipartUploadInfo, ObjectMeta, PutOptions};

pub const MIN_PART_SIZE: u64 = 5 * 1024 * 1024;
pub const MAX_PART_SIZE: u64 = 5 * 1024 * 1024 * 1024;
pub const MAX_PARTS: u32 = 10_000;

#[derive(Clone, Debug, Serialize, Deserialize)]
struct UploadInfo {
    version: u32,
    key: String,
    upload_id: String,
    initiated_ns: u64,
    content_type: Option<String>,
    user_metadata: std::collections::BTreeMap<String, String>,
    erasure: ErasureInfo,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct PartRecord {
    number: u32,
    size: u64,
    etag: String,
    file: String,
    mtime_ns: u64,
}

fn check_upload_id(id: &str) -> StoreResult<()> {
    if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(StoreError::NoSuchUpload(id.into()))
    }
}

fn trim_etag(e: &str) -> &str {
    e.trim_matches('"')
}

/// The verified chunk of block `b` in a part's shard file; None if unreadable or corrupt.
fn read_chunk(file: &Option<File>, layout: &PartLayout, b: u64) -> Option<Vec<u8>> {
    let mut frame = vec![0u8; layout.frame_len(b)];
    file.as_ref()?.read_exact_at(&mut frame, layout.frame_offset(b)).ok()?;
    bitrot::verify(&frame).map(|c| c.to_vec())
}

impl ErasureSet {
    fn uploads_dir(&self, slot: usize, bucket: &str) -> PathBuf {
        self.drives[slot].join(SYS_DIR).join("multipart").join(bucket)
    }

    fn upload_dir(&self, slot: usize, bucket: &str, id: &str) -> PathBuf {
        self.uploads_dir(slot, bucket).join(id)
    }

    fn all_slots(&self) -> Vec<bool> {
        vec![true; self.drives.len()]
    }

    fn read_upload(&self, bucket: &str, key: Option<&str>, id: &str) -> StoreResult<UploadInfo> {
        check_upload_id(id)?;
        for slot in 0..self.drives.len() {
            let p = self.upload_dir(slot, bucket, id).join("upload.json");
            let Ok(b) = fs::read(&p) else { continue };
            let Ok(u) = serde_json::from_slice::<UploadInfo>(&b) else { continue };
            if key.is_some_and(|k| k != u.key) {
                break;
            }
            return Ok(u);
        }
        Err(StoreError::NoSuchUpload(id.into()))
    }

    /// True if upload `id` of `key` lives in this set (pools.rs asks each pool).
    pub(crate) fn has_upload(&self, bucket: &str, key: &str, id: &str) -> bool {
        self.read_upload(bucket, Some(key), id).is_ok()
    }

    /// Starts an upload; returns its opaque id.
    #[tracing::instrument(level = "debug", skip(self, opts))]
    pub fn create_multipart_upload(&self, bucket: &str, key: &str, opts: &PutOptions) -> StoreResult<String> {
        self.require_bucket(bucket)?;
        paths::key_to_relpath(key)?;
        let id = uuid::Uuid::new_v4().simple().to_string();
        let er = Erasure::new(self.data, self.parity)?;
        let u = UploadInfo {
            version: 1,
            key: key.into(),
            upload_id: id.clone(),
            initiated_ns: meta::now_ns(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
            erasure: self.erasure_info(&er, distribution(key, self.drives.len())),
        };
        let json = serde_json::to_vec(&u).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let res = self.par_slots(&self.all_slots(), |slot| {
            self.check_online(slot)?;
            let dir = self.upload_dir(slot, bucket, &id);
            fs::create_dir_all(dir.join("data")).ctx(&dir)?;
            write_file_durable(&dir.join("upload.json"), &json)
        });
        let (_, got, last) = tally(res);
        let need = Self::write_quorum(self.data, self.parity);
        if got < need {
            self.trash_upload(bucket, &id);
            return Err(quorum_error("write", got, need, last));
        }
        Ok(id)
    }

    /// Stores one part (any order, concurrently); re-uploading a number replaces it.
    #[tracing::instrument(level = "debug", skip(self, reader))]
    pub fn put_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part_number: u32,
        reader: &mut dyn Read,
    ) -> StoreResult<CompletedPart> {
        self.require_bucket(bucket)?;
        if part_number == 0 || part_number > MAX_PARTS {
            return Err(StoreError::InvalidArgument(format!(
                "part number {part_number} not in 1..={MAX_PARTS}"
            )));
        }
        let u = self.read_upload(bucket, Some(key), upload_id)?;
        let er = Erasure::new(u.erasure.data, u.erasure.parity)?;
        let file = format!("part.{part_number}.{}", uuid::Uuid::new_v4().simple());
        let staged = self.stage(reader, &er, &u.erasure.distribution, &PathBuf::from(&file), false)?;
        if staged.size > MAX_PART_SIZE {
            self.remove_tmp(&staged.tmp_id);
            return Err(StoreError::InvalidArgument(format!("part {part_number} is larger than 5 GiB")));
        }
        let rec = PartRecord {
            number: part_number,
            size: staged.size,
            etag: hex::encode(staged.md5),
            file: file.clone(),
            mtime_ns: meta::now_ns(),
        };
        let json = serde_json::to_vec(&rec).map_err(|e| StoreError::InvalidArgument(e.to_string()))?;
        let _g = self.upload_lock(bucket, upload_id);
        let res = self.par_slots(&staged.ok, |slot| {
            let dir = self.upload_dir(slot, bucket, upload_id);
            if !dir.join("upload.json").exists() {
                return Err(StoreError::NoSuchUpload(upload_id.into()));
            }
            let src = self.tmp_dir(slot, &staged.tmp_id).join(&file);
            if src.exists() {
                fs::rename(&src, dir.join("data").join(&file)).ctx(&src)?;
            }
            write_file_durable(&dir.join(format!("part.{part_number}.json")), &json)
        });
        self.remove_tmp(&staged.tmp_id);
        let (_, got, last) = tally(res);
        let need = Self::write_quorum(er.data, er.parity);
        if got < need {
            return Err(match last {
                Some(StoreError::NoSuchUpload(id)) => StoreError::NoSuchUpload(id),
                last => quorum_error("write", got, need, last),
            });
        }
        Ok(CompletedPart { part_number, etag: rec.etag, size: rec.size })
    }

    /// The parts stored so far, ascending, as agreed by enough drives.
    fn stored_parts(&self, bucket: &str, upload_id: &str, data: usize) -> Vec<PartRecord> {
        let mut seen: Vec<(PartRecord, usize)> = Vec::new();
        for slot in 0..self.drives.len() {
            let Ok(rd) = fs::read_dir(self.upload_dir(slot, bucket, upload_id)) else { continue };
            for e in rd.flatten() {
                let name = e.file_name();
                let Some(name) = name.to_str() else { continue };
                if !(name.starts_with("part.") && name.ends_with(".json")) {
                    continue;
                }
                let Ok(b) = fs::read(e.path()) else { continue };
                let Ok(r) = serde_json::from_slice::<PartRecord>(&b) else { continue };
                match seen.iter_mut().find(|(x, _)| *x == r) {
                    Some((_, c)) => *c += 1,
                    None => seen.push((r, 1)),
                }
            }
        }
        // Per part number, the newest record present on a read quorum of drives.
        seen.sort_by(|a, b| (a.0.number, b.0.mtime_ns).cmp(&(b.0.number, a.0.mtime_ns)));
        let mut out: Vec<PartRecord> = Vec::new();
        for (r, c) in seen {
            if c >= data && out.last().map(|l| l.number) != Some(r.number) {
                out.push(r);
            }
        }
        out
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn list_parts(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<Vec<CompletedPart>> {
        self.require_bucket(bucket)?;
        let u = self.read_upload(bucket, Some(key), upload_id)?;
        Ok(self
            .stored_parts(bucket, upload_id, u.erasure.data)
            .into_iter()
            .map(|r| CompletedPart { part_number: r.number, etag: r.etag, size: r.size })
            .collect())
    }

    /// The bytes of `part` as stored under its ETag in an open upload, decoded
    /// from its shard files as an object's part is: the data shards, and parity
    /// for a block whose data chunk is missing or fails its bitrot check. What
    /// lets a streaming writer rewrite a part it no longer holds in memory.
    #[tracing::instrument(level = "debug", skip(self, part), fields(part = part.part_number))]
    pub fn read_part(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        part: &CompletedPart,
    ) -> StoreResult<Vec<u8>> {
        self.require_bucket(bucket)?;
        let u = self.read_upload(bucket, Some(key), upload_id)?;
        let rec = self
            .stored_parts(bucket, upload_id, u.erasure.data)
            .into_iter()
            .find(|r| r.number == part.part_number && r.etag == trim_etag(&part.etag))
            .ok_or_else(|| {
                StoreError::InvalidPart(format!(
                    "part {} with ETag {:?} is not stored",
                    part.part_number, part.etag
                ))
            })?;
        let er = Erasure::new(u.erasure.data, u.erasure.parity)?;
        let d = er.data;
        let layout = PartLayout { size: rec.size, data: d };
        let open = |shard: usize| {
            let slot = u.erasure.distribution[shard];
            File::open(self.upload_dir(slot, bucket, upload_id).join("data").join(&rec.file)).ok()
        };
        let data_files: Vec<Option<File>> = (0..d).map(open).collect();
        let mut parity_files: Option<Vec<Option<File>>> = None;
        let mut out = vec![0u8; rec.size as usize];
        for b in 0..layout.blocks() {
            let mut chunks: Vec<Option<Vec<u8>>> =
                data_files.iter().map(|f| read_chunk(f, &layout, b)).collect();
            if chunks.iter().any(Option::is_none) {
                tracing::warn!(
                    bucket,
                    key,
                    upload_id,
                    part = rec.number,
                    block = b,
                    "part shard missing or corrupt; decoding from parity"
                );
                let parity = parity_files.get_or_insert_with(|| (d..er.total()).map(open).collect());
                chunks.extend(parity.iter().map(|f| read_chunk(f, &layout, b)));
                er.reconstruct(&mut chunks, true)?;
            }
            let start = b as usize * BLOCK_SIZE;
            let block = &mut out[start..start + layout.block_len(b)];
            // the last chunks of a block are zero padded past its end
            for (dst, chunk) in block.chunks_mut(layout.chunk_len(b)).zip(&chunks) {
                let chunk = chunk
                    .as_ref()
                    .ok_or_else(|| StoreError::Corrupt("a data chunk was not rebuilt".into()))?;
                dst.copy_from_slice(&chunk[..dst.len()]);
            }
        }
        Ok(out)
    }

    /// Completes an upload: validates the part list and moves the parts into place.
    #[tracing::instrument(level = "debug", skip(self, parts), fields(parts = parts.len()))]
    pub fn complete_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> StoreResult<ObjectMeta> {
        self.require_bucket(bucket)?;
        let _g = self.upload_lock(bucket, upload_id);
        let u = self.read_upload(bucket, Some(key), upload_id)?;
        if parts.is_empty() {
            return Err(StoreError::InvalidPart("the part list is empty".into()));
        }
        let stored = self.stored_parts(bucket, upload_id, u.erasure.data);
        let mut chosen: Vec<PartInfo> = Vec::with_capacity(parts.len());
        let mut md5s = Md5::new();
        let mut size = 0u64;
        for (i, p) in parts.iter().enumerate() {
            if i > 0 && p.part_number <= parts[i - 1].part_number {
                return Err(StoreError::InvalidPart("part numbers must be in ascending order".into()));
            }
            let r = stored
                .iter()
                .find(|r| r.number == p.part_number)
                .ok_or_else(|| StoreError::InvalidPart(format!("part {} was not uploaded", p.part_number)))?;
            if trim_etag(&p.etag) != r.etag {
                return Err(StoreError::InvalidPart(format!(
                    "part {}: ETag {:?} does not match the stored {:?}",
                    p.part_number, p.etag, r.etag
                )));
            }
            if i + 1 < parts.len() && r.size < MIN_PART_SIZE {
                return Err(StoreError::EntityTooSmall(format!(
                    "part {} is {} bytes; all parts but the last must be at least 5 MiB",
                    p.part_number, r.size
                )));
            }
            md5s.update(hex::decode(&r.etag).map_err(|_| StoreError::Corrupt("bad part etag".into()))?);
            size += r.size;
            chosen.push(PartInfo {
                number: r.number,
                size: r.size,
                etag: r.etag.clone(),
                file: r.file.clone(),
            });
        }
        let etag = format!("{}-{}", hex::encode(md5s.finalize()), parts.len());
        let data_dir = uuid::Uuid::new_v4().simple().to_string();
        let m = ObjMeta {
            version_id: uuid::Uuid::new_v4().to_string(),
            size,
            mtime_ns: meta::now_ns(),
            etag,
            content_type: u.content_type.clone(),
            user_metadata: u.user_metadata.clone(),
            erasure: u.erasure.clone(),
            data_dir: Some(data_dir),
            parts: chosen,
        };
        // Drop superseded and unlisted part files so the data dir holds just the object.
        let keep: std::collections::HashSet<&str> = m.parts.iter().map(|p| p.file.as_str()).collect();
        let mut slots = vec![false; self.drives.len()];
        let mut data_src = vec![None; self.drives.len()];
        for slot in 0..self.drives.len() {
            let data = self.upload_dir(slot, bucket, upload_id).join("data");
            let Ok(rd) = fs::read_dir(&data) else { continue };
            for e in rd.flatten() {
                if !e.file_name().to_str().is_some_and(|n| keep.contains(n)) {
                    let _ = fs::remove_file(e.path());
                }
            }
            slots[slot] = true;
            data_src[slot] = Some(data);
        }
        let c = Commit {
            meta: m,
            inline: None,
            data_src,
            slots,
            tmp_id: uuid::Uuid::new_v4().simple().to_string(),
        };
        let m = self.commit(bucket, key, c, &PutOptions::default())?;
        self.trash_upload(bucket, upload_id);
        Ok(info(key, &m))
    }

    fn trash_upload(&self, bucket: &str, id: &str) {
        for slot in 0..self.drives.len() {
            let _ = self.move_to_trash_path(&self.drives[slot], &self.upload_dir(slot, bucket, id));
        }
    }

    #[tracing::instrument(level = "debug", skip(self))]
    pub fn abort_multipart_upload(&self, bucket: &str, key: &str, upload_id: &str) -> StoreResult<()> {
        self.require_bucket(bucket)?;
        let _g = self.upload_lock(bucket, upload_id);
        self.read_upload(bucket, Some(key), upload_id)?;
        self.trash_upload(bucket, upload_id);
        Ok(())
    }

    /// In-progress uploads whose key starts with `prefix`, ordered by key then id.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn list_multipart_uploads(
        &self,
        bucket: &str,
        prefix: &str,
    ) -> StoreResult<Vec<MultipartUploadInfo>> {
        self.require_bucket(bucket)?;
        let mut ids = std::collections::BTreeSet::new();
        for slot in 0..self.drives.len() {
            let Ok(rd) = fs::read_dir(self.uploads_dir(slot, bucket)) else { continue };
            ids.extend(rd.flatten().filter_map(|e| e.file_name().to_str().map(String::from)));
        }
        let mut out: Vec<MultipartUploadInfo> = ids
            .iter()
            .filter_map(|id| self.read_upload(bucket, None, id).ok())
            .filter(|u| u.key.starts_with(prefix))
            .map(|u| MultipartUploadInfo {
                key: u.key,
                upload_id: u.upload_id,
                initiated: UNIX_EPOCH + Duration::from_nanos(u.initiated_ns),
            })
            .collect();
        out.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(out)
    }

    /// Aborts every upload under `prefix`; returns how many.
    pub fn abort_uploads_under(&self, bucket: &str, prefix: &str) -> StoreResult<usize> {
        let ups = self.list_multipart_uploads(bucket, prefix)?;
        let mut n = 0;
        for u in ups {
            match self.abort_multipart_upload(bucket, &u.key, &u.upload_id) {
                Ok(()) => n += 1,
                Err(StoreError::NoSuchUpload(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Aborts uploads initiated more than `older_than` ago; returns how many.
    #[tracing::instrument(level = "debug", skip(self))]
    pub fn expire_uploads(&self, bucket: &str, older_than: Duration) -> StoreResult<usize> {
        let cutoff = SystemTime::now().checked_sub(older_than).unwrap_or(UNIX_EPOCH);
        let mut n = 0;
        for u in self.list_multipart_uploads(bucket, "")? {
            if u.initiated <= cutoff && self.abort_multipart_upload(bucket, &u.key, &u.upload_id).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }
}
