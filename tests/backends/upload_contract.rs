//! The multipart upload contract (src/upload/contract.rs), every invariant against
//! every backend available in tests. A row is one line in `rows!` below; each row
//! becomes its own test so backends run in parallel and fail separately.
//!
//! Each row also runs the cross-process scenario: `bucketfs upload start` in one
//! process, two `bucketfs upload put-part` processes uploading different parts at
//! the same time, and a third process completing it. The embedded store takes an
//! exclusive lock on its drives per process, so on the `local://` row the two
//! part uploaders run one after the other (the `bucketfs serve` row is the same
//! store reached concurrently).
//!
//! GCS runs against fake-gcs-server and Azure against Azurite (tests/cloud_support).

use crate::cloud_support;
use crate::common;
use crate::s3_support;
use bucketfs::backend::ErrorKind;

use std::process::{Command, Stdio};
use std::sync::Arc;

use bucketfs::backend::local::LocalBackend;
use bucketfs::backend::{BackendError, GetOptions, PutOptions, StorageBackend};
use bucketfs::store::{parse_drive_spec, Store, StoreConfig};
use bucketfs::upload::contract::{ContractError, MultipartUploader, PartHandle, UploadHandle};
use bytes::Bytes;
use common::{pattern, Drives, BIN};

const MIB: usize = 1 << 20;

/// Opens an uploader; the closer releases what it holds (the embedded store's drive locks).
type Opener = Box<dyn Fn(&tokio::runtime::Runtime) -> (MultipartUploader, Box<dyn FnOnce()>)>;

/// One backend under test.
struct Fixture {
    /// Bucket URL, e.g. `s3://bfs-contract-1`.
    bucket_url: String,
    /// Flags that let a `bucketfs` process reach the bucket.
    cli: Vec<String>,
    open: Opener,
    /// Whether two processes may use the bucket at the same time.
    concurrent_processes: bool,
    _keep: Option<Drives>,
}

fn local_fixture() -> Fixture {
    let drives = Drives::new(4);
    drives.make_bucket("contract");
    let spec = drives.spec.clone();
    Fixture {
        bucket_url: "local://contract".into(),
        cli: vec!["--drives".into(), spec.clone()],
        open: Box::new(move |_| {
            let store =
                Store::open(StoreConfig { drives: parse_drive_spec(&spec).unwrap(), parity: None }).unwrap();
            let be: Arc<dyn StorageBackend> = Arc::new(LocalBackend::new(store.clone(), "contract"));
            (MultipartUploader::new(be, "local://contract"), Box::new(move || store.close()))
        }),
        concurrent_processes: false,
        _keep: Some(drives),
    }
}

fn s3_fixture(endpoint: &'static str, tag: &str, rt: &tokio::runtime::Runtime) -> Fixture {
    let bucket = s3_support::unique_bucket(tag);
    rt.block_on(s3_support::make_bucket(endpoint, &bucket));
    let url = format!("s3://{bucket}");
    let u2 = url.clone();
    Fixture {
        bucket_url: url,
        cli: vec!["--endpoint".into(), endpoint.into()],
        open: Box::new(move |rt| {
            let be: Arc<dyn StorageBackend> =
                Arc::new(rt.block_on(s3_support::backend(endpoint, u2.trim_start_matches("s3://"))));
            (MultipartUploader::new(be, &u2), Box::new(|| ()))
        }),
        concurrent_processes: true,
        _keep: None,
    }
}

fn gateway_fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    s3_fixture(&s3_support::gateway().endpoint, "cgw", rt)
}

fn seaweed_fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    s3_fixture(&s3_support::seaweed().endpoint, "cwd", rt)
}

fn moto_fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    s3_fixture(&s3_support::moto().endpoint, "cmoto", rt)
}

fn gcs_fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let bucket = s3_support::unique_bucket("cgcs");
    rt.block_on(cloud_support::gcs_bucket(&bucket));
    let url = format!("gs://{bucket}");
    let u2 = url.clone();
    Fixture {
        bucket_url: url,
        cli: vec!["--endpoint".into(), cloud_support::fake_gcs().endpoint.clone()],
        open: Box::new(move |rt| {
            let be: Arc<dyn StorageBackend> =
                Arc::new(rt.block_on(cloud_support::gcs_backend(u2.trim_start_matches("gs://"))));
            (MultipartUploader::new(be, &u2), Box::new(|| ()))
        }),
        concurrent_processes: true,
        _keep: None,
    }
}

fn azure_fixture(rt: &tokio::runtime::Runtime) -> Fixture {
    let container = s3_support::unique_bucket("caz");
    rt.block_on(cloud_support::azure_container(&container));
    let url = format!("wasb://{container}");
    let u2 = url.clone();
    Fixture {
        bucket_url: url,
        cli: vec!["--endpoint".into(), cloud_support::azurite().endpoint.clone()],
        open: Box::new(move |_| {
            let be: Arc<dyn StorageBackend> =
                Arc::new(cloud_support::azure_backend(u2.trim_start_matches("wasb://")));
            (MultipartUploader::new(be, &u2), Box::new(|| ()))
        }),
        concurrent_processes: true,
        _keep: None,
    }
}

type Check = fn(&tokio::runtime::Runtime, &MultipartUploader);

/// Every invariant of the contract, by name.
const CHECKS: &[(&str, Check)] = &[
    ("root and directories are not file paths", root_and_directories_refused),
    ("nothing visible until complete; parts joined in number order", joined_in_number_order),
    ("parts not named in complete are dropped", unnamed_parts_dropped),
    ("completed and aborted handles are dead", finished_handles_dead),
    ("unknown upload handle", unknown_handle),
    ("part numbers below 1", bad_part_numbers),
    ("duplicate parts in complete", duplicate_parts),
    ("non-last parts below the minimum size", small_parts_refused),
    ("a path or bucket other than the handle's", path_mismatch),
    ("abort_uploads_under counts and spares other prefixes", abort_under),
];

fn run_row(make: fn(&tokio::runtime::Runtime) -> Fixture) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fx = make(&rt);
    {
        let (up, close) = (fx.open)(&rt);
        for (name, check) in CHECKS {
            eprintln!("contract on {}: {name}", fx.bucket_url);
            check(&rt, &up);
        }
        close();
    }
    eprintln!("contract on {}: parts from two processes, completed by a third", fx.bucket_url);
    parts_from_several_processes(&rt, &fx);
}

macro_rules! rows {
    ($($name:ident => $fixture:expr,)*) => {$(
        #[test]
        fn $name() {
            run_row($fixture);
        }
    )*};
}

rows! {
    embedded_store => |_| local_fixture(),
    bucketfs_serve => gateway_fixture,
    seaweedfs => seaweed_fixture,
    moto => moto_fixture,
    gcs_fake_gcs_server => gcs_fixture,
    azure_azurite => azure_fixture,
}

// ---------------------------------------------------------------- helpers

fn unique_key(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("c/{tag}-{}", N.fetch_add(1, Ordering::Relaxed))
}

fn put(
    rt: &tokio::runtime::Runtime,
    up: &MultipartUploader,
    h: &UploadHandle,
    n: u32,
    data: &[u8],
) -> PartHandle {
    rt.block_on(up.put_part(h, n, Bytes::copy_from_slice(data))).unwrap_or_else(|e| panic!("part {n}: {e}"))
}

fn read(rt: &tokio::runtime::Runtime, up: &MultipartUploader, key: &str) -> Result<Vec<u8>, BackendError> {
    rt.block_on(up.backend().get_range(key, None, &GetOptions::default())).map(|r| r.data.to_vec())
}

fn pending(rt: &tokio::runtime::Runtime, up: &MultipartUploader, key: &str) -> usize {
    rt.block_on(up.list_uploads("")).unwrap().iter().filter(|u| u.key == key).count()
}

/// Handles travel as text: every test goes through a text round trip.
fn relay(h: &UploadHandle) -> UploadHandle {
    UploadHandle::parse(&h.to_text()).unwrap()
}

// ---------------------------------------------------------------- invariants

fn root_and_directories_refused(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    for p in ["/", "", "dirx/"] {
        assert!(matches!(rt.block_on(up.start_upload(p)), Err(ContractError::NotAFile(_))), "{p:?}");
    }
    rt.block_on(up.backend().put("dirx/inside", Bytes::from_static(b"x"), &PutOptions::default())).unwrap();
    assert!(matches!(rt.block_on(up.start_upload("dirx")), Err(ContractError::NotAFile(_))));
    assert!(matches!(rt.block_on(up.start_upload("/dirx")), Err(ContractError::NotAFile(_))));
}

fn joined_in_number_order(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("order");
    let h = relay(&rt.block_on(up.start_upload(&format!("/{key}"))).unwrap());
    assert!(!h.to_text().is_empty());
    let (p1, p2, p3) = (pattern(5 * MIB, 1), pattern(5 * MIB, 2), pattern(12345, 3));
    // uploaded last-first, concurrently with each other
    let (h3, h1, h2) = rt.block_on(async {
        tokio::join!(
            up.put_part(&h, 3, Bytes::from(p3.clone())),
            up.put_part(&h, 1, Bytes::from(p1.clone())),
            up.put_part(&h, 2, Bytes::from(p2.clone()))
        )
    });
    let (h1, h2, h3) = (h1.unwrap(), h2.unwrap(), h3.unwrap());
    assert!(
        matches!(read(rt, up, &key), Err(BackendError { kind: ErrorKind::NotFound, .. })),
        "visible before complete"
    );
    let parts = vec![
        (3, PartHandle::parse(&h3.to_text()).unwrap()),
        (1, PartHandle::parse(&h1.to_text()).unwrap()),
        (2, h2),
    ];
    let done = rt.block_on(up.complete(&h, &key, &parts)).unwrap();
    let want: Vec<u8> = [p1, p2, p3].concat();
    assert_eq!(done.size, want.len() as u64);
    assert!(read(rt, up, &key).unwrap() == want, "content is not the parts in number order");
    let head = rt.block_on(up.backend().head(&key)).unwrap();
    assert_eq!(head.etag, done.etag, "the path handle names the written version");
    assert_eq!(pending(rt, up, &key), 0);
}

fn unnamed_parts_dropped(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("unnamed");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let (a, b, c) = (pattern(5 * MIB, 4), pattern(5 * MIB, 5), pattern(777, 6));
    let ha = put(rt, up, &h, 1, &a);
    let _hb = put(rt, up, &h, 2, &b);
    let hc = put(rt, up, &h, 5, &c);
    rt.block_on(up.complete(&h, &key, &[(1, ha), (5, hc)])).unwrap();
    assert!(read(rt, up, &key).unwrap() == [a, c].concat(), "unnamed part 2 leaked into the file");
    assert_eq!(pending(rt, up, &key), 0, "the upload (and its unnamed part) is still stored");
    assert!(matches!(rt.block_on(up.list_parts(&h)), Err(ContractError::UnknownUpload(_))));
}

fn finished_handles_dead(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("dead");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let p = put(rt, up, &h, 1, b"only part");
    rt.block_on(up.complete(&h, &key, &[(1, p.clone())])).unwrap();
    let again = rt.block_on(up.complete(&h, &key, &[(1, p.clone())]));
    assert!(matches!(again, Err(ContractError::UnknownUpload(_))), "second complete: {again:?}");
    let late = rt.block_on(up.put_part(&h, 2, Bytes::from_static(b"late")));
    assert!(matches!(late, Err(ContractError::UnknownUpload(_))), "put_part after complete: {late:?}");
    assert!(matches!(rt.block_on(up.abort(&h, &key)), Err(ContractError::UnknownUpload(_))));
    assert_eq!(read(rt, up, &key).unwrap(), b"only part");

    let key = unique_key("aborted");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let p = put(rt, up, &h, 1, b"gone");
    rt.block_on(up.abort(&h, &key)).unwrap();
    let late = rt.block_on(up.put_part(&h, 2, Bytes::from_static(b"late")));
    assert!(matches!(late, Err(ContractError::UnknownUpload(_))), "put_part after abort: {late:?}");
    let c = rt.block_on(up.complete(&h, &key, &[(1, p)]));
    assert!(matches!(c, Err(ContractError::UnknownUpload(_))), "complete after abort: {c:?}");
    assert!(matches!(rt.block_on(up.abort(&h, &key)), Err(ContractError::UnknownUpload(_))));
    assert!(matches!(read(rt, up, &key), Err(BackendError { kind: ErrorKind::NotFound, .. })));
    assert_eq!(pending(rt, up, &key), 0);
}

fn unknown_handle(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("unknown");
    let real = rt.block_on(up.start_upload(&key)).unwrap();
    let fake = UploadHandle { upload_id: "0123456789abcdef0123456789abcdef".into(), ..real.clone() };
    let r = rt.block_on(up.put_part(&fake, 1, Bytes::from_static(b"x")));
    assert!(matches!(r, Err(ContractError::UnknownUpload(_))), "put_part with an unknown upload: {r:?}");
    assert!(matches!(rt.block_on(up.abort(&fake, &key)), Err(ContractError::UnknownUpload(_))));
    rt.block_on(up.abort(&real, &key)).unwrap();
    assert!(matches!(UploadHandle::parse("nonsense"), Err(ContractError::BadHandle(_))));
}

fn bad_part_numbers(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("numbers");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let r = rt.block_on(up.put_part(&h, 0, Bytes::from_static(b"x")));
    assert!(matches!(r, Err(ContractError::BadPartNumber(0, _))), "{r:?}");
    let p = put(rt, up, &h, 1, b"x");
    let r = rt.block_on(up.complete(&h, &key, &[(0, p)]));
    assert!(matches!(r, Err(ContractError::BadPartNumber(0, _))), "{r:?}");
    assert!(matches!(rt.block_on(up.complete(&h, &key, &[])), Err(ContractError::NoParts)));
    rt.block_on(up.abort(&h, &key)).unwrap();
}

fn duplicate_parts(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("dups");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let p1 = put(rt, up, &h, 1, &pattern(5 * MIB, 7));
    let p2 = put(rt, up, &h, 2, b"tail");
    let r = rt.block_on(up.complete(&h, &key, &[(1, p1.clone()), (1, p1.clone()), (2, p2.clone())]));
    assert!(matches!(r, Err(ContractError::DuplicatePart(_))), "same number twice: {r:?}");
    let r = rt.block_on(up.complete(&h, &key, &[(1, p1.clone()), (2, p1.clone())]));
    assert!(matches!(r, Err(ContractError::DuplicatePart(_))), "same handle twice: {r:?}");
    // a part handle of another upload
    let other_key = unique_key("dups-other");
    let other = rt.block_on(up.start_upload(&other_key)).unwrap();
    let foreign = put(rt, up, &other, 2, b"tail");
    let r = rt.block_on(up.complete(&h, &key, &[(1, p1.clone()), (2, foreign)]));
    assert!(matches!(r, Err(ContractError::ForeignPart(2))), "{r:?}");
    rt.block_on(up.abort(&other, &other_key)).unwrap();
    // the refusals left the upload usable
    rt.block_on(up.complete(&h, &key, &[(1, p1), (2, p2)])).unwrap();
}

fn small_parts_refused(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("small");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let min = up.backend().capabilities().min_part_size;
    let p1 = put(rt, up, &h, 1, &pattern(1000, 8));
    let p2 = put(rt, up, &h, 2, &pattern(1000, 9));
    match rt.block_on(up.complete(&h, &key, &[(1, p1), (2, p2)])) {
        Err(ContractError::PartTooSmall { part: 1, size: 1000, min: m }) => assert_eq!(m, min),
        r => panic!("expected PartTooSmall for part 1, got {r:?}"),
    }
    assert!(matches!(read(rt, up, &key), Err(BackendError { kind: ErrorKind::NotFound, .. })));
    rt.block_on(up.abort(&h, &key)).unwrap();
}

fn path_mismatch(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let key = unique_key("mismatch");
    let h = rt.block_on(up.start_upload(&key)).unwrap();
    let p = put(rt, up, &h, 1, b"x");
    let r = rt.block_on(up.complete(&h, "c/elsewhere", &[(1, p.clone())]));
    assert!(matches!(r, Err(ContractError::PathMismatch { .. })), "{r:?}");
    assert!(matches!(rt.block_on(up.abort(&h, "c/elsewhere")), Err(ContractError::PathMismatch { .. })));
    let other_bucket = UploadHandle { bucket_url: "s3://some-other-bucket".into(), ..h.clone() };
    let r = rt.block_on(up.put_part(&other_bucket, 2, Bytes::from_static(b"x")));
    assert!(matches!(r, Err(ContractError::PathMismatch { .. })), "{r:?}");
    assert!(matches!(read(rt, up, "c/elsewhere"), Err(BackendError { kind: ErrorKind::NotFound, .. })));
    rt.block_on(up.complete(&h, &format!("/{key}"), &[(1, p)])).unwrap();
}

fn abort_under(rt: &tokio::runtime::Runtime, up: &MultipartUploader) {
    let dir = unique_key("under");
    let inside: Vec<UploadHandle> =
        (0..3).map(|i| rt.block_on(up.start_upload(&format!("{dir}/sub/f{i}"))).unwrap()).collect();
    put(rt, up, &inside[0], 1, b"part");
    let outside = rt.block_on(up.start_upload(&format!("{dir}/subway"))).unwrap();
    match rt.block_on(up.abort_uploads_under(&format!("{dir}/sub"))) {
        Ok(n) => assert_eq!(n, 3),
        Err(ContractError::Unsupported(_)) => {
            for h in &inside {
                rt.block_on(up.abort(h, &h.key.clone())).unwrap();
            }
        }
        Err(e) => panic!("abort_uploads_under: {e}"),
    }
    let left: Vec<String> = rt.block_on(up.list_uploads(&dir)).unwrap().into_iter().map(|u| u.key).collect();
    assert_eq!(left, vec![outside.key.clone()]);
    for h in &inside {
        assert!(matches!(
            rt.block_on(up.put_part(h, 2, Bytes::from_static(b"x"))),
            Err(ContractError::UnknownUpload(_))
        ));
    }
    rt.block_on(up.abort(&outside, &outside.key.clone())).unwrap();
}

// ---------------------------------------------------------------- processes

fn bucketfs(fx: &Fixture, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.args(args).args(&fx.cli).stdin(Stdio::null());
    c
}

fn stdout_of(mut c: Command) -> String {
    let out = c.output().unwrap();
    assert!(out.status.success(), "{c:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn parts_from_several_processes(rt: &tokio::runtime::Runtime, fx: &Fixture) {
    let dir = tempfile::tempdir_in(common::test_root()).unwrap();
    let data = pattern(10 * MIB + 4321, 42);
    let src = dir.path().join("src");
    std::fs::write(&src, &data).unwrap();
    let url = format!("{}/c/processes", fx.bucket_url);
    let handle = stdout_of(bucketfs(fx, &["upload", "start", &url]));
    let src_s = src.to_str().unwrap();
    let part_cmd = |n: &str, offset: &str, length: Option<&str>| {
        let mut args = vec!["upload", "put-part", handle.as_str(), n, src_s, "--offset", offset];
        if let Some(l) = length {
            args.extend(["--length", l]);
        }
        let mut c = bucketfs(fx, &args);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // machine B sends the second half (parts 2 and 3), machine A the first part
    let (cmd_a, cmd_b) = (part_cmd("1", "0", Some("5M")), part_cmd("3", "10M", None));
    let outputs = if fx.concurrent_processes {
        let children: Vec<_> = [cmd_a, cmd_b].into_iter().map(|mut c| c.spawn().unwrap()).collect();
        children.into_iter().map(|c| c.wait_with_output().unwrap()).collect::<Vec<_>>()
    } else {
        [cmd_a, cmd_b].into_iter().map(|mut c| c.output().unwrap()).collect()
    };
    let mut lines = Vec::new();
    for o in outputs {
        assert!(o.status.success(), "put-part failed: {}", String::from_utf8_lossy(&o.stderr));
        lines.push(String::from_utf8(o.stdout).unwrap().trim().to_owned());
    }
    lines.push(stdout_of(part_cmd("2", "5M", Some("5M"))));
    let parts_file = dir.path().join("parts");
    std::fs::write(&parts_file, lines.join("\n")).unwrap();
    let done =
        stdout_of(bucketfs(fx, &["upload", "complete", &handle, "--parts", parts_file.to_str().unwrap()]));
    assert!(done.starts_with("bfs-path:"), "{done}");
    // the handle is dead for every process now
    let out = bucketfs(fx, &["upload", "abort", &handle]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown or already finished upload"));
    let (up, close) = (fx.open)(rt);
    assert!(read(rt, &up, "c/processes").unwrap() == data, "the file is not the parts in order");
    close();
}
