//! Counters of a live mount, readable by users with `bucketfs stats MOUNTPOINT`
//! (which reads the `user.bucketfs.stats` xattr of the mount root).
//!
//! Plain relaxed atomics: the counters are for humans and benchmarks, not for
//! synchronisation, so a torn snapshot across counters is acceptable.

use std::sync::atomic::{AtomicU64, Ordering};

macro_rules! counters {
    ($($name:ident),* $(,)?) => {
        /// Process-wide counters; one instance per mount, shared by all layers.
        #[derive(Debug, Default)]
        pub struct Metrics { $(pub $name: AtomicU64,)* }

        impl Metrics {
            /// `name value` lines, one per counter, in declaration order.
            pub fn render(&self) -> String {
                let mut s = String::new();
                $( s.push_str(&format!("{} {}\n", stringify!($name), self.$name.load(Ordering::Relaxed))); )*
                s
            }
        }
    };
}

counters!(
    requests_head,
    requests_list,
    requests_get,
    requests_put,
    requests_delete,
    requests_copy,
    requests_multipart,
    requests_failed,
    // backend requests running right now, and the most ever running at once:
    // how much latency the mount hides by overlapping requests
    requests_in_flight,
    requests_in_flight_peak,
    retries,
    bytes_read,
    bytes_written,
    stat_cache_hits,
    stat_cache_misses,
    multi_range_requests,
    multi_range_ranges,
    multi_range_requests_saved,
    multi_range_bytes_overfetched,
    // batches of sparse reads sent as concurrent single-range requests (backends
    // without multi-range GETs, e.g. GCS): round trips saved, requests not
    multi_range_parallel_batches,
);

impl Metrics {
    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}
