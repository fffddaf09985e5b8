//! Open files: the bridge between kernel file handles and [`FileHandle`]s, and
//! `setattr` (truncate, chmod, chown, utimes), which may go through either.
//!
//! Data movement (read-ahead, streaming or spooled writes, multipart uploads)
//! lives in `handle.rs` and below; this layer decides *when* content becomes
//! visible and *which metadata* goes with it:
//!
//! - content is committed once per write session: at the `close` of the
//!   process that opened the file, at `fsync`, or at the last `release`.
//!   Errors are returned from `close` and `fsync` (EIO etc.), never swallowed,
//!   because an unreported failed upload is silent data loss. A `close` by
//!   another process holding a copy of the descriptor (a child after `fork`,
//!   which every shell and `subprocess` makes) does not commit: committing
//!   there uploaded the file again at each exit and showed the bytes written
//!   so far as the whole file (issue 13). Nor does a `close` before anything
//!   was written through a handle that truncated an existing file: `cmd > f`
//!   and `dd of=f` close a duplicate right after opening, and committing then
//!   replaced the old content with nothing before a byte arrived (issue 14).
//!   A created file is committed at that close all the same (`touch`). The opener is recorded as a thread
//!   group (process), not a thread, so a program closing from another thread
//!   still commits at its `close`, as mountpoint-s3 does with the opener pid;
//! - a rewrite keeps the object's user metadata (xattrs, `--enable-perms`
//!   attributes, symlink marker) and content type: they are passed to
//!   `FileHandle::commit`, which writes a new object;
//! - a file created here is visible in this mount (lookup, `ls`, `stat` with its
//!   current size) from `create` on, but other clients see it only once it is
//!   committed; a created file that is never written is committed as an empty
//!   object, so `touch new` works;
//! - a file unlinked while open is discarded at close instead of committed, so
//!   closing it cannot resurrect it.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use bytes::Bytes;
use fuser::{FileAttr, TimeOrNow};

use super::attr;
use super::cache::{Cached, Kind};
use super::core::{pending_meta, Caller, Entry, Fs};
use super::{FsError, FsResult};
use crate::backend::{ObjectMeta, PutOptions};
use crate::fs::handle::{FileHandle, OpenMode};

pub struct OpenFile {
    pub ino: u64,
    pub handle: FileHandle,
    pub writable: bool,
    /// Created by this handle (O_CREAT of a missing file).
    pub created: bool,
    unlinked: AtomicBool,
    /// Process (thread group id) that opened the file; 0 when unknown (commit at every close).
    opener: AtomicU32,
    state: Mutex<OpenState>,
    /// Held across a commit (from its unlinked check to the stored object), so that
    /// an unlink waits for a commit in flight instead of being undone by it.
    commit_lock: tokio::sync::Mutex<()>,
}

struct OpenState {
    /// Content type and user metadata the next commit writes.
    opts: PutOptions,
    /// `opts` changed (chmod, setxattr) and must be written even if the content is clean.
    opts_dirty: bool,
    /// At least one commit stored this file.
    committed: bool,
    /// Last local modification, shown as mtime until committed.
    mtime: SystemTime,
    /// Content changed through this handle since it was opened.
    written: bool,
    /// Opened with O_TRUNC, which emptied a non-empty file: its mtime and ctime moved
    /// at the open (POSIX), although the empty content is stored only when the handle
    /// commits (a close that wrote nothing leaves that to the release, see `close`).
    truncated: bool,
}

impl OpenFile {
    fn new(
        ino: u64,
        handle: FileHandle,
        writable: bool,
        created: bool,
        existing: Option<&ObjectMeta>,
    ) -> Self {
        let opts = existing
            .map(|m| PutOptions {
                content_type: m.content_type.clone(),
                user_metadata: m.user_metadata.clone(),
                ..Default::default()
            })
            .unwrap_or_default();
        OpenFile {
            ino,
            handle,
            writable,
            created,
            unlinked: AtomicBool::new(false),
            opener: AtomicU32::new(0),
            state: Mutex::new(OpenState {
                opts,
                opts_dirty: false,
                committed: false,
                mtime: SystemTime::now(),
                written: false,
                truncated: false,
            }),
            commit_lock: tokio::sync::Mutex::new(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpenState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn is_unlinked(&self) -> bool {
        self.unlinked.load(Ordering::Acquire)
    }

    pub fn mark_unlinked(&self) {
        self.unlinked.store(true, Ordering::Release);
    }

    /// Waits for a commit in flight: after `mark_unlinked` and this, no commit of this
    /// handle can store the object again (a release committing an O_TRUNC open while
    /// the file is unlinked put it back, and `rmdir` of its directory got ENOTEMPTY).
    pub async fn wait_for_commit(&self) {
        drop(self.commit_lock.lock().await);
    }

    /// What `stat` shows for this file before anything is known from the backend.
    pub fn pending_cached(&self, path: &str) -> Cached {
        let st = self.lock();
        let mut m = pending_meta(path, st.mtime);
        m.user_metadata = st.opts.user_metadata.clone();
        Cached { kind: Kind::File, meta: Some(m), complete: true, typed: true }
    }

    /// `c` as this handle will commit it: with the metadata changes it holds
    /// (chmod or setxattr while open), so `stat` shows them before the commit.
    pub fn overlay(&self, mut c: Cached) -> Cached {
        if let Some(m) = c.meta.as_mut() {
            let st = self.lock();
            m.user_metadata = st.opts.user_metadata.clone();
            if st.written || st.truncated {
                m.last_modified = st.mtime;
            }
        }
        c
    }

    /// Replaces user metadata to be written with the next commit.
    pub fn set_metadata(&self, f: impl FnOnce(&mut std::collections::BTreeMap<String, String>)) {
        let mut st = self.lock();
        f(&mut st.opts.user_metadata);
        st.opts_dirty = true;
    }

    /// Records a content change: the file's mtime becomes the commit's date, so a
    /// stored `bucketfs-mtime` (from an earlier utimes) no longer applies.
    /// Returns whether the options the next commit uses changed.
    fn touch(&self) -> bool {
        let mut st = self.lock();
        st.mtime = SystemTime::now();
        st.written = true;
        st.opts.user_metadata.remove(attr::META_MTIME).is_some()
    }

    /// The options the next commit will write with.
    fn upload_options(&self) -> PutOptions {
        self.lock().opts.clone()
    }

    pub fn metadata(&self) -> std::collections::BTreeMap<String, String> {
        self.lock().opts.user_metadata.clone()
    }

    /// Whether this handle holds state the backend does not have yet.
    pub fn has_pending(&self) -> bool {
        let st = self.lock();
        self.writable && (st.opts_dirty || (self.created && !st.committed) || self.handle.is_dirty())
    }
}

fn open_mode(flags: i32) -> OpenMode {
    let acc = flags & libc::O_ACCMODE;
    OpenMode {
        read: acc != libc::O_WRONLY,
        write: acc != libc::O_RDONLY,
        truncate: flags & libc::O_TRUNC != 0,
        append: flags & libc::O_APPEND != 0,
    }
}

impl Fs {
    fn file(&self, fh: u64) -> FsResult<Arc<OpenFile>> {
        self.lock_files().get(&fh).cloned().ok_or(FsError::BadHandle(fh))
    }

    fn register(&self, f: OpenFile) -> u64 {
        let fh = self.next_fh();
        self.lock_files().insert(fh, Arc::new(f));
        fh
    }

    pub async fn open(&self, ino: u64, flags: i32) -> FsResult<u64> {
        let (path, kind) = self.inode(ino)?;
        match kind {
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid("cannot open a symlink")),
            Kind::File => {}
        }
        let mode = open_mode(flags);
        if mode.write || mode.truncate {
            self.check_writable()?;
        }
        // a file that so far exists only as another open handle has no object yet
        let pending_elsewhere = self.writer_of(ino).is_some();
        // The kernel keeps the name of a file whose commit failed for the entry
        // TTL and opens it by inode even for O_CREAT (the flag does not reach us):
        // a retried write must find the name creatable, not ENOENT (issue 14).
        let lost = mode.write && self.lost_writes.lock().unwrap_or_else(|e| e.into_inner()).remove(&ino);
        let existing =
            match if mode.write { self.resolve_complete(&path).await } else { self.resolve(&path).await } {
                Ok(c) if c.kind == Kind::File => c.meta,
                Ok(c) if c.kind == Kind::Dir => return Err(FsError::IsDir),
                Ok(_) => return Err(FsError::Invalid("cannot open a symlink")),
                Err(e) if e.is_not_found() && (pending_elsewhere || lost) => None,
                Err(e) => return Err(e),
            };
        let handle = FileHandle::open(self.handles.clone(), path, existing.clone(), mode);
        let f = OpenFile::new(ino, handle, mode.write, lost && existing.is_none(), existing.as_ref());
        if mode.write && mode.truncate && existing.as_ref().is_some_and(|m| m.size > 0) {
            // the content changes now (it is stored at the commit): a stored utimes
            // mtime no longer applies, and stat shows the new times at once
            let mut st = f.lock();
            st.truncated = true;
            st.mtime = SystemTime::now();
            st.opts.user_metadata.remove(attr::META_MTIME);
        }
        // a multipart upload fixes its metadata when it starts: give it what commit will use
        f.handle.set_upload_options(&f.upload_options()).await;
        Ok(self.register(f))
    }

    pub async fn create(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        who: Caller,
    ) -> FsResult<(Entry, u64)> {
        self.check_writable()?;
        let path = self.child(parent, name)?;
        if mode & libc::S_IFMT != 0 && mode & libc::S_IFMT != libc::S_IFREG {
            return Err(FsError::NotSupported("only regular files can be created"));
        }
        // The kernel calls create only after a negative lookup, but our negative
        // answer may have been a stale cache entry: re-check with the backend.
        self.cache.invalidate(&path);
        match self.resolve(&path).await {
            Ok(_) if flags & libc::O_EXCL != 0 => return Err(FsError::Exists),
            Ok(c) if c.kind == Kind::Dir => return Err(FsError::IsDir),
            Ok(_) => {
                // O_CREAT of an existing file is a plain open
                let e = self.lookup(parent, name).await?;
                let fh = self.open(e.attr.ino.0, flags).await?;
                return Ok((e, fh));
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
        let mut om = open_mode(flags);
        om.write = true;
        om.truncate = true;
        let ino = self.inodes.remember(&path, Kind::File);
        self.cache.invalidate(&path);
        let handle = FileHandle::open(self.handles.clone(), path.clone(), None, om);
        let f = OpenFile::new(ino, handle, true, true, None);
        f.set_metadata(|md| md.extend(self.owner_metadata(mode, umask, who)));
        f.lock().opts_dirty = false;
        // O_EXCL was checked above with a lookup, which another client can race between
        // our lookup and our commit. Where the backend has conditional writes, the first
        // commit also carries If-None-Match: *, so the later of two racing creators fails
        // (EEXIST from close or fsync, its data not stored) instead of replacing the
        // earlier one's file. Cleared once this handle has stored the file.
        if flags & libc::O_EXCL != 0 && self.backend.capabilities().conditional_put {
            f.lock().opts.if_none_match_any = true;
        }
        f.handle.set_upload_options(&f.upload_options()).await;
        let c = f.pending_cached(&path);
        let fh = self.register(f);
        self.touch_dir_of(&path);
        let e = Entry { attr: self.attr_of(ino, &c, Some(0)), ttl: self.cfg.stat_cache_ttl };
        Ok((e, fh))
    }

    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> FsResult<Bytes> {
        let f = self.file(fh)?;
        Ok(f.handle.read(offset, size).await?)
    }

    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> FsResult<u32> {
        self.check_writable()?;
        let f = self.file(fh)?;
        if !f.writable {
            return Err(FsError::BadHandle(fh));
        }
        if f.touch() {
            f.handle.set_upload_options(&f.upload_options()).await;
        }
        let n = f.handle.write(offset, data).await?;
        Ok(n)
    }

    /// Makes the file's content and metadata durable (flush, fsync, release, unmount).
    pub(super) async fn commit_file(&self, f: &OpenFile) -> FsResult<()> {
        if !f.writable {
            return Ok(());
        }
        let _committing = f.commit_lock.lock().await;
        if f.is_unlinked() {
            f.handle.discard().await;
            return Ok(());
        }
        let (opts, opts_dirty, committed) = {
            let st = f.lock();
            (st.opts.clone(), st.opts_dirty, st.committed)
        };
        let path = self.inodes.get(f.ino).map(|(p, _)| p);
        let stored = match f.handle.commit(&opts).await? {
            Some(meta) => Some(meta),
            None => match path.as_deref() {
                // a created file that was never written still has to exist
                Some(p) if f.created && !committed => Some(self.backend.put(p, Bytes::new(), &opts).await?),
                // metadata changed on a clean file: rewrite it in place, server side
                Some(p) if opts_dirty => Some(self.backend.copy(p, p, Some(&opts)).await?),
                _ => None,
            },
        };
        if let Some(meta) = stored {
            let mut st = f.lock();
            st.committed = true;
            st.opts_dirty = false;
            // the file is ours now: later commits of this handle replace it
            st.opts.if_none_match_any = false;
            drop(st);
            if let Some(p) = path {
                if meta.key == p {
                    self.cache.put(&p, Cached::object(meta));
                } else {
                    self.cache.invalidate(&p);
                }
            }
        }
        Ok(())
    }

    /// fsync (and unmount): commits whoever asks.
    pub async fn flush(&self, fh: u64) -> FsResult<()> {
        let f = self.file(fh)?;
        self.commit_file(&f).await
    }

    /// Records the process that opened `fh` (the FUSE request's thread id `pid`).
    pub fn set_opener(&self, fh: u64, pid: u32) {
        if let Ok(f) = self.file(fh) {
            f.opener.store(thread_group_of(pid), Ordering::Relaxed);
        }
    }

    /// `close` of one descriptor of `fh` by thread `pid`: commits only when that is
    /// the opening process and something was written (see the module docs).
    pub async fn close(&self, fh: u64, pid: u32) -> FsResult<()> {
        let f = self.file(fh)?;
        let opener = f.opener.load(Ordering::Relaxed);
        if opener != 0 && pid != 0 && thread_group_of(pid) != opener {
            return Ok(());
        }
        // a created file is committed (as `touch` expects) even if nothing was written
        let nothing_yet = {
            let st = f.lock();
            !st.written && !st.opts_dirty && !f.created
        };
        if nothing_yet {
            return Ok(());
        }
        self.commit_file(&f).await
    }

    pub async fn release(&self, fh: u64) -> FsResult<()> {
        // committed before it leaves the table: until then the file is this handle's
        // alone (`touch new; cat new` must not see it vanish while release runs)
        let f = self.file(fh)?;
        let mut r = self.commit_file(&f).await;
        self.lock_files().remove(&fh);
        // a truncate by path that found this handle while it was committing made it
        // dirty again; nobody can find it any more, so this commit is the last
        if r.is_ok() && f.has_pending() {
            r = self.commit_file(&f).await;
        }
        if r.is_err() {
            // the kernel ignores release errors: the log is the last place to report this
            let path = self.inodes.get(f.ino).map(|(p, _)| p).unwrap_or_default();
            tracing::error!(target: "bucketfs::fs", path, error = ?r, "could not store file on close; its new content is lost");
            f.handle.discard().await;
            self.lost_writes.lock().unwrap_or_else(|e| e.into_inner()).insert(f.ino);
        }
        r
    }

    /// Commits every open file; returns how many failed (for shutdown).
    pub async fn commit_all(&self) -> usize {
        let files: Vec<Arc<OpenFile>> = self.lock_files().values().cloned().collect();
        let mut failed = 0;
        for f in files {
            if !f.writable {
                continue;
            }
            if let Err(e) = self.commit_file(&f).await {
                let path = self.inodes.get(f.ino).map(|(p, _)| p).unwrap_or_default();
                tracing::error!(target: "bucketfs::fs", path, error = %e, "commit at shutdown failed");
                failed += 1;
            }
        }
        failed
    }

    #[allow(clippy::too_many_arguments)]
    pub async fn setattr(
        &self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<u64>,
    ) -> FsResult<(FileAttr, std::time::Duration)> {
        let (path, kind) = self.inode(ino)?;
        let (cur, _) = self.getattr(ino).await?;
        let mode = mode.map(|m| (m & 0o7777) as u16).filter(|m| *m != cur.perm);
        let uid = uid.filter(|u| *u != cur.uid);
        let gid = gid.filter(|g| *g != cur.gid);
        let mtime = mtime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        });
        // an access time is kept only when set explicitly (touch -a, utimensat); reads never store one
        let atime = atime.map(|t| match t {
            TimeOrNow::SpecificTime(t) => t,
            TimeOrNow::Now => SystemTime::now(),
        });
        if size.is_some() || mode.is_some() || uid.is_some() || gid.is_some() {
            self.check_writable()?;
        }
        if let Some(size) = size {
            if kind == Kind::Dir {
                return Err(FsError::IsDir);
            }
            self.truncate(ino, &path, size, fh).await?;
        }
        let perms_change = mode.is_some() || uid.is_some() || gid.is_some();
        // Stored as metadata with or without --enable-perms (as s3fs does): rsync -a,
        // cp -a, tar -xp and install -m chmod the files they create, and refusing
        // failed them all (issue 12). Open files take it with their commit.
        if perms_change || mtime.is_some() || atime.is_some() {
            if ino == super::inode::ROOT_INO {
                return Err(FsError::Perm("the mount root has no object to store attributes in"));
            }
            self.check_writable()?;
            let edit = |md: &mut std::collections::BTreeMap<String, String>| {
                if let Some(m) = mode {
                    md.insert(attr::META_MODE.into(), format!("{m:o}"));
                }
                if let Some(u) = uid {
                    md.insert(attr::META_UID.into(), u.to_string());
                }
                if let Some(g) = gid {
                    md.insert(attr::META_GID.into(), g.to_string());
                }
                if let Some(t) = mtime {
                    md.insert(attr::META_MTIME.into(), attr::format_mtime(t));
                }
                if let Some(t) = atime {
                    md.insert(attr::META_ATIME.into(), attr::format_mtime(t));
                }
            };
            if mtime.is_some() {
                self.cache.forget_dir_change(&path); // an explicit mtime replaces this mount's
            }
            self.update_metadata(ino, &path, kind, edit).await?;
            self.cache.status_changed(&path);
        }
        self.getattr(ino).await
    }

    /// Applies `edit` to the user metadata of `path`: stashed for the next commit
    /// when the file is open with pending changes, otherwise rewritten server side
    /// (a copy onto itself with replaced metadata; directories use their marker).
    pub(super) async fn update_metadata(
        &self,
        ino: u64,
        path: &str,
        kind: Kind,
        edit: impl Fn(&mut std::collections::BTreeMap<String, String>),
    ) -> FsResult<()> {
        if let Some(f) = self.writer_of(ino).filter(|f| f.has_pending()) {
            f.set_metadata(&edit);
            return Ok(());
        }
        let key = if kind == Kind::Dir { super::inode::dir_prefix(path) } else { path.to_owned() };
        // The rewrite gives the object a new date, which would be its mtime: keep the
        // mtime shown now (chmod, chown, touch -a and xattrs change only the ctime).
        // As `stat` shows it: over S3 a HEAD's date has whole seconds, and may differ
        // from the date this mount showed since the file's commit.
        let mtime = self.getattr(ino).await?.0.mtime;
        let c = self.resolve_complete(path).await?;
        let had_marker = c.meta.is_some();
        let meta = match c.meta {
            Some(m) => m,
            // an implicit directory: create its marker to hold the metadata
            None if kind == Kind::Dir => pending_meta(&key, SystemTime::now()),
            None => return Err(FsError::NotFound),
        };
        let mut opts = PutOptions {
            content_type: meta.content_type.clone(),
            user_metadata: meta.user_metadata.clone(),
            ..Default::default()
        };
        edit(&mut opts.user_metadata);
        opts.user_metadata.entry(attr::META_MTIME.into()).or_insert_with(|| attr::format_mtime(mtime));
        let stored = if kind == Kind::Dir && !had_marker {
            self.backend.put(&key, Bytes::new(), &opts).await?
        } else {
            self.backend.copy(&key, &key, Some(&opts)).await?
        };
        let c = if kind == Kind::Dir { Cached::dir(Some(stored)) } else { Cached::object(stored) };
        self.cache.put(path, c);
        // open handles adopt the new metadata, so their later commits do not revert it
        for f in self.open_files_of(ino) {
            f.set_metadata(|md| edit(md));
            f.lock().opts_dirty = false;
        }
        Ok(())
    }

    async fn truncate(&self, ino: u64, path: &str, size: u64, fh: Option<u64>) -> FsResult<()> {
        if size > self.max_file_size() {
            return Err(FsError::FileTooBig(self.max_file_size()));
        }
        let writer = match fh {
            Some(fh) => Some(self.file(fh)?).filter(|f| f.writable),
            None => None,
        }
        .or_else(|| self.writer_of(ino));
        if let Some(f) = writer {
            f.handle.set_len(size).await?;
            f.touch();
            return Ok(());
        }
        let c = self.resolve_complete(path).await?;
        let meta = c.meta.ok_or(FsError::NotFound)?;
        let mut opts = PutOptions {
            content_type: meta.content_type.clone(),
            user_metadata: meta.user_metadata.clone(),
            ..Default::default()
        };
        // new content: its mtime is the rewrite's date, not a stored one
        opts.user_metadata.remove(attr::META_MTIME);
        let stored = if size == 0 {
            self.backend.put(path, Bytes::new(), &opts).await?
        } else {
            let om = OpenMode { read: true, write: true, truncate: false, append: false };
            let h = FileHandle::open(self.handles.clone(), path.to_owned(), Some(meta.clone()), om);
            h.set_len(size).await?;
            match h.commit(&opts).await {
                Ok(Some(m)) => m,
                Ok(None) => meta,
                Err(e) => {
                    h.discard().await;
                    return Err(e.into());
                }
            }
        };
        self.cache.put(path, Cached::object(stored));
        Ok(())
    }
}

/// The thread group (process id) of thread `tid`, from `/proc`; `tid` itself when
/// unknown. FUSE requests carry the calling thread's id.
fn thread_group_of(tid: u32) -> u32 {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("Tgid:")).and_then(|v| v.trim().parse().ok()).unwrap_or(tid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_flags_map_to_modes() {
        let m = open_mode(libc::O_RDONLY);
        assert!(m.read && !m.write && !m.truncate && !m.append);
        let m = open_mode(libc::O_WRONLY | libc::O_APPEND);
        assert!(!m.read && m.write && m.append);
        let m = open_mode(libc::O_RDWR | libc::O_TRUNC);
        assert!(m.read && m.write && m.truncate);
    }
}
