//! A byte budget shared by write buffers and read-ahead (`--memory-limit`).
//!
//! Writers and prefetchers reserve bytes before they allocate and release them on
//! drop, so the daemon's buffer memory stays under the limit whatever the number
//! of open files. Reservations larger than the whole budget are clamped to the
//! budget so a single huge part can still proceed (alone).
//!
//! A reservation must outlive the buffers it pays for, and cancelling a request
//! does not always free them: the embedded store reads on tokio's blocking pool,
//! where an aborted read runs on and fills its buffer anyway. Measured at
//! `--memory-limit 256M` with 4 random readers: under 100 MB reserved while 35
//! reads were in flight, most of them cancelled read-ahead, and 570 MB resident.
//! So a request made inside [`covering`] can take the reservation with it
//! ([`request_memory`]) into work that a cancelled future leaves behind; backends
//! whose buffers live in the future itself (HTTP bodies) need nothing.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of reservations: the semaphore counts 64 KiB units.
const UNIT: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct MemoryLimiter {
    sem: Arc<Semaphore>,
    units: u32,
    /// Reservations ever made: lets the heap trimmer (`crate::allocator`) see activity.
    made: Arc<AtomicU64>,
}

/// Bytes reserved from a [`MemoryLimiter`]; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl MemoryLimiter {
    pub fn new(limit_bytes: u64) -> Self {
        let units = (limit_bytes / UNIT).clamp(16, u32::MAX as u64 / 2) as u32;
        MemoryLimiter { sem: Arc::new(Semaphore::new(units as usize)), units, made: Arc::default() }
    }

    pub fn limit_bytes(&self) -> u64 {
        self.units as u64 * UNIT
    }

    fn units_for(&self, bytes: u64) -> u32 {
        (bytes.div_ceil(UNIT).max(1) as u32).min(self.units)
    }

    /// Waits until `bytes` can be reserved.
    pub async fn reserve(&self, bytes: u64) -> Reservation {
        let n = self.units_for(bytes);
        let permit = self.sem.clone().acquire_many_owned(n).await.expect("memory semaphore is never closed");
        self.made.fetch_add(1, Ordering::Relaxed);
        Reservation { _permit: permit }
    }

    /// Reserves `bytes` only if they are available now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let n = self.units_for(bytes);
        let permit = self.sem.clone().try_acquire_many_owned(n).ok()?;
        self.made.fetch_add(1, Ordering::Relaxed);
        Some(Reservation { _permit: permit })
    }

    /// How many reservations were ever made (a measure of activity).
    pub fn reservations_made(&self) -> u64 {
        self.made.load(Ordering::Relaxed)
    }

    pub fn available_bytes(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
}

tokio::task_local! {
    /// The reservation paying for the buffers of the requests the current task makes.
    static REQUEST_MEMORY: Option<Arc<Reservation>>;
}

/// Runs `fut` with `reservation` paying for its requests' buffers (see [`request_memory`]).
pub async fn covering<F: Future>(reservation: Option<Arc<Reservation>>, fut: F) -> F::Output {
    REQUEST_MEMORY.scope(reservation, fut).await
}

/// The reservation of the enclosing [`covering`], for work that may outlive a cancelled
/// request (a blocking store read): it is held until that work has finished.
pub fn request_memory() -> Option<Arc<Reservation>> {
    REQUEST_MEMORY.try_with(|r| r.clone()).ok().flatten()
}

/// An LRU cache of at most `cap` entries whose table grows as it fills.
///
/// `LruCache::new(cap)` allocates the hash table for `cap` entries up front. The
/// metadata caches hold up to 256 Ki entries, a table of about 9 MB each, and the
/// inserts of a first listing landed on fresh pages of it at random: each one took
/// a page fault and a page of zeroing. In a 2,000-file `ls -l`, perf of the daemon
/// put a quarter of its CPU in those `put`s (issue 11).
pub fn growing_lru<K: std::hash::Hash + Eq, V>(cap: usize) -> lru::LruCache<K, V> {
    let mut c = lru::LruCache::unbounded();
    c.resize(std::num::NonZeroUsize::new(cap.max(1)).expect("at least 1"));
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_are_bounded_and_returned() {
        let m = MemoryLimiter::new(1024 * 1024);
        let a = m.reserve(768 * 1024).await;
        assert!(m.try_reserve(512 * 1024).is_none());
        drop(a);
        assert!(m.try_reserve(512 * 1024).is_some());
        // a reservation larger than the budget is clamped, not deadlocked
        let _all = m.reserve(10 * 1024 * 1024).await;
        assert_eq!(m.available_bytes(), 0);
    }

    #[tokio::test]
    async fn work_left_behind_by_a_cancelled_request_keeps_its_memory() {
        let m = MemoryLimiter::new(1024 * 1024);
        let r = Arc::new(m.reserve(512 * 1024).await);
        // a request that hands its reservation to blocking work, then is cancelled
        let (started_tx, started_rx) = tokio::sync::oneshot::channel();
        let (finish_tx, finish_rx) = std::sync::mpsc::channel::<()>();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(covering(Some(r), async move {
            let held = request_memory();
            assert!(held.is_some(), "the request sees its reservation");
            tokio::task::spawn_blocking(move || {
                let _ = started_tx.send(());
                let _ = finish_rx.recv();
                drop(held);
                let _ = done_tx.send(());
            })
            .await
        }));
        started_rx.await.unwrap();
        task.abort();
        let _ = task.await;
        assert_eq!(m.available_bytes(), 512 * 1024, "still reserved while the blocking work runs");
        finish_tx.send(()).unwrap();
        done_rx.await.unwrap();
        assert_eq!(m.available_bytes(), 1024 * 1024, "returned when the work ends");
        assert!(request_memory().is_none(), "nothing outside a covering scope");
    }
}
