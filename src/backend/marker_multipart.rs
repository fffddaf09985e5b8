//! Multipart uploads for stores that have no upload objects of their own (GCS,
//! Azure): one implementation of the marker-based design, parameterised by
//! [`MarkerStore`] for what truly differs between the stores (issue 16).
//!
//! The design:
//! - `create` writes a marker object (an [`UploadMarker`]: destination key,
//!   content type, user metadata and write conditions) whose metadata names
//!   the destination key, so that `list` needs one listing and no reads. The
//!   upload id is a random UUID (32 hex digits), so a handle is just (key, id)
//!   and any process can upload parts, complete or abort.
//! - `upload_part` checks the limits, then that the marker is alive and names
//!   the key (a HEAD: an aborted upload takes no more parts), then stores the
//!   part the store's way ([`MarkerStore::store_part`]).
//! - `complete` reads the marker (its body holds the options the object is
//!   written with), sorts and checks the named parts, and lets the store
//!   combine them into the destination ([`MarkerStore::combine`]: GCS compose,
//!   Azure Put Block List) so the object appears whole or not at all. On
//!   success, or when the write condition failed (the upload is over either
//!   way, like S3), what the parts left behind and the marker are deleted.
//! - `abort` deletes the same; `list_parts` asks the store
//!   ([`MarkerStore::stored_parts`]) after checking the marker.
//!
//! Where markers and parts live, how they are hidden from listings and how the
//! key is written into metadata is each store's business (its `MarkerStore`).

use async_trait::async_trait;
use bytes::Bytes;

use super::part_rules;
use super::upload_marker::UploadMarker;
use super::*;
use crate::object::ErrorKind;

/// Keys under this prefix (at the bucket or container root) hold in-flight
/// multipart uploads: markers, and parts where the store keeps them as objects.
pub const RESERVED_PREFIX: &str = ".bucketfs-multipart/";

/// Whether `key` (or a listing's common prefix) is upload bookkeeping, hidden from listings.
pub(crate) fn hidden(key: &str) -> bool {
    key.starts_with(RESERVED_PREFIX)
}

/// One upload: its destination key and its id.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Upload<'a> {
    pub key: &'a str,
    pub id: &'a str,
}

/// What a completion writes: the upload, its parts (sorted, checked) and the
/// options the marker kept.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Completion<'a> {
    pub up: Upload<'a>,
    pub parts: &'a [CompletedPart],
    pub opts: &'a PutOptions,
}

/// What the stores using marker-based multipart do differently.
#[async_trait]
pub(crate) trait MarkerStore: StorageBackend {
    /// Store name in error messages ("GCS").
    const NAME: &'static str;
    /// Highest part number `upload_part` takes.
    const MAX_PART_NUMBER: u32;
    /// Largest part `upload_part` takes.
    const MAX_PART: u64;
    /// Most parts one completion can combine.
    const MAX_PARTS: u32;
    /// Metadata name on the marker that names the destination key.
    const KEY_META: &'static str;
    /// The prefix every marker (and nothing else) is under: `marker_key(id)` is this plus the id.
    const MARKERS: &'static str;

    /// The metadata value naming `key` (identity unless the store's values are restricted).
    fn encode_owner(key: &str) -> String {
        key.to_owned()
    }

    fn decode_owner(value: &str) -> Option<String> {
        Some(value.to_owned())
    }

    /// Writes marker `name` with `body`, and `owner` (an `encode_owner` value) as its `KEY_META` metadata.
    async fn write_marker(&self, name: &str, body: Bytes, owner: &str) -> BackendResult<()>;

    /// Every hidden object under `prefix` (all pages), with its metadata.
    async fn list_hidden(&self, prefix: &str) -> BackendResult<Vec<ObjectMeta>>;

    /// Stores part `n` of the upload; the etag it returns is what
    /// `combine` needs to name exactly this part.
    async fn store_part(&self, up: Upload<'_>, part_number: u32, data: Bytes)
        -> BackendResult<CompletedPart>;

    /// The parts of the upload stored so far (any order).
    async fn stored_parts(&self, up: Upload<'_>) -> BackendResult<Vec<CompletedPart>>;

    /// Writes the destination from the completion's parts (sorted, checked) with its options, atomically.
    async fn combine(&self, c: Completion<'_>) -> BackendResult<ObjectMeta>;

    /// Deletes what the parts of upload `id` left in the store.
    async fn drop_parts(&self, id: &str) -> BackendResult<()>;
}

/// Writes `impl MultipartStore` for a [`MarkerStore`]: every call goes to this
/// module's functions, so GCS and Azure state it in one line each. Methods the
/// store adds (GCS's `read_part`) go in the braces.
macro_rules! marker_multipart_store {
    ($ty:ty { $($extra:tt)* }) => {
        #[async_trait::async_trait]
        impl $crate::backend::MultipartStore for $ty {
            async fn create_multipart(
                &self,
                key: &str,
                opts: &$crate::backend::PutOptions,
            ) -> $crate::backend::BackendResult<String> {
                $crate::backend::marker_multipart::create(self, key, opts).await
            }
            async fn upload_part(
                &self,
                key: &str,
                upload_id: &str,
                part_number: u32,
                data: bytes::Bytes,
            ) -> $crate::backend::BackendResult<$crate::backend::CompletedPart> {
                $crate::backend::marker_multipart::upload_part(self, key, upload_id, part_number, data).await
            }
            async fn complete_multipart(
                &self,
                key: &str,
                upload_id: &str,
                parts: &[$crate::backend::CompletedPart],
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                $crate::backend::marker_multipart::complete(self, key, upload_id, parts).await
            }
            async fn abort_multipart(&self, key: &str, upload_id: &str) -> $crate::backend::BackendResult<()> {
                $crate::backend::marker_multipart::abort(self, key, upload_id).await
            }
            async fn list_parts(
                &self,
                key: &str,
                upload_id: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::CompletedPart>> {
                $crate::backend::marker_multipart::list_parts(self, key, upload_id).await
            }
            async fn list_multipart(
                &self,
                prefix: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::MultipartUploadInfo>> {
                $crate::backend::marker_multipart::list(self, prefix).await
            }
            $($extra)*
        }
    };
}

pub(crate) use marker_multipart_store;

fn marker_key<S: MarkerStore>(id: &str) -> String {
    format!("{}{id}", S::MARKERS)
}

/// Ids are made by `create` (a simple UUID); anything else names no upload and
/// must not reach an object name.
fn check_id(id: &str) -> BackendResult<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BackendError::no_such_upload(format!("invalid upload id {id:?}")));
    }
    Ok(())
}

pub(crate) async fn create<S: MarkerStore>(s: &S, key: &str, opts: &PutOptions) -> BackendResult<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = UploadMarker::new(key, opts).to_bytes();
    s.write_marker(&marker_key::<S>(&id), body, &S::encode_owner(key)).await?;
    Ok(id)
}

/// The upload's marker, read and checked to belong to `key`.
pub(crate) async fn marker<S: MarkerStore>(s: &S, key: &str, id: &str) -> BackendResult<UploadMarker> {
    check_id(id)?;
    let read = s.get_range(&marker_key::<S>(id), None, &GetOptions::default()).await.map(|g| g.data);
    UploadMarker::from_read(id, key, read)
}

/// The upload is alive and for `key`: a HEAD of its marker is enough, the key is in its metadata.
async fn check_alive<S: MarkerStore>(s: &S, key: &str, id: &str) -> BackendResult<()> {
    check_id(id)?;
    let head = match s.head(&marker_key::<S>(id)).await {
        Ok(m) => m,
        Err(BackendError { kind: ErrorKind::NotFound, .. }) => return Err(BackendError::no_such_upload(id)),
        Err(e) => return Err(e),
    };
    let owner = head.user_metadata.get(S::KEY_META).and_then(|v| S::decode_owner(v));
    if owner.as_deref() != Some(key) {
        return Err(BackendError::no_such_upload(format!("upload {id} is not for key {key:?}")));
    }
    Ok(())
}

pub(crate) async fn upload_part<S: MarkerStore>(
    s: &S,
    key: &str,
    id: &str,
    part_number: u32,
    data: Bytes,
) -> BackendResult<CompletedPart> {
    part_rules::check_part(part_number, data.len() as u64, S::MAX_PART_NUMBER, S::MAX_PART)?;
    check_alive(s, key, id).await?;
    s.store_part(Upload { key, id }, part_number, data).await
}

pub(crate) async fn complete<S: MarkerStore>(
    s: &S,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
) -> BackendResult<ObjectMeta> {
    let opts = marker(s, key, id).await?.put_options();
    if parts.len() > S::MAX_PARTS as usize {
        return Err(BackendError::invalid_argument(format!(
            "complete {key:?}: {} parts, {} combines at most {}",
            parts.len(),
            S::NAME,
            S::MAX_PARTS
        )));
    }
    let sorted = part_rules::sorted_parts(key, parts)?;
    let res = s.combine(Completion { up: Upload { key, id }, parts: &sorted, opts: &opts }).await;
    if matches!(res, Ok(_) | Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })) {
        // Written, or the write condition failed: the upload is over either way (like S3).
        end(s, id).await;
    }
    res
}

/// Deletes the upload's parts, then its marker. Failures are logged, not
/// returned: the object is complete, and `abort_multipart_under` finds what is
/// left (the marker is kept while parts remain, so the upload stays findable).
async fn end<S: MarkerStore>(s: &S, id: &str) {
    if let Err(e) = s.drop_parts(id).await {
        tracing::warn!(target: "bucketfs::backend", store = S::NAME, upload = id, error = %e, "cannot delete the parts of an upload");
        return;
    }
    if let Err(e) = s.delete(&marker_key::<S>(id)).await {
        tracing::warn!(target: "bucketfs::backend", store = S::NAME, upload = id, error = %e, "cannot delete an upload's marker");
    }
}

/// The parts stored so far, ascending by number.
pub(crate) async fn list_parts<S: MarkerStore>(
    s: &S,
    key: &str,
    id: &str,
) -> BackendResult<Vec<CompletedPart>> {
    marker(s, key, id).await?;
    let mut parts = s.stored_parts(Upload { key, id }).await?;
    parts.sort_by_key(|p| p.part_number);
    Ok(parts)
}

pub(crate) async fn abort<S: MarkerStore>(s: &S, key: &str, id: &str) -> BackendResult<()> {
    marker(s, key, id).await?;
    s.drop_parts(id).await?;
    s.delete(&marker_key::<S>(id)).await
}

/// The unfinished uploads to keys under `prefix`, by key then age.
pub(crate) async fn list<S: MarkerStore>(s: &S, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
    let mut out: Vec<MultipartUploadInfo> = s
        .list_hidden(S::MARKERS)
        .await?
        .into_iter()
        .filter_map(|m| {
            let key = S::decode_owner(m.user_metadata.get(S::KEY_META)?)?;
            let upload_id = m.key.strip_prefix(S::MARKERS)?.to_owned();
            key.starts_with(prefix).then_some(MultipartUploadInfo {
                key,
                upload_id,
                initiated: m.last_modified,
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
    Ok(out)
}
