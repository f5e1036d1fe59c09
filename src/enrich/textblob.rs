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
    words: FxHashMap<Box<str>, Entry>,
    /// Lower-cased emoticon -> polarity, in reference order of precedence.
    emoticons: FxHashMap<Box<str>, f64>,
    re_sarcasm: Regex,
    re_emoticons: Regex,
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
        for (polarity, faces) in EMOTICONS {
            for face in faces {
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
            words,
            emoticons,
            re_sarcasm,
            re_emoticons,
        })
    }

    /// `TextBlob(text).sentiment`: `(polarity, subjectivity)`.
    pub fn sentiment(&self, text: &str) -> (f64, f64) {
        let sentences = self.find_tokens(text);
        let mut words: Vec<String> = Vec::new();
        for sentence in &sentences {
            for w in sentence.split(is_py_space).filter(|w| !w.is_empty()) {
                words.push(py_lower(w));
            }
        }
        let assessments = self.assessments(&words);
        let n = assessments.len();
        let (mut p_sum, mut s_sum) = (0.0f64, 0.0f64);
        for (p, s) in assessments {
            p_sum += p;
            s_sum += s;
        }
        let n = if n == 0 { 1.0 } else { n as f64 };
        (p_sum / n, s_sum / n)
    }

    /// pattern's `find_tokens`: the sentences of `text`, each a string of
    /// space-separated tokens.
    fn find_tokens(&self, text: &str) -> Vec<String> {
        let tokens = split_tokens(text);
        // Sentence boundaries.
        let is_end = |t: &str| matches!(t, "..." | "." | "!" | "?" | EOS);
        let continues = |t: &str| matches!(t, "”" | "’" | "..." | "." | "!" | "?" | ")" | EOS);
        let mut sentences: Vec<Vec<&str>> = vec![Vec::new()];
        let (mut i, mut j) = (0usize, 0usize);
        while j < tokens.len() {
            if is_end(&tokens[j]) {
                // A quote right after the end is never taken into the
                // sentence: the reference counts quotes in a list that is
                // always empty at this point.
                while j < tokens.len() && continues(&tokens[j]) {
                    j += 1;
                }
                if let Some(last) = sentences.last_mut() {
                    last.extend(tokens[i..j].iter().map(String::as_str).filter(|t| *t != EOS));
                }
                sentences.push(Vec::new());
                i = j;
            }
            j += 1;
        }
        if let Some(last) = sentences.last_mut() {
            last.extend(tokens[i..j.min(tokens.len())].iter().map(String::as_str));
        }
        sentences
            .into_iter()
            .filter(|s| !s.is_empty())
            .map(|s| {
                let joined = s.join(" ");
                let joined = self.re_sarcasm.replace_all(&joined, "(!)");
                self.re_emoticons
                    .replace_all(&joined, |caps: &regex::Captures<'_>| {
                        format!("{}{}", caps[1].replace(' ', ""), &caps[2])
                    })
                    .into_owned()
            })
            .collect()
    }

    /// pattern's `Sentiment.assessments` for untagged words, reduced to the
    /// `(polarity, subjectivity)` of each assessment.
    fn assessments(&self, words: &[String]) -> Vec<(f64, f64)> {
        struct Assessment {
            p: f64,
            s: f64,
            i: f64,
            negated: bool,
        }
        let mut a: Vec<Assessment> = Vec::new();
        // Preceding modifier (its word) and preceding negation.
        let mut m: Option<&str> = None;
        let mut n: bool = false;
        for w in words {
            let w = w.as_str();
            if let Some(e) = self.words.get(w) {
                if m.is_none() {
                    a.push(Assessment {
                        p: e.polarity,
                        s: e.subjectivity,
                        i: e.intensity,
                        negated: false,
                    });
                }
                if let (Some(_), Some(last)) = (m, a.last_mut()) {
                    last.p = (e.polarity * last.i).clamp(-1.0, 1.0);
                    last.s = (e.subjectivity * last.i).clamp(-1.0, 1.0);
                    last.i = e.intensity;
                }
                if n {
                    if let Some(last) = a.last_mut() {
                        last.i = 1.0 / last.i;
                        last.negated = true;
                    }
                }
                m = if e.modifier { Some(w) } else { None };
                n = NEGATIONS.contains(&w);
            } else {
                if NEGATIONS.contains(&w) {
                    n = true;
                } else if n && w.trim_matches('\'').chars().count() > 1 {
                    n = false;
                }
                if n && m.is_some_and(|m| m.ends_with("ly")) {
                    if let Some(last) = a.last_mut() {
                        last.negated = true;
                    }
                    n = false;
                } else if m.is_some() && w.chars().count() > 2 {
                    m = None;
                }
                if w == "!" {
                    if let Some(last) = a.last_mut() {
                        last.p = (last.p * 1.25).clamp(-1.0, 1.0);
                    }
                }
                if w == "(!)" {
                    a.push(Assessment {
                        p: 0.0,
                        s: 1.0,
                        i: 1.0,
                        negated: false,
                    });
                }
                if let Some(&p) = self.emoticons.get(w) {
                    a.push(Assessment {
                        p,
                        s: 1.0,
                        i: 1.0,
                        negated: false,
                    });
                }
            }
        }
        a.into_iter()
            .map(|x| (if x.negated { x.p * -0.5 } else { x.p }, x.s))
            .collect()
    }
}

/// Steps 1-5 of pattern's `find_tokens`: the tokens before sentence
/// splitting.
fn split_tokens(text: &str) -> Vec<String> {
    // Contractions: only "n't" changes the outcome; the other rules put a
    // space before an apostrophe, which the quote rule below does anyway.
    let s = text.replace("n't", " n't");
    let mut spaced = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if matches!(c, '“' | '”' | '‘' | '’' | '\'' | '"') {
            spaced.push(' ');
            spaced.push(c);
            spaced.push(' ');
        } else {
            spaced.push(c);
        }
    }
    let s = spaced.replace("\r\n", "\n");
    // Blank lines (two or more newlines in a row) end a sentence; then every
    // run of whitespace is one separator.
    let mut collapsed = String::with_capacity(s.len() + 16);
    let mut newlines = 0usize;
    let flush_newlines = |collapsed: &mut String, newlines: &mut usize| {
        if *newlines >= 2 {
            collapsed.push(' ');
            collapsed.push_str(EOS);
            collapsed.push(' ');
        } else if *newlines == 1 {
            collapsed.push(' ');
        }
        *newlines = 0;
    };
    for c in s.chars() {
        if c == '\n' {
            newlines += 1;
            continue;
        }
        flush_newlines(&mut collapsed, &mut newlines);
        if is_py_space(c) {
            collapsed.push(' ');
        } else {
            collapsed.push(c);
        }
    }
    flush_newlines(&mut collapsed, &mut newlines);

    let mut tokens = Vec::new();
    for t in collapsed.split(' ').filter(|t| !t.is_empty()) {
        split_punctuation(t, &mut tokens);
    }
    tokens
}

fn is_punctuation(c: char) -> bool {
    PUNCTUATION.contains(c)
}

/// Splits leading and trailing punctuation off one whitespace-free token,
/// keeping abbreviations and splitting an ellipsis as one token.
fn split_punctuation(token: &str, out: &mut Vec<String>) {
    let mut t = token;
    while let Some(c) = t.chars().next().filter(|&c| is_punctuation(c)) {
        out.push(c.to_string());
        t = &t[c.len_utf8()..];
    }
    let mut tail: Vec<&str> = Vec::new();
    while t.ends_with(|c: char| is_punctuation(c) || c == '.') {
        if let Some(c) = t.chars().next_back().filter(|&c| is_punctuation(c)) {
            let at = t.len() - c.len_utf8();
            tail.push(&t[at..]);
            t = &t[..at];
        }
        if t.ends_with("...") {
            tail.push("...");
            t = t[..t.len() - 3].trim_end_matches('.');
        }
        if t.ends_with('.') {
            if is_abbreviation(t) {
                break;
            }
            tail.push(".");
            t = &t[..t.len() - 1];
        }
    }
    if !t.is_empty() {
        out.push(t.to_string());
    }
    out.extend(tail.iter().rev().map(|s| s.to_string()));
}

/// pattern's abbreviation test for a token ending in a period.
fn is_abbreviation(t: &str) -> bool {
    if ABBREVIATIONS.contains(&t) {
        return true;
    }
    let b = t.as_bytes();
    // "U.S.", "T.": one or more (ASCII letter, period) pairs.
    if b.len() % 2 == 0 && b.chunks(2).all(|p| p[0].is_ascii_alphabetic() && p[1] == b'.') {
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
    first.is_ascii_uppercase() && !middle.is_empty() && middle.bytes().all(|c| b"bcdfghjklmnpqrstvwxz|".contains(&c))
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
        let value = raw
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&");
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
        let w = &tb().words;
        // "able" has four JJ senses: polarity 0.5 each, subjectivity 1, .5, .5, .5.
        let able = w["able"];
        assert_eq!((able.polarity, able.subjectivity), (0.5, 0.625));
        // "ably" is derived from "able"; "terribly" from "terrible".
        assert!(w["ably"].modifier);
        assert_eq!(w["terribly"].polarity, w["terrible"].polarity);
        assert_eq!(w.len(), 2860 + derived_count());
    }

    fn derived_count() -> usize {
        // Every derived adverb that is not already a lexicon form.
        tb().words.len() - 2860
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
