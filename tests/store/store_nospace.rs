//! A full drive (ENOSPC) fails that drive's shard, not the process; losing the
//! write quorum to full drives is reported as `NoSpace`.
//!
//! Needs to mount small tmpfs drives (root); skipped with a message otherwise.

use crate::common;
use bucketfs::backend::ErrorKind;

use std::path::PathBuf;

use bucketfs::backend::{BackendError, GetOptions, PutOptions};
use bucketfs::store::{Store, StoreConfig, StoreError};
use common::tmpfs;

#[test]
fn full_drives_fail_their_shards_then_the_quorum() {
    let tmp = tempfile::tempdir().unwrap();
    let d: Vec<PathBuf> = (0..4).map(|i| tmp.path().join(format!("disk{i}"))).collect();
    let Some(m0) = tmpfs(&d[0], "1m") else {
        eprintln!("skipping: cannot mount tmpfs here");
        return;
    };
    let Some(m1) = tmpfs(&d[1], "1m") else { return };
    let s = Store::open(StoreConfig { drives: d.clone(), parity: Some(1) }).unwrap();
    assert_eq!(s.layout(), (3, 1));
    s.make_bucket("bkt").unwrap();
    let big = vec![7u8; 6 << 20]; // 2 MiB per shard: does not fit a 1 MiB drive
                                  // Two full drives of four with 3+1: quorum (3) lost because of ENOSPC.
    let e = s.put_object("bkt", "big", &big, &PutOptions::default()).unwrap_err();
    assert!(matches!(e, StoreError::NoSpace(_)), "{e}");
    assert!(matches!(bucketfs::backend::local::to_backend(e), BackendError { kind: ErrorKind::NoSpace, .. }));
    assert!(s.head_object("bkt", "big").unwrap_err().is_not_found());
    // Small objects still fit everywhere.
    s.put_object("bkt", "small", b"fits", &PutOptions::default()).unwrap();
    drop(s);
    drop(m1);
    // One full drive of four with 3+1: that shard fails, the write succeeds.
    let s = Store::open(StoreConfig { drives: d.clone(), parity: Some(1) });
    // disk1 lost its contents with the unmount: it is an empty replacement now.
    let s = s.unwrap();
    s.put_object("bkt", "big", &big, &PutOptions::default()).unwrap();
    assert_eq!(s.get_object("bkt", "big", None, &GetOptions::default()).unwrap().1, big);
    drop(s);
    drop(m0);
}
