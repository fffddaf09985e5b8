//! A write-only stream on a backend that can read the parts of an unfinished
//! upload back (the embedded store, GCS) rewrites parts it no longer holds.

use super::*;
use crate::backend::MultipartStore;

/// A backend like the embedded store or GCS: the parts of an open upload read back.
fn readable(part: u64, memory: u64) -> Fixture {
    let caps = crate::backend::Capabilities {
        readable_upload_parts: true,
        ..crate::backend::test_backend::small_part_caps(part)
    };
    fixture_on(InstrumentedBackend::with_capabilities(caps), part, memory, 4)
}

/// Copies `data` into `model` at `at` and returns the write.
fn patch(model: &mut [u8], at: u64, data: &[u8]) -> (u64, Vec<u8>) {
    model[at as usize..at as usize + data.len()].copy_from_slice(data);
    (at, data.to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn write_only_stream_reads_back_the_parts_it_no_longer_holds() {
    let part = 64 * KIB;
    // a 2 MiB budget keeps part 1 and the two most recent parts (9 and 10)
    let f = readable(part, 2 * MIB);
    let mut model = pattern(10 * part + 100, 300);
    let h = f.open("any", None, write_only_new());
    write_all(&h, 0, &model.clone(), 16 * 1024).await;
    let patches = [
        patch(&mut model, 2 * part + 10, b"entry"), // part 3: read back
        patch(&mut model, 4 * part - 3, b"across"), // parts 4 and 5: read back
        patch(&mut model, 2 * part + 20, b"again"), // part 3, now held
        patch(&mut model, 9 * part - 2, b"recent"), // parts 9 and 10, kept
        patch(&mut model, 0, b"header"),            // part 1, kept
    ];
    for (at, data) in &patches {
        assert_eq!(h.write(*at, data).await.unwrap() as usize, data.len(), "write at {at}");
    }
    assert_eq!(f.backend.part_reads.load(SeqCst), 3, "parts 3, 4 and 5 read back once each");
    assert_eq!(f.ctx.metrics.bytes_read.load(SeqCst), 3 * part);
    // a part read back is held like a kept one: it reads back too
    let got = h.read(4 * part - 8, 16).await.unwrap();
    assert_eq!(&got[..], &model[4 * part as usize - 8..4 * part as usize + 8]);
    assert_eq!(f.backend.inner.list_multipart("").await.unwrap().len(), 1, "not completed early");
    assert!(f.backend.inner.head("any").await.is_err(), "nothing visible before the commit");
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("any").await, model);
    // 11 parts, and parts 1, 3, 4, 5, 9 and 10 sent again with their patches
    assert_eq!(f.backend.parts.load(SeqCst), 17);
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parts_read_back_are_sent_and_let_go_when_memory_is_short() {
    let part = 256 * KIB;
    // parts larger than the recent window (128 KiB): only part 1 and the buffer are
    // held; another user of the budget leaves this stream room for one part more
    let f = readable(part, 2 * MIB);
    let _other = f.ctx.memory.reserve(1280 * KIB).await;
    let mut model = pattern(6 * part + 100, 310);
    let h = f.open("short", None, write_only_new());
    write_all(&h, 0, &model.clone(), 64 * 1024).await;
    let patches = [
        patch(&mut model, 2 * part + 10, b"three"), // part 3 read back into the last room
        patch(&mut model, 3 * part + 10, b"four"),  // part 3 sent and let go, part 4 read back
        patch(&mut model, 2 * part + 20, b"three again"), // part 4 sent and let go, part 3 read back
    ];
    for (at, data) in &patches {
        assert_eq!(h.write(*at, data).await.unwrap() as usize, data.len(), "write at {at}");
    }
    assert_eq!(f.backend.part_reads.load(SeqCst), 3);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("short").await, model);
    // 7 parts, part 3 sent again twice and part 4 once
    assert_eq!(f.backend.parts.load(SeqCst), 10);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_part_that_cannot_be_held_is_refused_and_nothing_is_lost() {
    let part = 512 * KIB;
    // part 1 and the buffer (1 MiB) and another user (640 KiB) leave 384 KiB: not a part
    let f = readable(part, 2 * MIB);
    let _other = f.ctx.memory.reserve(640 * KIB).await;
    let mut model = pattern(5 * part + 100, 320);
    let h = f.open("full", None, write_only_new());
    write_all(&h, 0, &model.clone(), 64 * 1024).await;
    assert_eq!(h.write(2 * part, b"x").await.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(f.backend.part_reads.load(SeqCst), 0, "no read without the memory to hold it");
    h.write(0, b"header").await.unwrap();
    model[..6].copy_from_slice(b"header");
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("full").await, model);
    assert_eq!(f.pending(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_read_back_fails_the_write_and_keeps_the_upload() {
    let part = 64 * KIB;
    let f = readable(part, 2 * MIB);
    let mut model = pattern(10 * part + 100, 330);
    let h = f.open("retry", None, write_only_new());
    write_all(&h, 0, &model.clone(), 64 * 1024).await;
    f.backend.fail_read_part.store(true, SeqCst);
    assert_eq!(h.write(2 * part, b"patch").await.unwrap_err().errno(), libc::EIO);
    f.backend.fail_read_part.store(false, SeqCst);
    // the application tries again; nothing written before was lost
    h.write(2 * part, b"patch").await.unwrap();
    model[2 * part as usize..2 * part as usize + 5].copy_from_slice(b"patch");
    assert_eq!(f.backend.part_reads.load(SeqCst), 2);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("retry").await, model);
    assert_eq!(f.backend.creates.load(SeqCst), 1);
    assert_eq!(f.pending(), 0);
}

/// Without the capability (S3, Azure) the same write is refused as before.
#[tokio::test]
async fn without_readable_parts_a_write_far_back_is_refused() {
    let part = 64 * KIB;
    let f = fixture(part, 2 * MIB, 4);
    let model = pattern(10 * part + 100, 340);
    let h = f.open("s3", None, write_only_new());
    write_all(&h, 0, &model, 64 * 1024).await;
    assert_eq!(h.write(2 * part, b"x").await.unwrap_err().errno(), libc::EINVAL);
    assert_eq!(f.backend.part_reads.load(SeqCst), 0);
    h.commit(&PutOptions::default()).await.unwrap();
    assert_eq!(f.stored("s3").await, model);
}
