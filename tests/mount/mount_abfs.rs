//! Real FUSE mounts of `abfs://` against the local DFS test server of
//! `cloud_support::dfs` (Azurite has no DFS endpoint): round trips from 0 B to
//! 100 MiB, mkdir as a real directory, a directory of 1,000 files renamed with
//! one rename request, rmdir of a non-empty directory, a refused flush
//! reported by close, chmod under `--enable-perms` reaching the path's permissions.

use crate::cloud_support::{self, dfs::DfsServer};
use crate::common::*;

use std::fs;
use std::io::Write;
use std::os::fd::IntoRawFd;

use bucketfs::backend::{PutOptions, StorageBackend};
use bytes::Bytes;

/// A server with filesystem `fs` and a mount of it.
fn mounted() -> (DfsServer, Mount) {
    let s = DfsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(cloud_support::abfs_filesystem(&s, "fs"));
    let m =
        Mount::try_start_source("abfs://fs", &["--endpoint", &s.endpoint]).unwrap_or_else(|e| panic!("{e}"));
    (s, m)
}

#[test]
fn abfs_files_round_trip_from_0_to_100_mib() {
    let (s, mut m) = mounted();
    let sizes: [(&str, Vec<u8>); 5] = [
        ("empty", Vec::new()),
        ("one", vec![7u8]),
        ("mid", pattern(1 << 20, 1)),
        ("seven", pattern((7 << 20) + 13, 2)),
        ("big", pattern(100 << 20, 3)), // many appends to a hidden file, one rename
    ];
    for (name, data) in &sizes {
        fs::write(m.path(name), data).unwrap();
        assert!(fs::read(m.path(name)).unwrap() == *data, "{name}");
        assert!(s.content(&format!("fs/{name}")).unwrap() == *data, "{name} on the server");
    }
    fs::rename(m.path("mid"), m.path("mid2")).unwrap();
    assert!(m.stop(), "clean stop");
    let m2 = Mount::try_start_source("abfs://fs", &["--endpoint", &s.endpoint]).unwrap();
    assert!(fs::read(m2.path("big")).unwrap() == sizes[4].1, "100 MiB after remount");
    let mut names: Vec<String> = fs::read_dir(&m2.mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["big", "empty", "mid2", "one", "seven"], "no upload state shows");
    let renames: Vec<_> = s.requests().into_iter().filter(|r| r.h("x-ms-rename-source").is_some()).collect();
    assert!(renames.iter().any(|r| r.path == "fs/mid2"), "the file rename is one rename request");
    // 100 MiB streamed as appends to a hidden file (no local copy), renamed into place once
    let big = renames.iter().filter(|r| r.path == "fs/big").collect::<Vec<_>>();
    assert_eq!(big.len(), 1, "{big:?}");
    let hidden = big[0].h("x-ms-rename-source").unwrap().to_owned();
    assert!(hidden.starts_with("/fs/.bucketfs-multipart/"), "{hidden}");
    let appends =
        s.requests().iter().filter(|r| r.q("action") == Some("append") && hidden.ends_with(&r.path)).count();
    assert!(appends > 4, "appended in parts: {appends}");
}

#[test]
fn abfs_directories_are_real_and_rename_in_one_request() {
    let s = DfsServer::start();
    // 1,000 files written before the mount, found and renamed through it
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = cloud_support::abfs_filesystem(&s, "fs").await;
        for i in 0..1000 {
            b.put(&format!("made/f{i:04}"), Bytes::from(format!("{i}")), &PutOptions::default())
                .await
                .unwrap();
        }
    });
    let m =
        Mount::try_start_source("abfs://fs", &["--endpoint", &s.endpoint]).unwrap_or_else(|e| panic!("{e}"));
    fs::create_dir(m.path("new")).unwrap();
    assert_eq!(s.kind("fs/new"), Some(true), "mkdir made a directory, not a marker object");
    assert_eq!(fs::read_dir(m.path("made")).unwrap().count(), 1000);
    s.clear_requests();
    fs::rename(m.path("made"), m.path("moved")).unwrap();
    let reqs = s.requests();
    let renames: Vec<_> = reqs.iter().filter(|r| r.h("x-ms-rename-source").is_some()).collect();
    assert_eq!(renames.len(), 1, "{renames:?}");
    assert_eq!(
        (renames[0].path.as_str(), renames[0].h("x-ms-rename-source")),
        ("fs/moved", Some("/fs/made"))
    );
    assert!(
        !reqs.iter().any(|r| r.method == "DELETE" || r.q("resource") == Some("file")),
        "no per-file copy or delete: {reqs:?}"
    );
    assert_eq!(s.kind("fs/made"), None);
    assert_eq!(s.content("fs/moved/f0999").unwrap(), b"999");
    assert_eq!(fs::read(m.path("moved/f0042")).unwrap(), b"42");

    // rmdir of a non-empty directory: ENOTEMPTY, and the directory stays
    let e = fs::remove_dir(m.path("moved")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY), "{e}");
    assert_eq!(s.kind("fs/moved"), Some(true));
    // an empty one goes, with a non-recursive delete
    fs::create_dir(m.path("gone")).unwrap();
    fs::remove_dir(m.path("gone")).unwrap();
    assert_eq!(s.kind("fs/gone"), None);
    let del = s.requests().into_iter().rfind(|r| r.method == "DELETE").unwrap();
    assert_eq!((del.path.as_str(), del.q("recursive")), ("fs/gone", Some("false")));
}

#[test]
fn abfs_refused_flush_is_reported_by_close() {
    let (s, m) = mounted();
    let mut f = fs::File::create(m.path("f")).unwrap();
    f.write_all(b"never committed").unwrap();
    s.fail_next_flush();
    let rc = unsafe { libc::close(f.into_raw_fd()) };
    assert_eq!(rc, -1, "close reports the failed commit");
    // the next write commits
    fs::write(m.path("g"), b"ok").unwrap();
    assert_eq!(s.content("fs/g").unwrap(), b"ok");
}

#[test]
fn abfs_chmod_with_enable_perms_sets_the_path_permissions() {
    let s = DfsServer::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(cloud_support::abfs_filesystem(&s, "fs"));
    let m = Mount::try_start_source("abfs://fs", &["--endpoint", &s.endpoint, "--enable-perms"])
        .unwrap_or_else(|e| panic!("{e}"));
    fs::write(m.path("f"), b"x").unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(m.path("f"), fs::Permissions::from_mode(0o604)).unwrap();
    assert_eq!(s.access("fs/f").unwrap().0, "0604", "the server path's permissions follow chmod");
    assert_eq!(fs::metadata(m.path("f")).unwrap().permissions().mode() & 0o7777, 0o604);
}
