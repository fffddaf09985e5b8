//! What everyday tools do to files works on a mount with default flags (issue 12):
//! `rsync -a` (a first copy, then an update), `cp -a`, `tar -xpf` of files and
//! directories of mixed modes, `install -m`, `touch -d`. They all chmod and set
//! times on what they create; those changes are stored as object metadata and a
//! fresh mount shows the same modes and mtimes. Embedded store and S3 over
//! `bucketfs serve`.

use crate::common;
use crate::s3_support;

use std::fs;
use std::path::Path;

use common::*;

/// `mode mtime size` of every entry under `root`, by relative path, sorted.
fn tree_stat(root: &Path) -> Vec<String> {
    let out = sh(&format!(
        "cd {} && find . -mindepth 1 -print0 | sort -z | xargs -0 stat -c '%n %a %Y %s %F'",
        root.display()
    ));
    out.lines()
        .map(|l| {
            // a directory's size is the filesystem's business, not the tool's
            if l.ends_with(" directory") {
                let mut f: Vec<&str> = l.split(' ').collect();
                f[3] = "-";
                f.join(" ")
            } else {
                l.to_owned()
            }
        })
        .collect()
}

/// Files and directories of the modes tools meet, with fixed mtimes.
fn source_tree() -> tempfile::TempDir {
    let src = tempfile::tempdir().unwrap();
    let p = src.path().display();
    sh(&format!(
        "cd {p} && mkdir -p sub/deep && printf secret > key && printf '#!/bin/sh\\n' > run.sh \
         && printf plain > notes && printf inner > sub/deep/f \
         && chmod 600 key && chmod 755 run.sh && chmod 644 notes && chmod 640 sub/deep/f \
         && chmod 750 sub && chmod 700 sub/deep \
         && touch -d '2020-01-02 03:04:05' key run.sh notes sub/deep/f && touch -d '2019-05-06 07:08:09' sub/deep sub"
    ));
    src
}

fn everyday_tools(start: impl Fn() -> Mount) {
    let src = source_tree();
    let s = src.path().display();
    let mut m = start();
    let mnt = m.mnt.clone();
    let d = mnt.display();
    sh(&format!("rsync -a {s}/ {d}/rsync/"));
    assert_eq!(tree_stat(&mnt.join("rsync")), tree_stat(src.path()), "rsync -a");
    // an update: one file changed, rsync replaces it through a temporary file and a rename
    sh(&format!(
        "printf changed > {s}/notes && touch -d '2021-03-04 05:06:07' {s}/notes && rsync -a {s}/ {d}/rsync/"
    ));
    assert_eq!(fs::read_to_string(mnt.join("rsync/notes")).unwrap(), "changed");
    sh(&format!("cp -a {s} {d}/cp"));
    let tar = src.path().with_extension("tar");
    sh(&format!(
        "tar -cf {} -C {s} . && mkdir {d}/tar && tar -xpf {} -C {d}/tar",
        tar.display(),
        tar.display()
    ));
    let _ = fs::remove_file(&tar);
    sh(&format!("install -m 0755 {s}/notes {d}/installed && touch -d '2018-01-01 00:00:00' {d}/installed"));
    sh(&format!("chmod 0604 {d}/cp/notes"));
    let want = tree_stat(src.path());
    let mut want_cp = want.clone();
    for l in want_cp.iter_mut().filter(|l| l.starts_with("./notes ")) {
        *l = l.replacen(" 644 ", " 604 ", 1);
    }
    let before: Vec<Vec<String>> = ["rsync", "cp", "tar"].iter().map(|t| tree_stat(&mnt.join(t))).collect();
    let stopped = m.stop();
    assert!(stopped, "clean stop:\n{}", m.log_text());

    // what a fresh mount sees was stored, not only cached
    let m2 = start();
    let mnt = m2.mnt.clone();
    for (i, t) in ["rsync", "cp", "tar"].iter().enumerate() {
        let after = tree_stat(&mnt.join(t));
        assert_eq!(after, before[i], "{t} changed across a remount");
        assert_eq!(after, if *t == "cp" { want_cp.clone() } else { want.clone() }, "{t}");
    }
    let inst = sh(&format!("stat -c '%a %Y' {}", mnt.join("installed").display()));
    assert_eq!(inst.trim(), format!("755 {}", sh("date -d '2018-01-01 00:00:00' +%s").trim()));
}

#[test]
fn everyday_tools_on_the_embedded_store() {
    let drives = Drives::new(4);
    drives.make_bucket("tools");
    everyday_tools(|| Mount::start(&drives, "tools", &[]));
}

#[test]
fn everyday_tools_over_s3() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("tools");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    everyday_tools(|| {
        Mount::try_start_source(
            &format!("s3://{bucket}"),
            &["--endpoint", &gw.endpoint, "--region", "us-east-1"],
        )
        .unwrap_or_else(|e| panic!("{e}"))
    });
}
