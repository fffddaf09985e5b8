//! The read pattern of one open file: is it sparse, and where will it go next?
//!
//! # Design
//!
//! [`ReadPattern`] remembers the last [`HISTORY`] reads of a handle, in arrival
//! order. Two questions are asked of it, both pure functions of that history so
//! they can be unit-tested without any I/O:
//!
//! - **Is it sparse?** [`GapAnalysis`] looks at the union of the recent reads:
//!   `span` is from the lowest start to the highest end, `bytes_read` the bytes
//!   actually covered, and `gap_ratio = (span - bytes_read) / span`. A pattern
//!   is sparse when the ratio exceeds [`SPARSE_GAP_RATIO`] (0.5) *and* the total
//!   gap exceeds the threshold (`--multi-range-threshold`, 1 MiB by default):
//!   a small gap is cheaper to read through than to skip, and a sequential
//!   reader (ratio near 0) keeps the ordinary read-ahead.
//! - **Where next?** [`ReadPattern::predict`] looks at the offset deltas of the
//!   most recent reads and finds the shortest period (1 = a constant stride,
//!   up to [`MAX_PERIOD`] = a repeating cycle such as "header, payload, header,
//!   payload") that explains at least two full cycles. The pattern is then
//!   extrapolated, each predicted read taking the length of the read in the
//!   same phase. Predictions stop at the end of the object and never go below 0.
//!
//! [`merge_close`] turns a set of wanted ranges into the ranges to request:
//! sorted, overlaps joined, and neighbours closer than a small gap merged (one
//! range with a few KiB of over-fetch is cheaper than one more part).
//! [`split_batches`] then cuts them into requests of at most `batch_size`
//! ranges (`--multi-range-batch-size`).

use std::collections::VecDeque;
use std::ops::Range;

/// Reads remembered per handle.
pub const HISTORY: usize = 16;
/// Reads needed before the gap analysis is trusted.
pub const MIN_READS: usize = 2;
/// A pattern is sparse above this gap ratio.
pub const SPARSE_GAP_RATIO: f64 = 0.5;
/// Longest repeating cycle of offset deltas that [`ReadPattern::predict`] recognises.
pub const MAX_PERIOD: usize = 4;
/// Wanted ranges closer than this are fetched as one range.
pub const MERGE_GAP: u64 = 64 * 1024;

/// The sparseness of a set of reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GapAnalysis {
    /// Reads analysed.
    pub reads: usize,
    /// From the lowest start to the highest end.
    pub span: u64,
    /// Bytes covered by at least one read.
    pub bytes_read: u64,
}

impl GapAnalysis {
    /// Analysis of `ranges` (in any order, overlaps allowed, empty ranges ignored).
    pub fn of<'a>(ranges: impl IntoIterator<Item = &'a Range<u64>>) -> Self {
        let mut sorted: Vec<Range<u64>> = ranges.into_iter().filter(|r| r.start < r.end).cloned().collect();
        let reads = sorted.len();
        sorted.sort_by_key(|r| r.start);
        let (mut bytes_read, mut covered_to) = (0u64, 0u64);
        for r in &sorted {
            let start = r.start.max(covered_to);
            if r.end > start {
                bytes_read += r.end - start;
            }
            covered_to = covered_to.max(r.end);
        }
        let span = match (sorted.first(), sorted.iter().map(|r| r.end).max()) {
            (Some(f), Some(end)) => end - f.start,
            _ => 0,
        };
        GapAnalysis { reads, span, bytes_read }
    }

    /// Bytes inside the span that no read touched.
    pub fn total_gap(&self) -> u64 {
        self.span - self.bytes_read
    }

    /// `(span - bytes_read) / span`; 0 for an empty span.
    pub fn gap_ratio(&self) -> f64 {
        if self.span == 0 {
            0.0
        } else {
            self.total_gap() as f64 / self.span as f64
        }
    }

    /// Worth multi-range reading: enough reads, gap ratio above 0.5, total gap above `threshold`.
    pub fn is_sparse(&self, threshold: u64) -> bool {
        self.reads >= MIN_READS && self.gap_ratio() > SPARSE_GAP_RATIO && self.total_gap() > threshold
    }
}

/// The recent reads of one handle, oldest first.
#[derive(Clone, Debug, Default)]
pub struct ReadPattern {
    reads: VecDeque<Range<u64>>,
}

impl ReadPattern {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one read (empty reads are ignored).
    pub fn record(&mut self, range: Range<u64>) {
        if range.start >= range.end {
            return;
        }
        if self.reads.len() == HISTORY {
            self.reads.pop_front();
        }
        self.reads.push_back(range);
    }

    pub fn len(&self) -> usize {
        self.reads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// Gap analysis of the remembered reads.
    pub fn analysis(&self) -> GapAnalysis {
        GapAnalysis::of(self.reads.iter())
    }

    /// Up to `count` reads extrapolated from a stride or repeating cycle of the
    /// most recent reads, each clamped to `0..size`; empty when no pattern holds.
    pub fn predict(&self, count: usize, size: u64) -> Vec<Range<u64>> {
        let reads: Vec<&Range<u64>> = self.reads.iter().collect();
        let deltas: Vec<i128> = reads.windows(2).map(|w| w[1].start as i128 - w[0].start as i128).collect();
        let Some(period) = (1..=MAX_PERIOD).find(|&p| is_periodic(&deltas, p)) else {
            return Vec::new();
        };
        let n = deltas.len();
        let mut out = Vec::with_capacity(count);
        let mut offset = reads[reads.len() - 1].start as i128;
        for i in 0..count {
            // the delta and length in the same phase of the cycle, one cycle back
            let delta = deltas[n - period + i % period];
            let len = {
                let r = reads[reads.len() - period + i % period];
                (r.end - r.start) as i128
            };
            offset += delta;
            if offset < 0 || offset >= size as i128 {
                break;
            }
            let end = (offset + len).min(size as i128);
            out.push(offset as u64..end as u64);
        }
        out
    }
}

/// The last `2 * period` deltas repeat with `period`, and the pattern moves (not all zero).
fn is_periodic(deltas: &[i128], period: usize) -> bool {
    let need = 2 * period;
    if deltas.len() < need {
        return false;
    }
    let tail = &deltas[deltas.len() - need..];
    let cycle_moves = tail[..period].iter().sum::<i128>() != 0;
    // a cycle of one delta must be a real stride, not a repeated re-read
    cycle_moves && (0..period).all(|i| tail[i] == tail[i + period]) && tail.iter().all(|&d| d != 0)
}

/// Sorted ranges with overlaps joined and neighbours closer than `max_gap` merged.
pub fn merge_close(ranges: &[Range<u64>], max_gap: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.start < r.end).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        match out.last_mut() {
            Some(last) if r.start <= last.end.saturating_add(max_gap) => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// `ranges` cut into consecutive groups of at most `batch_size` (at least 1).
pub fn split_batches(ranges: &[Range<u64>], batch_size: usize) -> Vec<Vec<Range<u64>>> {
    ranges.chunks(batch_size.max(1)).map(<[Range<u64>]>::to_vec).collect()
}

#[cfg(test)]
#[path = "pattern_tests.rs"]
mod tests;
