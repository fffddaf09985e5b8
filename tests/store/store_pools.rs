//! Server pools of the embedded store: a pool added to a deployment with
//! data leaves the old pool's format and objects alone and takes new objects;
//! new objects are spread by free space; listings, copy, delete and multipart
//! uploads span pools; a reordered, shortened or changed spec is refused with
//! a message naming what differs; and, through the binary, BUCKETFS_DRIVES
//! with `;` between pools and `bucketfs serve` with `--drives` repeated.

use crate::s3_support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use bucketfs::backend::{CompletedPart, GetOptions, ListRequest, PutOptions};
use bucketfs::store::{Store, StoreConfig, StoreError};
use s3_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_bucketfs");
const MIB: usize = 1 << 20;

fn drives(dir: &Path, name: &str, n: usize) -> Vec<PathBuf> {
    (1..=n).map(|i| dir.join(format!("{name}{i}"))).collect()
}

fn open(pools: &[&Vec<PathBuf>]) -> Arc<Store> {
    Store::open_pools(pools.iter().map(|p| p.to_vec()).collect(), None).unwrap()
}

fn open_err(pools: &[&Vec<PathBuf>]) -> String {
    Store::open_pools(pools.iter().map(|p| p.to_vec()).collect(), None).unwrap_err().to_string()
}

fn body(key: &str, len: usize) -> Vec<u8> {
    key.bytes().cycle().take(len).collect()
}

fn put(s: &Store, key: &str, data: &[u8]) {
    s.put_object("bkt", key, data, &PutOptions::default()).unwrap_or_else(|e| panic!("{key}: {e}"));
}

fn get(s: &Store, key: &str) -> Vec<u8> {
    s.get_object("bkt", key, None, &GetOptions::default()).unwrap_or_else(|e| panic!("{key}: {e}")).1
}

/// True if any of `d` holds metadata of `key` (a flat key of plain characters).
fn on(d: &[PathBuf], key: &str) -> bool {
    d.iter().any(|p| p.join("bkt").join(key).join("%meta").exists())
}

fn close(s: Arc<Store>) {
    s.close();
    drop(s);
}

/// Every object and common prefix of a listing, paged `max` at a time.
fn list_all(s: &Store, prefix: &str, delimiter: Option<&str>, max: usize) -> (Vec<String>, Vec<String>) {
    let (mut keys, mut cps, mut token) = (Vec::new(), Vec::new(), None);
    loop {
        let req = ListRequest {
            prefix: prefix.into(),
            delimiter: delimiter.map(String::from),
            continuation: token,
            max_keys: max,
        };
        let page = s.list_objects("bkt", &req).unwrap();
        assert!(page.objects.len() + page.common_prefixes.len() <= max, "page over {max}");
        keys.extend(page.objects.into_iter().map(|o| o.key));
        cps.extend(page.common_prefixes);
        token = page.next_continuation;
        if token.is_none() {
            return (keys, cps);
        }
    }
}

fn sys_file(d: &Path, name: &str) -> PathBuf {
    d.join(".bucketfs.sys").join(name)
}

#[test]
fn a_second_pool_keeps_old_objects_and_takes_new_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let a = drives(tmp.path(), "a", 4);
    let b = drives(tmp.path(), "b", 4);
    let s = Store::open(StoreConfig { drives: a.clone(), parity: None }).unwrap();
    s.make_bucket("bkt").unwrap();
    let old: Vec<String> = (0..30).map(|i| format!("old{i:02}")).collect();
    for (i, k) in old.iter().enumerate() {
        put(&s, k, &body(k, if i == 0 { 3 * MIB + 5 } else { 1000 + i }));
    }
    close(s);
    assert!(!sys_file(&a[0], "pools.json").exists(), "a one-pool store records no pool list");
    let formats: Vec<Vec<u8>> =
        a.iter().map(|d| std::fs::read(sys_file(d, "format.json")).unwrap()).collect();

    let s = open(&[&a, &b]);
    assert_eq!(s.pool_count(), 2);
    assert_eq!(s.pool_drives(1), &b[..]);
    for (d, f) in a.iter().zip(&formats) {
        assert_eq!(&std::fs::read(sys_file(d, "format.json")).unwrap(), f, "{} rewritten", d.display());
    }
    let fb = String::from_utf8(std::fs::read(sys_file(&b[0], "format.json")).unwrap()).unwrap();
    assert!(fb.contains("\"version\": 3") && fb.contains("\"pool\": 1"), "{fb}");
    assert!(fb.contains(s.deployment_id()), "new pool joins the deployment: {fb}");
    for d in a.iter().chain(&b) {
        let pj = std::fs::read_to_string(sys_file(d, "pools.json")).unwrap();
        assert!(pj.contains(s.deployment_id()) && pj.matches("\"drives\": 4").count() == 2, "{pj}");
    }
    // Old objects stay where they were; the bucket exists in the new pool too.
    for (i, k) in old.iter().enumerate() {
        assert_eq!(get(&s, k), body(k, if i == 0 { 3 * MIB + 5 } else { 1000 + i }));
        assert_eq!(s.pool_of("bkt", k).unwrap(), Some(0));
        assert!(!on(&b, k), "{k} moved to the new pool");
    }
    assert!(b.iter().all(|d| d.join("bkt").is_dir()));
    // New objects go to both pools (same free space per drive: about half each).
    let new: Vec<String> = (0..200).map(|i| format!("new{i:03}")).collect();
    for k in &new {
        put(&s, k, &body(k, 700));
    }
    let in_b = new.iter().filter(|k| s.pool_of("bkt", k).unwrap() == Some(1)).count();
    assert!((40..=160).contains(&in_b), "{in_b} of 200 new objects in the new pool");
    for k in &new {
        let p = s.pool_of("bkt", k).unwrap().unwrap();
        assert_eq!((on(&a, k), on(&b, k)), (p == 0, p == 1), "{k}");
    }
    // Overwriting an old object keeps it in its pool.
    put(&s, &old[1], b"rewritten");
    assert_eq!(s.pool_of("bkt", &old[1]).unwrap(), Some(0));
    assert!(!on(&b, &old[1]));
    close(s);

    let s = open(&[&a, &b]);
    let (keys, _) = list_all(&s, "", None, 1000);
    assert_eq!(keys.len(), 230);
    assert_eq!(get(&s, &old[1]), b"rewritten");
    for k in new.iter().step_by(17) {
        assert_eq!(get(&s, k), body(k, 700));
    }
    close(s);

    // A wiped drive of the new pool comes back into its slot of that pool and is healed.
    let id = std::fs::read_to_string(sys_file(&b[2], "format.json")).unwrap();
    std::fs::remove_dir_all(&b[2]).unwrap();
    std::fs::create_dir(&b[2]).unwrap();
    let s = open(&[&a, &b]);
    assert_eq!(std::fs::read_to_string(sys_file(&b[2], "format.json")).unwrap(), id);
    assert!(sys_file(&b[2], "pools.json").exists());
    s.heal(None, false).unwrap();
    let in_b: Vec<&String> = new.iter().filter(|k| s.pool_of("bkt", k).unwrap() == Some(1)).collect();
    assert!(in_b.iter().all(|k| on(&b[2..3], k)), "pool 2's objects healed onto its replaced drive");
    close(s);
}

/// New objects are spread at random weighted by the free space of their
/// target set: a pool of 6 drives on the same file system as a pool of 2
/// has three times the free bytes and takes about three times the objects.
#[test]
fn new_objects_are_weighted_by_free_space() {
    let tmp = tempfile::tempdir().unwrap();
    let a = drives(tmp.path(), "a", 2);
    let b = drives(tmp.path(), "b", 6);
    let s = open(&[&a, &b]);
    s.make_bucket("bkt").unwrap();
    let mut counts = [0usize; 2];
    for i in 0..400 {
        let k = format!("k{i:03}");
        put(&s, &k, b"x");
        counts[s.pool_of("bkt", &k).unwrap().unwrap()] += 1;
    }
    // Expected 100 / 300; equal weights would give 200 / 200.
    assert!(counts[0] > 0 && counts[1] as f64 > 1.8 * counts[0] as f64, "{counts:?}");
    close(s);
}

#[test]
fn listings_merge_pools_with_pagination_and_a_key_in_two_pools_shows_once() {
    let tmp = tempfile::tempdir().unwrap();
    let a = drives(tmp.path(), "a", 3);
    let b = drives(tmp.path(), "b", 3);
    let s = open(&[&a, &b]);
    s.make_bucket("bkt").unwrap();
    let mut want = BTreeSet::new();
    for i in 0..90 {
        let k = if i % 3 == 0 { format!("top{i:02}") } else { format!("dir{}/f{i:02}", i % 5) };
        put(&s, &k, &body(&k, 10 + i));
        want.insert(k);
    }
    let pools: BTreeSet<usize> = want.iter().map(|k| s.pool_of("bkt", k).unwrap().unwrap()).collect();
    assert_eq!(pools.len(), 2, "both pools hold objects");
    let want: Vec<String> = want.into_iter().collect();
    for max in [1, 7, 1000] {
        assert_eq!(list_all(&s, "", None, max).0, want, "max {max}");
        let (keys, cps) = list_all(&s, "", Some("/"), max);
        assert_eq!(keys, want.iter().filter(|k| !k.contains('/')).cloned().collect::<Vec<_>>());
        assert_eq!(cps, (0..5).map(|d| format!("dir{d}/")).collect::<Vec<_>>(), "max {max}");
        let (keys, _) = list_all(&s, "dir2/", Some("/"), max);
        assert_eq!(keys, want.iter().filter(|k| k.starts_with("dir2/")).cloned().collect::<Vec<_>>());
    }
    // A key in two pools (a race the route lock prevents in-process; another
    // process or a crash could leave one): listed and read once, as its newest copy.
    s.pool_sets(0)[0].put_object("bkt", "dup", b"old", &PutOptions::default()).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    s.pool_sets(1)[0].put_object("bkt", "dup", b"newer", &PutOptions::default()).unwrap();
    let page =
        s.list_objects("bkt", &ListRequest { prefix: "du".into(), max_keys: 10, ..Default::default() });
    let page = page.unwrap();
    assert_eq!(page.objects.iter().map(|o| (o.key.as_str(), o.size)).collect::<Vec<_>>(), [("dup", 5)]);
    assert_eq!(get(&s, "dup"), b"newer");
    assert_eq!(list_all(&s, "", None, 7).0.len(), 91);
    s.delete_object("bkt", "dup").unwrap();
    assert!(!on(&a, "dup") && !on(&b, "dup"), "delete removes every pool's copy");
    assert!(matches!(s.head_object("bkt", "dup"), Err(StoreError::NotFound { .. })));
    close(s);
}

/// The pool whose drives hold upload `id`'s directory.
fn upload_pool(pools: &[&Vec<PathBuf>], id: &str) -> usize {
    let has = |d: &PathBuf| d.join(".bucketfs.sys/multipart/bkt").join(id).is_dir();
    let found: Vec<usize> = (0..pools.len()).filter(|&p| pools[p].iter().any(has)).collect();
    assert_eq!(found.len(), 1, "upload {id} in pools {found:?}");
    found[0]
}

fn upload(s: &Store, key: &str, id: &str, tail: u8) -> Vec<u8> {
    let parts = [vec![1u8; 5 * MIB], vec![tail; 1000]];
    let mut done: Vec<CompletedPart> = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        done.push(s.put_part("bkt", key, id, i as u32 + 1, &mut p.as_slice()).unwrap());
    }
    assert_eq!(s.list_parts("bkt", key, id).unwrap().len(), 2);
    s.complete_multipart_upload("bkt", key, id, &done).unwrap();
    parts.concat()
}

#[test]
fn copy_delete_and_multipart_span_pools() {
    let tmp = tempfile::tempdir().unwrap();
    let a = drives(tmp.path(), "a", 4);
    let b = drives(tmp.path(), "b", 4);
    let pools = [&a, &b];
    let s = open(&pools);
    s.make_bucket("bkt").unwrap();
    let keys: Vec<String> = (0..40).map(|i| format!("k{i:02}")).collect();
    for k in &keys {
        put(&s, k, &body(k, 2000));
    }
    let in_pool = |p: usize| keys.iter().find(|k| s.pool_of("bkt", k).unwrap() == Some(p)).unwrap().clone();
    let (k0, k1) = (in_pool(0), in_pool(1));

    // Copy to a new key, and over an existing key of the other pool (it stays put).
    s.copy_object("bkt", &k0, "copy-of-k0", None).unwrap();
    assert_eq!(get(&s, "copy-of-k0"), body(&k0, 2000));
    s.copy_object("bkt", &k1, &k0, None).unwrap();
    assert_eq!(get(&s, &k0), body(&k1, 2000));
    assert_eq!(s.pool_of("bkt", &k0).unwrap(), Some(0));
    assert!(!on(&b, &k0));
    // Delete in the second pool.
    s.delete_object("bkt", &k1).unwrap();
    assert!(matches!(s.head_object("bkt", &k1), Err(StoreError::NotFound { .. })));
    assert!(!on(&a, &k1) && !on(&b, &k1));

    // New keys' uploads land in either pool; parts and completion follow them.
    let mut ids: Vec<(String, String, usize)> = Vec::new();
    for i in 0..64 {
        let key = format!("mp{i:02}");
        let id = s.create_multipart_upload("bkt", &key, &PutOptions::default()).unwrap();
        let p = upload_pool(&pools, &id);
        ids.push((key, id, p));
        if ids.iter().any(|u| u.2 == 0) && ids.iter().any(|u| u.2 == 1) {
            break;
        }
    }
    let listed = s.list_multipart_uploads("bkt", "mp").unwrap();
    assert_eq!(listed.iter().map(|u| u.upload_id.clone()).collect::<BTreeSet<_>>().len(), ids.len());
    for p in 0..2 {
        let (key, id, _) = ids.iter().find(|u| u.2 == p).unwrap().clone();
        let data = upload(&s, &key, &id, p as u8 + 7);
        assert_eq!(get(&s, &key), data);
        assert_eq!(s.pool_of("bkt", &key).unwrap(), Some(p), "{key} completed outside its upload's pool");
    }
    // An upload of an existing key goes to its pool.
    let k1b = in_pool(1);
    let id = s.create_multipart_upload("bkt", &k1b, &PutOptions::default()).unwrap();
    assert_eq!(upload_pool(&pools, &id), 1);
    // A key written elsewhere while its upload ran: completion leaves one copy, the upload's.
    let (key, id) = (0..64)
        .find_map(|i| {
            let key = format!("race{i:02}");
            let id = s.create_multipart_upload("bkt", &key, &PutOptions::default()).unwrap();
            let up = upload_pool(&pools, &id);
            put(&s, &key, b"plain put");
            if s.pool_of("bkt", &key).unwrap() != Some(up) {
                return Some((key, id));
            }
            s.abort_multipart_upload("bkt", &key, &id).unwrap();
            None
        })
        .unwrap();
    let up = upload_pool(&pools, &id);
    let data = upload(&s, &key, &id, 3);
    assert_eq!(get(&s, &key), data);
    assert_eq!((on(&a, &key), on(&b, &key)), (up == 0, up == 1), "one copy, in the upload's pool");
    // Abort spans pools.
    s.abort_multipart_upload(
        "bkt",
        &k1b,
        s.list_multipart_uploads("bkt", &k1b).unwrap()[0].upload_id.as_str(),
    )
    .unwrap();
    // Left: every "mp" upload but the two completed.
    assert_eq!(s.abort_uploads_under("bkt", "").unwrap(), ids.len() - 2);
    assert!(s.list_multipart_uploads("bkt", "").unwrap().is_empty());
    close(s);
}

#[test]
fn reordered_shortened_or_changed_specs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let a = drives(tmp.path(), "a", 4);
    let b = drives(tmp.path(), "b", 4);
    let c = drives(tmp.path(), "c", 4);
    let s = open(&[&a, &b]);
    s.make_bucket("bkt").unwrap();
    put(&s, "kept", b"data");
    close(s);

    let e = open_err(&[&b, &a]);
    assert!(e.contains("pool order mismatch") && e.contains(&b[0].display().to_string()), "{e}");
    assert!(e.contains("listed in pool 1") && e.contains("part of pool 2"), "{e}");
    let e = open_err(&[&a]);
    assert!(
        e.contains("the deployment has 2 server pools but 1 drive spec(s) were given (pool 2 has 4 drives)"),
        "{e}"
    );
    let e = open_err(&[&a, &b[..2].to_vec()]);
    assert!(e.contains("pool 2: the pool has 4 drives (1 erasure sets) but the spec lists 2"), "{e}");
    let mut swapped = b.clone();
    swapped.swap(0, 1);
    let e = open_err(&[&a, &swapped]);
    assert!(
        e.contains("pool 2: drive order mismatch")
            && e.contains("position 1 but was formatted as drive 2 of the pool"),
        "{e}"
    );
    let e = open_err(&[&a, &c]);
    assert!(e.contains("pool 2 (4 drives from ") && e.contains("the deployment already has 2 pools"), "{e}");
    assert!(!sys_file(&c[0], "format.json").exists(), "a refused spec formatted a drive");
    // A pool of another deployment cannot be mixed in.
    let other = drives(tmp.path(), "x", 2);
    close(Store::open(StoreConfig { drives: other.clone(), parity: None }).unwrap());
    let e = open_err(&[&a, &b, &other]);
    assert!(e.contains("pool order mismatch") || e.contains("different deployments"), "{e}");

    // None of that touched the deployment; a third pool can still be added.
    let s = open(&[&a, &b, &c]);
    assert_eq!(s.pool_count(), 3);
    assert_eq!(get(&s, "kept"), b"data");
    close(s);
    let e = open_err(&[&a, &b]);
    assert!(e.contains("has 3 server pools but 2"), "{e}");
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str], env_drives: Option<&str>) -> String {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env_remove("BUCKETFS_DRIVES");
    if let Some(d) = env_drives {
        cmd.env("BUCKETFS_DRIVES", d);
    }
    let out = cmd.output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "bucketfs {args:?}: {text}");
    text
}

/// Through the binary: `mb` with BUCKETFS_DRIVES naming two pools (`;`),
/// `bucketfs serve --drives A --drives B` answering S3 puts, paged listings,
/// copy, delete and a multipart upload across both pools, and `stats`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_spans_pools_given_by_repeated_flags_and_the_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let (spec_a, spec_b) =
        (format!("{}/a{{1...4}}", tmp.path().display()), format!("{}/b{{1...4}}", tmp.path().display()));
    let (a, b) = (drives(tmp.path(), "a", 4), drives(tmp.path(), "b", 4));
    let text = run(&["mb", "bkt"], Some(&format!("{spec_a}; {spec_b}")));
    assert!(text.contains("created bucket bkt"), "{text}");
    assert!(sys_file(&b[0], "format.json").exists() && sys_file(&a[0], "pools.json").exists());

    let port = free_port();
    let log = tmp.path().join("serve.log");
    let serve = Serve(
        Command::new(BIN)
            .args([
                "serve",
                "--drives",
                &spec_a,
                "--drives",
                &spec_b,
                "--address",
                &format!("127.0.0.1:{port}"),
            ])
            .env_remove("BUCKETFS_DRIVES")
            .env("BUCKETFS_ACCESS_KEY", ACCESS_KEY)
            .env("BUCKETFS_SECRET_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "serve did not listen: {}",
            std::fs::read_to_string(&log).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let c = admin_client(&format!("http://127.0.0.1:{port}")).await;
    let keys: Vec<String> = (0..40).map(|i| format!("o{i:02}")).collect();
    for k in &keys {
        c.put_object().bucket("bkt").key(k).body(ByteStream::from(body(k, 3000))).send().await.unwrap();
    }
    c.copy_object().bucket("bkt").key("copied").copy_source(format!("bkt/{}", keys[3])).send().await.unwrap();
    c.delete_object().bucket("bkt").key(&keys[5]).send().await.unwrap();
    let mp = c.create_multipart_upload().bucket("bkt").key("multi").send().await.unwrap();
    let id = mp.upload_id().unwrap();
    let mut done = Vec::new();
    for (n, part) in [vec![5u8; 5 * MIB], vec![6u8; 100]].into_iter().enumerate() {
        let r = c
            .upload_part()
            .bucket("bkt")
            .key("multi")
            .upload_id(id)
            .part_number(n as i32 + 1)
            .body(ByteStream::from(part))
            .send()
            .await
            .unwrap();
        done.push(
            aws_sdk_s3::types::CompletedPart::builder()
                .part_number(n as i32 + 1)
                .e_tag(r.e_tag().unwrap())
                .build(),
        );
    }
    let parts = aws_sdk_s3::types::CompletedMultipartUpload::builder().set_parts(Some(done)).build();
    c.complete_multipart_upload()
        .bucket("bkt")
        .key("multi")
        .upload_id(id)
        .multipart_upload(parts)
        .send()
        .await
        .unwrap();

    let mut listed = Vec::new();
    let mut token = None;
    loop {
        let page =
            c.list_objects_v2().bucket("bkt").max_keys(7).set_continuation_token(token).send().await.unwrap();
        listed.extend(page.contents().iter().map(|o| o.key().unwrap().to_string()));
        token = page.next_continuation_token().map(String::from);
        if token.is_none() {
            break;
        }
    }
    let mut want: Vec<String> = keys.iter().filter(|k| **k != keys[5]).cloned().collect();
    want.extend(["copied".to_string(), "multi".to_string()]);
    want.sort();
    assert_eq!(listed, want);
    let got = c.get_object().bucket("bkt").key("copied").send().await.unwrap().body.collect().await.unwrap();
    assert_eq!(got.into_bytes().as_ref(), body(&keys[3], 3000).as_slice());
    let got = c.get_object().bucket("bkt").key("multi").send().await.unwrap().body.collect().await.unwrap();
    assert_eq!(got.into_bytes().len(), 5 * MIB + 100);
    drop(serve);

    // Both pools took objects, each object is in exactly one.
    let in_a = want.iter().filter(|k| on(&a, k)).count();
    let in_b = want.iter().filter(|k| on(&b, k)).count();
    assert!(in_a > 0 && in_b > 0 && in_a + in_b == want.len(), "{in_a} + {in_b} of {}", want.len());
    let text = run(&["stats"], Some(&format!("{spec_a};{spec_b}")));
    assert!(
        text.contains("drives: 8 in 2 server pools")
            && text.contains("  pool 2: 4 drives in 1 erasure set(s)"),
        "{text}"
    );
    // A serve with the pools swapped refuses to start, naming the problem.
    let out = Command::new(BIN)
        .args([
            "serve",
            "--drives",
            &spec_b,
            "--drives",
            &spec_a,
            "--address",
            &format!("127.0.0.1:{}", free_port()),
        ])
        .env_remove("BUCKETFS_DRIVES")
        .env("BUCKETFS_ACCESS_KEY", ACCESS_KEY)
        .env("BUCKETFS_SECRET_KEY", SECRET_KEY)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pool order mismatch"), "{err}");
}
