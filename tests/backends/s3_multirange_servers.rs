//! The multi-range client against real servers (crafted servers that imitate
//! nginx, Ceph, AWS and s3s are in s3_multirange.rs; `bucketfs serve`'s 206
//! multipart answers are in gateway_s3.rs):
//! - SeaweedFS and moto answer `Range: bytes=a-b,c-d` with 200 and the whole
//!   object. A byte-counting proxy between client and server shows the client
//!   stopped reading long before the end of a 96 MiB object.
//! - rclone 1.75 `serve s3` answers 501 Not Implemented.
//!
//! In every case the bytes returned are exact and the backend then reports
//! `multi_range: ParallelSingles` and never asks again. The read path's probe (a
//! HEAD with two ranges) finds the same out from each, without a byte of the object.

use crate::s3_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::ops::Range;
use std::time::Duration;

use bucketfs::backend::s3::{multirange::Support, S3Backend, S3Config};
use bucketfs::backend::*;
use bytes::Bytes;
use s3_support::*;

const SIZE: usize = 96 << 20;

fn ranges() -> Vec<Range<u64>> {
    let size = SIZE as u64;
    vec![0..100, (1 << 20)..(1 << 20) + 4096, size / 2..size / 2 + 10, size - 100..size]
}

fn check(got: &[Bytes], ranges: &[Range<u64>], data: &[u8]) {
    assert_eq!(got.len(), ranges.len());
    for (g, r) in got.iter().zip(ranges) {
        assert!(g[..] == data[r.start as usize..r.end as usize], "range {r:?} differs");
    }
}

/// Puts a 96 MiB object directly, then reads four scattered ranges through a counting proxy.
async fn whole_object_answer_is_cut_short(server: &str, tag: &str) {
    let bucket = unique_bucket(tag);
    make_bucket(server, &bucket).await;
    let data = pattern(SIZE, 3);
    backend(server, &bucket)
        .await
        .put("big", Bytes::from(data.clone()), &PutOptions::default())
        .await
        .unwrap();

    let proxy = CountingProxy::start(server);
    let b = backend(&proxy.endpoint, &bucket).await;
    let rs = ranges();
    let got = b.get_ranges("big", &rs, &GetOptions::default()).await.unwrap();
    check(&got, &rs, &data);
    let first = proxy.bytes_from_server();
    eprintln!("{tag}: {first} bytes came from the server for a {SIZE}-byte object");
    // The whole-object answer was abandoned a few MiB in (read limit + socket buffers).
    assert!(first < (SIZE as u64) / 3, "{first} bytes downloaded: the whole object was read");
    assert_eq!(b.multi_range_support(), Support::Single);
    assert_ne!(b.capabilities().multi_range, bucketfs::backend::MultiRangeMode::Native);
    // Known single-range now: the second read costs only the ranges themselves (+ HTTP heads).
    let got = b.get_ranges("big", &rs, &GetOptions::default()).await.unwrap();
    check(&got, &rs, &data);
    let second = proxy.bytes_from_server() - first;
    let wanted: u64 = rs.iter().map(|r| r.end - r.start).sum();
    assert!(second < wanted + 16 * 1024, "{second} bytes for {wanted} bytes of ranges");

    // The read path's probe (a HEAD) finds the same out without a byte of the object.
    let before = proxy.bytes_from_server();
    let fresh = backend(&proxy.endpoint, &bucket).await;
    fresh.probe_multi_range("big", &[0..1, 65536..65537], &GetOptions::default()).await.unwrap();
    assert_eq!(fresh.multi_range_support(), Support::Single);
    let probe = proxy.bytes_from_server() - before;
    assert!(probe < 4096, "{probe} bytes came from the server for the probe");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seaweedfs_whole_object_answer_is_not_downloaded() {
    whole_object_answer_is_cut_short(&seaweed().endpoint, "mrweed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moto_whole_object_answer_is_not_downloaded() {
    whole_object_answer_is_cut_short(&moto().endpoint, "mrmoto").await;
}

/// rclone serve s3 (anonymous): a raw multi-range GET gets 501, and the backend falls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rclone_501_answer_falls_back_to_single_ranges() {
    hermetic_env();
    let r = rclone();
    let bucket = unique_bucket("mrrc");
    let data = pattern(3 << 20, 8);
    std::fs::create_dir_all(r.root.join(&bucket)).unwrap();
    std::fs::write(r.root.join(&bucket).join("obj"), &data).unwrap();

    // The premise: rclone refuses multiple ranges with 501.
    let mut conn = TcpStream::connect(("127.0.0.1", r.port)).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let req = format!(
        "GET /{bucket}/obj HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nRange: bytes=0-9,100-109\r\nConnection: close\r\n\r\n",
        r.port
    );
    conn.write_all(req.as_bytes()).unwrap();
    let mut answer = Vec::new();
    let _ = conn.read_to_end(&mut answer);
    let status = String::from_utf8_lossy(&answer[..answer.len().min(16)]).into_owned();
    assert!(status.starts_with("HTTP/1.1 501"), "rclone answered {status:?}");

    let cfg = S3Config { no_sign_request: true, ..config(&r.endpoint, &bucket) };
    let b = S3Backend::connect(cfg).await.unwrap();
    b.check_bucket().await.unwrap();
    let size = data.len() as u64;
    let rs = [10..20, 1_000_000..1_000_100, size - 5..size];
    for _ in 0..2 {
        let got = b.get_ranges("obj", &rs, &GetOptions::default()).await.unwrap();
        check(&got, &rs, &data);
        assert_eq!(b.multi_range_support(), Support::Single);
        assert_ne!(b.capabilities().multi_range, bucketfs::backend::MultiRangeMode::Native);
    }
    // the read path's probe (a HEAD) says the same
    let cfg = S3Config { no_sign_request: true, ..config(&r.endpoint, &bucket) };
    let fresh = S3Backend::connect(cfg).await.unwrap();
    fresh.probe_multi_range("obj", &[0..1, 65536..65537], &GetOptions::default()).await.unwrap();
    assert_eq!(fresh.multi_range_support(), Support::Single);
}
