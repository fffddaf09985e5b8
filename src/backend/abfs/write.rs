//! Writes over the DFS API: create (`PUT ?resource=file|directory`, carrying
//! properties and content type), append (`PATCH ?action=append&position=N`) and
//! flush (`PATCH ?action=flush&position=N&close=true`), which makes the appended
//! bytes the file's content. A create of an existing file truncates it at once, so
//! data is written aside in a hidden file and renamed onto the key
//! (`write_aside`; four requests for a small file): readers see
//! the old content or the new, a failed write keeps the old, and the write
//! condition rides on the rename. Copies, which the DFS API lacks, stream the
//! source into such a hidden file in bounded chunks.

use bytes::Bytes;
use reqwest::Method;

use super::{encode_properties, path_of, AbfsBackend, Req, RESERVED_DIR};
use crate::backend::azure::written_meta;
use crate::backend::*;

const MIB: u64 = 1024 * 1024;
/// The metadata name of `--enable-perms`' mode (`fs::attr::META_MODE`, which the
/// backend layer cannot name: the filesystem sits above it).
const MODE_META: &str = "bucketfs-mode";
/// Largest single append (service versions from 2019-12-12).
pub(super) const MAX_APPEND: u64 = 4000 * MIB;
/// Chunk of a server-side copy held in memory at a time.
const COPY_CHUNK: u64 = 8 * MIB;

impl AbfsBackend {
    /// Creates (or truncates) the file, or creates the directory, at `key`'s path
    /// with `opts`' properties, content type and condition.
    pub(super) async fn create(&self, key: &str, opts: &PutOptions) -> BackendResult<reqwest::Response> {
        let resource = if key.ends_with('/') { "directory" } else { "file" };
        let mut r = Req::new(Method::PUT, Some(path_of(key))).q("resource", resource);
        if !opts.user_metadata.is_empty() {
            r = r.h("x-ms-properties", encode_properties(&opts.user_metadata));
        }
        if let Some(ct) = &opts.content_type {
            r = r.h("x-ms-content-type", ct.clone());
        }
        self.az.call("create", key, r.conditions(opts)).await
    }

    /// Appends `data` at `position` of `path` (uncommitted until the flush).
    pub(super) async fn append(&self, path: &str, position: u64, data: Bytes) -> BackendResult<()> {
        let r = Req::new(Method::PATCH, Some(path))
            .q("action", "append")
            .q("position", position.to_string())
            .body(data);
        self.az.call("append", path, r).await.map(|_| ())
    }

    /// Commits the first `len` appended bytes of `path` and closes it.
    pub(super) async fn flush(
        &self,
        path: &str,
        len: u64,
        content_type: Option<&str>,
    ) -> BackendResult<reqwest::Response> {
        let mut r = Req::new(Method::PATCH, Some(path))
            .q("action", "flush")
            .q("position", len.to_string())
            .q("close", "true");
        // a flush sets the content headers: repeat the type given at creation
        if let Some(ct) = content_type {
            r = r.h("x-ms-content-type", ct.to_owned());
        }
        self.az.call("flush", path, r).await
    }

    pub(super) async fn put_impl(
        &self,
        key: &str,
        data: Bytes,
        opts: &PutOptions,
    ) -> BackendResult<ObjectMeta> {
        let size = data.len() as u64;
        if key.ends_with('/') && size > 0 {
            return Err(BackendError::invalid_argument(format!("put {key:?}: a directory holds no data")));
        }
        if size > MAX_APPEND {
            return Err(BackendError::invalid_argument(format!(
                "put {key:?}: {size} bytes exceed one append (4000 MiB); use a multipart upload"
            )));
        }
        let resp = if size == 0 {
            // one request, atomic already
            self.create(key, opts).await?
        } else {
            // written aside and renamed into place: readers never see the file empty or
            // half written, and a failed write leaves the old content
            self.write_aside("put", key, opts, |tmp| async move {
                self.append(&tmp, 0, data).await?;
                Ok(size)
            })
            .await?
        };
        self.apply_mode(key, &opts.user_metadata).await;
        Ok(written_meta(key, size, &resp, opts))
    }

    /// Writes `dst` aside: a new hidden file with `opts`' content type and
    /// properties, which `fill` appends to (returning the length), is flushed and
    /// renamed onto `dst` under `opts`' write condition. On failure the hidden
    /// file is removed. Returns the rename's answer (the new ETag), or the flush's
    /// if the rename's carries none.
    async fn write_aside<F, Fut>(
        &self,
        op: &'static str,
        dst: &str,
        opts: &PutOptions,
        fill: F,
    ) -> BackendResult<reqwest::Response>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = BackendResult<u64>>,
    {
        let tmp = format!("{RESERVED_DIR}/{op}-{}", uuid::Uuid::new_v4().simple());
        let plain = opts.without_conditions();
        let result = async {
            self.create(&tmp, &plain).await?;
            let len = fill(tmp.clone()).await?;
            let flushed = self.flush(&tmp, len, opts.content_type.as_deref()).await?;
            let renamed = self.rename_to(op, &tmp, dst, opts).await?;
            Ok(if renamed.headers().contains_key("etag") { renamed } else { flushed })
        }
        .await;
        if result.is_err() {
            let _ = self.delete(&tmp).await;
        }
        result
    }

    /// With `--enable-perms`' mode in `meta`, sets the path's POSIX permissions to
    /// it (`setAccessControl`, 4-digit octal), so other Data Lake clients see them.
    /// The properties stay the record bucketfs reads back; an account or identity
    /// that refuses (only the owner or a superuser may change them) changes nothing.
    /// The owner is not mapped: Data Lake owners are Entra object IDs, not uids.
    pub(super) async fn apply_mode(&self, key: &str, meta: &std::collections::BTreeMap<String, String>) {
        let Some(mode) = meta.get(MODE_META).and_then(|m| u32::from_str_radix(m.trim(), 8).ok()) else {
            return;
        };
        let r = Req::new(Method::PATCH, Some(path_of(key)))
            .q("action", "setAccessControl")
            .h("x-ms-permissions", format!("{:04o}", mode & 0o7777));
        if let Err(e) = self.az.call("set_access_control", key, r).await {
            tracing::debug!(target: "bucketfs::backend::abfs", key, error = %e, "permissions kept in properties only");
        }
    }

    /// Replaces the properties (and content type) of `key` in place.
    pub(super) async fn set_properties(&self, key: &str, opts: &PutOptions) -> BackendResult<()> {
        let mut r = Req::new(Method::PATCH, Some(path_of(key)))
            .q("action", "setProperties")
            .h("x-ms-properties", encode_properties(&opts.user_metadata));
        if let Some(ct) = &opts.content_type {
            r = r.h("x-ms-content-type", ct.clone());
        }
        self.az.call("set_properties", key, r).await.map(|_| ())
    }

    pub(super) async fn copy_impl(
        &self,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> BackendResult<ObjectMeta> {
        let source = self.head(src).await?;
        let opts = match metadata {
            Some(o) => o.without_conditions(),
            None => PutOptions {
                content_type: source.content_type.clone(),
                user_metadata: source.user_metadata.clone(),
                ..Default::default()
            },
        };
        if src == dst {
            if metadata.is_some() {
                self.set_properties(dst, &opts).await?;
                self.apply_mode(dst, &opts.user_metadata).await;
            }
            return self.head(dst).await;
        }
        if dst.ends_with('/') {
            self.create(dst, &opts).await?;
            self.apply_mode(dst, &opts.user_metadata).await;
            return self.head(dst).await;
        }
        // the copy appears whole or not at all
        let pin = GetOptions { if_match: Some(source.etag.clone()) };
        self.write_aside("copy", dst, &opts, |tmp| async move {
            let mut pos = 0;
            while pos < source.size {
                let end = (pos + COPY_CHUNK).min(source.size);
                let chunk = self.get_range(src, Some(pos..end), &pin).await?.data;
                if chunk.is_empty() {
                    return Err(BackendError::io(format!(
                        "copy {src:?}: source ended at {pos} of {}",
                        source.size
                    )));
                }
                let n = chunk.len() as u64;
                self.append(&tmp, pos, chunk).await?;
                pos += n;
            }
            Ok(pos)
        })
        .await?;
        self.apply_mode(dst, &opts.user_metadata).await;
        self.head(dst).await
    }
}
