//! Daemonizing with a readiness report.
//!
//! The parent must exit 0 only once the mount is live, or print the reason and exit
//! non-zero: scripts and `mount -a` rely on the exit status, and a daemon that
//! "succeeds" and then fails in the background is the classic fstab trap. So we fork
//! before anything multi-threaded exists (no tokio runtime yet), keep a pipe from the
//! child to the parent, and the child writes either `OK` or `ERR <message>` once it
//! knows. If the child dies without a word, the parent says so.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The child's end of the readiness pipe.
pub struct Readiness {
    pipe: File,
}

impl Readiness {
    /// Reports success; the parent exits 0. Detaches stdio from the terminal, sending
    /// stdout/stderr to `log_file` (or /dev/null).
    pub fn ready(mut self, log_file: Option<&Path>) -> io::Result<()> {
        let devnull = File::options().read(true).write(true).open("/dev/null")?;
        let log = match log_file {
            Some(p) => File::options().create(true).append(true).open(p)?,
            None => devnull.try_clone()?,
        };
        // SAFETY: dup2 on valid descriptors we own; replaces the inherited terminal fds.
        unsafe {
            libc::dup2(devnull.as_raw_fd(), 0);
            libc::dup2(log.as_raw_fd(), 1);
            libc::dup2(log.as_raw_fd(), 2);
        }
        self.pipe.write_all(b"OK\n")
    }

    /// Reports failure; the parent prints `message` and exits 1.
    pub fn fail(mut self, message: &str) {
        let _ = self.pipe.write_all(format!("ERR {message}\n").as_bytes());
    }
}

/// Forks. Returns `Ok(readiness)` in the child; in the parent, waits for the child's report
/// and exits the process with the right status (never returns).
pub fn daemonize() -> io::Result<Readiness> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two valid descriptors on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptors were just created and are owned here only.
    let (read_end, write_end) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no other threads exist yet (called before the runtime and logging start).
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(read_end);
            // SAFETY: setsid in the fresh child detaches it from the terminal's session.
            unsafe { libc::setsid() };
            Ok(Readiness { pipe: File::from(write_end) })
        }
        child => {
            drop(write_end);
            let mut report = String::new();
            let _ = File::from(read_end).read_to_string(&mut report);
            if report.starts_with("OK") {
                std::process::exit(0);
            }
            if let Some(msg) = report.strip_prefix("ERR ") {
                eprintln!("bucketfs: {}", msg.trim_end());
            } else {
                let mut status = 0;
                // SAFETY: waiting for our own child.
                unsafe { libc::waitpid(child, &mut status, 0) };
                eprintln!("bucketfs: the mount process exited before the mount was ready (status {status})");
            }
            std::process::exit(1);
        }
    }
}
