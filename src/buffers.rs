//! Recycled download, upload-part and erasure-block buffers.
//!
//! Why: a cold sequential read of 512 MiB through an S3 mount (SeaweedFS on
//! 127.0.0.1, 2026-11-29) spent about 40 % of the daemon's CPU in page faults,
//! page zeroing and memory-cgroup charging, ten times the CPU of `curl` for the
//! same bytes. Every read-ahead chunk was collected into a fresh 1-8 MiB buffer;
//! buffers over 128 KiB get their own mapping (see [`crate::allocator`], which
//! keeps RSS close to the memory budget that way), so each one was mapped,
//! faulted in and zeroed page by page, filled, and unmapped once read. On a
//! machine whose cores are shared with the server (and, in our benchmarks, the
//! delaying proxy), that CPU is throughput.
//!
//! The same held for upload parts: a sequential write filled a fresh 8 MiB
//! buffer per part, and page faults, zeroing and charging were a third of the
//! daemon's CPU on a 256 MiB write (`upload::streaming` takes its part buffers
//! here too), and again for the copy of each 1 MiB FUSE write's payload that
//! `fs::BucketFs::write` hands to its task (a quarter of the daemon's CPU).
//! And in the embedded store (2026-11-30): its erasure blocks and parity shards
//! (a sixth of all CPU of a CPU-bound `local://` write) and the buffers its
//! reads fill (a third of the daemon's CPU on a cold `local://` read).
//!
//! So large downloads take their buffer from a small pool of buffers that have
//! already been touched: [`take`] hands out an empty `Vec` with at least the
//! capacity asked for, and [`freeze`] turns the filled `Vec` into [`Bytes`]
//! that give the buffer back to the pool when their last clone is dropped.
//! Capacities are rounded up to whole MiB so that a recycled buffer holds at most
//! 1 MiB more than its download (the budget reserves the download's length).
//! The pool keeps at most [`pool_limit`] bytes of idle buffers (a sixteenth of
//! `--memory-limit`, at most 64 MiB: a sequential reader frees about half its
//! 64 MiB window between two top-ups; 32 MiB measured 15 % more CPU than 64),
//! so that the daemon stays within the limit plus the slack README promises;
//! when it is full the oldest idle buffers are freed first. Working buffers of a
//! fixed size that never become [`Bytes`] (the store's erasure blocks) use
//! [`take_exact`] and [`recycle`] instead: their capacity is exact, so that a
//! parity shard of 512 KiB does not hold a MiB. And
//! [`release_idle`] frees them all (the heap trimmer calls it when the mount
//! goes quiet), so an idle mount holds none of them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

const MIB: usize = 1024 * 1024;
/// Downloads smaller than this are allocated exactly: a random 16 KiB read must not
/// hold a recycled MiB.
pub const POOL_MIN_LEN: usize = 512 * 1024;
/// Largest buffer kept (read-ahead requests are at most 8 MiB by default).
const POOL_MAX_LEN: usize = 16 * MIB;
/// Idle bytes the pool keeps at most, unless [`set_pool_limit`] says otherwise.
const DEFAULT_POOL_LIMIT: usize = 32 * MIB;
/// The most [`set_pool_limit`] allows.
const POOL_LIMIT_MAX: usize = 64 * MIB;

static POOL_LIMIT: AtomicUsize = AtomicUsize::new(DEFAULT_POOL_LIMIT);

/// Sizes the pool for a daemon whose buffers are bounded by `memory_limit` bytes.
pub fn set_pool_limit(memory_limit: u64) {
    let limit = usize::try_from(memory_limit / 16).unwrap_or(usize::MAX).min(POOL_LIMIT_MAX);
    POOL_LIMIT.store(limit, Ordering::Relaxed);
}

/// Idle bytes the pool keeps at most.
pub fn pool_limit() -> usize {
    POOL_LIMIT.load(Ordering::Relaxed)
}

struct Pool {
    /// Idle buffers, empty, oldest first: download buffers (a whole number of MiB)
    /// and fixed-size working buffers given back with [`recycle`].
    idle: Vec<Vec<u8>>,
    idle_bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool { idle: Vec::new(), idle_bytes: 0 });

fn pool() -> std::sync::MutexGuard<'static, Pool> {
    // the pool holds no invariant a panicking holder could break half-way
    POOL.lock().unwrap_or_else(|e| e.into_inner())
}

fn class_of(len: usize) -> usize {
    len.div_ceil(MIB) * MIB
}

/// An empty buffer with room for at least `len` bytes: a recycled one when `len` is
/// in the pooled range and one is idle, else a new one.
pub fn take(len: usize) -> Vec<u8> {
    if !(POOL_MIN_LEN..=POOL_MAX_LEN).contains(&len) {
        return Vec::with_capacity(len);
    }
    // a whole number of MiB, inside the range take_exact recycles
    take_exact(class_of(len))
}

/// The bytes of `buf`; its allocation goes back to the pool once the last clone of
/// the result is dropped (when it is of a pooled size).
pub fn freeze(buf: Vec<u8>) -> Bytes {
    if (POOL_MIN_LEN..=POOL_MAX_LEN).contains(&buf.capacity()) && buf.capacity() % MIB == 0 {
        Bytes::from_owner(Recycled(buf))
    } else {
        Bytes::from(buf)
    }
}

/// Smallest buffer [`recycle`] keeps: a parity shard of a 1 MiB erasure block split
/// over 16 data drives.
pub const RECYCLE_MIN_LEN: usize = 64 * 1024;

/// An empty buffer whose capacity is exactly `cap`: a recycled one when one is idle,
/// else a new one. For working buffers of a fixed size that do not leave as
/// [`Bytes`] (the embedded store's erasure-coded blocks); give them back with
/// [`recycle`].
pub fn take_exact(cap: usize) -> Vec<u8> {
    if (RECYCLE_MIN_LEN..=POOL_MAX_LEN).contains(&cap) {
        let mut p = pool();
        if let Some(i) = p.idle.iter().rposition(|v| v.capacity() == cap) {
            let v = p.idle.remove(i);
            p.idle_bytes -= v.capacity();
            return v;
        }
    }
    Vec::with_capacity(cap)
}

/// Gives `buf`'s allocation to the pool when its capacity is in the pooled range
/// (else frees it). When the pool is full the oldest idle buffers are freed to make
/// room, so buffers of a size nobody asks for any more age out.
pub fn recycle(mut buf: Vec<u8>) {
    if !(RECYCLE_MIN_LEN..=POOL_MAX_LEN).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    let limit = pool_limit();
    if buf.capacity() > limit {
        return;
    }
    let mut p = pool();
    let mut evicted = Vec::new();
    while p.idle_bytes + buf.capacity() > limit && !p.idle.is_empty() {
        let old = p.idle.remove(0);
        p.idle_bytes -= old.capacity();
        evicted.push(old);
    }
    p.idle_bytes += buf.capacity();
    p.idle.push(buf);
    drop(p);
    drop(evicted); // freed after the lock
}

/// Frees every idle buffer.
pub fn release_idle() {
    let idle = {
        let mut p = pool();
        p.idle_bytes = 0;
        std::mem::take(&mut p.idle)
    };
    drop(idle);
}

/// Idle bytes held by the pool (for tests and the memory debug log).
pub fn idle_bytes() -> usize {
    pool().idle_bytes
}

/// A filled buffer inside [`Bytes`]; returns to the pool when dropped.
struct Recycled(Vec<u8>);

impl AsRef<[u8]> for Recycled {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Recycled {
    fn drop(&mut self) {
        recycle(std::mem::take(&mut self.0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // One test only: the pool is process-wide, and parallel tests would see each
    // other's buffers.
    #[test]
    fn large_buffers_come_back_small_ones_do_not() {
        release_idle();
        let mut v = take(3 * MIB - 5);
        assert!(v.capacity() >= 3 * MIB - 5);
        v.extend_from_slice(&vec![7u8; 3 * MIB - 5]);
        let ptr = v.as_ptr();
        let b = freeze(v);
        assert_eq!(b.len(), 3 * MIB - 5);
        let slice = b.slice(10..20);
        drop(b);
        assert_eq!(idle_bytes(), 0, "a slice still holds the buffer");
        assert_eq!(&slice[..], &[7u8; 10]);
        drop(slice);
        assert_eq!(idle_bytes(), 3 * MIB);
        let again = take(2 * MIB + 1);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is handed out again");
        assert!(again.is_empty());
        assert_eq!(idle_bytes(), 0);

        // small downloads are exact and never pooled
        let small = take(16 * 1024);
        assert_eq!(small.capacity(), 16 * 1024);
        drop(freeze(small));
        assert_eq!(idle_bytes(), 0);

        // the pool keeps at most its limit idle
        assert_eq!(pool_limit(), DEFAULT_POOL_LIMIT);
        let many: Vec<Bytes> =
            (0..(DEFAULT_POOL_LIMIT / (8 * MIB) + 2)).map(|_| freeze(take(8 * MIB))).collect();
        drop(many);
        assert_eq!(idle_bytes(), DEFAULT_POOL_LIMIT);
        release_idle();
        assert_eq!(idle_bytes(), 0);
        drop(again);

        // working buffers come back at their exact capacity
        let block = take_exact(MIB + 2);
        assert_eq!(block.capacity(), MIB + 2);
        let ptr = block.as_ptr();
        recycle(block);
        assert_eq!(idle_bytes(), MIB + 2);
        assert_eq!(take_exact(MIB).capacity(), MIB, "another size is not handed out");
        let again = take_exact(MIB + 2);
        assert_eq!(again.as_ptr(), ptr);
        recycle(vec![0u8; 1000]);
        assert_eq!(idle_bytes(), 0, "too small to keep");

        // a full pool frees its oldest buffers for a new one
        let odd: Vec<Vec<u8>> = (0..DEFAULT_POOL_LIMIT / (4 * MIB)).map(|_| take_exact(4 * MIB)).collect();
        odd.into_iter().for_each(recycle);
        assert_eq!(idle_bytes(), DEFAULT_POOL_LIMIT);
        recycle(again);
        assert_eq!(idle_bytes(), DEFAULT_POOL_LIMIT - 4 * MIB + MIB + 2);
        assert_eq!(take_exact(MIB + 2).capacity(), MIB + 2);
        assert_eq!(idle_bytes(), DEFAULT_POOL_LIMIT - 4 * MIB, "the newest one stayed");
        release_idle();
    }
}
