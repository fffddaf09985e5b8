//! A wrapper around the filesystem that keeps the daemon from unmounting a mount that
//! is not its own.
//!
//! When a FUSE session ends, fuser (through libfuse) unmounts the mountpoint *by path*.
//! If our mount was unmounted from outside (`umount`, `fusermount3 -u`) and another
//! mount is now on that path (the one ours was stacked on with `--allow-stacking`, or
//! a new one made in the meantime), that unmount would take the other mount down: one
//! `umount` took both. [`Guarded::destroy`], which fuser calls just before that
//! unmount, checks `/proc/self/mountinfo`: if the path no longer shows our mount and we
//! did not unmount it ourselves, it parks the session thread for good, and the main
//! thread ends the process instead (so the unmount never runs).
//!
//! Every other method is forwarded unchanged (generated from fuser 0.18's `Filesystem`
//! trait; `batch_forget` is left to the trait's default, which forwards each item to
//! `forget`, because its argument type is not nameable outside fuser).

use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use fuser::*;

use super::mountinfo;

/// What the main thread and the session thread know about the end of the session.
#[derive(Debug)]
pub struct SessionEnd {
    mountpoint: PathBuf,
    /// The mount id of our mount once readiness confirmed it (0 until then).
    our_id: AtomicU64,
    /// Set by the main thread just before it unmounts our mount itself.
    unmounting: AtomicBool,
    /// Set by the session thread when the session is over and the thread will not return.
    parked: AtomicBool,
}

impl SessionEnd {
    pub fn new(mountpoint: &Path) -> Arc<Self> {
        Arc::new(SessionEnd {
            mountpoint: mountpoint.to_path_buf(),
            our_id: AtomicU64::new(0),
            unmounting: AtomicBool::new(false),
            parked: AtomicBool::new(false),
        })
    }

    pub fn set_our_id(&self, id: u64) {
        self.our_id.store(id, Ordering::SeqCst);
    }

    /// Whether an unmount of the mountpoint's path now would unmount our mount.
    pub fn ours_on_top(&self) -> bool {
        let id = self.our_id.load(Ordering::SeqCst);
        id != 0 && mountinfo::mounts_at(&self.mountpoint).last().is_some_and(|m| m.id == id)
    }

    /// The main thread is about to unmount our mount (the session then ends normally).
    pub fn unmounting(&self) {
        self.unmounting.store(true, Ordering::SeqCst);
    }

    /// The session is over and its thread parked (see the module documentation).
    pub fn parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }
}

pub struct Guarded<F: Filesystem> {
    inner: F,
    end: Arc<SessionEnd>,
}

impl<F: Filesystem> Guarded<F> {
    pub fn new(inner: F, end: Arc<SessionEnd>) -> Self {
        Guarded { inner, end }
    }
}

impl<F: Filesystem> Filesystem for Guarded<F> {
    fn destroy(&mut self) {
        self.inner.destroy();
        if !self.end.unmounting.load(Ordering::SeqCst) && !self.end.ours_on_top() {
            tracing::info!(
                mountpoint = %self.end.mountpoint.display(),
                "our mount is gone from the mountpoint; not unmounting what is there now"
            );
            self.end.parked.store(true, Ordering::SeqCst);
            loop {
                std::thread::park();
            }
        }
    }

    fn init(&mut self, req: &Request, config: &mut KernelConfig) -> io::Result<()> {
        self.inner.init(req, config)
    }
    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.inner.lookup(req, parent, name, reply)
    }
    fn forget(&self, req: &Request, ino: INodeNo, nlookup: u64) {
        self.inner.forget(req, ino, nlookup)
    }
    fn getattr(&self, req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        self.inner.getattr(req, ino, fh, reply)
    }
    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        crtime: Option<SystemTime>,
        chgtime: Option<SystemTime>,
        bkuptime: Option<SystemTime>,
        flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        self.inner.setattr(
            req, ino, mode, uid, gid, size, atime, mtime, ctime, fh, crtime, chgtime, bkuptime, flags, reply,
        )
    }
    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.inner.readlink(req, ino, reply)
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
        self.inner.mknod(req, parent, name, mode, umask, rdev, reply)
    }
    fn mkdir(&self, req: &Request, parent: INodeNo, name: &OsStr, mode: u32, umask: u32, reply: ReplyEntry) {
        self.inner.mkdir(req, parent, name, mode, umask, reply)
    }
    fn unlink(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.unlink(req, parent, name, reply)
    }
    fn rmdir(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.rmdir(req, parent, name, reply)
    }
    fn symlink(&self, req: &Request, parent: INodeNo, link_name: &OsStr, target: &Path, reply: ReplyEntry) {
        self.inner.symlink(req, parent, link_name, target, reply)
    }
    fn rename(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        self.inner.rename(req, parent, name, newparent, newname, flags, reply)
    }
    fn link(&self, req: &Request, ino: INodeNo, newparent: INodeNo, newname: &OsStr, reply: ReplyEntry) {
        self.inner.link(req, ino, newparent, newname, reply)
    }
    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.inner.open(req, ino, flags, reply)
    }
    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.inner.read(req, ino, fh, offset, size, flags, lock_owner, reply)
    }
    fn write(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        write_flags: WriteFlags,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        self.inner.write(req, ino, fh, offset, data, write_flags, flags, lock_owner, reply)
    }
    fn flush(&self, req: &Request, ino: INodeNo, fh: FileHandle, lock_owner: LockOwner, reply: ReplyEmpty) {
        self.inner.flush(req, ino, fh, lock_owner, reply)
    }
    fn release(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        flush: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.release(req, ino, fh, flags, lock_owner, flush, reply)
    }
    fn fsync(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.inner.fsync(req, ino, fh, datasync, reply)
    }
    fn opendir(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.inner.opendir(req, ino, flags, reply)
    }
    fn readdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, offset: u64, reply: ReplyDirectory) {
        self.inner.readdir(req, ino, fh, offset, reply)
    }
    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.inner.readdirplus(req, ino, fh, offset, reply)
    }
    fn releasedir(&self, req: &Request, ino: INodeNo, fh: FileHandle, flags: OpenFlags, reply: ReplyEmpty) {
        self.inner.releasedir(req, ino, fh, flags, reply)
    }
    fn fsyncdir(&self, req: &Request, ino: INodeNo, fh: FileHandle, datasync: bool, reply: ReplyEmpty) {
        self.inner.fsyncdir(req, ino, fh, datasync, reply)
    }
    fn statfs(&self, req: &Request, ino: INodeNo, reply: ReplyStatfs) {
        self.inner.statfs(req, ino, reply)
    }
    fn setxattr(
        &self,
        req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        position: u32,
        reply: ReplyEmpty,
    ) {
        self.inner.setxattr(req, ino, name, value, flags, position, reply)
    }
    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.inner.getxattr(req, ino, name, size, reply)
    }
    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.inner.listxattr(req, ino, size, reply)
    }
    fn removexattr(&self, req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.inner.removexattr(req, ino, name, reply)
    }
    fn access(&self, req: &Request, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        self.inner.access(req, ino, mask, reply)
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
        self.inner.create(req, parent, name, mode, umask, flags, reply)
    }
    fn getlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        reply: ReplyLock,
    ) {
        self.inner.getlk(req, ino, fh, lock_owner, start, end, typ, pid, reply)
    }
    fn setlk(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        self.inner.setlk(req, ino, fh, lock_owner, start, end, typ, pid, sleep, reply)
    }
    fn bmap(&self, req: &Request, ino: INodeNo, blocksize: u32, idx: u64, reply: ReplyBmap) {
        self.inner.bmap(req, ino, blocksize, idx, reply)
    }
    fn ioctl(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        flags: IoctlFlags,
        cmd: u32,
        in_data: &[u8],
        out_size: u32,
        reply: ReplyIoctl,
    ) {
        self.inner.ioctl(req, ino, fh, flags, cmd, in_data, out_size, reply)
    }
    fn poll(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        ph: PollNotifier,
        events: PollEvents,
        flags: PollFlags,
        reply: ReplyPoll,
    ) {
        self.inner.poll(req, ino, fh, ph, events, flags, reply)
    }
    fn fallocate(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        self.inner.fallocate(req, ino, fh, offset, length, mode, reply)
    }
    fn lseek(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: i64,
        whence: i32,
        reply: ReplyLseek,
    ) {
        self.inner.lseek(req, ino, fh, offset, whence, reply)
    }
    fn copy_file_range(
        &self,
        req: &Request,
        ino_in: INodeNo,
        fh_in: FileHandle,
        offset_in: u64,
        ino_out: INodeNo,
        fh_out: FileHandle,
        offset_out: u64,
        len: u64,
        flags: CopyFileRangeFlags,
        reply: ReplyWrite,
    ) {
        self.inner
            .copy_file_range(req, ino_in, fh_in, offset_in, ino_out, fh_out, offset_out, len, flags, reply)
    }
    #[cfg(target_os = "macos")]
    fn setvolname(&self, req: &Request, name: &OsStr, reply: ReplyEmpty) {
        self.inner.setvolname(req, name, reply)
    }
    #[cfg(target_os = "macos")]
    fn exchange(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        options: u64,
        reply: ReplyEmpty,
    ) {
        self.inner.exchange(req, parent, name, newparent, newname, options, reply)
    }
    #[cfg(target_os = "macos")]
    fn getxtimes(&self, req: &Request, ino: INodeNo, reply: ReplyXTimes) {
        self.inner.getxtimes(req, ino, reply)
    }
}
