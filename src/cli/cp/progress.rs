//! Progress of one copy on stderr (a redrawn bar with rate and ETA on a
//! terminal, one plain line per part otherwise), and the `--limit-rate` pacing.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::mib;

/// Shared progress of one copy: a bar on a terminal, plain lines otherwise.
pub(super) struct Progress {
    total: u64,
    done: AtomicU64,
    sent_this_run: AtomicU64,
    parts_total: u32,
    parts_done: AtomicU64,
    pub(super) started: Instant,
    tty: bool,
    quiet: bool,
}

impl Progress {
    pub(super) fn new(total: u64, parts_total: u32, quiet: bool) -> Arc<Self> {
        Arc::new(Progress {
            total,
            done: AtomicU64::new(0),
            sent_this_run: AtomicU64::new(0),
            parts_total,
            parts_done: AtomicU64::new(0),
            started: Instant::now(),
            tty: std::io::stderr().is_terminal() && !quiet,
            quiet,
        })
    }

    pub(super) fn skipped(&self, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.parts_done.fetch_add(1, Ordering::Relaxed);
    }

    fn rate_eta(&self) -> (f64, String) {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = self.sent_this_run.load(Ordering::Relaxed) as f64 / secs;
        let left = self.total.saturating_sub(self.done.load(Ordering::Relaxed));
        let eta = if rate > 0.0 { format!("{:.0}s", left as f64 / rate) } else { "?".into() };
        (rate, eta)
    }

    pub(super) fn part_done(&self, n: u32, bytes: u64) {
        self.done.fetch_add(bytes, Ordering::Relaxed);
        self.sent_this_run.fetch_add(bytes, Ordering::Relaxed);
        let k = self.parts_done.fetch_add(1, Ordering::Relaxed) + 1;
        if !self.tty && !self.quiet {
            let (rate, eta) = self.rate_eta();
            eprintln!(
                "part {n} done ({k}/{} parts, {} of {}, {}/s, ETA {eta})",
                self.parts_total,
                mib(self.done.load(Ordering::Relaxed)),
                mib(self.total),
                mib(rate as u64)
            );
        }
    }

    pub(super) fn draw(&self) {
        if !self.tty {
            return;
        }
        let done = self.done.load(Ordering::Relaxed);
        let frac = if self.total == 0 { 1.0 } else { done as f64 / self.total as f64 };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let (rate, eta) = self.rate_eta();
        eprint!(
            "\r[{}{}] {:3.0}% {} / {} {}/s ETA {eta}   ",
            "#".repeat(filled),
            "-".repeat(width - filled),
            frac * 100.0,
            mib(done),
            mib(self.total),
            mib(rate as u64)
        );
        let _ = std::io::stderr().flush();
    }

    pub(super) fn finish(&self) {
        if self.tty {
            self.draw();
            eprintln!();
        }
    }
}

/// Spaces transfers so the average rate stays under a cap.
pub(super) struct RateLimit {
    pub(super) bytes_per_sec: u64,
    pub(super) next: tokio::sync::Mutex<tokio::time::Instant>,
}

impl RateLimit {
    /// The pacing of `--limit-rate` (none without it).
    pub(super) fn new(bytes_per_sec: Option<u64>) -> Option<Arc<Self>> {
        bytes_per_sec.map(|r| {
            Arc::new(RateLimit {
                bytes_per_sec: r,
                next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            })
        })
    }

    /// Books the next slot for `bytes` on the schedule: the instant the transfer may
    /// start (`now` or the end of the previous booking, whichever is later).
    async fn book(&self, now: tokio::time::Instant, bytes: u64) -> tokio::time::Instant {
        let mut next = self.next.lock().await;
        let start = (*next).max(now);
        *next = start + Duration::from_secs_f64(bytes as f64 / self.bytes_per_sec.max(1) as f64);
        start
    }

    pub(super) async fn wait(limit: &Option<Arc<RateLimit>>, bytes: u64) {
        let Some(l) = limit else { return };
        let start = l.book(tokio::time::Instant::now(), bytes).await;
        tokio::time::sleep_until(start).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn rate_limit_spaces_transfers() {
        // The schedule, not the clock: each booking starts where the previous one's
        // bytes at the capped rate end (no sleeping, so no timing to race).
        let l =
            RateLimit { bytes_per_sec: 1 << 20, next: tokio::sync::Mutex::new(tokio::time::Instant::now()) };
        let t0 = tokio::time::Instant::now() + Duration::from_secs(1);
        assert_eq!(l.book(t0, 100 << 10).await, t0, "the first one goes at once");
        let second = l.book(t0, 100 << 10).await;
        assert_eq!(
            second - t0,
            Duration::from_secs_f64(100.0 / 1024.0),
            "after the first's bytes at 1 MiB/s"
        );
        let later = t0 + Duration::from_secs(10);
        assert_eq!(l.book(later, 1).await, later, "an idle gap is not saved up for a burst");
        RateLimit::wait(&None, u64::MAX).await; // no limit: returns at once
    }
}
