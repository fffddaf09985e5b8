//! Multipart uploads on Azure: Put Block + Put Block List on the destination
//! blob, plus a marker blob so that uploads can be found and ended from any
//! process. The marker-based design (create, checks, abort, listing) is
//! [`crate::backend::marker_multipart`]'s; this is Azure's [`MarkerStore`]:
//! parts are blocks, completion is a block list.
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

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;

use super::{AzureBackend, Req, RESERVED_PREFIX};
use crate::backend::marker_multipart::{marker_multipart_store, Completion, MarkerStore, Upload};
use crate::backend::*;
use crate::object::ErrorKind;

pub const MAX_BLOCKS: u32 = 50_000;
pub const MAX_BLOCK: u64 = 4000 * 1024 * 1024;

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

fn block_id(id: &str, part: u32) -> String {
    b64().encode(format!("{id}-{part:05}"))
}

marker_multipart_store!(AzureBackend {});

#[async_trait]
impl MarkerStore for AzureBackend {
    const NAME: &'static str = "Azure";
    const MAX_PART_NUMBER: u32 = MAX_BLOCKS;
    const MAX_PART: u64 = MAX_BLOCK;
    const MAX_PARTS: u32 = MAX_BLOCKS;
    const KEY_META: &'static str = "bucketfs_upload_key";
    const MARKERS: &'static str = RESERVED_PREFIX;

    /// Metadata values are ASCII: the key is written base64.
    fn encode_owner(key: &str) -> String {
        b64().encode(key)
    }

    fn decode_owner(value: &str) -> Option<String> {
        String::from_utf8(b64().decode(value).ok()?).ok()
    }

    async fn write_marker(&self, name: &str, body: Bytes, owner: &str) -> BackendResult<()> {
        let r = Req::new(Method::PUT, Some(name))
            .h("x-ms-blob-type", "BlockBlob")
            .h(format!("x-ms-meta-{}", Self::KEY_META), owner)
            .body(body);
        self.call("create_multipart", name, r).await.map(|_| ())
    }

    async fn list_hidden(&self, prefix: &str) -> BackendResult<Vec<ObjectMeta>> {
        let mut out = Vec::new();
        let mut req =
            ListRequest { prefix: prefix.to_owned(), delimiter: None, continuation: None, max_keys: 1000 };
        loop {
            let page = self.list_raw(&req, true).await?;
            out.extend(page.objects);
            match page.next_continuation {
                Some(t) => req.continuation = Some(t),
                None => return Ok(out),
            }
        }
    }

    async fn store_part(&self, up: Upload<'_>, n: u32, data: Bytes) -> BackendResult<CompletedPart> {
        let size = data.len() as u64;
        let bid = block_id(up.id, n);
        let r = Req::new(Method::PUT, Some(up.key)).q("comp", "block").q("blockid", bid.clone()).body(data);
        self.call("upload_part", up.key, r).await?;
        Ok(CompletedPart { part_number: n, etag: bid, size })
    }

    /// This upload's uncommitted blocks (Get Block List).
    async fn stored_parts(&self, up: Upload<'_>) -> BackendResult<Vec<CompletedPart>> {
        let Upload { key, id } = up;
        let r = Req::new(Method::GET, Some(key)).q("comp", "blocklist").q("blocklisttype", "uncommitted");
        let resp = match self.call("list_parts", key, r).await {
            Ok(r) => r,
            // no block uploaded yet (and no committed blob)
            Err(BackendError { kind: ErrorKind::NotFound, .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let body = crate::backend::http::body(resp, self.ctx("list_parts", key)).await?;
        let list: BlockList = quick_xml::de::from_str(&String::from_utf8_lossy(&body)).map_err(|e| {
            BackendError::io(format!("list_parts {key:?}: unexpected block list: {e}")).with_source(e)
        })?;
        let own = format!("{id}-");
        Ok(list
            .uncommitted_blocks
            .blocks
            .into_iter()
            .filter_map(|blk| {
                let raw = String::from_utf8(b64().decode(&blk.name).ok()?).ok()?;
                let part_number = raw.strip_prefix(&own)?.parse().ok()?;
                Some(CompletedPart { part_number, etag: blk.name, size: blk.size })
            })
            .collect())
    }

    /// Commits the named blocks in part order with Put Block List, carrying the
    /// upload's content type, metadata and write condition; Azure discards the
    /// blob's uncommitted blocks the list does not name.
    async fn combine(&self, c: Completion<'_>) -> BackendResult<ObjectMeta> {
        let Upload { key, id } = c.up;
        // Block ids are base64: nothing in them needs XML escaping.
        let mut xml = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
        for p in c.parts {
            xml.push_str(&format!("<Latest>{}</Latest>", block_id(id, p.part_number)));
        }
        xml.push_str("</BlockList>");
        let r = Req::new(Method::PUT, Some(key)).q("comp", "blocklist").body(Bytes::from(xml));
        let r = self.write_headers(r, c.opts, "x-ms-blob-content-type");
        self.call("complete_multipart", key, r).await?;
        self.head(key).await
    }

    /// Azure has no call to drop uncommitted blocks: it collects them after a
    /// week or at the blob's next commit.
    async fn drop_parts(&self, _id: &str) -> BackendResult<()> {
        Ok(())
    }
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
