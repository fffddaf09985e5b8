//! Multipart uploads on the DFS API: parts are appends to a hidden file
//! `.bucketfs-multipart/<id>`, completion is a flush of that file and one
//! rename onto the destination, so the destination (or its old content) is
//! never seen half written and a write condition is checked atomically by the
//! rename (`If-None-Match: *` / `If-Match` apply to the rename's destination).
//!
//! An append names the byte position it writes at, which is the sum of the
//! parts before it: parts are taken strictly in order (the capability
//! `parallel_multipart` is false, so the upload pipeline sends one at a time)
//! and the running position is kept in memory per upload. A part number out of
//! order is refused. So an upload lives in the process that started it:
//! `list_parts` is not supported (an interrupted upload starts over) and
//! `list_multipart` finds the hidden files of any process by their
//! `bucketfs_upload_key` property, so stale ones can be aborted.

use std::collections::BTreeMap;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;

use super::{b64, AbfsBackend, RESERVED_DIR};
use crate::backend::*;
use crate::object::ErrorKind;

/// Appends per upload: no limit of the service's own but the 4000 MiB append
/// and the 190.7 TiB file size; 50,000 as on the blob service.
pub(super) const MAX_PARTS: u32 = 50_000;
/// Property of the hidden file naming the destination key (base64).
const KEY_PROP: &str = "bucketfs_upload_key";

/// An upload this process is writing.
pub(super) struct OpenUpload {
    key: String,
    opts: PutOptions,
    /// Number of the next part expected.
    next: u32,
    /// Bytes appended so far: the next part's position.
    position: u64,
}

fn hidden(id: &str) -> String {
    format!("{RESERVED_DIR}/{id}")
}

impl AbfsBackend {
    fn upload_state(&self, key: &str, id: &str) -> BackendResult<(u32, u64, PutOptions)> {
        let uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        match uploads.get(id) {
            Some(u) if u.key == key => Ok((u.next, u.position, u.opts.clone())),
            _ => Err(BackendError::no_such_upload(format!("{key:?} upload {id}"))),
        }
    }
}

#[async_trait]
impl MultipartStore for AbfsBackend {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let mut props = opts.user_metadata.clone();
        props.insert(KEY_PROP.into(), b64().encode(key));
        let plain = PutOptions {
            content_type: opts.content_type.clone(),
            user_metadata: props,
            ..Default::default()
        };
        self.create(&hidden(&id), &plain).await?;
        let up = OpenUpload { key: key.to_owned(), opts: opts.clone(), next: 1, position: 0 };
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), up);
        Ok(id)
    }

    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let (next, position, _) = self.upload_state(key, upload_id)?;
        if part_number != next {
            return Err(BackendError::invalid_argument(format!(
                "upload_part {key:?}: part {part_number} out of order (abfs appends part {next} next)"
            )));
        }
        let size = data.len() as u64;
        self.append(&hidden(upload_id), position, data).await?;
        let mut uploads = self.uploads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = uploads.get_mut(upload_id) {
            u.next += 1;
            u.position += size;
        }
        Ok(CompletedPart { part_number, etag: format!("{position}+{size}"), size })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta> {
        let (next, position, opts) = self.upload_state(key, upload_id)?;
        let named: u64 = parts.iter().map(|p| p.size).sum();
        if parts.len() as u32 != next - 1 || named != position {
            return Err(BackendError::invalid_argument(format!(
                "complete_multipart {key:?}: {} parts of {named} bytes named, {} of {position} appended",
                parts.len(),
                next - 1
            )));
        }
        let tmp = hidden(upload_id);
        // the hidden file carries the upload's key property: write the real ones
        self.set_properties(&tmp, &opts).await?;
        self.flush(&tmp, position, opts.content_type.as_deref()).await?;
        let renamed = self.rename_to("complete_multipart", &tmp, key, &opts).await;
        if matches!(&renamed, Ok(_) | Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })) {
            // the upload is over either way (as on S3)
            self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(upload_id);
            if renamed.is_err() {
                let _ = self.delete(&tmp).await;
            }
        }
        renamed?;
        self.apply_mode(key, &opts.user_metadata).await;
        self.head(key).await
    }

    async fn abort_multipart(&self, _key: &str, upload_id: &str) -> BackendResult<()> {
        self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(upload_id);
        self.delete(&hidden(upload_id)).await
    }

    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let mut out = Vec::new();
        let mut req = ListRequest {
            prefix: format!("{RESERVED_DIR}/"),
            delimiter: Some("/".into()),
            continuation: None,
            max_keys: 1000,
        };
        loop {
            let page = self.list_page(&req, true).await?;
            for o in page.objects {
                let id = o.key[RESERVED_DIR.len() + 1..].to_owned();
                let Ok((meta, false)) = self.properties(&o.key).await else { continue };
                let props: BTreeMap<String, String> = meta.user_metadata;
                let Some(key) = props
                    .get(KEY_PROP)
                    .and_then(|v| b64().decode(v).ok())
                    .and_then(|v| String::from_utf8(v).ok())
                else {
                    continue;
                };
                if key.starts_with(prefix) {
                    out.push(MultipartUploadInfo { key, upload_id: id, initiated: o.last_modified });
                }
            }
            match page.next_continuation {
                Some(t) => req.continuation = Some(t),
                None => return Ok(out),
            }
        }
    }
}
