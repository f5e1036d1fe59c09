//! Which post keys may be in the index: a Bloom filter, so that a post seen
//! for the first time (nearly every post) is added without a delete of its
//! key, which tantivy would look up in every segment at the next commit. A
//! false positive (about 1 in 100) costs only that delete; a key that is in
//! the index always answers "maybe", so no post is ever doubled.

use std::hash::{BuildHasher, Hasher};

use tantivy::schema::Field;

/// Bits per key at capacity: with [`HASHES`], ~1% false positives.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// Keys a new filter holds at least (2.5 MiB of bits).
const MIN_CAPACITY: u64 = 2_000_000;

/// Fixed seeds: the same key sets the same bits in every process.
const SEEDS: [(u64, u64); 2] = [
    (0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344),
    (0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89),
];

/// A Bloom filter over keys; the sink rebuilds it twice as large (with
/// [`KnownKeys::of`]) after a commit once it holds its capacity.
pub struct KnownKeys {
    bits: Vec<u64>,
    inserted: u64,
    capacity: u64,
}

fn hash(seed: (u64, u64), key: &[u8]) -> u64 {
    let mut h = std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().build_hasher();
    h.write_u64(seed.0);
    h.write_u64(seed.1);
    h.write(key);
    h.finish()
}

impl KnownKeys {
    /// An empty filter for at least `keys` keys.
    pub fn with_capacity(keys: u64) -> KnownKeys {
        let capacity = keys.max(MIN_CAPACITY);
        let words = (capacity * BITS_PER_KEY).div_ceil(64) as usize;
        KnownKeys {
            bits: vec![0; words],
            inserted: 0,
            capacity,
        }
    }

    /// The filter of every key in `searcher`'s segments, with room for as
    /// many again.
    pub fn of(searcher: &tantivy::Searcher, field: Field) -> tantivy::Result<KnownKeys> {
        let docs: u64 = searcher.segment_readers().iter().map(|s| u64::from(s.max_doc())).sum();
        let mut known = KnownKeys::with_capacity(docs.saturating_mul(2));
        known.insert_all(searcher, field)?;
        Ok(known)
    }

    /// Adds every key in `searcher`'s segments.
    pub fn insert_all(&mut self, searcher: &tantivy::Searcher, field: Field) -> tantivy::Result<()> {
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(field)?;
            let mut terms = inverted.terms().stream()?;
            while terms.advance() {
                self.insert(terms.key());
            }
        }
        Ok(())
    }

    fn positions(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let (a, b) = (hash(SEEDS[0], key), hash(SEEDS[1], key) | 1);
        let bits = self.bits.len() as u64 * 64;
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % bits) as usize)
    }

    /// Remembers `key`.
    pub fn insert(&mut self, key: &[u8]) {
        for p in self.positions(key) {
            self.bits[p / 64] |= 1 << (p % 64);
        }
        self.inserted += 1;
    }

    /// Whether `key` may have been inserted (always true if it was).
    pub fn may_contain(&self, key: &[u8]) -> bool {
        self.positions(key).all(|p| self.bits[p / 64] & (1 << (p % 64)) != 0)
    }

    /// Whether it holds as many keys as it was sized for.
    pub fn full(&self) -> bool {
        self.inserted >= self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inserted_key_is_known_and_few_others_are() {
        let mut known = KnownKeys::with_capacity(100_000);
        for i in 0..100_000u32 {
            known.insert(format!("reddit\u{1f}t1_{i}").as_bytes());
        }
        assert!((0..100_000u32).all(|i| known.may_contain(format!("reddit\u{1f}t1_{i}").as_bytes())));
        // Sized for 2M keys, it holds 100k: false positives are rare.
        let false_positives = (0..100_000u32)
            .filter(|i| known.may_contain(format!("reddit\u{1f}x_{i}").as_bytes()))
            .count();
        assert!(false_positives < 100, "{false_positives}");
        assert!(!known.full());
    }
}
