//! `GET /v1/search` and `chorus search`: the request and the answer, whose
//! JSON keys are a contract (`total`, `hits`, `next`, `histogram`,
//! `sentiment`, `communities`, `authors`, `terms`).

use serde::{Deserialize, Serialize};

/// How hits are ordered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sort {
    /// Newest `created_at` first.
    #[default]
    Newest,
    /// Best match first.
    Relevance,
}

/// A search.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchRequest {
    /// The query: words, "phrases", AND/OR/NOT, `field:value`; empty: all.
    pub q: String,
    /// Posts created at or after this, µs since the epoch.
    pub since: Option<i64>,
    /// Posts created before this, µs since the epoch.
    pub until: Option<i64>,
    /// Only this community.
    pub community: Option<String>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Only this author.
    pub author: Option<String>,
    /// Only this sentiment (`positive`, `neutral`, `negative`).
    pub sentiment: Option<String>,
    /// The order of hits.
    pub sort: Sort,
    /// Hits per page.
    pub limit: usize,
    /// The `next` of the previous page.
    pub after: Option<String>,
    /// The histogram's bar width, µs; `None`: chosen for the span (at most
    /// ~60 bars). One that would give more than [`MAX_BARS`] is widened.
    pub interval: Option<i64>,
}

/// Most bars of a histogram with an explicit `interval`.
pub const MAX_BARS: i64 = 1000;

/// One bar of the date histogram.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Its first instant (RFC 3339, UTC).
    pub start: String,
    /// Matching posts created in it.
    pub count: u64,
    /// Their mean `vader_compound` (null when none).
    pub mean_compound: Option<f64>,
}

/// Matching posts per sentiment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sentiments {
    /// `positive` posts.
    pub positive: u64,
    /// `neutral` posts.
    pub neutral: u64,
    /// `negative` posts.
    pub negative: u64,
}

/// An entry of a top list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Count {
    /// The community, author or word.
    pub key: String,
    /// Matching posts with it.
    pub count: u64,
}

/// The answer to a search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResponse {
    /// Matching posts in all.
    pub total: u64,
    /// This page: each the post's columns and `highlight`, its text as
    /// escaped HTML with the matched words in `<mark>`.
    pub hits: Vec<serde_json::Value>,
    /// The cursor of the next page (`after`), absent on the last.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
    /// Matching posts over time, with an interval chosen for the span.
    pub histogram: Vec<Bucket>,
    /// Matching posts per sentiment.
    pub sentiment: Sentiments,
    /// Top communities of the matching posts.
    pub communities: Vec<Count>,
    /// Top authors.
    pub authors: Vec<Count>,
    /// Top words of the first matching posts (stop words left out).
    pub terms: Vec<Count>,
}

/// Longest `q`, bytes.
pub const MAX_QUERY_BYTES: usize = 4096;
/// Hits per page when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 20;

/// A time bound of a search: RFC 3339 (`2026-12-01T10:00:00Z`), a date
/// (`2026-12-01`, midnight UTC), or a span back from `now` (`30s`, `15m`,
/// `24h`, `7d`, `2w`); µs since the epoch.
pub fn parse_time(text: &str, now: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Some(span) = parse_span(text) {
        return Ok(now.saturating_sub(span));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).map_or(0, |t| t.and_utc().timestamp_micros()));
    }
    Err(format!(
        "{text:?} is not a time: use RFC 3339 (2026-12-01T10:00:00Z), a date (2026-12-01) or a span back from now (15m, 24h, 7d)"
    ))
}

/// A span like `30s`, `15m`, `24h`, `7d`, `2w`, µs.
pub fn parse_span(text: &str) -> Option<i64> {
    let unit = match text.chars().last()? {
        's' => 1_000_000i64,
        'm' => 60_000_000,
        'h' => 3_600_000_000,
        'd' => 86_400_000_000,
        'w' => 7 * 86_400_000_000,
        _ => return None,
    };
    let n = text[..text.len() - 1].parse::<u32>().ok()?;
    Some(i64::from(n).saturating_mul(unit))
}

/// The query parameters of `GET /v1/search`, as strings (each checked by
/// [`SearchParams::request`], with a clear error).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SearchParams {
    /// The query.
    pub q: Option<String>,
    /// Time bounds.
    pub since: Option<String>,
    /// Time bounds.
    pub until: Option<String>,
    /// Filters.
    pub community: Option<String>,
    /// Filters.
    pub platform: Option<String>,
    /// Filters.
    pub author: Option<String>,
    /// Filters.
    pub sentiment: Option<String>,
    /// `newest` or `relevance`.
    pub sort: Option<String>,
    /// Hits per page.
    pub limit: Option<String>,
    /// The cursor.
    pub after: Option<String>,
    /// The histogram's bar width (`1m`, `1h`, …); default: automatic.
    pub interval: Option<String>,
}

impl SearchParams {
    /// The search these parameters ask for, at `now` (µs).
    pub fn request(&self, now: i64) -> Result<SearchRequest, String> {
        let q = self.q.clone().unwrap_or_default();
        if q.len() > MAX_QUERY_BYTES {
            return Err(format!("q is {} bytes, more than {MAX_QUERY_BYTES}", q.len()));
        }
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now)).transpose();
        let sort = match self.sort.as_deref() {
            None | Some("newest") => Sort::Newest,
            Some("relevance") => Sort::Relevance,
            Some(other) => return Err(format!("sort {other:?}: use newest or relevance")),
        };
        let limit = match self.limit.as_deref() {
            None => DEFAULT_LIMIT,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=1000).contains(l))
                .ok_or_else(|| format!("limit {l:?}: a number from 1 to 1000"))?,
        };
        if let Some(s) = self.sentiment.as_deref()
            && !matches!(s, "positive" | "neutral" | "negative")
        {
            return Err(format!("sentiment {s:?}: positive, neutral or negative"));
        }
        Ok(SearchRequest {
            q,
            since: time(&self.since)?,
            until: time(&self.until)?,
            community: self.community.clone(),
            platform: self.platform.clone(),
            author: self.author.clone(),
            sentiment: self.sentiment.clone(),
            sort,
            limit,
            after: self.after.clone(),
            interval: match self.interval.as_deref() {
                None => None,
                Some(text) => Some(
                    parse_span(text.trim())
                        .filter(|&span| span > 0)
                        .ok_or_else(|| format!("interval {text:?}: a span like 1m, 1h or 1d"))?,
                ),
            },
        })
    }
}
