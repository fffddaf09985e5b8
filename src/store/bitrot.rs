//! Bitrot protection of shard files.
//!
//! A shard file (and an inline shard) is a sequence of frames, one per erasure
//! block: `[xxh3-128 of chunk, 16 bytes little endian][chunk]`. Chunks are
//! `ceil(BLOCK_SIZE / data)` bytes except the last one, so the frame of block
//! `b` starts at `b * (16 + full_chunk)` and a range read seeks straight to it.
//! xxh3-128 is used instead of MinIO's HighwayHash-256 because it is about twice
//! as fast here (23-26 GB/s vs 12-13 GB/s) and bitrot detection needs no
//! cryptographic strength, only a negligible chance of a random collision.

use xxhash_rust::xxh3::xxh3_128;

use super::erasure::BLOCK_SIZE;

pub const HASH_LEN: usize = 16;

pub fn hash(chunk: &[u8]) -> [u8; HASH_LEN] {
    xxh3_128(chunk).to_le_bytes()
}

/// Returns the chunk of a frame if its hash matches.
pub fn verify(frame: &[u8]) -> Option<&[u8]> {
    if frame.len() < HASH_LEN {
        return None;
    }
    let (h, chunk) = frame.split_at(HASH_LEN);
    (h == hash(chunk)).then_some(chunk)
}

/// Block geometry of one erasure-coded part of `size` bytes over `data` shards.
#[derive(Clone, Copy, Debug)]
pub struct PartLayout {
    pub size: u64,
    pub data: usize,
}

impl PartLayout {
    pub fn blocks(&self) -> u64 {
        self.size.div_ceil(BLOCK_SIZE as u64)
    }
    pub fn block_len(&self, b: u64) -> usize {
        let start = b * BLOCK_SIZE as u64;
        (self.size - start).min(BLOCK_SIZE as u64) as usize
    }
    pub fn chunk_len(&self, b: u64) -> usize {
        self.block_len(b).div_ceil(self.data)
    }
    fn full_frame(&self) -> u64 {
        (HASH_LEN + BLOCK_SIZE.div_ceil(self.data)) as u64
    }
    /// Offset of block `b`'s frame in the shard file.
    pub fn frame_offset(&self, b: u64) -> u64 {
        b * self.full_frame()
    }
    pub fn frame_len(&self, b: u64) -> usize {
        HASH_LEN + self.chunk_len(b)
    }
    /// Size of every shard file of this part.
    pub fn shard_file_size(&self) -> u64 {
        match self.blocks() {
            0 => 0,
            n => (n - 1) * self.full_frame() + self.frame_len(n - 1) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_verify_and_detect_flips() {
        let chunk = b"hello shard".to_vec();
        let mut frame = hash(&chunk).to_vec();
        frame.extend_from_slice(&chunk);
        assert_eq!(verify(&frame), Some(&chunk[..]));
        frame[HASH_LEN + 3] ^= 1;
        assert_eq!(verify(&frame), None);
    }

    #[test]
    fn layout_math() {
        let l = PartLayout { size: BLOCK_SIZE as u64 + 1, data: 4 };
        assert_eq!(l.blocks(), 2);
        assert_eq!(l.chunk_len(0), BLOCK_SIZE / 4);
        assert_eq!(l.chunk_len(1), 1);
        assert_eq!(l.frame_offset(1), (HASH_LEN + BLOCK_SIZE / 4) as u64);
        assert_eq!(l.shard_file_size(), (2 * HASH_LEN + BLOCK_SIZE / 4 + 1) as u64);
        assert_eq!(PartLayout { size: 0, data: 3 }.shard_file_size(), 0);
    }
}
