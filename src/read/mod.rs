//! Reading object content for file handles.
//!
//! [`Prefetcher`] serves the reads of one open file from one pinned object
//! version, with a read-ahead window that grows while reads are sequential and
//! collapses on a random access. It plans a read without waiting (under the
//! handle's lock) and returns a [`ReadPlan`] that the read awaits after the
//! lock is released, so concurrent reads never queue behind each other's
//! requests. With `--enable-multi-range`, a
//! [`MultiRangeReader`] in front of it watches the handle's [`ReadPattern`]
//! (`pattern`: gap-ratio analysis, stride extrapolation, range merging) and
//! serves sparse reads from batched multi-range requests (`multirange`).

pub mod multirange;
pub mod pattern;
pub mod prefetcher;

pub use multirange::{MultiRangeConfig, MultiRangeReader};
pub use pattern::{GapAnalysis, ReadPattern};
pub use prefetcher::{get_pinned, PrefetchConfig, Prefetcher, ReadPlan};
