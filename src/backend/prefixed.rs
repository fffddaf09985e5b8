//! A backend wrapper that roots a mount at a key prefix (`bucket:photos/2024`).
//!
//! The filesystem always speaks keys relative to the mount root; this wrapper
//! prepends the prefix on the way in and strips it on the way out, so no other
//! layer has to know that the mount is not at the bucket's root.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::forward::backend_wrapper;
use super::*;

pub struct PrefixedBackend {
    inner: Arc<dyn StorageBackend>,
    /// Always empty or ending in `/`.
    prefix: String,
}

impl PrefixedBackend {
    /// Wraps `inner` so that key `k` means `prefix/k`. An empty prefix returns `inner` unchanged.
    pub fn wrap(inner: Arc<dyn StorageBackend>, prefix: &str) -> Arc<dyn StorageBackend> {
        let p = prefix.trim_matches('/');
        if p.is_empty() {
            return inner;
        }
        Arc::new(PrefixedBackend { inner, prefix: format!("{p}/") })
    }

    fn full(&self, key: &str) -> String {
        format!("{}{}", self.prefix, key)
    }

    fn strip(&self, key: String) -> String {
        key.strip_prefix(&self.prefix).map(str::to_owned).unwrap_or(key)
    }

    fn strip_meta(&self, mut m: ObjectMeta) -> ObjectMeta {
        m.key = self.strip(m.key);
        m
    }
}

backend_wrapper! {
    impl StorageBackend for PrefixedBackend {
        async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
            self.inner.head(&self.full(key)).await.map(|m| self.strip_meta(m))
        }
        async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
            let mut r = req.clone();
            r.prefix = self.full(&req.prefix);
            let page = self.inner.list(&r).await?;
            Ok(ListPage {
                objects: page.objects.into_iter().map(|m| self.strip_meta(m)).collect(),
                common_prefixes: page.common_prefixes.into_iter().map(|p| self.strip(p)).collect(),
                next_continuation: page.next_continuation,
            })
        }
        async fn get_range(
            &self,
            key: &str,
            range: Option<Range<u64>>,
            opts: &GetOptions,
        ) -> BackendResult<GetResult> {
            let mut r = self.inner.get_range(&self.full(key), range, opts).await?;
            r.meta = self.strip_meta(r.meta);
            Ok(r)
        }
        async fn get_ranges(
            &self,
            key: &str,
            ranges: &[Range<u64>],
            opts: &GetOptions,
        ) -> BackendResult<Vec<Bytes>> {
            self.inner.get_ranges(&self.full(key), ranges, opts).await
        }
        async fn probe_multi_range(&self, key: &str, ranges: &[Range<u64>], opts: &GetOptions) -> BackendResult<()> {
            self.inner.probe_multi_range(&self.full(key), ranges, opts).await
        }
        async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
            self.inner.put(&self.full(key), data, opts).await.map(|m| self.strip_meta(m))
        }
        async fn delete(&self, key: &str) -> BackendResult<()> {
            self.inner.delete(&self.full(key)).await
        }
        async fn delete_many(&self, keys: &[String]) -> BackendResult<Vec<(String, BackendError)>> {
            let full: Vec<String> = keys.iter().map(|k| self.full(k)).collect();
            let failed = self.inner.delete_many(&full).await?;
            Ok(failed.into_iter().map(|(k, e)| (self.strip(k), e)).collect())
        }
        async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
            self.inner.copy(&self.full(src), &self.full(dst), metadata).await.map(|m| self.strip_meta(m))
        }
        async fn rename(&self, src: &str, dst: &str) -> BackendResult<()> {
            self.inner.rename(&self.full(src), &self.full(dst)).await
        }
    }
    impl MultipartStore for PrefixedBackend {
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
            self.inner.create_multipart(&self.full(key), opts).await
        }
        async fn upload_part(
            &self,
            key: &str,
            upload_id: &str,
            part_number: u32,
            data: Bytes,
        ) -> BackendResult<CompletedPart> {
            self.inner.upload_part(&self.full(key), upload_id, part_number, data).await
        }
        async fn complete_multipart(
            &self,
            key: &str,
            upload_id: &str,
            parts: &[CompletedPart],
        ) -> BackendResult<ObjectMeta> {
            self.inner.complete_multipart(&self.full(key), upload_id, parts).await.map(|m| self.strip_meta(m))
        }
        async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
            self.inner.abort_multipart(&self.full(key), upload_id).await
        }
        async fn list_parts(&self, key: &str, upload_id: &str) -> BackendResult<Vec<CompletedPart>> {
            self.inner.list_parts(&self.full(key), upload_id).await
        }
        async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
            self.inner.read_part(&self.full(key), upload_id, part).await
        }
        async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
            let ups = self.inner.list_multipart(&self.full(prefix)).await?;
            Ok(ups
                .into_iter()
                .map(|mut u| {
                    u.key = self.strip(u.key);
                    u
                })
                .collect())
        }
        async fn abort_multipart_under(&self, prefix: &str) -> BackendResult<usize> {
            self.inner.abort_multipart_under(&self.full(prefix)).await
        }
    }
    forward to inner: [
        capabilities, retries, check_bucket,
    ]
}
