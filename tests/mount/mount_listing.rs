//! `ls -l` of a large directory over S3 costs a few LISTs, never a request per entry
//! (issue 11): S3 listings carry no user metadata, so symlinks and `--enable-perms`
//! attributes reach them through the listing index (src/backend/attr_index.rs).
//! Objects written by another client, symlinks and modes set through an earlier
//! mount, then a fresh mount lists them: counted at the mount's own counters.

use crate::common;
use crate::s3_support;

use std::fs;
use std::os::unix::fs::PermissionsExt;

use common::*;
use futures::StreamExt;

/// Objects in the listed directory: 1,995 plain files and 5 symlinks.
const FILES: usize = 1995;
const LINKS: usize = 5;

fn mount(endpoint: &str, bucket: &str, perms: bool) -> Mount {
    // The symlink targets a listing brings are used while the stat cache holds them:
    // with the tests' usual 1 s, a loaded machine (CI at load 38) took longer than that
    // between the listing and the readlinks, and paid a GET per symlink.
    let mut flags = vec!["--endpoint", endpoint, "--region", "us-east-1", "--stat-cache-ttl", "60s"];
    if perms {
        flags.push("--enable-perms");
    }
    Mount::try_start_source(&format!("s3://{bucket}"), &flags).unwrap_or_else(|e| panic!("{e}"))
}

/// Every backend request the mount has made so far.
fn requests(m: &Mount) -> (u64, String) {
    let stats = sh(&format!("{BIN} stats {}", m.mnt.display()));
    let total = stats
        .lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| {
            k.starts_with("requests_")
                && !matches!(*k, "requests_failed" | "requests_in_flight" | "requests_in_flight_peak")
        })
        .map(|(_, v)| v.trim().parse::<u64>().unwrap())
        .sum();
    (total, stats)
}

/// Small objects as another client writes them (no bucketfs metadata), many at once.
async fn put_small_objects(endpoint: &str, bucket: &str) {
    let c = s3_support::admin_client(endpoint).await;
    let puts = (0..FILES).map(|i| {
        let c = c.clone();
        async move {
            c.put_object()
                .bucket(bucket)
                .key(format!("f{i:04}"))
                .body(format!("file {i}\n").into_bytes().into())
                .send()
                .await
                .unwrap_or_else(|e| panic!("put f{i:04}: {e:?}"));
        }
    });
    futures::stream::iter(puts).buffer_unordered(32).collect::<Vec<()>>().await;
}

fn listing_needs_no_request_per_entry(endpoint: &str, tag: &str, perms: bool) {
    let bucket = s3_support::unique_bucket(tag);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        s3_support::make_bucket(endpoint, &bucket).await;
        put_small_objects(endpoint, &bucket).await;
    });
    let mut first = mount(endpoint, &bucket, perms);
    for i in 0..LINKS {
        std::os::unix::fs::symlink(format!("f{i:04}"), first.path(&format!("ln{i}"))).unwrap();
    }
    if perms {
        for i in 0..LINKS {
            fs::set_permissions(first.path(&format!("f{i:04}")), fs::Permissions::from_mode(0o600)).unwrap();
        }
    }
    assert!(first.stop(), "clean stop");

    // the listing is the root's: no lookup of the directory itself to count
    let m = mount(endpoint, &bucket, perms);
    let (before, _) = requests(&m);
    let out = sh(&format!("ls -l {}", m.mnt.display()));
    let (after, stats) = requests(&m);
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with("total")).collect();
    assert_eq!(lines.len(), FILES + LINKS, "entries listed");
    assert!(!out.contains(".bucketfs-attrs"), "the listing index is hidden");
    // 2,000 objects and the index prefix: three pages of 1,000, and one LIST of the index
    assert!(
        after - before <= 5,
        "ls -l of {} entries cost {} requests (perms: {perms}):\n{stats}",
        FILES + LINKS,
        after - before
    );
    for i in 0..LINKS {
        let line = lines.iter().find(|l| l.ends_with(&format!(" ln{i} -> f{i:04}"))).unwrap_or_else(|| {
            panic!(
                "symlink ln{i} not listed as one:\n{}",
                lines.iter().filter(|l| l.contains("ln")).cloned().collect::<Vec<_>>().join("\n")
            )
        });
        assert!(line.starts_with('l'), "{line}");
        if perms {
            let f = lines.iter().find(|l| l.ends_with(&format!(" f{i:04}"))).unwrap();
            assert!(f.starts_with("-rw------- "), "stored mode of f{i:04}: {f}");
        }
    }
    let plain = lines.iter().find(|l| l.ends_with(" f1000")).unwrap();
    assert!(plain.starts_with("-rw-r--r-- "), "{plain}");
    assert_eq!(fs::read_link(m.path("ln3")).unwrap().to_str(), Some("f0003"));
    assert_eq!(fs::read_to_string(m.path("ln3")).unwrap(), "file 3\n");
}

#[test]
fn seaweedfs_listing_costs_no_request_per_entry() {
    listing_needs_no_request_per_entry(&s3_support::seaweed().endpoint, "lsweed", false);
}

#[test]
fn seaweedfs_listing_with_perms_costs_no_request_per_entry() {
    listing_needs_no_request_per_entry(&s3_support::seaweed().endpoint, "lsweedp", true);
}

#[test]
fn serve_listing_costs_no_request_per_entry() {
    listing_needs_no_request_per_entry(&s3_support::gateway().endpoint, "lsserve", false);
}

#[test]
fn serve_listing_with_perms_costs_no_request_per_entry() {
    listing_needs_no_request_per_entry(&s3_support::gateway().endpoint, "lsservep", true);
}

/// The count of one kind of request in `bucketfs stats`.
fn counter(m: &Mount, name: &str) -> u64 {
    let stats = sh(&format!("{BIN} stats {}", m.mnt.display()));
    stats.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok()).unwrap_or_else(|| panic!("{stats}"))
}

#[test]
fn the_next_listing_page_is_requested_before_the_reader_gets_there() {
    // 1,500 entries: two pages of 1,000. Reading only the first few entries must
    // already have sent the second page's request (issue 11: `ls -l` at 20 ms paid
    // the first page's entries and then a whole LIST round trip, one after another).
    let drives = Drives::new(4);
    drives.make_bucket("pages");
    drives.put_objects("pages", (0..1500).map(|i| (format!("dir/f{i:04}"), b"x".to_vec())));
    let m = Mount::start(&drives, "pages", &[]);
    let _ = fs::metadata(m.path("dir")).unwrap();
    let before = counter(&m, "requests_list");
    let mut entries = fs::read_dir(m.path("dir")).unwrap();
    for _ in 0..10 {
        entries.next().unwrap().unwrap();
    }
    // the prefetch runs in the background: wait for its count, not for a time
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while counter(&m, "requests_list") < before + 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(counter(&m, "requests_list"), before + 2, "first page, and the second already asked for");
    // and the whole listing is still right, with no third request
    let names: Vec<String> = entries.map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len() + 10, 1500);
    assert_eq!(counter(&m, "requests_list"), before + 2);
}

#[test]
fn listing_a_directory_after_its_lookup_asks_for_the_first_page_once() {
    // `ls -l dir` on a fresh mount is a lookup of dir, then a readdir. The lookup
    // lists dir's first page (it must list to know dir is a directory) and keeps
    // it for the readdir: 1,500 entries cost two LISTs, page 1 and page 2, not
    // three (issue 11: one round trip of `ls -l` at 20 ms).
    let endpoint = s3_support::seaweed().endpoint.clone();
    let bucket = s3_support::unique_bucket("lsfirst");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        s3_support::make_bucket(&endpoint, &bucket).await;
        let c = s3_support::admin_client(&endpoint).await;
        let puts = (0..1500).map(|i| {
            let c = c.clone();
            let bucket = bucket.clone();
            async move {
                c.put_object()
                    .bucket(bucket)
                    .key(format!("dir/f{i:04}"))
                    .body(b"x".to_vec().into())
                    .send()
                    .await
            }
        });
        for r in futures::stream::iter(puts).buffer_unordered(32).collect::<Vec<_>>().await {
            r.unwrap();
        }
    });
    let m = mount(&endpoint, &bucket, false);
    let before = counter(&m, "requests_list");
    let out = sh(&format!("ls -l {}", m.path("dir").display()));
    assert_eq!(out.lines().filter(|l| l.starts_with('-')).count(), 1500);
    let (lists, stats) = (counter(&m, "requests_list") - before, requests(&m).1);
    assert_eq!(lists, 2, "LISTs for a lookup and a listing of 1,500 entries:\n{stats}");
}
