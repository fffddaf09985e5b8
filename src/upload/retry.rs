//! Retrying a step of a multipart upload (a part, a completion, a ranged read)
//! after a transient failure, with exponential backoff: 0.2 s, 0.4 s, ... up to
//! 5 s between attempts.
//!
//! Mounts get their retries from `backend::write_retry` (`--write-timeout`: a
//! deadline, not a count, because an application waits); `bucketfs cp` counts
//! attempts (`--retries`) and sends parts through [`send_part_with_retries`],
//! so the part upload with retries lives here beside the contract it drives,
//! not in the CLI. Only transient errors are retried: a dead upload, a refused
//! part or a missing object fails at once.

use std::future::Future;
use std::time::Duration;

use bytes::Bytes;

use super::contract::{ContractError, MultipartUploader, PartHandle, UploadHandle};
use crate::backend::BackendError;
use crate::object::ErrorKind;

/// The first wait; each retry doubles it up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(200);
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// An error worth another attempt: throttled, unavailable, I/O (the network or the
/// server, not the request), or an unclassified one.
pub fn transient(e: &BackendError) -> bool {
    e.kind().is_transient() || e.kind() == ErrorKind::Other
}

/// Runs `op` up to `attempts` times (at least once) while it fails transiently.
pub async fn with_retries<T, F, Fut>(what: &str, attempts: u32, mut op: F) -> Result<T, ContractError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ContractError>>,
{
    let mut delay = FIRST_DELAY;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(ContractError::Backend(e)) if attempt < attempts && transient(&e) => {
                tracing::warn!("{what}: {e}; retrying in {delay:?} (attempt {attempt} of {attempts})");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_DELAY);
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Part `n` of upload `h`, sent with up to `attempts` attempts.
pub async fn send_part_with_retries(
    up: &MultipartUploader,
    h: &UploadHandle,
    n: u32,
    data: Bytes,
    attempts: u32,
) -> Result<PartHandle, ContractError> {
    with_retries(&format!("part {n}"), attempts, || up.put_part(h, n, data.clone())).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn retried_on_transient_errors_only() {
        let calls = AtomicU32::new(0);
        let r = with_retries("t", 5, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(BackendError::io("reset").into()),
                1 => Err(BackendError::unavailable("503").into()),
                _ => Ok(7),
            }
        })
        .await;
        assert_eq!((r.unwrap(), calls.load(Ordering::SeqCst)), (7, 3));

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries("t", 5, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(ContractError::UnknownUpload("u".into()))
        })
        .await;
        assert!(matches!(r, Err(ContractError::UnknownUpload(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a dead upload is not retried");

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = with_retries("t", 2, || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(BackendError::io("down").into())
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 2, "gives up after --retries attempts");
    }
}
