//! Multipart uploads, their housekeeping, and server-side copies.
//!
//! S3's rules are checked before a request is sent, so a caller bug gives a
//! clear `InvalidArgument` instead of a server error after gigabytes were
//! uploaded: part numbers 1..=10,000, parts of at most 5 GiB (the 5 MiB minimum
//! of all but the last part is only known at completion, where the server
//! reports `EntityTooSmall`). Completion sorts the parts by number, because
//! parallel uploads finish out of order and S3 demands ascending order.
//!
//! `list` pages through ListMultipartUploads (key and upload-id markers) so
//! that uploads left behind by crashed mounts can be found and aborted with
//! the trait's default `abort_multipart_under`.
//!
//! `copy` HEADs the source first: it needs the size (CopyObject does not
//! return it, and objects over 5 GiB must be copied part by part with
//! UploadPartCopy) and it pins the copy to that version with
//! `x-amz-copy-source-if-match`, so the returned metadata describes what was copied.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart as SdkPart, MetadataDirective};
use bytes::Bytes;
use std::time::SystemTime;

use super::xml::{self, PartsPage};
use super::{
    bare_etag, copy_source, short_timeouts, system_time, to_sdk_metadata, PendingUpload, S3Backend, MIB,
};
use crate::backend::*;
use crate::object::ErrorKind;

const MAX_PART: u64 = 5 * 1024 * MIB;
const MAX_PARTS: u32 = 10_000;
/// Objects up to this size are copied with one CopyObject (S3's limit for it).
const MAX_SINGLE_COPY: u64 = 5 * 1024 * MIB;
/// Part size of a multipart copy; 10,000 of them cover S3's 5 TiB maximum.
const COPY_PART: u64 = 1024 * MIB;

/// S3 reports a failed completion as `200` with an `<Error>` body, and the SDK
/// treats any `200` body it cannot parse as an error. Some servers (moto)
/// answer a successful completion with another XML root element
/// (`CompleteMultipartUploadResponse`); a `200` without `<Error>` is a success,
/// whose ETag is parsed from the body by [`xml`]. `None`: not such an answer;
/// `Some(Err)`: such an answer that does not parse.
fn completed_anyway<E>(e: &SdkError<E>) -> Option<Result<String, xml::XmlError>> {
    let body = ok_body(e)?;
    (!body.contains("<Error>") && body.contains("CompleteMultipartUpload")).then(|| xml::parse_complete(body))
}

/// The body of a `200` answer the SDK refused.
fn ok_body<E>(e: &SdkError<E>) -> Option<&str> {
    let SdkError::ServiceError(se) = e else { return None };
    if se.raw().status().as_u16() != 200 {
        return None;
    }
    std::str::from_utf8(se.raw().body().bytes()?).ok()
}

fn forget(b: &S3Backend, upload_id: &str) {
    if let Ok(mut p) = b.pending.lock() {
        p.remove(upload_id);
    }
}

/// Like [`completed_anyway`]: moto answers ListParts with a `ListPartsResponse` root
/// element, which the SDK refuses; a `200` without `<Error>` is parsed by [`xml`].
fn listed_anyway<E>(e: &SdkError<E>) -> Option<Result<PartsPage, xml::XmlError>> {
    let body = ok_body(e)?;
    (!body.contains("<Error>") && body.contains("<ListParts")).then(|| xml::parse_list_parts(body))
}

/// A `200` answer whose body does not parse: the server's fault, reported as such.
fn malformed(op: &str, key: &str, e: xml::XmlError) -> BackendError {
    BackendError::io(format!("{op} {key:?}: {e}"))
}

#[async_trait::async_trait]
impl MultipartStore for S3Backend {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
        let (sse, kms) = self.sse();
        let out = self
            .run("create_multipart", key, |c| {
                c.create_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .set_content_type(opts.content_type.clone())
                    .set_metadata(to_sdk_metadata(&opts.user_metadata))
                    .set_server_side_encryption(sse.clone())
                    .set_ssekms_key_id(kms.clone())
                    .set_storage_class(self.storage_class())
                    .set_request_payer(self.payer())
                    .customize()
                    .config_override(short_timeouts())
                    .send()
            })
            .await?;
        let id = out
            .upload_id()
            .filter(|id| !id.is_empty())
            .ok_or_else(|| {
                BackendError::io(format!("create_multipart {key:?}: the server returned no upload id"))
            })?
            .to_owned();
        if let Ok(mut p) = self.pending.lock() {
            p.insert(id.clone(), PendingUpload { opts: opts.clone() });
        }
        Ok(id)
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        let size = data.len() as u64;
        crate::backend::part_rules::check_part(part_number, size, MAX_PARTS, MAX_PART)?;
        let out = self
            .run("upload_part", key, |c| {
                let req = c
                    .upload_part()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(part_number as i32)
                    .content_length(size as i64)
                    .body(data.clone().into())
                    .set_request_payer(self.payer())
                    .customize();
                if self.cfg.sign_payload { req } else { req.disable_payload_signing() }.send()
            })
            .await?;
        Ok(CompletedPart { part_number, etag: bare_etag(out.e_tag()), size })
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta> {
        let mut sorted = parts.to_vec();
        sorted.sort_by_key(|p| p.part_number);
        if sorted.windows(2).any(|w| w[0].part_number == w[1].part_number) {
            return Err(BackendError::invalid_argument(format!(
                "complete_multipart {key:?}: duplicate part numbers"
            )));
        }
        let pending = self.pending.lock().ok().and_then(|p| p.get(upload_id).cloned());
        let opts = pending.map(|p| p.opts).unwrap_or_default();
        let upload = CompletedMultipartUpload::builder()
            .set_parts(Some(
                sorted
                    .iter()
                    .map(|p| {
                        SdkPart::builder()
                            .part_number(p.part_number as i32)
                            .e_tag(format!("\"{}\"", p.etag))
                            .build()
                    })
                    .collect(),
            ))
            .build();
        let res = self
            .run_raw("complete_multipart", key, |c| {
                c.complete_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(upload_id)
                    .multipart_upload(upload.clone())
                    .set_if_none_match(opts.if_none_match_any.then(|| "*".to_owned()))
                    .set_if_match(opts.if_match.as_ref().map(|e| format!("\"{e}\"")))
                    .set_request_payer(self.payer())
                    .send()
            })
            .await
            .map(|out| bare_etag(out.e_tag()))
            .or_else(|e| match completed_anyway(&e) {
                Some(Ok(etag)) => Ok(etag),
                Some(Err(x)) => Err(malformed("complete_multipart", key, x)),
                None => Err(self.map_err("complete_multipart", key, e)),
            });
        // A failed precondition or a missing upload ends the upload; other errors may be retried.
        if matches!(&res, Ok(_) | Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })) {
            forget(self, upload_id);
        }
        let etag = res?;
        Ok(ObjectMeta {
            key: key.to_owned(),
            size: sorted.iter().map(|p| p.size).sum(),
            etag,
            last_modified: SystemTime::now(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
        })
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
        let res = self
            .run("abort_multipart", key, |c| {
                c.abort_multipart_upload()
                    .bucket(self.bucket())
                    .key(key)
                    .upload_id(upload_id)
                    .set_request_payer(self.payer())
                    .customize()
                    .config_override(short_timeouts())
                    .send()
            })
            .await;
        forget(self, upload_id);
        // Some servers answer a missing upload with a bare 404.
        res.map(|_| ()).map_err(|e| match e {
            BackendError { kind: ErrorKind::NotFound, .. } => {
                BackendError::no_such_upload(format!("{key:?} upload {upload_id}"))
            }
            e => e,
        })
    }
    /// ListParts, paged by part-number marker; a missing upload is `NoSuchUpload`.
    async fn list_parts(&self, key: &str, upload_id: &str) -> BackendResult<Vec<CompletedPart>> {
        let mut all = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let page = self
                .run_raw("list_parts", key, |c| {
                    c.list_parts()
                        .bucket(self.bucket())
                        .key(key)
                        .upload_id(upload_id)
                        .set_part_number_marker(marker.clone())
                        .set_request_payer(self.payer())
                        .customize()
                        .config_override(short_timeouts())
                        .send()
                })
                .await
                .map(|out| PartsPage {
                    key: key.to_owned(),
                    parts: out
                        .parts()
                        .iter()
                        .filter_map(|p| {
                            Some(CompletedPart {
                                part_number: u32::try_from(p.part_number()?).ok()?,
                                etag: bare_etag(p.e_tag()),
                                size: p.size().unwrap_or(0).max(0) as u64,
                            })
                        })
                        .collect(),
                    truncated: out.is_truncated() == Some(true),
                    next: out.next_part_number_marker().map(str::to_owned),
                })
                .or_else(|e| match listed_anyway(&e) {
                    Some(page) => page.map_err(|x| malformed("list_parts", key, x)),
                    None => Err(self.map_err("list_parts", key, e)),
                })
                .map_err(|e| match e {
                    BackendError { kind: ErrorKind::NotFound, .. } => {
                        BackendError::no_such_upload(format!("{key:?} upload {upload_id}"))
                    }
                    e => e,
                })?;
            all.extend(page.parts.into_iter().filter(|p| p.part_number > 0));
            if !page.truncated || page.next.is_none() || page.next == marker {
                break;
            }
            marker = page.next;
        }
        all.sort_by_key(|p| p.part_number);
        all.dedup_by_key(|p| p.part_number);
        Ok(all)
    }
    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let mut all = Vec::new();
        let (mut key_marker, mut id_marker): (Option<String>, Option<String>) = (None, None);
        loop {
            let out = self
                .run("list_multipart", prefix, |c| {
                    c.list_multipart_uploads()
                        .bucket(self.bucket())
                        .prefix(prefix)
                        .set_key_marker(key_marker.clone())
                        .set_upload_id_marker(id_marker.clone())
                        .set_request_payer(self.payer())
                        .customize()
                        .config_override(short_timeouts())
                        .send()
                })
                .await?;
            for u in out.uploads() {
                if let (Some(key), Some(id)) = (u.key(), u.upload_id()) {
                    all.push(MultipartUploadInfo {
                        key: key.to_owned(),
                        upload_id: id.to_owned(),
                        initiated: system_time(u.initiated()),
                    });
                }
            }
            let next =
                (out.next_key_marker().map(str::to_owned), out.next_upload_id_marker().map(str::to_owned));
            // Stop unless the server says more follow and moved its markers (a server
            // that repeats markers would otherwise loop forever).
            if out.is_truncated() != Some(true)
                || next.0.is_none()
                || next == (key_marker.clone(), id_marker.clone())
            {
                break;
            }
            (key_marker, id_marker) = next;
        }
        all.sort_by(|a, self| (&a.key, &a.upload_id).cmp(&(&self.key, &self.upload_id)));
        Ok(all)
    }
}

pub(super) async fn copy(
    b: &S3Backend,
    src: &str,
    dst: &str,
    metadata: Option<&PutOptions>,
) -> BackendResult<ObjectMeta> {
    let src_meta = b.head(src).await?;
    let opts = metadata.cloned().unwrap_or_else(|| PutOptions {
        content_type: src_meta.content_type.clone(),
        user_metadata: src_meta.user_metadata.clone(),
        ..Default::default()
    });
    if src_meta.size > MAX_SINGLE_COPY {
        return copy_in_parts(b, src, dst, &src_meta, &opts).await;
    }
    let (sse, kms) = b.sse();
    let source = copy_source(b.bucket(), src);
    let replace = metadata.is_some();
    let out = b
        .run("copy", dst, |c| {
            c.copy_object()
                .bucket(b.bucket())
                .key(dst)
                .copy_source(&source)
                .copy_source_if_match(format!("\"{}\"", src_meta.etag))
                .set_metadata_directive(replace.then_some(MetadataDirective::Replace))
                .set_content_type(if replace { opts.content_type.clone() } else { None })
                .set_metadata(if replace { to_sdk_metadata(&opts.user_metadata) } else { None })
                .set_if_none_match(opts.if_none_match_any.then(|| "*".to_owned()))
                .set_if_match(opts.if_match.as_ref().map(|e| format!("\"{e}\"")))
                .set_server_side_encryption(sse.clone())
                .set_ssekms_key_id(kms.clone())
                .set_storage_class(b.storage_class())
                .set_request_payer(b.payer())
                .send()
        })
        .await?;
    let result = out.copy_object_result();
    Ok(ObjectMeta {
        key: dst.to_owned(),
        size: src_meta.size,
        etag: bare_etag(result.and_then(|r| r.e_tag())),
        last_modified: result
            .and_then(|r| r.last_modified())
            .map_or_else(SystemTime::now, |t| system_time(Some(t))),
        content_type: opts.content_type,
        user_metadata: opts.user_metadata,
    })
}

/// Copies an object over 5 GiB with UploadPartCopy, one part at a time.
async fn copy_in_parts(
    b: &S3Backend,
    src: &str,
    dst: &str,
    src_meta: &ObjectMeta,
    opts: &PutOptions,
) -> BackendResult<ObjectMeta> {
    let id = b.create_multipart(dst, opts).await?;
    let source = copy_source(b.bucket(), src);
    let mut parts = Vec::new();
    let mut start = 0u64;
    let mut n = 1u32;
    while start < src_meta.size {
        let end = (start + COPY_PART).min(src_meta.size);
        let res = b
            .run("upload_part_copy", dst, |c| {
                c.upload_part_copy()
                    .bucket(b.bucket())
                    .key(dst)
                    .upload_id(&id)
                    .part_number(n as i32)
                    .copy_source(&source)
                    .copy_source_range(format!("bytes={}-{}", start, end - 1))
                    .copy_source_if_match(format!("\"{}\"", src_meta.etag))
                    .set_request_payer(b.payer())
                    .send()
            })
            .await;
        match res {
            Ok(out) => parts.push(CompletedPart {
                part_number: n,
                etag: bare_etag(out.copy_part_result().and_then(|r| r.e_tag())),
                size: end - start,
            }),
            Err(e) => {
                let _ = b.abort_multipart(dst, &id).await;
                return Err(e);
            }
        }
        start = end;
        n += 1;
    }
    match b.complete_multipart(dst, &id, &parts).await {
        Ok(m) => Ok(m),
        Err(e) => {
            let _ = b.abort_multipart(dst, &id).await;
            Err(e)
        }
    }
}
