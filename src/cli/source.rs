//! Parsing of the SOURCE argument: which backend, which bucket, which prefix.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendKind {
    S3,
    Gcs,
    Azure { account: Option<String> },
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
            BackendKind::Azure { .. } => "wasb",
            BackendKind::Local => "local",
        };
        write!(f, "{scheme}://{}", self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// Parses `bucket`, `bucket:prefix`, `s3://bucket/prefix`, `gs://…`, `wasb://container[@account.blob.core.windows.net]/…`
/// and `local://bucket/prefix`.
pub fn parse_source(s: &str) -> Result<Source, String> {
    let (kind, rest, sep) = if let Some((scheme, rest)) = s.split_once("://") {
        let kind = match scheme {
            "s3" => BackendKind::S3,
            "gs" | "gcs" => BackendKind::Gcs,
            "wasb" | "wasbs" | "az" => BackendKind::Azure { account: None },
            "local" => BackendKind::Local,
            other => {
                return Err(format!(
                    "unknown scheme {other}:// in {s:?} (use s3://, gs://, wasb:// or local://)"
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
    if let BackendKind::Azure { account } = &mut kind {
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
        assert_eq!(s.kind, BackendKind::Azure { account: Some("acct".into()) });
        assert_eq!((s.bucket.as_str(), s.prefix.as_str()), ("c", "p"));
    }

    #[test]
    fn rejects() {
        assert!(parse_source("").is_err());
        assert!(parse_source("ftp://x").is_err());
        assert!(parse_source("local://").is_err());
        assert!(parse_source("local://b/../etc").is_err());
    }
}
