//! Parsing of the SOURCE argument: which backend, which bucket, which prefix.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    S3,
    Gcs,
    /// `wasb://` (blob service) or, with `dfs`, `abfs://` (Data Lake Storage Gen2).
    Azure {
        account: Option<String>,
        dfs: bool,
    },
    Local,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub kind: BackendKind,
    pub bucket: String,
    /// Key prefix the mount is rooted at, without leading or trailing `/`; may be empty.
    pub prefix: String,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match self.kind {
            BackendKind::S3 => "s3",
            BackendKind::Gcs => "gs",
            BackendKind::Azure { dfs: false, .. } => "wasb",
            BackendKind::Azure { dfs: true, .. } => "abfs",
            BackendKind::Local => "local",
        };
        write!(f, "{scheme}://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Parses `bucket`, `bucket:prefix`, `s3://bucket/prefix`, `gs://…`, `wasb://container[@account.blob.core.windows.net]/…`,
/// `abfs://filesystem[@account.dfs.core.windows.net]/…` and `local://bucket/prefix`.
pub fn parse_source(s: &str) -> Result<Source, String> {
    let (kind, rest, sep) = if let Some((scheme, rest)) = s.split_once("://") {
        let kind = match scheme {
            "s3" => BackendKind::S3,
            "gs" | "gcs" => BackendKind::Gcs,
            "wasb" | "wasbs" | "az" => BackendKind::Azure { account: None, dfs: false },
            "abfs" | "abfss" => BackendKind::Azure { account: None, dfs: true },
            "local" => BackendKind::Local,
            other => {
                return Err(format!(
                    "unknown scheme {other}:// in {s:?} (use s3://, gs://, wasb://, abfs:// or local://)"
                ))
            }
        };
        (kind, rest, '/')
    } else {
        (BackendKind::S3, s, ':')
    };
    let (mut bucket, prefix) = match rest.split_once(sep) {
        Some((b, p)) => (b.to_string(), p.trim_matches('/').to_string()),
        None => (rest.to_string(), String::new()),
    };
    let mut kind = kind;
    if let BackendKind::Azure { account, .. } = &mut kind {
        if let Some((container, host)) = bucket.clone().split_once('@') {
            *account = Some(host.split('.').next().unwrap_or(host).to_string());
            bucket = container.to_string();
        }
    }
    if bucket.is_empty() {
        return Err(format!("no bucket name in {s:?}"));
    }
    if bucket.contains(['/', '\\', '\0']) || bucket == "." || bucket == ".." {
        return Err(format!("invalid bucket name {bucket:?}"));
    }
    if prefix.split('/').any(|c| c == ".." || c == ".") || prefix.contains('\0') {
        return Err(format!("invalid prefix {prefix:?}"));
    }
    Ok(Source { kind, bucket, prefix })
}

/// Which of S3's bucket naming rules `name` breaks, if any
/// (<https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html>).
/// `hard` problems no S3 server accepts (characters no URL path segment should carry,
/// names under 3 or over 255 characters); the others some accept (legacy us-east-1
/// buckets with capitals or `_`, servers with relaxed names), so those are reported
/// only if the bucket check fails.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameProblem {
    pub hard: bool,
    pub rule: &'static str,
}

pub fn s3_bucket_name_problem(name: &str) -> Option<NameProblem> {
    let hard = |rule| Some(NameProblem { hard: true, rule });
    let soft = |rule| Some(NameProblem { hard: false, rule });
    let b = name.as_bytes();
    if !b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'-' | b'_')) {
        return hard("only lowercase letters, digits, '.' and '-' are allowed");
    }
    if b.len() < 3 || b.len() > 255 {
        return hard("must be 3 to 63 characters long");
    }
    if b.len() > 63 {
        return soft("must be 3 to 63 characters long");
    }
    if b.iter().any(|c| c.is_ascii_uppercase()) {
        return soft("only lowercase letters, digits, '.' and '-' are allowed (no capitals)");
    }
    if b.contains(&b'_') {
        return soft("only lowercase letters, digits, '.' and '-' are allowed (no '_')");
    }
    if !b[0].is_ascii_alphanumeric() || !b[b.len() - 1].is_ascii_alphanumeric() {
        return soft("must begin and end with a letter or digit");
    }
    if name.contains("..") {
        return soft("must not contain two adjacent periods");
    }
    if name.split('.').count() == 4 && name.split('.').all(|p| p.parse::<u8>().is_ok()) {
        return soft("must not be formatted as an IP address");
    }
    if ["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p)) {
        return soft("must not start with the reserved prefixes xn--, sthree- or amzn-s3-demo-");
    }
    if ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"].iter().any(|x| name.ends_with(x)) {
        return soft(
            "must not end with the reserved suffixes -s3alias, --ol-s3, .mrap, --x-s3 or --table-s3",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let s = parse_source("photos").unwrap();
        assert_eq!((s.kind, s.bucket.as_str(), s.prefix.as_str()), (BackendKind::S3, "photos", ""));
        let s = parse_source("photos:2024/summer/").unwrap();
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("photos", "2024/summer"));
        let s = parse_source("s3://b/x/y").unwrap();
        assert_eq!((s.kind, s.prefix.as_str()), (BackendKind::S3, "x/y"));
        assert_eq!(parse_source("gs://b").unwrap().kind, BackendKind::Gcs);
        assert_eq!(parse_source("local://demo/sub").unwrap().to_string(), "local://demo/sub");
        let s = parse_source("wasb://c@acct.blob.core.windows.net/p").unwrap();
        assert_eq!(s.kind, BackendKind::Azure { account: Some("acct".into()), dfs: false });
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("c", "p"));
        let s = parse_source("abfss://fs@acct.dfs.core.windows.net/a/b").unwrap();
        assert_eq!(s.kind, BackendKind::Azure { account: Some("acct".into()), dfs: true });
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("fs", "a/b"));
        assert_eq!(s.to_string(), "abfs://fs/a/b");
        assert_eq!(parse_source("abfs://fs").unwrap().kind, BackendKind::Azure { account: None, dfs: true });
    }

    #[test]
    fn s3_bucket_names_name_the_rule_they_break() {
        for ok in ["photos", "my-bucket.2024", "abc", &"a".repeat(63)] {
            assert_eq!(s3_bucket_name_problem(ok), None, "{ok}");
        }
        let rule = |n: &str| s3_bucket_name_problem(n).map(|p| (p.hard, p.rule));
        assert!(matches!(rule("Bad_Bucket"), Some((false, r)) if r.contains("capitals")));
        assert!(matches!(rule("bad_bucket"), Some((false, r)) if r.contains("'_'")));
        assert!(matches!(rule("ab"), Some((true, r)) if r.contains("3 to 63")));
        assert!(matches!(rule(&"a".repeat(64)), Some((false, r)) if r.contains("3 to 63")));
        assert!(matches!(rule("bad!name"), Some((true, r)) if r.contains("only lowercase")));
        assert!(matches!(rule("-abc"), Some((false, r)) if r.contains("begin and end")));
        assert!(matches!(rule("a..b"), Some((false, r)) if r.contains("adjacent")));
        assert!(matches!(rule("192.168.5.4"), Some((false, r)) if r.contains("IP address")));
        assert!(matches!(rule("xn--abc"), Some((false, r)) if r.contains("prefixes")));
        assert!(matches!(rule("abc-s3alias"), Some((false, r)) if r.contains("suffixes")));
    }

    /// Seeded fuzzing of SOURCE parsing and the bucket name rules: no panic, and what
    /// parses keeps its invariants.
    #[test]
    fn fuzz_sources_and_bucket_names() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x50c);
        const PIECES: &[&str] = &[
            "s3://",
            "gs://",
            "wasb://",
            "abfs://",
            "local://",
            "ftp://",
            "b",
            "Bad",
            "_",
            ".",
            "..",
            "-",
            "/",
            ":",
            "@",
            "acct.blob.core.windows.net",
            "\\",
            "\0",
            "é",
            "xn--",
            "-s3alias",
            "1",
            "://",
        ];
        for _ in 0..20_000 {
            let n = rng.gen_range(0..8);
            let s: String = (0..n).map(|_| PIECES[rng.gen_range(0..PIECES.len())]).collect();
            if let Ok(src) = parse_source(&s) {
                assert!(!src.bucket.is_empty() && !src.bucket.contains('/'), "{s:?}: {src:?}");
                assert!(!src.prefix.starts_with('/') && !src.prefix.ends_with('/'), "{s:?}: {src:?}");
                let _ = src.to_string();
            }
            if let Some(p) = s3_bucket_name_problem(&s) {
                assert!(!p.rule.is_empty());
            } else {
                assert!((3..=63).contains(&s.len()) && !s.contains(['_', '/']), "{s:?}");
            }
        }
    }

    #[test]
    fn rejects() {
        assert!(parse_source("").is_err());
        assert!(parse_source("ftp://x").is_err());
        assert!(parse_source("local://").is_err());
        assert!(parse_source("local://b/../etc").is_err());
    }
}
