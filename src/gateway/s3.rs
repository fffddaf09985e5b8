//! The `S3` trait over [`Store`]: one method per supported operation.
//!
//! Every store call is synchronous and does disk I/O, so it runs in
//! `spawn_blocking` ([`Gateway::call`]). Request bodies are streamed into the
//! store through [`super::body`]; object bodies are streamed out in
//! [`CHUNK`]-sized reads pinned to the ETag seen by the initial HEAD, so a
//! GET of a large object holds at most one chunk in memory, and an object
//! overwritten mid-download ends the response early instead of mixing
//! versions. Operations not listed here answer NotImplemented (s3s default).

use std::collections::BTreeMap;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use s3s::dto::*;
use s3s::{s3_error, S3Request, S3Response, S3Result, S3};

use super::body;
use super::errors::{join, to_s3};
use super::parts::part_range;
use crate::backend::{self, GetOptions, ListRequest, ObjectMeta, PutOptions};
use crate::store::{Store, StoreError};

/// Bytes per store read while streaming an object out.
const CHUNK: u64 = 4 << 20;
/// Most keys one DeleteObjects request may name (S3's limit).
pub const MAX_DELETE_KEYS: usize = 1000;

#[derive(Clone)]
pub struct Gateway {
    pub(super) store: Arc<Store>,
}

impl Gateway {
    pub fn new(store: Arc<Store>) -> Self {
        Gateway { store }
    }

    /// The object's metadata and part sizes, if the read's conditions let it be read.
    async fn checked_meta(
        &self,
        bucket: &str,
        key: &str,
        conditions: ReadConditions,
    ) -> S3Result<(ObjectMeta, Vec<u64>)> {
        let (b, k) = (bucket.to_owned(), key.to_owned());
        let (m, sizes) = self.call(move |s| s.object_part_sizes(&b, &k)).await?;
        check_read_conditions(&m, &conditions)?;
        Ok((m, sizes))
    }

    /// Runs a store call on the blocking pool and maps its error.
    async fn call<T, F>(&self, f: F) -> S3Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    {
        call(&self.store, f).await
    }
}

pub(super) async fn call<T, F>(store: &Arc<Store>, f: F) -> S3Result<T>
where
    T: Send + 'static,
    F: FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
{
    let store = store.clone();
    tokio::task::spawn_blocking(move || f(&store)).await.map_err(join)?.map_err(to_s3)
}

fn etag(m: &ObjectMeta) -> ETag {
    ETag::Strong(m.etag.clone())
}

fn ts(t: std::time::SystemTime) -> Timestamp {
    Timestamp::from(t)
}

fn user_metadata(m: Option<Metadata>) -> BTreeMap<String, String> {
    // s3s strips `x-amz-meta-`; the store wants lower-case names.
    m.unwrap_or_default().into_iter().map(|(k, v)| (k.to_ascii_lowercase(), v)).collect()
}

fn out_metadata(m: &ObjectMeta) -> Option<Metadata> {
    (!m.user_metadata.is_empty())
        .then(|| m.user_metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

fn etag_matches(cond: &ETagCondition, m: &ObjectMeta) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == m.etag,
    }
}

/// The conditional headers of a `GetObjectInput` or `HeadObjectInput` (same field names).
macro_rules! read_conditions {
    ($i:expr) => {
        ReadConditions {
            if_match: $i.if_match.clone(),
            if_none_match: $i.if_none_match.clone(),
            if_modified_since: $i.if_modified_since.clone(),
            if_unmodified_since: $i.if_unmodified_since.clone(),
        }
    };
}

/// The conditional headers of a GET or HEAD.
#[derive(Default)]
pub(super) struct ReadConditions {
    pub if_match: Option<ETagCondition>,
    pub if_none_match: Option<ETagCondition>,
    pub if_modified_since: Option<Timestamp>,
    pub if_unmodified_since: Option<Timestamp>,
}

/// RFC 9110 §13.2.2 order: If-Match (412), else If-Unmodified-Since (412); then
/// If-None-Match (304), else If-Modified-Since (304). Dates compare at whole seconds,
/// the resolution of HTTP dates.
pub(super) fn check_read_conditions(m: &ObjectMeta, c: &ReadConditions) -> S3Result<()> {
    let secs = m.last_modified.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let modified = Timestamp::from(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
    match (&c.if_match, &c.if_unmodified_since) {
        (Some(cond), _) if !etag_matches(cond, m) => {
            return Err(s3_error!(PreconditionFailed, "ETag does not match If-Match"))
        }
        (None, Some(t)) if modified > *t => {
            return Err(s3_error!(PreconditionFailed, "modified since If-Unmodified-Since"))
        }
        _ => {}
    }
    match (&c.if_none_match, &c.if_modified_since) {
        (Some(cond), _) if etag_matches(cond, m) => Err(s3_error!(NotModified)),
        (None, Some(t)) if modified <= *t => Err(s3_error!(NotModified)),
        _ => Ok(()),
    }
}

/// A piece of a response body: bytes already in hand, or a range of the object.
pub(super) enum Seg {
    Bytes(Bytes),
    Range(std::ops::Range<u64>),
}

impl Seg {
    pub(super) fn len(&self) -> u64 {
        match self {
            Seg::Bytes(b) => b.len() as u64,
            Seg::Range(r) => r.end - r.start,
        }
    }
}

/// A body made of `segs`; object ranges are read [`CHUNK`] at a time from
/// the version with ETag `tag`.
pub(super) fn segments_stream(
    store: Arc<Store>,
    bucket: String,
    key: String,
    tag: String,
    segs: Vec<Seg>,
) -> StreamingBlob {
    let segs = Arc::new(segs);
    // State: (segment index, position inside a Range segment).
    let st = futures::stream::unfold((0usize, None::<u64>), move |(idx, pos)| {
        let (store, bucket, key, tag, segs) =
            (store.clone(), bucket.clone(), key.clone(), tag.clone(), segs.clone());
        async move {
            let seg = segs.get(idx)?;
            let r = match seg {
                Seg::Bytes(b) => return Some((Ok(b.clone()), (idx + 1, None))),
                Seg::Range(r) => r.clone(),
            };
            let pos = pos.unwrap_or(r.start);
            if pos >= r.end {
                // An empty range: nothing to read, go on.
                return Some((Ok(Bytes::new()), (idx + 1, None)));
            }
            let next = (pos + CHUNK).min(r.end);
            let opts = GetOptions { if_match: Some(tag) };
            let res =
                tokio::task::spawn_blocking(move || store.get_object(&bucket, &key, Some(pos..next), &opts))
                    .await
                    .map_err(io::Error::other)
                    .and_then(|r| r.map_err(io::Error::other));
            let state = if next >= r.end { (idx + 1, None) } else { (idx, Some(next)) };
            match res {
                // the store's buffer goes back to crate::buffers once hyper has sent it
                Ok((_, data)) => Some((Ok(crate::buffers::freeze(data)), state)),
                // After an error the stream ends: the state points past the last segment.
                Err(e) => Some((Err(e), (usize::MAX, None))),
            }
        }
    });
    StreamingBlob::wrap(st)
}

/// A request's Content-Length as the body must deliver it (a negative one is no length).
fn declared_length(content_length: Option<i64>) -> Option<u64> {
    content_length.and_then(|n| u64::try_from(n).ok())
}

fn put_options(
    content_type: Option<ContentType>,
    metadata: Option<Metadata>,
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
) -> S3Result<PutOptions> {
    let mut o = PutOptions { content_type, user_metadata: user_metadata(metadata), ..Default::default() };
    match if_none_match {
        None => {}
        Some(ETagCondition::Any) => o.if_none_match_any = true,
        Some(_) => return Err(s3_error!(NotImplemented, "PUT supports only If-None-Match: *")),
    }
    match if_match {
        None => {}
        Some(ETagCondition::ETag(e)) => o.if_match = Some(e.value().to_string()),
        Some(ETagCondition::Any) => {
            return Err(s3_error!(NotImplemented, "PUT does not support If-Match: *"))
        }
    }
    Ok(o)
}

#[async_trait::async_trait]
impl S3 for Gateway {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let b = req.input.bucket;
        self.call(move |s| s.make_bucket(&b)).await?;
        Ok(S3Response::new(CreateBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        let b = req.input.bucket;
        self.call(move |s| s.delete_bucket(&b)).await?;
        Ok(S3Response::new(DeleteBucketOutput::default()))
    }

    async fn head_bucket(&self, req: S3Request<HeadBucketInput>) -> S3Result<S3Response<HeadBucketOutput>> {
        let b = req.input.bucket;
        if !self.call(move |s| s.bucket_exists(&b)).await? {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let names = self.call(|s| s.list_buckets()).await?;
        let buckets = names.into_iter().map(|n| Bucket { name: Some(n), ..Default::default() }).collect();
        Ok(S3Response::new(ListBucketsOutput { buckets: Some(buckets), ..Default::default() }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let b = req.input.bucket;
        if !self.call(move |s| s.bucket_exists(&b)).await? {
            return Err(s3_error!(NoSuchBucket));
        }
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(&self, req: S3Request<PutObjectInput>) -> S3Result<S3Response<PutObjectOutput>> {
        let i = req.input;
        let opts = put_options(i.content_type, i.metadata, i.if_match, i.if_none_match)?;
        let (mut r, body_status) = body::client_reader(i.body, declared_length(i.content_length));
        let (b, k) = (i.bucket, i.key);
        let m = self
            .call(move |s| s.put_object_reader(&b, &k, &mut r, &opts))
            .await
            .map_err(|e| body_status.explain(e))?;
        Ok(S3Response::new(PutObjectOutput { e_tag: Some(etag(&m)), ..Default::default() }))
    }

    async fn head_object(&self, req: S3Request<HeadObjectInput>) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let (m, sizes) = self.checked_meta(&i.bucket, &i.key, read_conditions!(i)).await?;
        let (len, parts_count) = match i.part_number {
            Some(n) => {
                let r = part_range(&sizes, n)?;
                (r.end - r.start, Some(sizes.len() as i32))
            }
            None => (m.size, None),
        };
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(len as i64),
            parts_count,
            content_type: m.content_type.clone(),
            e_tag: Some(etag(&m)),
            last_modified: Some(ts(m.last_modified)),
            metadata: out_metadata(&m),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn get_object(&self, req: S3Request<GetObjectInput>) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let (m, sizes) = self.checked_meta(&i.bucket, &i.key, read_conditions!(i)).await?;
        let (range, content_range) = match (&i.range, i.part_number) {
            (Some(_), Some(_)) => return Err(s3_error!(InvalidRequest, "Range and partNumber together")),
            (None, None) => (0..m.size, None),
            (None, Some(n)) => {
                let r = part_range(&sizes, n)?;
                let cr = format!("bytes {}-{}/{}", r.start, r.end.max(r.start + 1) - 1, m.size);
                (r, Some(cr))
            }
            (Some(r), None) => {
                // (s3s answers a suffix range of an empty object with an empty range: 416 too)
                let rr =
                    r.check(m.size).ok().filter(|r| !r.is_empty()).ok_or_else(|| s3_error!(InvalidRange))?;
                let cr = format!("bytes {}-{}/{}", rr.start, rr.end - 1, m.size);
                (rr, Some(cr))
            }
        };
        let len = range.end - range.start;
        let body =
            segments_stream(self.store.clone(), i.bucket, i.key, m.etag.clone(), vec![Seg::Range(range)]);
        Ok(S3Response::new(GetObjectOutput {
            body: Some(body),
            content_length: Some(len as i64),
            content_range,
            parts_count: i.part_number.map(|_| sizes.len() as i32),
            content_type: m.content_type.clone(),
            e_tag: Some(etag(&m)),
            last_modified: Some(ts(m.last_modified)),
            metadata: out_metadata(&m),
            accept_ranges: Some("bytes".into()),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let (b, k) = (req.input.bucket, req.input.key);
        self.call(move |s| s.delete_object(&b, &k)).await?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        if i.delete.objects.len() > MAX_DELETE_KEYS {
            // S3's answer to more than 1,000 keys
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema (at most {MAX_DELETE_KEYS} keys per DeleteObjects request, got {})",
                i.delete.objects.len()
            ));
        }
        let keys: Vec<String> = i.delete.objects.into_iter().map(|o| o.key).collect();
        let b = i.bucket;
        // One blocking task for the whole batch: up to 1000 small deletes.
        let results = self
            .call(move |s| Ok(keys.into_iter().map(|k| (s.delete_object(&b, &k), k)).collect::<Vec<_>>()))
            .await?;
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for (res, key) in results {
            match res {
                Ok(()) => deleted.push(DeletedObject { key: Some(key), ..Default::default() }),
                Err(e) => {
                    let e = to_s3(e);
                    errors.push(Error {
                        code: Some(e.code().as_str().to_string()),
                        key: Some(key),
                        message: e.message().map(str::to_string),
                        version_id: None,
                    });
                }
            }
        }
        let quiet = i.delete.quiet.unwrap_or(false);
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: (!quiet).then_some(deleted),
            errors: Some(errors),
            ..Default::default()
        }))
    }

    async fn copy_object(&self, req: S3Request<CopyObjectInput>) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = req.input;
        let CopySource::Bucket { bucket: src_bucket, key: src_key, .. } = &i.copy_source else {
            return Err(s3_error!(NotImplemented, "copy from an access point"));
        };
        let replace = i.metadata_directive.as_ref().is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let opts = replace.then(|| PutOptions {
            content_type: i.content_type.clone(),
            user_metadata: user_metadata(i.metadata.clone()),
            ..Default::default()
        });
        let (b, src, dst) = (i.bucket.clone(), src_key.to_string(), i.key.clone());
        let src_bucket = src_bucket.to_string();
        let src_meta = {
            let (sb, sk) = (src_bucket.clone(), src.clone());
            self.call(move |s| s.head_object(&sb, &sk)).await?
        };
        if let Some(ETagCondition::ETag(want)) = &i.copy_source_if_match {
            if src_meta.etag != want.value() {
                return Err(s3_error!(PreconditionFailed, "x-amz-copy-source-if-match"));
            }
        }
        let m = if src_bucket == b {
            self.call(move |s| s.copy_object(&b, &src, &dst, opts.as_ref())).await?
        } else {
            // The store copies within a bucket only; across buckets the source is
            // streamed (pinned to the ETag seen above) into a new PUT.
            let opts = opts.unwrap_or(PutOptions {
                content_type: src_meta.content_type.clone(),
                user_metadata: src_meta.user_metadata.clone(),
                ..Default::default()
            });
            let segs = vec![Seg::Range(0..src_meta.size)];
            let blob = segments_stream(self.store.clone(), src_bucket, src, src_meta.etag.clone(), segs);
            let mut r = body::reader(Some(blob));
            self.call(move |s| s.put_object_reader(&b, &dst, &mut r, &opts)).await?
        };
        let result = CopyObjectResult {
            e_tag: Some(etag(&m)),
            last_modified: Some(ts(m.last_modified)),
            ..Default::default()
        };
        Ok(S3Response::new(CopyObjectOutput { copy_object_result: Some(result), ..Default::default() }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        // The store's tokens are `o<key>`: resume after that key; StartAfter is the same.
        let continuation =
            i.continuation_token.clone().or_else(|| i.start_after.as_ref().map(|k| format!("o{k}")));
        let page =
            self.list(&i.bucket, i.prefix.clone(), i.delimiter.clone(), continuation, i.max_keys).await?;
        let (contents, prefixes, next) = page;
        let key_count = (contents.len() + prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            max_keys: Some(i.max_keys.unwrap_or(1000)),
            key_count: Some(key_count),
            continuation_token: i.continuation_token,
            start_after: i.start_after,
            is_truncated: Some(next.is_some()),
            next_continuation_token: next,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let continuation = i.marker.as_ref().filter(|m| !m.is_empty()).map(|k| format!("o{k}"));
        let (contents, prefixes, next) =
            self.list(&i.bucket, i.prefix.clone(), i.delimiter.clone(), continuation, i.max_keys).await?;
        // V1's NextMarker is the last key or prefix returned.
        let next_marker = next.as_ref().and_then(|t| t.get(1..)).map(str::to_string);
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: i.prefix,
            delimiter: i.delimiter,
            marker: i.marker,
            max_keys: Some(i.max_keys.unwrap_or(1000)),
            is_truncated: Some(next.is_some()),
            next_marker,
            contents: Some(contents),
            common_prefixes: Some(prefixes),
            encoding_type: i.encoding_type,
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let i = req.input;
        let opts = put_options(i.content_type, i.metadata, None, None)?;
        let (b, k) = (i.bucket.clone(), i.key.clone());
        let id = self.call(move |s| s.create_multipart_upload(&b, &k, &opts)).await?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(id),
            ..Default::default()
        }))
    }

    async fn upload_part(&self, req: S3Request<UploadPartInput>) -> S3Result<S3Response<UploadPartOutput>> {
        let i = req.input;
        let n = u32::try_from(i.part_number).map_err(|_| s3_error!(InvalidArgument, "bad part number"))?;
        let (mut r, body_status) = body::client_reader(i.body, declared_length(i.content_length));
        let (b, k, id) = (i.bucket, i.key, i.upload_id);
        let p = self
            .call(move |s| s.put_part(&b, &k, &id, n, &mut r))
            .await
            .map_err(|e| body_status.explain(e))?;
        Ok(S3Response::new(UploadPartOutput { e_tag: Some(ETag::Strong(p.etag)), ..Default::default() }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        Ok(S3Response::new(self.part_copy(req.input).await?))
    }

    async fn list_parts(&self, req: S3Request<ListPartsInput>) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let (b, k, id) = (i.bucket.clone(), i.key.clone(), i.upload_id.clone());
        let parts = self.call(move |s| s.list_parts(&b, &k, &id)).await?;
        let marker = i.part_number_marker.unwrap_or(0);
        let max = i.max_parts.filter(|&m| m > 0).unwrap_or(1000).min(1000) as usize;
        let mut after: Vec<_> = parts.into_iter().filter(|p| p.part_number as i32 > marker).collect();
        let truncated = after.len() > max;
        after.truncate(max);
        let next_marker = after.last().map(|p| p.part_number as i32).filter(|_| truncated);
        let parts = after
            .into_iter()
            .map(|p| Part {
                part_number: Some(p.part_number as i32),
                e_tag: Some(ETag::Strong(p.etag)),
                size: Some(p.size as i64),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            upload_id: Some(i.upload_id),
            parts: Some(parts),
            max_parts: Some(max as i32),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next_marker,
            is_truncated: Some(truncated),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let listed = i.multipart_upload.and_then(|m| m.parts).unwrap_or_default();
        let mut parts = Vec::with_capacity(listed.len());
        for p in listed {
            let n = p.part_number.and_then(|n| u32::try_from(n).ok());
            let (Some(n), Some(e)) = (n, p.e_tag) else {
                return Err(s3_error!(InvalidPart, "each part needs PartNumber and ETag"));
            };
            // The store checks the ETag against the stored part; size is looked up there.
            parts.push(backend::CompletedPart { part_number: n, etag: e.value().to_string(), size: 0 });
        }
        let (b, k, id) = (i.bucket.clone(), i.key.clone(), i.upload_id);
        let m = self.call(move |s| s.complete_multipart_upload(&b, &k, &id, &parts)).await?;
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket),
            key: Some(i.key),
            e_tag: Some(etag(&m)),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let (b, k, id) = (req.input.bucket, req.input.key, req.input.upload_id);
        self.call(move |s| s.abort_multipart_upload(&b, &k, &id)).await?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let (b, prefix) = (i.bucket.clone(), i.prefix.clone().unwrap_or_default());
        let mut ups = self.call(move |s| s.list_multipart_uploads(&b, &prefix)).await?;
        ups.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        // S3 paging: after key-marker, or within it after upload-id-marker.
        if let Some(km) = &i.key_marker {
            let idm = i.upload_id_marker.as_deref();
            ups.retain(|u| &u.key > km || (&u.key == km && idm.is_some_and(|m| u.upload_id.as_str() > m)));
        }
        let max = i.max_uploads.filter(|&m| m > 0).unwrap_or(1000).min(1000) as usize;
        let truncated = ups.len() > max;
        ups.truncate(max);
        let (next_key, next_id) = match ups.last().filter(|_| truncated) {
            Some(u) => (Some(u.key.clone()), Some(u.upload_id.clone())),
            None => (None, None),
        };
        let uploads = ups
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(ts(u.initiated)),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            upload_id_marker: i.upload_id_marker,
            next_key_marker: next_key,
            next_upload_id_marker: next_id,
            max_uploads: Some(max as i32),
            uploads: Some(uploads),
            is_truncated: Some(truncated),
            ..Default::default()
        }))
    }
}

type Listed = (Vec<Object>, Vec<CommonPrefix>, Option<String>);

impl Gateway {
    async fn list(
        &self,
        bucket: &str,
        prefix: Option<String>,
        delimiter: Option<String>,
        continuation: Option<String>,
        max_keys: Option<i32>,
    ) -> S3Result<Listed> {
        let req = ListRequest {
            prefix: prefix.unwrap_or_default(),
            delimiter: delimiter.filter(|d| !d.is_empty()),
            continuation,
            max_keys: max_keys.map(|n| n.clamp(1, 1000) as usize).unwrap_or(1000),
        };
        let b = bucket.to_string();
        let page = self.call(move |s| s.list_objects(&b, &req)).await?;
        let contents = page
            .objects
            .iter()
            .map(|m| Object {
                key: Some(m.key.clone()),
                size: Some(m.size as i64),
                e_tag: Some(etag(m)),
                last_modified: Some(ts(m.last_modified)),
                storage_class: Some(ObjectStorageClass::from_static(ObjectStorageClass::STANDARD)),
                ..Default::default()
            })
            .collect();
        let prefixes = page.common_prefixes.into_iter().map(|p| CommonPrefix { prefix: Some(p) }).collect();
        Ok((contents, prefixes, page.next_continuation))
    }
}
