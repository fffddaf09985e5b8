//! Metadata caches: the stat cache and the type cache.
//!
//! Object stores charge a round trip (and often money) per request, and the
//! kernel asks for attributes constantly, so the filesystem remembers what it
//! learnt, keyed by path:
//!
//! - the **stat cache** keeps an entry's kind and object metadata for
//!   `stat_cache_ttl`; listings prime it, so `ls -l` of a large directory costs
//!   one LIST per 1000 entries rather than a HEAD per entry;
//! - the **type cache** keeps only "file", "directory", "symlink" or "absent"
//!   for `type_cache_ttl`: when the stat entry has expired, a known type lets a
//!   lookup revalidate with one request (HEAD for a file, LIST for a directory)
//!   instead of both, and a cached "absent" answers repeated misses (shells and
//!   compilers probe many names that do not exist) without any request.
//!
//! Our own mutations invalidate the affected paths immediately; changes made by
//! other clients become visible when the entries expire. A TTL of zero disables
//! the corresponding cache. Both caches are LRUs of bounded size, behind
//! `std::sync::Mutex`es that are never held across an `.await`.
//!
//! A third, small table is not a cache of the backend: the **directory change
//! times** of this mount. Creating or removing an entry changes no object of the
//! directory (it may have no marker at all), yet POSIX moves the directory's
//! mtime and ctime, and tools (make, rsync's update checks, pjdfstest) look. So
//! this mount remembers when it last changed each directory's entries and shows
//! that time, until an explicit `utimes` of the directory stores another one.
//! Other clients and later mounts see the marker's stored times.
//!
//! A fourth keeps, for a moment, the **first listing page of a directory its
//! lookup fetched** (`FsConfig::lookup_fetches_listing`): `ls DIR` is a lookup
//! then a readdir, and the readdir takes the page instead of asking for it again
//! (issue 11: one round trip of the 0.22 s `ls -l` of 2,000 files at 20 ms). It is
//! used once, within [`FIRST_PAGE_FOR`] and the stat TTL, and dropped as soon as
//! this mount changes anything in the directory, so a readdir never misses an
//! entry this mount made: it is no staler than the lookup it came with.
//!
//! Listing entries are marked *incomplete* unless the backend's listings carry
//! all user metadata (`Capabilities::list_metadata`): an S3 listing has size,
//! ETag and date only. They are still *typed* (symlink or file, with their
//! `--enable-perms` attributes) when the listing carries bucketfs's own
//! attributes (`Capabilities::list_attrs`: GCS, Azure, the embedded store, and
//! S3 through `backend::attr_index`), so `ls -l` needs no request per entry.
//! `stat` trusts a typed entry; only what needs the rest of the metadata
//! (extended attributes, rewriting metadata) issues a HEAD, see
//! [`Cached::trustworthy`] and `Fs::resolve_complete`.

use std::collections::BTreeSet;
use std::num::NonZeroUsize;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use lru::LruCache;

use crate::backend::{ListPage, ObjectMeta};
use crate::memory::growing_lru;

/// The largest symlink target we store (Linux PATH_MAX - 1); a listed object larger
/// than this cannot be a symlink, so its listing entry is enough to answer `stat`.
pub const SYMLINK_MAX: u64 = 4095;

/// Entries kept per cache; enough for very large trees while bounding memory.
const CAPACITY: usize = 256 * 1024;

/// How long a lookup's first listing page waits for its readdir: `ls` asks within
/// milliseconds; anything later lists afresh.
pub const FIRST_PAGE_FOR: Duration = Duration::from_secs(1);

/// First pages kept at once (each up to 1,000 entries, ~200 KB).
const FIRST_PAGES: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

/// What we know about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cached {
    pub kind: Kind,
    /// The object (file, symlink) or the directory marker when one is known.
    pub meta: Option<ObjectMeta>,
    /// `meta` came with its user metadata (HEAD, our own writes), not from a listing.
    pub complete: bool,
    /// The kind and bucketfs's own attributes in `meta` are known (complete, or from
    /// a listing that carries them), even if other user metadata may be missing.
    pub typed: bool,
}

impl Cached {
    pub fn dir(marker: Option<ObjectMeta>) -> Self {
        Cached { kind: Kind::Dir, meta: marker, complete: true, typed: true }
    }

    /// From a HEAD or a write: metadata is authoritative.
    pub fn object(meta: ObjectMeta) -> Self {
        let kind = if super::attr::is_symlink(&meta) { Kind::Symlink } else { Kind::File };
        Cached { kind, meta: Some(meta), complete: true, typed: true }
    }

    /// From a listing: user metadata may be missing, unless the backend says its
    /// listings carry it (`Capabilities::list_metadata`); the entry is typed when
    /// they carry at least bucketfs's own attributes (`Capabilities::list_attrs`).
    pub fn listed(meta: ObjectMeta, caps: &crate::backend::Capabilities) -> Self {
        let mut c = Cached::object(meta);
        c.complete = caps.list_metadata;
        c.typed = caps.list_metadata || caps.list_attrs;
        c
    }

    /// Whether this entry can answer `stat` without a HEAD: it is typed. (An untyped
    /// listing entry may be a symlink, and any object may carry a stored mode.)
    pub fn trustworthy(&self) -> bool {
        self.complete || self.typed
    }

    /// A directory seen as a listing's common prefix: whether it has a marker with
    /// stored attributes (chmod, utimes) is not known until it is looked up.
    pub fn listed_dir() -> Self {
        Cached { kind: Kind::Dir, meta: None, complete: false, typed: false }
    }
}

struct Ttl<V> {
    ttl: Duration,
    map: Mutex<LruCache<String, (V, Instant)>>,
}

impl<V: Clone> Ttl<V> {
    fn new(ttl: Duration) -> Self {
        Ttl { ttl, map: Mutex::new(growing_lru(CAPACITY)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LruCache<String, (V, Instant)>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn get(&self, k: &str) -> Option<V> {
        let mut m = self.lock();
        match m.get(k) {
            Some((v, exp)) if *exp > Instant::now() => Some(v.clone()),
            Some(_) => {
                m.pop(k);
                None
            }
            None => None,
        }
    }

    fn put(&self, k: &str, v: V) {
        if self.ttl.is_zero() {
            return;
        }
        self.lock().put(k.to_owned(), (v, Instant::now() + self.ttl));
    }

    fn remove(&self, k: &str) {
        self.lock().pop(k);
    }

    /// Moves every entry `by` closer to its expiry: tests make time pass without sleeping.
    #[cfg(test)]
    fn age(&self, by: Duration) {
        for (_, (_, exp)) in self.lock().iter_mut() {
            *exp = exp.checked_sub(by).unwrap_or_else(Instant::now);
        }
    }

    fn remove_under(&self, prefix: &str) {
        let mut m = self.lock();
        let keys: Vec<String> =
            m.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, _)| k.clone()).collect();
        for k in keys {
            m.pop(&k);
        }
    }
}

/// The stat and type caches of one mount.
pub struct MetaCache {
    stats: Ttl<Cached>,
    /// `None` = known absent (negative entry).
    types: Ttl<Option<Kind>>,
    /// Directory path -> when this mount last created or removed an entry in it.
    dir_changes: Mutex<LruCache<String, SystemTime>>,
    /// Path -> when this mount last changed its attributes (chmod, chown, utimes), for
    /// the ctime of a file whose change waits for its pending commit.
    status_changes: Mutex<LruCache<String, SystemTime>>,
    /// Directory path -> the names of its subdirectories this mount has seen (made,
    /// looked up, listed with readdirplus, renamed in), for the directory's link count.
    subdirs: Mutex<LruCache<String, BTreeSet<String>>>,
    /// Directory path -> the first page of its listing, fetched by its lookup.
    first_pages: Mutex<LruCache<String, (Instant, ListPage)>>,
    /// How long a first page may be used: [`FIRST_PAGE_FOR`], at most the stat TTL.
    first_page_for: Duration,
}

impl MetaCache {
    pub fn new(stat_ttl: Duration, type_ttl: Duration) -> Self {
        MetaCache {
            stats: Ttl::new(stat_ttl),
            types: Ttl::new(type_ttl),
            dir_changes: Mutex::new(growing_lru(CAPACITY)),
            status_changes: Mutex::new(growing_lru(CAPACITY)),
            subdirs: Mutex::new(growing_lru(CAPACITY)),
            first_pages: Mutex::new(LruCache::new(NonZeroUsize::new(FIRST_PAGES).expect("non-zero"))),
            first_page_for: FIRST_PAGE_FOR.min(stat_ttl),
        }
    }

    /// Makes time pass for stats and types alike (tests, without sleeping).
    #[cfg(test)]
    fn age(&self, by: Duration) {
        self.stats.age(by);
        self.types.age(by);
    }

    fn lock_first_pages(&self) -> std::sync::MutexGuard<'_, LruCache<String, (Instant, ListPage)>> {
        self.first_pages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps the first listing page of directory `dir` for the readdir that may follow.
    pub fn keep_first_page(&self, dir: &str, page: ListPage) {
        if !self.first_page_for.is_zero() {
            self.lock_first_pages().put(dir.to_owned(), (Instant::now(), page));
        }
    }

    /// The first listing page of `dir` its lookup fetched just now, once.
    pub fn take_first_page(&self, dir: &str) -> Option<ListPage> {
        let (at, page) = self.lock_first_pages().pop(dir)?;
        (at.elapsed() < self.first_page_for).then_some(page)
    }

    /// Drops the kept first page of the directory holding `path` (it changed).
    fn parent_changed(&self, path: &str) {
        if !path.is_empty() {
            self.lock_first_pages().pop(super::inode::split_path(path).0);
        }
    }

    fn lock_changes(&self) -> std::sync::MutexGuard<'_, LruCache<String, SystemTime>> {
        self.dir_changes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that this mount just created or removed an entry of directory `dir`.
    pub fn dir_changed(&self, dir: &str) {
        self.lock_first_pages().pop(dir);
        self.lock_changes().put(dir.to_owned(), SystemTime::now());
    }

    /// When this mount last changed the entries of `dir`, if it did.
    pub fn dir_change_time(&self, dir: &str) -> Option<SystemTime> {
        self.lock_changes().get(dir).copied()
    }

    /// Records that this mount just changed the attributes of `path` (its ctime moves
    /// now, even when the change is stored later, with the file's pending commit).
    pub fn status_changed(&self, path: &str) {
        self.status_changes.lock().unwrap_or_else(|e| e.into_inner()).put(path.to_owned(), SystemTime::now());
    }

    /// When this mount last changed the attributes of `path`, if it did.
    pub fn status_change_time(&self, path: &str) -> Option<SystemTime> {
        self.status_changes.lock().unwrap_or_else(|e| e.into_inner()).get(path).copied()
    }

    fn lock_subdirs(&self) -> std::sync::MutexGuard<'_, LruCache<String, BTreeSet<String>>> {
        self.subdirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records that directory `path` exists, as an entry of its parent.
    pub fn subdir_seen(&self, path: &str) {
        if path.is_empty() {
            return; // the root has no parent here
        }
        let (parent, name) = super::inode::split_path(path);
        let mut subdirs = self.lock_subdirs();
        match subdirs.get_mut(parent) {
            Some(names) => {
                names.insert(name.to_owned());
            }
            None => {
                subdirs.put(parent.to_owned(), BTreeSet::from([name.to_owned()]));
            }
        }
    }

    /// Records that `path` is no longer a subdirectory of its parent (it is gone, or
    /// is not a directory), and forgets its own subdirectories.
    pub fn subdir_gone(&self, path: &str) {
        let (parent, name) = super::inode::split_path(path);
        let mut subdirs = self.lock_subdirs();
        if let Some(names) = subdirs.get_mut(parent) {
            names.remove(name);
        }
        subdirs.pop(path);
    }

    /// Directory `from` is now `to` (rename): its parent entries and what is known
    /// below it move along.
    pub fn subdir_moved(&self, from: &str, to: &str) {
        let prefix = super::inode::dir_prefix(from);
        // everything known at or below `from` (a walk of the table: renames of
        // directories are rare, and slow anyway on an object store)
        let moved: Vec<(String, BTreeSet<String>)> = {
            let mut subdirs = self.lock_subdirs();
            let keys: Vec<String> = subdirs
                .iter()
                .map(|(k, _)| k)
                .filter(|k| *k == from || k.starts_with(&prefix))
                .cloned()
                .collect();
            keys.into_iter()
                .filter_map(|k| {
                    let v = subdirs.pop(&k)?;
                    Some((format!("{to}{}", &k[from.len()..]), v))
                })
                .collect()
        };
        self.subdir_gone(from);
        let mut subdirs = self.lock_subdirs();
        for (k, v) in moved {
            subdirs.put(k, v);
        }
        drop(subdirs);
        self.subdir_seen(to);
    }

    /// How many subdirectories of `dir` this mount has seen.
    pub fn subdir_count(&self, dir: &str) -> usize {
        self.lock_subdirs().peek(dir).map_or(0, |names| names.len())
    }

    /// Forgets `dir`'s change time: its times were set explicitly, or it is gone.
    pub fn forget_dir_change(&self, dir: &str) {
        self.lock_changes().pop(dir);
    }

    pub fn stat(&self, path: &str) -> Option<Cached> {
        self.stats.get(path)
    }

    /// `Some(Some(kind))`: known type; `Some(None)`: known absent; `None`: unknown.
    pub fn kind(&self, path: &str) -> Option<Option<Kind>> {
        self.types.get(path)
    }

    pub fn put(&self, path: &str, c: Cached) {
        self.parent_changed(path);
        self.types.put(path, Some(c.kind));
        self.stats.put(path, c);
    }

    pub fn put_absent(&self, path: &str) {
        self.parent_changed(path);
        self.stats.remove(path);
        self.types.put(path, None);
    }

    /// Forgets `path` (after we changed it).
    pub fn invalidate(&self, path: &str) {
        self.parent_changed(path);
        self.lock_first_pages().pop(path);
        self.stats.remove(path);
        self.types.remove(path);
    }

    /// Forgets `path` and everything below it (directory rename or removal).
    pub fn invalidate_tree(&self, path: &str) {
        self.invalidate(path);
        let prefix = super::inode::dir_prefix(path);
        {
            let mut pages = self.lock_first_pages();
            let below: Vec<String> =
                pages.iter().map(|(k, _)| k).filter(|k| k.starts_with(&prefix)).cloned().collect();
            for k in below {
                pages.pop(&k);
            }
        }
        self.stats.remove_under(&prefix);
        self.types.remove_under(&prefix);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    pub(crate) fn meta(key: &str, size: u64) -> ObjectMeta {
        ObjectMeta {
            key: key.into(),
            size,
            etag: "e".into(),
            last_modified: SystemTime::UNIX_EPOCH,
            content_type: None,
            user_metadata: BTreeMap::new(),
        }
    }

    #[test]
    fn a_first_page_is_taken_once_and_dropped_by_changes_in_its_directory() {
        let c = MetaCache::new(Duration::from_secs(60), Duration::from_secs(60));
        let page = || ListPage { objects: vec![meta("d/a", 1)], ..Default::default() };
        c.keep_first_page("d", page());
        assert!(c.take_first_page("d").is_some());
        assert!(c.take_first_page("d").is_none(), "used once");
        for change in [
            &(|c: &MetaCache| c.put("d/x", Cached::object(meta("d/x", 1)))) as &dyn Fn(&MetaCache),
            &|c| c.put_absent("d/x"),
            &|c| c.invalidate("d/x"),
            &|c| c.invalidate("d"),
            &|c| c.dir_changed("d"),
            &|c| c.invalidate_tree(""),
        ] {
            c.keep_first_page("d", page());
            change(&c);
            assert!(c.take_first_page("d").is_none());
        }
        c.keep_first_page("d", page());
        c.put("e/x", Cached::object(meta("e/x", 1)));
        assert!(c.take_first_page("d").is_some(), "another directory's change");
        // a zero stat TTL keeps nothing
        let c = MetaCache::new(Duration::ZERO, Duration::ZERO);
        c.keep_first_page("d", page());
        assert!(c.take_first_page("d").is_none());
    }

    #[test]
    fn entries_expire() {
        // Time passes by ageing the entries (no sleep: a descheduled test thread
        // must not turn "still fresh" into "expired").
        let c = MetaCache::new(Duration::from_secs(30), Duration::from_secs(30));
        c.put("a", Cached::object(meta("a", 1)));
        c.put_absent("b");
        assert_eq!(c.stat("a").unwrap().meta.unwrap().size, 1);
        assert_eq!(c.kind("a"), Some(Some(Kind::File)));
        assert_eq!(c.kind("b"), Some(None));
        assert_eq!(c.kind("c"), None);
        c.age(Duration::from_secs(20));
        assert!(c.stat("a").is_some(), "20 s into a 30 s TTL");
        c.age(Duration::from_secs(11));
        assert!(c.stat("a").is_none());
        assert_eq!(c.kind("b"), None);
    }

    #[test]
    fn type_outlives_stat() {
        let c = MetaCache::new(Duration::from_secs(10), Duration::from_secs(60));
        c.put("a", Cached::dir(None));
        c.age(Duration::from_secs(20));
        assert!(c.stat("a").is_none());
        assert_eq!(c.kind("a"), Some(Some(Kind::Dir)));
    }

    #[test]
    fn zero_ttl_disables() {
        let c = MetaCache::new(Duration::ZERO, Duration::ZERO);
        c.put("a", Cached::object(meta("a", 1)));
        c.put_absent("b");
        assert!(c.stat("a").is_none());
        assert_eq!(c.kind("b"), None);
    }

    #[test]
    fn invalidation() {
        let c = MetaCache::new(Duration::from_secs(60), Duration::from_secs(60));
        for p in ["d", "d/x", "d/y/z", "dd"] {
            c.put(p, Cached::object(meta(p, 1)));
        }
        c.invalidate_tree("d");
        assert!(c.stat("d").is_none() && c.stat("d/x").is_none() && c.stat("d/y/z").is_none());
        assert!(c.stat("dd").is_some());
        c.invalidate("dd");
        assert!(c.stat("dd").is_none() && c.kind("dd").is_none());
    }

    #[test]
    fn listed_entries_are_trusted_only_when_safe() {
        let caps = |list_metadata, list_attrs| crate::backend::Capabilities {
            list_metadata,
            list_attrs,
            ..crate::backend::StorageBackend::capabilities(&crate::backend::memory::MemoryBackend::new())
        };
        let plain = caps(false, false);
        let small = Cached::listed(meta("s", 10), &plain);
        assert!(!small.complete && !small.typed);
        assert!(!small.trustworthy(), "may be a symlink");
        let big = Cached::listed(meta("b", SYMLINK_MAX + 1), &plain);
        assert!(!big.trustworthy(), "may carry a stored mode");
        // a listing that carries bucketfs's attributes types every entry, but is not complete
        let mut m = meta("m", 10);
        m.user_metadata.insert("bucketfs-type".into(), "symlink".into());
        let indexed = Cached::listed(m, &caps(false, true));
        assert!(indexed.typed && !indexed.complete && indexed.kind == Kind::Symlink);
        assert!(indexed.trustworthy());
        assert!(Cached::listed(meta("f", 10), &caps(false, true)).trustworthy());
        assert!(Cached::listed(meta("g", 10), &caps(true, true)).complete);
    }
}
