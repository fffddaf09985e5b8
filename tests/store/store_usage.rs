//! Issue 15: `bucketfs du` shows the data scanner's per-bucket usage, and
//! `--scanner-speed off` stops background passes. Why these tests: usage is
//! only useful if it is exactly what was written (objects, versions, bytes per
//! bucket, summed over erasure sets), and it must be readable both when `du`
//! can open the store itself and while a running mount holds the drives.

use crate::common;

use std::collections::BTreeMap;
use std::fs;

use bucketfs::store::scanner::ScannerSpeed;
use bucketfs::store::{parse_drive_spec, Store, StoreConfig};
use common::*;

/// Bucket -> (objects, versions, bytes).
type Usage = BTreeMap<String, (u64, u64, u64)>;

/// `bucketfs du` rows, plus its note line.
fn du(drives: &Drives) -> Result<(Usage, String), String> {
    let (code, out, err) = {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_bucketfs"))
            .args(["du", "--drives", &drives.spec])
            .output()
            .unwrap();
        (
            o.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    assert!(!err.contains("panicked"), "{err}");
    if code != 0 {
        return Err(err);
    }
    let mut rows = BTreeMap::new();
    let mut lines = out.lines();
    assert!(lines.next().unwrap().starts_with("BUCKET"), "{out}");
    let mut note = String::new();
    for l in lines {
        if l.starts_with('(') {
            note = l.to_string();
            continue;
        }
        let f: Vec<&str> = l.split_whitespace().collect();
        assert_eq!(f.len(), 4, "{out}");
        rows.insert(f[0].to_string(), (f[1].parse().unwrap(), f[2].parse().unwrap(), f[3].parse().unwrap()));
    }
    Ok((rows, note))
}

#[test]
fn du_reports_exactly_what_was_written_over_two_sets_and_while_a_mount_holds_the_drives() {
    // 18 drives: two erasure sets of 9, so usage is summed over sets
    let drives = Drives::new(18);
    for b in ["alpha", "beta", "empty"] {
        drives.make_bucket(b);
    }
    let alpha: Vec<(String, Vec<u8>)> = [0usize, 1, 1000, 4097, (1 << 20) + 3]
        .iter()
        .enumerate()
        .map(|(i, &n)| (format!("a/{i}"), pattern(n, i as u64)))
        .collect();
    let beta: Vec<(String, Vec<u8>)> = (0..40).map(|i| (format!("k{i:02}"), pattern(100 + i, 7))).collect();
    let sum = |v: &[(String, Vec<u8>)]| v.iter().map(|(_, d)| d.len() as u64).sum::<u64>();
    let (a_bytes, b_bytes) = (sum(&alpha), sum(&beta));
    drives.put_objects("alpha", alpha);
    drives.put_objects("beta", beta);

    // held by a mount before any pass recorded usage: a clear refusal
    let mut mnt = Mount::start(&drives, "alpha", &[]);
    let err = du(&drives).unwrap_err();
    assert!(err.contains("running mount or serve") && err.contains("not recorded usage"), "{err}");
    assert!(mnt.stop());

    // drives free: a pass counts exactly what was written, empty bucket included
    let (rows, note) = du(&drives).unwrap();
    let want: BTreeMap<String, (u64, u64, u64)> =
        [("alpha".into(), (5, 5, a_bytes)), ("beta".into(), (40, 40, b_bytes)), ("empty".into(), (0, 0, 0))]
            .into();
    assert_eq!(rows, want);
    assert!(note.contains("just now"), "{note}");

    // held again: the usage that pass recorded on the drives is shown, as recorded
    let mut mnt = Mount::start(&drives, "alpha", &[]);
    fs::write(mnt.path("new"), pattern(777, 1)).unwrap();
    let (held, note) = du(&drives).unwrap();
    assert!(note.contains("recorded by the running process"), "{note}");
    assert_eq!(held.get("alpha"), Some(&(5, 5, a_bytes)));
    assert_eq!(held.get("beta"), Some(&(40, 40, b_bytes)));
    assert!(mnt.stop());

    // free again: the file written through the mount is counted
    let (rows, _) = du(&drives).unwrap();
    assert_eq!(rows.get("alpha"), Some(&(6, 6, a_bytes + 777)));

    // one bucket only, and an unknown one refused
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bucketfs"))
        .args(["du", "--drives", &drives.spec, "local://beta"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("beta") && !text.contains("alpha"), "{text}");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_bucketfs"))
        .args(["du", "--drives", &drives.spec, "nosuch"])
        .output()
        .unwrap();
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("no bucket nosuch"));
}

#[test]
fn scanner_speed_off_skips_background_passes_but_not_on_demand_ones() {
    let drives = Drives::new(4);
    drives.make_bucket("bkt");
    drives.put_objects("bkt", (0..3).map(|i| (format!("o{i}"), pattern(10, i))));
    let store =
        Store::open(StoreConfig { drives: parse_drive_spec(&drives.spec).unwrap(), parity: None }).unwrap();
    let set = &store.sets()[0];
    // the background entry (what the set's worker calls) honours the setting
    store.set_scanner_speed(ScannerSpeed::Off);
    assert_eq!(set.scan(0.1).unwrap().heal.scanned, 0);
    store.set_scanner_speed(ScannerSpeed::Duty(1.0));
    assert_eq!(set.scan(0.1).unwrap().heal.scanned, 3);
    // on-demand passes ignore it
    store.set_scanner_speed(ScannerSpeed::Off);
    let r = store.scan(1.0).unwrap();
    assert_eq!(r.heal.scanned, 3);
    assert_eq!(r.usage["bkt"].bytes, 30);
    store.close();
}
