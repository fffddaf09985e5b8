//! The AWS SDK's side of the S3 backend's retries.
//!
//! Request-level retries are the SDK's "standard" strategy, configured here:
//! exponential backoff with full jitter on 5xx, throttling (`SlowDown`,
//! `503`), timeouts and connection failures, up to [`MAX_ATTEMPTS`] attempts,
//! with the SDK's client-side retry quota so that a dead endpoint does not
//! multiply its load. What the SDK cannot retry is a body that breaks after
//! the response headers arrived (a connection reset in the middle of a GET):
//! those reads are re-issued by the backend with the policy every HTTP backend
//! shares, [`crate::backend::retry`].
//!
//! [`RetryCounter`] counts both kinds of retry for `bucketfs stats`: the SDK
//! interceptor below sees every operation start and every attempt, and retries
//! are attempts minus operations; re-issued body reads are added by the backend.

use aws_config::retry::RetryConfig;

use crate::backend::retry::{RetryCounter, INITIAL_BACKOFF, MAX_BACKOFF};

/// Attempts per request, the first included.
pub const MAX_ATTEMPTS: u32 = 5;

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

impl aws_sdk_s3::config::Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "bucketfs-retry-counter"
    }

    fn read_before_execution(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeSerializationInterceptorContextRef<'_>,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.operation_started();
        Ok(())
    }

    fn read_before_attempt(
        &self,
        _ctx: &aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextRef<'_>,
        _rc: &aws_sdk_s3::config::RuntimeComponents,
        _cfg: &mut aws_sdk_s3::config::ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        self.attempt_started();
        Ok(())
    }
}
