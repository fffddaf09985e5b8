//! Directory listings: paged, merged, and cheap for large directories.
//!
//! A directory stream turns LIST pages (delimiter `/`, 1000 keys per request,
//! continuation tokens) into the numbered entries `readdir` hands out, one page
//! at a time, so the first entries of a huge directory come back after one
//! request and memory stays proportional to a page, not to the directory.
//!
//! Entry `i` (0 = `.`, 1 = `..`) is given the offset `i + 1`, which is what the
//! kernel passes back to continue. The stream keeps the entries from the last
//! requested offset on; a request for an earlier offset (rewinddir, seekdir
//! backwards) restarts the listing from the beginning.
//!
//! Merging rules, applied as pages arrive:
//! - objects and common prefixes come back as two sorted lists; they are merged
//!   by key;
//! - a file `n` and a directory `n/` may both exist. The directory wins (as in
//!   lookups). Because `n` sorts before `n/` but keys like `n.txt` sort between
//!   them (and can push `n/` onto a later page), an object is held back until the
//!   listing has passed the position where `n/` would appear;
//! - the directory's own marker (`d/`), and keys whose name cannot be a file
//!   name (empty, `.`, `..`, longer than 255 bytes) are skipped;
//! - files being written in this mount but not committed yet are appended at
//!   the end, unless the listing already returned them.
//!
//! The next page is requested as soon as a page's continuation token arrives,
//! while the kernel and the application work through the page just received
//! (issue 11: `ls -l` of 2,000 files at 20 ms spent 73 ms on the first page's
//! entries before the second page, 91 ms, was even asked for). Pages still come
//! in order, one request at a time.
//!
//! Every listed entry primes the stat cache (see `cache.rs`), so the `stat` that
//! usually follows each entry (`ls -l`) needs no request.

use std::collections::{BTreeSet, VecDeque};

use futures::StreamExt;

use super::cache::{Cached, Kind};
use super::core::Fs;
use super::inode::{child_path, NAME_MAX};
use super::FsResult;
use crate::backend::{BackendError, BackendResult, ListPage, ListRequest, ObjectMeta};

/// Subdirectories of a listing page looked up at once.
const DIR_PROBES: usize = 32;

#[derive(Clone, Debug, PartialEq)]
pub struct DirEntry {
    pub name: String,
    pub kind: Kind,
    /// What the listing said about it (`None` for `.`, `..` and local files).
    pub cached: Option<Cached>,
}

#[derive(Debug)]
pub struct DirStream {
    /// Path of the listed directory (`""` for the root).
    pub path: String,
    prefix: String,
    /// Absolute index of `entries[0]`.
    base: u64,
    entries: VecDeque<DirEntry>,
    token: Option<String>,
    /// The page after the last one received, already requested (see the header).
    next: Option<tokio::task::JoinHandle<BackendResult<ListPage>>>,
    listed_all: bool,
    finished: bool,
    /// Objects waiting to learn whether a directory of the same name follows.
    held: VecDeque<ObjectMeta>,
    /// Local uncommitted files not (yet) seen in the listing.
    local: BTreeSet<String>,
    local_snapshot: BTreeSet<String>,
}

enum Item {
    Object(ObjectMeta),
    Prefix(String),
}

impl Item {
    fn key(&self) -> &str {
        match self {
            Item::Object(m) => &m.key,
            Item::Prefix(p) => p,
        }
    }
}

fn usable_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && name.len() <= NAME_MAX
}

impl DirStream {
    /// `local`: names of files open for writing in this directory (see `Fs::local_children`).
    pub fn new(path: String, local: Vec<String>) -> Self {
        let prefix = super::inode::dir_prefix(&path);
        let local: BTreeSet<String> = local.into_iter().collect();
        let mut s = DirStream {
            path,
            prefix,
            base: 0,
            entries: VecDeque::new(),
            token: None,
            next: None,
            listed_all: false,
            finished: false,
            held: VecDeque::new(),
            local: local.clone(),
            local_snapshot: local,
        };
        s.restart();
        s
    }

    fn restart(&mut self) {
        self.base = 0;
        self.entries.clear();
        self.token = None;
        if let Some(next) = self.next.take() {
            next.abort();
        }
        self.listed_all = false;
        self.finished = false;
        self.held.clear();
        self.local = self.local_snapshot.clone();
        for n in [".", ".."] {
            self.entries.push_back(DirEntry { name: n.into(), kind: Kind::Dir, cached: None });
        }
    }

    /// The entry at absolute index `i`, if it has been fetched and not dropped.
    pub fn get(&self, i: u64) -> Option<&DirEntry> {
        i.checked_sub(self.base).and_then(|k| self.entries.get(k as usize))
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// Positions the stream so that entry `offset` is next: restarts for an earlier
    /// offset, drops entries the kernel has consumed, fetches pages to reach it.
    pub async fn seek(&mut self, fs: &Fs, offset: u64) -> FsResult<()> {
        if offset < self.base {
            self.restart();
        }
        while self.base + (self.entries.len() as u64) < offset && !self.finished {
            self.fetch(fs).await?;
        }
        while self.base < offset && !self.entries.is_empty() {
            self.entries.pop_front();
            self.base += 1;
        }
        Ok(())
    }

    /// Makes entry `i` available if the directory has one; `false` at the end.
    pub async fn ensure(&mut self, fs: &Fs, i: u64) -> FsResult<bool> {
        while self.get(i).is_none() {
            if self.finished {
                return Ok(false);
            }
            self.fetch(fs).await?;
        }
        Ok(true)
    }

    /// Fetches one more page (or, after the last one, emits what is left).
    async fn fetch(&mut self, fs: &Fs) -> FsResult<()> {
        if self.finished {
            return Ok(());
        }
        if self.listed_all {
            while let Some(o) = self.held.pop_front() {
                self.push_object(fs, o);
            }
            for name in std::mem::take(&mut self.local) {
                self.entries.push_back(DirEntry { name, kind: Kind::File, cached: None });
            }
            self.finished = true;
            return Ok(());
        }
        let page = match self.next.take() {
            Some(next) => {
                self.token = None;
                next.await
                    .map_err(|e| BackendError::io(format!("listing task failed: {e}")).with_source(e))??
            }
            None => match self.token.take() {
                // the first page: its lookup may have just fetched it (cache.rs)
                None => match fs.cache.take_first_page(&self.path) {
                    Some(page) => page,
                    None => fs.backend.list(&self.page_request(None)).await?,
                },
                token => fs.backend.list(&self.page_request(token)).await?,
            },
        };
        if let Some(token) = &page.next_continuation {
            let (backend, req) = (fs.backend.clone(), self.page_request(Some(token.clone())));
            let list = async move { backend.list(&req).await };
            self.next = Some(tokio::spawn(tracing::Instrument::in_current_span(list)));
        }
        let first_new = self.entries.len();
        let mut items: Vec<Item> = page.objects.into_iter().map(Item::Object).collect();
        items.extend(page.common_prefixes.into_iter().map(Item::Prefix));
        items.sort_by(|a, b| a.key().cmp(b.key()));
        for item in items {
            self.release_held_before(fs, item.key());
            match item {
                Item::Object(o) => self.held.push_back(o),
                Item::Prefix(p) => {
                    // directory wins over a file of the same name
                    let twin = &p[..p.len() - 1];
                    self.held.retain(|o| o.key != twin);
                    let name = p[self.prefix.len()..p.len() - 1].to_owned();
                    if usable_name(&name) {
                        let path = child_path(&self.path, &name);
                        // keep a cached marker (with its metadata) if we know one
                        let c = match fs.cache.stat(&path) {
                            Some(c) if c.kind == Kind::Dir => c,
                            _ => {
                                let c = Cached::listed_dir();
                                fs.cache.put(&path, c.clone());
                                c
                            }
                        };
                        self.local.remove(&name);
                        self.entries.push_back(DirEntry { name, kind: Kind::Dir, cached: Some(c) });
                    }
                }
            }
        }
        self.probe_listed_dirs(fs, first_new).await;
        self.token = page.next_continuation;
        if self.token.is_none() {
            self.listed_all = true;
        }
        Ok(())
    }

    fn page_request(&self, continuation: Option<String>) -> ListRequest {
        ListRequest { prefix: self.prefix.clone(), delimiter: Some("/".into()), continuation, max_keys: 0 }
    }

    /// Looks up the subdirectories this page listed, many at once: a directory's
    /// stored mode and mtime live on its marker, which no listing carries, and
    /// `ls -l` would otherwise look them up one after another (issue 11: no
    /// per-entry request may wait behind another). Failures leave the entry to a
    /// later lookup.
    async fn probe_listed_dirs(&mut self, fs: &Fs, from: usize) {
        let todo: Vec<(usize, String)> = self
            .entries
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, e)| e.kind == Kind::Dir && e.cached.as_ref().is_some_and(|c| !c.trustworthy()))
            .map(|(i, e)| (i, child_path(&self.path, &e.name)))
            .collect();
        if todo.is_empty() {
            return;
        }
        let probes =
            futures::stream::iter(todo).map(|(i, path)| async move { (i, fs.probe_dir(&path).await) });
        let done: Vec<(usize, FsResult<Option<Cached>>)> =
            probes.buffer_unordered(DIR_PROBES).collect().await;
        for (i, r) in done {
            if let (Ok(Some(c)), Some(e)) = (r, self.entries.get_mut(i)) {
                e.cached = Some(c);
            }
        }
    }

    /// Emits held objects that can no longer have a directory twin: their `key/`
    /// sorts before `key`, the current listing position.
    fn release_held_before(&mut self, fs: &Fs, key: &str) {
        while let Some(front) = self.held.front() {
            let k = front.key.as_str();
            // `k + "/" < key`, without allocating
            let twin_passed = match key.strip_prefix(k) {
                Some(rest) => match rest.as_bytes() {
                    [] | [b'/'] => false,
                    [b'/', ..] => true,
                    [c, ..] => *c > b'/',
                },
                // `key` is not an extension of `k`: they differ within `k`'s length, or `key` is shorter
                None => k < key,
            };
            if !twin_passed {
                break;
            }
            let o = self.held.pop_front().expect("front exists");
            self.push_object(fs, o);
        }
    }

    fn push_object(&mut self, fs: &Fs, o: ObjectMeta) {
        let Some(name) = o.key.strip_prefix(&self.prefix).map(str::to_owned) else { return };
        if !usable_name(&name) {
            return; // includes the directory's own marker (empty name)
        }
        let path = child_path(&self.path, &name);
        let c = match fs.cache.stat(&path) {
            // a complete entry for the same version is better than the listing's
            Some(c) if c.complete && c.meta.as_ref().is_some_and(|m| m.etag == o.etag) => c,
            _ => {
                let c = Cached::listed(o, &fs.backend.capabilities());
                fs.cache.put(&path, c.clone());
                c
            }
        };
        self.local.remove(&name);
        self.entries.push_back(DirEntry { name, kind: c.kind, cached: Some(c) });
    }
}

/// One entry as handed to a FUSE directory reply.
pub struct Emit<'a> {
    pub ino: u64,
    /// Offset of the *next* entry, passed back by the kernel to continue.
    pub offset: u64,
    pub kind: Kind,
    pub name: &'a str,
}

impl Fs {
    /// Inode number shown by plain readdir: the known inode, else a fresh number
    /// the kernel will not hold (it only uses it as `d_ino`).
    fn readdir_ino(&self, dir_ino: u64, dir: &str, e: &DirEntry) -> u64 {
        match e.name.as_str() {
            "." => dir_ino,
            ".." if dir.is_empty() => super::inode::ROOT_INO,
            ".." => {
                self.inodes.peek(super::inode::split_path(dir).0).unwrap_or_else(|| self.inodes.fresh_ino())
            }
            n => self.inodes.peek(&child_path(dir, n)).unwrap_or_else(|| self.inodes.fresh_ino()),
        }
    }

    /// readdir: feeds entries from `offset` to `add` until it reports a full buffer.
    pub async fn fill_dir(
        &self,
        dir_ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(Emit<'_>) -> bool,
    ) -> FsResult<()> {
        let s = self.dir_stream(fh)?;
        let mut s = s.lock().await;
        s.seek(self, offset).await?;
        let mut i = offset;
        while s.ensure(self, i).await? {
            let e = s.get(i).expect("ensured");
            let ino = self.readdir_ino(dir_ino, &s.path, e);
            if add(Emit { ino, offset: i + 1, kind: e.kind, name: &e.name }) {
                break;
            }
            i += 1;
        }
        Ok(())
    }

    /// readdirplus: like [`Fs::fill_dir`] with attributes; every entry handed to the
    /// kernel (except `.` and `..`) takes an inode reference, as a lookup would.
    pub async fn fill_dir_plus(
        &self,
        dir_ino: u64,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(Emit<'_>, &fuser::FileAttr, std::time::Duration) -> bool,
    ) -> FsResult<()> {
        let s = self.dir_stream(fh)?;
        let mut s = s.lock().await;
        s.seek(self, offset).await?;
        let mut i = offset;
        while s.ensure(self, i).await? {
            let e = s.get(i).expect("ensured");
            let emit = |ino| Emit { ino, offset: i + 1, kind: e.kind, name: &e.name };
            if e.name == "." || e.name == ".." {
                let ino = self.readdir_ino(dir_ino, &s.path, e);
                let attr = self.attr_of(ino, &Cached::dir(None), None);
                if add(emit(ino), &attr, std::time::Duration::ZERO) {
                    break;
                }
                i += 1;
                continue;
            }
            let path = child_path(&s.path, &e.name);
            let writer = self.inodes.peek(&path).and_then(|ino| self.writer_of(ino));
            let (c, size) = match (&writer, &e.cached) {
                (Some(f), Some(c)) => (f.overlay(c.clone()), Some(f.handle.size())),
                (Some(f), None) => (f.pending_cached(&path), Some(f.handle.size())),
                (None, Some(c)) => (c.clone(), None),
                // a local file closed since opendir: let the kernel look it up
                (None, None) => (Cached { kind: e.kind, meta: None, complete: false, typed: false }, None),
            };
            let ino = self.inodes.remember(&path, c.kind);
            let attr = self.attr_of(ino, &c, size);
            let ttl = if writer.is_some() { self.cfg.stat_cache_ttl } else { self.ttl_for(&c) };
            if add(emit(ino), &attr, ttl) {
                self.inodes.forget(ino, 1); // not sent: the kernel holds no reference
                break;
            }
            i += 1;
        }
        Ok(())
    }

    /// Opens a directory stream (opendir); returns its handle.
    pub fn opendir(&self, ino: u64) -> FsResult<u64> {
        let path = self.dir_path(ino)?;
        let local = self.local_children(&path);
        let fh = self.next_fh();
        self.lock_dirs()
            .insert(fh, std::sync::Arc::new(tokio::sync::Mutex::new(DirStream::new(path, local))));
        Ok(fh)
    }

    pub fn dir_stream(&self, fh: u64) -> FsResult<std::sync::Arc<tokio::sync::Mutex<DirStream>>> {
        self.lock_dirs().get(&fh).cloned().ok_or(super::FsError::BadHandle(fh))
    }

    pub fn releasedir(&self, fh: u64) {
        self.lock_dirs().remove(&fh);
    }

    /// All entries of a directory, for tests and small internal uses.
    pub async fn list_all(&self, ino: u64) -> FsResult<Vec<DirEntry>> {
        let fh = self.opendir(ino)?;
        let s = self.dir_stream(fh)?;
        let mut s = s.lock().await;
        let mut out = Vec::new();
        let mut i = 0;
        while s.ensure(self, i).await? {
            out.push(s.get(i).expect("ensured").clone());
            i += 1;
        }
        drop(s);
        self.releasedir(fh);
        Ok(out)
    }
}

impl Drop for DirStream {
    fn drop(&mut self) {
        // a closed directory (`ls | head`) needs no more pages
        if let Some(next) = self.next.take() {
            next.abort();
        }
    }
}
