//! Retry policy of the S3 backend.
//!
//! Request-level retries are the SDK's "standard" strategy, configured here:
//! exponential backoff with full jitter on 5xx, throttling (`SlowDown`,
//! `503`), timeouts and connection failures, up to [`MAX_ATTEMPTS`] attempts,
//! with the SDK's client-side retry quota so that a dead endpoint does not
//! multiply its load. What the SDK cannot retry is a body that breaks after
//! the response headers arrived (a connection reset in the middle of a GET):
//! [`backoff`] gives the delays the backend uses to re-issue those reads.
//!
//! [`RetryCounter`] counts both kinds of retry for `bucketfs stats`: an SDK
//! interceptor sees every operation start and every attempt, and retries are
//! attempts minus operations; re-issued body reads are added by the backend.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// Attempts of a whole read whose body broke mid-stream.
pub const BODY_ATTEMPTS: u32 = 3;
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// The SDK retry configuration used by every request.
pub fn standard() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(MAX_ATTEMPTS)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

/// The retry configuration of the mount-time bucket check: an unreachable
/// endpoint must be reported within a few seconds, not after a minute of backoff.
pub fn quick() -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(2)
        .with_initial_backoff(INITIAL_BACKOFF)
        .with_max_backoff(MAX_BACKOFF)
}

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
    /// Requests sent again after a failed attempt, by the SDK or by the backend.
    pub fn retries(&self) -> u64 {
        let c = &self.0;
        let sdk = c.attempts.load(Ordering::Relaxed).saturating_sub(c.operations.load(Ordering::Relaxed));
        sdk + c.body_retries.load(Ordering::Relaxed)
    }

    /// A read re-issued by the backend because its body broke mid-stream.
    pub fn body_retry(&self) {
        self.0.body_retries.fetch_add(1, Ordering::Relaxed);
    }
}

impl aws_sdk_s3::config::Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "bucketfs-retry-counter"
    }

    fn read_before_execution(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.operations.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.0.attempts.fetch_add(1, Ordering::Relaxed);
        Ok(())
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
}
