//! Capability flags of every backend (embedded store, S3, GCS, Azure Blob, Azure
//! Data Lake) in one table, each row checked against a live backend, and the flags that promise
//! behaviour (listing metadata, multi-range reads, parts of an open upload read
//! back) shown to hold.

use crate::cloud_support;
use crate::s3_support;
use bucketfs::backend::ErrorKind;

use std::collections::BTreeMap;
use std::sync::Arc;

use bucketfs::backend::local::LocalBackend;
use bucketfs::backend::*;
use bucketfs::store::{Store, StoreConfig};
use bytes::Bytes;

const MIB: u64 = 1024 * 1024;

struct Row {
    name: &'static str,
    multi_range: MultiRangeMode,
    parallel_multipart: bool,
    min_part_size: u64,
    max_part_size: u64,
    max_parts: u32,
    rename: bool,
    native_dirs: bool,
    conditional_put: bool,
    list_metadata: bool,
    readable_upload_parts: bool,
}

const TABLE: &[Row] = &[
    Row {
        name: "local",
        multi_range: MultiRangeMode::Native,
        parallel_multipart: true,
        min_part_size: 5 * MIB,
        max_part_size: 5 * 1024 * MIB,
        max_parts: 10_000,
        rename: false,
        native_dirs: false,
        conditional_put: true,
        list_metadata: true,
        readable_upload_parts: true,
    },
    // multi_range is Probe until the server has answered one multipart/byteranges request.
    Row {
        name: "s3",
        multi_range: MultiRangeMode::Probe,
        parallel_multipart: true,
        min_part_size: 5 * MIB,
        max_part_size: 5 * 1024 * MIB,
        max_parts: 10_000,
        rename: false,
        native_dirs: false,
        conditional_put: true,
        list_metadata: false,
        readable_upload_parts: false,
    },
    // one range per request, fanned out in parallel; 1024 = compose's component limit
    Row {
        name: "gcs",
        multi_range: MultiRangeMode::ParallelSingles,
        parallel_multipart: true,
        min_part_size: 5 * MIB,
        max_part_size: 5 * 1024 * MIB,
        max_parts: 1024,
        rename: false,
        native_dirs: false,
        conditional_put: true,
        list_metadata: true,
        readable_upload_parts: true,
    },
    // 50,000 blocks of at most 4000 MiB; one range per request, no fan-out
    Row {
        name: "azure",
        multi_range: MultiRangeMode::ParallelSingles,
        parallel_multipart: true,
        min_part_size: 5 * MIB,
        max_part_size: 4000 * MIB,
        max_parts: 50_000,
        rename: false,
        native_dirs: false,
        conditional_put: true,
        list_metadata: true,
        readable_upload_parts: false,
    },
    // Data Lake Storage Gen2: one rename request per file or directory, real
    // directories; appends in order (positions), no properties in listings
    Row {
        name: "abfs",
        multi_range: MultiRangeMode::ParallelSingles,
        parallel_multipart: false,
        min_part_size: 4 * MIB,
        max_part_size: 4000 * MIB,
        max_parts: 50_000,
        rename: true,
        native_dirs: true,
        conditional_put: true,
        list_metadata: false,
        readable_upload_parts: false,
    },
];

async fn backend(name: &str, dir: &std::path::Path) -> Arc<dyn StorageBackend> {
    let bucket = s3_support::unique_bucket("caps");
    match name {
        "local" => {
            let drives = (0..4).map(|i| dir.join(format!("d{i}"))).collect();
            let store = Store::open(StoreConfig { drives, parity: None }).unwrap();
            store.make_bucket(&bucket).unwrap();
            Arc::new(LocalBackend::new(store, &bucket))
        }
        "s3" => {
            let server = s3_support::moto();
            s3_support::make_bucket(&server.endpoint, &bucket).await;
            Arc::new(s3_support::backend(&server.endpoint, &bucket).await)
        }
        "gcs" => Arc::new(cloud_support::gcs_bucket(&bucket).await),
        "azure" => Arc::new(cloud_support::azure_container(&bucket).await),
        "abfs" => {
            // the server lives as long as the test process
            let server: &'static _ = Box::leak(Box::new(cloud_support::dfs::DfsServer::start()));
            Arc::new(cloud_support::abfs_filesystem(server, &bucket).await)
        }
        other => panic!("no backend {other}"),
    }
}

#[test]
fn every_backend_reports_its_capabilities_truthfully() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    for row in TABLE {
        rt.block_on(async {
            let b = backend(row.name, dir.path()).await;
            b.check_bucket().await.unwrap();
            let c = b.capabilities();
            let n = row.name;
            assert_eq!(c.name, n);
            assert_eq!(c.multi_range, row.multi_range, "{n}: multi_range");
            assert_eq!(c.parallel_multipart, row.parallel_multipart, "{n}: parallel_multipart");
            assert_eq!(c.min_part_size, row.min_part_size, "{n}: min_part_size");
            assert_eq!(c.max_part_size, row.max_part_size, "{n}: max_part_size");
            assert_eq!(c.max_parts, row.max_parts, "{n}: max_parts");
            assert_eq!(c.rename, row.rename, "{n}: rename");
            assert_eq!(c.native_dirs, row.native_dirs, "{n}: native_dirs");
            assert_eq!(c.conditional_put, row.conditional_put, "{n}: conditional_put");
            assert_eq!(c.list_metadata, row.list_metadata, "{n}: list_metadata");
            assert_eq!(c.readable_upload_parts, row.readable_upload_parts, "{n}: readable_upload_parts");

            // readable_upload_parts: a part of an open upload reads back, at its ETag only
            let id = b.create_multipart("mp", &PutOptions::default()).await.unwrap();
            let part = Bytes::from(s3_support::pattern(100_000, 6));
            let p1 = b.upload_part("mp", &id, 1, part.clone()).await.unwrap();
            let read = b.read_part("mp", &id, &p1).await;
            if c.readable_upload_parts {
                assert!(read.unwrap() == part, "{n}: read_part");
                let p1b = b.upload_part("mp", &id, 1, Bytes::from_static(b"resent")).await.unwrap();
                assert!(b.read_part("mp", &id, &p1).await.is_err(), "{n}: a re-sent part's old ETag");
                assert_eq!(&b.read_part("mp", &id, &p1b).await.unwrap()[..], b"resent", "{n}");
            } else {
                assert!(
                    matches!(read, Err(BackendError { kind: ErrorKind::NotSupported, .. })),
                    "{n}: {read:?}"
                );
            }
            b.abort_multipart("mp", &id).await.unwrap();

            // list_metadata: listings carry content type and user metadata
            let opts = PutOptions {
                content_type: Some("text/x-caps".into()),
                user_metadata: BTreeMap::from([("bucketfs-mode".into(), "100600".into())]),
                ..Default::default()
            };
            let data = Bytes::from(s3_support::pattern(300_000, 5));
            b.put("d/f", data.clone(), &opts).await.unwrap();
            let page = b.list(&ListRequest { prefix: "d/".into(), ..Default::default() }).await.unwrap();
            assert_eq!(page.objects.len(), 1, "{n}");
            if c.list_metadata {
                let o = &page.objects[0];
                if n != "gcs" {
                    // fake-gcs-server drops the content type google-cloud-storage sends
                    // (in the upload's metadata part, where GCS reads it)
                    assert_eq!(o.content_type.as_deref(), Some("text/x-caps"), "{n}");
                }
                assert_eq!(o.user_metadata.get("bucketfs-mode").map(String::as_str), Some("100600"), "{n}");
            }
            // whatever multi_range says, get_ranges returns the right bytes in order
            let ranges = [200_000..200_010, 5..9, 299_990..300_000];
            let got = b.get_ranges("d/f", &ranges, &GetOptions::default()).await.unwrap();
            for (r, g) in ranges.iter().zip(&got) {
                assert!(g[..] == data[r.start as usize..r.end as usize], "{n}: {r:?}");
            }
            // the largest object the flags promise fits the part arithmetic the upload path uses
            assert!(
                c.max_part_size as u128 * c.max_parts as u128 >= 5 * 1024 * 1024 * 1024 * 1024,
                "{n}: 5 TiB"
            );
        });
    }
}
