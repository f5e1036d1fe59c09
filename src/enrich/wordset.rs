//! The lexicon lookup structure both analyzers use per word.
//!
//! Most words of a comment are in no lexicon, and the rest are a few very
//! common ones, so a lookup must be cheap when it misses and touch little
//! memory when it hits. [`WordTable`] is an open-addressing table of 8-byte
//! slots (a hash tag and an index) over one key arena, with an 8 KiB bit
//! filter in front; the caller hashes the word with [`word_hash`] while it
//! lower-cases it, so the word is read once.

/// The hash of a word's bytes (FxHash-style, one byte at a time: words are
/// short), finished so that its high bits are well mixed.
#[inline]
pub(crate) fn word_hash(bytes: &[u8]) -> u64 {
    let mut h = HashState::default();
    for &b in bytes {
        h.push(b);
    }
    h.finish()
}

/// An incremental [`word_hash`], for hashing while copying.
#[derive(Default, Clone, Copy)]
pub(crate) struct HashState(u64);

impl HashState {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    /// Adds one byte.
    #[inline]
    pub(crate) fn push(&mut self, b: u8) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(Self::K);
    }

    /// The hash of the bytes pushed so far.
    #[inline]
    pub(crate) fn finish(self) -> u64 {
        let h = self.0 ^ (self.0 >> 29);
        h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
    }
}

/// A read-only map from words to small `Copy` values.
pub(crate) struct WordTable<V> {
    /// `(tag, index + 1)`; index 0 marks an empty slot.
    slots: Box<[(u32, u32)]>,
    mask: usize,
    /// Bit filter over the hashes: no false negatives.
    filter: Box<[u64; 1024]>,
    keys: String,
    /// `(key start, key end, value)`.
    entries: Vec<(u32, u32, V)>,
}

impl<V: Copy> WordTable<V> {
    /// Builds the table; a later duplicate key replaces the earlier value.
    pub(crate) fn new<'a>(items: impl IntoIterator<Item = (&'a str, V)>) -> WordTable<V> {
        let mut table = WordTable {
            slots: Box::new([]),
            mask: 0,
            filter: Box::new([0u64; 1024]),
            keys: String::new(),
            entries: Vec::new(),
        };
        let items: Vec<(&str, V)> = items.into_iter().collect();
        let capacity = (items.len() * 2).next_power_of_two().max(16);
        table.slots = vec![(0u32, 0u32); capacity].into_boxed_slice();
        table.mask = capacity - 1;
        for (key, value) in items {
            table.insert(key, value);
        }
        table
    }

    fn tag(h: u64) -> u32 {
        // Never 0, so that a tag of 0 can mean "empty".
        (h >> 32) as u32 | 1
    }

    fn insert(&mut self, key: &str, value: V) {
        let h = word_hash(key.as_bytes());
        if let Some(index) = self.find(key, h) {
            self.entries[index].2 = value;
            return;
        }
        let bit = (h >> 48) as usize;
        self.filter[bit >> 6] |= 1 << (bit & 63);
        let start = self.keys.len() as u32;
        self.keys.push_str(key);
        self.entries.push((start, self.keys.len() as u32, value));
        let mut slot = h as usize & self.mask;
        while self.slots[slot].1 != 0 {
            slot = (slot + 1) & self.mask;
        }
        self.slots[slot] = (Self::tag(h), self.entries.len() as u32);
    }

    fn find(&self, key: &str, h: u64) -> Option<usize> {
        let bit = (h >> 48) as usize;
        if self.filter[bit >> 6] & (1 << (bit & 63)) == 0 {
            return None;
        }
        let tag = Self::tag(h);
        let mut slot = h as usize & self.mask;
        loop {
            let (t, index) = self.slots[slot];
            if index == 0 {
                return None;
            }
            if t == tag {
                let (a, b, _) = self.entries[index as usize - 1];
                if &self.keys[a as usize..b as usize] == key {
                    return Some(index as usize - 1);
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }

    /// The value of `key`, whose [`word_hash`] is `h`.
    #[inline]
    pub(crate) fn get_hashed(&self, key: &str, h: u64) -> Option<V> {
        self.find(key, h).map(|i| self.entries[i].2)
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.get_hashed(key, word_hash(key.as_bytes()))
    }

    /// Every key with its value.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, V)> {
        self.entries
            .iter()
            .map(|&(a, b, v)| (&self.keys[a as usize..b as usize], v))
    }

    /// Number of keys.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Appends `word` lower-cased as Python's `str.lower()` does to `out`, and
/// returns the [`word_hash`] of what it appended.
#[inline]
pub(crate) fn push_lower_hashed(word: &str, out: &mut String) -> u64 {
    let start = out.len();
    if word.is_ascii() {
        out.push_str(word);
        out[start..].make_ascii_lowercase();
    } else {
        out.push_str(&word.to_lowercase());
    }
    word_hash(&out.as_bytes()[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_key_and_nothing_else() {
        let words = ["good", "bad", "terribly", "f*cking", ":)", "a", "", "bad"];
        let table = WordTable::new(words.iter().enumerate().map(|(i, w)| (*w, i)));
        assert_eq!(table.len(), 7);
        assert_eq!(table.get("good"), Some(0));
        assert_eq!(table.get("bad"), Some(7), "a later duplicate replaces the value");
        assert_eq!(table.get(""), Some(6));
        assert_eq!(table.get(":)"), Some(4));
        for other in ["the", "and", "goo", "goodd", "Good", "ba"] {
            assert_eq!(table.get(other), None, "{other}");
        }
        let big: Vec<String> = (0..20_000).map(|i| format!("w{i}")).collect();
        let table = WordTable::new(big.iter().map(|w| (w.as_str(), w.len())));
        assert!(big.iter().all(|w| table.get(w) == Some(w.len())));
        assert_eq!(table.get("w20000"), None);
    }

    #[test]
    fn lower_hashed_matches_word_hash_of_lowercase() {
        let mut out = String::new();
        for w in ["GOOD", "good", "ÉTÉ", "\u{212a}ind", "MiXeD"] {
            out.clear();
            let h = push_lower_hashed(w, &mut out);
            assert_eq!(out, w.to_lowercase());
            assert_eq!(h, word_hash(out.as_bytes()));
        }
    }
}
