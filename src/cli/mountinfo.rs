//! What is mounted where, from `/proc/self/mountinfo` (proc(5)): the mount stack on a
//! mountpoint, so a mount is not stacked on a live one by mistake and readiness is
//! reported only for a mount that is ours.

use std::path::{Path, PathBuf};

/// One line of `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountEntry {
    /// Unique id of the mount (field 1).
    pub id: u64,
    /// `major:minor` of the mount's device (field 3); for FUSE, also its bdi's name.
    pub dev: String,
    pub mount_point: PathBuf,
    /// e.g. `fuse.bucketfs`, `ext4`.
    pub fstype: String,
    /// The "mount source" field (for bucketfs: the SOURCE, e.g. `local://photos`).
    pub source: String,
}

/// Reverses the kernel's octal escapes of space, tab, newline and backslash (`\040`).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b.get(i + 1..i + 4).filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(v as u8); // at most 0o777; the kernel writes only bytes
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text; malformed lines are skipped.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let id = fields.first()?.parse().ok()?;
            let dev = fields.get(2)?.to_string();
            let mount_point = PathBuf::from(unescape(fields.get(4)?));
            // optional fields end with a lone "-"; fstype and source follow it
            let sep = fields.iter().skip(6).position(|f| *f == "-")? + 6;
            let fstype = unescape(fields.get(sep + 1)?);
            let source = unescape(fields.get(sep + 2)?);
            Some(MountEntry { id, dev, mount_point, fstype, source })
        })
        .collect()
}

/// The mounts whose mountpoint is `path` (canonical), bottom first: the last one is the
/// one a lookup of `path` sees. Empty if mountinfo cannot be read (no /proc).
pub fn mounts_at(path: &Path) -> Vec<MountEntry> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    parse(&text).into_iter().filter(|m| m.mount_point == path).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda rw
36 22 0:45 / /mnt/my\\040bucket rw,nosuid,nodev,relatime shared:60 - fuse.bucketfs local://photos rw,user_id=0,group_id=0
37 36 0:46 / /mnt/my\\040bucket rw,nosuid,nodev,relatime - fuse.bucketfs s3://other rw,user_id=0,group_id=0
garbage line
";

    #[test]
    fn parses_lines_with_and_without_optional_fields() {
        let m = parse(SAMPLE);
        assert_eq!(m.len(), 3);
        assert_eq!((m[0].id, m[0].fstype.as_str()), (22, "ext4"));
        assert_eq!(m[1].dev, "0:45");
        assert_eq!(m[1].mount_point, PathBuf::from("/mnt/my bucket"));
        assert_eq!((m[1].fstype.as_str(), m[1].source.as_str()), ("fuse.bucketfs", "local://photos"));
        assert_eq!((m[2].id, m[2].source.as_str()), (37, "s3://other"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\999"), "\\999");
    }

    /// Seeded fuzzing: random lines built from mountinfo-like pieces never panic the parser.
    #[test]
    fn fuzz_mountinfo_lines() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x0314);
        const PIECES: &[&str] = &[
            "1",
            "22",
            " ",
            "-",
            "/",
            "\\",
            "\\0",
            "\\040",
            "\\7777",
            "0:45",
            "fuse.bucketfs",
            "\n",
            "é",
            "shared:1",
        ];
        for _ in 0..20_000 {
            let n = rng.gen_range(0..24);
            let text: String = (0..n).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
            for m in parse(&text) {
                assert!(!m.fstype.contains('\n'));
            }
        }
    }
}
