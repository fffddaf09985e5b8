use std::sync::atomic::Ordering;

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::metered::MeteredBackend;
use crate::metrics::Metrics;
use crate::object::ErrorKind;

const NAMES: &[&str] = &["bucketfs-type", "bucketfs-mode", "bucketfs-uid", "bucketfs-gid", "bucketfs-mtime"];

struct Fixture {
    /// The store as another client sees it (no index logic).
    raw: Arc<MemoryBackend>,
    metrics: Arc<Metrics>,
    b: Arc<dyn StorageBackend>,
}

fn fixture() -> Fixture {
    let raw = Arc::new(MemoryBackend::new());
    // as in S3: listings carry no user metadata, so only the index can tell
    raw.bare_listings.store(true, Ordering::Relaxed);
    let metrics = Arc::new(Metrics::default());
    let metered = MeteredBackend::wrap(raw.clone(), metrics.clone());
    let b = AttrIndexBackend::wrap_if_needed(metered, NAMES);
    Fixture { raw, metrics, b }
}

fn md(pairs: &[(&str, &str)]) -> PutOptions {
    PutOptions {
        user_metadata: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

fn dir_list(prefix: &str) -> ListRequest {
    ListRequest { prefix: prefix.into(), delimiter: Some("/".into()), ..Default::default() }
}

async fn raw_keys(raw: &MemoryBackend, prefix: &str) -> Vec<String> {
    let req = ListRequest { prefix: prefix.into(), ..Default::default() };
    raw.list(&req).await.unwrap().objects.into_iter().map(|o| o.key).collect()
}

#[tokio::test]
async fn marked_objects_reach_listings_through_the_index() {
    let f = fixture();
    assert!(f.b.capabilities().list_attrs && !f.b.capabilities().list_metadata);
    f.b.put("d/ln", Bytes::from_static(b"target"), &md(&[("bucketfs-type", "symlink")])).await.unwrap();
    f.b.put("d/plain", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap();
    let index = raw_keys(&f.raw, "d/.bucketfs-attrs/").await;
    assert_eq!(index.len(), 1, "one index entry, for the marked object only: {index:?}");
    assert!(index[0].ends_with("/type=symlink"), "{index:?}");
    let page = f.b.list(&dir_list("d/")).await.unwrap();
    let names: Vec<&str> = page.objects.iter().map(|o| o.key.as_str()).collect();
    assert_eq!(names, ["d/ln", "d/plain"]);
    assert!(page.common_prefixes.is_empty(), "the index is hidden: {:?}", page.common_prefixes);
    assert_eq!(page.objects[0].user_metadata.get("bucketfs-type").map(String::as_str), Some("symlink"));
    assert!(page.objects[1].user_metadata.is_empty());
    // the index cannot be looked up or listed as a directory
    assert!(f.b.head(&index[0]).await.unwrap_err().is_not_found());
    let inside = f.b.list(&dir_list("d/.bucketfs-attrs/")).await.unwrap();
    assert!(inside.objects.is_empty() && inside.common_prefixes.is_empty());
}

#[tokio::test]
async fn a_listing_costs_one_more_request_per_directory_not_per_entry() {
    let f = fixture();
    for i in 0..50 {
        let opts = md(&[("bucketfs-mode", "600"), ("bucketfs-uid", "7")]);
        f.b.put(&format!("d/f{i:03}"), Bytes::from(vec![i as u8]), &opts).await.unwrap();
    }
    let before = f.metrics.requests_list.load(Ordering::Relaxed);
    let mut req = dir_list("d/");
    req.max_keys = 20;
    let mut seen = 0;
    loop {
        let page = f.b.list(&req).await.unwrap();
        for o in &page.objects {
            assert_eq!(o.user_metadata.get("bucketfs-mode").map(String::as_str), Some("600"), "{}", o.key);
        }
        seen += page.objects.len();
        match page.next_continuation {
            Some(c) => req.continuation = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, 50);
    let lists = f.metrics.requests_list.load(Ordering::Relaxed) - before;
    assert_eq!(lists, 3 + 1, "three pages and one index read (reused by the later pages)");
    assert_eq!(f.metrics.requests_head.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn stale_entries_are_ignored_and_cleaned_up() {
    let f = fixture();
    let sym = md(&[("bucketfs-type", "symlink")]);
    f.b.put("ln", Bytes::from_static(b"a"), &sym).await.unwrap();
    // replaced by another client with other bytes: the entry no longer matches
    f.raw.put("ln", Bytes::from_static(b"other"), &PutOptions::default()).await.unwrap();
    let page = f.b.list(&dir_list("")).await.unwrap();
    assert_eq!(page.objects.len(), 1);
    assert!(page.objects[0].user_metadata.is_empty(), "a stale entry must not apply");
    // rewritten here without attributes: the entries this mount knows are removed
    f.b.put("ln", Bytes::from_static(b"a"), &PutOptions::default()).await.unwrap();
    assert!(raw_keys(&f.raw, ".bucketfs-attrs/").await.is_empty());
    let page = f.b.list(&dir_list("")).await.unwrap();
    assert!(page.objects[0].user_metadata.is_empty(), "same bytes, but no longer a symlink");
    // a delete takes the object's entries along; a directory marker its whole index
    f.b.put("d/x", Bytes::from_static(b"a"), &sym).await.unwrap();
    f.b.delete("d/x").await.unwrap();
    assert!(raw_keys(&f.raw, "d/").await.is_empty());
    f.b.put("e/", Bytes::new(), &PutOptions::default()).await.unwrap();
    f.raw.put("e/.bucketfs-attrs/y/0/type=symlink", Bytes::new(), &PutOptions::default()).await.unwrap();
    f.b.delete("e/").await.unwrap();
    assert!(raw_keys(&f.raw, "e/").await.is_empty(), "an emptied directory must not live on as its index");
}

#[tokio::test]
async fn a_page_emptied_by_hiding_the_index_is_not_the_end() {
    let f = fixture();
    f.b.put("d/ln", Bytes::from_static(b"t"), &md(&[("bucketfs-type", "symlink")])).await.unwrap();
    // the index prefix sorts first (`.`), and takes a one-key page of its own
    f.b.put("d/z", Bytes::from_static(b"z"), &PutOptions::default()).await.unwrap();
    let mut req = dir_list("d/");
    req.max_keys = 1;
    let mut names = Vec::new();
    loop {
        let page = f.b.list(&req).await.unwrap();
        assert!(!page.objects.is_empty() || page.next_continuation.is_none(), "empty page before the end");
        names.extend(page.objects.into_iter().map(|o| o.key));
        match page.next_continuation {
            Some(c) => req.continuation = Some(c),
            None => break,
        }
    }
    assert_eq!(names, ["d/ln", "d/z"]);
}

#[tokio::test]
async fn renames_and_multipart_uploads_keep_the_attributes() {
    let f = fixture();
    let opts = md(&[("bucketfs-mode", "755")]);
    f.b.put("a", Bytes::from_static(b"x"), &opts).await.unwrap();
    f.b.list(&dir_list("")).await.unwrap(); // learns a's attributes, as `ls` before `mv` would
    f.b.copy("a", "b", None).await.unwrap();
    f.b.delete("a").await.unwrap();
    let id = f.b.create_multipart("c", &opts).await.unwrap();
    let part = f.b.upload_part("c", &id, 1, Bytes::from_static(b"y")).await.unwrap();
    f.b.complete_multipart("c", &id, &[part]).await.unwrap();
    let page = f.b.list(&dir_list("")).await.unwrap();
    let modes: Vec<(&str, Option<&str>)> = page
        .objects
        .iter()
        .map(|o| (o.key.as_str(), o.user_metadata.get("bucketfs-mode").map(String::as_str)))
        .collect();
    assert_eq!(modes, [("b", Some("755")), ("c", Some("755"))]);
}

#[tokio::test]
async fn index_names_are_reserved() {
    let f = fixture();
    for key in [".bucketfs-attrs/", "d/.bucketfs-attrs/", "d/.bucketfs-attrs/x/1/type=symlink"] {
        let err = f.b.put(key, Bytes::new(), &PutOptions::default()).await.unwrap_err();
        assert!(matches!(err, BackendError { kind: ErrorKind::InvalidKey, .. }), "{key}: {err}");
    }
    // a file of that name is only a name
    f.b.put(".bucketfs-attrs", Bytes::new(), &PutOptions::default()).await.unwrap();
}

#[test]
fn attributes_round_trip_through_keys() {
    let raw = Arc::new(MemoryBackend::new());
    let b = AttrIndexBackend {
        inner: raw,
        names: NAMES,
        known: Mutex::new(crate::memory::growing_lru(4)),
        indexes: Mutex::default(),
        uploads: Mutex::default(),
    };
    let mut m = BTreeMap::new();
    m.insert("bucketfs-type".to_string(), "a/b,c=d%e f\u{e9}".to_string());
    m.insert("bucketfs-mtime".to_string(), "1700000000.123456789".to_string());
    m.insert("other".to_string(), "not indexed".to_string());
    let enc = b.encode_attrs(&m);
    assert!(!enc.contains('/'), "{enc}");
    let back = b.decode_attrs(&enc).unwrap();
    assert_eq!(back.len(), 2);
    assert_eq!(back["bucketfs-type"], m["bucketfs-type"]);
    assert!(b.decode_attrs("evil=1").is_none(), "only indexed names are accepted");
    assert!(b.decode_attrs("type=%G1").is_none());
    assert_eq!(escape("9a/b+c"), "9a%2Fb+c");
    assert!(is_index_key("d/.bucketfs-attrs/x") && !is_index_key("d/.bucketfs-attrs") && !is_index_key("x"));
}
