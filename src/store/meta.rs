//! The per-object metadata file `%meta` (format version 1).
//!
//! Layout (all integers little endian):
//! ```text
//! "BFSM" | u16 version = 1 | u16 flags = 0 | u32 json_len | u64 xxh3_64(json) | json | inline shard
//! ```
//! The JSON header is checksummed on its own so that a listing can read and
//! verify just the first few KiB without touching inline data; inline data is a
//! bitrot-framed shard (see bitrot.rs) and so carries its own hashes. The JSON
//! is identical on every drive of an object version: a drive's shard index is
//! derived from its slot and `erasure.distribution`.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use xxhash_rust::xxh3::xxh3_64;

use super::error::{StoreError, StoreResult};

const MAGIC: &[u8; 4] = b"BFSM";
pub const META_VERSION: u16 = 1;
const HEADER_LEN: usize = 4 + 2 + 2 + 4 + 8;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub number: u32,
    pub size: u64,
    /// Hex md5 of the part's bytes.
    pub etag: String,
    /// Shard file name inside the data dir (`part.1` for plain puts,
    /// `part.N.<id>` for multipart parts, whose uploads may be retried).
    pub file: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureInfo {
    pub data: usize,
    pub parity: usize,
    pub block_size: usize,
    /// `distribution[shard] = drive slot` holding that shard.
    pub distribution: Vec<usize>,
    /// Always "xxh3-128" in version 1.
    pub bitrot: String,
}

impl ErasureInfo {
    /// Shard index stored on drive `slot`.
    pub fn shard_of(&self, slot: usize) -> Option<usize> {
        self.distribution.iter().position(|&d| d == slot)
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjMeta {
    /// Unique per write; two drives agree on a version iff their ids match.
    pub version_id: String,
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: u64,
    pub etag: String,
    pub content_type: Option<String>,
    pub user_metadata: BTreeMap<String, String>,
    pub erasure: ErasureInfo,
    /// Name of the data directory (without the `%d.` prefix); `None` = inline.
    pub data_dir: Option<String>,
    pub parts: Vec<PartInfo>,
}

impl ObjMeta {
    pub fn mtime(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.mtime_ns)
    }
    pub fn is_inline(&self) -> bool {
        self.data_dir.is_none()
    }
}

pub fn now_ns() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

pub fn encode(meta: &ObjMeta, inline: &[u8]) -> Vec<u8> {
    // Serializing a plain struct of strings and numbers cannot fail.
    let json = serde_json::to_vec(meta).unwrap_or_default();
    let mut out = Vec::with_capacity(HEADER_LEN + json.len() + inline.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&META_VERSION.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(&xxh3_64(&json).to_le_bytes());
    out.extend_from_slice(&json);
    out.extend_from_slice(inline);
    out
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("metadata {what}"))
}

/// Total length of the header + JSON, or an error if the prefix is not ours.
fn json_end(buf: &[u8]) -> StoreResult<usize> {
    if buf.len() < HEADER_LEN || &buf[..4] != MAGIC {
        return Err(corrupt("has a bad magic"));
    }
    let version = u16::from_le_bytes([buf[4], buf[5]]);
    if version != META_VERSION {
        return Err(corrupt(&format!("has unsupported version {version}")));
    }
    let len = u32::from_le_bytes([buf[8], buf[9], buf[10], buf[11]]) as usize;
    Ok(HEADER_LEN + len)
}

/// Decodes a whole metadata file into its header and inline bytes.
pub fn decode(buf: &[u8]) -> StoreResult<(ObjMeta, &[u8])> {
    let end = json_end(buf)?;
    if buf.len() < end {
        return Err(corrupt("is truncated"));
    }
    let sum = u64::from_le_bytes(buf[12..20].try_into().map_err(|_| corrupt("is truncated"))?);
    let json = &buf[HEADER_LEN..end];
    if xxh3_64(json) != sum {
        return Err(corrupt("checksum mismatch"));
    }
    let meta: ObjMeta = serde_json::from_slice(json).map_err(|e| corrupt(&format!("is unparsable: {e}")))?;
    Ok((meta, &buf[end..]))
}

/// Reads a metadata file; with `inline == false` only the header is read.
pub fn read(path: &Path, inline: bool) -> std::io::Result<StoreResult<(ObjMeta, Vec<u8>)>> {
    let mut f = File::open(path)?;
    let mut buf = Vec::new();
    if inline {
        f.read_to_end(&mut buf)?;
    } else {
        buf.resize(4096, 0);
        let n = read_full(&mut f, &mut buf)?;
        buf.truncate(n);
        if let Ok(end) = json_end(&buf) {
            if end > buf.len() {
                buf.resize(end, 0);
                let m = read_full(&mut f, &mut buf[n..])?;
                buf.truncate(n + m);
            } else {
                buf.truncate(end);
            }
        }
    }
    Ok(decode(&buf).map(|(m, i)| (m, i.to_vec())))
}

fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> ObjMeta {
        ObjMeta {
            version_id: "v1".into(),
            size: 12345,
            mtime_ns: 1_700_000_000_123_456_789,
            etag: "0123456789abcdef0123456789abcdef".into(),
            content_type: Some("text/plain".into()),
            user_metadata: [("color".to_string(), "blue".to_string())].into(),
            erasure: ErasureInfo {
                data: 4,
                parity: 2,
                block_size: 1 << 20,
                distribution: vec![2, 3, 4, 5, 0, 1],
                bitrot: "xxh3-128".into(),
            },
            data_dir: Some("abc".into()),
            parts: vec![PartInfo { number: 1, size: 12345, etag: "e".into(), file: "part.1".into() }],
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let m = sample();
        let buf = encode(&m, b"inline-bytes");
        let (d, inline) = decode(&buf).unwrap();
        assert_eq!(d, m);
        assert_eq!(inline, b"inline-bytes");
        assert_eq!(m.erasure.shard_of(0), Some(4));
        // Any flipped byte of the header or JSON is caught.
        for i in [0, 5, HEADER_LEN + 3, buf.len() - 13] {
            let mut bad = buf.clone();
            bad[i] ^= 0x20;
            assert!(decode(&bad).is_err(), "flip at {i} not detected");
        }
        assert!(decode(&buf[..HEADER_LEN + 2]).is_err());
    }

    #[test]
    fn header_only_read_skips_inline() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m");
        std::fs::write(&p, encode(&sample(), &vec![7u8; 100_000])).unwrap();
        let (m, inline) = read(&p, false).unwrap().unwrap();
        assert_eq!(m, sample());
        assert!(inline.is_empty());
        let (_, inline) = read(&p, true).unwrap().unwrap();
        assert_eq!(inline.len(), 100_000);
    }
}
