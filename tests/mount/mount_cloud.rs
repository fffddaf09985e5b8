//! Real FUSE mounts of gs:// and wasb:// against fake-gcs-server and Azurite
//! (started by the tests on 127.0.0.1): round trips from 0 B to 100 MiB
//! (multipart writes), a 2,000-entry listing, rename, delete, and mount-time
//! errors for bad input.

use crate::cloud_support;
use crate::common;
use crate::s3_support;

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};

use bucketfs::backend::{PutOptions, StorageBackend};
use bytes::Bytes;
use common::*;
use futures::StreamExt;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Gcs,
    Azure,
}

/// A fresh bucket/container; returns (source, extra flags).
fn fresh(kind: Kind, tag: &str) -> (String, Vec<String>) {
    let name = s3_support::unique_bucket(tag);
    let rt = tokio::runtime::Runtime::new().unwrap();
    match kind {
        Kind::Gcs => {
            rt.block_on(cloud_support::gcs_bucket(&name));
            (format!("gs://{name}"), vec!["--endpoint".into(), cloud_support::fake_gcs().endpoint.clone()])
        }
        Kind::Azure => {
            rt.block_on(cloud_support::azure_container(&name));
            (format!("wasb://{name}"), vec!["--endpoint".into(), cloud_support::azurite().endpoint.clone()])
        }
    }
}

fn mount(source: &str, extra: &[String]) -> Mount {
    let extra: Vec<&str> = extra.iter().map(String::as_str).collect();
    Mount::try_start_source(source, &extra).unwrap_or_else(|e| panic!("{e}"))
}

fn files_round_trip(kind: Kind) {
    let (source, extra) = fresh(kind, "fuse");
    let mut m = mount(&source, &extra);
    let big = pattern(100 << 20, 3); // 100 MiB: a multipart upload of many parts
    let sizes: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("one", vec![7u8]),
        ("mid", pattern(1 << 20, 1)),
        ("seven", pattern((7 << 20) + 13, 2)),
        ("big", big.clone()),
    ];
    for (name, data) in &sizes {
        fs::write(m.path(name), data).unwrap();
        assert!(fs::read(m.path(name)).unwrap() == *data, "{kind:?} {name}");
    }
    // sparse reads of the big file
    let mut f = fs::File::open(m.path("big")).unwrap();
    for off in [0u64, 33 << 20, (100 << 20) - 4096] {
        let mut buf = vec![0u8; 4096];
        f.seek(SeekFrom::Start(off)).unwrap();
        f.read_exact(&mut buf).unwrap();
        assert!(buf[..] == big[off as usize..off as usize + 4096], "{kind:?} at {off}");
    }
    drop(f);
    fs::create_dir_all(m.path("d/e")).unwrap();
    for i in 0..20 {
        fs::write(m.path(&format!("d/e/f{i}")), format!("{i}")).unwrap();
    }
    sh(&format!("mv {} {}", m.path("d").display(), m.path("moved").display()));
    assert_eq!(fs::read_dir(m.path("moved/e")).unwrap().count(), 20);
    assert_eq!(fs::read(m.path("moved/e/f7")).unwrap(), b"7");
    fs::rename(m.path("mid"), m.path("mid2")).unwrap();
    // a write into the middle of an existing object
    let mut f = fs::OpenOptions::new().write(true).open(m.path("seven")).unwrap();
    f.seek(SeekFrom::Start(5 << 20)).unwrap();
    f.write_all(b"patched").unwrap();
    drop(f);
    fs::remove_file(m.path("one")).unwrap();
    assert!(m.stop(), "{kind:?}: clean stop");

    // a fresh mount sees exactly what was committed
    let m2 = mount(&source, &extra);
    assert!(fs::read(m2.path("big")).unwrap() == big, "{kind:?}: 100 MiB after remount");
    let mut want = sizes[3].1.clone();
    want[5 << 20..(5 << 20) + 7].copy_from_slice(b"patched");
    assert!(fs::read(m2.path("seven")).unwrap() == want);
    assert!(fs::read(m2.path("mid2")).unwrap() == sizes[2].1);
    assert_eq!(fs::read(m2.path("empty")).unwrap().len(), 0);
    let mut names: Vec<String> = fs::read_dir(&m2.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "empty", "mid2", "moved", "seven"], "{kind:?}: no leftovers, no upload state");
    assert_eq!(fs::read_dir(m2.path("moved/e")).unwrap().count(), 20);
}

#[test]
fn gcs_files_round_trip() {
    files_round_trip(Kind::Gcs);
}

#[test]
fn azure_files_round_trip() {
    files_round_trip(Kind::Azure);
}

fn listing_of_2000(kind: Kind) {
    let (source, extra) = fresh(kind, "ls");
    let name = source.split("://").nth(1).unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b: std::sync::Arc<dyn StorageBackend> = match kind {
            Kind::Gcs => std::sync::Arc::new(cloud_support::gcs_backend(&name).await),
            Kind::Azure => std::sync::Arc::new(cloud_support::azure_backend(&name)),
        };
        let mut puts = Vec::new();
        for i in 0..2000 {
            let b = b.clone();
            puts.push(async move {
                b.put(&format!("many/f{i:04}"), Bytes::from(format!("{i}")), &PutOptions::default()).await
            });
        }
        let res: Vec<_> = futures::stream::iter(puts).buffer_unordered(32).collect().await;
        assert!(res.iter().all(|r| r.is_ok()));
    });
    let m = mount(&source, &extra);
    let n = fs::read_dir(m.path("many")).unwrap().count();
    assert_eq!(n, 2000, "{kind:?}");
    assert_eq!(fs::read(m.path("many/f1999")).unwrap(), b"1999");
    // delete through the mount
    // an implicit directory (no marker object) vanishes with its last file, so -f
    sh(&format!("rm -rf {}", m.path("many").display()));
    assert!(!m.path("many").exists());
    assert_eq!(fs::read_dir(&m.mnt).unwrap().count(), 0, "{kind:?}");
}

#[test]
fn gcs_listing_of_2000_entries() {
    listing_of_2000(Kind::Gcs);
}

#[test]
fn azure_listing_of_2000_entries() {
    listing_of_2000(Kind::Azure);
}

fn mountpoint() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let s = mnt.to_str().unwrap().to_owned();
    (tmp, s)
}

#[test]
fn gcs_bad_input_fails_at_mount_time() {
    let server = cloud_support::fake_gcs();
    let (_tmp, m) = mountpoint();
    let (code, err, took) = run_bucketfs(&["--endpoint", &server.endpoint, "gs://no-such-bucket-here", &m]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-bucket-here") && err.to_lowercase().contains("bucket"), "{err}");
    assert!(took.as_secs() < 10, "{took:?}");
    // a credentials file that is not there
    let (source, _) = fresh(Kind::Gcs, "creds");
    let (code, err, _) = run_bucketfs_env(
        &["--endpoint", &server.endpoint, &source, &m],
        &[("GOOGLE_APPLICATION_CREDENTIALS", Some("/nonexistent/sa.json"))],
    );
    assert_ne!(code, 0);
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS") && err.contains("/nonexistent/sa.json"), "{err}");
    assert!(!is_mounted(std::path::Path::new(&m)));
}

#[test]
fn azure_bad_input_fails_at_mount_time() {
    let server = cloud_support::azurite();
    let (_tmp, m) = mountpoint();
    let ep = server.endpoint.as_str();
    let (code, err, took) = run_bucketfs(&["--endpoint", ep, "wasb://no-such-container", &m]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-container") && err.to_lowercase().contains("bucket"), "{err}");
    assert!(took.as_secs() < 10, "{took:?}");
    let (source, _) = fresh(Kind::Azure, "creds");
    // no credentials at all
    let (code, err, _) = run_bucketfs_env(&["--endpoint", ep, &source, &m], &[("AZURE_STORAGE_KEY", None)]);
    assert_ne!(code, 0);
    assert!(err.contains("no Azure credentials") && err.contains("AZURE_STORAGE_KEY"), "{err}");
    // no account
    let (code, err, _) =
        run_bucketfs_env(&["--endpoint", ep, &source, &m], &[("AZURE_STORAGE_ACCOUNT", None)]);
    assert_ne!(code, 0);
    assert!(err.contains("no Azure storage account"), "{err}");
    // a wrong key is refused by the server at mount time, and never printed
    let wrong = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk=";
    let (code, err, _) =
        run_bucketfs_env(&["--endpoint", ep, &source, &m], &[("AZURE_STORAGE_KEY", Some(wrong))]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("denied"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(cloud_support::AZ_KEY), "{err}");
    // a wrong account (the URL form names it)
    let container = source.trim_start_matches("wasb://");
    let (code, err, _) = run_bucketfs(&[
        "--endpoint",
        ep,
        &format!("wasb://{container}@nosuchaccount.blob.core.windows.net"),
        &m,
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("nosuchaccount") || err.to_lowercase().contains("denied"), "{err}");
    assert!(!is_mounted(std::path::Path::new(&m)));
}

/// A writer that died mid-upload leaves an upload behind (temporary parts on GCS,
/// uncommitted blocks on Azure, plus the marker); the next mount aborts it.
fn interrupted_uploads_are_cleaned_up(kind: Kind) {
    let (source, extra) = fresh(kind, "stale");
    let name = source.split("://").nth(1).unwrap().to_owned();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(async {
        let b: std::sync::Arc<dyn StorageBackend> = match kind {
            Kind::Gcs => std::sync::Arc::new(cloud_support::gcs_backend(&name).await),
            Kind::Azure => std::sync::Arc::new(cloud_support::azure_backend(&name)),
        };
        let id = b.create_multipart("crashed/file", &PutOptions::default()).await.unwrap();
        b.upload_part("crashed/file", &id, 1, Bytes::from(pattern(1 << 20, 4))).await.unwrap();
        assert_eq!(b.list_multipart("").await.unwrap().len(), 1);
        b
    });
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut extra = extra.clone();
    extra.extend(["--stale-upload-age".to_owned(), "1s".to_owned()]);
    let m = mount(&source, &extra);
    let t0 = std::time::Instant::now();
    while !rt.block_on(backend.list_multipart("")).unwrap().is_empty() {
        assert!(t0.elapsed().as_secs() < 20, "{kind:?}: stale upload still listed: {}", m.log_text());
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(!m.path("crashed").exists(), "{kind:?}: the unfinished file never appeared");
    if let Kind::Gcs = kind {
        // no temporary part objects left either
        let gcs = rt.block_on(cloud_support::gcs_backend(&name));
        let left = rt.block_on(gcs.list_raw_for_tests(".bucketfs-multipart/")).unwrap();
        assert!(left.is_empty(), "temporary parts left behind: {left:?}");
    }
}

#[test]
fn gcs_interrupted_uploads_are_cleaned_up() {
    interrupted_uploads_are_cleaned_up(Kind::Gcs);
}

#[test]
fn azure_interrupted_uploads_are_cleaned_up() {
    interrupted_uploads_are_cleaned_up(Kind::Azure);
}

/// Application Default Credentials from a service-account file (a key made here;
/// the token is a self-signed JWT, so no token server is needed).
#[test]
fn gcs_mounts_with_a_service_account_file() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key.pem");
    sh(&format!(
        "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out {} 2>/dev/null",
        key.display()
    ));
    let pem = fs::read_to_string(&key).unwrap();
    let sa = serde_json::json!({
        "type": "service_account",
        "project_id": "bucketfs-test",
        "private_key_id": "0123456789abcdef",
        "private_key": pem,
        "client_email": "tester@bucketfs-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "http://127.0.0.1:9/token",
    });
    let sa_file = dir.path().join("sa.json");
    fs::write(&sa_file, sa.to_string()).unwrap();
    let (source, extra) = fresh(Kind::Gcs, "sa"); // (makes the environment hermetic first)
    std::env::set_var("GOOGLE_APPLICATION_CREDENTIALS", &sa_file);
    let m = mount(&source, &extra);
    fs::write(m.path("hello"), b"signed").unwrap();
    assert_eq!(fs::read(m.path("hello")).unwrap(), b"signed");
    assert!(m.log_text().contains("application default credentials loaded"), "{}", m.log_text());
    drop(m);
    // a file that is not a credentials file: a clear error at mount time
    let bad = dir.path().join("bad.json");
    fs::write(&bad, "{\"type\": \"nonsense\"}").unwrap();
    let (_tmp, mnt) = mountpoint();
    let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
    args.extend([source.as_str(), mnt.as_str()]);
    let (code, err, _) =
        run_bucketfs_env(&args, &[("GOOGLE_APPLICATION_CREDENTIALS", Some(bad.to_str().unwrap()))]);
    assert_ne!(code, 0);
    assert!(err.contains("Google credentials"), "{err}");
}

#[test]
fn azure_connection_string_and_sas() {
    let server = cloud_support::azurite();
    let (source, extra) = fresh(Kind::Azure, "conn");
    // a connection string alone names the account, the key and the endpoint
    let conn = format!(
        "DefaultEndpointsProtocol=http;AccountName={};AccountKey={};BlobEndpoint={};",
        cloud_support::AZ_ACCOUNT,
        cloud_support::AZ_KEY,
        server.endpoint
    );
    std::env::remove_var("AZURE_STORAGE_ACCOUNT");
    std::env::remove_var("AZURE_STORAGE_KEY");
    std::env::set_var("AZURE_STORAGE_CONNECTION_STRING", &conn);
    let m = Mount::try_start_source(&source, &[]).unwrap_or_else(|e| panic!("{e}"));
    fs::write(m.path("via-conn"), b"ok").unwrap();
    assert_eq!(fs::read(m.path("via-conn")).unwrap(), b"ok");
    drop(m);
    // a SAS token the server refuses: denied at mount time, the token never printed
    let sas =
        "sv=2021-12-02&ss=b&srt=sco&sp=rl&se=2099-01-01T00:00:00Z&sig=bm90LWEtc2lnbmF0dXJlLXNlY3JldA%3D%3D";
    let (_tmp, mnt) = mountpoint();
    let mut args: Vec<&str> = extra.iter().map(String::as_str).collect();
    args.extend([source.as_str(), mnt.as_str()]);
    let (code, err, _) = run_bucketfs_env(&args, &[("AZURE_STORAGE_SAS_TOKEN", Some(sas))]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("denied"), "{err}");
    assert!(!err.contains("bm90LWEtc2lnbmF0dXJl") && !err.contains(cloud_support::AZ_KEY), "{err}");
}
