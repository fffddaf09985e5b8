//! Listing-visible attributes for backends whose listings omit user metadata (S3).
//!
//! # Why
//!
//! bucketfs keeps what a key cannot say in user metadata: `bucketfs-type:
//! symlink` marks a symlink, `bucketfs-mode/uid/gid/mtime` hold `--enable-perms`
//! attributes. GCS, Azure and the embedded store return user metadata with every
//! listing entry, but an S3 ListObjectsV2 page has only key, size, ETag and date.
//! Without more, every small object of a listing could be a symlink, so `ls -l`
//! needed one HEAD per entry, one after another: 48 s for 2,000 files at 20 ms
//! (issue 11), where s3fs takes 2.8 s. Parallel HEADs would still cost a request
//! per entry, and a bucket of small files is all candidates.
//!
//! # How
//!
//! This wrapper keeps those attributes where a listing sees them: for an object
//! `dir/name` that carries any of the indexed metadata names, a zero-byte
//! **index entry** is written whose *key* holds the attributes:
//!
//! ```text
//! dir/.bucketfs-attrs/<name>/<etag>/<attrs>      e.g.  d/.bucketfs-attrs/ln/9a0364b9e99bb480dd25e1f0284c8555/type=symlink
//! ```
//!
//! A delimiter listing of `dir/` shows the hidden common prefix
//! `dir/.bucketfs-attrs/`; when it is there (or may be on a later page), one more
//! LIST of that prefix (1,000 entries a page) reads every index entry of the
//! directory, and the attributes of each object whose ETag matches are merged
//! into its listing entry. So a listing of N files costs N/1000 LISTs plus one
//! per 1000 *marked* entries, never a request per entry, and the filesystem
//! trusts these entries ([`Capabilities::list_attrs`]).
//!
//! The ETag in the index key ties the entry to one version of the object: an
//! object replaced by another tool (new content, new ETag) simply loses the
//! attributes, as it would lose its metadata. Index entries are the wrapper's own
//! business: they never appear in delimiter listings, cannot be looked up, and
//! their names cannot be created (`InvalidKey`).
//!
//! Upkeep, on every write path of the wrapped backend (`put`, `copy`,
//! `complete_multipart`): an object written with indexed attributes gets its
//! index entry after the write succeeds (one more PUT, only for marked objects),
//! and the entries it replaces are deleted when this mount knows them (from its
//! own writes and from listings it merged); a deleted object's known entries go
//! with it, and removing a directory marker removes the directory's index.
//! Failures of this upkeep are logged, never returned: the object itself was
//! stored, and its metadata (HEAD) stays the truth.
//!
//! Limits (docs/SEMANTICS.md): directory markers are not indexed (a listing shows
//! a subdirectory with the mount's directory mode until it is looked up); symlinks
//! and permissions written by bucketfs before this index existed, or through a
//! backend without it, are not seen by S3 listings until rewritten; an index
//! entry left by a delete made elsewhere applies again only to an object with the
//! same name and byte-identical content (same ETag).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use lru::LruCache;
use tracing::Instrument;

use super::forward::backend_wrapper;
use super::*;

/// The hidden directory of index entries inside every indexed directory.
pub const INDEX_DIR: &str = ".bucketfs-attrs";
/// Objects whose index entries this mount remembers (for cleanup on overwrite and delete).
const KNOWN_CAPACITY: usize = 64 * 1024;
/// How long the index of a directory read for its first page serves its later pages.
const INDEX_REUSE: Duration = Duration::from_secs(30);
/// The longest key S3 accepts.
const MAX_KEY: usize = 1024;
/// Listings limited to this many keys are existence probes and get no attributes.
const PROBE_MAX_KEYS: usize = 10;

const TARGET: &str = "bucketfs::backend";

/// What this mount knows about one object's index entries.
#[derive(Clone, Debug, Default)]
struct Known {
    /// The encoded attributes of the current version (empty: none).
    attrs: String,
    /// Index entry keys that exist for this name (any version).
    entries: Vec<String>,
}

/// One directory's index: name -> (etag, encoded attrs, entry key) of every entry.
type DirIndex = HashMap<String, Vec<(String, String, String)>>;

pub struct AttrIndexBackend {
    inner: Arc<dyn StorageBackend>,
    /// User metadata names kept in the index (`bucketfs-type`, `bucketfs-mode`, ...).
    names: &'static [&'static str],
    known: Mutex<LruCache<String, Known>>,
    /// Directory prefix -> its index, as read for the latest listing of it.
    indexes: Mutex<HashMap<String, (Instant, Arc<DirIndex>)>>,
    /// Upload id -> encoded attributes given at `create_multipart`.
    uploads: Mutex<HashMap<String, String>>,
}

impl AttrIndexBackend {
    /// Wraps `inner` when its listings lack user metadata; returns it unchanged otherwise.
    pub fn wrap_if_needed(
        inner: Arc<dyn StorageBackend>,
        names: &'static [&'static str],
    ) -> Arc<dyn StorageBackend> {
        if inner.capabilities().list_metadata {
            return inner;
        }
        Arc::new(AttrIndexBackend {
            inner,
            names,
            known: Mutex::new(crate::memory::growing_lru(KNOWN_CAPACITY)),
            indexes: Mutex::default(),
            uploads: Mutex::default(),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, LruCache<String, Known>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The indexed attributes of `md`, encoded for an index key; empty when none.
    fn encode_attrs(&self, md: &BTreeMap<String, String>) -> String {
        let mut parts = Vec::new();
        for name in self.names {
            if let Some(v) = md.get(*name) {
                let short = name.strip_prefix("bucketfs-").unwrap_or(name);
                parts.push(format!("{}={}", escape(short), escape(v)));
            }
        }
        parts.join(",")
    }

    /// Decodes `attrs` into metadata entries; `None` if malformed or naming something not indexed.
    fn decode_attrs(&self, attrs: &str) -> Option<BTreeMap<String, String>> {
        let mut md = BTreeMap::new();
        for pair in attrs.split(',') {
            let (k, v) = pair.split_once('=')?;
            let k = format!("bucketfs-{}", unescape(k)?);
            if !self.names.contains(&k.as_str()) {
                return None;
            }
            md.insert(k, unescape(v)?);
        }
        Some(md)
    }

    /// Reads every index entry of directory `dir` (a prefix ending in `/`, or empty).
    async fn read_index(&self, dir: &str) -> BackendResult<Arc<DirIndex>> {
        let prefix = format!("{dir}{INDEX_DIR}/");
        let mut index = DirIndex::new();
        let mut continuation = None;
        loop {
            let req = ListRequest { prefix: prefix.clone(), delimiter: None, continuation, max_keys: 0 };
            let page = self.inner.list(&req).await?;
            for o in page.objects {
                let Some(rest) = o.key.strip_prefix(&prefix) else { continue };
                let mut it = rest.splitn(3, '/');
                let (Some(name), Some(etag), Some(attrs)) = (it.next(), it.next(), it.next()) else {
                    continue;
                };
                let Some(etag) = unescape(etag) else { continue };
                index.entry(name.to_owned()).or_default().push((etag, attrs.to_owned(), o.key.clone()));
            }
            continuation = page.next_continuation;
            if continuation.is_none() {
                break;
            }
        }
        let index = Arc::new(index);
        self.indexes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dir.to_owned(), (Instant::now(), index.clone()));
        Ok(index)
    }

    /// The index read for an earlier page of the same listing, if still fresh.
    fn reuse_index(&self, dir: &str) -> Option<Arc<DirIndex>> {
        let mut m = self.indexes.lock().unwrap_or_else(|p| p.into_inner());
        m.retain(|_, (t, _)| t.elapsed() < INDEX_REUSE);
        m.get(dir).map(|(_, i)| i.clone())
    }

    /// Adds the attributes of matching index entries to the objects of a page of `dir`.
    fn merge(&self, dir: &str, objects: &mut [ObjectMeta], index: &DirIndex) {
        let mut known = self.known();
        for o in objects.iter_mut() {
            let Some(name) = o.key.strip_prefix(dir) else { continue };
            let Some(entries) = index.get(name) else { continue };
            let mut k =
                Known { attrs: String::new(), entries: entries.iter().map(|e| e.2.clone()).collect() };
            if let Some((_, attrs, _)) = entries.iter().find(|(etag, _, _)| *etag == o.etag) {
                if let Some(md) = self.decode_attrs(attrs) {
                    for (name, v) in md {
                        o.user_metadata.entry(name).or_insert(v);
                    }
                    k.attrs = attrs.clone();
                }
            }
            known.put(o.key.clone(), k);
        }
    }

    /// Brings the index entries of `key` in line with its new version `meta`
    /// carrying `attrs` (encoded; empty = none). Failures are logged, not returned.
    async fn reindex(&self, key: &str, meta: &ObjectMeta, attrs: String) {
        let Some((dir, name)) = split_key(key) else { return };
        let old = self.known().pop(key).unwrap_or_default();
        let mut keep = Vec::new();
        let mut attrs = attrs;
        let head = format!("{dir}{INDEX_DIR}/{name}/{}/", escape(&meta.etag));
        // S3 keys end at 1,024 bytes: the names given last (a symlink's target copy) give way first
        while head.len() + attrs.len() > MAX_KEY && attrs.contains(',') {
            attrs.truncate(attrs.rfind(',').expect("contains ,"));
        }
        if !attrs.is_empty() {
            let entry = format!("{head}{attrs}");
            let span = tracing::debug_span!(target: TARGET, "index_put", key, entry = entry.as_str());
            match self.inner.put(&entry, Bytes::new(), &PutOptions::default()).instrument(span).await {
                Ok(_) => keep.push(entry),
                Err(e) => {
                    tracing::warn!(target: TARGET, key, error = %e,
                        "could not write the listing index entry; listings show this entry as a plain file until it is rewritten")
                }
            }
        }
        let stale: Vec<String> = old.entries.into_iter().filter(|e| !keep.contains(e)).collect();
        self.delete_entries(key, stale).await;
        if !keep.is_empty() {
            self.known().put(key.to_owned(), Known { attrs, entries: keep });
        }
    }

    async fn delete_entries(&self, key: &str, entries: Vec<String>) {
        if entries.is_empty() {
            return;
        }
        let res = self.inner.delete_many(&entries).await;
        let failed = match res {
            Ok(f) => f.len(),
            Err(_) => entries.len(),
        };
        if failed > 0 {
            tracing::warn!(target: TARGET, key, failed, "stale listing index entries left behind");
        }
    }

    /// After an object is deleted: its known index entries, and a directory marker's whole index.
    async fn unindex(&self, key: &str) {
        let known = self.known().pop(key);
        if let Some(k) = known {
            self.delete_entries(key, k.entries).await;
        }
        if key.ends_with('/') {
            // a removed directory must not live on as the prefix of its index
            match self.read_index(key).await {
                Ok(index) => {
                    let entries: Vec<String> = index.values().flatten().map(|e| e.2.clone()).collect();
                    self.delete_entries(key, entries).await;
                }
                Err(e) => {
                    tracing::warn!(target: TARGET, key, error = %e, "could not read the index of a removed directory")
                }
            }
        }
    }
}

/// `key` as (directory prefix, name); `None` for directory markers and index entries.
fn split_key(key: &str) -> Option<(&str, &str)> {
    if key.is_empty() || key.ends_with('/') || is_index_key(key) {
        return None;
    }
    Some(match key.rfind('/') {
        Some(i) => (&key[..=i], &key[i + 1..]),
        None => ("", key),
    })
}

/// Whether `key` lies inside an index directory, or is one (`d/.bucketfs-attrs/`).
pub fn is_index_key(key: &str) -> bool {
    key.split('/').rev().skip(1).any(|seg| seg == INDEX_DIR)
}

/// What would break an index key: `/ , = %`, and controls and spaces (anything
/// outside ASCII is always encoded).
const KEY_UNSAFE: &percent_encoding::AsciiSet =
    &percent_encoding::CONTROLS.add(b' ').add(b'/').add(b',').add(b'=').add(b'%');

fn escape(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, KEY_UNSAFE).to_string()
}

/// The inverse of [`escape`]; `None` for a malformed escape or bytes that are not UTF-8.
fn unescape(s: &str) -> Option<String> {
    // percent_decode passes a malformed `%` through: such a key was not written by us
    let b = s.as_bytes();
    let malformed = b.iter().enumerate().any(|(i, &c)| {
        c == b'%'
            && !(b.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && b.get(i + 2).is_some_and(u8::is_ascii_hexdigit))
    });
    if malformed {
        return None;
    }
    percent_encoding::percent_decode_str(s).decode_utf8().ok().map(|c| c.into_owned())
}

fn reserved(key: &str) -> BackendError {
    BackendError::invalid_key(key, format!("{INDEX_DIR} is reserved by bucketfs"))
}

backend_wrapper! {
    impl StorageBackend for AttrIndexBackend {
        fn capabilities(&self) -> Capabilities {
            Capabilities { list_attrs: true, ..self.inner.capabilities() }
        }
        async fn head(&self, key: &str) -> BackendResult<ObjectMeta> {
            if is_index_key(key) {
                return Err(BackendError::not_found(key));
            }
            let meta = self.inner.head(key).await?;
            let attrs = self.encode_attrs(&meta.user_metadata);
            if !attrs.is_empty() {
                // remembered so that a rename (copy without new metadata) can index the copy
                let mut known = self.known();
                match known.get_mut(key) {
                    Some(k) => k.attrs = attrs,
                    None => {
                        known.put(key.to_owned(), Known { attrs, entries: Vec::new() });
                    }
                }
            }
            Ok(meta)
        }
        async fn list(&self, req: &ListRequest) -> BackendResult<ListPage> {
            let is_dir_listing =
                req.delimiter.as_deref() == Some("/") && (req.prefix.is_empty() || req.prefix.ends_with('/'));
            if req.delimiter.is_some() && is_index_key(&req.prefix) {
                return Ok(ListPage::default());
            }
            if !is_dir_listing {
                // recursive listings show index entries: a directory rename copies them along
                return self.inner.list(req).await;
            }
            let dir = req.prefix.as_str();
            let index_prefix = format!("{dir}{INDEX_DIR}/");
            // A listing of a few keys is an existence probe (lookup, rmdir): its callers
            // read no attributes, so it costs no index read.
            let wants_attrs = req.max_keys == 0 || req.max_keys > PROBE_MAX_KEYS;
            let mut req = req.clone();
            loop {
                let mut page = self.inner.list(&req).await?;
                let before = page.common_prefixes.len();
                page.common_prefixes.retain(|p| *p != index_prefix);
                let present = page.common_prefixes.len() != before;
                if wants_attrs {
                    // the index prefix may still come on a later page when this one ends before it
                    let last = page
                        .objects
                        .iter()
                        .map(|o| o.key.as_str())
                        .chain(page.common_prefixes.iter().map(String::as_str))
                        .max()
                        .unwrap_or("");
                    let needed = present || (page.next_continuation.is_some() && last < index_prefix.as_str());
                    let index = match (req.continuation.is_some(), needed) {
                        (true, _) => match self.reuse_index(dir) {
                            Some(i) => Some(i),
                            None if needed => Some(self.read_index(dir).await?),
                            None => None,
                        },
                        (false, true) => Some(self.read_index(dir).await?),
                        (false, false) => {
                            // this listing has no index: later pages must not reuse an older one
                            self.indexes.lock().unwrap_or_else(|p| p.into_inner()).remove(dir);
                            None
                        }
                    };
                    if let Some(index) = index {
                        self.merge(dir, &mut page.objects, &index);
                    }
                }
                let emptied = present && page.objects.is_empty() && page.common_prefixes.is_empty();
                match (emptied, page.next_continuation.take()) {
                    // hiding the index emptied a limited page: the caller would take it for the end
                    (true, Some(next)) => req.continuation = Some(next),
                    (_, next) => {
                        page.next_continuation = next;
                        return Ok(page);
                    }
                }
            }
        }
        async fn put(&self, key: &str, data: Bytes, opts: &PutOptions) -> BackendResult<ObjectMeta> {
            if is_index_key(key) {
                return Err(reserved(key));
            }
            let meta = self.inner.put(key, data, opts).await?;
            self.reindex(key, &meta, self.encode_attrs(&opts.user_metadata)).await;
            Ok(meta)
        }
        async fn delete(&self, key: &str) -> BackendResult<()> {
            self.inner.delete(key).await?;
            self.unindex(key).await;
            Ok(())
        }
        async fn delete_many(&self, keys: &[String]) -> BackendResult<Vec<(String, BackendError)>> {
            let failed = self.inner.delete_many(keys).await?;
            for k in keys {
                if !failed.iter().any(|(f, _)| f == k) {
                    self.unindex(k).await;
                }
            }
            Ok(failed)
        }
        async fn copy(&self, src: &str, dst: &str, metadata: Option<&PutOptions>) -> BackendResult<ObjectMeta> {
            if is_index_key(src) || is_index_key(dst) {
                // index entries copied along by a directory rename
                return self.inner.copy(src, dst, metadata).await;
            }
            let attrs = match metadata {
                Some(o) => Some(self.encode_attrs(&o.user_metadata)),
                None => self.known().get(src).map(|k| k.attrs.clone()),
            };
            let meta = self.inner.copy(src, dst, metadata).await?;
            // Source attributes unknown here (never listed or looked up by this mount): a
            // directory rename copies the source's index entries along, and a single-part
            // object keeps its ETag, so they stay valid; nothing to do without a request.
            if let Some(attrs) = attrs {
                self.reindex(dst, &meta, attrs).await;
            }
            Ok(meta)
        }
    }
    impl MultipartStore for AttrIndexBackend {
        async fn create_multipart(&self, key: &str, opts: &PutOptions) -> BackendResult<String> {
            if is_index_key(key) {
                return Err(reserved(key));
            }
            let id = self.inner.create_multipart(key, opts).await?;
            let attrs = self.encode_attrs(&opts.user_metadata);
            self.uploads.lock().unwrap_or_else(|p| p.into_inner()).insert(id.clone(), attrs);
            Ok(id)
        }
        async fn complete_multipart(
            &self,
            key: &str,
            upload_id: &str,
            parts: &[CompletedPart],
        ) -> BackendResult<ObjectMeta> {
            let meta = self.inner.complete_multipart(key, upload_id, parts).await?;
            let attrs = self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(upload_id);
            // an upload this mount did not start: its creator keeps its index
            if let Some(attrs) = attrs {
                self.reindex(key, &meta, attrs).await;
            }
            Ok(meta)
        }
        async fn abort_multipart(&self, key: &str, upload_id: &str) -> BackendResult<()> {
            self.uploads.lock().unwrap_or_else(|p| p.into_inner()).remove(upload_id);
            self.inner.abort_multipart(key, upload_id).await
        }
    }
    forward to inner: [
        retries, check_bucket, get_range, get_ranges, probe_multi_range, rename, upload_part, list_parts, read_part,
        list_multipart, abort_multipart_under,
    ]
}

#[cfg(test)]
#[path = "attr_index_tests.rs"]
mod tests;
