//! Unit tests of `FileHandle` against an instrumented in-memory backend.

use std::sync::atomic::Ordering::SeqCst;

use super::*;
use crate::backend::memory::MemoryBackend;
use crate::backend::metered::MeteredBackend;
use crate::backend::test_backend::InstrumentedBackend;
use crate::backend::GetOptions;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;

struct Fixture {
    backend: Arc<InstrumentedBackend>,
    ctx: Arc<HandleContext>,
    _spool: tempfile::TempDir,
}

fn fixture(part: u64, memory: u64, in_flight: usize) -> Fixture {
    fixture_on(InstrumentedBackend::with_min_part(part), part, memory, in_flight)
}

fn fixture_on(backend: Arc<InstrumentedBackend>, part: u64, memory: u64, in_flight: usize) -> Fixture {
    let spool = tempfile::tempdir().unwrap();
    // metered as the mount does, so the request counters are exercised too
    let metrics = Arc::new(Metrics::default());
    let ctx = Arc::new(HandleContext {
        backend: MeteredBackend::wrap(backend.clone(), metrics.clone()),
        memory: MemoryLimiter::new(memory),
        metrics,
        cfg: HandleConfig {
            part_size: part,
            read_ahead: 16 * MIB,
            max_parts_in_flight: in_flight,
            // a missing directory must be created
            spool_dir: spool.path().join("spool"),
            multi_range: None,
        },
    });
    Fixture { backend, ctx, _spool: spool }
}

/// Deterministic pseudo-random bytes (xorshift), different per seed.
fn pattern(len: u64, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

impl Fixture {
    async fn stored(&self, key: &str) -> Vec<u8> {
        self.backend.inner.get_range(key, None, &GetOptions::default()).await.unwrap().data.to_vec()
    }
    async fn put(&self, key: &str, data: &[u8]) -> ObjectMeta {
        self.backend.inner.put(key, Bytes::copy_from_slice(data), &PutOptions::default()).await.unwrap()
    }
    fn open(&self, key: &str, existing: Option<ObjectMeta>, mode: OpenMode) -> FileHandle {
        FileHandle::open(self.ctx.clone(), key.into(), existing, mode)
    }
    fn pending(&self) -> usize {
        self.backend.inner.pending_uploads()
    }
}

fn new_file() -> OpenMode {
    OpenMode { read: true, write: true, truncate: true, append: false }
}

fn rw() -> OpenMode {
    OpenMode { read: true, write: true, ..Default::default() }
}

async fn write_all(h: &FileHandle, mut offset: u64, data: &[u8], chunk: usize) {
    for piece in data.chunks(chunk) {
        assert_eq!(h.write(offset, piece).await.unwrap() as usize, piece.len());
        offset += piece.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_write_streams_parts_concurrently() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    f.backend.part_delay_ms.store(20, SeqCst);
    let data = pattern(20 * part + 1234, 1);
    let h = f.open("big", None, new_file());
    write_all(&h, 0, &data, 16 * 1024).await;
    assert_eq!(h.size(), data.len() as u64);
    assert!(h.is_dirty());
    // streaming: most parts are already sent before the commit
    assert!(f.backend.parts.load(SeqCst) >= 15, "parts before commit: {}", f.backend.parts.load(SeqCst));
    // own writes are readable before the commit, which stays invisible
    assert_eq!(&h.read(5 * part - 10, 100).await.unwrap()[..], &data[(5 * part - 10) as usize..][..100]);
    assert!(f.backend.inner.head("big").await.is_err());
    let meta = h.commit(&PutOptions::default()).await.unwrap().unwrap();
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(f.stored("big").await, data);
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.backend.puts.load(SeqCst), 0);
    assert_eq!(f.backend.parts.load(SeqCst), 21);
    let concurrent = f.backend.max_parts_running.load(SeqCst);
    assert!((2..=4).contains(&concurrent), "max concurrent parts {concurrent}");
    assert_eq!(f.pending(), 0);
    assert!(!h.is_dirty());
    assert_eq!(h.commit(&PutOptions::default()).await.unwrap(), None);
    let m = &f.ctx.metrics;
    assert_eq!(m.requests_multipart.load(SeqCst), 1 + 21 + 1);
    assert_eq!(m.bytes_written.load(SeqCst), data.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_without_parallel_multipart_gets_one_part_at_a_time() {
    let part = 64 * KIB;
    let backend = Arc::new(InstrumentedBackend {
        inner: MemoryBackend::with_capabilities(crate::backend::Capabilities {
            parallel_multipart: false,
            ..crate::backend::test_backend::small_part_caps(part)
        }),
        ..Default::default()
    });
    backend.part_delay_ms.store(5, SeqCst);
    let mut f = fixture(part, 64 * MIB, 8);
    f.backend = backend.clone();
    f.ctx = Arc::new(HandleContext {
        backend: MeteredBackend::wrap(backend, f.ctx.metrics.clone()),
        memory: f.ctx.memory.clone(),
        metrics: f.ctx.metrics.clone(),
        cfg: f.ctx.cfg.clone(),
    });
    let data = pattern(8 * part, 2);
    let h = f.open("serial", None, new_file());
    write_all(&h, 0, &data, 64 * 1024).await;
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("serial").await, data);
    assert_eq!(f.backend.max_parts_running.load(SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_bounds_part_buffers() {
    let part = 512 * KIB;
    let f = fixture(part, 3 * part, 8);
    f.backend.part_delay_ms.store(10, SeqCst);
    let data = pattern(20 * part, 3);
    let h = f.open("bounded", None, new_file());
    write_all(&h, 0, &data, 128 * 1024).await;
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("bounded").await, data);
    let max_bytes = f.backend.max_part_bytes_running.load(SeqCst);
    assert!(max_bytes <= 3 * part, "{max_bytes} bytes of parts in flight");
    assert!(max_bytes >= 2 * part, "parts should still overlap: {max_bytes}");
    assert_eq!(f.ctx.memory.available_bytes(), 3 * part, "all reservations returned");
}

#[tokio::test]
async fn small_file_is_one_put() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let h = f.open("small", None, new_file());
    let data = pattern(64 * KIB, 4); // exactly one part: still a put
    write_all(&h, 0, &data, 4096).await;
    h.commit(&PutOptions { content_type: Some("text/plain".into()), ..Default::default() }).await.unwrap();
    assert_eq!(f.stored("small").await, data);
    assert_eq!(f.backend.puts.load(SeqCst), 1);
    assert_eq!(f.backend.creates.load(SeqCst), 0);
    assert_eq!(f.backend.inner.head("small").await.unwrap().content_type.as_deref(), Some("text/plain"));
}

#[tokio::test]
async fn new_empty_file_is_stored_on_commit() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let h = f.open("empty", None, new_file());
    assert!(h.is_dirty());
    assert_eq!(h.commit(&PutOptions::default()).await.unwrap().unwrap().size, 0);
    assert_eq!(f.stored("empty").await, Vec::<u8>::new());
    assert!(h.read(0, 10).await.unwrap().is_empty());
}

#[tokio::test]
async fn random_writes_are_spooled() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let h = f.open("random", None, new_file());
    let mut model = vec![0u8; 0];
    let writes = [(300 * KIB, 5000u64), (0, 100), (10 * KIB, 70 * KIB), (299 * KIB, 4000), (1, 1)];
    for (i, (off, len)) in writes.into_iter().enumerate() {
        let data = pattern(len, 10 + i as u64);
        h.write(off, &data).await.unwrap();
        let end = (off + len) as usize;
        if model.len() < end {
            model.resize(end, 0);
        }
        model[off as usize..end].copy_from_slice(&data);
        assert_eq!(h.size(), model.len() as u64);
    }
    assert_eq!(&h.read(0, model.len() as u32 + 100).await.unwrap()[..], &model[..]);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("random").await, model);
    // larger than a part: uploaded from the spool in parts
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn overwrite_middle_of_existing_object() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let mut model = pattern(300 * KIB, 20);
    let meta = f.put("obj", &model).await;
    let h = f.open("obj", Some(meta), rw());
    assert!(!h.is_dirty());
    let patch = pattern(1000, 21);
    h.write(100 * KIB, &patch).await.unwrap();
    model[100 * KIB as usize..][..1000].copy_from_slice(&patch);
    assert_eq!(h.size(), model.len() as u64);
    assert_eq!(&h.read(100 * KIB - 10, 1020).await.unwrap()[..], &model[100 * KIB as usize - 10..][..1020]);
    // invisible until committed
    assert_eq!(f.stored("obj").await, pattern(300 * KIB, 20));
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("obj").await, model);
}

#[tokio::test]
async fn append_to_existing_object() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let mut model = pattern(100 * KIB, 30);
    let meta = f.put("log", &model).await;
    let h = f.open("log", Some(meta), OpenMode { write: true, append: true, ..Default::default() });
    let more = pattern(50 * KIB, 31);
    // append mode ignores the offset
    h.write(0, &more[..10 * 1024]).await.unwrap();
    h.write(0, &more[10 * 1024..]).await.unwrap();
    model.extend_from_slice(&more);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("log").await, model);
    assert_eq!(h.size(), model.len() as u64);
}

#[tokio::test]
async fn sequential_append_at_end_of_existing_object() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let mut model = pattern(10 * KIB, 32);
    let meta = f.put("f", &model).await;
    let h = f.open("f", Some(meta), rw());
    let more = pattern(5 * KIB, 33);
    h.write(10 * KIB, &more).await.unwrap();
    model.extend_from_slice(&more);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("f").await, model);
}

#[tokio::test]
async fn truncate_shorter_and_longer() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let orig = pattern(200 * KIB, 40);
    let meta = f.put("t", &orig).await;

    let h = f.open("t", Some(meta.clone()), rw());
    h.set_len(50 * KIB).await.unwrap();
    assert_eq!(h.size(), 50 * KIB);
    assert!(h.read(60 * KIB, 10).await.unwrap().is_empty());
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("t").await, orig[..50 * KIB as usize].to_vec());
    // only what is kept was fetched
    assert!(f.backend.get_bytes.load(SeqCst) <= 50 * KIB);

    h.set_len(80 * KIB).await.unwrap();
    h.commit(&PutOptions::default()).await.unwrap();
    let mut model = orig[..50 * KIB as usize].to_vec();
    model.resize(80 * KIB as usize, 0);
    assert_eq!(f.stored("t").await, model);

    // set_len(0) then a sequential rewrite streams again
    h.set_len(0).await.unwrap();
    let fresh = pattern(10 * KIB, 41);
    h.write(0, &fresh).await.unwrap();
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("t").await, fresh);
}

#[tokio::test]
async fn open_with_truncate_empties_the_object() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let meta = f.put("t", &pattern(1000, 42)).await;
    let h = f.open("t", Some(meta), new_file());
    assert_eq!(h.size(), 0);
    assert!(h.is_dirty());
    h.commit(&PutOptions::default()).await.unwrap();
    assert!(f.stored("t").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_from_streaming_to_spool_keeps_data() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let mut model = pattern(6 * part, 50);
    let h = f.open("switch", None, new_file());
    write_all(&h, 0, &model, 32 * 1024).await;
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 1);
    // a write in the middle, past the retained first part: with the local copy a
    // read-write handle keeps, the multipart upload is abandoned and nothing is lost
    let patch = pattern(100, 51);
    let at = 2 * part as usize + 10;
    h.write(at as u64, &patch).await.unwrap();
    model[at..at + 100].copy_from_slice(&patch);
    assert_eq!(f.pending(), 0);
    let tail = pattern(3 * part, 52);
    write_all(&h, model.len() as u64, &tail, 32 * 1024).await;
    model.extend_from_slice(&tail);
    assert_eq!(&h.read(at as u64, 200).await.unwrap()[..], &model[at..at + 200]);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("switch").await, model);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_commit_returns_error_and_leaks_no_upload() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let data = pattern(5 * part + 7, 60);
    let h = f.open("fail", None, new_file());
    write_all(&h, 0, &data, 64 * 1024).await;
    f.backend.fail_upload_part.store(true, SeqCst);
    let err = h.commit(&PutOptions::default()).await.unwrap_err();
    assert_eq!(err.errno(), libc::EIO);
    assert_eq!(f.pending(), 0);
    assert!(h.is_dirty());
    assert!(f.backend.inner.head("fail").await.is_err());
    // the content is still there: a later commit can succeed
    f.backend.fail_upload_part.store(false, SeqCst);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("fail").await, data);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_parts_during_streaming_fall_back_to_spool() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 2);
    f.backend.fail_upload_part.store(true, SeqCst);
    let data = pattern(8 * part, 61);
    let h = f.open("flaky", None, new_file());
    write_all(&h, 0, &data, 64 * 1024).await;
    assert_eq!(f.pending(), 0);
    assert!(h.commit(&PutOptions::default()).await.is_err());
    assert_eq!(f.pending(), 0);
    f.backend.fail_upload_part.store(false, SeqCst);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("flaky").await, data);
}

#[tokio::test]
async fn discard_aborts_and_restores() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let h = f.open("d", None, new_file());
    write_all(&h, 0, &pattern(4 * part, 70), 64 * 1024).await;
    assert_eq!(f.pending(), 1);
    h.discard().await;
    assert_eq!(f.pending(), 0);
    assert!(!h.is_dirty());
    assert_eq!(h.size(), 0);
    assert!(f.backend.inner.head("d").await.is_err());
}

#[tokio::test]
async fn writes_after_commit_start_a_new_generation() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let h = f.open("gen", None, new_file());
    let mut model = pattern(100 * KIB, 80);
    h.write(0, &model).await.unwrap();
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("gen").await, model);
    h.write(5, b"hello").await.unwrap();
    model[5..10].copy_from_slice(b"hello");
    assert!(h.is_dirty());
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("gen").await, model);
}

#[tokio::test]
async fn rename_while_streaming_commits_under_new_key() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let data = pattern(3 * part, 90);
    let h = f.open("old", None, new_file());
    write_all(&h, 0, &data, 64 * 1024).await;
    h.set_key("new".into());
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("new").await, data);
    assert!(f.backend.inner.head("old").await.is_err());
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn commit_options_differing_from_streamed_upload_are_honoured() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let data = pattern(3 * part, 91);
    let h = f.open("typed", None, new_file());
    write_all(&h, 0, &data, 64 * 1024).await;
    let opts = PutOptions { content_type: Some("video/mp4".into()), ..Default::default() };
    h.commit(&opts).await.unwrap();
    assert_eq!(f.stored("typed").await, data);
    assert_eq!(f.backend.inner.head("typed").await.unwrap().content_type.as_deref(), Some("video/mp4"));
    assert_eq!(f.pending(), 0);

    // with the options announced up front the stream is used as is
    let before = f.backend.parts.load(SeqCst);
    let h = f.open("typed2", None, new_file());
    h.set_upload_options(&opts).await;
    write_all(&h, 0, &data, 64 * 1024).await;
    h.commit(&opts).await.unwrap();
    assert_eq!(f.backend.parts.load(SeqCst) - before, 3);
    assert_eq!(f.backend.inner.head("typed2").await.unwrap().content_type.as_deref(), Some("video/mp4"));
}

#[tokio::test]
async fn dropping_a_streaming_handle_aborts_its_upload() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let h = f.open("dropped", None, new_file());
    write_all(&h, 0, &pattern(4 * part, 92), 64 * 1024).await;
    assert_eq!(f.pending(), 1);
    drop(h);
    for _ in 0..100 {
        if f.pending() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_read_uses_read_ahead() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let data = pattern(32 * MIB, 100);
    let meta = f.put("r", &data).await;
    let h = f.open("r", Some(meta), OpenMode { read: true, ..Default::default() });
    let mut out = Vec::new();
    let mut reads = 0;
    loop {
        let b = h.read(out.len() as u64, 128 * 1024).await.unwrap();
        if b.is_empty() {
            break;
        }
        reads += 1;
        out.extend_from_slice(&b);
    }
    assert!(out == data);
    let gets = f.backend.gets.load(SeqCst);
    assert_eq!(reads, 256);
    assert!(gets <= 16, "{gets} GETs for {reads} reads");
    assert_eq!(f.backend.get_bytes.load(SeqCst), 32 * MIB, "nothing fetched twice");
    assert_eq!(f.ctx.metrics.bytes_read.load(SeqCst), 32 * MIB);
    assert_eq!(f.ctx.metrics.requests_get.load(SeqCst), gets);
}

#[tokio::test]
async fn random_reads_fetch_only_what_is_needed() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let data = pattern(32 * MIB, 101);
    let meta = f.put("r", &data).await;
    let h = f.open("r", Some(meta), OpenMode { read: true, ..Default::default() });
    let mut x = 12345u64;
    let mut last_end = 0;
    for _ in 0..50 {
        let off = loop {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let off = MIB + (x >> 33) % (30 * MIB);
            // a read shortly after the previous one counts as sequential, by design
            if !(last_end..=last_end + crate::read::prefetcher::SEQUENTIAL_SLACK).contains(&off) {
                break off;
            }
        };
        last_end = off + 4096;
        let b = h.read(off, 4096).await.unwrap();
        assert_eq!(&b[..], &data[off as usize..][..4096]);
    }
    assert_eq!(f.backend.gets.load(SeqCst), 50);
    assert_eq!(f.backend.get_bytes.load(SeqCst), 50 * 4096);
}

#[tokio::test]
async fn reads_past_end_and_small_objects() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let data = pattern(100 * KIB, 102);
    let meta = f.put("s", &data).await;
    let h = f.open("s", Some(meta), OpenMode { read: true, ..Default::default() });
    assert_eq!(&h.read(50 * KIB, 4096).await.unwrap()[..], &data[50 * KIB as usize..][..4096]);
    assert_eq!(&h.read(0, 4096).await.unwrap()[..], &data[..4096]);
    assert_eq!(&h.read(100 * KIB - 10, 4096).await.unwrap()[..], &data[100 * KIB as usize - 10..]);
    assert!(h.read(100 * KIB, 4096).await.unwrap().is_empty());
    assert!(h.read(1 << 40, 4096).await.unwrap().is_empty());
    // small object: fetched whole, once
    assert_eq!(f.backend.gets.load(SeqCst), 1);
}

#[tokio::test]
async fn object_changed_mid_read_is_an_error() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let data = pattern(16 * MIB, 103);
    let meta = f.put("c", &data).await;
    let h = f.open("c", Some(meta), OpenMode { read: true, ..Default::default() });
    assert_eq!(&h.read(0, 4096).await.unwrap()[..], &data[..4096]);
    f.put("c", &pattern(16 * MIB, 104)).await;
    let mut failed = false;
    for i in 0..128u64 {
        match h.read(i * 128 * KIB, 128 * 1024).await {
            Ok(b) => assert_eq!(&b[..], &data[(i * 128 * KIB) as usize..][..b.len()], "never a mix"),
            Err(e) => {
                assert_eq!(e.errno(), libc::EIO);
                failed = true;
                break;
            }
        }
    }
    assert!(failed);
    // a random read of the changed object fails too
    assert!(h.read(10 * MIB, 10).await.is_err());
}

#[tokio::test]
async fn read_ahead_with_little_memory_still_works_and_frees_on_drop() {
    let f = fixture(64 * KIB, 1024 * KIB, 4);
    let data = pattern(8 * MIB, 105);
    let meta = f.put("m", &data).await;
    let h = f.open("m", Some(meta), OpenMode { read: true, ..Default::default() });
    // someone else holds most of the budget
    let held = f.ctx.memory.reserve(768 * KIB).await;
    let mut out = Vec::new();
    loop {
        let b = h.read(out.len() as u64, 128 * 1024).await.unwrap();
        if b.is_empty() {
            break;
        }
        out.extend_from_slice(&b);
    }
    assert!(out == data);
    drop(held);
    drop(h);
    assert_eq!(f.ctx.memory.available_bytes(), f.ctx.memory.limit_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_read_ahead_cannot_starve_a_writer() {
    let part = 512 * KIB;
    // the budget is below the read-ahead window (16 MiB): without a share kept for
    // writers, the reader's buffers could take all of it
    let f = fixture(part, 8 * MIB, 2);
    let data = pattern(32 * MIB, 106);
    let meta = f.put("big", &data).await;
    let reader = f.open("big", Some(meta), OpenMode { read: true, ..Default::default() });
    for i in 0..32u64 {
        reader.read(i * 128 * KIB, 128 * 1024).await.unwrap();
    }
    // the reader now sits on its read-ahead; a writer needing parts must still finish
    let w = f.open("w", None, new_file());
    let out = pattern(8 * part, 107);
    tokio::time::timeout(std::time::Duration::from_secs(20), async {
        write_all(&w, 0, &out, 128 * 1024).await;
        w.commit(&PutOptions::default()).await.unwrap();
    })
    .await
    .expect("writer starved by read-ahead");
    assert_eq!(f.stored("w").await, out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_on_one_handle() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    let h = Arc::new(f.open("conc", None, new_file()));
    let block = 16 * KIB;
    let tasks: Vec<_> = (0..8u64)
        .map(|i| {
            let h = h.clone();
            tokio::spawn(async move { h.write(i * block, &pattern(block, 200 + i)).await.unwrap() })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    h.commit(&PutOptions::default()).await.unwrap();
    let expected: Vec<u8> = (0..8u64).flat_map(|i| pattern(block, 200 + i)).collect();
    assert_eq!(f.stored("conc").await, expected);
    assert_eq!(f.pending(), 0);
}

/// The fixture with `--enable-multi-range` (batch 5, threshold 1 MiB).
fn multi_range_fixture() -> Fixture {
    let f = fixture(MIB, 256 * MIB, 4);
    let mut cfg = f.ctx.cfg.clone();
    cfg.multi_range = Some(MultiRangeConfig::default());
    let ctx = Arc::new(HandleContext {
        backend: f.ctx.backend.clone(),
        memory: f.ctx.memory.clone(),
        metrics: f.ctx.metrics.clone(),
        cfg,
    });
    Fixture { ctx, ..f }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_reads_are_batched_and_own_writes_still_win() {
    let f = multi_range_fixture();
    let data = pattern(64 * MIB, 4);
    let meta = f.put("sparse", &data).await;
    let h = f.open("sparse", Some(meta), rw());
    for i in 0..20u64 {
        let got = h.read(i * 2 * MIB, 16 * 1024).await.unwrap();
        assert_eq!(&got[..], &data[(i * 2 * MIB) as usize..(i * 2 * MIB + 16 * KIB) as usize]);
    }
    assert!(f.backend.multi_gets.load(SeqCst) >= 3, "strided reads were batched");
    assert!(f.ctx.metrics.multi_range_requests.load(SeqCst) >= 3);
    // 40 MiB was prefetched by the last batch; a write there must be what the next read sees
    h.write(40 * MIB, b"mine").await.unwrap();
    assert_eq!(&h.read(40 * MIB, 4).await.unwrap()[..], b"mine");
    assert_eq!(&h.read(42 * MIB, 4).await.unwrap()[..], &data[(42 * MIB) as usize..(42 * MIB + 4) as usize]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_sparse_reads_of_one_handle_meet_in_one_batch() {
    let f = multi_range_fixture();
    f.backend.get_delay_ms.store(20, SeqCst);
    let data = Arc::new(pattern(64 * MIB, 5));
    let meta = f.put("conc", &data).await;
    let h = Arc::new(f.open("conc", Some(meta), OpenMode { read: true, ..Default::default() }));
    // two warm-up reads make the pattern sparse; then waves of 5 concurrent reads, at
    // scattered pages (on a lattice of whole MiB, the whole lattice would be fetched)
    h.read(0, 4096).await.unwrap();
    h.read(63 * MIB, 4096).await.unwrap();
    let before = f.backend.gets.load(SeqCst) + f.backend.multi_gets.load(SeqCst);
    for wave in 0..4u64 {
        let reads: Vec<_> = (0..5u64)
            .map(|i| {
                let (h, data) = (h.clone(), data.clone());
                let n = wave * 5 + i;
                let off = (n * 37 % 60 + 1) * MIB + 8 * KIB + n * 13 % 48 * 4 * KIB;
                tokio::spawn(async move {
                    let got = h.read(off, 4096).await.unwrap();
                    assert_eq!(&got[..], &data[off as usize..off as usize + 4096]);
                })
            })
            .collect();
        for r in reads {
            r.await.unwrap();
        }
    }
    let requests = f.backend.gets.load(SeqCst) + f.backend.multi_gets.load(SeqCst) - before;
    assert!(
        requests <= 20 / 3,
        "{requests} requests for 20 concurrent reads: the handle lock serialized them?"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_reads_of_one_handle_run_concurrently_with_default_flags() {
    let f = fixture(64 * KIB, 64 * MIB, 4);
    f.backend.get_delay_ms.store(50, SeqCst);
    let data = Arc::new(pattern(32 * MIB, 9));
    let meta = f.put("conc", &data).await;
    let h = Arc::new(f.open("conc", Some(meta), OpenMode { read: true, ..Default::default() }));
    // 8 readers x 8 preads of 16 KiB, 480 KiB apart or more: every read is random
    let tasks: Vec<_> = (0..8u64)
        .map(|t| {
            let (h, data) = (h.clone(), data.clone());
            tokio::spawn(async move {
                for i in 0..8u64 {
                    let off = ((t * 8 + i) * 29 % 64 + 1) * 480 * KIB + 100;
                    let got = h.read(off, 16 * 1024).await.unwrap();
                    assert_eq!(&got[..], &data[off as usize..off as usize + 16 * 1024], "offset {off}");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let running = f.backend.max_gets_running.load(SeqCst);
    assert!(running >= 4, "at most {running} GETs in flight: the handle lock serialized the reads?");
    assert_eq!(f.backend.gets.load(SeqCst), 64);
    assert_eq!(f.backend.get_bytes.load(SeqCst), 64 * 16 * KIB, "a random read fetches what it asks for");
}

/// How `cp`, `dd` and downloads open: no read access, so no local copy.
fn write_only_new() -> OpenMode {
    OpenMode { read: false, write: true, truncate: true, append: false }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_stream_rewrites_its_header_without_a_local_copy() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let mut model = pattern(6 * part + 100, 200);
    let h = f.open("hdr", None, write_only_new());
    write_all(&h, 0, &model, 32 * 1024).await;
    // a header filled in at offset 0 once the data is written (archivers, muxers)
    let header = pattern(512, 201);
    h.write(0, &header).await.unwrap();
    model[..512].copy_from_slice(&header);
    // and a patch of the part still being buffered
    h.write(6 * part + 10, b"tail").await.unwrap();
    model[6 * part as usize + 10..6 * part as usize + 14].copy_from_slice(b"tail");
    assert_eq!(h.size(), model.len() as u64);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("hdr").await, model);
    // 7 parts, part 1 sent twice; the upload was never abandoned
    assert_eq!(f.backend.parts.load(SeqCst), 8);
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_stream_rewrites_its_recent_parts_without_a_local_copy() {
    let part = 64 * KIB;
    // a 2 MiB budget keeps 1/16 of it: the two most recent parts
    let f = fixture(part, 2 * MIB, 4);
    let mut model = pattern(10 * part + 100, 240);
    let h = f.open("zip", None, write_only_new());
    write_all(&h, 0, &model, 16 * 1024).await;
    // parts 1-10 are handed off, part 11 holds 100 bytes; parts 9 and 10 are kept
    let mut patch = |at: u64, data: &[u8]| {
        model[at as usize..at as usize + data.len()].copy_from_slice(data);
        (at, data.to_vec())
    };
    let patches = [
        patch(8 * part + 10, b"entry size"),
        patch(9 * part - 3, b"across"),    // parts 9 and 10
        patch(10 * part - 2, b"into buf"), // part 10 and the buffered part
        patch(0, b"header"),               // part 1, kept regardless
    ];
    for (at, data) in &patches {
        assert_eq!(h.write(*at, data).await.unwrap() as usize, data.len(), "write at {at}");
    }
    // what is held reads back (a read-only view of a write-only handle's own bytes)
    let got = h.read(9 * part - 8, 16).await.unwrap();
    assert_eq!(&got[..], &model[9 * part as usize - 8..9 * part as usize + 8]);
    // part 8 was let go: refused, nothing lost
    assert_eq!(h.write(7 * part + 1, b"x").await.unwrap_err().errno(), libc::EINVAL);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("zip").await, model);
    // 11 parts, and parts 1, 9 and 10 sent again with their patches
    assert_eq!(f.backend.parts.load(SeqCst), 14);
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn write_only_stream_keeps_no_recent_part_when_memory_is_short() {
    let part = 64 * KIB;
    let f = fixture(part, 2 * MIB, 4);
    // another user of the budget holds more than half of it
    let _other = f.ctx.memory.reserve(1100 * KIB).await;
    let mut model = pattern(6 * part, 250);
    let h = f.open("short", None, write_only_new());
    write_all(&h, 0, &model, 64 * 1024).await;
    assert_eq!(h.write(5 * part - 1, b"x").await.unwrap_err().errno(), libc::EINVAL);
    // the first part is kept all the same
    h.write(1, b"hdr").await.unwrap();
    model[1..4].copy_from_slice(b"hdr");
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("short").await, model);
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn write_only_stream_refuses_a_write_into_uploaded_bytes_and_loses_nothing() {
    let part = 64 * KIB;
    // a 2 MiB budget keeps the two most recent parts (3 and 4) besides part 1
    let f = fixture(part, 2 * MIB, 4);
    let mut model = pattern(5 * part, 210);
    let h = f.open("mid", None, write_only_new());
    write_all(&h, 0, &model, 64 * 1024).await;
    let err = h.write(part + 5, b"x").await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    let err = h.set_len(part + 1).await.unwrap_err();
    assert_eq!(err.errno(), libc::EINVAL);
    // a gap of less than a part reads as zeros; sequential writing goes on
    let tail = pattern(100, 211);
    h.write(model.len() as u64 + 1000, &tail).await.unwrap();
    model.extend_from_slice(&[0; 1000]);
    model.extend_from_slice(&tail);
    // a truncate within the buffered part
    h.set_len(model.len() as u64 - 50).await.unwrap();
    model.truncate(model.len() - 50);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("mid").await, model);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_stream_whose_parts_fail_keeps_the_old_content_and_says_so() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 2);
    let old = f.put("kept", b"old content").await;
    f.backend.fail_upload_part.store(true, SeqCst);
    let h = f.open("kept", Some(old), write_only_new());
    let data = pattern(8 * part, 220);
    let mut failed = None;
    for (i, piece) in data.chunks(64 * 1024).enumerate() {
        if let Err(e) = h.write(i as u64 * 64 * KIB, piece).await {
            failed = Some(e);
            break;
        }
    }
    assert_eq!(failed.expect("a write reports the lost upload").errno(), libc::EIO);
    assert_eq!(h.commit(&PutOptions::default()).await.unwrap_err().errno(), libc::EIO);
    f.backend.fail_upload_part.store(false, SeqCst);
    // still an error: the bytes are gone, never stored as a shorter file
    assert_eq!(h.commit(&PutOptions::default()).await.unwrap_err().errno(), libc::EIO);
    assert_eq!(f.stored("kept").await, b"old content");
    assert_eq!(f.pending(), 0);
}

#[tokio::test]
async fn write_only_stream_renamed_or_retyped_while_open_lands_under_the_new_name() {
    let part = 64 * KIB;
    let f = fixture(part, 64 * MIB, 4);
    let data = pattern(3 * part, 230);
    let h = f.open("old", None, write_only_new());
    write_all(&h, 0, &data, 64 * 1024).await;
    h.set_key("new".into());
    let opts = PutOptions { content_type: Some("video/mp4".into()), ..Default::default() };
    h.commit(&opts).await.unwrap();
    assert_eq!(f.stored("new").await, data);
    assert_eq!(f.backend.inner.head("new").await.unwrap().content_type.as_deref(), Some("video/mp4"));
    assert!(f.backend.inner.head("old").await.is_err());
    assert_eq!(f.pending(), 0);
}

#[path = "handle_readback_tests.rs"]
mod readback;
