//! Counters of a live mount, readable by users with `bucketfs stats MOUNTPOINT`
//! (which reads the `user.bucketfs.stats` xattr of the mount root).
//!
//! Plain relaxed atomics: the counters are for humans and benchmarks, not for
//! synchronisation, so a torn snapshot across counters is acceptable.
//!
//! [`Prom`] writes the Prometheus text exposition format (version 0.0.4) for
//! `bucketfs serve --metrics-address`; it is a few lines of escaping and
//! ordering rules, so it is written here rather than pulled in as a crate.

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

/// Builder of a Prometheus text-format (0.0.4) exposition.
///
/// Each metric family is announced once with [`Prom::family`] (`# HELP` and
/// `# TYPE`), then its samples follow with [`Prom::sample`]; the format wants
/// a family's samples together, so callers emit one family at a time.
#[derive(Default)]
pub struct Prom {
    out: String,
}

/// Upper bounds (seconds) of the request latency histogram: 1 ms to 10 s,
/// roughly 2.5x apart, which covers a cached HEAD and a large PUT alike.
pub const LATENCY_BUCKETS: [f64; 13] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Prom {
    /// Starts family `name` of `kind` (`counter`, `gauge`, `histogram`).
    pub fn family(&mut self, name: &str, kind: &str, help: &str) {
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        self.out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
    }

    /// One sample line: `name{k="v",...} value`.
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(k);
                self.out.push_str("=\"");
                self.out.push_str(&escape_label(v));
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        self.out.push_str(&format_value(value));
        self.out.push('\n');
    }

    /// The `_bucket`, `_sum` and `_count` samples of one histogram series
    /// (`counts[i]` = observations in bucket i alone, the last being +Inf).
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
        counts: &[u64],
        sum: f64,
    ) {
        let mut cumulative = 0;
        for (i, c) in counts.iter().enumerate() {
            cumulative += c;
            let le = bounds.get(i).map_or_else(|| "+Inf".to_string(), |b| format_value(*b));
            let mut l = labels.to_vec();
            l.push(("le", &le));
            self.sample(&format!("{name}_bucket"), &l, cumulative as f64);
        }
        self.sample(&format!("{name}_sum"), labels, sum);
        self.sample(&format!("{name}_count"), labels, cumulative as f64);
    }

    pub fn finish(self) -> String {
        self.out
    }
}

/// Label values escape backslash, double quote and newline (the format's rule).
fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Integers without a fraction (counters read better), everything else as Rust
/// prints floats, which Prometheus parses; non-finite values in its spelling.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod prom_tests {
    use super::*;

    #[test]
    fn text_format_families_labels_and_histograms() {
        let mut p = Prom::default();
        p.family("bucketfs_requests_total", "counter", "Requests.\nBy API.");
        p.sample("bucketfs_requests_total", &[("api", "GetObject"), ("status", "200")], 3.0);
        p.family("bucketfs_drive_info", "gauge", "Odd labels.");
        p.sample("bucketfs_drive_info", &[("drive", "/a\"b\\c\nd")], 0.5);
        p.family("bucketfs_latency_seconds", "histogram", "Latency.");
        p.histogram("bucketfs_latency_seconds", &[("api", "PutObject")], &[0.1, 1.0], &[2, 0, 1], 2.75);
        let text = p.finish();
        assert_eq!(
            text,
            "# HELP bucketfs_requests_total Requests.\\nBy API.\n\
             # TYPE bucketfs_requests_total counter\n\
             bucketfs_requests_total{api=\"GetObject\",status=\"200\"} 3\n\
             # HELP bucketfs_drive_info Odd labels.\n\
             # TYPE bucketfs_drive_info gauge\n\
             bucketfs_drive_info{drive=\"/a\\\"b\\\\c\\nd\"} 0.5\n\
             # HELP bucketfs_latency_seconds Latency.\n\
             # TYPE bucketfs_latency_seconds histogram\n\
             bucketfs_latency_seconds_bucket{api=\"PutObject\",le=\"0.1\"} 2\n\
             bucketfs_latency_seconds_bucket{api=\"PutObject\",le=\"1\"} 2\n\
             bucketfs_latency_seconds_bucket{api=\"PutObject\",le=\"+Inf\"} 3\n\
             bucketfs_latency_seconds_sum{api=\"PutObject\"} 2.75\n\
             bucketfs_latency_seconds_count{api=\"PutObject\"} 3\n"
        );
    }

    #[test]
    fn values_in_prometheus_spelling() {
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(1e20), "100000000000000000000");
        assert_eq!(format_value(-2.0), "-2");
        assert_eq!(format_value(0.001), "0.001");
    }
}
