//! `local://` backend: the embedded erasure-coded store, in process.
//!
//! The store is synchronous (std::fs and per-drive threads); every call here
//! runs it on tokio's blocking pool so the filesystem's async tasks never block
//! on disk I/O. One `LocalBackend` serves one bucket of a shared `Arc<Store>`.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::{
    BackendError, BackendResult, Capabilities, CompletedPart, GetOptions, GetResult, ListPage, ListRequest,
    MultipartStore, MultipartUploadInfo, ObjectMeta, PutOptions, StorageBackend,
};
use crate::store::{Store, StoreError};

pub struct LocalBackend {
    store: Arc<Store>,
    bucket: String,
}

impl LocalBackend {
    pub fn new(store: Arc<Store>, bucket: &str) -> Self {
        LocalBackend { store, bucket: bucket.to_string() }
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Runs a store call on the blocking pool.
    async fn run<T, F>(&self, f: F) -> BackendResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let store = self.store.clone();
        let bucket = self.bucket.clone();
        // a cancelled call leaves the blocking work running: it keeps the caller's
        // memory reservation until its buffers are gone (crate::memory::covering)
        let memory = crate::memory::request_memory();
        tokio::task::spawn_blocking(move || {
            let res = f(&store, &bucket).map_err(to_backend);
            drop(memory);
            res
        })
        .await
        .map_err(|e| BackendError::other(format!("store task failed: {e}")).with_source(e))?
    }
}

/// Maps store errors onto the backend's error kinds. Errors that name only a
/// key or an id become that context; the others keep the store error as their
/// source (same message as before).
pub fn to_backend(e: StoreError) -> BackendError {
    BackendError::from(e)
}

impl From<StoreError> for BackendError {
    fn from(e: StoreError) -> Self {
        store_to_backend(e)
    }
}

fn store_to_backend(e: StoreError) -> BackendError {
    use crate::object::ErrorKind as K;
    match e {
        StoreError::NotFound { key, .. } => BackendError::not_found(key),
        StoreError::NoSuchBucket(b) => BackendError::no_such_bucket(b),
        StoreError::PreconditionFailed(m) => BackendError::precondition_failed(m),
        StoreError::InvalidKey { key, reason } => BackendError::invalid_key(&key, reason),
        StoreError::KeyTooLong { key, reason } => BackendError::name_too_long(&key, reason),
        StoreError::NoSuchUpload(id) => BackendError::no_such_upload(id),
        StoreError::EntityTooSmall(m) => BackendError::entity_too_small(m),
        StoreError::InvalidPart(m) | StoreError::InvalidArgument(m) => BackendError::invalid_argument(m),
        StoreError::InvalidBucketName { name, reason } => {
            BackendError::invalid_argument(format!("bucket {name:?}: {reason}"))
        }
        e @ StoreError::Quorum { .. } => BackendError::wrap(K::Unavailable, e),
        e @ StoreError::Locked { .. } => BackendError::wrap(K::Unavailable, e),
        StoreError::Corrupt(m) => BackendError::corrupt(m),
        e if e.is_quota() => BackendError::wrap(K::QuotaExceeded, e),
        e if e.is_no_space() => BackendError::wrap(K::NoSpace, e),
        e @ StoreError::Io { .. } => BackendError::wrap(K::Io, e),
        e => BackendError::wrap(K::Other, e),
    }
}

#[async_trait]
impl StorageBackend for LocalBackend {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "local",
            multi_range: super::MultiRangeMode::Native,
            parallel_multipart: true,
            min_part_size: crate::store::multipart::MIN_PART_SIZE,
            max_part_size: crate::store::multipart::MAX_PART_SIZE,
            max_parts: crate::store::multipart::MAX_PARTS,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: true,
            list_attrs: true,
            // the part files of an open upload decode like an object's part
            readable_upload_parts: true,
        }
    }

    async fn check_bucket(&self) -> BackendResult<()> {
        self.run(|s, b| if s.bucket_exists(b)? { Ok(()) } else { Err(StoreError::NoSuchBucket(b.into())) })
            .await
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let key = key.to_string();
        self.run(move |s, b| s.head_object(b, &key)).await
    }

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let req = req.clone();
        self.run(move |s, b| s.list_objects(b, &req)).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        let (key, opts) = (key.to_string(), opts.clone());
        let (meta, data) = self.run(move |s, b| s.get_object(b, &key, range, &opts)).await?;
        Ok(GetResult { meta, data: crate::buffers::freeze(data) })
    }

    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        let (key, opts, ranges) = (key.to_string(), opts.clone(), ranges.to_vec());
        let (_, data) = self.run(move |s, b| s.get_object_ranges(b, &key, &ranges, &opts)).await?;
        Ok(data.into_iter().map(crate::buffers::freeze).collect())
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let (key, opts) = (key.to_string(), opts.clone());
        self.run(move |s, b| s.put_object(b, &key, &data, &opts)).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let key = key.to_string();
        self.run(move |s, b| s.delete_object(b, &key)).await
    }

    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        let (src, dst, md) = (src.to_string(), dst.to_string(), metadata.cloned());
        self.run(move |s, b| s.copy_object(b, &src, &dst, md.as_ref())).await
    }
}

#[async_trait]
impl MultipartStore for LocalBackend {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
        let (key, opts) = (key.to_string(), opts.clone());
        self.run(move |s, b| s.create_multipart_upload(b, &key, &opts)).await
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let (key, id) = (key.to_string(), upload_id.to_string());
        self.run(move |s, b| s.put_part(b, &key, &id, part_number, &mut &data[..])).await
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta> {
        let (key, id, parts) = (key.to_string(), upload_id.to_string(), parts.to_vec());
        self.run(move |s, b| s.complete_multipart_upload(b, &key, &id, &parts)).await
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
        let (key, id) = (key.to_string(), upload_id.to_string());
        self.run(move |s, b| s.abort_multipart_upload(b, &key, &id)).await
    }

    async fn list_parts(&self, key: &str, upload_id: &str) -> BackendResult<Vec<CompletedPart>> {
        let (key, id) = (key.to_string(), upload_id.to_string());
        self.run(move |s, b| s.list_parts(b, &key, &id)).await
    }

    async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
        let (key, id, part) = (key.to_string(), upload_id.to_string(), part.clone());
        self.run(move |s, b| s.read_part(b, &key, &id, &part)).await.map(Bytes::from)
    }

    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let prefix = prefix.to_string();
        self.run(move |s, b| s.list_multipart_uploads(b, &prefix)).await
    }

    async fn abort_multipart_under(&self, prefix: &str) -> BackendResult<usize> {
        let prefix = prefix.to_string();
        self.run(move |s, b| s.abort_uploads_under(b, &prefix)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::ErrorKind;
    use crate::store::StoreConfig;

    #[test]
    fn error_mapping() {
        let q = StoreError::Quorum { kind: "read", got: 1, need: 2, detail: String::new() };
        assert!(matches!(to_backend(q), BackendError { kind: ErrorKind::Unavailable, .. }));
        assert!(matches!(
            to_backend(StoreError::Corrupt("x".into())),
            BackendError { kind: ErrorKind::Corrupt, .. }
        ));
        assert!(matches!(
            to_backend(StoreError::NoSpace("x".into())),
            BackendError { kind: ErrorKind::NoSpace, .. }
        ));
        let enospc =
            StoreError::io(std::path::Path::new("/d"), std::io::Error::from_raw_os_error(libc::ENOSPC));
        assert!(matches!(to_backend(enospc), BackendError { kind: ErrorKind::NoSpace, .. }));
        let edquot =
            StoreError::io(std::path::Path::new("/d"), std::io::Error::from_raw_os_error(libc::EDQUOT));
        let quota = to_backend(edquot);
        assert_eq!(quota.errno(), libc::EDQUOT, "{quota}");
        let lost = crate::store::set::quorum_error(
            "write",
            1,
            3,
            Some(StoreError::io(std::path::Path::new("/d"), std::io::Error::from_raw_os_error(libc::EDQUOT))),
        );
        assert_eq!(to_backend(lost).errno(), libc::EDQUOT);
        let nf = StoreError::NotFound { bucket: "b".into(), key: "k".into() };
        assert!(matches!(to_backend(nf), e if e.kind == ErrorKind::NotFound && e.context() == "k"));
        assert!(matches!(
            to_backend(StoreError::EntityTooSmall("p".into())),
            BackendError { kind: ErrorKind::EntityTooSmall, .. }
        ));
        assert!(matches!(
            to_backend(StoreError::NoSuchUpload("u".into())),
            BackendError { kind: ErrorKind::NoSuchUpload, .. }
        ));
        assert!(matches!(
            to_backend(StoreError::NoSuchBucket("b".into())),
            BackendError { kind: ErrorKind::NoSuchBucket, .. }
        ));
        let long =
            StoreError::KeyTooLong { key: "k".into(), reason: "key too long (over 1024 bytes)".into() };
        assert_eq!(to_backend(long).errno(), libc::ENAMETOOLONG);
        // the kind decides, not the wording: an invalid key whose reason says "long" is EINVAL
        let worded = StoreError::InvalidKey { key: "k".into(), reason: "a long story".into() };
        assert_eq!(to_backend(worded).errno(), libc::EINVAL);
        // errors with more than a key keep the store error as their source
        let q = to_backend(StoreError::Quorum { kind: "read", got: 1, need: 2, detail: String::new() });
        let src = std::error::Error::source(&q).and_then(|s| s.downcast_ref::<StoreError>());
        assert!(matches!(src, Some(StoreError::Quorum { .. })), "{q:?}");
    }

    #[tokio::test]
    async fn backend_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let drives = (0..4).map(|i| dir.path().join(format!("d{i}"))).collect();
        let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
        let missing = LocalBackend::new(store.clone(), "nobucket");
        assert!(matches!(
            missing.check_bucket().await,
            Err(BackendError { kind: ErrorKind::NoSuchBucket, .. })
        ));
        store.make_bucket("bkt1").unwrap();
        let be = LocalBackend::new(store, "bkt1");
        be.check_bucket().await.unwrap();
        assert_eq!(be.capabilities().name, "local");
        let m = be.put("x/y", Bytes::from_static(b"hello world"), &PutOptions::default()).await.unwrap();
        assert_eq!(m.size, 11);
        let r = be.get_ranges("x/y", &[0..5, 6..11, 9..100], &GetOptions::default()).await.unwrap();
        assert_eq!(
            r,
            vec![Bytes::from_static(b"hello"), Bytes::from_static(b"world"), Bytes::from_static(b"ld")]
        );
        assert!(matches!(be.head("nope").await, Err(BackendError { kind: ErrorKind::NotFound, .. })));
        assert!(matches!(be.head("../x").await, Err(BackendError { kind: ErrorKind::InvalidKey, .. })));
        let cond = PutOptions { if_none_match_any: true, ..Default::default() };
        assert!(matches!(
            be.put("x/y", Bytes::new(), &cond).await,
            Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })
        ));
        let stale = GetOptions { if_match: Some("nope".into()) };
        assert!(matches!(
            be.get_range("x/y", None, &stale).await,
            Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })
        ));
        assert!(matches!(
            be.abort_multipart("k", "0123").await,
            Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })
        ));
        be.delete("x/y").await.unwrap();
        be.delete("x/y").await.unwrap();
        assert!(be.list(&ListRequest::default()).await.unwrap().objects.is_empty());
    }
}
