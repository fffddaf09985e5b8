//! `cargo bench --bench store`: throughput of the embedded store next to the
//! raw Reed-Solomon encode speed and the raw disk speed of the same machine.
//!
//! Everything runs in a temp dir (`BENCH_DIR`, default the system temp dir).
//! "cold" figures evict the files from the page cache with
//! `posix_fadvise(DONTNEED)` first; "hot" ones read what the cache holds.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use bucketfs::backend::{GetOptions, PutOptions};
use bucketfs::store::erasure::{Erasure, BLOCK_SIZE};
use bucketfs::store::{Store, StoreConfig};

const MIB: f64 = 1024.0 * 1024.0;
const OBJ: usize = 64 << 20;
const ROUNDS: usize = 5;

fn evict(path: &Path) {
    if path.is_dir() {
        if let Ok(rd) = std::fs::read_dir(path) {
            for e in rd.flatten() {
                evict(&e.path());
            }
        }
    } else if let Ok(f) = File::open(path) {
        // SAFETY: plain syscall on an open descriptor.
        unsafe {
            libc::fdatasync(f.as_raw_fd());
            libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
        }
    }
}

fn data(len: usize) -> Vec<u8> {
    let mut x = 0x2545F4914F6CDD1Du64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn encode_speed(d: usize, p: usize, buf: &[u8]) -> f64 {
    let er = Erasure::new(d, p).unwrap();
    let t = Instant::now();
    let mut bytes = 0usize;
    while t.elapsed().as_secs_f64() < 0.5 {
        for block in buf.chunks(BLOCK_SIZE) {
            let enc = er.encode(block.to_vec()).unwrap();
            std::hint::black_box(&enc.parity);
            bytes += block.len();
        }
    }
    bytes as f64 / MIB / t.elapsed().as_secs_f64()
}

/// Raw sequential write (1 MiB writes + fsync) and read of one file.
fn disk(dir: &Path, buf: &[u8]) -> (f64, f64, f64, f64) {
    let path = dir.join("raw.bin");
    let mut w = 0.0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let mut f = File::create(&path).unwrap();
        for c in buf.chunks(BLOCK_SIZE) {
            f.write_all(c).unwrap();
        }
        f.sync_all().unwrap();
        w += buf.len() as f64 / MIB / t.elapsed().as_secs_f64();
    }
    let read = |cold: bool| {
        let mut r = 0.0;
        for _ in 0..ROUNDS {
            if cold {
                evict(&path);
            }
            let t = Instant::now();
            let mut f = File::open(&path).unwrap();
            let mut out = vec![0u8; BLOCK_SIZE];
            let mut n = 0;
            loop {
                let k = f.read(&mut out).unwrap();
                if k == 0 {
                    break;
                }
                n += k;
            }
            r += n as f64 / MIB / t.elapsed().as_secs_f64();
        }
        r / ROUNDS as f64
    };
    let hot = read(false);
    let cold = read(true);
    // Like a GET, fs::read returns the whole file in a freshly allocated buffer.
    let mut fresh = 0.0;
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let v = std::fs::read(&path).unwrap();
        fresh += v.len() as f64 / MIB / t.elapsed().as_secs_f64();
    }
    std::fs::remove_file(&path).unwrap();
    (w / ROUNDS as f64, hot, cold, fresh / ROUNDS as f64)
}

fn md5_speed(buf: &[u8]) -> f64 {
    use md5::Digest;
    let t = Instant::now();
    std::hint::black_box(md5::Md5::digest(buf));
    buf.len() as f64 / MIB / t.elapsed().as_secs_f64()
}

/// PUT, GET hot and GET cold MiB/s of a store of server pools of `pools[i]`
/// drives each (one entry: a plain one-spec store).
fn store_speed(dir: &Path, pools: &[usize], parity: usize, buf: &[u8]) -> (f64, f64, f64) {
    let tag = pools.iter().map(usize::to_string).collect::<Vec<_>>().join("+");
    let specs: Vec<Vec<PathBuf>> = pools
        .iter()
        .enumerate()
        .map(|(p, &n)| (0..n).map(|i| dir.join(format!("{tag}-p{p}-d{i}"))).collect())
        .collect();
    let drives: Vec<PathBuf> = specs.concat();
    let s = Store::open_pools(specs, Some(parity)).unwrap();
    s.make_bucket("bench").unwrap();
    let mut put = 0.0;
    for i in 0..ROUNDS {
        let t = Instant::now();
        s.put_object("bench", &format!("obj{i}"), buf, &PutOptions::default()).unwrap();
        put += buf.len() as f64 / MIB / t.elapsed().as_secs_f64();
    }
    let get = |cold: bool| {
        let mut g = 0.0;
        for i in 0..ROUNDS {
            if cold {
                for d in &drives {
                    evict(d);
                }
            }
            let t = Instant::now();
            let (_, out) = s.get_object("bench", &format!("obj{i}"), None, &GetOptions::default()).unwrap();
            assert_eq!(out.len(), buf.len());
            g += buf.len() as f64 / MIB / t.elapsed().as_secs_f64();
        }
        g / ROUNDS as f64
    };
    let hot = get(false);
    let cold = get(true);
    drop(s);
    for d in &drives {
        let _ = std::fs::remove_dir_all(d);
    }
    (put / ROUNDS as f64, hot, cold)
}

/// Small-object PUTs per second (4 KiB, inline in the metadata) on a store of
/// server pools of `pools[i]` drives: where a pool lookup (a metadata read per
/// pool, and statvfs of the target sets' drives for a new key) shows.
fn small_put_rate(dir: &Path, pools: &[usize]) -> f64 {
    let tag = pools.iter().map(usize::to_string).collect::<Vec<_>>().join("+");
    let specs: Vec<Vec<PathBuf>> = pools
        .iter()
        .enumerate()
        .map(|(p, &n)| (0..n).map(|i| dir.join(format!("small{tag}-p{p}-d{i}"))).collect())
        .collect();
    let drives: Vec<PathBuf> = specs.concat();
    let s = Store::open_pools(specs, Some(4)).unwrap();
    s.make_bucket("bench").unwrap();
    let body = vec![7u8; 4096];
    const N: usize = 500;
    let t = Instant::now();
    for i in 0..N {
        s.put_object("bench", &format!("small{i}"), &body, &PutOptions::default()).unwrap();
    }
    let rate = N as f64 / t.elapsed().as_secs_f64();
    s.close();
    drop(s);
    for d in &drives {
        let _ = std::fs::remove_dir_all(d);
    }
    rate
}

/// A store of `n` drives (split into sets as `Store::open` does) loaded with
/// `objects` copies of `buf`, one drive wiped while closed, then reopened:
/// the open adopts the empty drive and heals it in the background (the
/// monitor's paced path). Returns (sets, MiB/s of the healed set's object
/// data, MiB/s of shards written to the new drive, seconds) from the reopen
/// until its heal-status.json says `done`.
fn heal_speed(dir: &Path, n: usize, objects: usize, buf: &[u8]) -> (usize, f64, f64, f64) {
    use bucketfs::store::monitor::read_heal_status;
    let drives: Vec<PathBuf> = (0..n).map(|i| dir.join(format!("heal{n}-d{i}"))).collect();
    let s = Store::open(StoreConfig { drives: drives.clone(), parity: None }).unwrap();
    let sets = s.sets().len();
    s.make_bucket("bench").unwrap();
    // drive 1 is in set 0: only the objects hashed there are healed
    let mut in_set = 0;
    for i in 0..objects {
        s.put_object("bench", &format!("obj{i}"), buf, &PutOptions::default()).unwrap();
        in_set += usize::from(s.set_of(&format!("obj{i}")) == 0);
    }
    s.close();
    drop(s);
    let wiped = &drives[1];
    std::fs::remove_dir_all(wiped).unwrap();
    std::fs::create_dir(wiped).unwrap();
    let t = Instant::now();
    let s = Store::open(StoreConfig { drives: drives.clone(), parity: None }).unwrap();
    let bytes = loop {
        if let Some((_, st)) = read_heal_status(std::slice::from_ref(wiped)).pop() {
            if st.state != "healing" {
                assert_eq!(st.state, "done", "{st:?}");
                break st.bytes;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let secs = t.elapsed().as_secs_f64();
    s.close();
    drop(s);
    for d in &drives {
        let _ = std::fs::remove_dir_all(d);
    }
    (sets, (in_set * buf.len()) as f64 / MIB / secs, bytes as f64 / MIB / secs, secs)
}

fn main() {
    // `cargo bench` passes `--bench`; ignore arguments.
    let base = std::env::var_os("BENCH_DIR").map(PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::tempdir_in(&base).unwrap();
    let buf = data(OBJ);
    println!("embedded store benchmark: {} MiB objects, {ROUNDS} rounds, dir {}", OBJ >> 20, base.display());
    let (w, rh, rc, rf) = disk(tmp.path(), &buf);
    println!(
        "raw disk: write+fsync {w:.0} MiB/s | read hot {rh:.0} MiB/s (1 MiB buffer reused), \
         {rf:.0} MiB/s (fs::read into a fresh buffer) | read cold {rc:.0} MiB/s"
    );
    println!("MD5 (the S3 ETag, computed on every PUT): {:.0} MiB/s", md5_speed(&buf));
    for (n, p) in [(6, 2), (12, 4)] {
        let enc = encode_speed(n - p, p, &buf[..16 << 20]);
        let (put, gh, gc) = store_speed(tmp.path(), &[n], p, &buf);
        println!(
            "{}+{p}: RS encode {enc:.0} MiB/s | PUT {put:.0} MiB/s ({:.0}% of min(encode, disk write)) | \
             GET hot {gh:.0} MiB/s ({:.0}% of fs::read) | GET cold {gc:.0} MiB/s ({:.0}% of raw cold read)",
            n - p,
            100.0 * put / enc.min(w),
            100.0 * gh / rf,
            100.0 * gc / rc,
        );
    }
    // Erasure sets: 20 drives are 2 sets of 10 (6+4 each) beside one set of 10;
    // server pools: 2 pools of 10 drives (one set of 6+4 each; every PUT first
    // asks both pools for the key and weighs their free space).
    for (pools, what) in [
        (&[10][..], "10 drives = 1 set"),
        (&[20], "20 drives = 2 sets"),
        (&[10, 10], "2 pools x 10 drives = 2 sets"),
    ] {
        let (put, gh, gc) = store_speed(tmp.path(), pools, 4, &buf);
        println!("{what} of 6+4: PUT {put:.0} MiB/s | GET hot {gh:.0} MiB/s | GET cold {gc:.0} MiB/s");
    }
    for (pools, what) in [(&[10][..], "1 pool x 10 drives"), (&[10, 10], "2 pools x 10 drives")] {
        println!("{what}, 4 KiB PUTs of new keys: {:.0} objects/s", small_put_rate(tmp.path(), pools));
    }
    // Heal of a replaced drive (background, paced at monitor::HEAL_RATE).
    for n in [6, 20] {
        let (sets, obj, shard, secs) = heal_speed(tmp.path(), n, 8, &buf);
        println!(
            "heal of a replaced drive, {n} drives ({sets} set(s)), 8 x {} MiB objects: {secs:.2} s, \
             {obj:.0} MiB/s of its set's object data, {shard:.0} MiB/s written to the new drive",
            OBJ >> 20
        );
    }
}
