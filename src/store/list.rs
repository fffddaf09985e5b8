//! S3 listings over the directory tree.
//!
//! Object `k` is the directory `k/` (see paths.rs), so a tree walk yields keys
//! in lexicographic order if, at each level, every child `c` contributes two
//! candidate entries: the object `p + c` and the subtree `p + c + "/"`, and the
//! candidates are sorted as strings. The ranges those entries cover are
//! disjoint (a subtree's keys all start with `c/`, and no other child can
//! produce that prefix), so emitting them in that order is globally sorted.
//!
//! A subtree whose key prefix already contains the delimiter rolls up into one
//! common prefix without being descended (only checked to hold one object), so
//! a `/`-delimited listing touches one directory level. Existence checks and
//! metadata reads go to at most `parity + 1` drives (see `ErasureSet::list_slots`),
//! and only the metadata header (no inline data) of each listed object is read.
//!
//! Those reads are independent, so each level's entries are probed a window at a
//! time from a few threads (`probe_window`), and the walk then takes the results
//! in key order. A directory whose link count is 2, on a file system that counts
//! subdirectories in it, has no child objects and is not read at all
//! (`ListDrive::may_have_subdirs`): without that, every object of a listing cost
//! `parity + 1` directory reads just to learn it has no children. Together these
//! took a 2,000-file `ls -l` over `bucketfs serve` from 0.84-1.19 s to
//! 0.27-0.28 s with a cold cache (issue 11).
//!
//! Continuation tokens are `o<key>` (resume after that object) or `p<prefix>`
//! (resume after everything under that common prefix).

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use super::error::{StoreError, StoreResult};
use super::meta;
use super::object::info;
use super::paths::{self, META_FILE};
use super::set::ErasureSet;
use crate::object::{ListPage, ListRequest};

enum Marker {
    None,
    After(String),
    AfterPrefix(String),
}

struct Walk<'a> {
    prefix: &'a str,
    delimiter: Option<&'a str>,
    marker: Marker,
    max: usize,
    drives: Vec<ListDrive>,
    page: ListPage,
    last_token: Option<String>,
    done: bool,
}

impl Walk<'_> {
    /// True if `key` was already returned by an earlier page.
    fn before_marker(&self, key: &str) -> bool {
        match &self.marker {
            Marker::None => false,
            Marker::After(m) => key <= m.as_str(),
            Marker::AfterPrefix(p) => key <= p.as_str() || key.starts_with(p.as_str()),
        }
    }

    /// True if every key starting with `sub` precedes the marker.
    fn subtree_before_marker(&self, sub: &str) -> bool {
        match &self.marker {
            Marker::None => false,
            Marker::After(m) | Marker::AfterPrefix(m) => {
                (m.as_str() > sub && !m.starts_with(sub))
                    || sub.starts_with(m.as_str()) && matches!(self.marker, Marker::AfterPrefix(_))
            }
        }
    }

    /// The common prefix `key` rolls up into, if any.
    fn rollup(&self, key: &str) -> Option<String> {
        let d = self.delimiter.filter(|d| !d.is_empty())?;
        let rest = &key[self.prefix.len()..];
        rest.find(d).map(|i| format!("{}{}", self.prefix, &rest[..i + d.len()]))
    }

    /// Adds an entry; returns false once the page is full (and notes that more follow).
    fn push_prefix(&mut self, cp: String) -> bool {
        if self.page.common_prefixes.last() == Some(&cp)
            || self.before_marker(&cp) && !matches!(self.marker, Marker::After(_))
        {
            return true;
        }
        if let Marker::After(m) = &self.marker {
            if m.starts_with(cp.as_str()) || cp.as_str() <= m.as_str() && m.starts_with(cp.as_str()) {
                return true;
            }
        }
        if self.full() {
            return false;
        }
        self.last_token = Some(format!("p{cp}"));
        self.page.common_prefixes.push(cp);
        true
    }

    fn full(&mut self) -> bool {
        if self.page.objects.len() + self.page.common_prefixes.len() >= self.max {
            self.page.next_continuation = self.last_token.clone();
            self.done = true;
            return true;
        }
        false
    }
}

impl ErasureSet {
    /// One page of an S3 listing (prefix, delimiter, continuation, max keys).
    #[tracing::instrument(level = "debug", skip(self, req), fields(prefix = %req.prefix))]
    pub fn list_objects(&self, bucket: &str, req: &ListRequest) -> StoreResult<ListPage> {
        self.require_bucket(bucket)?;
        paths::validate_prefix(&req.prefix)?;
        let marker = match req.continuation.as_deref() {
            None | Some("") => Marker::None,
            Some(t) if t.starts_with('o') => Marker::After(t[1..].to_string()),
            Some(t) if t.starts_with('p') => Marker::AfterPrefix(t[1..].to_string()),
            Some(t) => return Err(StoreError::InvalidArgument(format!("bad continuation token {t:?}"))),
        };
        let mut w = Walk {
            prefix: &req.prefix,
            delimiter: req.delimiter.as_deref(),
            marker,
            max: if req.max_keys == 0 { 1000 } else { req.max_keys },
            drives: self
                .list_slots(bucket)
                .into_iter()
                .map(|s| ListDrive {
                    dir: self.drives[s].join(bucket),
                    counts_subdirs: self.counts_subdirs[s],
                })
                .collect(),
            page: ListPage::default(),
            last_token: None,
            done: false,
        };
        let (comps, partial) = paths::split_prefix(&req.prefix);
        let Some(rel) = paths::components_to_relpath(&comps) else { return Ok(w.page) };
        let dir_key = &req.prefix[..req.prefix.len() - partial.len()];
        let children = child_components(&w.drives, &rel);
        self.walk_level(&mut w, &rel, dir_key, partial, children)?;
        Ok(w.page)
    }

    /// Walks one level whose key components are already known (see the header).
    fn walk_level(
        &self,
        w: &mut Walk,
        rel: &Path,
        dir_key: &str,
        filter: &str,
        children: BTreeSet<String>,
    ) -> StoreResult<()> {
        // (sort key, is_subtree, component)
        let mut entries: Vec<(String, bool, String)> = Vec::with_capacity(children.len() * 2);
        for c in children.into_iter().filter(|c| c.starts_with(filter)) {
            entries.push((format!("{dir_key}{c}"), false, c.clone()));
            entries.push((format!("{dir_key}{c}/"), true, c));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut start = 0;
        while start < entries.len() && !w.done {
            // Each entry fills at most one slot of the page: a window larger than
            // what is left of it would only read ahead for the next page.
            let left = w.max.saturating_sub(w.page.objects.len() + w.page.common_prefixes.len());
            let end = entries.len().min(start + (2 * left + 2).min(PROBE_WINDOW));
            let window = &entries[start..end];
            let facts = self.probe_window(w, rel, window);
            for ((key, subtree, c), fact) in window.iter().zip(facts) {
                if w.done {
                    return Ok(());
                }
                match fact {
                    Fact::Skip => {}
                    Fact::Object(m) => {
                        if let Some(cp) = w.rollup(key) {
                            if !w.push_prefix(cp) {
                                return Ok(());
                            }
                            continue;
                        }
                        if w.full() {
                            return Ok(());
                        }
                        w.last_token = Some(format!("o{key}"));
                        w.page.objects.push(info(key, &m));
                    }
                    Fact::RollsUp(cp) => {
                        if w.page.common_prefixes.last() != Some(&cp) && !w.push_prefix(cp) {
                            return Ok(());
                        }
                    }
                    Fact::Descend(grandchildren) => {
                        debug_assert!(subtree);
                        let child = rel.join(paths::escape_component(c));
                        self.walk_level(w, &child, key, "", grandchildren)?;
                    }
                }
            }
            start = end;
        }
        Ok(())
    }

    /// Gathers what the walk needs to know about each entry of `window`, reading
    /// the drives from up to `PROBE_THREADS` threads at once.
    ///
    /// Why threads: a listing reads one metadata file and `parity + 1` directories
    /// per object, each a disk read when the cache is cold. Done one after another,
    /// a 2,000-file `ls -l` over `bucketfs serve` took 0.8 s (issue 11, BENCHMARKS
    /// run 8c); the reads are independent, and the disk serves many at once.
    fn probe_window(&self, w: &Walk, rel: &Path, window: &[(String, bool, String)]) -> Vec<Fact> {
        let probe = |(key, subtree, c): &(String, bool, String)| -> Fact {
            let child = rel.join(paths::escape_component(c));
            if !subtree {
                if w.before_marker(key) {
                    return Fact::Skip;
                }
                return match read_list_meta(&w.drives, &child) {
                    Some(m) => Fact::Object(Box::new(m)),
                    None => Fact::Skip,
                };
            }
            if w.subtree_before_marker(key) {
                return Fact::Skip;
            }
            match w.rollup(key) {
                Some(cp) if cp.len() <= key.len() => {
                    if subtree_has_object(&w.drives, &child) {
                        Fact::RollsUp(cp)
                    } else {
                        Fact::Skip
                    }
                }
                _ => Fact::Descend(child_components(&w.drives, &child)),
            }
        };
        let threads = PROBE_THREADS.min(window.len().div_ceil(PROBE_PER_THREAD));
        if threads <= 1 {
            return window.iter().map(probe).collect();
        }
        let next = std::sync::atomic::AtomicUsize::new(0);
        let mut facts: Vec<(usize, Fact)> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    scope.spawn(|| {
                        let mut mine = Vec::new();
                        loop {
                            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            let Some(e) = window.get(i) else { return mine };
                            mine.push((i, probe(e)));
                        }
                    })
                })
                .collect();
            // a probe only reads files and cannot panic short of a bug: pass it on
            workers
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        });
        facts.sort_unstable_by_key(|(i, _)| *i);
        facts.into_iter().map(|(_, f)| f).collect()
    }
}

/// One drive a listing reads (see `ErasureSet::list_slots`).
struct ListDrive {
    /// The bucket's directory on the drive.
    dir: PathBuf,
    /// See `ErasureSet::counts_subdirs`.
    counts_subdirs: bool,
}

impl ListDrive {
    /// Whether the directory `rel` may have subdirectories, i.e. child objects (every
    /// key component is a directory; `%meta` is a file). A link count of 2 proves it
    /// has none without reading it: most directories a listing opens are objects
    /// without children, and reading each one's entries was a disk read apiece
    /// when the cache was cold, on every listing drive. An inline object (no
    /// `%d.` data directory) is such a leaf.
    fn may_have_subdirs(&self, rel: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        !self.counts_subdirs || fs::metadata(self.dir.join(rel)).map_or(true, |m| m.nlink() != 2)
    }
}

/// Union of the key components below `rel` on the listing drives.
fn child_components(drives: &[ListDrive], rel: &Path) -> BTreeSet<String> {
    let mut set = BTreeSet::new();
    for d in drives {
        if !d.may_have_subdirs(rel) {
            continue;
        }
        let Ok(rd) = fs::read_dir(d.dir.join(rel)) else { continue };
        for e in rd.flatten() {
            if let Some(c) = e.file_name().to_str().and_then(paths::unescape_component) {
                set.insert(c);
            }
        }
    }
    set
}

fn read_list_meta(drives: &[ListDrive], rel: &Path) -> Option<meta::ObjMeta> {
    drives.iter().find_map(|d| meta::read(&d.dir.join(rel).join(META_FILE), false).ok()?.ok().map(|(m, _)| m))
}

/// Whether the subtree at `rel` holds at least one object (depth-first, stops early).
fn subtree_has_object(drives: &[ListDrive], rel: &Path) -> bool {
    for c in child_components(drives, rel) {
        let child: PathBuf = rel.join(paths::escape_component(&c));
        if drives.iter().any(|d| d.dir.join(&child).join(META_FILE).exists())
            || subtree_has_object(drives, &child)
        {
            return true;
        }
    }
    false
}

/// Entries of one level probed together (bounded: a window read past the end of
/// the page is wasted work).
const PROBE_WINDOW: usize = 256;
/// Threads that probe one window.
const PROBE_THREADS: usize = 8;
/// Entries a thread is worth starting for.
const PROBE_PER_THREAD: usize = 8;

/// What the walk needs to know about one entry, gathered by `probe_window`.
enum Fact {
    /// Before the marker, not an object, or a subtree without objects.
    Skip,
    /// An object and its listing metadata (it may still roll up into a prefix).
    Object(Box<meta::ObjMeta>),
    /// A subtree holding objects that rolls up into this common prefix.
    RollsUp(String),
    /// A subtree to walk, with the key components below it.
    Descend(BTreeSet<String>),
}

/// Merges the pages several sets returned for one request into the page the
/// whole store returns: the first `max` entries (objects and common prefixes,
/// deduplicated: a prefix can exist in several sets) in key order. Each set's
/// page holds its first `max` entries after the marker, so the first `max` of
/// the union are all among them; the token is that of the last entry taken,
/// which every set resumes from as it would from its own.
pub(crate) fn merge_pages(pages: Vec<ListPage>, max_keys: usize) -> ListPage {
    let max = if max_keys == 0 { 1000 } else { max_keys };
    let more = pages.iter().any(|p| p.next_continuation.is_some());
    let mut entries: Vec<(String, Option<crate::object::ObjectMeta>)> = Vec::new();
    for p in pages {
        entries.extend(p.objects.into_iter().map(|o| (o.key.clone(), Some(o))));
        entries.extend(p.common_prefixes.into_iter().map(|cp| (cp, None)));
    }
    // Equal keys: the newest object first, so that dedup keeps it (a key in
    // two pools, after a race, is listed once, as its newest copy).
    let newest =
        |o: &Option<crate::object::ObjectMeta>| std::cmp::Reverse(o.as_ref().map(|o| o.last_modified));
    entries.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| newest(&a.1).cmp(&newest(&b.1))));
    entries.dedup_by(|a, b| a.0 == b.0 && a.1.is_none() == b.1.is_none());
    let truncated = more || entries.len() > max;
    entries.truncate(max);
    let mut page = ListPage::default();
    if truncated {
        page.next_continuation =
            entries.last().map(|(k, o)| format!("{}{k}", if o.is_some() { 'o' } else { 'p' }));
    }
    for (k, o) in entries {
        match o {
            Some(o) => page.objects.push(o),
            None => page.common_prefixes.push(k),
        }
    }
    page
}

#[cfg(test)]
mod tests {
    use super::super::{Store, StoreConfig};
    use crate::object::{ListRequest, PutOptions};

    fn store(n: usize) -> (tempfile::TempDir, std::sync::Arc<Store>) {
        let dir = tempfile::tempdir().unwrap();
        let drives = (0..n).map(|i| dir.path().join(format!("d{i}"))).collect();
        let s = Store::open(StoreConfig { drives, parity: None }).unwrap();
        s.make_bucket("bkt").unwrap();
        (dir, s)
    }

    fn list(s: &Store, prefix: &str, delim: Option<&str>, max: usize) -> (Vec<String>, Vec<String>) {
        let mut objs = Vec::new();
        let mut cps = Vec::new();
        let mut token = None;
        loop {
            let req = ListRequest {
                prefix: prefix.into(),
                delimiter: delim.map(String::from),
                continuation: token.clone(),
                max_keys: max,
            };
            let page = s.list_objects("bkt", &req).unwrap();
            assert!(page.objects.len() + page.common_prefixes.len() <= max);
            objs.extend(page.objects.into_iter().map(|o| o.key));
            cps.extend(page.common_prefixes);
            match page.next_continuation {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        (objs, cps)
    }

    #[test]
    fn listing_edge_cases() {
        let (_d, s) = store(2);
        let keys = ["a", "a/", "a/b", "a!", "a/b/c", "a0", "b", "%x", "a//z", "c/d/e"];
        for k in keys {
            s.put_object("bkt", k, k.as_bytes(), &PutOptions::default()).unwrap();
        }
        let mut sorted: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
        sorted.sort();
        // Recursive listing is lexicographic, whatever the page size.
        for max in [1, 2, 3, 1000] {
            assert_eq!(list(&s, "", None, max).0, sorted, "max {max}");
        }
        // Delimiter listing at the root.
        for max in [1, 2, 1000] {
            let (o, p) = list(&s, "", Some("/"), max);
            assert_eq!(o, vec!["%x", "a", "a!", "a0", "b"]);
            assert_eq!(p, vec!["a/", "c/"]);
        }
        // Inside "a/": the key "a/" itself is an object there.
        let (o, p) = list(&s, "a/", Some("/"), 1);
        assert_eq!(o, vec!["a/", "a/b"]);
        assert_eq!(p, vec!["a//", "a/b/"]);
        // Partial prefixes.
        assert_eq!(list(&s, "a/b", None, 1000).0, vec!["a/b", "a/b/c"]);
        assert_eq!(
            list(&s, "a", Some("/"), 1000),
            (vec!["a".into(), "a!".into(), "a0".into()], vec!["a/".into()])
        );
        assert_eq!(list(&s, "zz", None, 1000).0, Vec::<String>::new());
        // A non-'/' delimiter.
        let (o, p) = list(&s, "", Some("b"), 1000);
        assert_eq!(p, vec!["a/b", "b"]);
        assert!(o.contains(&"a!".to_string()) && !o.contains(&"a/b/c".to_string()));
        // Deleting leaves no empty common prefix behind.
        s.delete_object("bkt", "c/d/e").unwrap();
        assert_eq!(list(&s, "", Some("/"), 1000).1, vec!["a/"]);
        s.delete_object("bkt", "a").unwrap();
        assert_eq!(s.head_object("bkt", "a/b").unwrap().size, 3);
        assert!(s.head_object("bkt", "a").unwrap_err().is_not_found());
    }

    /// Listings wider than one probe window (so several threads read each window),
    /// paged at sizes that cut windows and levels anywhere, over objects with and
    /// without children, inline and with a data directory (a leaf by link count
    /// or not), match a model of the keys.
    #[test]
    fn wide_listings_match_the_keys_at_every_page_size() {
        let (_d, s) = store(4);
        let mut keys = std::collections::BTreeSet::new();
        let big = vec![7u8; 3 * super::super::object::INLINE_MAX as usize];
        for i in 0..300 {
            let k = format!("dir/f{i:04}");
            let body: &[u8] = if i % 97 == 0 { &big } else { k.as_bytes() };
            s.put_object("bkt", &k, body, &PutOptions::default()).unwrap();
            keys.insert(k.clone());
            if i % 7 == 0 || i % 97 == 0 {
                let child = format!("{k}/sub/x");
                s.put_object("bkt", &child, b"x", &PutOptions::default()).unwrap();
                keys.insert(child);
            }
        }
        let all: Vec<String> = keys.iter().cloned().collect();
        let files: Vec<String> = keys.iter().filter(|k| k.matches('/').count() == 1).cloned().collect();
        let dirs: Vec<String> =
            files.iter().filter(|k| keys.contains(&format!("{k}/sub/x"))).map(|k| format!("{k}/")).collect();
        for max in [7, 100, 1000] {
            assert_eq!(list(&s, "dir/", None, max).0, all, "recursive, max {max}");
            assert_eq!(
                list(&s, "dir/", Some("/"), max),
                (files.clone(), dirs.clone()),
                "delimited, max {max}"
            );
        }
        // Both ways of finding a directory's children agree on every directory.
        let drive = s.sets[0].drives[0].clone();
        let mut by_count = super::ListDrive { dir: drive.join("bkt"), counts_subdirs: false };
        assert_eq!(s.sets[0].counts_subdirs[0], super::super::drives::counts_subdirs(&drive));
        for k in files.iter().take(120) {
            let rel = super::paths::key_to_relpath(k).unwrap();
            by_count.counts_subdirs = true;
            let counted = super::child_components(std::slice::from_ref(&by_count), &rel);
            by_count.counts_subdirs = false;
            let read = super::child_components(std::slice::from_ref(&by_count), &rel);
            if s.sets[0].counts_subdirs[0] {
                assert_eq!(counted, read, "{k}");
            }
            assert_eq!(read.contains("sub"), keys.contains(&format!("{k}/sub/x")), "{k}");
        }
    }
}
