//! SipHash-2-4, used only to pick an object's erasure set.
//!
//! Why SipHash and not the xxh3 used elsewhere: the set of a key is part of the
//! on-disk format (a reader must find the object where the writer put it), and
//! MinIO picks sets with SipHash-2-4 of the key keyed with the 16 bytes of the
//! deployment id. Doing the same keeps the placement rule one that is already
//! documented and analysed, and the key makes the placement differ between
//! deployments (a crafted set of keys cannot pile onto one set everywhere).
//! Why hand-written: `std::hash::SipHasher` is deprecated and the function is
//! twenty lines; a crate would add a dependency for that. Checked against the
//! reference vectors of the SipHash paper below.

#[inline]
fn round(v: &mut [u64; 4]) {
    v[0] = v[0].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(13) ^ v[0];
    v[0] = v[0].rotate_left(32);
    v[2] = v[2].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(16) ^ v[2];
    v[0] = v[0].wrapping_add(v[3]);
    v[3] = v[3].rotate_left(21) ^ v[0];
    v[2] = v[2].wrapping_add(v[1]);
    v[1] = v[1].rotate_left(17) ^ v[2];
    v[2] = v[2].rotate_left(32);
}

/// SipHash-2-4 of `msg` under the 128-bit key `(k0, k1)` (little-endian halves).
pub fn siphash24(k0: u64, k1: u64, msg: &[u8]) -> u64 {
    let mut v = [
        k0 ^ 0x736f_6d65_7073_6575,
        k1 ^ 0x646f_7261_6e64_6f6d,
        k0 ^ 0x6c79_6765_6e65_7261,
        k1 ^ 0x7465_6462_7974_6573,
    ];
    let mut chunks = msg.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8-byte chunk"));
        v[3] ^= m;
        round(&mut v);
        round(&mut v);
        v[0] ^= m;
    }
    let mut last = [0u8; 8];
    let rest = chunks.remainder();
    last[..rest.len()].copy_from_slice(rest);
    last[7] = msg.len() as u8;
    let m = u64::from_le_bytes(last);
    v[3] ^= m;
    round(&mut v);
    round(&mut v);
    v[0] ^= m;
    v[2] ^= 0xff;
    for _ in 0..4 {
        round(&mut v);
    }
    v[0] ^ v[1] ^ v[2] ^ v[3]
}

/// The set of `key` among `sets`: SipHash-2-4 keyed with the deployment id's 16
/// bytes, modulo the number of sets (MinIO's `sipHashMod`).
pub fn set_of(key: &str, sets: usize, deployment_key: [u8; 16]) -> usize {
    if sets <= 1 {
        return 0;
    }
    let k0 = u64::from_le_bytes(deployment_key[..8].try_into().expect("8 bytes"));
    let k1 = u64::from_le_bytes(deployment_key[8..].try_into().expect("8 bytes"));
    (siphash24(k0, k1, key.as_bytes()) % sets as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors from the SipHash paper (appendix A) and its reference `vectors.h`:
    /// key 00..0f, messages 00, 00 01, ... of growing length.
    #[test]
    fn reference_vectors() {
        let k: Vec<u8> = (0u8..16).collect();
        let k0 = u64::from_le_bytes(k[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(k[8..].try_into().unwrap());
        let msg: Vec<u8> = (0u8..64).collect();
        assert_eq!(siphash24(k0, k1, &msg[..0]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(k0, k1, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(k0, k1, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(k0, k1, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[test]
    fn one_set_is_always_zero() {
        assert_eq!(set_of("anything", 1, [7; 16]), 0);
    }
}
