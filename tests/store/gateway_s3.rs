//! `bucketfs serve` end to end: the real binary on a free 127.0.0.1 port over
//! temporary drives, reached by our own S3 backend (the SDK), by raw
//! unsigned HTTP, and by the aws CLI when it is installed.
//!
//! One gateway per test binary, started lazily and killed with the binary
//! (PDEATHSIG); every test uses its own bucket.

use crate::s3_support;
use bucketfs::backend::ErrorKind;

use s3_support::tool_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use bucketfs::backend::s3::{multirange::Support, S3Backend, S3Config};
use bucketfs::backend::*;
use bytes::Bytes;
use s3_support::*;

async fn fresh(tag: &str) -> (S3Backend, String) {
    let g = gateway();
    let bucket = unique_bucket(tag);
    make_bucket(&g.endpoint, &bucket).await;
    (backend(&g.endpoint, &bucket).await, bucket)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_copy_list_delete() {
    let (b, _) = fresh("obj").await;
    b.check_bucket().await.unwrap();
    let data = Bytes::from(pattern(300_000, 1));
    let mut opts = PutOptions { content_type: Some("text/x-test".into()), ..Default::default() };
    opts.user_metadata.insert("color".into(), "blue".into());
    let put = b.put("dir/a", data.clone(), &opts).await.unwrap();
    assert_eq!(put.size, 300_000);

    let h = b.head("dir/a").await.unwrap();
    assert_eq!((h.size, h.etag.as_str()), (300_000, put.etag.as_str()));
    assert_eq!(h.content_type.as_deref(), Some("text/x-test"));
    assert_eq!(h.user_metadata.get("color").map(String::as_str), Some("blue"));

    let all = b.get_range("dir/a", None, &GetOptions::default()).await.unwrap();
    assert_eq!(all.data, data);
    let part = b.get_range("dir/a", Some(1000..5000), &GetOptions::default()).await.unwrap();
    assert_eq!(part.data, data.slice(1000..5000));
    let tail = b.get_range("dir/a", Some(299_990..400_000), &GetOptions::default()).await.unwrap();
    assert_eq!(tail.data, data.slice(299_990..));

    // Conditional requests.
    let stale = GetOptions { if_match: Some("0123456789abcdef0123456789abcdef".into()) };
    let e = b.get_range("dir/a", Some(0..4), &stale).await;
    assert!(matches!(e, Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })), "{e:?}");
    let create_only = PutOptions { if_none_match_any: true, ..Default::default() };
    let e = b.put("dir/a", Bytes::from_static(b"x"), &create_only).await;
    assert!(matches!(e, Err(BackendError { kind: ErrorKind::PreconditionFailed, .. })), "{e:?}");
    b.put("dir/new", Bytes::from_static(b"x"), &create_only).await.unwrap();

    // Copy keeps metadata unless replaced.
    let c = b.copy("dir/a", "dir/b", None).await.unwrap();
    assert_eq!(c.etag, put.etag);
    let hb = b.head("dir/b").await.unwrap();
    assert_eq!(hb.user_metadata.get("color").map(String::as_str), Some("blue"));
    let repl = PutOptions { content_type: Some("application/x-other".into()), ..Default::default() };
    b.copy("dir/a", "dir/c", Some(&repl)).await.unwrap();
    let hc = b.head("dir/c").await.unwrap();
    assert_eq!(hc.content_type.as_deref(), Some("application/x-other"));
    assert!(hc.user_metadata.is_empty());

    b.put("top", Bytes::from_static(b"t"), &PutOptions::default()).await.unwrap();
    let root = ListRequest { delimiter: Some("/".into()), ..Default::default() };
    let page = b.list(&root).await.unwrap();
    assert_eq!(page.common_prefixes, vec!["dir/".to_string()]);
    assert_eq!(page.objects.iter().map(|o| o.key.as_str()).collect::<Vec<_>>(), ["top"]);
    // Continuation across small pages.
    let mut keys = Vec::new();
    let mut req = ListRequest { prefix: "dir/".into(), max_keys: 2, ..Default::default() };
    loop {
        let p = b.list(&req).await.unwrap();
        keys.extend(p.objects.into_iter().map(|o| o.key));
        match p.next_continuation {
            Some(t) => req.continuation = Some(t),
            None => break,
        }
    }
    assert_eq!(keys, ["dir/a", "dir/b", "dir/c", "dir/new"]);

    b.delete("top").await.unwrap();
    b.delete("never-existed").await.unwrap();
    let failed =
        b.delete_many(&["dir/a".into(), "dir/b".into(), "dir/c".into(), "dir/new".into()]).await.unwrap();
    assert!(failed.is_empty(), "{failed:?}");
    assert!(b.head("dir/a").await.unwrap_err().is_not_found());
    assert!(b.list(&ListRequest::default()).await.unwrap().objects.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multipart_upload_list_abort() {
    let (b, bucket) = fresh("mpu").await;
    let data = Bytes::from(pattern(11 << 20, 2));
    let id = b.create_multipart("big", &PutOptions::default()).await.unwrap();
    let ups = b.list_multipart("").await.unwrap();
    assert_eq!(
        ups.iter().map(|u| (u.key.as_str(), u.upload_id.as_str())).collect::<Vec<_>>(),
        [("big", id.as_str())]
    );
    let p3 = b.upload_part("big", &id, 3, data.slice(10 << 20..)).await.unwrap();
    let p1 = b.upload_part("big", &id, 1, data.slice(..5 << 20)).await.unwrap();
    let p2 = b.upload_part("big", &id, 2, data.slice(5 << 20..10 << 20)).await.unwrap();
    // ListParts pages with max-parts and the next part-number marker.
    let c = admin_client(&gateway().endpoint).await;
    let page = c.list_parts().bucket(&bucket).key("big").upload_id(&id).max_parts(2).send().await.unwrap();
    assert_eq!(page.parts().iter().map(|p| p.part_number().unwrap()).collect::<Vec<_>>(), [1, 2]);
    assert_eq!((page.is_truncated(), page.next_part_number_marker()), (Some(true), Some("2")));
    let page = c
        .list_parts()
        .bucket(&bucket)
        .key("big")
        .upload_id(&id)
        .part_number_marker("2")
        .send()
        .await
        .unwrap();
    assert_eq!(page.parts().iter().map(|p| p.part_number().unwrap()).collect::<Vec<_>>(), [3]);
    assert_eq!(page.is_truncated(), Some(false));
    // ListMultipartUploads pages with max-uploads and key/upload-id markers.
    let other = b.create_multipart("other", &PutOptions::default()).await.unwrap();
    let page = c.list_multipart_uploads().bucket(&bucket).max_uploads(1).send().await.unwrap();
    assert_eq!(page.uploads().len(), 1);
    assert_eq!(page.is_truncated(), Some(true));
    let next = c
        .list_multipart_uploads()
        .bucket(&bucket)
        .key_marker(page.next_key_marker().unwrap())
        .upload_id_marker(page.next_upload_id_marker().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(next.uploads().iter().map(|u| u.key().unwrap()).collect::<Vec<_>>(), ["other"]);
    assert_eq!(next.is_truncated(), Some(false));
    b.abort_multipart("other", &other).await.unwrap();
    let meta = b.complete_multipart("big", &id, &[p1, p2, p3]).await.unwrap();
    assert_eq!(meta.size, 11 << 20);
    assert!(meta.etag.ends_with("-3"), "{}", meta.etag);
    let got = b.get_range("big", None, &GetOptions::default()).await.unwrap();
    assert!(got.data == data, "multipart object differs");
    assert!(b.list_multipart("").await.unwrap().is_empty());

    let id = b.create_multipart("gone", &PutOptions::default()).await.unwrap();
    b.upload_part("gone", &id, 1, Bytes::from_static(b"abc")).await.unwrap();
    b.abort_multipart("gone", &id).await.unwrap();
    let e = b.upload_part("gone", &id, 2, Bytes::from_static(b"x")).await;
    assert!(matches!(e, Err(BackendError { kind: ErrorKind::NoSuchUpload, .. })), "{e:?}");
    assert!(b.head("gone").await.unwrap_err().is_not_found());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_range_get_is_one_multipart_byteranges_answer() {
    let (b, _) = fresh("mr").await;
    let data = Bytes::from(pattern(3 << 20, 3));
    b.put("obj", data.clone(), &PutOptions::default()).await.unwrap();
    let ranges = [10..20, 1 << 20..(1 << 20) + 4096, (3 << 20) - 100..(3 << 20) + 50, 500_000..500_001];
    // the read path's probe (a HEAD) finds out that the gateway serves several ranges
    b.probe_multi_range("obj", &[0..1, 65536..65537], &GetOptions::default()).await.unwrap();
    assert_eq!(b.multi_range_support(), Support::Multi);
    let got = b.get_ranges("obj", &ranges, &GetOptions::default()).await.unwrap();
    for (g, r) in got.iter().zip(&ranges) {
        let end = (r.end as usize).min(data.len());
        assert_eq!(g, &data.slice(r.start as usize..end), "{r:?}");
    }
    assert_eq!(b.multi_range_support(), Support::Multi);
    assert_eq!(b.capabilities().multi_range, bucketfs::backend::MultiRangeMode::Native);
    // Again, once known: still right.
    let got = b.get_ranges("obj", &ranges[..2], &GetOptions::default()).await.unwrap();
    assert_eq!(got[1], data.slice(1 << 20..(1 << 20) + 4096));
}

/// Raw HTTP/1.1 exchange; returns the status line and the rest.
/// Sends a raw HTTP/1.1 request and returns the whole answer, head and body.
fn raw_bytes(port: u16, request: &str) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn raw(port: u16, request: &str) -> (String, String) {
    let out = raw_bytes(port, request);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (status.to_string(), rest.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsigned_and_wrongly_signed_requests_are_refused() {
    let (_, bucket) = fresh("auth").await;
    let g = gateway();
    let put = format!(
        "PUT /{bucket}/k HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
        g.port
    );
    let (status, body) = raw(g.port, &put);
    assert!(status.contains(" 403 "), "{status}\n{body}");
    assert!(body.contains("AccessDenied"), "{body}");
    let get = format!(
        "GET /{bucket}/k HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nRange: bytes=0-1,3-4\r\nConnection: close\r\n\r\n",
        g.port
    );
    let (status, body) = raw(g.port, &get);
    assert!(status.contains(" 403 "), "multi-range route must need a signature: {status}\n{body}");

    for profile in ["wrong", "nobody"] {
        let cfg = S3Config { profile: Some(profile.into()), ..config(&g.endpoint, &bucket) };
        let b = S3Backend::connect(cfg).await.unwrap();
        let e = b.put("k", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap_err();
        assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "profile {profile}: {e:?}");
        let e = b.head("k").await.unwrap_err();
        assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "profile {profile}: {e:?}");
    }
    // Nothing got written.
    let b = backend(&g.endpoint, &bucket).await;
    assert!(b.head("k").await.unwrap_err().is_not_found());
}

#[test]
fn refuses_to_start_without_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_bucketfs"))
        .args(["serve", "--drives", &dir.path().join("d1").display().to_string(), "--address", "127.0.0.1:1"])
        .env_remove("BUCKETFS_ACCESS_KEY")
        .env_remove("BUCKETFS_SECRET_KEY")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("BUCKETFS_ACCESS_KEY"), "{err}");
}

/// Runs the aws CLI against `endpoint` with the test identity (or `secret`), returning its output.
fn aws_cli(endpoint: &str, secret: &str, args: &[&str]) -> std::process::Output {
    Command::new(tool_support::tool("aws"))
        .args(["--endpoint-url", endpoint])
        .args(args)
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .output()
        .expect("the aws CLI is not installed; run `make test-deps` (scripts/test-servers.sh install)")
}

/// The aws CLI as an outside client: put (multipart), get, list, server-side multipart copy
/// (UploadPartCopy) of a 100 MiB object, part-number reads, presigned GET, and a wrong key.
#[test]
fn aws_cli_round_trip() {
    let g = gateway();
    let bucket = unique_bucket("cli");
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let data = pattern(100 << 20, 4); // 13 parts at the CLI's 8 MiB part size
    std::fs::write(&src, &data).unwrap();
    let dst = dir.path().join("dst.bin");
    let aws = |args: &[&str]| {
        let out = aws_cli(&g.endpoint, SECRET_KEY, args);
        assert!(out.status.success(), "aws {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    aws(&["s3", "mb", &format!("s3://{bucket}")]);
    aws(&["s3", "cp", src.to_str().unwrap(), &format!("s3://{bucket}/a/src.bin")]);
    let ls = aws(&["s3", "ls", "--recursive", &format!("s3://{bucket}")]);
    assert!(ls.contains("a/src.bin"), "{ls}");
    // Server-side copy: the CLI copies objects above 8 MiB with UploadPartCopy.
    aws(&["s3", "cp", &format!("s3://{bucket}/a/src.bin"), &format!("s3://{bucket}/b/copy.bin")]);
    let log = g.requests(&bucket);
    let copies = log
        .iter()
        .filter(|l| l.starts_with(&format!("PUT /{bucket}/b/copy.bin?")) && l.contains("partNumber="))
        .count();
    assert_eq!(copies, 13, "one UploadPartCopy per 8 MiB part: {log:#?}");
    aws(&["s3", "cp", &format!("s3://{bucket}/b/copy.bin"), dst.to_str().unwrap()]);
    assert!(std::fs::read(&dst).unwrap() == data, "aws s3 cp (upload, server-side copy, download) differs");
    // One part of the multipart object by number: part 2 is bytes 8..16 MiB.
    let part = dir.path().join("part2.bin");
    let head = aws(&[
        "s3api",
        "get-object",
        "--bucket",
        &bucket,
        "--key",
        "b/copy.bin",
        "--part-number",
        "2",
        part.to_str().unwrap(),
    ]);
    assert!(head.contains("\"PartsCount\": 13"), "{head}");
    assert!(std::fs::read(&part).unwrap() == data[8 << 20..16 << 20], "partNumber=2 is not the second part");
    // A presigned URL made by the CLI works for a plain, unsigned GET.
    let url = aws(&["s3", "presign", &format!("s3://{bucket}/a/src.bin"), "--expires-in", "300"]);
    let path = url.trim().strip_prefix(&g.endpoint).expect("presigned URL on the endpoint").to_owned();
    let answer = raw_bytes(
        g.port,
        &format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nRange: bytes=0-99\r\nConnection: close\r\n\r\n",
            g.port
        ),
    );
    let head = String::from_utf8_lossy(&answer[..answer.len().min(12)]).into_owned();
    assert!(head.starts_with("HTTP/1.1 206"), "{}", String::from_utf8_lossy(&answer));
    assert!(answer.ends_with(&data[..100]), "presigned ranged GET returned other bytes");
    // ListObjects V1 and HeadBucket through s3api.
    let v1 = aws(&["s3api", "list-objects", "--bucket", &bucket]);
    assert!(v1.contains("a/src.bin"), "{v1}");
    aws(&["s3api", "head-bucket", "--bucket", &bucket]);
    // A wrong secret key is refused with 403.
    let wrong = aws_cli(
        &g.endpoint,
        "not-the-secret",
        &["s3api", "head-object", "--bucket", &bucket, "--key", "a/src.bin"],
    );
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("403"), "{wrong:?}");
    // A bucket with objects cannot be removed.
    let rb = aws_cli(&g.endpoint, SECRET_KEY, &["s3", "rb", &format!("s3://{bucket}")]);
    assert!(!rb.status.success());
    assert!(String::from_utf8_lossy(&rb.stderr).contains("BucketNotEmpty"), "{rb:?}");
    aws(&["s3", "rm", "--recursive", &format!("s3://{bucket}")]);
    aws(&["s3", "rb", &format!("s3://{bucket}")]);
}

/// A SigV4-signed curl (curl >= 7.75 signs with `--aws-sigv4`; `make deps` installs it).
fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("headers");
    let out = Command::new("curl")
        .args(["-s", "--aws-sigv4", "aws:amz:us-east-1:s3", "--user", &format!("{ACCESS_KEY}:{SECRET_KEY}")])
        .args(["-H", "x-amz-content-sha256: UNSIGNED-PAYLOAD", "-D", head.to_str().unwrap()])
        .args(args)
        .output()
        .expect("curl is not installed; run `make deps`");
    let headers = std::fs::read_to_string(&head).unwrap_or_default();
    let status = headers.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, headers.to_ascii_lowercase(), out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_range_wire_format_limits_and_conditions() {
    let (b, bucket) = fresh("wire").await;
    let data = b"0123456789abcdefghij";
    let m = b.put("k", Bytes::from_static(data), &PutOptions::default()).await.unwrap();
    let url = format!("{}/{bucket}/k", gateway().endpoint);
    let get = |range: &str, extra: &[&str]| {
        let mut args = vec!["-H".to_string(), format!("Range: {range}")];
        for e in extra {
            args.extend(["-H".to_string(), e.to_string()]);
        }
        args.push(url.clone());
        curl(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };

    let (status, headers, body) = get("bytes=0-1,4-5,-3", &[]);
    assert_eq!(status, 206, "{headers}");
    let boundary = headers
        .lines()
        .find_map(|l| l.strip_prefix("content-type: multipart/byteranges; boundary="))
        .expect("multipart/byteranges content type")
        .trim()
        .to_string();
    let body = String::from_utf8(body).unwrap();
    let parts: Vec<&str> = body.split(&format!("--{boundary}")).collect();
    assert_eq!(parts.len(), 5, "{body}"); // preamble, 3 parts, closing "--"
    assert!(
        parts[1].contains("content-range: bytes 0-1/20") || parts[1].contains("Content-Range: bytes 0-1/20")
    );
    assert!(parts[1].ends_with("\r\n\r\n01\r\n"), "{:?}", parts[1]);
    assert!(parts[2].contains("Content-Range: bytes 4-5/20") && parts[2].ends_with("\r\n\r\n45\r\n"));
    assert!(parts[3].contains("Content-Range: bytes 17-19/20") && parts[3].ends_with("\r\n\r\nhij\r\n"));
    assert!(parts[4].starts_with("--"));
    // A HEAD gets the same status and headers, and no body: how a client asks
    // whether the server serves several ranges without reading an answer.
    // (that no body follows on the wire is checked with a raw HEAD in
    // public_read_bucket_allows_only_anonymous_reads)
    let (status, head_headers, head_body) = curl(&["-I", "-H", "Range: bytes=0-1,4-5,-3", &url]);
    assert_eq!(status, 206, "{head_headers}");
    assert!(head_headers.contains("content-type: multipart/byteranges; boundary="), "{head_headers}");
    let length =
        |h: &str| h.lines().find_map(|l| l.strip_prefix("content-length: ")).map(|v| v.trim().to_owned());
    assert_eq!(length(&head_headers), Some(body.len().to_string()), "HEAD announces the GET's length");
    assert!(String::from_utf8_lossy(&head_body).ends_with("\r\n\r\n"), "curl -I prints the head only");

    // Overlapping ranges, or more than the limit: the whole object, 200.
    let (status, _, body) = get("bytes=0-5,4-8", &[]);
    assert_eq!((status, body.as_slice()), (200, &data[..]));
    let many = (0..=bucketfs::gateway::MAX_RANGES).map(|i| format!("{i}-{i}")).collect::<Vec<_>>().join(",");
    let (status, _, body) = get(&format!("bytes={many}"), &[]);
    assert_eq!((status, body.as_slice()), (200, &data[..]));
    // One satisfiable range left: a plain 206; none: 416.
    let (status, headers, body) = get("bytes=2-3,100-200", &[]);
    assert_eq!((status, body.as_slice()), (206, &b"23"[..]));
    assert!(headers.contains("content-range: bytes 2-3/20"), "{headers}");
    let (status, _, _) = get("bytes=100-200,300-400", &[]);
    assert_eq!(status, 416);

    // Conditions apply to multi-range GETs too.
    let etag = format!("If-None-Match: \"{}\"", m.etag);
    assert_eq!(get("bytes=0-1,4-5", &[&etag]).0, 304);
    assert_eq!(get("bytes=0-1,4-5", &["If-Match: \"00000000000000000000000000000000\""]).0, 412);
    let ok = format!("If-Match: \"{}\"", m.etag);
    assert_eq!(get("bytes=0-1,4-5", &[&ok]).0, 206);

    // Date conditions, on single-range and multi-range GETs alike.
    let past = "Sat, 01 Jan 2000 00:00:00 GMT";
    let future = "Fri, 01 Jan 2100 00:00:00 GMT";
    for range in ["bytes=0-1", "bytes=0-1,4-5"] {
        assert_eq!(get(range, &[&format!("If-Modified-Since: {future}")]).0, 304, "{range}");
        assert_eq!(get(range, &[&format!("If-Modified-Since: {past}")]).0, 206, "{range}");
        assert_eq!(get(range, &[&format!("If-Unmodified-Since: {past}")]).0, 412, "{range}");
        assert_eq!(get(range, &[&format!("If-Unmodified-Since: {future}")]).0, 206, "{range}");
        // If-None-Match takes precedence over If-Modified-Since (RFC 9110 §13.2.2).
        let mismatch = "If-None-Match: \"00000000000000000000000000000000\"";
        assert_eq!(get(range, &[mismatch, &format!("If-Modified-Since: {future}")]).0, 206, "{range}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_chunked_upload_and_copy_between_buckets() {
    let (b, bucket) = fresh("chunk").await;
    let (b2, other) = fresh("dest").await;
    let g = gateway();
    // WhenSupported makes the SDK send a streaming body as aws-chunked with a
    // trailing checksum (STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER), which s3s decodes.
    let creds = aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "tests");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&g.endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenSupported)
        .build();
    let c = aws_sdk_s3::Client::from_conf(conf);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f");
    let data = pattern(3 << 20, 5);
    std::fs::write(&path, &data).unwrap();
    let body = aws_sdk_s3::primitives::ByteStream::from_path(&path).await.unwrap();
    c.put_object().bucket(&bucket).key("chunked").body(body).send().await.unwrap();
    let got = b.get_range("chunked", None, &GetOptions::default()).await.unwrap();
    assert!(got.data == data, "aws-chunked upload differs");

    // CopyObject from another bucket streams the source into a new object.
    let out = c
        .copy_object()
        .bucket(&other)
        .key("copied")
        .copy_source(format!("{bucket}/chunked"))
        .send()
        .await
        .unwrap();
    assert!(out.copy_object_result().and_then(|r| r.e_tag()).is_some());
    let got = b2.get_range("copied", None, &GetOptions::default()).await.unwrap();
    assert!(got.data == data, "cross-bucket copy differs");
}

/// `--public-read BUCKET`: unsigned reads of that bucket work (plain GET, multi-range GET,
/// listing, and an anonymous S3 client); unsigned writes, and unsigned reads of any other
/// bucket, get 403.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_read_bucket_allows_only_anonymous_reads() {
    let g = gateway();
    make_bucket(&g.endpoint, PUBLIC_BUCKET).await;
    let signed = backend(&g.endpoint, PUBLIC_BUCKET).await;
    signed.put("doc", Bytes::from_static(b"0123456789public"), &PutOptions::default()).await.unwrap();
    let (private, private_bucket) = fresh("private").await;
    private.put("doc", Bytes::from_static(b"secret"), &PutOptions::default()).await.unwrap();

    let req = |method: &str, path: &str, extra: &str| {
        raw(g.port, &format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n{extra}Content-Length: 0\r\nConnection: close\r\n\r\n", g.port))
    };
    let (status, body) = req("GET", &format!("/{PUBLIC_BUCKET}/doc"), "");
    assert!(status.contains(" 200 ") && body.ends_with("0123456789public"), "{status}\n{body}");
    let (status, body) = req("GET", &format!("/{PUBLIC_BUCKET}/doc"), "Range: bytes=0-1,10-15\r\n");
    assert!(
        status.contains(" 206 ") && body.contains("multipart/byteranges") && body.contains("public"),
        "{status}"
    );
    // the probe of a client: a HEAD with ranges is answered 206 multipart, headers only
    let (status, rest) = req("HEAD", &format!("/{PUBLIC_BUCKET}/doc"), "Range: bytes=0-1,10-15\r\n");
    assert!(status.contains(" 206 ") && rest.contains("multipart/byteranges"), "{status}\n{rest}");
    assert!(rest.ends_with("\r\n\r\n") && !rest.contains("public"), "no body after the head: {rest}");
    let (status, body) = req("GET", &format!("/{PUBLIC_BUCKET}?list-type=2"), "");
    assert!(status.contains(" 200 ") && body.contains("<Key>doc</Key>"), "{status}\n{body}");
    for (method, path) in [
        ("PUT", format!("/{PUBLIC_BUCKET}/new")),
        ("DELETE", format!("/{PUBLIC_BUCKET}/doc")),
        ("POST", format!("/{PUBLIC_BUCKET}/big?uploads")),
        ("GET", format!("/{private_bucket}/doc")),
        ("GET", "/".to_string()),
    ] {
        let (status, _) = req(method, &path, "");
        assert!(status.contains(" 403 "), "{method} {path}: {status}");
    }
    assert_eq!(
        &signed.get_range("doc", None, &GetOptions::default()).await.unwrap().data[..],
        b"0123456789public"
    );
    // An anonymous client (what `--no-sign-request` mounts use) reads, and cannot write.
    let anon = S3Backend::connect(S3Config { no_sign_request: true, ..config(&g.endpoint, PUBLIC_BUCKET) })
        .await
        .unwrap();
    anon.check_bucket().await.unwrap();
    let got = anon.get_ranges("doc", &[0..2, 10..16], &GetOptions::default()).await.unwrap();
    assert_eq!((&got[0][..], &got[1][..]), (&b"01"[..], &b"public"[..]));
    let e = anon.put("x", Bytes::from_static(b"x"), &PutOptions::default()).await.unwrap_err();
    assert!(matches!(e, BackendError { kind: ErrorKind::AccessDenied, .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presigned_sigv4_urls_are_verified() {
    let (b, bucket) = fresh("presign").await;
    let g = gateway();
    b.put("p", Bytes::from_static(b"presigned body"), &PutOptions::default()).await.unwrap();
    let c = admin_client(&g.endpoint).await;
    let cfg = aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let req = c.get_object().bucket(&bucket).key("p").presigned(cfg).await.unwrap();
    let uri = req.uri().to_string();
    assert!(uri.contains("X-Amz-Signature="), "{uri}");
    let path = uri.strip_prefix(&g.endpoint).unwrap().to_string();
    let get = |p: &str| {
        raw(g.port, &format!("GET {p} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n", g.port))
    };
    let (status, rest) = get(&path);
    assert!(status.contains(" 200 ") && rest.ends_with("presigned body"), "{status}\n{rest}");
    // Another key under the same signature, or an altered signature: refused.
    let (status, _) = get(&path.replacen("/p?", "/q?", 1));
    assert!(status.contains(" 403 "), "{status}");
    let at = path.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let flipped = if &path[at..at + 1] == "0" { "1" } else { "0" };
    let tampered = format!("{}{flipped}{}", &path[..at], &path[at + 1..]);
    let (status, _) = get(&tampered);
    assert!(status.contains(" 403 "), "{status}");
    // The access log records each request with its status, and never the signature.
    let log = g.requests(&bucket);
    let gets: Vec<&String> = log.iter().filter(|l| l.starts_with(&format!("GET /{bucket}/"))).collect();
    assert_eq!(gets.len(), 3, "{log:#?}");
    assert!(gets[0].contains(" 200 ") && gets[1].contains(" 403 ") && gets[2].contains(" 403 "), "{gets:#?}");
    assert!(
        log.iter().any(|l| l.starts_with(&format!("PUT /{bucket}/p?")) && l.contains(" 200 ")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains("X-Amz-Signature") || l.contains("X-Amz-Credential")), "{log:#?}");
}

/// Issue 14: Range positions at the edges of u64 never crash the gateway, and a range that
/// starts past the end is 416 (not 400) on the single- and multi-range paths alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_positions_past_u64_are_answered_as_s3_does() {
    let (b, bucket) = fresh("u64range").await;
    let data = b"0123456789abcdefghij";
    b.put("k", Bytes::from_static(data), &PutOptions::default()).await.unwrap();
    b.put("empty", Bytes::new(), &PutOptions::default()).await.unwrap();
    let url = format!("{}/{bucket}/k", gateway().endpoint);
    let get = |range: &str, url: &str| curl(&["-H", &format!("Range: {range}"), url]);
    let max = u64::MAX;

    let (status, headers, body) = get(&format!("bytes=0-1,5-{max}"), &url);
    assert_eq!(status, 206, "{headers}");
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("Content-Range: bytes 0-1/20") && body.contains("\r\n\r\n01\r\n"), "{body}");
    assert!(
        body.contains("Content-Range: bytes 5-19/20") && body.contains("\r\n\r\n56789abcdefghij\r\n"),
        "{body}"
    );

    for range in
        [format!("bytes={max}-"), format!("bytes={max}-{max}"), "bytes=99999999999999999999999-".into()]
    {
        let (status, headers, body) = get(&range, &url);
        assert_eq!(status, 416, "{range}: {headers}{}", String::from_utf8_lossy(&body));
        assert!(String::from_utf8_lossy(&body).contains("InvalidRange"), "{range}");
    }
    // a last position past u64 (or i64, s3s's bound) is the end of the object
    for range in [format!("bytes=2-{max}"), format!("bytes=2-{}", i64::MAX as u64 + 1)] {
        let (status, headers, body) = get(&range, &url);
        assert_eq!((status, body.as_slice()), (206, &data[2..]), "{range}");
        assert!(headers.contains("content-range: bytes 2-19/20"), "{range}: {headers}");
    }
    // a malformed Range header is ignored, as S3 does: the whole object
    for range in ["bytes=abc", "bytes=5-3", "bytes=+1-2"] {
        let (status, _, body) = get(range, &url);
        assert_eq!((status, body.as_slice()), (200, &data[..]), "{range}");
    }
    // a suffix of an empty object selects nothing: 416 (it used to underflow `end - 1`)
    let empty = format!("{}/{bucket}/empty", gateway().endpoint);
    for range in ["bytes=-5", "bytes=-5,-6", "bytes=0-"] {
        let (status, headers, _) = get(range, &empty);
        assert_eq!(status, 416, "{range} of an empty object: {headers}");
    }
    // the server is still there
    let (status, _, body) = get("bytes=0-1", &url);
    assert_eq!((status, body.as_slice()), (206, &b"01"[..]));
}

/// Sends `head` (a presigned request's head, without the blank line) with a body of
/// `sent` bytes that claims `Content-Length: claimed`, then (if the body is short) closes
/// the sending side, as a client that gives up or loses its connection does.
fn short_body_request(port: u16, head: &str, claimed: usize, sent: usize) -> (String, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(s, "{head}Content-Length: {claimed}\r\nConnection: close\r\n\r\n").unwrap();
    s.write_all(&vec![b'x'; sent]).unwrap();
    if sent < claimed {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (status, rest) = text.split_once("\r\n").unwrap_or((&text, ""));
    (status.to_string(), rest.to_string())
}

/// Issue 14: a body shorter than its Content-Length is the client's fault: 400
/// IncompleteBody (PutObject and UploadPart), never a 500, and nothing is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_shorter_than_its_content_length_is_400_incomplete_body() {
    let (b, bucket) = fresh("short").await;
    let g = gateway();
    let c = admin_client(&g.endpoint).await;
    let presign = || aws_sdk_s3::presigning::PresigningConfig::expires_in(Duration::from_secs(300)).unwrap();
    let put = c.put_object().bucket(&bucket).key("cut").presigned(presign()).await.unwrap();
    let path = put.uri().strip_prefix(&g.endpoint).unwrap().to_owned();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", g.port);
    for (claimed, sent) in [(100, 10), (5 << 20, 1 << 20), (10, 0)] {
        let (status, body) = short_body_request(g.port, &head, claimed, sent);
        assert!(status.contains(" 400 "), "{claimed}/{sent}: {status}\n{body}");
        assert!(body.contains("<Code>IncompleteBody</Code>"), "{claimed}/{sent}: {body}");
        assert!(b.head("cut").await.unwrap_err().is_not_found(), "a cut body must not be stored");
    }
    // the same request with the whole body works
    let (status, body) = short_body_request(g.port, &head, 10, 10);
    assert!(status.contains(" 200 "), "{status}\n{body}");
    assert_eq!(b.head("cut").await.unwrap().size, 10);

    let id = b.create_multipart("mp", &PutOptions::default()).await.unwrap();
    let part = c.upload_part().bucket(&bucket).key("mp").upload_id(&id).part_number(1);
    let part = part.presigned(presign()).await.unwrap();
    let path = part.uri().strip_prefix(&g.endpoint).unwrap().to_owned();
    let head = format!("PUT {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\n", g.port);
    let (status, body) = short_body_request(g.port, &head, 1 << 20, 1000);
    assert!(status.contains(" 400 ") && body.contains("<Code>IncompleteBody</Code>"), "{status}\n{body}");
    let listed = c.list_parts().bucket(&bucket).key("mp").upload_id(&id).send().await.unwrap();
    assert!(listed.parts().is_empty(), "a cut part must not be stored: {listed:?}");
    b.abort_multipart("mp", &id).await.unwrap();
}

/// Issue 14: DeleteObjects names at most 1,000 keys; more is S3's 400 MalformedXML, and
/// nothing is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_objects_refuses_more_than_1000_keys() {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let (b, bucket) = fresh("del1001").await;
    b.put("keep", Bytes::from_static(b"k"), &PutOptions::default()).await.unwrap();
    let c = admin_client(&gateway().endpoint).await;
    let delete = |n: usize| {
        let objects = (0..n)
            .map(|i| {
                let key = if i == 0 { "keep".to_string() } else { format!("k{i}") };
                ObjectIdentifier::builder().key(key).build().unwrap()
            })
            .collect();
        Delete::builder().set_objects(Some(objects)).quiet(true).build().unwrap()
    };
    let e = c.delete_objects().bucket(&bucket).delete(delete(1001)).send().await.unwrap_err();
    let raw = e.raw_response().map(|r| r.status().as_u16());
    assert_eq!(raw, Some(400), "{e:?}");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&e), Some("MalformedXML"), "{e:?}");
    assert!(b.head("keep").await.is_ok(), "a refused DeleteObjects deleted something");
    assert_eq!(bucketfs::gateway::MAX_DELETE_KEYS, 1000);
    let out = c.delete_objects().bucket(&bucket).delete(delete(1000)).send().await.unwrap();
    assert!(out.errors().is_empty(), "{out:?}");
    assert!(b.head("keep").await.unwrap_err().is_not_found());
}
