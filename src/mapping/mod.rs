//! Raw platform JSON onto the canonical record: what `POST /v1/posts`
//! (`?format=`), `chorus ingest` and the collectors accept besides
//! canonical posts.
//!
//! * [`reddit`]: a Reddit comment (the `data` of a listing child, or a
//!   Pushshift / Arctic Shift dump line).
//! * [`twitter`]: a tweet, API v1.1 or v2 (with `includes.users`).
//! * [`bluesky`]: a post from a Jetstream event.
//! * [`mastodon`]: a status (HTML content as text).
//! * [`hackernews`]: an item of the Firebase API.

pub mod bluesky;
pub mod hackernews;
pub mod html;
pub mod mastodon;
pub mod reddit;
pub mod scan;
pub mod stream;
pub mod twitter;

use serde_json::Value;

use crate::record::{IncomingPost, Limits, RecordError, json_type};

/// The shape of submitted JSON.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Recognise each object by its fields.
    Auto,
    /// Canonical records (DESIGN.md's columns).
    Canonical,
    /// Reddit comments.
    Reddit,
    /// Tweets, v1.1 or v2.
    Tweet,
    /// Bluesky Jetstream events.
    Bluesky,
    /// Mastodon statuses.
    Mastodon,
    /// Hacker News items.
    HackerNews,
}

impl Format {
    /// The format named by `?format=` or `--format`.
    pub fn parse(name: &str) -> Option<Format> {
        Some(match name {
            "auto" => Format::Auto,
            "canonical" | "chorus" => Format::Canonical,
            "reddit" | "pushshift" => Format::Reddit,
            "tweet" | "twitter" => Format::Tweet,
            "bluesky" | "jetstream" => Format::Bluesky,
            "mastodon" => Format::Mastodon,
            "hackernews" | "hn" => Format::HackerNews,
            _ => return None,
        })
    }

    /// The name `?format=` takes.
    pub fn name(self) -> &'static str {
        match self {
            Format::Auto => "auto",
            Format::Canonical => "canonical",
            Format::Reddit => "reddit",
            Format::Tweet => "tweet",
            Format::Bluesky => "bluesky",
            Format::Mastodon => "mastodon",
            Format::HackerNews => "hackernews",
        }
    }
}

/// One submitted JSON value as posts: a v2 tweet response may hold several.
pub fn to_posts(value: &Value, format: Format) -> Result<Vec<IncomingPost>, RecordError> {
    let format = match format {
        Format::Auto => detect(value),
        f => f,
    };
    match format {
        Format::Reddit => reddit::comment(value).map(|p| vec![p]),
        Format::Tweet => twitter::tweets(value),
        Format::Bluesky => bluesky::post(value).map(|p| vec![p]),
        Format::Mastodon => mastodon::status(value).map(|p| vec![p]),
        Format::HackerNews => hackernews::item(value).map(|p| vec![p]),
        Format::Canonical | Format::Auto => IncomingPost::from_json(value).map(|p| vec![p]),
    }
}

/// The format of one object, by its fields.
pub fn detect(value: &Value) -> Format {
    let Value::Object(map) = value else {
        return Format::Canonical;
    };
    if map.contains_key("platform") {
        Format::Canonical
    } else if map.contains_key("subreddit") && map.contains_key("body") {
        Format::Reddit
    } else if map.contains_key("did") && (map.contains_key("commit") || map.contains_key("time_us")) {
        Format::Bluesky
    } else if map.contains_key("account") && map.contains_key("content") {
        Format::Mastodon
    } else if map.contains_key("by") && map.contains_key("time") && map.get("id").is_some_and(Value::is_u64) {
        Format::HackerNews
    } else if map.contains_key("id_str")
        || (map.contains_key("text") && map.contains_key("id"))
        || map.get("data").is_some_and(|d| d.is_object() || d.is_array())
    {
        Format::Tweet
    } else {
        Format::Canonical
    }
}

/// A string field, or null/absent.
fn opt_str(v: &Value, field: &'static str) -> Result<Option<String>, RecordError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(RecordError::WrongType {
            field,
            expected: "a string",
            got: json_type(other),
        }),
    }
}

/// An integer field, or null/absent.
fn opt_int(v: &Value, field: &'static str) -> Result<Option<i64>, RecordError> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(int_of(n)),
        Some(other) => Err(RecordError::WrongType {
            field,
            expected: "an integer",
            got: json_type(other),
        }),
    }
}

/// A JSON number as an integer: a float is truncated (saturating).
fn int_of(n: &serde_json::Number) -> Option<i64> {
    n.as_i64().or_else(|| n.as_f64().map(|f| f as i64))
}

/// A required string field.
fn req_str(v: &Value, field: &'static str) -> Result<String, RecordError> {
    opt_str(v, field)?.ok_or(RecordError::Missing(field))
}

/// What [`Parsed::take_line`] looks for in a line of unknown format (built
/// once: a finder is built from its needle at every search otherwise).
static PLATFORM_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"platform\""));
static SUBREDDIT_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
    std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"subreddit\""));

/// A line (or array element) that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    /// 1-based line of NDJSON, or element of a JSON array.
    pub line: usize,
    /// Why.
    pub error: String,
    /// Whether the line was not JSON at all (rather than a bad record).
    #[serde(skip)]
    pub malformed: bool,
}

/// What a request body or file holds: the posts and the refused lines.
#[derive(Debug, Default)]
pub struct Parsed {
    /// Valid posts, in order.
    pub posts: Vec<IncomingPost>,
    /// Refused lines, the first [`MAX_LISTED_REJECTIONS`] of them.
    pub rejected: Vec<Rejection>,
    /// Refused lines in all, listed or not.
    pub rejected_total: usize,
    /// Refused lines that were JSON (bad records rather than bad JSON).
    pub rejected_records: usize,
    /// The bounds each post must keep.
    pub limits: Limits,
}

/// At most this many refused lines are listed with their reasons (a body
/// of a million bad lines must not make a response of a million reasons);
/// the rest are counted.
pub const MAX_LISTED_REJECTIONS: usize = 100;

impl Parsed {
    /// Nothing parsed yet; posts must keep `limits`.
    pub fn new(limits: Limits) -> Parsed {
        Parsed {
            limits,
            ..Parsed::default()
        }
    }

    /// Keeps the posts of one line if every one of them is within bounds
    /// (a v2 tweet response holding one bad tweet is refused whole, so a
    /// line is either accepted or rejected).
    /// Refuses one line.
    fn reject(&mut self, line: usize, error: String, malformed: bool) {
        self.rejected_total += 1;
        if !malformed {
            self.rejected_records += 1;
        }
        if self.rejected.len() < MAX_LISTED_REJECTIONS {
            self.rejected.push(Rejection { line, error, malformed });
        }
    }

    /// Whether every refused line was malformed JSON.
    pub fn all_malformed(&self) -> bool {
        self.rejected_records == 0
    }

    fn keep(&mut self, line: usize, posts: Result<Vec<IncomingPost>, RecordError>) {
        let checked = posts.and_then(|posts| {
            for post in &posts {
                post.check(&self.limits)?;
            }
            Ok(posts)
        });
        match checked {
            Ok(posts) => self.posts.extend(posts),
            Err(e) => self.reject(line, e.to_string(), false),
        }
    }

    fn take(&mut self, line: usize, value: &Value, format: Format) {
        self.keep(line, to_posts(value, format));
    }

    /// Parses one NDJSON line (blank lines are skipped).
    pub fn take_line(&mut self, line: usize, text: &[u8], format: Format) {
        let text = text.trim_ascii();
        if text.is_empty() {
            return;
        }
        // The fast paths read a canonical post or a Reddit comment straight
        // from the text; whatever they cannot be sure of is parsed below.
        let fast = match format {
            Format::Canonical => IncomingPost::from_json_text(text),
            Format::Reddit => reddit::comment_from_text(text, false),
            // A canonical post names its platform and a Reddit comment its
            // subreddit: a line that mentions neither goes straight to the
            // general parse below.
            Format::Auto if PLATFORM_KEY.find(text).is_some() => IncomingPost::from_json_text(text),
            Format::Auto if SUBREDDIT_KEY.find(text).is_some() => reddit::comment_from_text(text, true),
            _ => None,
        };
        if let Some(post) = fast {
            // The fast path: one post, no list to build.
            match post.check(&self.limits) {
                Ok(()) => self.posts.push(post),
                Err(e) => self.reject(line, e.to_string(), false),
            }
            return;
        }
        match serde_json::from_slice::<Value>(text) {
            Ok(value) => self.take(line, &value, format),
            Err(e) => self.reject(line, format!("malformed JSON: {e}"), true),
        }
    }
}

/// Parses a document: one JSON object, a JSON array of them, or NDJSON.
/// Each post must keep `limits`; one that does not is a rejected line.
pub fn parse_document(body: &[u8], format: Format, limits: &Limits) -> Parsed {
    let mut parsed = Parsed::new(*limits);
    let trimmed = body.trim_ascii_start();
    if trimmed.starts_with(b"[") {
        match serde_json::from_slice::<Vec<Value>>(body) {
            Ok(values) => {
                for (i, value) in values.iter().enumerate() {
                    parsed.take(i + 1, value, format);
                }
            }
            Err(e) => parsed.reject(e.line(), format!("malformed JSON array: {e}"), true),
        }
        return parsed;
    }
    // A single (possibly pretty-printed) object, else NDJSON.
    if let Ok(value) = serde_json::from_slice::<Value>(body) {
        parsed.take(1, &value, format);
        return parsed;
    }
    for (i, line) in body.split(|&b| b == b'\n').enumerate() {
        parsed.take_line(i + 1, line, format);
    }
    parsed
}

#[cfg(test)]
mod tests {
    use super::*;

    const POST: &str = r#"{"platform":"reddit","id":"t1_a","body":"hi","created_at":1546344000}"#;

    #[test]
    fn reads_an_object_an_array_and_ndjson_with_line_numbers() {
        assert_eq!(
            parse_document(POST.as_bytes(), Format::Auto, &Limits::default())
                .posts
                .len(),
            1
        );
        let pretty = serde_json::to_string_pretty(&serde_json::from_str::<Value>(POST).unwrap()).unwrap();
        assert_eq!(
            parse_document(pretty.as_bytes(), Format::Auto, &Limits::default())
                .posts
                .len(),
            1
        );
        let array = format!("[{POST}, {{\"platform\":\"x\"}}, {POST}]");
        let parsed = parse_document(array.as_bytes(), Format::Auto, &Limits::default());
        assert_eq!(parsed.posts.len(), 2);
        assert_eq!(parsed.rejected[0].line, 2);
        assert_eq!(parsed.rejected[0].error, "missing \"id\"");
        let ndjson = format!("{POST}\n\n{{oops\n{POST}\n[1]\n");
        let parsed = parse_document(ndjson.as_bytes(), Format::Auto, &Limits::default());
        assert_eq!(parsed.posts.len(), 2);
        let lines: Vec<(usize, bool)> = parsed.rejected.iter().map(|r| (r.line, r.malformed)).collect();
        assert_eq!(lines, [(3, true), (5, false)]);
        assert!(parsed.rejected[0].error.starts_with("malformed JSON"));
        assert_eq!(parsed.rejected[1].error, "expected a JSON object, got an array");
    }

    #[test]
    fn detects_reddit_comments_and_tweets() {
        let comment = r#"{"id":"e6xucdd","subreddit":"Unexpected","body":"x","created_utc":1538352000}"#;
        let tweet = r#"{"id_str":"1","text":"x","created_at":"Thu Jun 27 00:25:31 +0000 2019"}"#;
        let parsed = parse_document(
            format!("{comment}\n{tweet}\n").as_bytes(),
            Format::Auto,
            &Limits::default(),
        );
        let ids: Vec<(&str, &str)> = parsed
            .posts
            .iter()
            .map(|p| (p.platform.as_str(), p.id.as_str()))
            .collect();
        assert_eq!(ids, [("reddit", "t1_e6xucdd"), ("twitter", "1")]);
        // Forcing a format applies it to every line.
        let parsed = parse_document(comment.as_bytes(), Format::Tweet, &Limits::default());
        assert_eq!(parsed.rejected.len(), 1);
    }
}
