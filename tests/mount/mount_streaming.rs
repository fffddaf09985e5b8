//! Sequential writes stream without a local copy, commit once per write
//! session, and a writer that comes back to rewrite its header loses nothing
//! (issue 13). Through real mounts: the embedded store, S3 over
//! `bucketfs serve`, and GCS (fake-gcs-server).

use crate::cloud_support;
use crate::common;
use crate::s3_support;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use bucketfs::backend::StorageBackend;
use common::*;

const MIB: usize = 1024 * 1024;

/// One mebibyte of the file's deterministic content, numbered `i`.
fn chunk(i: usize) -> Vec<u8> {
    pattern(MIB, 1000 + i as u64)
}

/// Reads `path` and checks it is chunks 0..n (with `header` over the start, if any).
fn assert_content(path: &Path, n: usize, header: &[u8]) {
    let mut f = std::fs::File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (n * MIB) as u64);
    let mut buf = vec![0; MIB];
    for i in 0..n {
        f.read_exact(&mut buf).unwrap();
        let mut want = chunk(i);
        if i == 0 {
            want[..header.len()].copy_from_slice(header);
        }
        assert!(buf == want, "MiB {i} of {} differs", path.display());
    }
}

/// A counter of `bucketfs stats` for the mount.
fn stat(m: &Mount, name: &str) -> u64 {
    let stats = sh(&format!("{BIN} stats {}", m.mnt.display()));
    stats
        .lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {name} in:\n{stats}"))
        .trim()
        .parse()
        .unwrap()
}

/// A 4-drive store with `bucket`, mounted with a tmpfs of `size` as its cache
/// directory, and a scratch directory on disk. Fields drop in order: the mount
/// before the tmpfs its spool lives on, the tmpfs before the directory holding it.
struct SmallCache {
    m: Mount,
    _fs: Tmpfs,
    scratch: tempfile::TempDir,
    _drives: Drives,
}

impl SmallCache {
    /// None (and a note) where a tmpfs cannot be mounted (not root).
    fn mount(bucket: &str, size: &str) -> Option<SmallCache> {
        let drives = Drives::new(4);
        drives.make_bucket(bucket);
        let scratch = tempfile::tempdir_in(test_root()).unwrap();
        let cache = scratch.path().join("cache");
        let Some(fs) = tmpfs(&cache, size) else {
            eprintln!("skipping: cannot mount tmpfs here (needs root)");
            return None;
        };
        let m = Mount::start(&drives, bucket, &["--cache-dir", cache.to_str().unwrap()]);
        Some(SmallCache { m, _fs: fs, scratch, _drives: drives })
    }
}

/// 1 GiB written as `cp` writes (write-only, from offset 0) through a mount whose
/// cache directory is a 64 MiB tmpfs: the spool tee this replaced needed 1 GiB there.
#[test]
fn a_gib_streams_through_a_64_mib_cache_dir() {
    let Some(small) = SmallCache::mount("stream", "64m") else { return };
    let m = &small.m;
    let path = m.path("big");
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
    for i in 0..1024 {
        f.write_all(&chunk(i)).unwrap();
    }
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(stat(m, "bytes_written"), 1 << 30, "every byte uploaded exactly once");
    assert_content(&path, 1024, &[]);
}

/// `dd of=f` and a shell's `cat src > f` stream a new file too, through a cache
/// directory a quarter of its size. Both open f, dup the descriptor and close the
/// original before the first write, which commits f empty; every later byte used
/// to go through the spool (and failed with ENOSPC here).
#[test]
fn dd_and_shell_redirects_of_a_new_file_stream_too() {
    let Some(small) = SmallCache::mount("dup", "16m") else { return };
    let m = &small.m;
    let src = small.scratch.path().join("src");
    let mut f = std::fs::File::create(&src).unwrap();
    for i in 0..64 {
        f.write_all(&chunk(i)).unwrap();
    }
    drop(f);
    for (name, cmd) in [("dd", "dd if={src} of={dst} bs=1M status=none"), ("cat", "cat {src} > {dst}")] {
        let dst = m.path(name);
        let before = stat(m, "bytes_written");
        sh(&cmd.replace("{src}", src.to_str().unwrap()).replace("{dst}", dst.to_str().unwrap()));
        assert_eq!(stat(m, "bytes_written") - before, 64 << 20, "{name}: every byte uploaded once");
        assert_content(&dst, 64, &[]);
    }
}

/// A sequential writer that comes back to offset 0 after 100 MiB (a header filled
/// in at the end, as archivers and muxers do) ends bit-exact, on both back ends.
#[test]
fn a_header_rewritten_after_100_mib_ends_bit_exact() {
    let header = pattern(4096, 7);
    let check = |m: &Mount| {
        let path = m.path("hdr");
        let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
        for i in 0..100 {
            f.write_all(&chunk(i)).unwrap();
        }
        f.seek(SeekFrom::Start(0)).unwrap();
        f.write_all(&header).unwrap();
        drop(f);
        assert_content(&path, 100, &header);
    };
    let drives = Drives::new(4);
    drives.make_bucket("hdr");
    let mut m = Mount::start(&drives, "hdr", &[]);
    check(&m);
    assert!(m.stop());
    // what was stored, not what this mount remembers
    let m = Mount::start(&drives, "hdr", &[]);
    assert_content(&m.path("hdr"), 100, &header);

    check(&Served::new("hdr").m);
}

/// A write-only writer (how `cp`, downloads and `open(.., "wb")` write) that comes
/// back 50 MiB into what it streamed, as a zip writer fills in the entry it has just
/// written, and then to offset 0, ends bit-exact after a remount: the parts written
/// last are still in memory (1/16 of `--memory-limit`) and are sent again at the
/// close. Over S3, whose unfinished uploads' parts cannot be read back, a write
/// further back than those parts is refused with EINVAL and loses nothing. No
/// local copy, no temporary object, and nothing visible under the file's name
/// before the close.
fn check_mid_file_rewrites(m: &Mount, visible: &dyn Fn() -> bool) {
    let path = m.path("zip");
    let before = stat(m, "bytes_written");
    let entry = pattern(4096, 8);
    let header = pattern(4096, 9);
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
    for i in 0..100 {
        f.write_all(&chunk(i)).unwrap();
    }
    f.write_all_at(&entry, (50 * MIB) as u64).unwrap();
    f.write_all_at(&header, 0).unwrap();
    // 20 MiB back: that part was uploaded and let go (8 MiB parts, 64 MiB kept)
    let err = f.write_all_at(b"too far back", (20 * MIB) as u64).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{err}");
    assert!(!visible(), "a partial file is visible under its name before the close");
    drop(f);
    assert!(visible());
    // the file once, plus part 1 and part 7 (48..56 MiB) sent again with their patches
    assert_eq!(stat(m, "bytes_written") - before, (116 * MIB) as u64);
    check_zip(&path, &entry, &header);
}

/// `path` is chunks 0..100 with `header` at 0 and `entry` at 50 MiB.
fn check_zip(path: &Path, entry: &[u8], header: &[u8]) {
    let mut f = std::fs::File::open(path).unwrap();
    assert_eq!(f.metadata().unwrap().len(), (100 * MIB) as u64);
    let mut buf = vec![0; MIB];
    for i in 0..100 {
        f.read_exact(&mut buf).unwrap();
        let mut want = chunk(i);
        match i {
            0 => want[..header.len()].copy_from_slice(header),
            50 => want[..entry.len()].copy_from_slice(entry),
            _ => {}
        }
        assert!(buf == want, "MiB {i} of {} differs", path.display());
    }
}

/// The writes of [`check_rewrites_anywhere`] (offset, bytes), one across the
/// part boundary at `boundary`.
fn scattered_patches(boundary: usize) -> Vec<(usize, Vec<u8>)> {
    vec![
        (10 * MIB, pattern(4096, 21)),
        (40 * MIB, pattern(4096, 22)),
        (70 * MIB, pattern(4096, 23)),
        (boundary - 4096, pattern(8192, 24)),
        (0, pattern(4096, 20)),
    ]
}

/// Checks that `path` holds chunks 0..100 with the patches.
fn assert_scattered(path: &Path, boundary: usize) {
    let got = std::fs::read(path).unwrap();
    assert_eq!(got.len(), 100 * MIB);
    let mut model: Vec<u8> = (0..100).flat_map(chunk).collect();
    for (at, data) in scattered_patches(boundary) {
        model[at..at + data.len()].copy_from_slice(&data);
    }
    for (i, (a, b)) in got.chunks(MIB).zip(model.chunks(MIB)).enumerate() {
        assert!(a == b, "MiB {i} of {} differs", path.display());
    }
}

/// A write-only writer on a backend whose unfinished uploads' parts read back
/// (the embedded store, GCS), through a mount with `--memory-limit 128M` (so only
/// part 1, the buffered part and 8 MiB of recent parts are held), streams 100 MiB
/// and then writes at 10, 40 and 70 MiB, across the part boundary at `boundary`
/// and at 0: every part concerned that is no longer held is read back once
/// (`read_mib` in all), patched and sent again at the close (`written_mib` sent
/// in all), and the file ends bit-exact. Nothing is visible under its name
/// before the close.
fn check_rewrites_anywhere(
    m: &Mount,
    visible: &dyn Fn() -> bool,
    boundary: usize,
    read_mib: u64,
    written_mib: u64,
) {
    let path = m.path("any");
    let (written, read) = (stat(m, "bytes_written"), stat(m, "bytes_read"));
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).open(&path).unwrap();
    for i in 0..100 {
        f.write_all(&chunk(i)).unwrap();
    }
    for (at, data) in scattered_patches(boundary) {
        f.write_all_at(&data, at as u64).unwrap_or_else(|e| panic!("write at {at}: {e}"));
    }
    assert!(!visible(), "a partial file is visible under its name before the close");
    drop(f);
    assert!(visible());
    assert_eq!(stat(m, "bytes_read") - read, read_mib << 20, "each part concerned read back once");
    assert_eq!(stat(m, "bytes_written") - written, written_mib << 20);
    assert_scattered(&path, boundary);
}

#[test]
fn a_write_only_stream_rewrites_anywhere_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("any");
    let mut m = Mount::start(&drives, "any", &["--memory-limit", "128M"]);
    // what the store holds, not what this mount remembers (the drives are locked
    // to it, so no other process could look): an object is its directory's `%meta`
    let visible = || (1..=4).any(|i| drives.drive(i).join("any/any/%meta").exists());
    // 8 MiB parts: parts 2, 6, 7 and 9 read back; they and part 1 sent again
    check_rewrites_anywhere(&m, &visible, 48 * MIB, 32, 140);
    assert!(m.stop());
    assert_eq!(drives.pending_uploads("any"), 0, "no multipart upload left behind");
    let m = Mount::start(&drives, "any", &[]);
    let names: Vec<_> = std::fs::read_dir(&m.mnt).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, ["any"], "only the file is stored");
    assert_scattered(&m.path("any"), 48 * MIB);
}

#[test]
fn a_write_only_stream_rewrites_anywhere_on_gcs() {
    let bucket = s3_support::unique_bucket("any");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let gcs = rt.block_on(cloud_support::gcs_bucket(&bucket));
    let endpoint = cloud_support::fake_gcs().endpoint.clone();
    let flags = ["--endpoint", &endpoint, "--memory-limit", "128M"];
    let mut m = Mount::try_start_source(&format!("gs://{bucket}"), &flags).unwrap_or_else(|e| panic!("{e}"));
    // GCS composes at most 1024 parts, so they grow at once: 8, 16, 32 and 64 MiB
    // (70 MiB is in the part being buffered); parts 2 and 3 read back, they and
    // part 1 sent again
    check_rewrites_anywhere(&m, &|| rt.block_on(gcs.head("any")).is_ok(), 24 * MIB, 48, 156);
    assert!(m.stop());
    // no upload marker, part object or compose intermediate left: only the file
    let stored: Vec<String> =
        rt.block_on(gcs.list_raw_for_tests("")).unwrap().into_iter().map(|o| o.key).collect();
    assert_eq!(stored, ["any"]);
    let m = Mount::try_start_source(&format!("gs://{bucket}"), &flags[..2]).unwrap_or_else(|e| panic!("{e}"));
    assert_scattered(&m.path("any"), 24 * MIB);
}

#[test]
fn a_write_only_stream_rewrites_what_it_wrote_last_over_s3() {
    let served = Served::new("zip");
    check_mid_file_rewrites(&served.m, &|| served.stored_size("zip").is_some());
    let keys = served.rt.block_on(async {
        let out = served.client.list_objects_v2().bucket(&served.bucket).send().await.unwrap();
        out.contents().iter().filter_map(|o| o.key().map(str::to_owned)).collect::<Vec<_>>()
    });
    assert_eq!(keys, ["zip"], "only the file is stored");
    let uploads = served.rt.block_on(async {
        let out = served.client.list_multipart_uploads().bucket(&served.bucket).send().await.unwrap();
        out.uploads().len()
    });
    assert_eq!(uploads, 0, "no multipart upload left behind");
    let Served { mut m, bucket, .. } = served;
    assert!(m.stop());
    let gw = s3_support::gateway();
    let flags = ["--endpoint", &gw.endpoint, "--region", "us-east-1"];
    let m = Mount::try_start_source(&format!("s3://{bucket}"), &flags).unwrap_or_else(|e| panic!("{e}"));
    check_zip(&m.path("zip"), &pattern(4096, 8), &pattern(4096, 9));
}

/// A fresh bucket on the shared `bucketfs serve`, mounted, with a runtime and an
/// S3 client to look at what is stored.
struct Served {
    m: Mount,
    bucket: String,
    rt: tokio::runtime::Runtime,
    client: aws_sdk_s3::Client,
}

impl Served {
    fn new(tag: &str) -> Served {
        let gw = s3_support::gateway();
        let bucket = s3_support::unique_bucket(tag);
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
        let client = rt.block_on(s3_support::admin_client(&gw.endpoint));
        let flags = ["--endpoint", &gw.endpoint, "--region", "us-east-1"];
        let m = Mount::try_start_source(&format!("s3://{bucket}"), &flags).unwrap_or_else(|e| panic!("{e}"));
        Served { m, bucket, rt, client }
    }

    /// The stored object's size, or None while there is none.
    fn stored_size(&self, key: &str) -> Option<i64> {
        let head = self.rt.block_on(self.client.head_object().bucket(&self.bucket).key(key).send());
        head.ok().map(|h| h.content_length().unwrap_or(-1))
    }
}

/// A file written around three forks (each child exits, closing its inherited
/// descriptor) is uploaded once, and no other client sees a partial object
/// before the writer's own close.
#[test]
fn children_closing_inherited_descriptors_do_not_commit() {
    let served = Served::new("fork");
    let m = &served.m;
    let visible = || served.stored_size("forked").is_some();
    let before = stat(m, "bytes_written");
    let f = OpenOptions::new().write(true).create(true).truncate(true).open(m.path("forked")).unwrap();
    for i in 0..40 {
        f.write_all_at(&chunk(i), (i * MIB) as u64).unwrap();
        if i % 10 == 9 && i < 39 {
            // SAFETY: the child only exits, closing the descriptors it inherited
            match unsafe { libc::fork() } {
                0 => unsafe { libc::_exit(0) },
                pid => assert_eq!(unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }, pid),
            }
            assert!(!visible(), "a partial file became visible after a child's exit at {} MiB", i + 1);
        }
    }
    drop(f);
    assert!(visible());
    assert_eq!(
        stat(m, "bytes_written") - before,
        40 * MIB as u64,
        "the file's bytes were sent more than once"
    );
    assert_content(&m.path("forked"), 40, &[]);
}

/// `cmd > f` opens f, duplicates it onto stdout and closes the original before
/// writing anything: that close must not replace the old content with nothing.
#[test]
fn closing_a_duplicate_before_writing_keeps_the_old_content() {
    let served = Served::new("dup");
    let m = &served.m;
    let size = || served.stored_size("f");
    std::fs::write(m.path("f"), pattern(5 * MIB, 3)).unwrap();
    assert_eq!(size().expect("object stored"), 5 * MIB as i64);
    let f = OpenOptions::new().write(true).truncate(true).open(m.path("f")).unwrap();
    let dup = f.try_clone().unwrap();
    drop(f); // close of the original descriptor, nothing written yet
    assert_eq!(
        size().expect("object stored"),
        5 * MIB as i64,
        "the old content was replaced before any write"
    );
    (&dup).write_all(b"new").unwrap();
    drop(dup);
    assert_eq!(std::fs::read(m.path("f")).unwrap(), b"new");
    assert_eq!(size().expect("object stored"), 3);
}

/// A file whose commit failed (the store lost its write quorum) reports the error
/// at close, and the name is creatable again at once: the retried write succeeds
/// although the kernel still remembers the name (issue 14).
#[test]
fn a_failed_commit_leaves_the_name_creatable() {
    let drives = Drives::new(4);
    drives.make_bucket("lost");
    let m = Mount::start(&drives, "lost", &["--write-timeout", "0"]);
    let path = m.path("retry");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&pattern(MIB, 5)).unwrap();
    // three of four drives gone: no write quorum
    let away: Vec<_> = (1..4).map(|i| (drives.drive(i), drives.drive(i).with_extension("away"))).collect();
    for (d, a) in &away {
        std::fs::rename(d, a).unwrap();
    }
    let err = f.sync_all().expect_err("a commit without quorum cannot succeed");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
    drop(f);
    // the release (after close, asynchronous) fails too and gives the handle up
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !m.log_text().contains("could not store file on close") {
        assert!(std::time::Instant::now() < deadline, "no failed release logged:\n{}", m.log_text());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for (d, a) in &away {
        std::fs::rename(a, d).unwrap();
    }
    // the retry, as an application would make it, straight away
    let data = pattern(MIB, 6);
    std::fs::write(&path, &data).expect("the name is creatable after a failed commit");
    assert_eq!(std::fs::read(&path).unwrap(), data);
}
