//! The GCS and Azure backends against real emulators (fake-gcs-server and
//! Azurite, started by the tests on 127.0.0.1): the same contract checks run
//! on both, through the `StorageBackend` trait only.

use crate::cloud_support;
use crate::s3_support;
use bucketfs::backend::ErrorKind;

use std::collections::BTreeMap;
use std::sync::Arc;

use bucketfs::backend::*;
use bytes::Bytes;
use futures::StreamExt;
use s3_support::{pattern, unique_bucket};

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Gcs,
    Azure,
}

async fn fresh(kind: Kind, tag: &str) -> Arc<dyn StorageBackend> {
    let name = unique_bucket(tag);
    match kind {
        Kind::Gcs => Arc::new(cloud_support::gcs_bucket(&name).await),
        Kind::Azure => Arc::new(cloud_support::azure_container(&name).await),
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap()
}

async fn round_trips(kind: Kind) {
    let b = fresh(kind, "rt").await;
    b.check_bucket().await.unwrap();
    for (i, n) in [0usize, 1, 1000, 3 << 20].into_iter().enumerate() {
        let key = format!("dir/obj-{n}");
        let data = Bytes::from(pattern(n, i as u64));
        let opts = PutOptions {
            content_type: Some("application/x-test".into()),
            user_metadata: BTreeMap::from([
                ("bucketfs-mode".into(), "100644".into()),
                ("plain".into(), "v".into()),
            ]),
            ..Default::default()
        };
        let put = b.put(&key, data.clone(), &opts).await.unwrap();
        let head = b.head(&key).await.unwrap();
        assert_eq!(head.size, n as u64, "{kind:?}");
        assert_eq!(head.etag, put.etag, "{kind:?}: put and head agree on the version");
        if kind == Kind::Azure {
            // google-cloud-storage sends the content type in the metadata part of its
            // upload, where GCS reads it; fake-gcs-server reads only the media part's header.
            assert_eq!(head.content_type.as_deref(), Some("application/x-test"));
        }
        assert_eq!(head.user_metadata.get("bucketfs-mode").map(String::as_str), Some("100644"), "{kind:?}");
        assert_eq!(head.user_metadata.get("plain").map(String::as_str), Some("v"));
        let all = b.get_range(&key, None, &GetOptions::default()).await.unwrap();
        assert!(all.data == data, "{kind:?} {n}");
        if n > 10 {
            let part = b.get_range(&key, Some(3..n as u64 - 2), &GetOptions::default()).await.unwrap();
            assert!(part.data == data.slice(3..n - 2));
            if kind == Kind::Azure {
                // GCS reports the size in x-goog-stored-content-length, which
                // fake-gcs-server leaves out of ranged answers.
                assert_eq!(part.meta.size, n as u64, "{kind:?}: a ranged read knows the object's size");
            }
        }
        // past the end: clamped to nothing
        let past =
            b.get_range(&key, Some(n as u64 + 5..n as u64 + 10), &GetOptions::default()).await.unwrap();
        assert!(past.data.is_empty());
    }
    assert!(b.head("missing").await.unwrap_err().is_not_found());
    assert!(b.get_range("missing", None, &GetOptions::default()).await.unwrap_err().is_not_found());
    b.delete("missing").await.expect("deleting a missing key succeeds");

    // a pinned read of a replaced object fails instead of mixing versions
    let v1 = b.put("pinned", Bytes::from_static(b"version one"), &PutOptions::default()).await.unwrap();
    let pin = GetOptions { if_match: Some(v1.etag.clone()) };
    assert_eq!(&b.get_range("pinned", Some(0..7), &pin).await.unwrap().data[..], b"version");
    b.put("pinned", Bytes::from_static(b"version two!"), &PutOptions::default()).await.unwrap();
    let e = b.get_range("pinned", Some(0..7), &pin).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::PreconditionFailed, .. }), "{kind:?}: {e}");

    // several ranges at once, in request order
    let data = Bytes::from(pattern(1 << 20, 7));
    b.put("sparse", data.clone(), &PutOptions::default()).await.unwrap();
    let ranges = vec![900_000..900_100, 0..10, 500_000..500_001, 10..10, (1 << 20) - 5..(1 << 20)];
    let got = b.get_ranges("sparse", &ranges, &GetOptions::default()).await.unwrap();
    for (r, g) in ranges.iter().zip(&got) {
        assert!(g[..] == data[r.start as usize..r.end as usize], "{kind:?} {r:?}");
    }

    // copy keeps or replaces metadata; delete removes
    let src_opts = PutOptions {
        content_type: Some("text/plain".into()),
        user_metadata: BTreeMap::from([("origin".into(), "src".into())]),
        ..Default::default()
    };
    b.put("src", Bytes::from_static(b"copy me"), &src_opts).await.unwrap();
    let kept = b.copy("src", "dst1", None).await.unwrap();
    assert_eq!(kept.size, 7);
    let h = b.head("dst1").await.unwrap();
    assert_eq!(h.user_metadata.get("origin").map(String::as_str), Some("src"), "{kind:?}");
    if kind == Kind::Azure {
        // (fake-gcs-server drops the content type of uploads: see above)
        assert_eq!(h.content_type.as_deref(), Some("text/plain"));
    }
    let new = PutOptions {
        content_type: Some("text/x-new".into()),
        user_metadata: BTreeMap::from([("bucketfs-mtime".into(), "12".into())]),
        ..Default::default()
    };
    b.copy("src", "dst2", Some(&new)).await.unwrap();
    let h = b.head("dst2").await.unwrap();
    assert_eq!(h.content_type.as_deref(), Some("text/x-new"), "{kind:?}");
    assert_eq!(h.user_metadata.get("bucketfs-mtime").map(String::as_str), Some("12"), "{kind:?}");
    assert_eq!(&b.get_range("dst2", None, &GetOptions::default()).await.unwrap().data[..], b"copy me");
    b.delete("dst1").await.unwrap();
    assert!(b.head("dst1").await.unwrap_err().is_not_found());
    let failed = b.delete_many(&["dst2".into(), "src".into(), "never".into()]).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
}

#[test]
fn gcs_round_trips() {
    rt().block_on(round_trips(Kind::Gcs));
}

#[test]
fn azure_round_trips() {
    rt().block_on(round_trips(Kind::Azure));
}

async fn conditional_writes(kind: Kind) {
    let b = fresh(kind, "cond").await;
    assert!(b.capabilities().conditional_put);
    let create = PutOptions { if_none_match_any: true, ..Default::default() };
    let v1 = b.put("k", Bytes::from_static(b"1"), &create).await.unwrap();
    let e = b.put("k", Bytes::from_static(b"2"), &create).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::PreconditionFailed, .. }), "{kind:?}: {e}");
    let replace = PutOptions { if_match: Some(v1.etag.clone()), ..Default::default() };
    b.put("k", Bytes::from_static(b"3"), &replace).await.unwrap();
    let e = b.put("k", Bytes::from_static(b"4"), &replace).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::PreconditionFailed, .. }), "{kind:?}: {e}");
    assert_eq!(&b.get_range("k", None, &GetOptions::default()).await.unwrap().data[..], b"3");
}

/// `ifGenerationMatch` on uploads (0: must not exist). fake-gcs-server ignores it on
/// reads, which the backend re-checks itself, but honours it on uploads.
#[test]
fn gcs_conditional_writes() {
    rt().block_on(conditional_writes(Kind::Gcs));
}

#[test]
fn azure_conditional_writes() {
    rt().block_on(conditional_writes(Kind::Azure));
}

async fn listings(kind: Kind) {
    let b = fresh(kind, "list").await;
    // 2,000 objects in one "directory", 30 sub-directories, and an upload in flight
    let mut objects: Vec<(String, usize)> = (0..2000).map(|i| (format!("big/f{i:04}"), i % 7)).collect();
    objects.extend((0..30).map(|i| (format!("big/sub{i:02}/x"), 0)));
    let mut puts = Vec::new();
    for (key, len) in objects {
        let b = b.clone();
        puts.push(async move { b.put(&key, Bytes::from(vec![1u8; len]), &PutOptions::default()).await });
    }
    let results: Vec<_> = futures::stream::iter(puts).buffer_unordered(32).collect().await;
    assert!(results.iter().all(|r| r.is_ok()), "{kind:?}");
    let up = b.create_multipart("big/inflight", &PutOptions::default()).await.unwrap();
    b.upload_part("big/inflight", &up, 1, Bytes::from_static(b"part")).await.unwrap();

    let (mut objects, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut req =
        ListRequest { prefix: "big/".into(), delimiter: Some("/".into()), continuation: None, max_keys: 0 };
    loop {
        let page = b.list(&req).await.unwrap();
        pages += 1;
        objects.extend(page.objects.into_iter().map(|o| (o.key, o.size)));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    assert_eq!(objects.len(), 2000, "{kind:?}: every object once");
    assert!(pages >= 2, "{kind:?}: 2,000 entries take more than one page");
    assert!(objects.windows(2).all(|w| w[0].0 < w[1].0), "{kind:?}: in key order");
    assert_eq!(objects[13], ("big/f0013".to_owned(), 6));
    assert_eq!(prefixes.len(), 30);
    assert_eq!(prefixes[0], "big/sub00/");
    // the in-flight upload is invisible, at the root too
    let root = b.list(&ListRequest { delimiter: Some("/".into()), ..Default::default() }).await.unwrap();
    assert_eq!(root.common_prefixes, vec!["big/".to_owned()], "{kind:?}: reserved prefix hidden");
    let all = b.list(&ListRequest { max_keys: 5000, ..Default::default() }).await.unwrap();
    assert!(all.objects.iter().all(|o| !o.key.starts_with(".bucketfs")), "{kind:?}");
    assert!(!all.objects.iter().any(|o| o.key == "big/inflight"));
}

#[test]
fn gcs_listings() {
    rt().block_on(listings(Kind::Gcs));
}

#[test]
fn azure_listings() {
    rt().block_on(listings(Kind::Azure));
}

async fn multipart(kind: Kind, nparts: u32) {
    let b = fresh(kind, "mpu").await;
    let opts = PutOptions {
        content_type: Some("video/x-test".into()),
        user_metadata: BTreeMap::from([("bucketfs-uid".into(), "1000".into())]),
        ..Default::default()
    };
    let part = |n: u32| Bytes::from(pattern(1000 + n as usize, n as u64));
    let id = b.create_multipart("movies/film", &opts).await.unwrap();
    // parts uploaded in reverse order, one of them twice, plus one left out of the list
    let mut done = Vec::new();
    for n in (1..=nparts).rev() {
        done.push(b.upload_part("movies/film", &id, n, part(n)).await.unwrap());
    }
    done.retain(|p| p.part_number != 2);
    done.push(b.upload_part("movies/film", &id, 2, part(2)).await.unwrap());
    b.upload_part("movies/film", &id, nparts + 1, Bytes::from_static(b"not named")).await.unwrap();
    // the stored parts can be listed (what lets an interrupted upload resume)
    let stored = b.list_parts("movies/film", &id).await.unwrap();
    assert_eq!(
        stored.iter().map(|p| p.part_number).collect::<Vec<_>>(),
        (1..=nparts + 1).collect::<Vec<_>>()
    );
    let p2 = done.iter().find(|p| p.part_number == 2).unwrap();
    assert_eq!(&stored[1], p2, "{kind:?}: the re-uploaded part, as its upload returned it");
    // nothing visible yet; the upload is listed under its key's prefix only
    assert!(b.head("movies/film").await.unwrap_err().is_not_found(), "{kind:?}");
    let listed = b.list_multipart("movies/").await.unwrap();
    assert_eq!(listed.len(), 1, "{kind:?}");
    assert_eq!((listed[0].key.as_str(), listed[0].upload_id.as_str()), ("movies/film", id.as_str()));
    assert!(b.list_multipart("other/").await.unwrap().is_empty());
    let meta = b.complete_multipart("movies/film", &id, &done).await.unwrap();
    let want: Vec<u8> = (1..=nparts).flat_map(|n| part(n).to_vec()).collect();
    assert_eq!(meta.size, want.len() as u64, "{kind:?}");
    let got = b.get_range("movies/film", None, &GetOptions::default()).await.unwrap();
    assert!(got.data[..] == want[..], "{kind:?}: parts in number order");
    let h = b.head("movies/film").await.unwrap();
    assert_eq!(h.content_type.as_deref(), Some("video/x-test"));
    assert_eq!(h.user_metadata.get("bucketfs-uid").map(String::as_str), Some("1000"));
    assert!(b.list_multipart("").await.unwrap().is_empty(), "{kind:?}: completed upload is gone");
    let all = b.list(&ListRequest { max_keys: 5000, ..Default::default() }).await.unwrap();
    assert_eq!(all.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), vec!["movies/film"]);

    // abort kills an upload: no more parts, no completion
    let id2 = b.create_multipart("movies/two", &PutOptions::default()).await.unwrap();
    let p = b.upload_part("movies/two", &id2, 1, part(1)).await.unwrap();
    b.abort_multipart("movies/two", &id2).await.unwrap();
    let e = b.upload_part("movies/two", &id2, 2, part(2)).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::NoSuchUpload, .. }), "{kind:?}: {e}");
    let e = b.complete_multipart("movies/two", &id2, &[p]).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::NoSuchUpload, .. }), "{kind:?}: {e}");
    assert!(b.head("movies/two").await.unwrap_err().is_not_found());
    // a part that was never uploaded cannot be completed
    let id3 = b.create_multipart("movies/three", &PutOptions::default()).await.unwrap();
    let ghost = CompletedPart { part_number: 9, etag: "1".into(), size: 3 };
    assert!(b.complete_multipart("movies/three", &id3, &[ghost]).await.is_err(), "{kind:?}");
    // abort under a prefix finds uploads from "another process" (only the ids)
    let id4 = b.create_multipart("movies/four", &PutOptions::default()).await.unwrap();
    b.upload_part("movies/four", &id4, 1, part(1)).await.unwrap();
    let n = b.abort_multipart_under("movies/").await.unwrap();
    assert_eq!(n, 2, "{kind:?}: three and four");
    assert!(b.list_multipart("").await.unwrap().is_empty());
    let all = b.list(&ListRequest { max_keys: 5000, ..Default::default() }).await.unwrap();
    assert_eq!(all.objects.len(), 1, "{kind:?}: {:?}", all.objects);
}

#[test]
fn gcs_multipart() {
    rt().block_on(multipart(Kind::Gcs, 5));
}

/// More parts than one compose request takes (32): composed in rounds.
#[test]
fn gcs_multipart_composes_in_rounds() {
    rt().block_on(multipart(Kind::Gcs, 70));
}

#[test]
fn azure_multipart() {
    rt().block_on(multipart(Kind::Azure, 5));
}

#[test]
fn missing_bucket_or_container_is_reported() {
    rt().block_on(async {
        let g = cloud_support::gcs_backend("no-such-bucket-here").await;
        let e = g.check_bucket().await.unwrap_err();
        assert!(
            matches!(e, ref e if e.kind() == ErrorKind::NoSuchBucket && e.context() == "no-such-bucket-here"),
            "{e}"
        );
        let a = cloud_support::azure_backend("no-such-container");
        let e = a.check_bucket().await.unwrap_err();
        assert!(
            matches!(e, ref e if e.kind() == ErrorKind::NoSuchBucket && e.context() == "no-such-container"),
            "{e}"
        );
    });
}

/// Makes a backend that reaches its server at the given endpoint.
type BackendAt = Box<dyn Fn(String) -> Arc<dyn StorageBackend>>;

/// `get_ranges` on GCS fans out single-range reads in parallel (capability
/// `multi_range`); on Azure it falls back to one range after another.
#[test]
fn gcs_reads_ranges_in_parallel_azure_one_after_another() {
    use bucketfs::backend::azure::{AzureBackend, AzureConfig, AzureRequest};
    use bucketfs::backend::gcs::{GcsBackend, GcsConfig};
    use std::sync::atomic::Ordering;
    rt().block_on(async {
        let data = Bytes::from(pattern(2 << 20, 11));
        let ranges: Vec<_> = (0..6u64).map(|i| i * 300_000..i * 300_000 + 1000).collect();
        for kind in [Kind::Gcs, Kind::Azure] {
            let name = unique_bucket("par");
            let (server, via_relay): (String, BackendAt) = match kind {
                Kind::Gcs => {
                    cloud_support::gcs_bucket(&name).await;
                    let n = name.clone();
                    (
                        cloud_support::fake_gcs().endpoint.clone(),
                        Box::new(move |ep| {
                            let cfg = GcsConfig { bucket: n.clone(), endpoint: Some(ep), anonymous: true };
                            let b = futures::executor::block_on(GcsBackend::connect(cfg)).unwrap();
                            Arc::new(b) as Arc<dyn StorageBackend>
                        }),
                    )
                }
                Kind::Azure => {
                    cloud_support::azure_container(&name).await;
                    let n = name.clone();
                    (
                        cloud_support::azurite().endpoint.clone(),
                        Box::new(move |ep| {
                            let req = AzureRequest {
                                container: n.clone(),
                                account: Some(cloud_support::AZ_ACCOUNT.into()),
                                endpoint: Some(ep),
                                anonymous: false,
                                dfs: false,
                            };
                            Arc::new(AzureBackend::new(AzureConfig::resolve(&req).unwrap()).unwrap())
                                as Arc<dyn StorageBackend>
                        }),
                    )
                }
            };
            let direct = fresh_named(kind, &name);
            direct.put("f", data.clone(), &PutOptions::default()).await.unwrap();
            let hostport = server.trim_start_matches("http://").split('/').next().unwrap().to_owned();
            let path = server.trim_start_matches("http://").split_once('/').map(|(_, p)| format!("/{p}"));
            let (port, held) = s3_support::counting_relay(hostport).await;
            let b = via_relay(format!("http://127.0.0.1:{port}{}", path.unwrap_or_default()));
            let got = b.get_ranges("f", &ranges, &GetOptions::default()).await.unwrap();
            for (r, g) in ranges.iter().zip(&got) {
                assert!(g[..] == data[r.start as usize..r.end as usize], "{kind:?} {r:?}");
            }
            let n = held.load(Ordering::SeqCst);
            match kind {
                Kind::Gcs => {
                    assert_eq!(
                        b.capabilities().multi_range,
                        bucketfs::backend::MultiRangeMode::ParallelSingles
                    );
                    assert!(
                        n > 1,
                        "GCS: at most {n} request(s) in flight at once for 6 ranges: not parallel"
                    );
                }
                Kind::Azure => {
                    // the read path fans batches out itself (ParallelSingles); a direct
                    // get_ranges call is the trait's loop
                    assert_eq!(
                        b.capabilities().multi_range,
                        bucketfs::backend::MultiRangeMode::ParallelSingles
                    );
                    assert_eq!(n, 1, "Azure: ranges are read one after another, one request at a time");
                }
            }
        }
    });
}

fn fresh_named(kind: Kind, name: &str) -> Arc<dyn StorageBackend> {
    match kind {
        Kind::Gcs => Arc::new(futures::executor::block_on(cloud_support::gcs_backend(name))),
        Kind::Azure => Arc::new(cloud_support::azure_backend(name)),
    }
}

/// An endpoint nobody listens on: a clear `Unavailable` naming it, after the
/// retries that `bucketfs stats` counts.
#[test]
fn unreachable_endpoints_fail_after_counted_retries() {
    use bucketfs::backend::azure::{AzureBackend, AzureConfig, AzureRequest};
    use bucketfs::backend::gcs::{GcsBackend, GcsConfig};
    rt().block_on(async {
        cloud_support::hermetic_env();
        let port = s3_support::free_port(); // bound and released: nothing listens there
        let ep = format!("http://127.0.0.1:{port}");
        let gcs = GcsBackend::connect(GcsConfig {
            bucket: "b".into(),
            endpoint: Some(ep.clone()),
            anonymous: true,
        })
        .await
        .unwrap();
        let req = AzureRequest {
            container: "c".into(),
            account: Some(cloud_support::AZ_ACCOUNT.into()),
            endpoint: Some(format!("{ep}/{}", cloud_support::AZ_ACCOUNT)),
            anonymous: false,
            dfs: false,
        };
        let azure = AzureBackend::new(AzureConfig::resolve(&req).unwrap()).unwrap();
        let backends: [&dyn StorageBackend; 2] = [&gcs, &azure];
        for b in backends {
            let e = b.check_bucket().await.unwrap_err();
            assert!(matches!(e, BackendError { kind: ErrorKind::Unavailable, .. }), "{e}");
            assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
            assert!(b.retries() >= 1, "{}: retries not counted", b.capabilities().name);
        }
    });
}
