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
//! - **Where next?** [`ReadPattern::predict`] extrapolates a stride or a
//!   repeating cycle. It works on *records*: consecutive reads that touch or
//!   overlap (one pread split by the kernel into several FUSE reads, or
//!   reordered pieces of it) are joined first, so a record of any size is one
//!   entry. It then looks at the deltas between record starts and finds the
//!   shortest period (1 = a constant stride, up to [`MAX_PERIOD`] = a cycle
//!   such as "header, payload, header, payload") such that, over a suffix of
//!   at least two full cycles, the deltas of each phase differ by at most
//!   [`DELTA_TOLERANCE`] (two pages). The tolerance is what the kernel needs:
//!   it rounds every FUSE read to pages, so an application reading 16 KiB at
//!   multiples of 1,342,177 bytes reaches us as reads of 16 or 20 KiB at page
//!   boundaries whose deltas alternate between 327 and 328 pages. Each
//!   predicted record is placed one or more cycles after the last record of
//!   its phase, with the cycle's *average* advance over the consistent suffix
//!   ((last - first start of each phase) / cycles, which telescopes: its error
//!   shrinks with every read instead of adding up), and takes the longest
//!   length seen in its phase. Since an observed start can be a page from the
//!   application's (page-aligned reads were rounded by the kernel) or jitter
//!   by the deltas' spread, each prediction is widened by the error the average
//!   can have accumulated by then (cycles ahead x that uncertainty / cycles
//!   seen, plus a page when the deltas varied) and rounded out to page
//!   boundaries: a predicted piece must contain the real read, or it is
//!   wasted. An exact stride of unaligned reads is predicted exactly.
//!   Predictions stop at the end of the object and never go below 0.
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
/// The kernel's page: FUSE reads start and end on these boundaries (but at the end of a file).
pub const PAGE: u64 = 4096;
/// Largest difference between deltas of one phase that still counts as the same stride.
pub const DELTA_TOLERANCE: u64 = 2 * PAGE;

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

/// The recent reads of one handle, oldest first, and the records they form.
#[derive(Clone, Debug, Default)]
pub struct ReadPattern {
    reads: VecDeque<Range<u64>>,
    /// Touching or overlapping consecutive reads joined, oldest first.
    records: VecDeque<Range<u64>>,
}

/// How a period fits the recent record deltas.
struct Fit {
    period: usize,
    /// Deltas of the consistent suffix (the most recent ones).
    used: usize,
    /// Largest difference between two deltas of one phase.
    spread: u64,
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
        self.reads.push_back(range.clone());
        match self.records.back_mut() {
            Some(last) if range.start <= last.end && last.start <= range.end => {
                last.start = last.start.min(range.start);
                last.end = last.end.max(range.end);
            }
            _ => {
                if self.records.len() == HISTORY {
                    self.records.pop_front();
                }
                self.records.push_back(range);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.reads.len()
    }

    pub fn is_empty(&self) -> bool {
        self.reads.is_empty()
    }

    /// The remembered records, oldest first.
    pub fn records(&self) -> impl Iterator<Item = &Range<u64>> {
        self.records.iter()
    }

    /// Gap analysis of the remembered reads.
    pub fn analysis(&self) -> GapAnalysis {
        GapAnalysis::of(self.reads.iter())
    }

    /// Up to `count` records extrapolated from a stride or repeating cycle of the
    /// most recent records, page-aligned and widened to cover the reads the
    /// kernel will send for them, clamped to `0..size`; empty when no pattern holds.
    pub fn predict(&self, count: usize, size: u64) -> Vec<Range<u64>> {
        let records: Vec<&Range<u64>> = self.records.iter().collect();
        let deltas: Vec<i128> = records.windows(2).map(|w| w[1].start as i128 - w[0].start as i128).collect();
        let Some(fit) = (1..=MAX_PERIOD).find_map(|p| fit_period(&deltas, p)) else {
            return Vec::new();
        };
        let (n, p) = (deltas.len(), fit.period);
        // per phase of records (record i follows delta i - 1): its first and last
        // record in the suffix, and its longest record
        let (mut first, mut last, mut length) = (vec![usize::MAX; p], vec![0usize; p], vec![0u64; p]);
        for (i, r) in records.iter().enumerate().skip(n - fit.used) {
            let c = i % p;
            first[c] = first[c].min(i);
            last[c] = i;
            length[c] = length[c].max(r.end - r.start);
        }
        // one cycle's advance, averaged over every phase: (last - first) of a phase
        // telescopes, so its error does not grow with the number of reads
        let (mut advance, mut cycles) = (0i128, 0usize);
        for c in 0..p {
            advance += records[last[c]].start as i128 - records[first[c]].start as i128;
            cycles += (last[c] - first[c]) / p;
        }
        let cycle = advance as f64 / cycles.max(1) as f64;
        // how far one observed start can be from the application's: a page when the
        // reads are page-aligned (the kernel rounded them), else what the deltas vary by
        let aligned = records[n - fit.used..].iter().all(|r| r.start % PAGE == 0);
        let noise = fit.spread.max(if aligned { PAGE } else { 0 }) as f64;
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let t = n + 1 + i;
            let c = t % p;
            let k = (t - last[c]) / p;
            let center = records[last[c]].start as f64 + k as f64 * cycle;
            if center.round() < 0.0 || center.round() >= size as f64 {
                break;
            }
            // the error of `cycle`, k cycles on, and a page more if the phases jitter
            let jitter = if fit.spread > 0 { PAGE as f64 } else { 0.0 };
            let margin = (k * p) as f64 * noise / cycles.max(1) as f64 + jitter;
            let start = ((center - margin).max(0.0) as u64) / PAGE * PAGE;
            let end = ((center + margin + length[c] as f64).ceil() as u64).div_ceil(PAGE);
            let end = end.saturating_mul(PAGE).min(size);
            if start < end {
                out.push(start..end);
            }
        }
        out
    }
}

/// Record starts on a regular lattice: `base + k * stride` for whole `k`, each
/// record up to `len` bytes. Found by [`ReadPattern::lattice`] when the records
/// visit the lattice in any order (a shuffled reader of fixed-size records).
#[derive(Clone, Debug, PartialEq)]
pub struct Lattice {
    pub base: f64,
    pub stride: f64,
    pub len: u64,
}

/// Records needed before a lattice is trusted.
pub const LATTICE_MIN_RECORDS: usize = 12;
/// Smallest lattice stride considered: finer lattices would fit random offsets by chance
/// (each gap fits one with odds of about 2 x tolerance / stride).
pub const LATTICE_MIN_STRIDE: u64 = 256 * 1024;

impl Lattice {
    /// The lattice point nearest to `offset`.
    pub fn index_of(&self, offset: u64) -> i64 {
        ((offset as f64 - self.base) / self.stride).round() as i64
    }

    /// Record `k`, page-aligned and widened by the kernel's rounding and the
    /// stride's uncertainty; `None` outside `0..size`.
    pub fn record(&self, k: i64, size: u64) -> Option<Range<u64>> {
        let center = self.base + k as f64 * self.stride;
        if center + (self.len as f64) <= 0.0 || center.round() >= size as f64 {
            return None;
        }
        let margin = DELTA_TOLERANCE as f64;
        let start = ((center - margin).max(0.0) as u64) / PAGE * PAGE;
        let end =
            ((center + margin + self.len as f64).ceil() as u64).div_ceil(PAGE).saturating_mul(PAGE).min(size);
        (start < end).then_some(start..end)
    }
}

impl ReadPattern {
    /// Used by [`MultiRangeReader`](super::MultiRangeReader) to fetch a shuffled
    /// reader's whole lattice once (a first try that fetched 64 records ahead and
    /// evicted unread ones to make room refetched them: 482 GETs for 200 reads).
    ///
    /// The lattice the recent records' starts lie on, in whatever order they were
    /// visited (issue 11: 200 reads at a fixed stride in shuffled order cost one round
    /// trip each, where a stride in order costs one per batch). Starts may be off by
    /// the kernel's page rounding. `None` unless at least [`LATTICE_MIN_RECORDS`]
    /// distinct records, all within [`DELTA_TOLERANCE`] of one lattice whose stride
    /// exceeds a record by more than the tolerance (otherwise it is dense reading).
    pub fn lattice(&self) -> Option<Lattice> {
        // a record's length is the upper quartile of those seen, not the longest: the
        // kernel's read-ahead stretches a read at offset 0 to 64 KiB, and with that as
        // the length every record of 16 KiB was fetched as 84 KiB (issue 11's threads)
        let mut lens: Vec<u64> = self.records.iter().map(|r| r.end - r.start).collect();
        lens.sort_unstable();
        let len = *lens.get(lens.len() * 3 / 4)?;
        let mut starts: Vec<u64> = self.records.iter().map(|r| r.start).collect();
        starts.sort_unstable();
        starts.dedup_by(|a, b| a.abs_diff(*b) <= DELTA_TOLERANCE);
        if starts.len() < LATTICE_MIN_RECORDS {
            return None;
        }
        // the smallest gap between neighbours is a multiple of the stride: try the
        // largest stride first (a multiple of the true one fits only by chance)
        let min_gap = starts.windows(2).map(|w| w[1] - w[0]).min()?;
        let tolerance = (DELTA_TOLERANCE + PAGE) as f64;
        let finest = (len + DELTA_TOLERANCE).max(LATTICE_MIN_STRIDE);
        let most = (min_gap / finest).clamp(1, 4096);
        (1..=most).find_map(|m| {
            let guess = min_gap as f64 / m as f64;
            if guess <= finest as f64 {
                return None;
            }
            let l = fit_lattice(&starts, guess)?;
            let fits = starts.iter().all(|&s| {
                let k = ((s as f64 - l.0) / l.1).round();
                (s as f64 - (l.0 + k * l.1)).abs() <= tolerance
            });
            fits.then_some(Lattice { base: l.0, stride: l.1, len })
        })
    }
}

/// Least-squares `(base, stride)` of sorted `starts` on a lattice of about `guess`,
/// numbering the points from the lowest start outwards so that an error in the
/// guess never makes a far point take its neighbour's number.
fn fit_lattice(starts: &[u64], guess: f64) -> Option<(f64, f64)> {
    let origin = starts[0] as f64;
    let (mut base, mut stride) = (origin, guess);
    let mut reach = 4.0;
    loop {
        let pts: Vec<(f64, f64)> = starts
            .iter()
            .map(|&s| s as f64)
            .filter(|s| (s - base) / stride <= reach + 0.5)
            .map(|s| (((s - base) / stride).round(), s))
            .collect();
        let n = pts.len() as f64;
        let (mk, ms) = (pts.iter().map(|p| p.0).sum::<f64>() / n, pts.iter().map(|p| p.1).sum::<f64>() / n);
        let var: f64 = pts.iter().map(|p| (p.0 - mk).powi(2)).sum();
        if var > 0.0 {
            stride = pts.iter().map(|p| (p.0 - mk) * (p.1 - ms)).sum::<f64>() / var;
            base = ms - stride * mk;
        }
        if stride <= 0.0 {
            return None;
        }
        if pts.len() == starts.len() {
            return Some((base, stride));
        }
        reach *= 2.0;
    }
}

/// The longest suffix of `deltas` (at least two cycles) in which each phase of
/// `period` stays within [`DELTA_TOLERANCE`], never crosses zero, and the cycle moves.
fn fit_period(deltas: &[i128], period: usize) -> Option<Fit> {
    let n = deltas.len();
    if n < 2 * period {
        return None;
    }
    let tolerance = DELTA_TOLERANCE as i128;
    let (mut lo, mut hi) = (vec![i128::MAX; period], vec![i128::MIN; period]);
    let (mut sum, mut count) = (vec![0i128; period], vec![0usize; period]);
    let mut used = 0;
    for j in (0..n).rev() {
        let (c, d) = (j % period, deltas[j]);
        let (l, h) = (lo[c].min(d), hi[c].max(d));
        // a phase that re-reads (or steps back and forth around) one place is not a stride
        if h - l > tolerance || (l <= 0 && h >= 0) {
            break;
        }
        (lo[c], hi[c], sum[c], count[c]) = (l, h, sum[c] + d, count[c] + 1);
        used += 1;
    }
    if used < 2 * period {
        return None;
    }
    // the cycle as a whole must go somewhere (not forth and back to the same place)
    let cycle: f64 = (0..period).map(|c| sum[c] as f64 / count[c] as f64).sum();
    if cycle.abs() <= DELTA_TOLERANCE as f64 {
        return None;
    }
    let spread = (0..period).map(|c| (hi[c] - lo[c]) as u64).max().unwrap_or(0);
    Some(Fit { period, used, spread })
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
pub(super) mod tests;
