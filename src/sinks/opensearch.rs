//! The OpenSearch sink (the reference's Firehose → OpenSearch delivery):
//! `posts.enriched` into an OpenSearch (or Elasticsearch) cluster through
//! `_bulk`, on the shared consume loop.
//!
//! * Each post is one document, `_id` `<platform>:<id>`, in the index of
//!   its creation time under `[opensearch] index` and `rotation` (as
//!   Firehose's `IndexRotationPeriod`: `chorus-posts-2026.12.07` by day).
//!   Its version is its `ingested_at` (`version_type=external_gte`): a
//!   replay writes the same version again, a late older version is refused
//!   by the cluster (409) and counted as stale, so the newest wins as in
//!   `posts_latest` and nothing is ever duplicated.
//! * Records are batched (`batch_docs`, `batch_bytes`, `flush_ms`); the log
//!   offsets commit only once every document of the batch is indexed or
//!   in the dead letters. A request that fails (connection, timeout, 429,
//!   5xx) is retried with backoff, as are the documents a bulk answer
//!   rejects with 429 or 5xx; a document refused for what it is (a mapping
//!   conflict, …) goes to `posts.dead` with the cluster's reason (Firehose
//!   backs failed documents up to S3). A refusal of the whole request that
//!   retrying cannot help (401, 403, a bad index name) stops the process
//!   with the cluster's answer. A 413 halves the batch; a single document
//!   that is still too large goes to the dead letters.
//! * An index template with the mapping of the record's columns is put
//!   once at start (`template = true`), so every rotated index gets it.
//!
//! Credentials come from `CHORUS_OPENSEARCH_USERNAME` and
//! `CHORUS_OPENSEARCH_PASSWORD` (basic authentication), never from the
//! configuration, and never reach the logs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::log::{Entry, Input, Log, LogError, Topic};
use crate::metrics::Metrics;
use crate::record::{Limits, PostView, column};
use crate::sinks::consume::{self, Commit, Committed, Sink};
use crate::transforms::enrich::dead_letter;

/// The sink's consumer name on `posts.enriched`.
pub const CONSUMER: &str = "opensearch";
/// What it reads.
pub const INPUT: Input = Input {
    consumer: CONSUMER,
    topic: Topic::Enriched,
};
/// The user of basic authentication.
pub const USERNAME_ENV: &str = "CHORUS_OPENSEARCH_USERNAME";
/// Its password.
pub const PASSWORD_ENV: &str = "CHORUS_OPENSEARCH_PASSWORD";
/// Bytes of a bulk answer read at most (the cluster's answer is hostile
/// input too: ~200 bytes per item is typical).
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// A single document refused with 413 this many times in a row is dead.
const MAX_SPLITS: u32 = 24;

/// How a post's index name is rotated (Firehose's `IndexRotationPeriod`),
/// by the post's creation time, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Rotation {
    /// One index: `index` itself.
    None,
    /// `index-YYYY.MM.DD-HH`.
    Hour,
    /// `index-YYYY.MM.DD`.
    Day,
    /// `index-YYYY-wWW` (ISO week).
    Week,
    /// `index-YYYY.MM`.
    Month,
}

/// `[opensearch]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OpenSearchConfig {
    /// The cluster's URL (`https://search-….es.amazonaws.com`); none: no
    /// sink.
    pub url: Option<String>,
    /// The index name, before its rotation suffix (lowercase).
    pub index: String,
    /// How the index name rotates.
    pub rotation: Rotation,
    /// Documents per bulk request, at most.
    pub batch_docs: usize,
    /// Bytes of a bulk request's body, at most (AWS domains accept 10 MiB
    /// on the smallest instances).
    pub batch_bytes: usize,
    /// A batch is sent at least this often (ms) while posts arrive.
    pub flush_ms: u64,
    /// Seconds a request may take.
    pub timeout_secs: u64,
    /// The longest pause between retries (seconds).
    pub max_backoff_secs: u64,
    /// Whether an index template with the columns' mapping is put at
    /// start.
    pub template: bool,
}

impl Default for OpenSearchConfig {
    fn default() -> Self {
        OpenSearchConfig {
            url: None,
            index: "chorus-posts".into(),
            rotation: Rotation::Day,
            batch_docs: 1000,
            batch_bytes: 5 << 20,
            flush_ms: 1000,
            timeout_secs: 30,
            max_backoff_secs: 30,
            template: true,
        }
    }
}

impl OpenSearchConfig {
    /// Whether the sink runs.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Checks the settings; the error says which and why.
    pub fn validate(&self) -> Result<(), String> {
        let Some(url) = &self.url else {
            return Ok(());
        };
        let parsed = url::Url::parse(url).map_err(|e| format!("[opensearch] url = {url:?} is not a URL: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("[opensearch] url = {url:?}: give http:// or https://"));
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(format!(
                "[opensearch] url: credentials go in {USERNAME_ENV} and {PASSWORD_ENV}, not in the URL"
            ));
        }
        let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
        if self.index.is_empty()
            || self.index.len() > 200
            || !self.index.chars().all(valid)
            || self.index.starts_with(['-', '_', '.'])
        {
            return Err(format!(
                "[opensearch] index = {:?}: an index name is lowercase letters, digits, '-', '_' and '.', not \
                 first, up to 200 characters",
                self.index
            ));
        }
        if self.batch_docs == 0 || self.batch_bytes < 1024 {
            return Err("[opensearch] batch_docs must be at least 1 and batch_bytes at least 1024".into());
        }
        Ok(())
    }

    /// The index of a post created at `created_at` (µs).
    pub fn index_of(&self, created_at: i64) -> String {
        let t = DateTime::from_timestamp_micros(created_at).unwrap_or_default();
        match self.rotation {
            Rotation::None => self.index.clone(),
            Rotation::Hour => format!("{}-{}", self.index, t.format("%Y.%m.%d-%H")),
            Rotation::Day => format!("{}-{}", self.index, t.format("%Y.%m.%d")),
            Rotation::Week => {
                let w = t.iso_week();
                format!("{}-{}-w{:02}", self.index, w.year(), w.week())
            }
            Rotation::Month => format!("{}-{}", self.index, t.format("%Y.%m")),
        }
    }

    /// The cluster's URL without credentials or a trailing slash, for
    /// messages.
    fn base(&self) -> String {
        self.url
            .as_deref()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_string()
    }
}

/// The index template: the record's columns mapped for search and
/// aggregation (strings that are values are keywords, the texts are text).
pub fn template(config: &OpenSearchConfig) -> Value {
    let keyword = json!({ "type": "keyword" });
    let mut properties = serde_json::Map::new();
    for name in column::ALL {
        let mapping = match name {
            column::BODY | column::TEXT => json!({ "type": "text" }),
            column::CREATED_AT | column::INGESTED_AT => json!({ "type": "date" }),
            column::SCORE | column::REPOSTS | column::AUTHOR_FOLLOWERS => json!({ "type": "long" }),
            column::POLARITY
            | column::SUBJECTIVITY
            | column::VADER_NEG
            | column::VADER_NEU
            | column::VADER_POS
            | column::VADER_COMPOUND => json!({ "type": "double" }),
            _ => keyword.clone(),
        };
        properties.insert(name.to_string(), mapping);
    }
    json!({
        "index_patterns": [format!("{}*", config.index)],
        "template": { "mappings": { "dynamic": "strict", "properties": properties } },
        "priority": 100,
        "_meta": { "created_by": "chorus" }
    })
}

/// The document of a post: its columns, times as RFC 3339 (µs).
fn document(post: &PostView<'_>) -> Option<Vec<u8>> {
    let mut value = serde_json::to_value(post.clone().into_post()).ok()?;
    let object = value.as_object_mut()?;
    for name in [column::CREATED_AT, column::INGESTED_AT] {
        let micros = object.get(name).and_then(Value::as_i64)?;
        let text = DateTime::from_timestamp_micros(micros)?.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        object.insert(name.into(), Value::String(text));
    }
    serde_json::to_vec(&value).ok()
}

/// Failures of the sink.
#[derive(Debug, thiserror::Error)]
pub enum OpenSearchError {
    /// Reading or committing the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The cluster refused the requests in a way retrying cannot help.
    #[error("OpenSearch at {url}: {message}")]
    Refused {
        /// The cluster.
        url: String,
        /// What it answered.
        message: String,
    },
    /// Stopped while the cluster was unreachable.
    #[error("stopped while OpenSearch was unreachable")]
    Stopped,
}

/// One post's document, waiting for its bulk request.
struct Doc {
    /// Its log partition and entry (the dead letter keeps the record).
    partition: u32,
    entry: Entry,
    action: Vec<u8>,
    source: Vec<u8>,
}

impl Doc {
    fn bytes(&self) -> usize {
        self.action.len() + self.source.len() + 2
    }
}

/// What became of a batch's documents.
#[derive(Default)]
struct Outcome {
    indexed: u64,
    stale: u64,
    dead: Vec<(Vec<u8>, Vec<u8>)>,
}

/// The OpenSearch sink.
pub struct OpenSearchSink {
    config: OpenSearchConfig,
    log: Arc<dyn Log>,
    metrics: Arc<Metrics>,
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    auth: Option<(String, Option<String>)>,
    /// The batch, in log order; per post key, the position of its newest
    /// version in it.
    docs: Vec<Option<Doc>>,
    newest: HashMap<Vec<u8>, (usize, i64)>,
    bytes: usize,
    since: Option<Instant>,
    template_put: bool,
    stop: CancellationToken,
}

impl OpenSearchSink {
    /// A sink for `config` (validated, `url` set); it connects when it
    /// first has posts.
    pub fn new(
        config: OpenSearchConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<OpenSearchSink, OpenSearchError> {
        let refused = |message: String| OpenSearchError::Refused {
            url: config.base(),
            message,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| refused(format!("cannot start the client's runtime: {e}")))?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(config.timeout_secs.max(1)))
            .build()
            .map_err(|e| refused(format!("cannot build the HTTP client: {e}")))?;
        let auth = std::env::var(USERNAME_ENV)
            .ok()
            .map(|user| (user, std::env::var(PASSWORD_ENV).ok()));
        Ok(OpenSearchSink {
            config,
            log,
            metrics,
            runtime,
            client,
            auth,
            docs: Vec::new(),
            newest: HashMap::new(),
            bytes: 0,
            since: None,
            template_put: false,
            stop,
        })
    }

    /// Delivers `posts.enriched` until `stop` (given to [`Self::new`] too).
    /// Stopping while the cluster is unreachable is not a failure: what was
    /// not indexed is read again at the next start.
    pub fn run(mut self, log: &dyn Log) -> Result<(), OpenSearchError> {
        let stop = self.stop.clone();
        match consume::run(log, &mut [&mut self], stop) {
            Err(OpenSearchError::Stopped) => {
                tracing::warn!(
                    opensearch = %self.config.base(),
                    "Stopped while OpenSearch was unreachable; the posts not indexed yet are sent at the next start."
                );
                Ok(())
            }
            other => other,
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let request = self.client.request(method, format!("{}/{path}", self.config.base()));
        match &self.auth {
            Some((user, password)) => request.basic_auth(user, password.as_ref()),
            None => request,
        }
    }

    /// Sends `body` with `make`, retrying what retrying can help, until an
    /// answer that is not a transient failure: its status and body.
    fn send(
        &mut self,
        what: &str,
        make: &dyn Fn(&Self) -> reqwest::RequestBuilder,
    ) -> Result<(reqwest::StatusCode, Vec<u8>), OpenSearchError> {
        let max_pause = Duration::from_secs(self.config.max_backoff_secs.max(1));
        let mut attempt = 0u32;
        loop {
            let request = make(self);
            let result = self.runtime.block_on(async {
                let response = request.send().await?;
                let status = response.status();
                let body = read_bounded(response).await?;
                Ok::<_, reqwest::Error>((status, body))
            });
            let transient = match &result {
                Ok((status, _)) => status.as_u16() == 429 || status.is_server_error(),
                Err(_) => true,
            };
            if !transient {
                return result.map_err(|e| OpenSearchError::Refused {
                    url: self.config.base(),
                    message: e.to_string(),
                });
            }
            let why = match &result {
                Ok((status, body)) => format!("{status}: {}", snippet(body)),
                Err(e) => e.to_string(),
            };
            attempt += 1;
            self.metrics.opensearch_retries.add(1);
            if self.stop.is_cancelled() {
                return Err(OpenSearchError::Stopped);
            }
            let pause = crate::warehouse::backoff(attempt, max_pause);
            tracing::warn!(error = %why, attempt, retry_in_ms = pause.as_millis() as u64,
                "OpenSearch: {what} failed; will retry.");
            pause_unless(&self.stop, pause)?;
        }
    }

    /// Puts the index template (once per run).
    fn put_template(&mut self) -> Result<(), OpenSearchError> {
        if self.template_put || !self.config.template {
            return Ok(());
        }
        let body = serde_json::to_vec(&template(&self.config)).unwrap_or_default();
        let name = format!("_index_template/{}", self.config.index);
        let (status, answer) = self.send("the index template", &|s: &Self| {
            s.request(reqwest::Method::PUT, &name)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body.clone())
        })?;
        if !status.is_success() {
            return Err(OpenSearchError::Refused {
                url: self.config.base(),
                message: format!("PUT {name}: {status}: {}", snippet(&answer)),
            });
        }
        self.template_put = true;
        Ok(())
    }

    /// Indexes `docs` (in order): what became of each.
    fn deliver(&mut self, docs: Vec<&Doc>, splits: u32, outcome: &mut Outcome) -> Result<(), OpenSearchError> {
        let mut pending = docs;
        let max_pause = Duration::from_secs(self.config.max_backoff_secs.max(1));
        let mut attempt = 0u32;
        while !pending.is_empty() {
            let mut body = Vec::with_capacity(pending.iter().map(|d| d.bytes()).sum());
            for doc in &pending {
                body.extend_from_slice(&doc.action);
                body.push(b'\n');
                body.extend_from_slice(&doc.source);
                body.push(b'\n');
            }
            let (status, answer) = self.send("a bulk request", &|s: &Self| {
                s.request(reqwest::Method::POST, "_bulk")
                    .header(reqwest::header::CONTENT_TYPE, "application/x-ndjson")
                    .body(body.clone())
            })?;
            if status.as_u16() == 413 {
                if pending.len() == 1 || splits >= MAX_SPLITS {
                    for doc in pending {
                        outcome.dead.push(dead_letter(
                            Topic::Enriched,
                            doc.partition,
                            &doc.entry,
                            "OpenSearch refused the document: larger than the cluster accepts in a request (413)",
                        ));
                    }
                    return Ok(());
                }
                let second = pending.split_off(pending.len() / 2);
                self.deliver(pending, splits + 1, outcome)?;
                return self.deliver(second, splits + 1, outcome);
            }
            if !status.is_success() {
                return Err(OpenSearchError::Refused {
                    url: self.config.base(),
                    message: format!("POST _bulk: {status}: {}", snippet(&answer)),
                });
            }
            let items = parse_items(&answer, pending.len()).map_err(|message| OpenSearchError::Refused {
                url: self.config.base(),
                message: format!("POST _bulk answered what is not a bulk answer: {message}"),
            })?;
            let mut again = Vec::new();
            for (doc, (status, error)) in pending.into_iter().zip(items) {
                match status {
                    200 | 201 => outcome.indexed += 1,
                    // A newer version is indexed already.
                    409 => outcome.stale += 1,
                    429 | 500..=599 => again.push(doc),
                    _ => outcome.dead.push(dead_letter(
                        Topic::Enriched,
                        doc.partition,
                        &doc.entry,
                        &format!("OpenSearch refused the document ({status}): {error}"),
                    )),
                }
            }
            if !again.is_empty() {
                attempt += 1;
                self.metrics.opensearch_retries.add(1);
                let pause = crate::warehouse::backoff(attempt, max_pause);
                tracing::warn!(
                    documents = again.len(),
                    attempt,
                    retry_in_ms = pause.as_millis() as u64,
                    "OpenSearch rejected documents for now (429 or 5xx); will retry them."
                );
                pause_unless(&self.stop, pause)?;
            }
            pending = again;
        }
        Ok(())
    }
}

/// Sleeps `pause`, or returns `Stopped` once `stop` is cancelled.
fn pause_unless(stop: &CancellationToken, pause: Duration) -> Result<(), OpenSearchError> {
    if consume::pause_unless_stopped(stop, pause) {
        Ok(())
    } else {
        Err(OpenSearchError::Stopped)
    }
}

/// A response's body, up to [`MAX_ANSWER_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, reqwest::Error> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        let room = MAX_ANSWER_BYTES.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if room <= chunk.len() {
            break;
        }
    }
    Ok(body)
}

/// The start of an answer, for a message.
fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(300)]);
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Each item's status and error (`type: reason`) of a bulk answer of `n`
/// items.
fn parse_items(answer: &[u8], n: usize) -> Result<Vec<(u16, String)>, String> {
    #[derive(Deserialize)]
    struct Answer {
        items: Vec<HashMap<String, Item>>,
    }
    #[derive(Deserialize)]
    struct Item {
        status: u16,
        #[serde(default)]
        error: Option<Value>,
    }
    let answer: Answer = serde_json::from_slice(answer).map_err(|e| e.to_string())?;
    if answer.items.len() != n {
        return Err(format!("{} items for {n} documents", answer.items.len()));
    }
    answer
        .items
        .into_iter()
        .map(|item| {
            let item = item.into_values().next().ok_or("an item without its action")?;
            let error = match &item.error {
                Some(e) => {
                    let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                    let reason = e.get("reason").and_then(Value::as_str).unwrap_or_default();
                    // The cluster's words, bounded (on a character boundary:
                    // a reason is any UTF-8).
                    format!("{kind}: {reason}").chars().take(1000).collect()
                }
                None => String::new(),
            };
            Ok((item.status, error))
        })
        .collect()
}

impl Sink for OpenSearchSink {
    type Error = OpenSearchError;

    fn input(&self) -> Input {
        INPUT
    }

    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), OpenSearchError> {
        for entry in entries {
            // What the archive cannot read it sends to the dead letters
            // itself; this sink leaves it out.
            let Ok(post) = PostView::from_log_bytes(&entry.value) else {
                continue;
            };
            if post.incoming.check(&Limits::ANY_BODY).is_err() {
                continue;
            }
            let key = crate::log::post_key(&post.incoming.platform, &post.incoming.id);
            let ingested_at = post.ingested_at;
            // One document per post in a batch: its newest version (an
            // older one is not even encoded).
            let replaces = match self.newest.get(&key) {
                Some(&(_, held)) if held > ingested_at => continue,
                Some(&(at, _)) => Some(at),
                None => None,
            };
            let Some(source) = document(&post) else {
                continue;
            };
            let action = serde_json::to_vec(&json!({ "index": {
                "_index": self.config.index_of(post.incoming.created_at),
                "_id": format!("{}:{}", post.incoming.platform, post.incoming.id),
                "version": ingested_at,
                "version_type": "external_gte",
            }}))
            .unwrap_or_default();
            let doc = Doc {
                partition,
                entry: entry.clone(),
                action,
                source,
            };
            self.since.get_or_insert_with(Instant::now);
            if let Some(old) = replaces.and_then(|at| self.docs[at].take()) {
                self.bytes -= old.bytes();
            }
            self.newest.insert(key, (self.docs.len(), ingested_at));
            self.bytes += doc.bytes();
            self.docs.push(Some(doc));
        }
        Ok(())
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        let late = self
            .since
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.config.flush_ms));
        if self.newest.len() >= self.config.batch_docs || self.bytes >= self.config.batch_bytes || late {
            pending.to_vec()
        } else {
            Vec::new()
        }
    }

    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, OpenSearchError> {
        let docs: Vec<Doc> = std::mem::take(&mut self.docs).into_iter().flatten().collect();
        let mut outcome = Outcome::default();
        if !docs.is_empty() {
            self.put_template()?;
            // Requests of at most batch_docs documents and batch_bytes.
            let mut start = 0;
            while start < docs.len() {
                let mut end = start;
                let mut bytes = 0;
                while end < docs.len()
                    && end - start < self.config.batch_docs
                    && (end == start || bytes + docs[end].bytes() <= self.config.batch_bytes)
                {
                    bytes += docs[end].bytes();
                    end += 1;
                }
                self.deliver(docs[start..end].iter().collect(), 0, &mut outcome)?;
                start = end;
            }
        }
        if !outcome.dead.is_empty() {
            let refs: Vec<(&[u8], &[u8])> = outcome.dead.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            self.log.append(Topic::Dead, &refs)?;
            self.metrics.dead_letters.add(outcome.dead.len() as u64);
            self.metrics.opensearch_failed.add(outcome.dead.len() as u64);
        }
        self.metrics.opensearch_documents.add(outcome.indexed);
        self.metrics.opensearch_stale.add(outcome.stale);
        self.newest.clear();
        self.bytes = 0;
        self.since = None;
        Ok(commit.now()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_rotate_by_the_creation_time() {
        // 2019-01-01T12:34:56Z.
        let at = 1_546_346_096_000_000;
        let name = |rotation| {
            OpenSearchConfig {
                rotation,
                ..OpenSearchConfig::default()
            }
            .index_of(at)
        };
        assert_eq!(name(Rotation::None), "chorus-posts");
        assert_eq!(name(Rotation::Hour), "chorus-posts-2019.01.01-12");
        assert_eq!(name(Rotation::Day), "chorus-posts-2019.01.01");
        assert_eq!(name(Rotation::Week), "chorus-posts-2019-w01");
        assert_eq!(name(Rotation::Month), "chorus-posts-2019.01");
    }

    #[test]
    fn settings_that_cannot_work_are_refused_with_the_reason() {
        let check = |url: &str, index: &str| {
            OpenSearchConfig {
                url: Some(url.into()),
                index: index.into(),
                ..OpenSearchConfig::default()
            }
            .validate()
        };
        assert!(check("https://search.example.com", "chorus-posts").is_ok());
        for (url, index, says) in [
            ("ftp://x", "a", "http:// or https://"),
            ("https://user:secret@x", "a", "CHORUS_OPENSEARCH_USERNAME"),
            ("https://x", "Chorus", "lowercase"),
            ("https://x", "_x", "lowercase"),
            ("not a url", "a", "not a URL"),
        ] {
            let e = check(url, index).unwrap_err();
            assert!(e.contains(says), "{url} {index}: {e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }

    #[test]
    fn the_template_maps_every_column() {
        let t = template(&OpenSearchConfig::default());
        let properties = t["template"]["mappings"]["properties"].as_object().unwrap();
        assert_eq!(properties.len(), column::ALL.len());
        assert_eq!(properties["text"]["type"], "text");
        assert_eq!(properties["created_at"]["type"], "date");
        assert_eq!(properties["community"]["type"], "keyword");
        assert_eq!(properties["vader_compound"]["type"], "double");
        assert_eq!(t["index_patterns"], json!(["chorus-posts*"]));
    }

    #[test]
    fn a_bulk_answer_gives_each_item_its_status_and_reason() {
        let answer = br#"{"took":3,"errors":true,"items":[
            {"index":{"_index":"i","_id":"a","status":201}},
            {"index":{"_index":"i","_id":"b","status":400,"error":{"type":"mapper_parsing_exception","reason":"failed to parse field [score]"}}},
            {"index":{"_index":"i","_id":"c","status":429,"error":{"type":"es_rejected_execution_exception","reason":"queue full"}}}]}"#;
        let items = parse_items(answer, 3).unwrap();
        assert_eq!(items[0], (201, String::new()));
        assert_eq!(
            items[1],
            (400, "mapper_parsing_exception: failed to parse field [score]".into())
        );
        assert_eq!(items[2].0, 429);
        assert!(parse_items(answer, 2).unwrap_err().contains("3 items for 2"));
        // A long reason in any script is cut on a character boundary.
        let long = format!(
            r#"{{"items":[{{"index":{{"status":400,"error":{{"type":"x","reason":"{}"}}}}}}]}}"#,
            "é".repeat(2000)
        );
        let items = parse_items(long.as_bytes(), 1).unwrap();
        assert_eq!(items[0].1.chars().count(), 1000);
        assert!(parse_items(b"<html>", 1).is_err());
    }
}
