//! The lexicon lookup structure both analyzers use per word.
//!
//! Most words of a comment are in no lexicon, and the rest are a few very
//! common ones, so a lookup must be cheap when it misses and touch little
//! memory when it hits. [`WordTable`] is an open-addressing table of 8-byte
//! slots (a hash tag and an index) over one key arena, with an 8 KiB bit
//! filter in front; the caller hashes the word with [`word_hash`] while it
//! lower-cases it, so the word is read once.

const K: u64 = 0xf135_7aea_2e62_a9c5;
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// The hash of a word's bytes: its length, then eight bytes at a time
/// (little-endian, zero-padded), multiply-rotate mixed and finished so that
/// the high bits are well mixed.
#[inline]
pub(crate) fn word_hash(bytes: &[u8]) -> u64 {
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    for chunk in bytes.chunks(8) {
        h = mix(h, load(chunk));
    }
    finish(h)
}

#[inline]
fn mix(h: u64, chunk: u64) -> u64 {
    (h.rotate_left(5) ^ chunk).wrapping_mul(K)
}

#[inline]
fn finish(h: u64) -> u64 {
    let h = h ^ (h >> 29);
    h.wrapping_mul(0xbf58_476d_1ce4_e5b9) ^ (h >> 32)
}

/// Up to eight bytes as a little-endian number, zero-padded.
#[inline]
fn load(chunk: &[u8]) -> u64 {
    // Two overlapping loads instead of a variable-length copy; bytes read
    // twice land on the same place.
    let n = chunk.len();
    // Single loads of 8, 4 or 2 bytes (the slices have those lengths).
    let u32_at = |k: usize| u64::from(u32::from_le_bytes(chunk[k..k + 4].try_into().unwrap_or([0; 4])));
    let u16_at = |k: usize| u64::from(u16::from_le_bytes(chunk[k..k + 2].try_into().unwrap_or([0; 2])));
    match n {
        8.. => u64::from_le_bytes(chunk[..8].try_into().unwrap_or([0; 8])),
        4..=7 => u32_at(0) | u32_at(n - 4) << (8 * (n - 4)),
        2..=3 => u16_at(0) | u16_at(n - 2) << (8 * (n - 2)),
        1 => u64::from(chunk[0]),
        0 => 0,
    }
}

/// Bits 0x80 of each byte of `x` (ASCII only) that lies in `lo..=hi`.
#[inline]
fn in_range(x: u64, lo: u8, hi: u8) -> u64 {
    let ge_lo = x.wrapping_add(ONES * u64::from(0x80 - lo));
    let gt_hi = x.wrapping_add(ONES * u64::from(0x80 - hi - 1));
    ge_lo & !gt_hi & HIGHS
}

/// What the analyzers need to know about an ASCII word, from one pass over
/// it eight bytes at a time.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AsciiWord {
    /// [`word_hash`] of the lower-cased word.
    pub hash: u64,
    /// It has an upper-case letter.
    pub has_upper: bool,
    /// It has a lower-case letter.
    pub has_lower: bool,
    /// It has an apostrophe.
    pub has_apostrophe: bool,
}

/// Folds an ASCII word (`None` if it is not ASCII).
#[inline]
pub(crate) fn fold_ascii(bytes: &[u8]) -> Option<AsciiWord> {
    let mut h = (bytes.len() as u64).wrapping_mul(K);
    let (mut upper, mut lower, mut apostrophe, mut high) = (0u64, 0u64, 0u64, 0u64);
    for chunk in bytes.chunks(8) {
        let x = load(chunk);
        high |= x & HIGHS;
        let up = in_range(x, b'A', b'Z');
        upper |= up;
        lower |= in_range(x, b'a', b'z');
        // A zero byte in x ^ "''" is an apostrophe (padding is 0, not 0x27).
        let v = x ^ (ONES * 0x27);
        apostrophe |= v.wrapping_sub(ONES) & !v & HIGHS;
        h = mix(h, x | (up >> 2));
    }
    (high == 0).then(|| AsciiWord {
        hash: finish(h),
        has_upper: upper != 0,
        has_lower: lower != 0,
        has_apostrophe: apostrophe != 0,
    })
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

    /// The index of the entry whose key `is_key` accepts, among those
    /// with hash `h`.
    #[inline(always)]
    fn probe(&self, h: u64, is_key: impl Fn(&[u8]) -> bool) -> Option<usize> {
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
                if is_key(&self.keys.as_bytes()[a as usize..b as usize]) {
                    return Some(index as usize - 1);
                }
            }
            slot = (slot + 1) & self.mask;
        }
    }

    fn find(&self, key: &str, h: u64) -> Option<usize> {
        self.probe(h, |k| k == key.as_bytes())
    }

    /// The value of the lower case of the ASCII word `word`, whose
    /// lower case has [`word_hash`] `h`.
    #[inline]
    pub(crate) fn get_hashed_ascii_lower(&self, word: &[u8], h: u64) -> Option<V> {
        let is_key = |k: &[u8]| k.len() == word.len() && k.iter().zip(word).all(|(&k, &w)| k == w.to_ascii_lowercase());
        self.probe(h, is_key).map(|i| self.entries[i].2)
    }

    /// The value of `key`, whose [`word_hash`] is `h`.
    #[inline]
    pub(crate) fn get_hashed(&self, key: &str, h: u64) -> Option<V> {
        self.find(key, h).map(|i| self.entries[i].2)
    }

    /// The value of `key`.
    #[cfg(test)]
    pub(crate) fn get(&self, key: &str) -> Option<V> {
        self.get_hashed(key, word_hash(key.as_bytes()))
    }

    /// Every key with its value.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, V)> {
        self.entries
            .iter()
            .map(|&(a, b, v)| (&self.keys[a as usize..b as usize], v))
    }

    /// Number of keys.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

/// Appends `word` lower-cased as Python's `str.lower()` does to `out`, and
/// returns the [`word_hash`] of what it appended.
#[inline]
pub(crate) fn push_lower_hashed(word: &str, out: &mut String) -> u64 {
    let start = out.len();
    if let Some(folded) = fold_ascii(word.as_bytes()) {
        out.push_str(word);
        if folded.has_upper {
            out[start..].make_ascii_lowercase();
        }
        return folded.hash;
    }
    out.push_str(&super::pystr::py_lower(word));
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
    fn fold_ascii_is_exact() {
        for w in [
            "",
            "a",
            "GOOD",
            "don't",
            "MiXeD-Case_123!",
            "abcdefghABCDEFGH'ijklmnop",
            "@[`{",
        ] {
            let f = fold_ascii(w.as_bytes()).unwrap();
            assert_eq!(f.hash, word_hash(w.to_ascii_lowercase().as_bytes()), "{w}");
            assert_eq!(f.has_upper, w.bytes().any(|b| b.is_ascii_uppercase()), "{w}");
            assert_eq!(f.has_lower, w.bytes().any(|b| b.is_ascii_lowercase()), "{w}");
            assert_eq!(f.has_apostrophe, w.contains('\''), "{w}");
        }
        assert_eq!(fold_ascii("é".as_bytes()), None);
        // Every ASCII byte alone.
        for b in 0u8..128 {
            let f = fold_ascii(&[b]).unwrap();
            assert_eq!(f.has_upper, b.is_ascii_uppercase(), "{b}");
            assert_eq!(f.has_lower, b.is_ascii_lowercase(), "{b}");
            assert_eq!(f.hash, word_hash(&[b.to_ascii_lowercase()]), "{b}");
        }
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
