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

use super::pyfloat::{PyNum, py_round, py_sum};
use super::pystr::{is_py_space, py_isupper, py_lower_into};

const LEXICON: &str = include_str!("../../data/lexicons/vader_lexicon.txt");
const EMOJI_LEXICON: &str = include_str!("../../data/lexicons/emoji_utf8_lexicon.txt");

const B_INCR: f64 = 0.293;
const B_DECR: f64 = -0.293;
const C_INCR: f64 = 0.733;
const N_SCALAR: f64 = -0.74;

const NEGATE: &[&str] = &[
    "aint",
    "arent",
    "cannot",
    "cant",
    "couldnt",
    "darent",
    "didnt",
    "doesnt",
    "ain't",
    "aren't",
    "can't",
    "couldn't",
    "daren't",
    "didn't",
    "doesn't",
    "dont",
    "hadnt",
    "hasnt",
    "havent",
    "isnt",
    "mightnt",
    "mustnt",
    "neither",
    "don't",
    "hadn't",
    "hasn't",
    "haven't",
    "isn't",
    "mightn't",
    "mustn't",
    "neednt",
    "needn't",
    "never",
    "none",
    "nope",
    "nor",
    "not",
    "nothing",
    "nowhere",
    "oughtnt",
    "shant",
    "shouldnt",
    "uhuh",
    "wasnt",
    "werent",
    "oughtn't",
    "shan't",
    "shouldn't",
    "uh-uh",
    "wasn't",
    "weren't",
    "without",
    "wont",
    "wouldnt",
    "won't",
    "wouldn't",
    "rarely",
    "seldom",
    "despite",
];

const BOOSTERS: &[(&str, f64)] = &[
    ("absolutely", B_INCR),
    ("amazingly", B_INCR),
    ("awfully", B_INCR),
    ("completely", B_INCR),
    ("considerable", B_INCR),
    ("considerably", B_INCR),
    ("decidedly", B_INCR),
    ("deeply", B_INCR),
    ("effing", B_INCR),
    ("enormous", B_INCR),
    ("enormously", B_INCR),
    ("entirely", B_INCR),
    ("especially", B_INCR),
    ("exceptional", B_INCR),
    ("exceptionally", B_INCR),
    ("extreme", B_INCR),
    ("extremely", B_INCR),
    ("fabulously", B_INCR),
    ("flipping", B_INCR),
    ("flippin", B_INCR),
    ("frackin", B_INCR),
    ("fracking", B_INCR),
    ("fricking", B_INCR),
    ("frickin", B_INCR),
    ("frigging", B_INCR),
    ("friggin", B_INCR),
    ("fully", B_INCR),
    ("fuckin", B_INCR),
    ("fucking", B_INCR),
    ("fuggin", B_INCR),
    ("fugging", B_INCR),
    ("greatly", B_INCR),
    ("hella", B_INCR),
    ("highly", B_INCR),
    ("hugely", B_INCR),
    ("incredible", B_INCR),
    ("incredibly", B_INCR),
    ("intensely", B_INCR),
    ("major", B_INCR),
    ("majorly", B_INCR),
    ("more", B_INCR),
    ("most", B_INCR),
    ("particularly", B_INCR),
    ("purely", B_INCR),
    ("quite", B_INCR),
    ("really", B_INCR),
    ("remarkably", B_INCR),
    ("so", B_INCR),
    ("substantially", B_INCR),
    ("thoroughly", B_INCR),
    ("total", B_INCR),
    ("totally", B_INCR),
    ("tremendous", B_INCR),
    ("tremendously", B_INCR),
    ("uber", B_INCR),
    ("unbelievably", B_INCR),
    ("unusually", B_INCR),
    ("utter", B_INCR),
    ("utterly", B_INCR),
    ("very", B_INCR),
    ("almost", B_DECR),
    ("barely", B_DECR),
    ("hardly", B_DECR),
    ("just enough", B_DECR),
    ("kind of", B_DECR),
    ("kinda", B_DECR),
    ("kindof", B_DECR),
    ("kind-of", B_DECR),
    ("less", B_DECR),
    ("little", B_DECR),
    ("marginal", B_DECR),
    ("marginally", B_DECR),
    ("occasional", B_DECR),
    ("occasionally", B_DECR),
    ("partly", B_DECR),
    ("scarce", B_DECR),
    ("scarcely", B_DECR),
    ("slight", B_DECR),
    ("slightly", B_DECR),
    ("somewhat", B_DECR),
    ("sort of", B_DECR),
    ("sorta", B_DECR),
    ("sortof", B_DECR),
    ("sort-of", B_DECR),
];

/// Idioms that set the valence outright (`SPECIAL_CASES`); the integer
/// ones stay Python ints, which matters to `sum()`.
const SPECIAL_CASES: [(&str, PyNum); 9] = [
    ("the shit", PyNum::Int(3)),
    ("the bomb", PyNum::Int(3)),
    ("bad ass", PyNum::Float(1.5)),
    ("badass", PyNum::Float(1.5)),
    ("bus stop", PyNum::Float(0.0)),
    ("yeah right", PyNum::Int(-2)),
    ("kiss of death", PyNum::Float(-1.5)),
    ("to die for", PyNum::Int(3)),
    ("beating heart", PyNum::Float(3.5)),
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

/// The VADER analyzer: its word lexicon and emoji lexicon.
/// Build it once per process with [`Vader::global`].
pub struct Vader {
    lexicon: FxHashMap<Box<str>, f64>,
    emojis: FxHashMap<char, Box<str>>,
    boosters: FxHashMap<&'static str, f64>,
}

/// Errors in the lexicon files (only reachable with a damaged build).
#[derive(Debug, thiserror::Error)]
pub enum LexiconError {
    /// A line that is not `word<TAB>measure…`.
    #[error("{file} line {line}: {reason}")]
    Line {
        file: &'static str,
        line: usize,
        reason: String,
    },
}

/// One token with what the rules ask of it, computed once.
struct Token {
    lower: String,
    valence: Option<f64>,
    booster: Option<f64>,
    upper: bool,
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
        let mut words = FxHashMap::default();
        for (n, line) in lexicon.trim_end_matches('\n').split('\n').enumerate() {
            if line.is_empty() {
                continue;
            }
            let mut fields = line.trim_matches(is_py_space).split('\t');
            let (Some(word), Some(measure)) = (fields.next(), fields.next()) else {
                return Err(LexiconError::Line {
                    file: "vader_lexicon.txt",
                    line: n + 1,
                    reason: "no tab".into(),
                });
            };
            let value = measure
                .trim_matches(is_py_space)
                .parse::<f64>()
                .map_err(|e| LexiconError::Line {
                    file: "vader_lexicon.txt",
                    line: n + 1,
                    reason: e.to_string(),
                })?;
            words.insert(word.into(), value);
        }
        let mut emojis = FxHashMap::default();
        for (n, line) in emoji_lexicon.trim_end_matches('\n').split('\n').enumerate() {
            let mut fields = line.trim_matches(is_py_space).split('\t');
            let (Some(emoji), Some(description)) = (fields.next(), fields.next()) else {
                return Err(LexiconError::Line {
                    file: "emoji_utf8_lexicon.txt",
                    line: n + 1,
                    reason: "no tab".into(),
                });
            };
            // The reference looks characters up one at a time: keys of more
            // than one code point can never match.
            let mut chars = emoji.chars();
            if let (Some(c), None) = (chars.next(), chars.next()) {
                emojis.insert(c, description.into());
            }
        }
        let boosters = BOOSTERS.iter().copied().collect();
        Ok(Vader {
            lexicon: words,
            emojis,
            boosters,
        })
    }

    /// `SentimentIntensityAnalyzer().polarity_scores(text)`.
    pub fn polarity_scores(&self, text: &str) -> VaderScores {
        let text = self.replace_emojis(text);
        let text = text.trim_matches(is_py_space);

        let tokens: Vec<Token> = text
            .split(is_py_space)
            .filter(|t| !t.is_empty())
            .map(|raw| {
                let stripped = raw.trim_matches(|c: char| c.is_ascii_punctuation());
                let t = if stripped.chars().count() <= 2 { raw } else { stripped };
                let mut lower = String::new();
                py_lower_into(t, &mut lower);
                Token {
                    valence: self.lexicon.get(lower.as_str()).copied(),
                    booster: self.boosters.get(lower.as_str()).copied(),
                    upper: py_isupper(t),
                    lower,
                }
            })
            .collect();
        let upper_count = tokens.iter().filter(|t| t.upper).count();
        let cap_diff = upper_count > 0 && upper_count < tokens.len();

        let mut sentiments: Vec<PyNum> = Vec::with_capacity(tokens.len());
        for i in 0..tokens.len() {
            let item = &tokens[i];
            if item.booster.is_some() || (i + 1 < tokens.len() && item.lower == "kind" && tokens[i + 1].lower == "of") {
                sentiments.push(PyNum::Int(0));
                continue;
            }
            sentiments.push(self.sentiment_valence(&tokens, i, cap_diff));
        }
        but_check(&tokens, &mut sentiments);
        score_valence(&sentiments, text)
    }

    fn replace_emojis(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut prev_space = true;
        for c in text.chars() {
            if let Some(description) = self.emojis.get(&c) {
                if !prev_space {
                    out.push(' ');
                }
                out.push_str(description);
                prev_space = false;
            } else {
                out.push(c);
                prev_space = c == ' ';
            }
        }
        out
    }

    fn in_lexicon(&self, token: &Token) -> bool {
        token.valence.is_some()
    }

    fn sentiment_valence(&self, tokens: &[Token], i: usize, cap_diff: bool) -> PyNum {
        let item = &tokens[i];
        let Some(base) = item.valence else {
            return PyNum::Int(0);
        };
        let lower = |k: usize| tokens[k].lower.as_str();
        let mut valence = PyNum::Float(base);
        if item.lower == "no" && i + 1 < tokens.len() && self.in_lexicon(&tokens[i + 1]) {
            // "no" negates the next lexicon word instead of scoring itself.
            valence = PyNum::Float(0.0);
        }
        if (i > 0 && lower(i - 1) == "no")
            || (i > 1 && lower(i - 2) == "no")
            || (i > 2 && lower(i - 3) == "no" && matches!(lower(i - 1), "or" | "nor"))
        {
            valence = PyNum::Float(base * N_SCALAR);
        }
        if item.upper && cap_diff {
            let v = valence.as_f64();
            valence = PyNum::Float(if v > 0.0 { v + C_INCR } else { v - C_INCR });
        }
        for start_i in 0..3 {
            if i > start_i && !self.in_lexicon(&tokens[i - (start_i + 1)]) {
                let mut s = scalar_inc_dec(&tokens[i - (start_i + 1)], valence.as_f64(), cap_diff);
                if start_i == 1 && s != 0.0 {
                    s *= 0.95;
                }
                if start_i == 2 && s != 0.0 {
                    s *= 0.9;
                }
                valence = add(valence, s);
                valence = negation_check(valence, tokens, start_i, i);
                if start_i == 2 {
                    valence = special_idioms_check(valence, tokens, i);
                }
            }
        }
        least_check(valence, tokens, i, |k| self.in_lexicon(&tokens[k]))
    }
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

fn is_negated(lower: &str) -> bool {
    NEGATE.contains(&lower) || lower.contains("n't")
}

fn scalar_inc_dec(token: &Token, valence: f64, cap_diff: bool) -> f64 {
    let Some(mut scalar) = token.booster else {
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

fn negation_check(valence: PyNum, tokens: &[Token], start_i: usize, i: usize) -> PyNum {
    let lower = |k: usize| tokens[k].lower.as_str();
    match start_i {
        0 => {
            if is_negated(lower(i - 1)) {
                return mul(valence, N_SCALAR);
            }
        }
        1 => {
            if lower(i - 2) == "never" && matches!(lower(i - 1), "so" | "this") {
                return mul(valence, 1.25);
            } else if lower(i - 2) == "without" && lower(i - 1) == "doubt" {
                return valence;
            } else if is_negated(lower(i - 2)) {
                return mul(valence, N_SCALAR);
            }
        }
        _ => {
            // As written in the reference: the `or` binds the second clause
            // without "never", so "so"/"this" right before the word boosts.
            if (lower(i - 3) == "never" && matches!(lower(i - 2), "so" | "this"))
                || matches!(lower(i - 1), "so" | "this")
            {
                return mul(valence, 1.25);
            } else if lower(i - 3) == "without" && (lower(i - 2) == "doubt" || lower(i - 1) == "doubt") {
                return valence;
            } else if is_negated(lower(i - 3)) {
                return mul(valence, N_SCALAR);
            }
        }
    }
    valence
}

fn special_idioms_check(mut valence: PyNum, tokens: &[Token], i: usize) -> PyNum {
    let lower = |k: usize| tokens[k].lower.as_str();
    let special = |seq: &str| SPECIAL_CASES.iter().find(|(k, _)| *k == seq).map(|(_, v)| *v);
    let onezero = format!("{} {}", lower(i - 1), lower(i));
    let twoonezero = format!("{} {} {}", lower(i - 2), lower(i - 1), lower(i));
    let twoone = format!("{} {}", lower(i - 2), lower(i - 1));
    let threetwoone = format!("{} {} {}", lower(i - 3), lower(i - 2), lower(i - 1));
    let threetwo = format!("{} {}", lower(i - 3), lower(i - 2));
    for seq in [&onezero, &twoonezero, &twoone, &threetwoone, &threetwo] {
        if let Some(v) = special(seq) {
            valence = v;
            break;
        }
    }
    if tokens.len() - 1 > i {
        if let Some(v) = special(&format!("{} {}", lower(i), lower(i + 1))) {
            valence = v;
        }
    }
    if tokens.len() - 1 > i + 1 {
        if let Some(v) = special(&format!("{} {} {}", lower(i), lower(i + 1), lower(i + 2))) {
            valence = v;
        }
    }
    for n_gram in [&threetwoone, &threetwo, &twoone] {
        if let Some((_, b)) = BOOSTERS.iter().find(|(k, _)| k == n_gram) {
            valence = add(valence, *b);
        }
    }
    valence
}

fn least_check(valence: PyNum, tokens: &[Token], i: usize, in_lexicon: impl Fn(usize) -> bool) -> PyNum {
    let lower = |k: usize| tokens[k].lower.as_str();
    if i > 1 && !in_lexicon(i - 1) && lower(i - 1) == "least" {
        if lower(i - 2) != "at" && lower(i - 2) != "very" {
            return mul(valence, N_SCALAR);
        }
    } else if i > 0 && !in_lexicon(i - 1) && lower(i - 1) == "least" {
        return mul(valence, N_SCALAR);
    }
    valence
}

/// The contrastive `but` rule exactly as the reference computes it: each
/// value is looked up again with `list.index`, so the first equal value is
/// the one rescaled, and a value at the position of `but` is left alone.
fn but_check(tokens: &[Token], sentiments: &mut [PyNum]) {
    let Some(bi) = tokens.iter().position(|t| t.lower == "but") else {
        return;
    };
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

fn punctuation_emphasis(text: &str) -> f64 {
    let ep = text.matches('!').count().min(4);
    let qm = text.matches('?').count();
    let ep_amplifier = ep as f64 * 0.292;
    let qm_amplifier = if qm > 1 {
        if qm <= 3 { qm as f64 * 0.18 } else { 0.96 }
    } else {
        0.0
    };
    ep_amplifier + qm_amplifier
}

fn score_valence(sentiments: &[PyNum], text: &str) -> VaderScores {
    if sentiments.is_empty() {
        return VaderScores {
            neg: 0.0,
            neu: 0.0,
            pos: 0.0,
            compound: 0.0,
        };
    }
    let mut sum_s = py_sum(sentiments.iter().copied()).as_f64();
    let amplifier = punctuation_emphasis(text);
    if sum_s > 0.0 {
        sum_s += amplifier;
    } else if sum_s < 0.0 {
        sum_s -= amplifier;
    }
    let compound = normalize(sum_s);

    let (mut pos_sum, mut neg_sum, mut neu_count) = (0.0f64, 0.0f64, 0u32);
    for s in sentiments {
        let v = s.as_f64();
        if v > 0.0 {
            pos_sum += v + 1.0;
        }
        if v < 0.0 {
            neg_sum += v - 1.0;
        }
        if v == 0.0 {
            neu_count += 1;
        }
    }
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
