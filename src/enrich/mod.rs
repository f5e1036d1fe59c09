//! The enrich stage's core: text cleanup and sentiment scores, pure
//! functions with no I/O and no async.
//!
//! * [`textblob`]: TextBlob 0.20.1's default sentiment, bit-identical.
//! * [`vader`]: vaderSentiment 3.3.2's `polarity_scores`, bit-identical.
//! * [`clean`]: the cleanup applied to a post's `body` to give its `text`.
//!
//! [`score`] is the one call the pipeline makes per post. The lexicons are
//! embedded in the binary and parsed once per process.

pub mod clean;
mod pyfloat;
mod pystr;
pub mod textblob;
pub mod vader;
mod wordset;

/// A byte-membership table for `bytes`, built at compile time.
const fn byte_set(bytes: &[u8]) -> [bool; 256] {
    let mut table = [false; 256];
    let mut k = 0;
    while k < bytes.len() {
        table[bytes[k] as usize] = true;
        k += 1;
    }
    table
}

use crate::record::{IncomingPost, Post};
pub use crate::record::{NEGATIVE_THRESHOLD, POSITIVE_THRESHOLD, Scores, Sentiment};

pub use textblob::TextBlob;
pub use vader::{Vader, VaderScores};

/// Scores `text` exactly as given with both analyzers.
pub fn score(text: &str) -> Scores {
    let (polarity, subjectivity) = TextBlob::global().sentiment(text);
    combine((polarity, subjectivity), Vader::global().polarity_scores(text))
}

/// Scores many texts, as [`score`] does each; faster on batches, because
/// each analyzer runs over the whole batch while its lexicon is in cache.
pub fn score_batch<S: AsRef<str>>(texts: &[S]) -> Vec<Scores> {
    let textblob = TextBlob::global();
    let vader = Vader::global();
    let tb: Vec<(f64, f64)> = texts.iter().map(|t| textblob.sentiment(t.as_ref())).collect();
    texts
        .iter()
        .zip(tb)
        .map(|(t, tb)| combine(tb, vader.polarity_scores(t.as_ref())))
        .collect()
}

/// Cleans each body ([`clean::clean`]) and scores the cleaned texts: the
/// enrich stage's work on a batch of posts. Returns `(text, scores)` pairs.
pub fn clean_and_score_batch<S: AsRef<str>>(bodies: &[S]) -> Vec<(String, Scores)> {
    let texts: Vec<String> = bodies.iter().map(|b| clean::clean(b.as_ref())).collect();
    let scores = score_batch(&texts);
    texts.into_iter().zip(scores).collect()
}

/// Enriches one submitted post: cleans its body into `text` and scores it.
pub fn enrich_post(post: IncomingPost, ingested_at: i64) -> Post {
    let text = clean::clean(&post.body);
    let scores = score(&text);
    post.into_post(text, scores, ingested_at)
}

fn combine((polarity, subjectivity): (f64, f64), v: VaderScores) -> Scores {
    Scores {
        polarity,
        subjectivity,
        vader_neg: v.neg,
        vader_neu: v.neu,
        vader_pos: v.pos,
        vader_compound: v.compound,
        sentiment: Sentiment::from_compound(v.compound),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_equals_one_by_one() {
        let texts = [
            "I love it",
            "",
            "not good at all :(",
            "**Great** news https://x.org!",
            "meh",
        ];
        let one: Vec<Scores> = texts.iter().map(|t| score(t)).collect();
        assert_eq!(score_batch(&texts), one);
        let cleaned = clean_and_score_batch(&texts);
        for ((text, scores), body) in cleaned.iter().zip(texts) {
            assert_eq!(*text, clean::clean(body));
            assert_eq!(*scores, score(text));
        }
    }

    #[test]
    fn labels_follow_vader_thresholds() {
        assert_eq!(Sentiment::from_compound(0.05), Sentiment::Positive);
        assert_eq!(Sentiment::from_compound(0.0499), Sentiment::Neutral);
        assert_eq!(Sentiment::from_compound(-0.05), Sentiment::Negative);
        assert_eq!(Sentiment::from_compound(-0.0499), Sentiment::Neutral);
        assert_eq!(score("I love this, it is great").sentiment, Sentiment::Positive);
        assert_eq!(score("This is a terrible, awful day").sentiment, Sentiment::Negative);
    }
}
