//! rename(2) on an object store: copy, then delete.
//!
//! Object stores cannot rename. A file rename is a server-side copy followed by
//! a delete of the source (or one native call when the backend advertises
//! `Capabilities::rename`). A directory rename lists every key under the old
//! prefix (no limit on their number), copies each one to the new prefix, and
//! only when *all* copies succeeded deletes the originals. It is therefore
//!
//! - **not atomic**: other clients can see both trees, or a partial new tree,
//!   while it runs;
//! - **O(number of objects)** in requests and time;
//! - **safe on failure**: if a copy fails the originals are untouched and the
//!   copies made so far are removed (best effort); if deleting originals fails,
//!   both trees exist and the error is returned.
//!
//! Backends with real directories (`Capabilities::native_dirs`, Azure Data Lake)
//! rename a directory with one backend call instead: atomic on the server and
//! one request whatever the tree's size (an empty directory it replaces is
//! removed first).
//!
//! Flags: `RENAME_NOREPLACE` is honoured (checked before copying, so it is not
//! atomic against other clients either); `RENAME_EXCHANGE` cannot be done
//! without atomic multi-key operations and fails with EINVAL, as on other
//! filesystems that lack it; `RENAME_WHITEOUT` likewise.
//!
//! Files open for writing follow the rename: their handles are re-keyed, so the
//! next commit writes to the new name. An open file that a rename replaces is
//! marked unlinked and discarded at close.

use futures::stream::{self, StreamExt};

use super::attr;
use super::cache::Kind;
use super::core::Fs;
use super::inode::dir_prefix;
use super::{FsError, FsResult};
use bytes::Bytes;

use crate::backend::{BackendError, ListRequest, PutOptions, StorageBackend};

/// Copies in flight during a directory rename.
const RENAME_CONCURRENCY: usize = 16;
/// Keys per `delete_many` call (the S3 DeleteObjects maximum).
const DELETE_BATCH: usize = 1000;

impl Fs {
    pub async fn rename(
        &self,
        parent: u64,
        name: &std::ffi::OsStr,
        newparent: u64,
        newname: &std::ffi::OsStr,
        flags: u32,
    ) -> FsResult<()> {
        self.check_writable()?;
        let noreplace = flags & libc::RENAME_NOREPLACE != 0;
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(FsError::Refused(super::unsupported::Refused::RenameExchange));
        }
        let src = self.child(parent, name)?;
        let dst = self.child(newparent, newname)?;
        if src == dst {
            return Ok(());
        }
        let src_ino = self.inodes.peek(&src);
        let src_local = src_ino.and_then(|i| self.writer_of(i));
        let src_cached = match self.resolve_complete(&src).await {
            Ok(c) => Some(c),
            Err(e) if e.is_not_found() && src_local.is_some() => None, // only exists as an open handle
            Err(e) => return Err(e),
        };
        let src_kind = src_cached.as_ref().map(|c| c.kind);
        let dst_local = self.inodes.peek(&dst).and_then(|i| self.writer_of(i));
        let dst_kind = match self.resolve(&dst).await {
            Ok(c) => Some(c.kind),
            Err(e) if e.is_not_found() => dst_local.as_ref().map(|_| Kind::File),
            Err(e) => return Err(e),
        };
        if noreplace && dst_kind.is_some() {
            return Err(FsError::Exists);
        }
        let src_is_dir = src_kind == Some(Kind::Dir);
        match dst_kind {
            Some(Kind::Dir) if !src_is_dir => return Err(FsError::IsDir),
            Some(Kind::File | Kind::Symlink) if src_is_dir => return Err(FsError::NotDir),
            _ => {}
        }
        if dst_kind == Some(Kind::Dir) && !self.dir_is_empty(&dst).await? {
            return Err(FsError::NotEmpty);
        }
        if src_is_dir && self.backend.capabilities().native_dirs {
            // real directories (Data Lake): one request moves the whole tree, atomically
            if dst_kind == Some(Kind::Dir) {
                // empty, as checked above; the server refuses the rename onto it otherwise
                self.backend.delete(&dir_prefix(&dst)).await?;
            }
            self.backend.rename(&dir_prefix(&src), &dir_prefix(&dst)).await?;
        } else if src_is_dir {
            self.rename_tree(&src, &dst).await?;
        } else {
            // whatever is open at the destination must not overwrite us at close
            if let Some(i) = self.inodes.peek(&dst) {
                let open = self.open_files_of(i);
                for f in &open {
                    f.mark_unlinked();
                }
                for f in &open {
                    f.wait_for_commit().await; // a commit in flight would land after our move
                }
                self.orphan(i, self.cache.stat(&dst));
            }
            if let Some(c) = &src_cached {
                // the moved object gets a new date, which would be its mtime: keep the one
                // shown now in its metadata (a rename changes only the ctime)
                let mtime = match src_ino {
                    Some(i) => Some(self.getattr(i).await?.0.mtime), // as `stat` shows it
                    None => None,
                };
                let keep = match (&c.meta, mtime) {
                    (Some(m), Some(t)) if !m.user_metadata.contains_key(attr::META_MTIME) => {
                        let mut opts = PutOptions {
                            content_type: m.content_type.clone(),
                            user_metadata: m.user_metadata.clone(),
                            ..Default::default()
                        };
                        opts.user_metadata.insert(attr::META_MTIME.into(), attr::format_mtime(t));
                        Some(opts)
                    }
                    _ => None,
                };
                self.move_object(&src, &dst, keep.as_ref()).await?;
            }
        }
        self.cache.invalidate_tree(&src);
        self.cache.invalidate_tree(&dst);
        if src_is_dir {
            self.cache.subdir_moved(&src, &dst); // the parents' link counts follow
        }
        self.cache.put_absent(&src);
        self.cache.forget_dir_change(&src);
        self.touch_dir_of(&src);
        self.touch_dir_of(&dst);
        for (ino, path) in self.inodes.rename(&src, &dst) {
            // readers too: the object they read from now lives under the new name
            for f in self.open_files_of(ino) {
                f.handle.set_key(path.clone());
            }
        }
        Ok(())
    }

    /// Moves one object; with `metadata`, the moved object carries it (one more
    /// metadata rewrite after a native rename, none with copy + delete).
    async fn move_object(
        &self,
        src: &str,
        dst: &str,
        metadata: Option<&PutOptions>,
    ) -> Result<(), BackendError> {
        if self.backend.capabilities().rename {
            self.backend.rename(src, dst).await?;
            if let Some(opts) = metadata {
                self.backend.copy(dst, dst, Some(opts)).await?;
            }
            return Ok(());
        }
        self.backend.copy(src, dst, metadata).await?;
        self.backend.delete(src).await
    }

    /// Moves every key under `src/` to `dst/` (see the module header).
    pub(super) async fn rename_tree(&self, src: &str, dst: &str) -> FsResult<()> {
        let (sp, dp) = (dir_prefix(src), dir_prefix(dst));
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let req = ListRequest { prefix: sp.clone(), delimiter: None, continuation: token, max_keys: 0 };
            let page = self.backend.list(&req).await?;
            keys.extend(page.objects.into_iter().map(|o| o.key));
            token = page.next_continuation;
            if token.is_none() {
                break;
            }
        }
        let native = self.backend.capabilities().rename;
        let target = |k: &str| format!("{dp}{}", &k[sp.len()..]);
        // owned futures: borrowing `keys` inside `buffer_unordered` trips the
        // higher-ranked `Send` check of the spawned task
        let jobs: Vec<_> = keys
            .iter()
            .map(|k| {
                let (backend, k, t) = (self.backend.clone(), k.clone(), target(k));
                async move {
                    let r = if native {
                        backend.rename(&k, &t).await
                    } else if k.ends_with('/') {
                        copy_marker(&*backend, &k, &t).await
                    } else {
                        backend.copy(&k, &t, None).await.map(|_| ())
                    };
                    (t, r)
                }
            })
            .collect();
        let results: Vec<(String, Result<(), BackendError>)> =
            stream::iter(jobs).buffer_unordered(RENAME_CONCURRENCY).collect().await;
        let mut first_err = None;
        let mut done = Vec::new();
        for (t, r) in results {
            match r {
                Ok(()) => done.push(t),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        if let Some(e) = first_err {
            if !native {
                // leave the source as it was: remove the partial copy
                for chunk in done.chunks(DELETE_BATCH) {
                    if let Err(ce) = self.backend.delete_many(chunk).await {
                        tracing::warn!(target: "bucketfs::fs", error = %ce, "cleanup after failed directory rename");
                    }
                }
            }
            return Err(e.into());
        }
        if !native {
            for chunk in keys.chunks(DELETE_BATCH) {
                let failed = self.backend.delete_many(chunk).await?;
                if let Some((k, e)) = failed.into_iter().next() {
                    tracing::error!(target: "bucketfs::fs", key = k, error = %e, "directory rename left originals behind");
                    return Err(e.into());
                }
            }
        }
        Ok(())
    }
}

/// Re-creates directory marker `src` (an empty `dir/` object) at `dst` with its
/// metadata. A PUT rather than CopyObject: SeaweedFS answers CopyObject of a `dir/`
/// key with 404 (its filer stores markers as real directories), and an empty object
/// costs nothing to write again.
async fn copy_marker(backend: &dyn StorageBackend, src: &str, dst: &str) -> Result<(), BackendError> {
    let meta = backend.head(src).await?;
    let opts = PutOptions {
        content_type: meta.content_type,
        user_metadata: meta.user_metadata,
        ..Default::default()
    };
    backend.put(dst, Bytes::new(), &opts).await.map(|_| ())
}
