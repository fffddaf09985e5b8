//! The retry policy shared by every HTTP backend (S3, GCS, Azure, and the
//! `--write-timeout` layer over any backend): how long to wait before retry
//! number n, how many times to re-issue a read whose body broke mid-stream, and
//! the counter behind `bucketfs stats`' retries.
//!
//! One module so that the backends back off alike; what is specific to the AWS
//! SDK (its retry configuration and the interceptor that feeds [`RetryCounter`])
//! stays in `s3/retry.rs`.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Attempts of a whole read whose body broke mid-stream.
pub const BODY_ATTEMPTS: u32 = 3;
/// The first retry's window; each further retry doubles it.
pub const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// The window stops growing here.
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Counts retried requests of one backend (cheap to clone; clones share the counts).
#[derive(Clone, Debug, Default)]
pub struct RetryCounter(Arc<Counts>);

#[derive(Debug, Default)]
struct Counts {
    operations: AtomicU64,
    attempts: AtomicU64,
    body_retries: AtomicU64,
}

impl RetryCounter {
    /// Requests sent again after a failed attempt, by the client library or by the backend.
    pub fn retries(&self) -> u64 {
        let c = &self.0;
        let client = c.attempts.load(Ordering::Relaxed).saturating_sub(c.operations.load(Ordering::Relaxed));
        client + c.body_retries.load(Ordering::Relaxed)
    }

    /// A read re-issued by the backend because its body broke mid-stream.
    pub fn body_retry(&self) {
        self.0.body_retries.fetch_add(1, Ordering::Relaxed);
    }

    /// An operation started (however many attempts it takes).
    pub fn operation_started(&self) {
        self.0.operations.fetch_add(1, Ordering::Relaxed);
    }

    /// One attempt of an operation was sent; attempts beyond the first are retries.
    pub fn attempt_started(&self) {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// Delay before retry number `attempt` (1-based): full jitter over an
/// exponentially growing window, so that many clients failing together do not
/// come back together.
pub fn backoff(attempt: u32) -> Duration {
    let window = INITIAL_BACKOFF.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
    let nanos = window.as_nanos() as u64;
    if nanos == 0 {
        return window;
    }
    Duration::from_nanos(random_u64() % nanos)
}

/// A random number without a dependency: std's per-instance SipHash keys are random.
fn random_u64() -> u64 {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0x5eed);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_in_its_window() {
        for attempt in 1..40 {
            let d = backoff(attempt);
            assert!(d <= MAX_BACKOFF, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(1) <= INITIAL_BACKOFF * 2);
    }

    #[test]
    fn retries_are_attempts_beyond_the_first_plus_body_retries() {
        let c = RetryCounter::default();
        let clone = c.clone();
        c.operation_started();
        c.attempt_started();
        assert_eq!(c.retries(), 0, "a first attempt is no retry");
        clone.attempt_started();
        clone.attempt_started();
        c.body_retry();
        assert_eq!(c.retries(), 3, "two re-sent attempts and one re-issued body, seen through a clone");
    }
}
