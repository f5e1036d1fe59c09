//! Search over the index: a query (words, "phrases", AND/OR/NOT,
//! `field:value`), filters, a sort, a page, and in the same answer the
//! aggregations a dashboard draws (a date histogram with its mean
//! sentiment, the sentiment split, top communities, authors and terms).

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::{Value, json};
use tantivy::aggregation::AggregationCollector;
use tantivy::aggregation::agg_req::Aggregations;
use tantivy::aggregation::agg_result::AggregationResults;
use tantivy::collector::{Collector, Count, SegmentCollector, TopDocs};
use tantivy::index::SegmentId;
use tantivy::query::{
    AllQuery, BitSetDocSet, BooleanQuery, ConstScorer, EmptyScorer, EnableScoring, Explanation, Occur, Query,
    QueryParser, RangeQuery, Scorer, TermQuery, Weight,
};
use tantivy::schema::{IndexRecordOption, Value as _};
use tantivy::snippet::SnippetGenerator;
use tantivy::tokenizer::{Language, LowerCaser, SimpleTokenizer, StopWordFilter, TextAnalyzer};
use tantivy::{BitSet, DocAddress, DocId, Order, Score, SegmentOrdinal, SegmentReader, TantivyDocument, Term};

use super::{IndexError, Searcher};
use crate::record::{END_CREATED_AT, MIN_CREATED_AT, Post};
use crate::wire::search::{Bucket, Count as KeyCount, MAX_BARS, SearchRequest, SearchResponse, Sentiments, Sort};

/// Hits per page at most.
pub const MAX_LIMIT: usize = 1000;
/// Deepest relevance page (offset + limit), as OpenSearch's
/// `max_result_window`; `newest` pages go as deep as the index.
pub const MAX_RELEVANCE_WINDOW: usize = 10_000;
/// Matching posts, in sort order, whose words make the top terms.
const TERMS_SAMPLE: usize = 500;
/// Entries of each top list.
const TOP: usize = 10;
/// Characters of a hit's highlighted text at most.
const HIGHLIGHT_CHARS: usize = 300;
/// Bytes of a hit's text the highlighter looks into (a post may be 1 MiB).
const HIGHLIGHT_SCAN_BYTES: usize = 64 * 1024;
/// Bytes of each sampled post's text the top terms are counted over.
const TERMS_TEXT_BYTES: usize = 4 * 1024;
/// The hits of a page stop once their posts reach this many bytes (posts
/// may be 1 MiB each); `next` then goes on from the first one left out.
pub const MAX_PAGE_BYTES: usize = 16 << 20;

/// A search that cannot run: the client's fault, with where in `q`.
#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    /// `q` does not parse.
    #[error("{message}")]
    Query {
        /// The parser's message.
        message: String,
        /// Byte offset in `q`, when the parser knows it.
        position: Option<usize>,
    },
    /// A bad parameter (`after`, `limit`…).
    #[error("{0}")]
    Invalid(String),
    /// The index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
}

impl From<tantivy::TantivyError> for SearchError {
    fn from(e: tantivy::TantivyError) -> Self {
        SearchError::Index(IndexError::Tantivy(e))
    }
}

impl Searcher {
    /// Runs `request`.
    ///
    /// One pass over the matches gives the count, the page, the sample of
    /// the top terms, the sentiment split, the top communities and authors,
    /// and either the histogram (when `since` and `until` give its span) or
    /// the matches' first and last times. The histogram over those, and a
    /// page after a cursor, then look at the matches collected in that
    /// pass, without evaluating the query again.
    pub fn search(&self, request: &SearchRequest) -> Result<SearchResponse, SearchError> {
        let f = self.fields;
        let limit = request.limit.clamp(1, MAX_LIMIT);
        let searcher = self.reader.searcher();
        let (text_query, query) = build_query(&self.index, f, request)?;

        let mut aggs = json!({
            "sentiment": SENTIMENT_AGG.clone(),
            "communities": {"terms": {"field": "community", "size": TOP}},
            "authors": {"terms": {"field": "author", "size": TOP}},
        });
        // Whether the first pass draws the histogram (the filters give its
        // span).
        let mut drawn = false;
        match (request.since, request.until) {
            (Some(since), Some(until)) => {
                if let Some(histogram) = histogram_agg(since, until.saturating_sub(1), request.interval) {
                    aggs["histogram"] = histogram;
                    drawn = true;
                }
            }
            _ => {
                aggs["first"] = json!({"min": {"field": "created_at"}});
                aggs["last"] = json!({"max": {"field": "created_at"}});
            }
        }
        let aggs = aggregations_collector(aggs)?;

        // The page: newest first (a cursor of the last hit's created_at and
        // how many hits with that time were shown), or by relevance (a
        // cursor of the offset). Each candidate keeps its created_at, from
        // which the cursor after it is made.
        type Page = (
            usize,
            Vec<(i64, DocAddress)>,
            bool,
            Cursor,
            AggregationResults,
            Matched,
            Vec<DocAddress>,
        );
        let (total, candidates, more, cursor, found, matches, sample): Page = match request.sort {
            Sort::Newest => {
                let (until, skip) = match &request.after {
                    None => (None, 0),
                    Some(cursor) => {
                        let (t, n) = cursor
                            .split_once(':')
                            .and_then(|(t, n)| Some((t.parse::<i64>().ok()?, n.parse::<usize>().ok()?)))
                            .filter(|(_, n)| *n <= MAX_RELEVANCE_WINDOW)
                            .ok_or_else(|| {
                                SearchError::Invalid(format!("after {cursor:?} is not a cursor of this search"))
                            })?;
                        (Some(t), n)
                    }
                };
                let newest = |n: usize| TopDocs::with_limit(n).order_by_fast_field::<i64>("created_at", Order::Desc);
                let (total, docs, found, matches) =
                    searcher.search(&*query, &(Count, newest(TERMS_SAMPLE.max(limit + 1)), aggs, Matches))?;
                let sample = docs.iter().take(TERMS_SAMPLE).map(|(_, a)| *a).collect();
                let docs = match until {
                    None => docs,
                    // After a cursor: the matches older than its time.
                    Some(t) => {
                        let older = BooleanQuery::new(vec![
                            (Occur::Must, Box::new(matches.clone())),
                            (
                                Occur::Must,
                                Box::new(range(f.created_at, None, Some(t.saturating_add(1)))),
                            ),
                        ]);
                        searcher.search(&older, &newest(limit + skip + 1))?
                    }
                };
                let page: Vec<(i64, DocAddress)> = docs
                    .into_iter()
                    .skip(skip)
                    .take(limit + 1)
                    .map(|(t, a)| (t.unwrap_or(i64::MIN), a))
                    .collect();
                let more = page.len() > limit;
                (
                    total,
                    page,
                    more,
                    Cursor::Newest { until, skip },
                    found,
                    matches,
                    sample,
                )
            }
            Sort::Relevance => {
                let offset = match &request.after {
                    None => 0,
                    Some(cursor) => cursor.parse::<usize>().map_err(|_| {
                        SearchError::Invalid(format!("after {cursor:?} is not a cursor of this search"))
                    })?,
                };
                if offset.saturating_add(limit) > MAX_RELEVANCE_WINDOW {
                    return Err(SearchError::Invalid(format!(
                        "relevance pages go {MAX_RELEVANCE_WINDOW} hits deep; sort by newest to go further"
                    )));
                }
                let top = TopDocs::with_limit(TERMS_SAMPLE.max(offset + limit + 1)).order_by_score();
                let (total, docs, found, matches) = searcher.search(&*query, &(Count, top, aggs, Matches))?;
                let sample = docs.iter().take(TERMS_SAMPLE).map(|(_, a)| *a).collect();
                let page: Vec<(i64, DocAddress)> = docs
                    .into_iter()
                    .skip(offset)
                    .take(limit + 1)
                    .map(|(_, a)| (0, a))
                    .collect();
                let more = page.len() > limit;
                (total, page, more, Cursor::Relevance { offset }, found, matches, sample)
            }
        };

        let highlighter = match &text_query {
            Some(q) => {
                let mut g = SnippetGenerator::create(&searcher, &**q, f.text)?;
                g.set_max_num_chars(HIGHLIGHT_CHARS);
                Some(g)
            }
            None => None,
        };
        let mut hits = Vec::with_capacity(candidates.len().min(limit));
        // The candidates passed (shown, or stored unreadably), in order.
        let mut shown: Vec<i64> = Vec::with_capacity(hits.capacity());
        let mut bytes = 0;
        for &(created_at, address) in candidates.iter().take(limit) {
            let Some(post) = self.post(&searcher, address)? else {
                shown.push(created_at);
                continue;
            };
            let size = post.incoming.body.len() + post.text.len();
            if !hits.is_empty() && bytes + size > MAX_PAGE_BYTES {
                break;
            }
            bytes += size;
            let mut hit = serde_json::to_value(&post).unwrap_or(Value::Null);
            // No words to mark (a filter-only search, a prefix): the text's
            // beginning.
            let scanned = prefix(&post.text, HIGHLIGHT_SCAN_BYTES);
            let highlight = match highlighter.as_ref().map(|g| g.snippet(scanned)) {
                Some(snippet) if !snippet.highlighted().is_empty() => mark(&snippet),
                _ => escape(&truncate(&post.text, HIGHLIGHT_CHARS)),
            };
            hit["highlight"] = Value::String(highlight);
            hits.push(hit);
            shown.push(created_at);
        }
        // Cut by the byte bound: the rest of the candidates come next.
        let more = more || shown.len() < candidates.len().min(limit);
        let next = more.then(|| cursor.after(&shown));

        let found = serde_json::to_value(found).unwrap_or(Value::Null);
        let histogram = if drawn {
            buckets(&found["histogram"])
        } else {
            self.histogram(&searcher, &matches, request, &found)?
        };
        let terms = self.top_terms(&searcher, sample)?;
        Ok(SearchResponse {
            total: total as u64,
            hits,
            next,
            histogram,
            sentiment: sentiments(&found["sentiment"]),
            communities: key_counts(&found["communities"]),
            authors: key_counts(&found["authors"]),
            terms,
        })
    }

    /// How many posts `request` matches, and their sentiment split: what an
    /// alert looks at, without a page or the other aggregations.
    pub fn tally(&self, request: &SearchRequest) -> Result<(u64, Sentiments), SearchError> {
        let searcher = self.reader.searcher();
        let (_, query) = build_query(&self.index, self.fields, request)?;
        let result = run_aggs(&searcher, &*query, json!({ "sentiment": SENTIMENT_AGG.clone() }))?;
        let split = sentiments(&result["sentiment"]);
        Ok((split.positive + split.neutral + split.negative, split))
    }

    /// The stored post of a hit.
    fn post(&self, searcher: &tantivy::Searcher, address: DocAddress) -> Result<Option<Post>, SearchError> {
        let doc: TantivyDocument = searcher.doc(address)?;
        let Some(bytes) = doc.get_first(self.fields.record).and_then(|v| v.as_bytes()) else {
            return Ok(None);
        };
        Ok(Post::from_log_bytes(bytes).ok())
    }

    /// The histogram over `matches` when the filters did not give its
    /// span: from `since` (else the matches' first time) to `until` (else
    /// their last), bounds `found` holds.
    fn histogram(
        &self,
        searcher: &tantivy::Searcher,
        matches: &Matched,
        request: &SearchRequest,
        found: &Value,
    ) -> Result<Vec<Bucket>, SearchError> {
        let first = request
            .since
            .or_else(|| found["first"]["value"].as_f64().map(|v| v as i64));
        let last = request
            .until
            .map(|u| u.saturating_sub(1))
            .or_else(|| found["last"]["value"].as_f64().map(|v| v as i64));
        let Some(histogram) = first
            .zip(last)
            .and_then(|(first, last)| histogram_agg(first, last, request.interval))
        else {
            return Ok(Vec::new());
        };
        let result = run_aggs(searcher, matches, json!({ "histogram": histogram }))?;
        Ok(buckets(&result["histogram"]))
    }

    /// The most frequent words (stop words and words under 3 letters left
    /// out) of the first matching posts in sort order: the first 4 KiB of
    /// each of the first 500, within 16 MiB of posts read.
    fn top_terms(&self, searcher: &tantivy::Searcher, sample: Vec<DocAddress>) -> Result<Vec<KeyCount>, SearchError> {
        let mut analyzer = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(LowerCaser)
            .filter(StopWordFilter::new(Language::English).expect("tantivy ships English stop words"))
            .build();
        let mut counts: HashMap<String, u64> = HashMap::new();
        // The sample also ends after 16 MiB of posts read (they may be
        // 1 MiB each).
        let mut read = 0;
        for address in sample {
            if read > MAX_PAGE_BYTES {
                break;
            }
            let Some(post) = self.post(searcher, address)? else {
                continue;
            };
            read += post.incoming.body.len() + post.text.len();
            let mut seen = std::collections::HashSet::new();
            let mut stream = analyzer.token_stream(prefix(&post.text, TERMS_TEXT_BYTES));
            while let Some(token) = stream.next() {
                let word = &token.text;
                if word.chars().count() >= 3 && !word.chars().all(|c| c.is_ascii_digit()) && seen.insert(word.clone()) {
                    *counts.entry(word.clone()).or_default() += 1;
                }
            }
        }
        let mut top: Vec<KeyCount> = counts.into_iter().map(|(key, count)| KeyCount { key, count }).collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
        top.truncate(TOP);
        Ok(top)
    }
}

/// The query of `request` over an index of this schema (the search index,
/// or a batch of the live stream), and its text part alone (for highlights).
#[allow(clippy::type_complexity)]
pub fn build_query(
    index: &tantivy::Index,
    f: super::Fields,
    request: &SearchRequest,
) -> Result<(Option<Box<dyn Query>>, Box<dyn Query>), SearchError> {
    let mut parts: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    let text_query = if request.q.trim().is_empty() {
        None
    } else {
        // Words go to `text`; `field:value` reaches any field; `word*`
        // is a prefix (as a regex the parser understands).
        let mut parser = QueryParser::for_index(index, vec![f.text]);
        parser.set_conjunction_by_default();
        parser.allow_regexes();
        let q = parser.parse_query(&with_prefixes(&request.q)).map_err(|e| {
            let position = match e {
                tantivy::query::QueryParserError::SyntaxError(_) => {
                    tantivy::query_grammar::parse_query_lenient(&request.q)
                        .1
                        .first()
                        .map(|l| l.pos)
                }
                _ => None,
            };
            SearchError::Query {
                message: e.to_string(),
                position,
            }
        })?;
        Some(q)
    };
    if let Some(q) = &text_query {
        parts.push((Occur::Must, q.box_clone()));
    }
    for (field, value) in [
        (f.community, &request.community),
        (f.platform, &request.platform),
        (f.author, &request.author),
        (f.sentiment, &request.sentiment),
    ] {
        if let Some(value) = value {
            parts.push((
                Occur::Must,
                Box::new(TermQuery::new(
                    Term::from_field_text(field, value),
                    IndexRecordOption::Basic,
                )),
            ));
        }
    }
    if request.since.is_some() || request.until.is_some() {
        parts.push((Occur::Must, Box::new(range(f.created_at, request.since, request.until))));
    }
    let query: Box<dyn Query> = match parts.len() {
        0 => Box::new(AllQuery),
        _ => Box::new(BooleanQuery::new(parts)),
    };
    Ok((text_query, query))
}

/// Where a page started, to make the cursor of the next one.
enum Cursor {
    /// Newest first: below `until` (µs), after `skip` hits at it.
    Newest { until: Option<i64>, skip: usize },
    /// By relevance: after `offset` hits.
    Relevance { offset: usize },
}

impl Cursor {
    /// The cursor after a page that showed hits created at `shown`.
    fn after(&self, shown: &[i64]) -> String {
        match *self {
            Cursor::Relevance { offset } => (offset + shown.len()).to_string(),
            Cursor::Newest { until, skip } => {
                let Some(&last) = shown.last() else {
                    // Nothing fitted: the same page again cannot be right;
                    // the caller shows at least one hit.
                    return format!("{}:{skip}", until.unwrap_or(i64::MAX));
                };
                let same = shown.iter().rev().take_while(|t| **t == last).count();
                // Hits at `last` shown on earlier pages count too.
                let carried = if until == Some(last) { skip } else { 0 };
                format!("{last}:{}", same + carried)
            }
        }
    }
}

/// The terms aggregation of the sentiment split.
static SENTIMENT_AGG: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({"terms": {"field": "sentiment", "size": 3}}));

/// The sentiment split out of its terms aggregation's result.
fn sentiments(result: &Value) -> Sentiments {
    let mut split = Sentiments::default();
    for bucket in result["buckets"].as_array().into_iter().flatten() {
        let count = bucket["doc_count"].as_u64().unwrap_or(0);
        match bucket["key"].as_str() {
            Some("positive") => split.positive = count,
            Some("neutral") => split.neutral = count,
            Some("negative") => split.negative = count,
            _ => {}
        }
    }
    split
}

/// The histogram aggregation from `first` to `last` (µs, within the times
/// a post can have): bars of `requested` µs if that makes at most
/// [`MAX_BARS`], else of a round interval for the span. None when the span
/// is empty.
fn histogram_agg(first: i64, last: i64, requested: Option<i64>) -> Option<Value> {
    let clamp = |t: i64| t.clamp(MIN_CREATED_AT, END_CREATED_AT - 1);
    let (first, last) = (clamp(first), clamp(last));
    if last < first {
        return None;
    }
    let span = last - first;
    let interval = match requested {
        Some(interval) if span / interval < MAX_BARS => interval,
        _ => auto_interval(span),
    };
    Some(json!({
        "histogram": {
            "field": "created_at",
            "interval": interval as f64,
            "min_doc_count": 0,
            "extended_bounds": {"min": floor(first, interval) as f64, "max": floor(last, interval) as f64},
        },
        "aggs": {"mean": {"avg": {"field": "vader_compound"}}},
    }))
}

/// The bars of a histogram aggregation's result.
fn buckets(result: &Value) -> Vec<Bucket> {
    result["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            Some(Bucket {
                start: micros_to_rfc3339(b["key"].as_f64()? as i64),
                count: b["doc_count"].as_u64()?,
                mean_compound: b["mean"]["value"].as_f64(),
            })
        })
        .collect()
}

/// The keys and counts of a terms aggregation's result.
fn key_counts(result: &Value) -> Vec<KeyCount> {
    result["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| {
            Some(KeyCount {
                key: b["key"].as_str()?.to_string(),
                count: b["doc_count"].as_u64()?,
            })
        })
        .collect()
}

/// Collects which documents of each segment a query matched, as a
/// [`Matched`] query.
struct Matches;

/// The matches in one segment.
struct SegmentMatches {
    segment: SegmentId,
    docs: BitSet,
}

impl Collector for Matches {
    type Fruit = Matched;
    type Child = SegmentMatches;

    fn for_segment(&self, _: SegmentOrdinal, segment: &SegmentReader) -> tantivy::Result<SegmentMatches> {
        Ok(SegmentMatches {
            segment: segment.segment_id(),
            docs: BitSet::with_max_value(segment.max_doc()),
        })
    }

    fn requires_scoring(&self) -> bool {
        false
    }

    fn merge_fruits(&self, segments: Vec<(SegmentId, BitSet)>) -> tantivy::Result<Matched> {
        Ok(Matched(Arc::new(segments.into_iter().collect())))
    }
}

impl SegmentCollector for SegmentMatches {
    type Fruit = (SegmentId, BitSet);

    fn collect(&mut self, doc: DocId, _: Score) {
        self.docs.insert(doc);
    }

    fn harvest(self) -> (SegmentId, BitSet) {
        (self.segment, self.docs)
    }
}

/// The documents a pass matched, per segment, as a query: a second look
/// at them costs no evaluation of the first query (a phrase's positions).
#[derive(Clone)]
struct Matched(Arc<HashMap<SegmentId, BitSet>>);

impl std::fmt::Debug for Matched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let docs: usize = self.0.values().map(|d| d.len()).sum();
        write!(f, "Matched({docs} documents)")
    }
}

impl Query for Matched {
    fn weight(&self, _: EnableScoring<'_>) -> tantivy::Result<Box<dyn Weight>> {
        Ok(Box::new(self.clone()))
    }
}

impl Weight for Matched {
    fn scorer(&self, segment: &SegmentReader, boost: Score) -> tantivy::Result<Box<dyn Scorer>> {
        Ok(match self.0.get(&segment.segment_id()) {
            Some(docs) => Box::new(ConstScorer::new(BitSetDocSet::from(docs.clone()), boost)),
            None => Box::new(EmptyScorer),
        })
    }

    fn explain(&self, segment: &SegmentReader, doc: DocId) -> tantivy::Result<Explanation> {
        match self.0.get(&segment.segment_id()) {
            Some(docs) if doc < docs.max_value() && docs.contains(doc) => Ok(Explanation::new("matched", 1.0)),
            _ => Err(tantivy::TantivyError::InvalidArgument(format!(
                "document {doc} did not match"
            ))),
        }
    }
}

/// The collector of Elasticsearch-style aggregations `request`.
fn aggregations_collector(request: Value) -> Result<AggregationCollector, SearchError> {
    let aggs: Aggregations =
        serde_json::from_value(request).map_err(|e| SearchError::Invalid(format!("aggregation: {e}")))?;
    Ok(AggregationCollector::from_aggs(aggs, Default::default()))
}

fn run_aggs(searcher: &tantivy::Searcher, query: &dyn Query, request: Value) -> Result<Value, SearchError> {
    let result = searcher.search(query, &aggregations_collector(request)?)?;
    Ok(serde_json::to_value(result).unwrap_or(Value::Null))
}

/// `q` in the parser's terms, outside quotes: each `word*` (or
/// `field:word*`) as the regex `field:/word.*/` (the query language has no
/// single-word prefix; words of `text` lower-cased, as the index holds
/// them), and `NOT x` as `-x` (the parser matches nothing for `a AND NOT
/// b`, though it does for `a AND -b`).
pub fn with_prefixes(q: &str) -> String {
    let mut out = String::with_capacity(q.len() + 16);
    let mut in_quotes = false;
    let mut negate_next = false;
    let mut rest = q;
    while let Some(c) = rest.chars().next() {
        if c == '"' {
            in_quotes = !in_quotes;
        }
        if negate_next && !in_quotes && c.is_whitespace() {
            rest = &rest[c.len_utf8()..];
            continue;
        }
        negate_next = false;
        if in_quotes || !(c.is_alphanumeric() || c == '_') {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        }
        // A token: [field:]word, up to a space, bracket or quote.
        let end = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '"'))
            .unwrap_or(rest.len());
        let token = &rest[..end];
        rest = &rest[end..];
        if token == "NOT" && !rest.trim_start().is_empty() {
            out.push('-');
            negate_next = true;
            continue;
        }
        let Some(stem) = token.strip_suffix('*').filter(|s| !s.is_empty() && !s.ends_with('*')) else {
            out.push_str(token);
            continue;
        };
        let (field, word) = match stem.split_once(':') {
            Some((field, word)) => (Some(field), word),
            None => (None, stem),
        };
        if word.is_empty() || !word.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push_str(token);
            continue;
        }
        let word = if field.is_none_or(|f| f == "text") {
            word.to_lowercase()
        } else {
            word.to_string()
        };
        out.push_str(field.unwrap_or("text"));
        out.push_str(":/");
        out.push_str(&word);
        out.push_str(".*/");
    }
    out
}

/// `from <= created_at < to` (µs).
fn range(field: tantivy::schema::Field, from: Option<i64>, to: Option<i64>) -> RangeQuery {
    use std::ops::Bound;
    let bound =
        |v: Option<i64>, f: fn(Term) -> Bound<Term>| v.map_or(Bound::Unbounded, |v| f(Term::from_field_i64(field, v)));
    RangeQuery::new(bound(from, Bound::Included), bound(to, Bound::Excluded))
}

/// A bucket width for `span` µs: a round duration giving at most ~60 bars.
pub fn auto_interval(span: i64) -> i64 {
    const S: i64 = 1_000_000;
    const STEPS: [i64; 16] = [
        S,
        5 * S,
        10 * S,
        30 * S,
        60 * S,
        300 * S,
        600 * S,
        1800 * S,
        3600 * S,
        3 * 3600 * S,
        6 * 3600 * S,
        12 * 3600 * S,
        86_400 * S,
        7 * 86_400 * S,
        30 * 86_400 * S,
        365 * 86_400 * S,
    ];
    STEPS
        .into_iter()
        .find(|step| span / step < 60)
        .unwrap_or(STEPS[STEPS.len() - 1])
}

fn floor(t: i64, interval: i64) -> i64 {
    t.div_euclid(interval) * interval
}

/// `t` µs since the epoch as RFC 3339 (UTC, seconds).
pub fn micros_to_rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp_micros(t)
        .map(|d| d.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

/// The longest start of `text` of at most `bytes` bytes.
fn prefix(text: &str, bytes: usize) -> &str {
    if text.len() <= bytes {
        return text;
    }
    let mut end = bytes;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

fn truncate(text: &str, chars: usize) -> String {
    text.chars().take(chars).collect()
}

/// A snippet as HTML, escaped, its matched words in `<mark>`.
fn mark(snippet: &tantivy::snippet::Snippet) -> String {
    let fragment = snippet.fragment();
    let mut out = String::with_capacity(fragment.len() + 32);
    let mut at = 0;
    for range in snippet.highlighted() {
        if range.start < at || range.end > fragment.len() {
            continue;
        }
        out.push_str(&escape(&fragment[at..range.start]));
        out.push_str("<mark>");
        out.push_str(&escape(&fragment[range.clone()]));
        out.push_str("</mark>");
        at = range.end;
    }
    out.push_str(&escape(&fragment[at..]));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_word_with_a_star_becomes_a_prefix_and_nothing_else_changes() {
        assert_eq!(with_prefixes("comp*"), "text:/comp.*/");
        assert_eq!(with_prefixes("Rust AND Comp*"), "Rust AND text:/comp.*/");
        assert_eq!(with_prefixes("community:ru* -x"), "community:/ru.*/ -x");
        assert_eq!(
            with_prefixes(r#""big bad wo"* (a* OR b)"#),
            r#""big bad wo"* (text:/a.*/ OR b)"#
        );
        assert_eq!(with_prefixes("* ** a** é*"), "* ** a** text:/é.*/");
        assert_eq!(with_prefixes("plain words"), "plain words");
        assert_eq!(with_prefixes("a AND NOT b"), "a AND -b");
        assert_eq!(with_prefixes("a NOT  (b OR c*)"), "a -(b OR text:/c.*/)");
        assert_eq!(with_prefixes(r#""NOT this" NOT"#), r#""NOT this" NOT"#);
    }

    #[test]
    fn intervals_are_round_and_give_at_most_sixty_bars() {
        for span in [0, 59_000_000, 3_600_000_000, 86_400_000_000, 400 * 86_400_000_000i64] {
            let interval = auto_interval(span);
            assert!(
                span / interval < 60 || interval == 365 * 86_400_000_000,
                "{span} {interval}"
            );
        }
        assert_eq!(auto_interval(3_600_000_000), 300_000_000);
    }
}
