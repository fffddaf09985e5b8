//! Multipart uploads on Azure: Put Block + Put Block List on the destination
//! blob, plus a marker blob so that uploads can be found and ended from any
//! process.
//!
//! - `create_multipart` writes the marker `.bucketfs-multipart/<id>` (hidden
//!   from listings): its metadata names the destination key (base64, since
//!   metadata values are ASCII), its body holds the content type, user metadata
//!   and write conditions. The id is a random UUID; a handle is (key, id).
//! - `upload_part` checks the marker (an aborted upload takes no more parts)
//!   and sends Put Block with block id `base64("<id>-<part number, 5 digits>")`:
//!   the same length for every block of a blob (Azure requires it), unique per
//!   upload and part, and recomputable anywhere. Uncommitted blocks are
//!   invisible: the blob (or its previous version) is unchanged.
//! - `complete_multipart` commits the named blocks in part order with Put
//!   Block List, carrying content type, metadata and `If-Match` /
//!   `If-None-Match: *`; Azure discards the blob's uncommitted blocks that
//!   the list does not name. Then the marker is deleted.
//! - `abort_multipart` deletes the marker. Azure has no call to drop
//!   uncommitted blocks; it garbage-collects them after a week or at the next
//!   commit of that blob. Two uploads to the same key share the blob's
//!   uncommitted blocks, so completing one discards the other's parts (its
//!   completion then fails with `InvalidArgument`).
//!
//! Limits: 50,000 blocks per blob, 4000 MiB per block.

use base64::Engine;
use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;

use super::{AzureBackend, Req, RESERVED_PREFIX};
use crate::backend::part_rules;
use crate::backend::upload_marker::UploadMarker;
use crate::backend::*;
use crate::object::ErrorKind;

pub const MAX_BLOCKS: u32 = 50_000;
pub const MAX_BLOCK: u64 = 4000 * 1024 * 1024;
/// Marker metadata naming the destination key (base64).
const KEY_META: &str = "bucketfs_upload_key";

fn marker_key(id: &str) -> String {
    format!("{RESERVED_PREFIX}{id}")
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn block_id(id: &str, part: u32) -> String {
    b64().encode(format!("{id}-{part:05}"))
}

fn check_id(id: &str) -> BackendResult<()> {
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(BackendError::no_such_upload(format!("invalid upload id {id:?}")));
    }
    Ok(())
}

pub(super) async fn create(b: &AzureBackend, key: &str, opts: &PutOptions) -> BackendResult<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = UploadMarker::new(key, opts).to_bytes();
    let mk = marker_key(&id);
    let r = Req::new(Method::PUT, Some(&mk))
        .h("x-ms-blob-type", "BlockBlob")
        .h(format!("x-ms-meta-{KEY_META}"), b64().encode(key))
        .body(body);
    b.call("create_multipart", key, r).await?;
    Ok(id)
}

/// The upload's marker, checked to belong to `key`.
async fn marker(b: &AzureBackend, key: &str, id: &str) -> BackendResult<UploadMarker> {
    check_id(id)?;
    let read = b.get_range_impl(&marker_key(id), None, &GetOptions::default()).await.map(|g| g.data);
    UploadMarker::from_read(id, key, read)
}

pub(super) async fn upload_part(
    b: &AzureBackend,
    key: &str,
    id: &str,
    part_number: u32,
    data: Bytes,
) -> BackendResult<CompletedPart> {
    let size = data.len() as u64;
    part_rules::check_part(part_number, size, MAX_BLOCKS, MAX_BLOCK)?;
    // HEAD is enough to know the upload is alive; the key check needs its metadata.
    check_id(id)?;
    let head = match b.head(&marker_key(id)).await {
        Ok(m) => m,
        Err(BackendError { kind: ErrorKind::NotFound, .. }) => return Err(BackendError::no_such_upload(id)),
        Err(e) => return Err(e),
    };
    let owner = head.user_metadata.get(KEY_META).and_then(|v| b64().decode(v).ok());
    if owner.as_deref() != Some(key.as_bytes()) {
        return Err(BackendError::no_such_upload(format!("upload {id} is not for key {key:?}")));
    }
    let bid = block_id(id, part_number);
    let r = Req::new(Method::PUT, Some(key)).q("comp", "block").q("blockid", bid.clone()).body(data);
    b.call("upload_part", key, r).await?;
    Ok(CompletedPart { part_number, etag: bid, size })
}

pub(super) async fn complete(
    b: &AzureBackend,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
) -> BackendResult<ObjectMeta> {
    let m = marker(b, key, id).await?;
    let sorted = part_rules::sorted_parts(key, parts)?;
    let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for p in &sorted {
        xml.push_str(&format!("<Latest>{}</Latest>", block_id(id, p.part_number)));
    }
    xml.push_str("</BlockList>");
    let opts = m.put_options();
    let r = Req::new(Method::PUT, Some(key)).q("comp", "blocklist").body(Bytes::from(xml));
    let r = b.write_headers(r, &opts, "x-ms-blob-content-type");
    let res = b.call("complete_multipart", key, r).await;
    if matches!(res, Ok(_) | Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })) {
        // Committed, or the write condition failed: the upload is over either way (like S3).
        if let Err(e) = b.delete(&marker_key(id)).await {
            tracing::warn!(target: super::TARGET, upload = id, error = %e, "cannot delete an upload's marker");
        }
    }
    res?;
    b.head(key).await
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct BlockList {
    #[serde(default)]
    uncommitted_blocks: Blocks,
}

#[derive(Deserialize, Default)]
struct Blocks {
    #[serde(rename = "Block", default)]
    blocks: Vec<Block>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Block {
    name: String,
    #[serde(default)]
    size: u64,
}

/// The parts stored so far: this upload's uncommitted blocks (Get Block List).
pub(super) async fn list_parts(b: &AzureBackend, key: &str, id: &str) -> BackendResult<Vec<CompletedPart>> {
    marker(b, key, id).await?;
    let r = Req::new(Method::GET, Some(key)).q("comp", "blocklist").q("blocklisttype", "uncommitted");
    let resp = match b.call("list_parts", key, r).await {
        Ok(r) => r,
        // no block uploaded yet (and no committed blob)
        Err(BackendError { kind: ErrorKind::NotFound, .. }) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let body = crate::backend::http::body(resp, b.ctx("list_parts", key)).await?;
    let list: BlockList = quick_xml::de::from_str(&String::from_utf8_lossy(&body)).map_err(|e| {
        BackendError::io(format!("list_parts {key:?}: unexpected block list: {e}")).with_source(e)
    })?;
    let own = format!("{id}-");
    let mut parts: Vec<CompletedPart> = list
        .uncommitted_blocks
        .blocks
        .into_iter()
        .filter_map(|blk| {
            let raw = String::from_utf8(b64().decode(&blk.name).ok()?).ok()?;
            let part_number = raw.strip_prefix(&own)?.parse().ok()?;
            Some(CompletedPart { part_number, etag: blk.name, size: blk.size })
        })
        .collect();
    parts.sort_by_key(|p| p.part_number);
    Ok(parts)
}

pub(super) async fn abort(b: &AzureBackend, key: &str, id: &str) -> BackendResult<()> {
    marker(b, key, id).await?;
    b.delete(&marker_key(id)).await
}

pub(super) async fn list(b: &AzureBackend, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
    let mut out = Vec::new();
    let mut req = ListRequest {
        prefix: RESERVED_PREFIX.to_owned(),
        delimiter: None,
        continuation: None,
        max_keys: 1000,
    };
    loop {
        let page = b.list_raw(&req, true).await?;
        for m in page.objects {
            let Some(key) = m.user_metadata.get(KEY_META).and_then(|v| b64().decode(v).ok()) else {
                continue;
            };
            let Ok(key) = String::from_utf8(key) else { continue };
            let Some(upload_id) = m.key.strip_prefix(RESERVED_PREFIX) else { continue };
            if key.starts_with(prefix) {
                out.push(MultipartUploadInfo {
                    key,
                    upload_id: upload_id.to_owned(),
                    initiated: m.last_modified,
                });
            }
        }
        match page.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    out.sort_by(|a, b| (&a.key, a.initiated).cmp(&(&b.key, b.initiated)));
    Ok(out)
}
