//! Multipart uploads on GCS, which has none: parts are temporary objects and
//! completion is `compose`.
//!
//! Layout, at the bucket root under [`RESERVED_PREFIX`] (hidden from listings):
//! - `uploads/<id>`: the upload's marker. Its metadata names the destination
//!   key (so `list_multipart` needs one listing, no reads); its body is the
//!   JSON of the content type, user metadata and write conditions given at
//!   `create_multipart`. The upload id is a random UUID, so a handle is just
//!   (key, id) and any process can upload parts, complete or abort.
//! - `parts/<id>/<part number, 5 digits>`: one object per part; re-uploading
//!   a part replaces it. The part's generation is its `CompletedPart::etag`, and
//!   completion composes exactly those generations. Until then a part can be
//!   read back at its generation (`read_part`), which S3 and Azure cannot do.
//!
//! Completion composes at most 32 sources per request (GCS's limit): more
//! parts are composed in rounds of intermediates under `parts/<id>/c<round>-…`.
//! The final compose writes the destination with the upload's content type,
//! metadata and precondition, so the object appears whole or not at all.
//! Then every object under `parts/<id>/` (named or not) and the marker are
//! deleted. Abort deletes the same. `upload_part` and `complete` check the
//! marker first, so an aborted upload takes no more parts.

use std::collections::BTreeMap;

use bytes::Bytes;
use reqwest::Method;

use super::{GcsBackend, GcsObject, RESERVED_PREFIX};
use crate::backend::http;
use crate::backend::part_rules;
use crate::backend::upload_marker::UploadMarker;
use crate::backend::*;
use crate::object::ErrorKind;

/// Sources per compose request (a GCS limit).
const COMPOSE_FANIN: usize = 32;
/// A composite object has at most 1024 components (a GCS limit), so an upload has at most 1024 parts.
pub const MAX_PARTS: u32 = 1024;
/// Part numbers, like S3's.
const MAX_PART_NUMBER: u32 = 10_000;
const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Marker metadata naming the destination key.
const KEY_META: &str = "bucketfs-upload-key";

fn marker_key(id: &str) -> String {
    format!("{RESERVED_PREFIX}uploads/{id}")
}

fn parts_prefix(id: &str) -> String {
    format!("{RESERVED_PREFIX}parts/{id}/")
}

fn check_id(id: &str) -> BackendResult<()> {
    if id.is_empty() || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err(BackendError::no_such_upload(format!("invalid upload id {id:?}")));
    }
    Ok(())
}

pub(super) async fn create(b: &GcsBackend, key: &str, opts: &PutOptions) -> BackendResult<String> {
    let id = uuid::Uuid::new_v4().simple().to_string();
    let body = UploadMarker::new(key, opts).to_bytes();
    let meta = BTreeMap::from([(KEY_META.to_owned(), key.to_owned())]);
    b.upload("create_multipart", &marker_key(&id), body, Some("application/json"), &meta, None).await?;
    Ok(id)
}

/// The upload's marker, checked to belong to `key`.
async fn marker(b: &GcsBackend, key: &str, id: &str) -> BackendResult<UploadMarker> {
    check_id(id)?;
    let read = b.get_range_impl(&marker_key(id), None, &GetOptions::default()).await.map(|g| g.data);
    UploadMarker::from_read(id, key, read)
}

pub(super) async fn upload_part(
    b: &GcsBackend,
    key: &str,
    id: &str,
    part_number: u32,
    data: Bytes,
) -> BackendResult<CompletedPart> {
    let size = data.len() as u64;
    part_rules::check_part(part_number, size, MAX_PART_NUMBER, MAX_PART)?;
    marker(b, key, id).await?;
    let name = format!("{}{part_number:05}", parts_prefix(id));
    let meta = b.upload("upload_part", &name, data, None, &BTreeMap::new(), None).await?;
    Ok(CompletedPart { part_number, etag: meta.etag, size })
}

/// Part `part` as uploaded: its object read at the generation that is its etag, so
/// that a part re-sent since (a new generation) is never mistaken for it.
pub(super) async fn read_part(
    b: &GcsBackend,
    key: &str,
    id: &str,
    part: &CompletedPart,
) -> BackendResult<Bytes> {
    marker(b, key, id).await?;
    let name = format!("{}{:05}", parts_prefix(id), part.part_number);
    let pinned = GetOptions { if_match: Some(part.etag.clone()) };
    let data = b.get_range_impl(&name, None, &pinned).await?.data;
    if data.len() as u64 != part.size {
        return Err(BackendError::io(format!(
            "read_part {key:?}: part {} is {} bytes, {} were uploaded",
            part.part_number,
            data.len(),
            part.size
        )));
    }
    Ok(data)
}

/// One compose request of `sources` (name, generation) into `dst`.
async fn compose(
    b: &GcsBackend,
    dst: &str,
    sources: &[(String, String)],
    destination: serde_json::Value,
    generation_match: Option<&str>,
) -> BackendResult<ObjectMeta> {
    let sources: Vec<serde_json::Value> = sources
        .iter()
        .map(|(name, generation)| {
            if generation.is_empty() {
                serde_json::json!({ "name": name })
            } else {
                serde_json::json!({ "name": name, "objectPreconditions": { "ifGenerationMatch": generation } })
            }
        })
        .collect();
    let body =
        Bytes::from(serde_json::json!({ "sourceObjects": sources, "destination": destination }).to_string());
    let q = http::query(&[("ifGenerationMatch", generation_match)]);
    let url = format!("{}/compose{}{q}", b.object_url(dst), if q.is_empty() { "" } else { "?" });
    let r = b
        .call_raw("compose", dst, Method::POST, &url, |rb| {
            rb.header("content-type", "application/json").body(body.clone())
        })
        .await?;
    match r {
        Ok(r) => Ok(b.json::<GcsObject>(r, "compose", dst).await?.into_meta()),
        // A source is missing: the caller named a part that was never uploaded.
        Err((404, msg)) => Err(BackendError::invalid_argument(format!(
            "complete {dst:?}: a named part does not exist ({msg})"
        ))),
        Err((status, msg)) => Err(http::classify(status, "", &msg, b.ctx("compose", dst))),
    }
}

pub(super) async fn complete(
    b: &GcsBackend,
    key: &str,
    id: &str,
    parts: &[CompletedPart],
) -> BackendResult<ObjectMeta> {
    let m = marker(b, key, id).await?.put_options();
    if parts.len() > MAX_PARTS as usize {
        return Err(BackendError::invalid_argument(format!(
            "complete {key:?}: {} parts, GCS composes at most {MAX_PARTS}",
            parts.len()
        )));
    }
    let sorted = part_rules::sorted_parts(key, parts)?;
    let prefix = parts_prefix(id);
    let mut sources: Vec<(String, String)> =
        sorted.iter().map(|p| (format!("{prefix}{:05}", p.part_number), p.etag.clone())).collect();
    // Rounds of intermediates until one compose can take them all.
    let mut round = 0;
    while sources.len() > COMPOSE_FANIN {
        round += 1;
        let mut next = Vec::new();
        for (i, chunk) in sources.chunks(COMPOSE_FANIN).enumerate() {
            let name = format!("{prefix}c{round}-{i:05}");
            let meta = compose(b, &name, chunk, serde_json::json!({}), None).await?;
            next.push((name, meta.etag));
        }
        sources = next;
    }
    let mut destination = serde_json::json!({});
    if let Some(ct) = &m.content_type {
        destination["contentType"] = ct.clone().into();
    }
    if !m.user_metadata.is_empty() {
        destination["metadata"] = serde_json::to_value(&m.user_metadata).unwrap_or_default();
    }
    let generation = if m.if_none_match_any { Some("0") } else { m.if_match.as_deref() };
    let meta = compose(b, key, &sources, destination, generation).await;
    if matches!(meta, Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })) {
        // The write condition failed: the upload is over either way (like S3).
        cleanup(b, id).await;
    }
    let meta = meta?;
    cleanup(b, id).await;
    Ok(meta)
}

/// Deletes the parts (named or not), intermediates and the marker. Failures are
/// logged, not returned: the object is complete, and `abort_multipart_under`
/// finds what is left.
async fn cleanup(b: &GcsBackend, id: &str) {
    let mut keys = match list_all(b, &parts_prefix(id)).await {
        Ok(objs) => objs.into_iter().map(|o| o.key).collect::<Vec<_>>(),
        Err(e) => {
            tracing::warn!(target: super::TARGET, upload = id, error = %e, "cannot list the parts of an upload to delete them");
            Vec::new()
        }
    };
    let failed = b.delete_parallel(&keys).await;
    keys.clear();
    if let Some((k, e)) = failed.first() {
        tracing::warn!(target: super::TARGET, upload = id, key = %k, error = %e, failed = failed.len(), "cannot delete a part of an upload");
        return; // keep the marker so that the upload is still found and aborted later
    }
    if let Err(e) = b.delete(&marker_key(id)).await {
        tracing::warn!(target: super::TARGET, upload = id, error = %e, "cannot delete an upload's marker");
    }
}

/// Every object under `prefix` (recursive, all pages).
pub(super) async fn list_all(b: &GcsBackend, prefix: &str) -> BackendResult<Vec<ObjectMeta>> {
    let mut out = Vec::new();
    let mut req =
        ListRequest { prefix: prefix.to_owned(), delimiter: None, continuation: None, max_keys: 1000 };
    loop {
        let page = b.list_raw(&req).await?;
        out.extend(page.objects);
        match page.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => return Ok(out),
        }
    }
}

/// The parts stored so far (one temporary object each), ascending by number.
pub(super) async fn list_parts(b: &GcsBackend, key: &str, id: &str) -> BackendResult<Vec<CompletedPart>> {
    marker(b, key, id).await?;
    let prefix = parts_prefix(id);
    let mut parts: Vec<CompletedPart> = list_all(b, &prefix)
        .await?
        .into_iter()
        .filter_map(|o| {
            // intermediates of a compose round are named `c…`, parts are digits only
            let part_number = o.key.strip_prefix(&prefix)?.parse().ok()?;
            Some(CompletedPart { part_number, etag: o.etag, size: o.size })
        })
        .collect();
    parts.sort_by_key(|p| p.part_number);
    Ok(parts)
}

pub(super) async fn abort(b: &GcsBackend, key: &str, id: &str) -> BackendResult<()> {
    marker(b, key, id).await?;
    let keys: Vec<String> = list_all(b, &parts_prefix(id)).await?.into_iter().map(|o| o.key).collect();
    if let Some((_, e)) = b.delete_parallel(&keys).await.into_iter().next() {
        return Err(e);
    }
    b.delete(&marker_key(id)).await
}

pub(super) async fn list(b: &GcsBackend, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
    let markers = list_all(b, &format!("{RESERVED_PREFIX}uploads/")).await?;
    let mut out: Vec<MultipartUploadInfo> = markers
        .into_iter()
        .filter_map(|m| {
            let key = m.user_metadata.get(KEY_META)?.clone();
            let upload_id = m.key.rsplit('/').next()?.to_owned();
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
