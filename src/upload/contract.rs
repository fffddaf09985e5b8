//! The multipart upload contract (Hadoop's `MultipartUploader` semantics), built
//! once on top of [`StorageBackend`] so every backend gets it: the mount's
//! journal, `bucketfs cp` and `bucketfs upload ...` all go through here.
//!
//! - [`MultipartUploader::start_upload`] → [`UploadHandle`];
//!   [`put_part`](MultipartUploader::put_part) → [`PartHandle`];
//!   [`complete`](MultipartUploader::complete) → [`PathHandle`] (the written
//!   version: ETag and size); [`abort`](MultipartUploader::abort);
//!   [`abort_uploads_under`](MultipartUploader::abort_uploads_under) → count,
//!   or [`ContractError::Unsupported`].
//! - Handles are opaque and serialize to text (`bfs-upload:` / `bfs-part:` /
//!   `bfs-path:` plus hex of a small JSON record). An upload handle carries the
//!   bucket URL, the key and the backend's upload id, so a handle printed by
//!   one process or host is usable from another that reaches the same bucket
//!   (endpoint and credentials come from that process's own flags). A part
//!   handle carries its upload id, number, ETag and size: `complete` needs no
//!   state but the handles.
//! - Preconditions are checked here, before the backend is asked, each with its
//!   own error: a root or directory path ([`ContractError::NotAFile`]), a path or
//!   bucket other than the handle's ([`ContractError::PathMismatch`]), part number
//!   below 1 or above the backend's maximum ([`ContractError::BadPartNumber`]),
//!   duplicate parts ([`ContractError::DuplicatePart`]), a part of another upload
//!   ([`ContractError::ForeignPart`]), non-last parts below the backend's minimum
//!   ([`ContractError::PartTooSmall`]). An unknown, completed or aborted upload
//!   is [`ContractError::UnknownUpload`]: servers differ in what they answer
//!   for one (S3 allows re-completing a completed upload for a while, SeaweedFS
//!   accepts aborting a finished one, moto fails a part for one with a 500), so
//!   `complete` and `abort` first list the upload's parts where the backend can
//!   (for `complete` that also proves every named part is stored with the
//!   handle's ETag), and a failed `put_part` does so before reporting.
//! - Postconditions come from the backends' multipart semantics: nothing is
//!   visible until completion, parts are joined in part-number order whatever
//!   order they arrived in, parts not named are dropped with their storage.

use crate::object::ErrorKind;
use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::backend::{
    BackendError, CompletedPart, ListRequest, MultipartUploadInfo, PutOptions, StorageBackend,
};

#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{0:?} is the root or a directory, not a file path")]
    NotAFile(String),
    #[error("the upload handle is for {handle:?}, not {path:?}")]
    PathMismatch { handle: String, path: String },
    #[error("unknown or already finished upload {0}")]
    UnknownUpload(String),
    #[error("part number {0} is invalid (parts are numbered from 1 to {1})")]
    BadPartNumber(u32, u32),
    #[error("duplicate part: {0}")]
    DuplicatePart(String),
    #[error("part {0} belongs to another upload, or names a different number than its handle")]
    ForeignPart(u32),
    #[error("part {part} was not stored (or was replaced) in this upload")]
    UnknownPart { part: u32 },
    #[error("part {part} is {size} bytes; every part but the last must be at least {min} bytes")]
    PartTooSmall { part: u32, size: u64, min: u64 },
    #[error("an upload needs at least one part to complete")]
    NoParts,
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
    #[error("malformed handle: {0}")]
    BadHandle(String),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

pub type ContractResult<T> = Result<T, ContractError>;

const UPLOAD_TAG: &str = "bfs-upload:";
const PART_TAG: &str = "bfs-part:";
const PATH_TAG: &str = "bfs-path:";

fn encode<T: Serialize>(tag: &str, v: &T) -> String {
    // serializing these plain records cannot fail
    format!("{tag}{}", hex::encode(serde_json::to_vec(v).unwrap_or_default()))
}

fn decode<T: for<'de> Deserialize<'de>>(tag: &str, text: &str) -> ContractResult<T> {
    let body = text
        .trim()
        .strip_prefix(tag)
        .ok_or_else(|| ContractError::BadHandle(format!("expected a handle starting with {tag:?}")))?;
    let bytes = hex::decode(body).map_err(|_| ContractError::BadHandle("not hex after the tag".into()))?;
    serde_json::from_slice(&bytes).map_err(|e| ContractError::BadHandle(e.to_string()))
}

/// One multipart upload: which bucket, which key, which backend upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadHandle {
    /// Bucket URL without prefix, e.g. `s3://photos` or `local://demo`.
    pub bucket_url: String,
    /// Key in the bucket.
    pub key: String,
    pub upload_id: String,
}

impl UploadHandle {
    pub fn to_text(&self) -> String {
        encode(UPLOAD_TAG, self)
    }
    pub fn parse(text: &str) -> ContractResult<Self> {
        let h: Self = decode(UPLOAD_TAG, text)?;
        if h.upload_id.is_empty() || h.key.is_empty() {
            return Err(ContractError::BadHandle("empty key or upload id".into()));
        }
        Ok(h)
    }
    /// The destination as a URL (`s3://bucket/key`).
    pub fn url(&self) -> String {
        format!("{}/{}", self.bucket_url, self.key)
    }
}

/// One stored part of an upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartHandle {
    pub upload_id: String,
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

impl PartHandle {
    pub fn to_text(&self) -> String {
        encode(PART_TAG, self)
    }
    pub fn parse(text: &str) -> ContractResult<Self> {
        decode(PART_TAG, text)
    }
}

/// The version a completed upload wrote.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PathHandle {
    pub key: String,
    pub etag: String,
    pub size: u64,
}

impl PathHandle {
    pub fn to_text(&self) -> String {
        encode(PATH_TAG, self)
    }
    pub fn parse(text: &str) -> ContractResult<Self> {
        decode(PATH_TAG, text)
    }
}

/// The contract over one bucket of one backend.
#[derive(Clone)]
pub struct MultipartUploader {
    /// Rooted at the bucket (no prefix), so handle keys are bucket keys.
    backend: Arc<dyn StorageBackend>,
    bucket_url: String,
}

/// `/a/b` and `a/b` name the same key; the root and `dir/` are not file paths.
fn file_key(path: &str) -> ContractResult<String> {
    let key = path.trim_start_matches('/');
    if key.is_empty() || key.ends_with('/') {
        return Err(ContractError::NotAFile(path.to_owned()));
    }
    Ok(key.to_owned())
}

fn not_found_is_unknown(e: BackendError, h: &UploadHandle) -> ContractError {
    match e {
        BackendError { kind: ErrorKind::NoSuchUpload, .. }
        | BackendError { kind: ErrorKind::NotFound, .. } => ContractError::UnknownUpload(h.url()),
        e => ContractError::Backend(e),
    }
}

impl MultipartUploader {
    /// `backend` must be rooted at the bucket `bucket_url` names (e.g. `s3://photos`).
    pub fn new(backend: Arc<dyn StorageBackend>, bucket_url: &str) -> Self {
        MultipartUploader { backend, bucket_url: bucket_url.trim_end_matches('/').to_owned() }
    }

    pub fn backend(&self) -> &Arc<dyn StorageBackend> {
        &self.backend
    }

    pub fn bucket_url(&self) -> &str {
        &self.bucket_url
    }

    /// Rejects paths that are directories: a key with objects below it.
    async fn check_file_path(&self, path: &str) -> ContractResult<String> {
        let key = file_key(path)?;
        let req = ListRequest {
            prefix: format!("{key}/"),
            delimiter: Some("/".into()),
            continuation: None,
            max_keys: 1,
        };
        let page = self.backend.list(&req).await?;
        if !page.objects.is_empty() || !page.common_prefixes.is_empty() {
            return Err(ContractError::NotAFile(path.to_owned()));
        }
        Ok(key)
    }

    fn check_handle(&self, h: &UploadHandle, path: Option<&str>) -> ContractResult<()> {
        let wrong_path = match path {
            Some(p) => file_key(p)? != h.key,
            None => false,
        };
        if h.bucket_url != self.bucket_url || wrong_path {
            return Err(ContractError::PathMismatch {
                handle: h.url(),
                path: format!("{}/{}", self.bucket_url, path.unwrap_or(&h.key).trim_start_matches('/')),
            });
        }
        Ok(())
    }

    pub async fn start_upload(&self, path: &str) -> ContractResult<UploadHandle> {
        let key = self.check_file_path(path).await?;
        let upload_id = self.backend.create_multipart(&key, &PutOptions::default()).await?;
        if upload_id.is_empty() {
            return Err(BackendError::other("the backend returned an empty upload id").into());
        }
        Ok(UploadHandle { bucket_url: self.bucket_url.clone(), key, upload_id })
    }

    pub async fn put_part(
        &self,
        h: &UploadHandle,
        part_number: u32,
        data: Bytes,
    ) -> ContractResult<PartHandle> {
        self.check_handle(h, None)?;
        let max = self.backend.capabilities().max_parts;
        if part_number < 1 || part_number > max {
            return Err(ContractError::BadPartNumber(part_number, max));
        }
        let p = match self.backend.upload_part(&h.key, &h.upload_id, part_number, data).await {
            Ok(p) => p,
            // servers answer a part for a finished upload differently (404, 500, ...):
            // on failure only, ask whether the upload still exists
            Err(e) => {
                self.check_live(h).await?;
                return Err(not_found_is_unknown(e, h));
            }
        };
        Ok(PartHandle { upload_id: h.upload_id.clone(), part_number, etag: p.etag, size: p.size })
    }

    /// The parts stored so far (for resuming), or `Unsupported`.
    pub async fn list_parts(&self, h: &UploadHandle) -> ContractResult<Vec<PartHandle>> {
        self.check_handle(h, None)?;
        match self.backend.list_parts(&h.key, &h.upload_id).await {
            Ok(parts) => Ok(parts
                .into_iter()
                .map(|p| PartHandle {
                    upload_id: h.upload_id.clone(),
                    part_number: p.part_number,
                    etag: p.etag,
                    size: p.size,
                })
                .collect()),
            Err(e @ BackendError { kind: ErrorKind::NotSupported, .. }) => {
                Err(ContractError::Unsupported(e.context().to_owned()))
            }
            Err(e) => Err(not_found_is_unknown(e, h)),
        }
    }

    /// Joins the named parts, in part-number order, into the object at `path`.
    pub async fn complete(
        &self,
        h: &UploadHandle,
        path: &str,
        parts: &[(u32, PartHandle)],
    ) -> ContractResult<PathHandle> {
        self.check_handle(h, Some(path))?;
        if parts.is_empty() {
            return Err(ContractError::NoParts);
        }
        let max = self.backend.capabilities().max_parts;
        let mut numbers = HashSet::new();
        let mut etags = HashSet::new();
        for (n, p) in parts {
            if *n < 1 || *n > max {
                return Err(ContractError::BadPartNumber(*n, max));
            }
            if !numbers.insert(*n) {
                return Err(ContractError::DuplicatePart(format!("part number {n} is named twice")));
            }
            if !etags.insert((p.upload_id.clone(), p.part_number, p.etag.clone())) {
                return Err(ContractError::DuplicatePart(format!(
                    "the handle of part {} is given again as part {n}",
                    p.part_number
                )));
            }
            if p.upload_id != h.upload_id || p.part_number != *n {
                return Err(ContractError::ForeignPart(*n));
            }
        }
        let mut sorted: Vec<CompletedPart> = parts
            .iter()
            .map(|(n, p)| CompletedPart { part_number: *n, etag: p.etag.clone(), size: p.size })
            .collect();
        sorted.sort_by_key(|p| p.part_number);
        let min = self.backend.capabilities().min_part_size;
        if let Some(small) = sorted[..sorted.len() - 1].iter().find(|p| p.size < min) {
            return Err(ContractError::PartTooSmall { part: small.part_number, size: small.size, min });
        }
        // Proves the upload is still live (servers may accept a second completion)
        // and that every named part is the one stored.
        match self.backend.list_parts(&h.key, &h.upload_id).await {
            Ok(stored) => {
                for p in &sorted {
                    if !stored.iter().any(|s| s.part_number == p.part_number && s.etag == p.etag) {
                        return Err(ContractError::UnknownPart { part: p.part_number });
                    }
                }
            }
            Err(BackendError { kind: ErrorKind::NotSupported, .. }) => {}
            Err(e) => return Err(not_found_is_unknown(e, h)),
        }
        let meta = self
            .backend
            .complete_multipart(&h.key, &h.upload_id, &sorted)
            .await
            .map_err(|e| not_found_is_unknown(e, h))?;
        Ok(PathHandle { key: h.key.clone(), etag: meta.etag, size: meta.size })
    }

    pub async fn abort(&self, h: &UploadHandle, path: &str) -> ContractResult<()> {
        self.check_handle(h, Some(path))?;
        // some servers (SeaweedFS) answer an abort of a finished upload with success
        self.check_live(h).await?;
        self.backend.abort_multipart(&h.key, &h.upload_id).await.map_err(|e| not_found_is_unknown(e, h))
    }

    /// Fails with `UnknownUpload` if the backend can list the upload's parts and it is gone.
    async fn check_live(&self, h: &UploadHandle) -> ContractResult<()> {
        match self.backend.list_parts(&h.key, &h.upload_id).await {
            Ok(_) | Err(BackendError { kind: ErrorKind::NotSupported, .. }) => Ok(()),
            Err(e) => Err(not_found_is_unknown(e, h)),
        }
    }

    /// Pending uploads under directory `path` (`""` or `/` = the whole bucket).
    pub async fn list_uploads(&self, path: &str) -> ContractResult<Vec<MultipartUploadInfo>> {
        match self.backend.list_multipart(&dir_prefix(path)).await {
            Ok(u) => Ok(u),
            Err(e @ BackendError { kind: ErrorKind::NotSupported, .. }) => {
                Err(ContractError::Unsupported(e.context().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Aborts every pending upload under directory `path`; returns how many.
    pub async fn abort_uploads_under(&self, path: &str) -> ContractResult<usize> {
        match self.backend.abort_multipart_under(&dir_prefix(path)).await {
            Ok(n) => Ok(n),
            Err(e @ BackendError { kind: ErrorKind::NotSupported, .. }) => {
                Err(ContractError::Unsupported(e.context().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// `a/b` → `a/b/`; the root → `""`.
fn dir_prefix(path: &str) -> String {
    let p = path.trim_matches('/');
    if p.is_empty() {
        String::new()
    } else {
        format!("{p}/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_round_trip_as_text() {
        let h = UploadHandle { bucket_url: "s3://b".into(), key: "a/b c".into(), upload_id: "x~y".into() };
        let t = h.to_text();
        assert!(t.starts_with("bfs-upload:") && t.is_ascii() && !t.contains(char::is_whitespace));
        assert_eq!(UploadHandle::parse(&format!(" {t}\n")).unwrap(), h);
        let p = PartHandle { upload_id: "x".into(), part_number: 3, etag: "e".into(), size: 9 };
        assert_eq!(PartHandle::parse(&p.to_text()).unwrap(), p);
        assert!(matches!(UploadHandle::parse(&p.to_text()), Err(ContractError::BadHandle(_))));
        assert!(matches!(UploadHandle::parse("bfs-upload:zz"), Err(ContractError::BadHandle(_))));
        assert!(matches!(UploadHandle::parse(""), Err(ContractError::BadHandle(_))));
    }

    #[test]
    fn paths() {
        assert_eq!(file_key("/a/b").unwrap(), "a/b");
        assert!(matches!(file_key("/"), Err(ContractError::NotAFile(_))));
        assert!(matches!(file_key("a/"), Err(ContractError::NotAFile(_))));
        assert_eq!(dir_prefix("/"), "");
        assert_eq!(dir_prefix("a/b/"), "a/b/");
    }
}
