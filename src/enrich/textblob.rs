//! TextBlob 0.20.1 default sentiment (pattern's `PatternAnalyzer`),
//! reimplemented to give the same two doubles as `TextBlob(text).sentiment`
//! on CPython 3.12.
//!
//! What the reference does, in order, and what this file mirrors:
//!
//! 1. Lexicon: `en-sentiment.xml` (shipped in `data/lexicons/`). Every
//!    `<word>` sense is grouped by form and part of speech; each group is
//!    averaged with Python's `sum()`, then the groups of a form are averaged
//!    again into the score used for untagged text. Every adjective `Xy`/`Xle`/`X`
//!    also defines the adverb `Xily`/`Xly`/`Xly` with the adjective's scores,
//!    replacing what the file says for that adverb.
//! 2. Tokenizer (`pattern.text.find_tokens`): contractions, quotes, blank
//!    lines as sentence ends, leading and trailing punctuation split off,
//!    abbreviations kept, sentences split at `.`/`!`/`?`/`...`, then `(!)`
//!    and emoticons re-joined inside each sentence.
//! 3. Assessment (`Sentiment.assessments`): known words are scored, an
//!    adverb before a word multiplies it by the adverb's intensity, a
//!    negation flips and halves, `!` boosts the previous score by 1.25,
//!    emoticons and `(!)` add their own scores.
//! 4. The polarity and subjectivity are the plain running-sum averages of
//!    the assessments.

use std::sync::OnceLock;

use regex::Regex;
use rustc_hash::FxHashMap;

use super::pyfloat::py_fsum;
use super::pystr::{is_py_space, py_lower};
use super::wordset::{WordTable, fold_ascii, push_lower_hashed};

/// The lexicon, as TextBlob ships it (PDDL, see `data/lexicons/SOURCE.md`).
const LEXICON_XML: &str = include_str!("../../data/lexicons/en-sentiment.xml");

/// Punctuation split off the start and end of tokens (pattern's
/// `PUNCTUATION` without the period, which has its own rules).
const PUNCTUATION: &str = ",;:!?()[]{}`''\"@#$^&*+-|=~_";

/// pattern's end-of-sentence marker: a blank line becomes this token, and
/// the literal token in a text has the same effect.
const EOS: &str = "END-OF-SENTENCE";

const NEGATIONS: [&str; 4] = ["no", "not", "n't", "never"];

const ABBREVIATIONS: [&str; 37] = [
    "a.", "adj.", "adv.", "al.", "a.m.", "c.", "cf.", "comp.", "conf.", "def.", "ed.", "e.g.", "esp.", "etc.", "ex.",
    "f.", "fig.", "gen.", "id.", "i.e.", "int.", "l.", "m.", "Med.", "Mil.", "Mr.", "n.", "n.q.", "orig.", "pl.",
    "pred.", "pres.", "p.m.", "ref.", "v.", "vs.", "w/",
];

/// pattern's emoticons, in the order the reference's regular expression
/// tries them (dictionary order; no emoticon of a class is a prefix of
/// another of the same class, so the order inside a class is immaterial).
const EMOTICONS: [(f64, &[&str]); 9] = [
    (1.00, &["<3", "♥"]),
    (
        1.00,
        &[">:D", ":-D", ":D", "=-D", "=D", "X-D", "x-D", "XD", "xD", "8-D"],
    ),
    (
        0.75,
        &[">:P", ":-P", ":P", ":-p", ":p", ":-b", ":b", ":c)", ":o)", ":^)"],
    ),
    (
        0.50,
        &[">:)", ":-)", ":)", "=)", "=]", ":]", ":}", ":>", ":3", "8)", "8-)"],
    ),
    (0.25, &[">;]", ";-)", ";)", ";-]", ";]", ";D", ";^)", "*-)", "*)"]),
    (0.05, &[">:o", ":-O", ":O", ":o", ":-o", "o_O", "o.O", "°O°", "°o°"]),
    (
        -0.25,
        &[
            ">:/", ":-/", ":/", ":\\", ">:\\", ":-.", ":-s", ":s", ":S", ":-S", ">.>",
        ],
    ),
    (
        -0.75,
        &[">:[", ":-(", ":(", "=(", ":-[", ":[", ":{", ":-<", ":c", ":-c", "=/"],
    ),
    (-1.00, &[":'(", ":'''(", ";'("]),
];

/// First bytes of the lower-cased emoticons (UTF-8 lead bytes for `♥`, `°`).
fn is_emoticon_start(b: u8) -> bool {
    matches!(
        b,
        b'<' | b'>' | b':' | b'=' | b'x' | b'8' | b';' | b'*' | b'o' | 0xe2 | 0xc2
    )
}

/// Scores of one lexicon form as the reference uses them for untagged text.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Entry {
    polarity: f64,
    subjectivity: f64,
    intensity: f64,
    /// The form has an adverb (`RB`) sense, so it modifies the next word.
    modifier: bool,
}

/// The TextBlob analyzer: lexicon plus the compiled tokenizer patterns.
/// Build it once per process with [`TextBlob::global`].
pub struct TextBlob {
    words: WordTable<Entry>,
    /// Lower-cased emoticon -> polarity, in reference order of precedence.
    emoticons: FxHashMap<Box<str>, f64>,
    re_sarcasm: Regex,
    re_emoticons: Regex,
    /// Consecutive characters of an emoticon or of `(!)`: the only places
    /// where the substitutions can remove a space between two tokens.
    joinable: Joinable,
    /// Every emoticon and `(!)`, as characters.
    faces: Vec<Vec<char>>,
}

/// A set of character pairs, with a bit table for ASCII pairs.
struct Joinable {
    ascii: Box<[u128; 128]>,
    other: Vec<(char, char)>,
    /// Bytes that can end the left side of a pair: ASCII firsts of the
    /// pairs, and every byte of a non-ASCII character (looked at closer).
    left: [bool; 256],
}

impl Joinable {
    fn new(pairs: &[(char, char)]) -> Joinable {
        let mut ascii = Box::new([0u128; 128]);
        let mut other = Vec::new();
        for &(a, b) in pairs {
            if a.is_ascii() && b.is_ascii() {
                ascii[a as usize] |= 1 << (b as u32);
            } else {
                other.push((a, b));
            }
        }
        let mut left = [false; 256];
        for &(a, _) in pairs {
            if a.is_ascii() {
                left[a as usize] = true;
            }
        }
        for flag in &mut left[0x80..] {
            *flag = true;
        }
        Joinable { ascii, other, left }
    }

    fn contains(&self, a: char, b: char) -> bool {
        if a.is_ascii() && b.is_ascii() {
            self.ascii[a as usize] & (1 << (b as u32)) != 0
        } else {
            self.other.contains(&(a, b))
        }
    }
}

/// Errors in the lexicon file (only reachable with a damaged build).
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// A `<word>` element could not be read.
    #[error("en-sentiment.xml: word element {index}: {reason}")]
    Word { index: usize, reason: String },
}

impl TextBlob {
    /// The process-wide analyzer, built from the embedded lexicon on first use.
    pub fn global() -> &'static TextBlob {
        static GLOBAL: OnceLock<TextBlob> = OnceLock::new();
        // The embedded lexicon is checked by the tests; failing here means
        // the binary itself is damaged.
        GLOBAL.get_or_init(|| TextBlob::from_xml(LEXICON_XML).expect("embedded en-sentiment.xml is valid"))
    }

    /// Builds the analyzer from the text of an `en-sentiment.xml` file.
    pub fn from_xml(xml: &str) -> Result<TextBlob, LexiconError> {
        let words = load_lexicon(xml)?;
        let mut emoticons = FxHashMap::default();
        let mut alternatives = Vec::new();
        let mut joinable = vec![('(', '!'), ('!', ')')];
        let mut all_faces = vec![vec!['(', '!', ')']];
        for (polarity, faces) in EMOTICONS {
            for face in faces {
                let chars: Vec<char> = face.chars().collect();
                joinable.extend(chars.windows(2).map(|w| (w[0], w[1])));
                all_faces.push(chars.clone());
                // `w.isalpha() is False` in the reference: "xd" never counts.
                let lower = py_lower(face);
                if !lower.chars().all(char::is_alphabetic) {
                    emoticons.entry(lower.into_boxed_str()).or_insert(polarity);
                }
                let alt: Vec<String> = face.chars().map(|c| regex::escape(&c.to_string())).collect();
                alternatives.push(alt.join(" ?"));
            }
        }
        // The patterns are constants; they compile in every test run.
        let re_emoticons = Regex::new(&format!("({})($|\\s)", alternatives.join("|"))).expect("emoticon pattern");
        let re_sarcasm = Regex::new(r"\( ?! ?\)").expect("sarcasm pattern");
        Ok(TextBlob {
            words: WordTable::new(words.iter().map(|(k, v)| (&**k, *v))),
            emoticons,
            re_sarcasm,
            re_emoticons,
            joinable: Joinable::new(&joinable),
            faces: all_faces,
        })
    }

    /// `TextBlob(text).sentiment`: `(polarity, subjectivity)`.
    pub fn sentiment(&self, text: &str) -> (f64, f64) {
        // Token offsets are 32-bit; no post comes near 4 GiB (the pipeline
        // bounds bodies far lower), but never let an offset wrap.
        let text = truncate_to_u32(text);
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let Scratch {
                tokens,
                sentence,
                joined,
                lower,
                assessor,
            } = &mut *scratch;
            tokens.clear();
            split_tokens(text, tokens);
            assessor.reset();
            for_each_sentence(tokens, sentence, |sentence| {
                if self.may_rejoin(text, sentence) {
                    // Rare: an emoticon or "(!)" may span tokens. Do exactly
                    // what the reference does on the joined sentence.
                    let rejoined = self.rejoin(text, sentence, joined);
                    for w in rejoined.split(is_py_space).filter(|w| !w.is_empty()) {
                        lower.clear();
                        let h = push_lower_hashed(w, lower);
                        assessor.step(self, lower, h);
                    }
                } else {
                    for &tok in sentence.iter() {
                        // Sentences hold no end-of-sentence markers, so the
                        // token is a byte range of the text.
                        let b = &text.as_bytes()[tok.start as usize..tok.end as usize];
                        if b.len() == 1 && b[0] != b'!' {
                            // No one-character word is in the lexicon, a
                            // negation or an emoticon, and none changes a
                            // pending modifier or negation: nothing to do.
                            continue;
                        }
                        let folded = fold_ascii(b);
                        if let Some(f) = folded {
                            // Look the ASCII word up as if lower-cased; copy
                            // it lower-cased only when it matters.
                            let entry = self.words.get_hashed_ascii_lower(b, f.hash);
                            if entry.is_none() && assessor.ignores_unknown(b) {
                                continue;
                            }
                            let w = tok.as_str(text);
                            if f.has_upper {
                                lower.clear();
                                lower.push_str(w);
                                lower.make_ascii_lowercase();
                                assessor.step_slow(self, lower, entry);
                            } else {
                                assessor.step_slow(self, w, entry);
                            }
                            continue;
                        }
                        // Not ASCII: lower-case it as Python does.
                        lower.clear();
                        let h = push_lower_hashed(tok.as_str(text), lower);
                        assessor.step(self, lower, h);
                    }
                }
            });
            assessor.result()
        })
    }

    /// pattern's `find_tokens`: the sentences of `text`, each a string of
    /// space-separated tokens (used by the tests to compare tokenizers).
    #[cfg(test)]
    fn find_tokens(&self, text: &str) -> Vec<String> {
        let mut tokens = Vec::new();
        split_tokens(text, &mut tokens);
        let mut out = Vec::new();
        let (mut sentence, mut joined) = (Vec::new(), String::new());
        for_each_sentence(&tokens, &mut sentence, |sentence| {
            out.push(self.rejoin(text, sentence, &mut joined).to_string());
        });
        out
    }

    /// Whether the reference's sarcasm or emoticon substitution could change
    /// this sentence. It removes the spaces inside a match, and a match must
    /// end where a token ends (it is followed by a space or the end), so a
    /// change needs, at some token boundary, a face `e` split as `e[..p]`
    /// ending with the left token's last character and `e[p..]` spelled out
    /// exactly by the next tokens. The character-pair table answers "no"
    /// for almost every boundary; the rest are checked face by face.
    fn may_rejoin(&self, text: &str, sentence: &[Tok]) -> bool {
        let bytes = text.as_bytes();
        (0..sentence.len().saturating_sub(1)).any(|k| {
            let (left, right) = (sentence[k], sentence[k + 1]);
            if left.start == left.end || right.start == right.end {
                return false;
            }
            let (l, r) = (bytes[left.end as usize - 1], bytes[right.start as usize]);
            if !self.joinable.left[l as usize] {
                return false;
            }
            let pair = if l < 0x80 && r < 0x80 {
                self.joinable.contains(l as char, r as char)
            } else {
                match (left.as_str(text).chars().next_back(), right.as_str(text).chars().next()) {
                    (Some(l), Some(r)) => self.joinable.contains(l, r),
                    _ => false,
                }
            };
            pair && self.face_spans(text, sentence, k)
        })
    }

    /// The exact test behind `may_rejoin` for the boundary after token `k`.
    fn face_spans(&self, text: &str, sentence: &[Tok], k: usize) -> bool {
        let Some(l) = sentence[k].as_str(text).chars().next_back() else {
            return false;
        };
        self.faces.iter().any(|face| {
            (1..face.len()).any(|p| {
                if !face[..p].ends_with(&[l]) {
                    return false;
                }
                // The following tokens must spell face[p..] exactly.
                let mut rest = &face[p..];
                for tok in &sentence[k + 1..] {
                    let mut chars = tok.as_str(text).chars();
                    let mut used = 0;
                    for c in chars.by_ref() {
                        if rest.get(used) != Some(&c) {
                            return false;
                        }
                        used += 1;
                    }
                    rest = &rest[used..];
                    if rest.is_empty() {
                        return true;
                    }
                }
                false
            })
        })
    }

    /// The sentence joined with spaces, after the reference's `(!)` and
    /// emoticon substitutions.
    fn rejoin(&self, text: &str, sentence: &[Tok], joined: &mut String) -> String {
        joined.clear();
        for (k, tok) in sentence.iter().enumerate() {
            if k > 0 {
                joined.push(' ');
            }
            joined.push_str(tok.as_str(text));
        }
        let sarcasm = self.re_sarcasm.replace_all(joined, "(!)");
        // The reference replaces each match `(face)($|\s)` with the face
        // without spaces plus the whitespace after it. The whole match is
        // the same with or without capture groups, so find the matches with
        // the faster search and drop every space but a final one.
        let mut out = String::with_capacity(sarcasm.len());
        let mut last = 0;
        for m in self.re_emoticons.find_iter(&sarcasm) {
            out.push_str(&sarcasm[last..m.start()]);
            let matched = m.as_str();
            let (face, tail) = match matched.char_indices().next_back() {
                Some((at, c)) if c.is_whitespace() => matched.split_at(at),
                _ => (matched, ""),
            };
            out.extend(face.chars().filter(|&c| c != ' '));
            out.push_str(tail);
            last = m.end();
        }
        out.push_str(&sarcasm[last..]);
        out
    }
}

/// `text`, cut at a character boundary below 4 GiB if it is longer.
fn truncate_to_u32(text: &str) -> &str {
    let mut end = text.len().min(u32::MAX as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Per-thread buffers reused from one text to the next.
#[derive(Default)]
struct Scratch {
    tokens: Vec<Tok>,
    sentence: Vec<Tok>,
    joined: String,
    lower: String,
    assessor: Assessor,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// A token of the text: a byte range of it and what it means to the
/// sentence splitter.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tok {
    start: u32,
    end: u32,
    kind: Kind,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Word,
    /// `.` `!` `?` `...`: ends a sentence.
    End,
    /// `)` `”` `’`: taken into the sentence that just ended.
    Continues,
    /// A blank line or the literal `END-OF-SENTENCE`: ends a sentence and is
    /// dropped from it.
    Eos,
}

impl Tok {
    const BLANK_LINE: Tok = Tok {
        start: 0,
        end: 0,
        kind: Kind::Eos,
    };

    #[inline(always)]
    fn new(text: &str, start: usize, end: usize) -> Tok {
        let bytes = &text.as_bytes()[start..end];
        let kind = match bytes.len() {
            1 => match bytes[0] {
                b'.' | b'!' | b'?' => Kind::End,
                b')' => Kind::Continues,
                _ => Kind::Word,
            },
            3 => match bytes {
                b"..." => Kind::End,
                // ” and ’
                b"\xe2\x80\x9d" | b"\xe2\x80\x99" => Kind::Continues,
                _ => Kind::Word,
            },
            15 if bytes == EOS.as_bytes() => Kind::Eos,
            _ => Kind::Word,
        };
        // Texts are far below 4 GiB (the pipeline bounds bodies); saturate
        // rather than wrap if one is not.
        // `sentiment` scores at most the first 4 GiB of a text.
        let clamp = |x: usize| x as u32;
        Tok {
            start: clamp(start),
            end: clamp(end),
            kind,
        }
    }

    fn as_str(self, text: &str) -> &str {
        if self.kind == Kind::Eos {
            EOS
        } else {
            text.get(self.start as usize..self.end as usize).unwrap_or("")
        }
    }
}

/// The reference's sentence grouping over `tokens`: calls `f` with each
/// non-empty sentence, end-of-sentence markers removed.
fn for_each_sentence(tokens: &[Tok], sentence: &mut Vec<Tok>, mut f: impl FnMut(&[Tok])) {
    let is_end = |t: &Tok| matches!(t.kind, Kind::End | Kind::Eos);
    // A quote right after the end is never taken into the sentence: the
    // reference counts quotes in a list that is always empty at that point.
    let continues = |t: &Tok| t.kind != Kind::Word;
    let (mut i, mut j) = (0usize, 0usize);
    while j < tokens.len() {
        if is_end(&tokens[j]) {
            let mut saw_eos = false;
            while j < tokens.len() && continues(&tokens[j]) {
                saw_eos |= tokens[j].kind == Kind::Eos;
                j += 1;
            }
            if saw_eos {
                // Drop the markers (they only occur in these runs).
                sentence.clear();
                sentence.extend(tokens[i..j].iter().copied().filter(|t| t.kind != Kind::Eos));
                if !sentence.is_empty() {
                    f(sentence);
                }
            } else {
                f(&tokens[i..j]);
            }
            i = j;
        }
        j += 1;
    }
    // What follows the last sentence end holds no marker (a marker would
    // have ended a sentence).
    if i < tokens.len() {
        f(&tokens[i..]);
    }
}

/// One assessment: a known word (with its modifier and negation), an
/// emoticon or a `(!)`.
#[derive(Clone, Copy)]
struct Assessment {
    p: f64,
    s: f64,
    i: f64,
    negated: bool,
}

/// pattern's `Sentiment.assessments` for untagged words, fed one
/// lower-cased word at a time.
#[derive(Default)]
struct Assessor {
    a: Vec<Assessment>,
    /// A preceding modifier; whether it ends with "ly".
    m: Option<bool>,
    /// A preceding negation.
    n: bool,
}

impl Assessor {
    fn reset(&mut self) {
        self.a.clear();
        self.m = None;
        self.n = false;
    }

    /// Takes the next lower-cased word `w`, whose `word_hash` is `h`.
    #[inline(always)]
    fn step(&mut self, tb: &TextBlob, w: &str, h: u64) {
        let entry = tb.words.get_hashed(w, h);
        if entry.is_none() && self.ignores_unknown(w.as_bytes()) {
            return;
        }
        self.step_slow(tb, w, entry);
    }

    /// Whether a word outside the lexicon (ASCII letters compared without
    /// case) changes nothing: with no modifier or negation pending, it
    /// matters only if it is a negation (n…), "!", "(!)" or an emoticon,
    /// and none of those starts with a letter or digit other than n, x, 8, o.
    #[inline(always)]
    fn ignores_unknown(&self, w: &[u8]) -> bool {
        self.m.is_none()
            && !self.n
            && w.first().is_some_and(|&b| {
                b.is_ascii_alphanumeric() && !matches!(b.to_ascii_lowercase(), b'n' | b'x' | b'8' | b'o')
            })
    }

    #[inline(never)]
    fn step_slow(&mut self, tb: &TextBlob, w: &str, entry: Option<Entry>) {
        let a = &mut self.a;
        if let Some(e) = entry {
            match (self.m, a.last_mut()) {
                (Some(_), Some(last)) => {
                    // "really good": the modifier's intensity scales the word.
                    last.p = (e.polarity * last.i).clamp(-1.0, 1.0);
                    last.s = (e.subjectivity * last.i).clamp(-1.0, 1.0);
                    last.i = e.intensity;
                }
                _ => a.push(Assessment {
                    p: e.polarity,
                    s: e.subjectivity,
                    i: e.intensity,
                    negated: false,
                }),
            }
            if self.n
                && let Some(last) = a.last_mut()
            {
                last.i = 1.0 / last.i;
                last.negated = true;
            }
            self.m = e.modifier.then(|| w.ends_with("ly"));
            self.n = w.starts_with('n') && NEGATIONS.contains(&w);
            return;
        }
        if w.starts_with('n') && NEGATIONS.contains(&w) {
            self.n = true;
        } else if self.n && w.trim_matches('\'').chars().nth(1).is_some() {
            self.n = false;
        }
        if self.n && self.m == Some(true) {
            // "really not good".
            if let Some(last) = a.last_mut() {
                last.negated = true;
            }
            self.n = false;
        } else if self.m.is_some() && w.chars().nth(2).is_some() {
            self.m = None;
        }
        if w == "!" {
            if let Some(last) = a.last_mut() {
                last.p = (last.p * 1.25).clamp(-1.0, 1.0);
            }
        } else if w == "(!)" {
            a.push(Assessment {
                p: 0.0,
                s: 1.0,
                i: 1.0,
                negated: false,
            });
        } else if (2..=10).contains(&w.len())
            && is_emoticon_start(w.as_bytes()[0])
            && let Some(&p) = tb.emoticons.get(w)
        {
            a.push(Assessment {
                p,
                s: 1.0,
                i: 1.0,
                negated: false,
            });
        }
    }

    /// The averages, summed left to right as the reference does.
    fn result(&self) -> (f64, f64) {
        let (mut p_sum, mut s_sum) = (0.0f64, 0.0f64);
        for x in &self.a {
            p_sum += if x.negated { x.p * -0.5 } else { x.p };
            s_sum += x.s;
        }
        let n = if self.a.is_empty() { 1.0 } else { self.a.len() as f64 };
        (p_sum / n, s_sum / n)
    }
}

/// Steps 1-5 of pattern's `find_tokens`: the tokens before sentence
/// splitting, as byte ranges of `text`.
///
/// The reference rewrites the whole string several times (contractions,
/// quotes, line breaks, whitespace) and then splits it; every token it gets
/// is still a contiguous piece of the original text, which this single pass
/// finds directly:
/// * "n't" starts a new token (the other contraction rules only put a space
///   before an apostrophe, which the quote rule does anyway);
/// * each of `“ ” ‘ ’ ' "` is a token of its own;
/// * whitespace separates tokens, and two or more line breaks in a row
///   (`\r\n` counting as one) are a sentence end.
fn split_tokens(text: &str, out: &mut Vec<Tok>) {
    let bytes = text.as_bytes();
    let mut start: Option<usize> = None;
    let mut newlines = 0usize;
    let mut i = 0usize;
    while i < bytes.len() {
        let class = BYTE_CLASS[bytes[i] as usize];
        if class == ORDINARY {
            // The common case: letters and punctuation inside a token.
            if newlines >= 2 {
                out.push(Tok::BLANK_LINE);
            }
            newlines = 0;
            start.get_or_insert(i);
            i += 1;
            while i < bytes.len() && BYTE_CLASS[bytes[i] as usize] == ORDINARY {
                i += 1;
            }
            continue;
        }
        if bytes[i] == b' ' {
            // The most common separator: ends the token and any run of
            // line breaks.
            if let Some(s) = start.take() {
                split_punctuation(text, s, i, out);
            }
            if newlines >= 2 {
                out.push(Tok::BLANK_LINE);
            }
            newlines = 0;
            i += 1;
            continue;
        }
        let (c, len) = if class == NON_ASCII {
            let c = text[i..].chars().next().unwrap_or('\u{fffd}');
            (c, c.len_utf8())
        } else {
            (bytes[i] as char, 1)
        };
        if is_py_space(c) {
            if let Some(s) = start.take() {
                split_punctuation(text, s, i, out);
            }
            match c {
                '\n' => newlines += 1,
                // "\r\n" is one line break.
                '\r' if bytes.get(i + 1) == Some(&b'\n') => {}
                _ => {
                    if newlines >= 2 {
                        out.push(Tok::BLANK_LINE);
                    }
                    newlines = 0;
                }
            }
            i += len;
            continue;
        }
        if newlines >= 2 {
            out.push(Tok::BLANK_LINE);
        }
        newlines = 0;
        if matches!(c, '“' | '”' | '‘' | '’' | '\'' | '"') {
            if let Some(s) = start.take() {
                if c == '\'' && i >= 1 && bytes[i - 1] == b'n' && bytes.get(i + 1) == Some(&b't') {
                    // "n't": the reference splits "don't" into "do n ' t".
                    split_punctuation(text, s, i - 1, out);
                    split_punctuation(text, i - 1, i, out);
                } else {
                    split_punctuation(text, s, i, out);
                }
            }
            split_punctuation(text, i, i + len, out);
        } else {
            start.get_or_insert(i);
        }
        i += len;
    }
    if let Some(s) = start {
        split_punctuation(text, s, text.len(), out);
    }
    if newlines >= 2 {
        out.push(Tok::BLANK_LINE);
    }
}

const ORDINARY: u8 = 0;
const SPECIAL: u8 = 1;
const NON_ASCII: u8 = 2;

/// Per byte: can the tokenizer treat it as an ordinary character inside a
/// token (ASCII, not whitespace, not a quote)?
const BYTE_CLASS: [u8; 256] = {
    let mut table = [ORDINARY; 256];
    let mut b = 0usize;
    while b < 256 {
        let special = matches!(
            b as u8,
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | b' ' | b'\'' | b'"'
        );
        if b >= 0x80 {
            table[b] = NON_ASCII;
        } else if special {
            table[b] = SPECIAL;
        }
        b += 1;
    }
    table
};

/// `PUNCTUATION` as a table over bytes.
const PUNCTUATION_TABLE: [bool; 256] = super::byte_set(PUNCTUATION.as_bytes());

/// Whether byte `b` is one of pattern's punctuation marks (all ASCII).
#[inline]
fn is_punct_byte(b: u8) -> bool {
    PUNCTUATION_TABLE[b as usize]
}

/// Splits leading and trailing punctuation off the token `text[start..end]`,
/// keeping abbreviations and splitting an ellipsis as one token.
#[inline(always)]
fn split_punctuation(text: &str, start: usize, end: usize, out: &mut Vec<Tok>) {
    // Most pieces are plain words: no punctuation at either end.
    let bytes = text.as_bytes();
    let mark = |b: u8| is_punct_byte(b) || b == b'.';
    if start < end && !is_punct_byte(bytes[start]) {
        let last = bytes[end - 1];
        if !mark(last) {
            out.push(Tok::new(text, start, end));
            return;
        }
        // The next most common: a word and one mark ("word," "word.").
        if end - start >= 2 && !mark(bytes[end - 2]) {
            if last != b'.' || !is_abbreviation(&text[start..end]) {
                out.push(Tok::new(text, start, end - 1));
                out.push(Tok::new(text, end - 1, end));
            } else {
                out.push(Tok::new(text, start, end));
            }
            return;
        }
    }
    split_punctuation_marks(text, start, end, out);
}

/// `split_punctuation` for pieces with punctuation at an end.
#[inline(never)]
fn split_punctuation_marks(text: &str, mut start: usize, mut end: usize, out: &mut Vec<Tok>) {
    let bytes = text.as_bytes();
    // Punctuation is ASCII, so one byte is one character here.
    while start < end && is_punct_byte(bytes[start]) {
        out.push(Tok::new(text, start, start + 1));
        start += 1;
    }
    let ends_with_mark = |end: usize| is_punct_byte(bytes[end - 1]) || bytes[end - 1] == b'.';
    if start < end && !ends_with_mark(end) {
        out.push(Tok::new(text, start, end));
        return;
    }
    let first_tail = out.len();
    while start < end && ends_with_mark(end) {
        if is_punct_byte(bytes[end - 1]) {
            out.push(Tok::new(text, end - 1, end));
            end -= 1;
        }
        if text[start..end].ends_with("...") {
            out.push(Tok::new(text, end - 3, end));
            end -= 3;
            while end > start && bytes[end - 1] == b'.' {
                end -= 1;
            }
        }
        if end > start && bytes[end - 1] == b'.' {
            if is_abbreviation(&text[start..end]) {
                break;
            }
            out.push(Tok::new(text, end - 1, end));
            end -= 1;
        }
    }
    // The core goes before its tail, which was collected in reverse.
    if start < end {
        out.push(Tok::new(text, start, end));
        out[first_tail..].rotate_right(1);
    }
    out[first_tail + usize::from(start < end)..].reverse();
}

/// pattern's abbreviation test for a token ending in a period.
fn is_abbreviation(t: &str) -> bool {
    if ABBREVIATIONS.contains(&t) {
        return true;
    }
    let b = t.as_bytes();
    // "U.S.", "T.": one or more (ASCII letter, period) pairs.
    if b.len().is_multiple_of(2) && b.chunks(2).all(|p| p[0].is_ascii_alphabetic() && p[1] == b'.') {
        return true;
    }
    // "Mr.", "Ltd.": a capital, one or more consonants (or '|', which the
    // reference's character class contains by accident), then any one
    // character (here always the period).
    let mut chars = t.chars();
    let (Some(first), Some(_last)) = (chars.next(), chars.next_back()) else {
        return false;
    };
    let middle = chars.as_str();
    first.is_ascii_uppercase()
        && !middle.is_empty()
        && middle
            .bytes()
            .all(|c| matches!(c, b'b'..=b'd' | b'f'..=b'h' | b'j'..=b'n' | b'p'..=b't' | b'v'..=b'x' | b'z' | b'|'))
}

/// Reads `en-sentiment.xml` and averages it the way pattern and TextBlob do.
fn load_lexicon(xml: &str) -> Result<FxHashMap<Box<str>, Entry>, LexiconError> {
    // form -> [(pos, [senses])], both in order of first appearance.
    type Senses = Vec<[f64; 3]>;
    let mut order: Vec<String> = Vec::new();
    let mut forms: FxHashMap<String, Vec<(Option<String>, Senses)>> = FxHashMap::default();
    for (index, element) in xml.split("<word ").skip(1).enumerate() {
        let err = |reason: String| LexiconError::Word { index, reason };
        let end = element.find("/>").ok_or_else(|| err("no '/>'".into()))?;
        let attrs = parse_attributes(&element[..end]).map_err(err)?;
        let get = |name: &str| attrs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let number = |name: &str, default: f64| -> Result<f64, LexiconError> {
            match get(name) {
                None => Ok(default),
                Some(v) => v.trim().parse::<f64>().map_err(|e| err(format!("{name}={v:?}: {e}"))),
            }
        };
        let psi = [
            number("polarity", 0.0)?,
            number("subjectivity", 0.0)?,
            number("intensity", 1.0)?,
        ];
        let Some(form) = get("form").filter(|f| !f.is_empty()) else {
            continue;
        };
        let pos = get("pos").map(str::to_string);
        let groups = forms.entry(form.to_string()).or_insert_with(|| {
            order.push(form.to_string());
            Vec::new()
        });
        match groups.iter_mut().find(|(p, _)| *p == pos) {
            Some((_, senses)) => senses.push(psi),
            None => groups.push((pos, vec![psi])),
        }
    }

    let avg = |values: &mut dyn Iterator<Item = f64>| -> f64 {
        let v: Vec<f64> = values.collect();
        let len = if v.is_empty() { 1.0 } else { v.len() as f64 };
        py_fsum(v) / len
    };
    let mut words: FxHashMap<Box<str>, Entry> = FxHashMap::default();
    // Per form: (the JJ average if any) to derive adverbs afterwards.
    let mut adjectives: Vec<(String, [f64; 3])> = Vec::new();
    for form in &order {
        let groups = &forms[form];
        // Average the senses of each part of speech...
        let by_pos: Vec<(Option<&str>, [f64; 3])> = groups
            .iter()
            .map(|(pos, senses)| {
                let col = |k: usize| avg(&mut senses.iter().map(|s| s[k]));
                (pos.as_deref(), [col(0), col(1), col(2)])
            })
            .collect();
        // ...then the parts of speech (a missing `pos` is Python's None key,
        // which this average replaces in place).
        let col = |k: usize| avg(&mut by_pos.iter().map(|(_, v)| v[k]));
        let untagged = [col(0), col(1), col(2)];
        let modifier = by_pos.iter().any(|(pos, _)| *pos == Some("RB"));
        words.insert(
            form.as_str().into(),
            Entry {
                polarity: untagged[0],
                subjectivity: untagged[1],
                intensity: untagged[2],
                modifier,
            },
        );
        if let Some((_, jj)) = by_pos.iter().find(|(pos, _)| *pos == Some("JJ")) {
            adjectives.push((form.clone(), *jj));
        }
    }
    // "Map 'terrible' to adverb 'terribly'": later adjectives win.
    for (form, jj) in adjectives {
        let mut stem = form;
        if stem.ends_with('y') {
            stem.pop();
            stem.push('i');
        }
        if stem.ends_with("le") {
            stem.truncate(stem.len() - 2);
        }
        stem.push_str("ly");
        words.insert(
            stem.into_boxed_str(),
            Entry {
                polarity: jj[0],
                subjectivity: jj[1],
                intensity: jj[2],
                modifier: true,
            },
        );
    }
    Ok(words)
}

/// `name="value"` pairs of one XML start tag (the lexicon uses double
/// quotes and the five predefined entities at most).
fn parse_attributes(tag: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rest = tag.trim();
    while !rest.is_empty() {
        let eq = rest
            .find('=')
            .ok_or_else(|| format!("attribute without value near {rest:?}"))?;
        let name = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().filter(|&q| q == '"' || q == '\'');
        let quote = quote.ok_or_else(|| format!("unquoted value for {name}"))?;
        let close = after[1..]
            .find(quote)
            .ok_or_else(|| format!("unterminated value for {name}"))?;
        let raw = &after[1..1 + close];
        let value = if raw.contains('&') {
            raw.replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&")
        } else {
            raw.to_string()
        };
        out.push((name, value));
        rest = after[close + 2..].trim_start();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tb() -> &'static TextBlob {
        TextBlob::global()
    }

    #[test]
    fn lexicon_averages_senses_and_derives_adverbs() {
        let w = |form: &str| {
            tb().words
                .get(form)
                .unwrap_or_else(|| panic!("{form} is in the lexicon"))
        };
        // "able" has four JJ senses: polarity 0.5 each, subjectivity 1, .5, .5, .5.
        let able = w("able");
        assert_eq!((able.polarity, able.subjectivity), (0.5, 0.625));
        // "ably" is derived from "able"; "terribly" from "terrible".
        assert!(w("ably").modifier);
        assert_eq!(w("terribly").polarity, w("terrible").polarity);
        // 1,528 forms in the file; with the derived adverbs, 2,860 entries,
        // as `len(textblob.en.sentiment)` after loading.
        assert_eq!(tb().words.len(), 2860);
        // `sentiment` skips one-byte words other than "!": none may be a form.
        assert!(tb().words.iter().all(|(form, _)| form.len() > 1));
    }

    #[test]
    fn tokenizer_matches_pattern() {
        let t = |s: &str| tb().find_tokens(s);
        assert_eq!(t("The cat purs."), vec!["The cat purs ."]);
        assert_eq!(
            t("I don't know... Mr. Smith, e.g. U.S. (!) ok"),
            vec!["I do n ' t know ...", "Mr. Smith , e.g. U.S. (!)", "ok"]
        );
        assert_eq!(t("hello :c) there :-D"), vec!["hello :c) there :-D"]);
        assert_eq!(t("a\n\nb\r\n\r\nc\nd"), vec!["a", "b", "c d"]);
        assert_eq!(t("\"Quoted.\" Next"), vec!["\" Quoted .", "\" Next"]);
    }

    #[test]
    fn known_scores() {
        // Values printed by TextBlob 0.20.1 on CPython 3.12.1.
        assert_eq!(tb().sentiment("The book was good."), (0.7, 0.6000000000000001));
        assert_eq!(tb().sentiment(""), (0.0, 0.0));
        assert_eq!(tb().sentiment("not good"), (-0.35, 0.6000000000000001));
        assert_eq!(tb().sentiment("very good!"), (1.0, 0.7800000000000001));
    }
}
