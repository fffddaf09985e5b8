//! Erasure sets of the embedded store: how many drives form how many sets,
//! where objects land, what survives losing drives in every set at once, and
//! that single-set deployments written before sets existed still open.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bucketfs::backend::{CompletedPart, GetOptions, ListRequest, PutOptions};
use bucketfs::store::{Store, StoreConfig};

const MIB: usize = 1 << 20;

fn drives(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("disk{i}"))).collect()
}

fn open(d: &[PathBuf]) -> Arc<Store> {
    Store::open(StoreConfig { drives: d.to_vec(), parity: None }).unwrap()
}

fn body(key: &str, len: usize) -> Vec<u8> {
    key.bytes().cycle().take(len).collect()
}

fn get(s: &Store, key: &str) -> Vec<u8> {
    s.get_object("bkt", key, None, &GetOptions::default()).unwrap_or_else(|e| panic!("{key}: {e}")).1
}

/// Every key of a full listing, paged `max` at a time.
fn list_all(s: &Store, delimiter: Option<&str>, max: usize) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut cps, mut token) = (Vec::new(), Vec::new(), None);
    loop {
        let req = ListRequest {
            delimiter: delimiter.map(String::from),
            continuation: token,
            max_keys: max,
            ..Default::default()
        };
        let page = s.list_objects("bkt", &req).unwrap();
        assert!(page.objects.len() + page.common_prefixes.len() <= max);
        keys.extend(page.objects.into_iter().map(|o| o.key));
        cps.extend(page.common_prefixes);
        token = page.next_continuation;
        if token.is_none() {
            return (keys, cps);
        }
    }
}

/// Which drives hold the object's metadata file.
fn holders(d: &[PathBuf], key: &str) -> Vec<usize> {
    (0..d.len()).filter(|&i| d[i].join("bkt").join(key).join("%meta").exists()).collect()
}

#[test]
fn thirty_two_drives_form_two_sets_and_spread_keys_evenly() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 32);
    let s = open(&d);
    assert_eq!(s.sets().len(), 2);
    assert!(s.sets().iter().all(|set| set.drives().len() == 16));
    assert_eq!(s.layout(), (12, 4), "16-drive sets default to parity 4");
    let format: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d[0].join(".bucketfs.sys/format.json")).unwrap()).unwrap();
    assert_eq!(format["version"], 2);
    assert_eq!(format["distribution_algo"], "siphash-2-4-mod");
    assert_eq!(format["sets"].as_array().unwrap().len(), 2);

    s.make_bucket("bkt").unwrap();
    let key_of = |i: usize| format!("dir{}/obj-{i}", i % 7);
    // Eight writers at once: the puts are fsync-bound, not CPU-bound.
    std::thread::scope(|sc| {
        for t in 0..8 {
            let (s, key_of) = (&s, &key_of);
            sc.spawn(move || {
                for key in (t..1000).step_by(8).map(key_of) {
                    s.put_object("bkt", &key, &body(&key, 100), &PutOptions::default()).unwrap();
                }
            });
        }
    });
    let mut per_set = [0usize; 2];
    for key in (0..1000).map(key_of) {
        // On disk, not just by the hash: all 16 drives of one set, none of the other.
        let on = holders(&d, &key);
        assert_eq!(on.len(), 16, "{key} on {on:?}");
        let set = on[0] / 16;
        assert!(on.iter().all(|&i| i / 16 == set), "{key} spans sets: {on:?}");
        assert_eq!(set, s.set_of(&key));
        per_set[set] += 1;
    }
    for c in per_set {
        assert!((450..=550).contains(&c), "uneven spread {per_set:?}");
    }

    // Listings merge both sets, in order, across pages and with common prefixes.
    let mut want: Vec<String> = (0..1000).map(key_of).collect();
    want.sort();
    assert_eq!(list_all(&s, None, 37).0, want);
    let (keys, cps) = list_all(&s, Some("/"), 3);
    assert!(keys.is_empty());
    assert_eq!(cps, (0..7).map(|i| format!("dir{i}/")).collect::<Vec<_>>());

    // Copy and multipart between keys of different sets.
    let a = want.iter().find(|k| s.set_of(k) == 0).unwrap().clone();
    let b = "copied-into-the-other-set".to_string();
    let b = (0..).map(|i| format!("{b}-{i}")).find(|k| s.set_of(k) == 1).unwrap();
    s.copy_object("bkt", &a, &b, None).unwrap();
    assert_eq!(get(&s, &b), body(&a, 100));
    assert!(holders(&d, &b).iter().all(|&i| i >= 16));
    let mp = (0..).map(|i| format!("mp-{i}")).find(|k| s.set_of(k) == 1).unwrap();
    let id = s.create_multipart_upload("bkt", &mp, &PutOptions::default()).unwrap();
    let ups = s.list_multipart_uploads("bkt", "").unwrap();
    assert_eq!(ups.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(), [mp.as_str()]);
    let p1 = body("part one", 5 * MIB);
    let parts: Vec<CompletedPart> = [p1.clone(), b"tail".to_vec()]
        .iter()
        .enumerate()
        .map(|(i, data)| s.put_part("bkt", &mp, &id, i as u32 + 1, &mut &data[..]).unwrap())
        .collect();
    s.complete_multipart_upload("bkt", &mp, &id, &parts).unwrap();
    assert_eq!(get(&s, &mp), [p1, b"tail".to_vec()].concat());
    assert!(s.delete_bucket("bkt").is_err(), "a bucket with objects in the sets is not empty");
    s.close();
}

#[test]
fn losing_parity_drives_in_every_set_still_reads_everything() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 24);
    let s = open(&d);
    assert_eq!(s.sets().len(), 2);
    assert_eq!(s.layout(), (8, 4), "24 drives: 2 sets of 12, parity 4");
    s.make_bucket("bkt").unwrap();
    let keys: Vec<String> = (0..60).map(|i| format!("k{i}")).collect();
    for (i, k) in keys.iter().enumerate() {
        // Inline, one block, several blocks.
        let len = [10, 300 * 1024, 3 * MIB + 5][i % 3];
        s.put_object("bkt", k, &body(k, len), &PutOptions::default()).unwrap();
    }
    assert!(keys.iter().any(|k| s.set_of(k) == 0) && keys.iter().any(|k| s.set_of(k) == 1));
    // 4 drives of each set die at once under the open store (their contents vanish).
    for i in [0, 3, 7, 11, 12, 13, 20, 23] {
        std::fs::remove_dir_all(&d[i]).unwrap();
    }
    for (i, k) in keys.iter().enumerate() {
        let len = [10, 300 * 1024, 3 * MIB + 5][i % 3];
        assert_eq!(get(&s, k), body(k, len), "{k}");
    }
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(list_all(&s, None, 7).0, sorted);
    s.close();
}

#[test]
fn reordered_or_partial_multi_set_spec_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 18);
    let s = open(&d);
    assert_eq!(s.sets().len(), 2, "18 drives: 2 sets of 9");
    assert_eq!(s.layout(), (5, 4));
    s.close();
    drop(s);
    let mut swapped = d.clone();
    swapped.swap(2, 12);
    let e = Store::open(StoreConfig { drives: swapped, parity: None }).unwrap_err().to_string();
    assert!(e.contains("drive order mismatch"), "{e}");
    let e = Store::open(StoreConfig { drives: d[..9].to_vec(), parity: None }).unwrap_err().to_string();
    assert!(e.contains("18 drives (2 erasure sets) but the spec lists 9"), "{e}");
    for sub in ["p", "q"] {
        std::fs::create_dir(tmp.path().join(sub)).unwrap();
    }
    let e = Store::open(StoreConfig { drives: drives(&tmp.path().join("p"), 17), parity: None })
        .unwrap_err()
        .to_string();
    assert!(e.contains("17 drives cannot be split"), "{e}");
    let e = Store::open(StoreConfig { drives: drives(&tmp.path().join("q"), 32), parity: Some(9) })
        .unwrap_err()
        .to_string();
    assert!(e.contains("parity 9 is too high for erasure sets of 16 drives"), "{e}");
    assert!(!tmp.path().join("q/disk0/.bucketfs.sys/format.json").exists(), "nothing formatted");
}

/// A deployment formatted before sets existed (format.json version 1, one set
/// of more than 16 drives) keeps its single set and its data.
#[test]
fn version_1_single_set_of_twenty_drives_still_opens() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 20);
    let ids: Vec<String> = (0..20).map(|i| format!("00000000-0000-4000-8000-0000000000{i:02}")).collect();
    for (i, drive) in d.iter().enumerate() {
        std::fs::create_dir_all(drive.join(".bucketfs.sys")).unwrap();
        let f = serde_json::json!({
            "version": 1, "format": "bucketfs-erasure",
            "deployment_id": "7d1c2a54-64a4-4b4e-9b43-0c5cf8e1d6a1",
            "drives": ids, "this": ids[i],
        });
        std::fs::write(drive.join(".bucketfs.sys/format.json"), f.to_string()).unwrap();
    }
    let s = open(&d);
    assert_eq!(s.sets().len(), 1);
    assert_eq!(s.layout(), (16, 4));
    s.make_bucket("bkt").unwrap();
    s.put_object("bkt", "k", &body("k", 2 * MIB), &PutOptions::default()).unwrap();
    assert_eq!(holders(&d, "k").len(), 20);
    assert_eq!(get(&s, "k"), body("k", 2 * MIB));
    let f: serde_json::Value =
        serde_json::from_slice(&std::fs::read(d[5].join(".bucketfs.sys/format.json")).unwrap()).unwrap();
    assert_eq!(f["version"], 1, "an old format is left as it was");
    s.close();
}
