//! Records on Kafka topics as JSON (`[log] encoding = "json"`, the
//! default there), so that any Kafka client reads them and writes posts
//! chorus takes.
//!
//! The stages work on the compact encoding ([`crate::record::RawView`],
//! [`crate::record::PostView`]);
//! the Kafka log turns a record into JSON as it produces it and back as it
//! reads it, so the stages never see the difference:
//!
//! * `posts.raw` and `posts.enriched`: one JSON object per post with the
//!   record's columns (timestamps as microseconds since the Unix epoch, as
//!   `chorus tail` prints them). An enriched record that says which
//!   version of its post it replaces (the speed layer's prior) carries it
//!   in `chorus_prior`, its first field (`"stale"`, or the hex of its
//!   bytes); other readers may ignore that field.
//! * `posts.dead`: dead letters are JSON already.
//!
//! What another producer writes to `posts.raw` is read as the ingest API
//! reads a line: a canonical record (`created_at` as RFC 3339 or Unix
//! seconds) or raw platform JSON (a Reddit comment, a tweet, a Bluesky or
//! Mastodon post, a Hacker News item), found by its fields. Such a post has
//! no `ingested_at`: the message's timestamp is taken (stable across
//! re-reads, so versions keep their order). A record that is none of
//! these is handed on as it is, and the enrich stage makes it a dead
//! letter with the reason.

use serde::Deserialize;

use super::Topic;
use crate::record::{Post, PostView, Prior, RawPost};

/// The start of an enriched record that carries its prior (the field
/// `chorus_prior`, first).
const PRIOR_START: &[u8] = b"{\"chorus_prior\":\"";

/// A record the stages wrote (compact) as it goes on a Kafka topic.
/// A record that does not decode goes as it is.
pub fn to_json(topic: Topic, value: &[u8]) -> Vec<u8> {
    let json = match topic {
        Topic::Raw => RawPost::from_log_bytes(value)
            .ok()
            .and_then(|raw| serde_json::to_vec(&raw).ok()),
        Topic::Enriched => PostView::with_prior(value).ok().and_then(|(post, prior)| {
            let post = serde_json::to_vec(&post.into_post()).ok()?;
            let prior = match prior {
                Prior::None => return Some(post),
                Prior::Stale => "stale".to_string(),
                Prior::Replaces(bytes) => hex(bytes),
            };
            // The prior as the object's first field, so a reader finds it
            // (or its absence) without parsing the record twice.
            let mut out = Vec::with_capacity(post.len() + prior.len() + 20);
            out.extend_from_slice(PRIOR_START);
            out.extend_from_slice(prior.as_bytes());
            out.extend_from_slice(b"\",");
            out.extend_from_slice(post.get(1..)?);
            Some(out)
        }),
        Topic::Dead => None,
    };
    json.unwrap_or_else(|| value.to_vec())
}

/// A record read from a Kafka topic as the stages read it (compact).
/// `timestamp_micros` is the message's timestamp, the `ingested_at` of a
/// post another producer wrote. Anything else is handed on as it is.
pub fn from_json(topic: Topic, value: &[u8], timestamp_micros: Option<i64>) -> Option<Vec<u8>> {
    if value.first() != Some(&b'{') {
        return None;
    }
    match topic {
        Topic::Raw => {
            // chorus's own records first, then what the ingest API takes.
            if let Ok(raw) = serde_json::from_slice::<RawPost>(value) {
                return Some(raw.to_log_bytes());
            }
            let json: serde_json::Value = serde_json::from_slice(value).ok()?;
            let mut posts = crate::mapping::to_posts(&json, crate::mapping::Format::Auto).ok()?;
            if posts.len() != 1 {
                return None;
            }
            let raw = RawPost {
                incoming: posts.pop()?,
                ingested_at: timestamp_micros?,
            };
            Some(raw.to_log_bytes())
        }
        Topic::Enriched => {
            let post: Post = serde_json::from_slice(value).ok()?;
            // Only chorus writes a prior, as the first field: a record
            // without one (nearly all) is parsed once.
            let prior = if value.starts_with(PRIOR_START) {
                #[derive(Deserialize)]
                struct PriorOnly {
                    chorus_prior: Option<String>,
                }
                serde_json::from_slice::<PriorOnly>(value).ok()?.chorus_prior
            } else {
                None
            };
            let mut record = post.to_log_bytes();
            match prior.as_deref() {
                None => {}
                Some("stale") => Prior::Stale.append_to(&mut record),
                Some(text) => Prior::Replaces(&unhex(text)?).append_to(&mut record),
            }
            Some(record)
        }
        Topic::Dead => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{IncomingPost, Scores};

    fn incoming() -> IncomingPost {
        IncomingPost {
            community: Some("politics".into()),
            author: Some("someone".into()),
            score: Some(7),
            ..IncomingPost::new(
                "reddit",
                "t1_x",
                "I love it, \"really\" \u{1F600}",
                1_700_000_000_000_000,
            )
        }
    }

    #[test]
    fn raw_and_enriched_records_go_through_json_unchanged() {
        let raw = RawPost {
            incoming: incoming(),
            ingested_at: 1_700_000_000_123_456,
        }
        .to_log_bytes();
        let json = to_json(Topic::Raw, &raw);
        let shown: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(shown["id"], "t1_x");
        assert_eq!(shown["created_at"], 1_700_000_000_000_000i64);
        assert_eq!(from_json(Topic::Raw, &json, None).unwrap(), raw);

        let scores = Scores {
            polarity: 0.1 + 0.2,
            subjectivity: 0.6,
            vader_neg: 0.0,
            vader_neu: 0.4,
            vader_pos: 0.6,
            vader_compound: 0.6369,
            sentiment: crate::record::Sentiment::Positive,
        };
        let post = Post {
            incoming: incoming(),
            text: "I love it".into(),
            ingested_at: 1_700_000_000_123_456,
            scores,
        };
        let plain = post.to_log_bytes();
        let back = from_json(Topic::Enriched, &to_json(Topic::Enriched, &plain), None).unwrap();
        assert_eq!(back, plain, "floats and strings exact");
        for prior in [
            Prior::Stale,
            Prior::Replaces(&post.view().to_masked_log_bytes(&[true; 23])),
        ] {
            let mut record = post.to_log_bytes();
            prior.append_to(&mut record);
            let json = to_json(Topic::Enriched, &record);
            assert!(json.starts_with(PRIOR_START), "{}", String::from_utf8_lossy(&json));
            serde_json::from_slice::<serde_json::Value>(&json).expect("valid JSON");
            assert_eq!(from_json(Topic::Enriched, &json, None).unwrap(), record);
        }
    }

    #[test]
    fn posts_of_other_producers_are_read_as_ingest_reads_them() {
        let canonical = br#"{"platform":"reddit","id":"t1_y","body":"so good","created_at":"2024-01-02T03:04:05Z"}"#;
        let record = from_json(Topic::Raw, canonical, Some(1_800_000_000_000_000)).unwrap();
        let raw = RawPost::from_log_bytes(&record).unwrap();
        assert_eq!(raw.incoming.id, "t1_y");
        assert_eq!(raw.incoming.created_at, 1_704_164_645_000_000);
        assert_eq!(raw.ingested_at, 1_800_000_000_000_000, "the message's timestamp");

        let reddit = br#"{"id":"abc","name":"t1_abc","subreddit":"news","author":"a","body":"meh","created_utc":1700000000,"score":3,"link_id":"t3_q","parent_id":"t3_q"}"#;
        let raw = RawPost::from_log_bytes(&from_json(Topic::Raw, reddit, Some(1)).unwrap()).unwrap();
        assert_eq!(
            (raw.incoming.id.as_str(), raw.incoming.community.as_deref()),
            ("t1_abc", Some("news"))
        );

        assert_eq!(
            from_json(Topic::Raw, b"{\"no\": \"post\"}", Some(1)),
            None,
            "handed on as it is"
        );
        assert_eq!(
            from_json(Topic::Raw, canonical, None),
            None,
            "no ingested_at to give it"
        );
        assert_eq!(from_json(Topic::Raw, b"\xC1compact", Some(1)), None);
    }

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(unhex(&hex(&bytes)).unwrap(), bytes);
        assert_eq!(unhex("abc"), None);
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("é1"), None);
    }
}
