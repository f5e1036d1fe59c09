//! Which post ids may be in the index: a Bloom filter, so that a post seen
//! for the first time (nearly every post) is added without a delete of its
//! (platform, id), which tantivy would look up in every segment at the next
//! commit. A false positive (about 1 in 100, or an id another platform
//! uses too) costs only that delete; an id that is in the index always
//! answers "maybe", so no post is ever doubled.

use tantivy::schema::Field;

/// Bits per key at capacity: with [`HASHES`], ~1% false positives.
const BITS_PER_KEY: u64 = 10;
const HASHES: u64 = 7;
/// Keys a new filter holds at least (2.5 MiB of bits; a thousand in unit
/// tests, so that they see it grow).
const MIN_CAPACITY: u64 = if cfg!(test) { 1_000 } else { 2_000_000 };

/// A fixed seed: the same key sets the same bits in every process.
const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// A Bloom filter over keys; the sink rebuilds it twice as large (with
/// [`KnownKeys::of`]) after a commit once it holds its capacity.
pub struct KnownKeys {
    bits: Vec<u64>,
    inserted: u64,
    capacity: u64,
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

    /// The bits of `key`: [`HASHES`] of them from the two halves of one
    /// 128-bit hash (double hashing).
    fn positions(&self, key: &[u8]) -> impl Iterator<Item = usize> + use<> {
        let h = xxhash_rust::xxh3::xxh3_128_with_seed(key, SEED);
        let (a, b) = (h as u64, (h >> 64) as u64 | 1);
        let bits = self.bits.len() as u64 * 64;
        (0..HASHES).map(move |i| (a.wrapping_add(i.wrapping_mul(b)) % bits) as usize)
    }

    /// Remembers `key`, and answers whether it may have been inserted
    /// before (always true if it was).
    pub fn insert(&mut self, key: &[u8]) -> bool {
        let mut known = true;
        for p in self.positions(key) {
            let (word, bit) = (&mut self.bits[p / 64], 1 << (p % 64));
            known &= *word & bit != 0;
            *word |= bit;
        }
        self.inserted += u64::from(!known);
        known
    }

    /// Keys it was sized for.
    #[cfg(test)]
    pub fn capacity(&self) -> u64 {
        self.capacity
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
        let mut known = KnownKeys::with_capacity(2_000_000);
        let key = |i: u32| format!("t1_{i}");
        // Sized for 2M keys, it holds 100k: false positives are rare.
        let false_positives = (0..100_000).filter(|i| known.insert(key(*i).as_bytes())).count();
        assert!(false_positives < 100, "{false_positives}");
        assert!((0..100_000).all(|i| known.insert(key(i).as_bytes())));
        assert!(!known.full());
    }
}
