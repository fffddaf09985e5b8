//! The FUSE filesystem: object-store keys presented as files and directories.
//!
//! Layout of this module:
//! - `mod.rs` (this file): configuration, [`BucketFs`] and the [`fuser::Filesystem`]
//!   implementation, which only dispatches requests and converts results to replies;
//! - `core.rs`: [`Fs`], the operations themselves as async functions (lookup,
//!   getattr, mkdir, unlink, ...), testable without FUSE;
//! - `inode.rs`: inode numbers, kernel lookup counts, path <-> key mapping;
//! - `cache.rs`: stat cache and type cache (with negative entries);
//! - `attr.rs`: object metadata -> `stat` attributes, and our metadata names;
//! - `dir.rs`: paged directory listings; `file.rs`: open files and `setattr`;
//! - `rename.rs`: rename by copy + delete; `xattr.rs`: extended attributes;
//! - `handle.rs`: data path of open files (read-ahead, uploads), owned elsewhere;
//! - `unsupported.rs`: every refused operation and its errno (docs/SEMANTICS.md
//!   has the same table).
//!
//! Concurrency: fuser calls us on several threads through `&self`. Every
//! operation that may talk to the backend is **spawned on the tokio runtime and
//! replies from its task** (fuser replies are `Send`), instead of blocking the
//! FUSE thread with `block_on`: a slow LIST or a large upload then never starves
//! the few FUSE threads, and unrelated requests (a `stat` while a `close` uploads)
//! proceed in parallel. Operations that never wait (forget, statfs, opendir,
//! releasedir) are answered inline. Shared state uses `std::sync::Mutex`es that
//! are never held across an `.await`; a directory stream, which must stay
//! consistent across a page fetch, uses a `tokio::sync::Mutex`. A task that
//! panics drops its reply, which fuser turns into EIO rather than a hung caller.
//!
//! Tracing: every operation runs in a `debug_span!` (target `bucketfs::fs`) that
//! names the operation and its inode/name arguments; `--debug_fuse` enables them.
//!
//! User-visible semantics (what is supported, consistency, caching) are in
//! `docs/SEMANTICS.md`.

mod attr;
mod cache;
mod core;
mod dir;
mod error;
mod file;
pub mod handle;
mod inode;
mod rename;
mod unsupported;
mod xattr;

#[cfg(test)]
mod tests;

use std::ffi::OsStr;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags, KernelConfig,
    LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyDirectoryPlus,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use tracing::Instrument;

pub use self::attr::INDEXED_METADATA;
pub use self::core::{Caller, Entry, Fs};
pub use self::error::{FsError, FsResult};
use self::handle::HandleContext;
use self::unsupported::Refused;
use crate::backend::StorageBackend;

/// Mount options that shape the filesystem's behaviour.
#[derive(Clone, Debug)]
pub struct FsConfig {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits of files, e.g. 0o644.
    pub file_mode: u16,
    /// Permission bits of directories, e.g. 0o755.
    pub dir_mode: u16,
    /// Attributes and entries are cached (by us and by the kernel) this long.
    pub stat_cache_ttl: Duration,
    /// File-vs-directory and negative lookups are cached this long.
    pub type_cache_ttl: Duration,
    /// Keep mode/uid/gid/mtime from setattr as object user metadata.
    pub enable_perms: bool,
    pub read_only: bool,
    /// A directory's lookup fetches the first page of its listing (instead of two
    /// keys) and keeps it for the readdir that usually follows (`ls DIR`): one round
    /// trip fewer per listed directory. Off for the embedded store, which answers
    /// in-process (no round trip to save) and reads every listed object's metadata.
    pub lookup_fetches_listing: bool,
}

/// `statfs` numbers: object stores have no capacity to report, so report a
/// large fixed one (as goofys does) rather than 0, which makes tools refuse to write.
const STATFS_BLOCK: u32 = 4096;
const STATFS_BLOCKS: u64 = (1u64 << 50) / STATFS_BLOCK as u64; // 1 PiB
const STATFS_FILES: u64 = 1_000_000_000;

/// The filesystem handed to fuser.
pub struct BucketFs {
    fs: Arc<Fs>,
    rt: tokio::runtime::Handle,
}

/// A cloneable handle kept by the daemon to commit open files before unmounting.
#[derive(Clone)]
pub struct FsController {
    fs: Arc<Fs>,
}

impl FsController {
    /// Commits every open file with unflushed writes; returns how many failed.
    pub async fn commit_all(&self) -> usize {
        self.fs.commit_all().await
    }
}

impl BucketFs {
    pub fn new(
        rt: tokio::runtime::Handle,
        backend: Arc<dyn StorageBackend>,
        cfg: FsConfig,
        handles: Arc<HandleContext>,
    ) -> Self {
        BucketFs { fs: Arc::new(Fs::new(backend, cfg, handles)), rt }
    }

    pub fn controller(&self) -> FsController {
        FsController { fs: self.fs.clone() }
    }

    /// Runs `op` on the runtime inside `span`; the op replies itself.
    fn spawn<F, Fut>(&self, span: tracing::Span, op: F)
    where
        F: FnOnce(Arc<Fs>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.rt.spawn(op(self.fs.clone()).instrument(span));
    }
}

/// Converts an error to the kernel's errno, logging what the kernel will not show.
fn errno(e: FsError) -> Errno {
    match &e {
        FsError::Backend(_) | FsError::StaleInode(_) | FsError::BadHandle(_) => {
            tracing::warn!(target: "bucketfs::fs", error = %e, errno = e.errno(), "operation failed")
        }
        _ => tracing::debug!(target: "bucketfs::fs", error = %e, "operation failed"),
    }
    Errno::from_i32(e.errno())
}

fn caller(req: &Request) -> Caller {
    Caller { uid: req.uid(), gid: req.gid() }
}

const GEN: Generation = Generation(0);

fn reply_entry(reply: ReplyEntry, r: FsResult<Entry>) {
    match r {
        Ok(e) => reply.entry(&e.ttl, &e.attr, GEN),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: FsResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_attr(reply: ReplyAttr, r: FsResult<(FileAttr, Duration)>) {
    match r {
        Ok((a, ttl)) => reply.attr(&ttl, &a),
        Err(e) => reply.error(errno(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, r: FsResult<Vec<u8>>) {
    match r {
        Ok(v) if size == 0 => reply.size(v.len() as u32),
        Ok(v) if v.len() > size as usize => reply.error(errno(FsError::Range)),
        Ok(v) => reply.data(&v),
        Err(e) => reply.error(errno(e)),
    }
}

impl Filesystem for BucketFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // readdirplus hands attributes from the listing to the kernel with the names,
        // saving a lookup per entry. Always, not "auto": our listings carry the
        // attributes anyway, and with "auto" the kernel sent plain readdir after the
        // first batch, so `ls -l` of 2,000 files still made 2,000 lookups.
        let want = InitFlags::FUSE_DO_READDIRPLUS;
        // The mode a program asked for at create/mkdir, with the umask apart: only a
        // particular mode (0600, 0700) is stored, the usual 0666/0777 keep showing
        // --file-mode/--dir-mode (Fs::owner_metadata applies the umask itself).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DONT_MASK) {
            tracing::debug!(target: "bucketfs::fs", ?missing, "kernel applies the umask itself");
        }
        if let Err(missing) = config.add_capabilities(want) {
            tracing::debug!(target: "bucketfs::fs", ?missing, "kernel lacks readdirplus");
        }
        // O_TRUNC arrives with open instead of as a truncate before it: the old
        // content stays stored until new content is committed (`cmd > f` of an
        // existing f, then a crash, must not leave f empty; issue 14).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            tracing::info!(target: "bucketfs::fs", ?missing, "kernel truncates before open: O_TRUNC empties a file at once");
        }
        // 1 MiB writes and read-ahead instead of the 128 KiB default: an 8th of the
        // FUSE round trips per MiB (fuser negotiates FUSE_MAX_PAGES for this). Each
        // setter answers with the nearest value the kernel allows when ours is too big.
        if let Err(nearest) = config.set_max_write(1 << 20) {
            let _ = config.set_max_write(nearest);
        }
        if let Err(nearest) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(nearest);
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = name.to_owned();
        let span = tracing::debug_span!("lookup", parent = parent.0, ?name);
        self.spawn(span, |fs| async move { reply_entry(reply, fs.lookup(parent.0, &name).await) });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let _s = tracing::debug_span!("forget", ino = ino.0, nlookup).entered();
        self.fs.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let span = tracing::debug_span!("getattr", ino = ino.0);
        self.spawn(span, |fs| async move { reply_attr(reply, fs.getattr(ino.0).await) });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let span = tracing::debug_span!("setattr", ino = ino.0, ?mode, ?uid, ?gid, ?size, ?mtime);
        self.spawn(span, |fs| async move {
            let r = fs.setattr(ino.0, mode, uid, gid, size, atime, mtime, fh.map(|f| f.0)).await;
            reply_attr(reply, r)
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let span = tracing::debug_span!("readlink", ino = ino.0);
        self.spawn(span, |fs| async move {
            match fs.readlink(ino.0).await {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let name = name.to_owned();
        let who = caller(req);
        let span = tracing::debug_span!("mknod", parent = parent.0, ?name, mode, rdev);
        self.spawn(span, |fs| async move {
            reply_entry(reply, fs.mknod(parent.0, &name, mode, umask, rdev, who).await)
        });
    }

    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        let name = name.to_owned();
        let who = caller(req);
        let span = tracing::debug_span!("mkdir", parent = parent.0, ?name);
        self.spawn(span, |fs| async move {
            reply_entry(reply, fs.mkdir(parent.0, &name, mode, umask, who).await)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        let span = tracing::debug_span!("unlink", parent = parent.0, ?name);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.unlink(parent.0, &name).await) });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        let span = tracing::debug_span!("rmdir", parent = parent.0, ?name);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.rmdir(parent.0, &name).await) });
    }

    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        let name = link_name.to_owned();
        let target = target.to_owned();
        let who = caller(req);
        let span = tracing::debug_span!("symlink", parent = parent.0, ?name, ?target);
        self.spawn(
            span,
            |fs| async move { reply_entry(reply, fs.symlink(parent.0, &name, &target, who).await) },
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (name.to_owned(), newname.to_owned());
        let span = tracing::debug_span!(
            "rename",
            parent = parent.0,
            ?name,
            newparent = newparent.0,
            ?newname,
            flags = flags.bits()
        );
        self.spawn(span, |fs| async move {
            reply_empty(reply, fs.rename(parent.0, &name, newparent.0, &newname, flags.bits()).await)
        });
    }

    fn link(&self, _req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        let _s = tracing::debug_span!("link", ino = ino.0, newparent = newparent.0, ?newname).entered();
        reply.error(errno(FsError::Refused(Refused::Link)));
    }

    // Refused operations programs try often (cp tries copy_file_range, a FICLONE
    // ioctl and SEEK_DATA on every file): answered here from unsupported.rs, quietly,
    // rather than by fuser's defaults, which log a warning each time.
    fn fallocate(&self, _: &Request, ino: INodeNo, _: FileHandle, _: u64, _: u64, _: i32, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("fallocate", ino = ino.0).entered();
        reply.error(errno(FsError::Refused(Refused::Fallocate)));
    }

    fn lseek(&self, _: &Request, ino: INodeNo, _: FileHandle, _: i64, whence: i32, reply: fuser::ReplyLseek) {
        let _s = tracing::debug_span!("lseek", ino = ino.0, whence).entered();
        reply.error(errno(FsError::Refused(Refused::Lseek)));
    }

    fn ioctl(
        &self,
        _: &Request,
        ino: INodeNo,
        _: FileHandle,
        _: fuser::IoctlFlags,
        cmd: u32,
        _: &[u8],
        _: u32,
        reply: fuser::ReplyIoctl,
    ) {
        let _s = tracing::debug_span!("ioctl", ino = ino.0, cmd).entered();
        reply.error(errno(FsError::Refused(Refused::Ioctl)));
    }

    fn copy_file_range(
        &self,
        _: &Request,
        ino_in: INodeNo,
        _: FileHandle,
        _: u64,
        ino_out: INodeNo,
        _: FileHandle,
        _: u64,
        _: u64,
        _: fuser::CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        let _s = tracing::debug_span!("copy_file_range", ino_in = ino_in.0, ino_out = ino_out.0).entered();
        reply.error(errno(FsError::Refused(Refused::CopyFileRange)));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let pid = req.pid();
        let span = tracing::debug_span!("open", ino = ino.0, flags = flags.0, pid);
        self.spawn(span, |fs| async move {
            match fs.open(ino.0, flags.0).await {
                Ok(fh) => {
                    fs.set_opener(fh, pid);
                    reply.opened(FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let span = tracing::debug_span!("read", ino = ino.0, fh = fh.0, offset, size);
        self.spawn(span, |fs| async move {
            match fs.read(fh.0, offset, size).await {
                Ok(d) => reply.data(&d),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        // The kernel's buffer is only ours until we return: copy it into a recycled
        // one. A fresh 1 MiB Vec per write was mapped, faulted in and zeroed page by
        // page (crate::allocator maps every block over 128 KiB): a quarter of the
        // daemon's CPU on a sequential write (perf, 256 MiB to SeaweedFS).
        let mut buf = crate::buffers::take(data.len());
        buf.extend_from_slice(data);
        let data = crate::buffers::freeze(buf);
        let span = tracing::debug_span!("write", ino = ino.0, fh = fh.0, offset, len = data.len());
        self.spawn(span, |fs| async move {
            match fs.write(fh.0, offset, &data).await {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, _lock_owner: LockOwner, reply: ReplyEmpty) {
        let pid = req.pid();
        let span = tracing::debug_span!("flush", ino = ino.0, fh = fh.0, pid);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.close(fh.0, pid).await) });
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let span = tracing::debug_span!("release", ino = ino.0, fh = fh.0);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.release(fh.0).await) });
    }

    fn fsync(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let span = tracing::debug_span!("fsync", ino = ino.0, fh = fh.0);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.flush(fh.0).await) });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let _s = tracing::debug_span!("opendir", ino = ino.0).entered();
        match self.fs.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(e)),
        }
    }

    fn readdir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, mut reply: ReplyDirectory) {
        let span = tracing::debug_span!("readdir", ino = ino.0, fh = fh.0, offset);
        self.spawn(span, |fs| async move {
            let r = fs
                .fill_dir(ino.0, fh.0, offset, |e| {
                    reply.add(INodeNo(e.ino), e.offset, attr::file_type(e.kind), e.name)
                })
                .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        let span = tracing::debug_span!("readdirplus", ino = ino.0, fh = fh.0, offset);
        self.spawn(span, |fs| async move {
            let r = fs
                .fill_dir_plus(ino.0, fh.0, offset, |e, attr, ttl| {
                    reply.add(INodeNo(e.ino), e.offset, e.name, &ttl, attr, GEN)
                })
                .await;
            match r {
                Ok(()) => reply.ok(),
                Err(e) => reply.error(errno(e)),
            }
        });
    }

    fn releasedir(&self, _req: &Request, ino: INodeNo, fh: FileHandle, _flags: OpenFlags, reply: ReplyEmpty) {
        let _s = tracing::debug_span!("releasedir", ino = ino.0, fh = fh.0).entered();
        self.fs.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(&self, _req: &Request, ino: INodeNo, _fh: FileHandle, _datasync: bool, reply: ReplyEmpty) {
        let span = tracing::debug_span!("fsyncdir", ino = ino.0);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.fsyncdir(ino.0).await) });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let _s = tracing::debug_span!("statfs").entered();
        reply.statfs(
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_BLOCKS,
            STATFS_FILES,
            STATFS_FILES,
            STATFS_BLOCK,
            inode::NAME_MAX as u32,
            STATFS_BLOCK,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        let (name, value) = (name.to_owned(), value.to_vec());
        let span = tracing::debug_span!("setxattr", ino = ino.0, ?name, len = value.len());
        self.spawn(
            span,
            |fs| async move { reply_empty(reply, fs.setxattr(ino.0, &name, &value, flags).await) },
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        // Only `user.` names are stored. `ls -l` asks for security.selinux and
        // system.posix_acl_access until it hears ENOTSUP (see fs/xattr.rs): answer
        // here, without a task and a thread hop.
        if !xattr::may_exist(name) {
            tracing::trace!(ino = ino.0, ?name, "getxattr: not a stored namespace");
            reply.error(errno(FsError::Refused(Refused::XattrNamespace)));
            return;
        }
        let name = name.to_owned();
        let span = tracing::debug_span!("getxattr", ino = ino.0, ?name, size);
        self.spawn(span, |fs| async move { reply_xattr(reply, size, fs.getxattr(ino.0, &name).await) });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let span = tracing::debug_span!("listxattr", ino = ino.0, size);
        self.spawn(span, |fs| async move { reply_xattr(reply, size, fs.listxattr(ino.0).await) });
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = name.to_owned();
        let span = tracing::debug_span!("removexattr", ino = ino.0, ?name);
        self.spawn(span, |fs| async move { reply_empty(reply, fs.removexattr(ino.0, &name).await) });
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let name = name.to_owned();
        let who = caller(req);
        let pid = req.pid();
        let span = tracing::debug_span!("create", parent = parent.0, ?name, flags, pid);
        self.spawn(span, |fs| async move {
            match fs.create(parent.0, &name, mode, umask, flags, who).await {
                Ok((e, fh)) => {
                    fs.set_opener(fh, pid);
                    reply.created(&e.ttl, &e.attr, GEN, FileHandle(fh), FopenFlags::empty())
                }
                Err(e) => reply.error(errno(e)),
            }
        });
    }
}
