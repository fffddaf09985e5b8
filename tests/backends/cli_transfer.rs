//! `bucketfs cp` and `bucketfs uploads` against `bucketfs serve`. A `cp` killed
//! mid-way and rerun with the same arguments resumes: the server's access log
//! (`serve --access-log`) is the witness that parts stored before the kill were not
//! sent again, and the result is bit-exact. Progress is a bar on a terminal (a pty
//! from script(1)) and plain lines otherwise; `uploads list|abort` print counts.

use crate::common;
use crate::s3_support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{pattern, test_root, BIN};

const MIB: usize = 1 << 20;

/// `bucketfs cp SRC DST` against `endpoint` in 5 MiB parts, two at a time, paced to
/// 20 MiB/s so a test can kill it half-way; resume state in `state`.
fn throttled_cp(
    endpoint: &str,
    state: &std::path::Path,
    src: &std::ffi::OsStr,
    dst: &std::ffi::OsStr,
) -> Command {
    let mut c = Command::new(BIN);
    c.args(["cp", "--part-size", "5M", "--parallel", "2", "--limit-rate", "20M", "--endpoint", endpoint])
        .arg("--state-dir")
        .arg(state)
        .arg(src)
        .arg(dst)
        .stdin(Stdio::null());
    c
}

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
    let cp = || throttled_cp(&gw.endpoint, &state, src.as_os_str(), url.as_ref());

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

#[test]
fn progress_is_a_bar_on_a_terminal_and_lines_otherwise() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("cpbar");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let src = dir.path().join("f");
    std::fs::write(&src, pattern(12 * MIB, 5)).unwrap();
    let cmd = format!(
        "{BIN} cp --part-size 5M --limit-rate 24M --state-dir {0}/st --endpoint {1} {0}/f s3://{bucket}/",
        dir.path().display(),
        gw.endpoint
    );
    // plain lines when stderr is not a terminal
    let out = Command::new("bash").args(["-c", &cmd]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("part 1 done") && err.contains("ETA") && !err.contains('\r'), "{err}");
    // a redrawn bar with rate and ETA on a terminal (script(1) provides the pty)
    let out = Command::new("script").args(["-qec", &cmd, "/dev/null"]).output().unwrap();
    let tty = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{tty}");
    assert!(tty.contains("\r[") && tty.contains("MiB/s") && tty.contains("ETA"), "{tty:?}");
    assert!(!tty.contains("part 1 done"), "{tty:?}");
    // the URL ending in `/` took the file's name
    let back = dir.path().join("back");
    let out = Command::new(BIN)
        .args(["cp", "--quiet", "--endpoint", &gw.endpoint, &format!("s3://{bucket}/f")])
        .arg(&back)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(std::fs::read(&back).unwrap() == std::fs::read(&src).unwrap());
}

#[test]
fn uploads_list_and_abort_print_counts_under_a_prefix() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("leaks");
    tokio::runtime::Runtime::new().unwrap().block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let run = |args: &[&str]| {
        let out = Command::new(BIN).args(args).args(["--endpoint", &gw.endpoint]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    for key in ["tmp/a", "tmp/b/c", "keep/d"] {
        run(&["upload", "start", &format!("s3://{bucket}/{key}")]);
    }
    let list = run(&["uploads", "list", &format!("s3://{bucket}/tmp")]);
    assert!(list.contains("/tmp/a\t") && list.contains("/tmp/b/c\t") && !list.contains("keep"), "{list}");
    assert!(list.ends_with("2 pending upload(s)\n"), "{list}");
    let young = run(&["uploads", "abort", &format!("s3://{bucket}/tmp"), "--older-than", "48h"]);
    assert_eq!(young, "aborted 0 upload(s)\n");
    assert_eq!(run(&["uploads", "abort", &format!("s3://{bucket}/tmp")]), "aborted 2 upload(s)\n");
    assert!(run(&["uploads", "list", &format!("s3://{bucket}")]).ends_with("1 pending upload(s)\n"));
    assert_eq!(
        run(&["uploads", "abort", &format!("s3://{bucket}"), "--older-than", "0"]),
        "aborted 1 upload(s)\n"
    );
}

/// Ranges (`bytes=a-b`) of successful GETs among access-log `lines`.
fn fetched_ranges(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .filter(|l| l.starts_with("GET ") && l.split(' ').nth(2) == Some("206"))
        .filter_map(|l| Some(l.split_once("range=\"")?.1.split_once('"')?.0.to_owned()))
        .collect()
}

#[test]
fn killed_download_resumes_fetching_only_missing_ranges() {
    let gw = s3_support::gateway();
    let bucket = s3_support::unique_bucket("cpget");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(s3_support::make_bucket(&gw.endpoint, &bucket));
    let data = pattern(40 * MIB + 99, 21); // 9 chunks of 5 MiB
    let s3 = rt.block_on(s3_support::backend(&gw.endpoint, &bucket));
    use bucketfs::backend::StorageBackend;
    rt.block_on(s3.put("big", data.clone().into(), &Default::default())).unwrap();
    let dir = tempfile::tempdir_in(test_root()).unwrap();
    let dst = dir.path().join("big");
    let state = dir.path().join("state");
    let src = format!("s3://{bucket}/big");
    let cp = || throttled_cp(&gw.endpoint, &state, src.as_ref(), dst.as_os_str());
    let mut child = cp().stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while fetched_ranges(&gw.requests(&bucket)).len() < 4 {
        assert!(Instant::now() < deadline, "cp fetched nothing");
        assert!(child.try_wait().unwrap().is_none(), "cp finished before it could be interrupted");
        std::thread::sleep(Duration::from_millis(10));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dst.exists(), "an interrupted download must not leave DST");
    let before = gw.requests(&bucket).len();

    let out = cp().output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "rerun failed: {stderr}");
    let kept: usize = stderr
        .split_once("resuming ")
        .and_then(|(_, r)| r.split_once(": ")?.1.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("the rerun did not resume: {stderr}"));
    assert!(kept >= 1);
    let again = fetched_ranges(&gw.requests(&bucket)[before..]);
    assert_eq!(again.len(), 9 - kept, "the rerun fetched kept ranges again: {again:?}");
    assert!(std::fs::read(&dst).unwrap() == data, "the download is not bit-exact");
    assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0, "resume state left after success");
}
