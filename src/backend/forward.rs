//! One place that writes "pass this call to the wrapped backend".
//!
//! A wrapper (write retries, the upload journal, the attribute index, the test
//! doubles) changes a few of [`StorageBackend`](super::StorageBackend)'s calls and
//! passes the rest on unchanged. Written by hand, that is about 150 lines of
//! forwarding per wrapper (issue 16 counted three copies). [`backend_wrapper!`] takes
//! the wrapper's own methods and the names of the ones to pass on, and writes one
//! `#[async_trait]` impl with both.
//!
//! It is a tt-muncher rather than a macro called inside the impl because
//! `#[async_trait]` rewrites `async fn`s before inner macros expand: each forwarded
//! method must already be an `async fn` in the tokens the attribute sees.

/// `backend_wrapper! { impl StorageBackend for Type { own methods } forward to field: [names] }`
///
/// Writes `#[async_trait] impl StorageBackend for Type` holding the own methods as
/// written and, for each name in `forward`, a method that awaits the same call on
/// `self.field` with the same arguments.
macro_rules! backend_wrapper {
    (impl StorageBackend for $ty:ty { $($own:tt)* } forward to $inner:ident: [$($name:ident),* $(,)?]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($own)*], [$($name)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], []) => {
        #[async_trait::async_trait]
        impl $crate::backend::StorageBackend for $ty {
            $($acc)*
        }
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [capabilities $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            fn capabilities(&self) -> $crate::backend::Capabilities { self.$inner.capabilities() }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [retries $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            fn retries(&self) -> u64 { self.$inner.retries() }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [check_bucket $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn check_bucket(&self) -> $crate::backend::BackendResult<()> { self.$inner.check_bucket().await }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [head $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn head(&self, key: &str) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.head(key).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [list $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn list(&self, req: &$crate::backend::ListRequest) -> $crate::backend::BackendResult<$crate::backend::ListPage> {
                self.$inner.list(req).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [get_range $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn get_range(
                &self,
                key: &str,
                range: Option<std::ops::Range<u64>>,
                opts: &$crate::backend::GetOptions,
            ) -> $crate::backend::BackendResult<$crate::backend::GetResult> {
                self.$inner.get_range(key, range, opts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [get_ranges $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn get_ranges(
                &self,
                key: &str,
                ranges: &[std::ops::Range<u64>],
                opts: &$crate::backend::GetOptions,
            ) -> $crate::backend::BackendResult<Vec<bytes::Bytes>> {
                self.$inner.get_ranges(key, ranges, opts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [put $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn put(
                &self,
                key: &str,
                data: bytes::Bytes,
                opts: &$crate::backend::PutOptions,
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.put(key, data, opts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [delete $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn delete(&self, key: &str) -> $crate::backend::BackendResult<()> { self.$inner.delete(key).await }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [delete_many $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn delete_many(
                &self,
                keys: &[String],
            ) -> $crate::backend::BackendResult<Vec<(String, $crate::backend::BackendError)>> {
                self.$inner.delete_many(keys).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [copy $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn copy(
                &self,
                src: &str,
                dst: &str,
                metadata: Option<&$crate::backend::PutOptions>,
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.copy(src, dst, metadata).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [rename $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn rename(&self, src: &str, dst: &str) -> $crate::backend::BackendResult<()> {
                self.$inner.rename(src, dst).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [create_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn create_multipart(
                &self,
                key: &str,
                opts: &$crate::backend::PutOptions,
            ) -> $crate::backend::BackendResult<String> {
                self.$inner.create_multipart(key, opts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [upload_part $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn upload_part(
                &self,
                key: &str,
                upload_id: &str,
                part_number: u32,
                data: bytes::Bytes,
            ) -> $crate::backend::BackendResult<$crate::backend::CompletedPart> {
                self.$inner.upload_part(key, upload_id, part_number, data).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [complete_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn complete_multipart(
                &self,
                key: &str,
                upload_id: &str,
                parts: &[$crate::backend::CompletedPart],
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.complete_multipart(key, upload_id, parts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [abort_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn abort_multipart(&self, key: &str, upload_id: &str) -> $crate::backend::BackendResult<()> {
                self.$inner.abort_multipart(key, upload_id).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [list_parts $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn list_parts(
                &self,
                key: &str,
                upload_id: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::CompletedPart>> {
                self.$inner.list_parts(key, upload_id).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [read_part $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn read_part(
                &self,
                key: &str,
                upload_id: &str,
                part: &$crate::backend::CompletedPart,
            ) -> $crate::backend::BackendResult<bytes::Bytes> {
                self.$inner.read_part(key, upload_id, part).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [list_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn list_multipart(
                &self,
                prefix: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::MultipartUploadInfo>> {
                self.$inner.list_multipart(prefix).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [abort_multipart_under $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn abort_multipart_under(&self, prefix: &str) -> $crate::backend::BackendResult<usize> {
                self.$inner.abort_multipart_under(prefix).await
            }
        ], [$($rest)*]);
    };
}

pub(crate) use backend_wrapper;
