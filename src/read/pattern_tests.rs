use super::*;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

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
    // a constant stride equal to the length is still a stride, but never used: not sparse
    assert_eq!(p.predict(2, 10 * MIB), vec![1280 * KIB..1408 * KIB, 1408 * KIB..1536 * KIB]);
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
    assert_eq!(
        p.predict(3, 100 * MIB),
        vec![3 * MIB..3 * MIB + 16 * KIB, 4 * MIB..4 * MIB + 16 * KIB, 5 * MIB..5 * MIB + 16 * KIB]
    );
    // predictions stop at the end of the object and are clamped to it
    assert_eq!(
        p.predict(5, 4 * MIB + 8 * KIB),
        vec![3 * MIB..3 * MIB + 16 * KIB, 4 * MIB..4 * MIB + 8 * KIB]
    );
}

#[test]
fn backward_strides_stop_at_zero() {
    let p = pattern_of(&[(3 * MIB, 4 * KIB), (2 * MIB, 4 * KIB), (MIB, 4 * KIB)]);
    assert_eq!(p.predict(5, 10 * MIB), vec![0..4 * KIB]);
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
    assert_eq!(
        p.predict(3, 100 * MIB),
        vec![
            3 * MIB..3 * MIB + 4 * KIB,
            3 * MIB + 100 * KIB..3 * MIB + 164 * KIB,
            4 * MIB..4 * MIB + 4 * KIB
        ]
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
    assert_eq!(p.predict(1, 1 << 40), vec![42 * MIB..42 * MIB + 4 * KIB]);
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
