//! The storage backend interface.
//!
//! Every object store bucketfs can mount (the embedded erasure-coded store, S3,
//! GCS, Azure) implements [`StorageBackend`]. The trait is deliberately close to
//! the S3 object model (flat keys, prefix listings, ranged GETs, multipart
//! uploads) because that is the lowest common denominator of the stores we
//! target; richer features are advertised through [`Capabilities`] and the
//! filesystem adapts to them instead of asking which backend it talks to.
//!
//! Keys are always relative to the mounted root: a mount of `bucket:some/prefix`
//! wraps its backend in [`prefixed::PrefixedBackend`], so the filesystem never
//! sees the prefix.
//!
//! The value types of the trait (object metadata, listing pages, options, parts)
//! and [`BackendError`] live in the leaf module [`crate::object`], which the
//! embedded store shares; they are re-exported here. Errors carry an
//! [`ErrorKind`] from which the filesystem chooses the errno (`NotFound` -> ENOENT,
//! `PreconditionFailed` -> EEXIST, `InvalidKey` -> EINVAL, `NameTooLong` ->
//! ENAMETOOLONG, anything transient -> EIO), never from the message. Messages never
//! contain credentials.

pub mod abfs;
pub mod attr_index;
pub mod azure;
pub(crate) mod forward;
pub mod gcs;
pub(crate) mod http;
pub mod local;
pub(crate) mod marker_multipart;
/// The in-memory test double: unit tests, and `examples/memmount.rs` with `--features test-util`.
#[cfg(any(test, feature = "test-util"))]
pub mod memory;
pub mod metered;
pub mod part_rules;
pub mod prefixed;
pub mod retry;
pub mod s3;
#[cfg(test)]
pub(crate) mod test_backend;
pub mod upload_marker;
pub mod write_retry;

use std::ops::Range;

use async_trait::async_trait;
use bytes::Bytes;

pub use crate::object::{
    BackendError, BackendResult, CompletedPart, ErrorKind, GetOptions, GetResult, ListPage, ListRequest,
    MultipartUploadInfo, ObjectMeta, PutOptions,
};

/// Single deletes in flight at once in the default [`StorageBackend::delete_many`].
pub const DELETE_MANY_IN_FLIGHT: usize = 16;

/// What a backend can do; the filesystem consults this instead of the backend's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Short name for logs and `statfs` ("local", "s3", "gcs", "azure").
    pub name: &'static str,
    /// How `get_ranges` serves several ranges of one object, and so how the read path
    /// batches sparse reads. The one place this is said: S3 reports `Probe` until its
    /// server has answered (then `Native` or `ParallelSingles`).
    pub multi_range: MultiRangeMode,
    /// Parts of one multipart upload may be uploaded concurrently.
    pub parallel_multipart: bool,
    /// Smallest allowed part, except the last one.
    pub min_part_size: u64,
    /// Largest allowed part.
    pub max_part_size: u64,
    /// Largest allowed part number (and so number of parts).
    pub max_parts: u32,
    /// `rename` is implemented natively (cheaper than copy + delete).
    pub rename: bool,
    /// Directories are real on the server (Azure Data Lake Storage Gen2), not
    /// prefixes: a directory marker key (`dir/`) *is* the directory, so `put` of one
    /// creates it and `delete` of one removes it only if it is empty (else
    /// [`ErrorKind::DirectoryNotEmpty`]); `rename` of a marker key moves the whole
    /// tree in one call; listings report every directory. The filesystem then renames
    /// a directory with that one call instead of moving each key.
    pub native_dirs: bool,
    /// `PutOptions::if_none_match_any` / `if_match` are honoured atomically.
    pub conditional_put: bool,
    /// Listing entries carry content type and user metadata (S3 listings do not), so
    /// the filesystem can tell symlinks and `--enable-perms` attributes without a HEAD.
    pub list_metadata: bool,
    /// Listing entries carry bucketfs's own attributes (symlink type, `--enable-perms`
    /// mode, owner and mtime), if not all user metadata: true with `list_metadata`, and
    /// for backends wrapped in [`attr_index::AttrIndexBackend`].
    pub list_attrs: bool,
    /// [`StorageBackend::read_part`] reads a part of an unfinished multipart upload
    /// back (the embedded store's part files, GCS's part objects). S3 and Azure
    /// cannot: their parts are unreadable until the upload is completed.
    pub readable_upload_parts: bool,
}

/// How a backend serves several ranges of one object, as the read path sees it
/// ([`Capabilities::multi_range`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultiRangeMode {
    /// `get_ranges` answers many ranges in one request.
    Native,
    /// Not known yet: the next `get_ranges` call finds out (and, if the server
    /// turns out to serve one range at a time, still answers every range).
    Probe,
    /// No multi-range request exists: a batch is fetched as parallel single-range reads
    /// (still one round trip of wall time, and predicted reads are fetched ahead).
    ParallelSingles,
    /// Batching sparse reads is impossible here: `--enable-multi-range` is ignored.
    /// No backend answers this today; every one can at least read ranges in parallel.
    Unsupported,
}

/// The answer to a read that yields no bytes (an empty range, or one that
/// starts past the end): the object's metadata from `head`, pinned to
/// `opts.if_match` as the read would have been.
pub(crate) async fn empty_read<B: StorageBackend + ?Sized>(
    b: &B,
    key: &str,
    opts: &GetOptions,
) -> BackendResult<GetResult> {
    let meta = b.head(key).await?;
    match &opts.if_match {
        Some(e) if *e != meta.etag => Err(BackendError::precondition_failed(key)),
        _ => Ok(GetResult { meta, data: Bytes::new() }),
    }
}

/// An object store the filesystem can mount. All keys are relative to the mounted root.
#[async_trait]
pub trait StorageBackend: MultipartStore {
    fn capabilities(&self) -> Capabilities;

    /// Requests this backend re-sent after a failed attempt (its own retry policy), since
    /// it was created; for `bucketfs stats`. Backends without retries report 0.
    fn retries(&self) -> u64 {
        0
    }

    /// Checks at mount time that the bucket exists and is reachable with our credentials.
    async fn check_bucket(&self) -> BackendResult<()>;

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta>;

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage>;

    /// Reads `range` of the object (`None` = whole object). A range past the end is clamped.
    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult>;

    /// Reads several ranges of one object, returning each range's bytes in request order.
    /// Backends without native multi-range support inherit this loop; those with it
    /// (`Capabilities::multi_range` is `Native` or `Probe`) override it with one request.
    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        let mut out = Vec::with_capacity(ranges.len());
        for r in ranges {
            out.push(self.get_range(key, Some(r.clone()), opts).await?.data);
        }
        Ok(out)
    }

    /// Finds out, without fetching data, whether this backend answers multi-range
    /// GETs, asking about `ranges` (at least two, inside the object) of `key`: after
    /// it, [`Capabilities::multi_range`] is no longer `Probe` (unless the request
    /// failed, which is returned). Only a backend that reports `Probe` has anything to
    /// find out; the rest answer at once.
    async fn probe_multi_range(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<()> {
        let _ = (key, ranges, opts);
        Ok(())
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta>;

    /// Deletes `key`; deleting a missing key succeeds (S3 semantics).
    async fn delete(&self, key: &str) -> BackendResult<()>;

    /// Deletes many keys; returns the keys that failed with their errors. This default,
    /// for stores without a batch delete (GCS, Azure), sends up to
    /// [`DELETE_MANY_IN_FLIGHT`] single deletes at once: a directory's worth of keys
    /// costs a few round trips of wall time, not one per key.
    async fn delete_many(&self, keys: &[String]) -> BackendResult<Vec<(String, BackendError)>> {
        use futures::StreamExt;
        // The futures are built first: a `map` closure inside an `async_trait` body is
        // not general enough over the key's lifetime.
        let futs: Vec<_> = keys.iter().map(|k| async move { (k, self.delete(k).await) }).collect();
        let results: Vec<(&String, BackendResult<()>)> =
            futures::stream::iter(futs).buffer_unordered(DELETE_MANY_IN_FLIGHT).collect().await;
        Ok(results.into_iter().filter_map(|(k, r)| r.err().map(|e| (k.clone(), e))).collect())
    }

    /// Server-side copy. `metadata: Some` replaces content type and user metadata,
    /// `None` keeps the source's.
    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta>;

    /// Native rename; only called when `Capabilities::rename` is true. With
    /// `Capabilities::native_dirs`, marker keys (`dir/`) rename whole directories.
    async fn rename(&self, src: &str, dst: &str) -> BackendResult<()> {
        let _ = (src, dst);
        Err(BackendError::not_supported("rename"))
    }
}

/// Multipart uploads, a trait of its own (object_store-style): every [`StorageBackend`]
/// has one, written beside the backend's upload code (`s3/multipart.rs`,
/// `marker_multipart.rs`, the store's uploads), and callers reach it through the
/// backend (`StorageBackend: MultipartStore`).
#[async_trait]
pub trait MultipartStore: Send + Sync + 'static {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String>;

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart>;

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta>;

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()>;

    /// The parts stored so far in an upload, ascending by number; what lets an
    /// interrupted upload resume without re-sending them. Backends that cannot list
    /// parts keep this default, and their callers start over instead.
    async fn list_parts(&self, key: &str, upload_id: &str) -> BackendResult<Vec<CompletedPart>> {
        let _ = (key, upload_id);
        Err(BackendError::not_supported("list_parts"))
    }

    /// The bytes of `part` of an unfinished upload, exactly as they were stored
    /// under `part.etag` (a part re-sent since then is a different one: error).
    /// Only backends whose `Capabilities::readable_upload_parts` is true have it;
    /// a streaming file handle uses it to rewrite bytes it no longer holds.
    async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
        let _ = (key, upload_id, part);
        Err(BackendError::not_supported("reading back a part of an unfinished upload"))
    }

    /// In-progress multipart uploads whose key starts with `prefix`.
    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>>;

    /// Aborts every in-progress upload under `prefix`; returns how many were aborted.
    async fn abort_multipart_under(&self, prefix: &str) -> BackendResult<usize> {
        let uploads = self.list_multipart(prefix).await?;
        let n = uploads.len();
        for u in uploads {
            match self.abort_multipart(&u.key, &u.upload_id).await {
                Ok(()) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }
}
