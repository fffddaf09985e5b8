//! The data scanner: one pass heals a deleted shard file, removes an orphaned
//! shard directory and a stale temp entry, and counts usage per bucket exactly.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use bucketfs::backend::{GetOptions, PutOptions};
use bucketfs::store::{Store, StoreConfig};

#[test]
fn scanner_heals_removes_garbage_and_counts_usage() {
    let tmp = tempfile::tempdir().unwrap();
    let d: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("disk{i}"))).collect();
    let s = Store::open(StoreConfig { drives: d.clone(), parity: None }).unwrap();
    s.make_bucket("bkt").unwrap();
    s.make_bucket("other").unwrap();
    let sizes = [10usize, 700 * 1024, 3 << 20];
    for (i, n) in sizes.iter().enumerate() {
        s.put_object("bkt", &format!("k{i}"), &vec![i as u8; *n], &PutOptions::default()).unwrap();
    }
    s.put_object("other", "x", b"hello", &PutOptions::default()).unwrap();

    // Damage: a shard file deleted, an orphaned data dir, a stale and a fresh temp entry.
    let objdir = d[1].join("bkt/k2");
    let data_dir = std::fs::read_dir(&objdir)
        .unwrap()
        .flatten()
        .find(|e| e.file_name().to_str().unwrap().starts_with("%d."))
        .unwrap()
        .path();
    std::fs::remove_file(data_dir.join("part.1")).unwrap();
    let orphan = d[2].join("bkt/k1/%d.0123456789abcdef0123456789abcdef");
    std::fs::create_dir(&orphan).unwrap();
    std::fs::write(orphan.join("part.1"), b"junk").unwrap();
    let stale = d[0].join(".bucketfs.sys/tmp/stale-write");
    let fresh = d[0].join(".bucketfs.sys/tmp/running-write");
    std::fs::write(&stale, b"x").unwrap();
    std::fs::write(&fresh, b"x").unwrap();
    let old = SystemTime::now() - Duration::from_secs(2 * 3600);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(old).unwrap();

    let r = s.scan(1.0).unwrap();
    assert!(data_dir.join("part.1").exists(), "deleted shard rebuilt");
    assert!(!orphan.exists(), "orphaned shard dir removed");
    assert!(!stale.exists() && fresh.exists(), "only the stale temp entry removed");
    assert_eq!(r.stale_tmp_removed, 1);
    assert_eq!(r.heal.scanned, 4);
    assert!(r.heal.healed >= 1 && r.heal.failed == 0, "{:?}", r.heal);
    let bkt = &r.usage["bkt"];
    assert_eq!((bkt.objects, bkt.versions, bkt.bytes), (3, 3, sizes.iter().sum::<usize>() as u64));
    assert_eq!((r.usage["other"].objects, r.usage["other"].bytes), (1, 5));

    // The rebuilt shard is real: with two other drives gone k2 still reads.
    for i in [0, 2] {
        std::fs::remove_dir_all(&d[i]).unwrap();
    }
    let (_, got) = s.get_object("bkt", "k2", None, &GetOptions::default()).unwrap();
    assert!(got == vec![2u8; 3 << 20]);
    s.close();
}
