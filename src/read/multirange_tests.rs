use std::sync::atomic::Ordering::{Relaxed, SeqCst};

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::test_backend::InstrumentedBackend;
use crate::backend::{Capabilities, PutOptions};
use crate::read::pattern::tests::{kernel_read, shuffled};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * 1024;

struct Fixture {
    backend: Arc<InstrumentedBackend>,
    metrics: Arc<Metrics>,
    reader: Arc<MultiRangeReader>,
    data: Bytes,
}

async fn fixture(size: u64, cfg: MultiRangeConfig) -> Fixture {
    let backend = InstrumentedBackend::with_min_part(MIB);
    let data: Bytes = (0..size).map(|i| (i * 31 % 251) as u8).collect::<Vec<u8>>().into();
    let meta = backend.inner.put("o", data.clone(), &PutOptions::default()).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let reader = Arc::new(MultiRangeReader::new(
        backend.clone(),
        MemoryLimiter::new(256 * MIB),
        metrics.clone(),
        "o".into(),
        meta.size,
        meta.etag,
        cfg,
    ));
    Fixture { backend, metrics, reader, data }
}

impl Fixture {
    /// One read as `FileHandle` does it: the multi-range reader, else a plain single-range read.
    async fn read(&self, offset: u64, len: u64) -> (Bytes, bool) {
        let _in_flight = self.reader.enter();
        match self.reader.read(offset, len).await {
            Some(res) => (res.unwrap(), true),
            None => {
                (self.reader.single(offset..(offset + len).min(self.data.len() as u64)).await.unwrap(), false)
            }
        }
    }

    fn expect(&self, offset: u64, len: u64) -> Bytes {
        self.data.slice(offset as usize..(offset + len) as usize)
    }

    /// Requests the backend saw: single-range GETs plus multi-range GETs.
    fn requests(&self) -> u64 {
        self.backend.gets.load(SeqCst) + self.backend.multi_gets.load(SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strided_reads_are_fetched_in_batches() {
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    for i in 0..60 {
        let (got, _) = f.read(i * MIB, 16 * KIB).await;
        assert_eq!(got, f.expect(i * MIB, 16 * KIB), "read {i}");
    }
    let requests = f.requests();
    assert!(requests <= 60 / 3, "{requests} requests for 60 strided reads");
    assert!(f.backend.multi_gets.load(SeqCst) >= 10);
    assert!(f.backend.max_multi_get_ranges.load(SeqCst) <= 5, "batch size is a limit");
    assert!(f.metrics.multi_range_requests.load(Relaxed) >= 10);
    let (ranges, requests) =
        (f.metrics.multi_range_ranges.load(Relaxed), f.metrics.multi_range_requests.load(Relaxed));
    assert_eq!(f.metrics.multi_range_requests_saved.load(Relaxed), ranges - requests);
    // the predictions past the last read were fetched and never used
    let buffered = f.reader.buffered_bytes();
    drop(f.reader);
    assert!(buffered > 0);
    assert!(f.metrics.multi_range_bytes_overfetched.load(Relaxed) >= 16 * KIB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_bounds_every_request() {
    let f = fixture(64 * MIB, MultiRangeConfig::new(3, MIB)).await;
    for i in 0..30 {
        assert_eq!(f.read(i * 2 * MIB, 4 * KIB).await.0, f.expect(i * 2 * MIB, 4 * KIB));
    }
    assert_eq!(f.backend.max_multi_get_ranges.load(SeqCst), 3);
    assert!(f.requests() <= 30 / 2, "{}", f.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_reads_keep_the_ordinary_path() {
    let f = fixture(8 * MIB, MultiRangeConfig::default()).await;
    for i in 0..32 {
        let (got, batched) = f.read(i * 128 * KIB, 128 * KIB).await;
        assert!(!batched, "sequential read {i} went to the multi-range path");
        assert_eq!(got, f.expect(i * 128 * KIB, 128 * KIB));
    }
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0);
    assert_eq!(f.reader.buffered_bytes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_gaps_below_the_threshold_are_not_sparse() {
    // 16 KiB every 64 KiB: gap ratio 0.75 but 16 reads leave < 1 MiB of gaps
    let f = fixture(8 * MIB, MultiRangeConfig::default()).await;
    for i in 0..16 {
        assert!(!f.read(i * 64 * KIB, 16 * KIB).await.1);
    }
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probing_backend_is_probed_as_soon_as_reads_are_sparse() {
    // an S3 backend finds out whether its server answers multi-range GETs with a
    // probe (a HEAD); the reader sends it when the handle turns sparse, before any
    // batch needs the answer, and once per handle
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::Probe);
    for o in [7u64, 51, 13, 40] {
        assert_eq!(f.read(o * MIB, 8 * KIB).await.0, f.expect(o * MIB, 8 * KIB));
    }
    for _ in 0..100 {
        if f.backend.probes.load(SeqCst) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.backend.probes.load(SeqCst), 1, "one probe");
    assert_eq!(f.backend.probe_ranges.load(SeqCst), 2, "of two small ranges");
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0, "the probe is not a multi-range GET");
    assert_eq!(f.backend.gets.load(SeqCst), 4, "the reads themselves are not held back");

    // a backend that knows its answer is not probed
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
    for o in [7u64, 51, 13, 40] {
        f.read(o * MIB, 8 * KIB).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0);
    assert_eq!(f.backend.probes.load(SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lone_random_reads_are_not_batched() {
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    for o in [7u64, 51, 13, 40, 2, 33, 60, 21] {
        let (got, _) = f.read(o * MIB, 8 * KIB).await;
        assert_eq!(got, f.expect(o * MIB, 8 * KIB));
    }
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0, "nothing to batch a lone random read with");
    assert_eq!(f.backend.gets.load(SeqCst), 8);
}

/// 40 reads at scattered offsets (a fixed pseudo-random sequence from `seed`, no stride or
/// cycle), `wave_size` at a time, like that many threads issuing preads on one file.
async fn concurrent_waves(wave_size: usize, seed: u64) -> (Arc<Fixture>, u64) {
    let f = Arc::new(fixture(64 * MIB, MultiRangeConfig::default()).await);
    f.backend.get_delay_ms.store(20, SeqCst);
    let mut x = seed;
    let offsets: Vec<u64> = (0..40)
        .map(|_| {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (x >> 33) % (63 * MIB) / (4 * KIB) * (4 * KIB)
        })
        .collect();
    for wave in offsets.chunks(wave_size) {
        let tasks: Vec<_> = wave
            .iter()
            .map(|&o| {
                let f = f.clone();
                tokio::spawn(async move { (o, f.read(o, 16 * KIB).await.0) })
            })
            .collect();
        for t in tasks {
            let (o, got) = t.await.unwrap();
            assert_eq!(got, f.expect(o, 16 * KIB), "offset {o}");
        }
    }
    let requests = f.requests();
    (f, requests)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_concurrent_reads_than_a_batch_fill_several_batches() {
    let (f, requests) = concurrent_waves(10, 777).await;
    assert!(requests <= 40 / 3, "{requests} requests for 40 reads in waves of 10");
    assert_eq!(f.backend.max_multi_get_ranges.load(SeqCst), 5, "full batches, never more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_are_coalesced() {
    let (f, requests) = concurrent_waves(5, 12345).await;
    let (singles, multis) = (f.backend.gets.load(SeqCst), f.backend.multi_gets.load(SeqCst));
    assert!(requests <= 40 / 3, "{singles} single + {multis} multi-range requests for 40 concurrent reads");
    assert!(f.backend.max_multi_get_ranges.load(SeqCst) <= 5);
    assert!(f.metrics.multi_range_requests.load(Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_multi_range_requests_fall_back_to_single_reads() {
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    f.backend.fail_get_ranges.store(true, SeqCst);
    for i in 0..20 {
        let (got, _) = f.read(i * 3 * MIB, 16 * KIB).await;
        assert_eq!(got, f.expect(i * 3 * MIB, 16 * KIB), "read {i}");
    }
    assert!(f.backend.multi_gets.load(SeqCst) > 0, "multi-range was tried");
    assert_eq!(f.metrics.multi_range_requests.load(Relaxed), 0, "failed requests are not counted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_object_gives_the_single_read_error() {
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    for i in 0..3 {
        f.read(i * MIB, 16 * KIB).await;
    }
    f.backend.inner.put("o", Bytes::from_static(b"new"), &PutOptions::default()).await.unwrap();
    // reads already fetched are served from the pinned version; the next batch is
    // refused by If-Match, and the read then fails exactly as a single read would
    let _in_flight = f.reader.enter();
    let mut failed = None;
    for i in 3..30 {
        match f.reader.read(i * MIB, 16 * KIB).await.unwrap_or_else(|| panic!("sparse {i}")) {
            Ok(got) => assert_eq!(got, f.expect(i * MIB, 16 * KIB)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a read of the replaced object failed");
    assert!(
        matches!(err, ref e if e.kind() == crate::object::ErrorKind::Io && e.context().contains("changed")),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_range_backends_get_parallel_batches() {
    // a backend without multi-range (Azure, an S3 server probed as single-range) is
    // never "flag ignored": its batches become concurrent single-range reads
    let caps =
        Capabilities { multi_range: MultiRangeMode::ParallelSingles, ..MemoryBackend::new().capabilities() };
    let backend = Arc::new(MemoryBackend::with_capabilities(caps));
    assert_eq!(backend.capabilities().multi_range, MultiRangeMode::ParallelSingles);
    let cfg = MultiRangeConfig::default();
    assert!(cfg.usable_with(backend.as_ref()));
    assert!(MultiRangeConfig::default().usable_with(&MemoryBackend::new()));
    let data: Vec<u8> = (0..8 * MIB).map(|i| (i % 253) as u8).collect();
    let meta = backend.put("o", Bytes::from(data.clone()), &PutOptions::default()).await.unwrap();
    let metrics = Arc::new(Metrics::default());
    let reader = MultiRangeReader::new(
        backend.clone(),
        MemoryLimiter::new(64 * MIB),
        metrics.clone(),
        "o".into(),
        meta.size,
        meta.etag,
        cfg,
    );
    let mut batched = 0;
    for i in 0..8 {
        let _in_flight = reader.enter();
        if let Some(got) = reader.read(i * MIB, 4 * KIB).await {
            assert_eq!(&got.unwrap()[..], &data[(i * MIB) as usize..][..4 * KIB as usize]);
            batched += 1;
        }
    }
    assert!(batched >= 4, "{batched} of 8 strided reads served from batches");
    assert!(metrics.multi_range_parallel_batches.load(Relaxed) > 0);
    assert_eq!(metrics.multi_range_requests.load(Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_single_backends_get_concurrent_single_reads() {
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
    f.backend.get_delay_ms.store(10, SeqCst);
    for i in 0..30 {
        assert_eq!(f.read(i * 2 * MIB, 16 * KIB).await.0, f.expect(i * 2 * MIB, 16 * KIB));
    }
    assert_eq!(f.backend.multi_gets.load(SeqCst), 0, "no multi-range request is sent");
    assert!(f.backend.max_gets_running.load(SeqCst) >= 3, "a batch's ranges are fetched concurrently");
    assert_eq!(f.metrics.multi_range_requests.load(Relaxed), 0);
    assert!(f.metrics.multi_range_parallel_batches.load(Relaxed) > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_rounded_unaligned_strides_are_served_from_batches() {
    // the kernel's view of 16 KiB preads at multiples of 1,342,177 bytes: page-aligned
    // reads of 16 or 20 KiB; after a few reads nearly all of them hit predicted pieces
    const STRIDE: u64 = 1_342_177;
    let f = fixture(48 * STRIDE, MultiRangeConfig::default()).await;
    let size = f.data.len() as u64;
    for k in 0..48 {
        let (start, end) =
            (k * STRIDE / 4096 * 4096, ((k * STRIDE + 16 * KIB).div_ceil(4096) * 4096).min(size));
        let (got, _) = f.read(start, end - start).await;
        assert_eq!(got, f.expect(start, end - start), "read {k}");
    }
    let requests = f.requests();
    assert!(requests <= 48 / 3, "{requests} requests for 48 page-rounded strided reads");
    // and the pieces were small: no read-ahead window per record
    eprintln!("{requests} requests {} bytes", f.backend.get_bytes.load(SeqCst));
    assert!(f.backend.get_bytes.load(SeqCst) <= 48 * 64 * KIB, "{} bytes", f.backend.get_bytes.load(SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shuffled_records_on_a_lattice_are_fetched_once_each() {
    // issue 11: 200 preads of 16 KiB at an unaligned stride, in shuffled order, on a
    // server without multi-range; each record must be fetched once, ahead of its read
    const RECORDS: u64 = 200;
    const STRIDE: u64 = 1_342_177;
    let f = fixture(RECORDS * STRIDE, MultiRangeConfig::default()).await;
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
    f.backend.get_delay_ms.store(5, SeqCst);
    let size = f.data.len() as u64;
    let order = shuffled(RECORDS, 0x2545_F491);
    let mut from_pieces = 0;
    for &k in &order {
        let r = kernel_read(k * STRIDE, 16 * KIB, size);
        let (got, batched) = f.read(r.start, r.end - r.start).await;
        assert_eq!(got, f.expect(r.start, r.end - r.start), "record {k}");
        from_pieces += batched as u64;
    }
    let gets = f.backend.gets.load(SeqCst);
    // the reads before the lattice is trusted are single GETs; then every record once
    assert!(gets <= RECORDS + 20, "{gets} GETs for {RECORDS} shuffled records");
    assert!(from_pieces >= RECORDS - 20, "{from_pieces} reads served from fetched records");
    assert!(
        f.backend.get_bytes.load(SeqCst) <= RECORDS * 48 * KIB,
        "{} bytes",
        f.backend.get_bytes.load(SeqCst)
    );
    assert!(f.backend.max_gets_running.load(SeqCst) >= 8, "records are fetched concurrently");
    assert!(f.backend.max_gets_running.load(SeqCst) <= PARALLEL_HORIZON as u64 + 2, "read-ahead is bounded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_readers_of_a_lattice_get_it_fetched_ahead() {
    // issue 11's threads workload: 64 records at an unaligned stride, shuffled, read 8
    // at a time (8 threads on one handle) from a server without multi-range. Without a
    // prediction every wave waits for its own GETs; the lattice is found from the
    // first waves and the later ones are served from records fetched ahead.
    const RECORDS: u64 = 64;
    const STRIDE: u64 = MIB - 1;
    let f = Arc::new(fixture(RECORDS * STRIDE, MultiRangeConfig::default()).await);
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
    f.backend.get_delay_ms.store(20, SeqCst);
    let size = f.data.len() as u64;
    let order = shuffled(RECORDS, 7);
    let mut from_pieces = 0;
    for wave in order.chunks(8) {
        let tasks: Vec<_> = wave
            .iter()
            .map(|&k| {
                let (f, r) = (f.clone(), kernel_read(k * STRIDE, 16 * KIB, size));
                tokio::spawn(async move { (r.clone(), f.read(r.start, r.end - r.start).await) })
            })
            .collect();
        for t in tasks {
            let (r, (got, batched)) = t.await.unwrap();
            assert_eq!(got, f.expect(r.start, r.end - r.start), "range {r:?}");
            from_pieces += batched as u64;
        }
    }
    let gets = f.backend.gets.load(SeqCst);
    // each record once: the ones read before the lattice was found are not fetched again
    assert!(gets <= RECORDS + 8, "{gets} GETs for {RECORDS} records");
    // the first two waves (12 records make a lattice) wait for their own GETs
    assert!(
        from_pieces >= RECORDS - 16,
        "{from_pieces} of {RECORDS} reads served from records fetched ahead"
    );
    assert!(f.backend.max_gets_running.load(SeqCst) > 8, "records were fetched beyond the 8 reads in flight");
    // records of 16 KiB as the kernel rounds them, and the lattice's margin
    assert!(
        f.backend.get_bytes.load(SeqCst) <= RECORDS * 40 * KIB,
        "{} bytes",
        f.backend.get_bytes.load(SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_block_reads_fetch_no_lattice() {
    // random 64 KiB reads at 64 KiB-aligned offsets lie on a lattice too, but a dense one:
    // they must not pull in the rest of the file
    let f = fixture(64 * MIB, MultiRangeConfig::default()).await;
    *f.backend.mode.lock().unwrap() = Some(MultiRangeMode::ParallelSingles);
    let mut x = 77u64;
    for _ in 0..100 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = x % (64 * MIB / (64 * KIB)) * 64 * KIB;
        assert_eq!(f.read(off, 64 * KIB).await.0, f.expect(off, 64 * KIB));
    }
    assert!(
        f.backend.get_bytes.load(SeqCst) <= 2 * 100 * 64 * KIB,
        "{} bytes",
        f.backend.get_bytes.load(SeqCst)
    );
}
