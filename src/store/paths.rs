//! Mapping of buckets and keys onto drive paths.
//!
//! An object `k` lives in the *directory* `<drive>/<bucket>/<k>/`, which holds
//! its metadata file `%meta` and its data directory `%d.<uuid>/`. Making every
//! object a directory is what lets the keys `a`, `a/` and `a/b` coexist: they map
//! to `a/`, `a/%/` and `a/b/`.
//!
//! Each `/`-separated key component becomes one path component:
//! - `%` is escaped as `%25`, so no escaped component can equal a reserved
//!   name (all reserved names start with `%` followed by a letter);
//! - an empty component (from `a/`, `a//b`) becomes the bare name `%`.
//!
//! Keys that could escape the drive or that the filesystem cannot hold are
//! refused with `InvalidKey`: empty keys, keys over 1024 bytes, NUL bytes, a
//! leading `/`, `.` or `..` components, and components longer than 255 bytes
//! once escaped.

use std::path::{Path, PathBuf};

use super::error::{StoreError, StoreResult};

pub const MAX_KEY_LEN: usize = 1024;
pub const MAX_COMPONENT_LEN: usize = 255;
/// Per-object metadata file inside the object directory.
pub const META_FILE: &str = "%meta";
/// Previous metadata kept while a multi-drive commit is in flight (see object.rs).
pub const PREV_META_FILE: &str = "%meta.prev";
/// Prefix of data directories inside the object directory.
pub const DATA_DIR_PREFIX: &str = "%d.";
/// The name an empty key component maps to.
pub const EMPTY_COMPONENT: &str = "%";

/// Validates an S3 bucket name (lowercase DNS-style, 3-63 chars).
pub fn validate_bucket(name: &str) -> StoreResult<()> {
    let bad = |reason: &str| Err(StoreError::InvalidBucketName { name: name.into(), reason: reason.into() });
    if name.len() < 3 || name.len() > 63 {
        return bad("must be 3 to 63 characters long");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-') {
        return bad("only lowercase letters, digits, '.' and '-' are allowed");
    }
    let first = name.as_bytes()[0];
    let last = name.as_bytes()[name.len() - 1];
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return bad("must start and end with a letter or digit");
    }
    if name.contains("..") || name.contains(".-") || name.contains("-.") {
        return bad("must not contain '..', '.-' or '-.'");
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return bad("must not look like an IP address");
    }
    Ok(())
}

fn invalid(key: &str, reason: &str) -> StoreError {
    StoreError::InvalidKey { key: key.into(), reason: reason.into() }
}

fn too_long(key: &str, reason: &str) -> StoreError {
    StoreError::KeyTooLong { key: key.into(), reason: reason.into() }
}

/// Escapes one key component into a path component.
pub fn escape_component(c: &str) -> String {
    if c.is_empty() {
        EMPTY_COMPONENT.to_string()
    } else {
        c.replace('%', "%25")
    }
}

/// Reverses [`escape_component`]; `None` for reserved (non-key) names.
pub fn unescape_component(name: &str) -> Option<String> {
    if name == EMPTY_COMPONENT {
        return Some(String::new());
    }
    if name.starts_with('%') && !name.starts_with("%25") {
        return None;
    }
    Some(name.replace("%25", "%"))
}

/// Validates `key` and returns its relative path inside the bucket directory.
pub fn key_to_relpath(key: &str) -> StoreResult<PathBuf> {
    if key.is_empty() {
        return Err(invalid(key, "empty key"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(too_long(key, "key too long (over 1024 bytes)"));
    }
    if key.contains('\0') {
        return Err(invalid(key, "key contains a NUL byte"));
    }
    if key.starts_with('/') {
        return Err(invalid(key, "key must not start with '/'"));
    }
    let mut p = PathBuf::new();
    for c in key.split('/') {
        if c == "." || c == ".." {
            return Err(invalid(key, "'.' and '..' components are not allowed"));
        }
        let e = escape_component(c);
        if e.len() > MAX_COMPONENT_LEN {
            return Err(too_long(key, "key component too long (over 255 bytes)"));
        }
        p.push(e);
    }
    Ok(p)
}

/// Validates a key prefix used for listing: like a key, but may be empty and
/// its last component is a partial name (so it is not mapped here).
pub fn validate_prefix(prefix: &str) -> StoreResult<()> {
    if prefix.len() > MAX_KEY_LEN || prefix.contains('\0') {
        return Err(invalid(prefix, "invalid prefix"));
    }
    Ok(())
}

/// Splits a listing prefix into its complete directory components (as key
/// components) and the trailing partial component.
pub fn split_prefix(prefix: &str) -> (Vec<&str>, &str) {
    match prefix.rfind('/') {
        Some(i) => (prefix[..i].split('/').collect(), &prefix[i + 1..]),
        None => (Vec::new(), prefix),
    }
}

/// Maps already-split key components to a relative path, or `None` when a
/// component could never be stored (then nothing can exist below it).
pub fn components_to_relpath(comps: &[&str]) -> Option<PathBuf> {
    let mut p = PathBuf::new();
    for c in comps {
        if *c == "." || *c == ".." {
            return None;
        }
        p.push(escape_component(c));
    }
    Some(p)
}

/// Path of an object directory on one drive.
pub fn object_dir(drive: &Path, bucket: &str, key: &str) -> StoreResult<PathBuf> {
    Ok(drive.join(bucket).join(key_to_relpath(key)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_without_collisions() {
        let a = key_to_relpath("a").unwrap();
        let a_slash = key_to_relpath("a/").unwrap();
        let ab = key_to_relpath("a/b").unwrap();
        assert_eq!(a, PathBuf::from("a"));
        assert_eq!(a_slash, PathBuf::from("a/%"));
        assert_eq!(ab, PathBuf::from("a/b"));
        // A key component equal to a reserved name is escaped away from it.
        assert_eq!(key_to_relpath("x/%meta").unwrap(), PathBuf::from("x/%25meta"));
        assert_eq!(key_to_relpath("x/%").unwrap(), PathBuf::from("x/%25"));
        assert_eq!(key_to_relpath("a//b").unwrap(), PathBuf::from("a/%/b"));
    }

    #[test]
    fn escape_round_trips() {
        for c in ["", "%", "%25", "a%b", "%meta", "plain", "100%"] {
            assert_eq!(unescape_component(&escape_component(c)).as_deref(), Some(c));
        }
        assert_eq!(unescape_component(META_FILE), None);
        assert_eq!(unescape_component(PREV_META_FILE), None);
        assert_eq!(unescape_component("%d.1234"), None);
    }

    #[test]
    fn unsafe_keys_are_refused() {
        let long_comp = "x".repeat(256);
        let long_key = "a/".repeat(513);
        for k in ["", "..", "../x", "a/../../etc", "/etc/passwd", "a/./b", "a\0b", &long_comp, &long_key] {
            match key_to_relpath(k) {
                Err(StoreError::InvalidKey { .. } | StoreError::KeyTooLong { .. }) => {}
                other => panic!("key {k:?} accepted: {other:?}"),
            }
        }
        // 255 bytes is fine, but not once '%' escaping pushes it over.
        assert!(key_to_relpath(&"x".repeat(255)).is_ok());
        assert!(key_to_relpath(&format!("%{}", "x".repeat(253))).is_err());
        // Mapped paths never leave the bucket directory.
        for k in ["a/b/c", "..a", "a..", "...", "a/%2e%2e"] {
            let p = key_to_relpath(k).unwrap();
            assert!(p.components().all(|c| matches!(c, std::path::Component::Normal(_))), "{k}");
        }
    }

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "a.b.c", "bucket1"] {
            validate_bucket(ok).unwrap();
        }
        for bad in ["ab", "ABC", "-abc", "abc-", "a..b", "192.168.1.1", ".sys", "a_b", &"a".repeat(64)] {
            assert!(validate_bucket(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefix_split() {
        assert_eq!(split_prefix(""), (vec![], ""));
        assert_eq!(split_prefix("ab"), (vec![], "ab"));
        assert_eq!(split_prefix("a/"), (vec!["a"], ""));
        assert_eq!(split_prefix("a/b/c"), (vec!["a", "b"], "c"));
        assert_eq!(split_prefix("/x"), (vec![""], "x"));
    }
}
