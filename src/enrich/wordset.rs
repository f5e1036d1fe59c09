//! A compact pre-filter in front of the lexicon hash maps: most words of a
//! comment are in no lexicon, and answering "certainly not" from an 8 KiB
//! bit table is much cheaper than a hash-map probe that misses the cache.

/// A Bloom-style filter over words with one cheap probe: no false
/// negatives, a few false positives (which the real lookup then rejects).
pub(crate) struct WordFilter {
    bits: Box<[u64; 1024]>,
}

impl WordFilter {
    /// A filter that admits every word of `words`.
    pub(crate) fn new<'a>(words: impl IntoIterator<Item = &'a str>) -> WordFilter {
        let mut bits = Box::new([0u64; 1024]);
        for w in words {
            let h = Self::slot(w);
            bits[h >> 6] |= 1 << (h & 63);
        }
        WordFilter { bits }
    }

    /// Whether `w` may be one of the words.
    #[inline]
    pub(crate) fn may_contain(&self, w: &str) -> bool {
        let h = Self::slot(w);
        self.bits[h >> 6] & (1 << (h & 63)) != 0
    }

    /// 16 bits from the length and the first, second and last bytes.
    #[inline]
    fn slot(w: &str) -> usize {
        let b = w.as_bytes();
        let (first, second, last) = match b {
            [] => (0, 0, 0),
            [x] => (*x, 0, *x),
            [x, y] => (*x, *y, *y),
            [x, y, .., z] => (*x, *y, *z),
        };
        let h = (u64::from(first) << 24 | u64::from(second) << 16 | u64::from(last) << 8 | (b.len() as u64 & 0xff))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        (h >> 48) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::WordFilter;

    #[test]
    fn admits_every_member_and_rejects_most_others() {
        let words = ["good", "bad", "terribly", "f*cking", ":)", "a"];
        let f = WordFilter::new(words);
        assert!(words.iter().all(|w| f.may_contain(w)));
        let others = ["the", "and", "people", "reddit", "comment", "this", "that", "with"];
        assert!(others.iter().filter(|w| f.may_contain(w)).count() <= 1);
    }
}
