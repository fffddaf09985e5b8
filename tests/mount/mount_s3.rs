//! The real FUSE mount over S3 servers started by the tests on 127.0.0.1 (SeaweedFS
//! with an identity, moto, and `bucketfs serve`): the same file operations as over the
//! embedded store, through the aws-sdk-s3 backend.

use crate::common;
use crate::s3_support;

use std::fs;
use std::io::{Seek, SeekFrom, Write};

use common::*;

/// Which S3 server a scenario runs against.
struct Server {
    endpoint: String,
    /// SeaweedFS keeps an emptied folder as a prefix (see docs/README-s3.md).
    keeps_emptied_folders: bool,
}

fn seaweed() -> Server {
    Server { endpoint: s3_support::seaweed().endpoint.clone(), keeps_emptied_folders: true }
}

fn moto() -> Server {
    Server { endpoint: s3_support::moto().endpoint.clone(), keeps_emptied_folders: false }
}

fn bucketfs_serve() -> Server {
    Server { endpoint: s3_support::gateway().endpoint.clone(), keeps_emptied_folders: false }
}

fn mount(server: &Server, bucket: &str) -> Mount {
    Mount::try_start_source(
        &format!("s3://{bucket}"),
        &["--endpoint", &server.endpoint, "--region", "us-east-1"],
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

/// Files of 0 B to 55 MiB (multipart), a directory of 30 files renamed, a random write
/// into an existing object, a delete; then a fresh mount sees exactly what was committed.
fn round_trip(server: Server, tag: &str) {
    let bucket = s3_support::unique_bucket(tag);
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&server.endpoint, &bucket));
    let mut m = mount(&server, &bucket);
    let big = pattern(55 << 20, 3); // several multipart parts
    for (name, data) in
        [("empty", Vec::new()), ("one", vec![7u8]), ("mid", pattern(1 << 20, 1)), ("big", big.clone())]
    {
        fs::write(m.path(name), &data).unwrap();
        assert!(fs::read(m.path(name)).unwrap() == data, "{name}");
    }
    fs::create_dir_all(m.path("d/e")).unwrap();
    for i in 0..30 {
        fs::write(m.path(&format!("d/e/f{i:02}")), format!("{i}")).unwrap();
    }
    sh(&format!("mv {} {}", m.path("d").display(), m.path("moved").display()));
    assert_eq!(fs::read_dir(m.path("moved/e")).unwrap().count(), 30);
    assert_eq!(fs::read(m.path("moved/e/f07")).unwrap(), b"7");
    // random write into an existing object
    let mut f = fs::OpenOptions::new().write(true).open(m.path("big")).unwrap();
    f.seek(SeekFrom::Start(12 << 20)).unwrap();
    f.write_all(b"patched").unwrap();
    drop(f);
    let mut want = big;
    want[12 << 20..(12 << 20) + 7].copy_from_slice(b"patched");
    fs::remove_file(m.path("one")).unwrap();
    assert!(m.stop(), "clean stop");

    let m2 = mount(&server, &bucket);
    assert!(fs::read(m2.path("big")).unwrap() == want, "55 MiB file differs after remount");
    assert_eq!(fs::read(m2.path("mid")).unwrap(), pattern(1 << 20, 1));
    assert_eq!(fs::metadata(m2.path("empty")).unwrap().len(), 0);
    assert!(!m2.path("one").exists());
    let names = sh(&format!("ls {}", m2.mnt.display()));
    let names: Vec<&str> = names.split_whitespace().collect();
    for want in ["big", "empty", "mid", "moved"] {
        assert!(names.contains(&want), "{want} missing from {names:?}");
    }
    assert!(!names.contains(&"one"), "{names:?}");
    let listed = sh(&format!("ls {}", m2.path("moved/e").display()));
    assert_eq!(listed.lines().count(), 30, "{listed}");
    assert_eq!(fs::read(m2.path("moved/e/f17")).unwrap(), b"17");
    if server.keeps_emptied_folders {
        // `d` may still be listed; what matters is that no object is left under it
        let left = sh(&format!("find {}/ -type f 2>/dev/null || true", m2.path("d").display()));
        assert_eq!(left.trim(), "", "objects left under the renamed directory");
    } else {
        assert!(!m2.path("d").exists(), "no phantom folder after the rename");
    }
}

#[test]
fn round_trip_over_seaweedfs() {
    round_trip(seaweed(), "fuse");
}

#[test]
fn round_trip_over_moto() {
    round_trip(moto(), "fmoto");
}

/// The whole path on one machine: FUSE mount -> S3 over HTTP -> `bucketfs serve` ->
/// erasure-coded drives.
#[test]
fn round_trip_over_bucketfs_serve() {
    round_trip(bucketfs_serve(), "serve");
}

#[test]
fn wrong_credentials_or_bucket_fail_the_mount_with_a_clear_message() {
    let server = s3_support::seaweed();
    let tmp = tempfile::tempdir_in(test_root()).unwrap();
    let mnt = tmp.path().join("m");
    fs::create_dir(&mnt).unwrap();
    let m = mnt.to_str().unwrap();
    let (code, err, took) = run_bucketfs(&["--endpoint", &server.endpoint, "s3://no-such-bucket-here", m]);
    assert_ne!(code, 0);
    assert!(err.contains("no-such-bucket-here") && err.to_lowercase().contains("bucket"), "{err}");
    assert!(took.as_secs() < 5, "{took:?}");
    let bucket = s3_support::unique_bucket("creds");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&server.endpoint, &bucket));
    let (code, err, _) =
        run_bucketfs(&["--endpoint", &server.endpoint, "--profile", "wrong", &format!("s3://{bucket}"), m]);
    assert_ne!(code, 0);
    assert!(err.to_lowercase().contains("denied"), "{err}");
    assert!(!err.contains(s3_support::SECRET_KEY) && !err.contains("not-the-secret"), "{err}");
    assert!(!is_mounted(&mnt));
}
