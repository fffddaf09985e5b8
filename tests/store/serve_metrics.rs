//! `bucketfs serve --metrics-address`: the endpoint answers in the Prometheus
//! text format, checked with Prometheus's own Python parser (pip
//! `prometheus-client`, installed by scripts/test-servers.sh), and its figures
//! match what the test did: requests by API and status, body bytes both ways,
//! latency histogram counts, drive states, per-bucket usage recorded by the
//! scanner, and the progress of a replaced drive's heal.

use crate::s3_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_s3::primitives::ByteStream;
use bucketfs::backend::PutOptions;
use bucketfs::store::{Store, StoreConfig};
use s3_support::*;

const BIN: &str = env!("CARGO_BIN_EXE_bucketfs");

/// One parsed sample: metric name, labels, value.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parsed exposition: family name -> (type, samples).
type Families = BTreeMap<String, (String, Vec<Sample>)>;

/// Parses `text` with `prometheus_client.parser.text_string_to_metric_families`,
/// which raises on anything that is not valid text format.
fn parse(text: &str) -> Families {
    const PROGRAM: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = {}
for f in text_string_to_metric_families(sys.stdin.read()):
    out[f.name] = [f.type, [{"name": s.name, "labels": s.labels, "value": s.value} for s in f.samples]]
print(json.dumps(out))
"#;
    use std::io::Write;
    let mut child = Command::new(tool_support::python())
        .args(["-c", PROGRAM])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}; {INSTALL_HINT}", tool_support::python()));
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !err.contains("No module named 'prometheus_client'"),
        "prometheus-client is not installed for {}; {INSTALL_HINT}",
        tool_support::python()
    );
    assert!(out.status.success(), "the Prometheus parser refused the exposition: {err}\n{text}");
    let raw: BTreeMap<String, (String, Vec<Sample>)> = serde_json::from_slice(&out.stdout).unwrap();
    raw
}

/// The value of the sample `name` whose labels include all of `labels`; panics if there is none or several.
fn value(f: &Families, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    let (_, samples) = f.get(family).unwrap_or_else(|| panic!("no family {family} in {:?}", f.keys()));
    let hits: Vec<&Sample> = samples
        .iter()
        .filter(|s| {
            s.name == name && labels.iter().all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect();
    assert_eq!(hits.len(), 1, "{name}{labels:?} in {samples:?}");
    hits[0].value
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let status = resp.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = resp.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    // a chunked body: keep only the chunk data (the exposition has no bare hex lines)
    let body =
        if resp.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(&body) } else { body };
    (status, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((len, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
    out
}

fn scrape(port: u16) -> Families {
    let (status, body) = http_get(port, "/metrics");
    assert_eq!(status, 200, "{body}");
    parse(&body)
}

struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !ok() {
        assert!(t0.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_endpoint_speaks_prometheus_and_counts_what_happened() {
    let tmp = tempfile::tempdir().unwrap();
    let d: Vec<PathBuf> = (1..=4).map(|i| tmp.path().join(format!("d{i}"))).collect();
    let spec = format!("{}/d{{1...4}}", tmp.path().display());

    // Objects written before the server starts, counted by a scanner pass
    // (which records usage.json on the drives, as a background pass would).
    let written: Vec<usize> = vec![10, 70_000, 1_500_000];
    let s = Store::open(StoreConfig { drives: d.clone(), parity: None }).unwrap();
    s.make_bucket("early").unwrap();
    for (i, n) in written.iter().enumerate() {
        s.put_object("early", &format!("o{i}"), &pattern(*n, i as u64), &PutOptions::default()).unwrap();
    }
    s.scan(1.0).unwrap();
    s.close();
    drop(s);

    let (port, mport) = (free_port(), free_port());
    let log = tmp.path().join("serve.log");
    let serve = Serve(
        Command::new(BIN)
            .args(["serve", "--drives", &spec, "--address", &format!("127.0.0.1:{port}")])
            .args(["--metrics-address", &format!("127.0.0.1:{mport}")])
            .env("BUCKETFS_ACCESS_KEY", ACCESS_KEY)
            .env("BUCKETFS_SECRET_KEY", SECRET_KEY)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_until("serve listening", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", mport)).is_ok()
            && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let endpoint = format!("http://127.0.0.1:{port}");
    let c = admin_client(&endpoint).await;
    c.create_bucket().bucket("late").send().await.unwrap();
    const PUTS: usize = 5;
    const SIZE: usize = 100_000;
    for i in 0..PUTS {
        c.put_object()
            .bucket("late")
            .key(format!("k{i}"))
            .body(ByteStream::from(pattern(SIZE, 100 + i as u64)))
            .send()
            .await
            .unwrap();
    }
    for i in 0..2 {
        let got = c.get_object().bucket("late").key(format!("k{i}")).send().await.unwrap();
        assert_eq!(got.body.collect().await.unwrap().into_bytes().len(), SIZE);
    }
    let missing = c.head_object().bucket("late").key("nope").send().await;
    assert!(missing.is_err());
    c.delete_object().bucket("late").key("k4").send().await.unwrap();

    let (status, _) = http_get(mport, "/other");
    assert_eq!(status, 404);
    // the metrics port is not the S3 port: an unsigned scrape of the S3 port is refused
    assert_eq!(http_get(port, "/metrics").0, 403);

    // Responses are recorded when their bodies are dropped, just after the
    // client has read them: wait for the last one (the DeleteObject).
    let mut f = scrape(mport);
    wait_until("requests recorded", Duration::from_secs(10), || {
        f = scrape(mport);
        f["bucketfs_s3_requests"]
            .1
            .iter()
            .any(|s| s.labels.get("api").map(String::as_str) == Some("DeleteObject"))
    });
    let req = |api: &str, status: &str| {
        value(&f, "bucketfs_s3_requests", "bucketfs_s3_requests_total", &[("api", api), ("status", status)])
    };
    assert_eq!(f["bucketfs_s3_requests"].0, "counter");
    assert_eq!(req("CreateBucket", "200"), 1.0);
    assert_eq!(req("PutObject", "200"), PUTS as f64);
    assert_eq!(req("GetObject", "200"), 2.0);
    assert_eq!(req("HeadObject", "404"), 1.0);
    assert_eq!(req("DeleteObject", "204"), 1.0);
    // the unsigned GET /metrics on the S3 port: a ListObjects of bucket "metrics", refused
    assert_eq!(req("ListObjects", "403"), 1.0);

    let bytes_in = value(&f, "bucketfs_s3_received_bytes", "bucketfs_s3_received_bytes_total", &[]);
    let bytes_out = value(&f, "bucketfs_s3_sent_bytes", "bucketfs_s3_sent_bytes_total", &[]);
    // Bodies only: the PUTs' data (plain, no aws-chunked framing with these
    // client settings) and the GETs' data plus a few small XML bodies.
    assert_eq!(bytes_in, (PUTS * SIZE) as f64);
    assert!(bytes_out >= (2 * SIZE) as f64 && bytes_out < (2 * SIZE + 4096) as f64, "{bytes_out}");

    assert_eq!(f["bucketfs_s3_request_duration_seconds"].0, "histogram");
    let h = |name: &str, extra: &[(&str, &str)]| {
        let mut l = vec![("api", "PutObject")];
        l.extend_from_slice(extra);
        value(&f, "bucketfs_s3_request_duration_seconds", name, &l)
    };
    assert_eq!(h("bucketfs_s3_request_duration_seconds_count", &[]), PUTS as f64);
    assert_eq!(h("bucketfs_s3_request_duration_seconds_bucket", &[("le", "+Inf")]), PUTS as f64);
    assert!(h("bucketfs_s3_request_duration_seconds_sum", &[]) > 0.0);

    for drive in &d {
        let drive = drive.display().to_string();
        let st = |state| {
            value(&f, "bucketfs_drive_state", "bucketfs_drive_state", &[("drive", &drive), ("state", state)])
        };
        assert_eq!((st("online"), st("offline"), st("healing")), (1.0, 0.0, 0.0), "{drive}");
        let free = value(&f, "bucketfs_drive_free_bytes", "bucketfs_drive_free_bytes", &[("drive", &drive)]);
        let total =
            value(&f, "bucketfs_drive_total_bytes", "bucketfs_drive_total_bytes", &[("drive", &drive)]);
        assert!(free > 0.0 && free <= total, "{drive}: {free} of {total}");
    }

    // Usage as the pre-start scanner pass counted it.
    let usage = |fam: &str| value(&f, fam, fam, &[("bucket", "early")]);
    assert_eq!(usage("bucketfs_bucket_objects"), written.len() as f64);
    assert_eq!(usage("bucketfs_bucket_versions"), written.len() as f64);
    assert_eq!(usage("bucketfs_bucket_bytes"), written.iter().sum::<usize>() as f64);
    assert!(
        value(
            &f,
            "bucketfs_usage_updated_timestamp_seconds",
            "bucketfs_usage_updated_timestamp_seconds",
            &[]
        ) > 0.0
    );
    assert_eq!(value(&f, "bucketfs_scanner_passes", "bucketfs_scanner_passes_total", &[]), 0.0);
    assert!(f["bucketfs_heal_state"].1.is_empty(), "no drive was replaced yet");

    // A drive is wiped under the server: the monitor heals it, and the
    // metrics show that heal's progress and outcome.
    std::fs::remove_dir_all(&d[3]).unwrap();
    std::fs::create_dir(&d[3]).unwrap();
    let drive = d[3].display().to_string();
    wait_until("heal done in the metrics", Duration::from_secs(60), || {
        f = scrape(mport);
        f["bucketfs_heal_state"].1.iter().any(|s| {
            s.labels.get("drive") == Some(&drive)
                && s.labels.get("state").map(String::as_str) == Some("done")
                && s.value == 1.0
        })
    });
    let heal = |fam: &str| value(&f, fam, fam, &[("drive", &drive)]);
    let objects = (written.len() + PUTS - 1) as f64;
    assert_eq!(heal("bucketfs_heal_objects_scanned"), objects);
    assert_eq!(heal("bucketfs_heal_objects_healed"), objects);
    assert_eq!(heal("bucketfs_heal_objects_failed"), 0.0);
    assert!(heal("bucketfs_heal_bytes") > 0.0);
    let st = |state| {
        value(&f, "bucketfs_drive_state", "bucketfs_drive_state", &[("drive", &drive), ("state", state)])
    };
    assert_eq!(st("online"), 1.0, "healed drive back online");

    // `bucketfs stats --drives` reads the same progress from the drives while
    // the server owns them: drive states, the heal, the scanner's recorded
    // pass (the one run before the server started) and the usage it counted.
    let out =
        Command::new(BIN).args(["stats", "--drives", &spec]).env_remove("BUCKETFS_DRIVES").output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("drives: 4 in 1 erasure set(s)"), "{text}");
    for p in &d {
        assert!(text.contains(&format!("  {}: online\n", p.display())), "{text}");
    }
    assert!(
        text.contains(&format!("{drive}: done ({objects} objects scanned, {objects} healed, 0 failed")),
        "{text}"
    );
    assert!(text.contains("scanner, set of 4 drives from "), "{text}");
    assert!(text.contains(": 3 objects, 0 healed, 0 failed, "), "{text}");
    assert!(text.contains("; 1 passes since its process started"), "{text}");
    let bytes = written.iter().sum::<usize>();
    assert!(text.contains(&format!("  early: 3 objects, 3 versions, {bytes} bytes\n")), "{text}");
    drop(serve);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving Prometheus metrics"), "{text}");
    assert!(!text.contains(SECRET_KEY), "secret in the log");
}

/// `bucketfs stats` with neither a mountpoint nor drives says what it wants.
#[test]
fn stats_needs_a_mountpoint_or_drives() {
    let out = Command::new(BIN).arg("stats").env_remove("BUCKETFS_DRIVES").output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("give MOUNTPOINT") && err.contains("--drives SPEC"), "{err}");
}

/// A bad address is refused before anything starts, with the flag named.
#[test]
fn bad_metrics_address_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--drives", &format!("{}/d{{1...2}}", tmp.path().display())])
        .args(["--address", "127.0.0.1:0", "--metrics-address", "localhost-ish:99999"])
        .env("BUCKETFS_ACCESS_KEY", "k")
        .env("BUCKETFS_SECRET_KEY", "s")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid --metrics-address \"localhost-ish:99999\""), "{err}");
}
