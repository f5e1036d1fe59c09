//! Every text of the golden sets scored by chorus and compared with the
//! scores Python TextBlob 0.20.1 and vaderSentiment 3.3.2 give (CPython
//! 3.12), with f64 equality on all six numbers.

use chorus::enrich::{self, Scores};
use serde::Deserialize;

use crate::fixture;

#[derive(Deserialize)]
struct Input {
    id: String,
    body: String,
}

#[derive(Deserialize)]
struct Expected {
    id: String,
    textblob_polarity: f64,
    textblob_subjectivity: f64,
    vader_neg: f64,
    vader_neu: f64,
    vader_pos: f64,
    vader_compound: f64,
}

/// Texts on which chorus is known to differ from Python, with the reason:
/// (set, id, reason). Empty: every golden text is equal.
const KNOWN_DIFFERENCES: &[(&str, &str, &str)] = &[];

fn read_ndjson<T: for<'de> Deserialize<'de>>(path: &std::path::Path) -> Vec<T> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(n, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("{} line {}: {e}", path.display(), n + 1)))
        .collect()
}

fn differing_fields(got: &Scores, want: &Expected) -> Vec<String> {
    let pairs = [
        ("polarity", got.polarity, want.textblob_polarity),
        ("subjectivity", got.subjectivity, want.textblob_subjectivity),
        ("vader_neg", got.vader_neg, want.vader_neg),
        ("vader_neu", got.vader_neu, want.vader_neu),
        ("vader_pos", got.vader_pos, want.vader_pos),
        ("vader_compound", got.vader_compound, want.vader_compound),
    ];
    pairs
        .iter()
        .filter(|(_, g, w)| g != w)
        .map(|(name, g, w)| format!("{name}: chorus {g:?}, python {w:?}"))
        .collect()
}

/// Scores one golden set; fails on any difference not listed in
/// `KNOWN_DIFFERENCES`, and when the listed ones reach 1 in 10,000.
fn check_set(set: &str) {
    let inputs: Vec<Input> = read_ndjson(&fixture(&format!("sentiment/{set}.ndjson")));
    let expected: Vec<Expected> = read_ndjson(&fixture(&format!("sentiment/{set}.expected.ndjson")));
    assert_eq!(
        inputs.len(),
        expected.len(),
        "{set}: inputs and goldens differ in length"
    );
    assert!(!inputs.is_empty(), "{set}: empty golden set");
    let mut unexpected = Vec::new();
    let mut known = 0usize;
    for (input, want) in inputs.iter().zip(&expected) {
        assert_eq!(input.id, want.id, "{set}: goldens out of order");
        let got = enrich::score(&input.body);
        let diff = differing_fields(&got, want);
        if diff.is_empty() {
            continue;
        }
        if KNOWN_DIFFERENCES.iter().any(|(s, id, _)| *s == set && *id == input.id) {
            known += 1;
        } else {
            unexpected.push(format!("{} {:?}: {}", input.id, input.body, diff.join("; ")));
        }
    }
    assert!(
        unexpected.is_empty(),
        "{set}: {} of {} texts differ from Python:\n{}",
        unexpected.len(),
        inputs.len(),
        unexpected.iter().take(20).cloned().collect::<Vec<_>>().join("\n")
    );
    assert!(
        known * 10_000 < inputs.len().max(10_000),
        "{set}: {known} known differences is too many"
    );
}

#[test]
fn reddit_comments_equal_python() {
    check_set("reddit_comments");
}

#[test]
fn goemotions_reddit_comments_equal_python() {
    check_set("goemotions_reddit_comments");
}

#[test]
fn vader_tweets_equal_python() {
    check_set("vader_tweets_sentiment");
}

#[test]
fn tweepy_tweets_equal_python() {
    check_set("tweets_tweepy");
}

#[test]
fn edge_cases_equal_python() {
    check_set("edge_cases");
}

#[test]
fn fuzz_equal_python() {
    check_set("fuzz");
}

#[test]
fn adversarial_equal_python() {
    check_set("adversarial");
}

#[test]
fn vader_agrees_with_vader_parity_crate() {
    // An independent Rust port (vader-parity) as a second opinion on VADER.
    let other = vader_parity::SentimentIntensityAnalyzer::new();
    let ours = enrich::Vader::global();
    let mut checked = 0;
    for set in ["reddit_comments", "vader_tweets_sentiment", "fuzz"] {
        let inputs: Vec<Input> = read_ndjson(&fixture(&format!("sentiment/{set}.ndjson")));
        for input in &inputs {
            let a = ours.polarity_scores(&input.body);
            let b = other.polarity_scores(&input.body);
            assert_eq!(
                (a.neg, a.neu, a.pos, a.compound),
                (b.neg, b.neu, b.pos, b.compound),
                "{set} {}: {:?}",
                input.id,
                input.body
            );
            checked += 1;
        }
    }
    assert!(checked > 20_000);
}
