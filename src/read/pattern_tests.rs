// One-range slices are the point of several tests.
#![allow(clippy::single_range_in_vec_init)]

use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

/// `got` holds one piece per `want`ed read, containing it with at most `pages` pages
/// of slack on either side (page-aligned reads may have been rounded by the kernel, so
/// the stride may be a fraction of a page off what they show).
#[track_caller]
fn assert_around(got: Vec<Range<u64>>, want: &[Range<u64>], pages: u64) {
    assert_eq!(got.len(), want.len(), "{got:?} for {want:?}");
    for (q, r) in got.iter().zip(want) {
        let ok = q.start <= r.start
            && r.end <= q.end
            && r.start - q.start <= pages * PAGE
            && q.end - r.end <= pages * PAGE;
        assert!(ok, "{q:?} for {r:?} in {got:?}");
    }
}

fn pattern_of(reads: &[(u64, u64)]) -> ReadPattern {
    let mut p = ReadPattern::new();
    for &(off, len) in reads {
        p.record(off..off + len);
    }
    p
}

#[test]
fn sequential_reads_are_not_sparse() {
    let p = pattern_of(&(0..10).map(|i| (i * 128 * KIB, 128 * KIB)).collect::<Vec<_>>());
    let a = p.analysis();
    assert_eq!(a.span, 10 * 128 * KIB);
    assert_eq!(a.bytes_read, a.span);
    assert_eq!(a.gap_ratio(), 0.0);
    assert!(!a.is_sparse(MIB));
    // touching reads are one record: nothing to extrapolate
    assert!(p.predict(2, 10 * MIB).is_empty());
}

#[test]
fn strided_reads_are_sparse_and_extrapolated() {
    let p = pattern_of(&[(0, 16 * KIB), (MIB, 16 * KIB), (2 * MIB, 16 * KIB)]);
    let a = p.analysis();
    assert_eq!(a.span, 2 * MIB + 16 * KIB);
    assert_eq!(a.bytes_read, 48 * KIB);
    assert!(a.gap_ratio() > 0.97);
    assert!(a.is_sparse(MIB));
    assert!(!a.is_sparse(4 * MIB), "total gap below the threshold");
    assert_around(
        p.predict(3, 100 * MIB),
        &[3 * MIB..3 * MIB + 16 * KIB, 4 * MIB..4 * MIB + 16 * KIB, 5 * MIB..5 * MIB + 16 * KIB],
        2,
    );
    // predictions stop at the end of the object and are clamped to it
    let got = p.predict(5, 4 * MIB + 8 * KIB);
    assert_around(got.clone(), &[3 * MIB..3 * MIB + 16 * KIB, 4 * MIB..4 * MIB + 8 * KIB], 2);
    assert_eq!(got[1].end, 4 * MIB + 8 * KIB);
}

#[test]
fn backward_strides_stop_at_zero() {
    let p = pattern_of(&[(3 * MIB, 4 * KIB), (2 * MIB, 4 * KIB), (MIB, 4 * KIB)]);
    assert_around(p.predict(5, 10 * MIB), &[0..4 * KIB], 1);
}

#[test]
fn repeating_cycles_are_extrapolated() {
    // header (4 KiB) then payload (64 KiB) 100 KiB further, records every 1 MiB
    let mut reads = Vec::new();
    for i in 0..3 {
        reads.push((i * MIB, 4 * KIB));
        reads.push((i * MIB + 100 * KIB, 64 * KIB));
    }
    let p = pattern_of(&reads);
    assert_around(
        p.predict(3, 100 * MIB),
        &[3 * MIB..3 * MIB + 4 * KIB, 3 * MIB + 100 * KIB..3 * MIB + 164 * KIB, 4 * MIB..4 * MIB + 4 * KIB],
        2,
    );
}

#[test]
fn random_reads_are_sparse_but_not_predicted() {
    let offsets = [7u64, 91, 33, 150, 12, 240, 64, 199];
    let p = pattern_of(&offsets.iter().map(|o| (o * MIB, 16 * KIB)).collect::<Vec<_>>());
    assert!(p.analysis().is_sparse(MIB));
    assert!(p.predict(4, 256 * MIB).is_empty());
    // one read, or the same read repeated, predicts nothing
    assert!(pattern_of(&[(MIB, 4 * KIB)]).predict(4, 256 * MIB).is_empty());
    assert!(pattern_of(&[(MIB, 4 * KIB); 6]).predict(4, 256 * MIB).is_empty());
    assert!(!pattern_of(&[(MIB, 4 * KIB)]).analysis().is_sparse(0), "one read is not a pattern");
}

#[test]
fn mixed_pattern_follows_the_recent_reads() {
    // a footer read, then a column chunk read sequentially: the window forgets the footer
    let mut p = pattern_of(&[(200 * MIB, 64 * KIB), (MIB, 64 * KIB)]);
    assert!(p.analysis().is_sparse(MIB), "footer then chunk start is sparse");
    for i in 1..HISTORY as u64 {
        p.record(MIB + i * 64 * KIB..MIB + (i + 1) * 64 * KIB);
    }
    assert_eq!(p.len(), HISTORY);
    assert!(!p.analysis().is_sparse(MIB), "{:?}", p.analysis());
    // then strided again: sparse once the strided reads dominate the window
    for i in 0..HISTORY as u64 {
        p.record(10 * MIB + i * 2 * MIB..10 * MIB + i * 2 * MIB + 4 * KIB);
    }
    assert!(p.analysis().is_sparse(MIB));
    assert_around(p.predict(1, 1 << 40), &[42 * MIB..42 * MIB + 4 * KIB], 1);
}

#[test]
fn overlapping_reads_are_counted_once() {
    let a = GapAnalysis::of(&[0..100, 50..150, 400..500, 420..430]);
    assert_eq!(a.span, 500);
    assert_eq!(a.bytes_read, 250);
    assert_eq!(a.total_gap(), 250);
    assert_eq!(a.gap_ratio(), 0.5);
    assert!(!a.is_sparse(0), "the ratio must exceed 0.5, not equal it");
    assert_eq!(GapAnalysis::of(&[]).gap_ratio(), 0.0);
}

#[test]
fn close_ranges_are_merged() {
    let got = merge_close(&[300..400, 0..10, 20..30, 5..15, 1000..1001, 400..410, 50..50], 10);
    assert_eq!(got, vec![0..30, 300..410, 1000..1001]);
    assert_eq!(merge_close(&[0..10, 21..30], 10), vec![0..10, 21..30]);
    assert!(merge_close(&[], 10).is_empty());
}

#[test]
fn batches_hold_at_most_batch_size_ranges() {
    let ranges: Vec<Range<u64>> = (0..12).map(|i| i * 100..i * 100 + 10).collect();
    let batches = split_batches(&ranges, 5);
    assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![5, 5, 2]);
    assert_eq!(batches.concat(), ranges);
    assert_eq!(split_batches(&ranges, 0).len(), 12, "a batch size of 0 means 1");
}

/// The read the kernel sends for an application read of `len` bytes at `offset`:
/// whole pages (clamped to the end of a `size`-byte file).
pub(in crate::read) fn kernel_read(offset: u64, len: u64, size: u64) -> Range<u64> {
    offset / PAGE * PAGE..((offset + len).div_ceil(PAGE) * PAGE).min(size)
}

/// Feeds `reads` one by one; after each of the first `from..` of them, checks that
/// the next `ahead` reads each fall inside one predicted piece, and returns the
/// largest piece predicted.
fn assert_predictions_cover(reads: &[Range<u64>], from: usize, ahead: usize, size: u64) -> u64 {
    let mut p = ReadPattern::new();
    let mut largest = 0;
    for (h, r) in reads.iter().enumerate() {
        p.record(r.clone());
        if h + 1 < from || h + 1 + ahead > reads.len() {
            continue;
        }
        let predicted = p.predict(ahead, size);
        assert_eq!(predicted.len(), ahead, "after {} reads: {predicted:?}", h + 1);
        for (i, next) in reads[h + 1..h + 1 + ahead].iter().enumerate() {
            assert!(
                predicted.iter().any(|q| q.start <= next.start && next.end <= q.end),
                "after {} reads, read {next:?} (prediction {i}) is in no piece of {predicted:?}",
                h + 1
            );
        }
        for q in &predicted {
            assert_eq!(q.start % PAGE, 0, "{q:?}");
            assert!(q.end % PAGE == 0 || q.end == size, "{q:?}");
            largest = largest.max(q.end - q.start);
        }
    }
    largest
}

#[test]
fn page_rounded_reads_at_an_unaligned_stride_are_predicted() {
    // 16 KiB at multiples of 1,342,177 bytes (1/200 of 256 MiB): the kernel sends
    // page-aligned reads of 16 or 20 KiB whose deltas are 327 or 328 pages
    const STRIDE: u64 = 1_342_177;
    let size = 200 * STRIDE;
    let reads: Vec<Range<u64>> = (0..120).map(|k| kernel_read(k * STRIDE, 16 * KIB, size)).collect();
    let deltas: Vec<u64> = reads.windows(2).map(|w| w[1].start - w[0].start).collect();
    assert!(deltas.contains(&1_339_392) && deltas.contains(&1_343_488), "the premise: {deltas:?}");
    assert!(reads.iter().any(|r| r.end - r.start == 20 * KIB));
    // from the third read on, the next 10 reads are inside the predicted pieces
    let largest = assert_predictions_cover(&reads, 3, 10, size);
    assert!(largest <= 20 * KIB + 12 * PAGE, "pieces of up to {largest} bytes for 20 KiB reads");
    // with a full history the pieces are tight: at most a few pages around each read
    let mut p = ReadPattern::new();
    for r in &reads[..40] {
        p.record(r.clone());
    }
    for q in p.predict(10, size) {
        assert!(q.end - q.start <= 20 * KIB + 4 * PAGE, "{q:?}");
    }
}

#[test]
fn page_aligned_strides_are_predicted_exactly() {
    // a columnar reader's chunks: 16 KiB at 256 KiB into every MiB
    let size = 256 * MIB;
    let reads: Vec<Range<u64>> = (0..60).map(|k| kernel_read(k * MIB + 256 * KIB, 16 * KIB, size)).collect();
    let mut p = ReadPattern::new();
    for r in &reads[..20] {
        p.record(r.clone());
    }
    // the stride might be a fraction of a page off (rounded reads): a page of slack each side
    for (q, r) in p.predict(10, size).iter().zip(&reads[20..30]) {
        assert!(
            q.start + PAGE >= r.start && q.start <= r.start && r.end <= q.end && q.end <= r.end + PAGE,
            "{q:?} for {r:?}"
        );
    }
    assert_predictions_cover(&reads, 3, 10, size);
    // reads that are not page-aligned were not rounded: an exact stride is predicted exactly
    let p = pattern_of(&(0..16).map(|k| (k * 1_000_001 + 3, 10_000)).collect::<Vec<_>>());
    let exact: Vec<Range<u64>> = (16..18).map(|k| k * 1_000_001 + 3..k * 1_000_001 + 10_003).collect();
    let got = p.predict(2, size);
    assert!(
        got.iter()
            .zip(&exact)
            .all(|(q, r)| q.start == r.start / PAGE * PAGE && q.end == r.end.div_ceil(PAGE) * PAGE),
        "{got:?}"
    );
}

#[test]
fn strides_of_any_size_are_predicted() {
    // small (100,003 bytes, 4 KiB reads) and multi-MiB (7,777,777 bytes, 64 KiB reads)
    for (stride, len) in [(100_003u64, 4 * KIB), (7_777_777, 64 * KIB), (33 * MIB + 5, 16 * KIB)] {
        let size = 100 * stride;
        let reads: Vec<Range<u64>> = (0..50).map(|k| kernel_read(k * stride + 777, len, size)).collect();
        let largest = assert_predictions_cover(&reads, 3, 10, size);
        assert!(largest <= len + 14 * PAGE, "stride {stride}: pieces of {largest} bytes");
    }
}

#[test]
fn records_split_into_several_reads_are_one_record() {
    // 3 MiB records every 10,000,000 bytes, each read by the kernel as 1 MiB FUSE reads
    let stride = 10_000_000u64;
    let size = 40 * stride;
    let mut reads = Vec::new();
    let mut records = Vec::new();
    for k in 0..30 {
        let rec = kernel_read(k * stride, 3 * MIB, size);
        let mut pos = rec.start;
        while pos < rec.end {
            reads.push(pos..(pos + MIB).min(rec.end));
            pos += MIB;
        }
        records.push(rec);
    }
    let mut p = ReadPattern::new();
    for r in &reads[..reads.len() / 2] {
        p.record(r.clone());
    }
    let predicted = p.predict(5, size);
    assert_eq!(predicted.len(), 5, "{predicted:?}");
    for rec in &records[15..20] {
        assert!(
            predicted.iter().any(|q| q.start <= rec.start && rec.end <= q.end),
            "{rec:?} in {predicted:?}"
        );
    }
    // a reordered piece of the current record joins it too
    let mut p = ReadPattern::new();
    for rec in &records[..6] {
        p.record(rec.start + MIB..rec.start + 2 * MIB);
        p.record(rec.start..rec.start + MIB);
        p.record(rec.start + 2 * MIB..rec.end);
    }
    assert!(p.predict(1, size)[0].start <= records[6].start);
}

#[test]
fn cycles_with_page_jitter_and_varying_lengths_are_predicted() {
    // a 4 KiB header, then a payload of 40 to 60 KiB 100,001 bytes further, every 1,000,003 bytes
    let size = 100 * MIB;
    let mut reads = Vec::new();
    for k in 0..40u64 {
        let base = k * 1_000_003;
        reads.push(kernel_read(base, 4 * KIB, size));
        reads.push(kernel_read(base + 100_001, (40 + k % 3 * 10) * KIB, size));
    }
    // once every length was seen (the longest read of a phase sets its predicted length)
    assert_predictions_cover(&reads, 6, 6, size);
}

#[test]
fn a_pattern_that_goes_nowhere_is_not_a_stride() {
    // forth and back between two places (or jitter around one): no prediction
    let back_and_forth: Vec<(u64, u64)> =
        (0..10).map(|i| (if i % 2 == 0 { MIB } else { 5 * MIB }, 4 * KIB)).collect();
    assert!(pattern_of(&back_and_forth).predict(4, 256 * MIB).is_empty());
    let jitter: Vec<(u64, u64)> = (0..10).map(|i| (10 * MIB + (i % 3) * 8 * KIB, 4 * KIB)).collect();
    assert!(pattern_of(&jitter).predict(4, 256 * MIB).is_empty());
}

/// `0..n` in a fixed pseudo-random order (Fisher-Yates driven by xorshift from `seed`).
pub(in crate::read) fn shuffled(n: u64, seed: u64) -> Vec<u64> {
    let mut order: Vec<u64> = (0..n).collect();
    let mut x = seed;
    for i in (1..order.len()).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
}

#[test]
fn a_lattice_is_recognised_in_shuffled_order() {
    // 200 records of 16 KiB at an unaligned stride, visited in a fixed shuffled order
    let size = 512 * MIB;
    let stride = size / 200; // 2,684,354: not page-aligned
    let order = shuffled(200, 0x9E37_79B9);
    let mut p = ReadPattern::new();
    for (n, &k) in order.iter().enumerate() {
        p.record(kernel_read(k * stride, 16 * KIB, size));
        if n + 1 < LATTICE_MIN_RECORDS {
            assert!(p.lattice().is_none(), "too few records to trust a lattice");
            continue;
        }
        let l = p.lattice().unwrap_or_else(|| panic!("no lattice after {} reads", n + 1));
        // every record of the file, as the kernel will ask for it, is inside its lattice piece
        for j in 0..200 {
            let real = kernel_read(j * stride, 16 * KIB, size);
            let piece = l.record(l.index_of(real.start), size).unwrap();
            assert!(
                piece.start <= real.start && real.end <= piece.end,
                "after {n} reads, record {j}: {piece:?} vs {real:?}"
            );
            assert!(piece.end - piece.start <= 20 * KIB + 5 * PAGE, "{piece:?}");
        }
    }
}

#[test]
fn random_offsets_are_no_lattice() {
    let size = 512 * MIB;
    let mut x = 12345u64;
    for _ in 0..50 {
        let mut p = ReadPattern::new();
        for _ in 0..HISTORY {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p.record(kernel_read(x % (size - MIB), 16 * KIB, size));
        }
        assert!(p.lattice().is_none());
    }
}
