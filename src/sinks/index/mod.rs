//! The index sink (Firehose → OpenSearch): reads `posts.enriched` into a
//! tantivy index under `DIR/index`, searchable within a commit interval
//! (1 s by default) of the post's `202`.
//!
//! One document per (platform, id): a post is written as a delete of its
//! (platform, id) and an add, so a replay or a re-send replaces it instead
//! of adding a second. A post's key always lands in the same log partition, read in
//! offset order, so the last version written is the newest `ingested_at`,
//! as in `posts_latest`. Each commit stores the log offsets it covers in
//! its payload, and the log's offsets are committed only after it: after a
//! crash the index is at or past the log's offsets, and the replay between
//! the two rewrites the same documents. An index found behind the log's
//! offsets (removed, restored from a backup) makes the sink read again from
//! the index's own offsets, as far as the log still holds them.

mod known;
pub mod live;
pub mod search;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tantivy::indexer::LogMergePolicy;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::{FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio_util::sync::CancellationToken;

use crate::log::{Entry, Input, Log, LogError, Topic};
use crate::metrics::Metrics;
use crate::record::PostView;
use crate::sinks::consume::{self, Commit, Committed, Sink};
use known::KnownKeys;

/// The index's consumer name on `posts.enriched`.
pub const CONSUMER: &str = "index";
/// What the index reads.
pub const INPUT: Input = Input {
    consumer: CONSUMER,
    topic: Topic::Enriched,
};
/// The index's directory, under the data directory.
pub const DIR: &str = "index";
/// Commit interval, ms, at least, while the sink catches up on a backlog.
const BACKLOG_COMMIT_INTERVAL_MS: u64 = 1000;
/// Documents at most in a segment that merges take part in: merges stay
/// bounded in time and memory however large the index grows.
const MAX_DOCS_BEFORE_MERGE: usize = 5_000_000;

/// Settings of the index sink (`[index]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IndexConfig {
    /// Whether `chorus run` and `chorus demo` keep a search index.
    pub enabled: bool,
    /// Longest time, ms, from a post's arrival in `posts.enriched` to its
    /// commit (when it becomes searchable) while the index keeps up with
    /// the log; while it catches up on a backlog it commits every second
    /// (or at this interval if longer), which costs less per post.
    pub commit_interval_ms: u64,
    /// Documents are deleted this many days after they were ingested (0:
    /// never).
    pub retention_days: u64,
    /// Memory of the index writer, bytes (at least 15 MiB).
    pub writer_memory_bytes: usize,
    /// English stemming of `text` (`running` finds `runs`).
    pub stemming: bool,
    /// Seconds between two checks of the `[[alerts]]`.
    pub alert_check_secs: u64,
}

impl Default for IndexConfig {
    fn default() -> Self {
        IndexConfig {
            enabled: true,
            commit_interval_ms: 500,
            retention_days: 30,
            writer_memory_bytes: 64 << 20,
            stemming: false,
            alert_check_secs: 10,
        }
    }
}

/// Why the index failed.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// tantivy failed.
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    /// The index on disk is not one this build wrote.
    #[error("index: {0}")]
    Incompatible(String),
    /// The index under the directory was written with another schema
    /// (other settings, or an earlier version).
    #[error(
        "index: {} was written with other settings (stemming?) or by another version; remove it to rebuild \
         the index from the log",
        .0.display()
    )]
    OtherSchema(std::path::PathBuf),
}

/// The index's fields.
#[derive(Debug, Clone, Copy)]
pub struct Fields {
    /// Exact, filterable, aggregated.
    pub platform: Field,
    /// The platform's id (exact); with `platform`, the key of a document.
    pub id: Field,
    /// Exact, filterable, aggregated.
    pub community: Field,
    /// Exact, filterable, aggregated.
    pub author: Field,
    /// The cleaned text, full text with positions.
    pub text: Field,
    /// µs since the epoch, fast (a range over it is answered from the
    /// column).
    pub created_at: Field,
    /// µs since the epoch, fast.
    pub ingested_at: Field,
    /// Fast.
    pub polarity: Field,
    /// Fast.
    pub vader_compound: Field,
    /// Exact, aggregated.
    pub sentiment: Field,
    /// The enriched record as on the log, stored: what a hit returns.
    pub record: Field,
}

/// The tokenizer of `text`.
fn text_tokenizer(stemming: bool) -> &'static str {
    if stemming { "en_stem" } else { "default" }
}

/// The schema, and its fields.
///
/// `created_at` and `ingested_at` are fast fields and not in the inverted
/// index: tantivy answers a range over a fast field from its column and
/// would never read their terms, nearly one per post each, which cost a
/// fifth of the sink's time to write and merge (docs/BENCHMARKS.md).
pub fn schema(stemming: bool) -> (Schema, Fields) {
    let mut b = Schema::builder();
    let exact = STRING | FAST;
    let text = TextOptions::default().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(text_tokenizer(stemming))
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let fields = Fields {
        platform: b.add_text_field("platform", exact.clone()),
        id: b.add_text_field("id", STRING),
        community: b.add_text_field("community", exact.clone()),
        author: b.add_text_field("author", exact.clone()),
        text: b.add_text_field("text", text),
        created_at: b.add_i64_field("created_at", FAST),
        ingested_at: b.add_i64_field("ingested_at", FAST),
        polarity: b.add_f64_field("polarity", FAST),
        vader_compound: b.add_f64_field("vader_compound", FAST),
        sentiment: b.add_text_field("sentiment", exact),
        record: b.add_bytes_field("record", STORED),
    };
    (b.build(), fields)
}

/// The document of `post`, whose log bytes are `record`.
pub(crate) fn document(f: &Fields, post: &PostView<'_>, record: &[u8]) -> TantivyDocument {
    let p = &post.incoming;
    // Room for every value: the document is never grown on the way.
    let mut doc = TantivyDocument::with_capacity(record.len() + post.text.len() + DOCUMENT_OVERHEAD);
    doc.add_text(f.platform, &p.platform);
    doc.add_text(f.id, &p.id);
    if let Some(community) = &p.community {
        doc.add_text(f.community, community);
    }
    if let Some(author) = &p.author {
        doc.add_text(f.author, author);
    }
    doc.add_text(f.text, &post.text);
    doc.add_i64(f.created_at, p.created_at);
    doc.add_i64(f.ingested_at, post.ingested_at);
    doc.add_f64(f.polarity, post.scores.polarity);
    doc.add_f64(f.vader_compound, post.scores.vader_compound);
    doc.add_text(f.sentiment, post.scores.sentiment.as_str());
    doc.add_bytes(f.record, record);
    doc
}

/// Bytes of a document beyond its record and text (the other values and
/// their headers).
const DOCUMENT_OVERHEAD: usize = 512;

/// The query of the document of (`platform`, `id`).
fn same_post(f: &Fields, platform: &str, id: &str) -> BooleanQuery {
    let term = |field, value| -> (Occur, Box<dyn Query>) {
        (
            Occur::Must,
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            )),
        )
    };
    BooleanQuery::new(vec![term(f.platform, platform), term(f.id, id)])
}

/// Opens (creating) the index under `dir`.
pub fn open(dir: &Path, stemming: bool) -> Result<(Index, Fields), IndexError> {
    let (schema, fields) = schema(stemming);
    std::fs::create_dir_all(dir).map_err(|e| IndexError::Incompatible(format!("{}: {e}", dir.display())))?;
    let directory = tantivy::directory::MmapDirectory::open(dir)
        .map_err(|e| IndexError::Incompatible(format!("{}: {e}", dir.display())))?;
    let index = if Index::exists(&directory).map_err(|e| IndexError::Incompatible(format!("{}: {e}", dir.display())))? {
        let index = Index::open(directory)?;
        if index.schema() != schema {
            return Err(IndexError::OtherSchema(dir.to_path_buf()));
        }
        index
    } else {
        Index::create(directory, schema, tantivy::IndexSettings::default())?
    };
    Ok((index, fields))
}

/// The log offsets (per partition, the next to read) a commit covered.
fn payload_offsets(index: &Index) -> Result<BTreeMap<u32, u64>, IndexError> {
    let metas = index.load_metas()?;
    match metas.payload {
        None => Ok(BTreeMap::new()),
        Some(text) => serde_json::from_str(&text)
            .map_err(|e| IndexError::Incompatible(format!("the commit payload {text:?} is not offsets: {e}"))),
    }
}

/// The running index sink.
pub struct IndexSink {
    writer: IndexWriter<TantivyDocument>,
    index: Index,
    fields: Fields,
    reader: IndexReader,
    metrics: Arc<Metrics>,
    interval: Duration,
    /// The interval while catching up on a backlog.
    backlog_interval: Duration,
    /// Whether a read since the last commit was a full one: the sink is
    /// behind the log.
    behind: bool,
    retention: Option<Duration>,
    last_commit: Instant,
    last_retention: Option<Instant>,
    /// The offsets of the last commit.
    offsets: BTreeMap<u32, u64>,
    /// Keys that may be in the index (committed or since).
    known: KnownKeys,
}

impl IndexSink {
    /// The sink over the index under `dir`; `reader` is what searches use,
    /// reloaded after each commit.
    ///
    /// An index of another schema is set aside (renamed, not removed) and
    /// a new one built from what the log still holds.
    pub fn open(dir: &Path, config: &IndexConfig, metrics: Arc<Metrics>) -> Result<(IndexSink, Searcher), IndexError> {
        let (index, fields) = match open(dir, config.stemming) {
            Err(IndexError::OtherSchema(_)) => {
                let aside = dir.with_extension(format!("other-schema-{}", crate::record::now_micros() / 1_000_000));
                std::fs::rename(dir, &aside)
                    .map_err(|e| IndexError::Incompatible(format!("{} could not be set aside: {e}", dir.display())))?;
                tracing::warn!(
                    old = %aside.display(),
                    "The index was written with other settings or by another version: set aside (remove it when \
                     the new one is built) and built again from the log."
                );
                open(dir, config.stemming)?
            }
            opened => opened?,
        };
        let writer = index.writer_with_num_threads(1, config.writer_memory_bytes.max(15 << 20))?;
        let mut policy = LogMergePolicy::default();
        policy.set_max_docs_before_merge(MAX_DOCS_BEFORE_MERGE);
        writer.set_merge_policy(Box::new(policy));
        let searcher = Searcher::over(index.clone(), fields)?;
        let reader = searcher.reader.clone();
        let known = KnownKeys::of(&reader.searcher(), fields.id)?;
        let sink = IndexSink {
            known,
            writer,
            index,
            fields,
            reader,
            metrics,
            interval: Duration::from_millis(config.commit_interval_ms.max(1)),
            backlog_interval: Duration::from_millis(config.commit_interval_ms.max(BACKLOG_COMMIT_INTERVAL_MS)),
            behind: false,
            retention: (config.retention_days > 0).then(|| Duration::from_secs(config.retention_days * 86_400)),
            last_commit: Instant::now(),
            last_retention: None,
            offsets: BTreeMap::new(),
        };
        Ok((sink, searcher))
    }

    /// Runs until `shutdown`, drains what the log still holds, then
    /// commits (the shared [`consume::run`] loop).
    pub fn run(mut self, log: &dyn Log, shutdown: CancellationToken) -> Result<(), IndexError> {
        consume::run(log, &mut [&mut self], shutdown)
    }

    /// Deletes documents ingested before the retention bound, at most once
    /// a minute (in the next commit).
    fn expire(&mut self) -> Result<(), IndexError> {
        let Some(retention) = self.retention else {
            return Ok(());
        };
        if self
            .last_retention
            .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        {
            return Ok(());
        }
        self.last_retention = Some(Instant::now());
        let cutoff = crate::record::now_micros().saturating_sub(retention.as_micros() as i64);
        let query = tantivy::query::RangeQuery::new(
            std::ops::Bound::Unbounded,
            std::ops::Bound::Excluded(Term::from_field_i64(self.fields.ingested_at, cutoff)),
        );
        self.writer.delete_query(Box::new(query))?;
        Ok(())
    }
}

impl Sink for IndexSink {
    type Error = IndexError;

    fn input(&self) -> Input {
        INPUT
    }

    fn start(&mut self, committed: &[u64]) -> Result<Option<Vec<u64>>, IndexError> {
        self.offsets = payload_offsets(&self.index)?;
        let from: Vec<u64> = committed
            .iter()
            .enumerate()
            .map(|(p, c)| (*c).min(self.offsets.get(&(p as u32)).copied().unwrap_or(0)))
            .collect();
        if from.as_slice() == committed {
            return Ok(None);
        }
        tracing::warn!(
            ?committed,
            index = ?from,
            "The index is behind the log's offsets (removed or restored?): reading again from its own."
        );
        Ok(Some(from))
    }

    fn write(&mut self, _partition: u32, entries: &[Entry]) -> Result<(), IndexError> {
        self.behind |= entries.len() >= consume::READ_RECORDS;
        let mut skipped = 0;
        for entry in entries {
            // A record the archive cannot read either: it sends it to the
            // dead letters; the index leaves it out.
            let Ok(post) = PostView::from_log_bytes(&entry.value) else {
                skipped += 1;
                continue;
            };
            let (platform, id) = (&post.incoming.platform, &post.incoming.id);
            // An id never indexed needs no delete (nearly every post).
            if self.known.insert(id.as_bytes()) {
                self.writer
                    .delete_query(Box::new(same_post(&self.fields, platform, id)))?;
            }
            self.writer.add_document(document(&self.fields, &post, &entry.value))?;
        }
        self.metrics.index_documents.add((entries.len() - skipped) as u64);
        self.metrics.index_skipped.add(skipped as u64);
        Ok(())
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        let interval = if self.behind {
            self.backlog_interval
        } else {
            self.interval
        };
        if self.last_commit.elapsed() >= interval {
            pending.to_vec()
        } else {
            Vec::new()
        }
    }

    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, IndexError> {
        self.expire()?;
        let mut offsets = self.offsets.clone();
        offsets.extend(commit.offsets().iter().copied());
        let payload = serde_json::to_string(&offsets).map_err(|e| IndexError::Incompatible(e.to_string()))?;
        let mut prepared = self.writer.prepare_commit()?;
        prepared.set_payload(&payload);
        prepared.commit()?;
        self.offsets = offsets;
        self.last_commit = Instant::now();
        self.behind = false;
        self.reader.reload()?;
        // A full key filter is rebuilt twice as large from what is now all
        // committed (between commits it only holds a few more keys than it
        // was sized for, a little more often a false positive).
        if self.known.full() {
            self.known = KnownKeys::of(&self.reader.searcher(), self.fields.id)?;
        }
        self.metrics.index_commits.add(1);
        Ok(commit.now()?)
    }
}

/// Searches over the index, shared by the API and `chorus search`.
#[derive(Clone)]
pub struct Searcher {
    index: Index,
    fields: Fields,
    reader: IndexReader,
}

impl Searcher {
    /// A searcher over an index no sink is writing (`chorus search` on a
    /// stopped directory).
    pub fn open(dir: &Path, stemming: bool) -> Result<Searcher, IndexError> {
        let (index, fields) = open(dir, stemming)?;
        Searcher::over(index, fields)
    }

    /// A searcher over `index`, reloaded by hand (after each commit). A
    /// search's segments are searched on every core at once.
    fn over(mut index: Index, fields: Fields) -> Result<Searcher, IndexError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        if cores > 1 {
            index.set_multithread_executor(cores)?;
        }
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Searcher { index, fields, reader })
    }

    /// Documents searchable now.
    pub fn documents(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Bytes of the index on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.reader
            .searcher()
            .space_usage()
            .map(|u| u.total().get_bytes())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fjall::FjallLog;
    use crate::record::IncomingPost;

    fn append(log: &FjallLog, ids: std::ops::Range<u32>, body: &str) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = ids
            .map(|i| {
                let incoming = IncomingPost::new("reddit", &format!("t1_{i}"), body, 1_000_000);
                // Ingested now: older than `retention_days`, a commit
                // would delete it.
                let post = crate::enrich::enrich_post(incoming, crate::record::now_micros());
                (post.incoming.id.clone().into_bytes(), post.to_log_bytes())
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Enriched, &refs).unwrap();
    }

    /// Reads what the log holds, commits, returns.
    fn drain(log: &FjallLog, sink: &mut IndexSink) {
        let stop = CancellationToken::new();
        stop.cancel();
        consume::run(log, &mut [sink], stop).unwrap();
    }

    fn total(searcher: &Searcher, q: &str) -> u64 {
        let request = crate::wire::search::SearchRequest {
            q: q.into(),
            limit: 1,
            ..Default::default()
        };
        searcher.search(&request).unwrap().total
    }

    #[test]
    fn the_key_filter_grows_past_its_size_and_still_knows_every_post() {
        let dir = tempfile::tempdir().unwrap();
        let log = FjallLog::open(&dir.path().join("log"), 1).unwrap();
        let metrics = Arc::new(Metrics::default());
        let (mut sink, searcher) =
            IndexSink::open(&dir.path().join("index"), &IndexConfig::default(), metrics).unwrap();
        let first = sink.known.capacity();
        // Two and a half times what the filter was sized for (1,000 in
        // tests): it is rebuilt larger from the index after the commit.
        append(&log, 0..2_500, "the first wombat");
        drain(&log, &mut sink);
        assert_eq!(searcher.documents(), 2_500);
        assert!(sink.known.capacity() >= 5_000, "{first} → {}", sink.known.capacity());
        // Every post sent again, edited: each replaces its document.
        append(&log, 0..2_500, "the second koala");
        drain(&log, &mut sink);
        assert_eq!(searcher.documents(), 2_500);
        assert_eq!(total(&searcher, "koala"), 2_500);
        assert_eq!(total(&searcher, "wombat"), 0);
        // And so after a restart, from the filter rebuilt from the index.
        drop(sink);
        let metrics = Arc::new(Metrics::default());
        let (mut sink, searcher) =
            IndexSink::open(&dir.path().join("index"), &IndexConfig::default(), metrics).unwrap();
        append(&log, 1_000..3_000, "the third quokka");
        drain(&log, &mut sink);
        assert_eq!(searcher.documents(), 3_000);
        assert_eq!(total(&searcher, "quokka"), 2_000);
        assert_eq!(total(&searcher, "koala"), 1_000);
    }
}
