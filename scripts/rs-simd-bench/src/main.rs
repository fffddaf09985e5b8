//! Encode and reconstruct speed of reed-solomon-erasure alone, for the erasure-code
//! SIMD baseline (BENCHMARKS.md). Prints MiB/s of data for the store's usual layouts.

use reed_solomon_erasure::galois_8::ReedSolomon;
use std::time::Instant;

fn main() {
    let arch = std::env::var("RUST_REED_SOLOMON_ERASURE_ARCH").unwrap_or_else(|_| "(config)".into());
    for (data, parity) in [(2usize, 2usize), (6, 4), (12, 4)] {
        let rs = ReedSolomon::new(data, parity).expect("valid layout");
        let shard = (1 << 20) / data; // 1 MiB of data per call, as a store block
        let mut shards: Vec<Vec<u8>> =
            (0..data + parity).map(|i| (0..shard).map(|j| (i * 31 + j * 7) as u8).collect()).collect();
        let rounds = 256;
        let t = Instant::now();
        for _ in 0..rounds {
            rs.encode(&mut shards).expect("encode");
        }
        let encode = rounds as f64 / t.elapsed().as_secs_f64();
        let mut lost: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        let t = Instant::now();
        for _ in 0..rounds / 4 {
            for s in lost.iter_mut().take(parity) {
                *s = None;
            }
            rs.reconstruct(&mut lost).expect("reconstruct");
        }
        let rebuild = (rounds / 4) as f64 / t.elapsed().as_secs_f64();
        println!("{arch} {data}+{parity}: encode {encode:.0} MiB/s, rebuild {parity} lost {rebuild:.0} MiB/s");
    }
}
