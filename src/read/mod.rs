//! Reading object content for file handles.
//!
//! [`Prefetcher`] serves the reads of one open file from one pinned object
//! version, with a read-ahead window that grows while reads are sequential and
//! collapses on a random access. Future multi-range planning (merging the
//! sparse reads of one handle into few requests) belongs in this module too.

pub mod prefetcher;

pub use prefetcher::{get_pinned, PrefetchConfig, Prefetcher};
