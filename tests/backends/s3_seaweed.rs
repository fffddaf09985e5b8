//! S3 backend against SeaweedFS's S3 gateway (`weed server -s3`) with an
//! identity configured, so that credentials are really checked: wrong keys
//! give AccessDenied. Also listing continuation over more than 1000 keys,
//! multipart errors, and the multi-range fallback (SeaweedFS answers a
//! multi-range GET with the whole object).

use crate::s3_support;
use bucketfs::backend::ErrorKind;

use bucketfs::backend::s3::{multirange::Support, S3Backend, S3Config};
use bucketfs::backend::*;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use s3_support::*;

async fn fresh(tag: &str) -> (S3Backend, String) {
    let s = seaweed();
    let bucket = unique_bucket(tag);
    make_bucket(&s.endpoint, &bucket).await;
    let b = backend(&s.endpoint, &bucket).await;
    b.check_bucket().await.expect("check_bucket");
    (b, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_access_denied() {
    let (_, bucket) = fresh("auth").await;
    let endpoint = &seaweed().endpoint;
    for profile in ["wrong", "nobody"] {
        let cfg = S3Config { profile: Some(profile.into()), ..config(endpoint, &bucket) };
        let b = S3Backend::connect(cfg).await.unwrap();
        let e = b.check_bucket().await.unwrap_err();
        assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "profile {profile}: {e:?}");
        let msg = e.to_string();
        assert!(!msg.contains("not-the-secret") && !msg.contains(SECRET_KEY), "{msg}");
        let e = b.head("k").await.unwrap_err();
        assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "profile {profile}: {e:?}");
    }
    let anon = S3Config { no_sign_request: true, ..config(endpoint, &bucket) };
    let b = S3Backend::connect(anon).await.unwrap();
    assert!(matches!(b.check_bucket().await, Err(BackendError { kind: ErrorKind::AccessDenied, .. })));
    // The right profile, explicitly.
    let ok = S3Config { profile: Some("default".into()), ..config(endpoint, &bucket) };
    S3Backend::connect(ok).await.unwrap().check_bucket().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_is_no_such_bucket() {
    let s = seaweed();
    let b = backend(&s.endpoint, "bfs-does-not-exist").await;
    let e = b.check_bucket().await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::NoSuchBucket, .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_continues_past_1000_keys() {
    let (b, _) = fresh("many").await;
    let keys: Vec<String> = (0..1100).map(|i| format!("d/{i:05}")).collect();
    let opts = PutOptions::default();
    futures::stream::iter(keys.iter().map(|k| b.put(k, Bytes::from_static(b"x"), &opts)))
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .unwrap();
    b.put("d/sub/inner", Bytes::from_static(b"y"), &PutOptions::default()).await.unwrap();
    let mut seen = Vec::new();
    let mut prefixes = Vec::new();
    let mut pages = 0;
    let mut req = ListRequest { prefix: "d/".into(), delimiter: Some("/".into()), ..Default::default() };
    loop {
        let page = b.list(&req).await.unwrap();
        pages += 1;
        assert!(page.objects.len() + page.common_prefixes.len() <= 1000);
        seen.extend(page.objects.into_iter().map(|o| o.key));
        prefixes.extend(page.common_prefixes);
        match page.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    assert!(pages >= 2, "{pages} pages");
    assert_eq!(seen, keys);
    assert_eq!(prefixes, ["d/sub/"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_multipart_and_multi_range_fallback() {
    let (b, _) = fresh("obj").await;
    let data = Bytes::from(pattern(6 << 20, 9));
    let id = b.create_multipart("m", &PutOptions::default()).await.unwrap();
    let p2 = b.upload_part("m", &id, 2, data.slice(5 << 20..)).await.unwrap();
    let p1 = b.upload_part("m", &id, 1, data.slice(..5 << 20)).await.unwrap();
    let meta = b.complete_multipart("m", &id, &[p2, p1]).await.unwrap();
    assert_eq!(meta.size, 6 << 20);
    assert_eq!(b.head("m").await.unwrap().size, 6 << 20);

    let e = b.upload_part("m", "no-such-upload-id", 1, Bytes::from_static(b"x")).await;
    assert!(
        matches!(
            e,
            Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })
                | Err(BackendError { kind: ErrorKind::NotFound, .. })
        ),
        "{e:?}"
    );

    let ranges = [0..10, 3_000_000..3_000_010, (6 << 20) - 5..(6 << 20) + 5];
    let got = b.get_ranges("m", &ranges, &GetOptions::default()).await.unwrap();
    for (g, r) in got.iter().zip(&ranges) {
        let end = (r.end as usize).min(data.len());
        assert_eq!(g, &data.slice(r.start as usize..end), "{r:?}");
    }
    assert_eq!(b.multi_range_support(), Support::Single);
    assert_ne!(b.capabilities().multi_range, bucketfs::backend::MultiRangeMode::Native);

    let pin = GetOptions { if_match: Some(meta.etag.clone()) };
    assert_eq!(b.get_range("m", Some(0..4), &pin).await.unwrap().data, data.slice(0..4));
    b.put("m", Bytes::from_static(b"replaced"), &PutOptions::default()).await.unwrap();
    let e = b.get_range("m", Some(0..4), &pin).await;
    assert!(matches!(e, Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })), "{e:?}");
}
