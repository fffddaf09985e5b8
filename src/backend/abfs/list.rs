//! Listing over the DFS API: `GET /filesystem?resource=filesystem&directory=D`
//! with `recursive` and the `continuation` token (`x-ms-continuation` answer
//! header), answering JSON `{"paths":[{"name","isDirectory","contentLength",
//! "etag","lastModified"}]}`.
//!
//! The DFS API lists a directory, not a key prefix: a prefix that ends inside
//! a name (`dir/ab`) lists `dir` and keeps the names starting with it, so a
//! page may come back short or empty with a continuation (allowed by
//! [`ListPage`]). A directory that does not exist lists as empty, as a prefix
//! with no keys does. The hidden upload directory is never shown.

use std::time::SystemTime;

use reqwest::Method;
use serde::Deserialize;

use super::{AbfsBackend, Req, RESERVED_DIR};
use crate::backend::http;
use crate::backend::*;
use crate::object::ErrorKind;

/// Largest page the service returns.
const MAX_RESULTS: usize = 5000;

#[derive(Deserialize, Debug, Default)]
struct Paths {
    #[serde(default)]
    paths: Vec<PathItem>,
}

/// Values come as strings from the service (`"isDirectory":"true"`,
/// `"contentLength":"10"`); numbers and booleans are taken too.
#[derive(Deserialize, Debug)]
#[serde(rename_all = "camelCase")]
struct PathItem {
    name: String,
    #[serde(default)]
    is_directory: Option<serde_json::Value>,
    #[serde(default)]
    content_length: Option<serde_json::Value>,
    #[serde(default)]
    etag: Option<String>,
    #[serde(default)]
    last_modified: Option<String>,
}

fn truthy(v: &Option<serde_json::Value>) -> bool {
    match v {
        Some(serde_json::Value::Bool(b)) => *b,
        Some(serde_json::Value::String(s)) => s.eq_ignore_ascii_case("true"),
        _ => false,
    }
}

fn number(v: &Option<serde_json::Value>) -> u64 {
    match v {
        Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

impl PathItem {
    fn into_meta(self, key: String) -> ObjectMeta {
        ObjectMeta {
            key,
            size: number(&self.content_length),
            etag: self.etag.unwrap_or_default().trim_matches('"').to_owned(),
            last_modified: self
                .last_modified
                .and_then(|v| httpdate::parse_http_date(&v).ok())
                .unwrap_or(SystemTime::UNIX_EPOCH),
            content_type: None,
            user_metadata: Default::default(),
        }
    }
}

impl AbfsBackend {
    /// One page of `req` (see the module header); the upload directory's entries
    /// only with `hidden`.
    pub(super) async fn list_page(&self, req: &ListRequest, hidden: bool) -> BackendResult<ListPage> {
        let dir = match req.prefix.rfind('/') {
            Some(i) => &req.prefix[..i],
            None => "",
        };
        let max = if req.max_keys == 0 { 1000 } else { req.max_keys.min(MAX_RESULTS) };
        let recursive = req.delimiter.is_none();
        let mut r = Req::new(Method::GET, None)
            .q("resource", "filesystem")
            .q("recursive", recursive.to_string())
            .q("maxResults", max.to_string());
        if !dir.is_empty() {
            r = r.q("directory", dir.to_owned());
        }
        if let Some(t) = &req.continuation {
            r = r.q("continuation", t.clone());
        }
        let resp = match self.az.call("list", &req.prefix, r).await {
            Ok(resp) => resp,
            Err(BackendError { kind: ErrorKind::NotFound, .. }) if !dir.is_empty() => {
                return Ok(ListPage::default())
            }
            Err(e) => return Err(e),
        };
        let next = resp
            .headers()
            .get("x-ms-continuation")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned);
        let body = http::body(resp, self.az.ctx("list", &req.prefix)).await?;
        let parsed: Paths = serde_json::from_slice(&body).map_err(|e| {
            BackendError::io(format!(
                "list {:?}: unexpected answer from {}: {e}",
                req.prefix,
                self.cfg().endpoint
            ))
            .with_source(e)
        })?;
        let mut page = ListPage { next_continuation: next, ..Default::default() };
        for p in parsed.paths {
            let name = p.name.trim_start_matches('/').to_owned();
            if !hidden && (name == RESERVED_DIR || name.starts_with(&format!("{RESERVED_DIR}/"))) {
                continue;
            }
            let is_dir = truthy(&p.is_directory);
            let key = if is_dir { format!("{name}/") } else { name };
            // the prefix itself (`dir/` when listing `dir/`) is the listed directory
            if !key.starts_with(&req.prefix) || (is_dir && key == req.prefix) {
                continue;
            }
            if is_dir && !recursive {
                page.common_prefixes.push(key);
            } else {
                page.objects.push(p.into_meta(key));
            }
        }
        page.objects.sort_by(|a, b| a.key.cmp(&b.key));
        page.common_prefixes.sort();
        Ok(page)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_parse_with_strings_or_native_values() {
        let j = r#"{"paths":[{"name":"d","isDirectory":"true","contentLength":"0","etag":"0x1","lastModified":"Sun, 22 Nov 2026 06:00:00 GMT"},{"name":"f","contentLength":12,"isDirectory":false}]}"#;
        let p: Paths = serde_json::from_str(j).unwrap();
        assert!(truthy(&p.paths[0].is_directory));
        assert!(!truthy(&p.paths[1].is_directory));
        assert_eq!(number(&p.paths[1].content_length), 12);
        let empty: Paths = serde_json::from_str("{}").unwrap();
        assert!(empty.paths.is_empty());
    }
}
