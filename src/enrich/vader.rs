//! vaderSentiment 3.3.2 `SentimentIntensityAnalyzer.polarity_scores`,
//! reimplemented to give the same four doubles on CPython 3.12, quirks
//! included:
//!
//! * emoji characters are replaced by their description before anything
//!   else (only single-code-point keys of the emoji lexicon can match, as in
//!   the reference's per-character loop);
//! * tokens are whitespace-split and stripped of ASCII punctuation unless
//!   that leaves two characters or fewer;
//! * the `but` rule rescales sentiments by looking each value up with
//!   `list.index`, so equal values earlier in the list are the ones rescaled;
//! * the sentiment list mixes Python ints and floats, summed with CPython
//!   3.12's compensated `sum()`;
//! * neg/neu/pos are rounded to 3 and compound to 4 decimals with Python's
//!   correctly rounded `round()`.

use std::sync::OnceLock;

use rustc_hash::FxHashMap;

use super::pyfloat::{PyNum, PySum, py_round};
use super::pystr::{is_py_space, py_isupper};
use super::wordset::{WordTable, fold_ascii, push_lower_hashed};

const LEXICON: &str = include_str!("../../data/lexicons/vader_lexicon.txt");
const EMOJI_LEXICON: &str = include_str!("../../data/lexicons/emoji_utf8_lexicon.txt");

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

#[rustfmt::skip]
const NEGATE: &[&str] = &[
    "aint", "arent", "cannot", "cant", "couldnt", "darent", "didnt", "doesnt", "ain't", "aren't",
    "can't", "couldn't", "daren't", "didn't", "doesn't", "dont", "hadnt", "hasnt", "havent", "isnt",
    "mightnt", "mustnt", "neither", "don't", "hadn't", "hasn't", "haven't", "isn't", "mightn't",
    "mustn't", "neednt", "needn't", "never", "none", "nope", "nor", "not", "nothing", "nowhere",
    "oughtnt", "shant", "shouldnt", "uhuh", "wasnt", "werent", "oughtn't", "shan't", "shouldn't",
    "uh-uh", "wasn't", "weren't", "without", "wont", "wouldnt", "won't", "wouldn't", "rarely",
    "seldom", "despite",
];

/// Boosters and dampeners (`BOOSTER_DICT`). The two-word ones only ever
/// match as n-grams in the idiom check.
#[rustfmt::skip]
const BOOSTERS: &[(&str, f64)] = &[
    ("absolutely", B_INCR), ("amazingly", B_INCR), ("awfully", B_INCR), ("completely", B_INCR),
    ("considerable", B_INCR), ("considerably", B_INCR), ("decidedly", B_INCR), ("deeply", B_INCR),
    ("effing", B_INCR), ("enormous", B_INCR), ("enormously", B_INCR), ("entirely", B_INCR),
    ("especially", B_INCR), ("exceptional", B_INCR), ("exceptionally", B_INCR), ("extreme", B_INCR),
    ("extremely", B_INCR), ("fabulously", B_INCR), ("flipping", B_INCR), ("flippin", B_INCR),
    ("frackin", B_INCR), ("fracking", B_INCR), ("fricking", B_INCR), ("frickin", B_INCR),
    ("frigging", B_INCR), ("friggin", B_INCR), ("fully", B_INCR), ("fuckin", B_INCR),
    ("fucking", B_INCR), ("fuggin", B_INCR), ("fugging", B_INCR), ("greatly", B_INCR),
    ("hella", B_INCR), ("highly", B_INCR), ("hugely", B_INCR), ("incredible", B_INCR),
    ("incredibly", B_INCR), ("intensely", B_INCR), ("major", B_INCR), ("majorly", B_INCR),
    ("more", B_INCR), ("most", B_INCR), ("particularly", B_INCR), ("purely", B_INCR),
    ("quite", B_INCR), ("really", B_INCR), ("remarkably", B_INCR), ("so", B_INCR),
    ("substantially", B_INCR), ("thoroughly", B_INCR), ("total", B_INCR), ("totally", B_INCR),
    ("tremendous", B_INCR), ("tremendously", B_INCR), ("uber", B_INCR), ("unbelievably", B_INCR),
    ("unusually", B_INCR), ("utter", B_INCR), ("utterly", B_INCR), ("very", B_INCR),
    ("almost", B_DECR), ("barely", B_DECR), ("hardly", B_DECR), ("just enough", B_DECR),
    ("kind of", B_DECR), ("kinda", B_DECR), ("kindof", B_DECR), ("kind-of", B_DECR),
    ("less", B_DECR), ("little", B_DECR), ("marginal", B_DECR), ("marginally", B_DECR),
    ("occasional", B_DECR), ("occasionally", B_DECR), ("partly", B_DECR), ("scarce", B_DECR),
    ("scarcely", B_DECR), ("slight", B_DECR), ("slightly", B_DECR), ("somewhat", B_DECR),
    ("sort of", B_DECR), ("sorta", B_DECR), ("sortof", B_DECR), ("sort-of", B_DECR),
];

/// The boosters of two words, as word pairs.
const TWO_WORD_BOOSTERS: &[([&str; 2], f64)] = &[
    (["just", "enough"], B_DECR),
    (["kind", "of"], B_DECR),
    (["sort", "of"], B_DECR),
];

/// Idioms that set the valence outright (`SPECIAL_CASES`), as word
/// sequences; the integer ones stay Python ints, which matters to `sum()`.
#[rustfmt::skip]
const SPECIAL_CASES: &[(&[&str], PyNum)] = &[
    (&["the", "shit"], PyNum::Int(3)),
    (&["the", "bomb"], PyNum::Int(3)),
    (&["bad", "ass"], PyNum::Float(1.5)),
    (&["badass"], PyNum::Float(1.5)),
    (&["bus", "stop"], PyNum::Float(0.0)),
    (&["yeah", "right"], PyNum::Int(-2)),
    (&["kiss", "of", "death"], PyNum::Float(-1.5)),
    (&["to", "die", "for"], PyNum::Int(3)),
    (&["beating", "heart"], PyNum::Float(3.5)),
];

/// VADER's four scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct VaderScores {
    /// Share of negative sentiment, rounded to 3 decimals.
    pub neg: f64,
    /// Share of neutral words, rounded to 3 decimals.
    pub neu: f64,
    /// Share of positive sentiment, rounded to 3 decimals.
    pub pos: f64,
    /// Normalised sum of valences in [-1, 1], rounded to 4 decimals.
    pub compound: f64,
}

/// What the rules need to know about a lower-cased word, in 16 bytes
/// (a token is one of these, so the per-text token list stays small).
#[derive(Clone, Copy, Debug)]
struct WordInfo {
    /// The lexicon valence; NaN when the word is not in the lexicon.
    valence: f64,
    /// Which of the words the rules test for this one is (`flag::*`).
    flags: u16,
    /// +1 for a booster (`B_INCR`), -1 for a dampener (`B_DECR`), else 0.
    booster: i8,
    negation: bool,
    /// For an `IDIOM` word, its index in `flag::WORDS`.
    id: u8,
    /// For a token: `str.isupper()` of the word as written.
    upper: bool,
}

impl Default for WordInfo {
    fn default() -> Self {
        WordInfo {
            valence: f64::NAN,
            flags: 0,
            booster: 0,
            negation: false,
            id: 0,
            upper: false,
        }
    }
}

impl WordInfo {
    fn valence(&self) -> Option<f64> {
        (!self.valence.is_nan()).then_some(self.valence)
    }

    fn booster(&self) -> Option<f64> {
        match self.booster {
            1 => Some(B_INCR),
            -1 => Some(B_DECR),
            _ => None,
        }
    }
}

/// The VADER analyzer: its word lexicon and emoji lexicon.
/// Build it once per process with [`Vader::global`].
pub struct Vader {
    words: WordTable<WordInfo>,
    emojis: FxHashMap<char, Box<str>>,
    /// Whether some emoji key is ASCII (then ASCII text needs the scan too).
    ascii_emoji: bool,
}

/// Errors in the lexicon files (only reachable with a damaged build).
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// A line that is not `word<TAB>measure…`.
    #[error("{file} line {line}: {reason}")]
    Line {
        /// The lexicon file.
        file: &'static str,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

/// One token: what the rules ask of it, computed once.
type Token = WordInfo;

/// Words the rules compare tokens with, as bits of `WordInfo::flags`.
mod flag {
    pub const NO: u16 = 1;
    pub const OR_NOR: u16 = 1 << 1;
    pub const NEVER: u16 = 1 << 2;
    pub const SO_THIS: u16 = 1 << 3;
    pub const WITHOUT: u16 = 1 << 4;
    pub const DOUBT: u16 = 1 << 5;
    pub const LEAST: u16 = 1 << 6;
    pub const AT_VERY: u16 = 1 << 7;
    pub const BUT: u16 = 1 << 8;
    pub const KIND: u16 = 1 << 9;
    pub const OF: u16 = 1 << 10;
    /// A word of a special-case idiom or of a two-word booster.
    pub const IDIOM: u16 = 1 << 11;
    /// The last word of a special-case idiom.
    pub const IDIOM_END: u16 = 1 << 12;
    /// The last word of a two-word booster.
    pub const BOOSTER_END: u16 = 1 << 13;

    /// The words that have flags, with their flags.
    pub const WORDS: &[(&str, u16)] = &[
        ("no", NO),
        ("or", OR_NOR),
        ("nor", OR_NOR),
        ("never", NEVER),
        ("so", SO_THIS),
        ("this", SO_THIS),
        ("without", WITHOUT),
        ("doubt", DOUBT),
        ("least", LEAST),
        ("at", AT_VERY),
        ("very", AT_VERY),
        ("but", BUT),
        ("kind", KIND | IDIOM),
        ("of", OF | IDIOM | BOOSTER_END),
        ("the", IDIOM),
        ("shit", IDIOM | IDIOM_END),
        ("bomb", IDIOM | IDIOM_END),
        ("bad", IDIOM),
        ("ass", IDIOM | IDIOM_END),
        ("bus", IDIOM),
        ("stop", IDIOM | IDIOM_END),
        ("yeah", IDIOM),
        ("right", IDIOM | IDIOM_END),
        ("kiss", IDIOM),
        ("death", IDIOM | IDIOM_END),
        ("to", IDIOM),
        ("die", IDIOM),
        ("for", IDIOM | IDIOM_END),
        ("beating", IDIOM),
        ("heart", IDIOM | IDIOM_END),
        ("just", IDIOM),
        ("enough", IDIOM | BOOSTER_END),
        ("sort", IDIOM),
    ];
}

/// The tokens of one text, and buffers reused from text to text.
#[derive(Default)]
struct Tokens {
    tokens: Vec<Token>,
    /// How many `!` and `?` the text has.
    exclamations: usize,
    questions: usize,
    /// A non-ASCII word lower-cased.
    lower: String,
    sentiments: Vec<PyNum>,
    emoji_free: String,
}

impl Tokens {
    fn len(&self) -> usize {
        self.tokens.len()
    }

    fn is(&self, k: usize, flag: u16) -> bool {
        self.tokens[k].flags & flag != 0
    }

    fn in_lexicon(&self, k: usize) -> bool {
        !self.tokens[k].valence.is_nan()
    }

    /// Whether the lower-cased words at `at..` are `words` (all of which
    /// are `IDIOM` words).
    fn words_are(&self, at: usize, words: &[&str]) -> bool {
        at + words.len() <= self.len()
            && words.iter().enumerate().all(|(k, w)| {
                let info = self.tokens[at + k];
                info.flags & flag::IDIOM != 0 && flag::WORDS[usize::from(info.id)].0 == *w
            })
    }
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Tokens> = std::cell::RefCell::default();
}

impl Vader {
    /// The process-wide analyzer, built from the embedded lexicons on first use.
    pub fn global() -> &'static Vader {
        static GLOBAL: OnceLock<Vader> = OnceLock::new();
        // The embedded lexicons are checked by the tests; failing here means
        // the binary itself is damaged.
        GLOBAL.get_or_init(|| Vader::from_lexicons(LEXICON, EMOJI_LEXICON).expect("embedded VADER lexicons are valid"))
    }

    /// Builds the analyzer from the texts of `vader_lexicon.txt` and
    /// `emoji_utf8_lexicon.txt`.
    pub fn from_lexicons(lexicon: &str, emoji_lexicon: &str) -> Result<Vader, LexiconError> {
        let mut words: FxHashMap<Box<str>, WordInfo> = FxHashMap::default();
        for (n, line) in lexicon.trim_end_matches('\n').split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let err = |reason: String| LexiconError::Line {
                file: "vader_lexicon.txt",
                line: n + 1,
                reason,
            };
            let mut fields = line.trim_matches(is_py_space).split('\t');
            let (Some(word), Some(measure)) = (fields.next(), fields.next()) else {
                return Err(err("no tab".into()));
            };
            let value = measure
                .trim_matches(is_py_space)
                .parse::<f64>()
                .map_err(|e| err(e.to_string()))?;
            if value.is_nan() {
                return Err(err("the valence is NaN".into()));
            }
            words.entry(word.into()).or_default().valence = value;
        }
        for &(word, value) in BOOSTERS {
            words.entry(word.into()).or_default().booster = if value > 0.0 { 1 } else { -1 };
        }
        for &word in NEGATE {
            words.entry(word.into()).or_default().negation = true;
        }
        for (id, &(word, flags)) in flag::WORDS.iter().enumerate() {
            let info = words.entry(word.into()).or_default();
            info.flags |= flags;
            info.id = u8::try_from(id).unwrap_or(u8::MAX);
        }
        let mut emojis = FxHashMap::default();
        for (n, line) in emoji_lexicon.trim_end_matches('\n').split('\n').enumerate() {
            let mut fields = line.trim_matches(is_py_space).split('\t');
            let (Some(emoji), Some(description)) = (fields.next(), fields.next()) else {
                let reason = "no tab".into();
                return Err(LexiconError::Line {
                    file: "emoji_utf8_lexicon.txt",
                    line: n + 1,
                    reason,
                });
            };
            // The reference looks characters up one at a time: keys of more
            // than one code point can never match.
            let mut chars = emoji.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                emojis.insert(c, description.into());
            }
        }
        let ascii_emoji = emojis.keys().any(char::is_ascii);
        let words = WordTable::new(words.iter().map(|(k, v)| (&**k, *v)));
        Ok(Vader {
            words,
            emojis,
            ascii_emoji,
        })
    }

    /// `SentimentIntensityAnalyzer().polarity_scores(text)`.
    pub fn polarity_scores(&self, text: &str) -> VaderScores {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let t = &mut *scratch;
            let mut emoji_free = std::mem::take(&mut t.emoji_free);
            let text = self.replace_emojis(text, &mut emoji_free);
            let text = text.trim_matches(is_py_space);
            self.tokenize(text, t);
            let upper_count = t.tokens.iter().filter(|tok| tok.upper).count();
            let cap_diff = upper_count > 0 && upper_count < t.len();

            let mut sentiments = std::mem::take(&mut t.sentiments);
            sentiments.clear();
            for i in 0..t.len() {
                let info = t.tokens[i];
                // Words outside the lexicon, boosters and "kind" in "kind of"
                // score an int 0.
                if info.valence.is_nan()
                    || info.booster != 0
                    || (i + 1 < t.len() && t.is(i, flag::KIND) && t.is(i + 1, flag::OF))
                {
                    sentiments.push(PyNum::Int(0));
                    continue;
                }
                sentiments.push(sentiment_valence(t, i, cap_diff));
            }
            but_check(t, &mut sentiments);
            let scores = score_valence(&sentiments, t.exclamations, t.questions);
            t.sentiments = sentiments;
            t.emoji_free = emoji_free;
            scores
        })
    }

    /// `SentiText._words_and_emoticons`: whitespace-split tokens stripped of
    /// surrounding ASCII punctuation unless that leaves two characters or fewer.
    fn tokenize(&self, text: &str, t: &mut Tokens) {
        t.tokens.clear();
        (t.exclamations, t.questions) = (0, 0);
        let bytes = text.as_bytes();
        let mut i = 0usize;
        loop {
            // Skip whitespace, then take the token up to the next whitespace.
            while i < bytes.len() {
                let len = match SPACE_CLASS[bytes[i] as usize] {
                    SPACE_BYTE => 1,
                    LEAD_BYTE => py_space_len(text, i),
                    _ => 0,
                };
                if len == 0 {
                    break;
                }
                i += len;
            }
            if i >= bytes.len() {
                break;
            }
            let start = i;
            while i < bytes.len() {
                // The common bytes first, in a tight loop.
                while i < bytes.len() && SPACE_CLASS[bytes[i] as usize] == WORD_BYTE {
                    i += 1;
                }
                if i >= bytes.len() {
                    break;
                }
                match SPACE_CLASS[bytes[i] as usize] {
                    WORD_BYTE => i += 1,
                    SPACE_BYTE => break,
                    EXCLAMATION => {
                        t.exclamations += 1;
                        i += 1;
                    }
                    QUESTION => {
                        t.questions += 1;
                        i += 1;
                    }
                    _ => {
                        if py_space_len(text, i) > 0 {
                            break;
                        }
                        i += utf8_len(bytes[i]);
                    }
                }
            }
            let end = i.min(bytes.len());
            // Strip ASCII punctuation (single bytes, never inside a UTF-8
            // sequence) unless two characters or fewer would remain.
            let (mut a, mut b) = (start, end);
            if ASCII_PUNCTUATION[bytes[a] as usize] || ASCII_PUNCTUATION[bytes[b - 1] as usize] {
                while a < b && ASCII_PUNCTUATION[bytes[a] as usize] {
                    a += 1;
                }
                while b > a && ASCII_PUNCTUATION[bytes[b - 1] as usize] {
                    b -= 1;
                }
            }
            let stripped = &text[a..b];
            let keep_raw = match stripped.len() {
                0..=2 => true,
                // Up to 8 bytes may still be two characters if not ASCII.
                3..=8 => !stripped.is_ascii() && stripped.chars().nth(2).is_none(),
                _ => false,
            };
            let word = if keep_raw { &text[start..end] } else { stripped };
            self.push_token(word, t);
        }
    }

    fn push_token(&self, word: &str, t: &mut Tokens) {
        let token = if let Some(f) = fold_ascii(word.as_bytes()) {
            let mut info = self
                .words
                .get_hashed_ascii_lower(word.as_bytes(), f.hash)
                .unwrap_or_default();
            info.negation |= f.has_apostrophe && contains_nt(word);
            info.upper = f.has_upper && !f.has_lower;
            info
        } else {
            t.lower.clear();
            let h = push_lower_hashed(word, &mut t.lower);
            let mut info = self.words.get_hashed(&t.lower, h).unwrap_or_default();
            info.negation |= t.lower.contains("n't");
            info.upper = py_isupper(word);
            info
        };
        t.tokens.push(token);
    }

    /// Emoji characters replaced by their descriptions, spaced from what
    /// precedes them as the reference does.
    fn replace_emojis<'a>(&self, text: &'a str, out: &'a mut String) -> &'a str {
        if text.is_ascii() && !self.ascii_emoji {
            return text;
        }
        out.clear();
        let bytes = text.as_bytes();
        // `text[copied..]` is waiting to be copied as it is; `after_emoji`
        // is where the last replaced emoji ended.
        let (mut copied, mut after_emoji) = (0usize, usize::MAX);
        let mut i = 0usize;
        while i < bytes.len() {
            if bytes[i] < 0x80 && !self.ascii_emoji {
                // Emoji keys are not ASCII: skip to the next lead byte.
                i += 1;
                continue;
            }
            let Some(c) = text[i..].chars().next() else {
                break;
            };
            if let Some(description) = self.emojis.get(&c) {
                // The reference puts a space before the description unless
                // the text so far ends with a space (and not with an emoji).
                let prev_space = i == 0 || (i != after_emoji && bytes[i - 1] == b' ');
                out.push_str(&text[copied..i]);
                if !prev_space {
                    out.push(' ');
                }
                out.push_str(description);
                copied = i + c.len_utf8();
                after_emoji = copied;
            }
            i += c.len_utf8();
        }
        if copied == 0 {
            return text;
        }
        out.push_str(&text[copied..]);
        out
    }
}

/// Python's `string.punctuation` (the same set as `u8::is_ascii_punctuation`)
/// as a table over bytes.
const ASCII_PUNCTUATION: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0usize;
    while b < 256 {
        table[b] = (b as u8).is_ascii_punctuation();
        b += 1;
    }
    table
};

const WORD_BYTE: u8 = 0;
const SPACE_BYTE: u8 = 1;
const LEAD_BYTE: u8 = 2;
/// `!` and `?`: part of a word, and counted for the emphasis rule.
const EXCLAMATION: u8 = 3;
const QUESTION: u8 = 4;

/// Per byte: part of a word, ASCII whitespace, or the first byte of a
/// non-ASCII character (which may be Unicode whitespace).
const SPACE_CLASS: [u8; 256] = {
    let mut table = [WORD_BYTE; 256];
    let mut b = 0usize;
    while b < 256 {
        if b == b'!' as usize {
            table[b] = EXCLAMATION;
        } else if b == b'?' as usize {
            table[b] = QUESTION;
        } else if matches!(b as u8, b'\t'..=b'\r' | 0x1c..=0x20) {
            table[b] = SPACE_BYTE;
        } else if b >= 0x80 {
            table[b] = LEAD_BYTE;
        }
        b += 1;
    }
    table
};

/// Whether an ASCII word contains "n't" in any case ("N'T" lower-cases to it).
fn contains_nt(word: &str) -> bool {
    word.as_bytes()
        .windows(3)
        .any(|w| w[0].eq_ignore_ascii_case(&b'n') && w[1] == b'\'' && w[2].eq_ignore_ascii_case(&b't'))
}

/// The byte length of the Python whitespace character at `text[i..]`, or 0.
#[inline]
fn py_space_len(text: &str, i: usize) -> usize {
    let b = text.as_bytes()[i];
    if b < 0x80 {
        return usize::from(matches!(b, b'\t'..=b'\r' | 0x1c..=0x20));
    }
    match text[i..].chars().next() {
        Some(c) if is_py_space(c) => c.len_utf8(),
        _ => 0,
    }
}

/// The length of the UTF-8 sequence that starts with byte `b`.
#[inline]
fn utf8_len(b: u8) -> usize {
    match b {
        0xf0.. => 4,
        0xe0.. => 3,
        _ => 2,
    }
}

fn sentiment_valence(t: &Tokens, i: usize, cap_diff: bool) -> PyNum {
    let item = t.tokens[i];
    let Some(base) = item.valence() else {
        return PyNum::Int(0);
    };
    let mut valence = PyNum::Float(base);
    if t.is(i, flag::NO) && i + 1 < t.len() && t.in_lexicon(i + 1) {
        // "no" negates the next lexicon word instead of scoring itself.
        valence = PyNum::Float(0.0);
    }
    if (i > 0 && t.is(i - 1, flag::NO))
        || (i > 1 && t.is(i - 2, flag::NO))
        || (i > 2 && t.is(i - 3, flag::NO) && t.is(i - 1, flag::OR_NOR))
    {
        valence = PyNum::Float(base * N_SCALAR);
    }
    if item.upper && cap_diff {
        let v = valence.as_f64();
        valence = PyNum::Float(if v > 0.0 { v + C_INCR } else { v - C_INCR });
    }
    for start_i in 0..3 {
        if i > start_i && !t.in_lexicon(i - (start_i + 1)) {
            let mut s = scalar_inc_dec(&t.tokens[i - (start_i + 1)], valence.as_f64(), cap_diff);
            if start_i == 1 && s != 0.0 {
                s *= 0.95;
            }
            if start_i == 2 && s != 0.0 {
                s *= 0.9;
            }
            valence = add(valence, s);
            valence = negation_check(valence, t, start_i, i);
            if start_i == 2 {
                valence = special_idioms_check(valence, t, i);
            }
        }
    }
    least_check(valence, t, i)
}

/// `valence + s` where `s` is a Python float: the result is a float.
fn add(valence: PyNum, s: f64) -> PyNum {
    PyNum::Float(match valence {
        PyNum::Int(v) => v as f64 + s,
        PyNum::Float(v) => v + s,
    })
}

/// `valence * k` for a Python float `k`.
fn mul(valence: PyNum, k: f64) -> PyNum {
    PyNum::Float(valence.as_f64() * k)
}

fn scalar_inc_dec(token: &Token, valence: f64, cap_diff: bool) -> f64 {
    let Some(mut scalar) = token.booster() else {
        return 0.0;
    };
    if valence < 0.0 {
        scalar *= -1.0;
    }
    if token.upper && cap_diff {
        if valence > 0.0 {
            scalar += C_INCR;
        } else {
            scalar -= C_INCR;
        }
    }
    scalar
}

fn negation_check(valence: PyNum, t: &Tokens, start_i: usize, i: usize) -> PyNum {
    let is = |k: usize, f: u16| t.is(k, f);
    let negated = |k: usize| t.tokens[k].negation;
    match start_i {
        0 => {
            if negated(i - 1) {
                return mul(valence, N_SCALAR);
            }
        }
        1 => {
            if is(i - 2, flag::NEVER) && is(i - 1, flag::SO_THIS) {
                return mul(valence, 1.25);
            } else if is(i - 2, flag::WITHOUT) && is(i - 1, flag::DOUBT) {
                return valence;
            } else if negated(i - 2) {
                return mul(valence, N_SCALAR);
            }
        }
        _ => {
            // As written in the reference: the `or` binds the second clause
            // without "never", so "so"/"this" right before the word boosts.
            if (is(i - 3, flag::NEVER) && is(i - 2, flag::SO_THIS)) || is(i - 1, flag::SO_THIS) {
                return mul(valence, 1.25);
            } else if is(i - 3, flag::WITHOUT) && (is(i - 2, flag::DOUBT) || is(i - 1, flag::DOUBT)) {
                return valence;
            } else if negated(i - 3) {
                return mul(valence, N_SCALAR);
            }
        }
    }
    valence
}

/// `_special_idioms_check`: the reference joins neighbouring words with
/// spaces and looks the strings up; words never contain whitespace, so
/// comparing word sequences is the same test.
fn special_idioms_check(mut valence: PyNum, t: &Tokens, i: usize) -> PyNum {
    // Every sequence looked at below ends at one of i-2 ..= i+2; skip the
    // search when none of those words ends an idiom or a two-word booster.
    let ends = (i - 2..=(i + 2).min(t.len() - 1)).fold(0, |acc, k| acc | t.tokens[k].flags);
    if ends & (flag::IDIOM_END | flag::BOOSTER_END) == 0 {
        return valence;
    }
    let special_at = |at: usize, len: usize| {
        if !t.is(at, flag::IDIOM) {
            return None;
        }
        SPECIAL_CASES
            .iter()
            .find(|(words, _)| words.len() == len && t.words_are(at, words))
            .map(|(_, v)| *v)
    };
    // onezero, twoonezero, twoone, threetwoone, threetwo: the first found wins.
    let sequences = [(i - 1, 2), (i - 2, 3), (i - 2, 2), (i - 3, 3), (i - 3, 2)];
    if let Some(v) = sequences.iter().find_map(|&(at, len)| special_at(at, len)) {
        valence = v;
    }
    if t.len() - 1 > i
        && let Some(v) = special_at(i, 2)
    {
        valence = v;
    }
    if t.len() - 1 > i + 1
        && let Some(v) = special_at(i, 3)
    {
        valence = v;
    }
    // Two-word boosters before the word: threetwoone (never: no booster
    // has three words), threetwo, twoone.
    for at in [i - 3, i - 2] {
        if let Some((_, b)) = TWO_WORD_BOOSTERS.iter().find(|(words, _)| t.words_are(at, words)) {
            valence = add(valence, *b);
        }
    }
    valence
}

fn least_check(valence: PyNum, t: &Tokens, i: usize) -> PyNum {
    if i > 1 && !t.in_lexicon(i - 1) && t.is(i - 1, flag::LEAST) {
        // "at least" and "very least" are not negations.
        if !t.is(i - 2, flag::AT_VERY) {
            return mul(valence, N_SCALAR);
        }
    } else if i > 0 && !t.in_lexicon(i - 1) && t.is(i - 1, flag::LEAST) {
        return mul(valence, N_SCALAR);
    }
    valence
}

/// The contrastive `but` rule exactly as the reference computes it: each
/// value is looked up again with `list.index`, so the first equal value is
/// the one rescaled, and a value at the position of `but` is left alone.
///
/// Done literally, that is quadratic in the number of tokens. Two facts
/// make it cheaper: the position a step rescales is never after the step's
/// own (the first equal value is at or before it), and a zero stays zero
/// (`0 × 0.5`), a non-zero value non-zero. So zeros always rescale the
/// first zero, and only the non-zero values, usually few, are searched;
/// with many of them, an index of the positions of each value does it in
/// O(n log n). All three give the same result as the scan.
fn but_check(t: &Tokens, sentiments: &mut [PyNum]) {
    let Some(bi) = (0..t.len()).position(|k| t.is(k, flag::BUT)) else {
        return;
    };
    if sentiments.len() <= BUT_SCAN_MAX {
        but_rescale_by_scanning(sentiments, bi);
    } else {
        but_rescale_sparse(sentiments, bi);
    }
}

/// Up to this many tokens, [`but_check`] scans for each value's first
/// position as the reference does; up to this many non-zero values,
/// [`but_rescale_sparse`] searches only those.
const BUT_SCAN_MAX: usize = 64;

/// The rule with zeros handled at once and the non-zero values searched
/// in a short list; past [`BUT_SCAN_MAX`] non-zero values (or should a
/// rescaled value underflow to zero) the rest goes to the index.
fn but_rescale_sparse(sentiments: &mut [PyNum], bi: usize) {
    let nonzero = sentiments
        .iter()
        .filter(|s| {
            let v = s.as_f64();
            v != 0.0 && !v.is_nan()
        })
        .count();
    if nonzero > BUT_SCAN_MAX {
        return but_rescale_by_index(sentiments, bi, 0);
    }
    let scale = |si: usize, v: f64| if si < bi { v * 0.5 } else { v * 1.5 };
    let first_zero = sentiments.iter().position(|s| s.as_f64() == 0.0);
    // The non-zero values at the positions before the step, in order.
    let mut held: Vec<(f64, usize)> = Vec::with_capacity(nonzero);
    for k in 0..sentiments.len() {
        let value = sentiments[k].as_f64();
        if value.is_nan() {
            continue;
        }
        if value == 0.0 {
            // Invariant: position k holds a zero, so there is a first one.
            if let Some(si) = first_zero
                && si != bi
            {
                sentiments[si] = PyNum::Float(scale(si, value));
            }
            continue;
        }
        let found = held.iter().position(|(v, _)| *v == value);
        let si = found.map_or(k, |h| held[h].1);
        if si != bi {
            let scaled = scale(si, value);
            if scaled == 0.0 {
                // A zero from a non-zero value: the invariant no longer
                // holds, the index takes it from this step on.
                return but_rescale_by_index(sentiments, bi, k);
            }
            sentiments[si] = PyNum::Float(scaled);
            if let Some(h) = found {
                held[h].0 = scaled;
            }
        }
        held.push((sentiments[k].as_f64(), k));
    }
}

/// `sentiments.index(value)` looked up by scanning, for each value in turn.
fn but_rescale_by_scanning(sentiments: &mut [PyNum], bi: usize) {
    for k in 0..sentiments.len() {
        let value = sentiments[k].as_f64();
        let Some(si) = sentiments.iter().position(|s| s.as_f64() == value) else {
            continue;
        };
        if si < bi {
            sentiments[si] = PyNum::Float(value * 0.5);
        } else if si > bi {
            sentiments[si] = PyNum::Float(value * 1.5);
        }
    }
}

/// The same as [`but_rescale_by_scanning`] from step `start` on, with the
/// positions of each value (compared as Python compares them: `0 == 0.0 ==
/// -0.0`) kept in order.
fn but_rescale_by_index(sentiments: &mut [PyNum], bi: usize, start: usize) {
    use std::collections::BTreeSet;
    // Python's `==` on the values: ints and floats alike, -0.0 equal to 0.0.
    let key = |v: f64| if v == 0.0 { 0u64 } else { v.to_bits() };
    let mut positions: FxHashMap<u64, BTreeSet<usize>> = FxHashMap::default();
    for (i, s) in sentiments.iter().enumerate() {
        let v = s.as_f64();
        if !v.is_nan() {
            positions.entry(key(v)).or_default().insert(i);
        }
    }
    for k in start..sentiments.len() {
        let value = sentiments[k].as_f64();
        // NaN equals nothing: `position` finds no index for it either.
        if value.is_nan() {
            continue;
        }
        // Invariant: position k holds `value`, so its set is not empty.
        let Some(held) = positions.get_mut(&key(value)) else {
            continue;
        };
        let Some(&si) = held.first() else {
            continue;
        };
        let scaled = match si.cmp(&bi) {
            std::cmp::Ordering::Less => value * 0.5,
            std::cmp::Ordering::Greater => value * 1.5,
            std::cmp::Ordering::Equal => continue,
        };
        sentiments[si] = PyNum::Float(scaled);
        if scaled.is_nan() || key(scaled) != key(value) {
            held.remove(&si);
            if !scaled.is_nan() {
                positions.entry(key(scaled)).or_default().insert(si);
            }
        }
    }
}

/// `_punctuation_emphasis` from the counts of `!` and `?` in the text.
fn punctuation_emphasis(ep: usize, qm: usize) -> f64 {
    let ep_amplifier = ep.min(4) as f64 * 0.292;
    let qm_amplifier = if qm > 1 {
        if qm <= 3 { qm as f64 * 0.18 } else { 0.96 }
    } else {
        0.0
    };
    ep_amplifier + qm_amplifier
}

fn score_valence(sentiments: &[PyNum], exclamations: usize, questions: usize) -> VaderScores {
    if sentiments.is_empty() {
        return VaderScores {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    // One pass for Python's sum() and `_sift_sentiment_scores`.
    let mut sum = PySum::default();
    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0f64, 0.0f64, 0u32);
    for &s in sentiments {
        sum.add(s);
        let v = s.as_f64();
        if v > 0.0 {
            pos_sum += v + 1.0;
        } else if v < 0.0 {
            neg_sum += v - 1.0;
        } else {
            neu_count += 1;
        }
    }
    let mut sum_s = sum.finish().as_f64();
    let amplifier = punctuation_emphasis(exclamations, questions);
    if sum_s > 0.0 {
        sum_s += amplifier;
    } else if sum_s < 0.0 {
        sum_s -= amplifier;
    }
    let compound = normalize(sum_s);

    if pos_sum > neg_sum.abs() {
        pos_sum += amplifier;
    } else if pos_sum < neg_sum.abs() {
        neg_sum -= amplifier;
    }
    let total = pos_sum + neg_sum.abs() + f64::from(neu_count);
    VaderScores {
        neg: py_round((neg_sum / total).abs(), 3),
        neu: py_round((f64::from(neu_count) / total).abs(), 3),
        pos: py_round((pos_sum / total).abs(), 3),
        compound: py_round(compound, 4),
    }
}

fn normalize(score: f64) -> f64 {
    let norm = score / (score * score + 15.0).sqrt();
    norm.clamp(-1.0, 1.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_indexed_but_rule_rescales_exactly_as_the_scanning_one() {
        use super::{PyNum, but_rescale_by_index, but_rescale_by_scanning, but_rescale_sparse};
        let mut rng = fastrand::Rng::with_seed(7);
        // Few distinct values, ints and floats mixed, so equal values and
        // values that become equal after a rescale are common.
        // 5e-324 halves to zero: the sparse rule's hand-over to the index.
        let palette = [0.0, -0.0, 1.5, 0.75, 2.25, -1.5, -0.75, 3.0, 1.125, 0.375, 5e-324];
        for round in 0..3000 {
            let n = rng.usize(1..if round % 10 == 0 { 400 } else { 40 });
            let mostly_zeros = round % 3 == 0;
            let values: Vec<PyNum> = (0..n)
                .map(|_| {
                    if mostly_zeros && rng.u8(..10) != 0 {
                        PyNum::Int(0)
                    } else if rng.bool() {
                        PyNum::Int(rng.i64(-2..3))
                    } else {
                        PyNum::Float(palette[rng.usize(..palette.len())])
                    }
                })
                .collect();
            let bi = rng.usize(..n);
            let (mut a, mut b, mut c) = (values.clone(), values.clone(), values);
            but_rescale_by_scanning(&mut a, bi);
            but_rescale_by_index(&mut b, bi, 0);
            but_rescale_sparse(&mut c, bi);
            let bits = |v: &[PyNum]| -> Vec<(bool, u64)> {
                v.iter()
                    .map(|x| match *x {
                        PyNum::Int(i) => (true, i as u64),
                        PyNum::Float(f) => (false, f.to_bits()),
                    })
                    .collect()
            };
            assert_eq!(bits(&a), bits(&b), "index: n={n} bi={bi}");
            assert_eq!(bits(&a), bits(&c), "sparse: n={n} bi={bi}");
        }
    }

    use super::*;

    fn v(text: &str) -> (f64, f64, f64, f64) {
        let s = Vader::global().polarity_scores(text);
        (s.neg, s.neu, s.pos, s.compound)
    }

    #[test]
    fn readme_examples() {
        // Values printed by vaderSentiment 3.3.2 on CPython 3.12.1.
        assert_eq!(v("VADER is smart, handsome, and funny."), (0.0, 0.254, 0.746, 0.8316));
        assert_eq!(
            v("VADER is VERY SMART, uber handsome, and FRIGGIN FUNNY!!!"),
            (0.0, 0.294, 0.706, 0.9469)
        );
        assert_eq!(
            v("The plot was good, but the characters are uncompelling and the dialog is not great."),
            (0.327, 0.579, 0.094, -0.7042)
        );
        assert_eq!(v(""), (0.0, 0.0, 0.0, 0.0));
        assert_eq!(
            v("Catch utf-8 emoji such as 💘 and 💋 and 😁"),
            (0.0, 0.583, 0.417, 0.875)
        );
    }
}
