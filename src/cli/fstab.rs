//! Translation of fstab-style `-o` options into ordinary flags.
//!
//! `mount /mnt` with an fstab line `bucket /mnt fuse.bucketfs _netdev,allow_other,--file-mode=0666`
//! makes mount.fuse3 run `bucketfs bucket /mnt -o rw,allow_other,--file-mode=0666,dev,suid`
//! (it strips `_netdev` and `nofail` and adds `rw`, `dev`, `suid`; see ../shared/ANCHORS.md).
//! So, like goofys, a token starting with `-` is a flag as written, `key=value` or `key`
//! names one of our long flags (underscores and dashes both accepted), and the options
//! that only mean something to mount(8) are accepted and ignored. Anything else is an
//! error naming the token: a typo in fstab must not be silently dropped.

use std::collections::HashSet;
use std::ffi::OsString;

/// Options that mount(8), mount.fuse3 or systemd consume; they have no meaning for us.
const IGNORED: &[&str] = &[
    "auto",
    "noauto",
    "nofail",
    "_netdev",
    "defaults",
    "user",
    "users",
    "nouser",
    "owner",
    "group",
    "rw",
    "nosuid",
    "suid",
    "nodev",
    "dev",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "strictatime",
    "nodiratime",
    "diratime",
    "async",
    "sync",
    "dirsync",
    "lazytime",
    "silent",
    "loud",
];

fn is_ignored(token: &str) -> bool {
    IGNORED.contains(&token)
        || token.starts_with("x-")
        || token.starts_with("comment=")
        || token.starts_with("helper=")
        || token.starts_with("fsname=")
        || token.starts_with("subtype=")
}

/// Translates one `-o` token to zero or one command-line argument.
fn translate(token: &str, known: &HashSet<String>) -> Result<Option<String>, String> {
    let token = token.trim();
    if token.is_empty() || is_ignored(token) {
        return Ok(None);
    }
    if token.starts_with('-') {
        return Ok(Some(token.to_string()));
    }
    if token == "ro" {
        return Ok(Some("--read-only".into()));
    }
    let (key, value) = match token.split_once('=') {
        Some((k, v)) => (k, Some(v)),
        None => (token, None),
    };
    let name = [key.replace('_', "-"), key.to_string()]
        .into_iter()
        .find(|k| known.contains(k))
        .ok_or_else(|| format!("unknown mount option {token:?} (flags inside -o start with '-' or name a bucketfs flag, e.g. allow_other, uid=1000, --file-mode=0666)"))?;
    Ok(Some(match value {
        Some(v) => format!("--{name}={v}"),
        None => format!("--{name}"),
    }))
}

/// Replaces every `-o OPTS` / `-oOPTS` in `argv` (program name first) by the flags it stands for.
/// `known` holds every long flag name and alias of the mount command.
pub fn expand_mount_options(argv: Vec<OsString>, known: &HashSet<String>) -> Result<Vec<OsString>, String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut it = argv.into_iter();
    while let Some(arg) = it.next() {
        let opts = match arg.to_str() {
            Some("-o") => match it.next() {
                Some(v) => v.to_string_lossy().into_owned(),
                None => return Err("-o needs a value".into()),
            },
            Some(s) if s.starts_with("-o") && s.len() > 2 => s[2..].to_string(),
            _ => {
                out.push(arg);
                continue;
            }
        };
        for token in opts.split(',') {
            if let Some(flag) = translate(token, known)? {
                out.push(flag.into());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known() -> HashSet<String> {
        ["allow-other", "allow_other", "file-mode", "uid", "debug_fuse", "read-only", "stat-cache-ttl"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn expand(args: &[&str]) -> Result<Vec<String>, String> {
        let argv = args.iter().map(OsString::from).collect();
        expand_mount_options(argv, &known())
            .map(|v| v.into_iter().map(|s| s.into_string().unwrap()).collect())
    }

    #[test]
    fn mount_fuse3_invocation() {
        let got =
            expand(&["bucketfs", "b", "/mnt", "-o", "rw,allow_other,--file-mode=0666,dev,suid"]).unwrap();
        assert_eq!(got, ["bucketfs", "b", "/mnt", "--allow-other", "--file-mode=0666"]);
    }

    #[test]
    fn key_value_and_underscores() {
        let got = expand(&["bucketfs", "-ouid=1000,stat_cache_ttl=5s,debug_fuse,ro", "b", "/m"]).unwrap();
        assert_eq!(
            got,
            ["bucketfs", "--uid=1000", "--stat-cache-ttl=5s", "--debug_fuse", "--read-only", "b", "/m"]
        );
    }

    #[test]
    fn mount_only_options_are_ignored() {
        let got = expand(&[
            "bucketfs",
            "-o",
            "nofail,noauto,_netdev,defaults,x-systemd.automount,user,users",
            "b",
            "/m",
        ])
        .unwrap();
        assert_eq!(got, ["bucketfs", "b", "/m"]);
    }

    /// Seeded fuzzing of `-o` strings: no panic; every token becomes nothing, a flag as
    /// written, or `--known-name[=value]`; anything else is an error that names it.
    #[test]
    fn fuzz_option_strings() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xf57ab);
        const PIECES: &[&str] = &[
            ",",
            "=",
            "-",
            "--",
            "_",
            "allow_other",
            "allow-other",
            "uid",
            "1000",
            "ro",
            "rw",
            "nofail",
            "x-systemd.automount",
            "file_mode",
            "0666",
            "bogus",
            " ",
            "é",
            "\0",
            "-o",
            "comment=",
            "stat_cache_ttl",
        ];
        let known = known();
        for case in 0..20_000 {
            let n = rng.gen_range(0..10);
            let opts: String = (0..n).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
            // (a glued "-o" with nothing after it would take the next argument as its value)
            let glued = rng.gen_bool(0.5) && !opts.is_empty();
            let argv: Vec<OsString> = if glued {
                vec!["bucketfs".into(), format!("-o{opts}").into(), "b".into(), "/m".into()]
            } else {
                vec!["bucketfs".into(), "-o".into(), opts.clone().into(), "b".into(), "/m".into()]
            };
            match expand_mount_options(argv, &known) {
                Ok(out) => {
                    assert_eq!(out.first().map(|s| s.to_str()), Some(Some("bucketfs")), "case {case}");
                    for flag in &out[1..out.len() - 2] {
                        let f = flag.to_str().unwrap();
                        assert!(f.starts_with('-'), "case {case}: {opts:?} gave {f:?}");
                        if !opts.split(',').any(|t| t.trim() == f) {
                            let name = f.trim_start_matches("--").split('=').next().unwrap();
                            assert!(known.contains(name), "case {case}: {opts:?} gave {f:?}");
                        }
                    }
                    assert_eq!(&out[out.len() - 2..], ["b", "/m"], "case {case}");
                }
                Err(e) => {
                    assert!(
                        opts.split(',')
                            .any(|t| !t.trim().is_empty() && e.contains(&format!("{:?}", t.trim()))),
                        "case {case}: {opts:?}: {e}"
                    );
                }
            }
        }
    }

    #[test]
    fn unknown_option_is_an_error() {
        let err = expand(&["bucketfs", "-o", "allow_othr", "b", "/m"]).unwrap_err();
        assert!(err.contains("allow_othr"), "{err}");
        assert!(expand(&["bucketfs", "b", "/m", "-o"]).is_err());
    }
}
