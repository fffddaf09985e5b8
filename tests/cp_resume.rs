//! `bucketfs cp` to `bucketfs serve`: killed mid-way, rerun with the same arguments,
//! it resumes. The server's access log (`serve --access-log`) is the witness that
//! parts stored before the kill were not sent again, and the result is bit-exact.

mod common;
mod s3_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pattern, test_root, BIN};

const MIB: usize = 1 << 20;

/// Part numbers of successful UploadPart requests among access-log `lines`.
fn stored_parts(lines: &[String]) -> Vec<u32> {
    let mut parts: Vec<u32> = lines
        .iter()
        .filter(|l| l.starts_with("PUT ") && l.split(' ').nth(2) == Some("200"))
        .filter_map(|l| {
            let q = l.split(' ').nth(1)?.split_once('?')?.1;
            q.split('&').find_map(|kv| kv.strip_prefix("partNumber=")?.parse().ok())
        })
        .collect();
    parts.sort();
    parts
}

#[test]
fn killed_cp_resumes_without_resending_stored_parts() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("cp");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let src = dir.path().join("big.iso");
    let data = pattern(45 * MIB + 1234, 11); // 10 parts of 5 MiB, the last short
    std::fs::write(&src, &data).unwrap();
    let url = format!("s3://{bucket}/images/big.iso");
    let state = dir.path().join("state");
    let cp = || {
        let mut c = Command::new(BIN);
        c.args([
            "cp",
            "--part-size",
            "5M",
            "--parallel",
            "2",
            "--limit-rate",
            "20M",
            "--endpoint",
            &gw.endpoint,
        ])
        .arg("--state-dir")
        .arg(&state)
        .arg(&src)
        .arg(&url)
        .stdin(Stdio::null());
        c
    };

    // first run: killed once the server has stored three parts
    let mut child = cp().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while stored_parts(&gw.requests(&bucket)).len() < 3 {
        assert!(Instant::now() < deadline, "cp stored no parts: {:?}", gw.requests(&bucket));
        assert!(child.try_wait().unwrap().is_none(), "cp finished before it could be interrupted");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = gw.requests(&bucket);
    let stored_before = stored_parts(&before);
    assert!(stored_before.len() < 10, "the first run finished: {stored_before:?}");
    assert!(
        !before.iter().any(|l| l.starts_with("POST ") && l.contains("uploadId=") && !l.contains("uploads")),
        "the first run completed the upload"
    );

    // second run, same arguments: resumes
    let out = cp().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rerun failed: {stderr}");
    assert!(stderr.contains("resuming"), "{stderr}");
    let after: Vec<String> = gw.requests(&bucket)[before.len()..].to_vec();
    let resent: Vec<u32> = stored_parts(&after).into_iter().filter(|p| stored_before.contains(p)).collect();
    assert!(resent.is_empty(), "parts {resent:?} were sent again; rerun requests: {after:#?}");
    let mut all = stored_before.clone();
    all.extend(stored_parts(&after));
    all.sort();
    all.dedup();
    assert_eq!(all, (1..=10).collect::<Vec<u32>>(), "every part stored once across both runs");

    // bit-exact, read back through `cp` the other way
    let back = dir.path().join("back");
    let out = Command::new(BIN)
        .args(["cp", "--quiet", "--endpoint", &gw.endpoint, &url])
        .arg(&back)
        .output()
        .unwrap();
    assert!(out.status.success(), "download failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == data, "the copy is not bit-exact");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "resume state left after success");
}
