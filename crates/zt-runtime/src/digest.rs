//! Hashing of keys that are digests already (128-bit SipHash or similar): the sink's and
//! ingest's deduplication windows key their sets by such digests, and hashing them again
//! with SipHash would only cost time.

use std::hash::{BuildHasherDefault, Hasher};

/// The hasher of keys that are digests already: a `u128` key hashes to its low 64 bits.
#[derive(Debug, Default, Clone, Copy)]
pub struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u128` is meant to be used; FNV-1a for anything else.
        for b in bytes {
            self.0 = (self.0 ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u128(&mut self, k: u128) {
        self.0 = k as u64;
    }
}

/// A `HashMap`/`HashSet` hasher builder for digest keys.
pub type BuildDigestHasher = BuildHasherDefault<DigestHasher>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn a_digest_hashes_to_its_low_bits() {
        let b = BuildDigestHasher::default();
        assert_eq!(b.hash_one(0x1234_u128 << 64 | 0xabcd), 0xabcd);
        assert_ne!(b.hash_one("a"), b.hash_one("b"));
    }
}
