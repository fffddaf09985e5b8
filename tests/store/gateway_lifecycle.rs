//! `bucketfs serve` as a process: drives locked by a running server are
//! refused with a clear message, SIGTERM stops it cleanly (exit 0, locks
//! released, so a new server starts on the same drives); unusable drives
//! are a clear error.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ACCESS: &str = "lifecycle-key";
const SECRET: &str = "lifecycle-secret";

fn serve(drives: &str, port: u16) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_bucketfs"));
    c.args(["serve", "--drives", drives, "--address", &format!("127.0.0.1:{port}")])
        .env("BUCKETFS_ACCESS_KEY", ACCESS)
        .env("BUCKETFS_SECRET_KEY", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    c
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn wait_listening(child: &mut Child, port: u16) {
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(child.try_wait().unwrap().is_none(), "serve exited early");
        assert!(t0.elapsed() < Duration::from_secs(30), "serve did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends SIGTERM and waits (bounded) for the exit status.
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("serve did not exit within 20s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn locked_drives_sigterm_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let drives = format!("{}/d{{1...3}}", dir.path().display());
    let port = free_port();
    let mut first = serve(&drives, port).spawn().unwrap();
    wait_listening(&mut first, port);

    let out = serve(&drives, free_port()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("locked"), "{err}");
    assert!(!err.contains(SECRET), "{err}");

    let st = terminate(&mut first);
    assert!(st.success(), "{st:?}");
    let mut log = String::new();
    std::io::Read::read_to_string(first.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(!log.contains(SECRET), "secret in log: {log}");

    // The locks are gone: a new server starts on the same drives.
    let port = free_port();
    let mut again = serve(&drives, port).spawn().unwrap();
    wait_listening(&mut again, port);
    assert!(terminate(&mut again).success());
}

#[test]
fn unusable_drives_are_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = serve(&file.display().to_string(), free_port()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot open the store"), "{err}");
}

/// A client that opens a connection and never finishes its request head is cut off
/// (header read timeout, 30 s) instead of holding the connection forever, and does not
/// block other clients meanwhile.
#[test]
fn stalled_client_is_disconnected_and_others_are_served() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let drives = format!("{}/d{{1...4}}", dir.path().display());
    let port = free_port();
    let mut child = serve(&drives, port).spawn().unwrap();
    wait_listening(&mut child, port);
    let mut stalled = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stalled.write_all(b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\n").unwrap();
    // Another client is answered at once (403: unsigned).
    let mut other = TcpStream::connect(("127.0.0.1", port)).unwrap();
    other.write_all(b"GET /bucket/key HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    // The stalled one is closed by the server after the header timeout.
    stalled.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let t0 = Instant::now();
    let mut buf = Vec::new();
    let r = stalled.read_to_end(&mut buf);
    let waited = t0.elapsed();
    assert!(
        r.is_ok() || waited < Duration::from_secs(59),
        "server never closed the stalled connection: {r:?}"
    );
    assert!(waited >= Duration::from_secs(20), "closed after {waited:?}, before the timeout");
    assert!(terminate(&mut child).success());
}

/// Issue 14: a start-up error is printed once. The cause used to follow the message a
/// second time (the error's own text already includes it, and `{:#}` appended its source).
#[test]
fn a_start_up_error_is_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let drives = format!("{}/d{{1...3}}", dir.path().display());
    // the port is taken
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = serve(&drives, port).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.matches("cannot listen on").count(), 1, "{err}");
    let cause = std::io::Error::from_raw_os_error(libc::EADDRINUSE).to_string();
    let cause = cause.split(" (os error").next().unwrap();
    assert_eq!(err.matches(cause).count(), 1, "the cause once: {err}");
    // a drive that is a plain file
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let out = serve(&file.display().to_string(), free_port()).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert_eq!(err.matches("cannot open the store").count(), 1, "{err}");
    assert_eq!(err.matches(&*file.display().to_string()).count(), 1, "the drive named once: {err}");
}
