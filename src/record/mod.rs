//! The canonical record: one shape for a post from any platform, as
//! `DESIGN.md` fixes it (column names are a contract for SQL, the archive
//! and the API), and the validation of what clients send.
//!
//! [`IncomingPost`] is what ingest accepts (canonical fields, before
//! enrichment); [`Post`] is the enriched record every sink stores;
//! [`batch`] holds its Arrow schema.

pub mod batch;
mod codec;
pub use codec::{DecodeError, IncomingView, PostView, Prior, RawView};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Column names of the record, in table order: the one place they are spelled.
pub mod column {
    pub const PLATFORM: &str = "platform";
    pub const ID: &str = "id";
    pub const COMMUNITY: &str = "community";
    pub const AUTHOR: &str = "author";
    pub const BODY: &str = "body";
    pub const TEXT: &str = "text";
    pub const CREATED_AT: &str = "created_at";
    pub const INGESTED_AT: &str = "ingested_at";
    pub const PARENT_ID: &str = "parent_id";
    pub const THREAD_ID: &str = "thread_id";
    pub const URL: &str = "url";
    pub const SCORE: &str = "score";
    pub const REPOSTS: &str = "reposts";
    pub const AUTHOR_FOLLOWERS: &str = "author_followers";
    pub const LOCATION: &str = "location";
    pub const LANG: &str = "lang";
    pub const POLARITY: &str = "polarity";
    pub const SUBJECTIVITY: &str = "subjectivity";
    pub const VADER_NEG: &str = "vader_neg";
    pub const VADER_NEU: &str = "vader_neu";
    pub const VADER_POS: &str = "vader_pos";
    pub const VADER_COMPOUND: &str = "vader_compound";
    pub const SENTIMENT: &str = "sentiment";

    /// Every column, in table order.
    pub const ALL: [&str; 23] = [
        PLATFORM,
        ID,
        COMMUNITY,
        AUTHOR,
        BODY,
        TEXT,
        CREATED_AT,
        INGESTED_AT,
        PARENT_ID,
        THREAD_ID,
        URL,
        SCORE,
        REPOSTS,
        AUTHOR_FOLLOWERS,
        LOCATION,
        LANG,
        POLARITY,
        SUBJECTIVITY,
        VADER_NEG,
        VADER_NEU,
        VADER_POS,
        VADER_COMPOUND,
        SENTIMENT,
    ];
}

/// `vader_compound` at or above this is `positive`.
pub const POSITIVE_THRESHOLD: f64 = 0.05;
/// `vader_compound` at or below this is `negative`.
pub const NEGATIVE_THRESHOLD: f64 = -0.05;

/// The sentiment label of a post, from its VADER compound score.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sentiment {
    /// `vader_compound >= 0.05`.
    Positive,
    /// Between the two thresholds.
    Neutral,
    /// `vader_compound <= -0.05`.
    Negative,
}

impl Sentiment {
    /// The label of a compound score (VADER's recommended thresholds).
    pub fn from_compound(compound: f64) -> Sentiment {
        if compound >= POSITIVE_THRESHOLD {
            Sentiment::Positive
        } else if compound <= NEGATIVE_THRESHOLD {
            Sentiment::Negative
        } else {
            Sentiment::Neutral
        }
    }

    /// The label as stored in the `sentiment` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Sentiment::Positive => "positive",
            Sentiment::Neutral => "neutral",
            Sentiment::Negative => "negative",
        }
    }
}

/// All sentiment columns of one post.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// TextBlob polarity in [-1, 1].
    pub polarity: f64,
    /// TextBlob subjectivity in [0, 1].
    pub subjectivity: f64,
    /// VADER negative share.
    pub vader_neg: f64,
    /// VADER neutral share.
    pub vader_neu: f64,
    /// VADER positive share.
    pub vader_pos: f64,
    /// VADER compound score in [-1, 1].
    pub vader_compound: f64,
    /// Label derived from `vader_compound`.
    pub sentiment: Sentiment,
}

impl Scores {
    /// The six scores, in column order (polarity … vader_compound).
    pub fn floats(&self) -> [f64; 6] {
        [
            self.polarity,
            self.subjectivity,
            self.vader_neg,
            self.vader_neu,
            self.vader_pos,
            self.vader_compound,
        ]
    }
}

/// Longest accepted `id`, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Longest accepted `platform`, in bytes.
pub const MAX_PLATFORM_LEN: usize = 64;
/// Longest accepted `community` and `author`, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest accepted `url`, in bytes.
pub const MAX_URL_LEN: usize = 4096;
/// Longest accepted `location`, in bytes.
pub const MAX_LOCATION_LEN: usize = 512;
/// Longest accepted `lang`, in bytes (a BCP 47 tag is at most 35).
pub const MAX_LANG_LEN: usize = 64;
/// Default largest `body` of one post, in bytes (`[server] max_post_bytes`).
pub const DEFAULT_MAX_POST_BYTES: usize = 1024 * 1024;
/// Earliest accepted `created_at`, µs: 1970-01-01T00:00:00Z.
pub const MIN_CREATED_AT: i64 = 0;
/// First rejected `created_at`, µs: 2200-01-01T00:00:00Z. Every accepted
/// time has a four-digit year, so its Hive directory `dt=YYYY-MM-DD` is
/// one every reader of the archive parses.
pub const END_CREATED_AT: i64 = 7_258_118_400_000_000;

/// The bounds every accepted post keeps, whatever its format: see
/// [`IncomingPost::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest `body`, bytes.
    pub max_post_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_post_bytes: DEFAULT_MAX_POST_BYTES,
        }
    }
}

impl Limits {
    /// No bound on the body (the fields' bounds still hold): for records
    /// already in the log, accepted under whatever body limit was set then.
    pub const ANY_BODY: Limits = Limits {
        max_post_bytes: usize::MAX,
    };
}

impl IncomingPost {
    /// Whether the post keeps the bounds every accepted post keeps, in
    /// every format: `platform` (≤ 64 bytes) and `id` (≤ 512) not empty,
    /// `community` and `author` ≤ 256, `parent_id` and `thread_id` ≤ 512,
    /// `url` ≤ 4096, `location` ≤ 512, `lang` ≤ 64; none of them with a
    /// control character (NUL included; `location` may hold line breaks);
    /// `body` at most `limits.max_post_bytes`; `created_at` in 1970..2200.
    pub fn check(&self, limits: &Limits) -> Result<(), RecordError> {
        self.view().check(limits)
    }
}

impl IncomingView<'_> {
    /// [`IncomingPost::check`] of the fields in place.
    pub fn check(&self, limits: &Limits) -> Result<(), RecordError> {
        let (platform, id, body, created_at) = (&*self.platform, &*self.id, &*self.body, self.created_at);
        let short = [
            (column::COMMUNITY, self.community.as_deref(), MAX_NAME_LEN),
            (column::AUTHOR, self.author.as_deref(), MAX_NAME_LEN),
            (column::PARENT_ID, self.parent_id.as_deref(), MAX_KEY_LEN),
            (column::THREAD_ID, self.thread_id.as_deref(), MAX_KEY_LEN),
            (column::URL, self.url.as_deref(), MAX_URL_LEN),
            (column::LANG, self.lang.as_deref(), MAX_LANG_LEN),
        ];
        let location = self.location.as_deref();
        let invalid = |field: &'static str, reason: String| Err(RecordError::Invalid { field, reason });
        let bounded = |field: &'static str, value: &str, max: usize, controls: bool| {
            if value.len() > max {
                return invalid(field, format!("{} bytes, longer than {max}", value.len()));
            }
            if !controls && let Some(c) = value.chars().find(|c| c.is_control()) {
                return invalid(field, format!("contains the control character {:?}", c));
            }
            Ok(())
        };
        for (field, value, max) in [
            (column::PLATFORM, platform, MAX_PLATFORM_LEN),
            (column::ID, id, MAX_KEY_LEN),
        ] {
            if value.is_empty() {
                return invalid(field, "must not be empty".into());
            }
            bounded(field, value, max, false)?;
        }
        for (field, value, max) in short {
            if let Some(value) = value {
                bounded(field, value, max, false)?;
            }
        }
        if let Some(location) = location {
            // Free text: line breaks and tabs happen in real profiles.
            bounded(column::LOCATION, location, MAX_LOCATION_LEN, true)?;
        }
        if body.len() > limits.max_post_bytes {
            return invalid(
                column::BODY,
                format!(
                    "{} bytes, more than max_post_bytes ({})",
                    body.len(),
                    limits.max_post_bytes
                ),
            );
        }
        if !(MIN_CREATED_AT..END_CREATED_AT).contains(&created_at) {
            return invalid(
                column::CREATED_AT,
                format!("{created_at} µs since the epoch is outside 1970..2200"),
            );
        }
        Ok(())
    }
}

/// Why a submitted post was refused (the message goes back to the client).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The post is not a JSON object.
    #[error("expected a JSON object, got {0}")]
    NotAnObject(&'static str),
    /// A required field is absent or null.
    #[error("missing \"{0}\"")]
    Missing(&'static str),
    /// A field has the wrong JSON type.
    #[error("\"{field}\" must be {expected}, got {got}")]
    WrongType {
        /// The field.
        field: &'static str,
        /// What it must be.
        expected: &'static str,
        /// What it was.
        got: &'static str,
    },
    /// A field has the right type but an unusable value.
    #[error("\"{field}\": {reason}")]
    Invalid {
        /// The field.
        field: &'static str,
        /// Why.
        reason: String,
    },
}

/// A post as a client submits it: the canonical fields before enrichment.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IncomingPost {
    /// `reddit`, `twitter`, … or a name the client chooses.
    pub platform: String,
    /// The platform's own id; (`platform`, `id`) is unique.
    pub id: String,
    /// Subreddit (no `r/`), hashtag, instance…
    pub community: Option<String>,
    /// Author name.
    pub author: Option<String>,
    /// The text as posted.
    pub body: String,
    /// When it was posted, µs since the Unix epoch, UTC.
    pub created_at: i64,
    /// Reply structure and link.
    pub parent_id: Option<String>,
    /// Thread (submission, conversation) id.
    pub thread_id: Option<String>,
    /// Link to the post.
    pub url: Option<String>,
    /// Reddit score / likes.
    pub score: Option<i64>,
    /// Retweets, boosts, reposts.
    pub reposts: Option<i64>,
    /// The author's follower count.
    pub author_followers: Option<i64>,
    /// Free-text location.
    pub location: Option<String>,
    /// Language code.
    pub lang: Option<String>,
}

/// The enriched record every sink stores: the incoming fields, the cleaned
/// `text`, when chorus accepted it, and the sentiment columns. It
/// serialises flat, with exactly the columns of [`column::ALL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PostFields")]
pub struct Post {
    /// The fields the client sent (`body` is the text as posted).
    #[serde(flatten)]
    pub incoming: IncomingPost,
    /// `body` after cleanup (`enrich::clean`).
    pub text: String,
    /// When chorus accepted the post, µs since the Unix epoch, UTC.
    pub ingested_at: i64,
    /// The sentiment of `text`.
    #[serde(flatten)]
    pub scores: Scores,
}

/// A post as it travels on `posts.raw`: accepted, not yet enriched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PostFields")]
pub struct RawPost {
    /// The fields the client sent.
    #[serde(flatten)]
    pub incoming: IncomingPost,
    /// When chorus accepted it, µs since the Unix epoch, UTC.
    pub ingested_at: i64,
}

/// Every column, flat: what [`Post`] and [`RawPost`] deserialise through
/// (serde's `flatten` would buffer each field first, twice as slow on the
/// pipeline's hot path).
#[derive(Deserialize)]
struct PostFields {
    platform: String,
    id: String,
    community: Option<String>,
    author: Option<String>,
    body: String,
    text: Option<String>,
    created_at: i64,
    ingested_at: i64,
    parent_id: Option<String>,
    thread_id: Option<String>,
    url: Option<String>,
    score: Option<i64>,
    reposts: Option<i64>,
    author_followers: Option<i64>,
    location: Option<String>,
    lang: Option<String>,
    polarity: Option<f64>,
    subjectivity: Option<f64>,
    vader_neg: Option<f64>,
    vader_neu: Option<f64>,
    vader_pos: Option<f64>,
    vader_compound: Option<f64>,
    sentiment: Option<Sentiment>,
}

impl PostFields {
    fn incoming(self) -> (IncomingPost, PostFields) {
        let mut rest = self;
        let incoming = IncomingPost {
            platform: std::mem::take(&mut rest.platform),
            id: std::mem::take(&mut rest.id),
            community: rest.community.take(),
            author: rest.author.take(),
            body: std::mem::take(&mut rest.body),
            created_at: rest.created_at,
            parent_id: rest.parent_id.take(),
            thread_id: rest.thread_id.take(),
            url: rest.url.take(),
            score: rest.score,
            reposts: rest.reposts,
            author_followers: rest.author_followers,
            location: rest.location.take(),
            lang: rest.lang.take(),
        };
        (incoming, rest)
    }
}

impl TryFrom<PostFields> for Post {
    type Error = String;

    fn try_from(fields: PostFields) -> Result<Post, String> {
        let (incoming, rest) = fields.incoming();
        let missing = |field: &str| format!("missing field `{field}`");
        Ok(Post {
            incoming,
            text: rest.text.ok_or_else(|| missing(column::TEXT))?,
            ingested_at: rest.ingested_at,
            scores: Scores {
                polarity: rest.polarity.ok_or_else(|| missing(column::POLARITY))?,
                subjectivity: rest.subjectivity.ok_or_else(|| missing(column::SUBJECTIVITY))?,
                vader_neg: rest.vader_neg.ok_or_else(|| missing(column::VADER_NEG))?,
                vader_neu: rest.vader_neu.ok_or_else(|| missing(column::VADER_NEU))?,
                vader_pos: rest.vader_pos.ok_or_else(|| missing(column::VADER_POS))?,
                vader_compound: rest.vader_compound.ok_or_else(|| missing(column::VADER_COMPOUND))?,
                sentiment: rest.sentiment.ok_or_else(|| missing(column::SENTIMENT))?,
            },
        })
    }
}

impl From<PostFields> for RawPost {
    fn from(fields: PostFields) -> RawPost {
        let ingested_at = fields.ingested_at;
        RawPost {
            incoming: fields.incoming().0,
            ingested_at,
        }
    }
}

impl IncomingPost {
    /// A post with only the required fields set.
    pub fn new(platform: &str, id: &str, body: &str, created_at: i64) -> IncomingPost {
        IncomingPost {
            platform: platform.into(),
            id: id.into(),
            community: None,
            author: None,
            body: body.into(),
            created_at,
            parent_id: None,
            thread_id: None,
            url: None,
            score: None,
            reposts: None,
            author_followers: None,
            location: None,
            lang: None,
        }
    }

    /// Reads and validates one canonical post from a JSON value:
    /// `platform`, `id`, `body` and `created_at` (RFC 3339, or Unix seconds
    /// as a number or a numeric string) are required; the other columns
    /// are optional and may be null. Unknown fields are ignored.
    pub fn from_json(value: &Value) -> Result<IncomingPost, RecordError> {
        let Value::Object(map) = value else {
            return Err(RecordError::NotAnObject(json_type(value)));
        };
        let get = |field: &'static str| map.get(field).filter(|v| !v.is_null());
        let string = |field: &'static str| -> Result<Option<String>, RecordError> {
            match get(field) {
                None => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(RecordError::WrongType {
                    field,
                    expected: "a string",
                    got: json_type(other),
                }),
            }
        };
        let integer = |field: &'static str| -> Result<Option<i64>, RecordError> {
            match get(field) {
                None => Ok(None),
                Some(Value::Number(n)) => n.as_i64().map(Some).ok_or_else(|| RecordError::Invalid {
                    field,
                    reason: format!("{n} is not a whole number in the 64-bit range"),
                }),
                Some(other) => Err(RecordError::WrongType {
                    field,
                    expected: "an integer",
                    got: json_type(other),
                }),
            }
        };
        let key = |field: &'static str| -> Result<String, RecordError> {
            let value = string(field)?.ok_or(RecordError::Missing(field))?;
            if value.is_empty() {
                return Err(RecordError::Invalid {
                    field,
                    reason: "must not be empty".into(),
                });
            }
            if value.len() > MAX_KEY_LEN {
                return Err(RecordError::Invalid {
                    field,
                    reason: format!("longer than {MAX_KEY_LEN} bytes"),
                });
            }
            Ok(value)
        };
        // Checked in column order, so the first problem is reported.
        let platform = key(column::PLATFORM)?;
        let id = key(column::ID)?;
        let community = string(column::COMMUNITY)?;
        let author = string(column::AUTHOR)?;
        let body = string(column::BODY)?.ok_or(RecordError::Missing(column::BODY))?;
        let created_at = parse_timestamp(
            get(column::CREATED_AT).ok_or(RecordError::Missing(column::CREATED_AT))?,
            column::CREATED_AT,
        )?;
        Ok(IncomingPost {
            platform,
            id,
            community,
            author,
            body,
            created_at,
            parent_id: string(column::PARENT_ID)?,
            thread_id: string(column::THREAD_ID)?,
            url: string(column::URL)?,
            score: integer(column::SCORE)?,
            reposts: integer(column::REPOSTS)?,
            author_followers: integer(column::AUTHOR_FOLLOWERS)?,
            location: string(column::LOCATION)?,
            lang: string(column::LANG)?,
        })
    }

    /// The enriched record from the cleaned `text` and its scores
    /// (computed by `enrich`, which depends on this module, not the reverse).
    pub fn into_post(self, text: String, scores: Scores, ingested_at: i64) -> Post {
        Post {
            incoming: self,
            text,
            ingested_at,
            scores,
        }
    }
}

/// Earliest and latest accepted timestamps: years 1970 to 2200 cover every
/// real post and keep a Unix-seconds value from being mistaken for ms/µs.
const MIN_SECONDS: f64 = 0.0;
const MAX_SECONDS: f64 = 7_258_118_400.0; // 2200-01-01T00:00:00Z

/// A timestamp as RFC 3339 text, or Unix seconds as a number or numeric
/// string (Reddit's `created_utc` is a float), in µs since the epoch.
pub fn parse_timestamp(value: &Value, field: &'static str) -> Result<i64, RecordError> {
    match value {
        Value::Number(n) => match n.as_f64() {
            Some(seconds) => timestamp_of_seconds(seconds, field),
            None => Err(RecordError::Invalid {
                field,
                reason: format!("{n} is not a number of seconds"),
            }),
        },
        Value::String(s) => timestamp_of_text(s, field),
        other => Err(RecordError::WrongType {
            field,
            expected: "RFC 3339 text or Unix seconds",
            got: json_type(other),
        }),
    }
}

/// A timestamp given as Unix seconds, in µs.
fn timestamp_of_seconds(seconds: f64, field: &'static str) -> Result<i64, RecordError> {
    if !seconds.is_finite() || !(MIN_SECONDS..MAX_SECONDS).contains(&seconds) {
        return Err(RecordError::Invalid {
            field,
            reason: format!("{seconds} seconds is outside 1970..2200 (is it in ms?)"),
        });
    }
    Ok((seconds * 1e6).round() as i64)
}

/// A timestamp given as text (RFC 3339 or Unix seconds), in µs.
fn timestamp_of_text(s: &str, field: &'static str) -> Result<i64, RecordError> {
    let s = s.trim();
    if let Ok(seconds) = s.parse::<f64>() {
        return timestamp_of_seconds(seconds, field);
    }
    let invalid = |reason: String| RecordError::Invalid { field, reason };
    let t = DateTime::parse_from_rfc3339(s)
        .map_err(|e| invalid(format!("{s:?} is neither RFC 3339 nor Unix seconds ({e})")))?;
    let micros = t.with_timezone(&Utc).timestamp_micros();
    let secs = micros as f64 / 1e6;
    if !(MIN_SECONDS..MAX_SECONDS).contains(&secs) {
        return Err(invalid(format!("{s} is outside 1970..2200")));
    }
    Ok(micros)
}

/// A timestamp as sent: Unix seconds or text.
enum TimeWire<'a> {
    Seconds(f64),
    Text(std::borrow::Cow<'a, str>),
}

impl<'de: 'a, 'a> Deserialize<'de> for TimeWire<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = TimeWire<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("RFC 3339 text or Unix seconds")
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(TimeWire::Seconds(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(TimeWire::Seconds(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(TimeWire::Seconds(v as f64))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(TimeWire::Text(v.into()))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(TimeWire::Text(v.to_string().into()))
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// A canonical post read straight from its JSON text (the fast path of
/// ingest); anything unusual is left to [`IncomingPost::from_json`], which
/// also gives the reasons.
#[derive(Deserialize)]
struct CanonicalWire<'a> {
    #[serde(borrow)]
    platform: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    id: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    community: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    author: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    body: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    created_at: TimeWire<'a>,
    #[serde(borrow)]
    parent_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    thread_id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    url: Option<std::borrow::Cow<'a, str>>,
    score: Option<i64>,
    reposts: Option<i64>,
    author_followers: Option<i64>,
    #[serde(borrow)]
    location: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow)]
    lang: Option<std::borrow::Cow<'a, str>>,
}

impl IncomingPost {
    /// Reads one valid canonical post straight from JSON text: the fast
    /// path of ingest. `None` for anything else; the caller then parses the
    /// value and uses [`IncomingPost::from_json`] (same rules, with reasons)
    /// or another format.
    pub fn from_json_text(text: &[u8]) -> Option<IncomingPost> {
        let wire: CanonicalWire = serde_json::from_slice(text).ok()?;
        let valid_key = |k: &str| !k.is_empty() && k.len() <= MAX_KEY_LEN;
        if !valid_key(&wire.platform) || !valid_key(&wire.id) {
            return None;
        }
        let created_at = match wire.created_at {
            TimeWire::Seconds(s) => timestamp_of_seconds(s, column::CREATED_AT),
            TimeWire::Text(t) => timestamp_of_text(&t, column::CREATED_AT),
        }
        .ok()?;
        let own = |s: Option<std::borrow::Cow<str>>| s.map(std::borrow::Cow::into_owned);
        Some(IncomingPost {
            platform: wire.platform.into_owned(),
            id: wire.id.into_owned(),
            community: own(wire.community),
            author: own(wire.author),
            body: wire.body.into_owned(),
            created_at,
            parent_id: own(wire.parent_id),
            thread_id: own(wire.thread_id),
            url: own(wire.url),
            score: wire.score,
            reposts: wire.reposts,
            author_followers: wire.author_followers,
            location: own(wire.location),
            lang: own(wire.lang),
        })
    }
}

impl IncomingPost {
    /// The post as one canonical JSON line for `POST /v1/posts` (no
    /// newline): `created_at` as RFC 3339 with microseconds, so it reads
    /// back to the same instant.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).expect("a post serialises");
        let created = DateTime::from_timestamp_micros(self.created_at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
        if let (Some(created), Some(object)) = (created, value.as_object_mut()) {
            object.insert(column::CREATED_AT.into(), Value::String(created));
        }
        serde_json::to_vec(&value).expect("a post serialises")
    }
}

/// The current time in µs since the epoch (for `ingested_at`).
pub fn now_micros() -> i64 {
    Utc::now().timestamp_micros()
}

/// Reserves `n` consecutive microseconds for the `ingested_at` of `n`
/// posts: from `at`, or from just after the last reserved one if that is
/// later (a clock that steps back, or batches within one microsecond).
/// Returns the first.
pub fn reserve_ingest_times(at: i64, n: usize) -> i64 {
    use std::sync::atomic::{AtomicI64, Ordering};
    static LAST: AtomicI64 = AtomicI64::new(i64::MIN);
    let n = n.max(1) as i64;
    let mut last = LAST.load(Ordering::Relaxed);
    loop {
        let first = at.max(last.saturating_add(1));
        match LAST.compare_exchange_weak(last, first + n - 1, Ordering::AcqRel, Ordering::Relaxed) {
            Ok(_) => return first,
            Err(seen) => last = seen,
        }
    }
}

/// How a JSON value's type reads in an error message.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn accepts_a_canonical_post_with_either_timestamp_form() {
        let a = json!({"platform": "reddit", "id": "t1_abc", "body": "I love it", "created_at": "2019-01-01T12:00:00Z",
                       "community": "politics", "score": 12, "lang": null, "extra": "ignored"});
        let post = IncomingPost::from_json(&a).unwrap();
        assert_eq!(post.created_at, 1_546_344_000_000_000);
        assert_eq!(post.community.as_deref(), Some("politics"));
        assert_eq!(post.score, Some(12));
        assert_eq!(post.lang, None);
        let b = json!({"platform": "reddit", "id": "t1_abc", "body": "x", "created_at": 1546344000.25});
        assert_eq!(IncomingPost::from_json(&b).unwrap().created_at, 1_546_344_000_250_000);
        let c = json!({"platform": "reddit", "id": "t1_abc", "body": "x", "created_at": "1546344000"});
        assert_eq!(IncomingPost::from_json(&c).unwrap().created_at, 1_546_344_000_000_000);
        let d = json!({"platform": "x", "id": "1", "body": "", "created_at": "2019-01-01T13:00:00+01:00"});
        assert_eq!(IncomingPost::from_json(&d).unwrap().created_at, 1_546_344_000_000_000);
    }

    #[test]
    fn refuses_bad_posts_with_the_reason() {
        let err = |v: Value| IncomingPost::from_json(&v).unwrap_err().to_string();
        assert_eq!(err(json!([1])), "expected a JSON object, got an array");
        assert_eq!(
            err(json!({"id": "1", "body": "x", "created_at": 0})),
            "missing \"platform\""
        );
        assert_eq!(
            err(json!({"platform": "r", "id": "1", "created_at": 0})),
            "missing \"body\""
        );
        assert_eq!(
            err(json!({"platform": "r", "id": 5, "body": "x", "created_at": 0})),
            "\"id\" must be a string, got a number"
        );
        assert_eq!(
            err(json!({"platform": "r", "id": "", "body": "x", "created_at": 0})),
            "\"id\": must not be empty"
        );
        assert_eq!(
            err(json!({"platform": "r", "id": "1", "body": "x", "created_at": 0, "score": "many"})),
            "\"score\" must be an integer, got a string"
        );
        assert_eq!(
            err(json!({"platform": "r", "id": "1", "body": "x", "created_at": 0, "score": 1.5})),
            "\"score\": 1.5 is not a whole number in the 64-bit range"
        );
        assert!(
            err(json!({"platform": "r", "id": "1", "body": "x", "created_at": "yesterday"}))
                .contains("neither RFC 3339")
        );
        assert!(
            err(json!({"platform": "r", "id": "1", "body": "x", "created_at": 1546344000000i64}))
                .contains("is it in ms?")
        );
        assert!(err(json!({"platform": "r", "id": "1", "body": "x", "created_at": -5})).contains("outside 1970..2200"));
    }

    #[test]
    fn the_fast_path_reads_exactly_what_from_json_reads() {
        let cases = [
            r#"{"platform":"reddit","id":"t1_a","body":"hi","created_at":1546300800}"#,
            r#"{"platform":"reddit","id":"t1_a","body":"h\u00e9 \"q\" \n","created_at":1546300800.25,"extra":[1,{"x":2}]}"#,
            r#"{"platform":"x","id":"1","body":"","created_at":" 1546300800 ","community":null,"score":-3}"#,
            r#"{"platform":"x","id":"1","body":"b","created_at":"2019-01-01T12:00:00+02:00","lang":"en","reposts":7,"author_followers":0,"location":"Oslo","url":"u","parent_id":"p","thread_id":"t","author":"a"}"#,
            r#"{"id":"1","platform":"x","created_at":1,"body":"order does not matter"}"#,
            // Each of these is left to the slow path (which refuses or maps it).
            r#"{"platform":"","id":"1","body":"b","created_at":1}"#,
            r#"{"platform":"x","id":"1","body":"b","created_at":1546300800000}"#,
            r#"{"platform":"x","id":"1","body":"b","created_at":"yesterday"}"#,
            r#"{"platform":"x","id":1,"body":"b","created_at":1}"#,
            r#"{"platform":"x","id":"1","body":null,"created_at":1}"#,
            r#"{"platform":"x","id":"1","body":"b","created_at":1,"score":1.5}"#,
            r#"{"id":"e6xucdd","subreddit":"a","body":"b","created_utc":1}"#,
            r#"[1]"#,
        ];
        let mut fast = 0;
        for text in cases {
            let slow = serde_json::from_str::<Value>(text)
                .ok()
                .map(|v| IncomingPost::from_json(&v));
            match IncomingPost::from_json_text(text.as_bytes()) {
                Some(post) => {
                    fast += 1;
                    assert_eq!(slow, Some(Ok(post)), "{text}");
                }
                None => assert!(
                    !matches!(slow, Some(Ok(_))),
                    "the fast path missed a valid post: {text}"
                ),
            }
        }
        assert_eq!(fast, 5);
    }

    #[test]
    fn enrich_cleans_and_scores_the_text_and_keeps_the_body() {
        use crate::enrich;
        let incoming = IncomingPost::from_json(&json!({"platform": "reddit", "id": "t1_x",
            "body": "**Great** news https://x.org/a", "created_at": 0}))
        .unwrap();
        let post = enrich::enrich_post(incoming, 42);
        assert_eq!(post.incoming.body, "**Great** news https://x.org/a");
        assert_eq!(post.text, "Great news");
        assert_eq!(post.ingested_at, 42);
        let scores = enrich::score("Great news");
        assert_eq!(
            (post.scores.polarity, post.scores.vader_compound, post.scores.sentiment),
            (scores.polarity, scores.vader_compound, scores.sentiment)
        );
        // The record serialises with exactly the contract's column names, in order.
        let value = serde_json::to_value(&post).unwrap();
        let names: Vec<&str> = value.as_object().unwrap().keys().map(String::as_str).collect();
        let mut sorted = column::ALL.to_vec();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        // And reads back as the same record; without its scores it is not one.
        assert_eq!(serde_json::from_value::<Post>(value.clone()).unwrap(), post);
        let mut partial = value;
        partial.as_object_mut().unwrap().remove(column::VADER_POS);
        let err = serde_json::from_value::<Post>(partial).unwrap_err().to_string();
        assert!(err.contains("missing field `vader_pos`"), "{err}");
    }
}
