//! Large directories through a real mount: listing 5,000 entries without a request per
//! entry, and renaming a directory of 1,500 files (no cap on children).

use crate::common;

use std::fs;

use common::*;

fn counter(mnt: &std::path::Path, name: &str) -> u64 {
    let out = std::process::Command::new(BIN).arg("stats").arg(mnt).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in stats: {text}"))
}

#[test]
fn ls_of_5000_entries_lists_without_a_request_per_entry() {
    let drives = Drives::new(4);
    drives.make_bucket("big");
    drives.put_objects("big", (0..5000).map(|i| (format!("many/f{i:05}"), format!("{i}").into_bytes())));
    let m = Mount::start(&drives, "big", &[]);
    let heads_before = counter(&m.mnt, "requests_head");
    let out = sh(&format!("ls -l {} | tail -n +2 | wc -l", m.path("many").display()));
    assert_eq!(out.trim(), "5000");
    let names = sh(&format!("ls {}", m.path("many").display()));
    let names: Vec<&str> = names.lines().collect();
    assert_eq!(names.len(), 5000);
    assert_eq!(names[0], "f00000");
    assert_eq!(names[4999], "f04999");
    let heads = counter(&m.mnt, "requests_head") - heads_before;
    assert!(heads < 50, "ls -l of 5000 entries made {heads} HEAD requests");
    assert_eq!(fs::read(m.path("many/f04321")).unwrap(), b"4321");
    // sizes come from the listing
    assert_eq!(fs::metadata(m.path("many/f01000")).unwrap().len(), 4);
}

#[test]
fn rename_a_directory_of_1500_files() {
    let drives = Drives::new(4);
    drives.make_bucket("ren");
    drives.put_objects(
        "ren",
        (0..1500).map(|i| (format!("src/sub{}/f{i}", i % 3), pattern(100 + i, i as u64))),
    );
    let m = Mount::start(&drives, "ren", &[]);
    sh(&format!("mv {} {}", m.path("src").display(), m.path("dst").display()));
    assert!(!m.path("src").exists());
    let count = sh(&format!("find {} -type f | wc -l", m.path("dst").display()));
    assert_eq!(count.trim(), "1500");
    for i in [0usize, 777, 1499] {
        let got = fs::read(m.path(&format!("dst/sub{}/f{i}", i % 3))).unwrap();
        assert!(got == pattern(100 + i, i as u64), "content of f{i}");
    }
    // nothing left under the old prefix, even after a remount (no cached illusion)
    drop(m);
    let m = Mount::start(&drives, "ren", &[]);
    assert!(!m.path("src").exists());
    assert_eq!(fs::read_dir(m.path("dst")).unwrap().count(), 3);
}
