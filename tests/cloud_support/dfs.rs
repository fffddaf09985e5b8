//! A local Azure Data Lake Storage Gen2 (DFS endpoint) server for the `abfs://`
//! tests: Azurite does not serve the DFS API (its support is an open pull
//! request), so this one keeps paths in memory and answers the calls bucketfs
//! makes, with the service's rules where they matter to a client: real
//! directories (parents created by a create), append at the exact position and
//! flush to commit, rename of a file or a whole directory in one request
//! (its destination parent must exist), non-recursive delete of a non-empty
//! directory refused with 409 `DirectoryNotEmpty`, listing by directory with a
//! continuation token, `If-Match` / `If-None-Match: *`, properties, access
//! control. It records every request (method, path, query, headers) and can be
//! told to fail the next flush.
//!
//! Plain HTTP/1.1 on std threads, one per connection, with keep-alive; the
//! endpoint is path-style (`http://127.0.0.1:P/acct`) like Azurite's.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// One request as it reached the server.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Decoded path after the account: `fs` or `fs/dir/file`.
    pub path: String,
    pub query: BTreeMap<String, String>,
    /// Lower-case names.
    pub headers: HashMap<String, String>,
    pub body_len: usize,
}

impl Recorded {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }
    pub fn h(&self, k: &str) -> Option<&str> {
        self.headers.get(k).map(String::as_str)
    }
}

#[derive(Clone, Debug, Default)]
struct Node {
    is_dir: bool,
    data: Vec<u8>,
    /// Appended, not yet flushed.
    pending: Vec<u8>,
    props: String,
    content_type: Option<String>,
    etag: String,
    permissions: String,
    owner: String,
    group: String,
}

#[derive(Default)]
struct State {
    filesystems: std::collections::BTreeSet<String>,
    /// `fs/path` -> node (no leading or trailing `/`).
    paths: BTreeMap<String, Node>,
    log: Vec<Recorded>,
    etags: u64,
}

pub struct DfsServer {
    pub endpoint: String,
    state: Arc<Mutex<State>>,
    fail_flushes: Arc<AtomicU32>,
}

struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn answer(status: u16) -> Answer {
    Answer { status, headers: Vec::new(), body: Vec::new() }
}

fn error(status: u16, code: &str) -> Answer {
    let body = format!("{{\"error\":{{\"code\":\"{code}\",\"message\":\"{code}\"}}}}").into_bytes();
    Answer {
        status,
        headers: vec![
            ("x-ms-error-code".into(), code.into()),
            ("content-type".into(), "application/json".into()),
        ],
        body,
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

impl DfsServer {
    pub fn start() -> DfsServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/acct", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let fail_flushes = Arc::new(AtomicU32::new(0));
        let (st, ff) = (state.clone(), fail_flushes.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (st, ff) = (st.clone(), ff.clone());
                std::thread::spawn(move || serve(conn, &st, &ff));
            }
        });
        DfsServer { endpoint, state, fail_flushes }
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().log.clone()
    }

    pub fn clear_requests(&self) {
        self.state.lock().unwrap().log.clear();
    }

    /// The next flush is refused (HTTP 400 `InvalidFlushOperation`: not retried).
    pub fn fail_next_flush(&self) {
        self.fail_flushes.store(1, Ordering::SeqCst);
    }

    /// `Some(true)` for a directory, `Some(false)` for a file, at `fs/path`.
    pub fn kind(&self, path: &str) -> Option<bool> {
        self.state.lock().unwrap().paths.get(path).map(|n| n.is_dir)
    }

    /// The committed content of the file at `fs/path`.
    pub fn content(&self, path: &str) -> Option<Vec<u8>> {
        self.state.lock().unwrap().paths.get(path).filter(|n| !n.is_dir).map(|n| n.data.clone())
    }

    /// Paths under `fs/` (all of them, directories too).
    pub fn paths(&self, fs: &str) -> Vec<String> {
        let p = format!("{fs}/");
        self.state.lock().unwrap().paths.keys().filter(|k| k.starts_with(&p)).cloned().collect()
    }

    /// (permissions, owner) of `fs/path`.
    pub fn access(&self, path: &str) -> Option<(String, String)> {
        self.state.lock().unwrap().paths.get(path).map(|n| (n.permissions.clone(), n.owner.clone()))
    }
}

fn serve(conn: TcpStream, st: &Mutex<State>, ff: &AtomicU32) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) =
            (parts.next().unwrap_or("").to_owned(), parts.next().unwrap_or("/").to_owned());
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            if h == "\r\n" || h == "\n" {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
            }
        }
        let len: usize = headers.get("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (raw_path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
        let query: BTreeMap<String, String> = raw_query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (decode(k), decode(v))
            })
            .collect();
        // drop the account segment
        let path = decode(raw_path.trim_start_matches('/').split_once('/').map_or("", |(_, rest)| rest));
        let rec = Recorded { method: method.clone(), path, query, headers, body_len: len };
        let a = {
            let mut s = st.lock().unwrap();
            s.log.push(rec.clone());
            handle(&mut s, &rec, body, ff)
        };
        let reason = if a.status < 300 { "OK" } else { "Error" };
        let mut head = format!("HTTP/1.1 {} {reason}\r\n", a.status);
        let mut has_len = false;
        for (k, v) in &a.headers {
            has_len |= k == "content-length";
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        if !has_len {
            head.push_str(&format!("content-length: {}\r\n", a.body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        if method != "HEAD" {
            bytes.extend_from_slice(&a.body);
        }
        if out.write_all(&bytes).is_err() {
            return;
        }
    }
}

fn parent(p: &str) -> Option<&str> {
    p.rsplit_once('/').map(|(a, _)| a)
}

fn new_etag(s: &mut State) -> String {
    s.etags += 1;
    format!("0x8DC{:08X}", s.etags)
}

/// Creates every missing ancestor directory of `p` (not the filesystem itself).
fn make_parents(s: &mut State, p: &str) {
    let mut cur = parent(p);
    while let Some(d) = cur {
        if !d.contains('/') {
            break;
        }
        if !s.paths.contains_key(d) {
            let etag = new_etag(s);
            s.paths.insert(d.to_owned(), Node { is_dir: true, etag, ..Node::default() });
        }
        cur = parent(d);
    }
}

fn conditions(r: &Recorded, existing: Option<&Node>) -> Option<Answer> {
    if r.h("if-none-match") == Some("*") && existing.is_some() {
        return Some(error(412, "ConditionNotMet"));
    }
    if let Some(want) = r.h("if-match") {
        if existing.map(|n| format!("\"{}\"", n.etag)).as_deref() != Some(want) {
            return Some(error(412, "ConditionNotMet"));
        }
    }
    None
}

fn node_headers(n: &Node) -> Vec<(String, String)> {
    let mut h = vec![
        ("etag".into(), format!("\"{}\"", n.etag)),
        ("last-modified".into(), httpdate::fmt_http_date(std::time::SystemTime::now())),
        ("x-ms-resource-type".into(), if n.is_dir { "directory" } else { "file" }.into()),
    ];
    if !n.props.is_empty() {
        h.push(("x-ms-properties".into(), n.props.clone()));
    }
    if let Some(ct) = &n.content_type {
        h.push(("content-type".into(), ct.clone()));
    }
    h
}

fn handle(s: &mut State, r: &Recorded, body: Vec<u8>, ff: &AtomicU32) -> Answer {
    let (fs, rel) = match r.path.split_once('/') {
        Some((fs, rel)) => (fs.to_owned(), rel.trim_end_matches('/').to_owned()),
        None => (r.path.clone(), String::new()),
    };
    if rel.is_empty() {
        return filesystem_call(s, r, &fs);
    }
    if !s.filesystems.contains(&fs) {
        return error(404, "FilesystemNotFound");
    }
    let key = format!("{fs}/{rel}");
    match (r.method.as_str(), r.q("action"), r.q("resource")) {
        ("PUT", _, _) if r.h("x-ms-rename-source").is_some() => rename(s, r, &fs, &key),
        ("PUT", _, Some(res @ ("file" | "directory"))) => {
            let existing = s.paths.get(&key).cloned();
            if let Some(a) = conditions(r, existing.as_ref()) {
                return a;
            }
            let is_dir = res == "directory";
            if existing.as_ref().is_some_and(|n| n.is_dir != is_dir) {
                return error(409, "PathConflict");
            }
            make_parents(s, &key);
            let etag = new_etag(s);
            let node = Node {
                is_dir,
                props: r.h("x-ms-properties").unwrap_or("").to_owned(),
                content_type: r.h("x-ms-content-type").map(str::to_owned),
                etag,
                permissions: if is_dir { "rwxr-x---" } else { "rw-r-----" }.into(),
                owner: "$superuser".into(),
                group: "$superuser".into(),
                ..Node::default()
            };
            let h = node_headers(&node);
            s.paths.insert(key, node);
            Answer { status: 201, headers: h, body: Vec::new() }
        }
        ("PATCH", Some("append"), _) => {
            let Some(n) = s.paths.get_mut(&key).filter(|n| !n.is_dir) else {
                return error(404, "PathNotFound");
            };
            let pos: usize = r.q("position").and_then(|p| p.parse().ok()).unwrap_or(usize::MAX);
            if pos != n.data.len() + n.pending.len() {
                return error(400, "InvalidFlushPosition");
            }
            n.pending.extend_from_slice(&body);
            answer(202)
        }
        ("PATCH", Some("flush"), _) => {
            if ff.swap(0, Ordering::SeqCst) > 0 {
                return error(400, "InvalidFlushOperation");
            }
            let etag = new_etag(s);
            let Some(n) = s.paths.get_mut(&key).filter(|n| !n.is_dir) else {
                return error(404, "PathNotFound");
            };
            let pos: usize = r.q("position").and_then(|p| p.parse().ok()).unwrap_or(usize::MAX);
            if pos != n.data.len() + n.pending.len() {
                return error(400, "InvalidFlushPosition");
            }
            let pending = std::mem::take(&mut n.pending);
            n.data.extend_from_slice(&pending);
            n.etag = etag;
            if let Some(ct) = r.h("x-ms-content-type") {
                n.content_type = Some(ct.to_owned());
            }
            Answer { status: 200, headers: node_headers(n), body: Vec::new() }
        }
        ("PATCH", Some("setProperties"), _) => {
            let Some(n) = s.paths.get_mut(&key) else { return error(404, "PathNotFound") };
            n.props = r.h("x-ms-properties").unwrap_or("").to_owned();
            if let Some(ct) = r.h("x-ms-content-type") {
                n.content_type = Some(ct.to_owned());
            }
            Answer { status: 200, headers: node_headers(n), body: Vec::new() }
        }
        ("PATCH", Some("setAccessControl"), _) => {
            let Some(n) = s.paths.get_mut(&key) else { return error(404, "PathNotFound") };
            if let Some(p) = r.h("x-ms-permissions") {
                n.permissions = p.to_owned();
            }
            if let Some(o) = r.h("x-ms-owner") {
                n.owner = o.to_owned();
            }
            if let Some(g) = r.h("x-ms-group") {
                n.group = g.to_owned();
            }
            answer(200)
        }
        ("HEAD", _, _) => {
            let Some(n) = s.paths.get(&key) else { return error(404, "PathNotFound") };
            let mut h = node_headers(n);
            h.push(("content-length".into(), n.data.len().to_string()));
            h.push(("x-ms-permissions".into(), n.permissions.clone()));
            h.push(("x-ms-owner".into(), n.owner.clone()));
            h.push(("x-ms-group".into(), n.group.clone()));
            Answer { status: 200, headers: h, body: Vec::new() }
        }
        ("GET", _, _) => read(s, r, &key),
        ("DELETE", _, _) => {
            let Some(n) = s.paths.get(&key) else { return error(404, "PathNotFound") };
            let under = format!("{key}/");
            if n.is_dir {
                let has_children = s.paths.keys().any(|k| k.starts_with(&under));
                match r.q("recursive") {
                    Some("true") => s.paths.retain(|k, _| !k.starts_with(&under)),
                    _ if has_children => return error(409, "DirectoryNotEmpty"),
                    _ => {}
                }
            }
            s.paths.remove(&key);
            answer(200)
        }
        _ => error(400, "UnsupportedHttpVerb"),
    }
}

fn filesystem_call(s: &mut State, r: &Recorded, fs: &str) -> Answer {
    match (r.method.as_str(), r.q("resource")) {
        ("PUT", Some("filesystem")) => {
            if !s.filesystems.insert(fs.to_owned()) {
                return error(409, "FilesystemAlreadyExists");
            }
            answer(201)
        }
        ("GET", Some("filesystem")) => {
            if !s.filesystems.contains(fs) {
                return error(404, "FilesystemNotFound");
            }
            let dir = r.q("directory").unwrap_or("").trim_matches('/');
            let base = if dir.is_empty() { format!("{fs}/") } else { format!("{fs}/{dir}/") };
            if !dir.is_empty() && !s.paths.get(&format!("{fs}/{dir}")).is_some_and(|n| n.is_dir) {
                return error(404, "PathNotFound");
            }
            let recursive = r.q("recursive") == Some("true");
            let max: usize = r.q("maxResults").and_then(|m| m.parse().ok()).unwrap_or(5000);
            let after = r.q("continuation").unwrap_or("");
            let mut items = Vec::new();
            let mut next = None;
            for (k, n) in s.paths.range(base.clone()..) {
                let Some(name) = k.strip_prefix(&base) else { break };
                if !recursive && name.contains('/') {
                    continue;
                }
                let full = &k[fs.len() + 1..];
                if !after.is_empty() && full <= after {
                    continue;
                }
                if items.len() == max {
                    next = Some(items.last().map(|(f, _): &(String, String)| f.clone()).unwrap_or_default());
                    break;
                }
                let item = format!(
                    "{{\"name\":\"{full}\",\"isDirectory\":\"{}\",\"contentLength\":\"{}\",\"etag\":\"{}\",\"lastModified\":\"{}\",\"owner\":\"{}\",\"permissions\":\"{}\"}}",
                    n.is_dir,
                    n.data.len(),
                    n.etag,
                    httpdate::fmt_http_date(std::time::SystemTime::now()),
                    n.owner,
                    n.permissions
                );
                items.push((full.to_owned(), item));
            }
            let body = format!(
                "{{\"paths\":[{}]}}",
                items.iter().map(|(_, i)| i.as_str()).collect::<Vec<_>>().join(",")
            );
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if let Some(t) = next {
                headers.push(("x-ms-continuation".into(), t));
            }
            Answer { status: 200, headers, body: body.into_bytes() }
        }
        _ => error(400, "UnsupportedHttpVerb"),
    }
}

fn rename(s: &mut State, r: &Recorded, fs: &str, dst: &str) -> Answer {
    let raw = r.h("x-ms-rename-source").unwrap_or("");
    let src_path = decode(raw.split_once('?').map_or(raw, |(p, _)| p));
    let src = src_path.trim_start_matches('/').trim_end_matches('/').to_owned();
    let Some(node) = s.paths.get(&src).cloned() else { return error(404, "SourcePathNotFound") };
    if !src.starts_with(&format!("{fs}/")) {
        return error(400, "InvalidSourceUri");
    }
    let existing = s.paths.get(dst).cloned();
    if let Some(a) = conditions(r, existing.as_ref()) {
        return a;
    }
    if existing.as_ref().is_some_and(|n| n.is_dir) {
        return error(409, "PathAlreadyExists");
    }
    if let Some(p) = parent(dst).filter(|p| p.contains('/')) {
        if !s.paths.get(p).is_some_and(|n| n.is_dir) {
            return error(404, "RenameDestinationParentPathNotFound");
        }
    }
    if dst.starts_with(&format!("{src}/")) {
        return error(400, "InvalidDestinationPath");
    }
    s.paths.remove(&src);
    if node.is_dir {
        let under = format!("{src}/");
        let moved: Vec<String> = s.paths.keys().filter(|k| k.starts_with(&under)).cloned().collect();
        for k in moved {
            let n = s.paths.remove(&k).unwrap();
            s.paths.insert(format!("{dst}/{}", &k[under.len()..]), n);
        }
    }
    let h = node_headers(&node);
    s.paths.insert(dst.to_owned(), node);
    Answer { status: 201, headers: h, body: Vec::new() }
}

fn read(s: &mut State, r: &Recorded, key: &str) -> Answer {
    let Some(n) = s.paths.get(key).filter(|n| !n.is_dir) else { return error(404, "PathNotFound") };
    if let Some(want) = r.h("if-match") {
        if format!("\"{}\"", n.etag) != want {
            return error(412, "ConditionNotMet");
        }
    }
    let len = n.data.len();
    let mut h = node_headers(n);
    let range = r.h("x-ms-range").or(r.h("range")).and_then(|v| v.strip_prefix("bytes="));
    let Some(range) = range else {
        return Answer { status: 200, headers: h, body: n.data.clone() };
    };
    let (a, b) = range.split_once('-').unwrap_or((range, ""));
    let start: usize = a.parse().unwrap_or(0);
    if start >= len {
        return error(416, "InvalidRange");
    }
    let end = b.parse::<usize>().map(|e| e.min(len - 1)).unwrap_or(len - 1);
    h.push(("content-range".into(), format!("bytes {start}-{end}/{len}")));
    Answer { status: 206, headers: h, body: n.data[start..=end].to_vec() }
}
