//! Multi-process tests of the store: a writer killed with SIGKILL mid-write,
//! two processes opening the same drives, and one multipart upload whose parts
//! come from two processes in turn.
//!
//! Child processes are this test binary re-executed on one `#[ignore]`d test
//! (`child`), with `STORE_CHILD` choosing what it does.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bucketfs::backend::{GetOptions, PutOptions};
use bucketfs::store::{Store, StoreConfig, StoreError};

const MIB: usize = 1 << 20;

fn drives(dir: &Path, n: usize) -> Vec<PathBuf> {
    (0..n).map(|i| dir.join(format!("disk{i}"))).collect()
}

fn open(d: &[PathBuf]) -> Arc<Store> {
    Store::open(StoreConfig { drives: d.to_vec(), parity: None }).unwrap()
}

/// Self-describing content: the first 8 bytes are `gen`, the length depends on
/// it, and every other byte is derived from (gen, offset).
fn content(gen: u64) -> Vec<u8> {
    let len = 2 * MIB + (gen as usize % 7) * 300_001 + 9;
    let mut v: Vec<u8> = (0..len).map(|i| (i as u64).wrapping_mul(31).wrapping_add(gen * 7) as u8).collect();
    v[..8].copy_from_slice(&gen.to_le_bytes());
    v
}

fn check_whole(data: &[u8]) -> u64 {
    assert!(data.len() >= 8, "object too short: {}", data.len());
    let gen = u64::from_le_bytes(data[..8].try_into().unwrap());
    assert!(data == content(gen), "object of generation {gen} is not whole (len {})", data.len());
    gen
}

fn spawn_child(mode: &str, dir: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        // the test's name inside its group binary (tests/store): `store_process::child`
        .args(["--exact", &child_test_name(), "--ignored", "--nocapture", "--test-threads=1"])
        .env("STORE_CHILD", mode)
        .env("STORE_DIR", dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "child never signalled {}", path.display());
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `child`'s name as libtest knows it: its module path without the crate name.
fn child_test_name() -> String {
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    format!("{module}::child")
}

/// The child side; does nothing when run directly.
#[test]
#[ignore]
fn child() {
    let Ok(mode) = std::env::var("STORE_CHILD") else { return };
    let dir = PathBuf::from(std::env::var("STORE_DIR").unwrap());
    let d = drives(&dir, 4);
    let s = open(&d);
    match mode.as_str() {
        "writer" => {
            std::fs::write(dir.join("ready"), b"").unwrap();
            for gen in 1.. {
                s.put_object("bkt", "hot", &content(gen), &PutOptions::default()).unwrap();
                s.put_object("bkt", &format!("new/{gen}"), &content(gen), &PutOptions::default()).unwrap();
                if gen % 3 == 0 {
                    s.delete_object("bkt", &format!("new/{}", gen - 1)).unwrap();
                }
            }
        }
        "holder" => {
            std::fs::write(dir.join("ready"), b"").unwrap();
            std::thread::sleep(Duration::from_secs(60));
        }
        "part2" => {
            let id = std::fs::read_to_string(dir.join("upload-id")).unwrap();
            let data = vec![2u8; 3 * MIB];
            s.put_part("bkt", "mp", &id, 2, &mut &data[..]).unwrap();
        }
        other => panic!("unknown child mode {other}"),
    }
}

#[test]
fn sigkill_mid_write_leaves_old_or_new_never_partial() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 4);
    {
        let s = open(&d);
        s.make_bucket("bkt").unwrap();
        s.put_object("bkt", "hot", &content(0), &PutOptions::default()).unwrap();
        s.close();
    }
    let mut seen = std::collections::BTreeSet::new();
    for round in 0..6u64 {
        let _ = std::fs::remove_file(tmp.path().join("ready"));
        let mut child = spawn_child("writer", tmp.path());
        wait_for(&tmp.path().join("ready"));
        std::thread::sleep(Duration::from_millis(40 + round * 53));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let s = open(&d);
        let (_, hot) = s.get_object("bkt", "hot", None, &GetOptions::default()).unwrap();
        seen.insert(check_whole(&hot));
        let mut token = None;
        loop {
            let req = bucketfs::backend::ListRequest {
                prefix: "new/".into(),
                continuation: token,
                ..Default::default()
            };
            let page = s.list_objects("bkt", &req).unwrap();
            for o in &page.objects {
                match s.get_object("bkt", &o.key, None, &GetOptions::default()) {
                    Ok((m, data)) => {
                        assert_eq!(m.size, data.len() as u64);
                        check_whole(&data);
                    }
                    // Deleted between listing and reading is fine; garbage is not.
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => panic!("{}: {e}", o.key),
                }
            }
            token = page.next_continuation;
            if token.is_none() {
                break;
            }
        }
        let sum = s.heal(None, true).unwrap();
        assert_eq!(sum.failed, 0, "round {round}: {sum}");
        // Release the drives (including any heal the reads queued) for the next child.
        s.close();
    }
    // The child did make progress at least once (otherwise the test proves nothing).
    assert!(seen.iter().any(|&g| g > 0), "writer never completed a write: {seen:?}");
}

#[test]
fn second_process_gets_a_lock_error_naming_the_holder() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 4);
    open(&d).close();
    let mut child = spawn_child("holder", tmp.path());
    wait_for(&tmp.path().join("ready"));
    let err = Store::open(StoreConfig { drives: d.clone(), parity: None }).unwrap_err();
    child.kill().unwrap();
    child.wait().unwrap();
    match &err {
        StoreError::Locked { holder, .. } => {
            assert!(holder.contains(&format!("pid {}", child.id())), "holder {holder:?}");
        }
        e => panic!("expected a lock error, got {e}"),
    }
    assert!(err.to_string().contains("locked by another process"));
    // Once the holder is gone the drives open again.
    drop(open(&d));
}

#[test]
fn multipart_parts_from_two_processes() {
    let tmp = tempfile::tempdir().unwrap();
    let d = drives(tmp.path(), 4);
    let p1 = vec![1u8; 5 * MIB];
    let id = {
        let s = open(&d);
        s.make_bucket("bkt").unwrap();
        let id = s.create_multipart_upload("bkt", "mp", &PutOptions::default()).unwrap();
        s.put_part("bkt", "mp", &id, 1, &mut &p1[..]).unwrap();
        s.close();
        id
    };
    std::fs::write(tmp.path().join("upload-id"), &id).unwrap();
    let status = spawn_child("part2", tmp.path()).wait().unwrap();
    assert!(status.success());
    let s = open(&d);
    let parts = s.list_parts("bkt", "mp", &id).unwrap();
    assert_eq!(parts.iter().map(|p| p.part_number).collect::<Vec<_>>(), vec![1, 2]);
    let m = s.complete_multipart_upload("bkt", "mp", &id, &parts).unwrap();
    assert!(m.etag.ends_with("-2"));
    let (_, data) = s.get_object("bkt", "mp", None, &GetOptions::default()).unwrap();
    assert_eq!(data.len(), 8 * MIB);
    assert!(data[..5 * MIB].iter().all(|&b| b == 1) && data[5 * MIB..].iter().all(|&b| b == 2));
}
