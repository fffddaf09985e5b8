//! A byte budget shared by write buffers and read-ahead (`--memory-limit`).
//!
//! Writers and prefetchers reserve bytes before they allocate and release them on
//! drop, so the daemon's buffer memory stays under the limit whatever the number
//! of open files. Reservations larger than the whole budget are clamped to the
//! budget so a single huge part can still proceed (alone).

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Granularity of reservations: the semaphore counts 64 KiB units.
const UNIT: u64 = 64 * 1024;

#[derive(Clone, Debug)]
pub struct MemoryLimiter {
    sem: Arc<Semaphore>,
    units: u32,
}

/// Bytes reserved from a [`MemoryLimiter`]; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    _permit: OwnedSemaphorePermit,
}

impl MemoryLimiter {
    pub fn new(limit_bytes: u64) -> Self {
        let units = (limit_bytes / UNIT).clamp(16, u32::MAX as u64 / 2) as u32;
        MemoryLimiter { sem: Arc::new(Semaphore::new(units as usize)), units }
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
        Reservation { _permit: permit }
    }

    /// Reserves `bytes` only if they are available now.
    pub fn try_reserve(&self, bytes: u64) -> Option<Reservation> {
        let n = self.units_for(bytes);
        self.sem.clone().try_acquire_many_owned(n).ok().map(|p| Reservation { _permit: p })
    }

    pub fn available_bytes(&self) -> u64 {
        self.sem.available_permits() as u64 * UNIT
    }
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
}
