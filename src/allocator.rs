//! Keeping the process's resident memory close to the bytes it really holds.
//!
//! The `--memory-limit` budget ([`crate::memory`]) bounds the buffers the
//! daemon holds at once, but glibc's malloc does not give freed memory back by
//! itself: its mmap threshold grows to the size of the largest block freed
//! (up to 32 MiB), after which 1-8 MiB part buffers, read-ahead chunks and
//! erasure-coded blocks are carved out of per-thread arenas, and freed arena
//! memory stays resident. Measured on a `local://` mount at `--memory-limit
//! 256M` with four 1 GiB writers: 520 MB peak RSS and 476 MB still resident
//! when idle, against 233 MB and 28 MB with a fixed threshold.
//!
//! So [`tune`] fixes the mmap threshold (large buffers are mapped on
//! allocation and unmapped on free, so RSS follows the budget), caps the
//! number of arenas, and [`spawn_trimmer`] hands the small-block arenas' free
//! pages back to the kernel (`malloc_trim`) once activity has stopped. Other
//! allocators (musl, a global allocator) are left alone: both are no-ops there.

use std::time::Duration;

use crate::memory::MemoryLimiter;

/// Allocations of at least this size get their own mapping (glibc's initial default,
/// which it then raises; fixing it disables the raising).
const MMAP_THRESHOLD: i32 = 128 * 1024;
/// Arenas per CPU. glibc's default (8 per CPU) multiplies fragmentation by the
/// number of store and blocking-pool threads.
const ARENAS_PER_CPU: usize = 2;
/// How often the trimmer checks for activity.
const TRIM_INTERVAL: Duration = Duration::from_secs(2);

/// Sets the allocator up for a long-running daemon (mount, `serve`). Call once, early.
pub fn tune() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let arenas = (cpus * ARENAS_PER_CPU).clamp(2, 64) as i32;
        // SAFETY: mallopt only changes allocator parameters; called before the worker threads start.
        let ok = unsafe {
            libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
                && libc::mallopt(libc::M_ARENA_MAX, arenas) == 1
        };
        if !ok {
            tracing::debug!("mallopt refused a setting; freed memory may stay resident longer");
        }
    }
}

/// Returns free heap pages, and the idle download buffers of [`crate::buffers`], to the kernel.
pub fn trim() {
    crate::buffers::release_idle();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// A background thread that trims the heap once the budget `memory` has seen
/// reservations and then none for a [`TRIM_INTERVAL`]: an idle mount holds little
/// more than its code, caches and whatever its open files still buffer. Lives as
/// long as the process.
pub fn spawn_trimmer(memory: MemoryLimiter) {
    let spawned = std::thread::Builder::new().name("bucketfs-trim".into()).spawn(move || {
        let mut trimmed_at = memory.reservations_made();
        let mut seen = trimmed_at;
        loop {
            std::thread::sleep(TRIM_INTERVAL);
            let now = memory.reservations_made();
            if now != seen && tracing::enabled!(target: "bucketfs::memory", tracing::Level::DEBUG) {
                log_usage(&memory);
            }
            // quiet for an interval after some activity (idle open files may still hold
            // read-ahead, so the budget need not be all free)
            if now == seen && now != trimmed_at {
                let _span = tracing::debug_span!(target: "bucketfs::memory", "malloc_trim").entered();
                trim();
                trimmed_at = now;
            }
            seen = now;
        }
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no heap trimmer thread: freed memory may stay resident");
    }
}

/// Where the memory is (debug log of `bucketfs::memory`): the budget's reserved bytes
/// next to what the allocator has mapped and holds in its arenas.
fn log_usage(memory: &MemoryLimiter) {
    let reserved = memory.limit_bytes() - memory.available_bytes();
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads allocator statistics.
        let mi = unsafe { libc::mallinfo2() };
        tracing::debug!(target: "bucketfs::memory", reserved, mapped = mi.hblkhd, arena_used = mi.uordblks,
            arena_free = mi.fordblks, "memory use");
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    tracing::debug!(target: "bucketfs::memory", reserved, "memory use");
}
