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

/// `backend_wrapper! { impl StorageBackend for T { own } impl MultipartStore for T { own } forward to field: [names] }`
///
/// Writes the two `#[async_trait]` impls holding the own methods as written and, for
/// each name in `forward` (of either trait), a method that awaits the same call on
/// `self.field` with the same arguments.
macro_rules! backend_wrapper {
    (
        impl StorageBackend for $ty:ty { $($own:tt)* }
        impl MultipartStore for $ty2:ty { $($own2:tt)* }
        forward to $inner:ident: [$($name:ident),* $(,)?]
    ) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($own)*], [$($own2)*], [$($name)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], []) => {
        #[async_trait::async_trait]
        impl $crate::backend::StorageBackend for $ty {
            $($acc)*
        }
        #[async_trait::async_trait]
        impl $crate::backend::MultipartStore for $ty {
            $($acc2)*
        }
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [capabilities $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            fn capabilities(&self) -> $crate::backend::Capabilities { self.$inner.capabilities() }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [retries $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            fn retries(&self) -> u64 { self.$inner.retries() }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [check_bucket $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn check_bucket(&self) -> $crate::backend::BackendResult<()> { self.$inner.check_bucket().await }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [head $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn head(&self, key: &str) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.head(key).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [list $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn list(&self, req: &$crate::backend::ListRequest) -> $crate::backend::BackendResult<$crate::backend::ListPage> {
                self.$inner.list(req).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [get_range $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn get_range(
                &self,
                key: &str,
                range: Option<std::ops::Range<u64>>,
                opts: &$crate::backend::GetOptions,
            ) -> $crate::backend::BackendResult<$crate::backend::GetResult> {
                self.$inner.get_range(key, range, opts).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [get_ranges $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn get_ranges(
                &self,
                key: &str,
                ranges: &[std::ops::Range<u64>],
                opts: &$crate::backend::GetOptions,
            ) -> $crate::backend::BackendResult<Vec<bytes::Bytes>> {
                self.$inner.get_ranges(key, ranges, opts).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [probe_multi_range $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn probe_multi_range(
                &self,
                key: &str,
                ranges: &[std::ops::Range<u64>],
                opts: &$crate::backend::GetOptions,
            ) -> $crate::backend::BackendResult<()> {
                self.$inner.probe_multi_range(key, ranges, opts).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [put $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn put(
                &self,
                key: &str,
                data: bytes::Bytes,
                opts: &$crate::backend::PutOptions,
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.put(key, data, opts).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [delete $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn delete(&self, key: &str) -> $crate::backend::BackendResult<()> { self.$inner.delete(key).await }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [delete_many $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn delete_many(
                &self,
                keys: &[String],
            ) -> $crate::backend::BackendResult<Vec<(String, $crate::backend::BackendError)>> {
                self.$inner.delete_many(keys).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [copy $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn copy(
                &self,
                src: &str,
                dst: &str,
                metadata: Option<&$crate::backend::PutOptions>,
            ) -> $crate::backend::BackendResult<$crate::backend::ObjectMeta> {
                self.$inner.copy(src, dst, metadata).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [rename $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*
            async fn rename(&self, src: &str, dst: &str) -> $crate::backend::BackendResult<()> {
                self.$inner.rename(src, dst).await
            }
        ], [$($acc2)*], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [create_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
            async fn create_multipart(
                &self,
                key: &str,
                opts: &$crate::backend::PutOptions,
            ) -> $crate::backend::BackendResult<String> {
                self.$inner.create_multipart(key, opts).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [upload_part $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
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
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [complete_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
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
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [abort_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
            async fn abort_multipart(&self, key: &str, upload_id: &str) -> $crate::backend::BackendResult<()> {
                self.$inner.abort_multipart(key, upload_id).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [list_parts $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
            async fn list_parts(
                &self,
                key: &str,
                upload_id: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::CompletedPart>> {
                self.$inner.list_parts(key, upload_id).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [read_part $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
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
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [list_multipart $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
            async fn list_multipart(
                &self,
                prefix: &str,
            ) -> $crate::backend::BackendResult<Vec<$crate::backend::MultipartUploadInfo>> {
                self.$inner.list_multipart(prefix).await
            }
        ], [$($rest)*]);
    };
    (@munch $ty:ty, $inner:ident, [$($acc:tt)*], [$($acc2:tt)*], [abort_multipart_under $($rest:ident)*]) => {
        $crate::backend::forward::backend_wrapper!(@munch $ty, $inner, [$($acc)*], [$($acc2)*
            async fn abort_multipart_under(&self, prefix: &str) -> $crate::backend::BackendResult<usize> {
                self.$inner.abort_multipart_under(prefix).await
            }
        ], [$($rest)*]);
    };
}

pub(crate) use backend_wrapper;
