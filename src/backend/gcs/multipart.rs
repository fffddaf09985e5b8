//! Multipart uploads on GCS, which has none: parts are temporary objects and
//! completion is `compose`. The marker-based design (create, checks, abort,
//! listing) is [`crate::backend::marker_multipart`]'s; this is GCS's
//! [`MarkerStore`]: where parts live, how they are composed and deleted.
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

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::Method;

use super::{GcsBackend, GcsObject, RESERVED_PREFIX};
use crate::backend::http;
use crate::backend::marker_multipart::{self, marker_multipart_store, Completion, MarkerStore, Upload};
use crate::backend::*;

/// Sources per compose request (a GCS limit).
const COMPOSE_FANIN: usize = 32;
/// A composite object has at most 1024 components (a GCS limit), so an upload has at most 1024 parts.
pub const MAX_PARTS: u32 = 1024;

fn parts_prefix(id: &str) -> String {
    format!("{RESERVED_PREFIX}parts/{id}/")
}

fn part_name(id: &str, part_number: u32) -> String {
    format!("{}{part_number:05}", parts_prefix(id))
}

marker_multipart_store!(GcsBackend {
    async fn read_part(
        &self,
        key: &str,
        upload_id: &str,
        part: &CompletedPart,
    ) -> BackendResult<Bytes> {
        read_part(self, key, upload_id, part).await
    }
});

#[async_trait]
impl MarkerStore for GcsBackend {
    const NAME: &'static str = "GCS";
    /// Part numbers, like S3's.
    const MAX_PART_NUMBER: u32 = 10_000;
    const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
    const MAX_PARTS: u32 = MAX_PARTS;
    const KEY_META: &'static str = "bucketfs-upload-key";
    const MARKERS: &'static str = ".bucketfs-multipart/uploads/";

    async fn write_marker(&self, name: &str, body: Bytes, owner: &str) -> BackendResult<()> {
        let meta = BTreeMap::from([(Self::KEY_META.to_owned(), owner.to_owned())]);
        self.upload("create_multipart", name, body, Some("application/json"), &meta, None).await.map(|_| ())
    }

    async fn list_hidden(&self, prefix: &str) -> BackendResult<Vec<ObjectMeta>> {
        list_all(self, prefix).await
    }

    /// One object per part; re-uploading a part replaces it. Its generation is the etag.
    async fn store_part(&self, up: Upload<'_>, n: u32, data: Bytes) -> BackendResult<CompletedPart> {
        let size = data.len() as u64;
        let meta =
            self.upload("upload_part", &part_name(up.id, n), data, None, &BTreeMap::new(), None).await?;
        Ok(CompletedPart { part_number: n, etag: meta.etag, size })
    }

    async fn stored_parts(&self, up: Upload<'_>) -> BackendResult<Vec<CompletedPart>> {
        let prefix = parts_prefix(up.id);
        Ok(list_all(self, &prefix)
            .await?
            .into_iter()
            .filter_map(|o| {
                // intermediates of a compose round are named `c…`, parts are digits only
                let part_number = o.key.strip_prefix(&prefix)?.parse().ok()?;
                Some(CompletedPart { part_number, etag: o.etag, size: o.size })
            })
            .collect())
    }

    /// Composes exactly the named generations, in rounds of intermediates while
    /// there are more than 32 sources; the final compose writes the destination
    /// with the upload's content type, metadata and precondition.
    async fn combine(&self, c: Completion<'_>) -> BackendResult<ObjectMeta> {
        let prefix = parts_prefix(c.up.id);
        let mut sources: Vec<(String, String)> =
            c.parts.iter().map(|p| (part_name(c.up.id, p.part_number), p.etag.clone())).collect();
        let mut round = 0;
        while sources.len() > COMPOSE_FANIN {
            round += 1;
            let mut next = Vec::new();
            for (i, chunk) in sources.chunks(COMPOSE_FANIN).enumerate() {
                let name = format!("{prefix}c{round}-{i:05}");
                let meta = compose(self, &name, chunk, serde_json::json!({}), None).await?;
                next.push((name, meta.etag));
            }
            sources = next;
        }
        let mut destination = serde_json::json!({});
        if let Some(ct) = &c.opts.content_type {
            destination["contentType"] = ct.clone().into();
        }
        if !c.opts.user_metadata.is_empty() {
            destination["metadata"] = serde_json::to_value(&c.opts.user_metadata).unwrap_or_default();
        }
        let generation = if c.opts.if_none_match_any { Some("0") } else { c.opts.if_match.as_deref() };
        compose(self, c.up.key, &sources, destination, generation).await
    }

    /// Deletes every object under the upload's parts prefix: parts, named or not, and intermediates.
    async fn drop_parts(&self, id: &str) -> BackendResult<()> {
        let keys: Vec<String> = list_all(self, &parts_prefix(id)).await?.into_iter().map(|o| o.key).collect();
        match self.delete_many(&keys).await?.into_iter().next() {
            Some((_, e)) => Err(e),
            None => Ok(()),
        }
    }
}

/// Part `part` as uploaded: its object read at the generation that is its etag, so
/// that a part re-sent since (a new generation) is never mistaken for it.
pub(super) async fn read_part(
    b: &GcsBackend,
    key: &str,
    id: &str,
    part: &CompletedPart,
) -> BackendResult<Bytes> {
    marker_multipart::marker(b, key, id).await?;
    let pinned = GetOptions { if_match: Some(part.etag.clone()) };
    let data = b.get_range_impl(&part_name(id, part.part_number), None, &pinned).await?.data;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_and_parts_are_hidden() {
        // `list_multipart` lists MARKERS only: parts must not be under it, and both must be hidden.
        assert!(<GcsBackend as MarkerStore>::MARKERS.starts_with(RESERVED_PREFIX));
        assert!(parts_prefix("x").starts_with(RESERVED_PREFIX));
        assert!(!parts_prefix("x").starts_with(<GcsBackend as MarkerStore>::MARKERS));
        assert_eq!(part_name("ab", 7), ".bucketfs-multipart/parts/ab/00007");
    }
}
