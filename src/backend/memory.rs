//! An in-memory backend for unit tests of the layers above the backend trait.
//!
//! It follows S3 semantics closely enough (flat keys, delimiter listings,
//! multipart with a minimum part size, conditional puts) for the filesystem,
//! read-ahead and upload code to be exercised without a server. Integration
//! tests never use it: they run against the embedded store and real servers.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use async_trait::async_trait;
use bytes::Bytes;

use super::*;

#[derive(Default)]
struct Upload {
    key: String,
    opts: PutOptions,
    parts: BTreeMap<u32, Bytes>,
    initiated: Option<SystemTime>,
}

pub struct MemoryBackend {
    objects: Mutex<BTreeMap<String, (ObjectMeta, Bytes)>>,
    uploads: Mutex<HashMap<String, Upload>>,
    next_id: AtomicU64,
    caps: Capabilities,
    /// Number of `get_range`/`get_ranges` calls, for tests that count requests.
    pub gets: AtomicU64,
    /// Number of native `rename` calls that moved an object.
    pub renames: AtomicU64,
    /// Listings leave out user metadata and content type, as S3 listings do.
    pub bare_listings: std::sync::atomic::AtomicBool,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryBackend {
    pub fn new() -> Self {
        Self::with_capabilities(Capabilities {
            name: "memory",
            multi_range: MultiRangeMode::Native,
            parallel_multipart: true,
            min_part_size: 5 * 1024 * 1024,
            max_part_size: 5 * 1024 * 1024 * 1024,
            max_parts: 10_000,
            rename: false,
            native_dirs: false,
            conditional_put: true,
            list_metadata: false,
            list_attrs: false,
            // it can (`read_part`), but like S3 by default; tests turn it on
            readable_upload_parts: false,
        })
    }

    pub fn with_capabilities(caps: Capabilities) -> Self {
        MemoryBackend {
            objects: Mutex::default(),
            uploads: Mutex::default(),
            next_id: AtomicU64::new(1),
            caps,
            gets: AtomicU64::new(0),
            renames: AtomicU64::new(0),
            bare_listings: Default::default(),
        }
    }

    fn etag_of(data: &[u8]) -> String {
        format!("{:016x}", xxhash_rust::xxh3::xxh3_64(data))
    }

    fn store(&self, key: &str, data: Bytes, opts: &PutOptions, etag: String) -> BackendResult<ObjectMeta> {
        let mut objs = self.objects.lock().unwrap();
        if opts.if_none_match_any && objs.contains_key(key) {
            return Err(BackendError::precondition_failed(key));
        }
        if let Some(m) = &opts.if_match {
            if objs.get(key).map(|(o, _)| &o.etag) != Some(m) {
                return Err(BackendError::precondition_failed(key));
            }
        }
        let meta = ObjectMeta {
            key: key.into(),
            size: data.len() as u64,
            etag,
            last_modified: SystemTime::now(),
            content_type: opts.content_type.clone(),
            user_metadata: opts.user_metadata.clone(),
        };
        objs.insert(key.into(), (meta.clone(), data));
        Ok(meta)
    }

    /// Number of in-progress multipart uploads (for leak checks in tests).
    pub fn pending_uploads(&self) -> usize {
        self.uploads.lock().unwrap().len()
    }
}

#[async_trait]
impl StorageBackend for MemoryBackend {
    fn capabilities(&self) -> Capabilities {
        self.caps.clone()
    }
    async fn check_bucket(&self) -> BackendResult<()> {
        Ok(())
    }
    async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
        let objs = self.objects.lock().unwrap();
        objs.get(key).map(|(m, _)| m.clone()).ok_or_else(|| BackendError::not_found(key))
    }
    async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
        let objs = self.objects.lock().unwrap();
        let max = if req.max_keys == 0 { 1000 } else { req.max_keys };
        let start = req.continuation.clone().unwrap_or_default();
        let mut page = ListPage::default();
        let mut last = String::new();
        for (k, (m, _)) in objs.range(req.prefix.clone()..) {
            if !k.starts_with(&req.prefix) {
                break;
            }
            if !start.is_empty() && k.as_str() <= start.as_str() {
                continue;
            }
            let rest = &k[req.prefix.len()..];
            let entry = req
                .delimiter
                .as_deref()
                .and_then(|d| rest.find(d).map(|i| format!("{}{}", req.prefix, &rest[..i + d.len()])));
            if let Some(cp) = &entry {
                if page.common_prefixes.last() == Some(cp)
                    || (!start.is_empty() && cp.as_str() <= start.as_str() && start.starts_with(cp.as_str()))
                {
                    continue;
                }
            }
            if page.objects.len() + page.common_prefixes.len() >= max {
                page.next_continuation = Some(last.clone());
                break;
            }
            match entry {
                Some(cp) => {
                    // resume after everything under this prefix
                    last = format!("{cp}\u{10FFFF}");
                    page.common_prefixes.push(cp);
                }
                None => {
                    last = k.clone();
                    let mut m = m.clone();
                    if self.bare_listings.load(Ordering::Relaxed) {
                        m.user_metadata.clear();
                        m.content_type = None;
                    }
                    page.objects.push(m);
                }
            }
        }
        Ok(page)
    }
    async fn get_range(
        &self,
        key: &str,
        range: Option<Range<u64>>,
        opts: &GetOptions,
    ) -> BackendResult<GetResult> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        let objs = self.objects.lock().unwrap();
        let (m, d) = objs.get(key).ok_or_else(|| BackendError::not_found(key))?;
        if let Some(e) = &opts.if_match {
            if e != &m.etag {
                return Err(BackendError::precondition_failed(key));
            }
        }
        let len = d.len() as u64;
        let r = range.unwrap_or(0..len);
        let (s, e) = (r.start.min(len), r.end.min(len));
        Ok(GetResult { meta: m.clone(), data: d.slice(s as usize..e.max(s) as usize) })
    }
    async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        opts: &GetOptions,
    ) -> BackendResult<Vec<Bytes>> {
        let whole = self.get_range(key, None, opts).await?;
        let len = whole.data.len() as u64;
        Ok(ranges
            .iter()
            .map(|r| {
                whole.data.slice(r.start.min(len) as usize..r.end.min(len).max(r.start.min(len)) as usize)
            })
            .collect())
    }
    async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
        let etag = Self::etag_of(&data);
        self.store(key, data, opts, etag)
    }
    async fn delete(&self, key: &str) -> BackendResult<()> {
        self.objects.lock().unwrap().remove(key);
        Ok(())
    }
    async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
        let (m, d) = {
            let objs = self.objects.lock().unwrap();
            objs.get(src).cloned().ok_or_else(|| BackendError::not_found(src))?
        };
        let opts = metadata.cloned().unwrap_or(PutOptions {
            content_type: m.content_type.clone(),
            user_metadata: m.user_metadata.clone(),
            ..Default::default()
        });
        self.store(dst, d, &opts, m.etag)
    }
    /// A native rename (one call, nothing copied) when the capabilities say so, as a
    /// backend with real renames (ADLS Gen2, S3 Express) would do it.
    async fn rename(&self, src: &str, dst: &str) -> BackendResult<()> {
        if !self.caps.rename {
            return Err(BackendError::not_supported("rename"));
        }
        let mut objs = self.objects.lock().unwrap();
        let (mut meta, data) = objs.remove(src).ok_or_else(|| BackendError::not_found(src))?;
        meta.key = dst.into();
        objs.insert(dst.into(), (meta, data));
        self.renames.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[async_trait]
impl MultipartStore for MemoryBackend {
    async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
        let id = format!("upload-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        self.uploads.lock().unwrap().insert(
            id.clone(),
            Upload {
                key: key.into(),
                opts: opts.clone(),
                parts: BTreeMap::new(),
                initiated: Some(SystemTime::now()),
            },
        );
        Ok(id)
    }
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        part_number: u32,
        data: Bytes,
    ) -> BackendResult<CompletedPart> {
        if part_number == 0 || part_number > self.caps.max_parts {
            return Err(BackendError::invalid_argument(format!("part number {part_number}")));
        }
        let mut ups = self.uploads.lock().unwrap();
        let up = ups
            .get_mut(upload_id)
            .filter(|u| u.key == key)
            .ok_or_else(|| BackendError::no_such_upload(upload_id))?;
        let part = CompletedPart { part_number, etag: Self::etag_of(&data), size: data.len() as u64 };
        up.parts.insert(part_number, data);
        Ok(part)
    }
    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: &[CompletedPart],
    ) -> BackendResult<ObjectMeta> {
        let up = {
            let mut ups = self.uploads.lock().unwrap();
            match ups.get(upload_id) {
                Some(u) if u.key == key => {}
                _ => return Err(BackendError::no_such_upload(upload_id)),
            }
            ups.remove(upload_id).unwrap()
        };
        let mut data = Vec::new();
        let mut prev = 0;
        for (i, p) in parts.iter().enumerate() {
            if p.part_number <= prev {
                return Err(BackendError::invalid_argument("parts not in ascending order"));
            }
            prev = p.part_number;
            let d = up
                .parts
                .get(&p.part_number)
                .ok_or_else(|| BackendError::invalid_argument(format!("missing part {}", p.part_number)))?;
            if Self::etag_of(d) != p.etag {
                return Err(BackendError::invalid_argument(format!(
                    "etag mismatch for part {}",
                    p.part_number
                )));
            }
            if i + 1 < parts.len() && (d.len() as u64) < self.caps.min_part_size {
                return Err(BackendError::entity_too_small(format!("part {}", p.part_number)));
            }
            data.extend_from_slice(d);
        }
        let etag = format!("{}-{}", Self::etag_of(&data), parts.len());
        self.store(key, Bytes::from(data), &up.opts, etag)
    }
    async fn read_part(&self, key: &str, upload_id: &str, part: &CompletedPart) -> BackendResult<Bytes> {
        let ups = self.uploads.lock().unwrap();
        let up = ups.get(upload_id).filter(|u| u.key == key);
        let up = up.ok_or_else(|| BackendError::no_such_upload(upload_id))?;
        match up.parts.get(&part.part_number) {
            Some(d) if Self::etag_of(d) == part.etag => Ok(d.clone()),
            _ => Err(BackendError::not_found(format!("{key}: part {} as {}", part.part_number, part.etag))),
        }
    }
    async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
        let mut ups = self.uploads.lock().unwrap();
        match ups.get(upload_id) {
            Some(u) if u.key == key => {
                ups.remove(upload_id);
                Ok(())
            }
            _ => Err(BackendError::no_such_upload(upload_id)),
        }
    }
    async fn list_multipart(&self, prefix: &str) -> BackendResult<Vec<MultipartUploadInfo>> {
        let ups = self.uploads.lock().unwrap();
        let mut v: Vec<_> = ups
            .iter()
            .filter(|(_, u)| u.key.starts_with(prefix))
            .map(|(id, u)| MultipartUploadInfo {
                key: u.key.clone(),
                upload_id: id.clone(),
                initiated: u.initiated.unwrap_or(SystemTime::UNIX_EPOCH),
            })
            .collect();
        v.sort_by(|a, b| (&a.key, &a.upload_id).cmp(&(&b.key, &b.upload_id)));
        Ok(v)
    }
}
