//! Inode numbers and the path <-> key mapping.
//!
//! Object stores have no inodes, so the filesystem invents them: an inode is a
//! number bound to a *path* (`a/b`, root = `""`) while the kernel holds a
//! reference to it. The kernel's references are counted the FUSE way: every
//! reply that hands an inode to the kernel (lookup, create, mkdir, symlink,
//! readdirplus) adds one, and `forget(ino, n)` removes `n`. When the count drops
//! to zero the inode is dropped, and a later lookup of the same path gets a new
//! number; numbers are never reused (a `u64` counter), so the FUSE generation is
//! always 0.
//!
//! Each inode stores its full path rather than a (parent, name) pair: lookups
//! then need one map probe, and a directory rename rewrites the paths of the
//! known descendants in one pass over the table (the rename itself already
//! costs a request per object, so that scan is never the bottleneck).
//!
//! Unlinked inodes (deleted, or replaced by a rename) leave the path index but
//! stay in the table until the kernel forgets them, so open files and in-flight
//! `getattr`s on them keep working.
//!
//! Paths map to keys trivially: the file at path `a/b` is the key `a/b`, the
//! directory at path `a/b` is the prefix `a/b/` (and its marker object `a/b/`).

use std::collections::HashMap;
use std::sync::Mutex;

use super::cache::Kind;

pub const ROOT_INO: u64 = 1;

/// Longest name of one path component (Linux NAME_MAX).
pub const NAME_MAX: usize = 255;

/// `parent/name`, or `name` under the root.
pub fn child_path(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}/{name}")
    }
}

/// The listing prefix of a directory path (`""` for the root, `a/b/` otherwise).
pub fn dir_prefix(path: &str) -> String {
    if path.is_empty() {
        String::new()
    } else {
        format!("{path}/")
    }
}

/// Parent path and last component of a non-root path.
pub fn split_path(path: &str) -> (&str, &str) {
    match path.rfind('/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => ("", path),
    }
}

/// Checks a name the kernel gave us before it becomes part of a key.
pub fn validate_name(name: &std::ffi::OsStr) -> Result<&str, super::FsError> {
    use super::FsError;
    if name.len() > NAME_MAX {
        return Err(FsError::NameTooLong);
    }
    // Keys are UTF-8 strings in every store we target; a name that is not UTF-8
    // could never be listed back under the same bytes.
    let s = name.to_str().ok_or(FsError::Invalid("name is not UTF-8"))?;
    if s.is_empty() || s == "." || s == ".." || s.contains('/') || s.contains('\0') {
        return Err(FsError::Invalid("invalid file name"));
    }
    Ok(s)
}

#[derive(Clone, Debug)]
struct Inode {
    path: String,
    kind: Kind,
    lookups: u64,
    /// Still reachable through `by_path` (false once unlinked or renamed over).
    linked: bool,
}

#[derive(Debug)]
struct Tables {
    by_ino: HashMap<u64, Inode>,
    by_path: HashMap<String, u64>,
    next: u64,
}

/// The inode table. A plain `std::sync::Mutex`: it is never held across an `.await`.
#[derive(Debug)]
pub struct InodeTable {
    t: Mutex<Tables>,
}

impl Default for InodeTable {
    fn default() -> Self {
        Self::new()
    }
}

impl InodeTable {
    pub fn new() -> Self {
        let mut by_ino = HashMap::new();
        // The root is never forgotten: its count starts high and forget never removes it.
        by_ino.insert(ROOT_INO, Inode { path: String::new(), kind: Kind::Dir, lookups: 1, linked: true });
        let mut by_path = HashMap::new();
        by_path.insert(String::new(), ROOT_INO);
        InodeTable { t: Mutex::new(Tables { by_ino, by_path, next: ROOT_INO + 1 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // A panic while holding the lock cannot leave the maps half-updated in a way
        // that matters more than refusing every later operation would.
        self.t.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Path and kind of a known inode.
    pub fn get(&self, ino: u64) -> Option<(String, Kind)> {
        self.lock().by_ino.get(&ino).map(|i| (i.path.clone(), i.kind))
    }

    /// Whether the inode is still reachable by its path (not unlinked).
    pub fn is_linked(&self, ino: u64) -> bool {
        self.lock().by_ino.get(&ino).is_some_and(|i| i.linked)
    }

    /// The inode currently bound to `path`, without taking a reference.
    pub fn peek(&self, path: &str) -> Option<u64> {
        self.lock().by_path.get(path).copied()
    }

    /// A number for a directory entry the kernel will not hold (plain readdir):
    /// never bound to a path, never reused.
    pub fn fresh_ino(&self) -> u64 {
        let mut t = self.lock();
        let n = t.next;
        t.next += 1;
        n
    }

    /// Binds `path` to an inode of `kind` and takes one kernel reference on it.
    /// An existing inode of another kind (the object was replaced by a directory,
    /// say) is unlinked and a new number is handed out, so the kernel never sees an
    /// inode change type.
    pub fn remember(&self, path: &str, kind: Kind) -> u64 {
        let mut t = self.lock();
        if let Some(&ino) = t.by_path.get(path) {
            let inode = t.by_ino.get_mut(&ino).expect("by_path and by_ino agree");
            if inode.kind == kind || ino == ROOT_INO {
                inode.lookups += 1;
                return ino;
            }
            inode.linked = false;
        }
        let ino = t.next;
        t.next += 1;
        t.by_ino.insert(ino, Inode { path: path.to_owned(), kind, lookups: 1, linked: true });
        t.by_path.insert(path.to_owned(), ino);
        ino
    }

    /// Drops `n` kernel references; the inode disappears when none are left.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT_INO {
            return;
        }
        let mut t = self.lock();
        let Some(inode) = t.by_ino.get_mut(&ino) else { return };
        inode.lookups = inode.lookups.saturating_sub(n);
        if inode.lookups == 0 {
            let inode = t.by_ino.remove(&ino).expect("just seen");
            if t.by_path.get(&inode.path) == Some(&ino) {
                t.by_path.remove(&inode.path);
            }
        }
    }

    /// Kernel reference count (for tests and debugging).
    pub fn lookups(&self, ino: u64) -> Option<u64> {
        self.lock().by_ino.get(&ino).map(|i| i.lookups)
    }

    /// Detaches `path` from its inode (unlink, rmdir); the inode lives on until forgotten.
    pub fn unlink(&self, path: &str) {
        let mut t = self.lock();
        if path.is_empty() {
            return;
        }
        if let Some(ino) = t.by_path.remove(path) {
            if let Some(i) = t.by_ino.get_mut(&ino) {
                i.linked = false;
            }
        }
    }

    /// Moves `from` (and, for a directory, every known descendant) to `to`.
    /// Whatever was bound at the destination is unlinked first, as rename(2) replaces it.
    /// Returns the inodes that moved with their new paths, so open files can follow.
    pub fn rename(&self, from: &str, to: &str) -> Vec<(u64, String)> {
        let mut t = self.lock();
        let to_prefix = format!("{to}/");
        let stale: Vec<String> =
            t.by_path.keys().filter(|p| p.as_str() == to || p.starts_with(&to_prefix)).cloned().collect();
        for p in stale {
            if let Some(ino) = t.by_path.remove(&p) {
                if let Some(i) = t.by_ino.get_mut(&ino) {
                    i.linked = false;
                }
            }
        }
        let from_prefix = format!("{from}/");
        let moving: Vec<(String, u64)> = t
            .by_path
            .iter()
            .filter(|(p, _)| p.as_str() == from || p.starts_with(&from_prefix))
            .map(|(p, &i)| (p.clone(), i))
            .collect();
        let mut moved = Vec::with_capacity(moving.len());
        for (old, ino) in moving {
            t.by_path.remove(&old);
            let new = format!("{to}{}", &old[from.len()..]);
            if let Some(i) = t.by_ino.get_mut(&ino) {
                i.path = new.clone();
            }
            t.by_path.insert(new.clone(), ino);
            moved.push((ino, new));
        }
        moved
    }

    pub fn len(&self) -> usize {
        self.lock().by_ino.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn paths_and_prefixes() {
        assert_eq!(child_path("", "a"), "a");
        assert_eq!(child_path("a/b", "c"), "a/b/c");
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("a/b"), "a/b/");
        assert_eq!(split_path("a/b/c"), ("a/b", "c"));
        assert_eq!(split_path("a"), ("", "a"));
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(validate_name(OsStr::new("ok.txt")).unwrap(), "ok.txt");
        let long = "x".repeat(256);
        assert_eq!(validate_name(OsStr::new(&long)).unwrap_err().errno(), libc::ENAMETOOLONG);
        assert!(validate_name(OsStr::new(&"x".repeat(255))).is_ok());
        assert_eq!(validate_name(OsStr::new("a/b")).unwrap_err().errno(), libc::EINVAL);
        assert_eq!(validate_name(OsStr::new("..")).unwrap_err().errno(), libc::EINVAL);
        use std::os::unix::ffi::OsStrExt;
        assert_eq!(validate_name(OsStr::from_bytes(b"\xff")).unwrap_err().errno(), libc::EINVAL);
    }

    #[test]
    fn lookups_are_counted_and_forgotten() {
        let t = InodeTable::new();
        let a = t.remember("a", Kind::File);
        assert!(a > ROOT_INO);
        assert_eq!(t.remember("a", Kind::File), a, "same path, same inode while held");
        assert_eq!(t.lookups(a), Some(2));
        t.forget(a, 1);
        assert_eq!(t.get(a).unwrap().0, "a");
        t.forget(a, 1);
        assert!(t.get(a).is_none());
        assert!(t.peek("a").is_none());
        let a2 = t.remember("a", Kind::File);
        assert_ne!(a2, a, "numbers are not reused");
        // the root survives any forget
        t.forget(ROOT_INO, 100);
        assert_eq!(t.get(ROOT_INO).unwrap().1, Kind::Dir);
    }

    #[test]
    fn kind_change_gets_a_new_inode() {
        let t = InodeTable::new();
        let f = t.remember("x", Kind::File);
        let d = t.remember("x", Kind::Dir);
        assert_ne!(f, d);
        assert!(!t.is_linked(f));
        assert!(t.is_linked(d));
        // forgetting the stale file inode does not unbind the directory
        t.forget(f, 1);
        assert_eq!(t.peek("x"), Some(d));
    }

    #[test]
    fn unlinked_inodes_live_until_forgotten() {
        let t = InodeTable::new();
        let f = t.remember("f", Kind::File);
        t.unlink("f");
        assert!(t.peek("f").is_none());
        assert_eq!(t.get(f).unwrap().0, "f");
        let g = t.remember("f", Kind::File);
        assert_ne!(f, g);
        t.forget(f, 1);
        assert_eq!(t.peek("f"), Some(g));
    }

    #[test]
    fn rename_moves_descendants_and_replaces_target() {
        let t = InodeTable::new();
        let d = t.remember("d", Kind::Dir);
        let x = t.remember("d/x", Kind::File);
        let y = t.remember("d/sub/y", Kind::File);
        let other = t.remember("dd/z", Kind::File); // shares a textual prefix only
        let old_target = t.remember("e", Kind::Dir);
        let moved = t.rename("d", "e");
        assert_eq!(moved.len(), 3);
        assert_eq!(t.get(d).unwrap().0, "e");
        assert_eq!(t.get(x).unwrap().0, "e/x");
        assert_eq!(t.get(y).unwrap().0, "e/sub/y");
        assert_eq!(t.get(other).unwrap().0, "dd/z");
        assert_eq!(t.peek("e"), Some(d));
        assert!(t.peek("d").is_none());
        assert!(!t.is_linked(old_target));
    }
}
