//! Azure Data Lake Storage Gen2: `abfs://filesystem[/prefix]` (also `abfss://`)
//! through the DFS REST API of a storage account with the hierarchical namespace.
//!
//! Why a backend of its own beside `wasb://`: on such an account the DFS endpoint
//! has real directories and renames a file or a whole directory in one atomic
//! request, where the blob API copies every blob. Requests, signing (Shared Key,
//! SAS, Entra ID bearer tokens), credentials, retries and error codes are the
//! Azure Blob backend's ([`super::azure`]): an [`AzureBackend`] pointed at the DFS
//! endpoint builds and sends every request here, since the DFS service signs
//! with the blob service's canonicalization and answers with the same
//! `x-ms-error-code`s. This module says which requests.
//!
//! Mapping of the object model:
//! - A key is a path; a directory marker key (`dir/`) is the directory `dir`
//!   itself (`Capabilities::native_dirs`): `put` creates it, `delete` removes
//!   it only when empty (`DirectoryNotEmpty` -> ENOTEMPTY), `rename` moves it
//!   with everything below in one request, `head` of `dir` (no slash) is
//!   `NotFound` so a directory never looks like a file.
//! - Listing ([`list`]): `?resource=filesystem&directory=D&recursive=...` with
//!   the continuation token; directories are common prefixes (with a
//!   delimiter) or marker keys (recursive listings).
//! - User metadata is the path's `x-ms-properties` (names as on the blob
//!   service, values base64); listings do not carry it (`list_metadata` false).
//! - Writes ([`write`]): create + append + flush(close) of a hidden file renamed
//!   onto the key (an empty file or a directory: one create); multipart uploads
//!   ([`multipart`]) append in order to a hidden file and rename it into place
//!   at completion. Either way the destination changes atomically and the write
//!   condition is checked by the rename.
//! - Reads: GET on the path with a range, one range per request
//!   (`MultiRangeMode::ParallelSingles`), pinned with `If-Match`.

mod list;
mod multipart;
mod write;

use std::collections::HashMap;
use std::ops::Range;
use std::sync::Mutex;

use async_trait::async_trait;
use base64::Engine;
use bytes::Bytes;
use reqwest::Method;

use super::azure::config::{AzureConfig, Credential};
use super::azure::{decode_meta_name, encode_meta_name, meta_from_headers, AzureBackend, Req};
use super::*;
use crate::object::ErrorKind;

/// Hidden directory at the filesystem root holding unfinished multipart uploads.
pub const RESERVED_DIR: &str = ".bucketfs-multipart";
const MIB: u64 = 1024 * 1024;

pub struct AbfsBackend {
    az: AzureBackend,
    uploads: Mutex<HashMap<String, multipart::OpenUpload>>,
}

/// The path of `key` on the server: a marker key names its directory.
fn path_of(key: &str) -> &str {
    key.trim_end_matches('/')
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// `x-ms-properties`: `name=base64(value),...`, names as the blob service stores
/// metadata names (see [`encode_meta_name`]).
fn encode_properties(meta: &std::collections::BTreeMap<String, String>) -> String {
    meta.iter()
        .map(|(k, v)| format!("{}={}", encode_meta_name(k), b64().encode(v)))
        .collect::<Vec<_>>()
        .join(",")
}

fn decode_properties(v: &str) -> std::collections::BTreeMap<String, String> {
    v.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').filter(|(k, _)| !k.trim().is_empty())?;
            let v = String::from_utf8(b64().decode(v.trim()).ok()?).ok()?;
            Some((decode_meta_name(k.trim()), v))
        })
        .collect()
}

impl AbfsBackend {
    /// `cfg` must name the DFS endpoint (`AzureRequest::dfs`).
    pub fn new(cfg: AzureConfig) -> BackendResult<AbfsBackend> {
        Ok(AbfsBackend { az: AzureBackend::new(cfg)?, uploads: Mutex::default() })
    }

    /// Creates the filesystem (tests and `bucketfs mb`); an existing one is fine.
    pub async fn create_filesystem(&self) -> BackendResult<()> {
        let r = Req::new(Method::PUT, None).q("resource", "filesystem");
        match self.az.call_raw("create_filesystem", "", r).await? {
            Ok(_) => Ok(()),
            Err(e) if e.code == "FilesystemAlreadyExists" => Ok(()),
            Err(e) => Err(e.into_error(self.az.ctx("create_filesystem", ""), &self.az.cfg.container)),
        }
    }

    fn cfg(&self) -> &AzureConfig {
        &self.az.cfg
    }

    /// The properties of `path` (HEAD): its metadata and whether it is a directory.
    async fn properties(&self, key: &str) -> BackendResult<(ObjectMeta, bool)> {
        let resp = self.az.call("head", key, Req::new(Method::HEAD, Some(path_of(key)))).await?;
        let mut meta = meta_from_headers(key, &resp);
        let h = resp.headers();
        let is_dir = h.get("x-ms-resource-type").and_then(|v| v.to_str().ok()) == Some("directory");
        meta.user_metadata =
            h.get("x-ms-properties").and_then(|v| v.to_str().ok()).map(decode_properties).unwrap_or_default();
        if is_dir {
            meta.size = 0;
            meta.content_type = None;
        }
        Ok((meta, is_dir))
    }

    /// Renames `src` onto `dst` in one request, with `opts`' write condition on
    /// the destination. The service wants the destination's parent to exist
    /// (object stores have no such rule): when it does not, it is created (with
    /// its ancestors) and the rename sent once more.
    pub(super) async fn rename_to(
        &self,
        op: &'static str,
        src: &str,
        dst: &str,
        opts: &PutOptions,
    ) -> BackendResult<reqwest::Response> {
        let request = || {
            Req::new(Method::PUT, Some(path_of(dst)))
                .h("x-ms-rename-source", self.rename_source(src))
                .conditions(opts)
        };
        match self.az.call_raw(op, src, request()).await? {
            Ok(resp) => return Ok(resp),
            Err(e) if e.code == "RenameDestinationParentPathNotFound" => {}
            Err(e) => return Err(e.into_error(self.az.ctx(op, src), &self.cfg().container)),
        }
        if let Some((parent, _)) = path_of(dst).rsplit_once('/') {
            self.create(&format!("{parent}/"), &PutOptions::default()).await?;
        }
        self.az.call(op, src, request()).await
    }

    /// `x-ms-rename-source` of `key`: `/filesystem/path`, encoded, with the SAS
    /// token when that is the credential (the source is authorized separately).
    fn rename_source(&self, key: &str) -> String {
        let mut s = format!(
            "/{}/{}",
            crate::backend::http::encode(&self.cfg().container),
            crate::backend::http::encode_path(path_of(key))
        );
        if let Credential::Sas(sas) = &self.cfg().credential {
            s.push('?');
            s.push_str(sas);
        }
        s
    }
}

#[async_trait]
impl StorageBackend for AbfsBackend {
    fn retries(&self) -> u64 {
        self.az.retries()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            name: "abfs",
            // one range per request, as on the blob service
            multi_range: MultiRangeMode::ParallelSingles,
            // appends land at positions computed from the parts before: in order
            parallel_multipart: false,
            min_part_size: 4 * MIB,
            max_part_size: write::MAX_APPEND,
            max_parts: multipart::MAX_PARTS,
            rename: true,
            native_dirs: true,
            conditional_put: true,
            // the DFS listing carries no properties
            list_metadata: false,
            list_attrs: false,
            readable_upload_parts: false,
        }
    }

    async fn check_bucket(&self) -> BackendResult<()> {
        let req = ListRequest::probe();
        match self.list_page(&req, false).await {
            Ok(_) => Ok(()),
            Err(e @ BackendError { kind: ErrorKind::AccessDenied, .. }) => Err(e.map_context(|m| {
                format!(
                    "filesystem {:?} of account {:?}: {m}; check the account name and its credentials ({:?}), and that the account has the hierarchical namespace (else use wasb://)",
                    self.cfg().container, self.cfg().account, self.cfg().credential
                )
            })),
            Err(e) => Err(e),
        }
    }

    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let (meta, is_dir) = self.properties(key).await?;
        // a directory answers for its marker key only, never as a file
        if is_dir != key.ends_with('/') {
            return Err(BackendError::not_found(key));
        }
        Ok(meta)
    }

    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        self.list_page(req, false).await
    }

    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        let mut r = self.az.get_range_impl(path_of(key), range, opts).await?;
        r.meta.key = key.to_owned();
        Ok(r)
    }

    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        self.put_impl(key, data, opts).await
    }

    async fn delete(&self, key: &str) -> BackendResult<()> {
        let mut r = Req::new(Method::DELETE, Some(path_of(key)));
        if key.ends_with('/') {
            // the server refuses a directory that still has entries: ENOTEMPTY
            r = r.q("recursive", "false");
        }
        match self.az.call("delete", key, r).await {
            Ok(_) | Err(BackendError { kind: ErrorKind::NotFound, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        self.copy_impl(src, dst, metadata).await
    }

    /// One request whatever the size: a file, or a directory with everything below.
    async fn rename(&self, src: &str, dst: &str) -> BackendResult<()> {
        self.rename_to("rename", src, dst, &PutOptions::default()).await.map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn properties_round_trip() {
        let m = std::collections::BTreeMap::from([
            ("bucketfs-mode".to_owned(), "100644".to_owned()),
            ("plain".to_owned(), "a,b=c".to_owned()),
        ]);
        let enc = encode_properties(&m);
        assert!(!enc.contains("a,b"), "values are base64: {enc}");
        assert_eq!(decode_properties(&enc), m);
        assert!(decode_properties("").is_empty());
        assert!(decode_properties("x=!!!,=").is_empty(), "junk is skipped, not a panic");
    }

    #[test]
    fn marker_keys_name_their_directory() {
        assert_eq!(path_of("a/b/"), "a/b");
        assert_eq!(path_of("a/b"), "a/b");
    }
}
