//! How posts are stored on the log: a compact binary encoding for
//! `posts.raw` ([`RawPost`]) and `posts.enriched` ([`Post`]).
//!
//! Every record is written and read back once per stage, so JSON (field
//! names in every record, escaping, number formatting and parsing) was a
//! fifth of the pipeline's CPU. The encoding is a tag byte, then the fields
//! in a fixed order: strings as a LEB128 length and UTF-8 bytes, optional
//! strings as length + 1 (0 for none), integers and floats as 8 bytes
//! little-endian, optional integers after a presence byte. A post's `text`
//! is stored like an optional string, 0 meaning "the body unchanged".
//!
//! The tag bytes 0xC0–0xC3 never start UTF-8 text, so records written
//! as JSON by earlier versions (they start with `{`) are still read.
//! 0xC3 is the speed layer's few columns of a post (a mask of the columns,
//! then only theirs), kept in the seen-state and carried by a re-send.

use std::borrow::Cow;

use super::{IncomingPost, Post, RawPost, Scores, Sentiment};

/// First byte of a [`RawPost`] record.
const RAW_V1: u8 = 0xC1;
/// First byte of a [`Post`] record.
const POST_V1: u8 = 0xC0;
/// First byte of a [`Post`] record followed by its [`Prior`] (what the
/// speed layer takes back for it).
const POST_V2: u8 = 0xC2;
/// First byte of a post's columns kept for the speed layer
/// ([`PostView::to_masked_log_bytes`]): a mask of the columns, then only
/// theirs.
const MASKED_V2: u8 = 0xC3;
/// [`Prior`] bytes after a [`POST_V2`] record.
const PRIOR_STALE: u8 = 1;
const PRIOR_REPLACES: u8 = 2;

/// What an enriched record says of the version of its post counted before
/// it, when the speed layer is on (records written without it say
/// [`Prior::None`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Prior<'a> {
    /// No earlier version is counted: the post is new.
    None,
    /// A newer version (by `ingested_at`) is counted already: this one
    /// changes nothing in `posts_latest`.
    Stale,
    /// This version replaces the one given: the columns the speed layer's
    /// views read, in the record's encoding, the others empty
    /// ([`PostView::to_masked_log_bytes`]).
    Replaces(&'a [u8]),
}

impl Prior<'_> {
    /// Appends this prior to `record` (of [`RawView::to_post_log_bytes`]).
    pub fn append_to(&self, record: &mut Vec<u8>) {
        let (tag, bytes): (u8, &[u8]) = match self {
            Prior::None => return,
            Prior::Stale => (PRIOR_STALE, &[]),
            Prior::Replaces(bytes) => (PRIOR_REPLACES, bytes),
        };
        if record.first() != Some(&POST_V1) {
            return;
        }
        record[0] = POST_V2;
        record.push(tag);
        if tag == PRIOR_REPLACES {
            let mut w = Writer(std::mem::take(record));
            w.len(bytes.len());
            w.0.extend_from_slice(bytes);
            *record = w.0;
        }
    }
}

/// A log record that is not a post of the expected kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// The record ends inside a field.
    #[error("the record ends early")]
    Truncated,
    /// A string field is not UTF-8.
    #[error("a text field is not UTF-8")]
    NotUtf8,
    /// Bytes left after the last field.
    #[error("{0} bytes after the record")]
    Trailing(usize),
    /// An unknown tag byte or enum value.
    #[error("{0}")]
    Invalid(String),
    /// A record in the earlier JSON form that does not parse.
    #[error("{0}")]
    Json(String),
}

impl RawPost {
    /// The record as stored on `posts.raw`.
    pub fn to_log_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(encoded_len(&self.incoming)));
        w.0.push(RAW_V1);
        w.incoming(&self.incoming);
        w.i64(self.ingested_at);
        w.0
    }

    /// Reads a record of `posts.raw` (binary, or JSON from earlier versions).
    pub fn from_log_bytes(bytes: &[u8]) -> Result<RawPost, DecodeError> {
        RawView::from_log_bytes(bytes).map(RawView::into_raw_post)
    }
}

/// A record of `posts.raw` read in place: what the enrich stage needs to
/// recognise a re-submission and write the enriched record without
/// allocating a string per field.
#[derive(Debug, Clone, PartialEq)]
pub struct RawView<'a> {
    /// The fields the client sent.
    pub incoming: IncomingView<'a>,
    /// When chorus accepted the post, µs since the Unix epoch, UTC.
    pub ingested_at: i64,
    /// The incoming fields in the log encoding: as stored, or encoded from
    /// a JSON record of an earlier version.
    fields: Cow<'a, [u8]>,
}

impl<'a> RawView<'a> {
    /// Reads a record of `posts.raw` in place.
    pub fn from_log_bytes(bytes: &'a [u8]) -> Result<RawView<'a>, DecodeError> {
        if bytes.first() == Some(&b'{') {
            let raw: RawPost = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
            let mut w = Writer(Vec::with_capacity(encoded_len(&raw.incoming)));
            w.incoming(&raw.incoming);
            return Ok(RawView {
                incoming: raw.incoming.into(),
                ingested_at: raw.ingested_at,
                fields: Cow::Owned(w.0),
            });
        }
        let mut r = Reader::new(bytes, RAW_V1, "posts.raw")?;
        let incoming = r.incoming()?;
        let fields = Cow::Borrowed(&bytes[1..r.at]);
        let ingested_at = r.i64()?;
        r.end()?;
        Ok(RawView {
            incoming,
            ingested_at,
            fields,
        })
    }

    /// A 64-bit hash of the incoming fields (XXH3 of their encoding, which
    /// is one byte string per post): equal posts hash equal, whenever and
    /// however they were sent.
    pub fn content_hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(&self.fields)
    }

    /// The record of `posts.enriched` for this post, cleaned to `text` and
    /// scored `scores`: [`Post::to_log_bytes`] of the same post, with the
    /// incoming fields copied as they are encoded.
    pub fn to_post_log_bytes(&self, text: &str, scores: &Scores) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(64 + self.fields.len() + text.len()));
        w.0.push(POST_V1);
        w.0.extend_from_slice(&self.fields);
        w.enrichment(&self.incoming.body, text, self.ingested_at, scores);
        w.0
    }

    /// The post, with owned strings.
    pub fn into_raw_post(self) -> RawPost {
        RawPost {
            incoming: self.incoming.into_owned(),
            ingested_at: self.ingested_at,
        }
    }
}

impl Post {
    /// The record as stored on `posts.enriched`.
    pub fn to_log_bytes(&self) -> Vec<u8> {
        let mut w = Writer(Vec::with_capacity(encoded_len(&self.incoming) + 64 + self.text.len()));
        w.0.push(POST_V1);
        w.incoming(&self.incoming);
        w.enrichment(&self.incoming.body, &self.text, self.ingested_at, &self.scores);
        w.0
    }

    /// Reads a record of `posts.enriched` (binary, or JSON from earlier
    /// versions).
    pub fn from_log_bytes(bytes: &[u8]) -> Result<Post, DecodeError> {
        PostView::from_log_bytes(bytes).map(PostView::into_post)
    }

    /// The post as a [`PostView`] borrowing its strings.
    pub fn view(&self) -> PostView<'_> {
        PostView {
            incoming: self.incoming.view(),
            text: Cow::Borrowed(&self.text),
            ingested_at: self.ingested_at,
            scores: self.scores,
        }
    }
}

impl IncomingPost {
    /// The fields as an [`IncomingView`] borrowing its strings.
    pub fn view(&self) -> IncomingView<'_> {
        fn opt(s: &Option<String>) -> Option<Cow<'_, str>> {
            s.as_deref().map(Cow::Borrowed)
        }
        IncomingView {
            platform: Cow::Borrowed(&self.platform),
            id: Cow::Borrowed(&self.id),
            community: opt(&self.community),
            author: opt(&self.author),
            body: Cow::Borrowed(&self.body),
            created_at: self.created_at,
            parent_id: opt(&self.parent_id),
            thread_id: opt(&self.thread_id),
            url: opt(&self.url),
            score: self.score,
            reposts: self.reposts,
            author_followers: self.author_followers,
            location: opt(&self.location),
            lang: opt(&self.lang),
        }
    }
}

/// The fields of an [`IncomingPost`] read in place: the strings borrow the
/// record's bytes (JSON records of earlier versions own theirs).
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)] // The fields are those of `IncomingPost`.
pub struct IncomingView<'a> {
    pub platform: Cow<'a, str>,
    pub id: Cow<'a, str>,
    pub community: Option<Cow<'a, str>>,
    pub author: Option<Cow<'a, str>>,
    pub body: Cow<'a, str>,
    pub created_at: i64,
    pub parent_id: Option<Cow<'a, str>>,
    pub thread_id: Option<Cow<'a, str>>,
    pub url: Option<Cow<'a, str>>,
    pub score: Option<i64>,
    pub reposts: Option<i64>,
    pub author_followers: Option<i64>,
    pub location: Option<Cow<'a, str>>,
    pub lang: Option<Cow<'a, str>>,
}

impl IncomingView<'_> {
    /// The fields, with owned strings.
    pub fn into_owned(self) -> IncomingPost {
        let o = |s: Option<Cow<'_, str>>| s.map(Cow::into_owned);
        IncomingPost {
            platform: self.platform.into_owned(),
            id: self.id.into_owned(),
            community: o(self.community),
            author: o(self.author),
            body: self.body.into_owned(),
            created_at: self.created_at,
            parent_id: o(self.parent_id),
            thread_id: o(self.thread_id),
            url: o(self.url),
            score: self.score,
            reposts: self.reposts,
            author_followers: self.author_followers,
            location: o(self.location),
            lang: o(self.lang),
        }
    }
}

impl From<IncomingPost> for IncomingView<'static> {
    fn from(p: IncomingPost) -> Self {
        let o = |s: Option<String>| s.map(Cow::Owned);
        IncomingView {
            platform: Cow::Owned(p.platform),
            id: Cow::Owned(p.id),
            community: o(p.community),
            author: o(p.author),
            body: Cow::Owned(p.body),
            created_at: p.created_at,
            parent_id: o(p.parent_id),
            thread_id: o(p.thread_id),
            url: o(p.url),
            score: p.score,
            reposts: p.reposts,
            author_followers: p.author_followers,
            location: o(p.location),
            lang: o(p.lang),
        }
    }
}

/// A post of `posts.enriched` read in place, so the archive and queries
/// turn records into Arrow columns without allocating a string per field.
#[derive(Debug, Clone, PartialEq)]
pub struct PostView<'a> {
    /// The fields the client sent.
    pub incoming: IncomingView<'a>,
    /// `body` after cleanup.
    pub text: Cow<'a, str>,
    /// When chorus accepted the post, µs since the Unix epoch, UTC.
    pub ingested_at: i64,
    /// The sentiment of `text`.
    pub scores: Scores,
}

impl<'a> PostView<'a> {
    /// Reads a record of `posts.enriched` in place.
    pub fn from_log_bytes(bytes: &'a [u8]) -> Result<PostView<'a>, DecodeError> {
        PostView::with_prior(bytes).map(|(post, _)| post)
    }

    /// Reads a record of `posts.enriched` in place, with what it says of
    /// the version it replaces.
    pub fn with_prior(bytes: &'a [u8]) -> Result<(PostView<'a>, Prior<'a>), DecodeError> {
        PostView::with_prior_reading(bytes, &[true; 23])
    }

    /// [`PostView::with_prior`] for a reader of only the columns `reads`
    /// marks (indexes of [`super::batch::schema`]): the strings of the
    /// others are skipped unread and left empty (or absent), their bytes
    /// not checked to be UTF-8, which a record chorus wrote always is.
    pub fn with_prior_reading(bytes: &'a [u8], reads: &[bool; 23]) -> Result<(PostView<'a>, Prior<'a>), DecodeError> {
        if bytes.first() == Some(&MASKED_V2) {
            return PostView::from_masked(bytes).map(|post| (post, Prior::None));
        }
        if bytes.first() == Some(&b'{') {
            let post: Post = serde_json::from_slice(bytes).map_err(|e| DecodeError::Json(e.to_string()))?;
            let post = PostView {
                incoming: post.incoming.into(),
                text: Cow::Owned(post.text),
                ingested_at: post.ingested_at,
                scores: post.scores,
            };
            return Ok((post, Prior::None));
        }
        let tag = if bytes.first() == Some(&POST_V2) {
            POST_V2
        } else {
            POST_V1
        };
        // A text left out of the record is the body's.
        let mut reads = *reads;
        reads[4] |= reads[5];
        let mut r = Reader::new(bytes, tag, "posts.enriched")?;
        let incoming = r.incoming_reading(&reads)?;
        let text = match r.opt_str_if(reads[5])? {
            Some(text) => Cow::Borrowed(text),
            None if reads[5] => incoming.body.clone(),
            None => Cow::Borrowed(""),
        };
        let ingested_at = r.i64()?;
        let mut f = || r.i64().map(|v| f64::from_bits(v as u64));
        let (polarity, subjectivity, vader_neg, vader_neu, vader_pos, vader_compound) =
            (f()?, f()?, f()?, f()?, f()?, f()?);
        let sentiment = sentiment_of(r.byte()?)?;
        let prior = if tag == POST_V2 {
            match r.byte()? {
                PRIOR_STALE => Prior::Stale,
                PRIOR_REPLACES => {
                    let n = r.len()?;
                    Prior::Replaces(r.take(n)?)
                }
                b => {
                    return Err(DecodeError::Invalid(format!(
                        "prior {b} is not {PRIOR_STALE} or {PRIOR_REPLACES}"
                    )));
                }
            }
        } else {
            Prior::None
        };
        r.end()?;
        let post = PostView {
            incoming,
            text,
            ingested_at,
            scores: Scores {
                polarity,
                subjectivity,
                vader_neg,
                vader_neu,
                vader_pos,
                vader_compound,
                sentiment,
            },
        };
        Ok((post, prior))
    }

    /// The columns of this post `keep` marks (indexes of
    /// [`super::batch::schema`]) and its `ingested_at`, in tag 0xC3's
    /// layout, which [`PostView::from_log_bytes`] reads with the others
    /// empty strings, absent, 0 or neutral, and `platform` and `id` always
    /// empty (the post's key says them). What the speed layer needs of a
    /// version to take it back, and no more.
    pub fn to_masked_log_bytes(&self, keep: &[bool; 23]) -> Vec<u8> {
        let p = &self.incoming;
        let mut keep = *keep;
        // The key says platform and id; ingested_at is always there.
        keep[0] = false;
        keep[1] = false;
        keep[7] = false;
        let mask = keep
            .iter()
            .enumerate()
            .fold(0u32, |m, (i, k)| if *k { m | (1 << i) } else { m });
        let mut w = Writer(Vec::with_capacity(48));
        w.0.push(MASKED_V2);
        w.0.extend_from_slice(&mask.to_le_bytes()[..3]);
        w.i64(self.ingested_at);
        let s = &self.scores;
        let floats = s.floats();
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            match i {
                2 => w.opt_str(p.community.as_deref()),
                3 => w.opt_str(p.author.as_deref()),
                4 => w.str(&p.body),
                5 => w.str(&self.text),
                6 => w.i64(p.created_at),
                8 => w.opt_str(p.parent_id.as_deref()),
                9 => w.opt_str(p.thread_id.as_deref()),
                10 => w.opt_str(p.url.as_deref()),
                11 => w.opt_i64(p.score),
                12 => w.opt_i64(p.reposts),
                13 => w.opt_i64(p.author_followers),
                14 => w.opt_str(p.location.as_deref()),
                15 => w.opt_str(p.lang.as_deref()),
                16..=21 => w.0.extend_from_slice(&floats[i - 16].to_le_bytes()),
                _ => w.0.push(sentiment_byte(s.sentiment)),
            }
        }
        w.0
    }

    /// Reads what [`PostView::to_masked_log_bytes`] wrote; the columns it
    /// left out are empty strings, absent, 0 or neutral.
    fn from_masked(bytes: &'a [u8]) -> Result<PostView<'a>, DecodeError> {
        let mut r = Reader::new(bytes, MASKED_V2, "the speed layer's columns")?;
        let m = r.take(3)?;
        let mask = u32::from_le_bytes([m[0], m[1], m[2], 0]);
        // Platform, id and ingested_at are never in the mask, nor past
        // the 23 columns.
        if mask & 0b1000_0011 != 0 || mask >> 23 != 0 {
            return Err(DecodeError::Invalid(format!("column mask {mask:#x}")));
        }
        let ingested_at = r.i64()?;
        let b = Cow::Borrowed;
        let mut post = PostView {
            // Empty strings own no allocation.
            incoming: IncomingPost::new("", "", "", 0).into(),
            text: b(""),
            ingested_at,
            scores: Scores {
                polarity: 0.0,
                subjectivity: 0.0,
                vader_neg: 0.0,
                vader_neu: 0.0,
                vader_pos: 0.0,
                vader_compound: 0.0,
                sentiment: Sentiment::Neutral,
            },
        };
        let p = &mut post.incoming;
        let s = &mut post.scores;
        for i in (0..23).filter(|i| mask & (1 << i) != 0) {
            let float = |r: &mut Reader<'a>| r.i64().map(|v| f64::from_bits(v as u64));
            match i {
                2 => p.community = r.opt_str_if(true)?.map(b),
                3 => p.author = r.opt_str_if(true)?.map(b),
                4 => p.body = b(r.str_if(true)?),
                5 => post.text = b(r.str_if(true)?),
                6 => p.created_at = r.i64()?,
                8 => p.parent_id = r.opt_str_if(true)?.map(b),
                9 => p.thread_id = r.opt_str_if(true)?.map(b),
                10 => p.url = r.opt_str_if(true)?.map(b),
                11 => p.score = r.opt_i64()?,
                12 => p.reposts = r.opt_i64()?,
                13 => p.author_followers = r.opt_i64()?,
                14 => p.location = r.opt_str_if(true)?.map(b),
                15 => p.lang = r.opt_str_if(true)?.map(b),
                16 => s.polarity = float(&mut r)?,
                17 => s.subjectivity = float(&mut r)?,
                18 => s.vader_neg = float(&mut r)?,
                19 => s.vader_neu = float(&mut r)?,
                20 => s.vader_pos = float(&mut r)?,
                21 => s.vader_compound = float(&mut r)?,
                _ => s.sentiment = sentiment_of(r.byte()?)?,
            }
        }
        r.end()?;
        Ok(post)
    }

    /// The post, with owned strings.
    pub fn into_post(self) -> Post {
        Post {
            incoming: self.incoming.into_owned(),
            text: self.text.into_owned(),
            ingested_at: self.ingested_at,
            scores: self.scores,
        }
    }
}

/// At least the bytes of `p`'s fields as [`Writer::incoming`] writes them
/// (and a record's tag and time): one allocation per record.
fn encoded_len(p: &IncomingPost) -> usize {
    let strings = [
        &p.community,
        &p.author,
        &p.parent_id,
        &p.thread_id,
        &p.url,
        &p.location,
        &p.lang,
    ]
    .iter()
    .map(|s| s.as_deref().map_or(0, str::len))
    .sum::<usize>();
    // Ten strings, each length at most 5 bytes (under 4 GiB); created_at
    // 8 bytes; three optional integers, 9 with their presence byte; the
    // tag and `ingested_at`.
    strings + p.platform.len() + p.id.len() + p.body.len() + 10 * 5 + 8 + 3 * 9 + 1 + 8
}

struct Writer(Vec<u8>);

impl Writer {
    fn len(&mut self, mut n: usize) {
        while n >= 0x80 {
            self.0.push((n as u8) | 0x80);
            n >>= 7;
        }
        self.0.push(n as u8);
    }

    fn str(&mut self, s: &str) {
        self.len(s.len());
        self.0.extend_from_slice(s.as_bytes());
    }

    fn opt_str(&mut self, s: Option<&str>) {
        match s {
            None => self.0.push(0),
            Some(s) => {
                self.len(s.len() + 1);
                self.0.extend_from_slice(s.as_bytes());
            }
        }
    }

    fn i64(&mut self, v: i64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }

    fn opt_i64(&mut self, v: Option<i64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.i64(v);
            }
        }
    }

    /// What enrich adds after the incoming fields of a post with `body`.
    fn enrichment(&mut self, body: &str, text: &str, ingested_at: i64, s: &Scores) {
        // Most texts are their body unchanged by cleanup: 0 says so.
        if text == body {
            self.0.push(0);
        } else {
            self.opt_str(Some(text));
        }
        self.i64(ingested_at);
        for x in s.floats() {
            self.0.extend_from_slice(&x.to_le_bytes());
        }
        self.0.push(sentiment_byte(s.sentiment));
    }

    fn incoming(&mut self, p: &IncomingPost) {
        self.str(&p.platform);
        self.str(&p.id);
        self.opt_str(p.community.as_deref());
        self.opt_str(p.author.as_deref());
        self.str(&p.body);
        self.i64(p.created_at);
        self.opt_str(p.parent_id.as_deref());
        self.opt_str(p.thread_id.as_deref());
        self.opt_str(p.url.as_deref());
        self.opt_i64(p.score);
        self.opt_i64(p.reposts);
        self.opt_i64(p.author_followers);
        self.opt_str(p.location.as_deref());
        self.opt_str(p.lang.as_deref());
    }
}

fn sentiment_byte(s: Sentiment) -> u8 {
    match s {
        Sentiment::Negative => 0,
        Sentiment::Neutral => 1,
        Sentiment::Positive => 2,
    }
}

fn sentiment_of(b: u8) -> Result<Sentiment, DecodeError> {
    match b {
        0 => Ok(Sentiment::Negative),
        1 => Ok(Sentiment::Neutral),
        2 => Ok(Sentiment::Positive),
        b => Err(DecodeError::Invalid(format!("sentiment {b} is not 0, 1 or 2"))),
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], tag: u8, topic: &str) -> Result<Reader<'a>, DecodeError> {
        match bytes.first() {
            Some(&t) if t == tag => Ok(Reader { bytes, at: 1 }),
            Some(t) => Err(DecodeError::Invalid(format!(
                "tag byte {t:#04x} is not a record of {topic}"
            ))),
            None => Err(DecodeError::Truncated),
        }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(DecodeError::Truncated)?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<usize, DecodeError> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            n |= usize::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(n);
            }
        }
        Err(DecodeError::Invalid("a length of more than 64 bits".into()))
    }

    /// A string, or (when not `read`) its bytes skipped and "".
    fn str_if(&mut self, read: bool) -> Result<&'a str, DecodeError> {
        let len = self.len()?;
        let bytes = self.take(len)?;
        if !read {
            return Ok("");
        }
        std::str::from_utf8(bytes).map_err(|_| DecodeError::NotUtf8)
    }

    /// An optional string, or (when not `read`) its bytes skipped and none.
    fn opt_str_if(&mut self, read: bool) -> Result<Option<&'a str>, DecodeError> {
        match self.len()? {
            0 => Ok(None),
            n => {
                let bytes = self.take(n - 1)?;
                if !read {
                    return Ok(None);
                }
                std::str::from_utf8(bytes).map(Some).map_err(|_| DecodeError::NotUtf8)
            }
        }
    }

    fn i64(&mut self) -> Result<i64, DecodeError> {
        let bytes = self.take(8)?;
        Ok(i64::from_le_bytes(
            bytes.try_into().map_err(|_| DecodeError::Truncated)?,
        ))
    }

    fn opt_i64(&mut self) -> Result<Option<i64>, DecodeError> {
        match self.byte()? {
            0 => Ok(None),
            1 => self.i64().map(Some),
            b => Err(DecodeError::Invalid(format!("presence byte {b} is not 0 or 1"))),
        }
    }

    /// The fields of an [`IncomingPost`], in [`Writer::incoming`]'s order.
    fn incoming(&mut self) -> Result<IncomingView<'a>, DecodeError> {
        self.incoming_reading(&[true; 23])
    }

    /// [`Reader::incoming`], the strings of columns `reads` does not mark
    /// skipped (see [`PostView::with_prior_reading`]).
    fn incoming_reading(&mut self, reads: &[bool; 23]) -> Result<IncomingView<'a>, DecodeError> {
        let b = Cow::Borrowed;
        Ok(IncomingView {
            platform: b(self.str_if(reads[0])?),
            id: b(self.str_if(reads[1])?),
            community: self.opt_str_if(reads[2])?.map(b),
            author: self.opt_str_if(reads[3])?.map(b),
            body: b(self.str_if(reads[4])?),
            created_at: self.i64()?,
            parent_id: self.opt_str_if(reads[8])?.map(b),
            thread_id: self.opt_str_if(reads[9])?.map(b),
            url: self.opt_str_if(reads[10])?.map(b),
            score: self.opt_i64()?,
            reposts: self.opt_i64()?,
            author_followers: self.opt_i64()?,
            location: self.opt_str_if(reads[14])?.map(b),
            lang: self.opt_str_if(reads[15])?.map(b),
        })
    }

    fn end(&self) -> Result<(), DecodeError> {
        match self.bytes.len() - self.at {
            0 => Ok(()),
            n => Err(DecodeError::Trailing(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> IncomingPost {
        IncomingPost {
            community: Some("politics".into()),
            author: Some("ünïcode 😀".into()),
            parent_id: Some(String::new()),
            thread_id: None,
            url: Some("https://x.org/".repeat(20)),
            score: Some(-3),
            reposts: None,
            author_followers: Some(i64::MAX),
            location: None,
            lang: Some("en".into()),
            // A body longer than 127 bytes needs a two-byte length.
            ..IncomingPost::new("reddit", "t1_abc", &"I love it. ".repeat(40), -1)
        }
    }

    fn post() -> Post {
        let scores = Scores {
            polarity: 0.1 + 0.2,
            subjectivity: -0.0,
            vader_neg: 0.0,
            vader_neu: 0.523,
            vader_pos: 0.477,
            vader_compound: f64::MIN_POSITIVE,
            sentiment: Sentiment::Positive,
        };
        full().into_post("I love it.".into(), scores, 1_700_000_000_123_456)
    }

    #[test]
    fn records_read_back_equal() {
        let raw = RawPost {
            incoming: full(),
            ingested_at: 42,
        };
        // Written into one allocation of the size foreseen.
        assert!(raw.to_log_bytes().len() <= encoded_len(&raw.incoming));
        assert_eq!(RawPost::from_log_bytes(&raw.to_log_bytes()), Ok(raw));
        let minimal = RawPost {
            incoming: IncomingPost::new("x", "1", "", 0),
            ingested_at: 0,
        };
        assert_eq!(RawPost::from_log_bytes(&minimal.to_log_bytes()), Ok(minimal));
        let post = post();
        let back = Post::from_log_bytes(&post.to_log_bytes()).unwrap();
        assert_eq!(back, post);
        // A text equal to its body is stored once; an empty text is not
        // mistaken for it.
        let mut same = post.clone();
        same.text = same.incoming.body.clone();
        let bytes = same.to_log_bytes();
        assert!(bytes.len() < post.to_log_bytes().len());
        assert_eq!(Post::from_log_bytes(&bytes), Ok(same));
        let mut empty = post.clone();
        empty.text = String::new();
        assert_eq!(Post::from_log_bytes(&empty.to_log_bytes()), Ok(empty));
        // Bit for bit, the sign of zero included.
        assert_eq!(back.scores.subjectivity.to_bits(), (-0.0f64).to_bits());
    }

    #[test]
    fn views_borrow_the_record_and_equal_the_post() {
        let post = post();
        let bytes = post.to_log_bytes();
        let view = PostView::from_log_bytes(&bytes).unwrap();
        assert_eq!(view, post.view());
        assert!(
            matches!(view.incoming.body, Cow::Borrowed(_)) && matches!(view.incoming.community, Some(Cow::Borrowed(_)))
        );
        assert_eq!(view.into_post(), post);
        // JSON records of earlier versions give the same view.
        let json = serde_json::to_vec(&post).unwrap();
        assert_eq!(PostView::from_log_bytes(&json).unwrap(), post.view());
    }

    #[test]
    fn a_raw_view_writes_the_enriched_record_and_hashes_the_content() {
        let post = post();
        let raw = RawPost {
            incoming: post.incoming.clone(),
            ingested_at: post.ingested_at,
        };
        let bytes = raw.to_log_bytes();
        let view = RawView::from_log_bytes(&bytes).unwrap();
        assert!(matches!(view.incoming.body, Cow::Borrowed(_)));
        assert_eq!(view.to_post_log_bytes(&post.text, &post.scores), post.to_log_bytes());
        let mut same = post.clone();
        same.text = same.incoming.body.clone();
        assert_eq!(view.to_post_log_bytes(&same.text, &same.scores), same.to_log_bytes());
        // The hash is the content's: another ingest time, or the JSON form
        // of an earlier version, hash the same; any changed field does not.
        let later = RawPost {
            ingested_at: 99,
            ..raw.clone()
        };
        let json = serde_json::to_vec(&raw).unwrap();
        let hash = view.content_hash();
        assert_eq!(
            RawView::from_log_bytes(&later.to_log_bytes()).unwrap().content_hash(),
            hash
        );
        assert_eq!(RawView::from_log_bytes(&json).unwrap().content_hash(), hash);
        let changes: [fn(&mut IncomingPost); 4] = [
            |p| p.body.push('!'),
            |p| p.score = None,
            |p| p.lang = None,
            |p| p.thread_id = Some(String::new()),
        ];
        for change in changes {
            let mut edited = raw.clone();
            change(&mut edited.incoming);
            let bytes = edited.to_log_bytes();
            assert_ne!(RawView::from_log_bytes(&bytes).unwrap().content_hash(), hash);
        }
        assert_eq!(view.into_raw_post(), raw);
    }

    #[test]
    fn json_records_of_earlier_versions_still_read() {
        let post = post();
        let json = serde_json::to_vec(&post).unwrap();
        assert_eq!(Post::from_log_bytes(&json), Ok(post.clone()));
        let raw = RawPost {
            incoming: post.incoming,
            ingested_at: 7,
        };
        let json = serde_json::to_vec(&raw).unwrap();
        assert_eq!(RawPost::from_log_bytes(&json), Ok(raw));
    }

    #[test]
    fn damaged_records_are_errors_not_panics() {
        let bytes = post().to_log_bytes();
        // Every truncation, and every single-byte change of the tag.
        for n in 0..bytes.len() {
            assert!(Post::from_log_bytes(&bytes[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(Post::from_log_bytes(&longer), Err(DecodeError::Trailing(1)));
        // A post is not a raw post and the other way round.
        assert!(matches!(RawPost::from_log_bytes(&bytes), Err(DecodeError::Invalid(_))));
        let raw = RawPost {
            incoming: full(),
            ingested_at: 1,
        };
        assert!(matches!(
            Post::from_log_bytes(&raw.to_log_bytes()),
            Err(DecodeError::Invalid(_))
        ));
        assert!(matches!(Post::from_log_bytes(b"{not json"), Err(DecodeError::Json(_))));
        // Invalid UTF-8 in the platform.
        let mut bad = raw.to_log_bytes();
        bad[2] = 0xff;
        assert_eq!(RawPost::from_log_bytes(&bad), Err(DecodeError::NotUtf8));
        // Garbage of every length never panics.
        let mut rng = fastrand::Rng::with_seed(7);
        for len in 0..300 {
            let mut junk: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
            if let Some(first) = junk.first_mut() {
                *first = if rng.bool() { RAW_V1 } else { POST_V1 };
            }
            let _ = RawPost::from_log_bytes(&junk);
            let _ = Post::from_log_bytes(&junk);
            if let Some(first) = junk.first_mut() {
                *first = POST_V2;
            }
            let _ = PostView::with_prior(&junk);
            if let Some(first) = junk.first_mut() {
                *first = MASKED_V2;
            }
            let _ = PostView::with_prior(&junk);
        }
    }

    #[test]
    fn a_record_carries_its_prior_which_other_readers_ignore() {
        let post = post();
        let plain = post.to_log_bytes();
        assert_eq!(PostView::with_prior(&plain).unwrap().1, Prior::None);
        // Only the columns kept survive the mask; the key never does.
        let mut keep = [false; 23];
        for i in [2, 6, 11, 21, 22] {
            keep[i] = true;
        }
        let masked = post.view().to_masked_log_bytes(&keep);
        assert!(
            masked.len() < plain.len() / 4,
            "{} of {} bytes",
            masked.len(),
            plain.len()
        );
        let prior = Post::from_log_bytes(&masked).unwrap();
        assert_eq!(prior.incoming.community, post.incoming.community);
        assert_eq!(prior.incoming.created_at, post.incoming.created_at);
        assert_eq!(prior.incoming.score, post.incoming.score);
        assert_eq!(prior.scores.vader_compound, post.scores.vader_compound);
        assert_eq!(prior.scores.sentiment, post.scores.sentiment);
        assert_eq!(prior.ingested_at, post.ingested_at);
        assert_eq!((prior.incoming.platform.as_str(), prior.incoming.id.as_str()), ("", ""));
        assert_eq!(
            (prior.incoming.author, prior.incoming.url, prior.incoming.lang),
            (None, None, None)
        );
        assert_eq!((prior.incoming.body.as_str(), prior.text.as_str()), ("", ""));
        assert_eq!(prior.scores.polarity, 0.0);
        // The full mask gives the post back but for its key.
        let all = Post::from_log_bytes(&post.view().to_masked_log_bytes(&[true; 23])).unwrap();
        assert_eq!(
            (all.text, all.incoming.body),
            (post.text.clone(), post.incoming.body.clone())
        );
        for prior in [Prior::Stale, Prior::Replaces(&masked)] {
            let mut record = plain.clone();
            prior.append_to(&mut record);
            let (view, read) = PostView::with_prior(&record).unwrap();
            assert_eq!(read, prior);
            assert_eq!(view.into_post(), post, "readers of the post see it unchanged");
            assert_eq!(Post::from_log_bytes(&record).unwrap(), post);
            for n in 0..record.len() {
                assert!(PostView::with_prior(&record[..n]).is_err(), "prefix of {n} bytes");
            }
        }
    }

    #[test]
    fn a_reader_of_some_columns_gets_those_and_skips_the_other_strings() {
        let post = post();
        let mut record = post.to_log_bytes();
        Prior::Stale.append_to(&mut record);
        let mut reads = [false; 23];
        for i in [0, 2, 6, 16, 21, 22] {
            reads[i] = true;
        }
        let (view, prior) = PostView::with_prior_reading(&record, &reads).unwrap();
        assert_eq!(prior, Prior::Stale);
        let p = &view.incoming;
        assert_eq!(
            (p.platform.as_ref(), p.community.as_deref()),
            ("reddit", Some("politics"))
        );
        assert_eq!(p.created_at, post.incoming.created_at);
        assert_eq!(view.scores, post.scores);
        assert_eq!((p.id.as_ref(), p.body.as_ref(), view.text.as_ref()), ("", "", ""));
        assert_eq!(
            (p.author.as_deref(), p.url.as_deref(), p.lang.as_deref()),
            (None, None, None)
        );
        // The text read alone: a text the record leaves out is the body.
        let mut text = [false; 23];
        text[5] = true;
        let unchanged = Post {
            text: post.incoming.body.clone(),
            ..post.clone()
        };
        let bytes = unchanged.to_log_bytes();
        let (view, _) = PostView::with_prior_reading(&bytes, &text).unwrap();
        assert_eq!(view.text, unchanged.text);
        // A damaged record is still an error, whatever is read.
        for n in 0..record.len() {
            assert!(
                PostView::with_prior_reading(&record[..n], &reads).is_err(),
                "prefix of {n} bytes"
            );
        }
        // Reading every column is reading the record.
        assert_eq!(
            PostView::with_prior_reading(&record, &[true; 23]).unwrap(),
            PostView::with_prior(&record).unwrap()
        );
    }

    #[test]
    fn the_speed_layers_columns_read_back_each_as_written_and_the_others_empty() {
        let post = post();
        let nothing = post.view().to_masked_log_bytes(&[false; 23]);
        let blank = PostView::from_masked(&nothing).unwrap();
        assert_eq!(blank.ingested_at, post.ingested_at);
        let columns =
            |v: &PostView<'_>| super::super::batch::to_projected_batch(std::slice::from_ref(v), &[true; 25]).unwrap();
        let (whole, empty) = (columns(&post.view()), columns(&blank));
        let mut rng = fastrand::Rng::with_seed(3);
        for round in 0..300 {
            let keep: [bool; 23] = std::array::from_fn(|i| if round < 23 { i == round } else { rng.bool() });
            let masked = post.view().to_masked_log_bytes(&keep);
            let view = PostView::from_log_bytes(&masked).unwrap();
            let got = columns(&view);
            for i in 0..23 {
                let kept = keep[i] && !matches!(i, 0 | 1) || i == 7;
                let want = if kept { &whole } else { &empty };
                assert_eq!(got.column(i), want.column(i), "column {i} of mask {keep:?}");
            }
            for n in 0..masked.len() {
                assert!(PostView::from_log_bytes(&masked[..n]).is_err(), "prefix of {n} bytes");
            }
        }
        // The built-in views' columns of a post: a small part of its record.
        let mut keep = [false; 23];
        for i in [2, 3, 6, 11, 12, 13, 14, 16, 21, 22] {
            keep[i] = true;
        }
        let plain = post.to_log_bytes();
        let masked = post.view().to_masked_log_bytes(&keep);
        assert!(
            masked.len() < 90,
            "{} bytes (the record: {})",
            masked.len(),
            plain.len()
        );
    }
}
