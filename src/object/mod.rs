//! The object model shared by every layer: an object's metadata, listing pages,
//! read and write options, multipart parts, and the error type.
//!
//! This is a leaf: it imports nothing from the rest of the crate, so both the
//! backends and the embedded store (which `backend/local.rs` adapts) can use it
//! without the store depending on the backend layer above it.
//! `crate::backend` re-exports everything here, so callers above the backend
//! layer may keep naming `crate::backend::ObjectMeta`; code under `src/store`
//! must import from here (`scripts/module-graph.sh` checks it).

mod error;

use std::collections::BTreeMap;
use std::time::SystemTime;

use bytes::Bytes;

pub use error::{BackendError, BackendResult, ErrorKind};

/// Metadata of one stored object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub key: String,
    pub size: u64,
    /// Opaque version tag, without surrounding quotes.
    pub etag: String,
    pub last_modified: SystemTime,
    pub content_type: Option<String>,
    /// User metadata (S3 `x-amz-meta-*`), names lower-case without the prefix.
    pub user_metadata: BTreeMap<String, String>,
}

/// One page of a listing request.
#[derive(Clone, Debug, Default)]
pub struct ListRequest {
    pub prefix: String,
    /// Usually `Some("/")`; `None` lists recursively.
    pub delimiter: Option<String>,
    /// Opaque token from a previous page's `next_continuation`.
    pub continuation: Option<String>,
    /// Upper bound on `objects.len() + common_prefixes.len()`; 0 means backend default (1000).
    pub max_keys: usize,
}

impl ListRequest {
    /// One entry of the root: the cheapest listing that proves a bucket answers and
    /// our credentials may read it (`check_bucket` of the stores without a HEAD of
    /// the bucket that means as much).
    pub fn probe() -> Self {
        ListRequest { delimiter: Some("/".into()), max_keys: 1, ..Default::default() }
    }
}

#[derive(Clone, Debug, Default)]
pub struct ListPage {
    /// Objects directly matching, in lexicographic key order.
    pub objects: Vec<ObjectMeta>,
    /// Rolled-up prefixes (each ends with the delimiter), in lexicographic order.
    pub common_prefixes: Vec<String>,
    /// Present when more results follow.
    pub next_continuation: Option<String>,
}

/// Options of a write (`put`, `create_multipart`, `copy`).
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    /// Fail with `PreconditionFailed` if the key already exists (`If-None-Match: *`).
    pub if_none_match_any: bool,
    /// Fail with `PreconditionFailed` unless the current ETag equals this.
    pub if_match: Option<String>,
}

impl PutOptions {
    /// The content type and user metadata alone, for a write the conditions must not
    /// apply to (a temporary object written before the conditional step).
    pub fn without_conditions(&self) -> PutOptions {
        PutOptions {
            content_type: self.content_type.clone(),
            user_metadata: self.user_metadata.clone(),
            ..Default::default()
        }
    }
}

/// Options of a read.
#[derive(Clone, Debug, Default)]
pub struct GetOptions {
    /// Fail with `PreconditionFailed` unless the object's ETag equals this; used to pin
    /// a file's version across the many ranged reads of one open file.
    pub if_match: Option<String>,
}

/// Result of a single-range read.
#[derive(Clone, Debug)]
pub struct GetResult {
    /// The object's metadata as the answer reports it: `etag` always; `size`
    /// (of the whole object) and `last_modified` only where the server sends
    /// them with the data (0 / the epoch otherwise; `head` has them all).
    pub meta: ObjectMeta,
    /// The requested bytes; shorter than asked only when the range passed the end of the object.
    pub data: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompletedPart {
    pub part_number: u32,
    pub etag: String,
    pub size: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipartUploadInfo {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}
