//! The filesystem operations, as async functions of paths and inode numbers.
//!
//! [`Fs`] holds everything one mount shares: the backend, the inode table, the
//! metadata caches and the tables of open files and directories. Its methods
//! return [`FsResult`] and know nothing about FUSE replies, so they can be unit
//! tested against the in-memory backend; `mod.rs` only dispatches kernel
//! requests to them and converts results into replies.
//!
//! This file has name resolution (lookup, getattr) and the namespace operations
//! that touch one key (mkdir, rmdir, unlink, symlink, readlink). Open files are
//! in `file.rs`, directory listings in `dir.rs`, renames in `rename.rs`, extended
//! attributes in `xattr.rs`.
//!
//! Name resolution follows the key layout: the file `d/n` is the key `d/n`, the
//! directory `d/n` exists when any key starts with `d/n/` (including its marker
//! object `d/n/`). A lookup with nothing cached asks both questions at once
//! (`tokio::join!` of a HEAD and a one-key LIST). When both a file `d/n` and keys
//! under `d/n/` exist, the **directory wins** and the file is hidden, as in
//! mountpoint-s3: hiding one object is better than hiding a whole tree.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use fuser::FileAttr;

use super::attr::{self, to_attr};
use super::cache::{Cached, Kind, MetaCache};
use super::dir::DirStream;
use super::file::OpenFile;
use super::inode::{child_path, dir_prefix, validate_name, InodeTable, ROOT_INO};
use super::{FsConfig, FsError, FsResult};
use crate::backend::{BackendError, ListRequest, ObjectMeta, PutOptions, StorageBackend};
use crate::fs::handle::HandleContext;
use crate::metrics::Metrics;
use crate::object::ErrorKind;

/// The longest key of S3, GCS, Azure Blob and the embedded store, in bytes.
pub const KEY_MAX: usize = 1024;

/// The caller of an operation, for ownership of new entries under `--enable-perms`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// An entry handed to the kernel (it now holds one reference on `ino`).
#[derive(Clone, Debug)]
pub struct Entry {
    pub attr: FileAttr,
    /// How long the kernel may cache the entry and its attributes.
    pub ttl: Duration,
}

/// Largest open file copied to the cache dir when it is unlinked, so that its open
/// descriptors keep reading it (a larger one would make `rm` download it first).
pub const UNLINKED_COPY_MAX: u64 = 1 << 30;

pub struct Fs {
    pub backend: Arc<dyn StorageBackend>,
    pub cfg: FsConfig,
    pub handles: Arc<HandleContext>,
    pub inodes: InodeTable,
    pub cache: MetaCache,
    pub(super) files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    pub(super) dirs: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<DirStream>>>>,
    /// Unlinked inodes still open: what they were when unlinked, for `fstat` (nlink 0).
    orphans: Mutex<HashMap<u64, Cached>>,
    /// Files whose content could not be stored at their last release and that
    /// have no object: opening one for writing creates it afresh (see `Fs::open`).
    pub(super) lost_writes: Mutex<HashSet<u64>>,
    next_fh: AtomicU64,
    pub mount_time: SystemTime,
}

impl Fs {
    pub fn new(backend: Arc<dyn StorageBackend>, cfg: FsConfig, handles: Arc<HandleContext>) -> Self {
        Fs {
            backend,
            cache: MetaCache::new(cfg.stat_cache_ttl, cfg.type_cache_ttl),
            cfg,
            handles,
            inodes: InodeTable::new(),
            files: Mutex::default(),
            dirs: Mutex::default(),
            orphans: Mutex::default(),
            lost_writes: Mutex::default(),
            next_fh: AtomicU64::new(1),
            mount_time: SystemTime::now(),
        }
    }

    pub(super) fn next_fh(&self) -> u64 {
        self.next_fh.fetch_add(1, Ordering::Relaxed)
    }

    fn metrics(&self) -> &Metrics {
        &self.handles.metrics
    }

    pub(super) fn check_writable(&self) -> FsResult<()> {
        if self.cfg.read_only {
            Err(FsError::ReadOnly)
        } else {
            Ok(())
        }
    }

    /// Path and kind of an inode the kernel gave us.
    pub fn inode(&self, ino: u64) -> FsResult<(String, Kind)> {
        self.inodes.get(ino).ok_or(FsError::StaleInode(ino))
    }

    /// Path of a directory inode.
    pub(super) fn dir_path(&self, ino: u64) -> FsResult<String> {
        match self.inode(ino)? {
            (p, Kind::Dir) => Ok(p),
            _ => Err(FsError::NotDir),
        }
    }

    /// Validated path of `name` in directory `parent`. ENAMETOOLONG when no backend
    /// could hold it: a key is at least its path, and every store we target stops at
    /// [`KEY_MAX`] bytes (the store's own refusal said EINVAL for some of these).
    pub(super) fn child(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<String> {
        let dir = self.dir_path(parent)?;
        let name = validate_name(name)?;
        let path = child_path(&dir, name);
        if path.len() > KEY_MAX {
            return Err(FsError::NameTooLong);
        }
        Ok(path)
    }

    /// The largest file the backend can store (its part limits times its part
    /// count, as the upload plan grows parts): a larger truncate is EFBIG, not an
    /// upload that fails at close.
    pub(super) fn max_file_size(&self) -> u64 {
        crate::upload::PartSizePlan::new(self.handles.cfg.part_size, &self.backend.capabilities())
            .max_object_size()
    }

    pub(super) fn attr_of(&self, ino: u64, c: &Cached, size: Option<u64>) -> FileAttr {
        let mut a = to_attr(ino, c, size, &self.cfg, self.mount_time);
        let Some((path, _)) = self.inodes.get(ino) else { return a };
        if c.kind == Kind::Dir {
            // entries this mount created or removed move the directory's times (cache.rs)
            if let Some(t) = self.cache.dir_change_time(&path) {
                (a.mtime, a.ctime) = (t, t);
            }
            // "." and the entry in the parent, and each subdirectory's ".." (those seen here)
            a.nlink = 2 + u32::try_from(self.cache.subdir_count(&path)).unwrap_or(u32::MAX - 2);
        }
        // a chmod/chown/utimes stashed for a pending commit has not moved the object's date yet
        if let Some(t) = self.cache.status_change_time(&path).filter(|t| *t > a.ctime) {
            a.ctime = t;
        }
        a
    }

    /// Moves the times of the directory holding `path`: an entry of it was created or removed.
    pub(super) fn touch_dir_of(&self, path: &str) {
        self.cache.dir_changed(super::inode::split_path(path).0);
    }

    pub(super) fn ttl_for(&self, c: &Cached) -> Duration {
        // Incomplete listing entries must come back to us (and get a HEAD) before
        // the kernel relies on them.
        if c.trustworthy() {
            self.cfg.stat_cache_ttl
        } else {
            Duration::ZERO
        }
    }

    /// Hands `path` to the kernel: takes an inode reference and builds the reply.
    pub(super) fn entry(&self, path: &str, c: &Cached, size: Option<u64>) -> Entry {
        if c.kind == Kind::Dir {
            self.cache.subdir_seen(path); // counts in its parent's link count
        }
        let ino = self.inodes.remember(path, c.kind);
        Entry { attr: self.attr_of(ino, c, size), ttl: self.cfg.stat_cache_ttl }
    }

    /// Finds out what `path` is, from the caches or the backend.
    pub async fn resolve(&self, path: &str) -> FsResult<Cached> {
        if path.is_empty() {
            return Ok(Cached::dir(None));
        }
        if let Some(c) = self.cache.stat(path) {
            if c.trustworthy() {
                Metrics::inc(&self.metrics().stat_cache_hits);
                return Ok(c);
            }
            if c.kind == Kind::Dir {
                // a listed directory: its marker may hold a stored mode and mtime
                if let Some(c) = self.probe_dir(path).await? {
                    return Ok(c);
                }
            } else if let Some(c) = self.revalidate_object(path).await? {
                // an untyped listed object: only a HEAD can tell a file from a symlink
                return Ok(c);
            }
        }
        match self.cache.kind(path) {
            Some(None) => {
                Metrics::inc(&self.metrics().stat_cache_hits);
                return Err(FsError::NotFound);
            }
            Some(Some(Kind::Dir)) => {
                if let Some(c) = self.probe_dir(path).await? {
                    return Ok(c);
                }
            }
            Some(Some(_)) => {
                if let Some(c) = self.revalidate_object(path).await? {
                    return Ok(c);
                }
            }
            None => {}
        }
        Metrics::inc(&self.metrics().stat_cache_misses);
        let (head, dir) = tokio::join!(self.backend.head(path), self.probe_dir(path));
        match (dir?, head) {
            (Some(d), _) => Ok(d),
            (None, Ok(m)) => {
                let c = Cached::object(m);
                self.cache.put(path, c.clone());
                Ok(c)
            }
            (None, Err(e)) if e.is_not_found() => {
                self.cache.put_absent(path);
                self.cache.subdir_gone(path);
                Err(FsError::NotFound)
            }
            (None, Err(e)) => Err(e.into()),
        }
    }

    /// HEADs a path believed to be an object. `None` when it is gone.
    async fn revalidate_object(&self, path: &str) -> FsResult<Option<Cached>> {
        match self.backend.head(path).await {
            Ok(m) => {
                let c = Cached::object(m);
                self.cache.put(path, c.clone());
                Ok(Some(c))
            }
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Whether `path` is a directory (any key under `path/`); caches a positive answer.
    pub(super) async fn probe_dir(&self, path: &str) -> FsResult<Option<Cached>> {
        let prefix = dir_prefix(path);
        if prefix.len() > KEY_MAX {
            return Ok(None); // no key can lie under it
        }
        // Two keys (one may be the hidden listing index, backend::attr_index, which a
        // page of one would spend on nothing and make the wrapper ask again), or the
        // whole first page that a readdir would ask for next, kept for it (see
        // `FsConfig::lookup_fetches_listing` and cache.rs).
        let whole_page = self.cfg.lookup_fetches_listing;
        let req = ListRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            max_keys: if whole_page { 0 } else { 2 },
            ..Default::default()
        };
        // Listings without user metadata (S3) cannot say the marker's stored mode and
        // owner: HEAD the marker at the same time rather than one round trip later
        // (a 404 for implicit directories and files; goofys asks the same three).
        // A key too long for the store (the mount's `bucket:prefix` counts towards it)
        // cannot exist: the embedded store refuses to list under such a prefix (EINVAL),
        // which must read as "no directory here", not fail the lookup.
        let refused = |e: &BackendError| matches!(e.kind(), ErrorKind::InvalidKey | ErrorKind::NameTooLong);
        let (page, head) = if self.backend.capabilities().list_metadata {
            (self.backend.list(&req).await, None)
        } else {
            let (page, head) = tokio::join!(self.backend.list(&req), self.backend.head(&prefix));
            (page, Some(head))
        };
        let page = match page {
            Err(e) if refused(&e) => return Ok(None),
            page => page?,
        };
        if page.objects.is_empty() && page.common_prefixes.is_empty() {
            return Ok(None);
        }
        let listed = page.objects.iter().find(|o| o.key == prefix).cloned();
        let marker = match head {
            Some(Ok(m)) => Some(m),
            Some(Err(e)) if !e.is_not_found() && !refused(&e) => return Err(e.into()),
            _ => listed,
        };
        let c = Cached::dir(marker);
        self.cache.put(path, c.clone());
        if whole_page {
            self.cache.keep_first_page(path, page);
        }
        Ok(Some(c))
    }

    /// Like [`Fs::resolve`], but an object's metadata is guaranteed to include its
    /// user metadata (needed before rewriting it, which must preserve that metadata).
    pub(super) async fn resolve_complete(&self, path: &str) -> FsResult<Cached> {
        let c = self.resolve(path).await?;
        if c.complete || c.kind == Kind::Dir {
            return Ok(c);
        }
        self.revalidate_object(path).await?.ok_or(FsError::NotFound)
    }

    pub async fn lookup(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<Entry> {
        let path = self.child(parent, name)?;
        if let Some(f) = self.inodes.peek(&path).and_then(|ino| self.writer_of(ino)) {
            // a file being written here is visible before it is committed
            let c = self.cache.stat(&path).map(|c| f.overlay(c)).unwrap_or_else(|| f.pending_cached(&path));
            return Ok(self.entry(&path, &c, Some(f.handle.size())));
        }
        let c = self.resolve(&path).await?;
        let mut e = self.entry(&path, &c, None);
        e.ttl = self.ttl_for(&c);
        Ok(e)
    }

    pub async fn getattr(&self, ino: u64) -> FsResult<(FileAttr, Duration)> {
        let ttl = self.cfg.stat_cache_ttl;
        if ino == ROOT_INO {
            return Ok((self.attr_of(ino, &Cached::dir(None), None), ttl));
        }
        let (path, kind) = self.inode(ino)?;
        if let Some(f) = self.writer_of(ino) {
            let c = self
                .cache
                .stat(&path)
                .filter(|c| c.kind == kind)
                .map(|c| f.overlay(c))
                .unwrap_or_else(|| f.pending_cached(&path));
            return Ok((self.attr_of(ino, &c, Some(f.handle.size())), ttl));
        }
        if !self.inodes.is_linked(ino) {
            return self.orphan_attr(ino, &path).ok_or(FsError::NotFound);
        }
        if kind == Kind::Dir {
            // a directory looked up (or created) here is answered from the cache; one only
            // listed, or expired, is probed once for its marker's stored attributes
            let c = match self.cache.stat(&path).filter(|c| c.kind == Kind::Dir && c.trustworthy()) {
                Some(c) => c,
                None => match self.resolve(&path).await {
                    Ok(c) if c.kind == Kind::Dir => c,
                    Ok(_) | Err(FsError::NotFound) => return Err(FsError::NotFound),
                    Err(e) => return Err(e),
                },
            };
            return Ok((self.attr_of(ino, &c, None), self.ttl_for(&c)));
        }
        let c = self.resolve(&path).await?;
        if c.kind != kind {
            // the name now refers to something else; the kernel will look it up again
            return Err(FsError::NotFound);
        }
        Ok((self.attr_of(ino, &c, None), self.ttl_for(&c)))
    }

    pub fn forget(&self, ino: u64, n: u64) {
        self.inodes.forget(ino, n);
        if self.inodes.lookups(ino).is_none() {
            self.lock_orphans().remove(&ino);
        }
    }

    fn lock_orphans(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Cached>> {
        self.orphans.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps what the open, now unlinked (or renamed over) file `ino` was, so `fstat`
    /// through its descriptors keeps working, as POSIX wants of temporary files.
    pub(super) fn orphan(&self, ino: u64, c: Option<Cached>) {
        if self.open_files_of(ino).is_empty() {
            return;
        }
        if let Some(c) = c {
            self.lock_orphans().insert(ino, c);
        }
    }

    /// Attributes of an unlinked inode that is still open: nlink 0, its size as the
    /// open handle sees it; `None` when no descriptor holds it any more.
    fn orphan_attr(&self, ino: u64, path: &str) -> Option<(FileAttr, Duration)> {
        let open = self.open_files_of(ino);
        let f = open.iter().find(|f| f.writable).or(open.first())?;
        let c = self.lock_orphans().get(&ino).cloned().map(|c| f.overlay(c));
        let c = c.unwrap_or_else(|| f.pending_cached(path));
        let mut a = self.attr_of(ino, &c, Some(f.handle.size()));
        a.nlink = 0;
        Some((a, Duration::ZERO))
    }

    /// User metadata of a new entry: its mode (after umask) when the program asked
    /// for a particular one (`mkdir -m 700`, `open(O_CREAT, 0600)`: tar, ssh-keygen
    /// and install rely on the create mode and do not chmod afterwards), not for the
    /// usual 0666/0777, which keep showing the mount's `--file-mode`/`--dir-mode`;
    /// the creator's uid and gid when they differ from the mount's `--uid`/`--gid`
    /// (another user of an `--allow-other` mount: the kernel checks permissions
    /// against what `stat` shows, so a user's new directory shown as the mount
    /// owner's could not be written by that user, nor its files chmod'ed); under
    /// `--enable-perms` always the mode and the creator's uid/gid.
    pub(super) fn owner_metadata(&self, mode: u32, umask: u32, who: Caller) -> BTreeMap<String, String> {
        let mut md = BTreeMap::new();
        let perm = mode & !umask & 0o7777;
        let usual = if mode & libc::S_IFMT == libc::S_IFDIR { 0o777 } else { 0o666 };
        if self.cfg.enable_perms || mode & 0o7777 != usual {
            md.insert(attr::META_MODE.into(), format!("{perm:o}"));
        }
        // Another user of an `allow_other` mount owns what they create (so they can
        // chmod it and write in their new directories); root acting in a mount whose
        // `uid=`/`gid=` name the owner of everything does not (fstab `uid=1234`
        // showed root's files as 0 once creators were recorded).
        let other_user = who.uid != 0;
        if self.cfg.enable_perms || (other_user && who.uid != self.cfg.uid) {
            md.insert(attr::META_UID.into(), who.uid.to_string());
        }
        if self.cfg.enable_perms || (other_user && who.gid != self.cfg.gid) {
            md.insert(attr::META_GID.into(), who.gid.to_string());
        }
        md
    }

    /// Options of the write that creates a new name (mkdir's marker, mknod, symlink):
    /// where the backend has conditional writes, the write itself fails with EEXIST if
    /// another client created the key since [`Self::ensure_absent`] looked (that check
    /// stays: it also sees a directory where a file is to go, and the other way round).
    fn create_opts(&self, user_metadata: BTreeMap<String, String>) -> PutOptions {
        let if_none_match_any = self.backend.capabilities().conditional_put;
        PutOptions { user_metadata, if_none_match_any, ..Default::default() }
    }

    /// Fails with EEXIST when `path` exists here or in the backend.
    pub(super) async fn ensure_absent(&self, path: &str) -> FsResult<()> {
        if self.inodes.peek(path).and_then(|i| self.writer_of(i)).is_some() {
            return Err(FsError::Exists);
        }
        match self.resolve(path).await {
            Ok(_) => Err(FsError::Exists),
            Err(e) if e.is_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn mkdir(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        who: Caller,
    ) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.child(parent, name)?;
        self.ensure_absent(&path).await?;
        if dir_prefix(&path).len() > KEY_MAX {
            return Err(FsError::NameTooLong); // the marker key is one byte longer
        }
        let opts = self.create_opts(self.owner_metadata(mode | libc::S_IFDIR, umask, who));
        let marker = self.backend.put(&dir_prefix(&path), Bytes::new(), &opts).await?;
        let c = Cached::dir(Some(marker));
        self.cache.put(&path, c.clone());
        self.touch_dir_of(&path);
        Ok(self.entry(&path, &c, None))
    }

    /// mknod: a regular file is an empty object; a FIFO, socket or (for root: the
    /// kernel checks CAP_MKNOD before asking us) character or block device is an
    /// empty object marked with its type and device number, as a symlink is marked.
    /// The kernel serves their I/O itself; FUSE never opens them.
    pub async fn mknod(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        who: Caller,
    ) -> FsResult<Entry> {
        let fmt = mode & libc::S_IFMT;
        let special = attr::special_type_name(fmt);
        if fmt != libc::S_IFREG && fmt != 0 && special.is_none() {
            return Err(FsError::Invalid("mknod of a directory or symlink"));
        }
        self.check_writable()?;
        let path = self.child(parent, name)?;
        self.ensure_absent(&path).await?;
        let mut md = self.owner_metadata(mode, umask, who);
        if let Some(t) = special {
            md.insert(attr::META_TYPE.into(), t.into());
            if fmt == libc::S_IFCHR || fmt == libc::S_IFBLK {
                md.insert(attr::META_RDEV.into(), rdev.to_string());
            }
        }
        let opts = self.create_opts(md);
        let meta = self.backend.put(&path, Bytes::new(), &opts).await?;
        let c = Cached::object(meta);
        self.cache.put(&path, c.clone());
        self.touch_dir_of(&path);
        Ok(self.entry(&path, &c, None))
    }

    /// Names of open files being written directly under directory `dir`.
    pub(super) fn local_children(&self, dir: &str) -> Vec<String> {
        let files: Vec<Arc<OpenFile>> = self.lock_files().values().cloned().collect();
        let prefix = dir_prefix(dir);
        let mut out = Vec::new();
        for f in files {
            if !f.writable || f.is_unlinked() || !self.inodes.is_linked(f.ino) {
                continue;
            }
            if let Some((p, _)) = self.inodes.get(f.ino) {
                if let Some(rest) = p.strip_prefix(&prefix) {
                    if !rest.contains('/') {
                        out.push(rest.to_owned());
                    }
                }
            }
        }
        out.sort();
        out.dedup();
        out
    }

    /// fsyncdir: makes the directory's entries durable. Every namespace operation
    /// (mkdir, unlink, rename, symlink, mknod) is stored before it returns; the entries
    /// that are not yet are files created or rewritten here and not committed, so
    /// those (directly in `ino`) are committed now, and their errors returned.
    pub async fn fsyncdir(&self, ino: u64) -> FsResult<()> {
        let dir = self.dir_path(ino)?;
        let files: Vec<Arc<OpenFile>> =
            self.lock_files().values().filter(|f| f.has_pending()).cloned().collect();
        for f in files {
            let here = self.inodes.get(f.ino).is_some_and(|(p, _)| super::inode::split_path(&p).0 == dir);
            if here && self.inodes.is_linked(f.ino) {
                self.commit_file(&f).await?;
            }
        }
        Ok(())
    }

    /// Whether any open file is being written somewhere below directory `dir`.
    fn has_local_descendants(&self, dir: &str) -> bool {
        let prefix = dir_prefix(dir);
        let files: Vec<Arc<OpenFile>> = self.lock_files().values().cloned().collect();
        files.iter().any(|f| {
            f.writable
                && !f.is_unlinked()
                && self.inodes.is_linked(f.ino)
                && self.inodes.get(f.ino).is_some_and(|(p, _)| p.starts_with(&prefix))
        })
    }

    /// Whether directory `path` has any entry besides its own marker.
    pub(super) async fn dir_is_empty(&self, path: &str) -> FsResult<bool> {
        if self.has_local_descendants(path) {
            return Ok(false);
        }
        let prefix = dir_prefix(path);
        // the marker, the hidden listing index (backend::attr_index) and one real entry
        let req = ListRequest {
            prefix: prefix.clone(),
            delimiter: Some("/".into()),
            max_keys: 3,
            ..Default::default()
        };
        let page = self.backend.list(&req).await?;
        Ok(page.common_prefixes.is_empty() && page.objects.iter().all(|o| o.key == prefix))
    }

    pub async fn rmdir(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        self.check_writable()?;
        let path = self.child(parent, name)?;
        let c = self.resolve(&path).await?;
        if c.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        if !self.dir_is_empty(&path).await? {
            return Err(FsError::NotEmpty);
        }
        self.backend.delete(&dir_prefix(&path)).await?;
        self.cache.invalidate_tree(&path);
        self.cache.put_absent(&path);
        self.cache.forget_dir_change(&path);
        self.cache.subdir_gone(&path);
        self.inodes.unlink(&path);
        self.touch_dir_of(&path);
        Ok(())
    }

    pub async fn unlink(&self, parent: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        self.check_writable()?;
        let path = self.child(parent, name)?;
        let ino = self.inodes.peek(&path);
        let open = ino.map(|ino| self.open_files_of(ino)).unwrap_or_default();
        let was = match self.resolve(&path).await {
            Ok(c) if c.kind == Kind::Dir => return Err(FsError::IsDir),
            Ok(c) => Some(c),
            // a file that only exists as an open, uncommitted handle
            Err(e) if e.is_not_found() && open.iter().any(|f| f.writable) => None,
            Err(e) => return Err(e),
        };
        if let Some(ino) = ino {
            self.orphan(ino, was);
        }
        // open handles must not resurrect the file when they are closed
        for f in &open {
            f.mark_unlinked();
        }
        for f in &open {
            f.wait_for_commit().await;
        }
        // descriptors still reading the stored object keep a local copy of it
        for f in &open {
            match f.handle.keep_local_copy(UNLINKED_COPY_MAX).await {
                Ok(true) => {}
                Ok(false) => tracing::warn!(path = %path, max = UNLINKED_COPY_MAX,
                    "an open file larger than this was unlinked: its descriptors can no longer read it"),
                Err(e) => tracing::warn!(path = %path, error = %e,
                    "no local copy of an open file being unlinked: its descriptors can no longer read it"),
            }
        }
        self.backend.delete(&path).await?;
        self.cache.put_absent(&path);
        self.inodes.unlink(&path);
        self.touch_dir_of(&path);
        Ok(())
    }

    pub async fn symlink(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        target: &std::path::Path,
        who: Caller,
    ) -> FsResult<Entry> {
        self.check_writable()?;
        let path = self.child(parent, name)?;
        let target = target.to_str().ok_or(FsError::Invalid("symlink target is not UTF-8"))?;
        if target.is_empty() || target.len() as u64 > super::cache::SYMLINK_MAX {
            return Err(FsError::Invalid("symlink target length"));
        }
        self.ensure_absent(&path).await?;
        let mut md = self.owner_metadata(0o777, 0, who);
        md.remove(attr::META_MODE);
        md.insert(attr::META_TYPE.into(), attr::TYPE_SYMLINK.into());
        if let Some(t) = attr::encode_target(target.as_bytes()) {
            md.insert(attr::META_TARGET.into(), t);
        }
        let opts = self.create_opts(md);
        let meta = self.backend.put(&path, Bytes::copy_from_slice(target.as_bytes()), &opts).await?;
        let c = Cached::object(meta);
        self.cache.put(&path, c.clone());
        self.touch_dir_of(&path);
        Ok(self.entry(&path, &c, None))
    }

    pub async fn readlink(&self, ino: u64) -> FsResult<Bytes> {
        let (path, kind) = self.inode(ino)?;
        if kind != Kind::Symlink {
            return Err(FsError::Invalid("not a symlink"));
        }
        // the copy in metadata (from a listing or a HEAD within the stat TTL) saves a GET
        let cached = self.cache.stat(&path).filter(|c| c.kind == Kind::Symlink);
        if let Some(t) = cached.as_ref().and_then(|c| c.meta.as_ref()?.user_metadata.get(attr::META_TARGET)) {
            if let Some(t) = attr::decode_target(t) {
                return Ok(Bytes::from(t));
            }
        }
        let r = self.backend.get_range(&path, None, &Default::default()).await?;
        if !attr::is_symlink(&r.meta) {
            return Err(FsError::Invalid("not a symlink"));
        }
        Ok(r.data)
    }

    pub(super) fn lock_files(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OpenFile>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn lock_dirs(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<tokio::sync::Mutex<DirStream>>>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn open_files_of(&self, ino: u64) -> Vec<Arc<OpenFile>> {
        self.lock_files().values().filter(|f| f.ino == ino).cloned().collect()
    }

    /// The newest open, writable, not unlinked handle of `ino`: its size is the file's size.
    ///
    /// The newest, because the kernel sends `release` after `close` has returned: a
    /// program that closes, reopens and truncates can still have its old handle here,
    /// holding the size from before the truncate. Picking any handle made `fstat` and
    /// `lseek(SEEK_END)` report that stale size now and then (issue 12: 1-6 times in
    /// 500 loops, and SIGBUS for an mmap reader).
    pub(super) fn writer_of(&self, ino: u64) -> Option<Arc<OpenFile>> {
        self.lock_files()
            .iter()
            .filter(|(_, f)| f.ino == ino && f.writable && !f.is_unlinked())
            .max_by_key(|(fh, _)| **fh)
            .map(|(_, f)| f.clone())
    }
}

/// Placeholder metadata of a file that exists only as an open handle.
pub(super) fn pending_meta(key: &str, mtime: SystemTime) -> ObjectMeta {
    ObjectMeta {
        key: key.to_owned(),
        size: 0,
        etag: String::new(),
        last_modified: mtime,
        content_type: None,
        user_metadata: BTreeMap::new(),
    }
}
