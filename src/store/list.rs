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
    bucket: &'a str,
    prefix: &'a str,
    delimiter: Option<&'a str>,
    marker: Marker,
    max: usize,
    slots: Vec<usize>,
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
            bucket,
            prefix: &req.prefix,
            delimiter: req.delimiter.as_deref(),
            marker,
            max: if req.max_keys == 0 { 1000 } else { req.max_keys },
            slots: self.list_slots(bucket),
            page: ListPage::default(),
            last_token: None,
            done: false,
        };
        let (comps, partial) = paths::split_prefix(&req.prefix);
        let Some(rel) = paths::components_to_relpath(&comps) else { return Ok(w.page) };
        let dir_key = &req.prefix[..req.prefix.len() - partial.len()];
        self.walk_level(&mut w, &rel, dir_key, partial)?;
        Ok(w.page)
    }

    /// Union of the key components below `rel` on the listing drives.
    fn child_components(&self, slots: &[usize], bucket: &str, rel: &Path) -> BTreeSet<String> {
        let mut set = BTreeSet::new();
        for &s in slots {
            let Ok(rd) = fs::read_dir(self.drives[s].join(bucket).join(rel)) else { continue };
            for e in rd.flatten() {
                if let Some(c) = e.file_name().to_str().and_then(paths::unescape_component) {
                    set.insert(c);
                }
            }
        }
        set
    }

    fn read_list_meta(&self, slots: &[usize], bucket: &str, rel: &Path) -> Option<meta::ObjMeta> {
        slots.iter().find_map(|&s| {
            let p = self.drives[s].join(bucket).join(rel).join(META_FILE);
            meta::read(&p, false).ok()?.ok().map(|(m, _)| m)
        })
    }

    /// Whether the subtree at `rel` holds at least one object (depth-first, stops early).
    fn subtree_has_object(&self, slots: &[usize], bucket: &str, rel: &Path) -> bool {
        for c in self.child_components(slots, bucket, rel) {
            let child: PathBuf = rel.join(paths::escape_component(&c));
            if slots.iter().any(|&s| self.drives[s].join(bucket).join(&child).join(META_FILE).exists())
                || self.subtree_has_object(slots, bucket, &child)
            {
                return true;
            }
        }
        false
    }

    fn walk_level(&self, w: &mut Walk, rel: &Path, dir_key: &str, filter: &str) -> StoreResult<()> {
        let children = self.child_components(&w.slots, w.bucket, rel);
        // (sort key, is_subtree, component)
        let mut entries: Vec<(String, bool, String)> = Vec::with_capacity(children.len() * 2);
        for c in children.into_iter().filter(|c| c.starts_with(filter)) {
            entries.push((format!("{dir_key}{c}"), false, c.clone()));
            entries.push((format!("{dir_key}{c}/"), true, c));
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        for (key, subtree, c) in entries {
            if w.done {
                return Ok(());
            }
            let child = rel.join(paths::escape_component(&c));
            if !subtree {
                if w.before_marker(&key) {
                    continue;
                }
                let Some(m) = self.read_list_meta(&w.slots, w.bucket, &child) else { continue };
                if let Some(cp) = w.rollup(&key) {
                    if !w.push_prefix(cp) {
                        return Ok(());
                    }
                    continue;
                }
                if w.full() {
                    return Ok(());
                }
                w.last_token = Some(format!("o{key}"));
                w.page.objects.push(info(&key, &m));
            } else {
                if w.subtree_before_marker(&key) {
                    continue;
                }
                match w.rollup(&key) {
                    Some(cp) if cp.len() <= key.len() => {
                        if w.page.common_prefixes.last() == Some(&cp) {
                            continue;
                        }
                        if self.subtree_has_object(&w.slots, w.bucket, &child) && !w.push_prefix(cp) {
                            return Ok(());
                        }
                    }
                    _ => self.walk_level(w, &child, &key, "")?,
                }
            }
        }
        Ok(())
    }
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
}
