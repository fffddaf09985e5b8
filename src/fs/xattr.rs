//! Extended attributes, stored as object user metadata.
//!
//! Only the `user.` namespace is supported: `security.`, `system.` and
//! `trusted.` attributes have kernel-defined meanings (SELinux labels, ACLs)
//! that a bucket cannot enforce, so getting, setting or removing one fails with
//! ENOTSUP: the namespace is not supported, as on NFS or vfat. ENODATA ("not
//! set") would be true too, but `ls -l` asks every file for security.selinux and
//! system.posix_acl_access until it is told ENOTSUP, and then stops asking for
//! the rest of that file system (coreutils' `errno_unsupported`): 4,000 FUSE
//! round trips of a 2,000-file `ls -l` become 2 (issue 11).
//!
//! Encoding (user metadata is case-insensitive ASCII on S3, values are text):
//! - the attribute `user.NAME` is the metadata entry `bucketfs-xattr-ENC(NAME)`
//!   where ENC keeps `a-z 0-9 . _ -` and writes every other byte as `%XX`
//!   (lower-case hex, as S3 lower-cases metadata names), so `user.Foo Bar` is
//!   `bucketfs-xattr-%46oo%20%42ar`;
//! - a value that is printable ASCII and does not start with `hex:` is stored as
//!   is; any other value is stored as `hex:` followed by its bytes in hex.
//!
//! Setting or removing an attribute rewrites the object's metadata with a
//! server-side copy onto itself (for a directory, its marker object, created if
//! the directory was implicit); a file open with unflushed changes gets the new
//! metadata with its next commit instead. Stores limit user metadata to about
//! 2 KiB per object, which bounds what can be stored.
//!
//! The root of the mount exposes the read-only attribute `user.bucketfs.stats`:
//! the live counters of the mount (`Metrics::render`).

use super::core::Fs;
use super::inode::ROOT_INO;
use super::{FsError, FsResult};

pub const META_XATTR_PREFIX: &str = "bucketfs-xattr-";
pub const STATS_XATTR: &str = "user.bucketfs.stats";

const XATTR_CREATE: i32 = libc::XATTR_CREATE;
const XATTR_REPLACE: i32 = libc::XATTR_REPLACE;

/// Whether an attribute called `name` can exist anywhere in this file system: only
/// `user.` names are stored (see [`encode_name`]); others answer ENOTSUP at once.
pub fn may_exist(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(b"user.")
}

/// Metadata key of attribute `name` (full name, with `user.`); None outside `user.`.
pub fn encode_name(name: &str) -> Option<String> {
    let n = name.strip_prefix("user.")?;
    if n.is_empty() {
        return None;
    }
    let mut out = String::from(META_XATTR_PREFIX);
    for b in n.bytes() {
        if b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02x}"));
        }
    }
    Some(out)
}

/// Attribute name (with `user.`) of a metadata key; None for other metadata.
pub fn decode_name(key: &str) -> Option<String> {
    let enc = key.strip_prefix(META_XATTR_PREFIX)?;
    let mut bytes = Vec::with_capacity(enc.len());
    let mut it = enc.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hi = it.next()?;
            let lo = it.next()?;
            let s = [hi, lo];
            bytes.push(u8::from_str_radix(std::str::from_utf8(&s).ok()?, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    Some(format!("user.{}", String::from_utf8(bytes).ok()?))
}

pub fn encode_value(v: &[u8]) -> String {
    let printable = v.iter().all(|b| (0x20..0x7f).contains(b));
    if printable && !v.starts_with(b"hex:") {
        String::from_utf8(v.to_vec()).expect("printable ASCII")
    } else {
        format!("hex:{}", hex::encode(v))
    }
}

pub fn decode_value(s: &str) -> Vec<u8> {
    match s.strip_prefix("hex:").and_then(|h| hex::decode(h).ok()) {
        Some(v) => v,
        None => s.as_bytes().to_vec(),
    }
}

fn name_str(name: &std::ffi::OsStr) -> FsResult<&str> {
    name.to_str().ok_or(FsError::NotSupported("xattr names must be UTF-8"))
}

/// The metadata key of `name`, or ENOTSUP for a namespace we do not store.
fn key_of(name: &str) -> FsResult<String> {
    encode_name(name).ok_or(FsError::Refused(super::unsupported::Refused::XattrNamespace))
}

impl Fs {
    /// The user metadata of an inode's object (or directory marker), and its pending changes.
    async fn metadata_of(&self, ino: u64) -> FsResult<std::collections::BTreeMap<String, String>> {
        let (path, _) = self.inode(ino)?;
        if let Some(f) = self.writer_of(ino).filter(|f| f.has_pending()) {
            return Ok(f.metadata());
        }
        if ino == ROOT_INO {
            return Ok(Default::default());
        }
        let c = self.resolve_complete(&path).await?;
        Ok(c.meta.map(|m| m.user_metadata).unwrap_or_default())
    }

    pub async fn getxattr(&self, ino: u64, name: &std::ffi::OsStr) -> FsResult<Vec<u8>> {
        let name = name_str(name)?;
        if ino == ROOT_INO && name == STATS_XATTR {
            // retries are counted by the backend's own retry machinery
            let m = &self.handles.metrics;
            m.retries.store(self.handles.backend.retries(), std::sync::atomic::Ordering::Relaxed);
            return Ok(m.render().into_bytes());
        }
        let key = key_of(name)?;
        let md = self.metadata_of(ino).await?;
        md.get(&key).map(|v| decode_value(v)).ok_or(FsError::NoData)
    }

    pub async fn listxattr(&self, ino: u64) -> FsResult<Vec<u8>> {
        let md = self.metadata_of(ino).await?;
        let mut out = Vec::new();
        if ino == ROOT_INO {
            out.extend_from_slice(STATS_XATTR.as_bytes());
            out.push(0);
        }
        for k in md.keys() {
            if let Some(n) = decode_name(k) {
                out.extend_from_slice(n.as_bytes());
                out.push(0);
            }
        }
        Ok(out)
    }

    pub async fn setxattr(&self, ino: u64, name: &std::ffi::OsStr, value: &[u8], flags: i32) -> FsResult<()> {
        let name = name_str(name)?;
        let key = key_of(name)?;
        if ino == ROOT_INO {
            return Err(FsError::Refused(super::unsupported::Refused::RootAttributes));
        }
        self.check_writable()?;
        let (path, kind) = self.inode(ino)?;
        let md = self.metadata_of(ino).await?;
        if flags & XATTR_CREATE != 0 && md.contains_key(&key) {
            return Err(FsError::Exists);
        }
        if flags & XATTR_REPLACE != 0 && !md.contains_key(&key) {
            return Err(FsError::NoData);
        }
        let v = encode_value(value);
        self.update_metadata(ino, &path, kind, |m| {
            m.insert(key.clone(), v.clone());
        })
        .await
    }

    pub async fn removexattr(&self, ino: u64, name: &std::ffi::OsStr) -> FsResult<()> {
        let name = name_str(name)?;
        let key = key_of(name)?;
        if ino == ROOT_INO {
            return Err(FsError::NoData);
        }
        self.check_writable()?;
        let (path, kind) = self.inode(ino)?;
        if !self.metadata_of(ino).await?.contains_key(&key) {
            return Err(FsError::NoData);
        }
        self.update_metadata(ino, &path, kind, |m| {
            m.remove(&key);
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for n in ["user.a", "user.Foo Bar", "user.x.y_z-1", "user.é%"] {
            let k = encode_name(n).unwrap();
            assert!(k.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase() && b != b' '), "{k}");
            assert_eq!(decode_name(&k).as_deref(), Some(n), "{k}");
        }
        assert_eq!(encode_name("user.Foo Bar").unwrap(), "bucketfs-xattr-%46oo%20%42ar");
        assert_eq!(encode_name("security.selinux"), None);
        assert_eq!(encode_name("user."), None);
        assert_eq!(decode_name("bucketfs-mode"), None);
        assert_eq!(decode_name("bucketfs-xattr-%4"), None);
    }

    #[test]
    fn values_round_trip() {
        for v in [&b"plain text"[..], b"", b"\x00\xff binary", b"hex:looks encoded", "ünïcode".as_bytes()] {
            assert_eq!(decode_value(&encode_value(v)), v);
        }
        assert_eq!(encode_value(b"abc"), "abc");
        assert_eq!(encode_value(b"\x01"), "hex:01");
    }
}
