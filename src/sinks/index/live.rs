//! The live stream behind `GET /v1/stream`: one thread tails
//! `posts.enriched` from its end while anyone listens, indexes each batch
//! in memory with the search index's schema, and broadcasts it; each
//! listener runs its own query (the same syntax and filters as search, so
//! a stream shows exactly what a search would find) over each batch. The
//! broadcast is bounded: a listener too slow to keep up is dropped, never
//! waited for, so no listener slows the pipeline.

use std::sync::Arc;
use std::time::Duration;

use tantivy::collector::DocSetCollector;
use tantivy::query::Query;
use tantivy::schema::Value as _;
use tantivy::{Index, TantivyDocument};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::Fields;
use super::search::{SearchError, build_query};
use crate::log::{Log, Topic};
use crate::record::{Post, PostView};
use crate::wire::search::SearchRequest;

/// Batches a listener may fall behind before it is dropped.
pub const BACKLOG: usize = 64;
/// Posts per batch at most.
const BATCH_POSTS: usize = 2048;
/// Bytes of posts per batch at most (at least one post per partition): the
/// backlog holds at most [`BACKLOG`] of them.
const BATCH_BYTES: usize = 1 << 20;
/// Writer memory of a batch's in-memory index (tantivy's least).
const BATCH_INDEX_BYTES: usize = 15 << 20;

/// Posts read together, in an in-memory index of them.
pub struct Batch {
    searcher: tantivy::Searcher,
    fields: Fields,
}

/// The live stream of enriched posts.
#[derive(Clone)]
pub struct Live {
    sender: broadcast::Sender<Arc<Batch>>,
    /// Held while a listener is counted and subscribed, so that no more
    /// than the most allowed ever listen.
    subscribing: Arc<std::sync::Mutex<()>>,
    fields: Fields,
    schema_index: Index,
}

/// A listener: its query (parsed once: every batch has the same schema),
/// run over each batch.
pub struct Listener {
    receiver: broadcast::Receiver<Arc<Batch>>,
    query: Box<dyn Query>,
}

/// What a listener gets next.
pub enum Next {
    /// Matching posts (JSON), maybe none.
    Posts(Vec<String>),
    /// It fell more than the backlog behind: it is dropped.
    Dropped(u64),
    /// The server is stopping.
    Closed,
}

impl Live {
    /// Starts the tailing thread over `log`, until `stop`; a listener
    /// more than `backlog` batches behind is dropped ([`BACKLOG`]).
    pub fn start(log: Arc<dyn Log>, stemming: bool, backlog: usize, stop: CancellationToken) -> std::io::Result<Live> {
        let (schema, fields) = super::schema(stemming);
        let schema_index = Index::create_in_ram(schema);
        let (sender, _) = broadcast::channel(backlog.max(1));
        let live = Live {
            sender,
            subscribing: Arc::default(),
            fields,
            schema_index,
        };
        let tail = live.clone();
        std::thread::Builder::new()
            .name("live".into())
            .spawn(move || tail.run(&*log, &stop))?;
        Ok(live)
    }

    /// A new listener for `request` (its sort, limit and cursor are not
    /// used), None when `max` listen already, or the query's error.
    pub fn listen(&self, request: SearchRequest, max: usize) -> Result<Option<Listener>, SearchError> {
        let (_, query) = build_query(&self.schema_index, self.fields, &request)?;
        // Listeners leave at any time, but only join here.
        let _one_at_a_time = self.subscribing.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if self.sender.receiver_count() >= max {
            return Ok(None);
        }
        Ok(Some(Listener {
            receiver: self.sender.subscribe(),
            query,
        }))
    }

    fn run(&self, log: &dyn Log, stop: &CancellationToken) {
        let mut next = match log.end_offsets(Topic::Enriched) {
            Ok(ends) => ends,
            Err(e) => {
                tracing::error!(error = %e, "The live stream cannot read the log; it stays silent.");
                return;
            }
        };
        let mut last_warning = None;
        while !stop.is_cancelled() {
            // Nobody listens: skip to the end instead of reading.
            if self.sender.receiver_count() == 0 {
                log.wait_for_appends(Topic::Enriched, &next, Duration::from_millis(200));
                if let Ok(ends) = log.end_offsets(Topic::Enriched) {
                    next = ends;
                }
                continue;
            }
            let mut values = Vec::new();
            let per_partition = BATCH_BYTES / next.len().max(1);
            for (p, at) in next.iter_mut().enumerate() {
                let entries = match log.read(Topic::Enriched, p as u32, *at, BATCH_POSTS, per_partition) {
                    Ok(entries) => entries,
                    Err(e) => {
                        // The stages that write the log stop the process
                        // if it fails for good; until then, said once a
                        // minute.
                        if last_warning.is_none_or(|t: std::time::Instant| t.elapsed() >= Duration::from_secs(60)) {
                            tracing::warn!(partition = p, error = %e, "The live stream could not read the log.");
                            last_warning = Some(std::time::Instant::now());
                        }
                        continue;
                    }
                };
                if let Some(last) = entries.last() {
                    *at = last.offset + 1;
                }
                values.extend(entries.into_iter().map(|e| e.value));
            }
            if values.is_empty() {
                log.wait_for_appends(Topic::Enriched, &next, Duration::from_millis(200));
                continue;
            }
            match self.batch(&values) {
                Ok(batch) => {
                    let _ = self.sender.send(Arc::new(batch));
                }
                Err(e) => tracing::warn!(error = %e, "A live batch could not be indexed; skipped."),
            }
        }
    }

    fn batch(&self, values: &[crate::log::Value]) -> tantivy::Result<Batch> {
        let index = Index::create_in_ram(self.schema_index.schema());
        let mut writer = index.writer_with_num_threads::<TantivyDocument>(1, BATCH_INDEX_BYTES)?;
        for value in values {
            if let Ok(post) = PostView::from_log_bytes(value) {
                writer.add_document(super::document(&self.fields, &post, value))?;
            }
        }
        writer.commit()?;
        Ok(Batch {
            searcher: index.reader()?.searcher(),
            fields: self.fields,
        })
    }
}

impl Listener {
    /// Waits for the next batch and returns its posts this listener's
    /// query matches, in log order.
    pub async fn next(&mut self) -> Next {
        match self.receiver.recv().await {
            Ok(batch) => Next::Posts(matching(&batch, &*self.query)),
            Err(broadcast::error::RecvError::Lagged(n)) => Next::Dropped(n),
            Err(broadcast::error::RecvError::Closed) => Next::Closed,
        }
    }
}

fn matching(batch: &Batch, query: &dyn Query) -> Vec<String> {
    let searcher = &batch.searcher;
    let Ok(found) = searcher.search(query, &DocSetCollector) else {
        return Vec::new();
    };
    let mut posts: Vec<Post> = found
        .into_iter()
        .filter_map(|address| {
            let doc: TantivyDocument = searcher.doc(address).ok()?;
            let bytes = doc.get_first(batch.fields.record)?.as_bytes()?.to_vec();
            Post::from_log_bytes(&bytes).ok()
        })
        .collect();
    // In the order chorus accepted them.
    posts.sort_by_key(|p| p.ingested_at);
    posts.iter().filter_map(|p| serde_json::to_string(p).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fjall::FjallLog;
    use crate::record::{IncomingPost, Post, Scores, Sentiment};

    fn append(log: &FjallLog, ids: std::ops::Range<u32>, body: &str) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = ids
            .map(|i| {
                let post = Post {
                    incoming: IncomingPost {
                        community: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
                        ..IncomingPost::new("x", &i.to_string(), body, 1_000_000)
                    },
                    text: body.into(),
                    ingested_at: i64::from(i),
                    scores: Scores {
                        polarity: 0.0,
                        subjectivity: 0.0,
                        vader_neg: 0.0,
                        vader_neu: 1.0,
                        vader_pos: 0.0,
                        vader_compound: 0.0,
                        sentiment: Sentiment::Neutral,
                    },
                };
                (i.to_be_bytes().to_vec(), post.to_log_bytes())
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Enriched, &refs).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_listener_gets_what_its_query_matches_and_one_that_falls_behind_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FjallLog::open(dir.path(), 1).unwrap());
        append(&log, 0..10, "before anyone listened");
        let stop = CancellationToken::new();
        const SMALL: usize = 4;
        let live = Live::start(log.clone(), false, SMALL, stop.clone()).unwrap();
        let request = |q: &str| SearchRequest {
            q: q.into(),
            community: Some("even".into()),
            ..SearchRequest::default()
        };
        let mut listener = live.listen(request("hello"), 2).unwrap().unwrap();
        let mut slow = live.listen(request(""), 2).unwrap().unwrap();
        assert!(live.listen(request("a AND ("), 2).is_err());
        // At most 2: a third waits until one leaves.
        assert!(live.listen(request(""), 2).unwrap().is_none());
        let third = live.listen(request(""), 3).unwrap().unwrap();
        drop(third);
        assert!(live.listen(request(""), 3).unwrap().is_some());
        tokio::time::sleep(Duration::from_millis(300)).await;
        append(&log, 10..20, "hello world");
        let mut got = Vec::new();
        while got.len() < 5 {
            match tokio::time::timeout(Duration::from_secs(5), listener.next())
                .await
                .unwrap()
            {
                Next::Posts(posts) => got.extend(posts),
                _ => panic!("the listener was dropped"),
            }
        }
        let ids: Vec<String> = got
            .iter()
            .map(|p| {
                serde_json::from_str::<serde_json::Value>(p).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect();
        // Only what came after it listened, only the even ones, in order.
        assert_eq!(ids, ["10", "12", "14", "16", "18"]);
        // The slow listener never reads: once more batches than the backlog
        // are out, it is dropped, while the one that reads gets them all.
        let appends = 3 * SMALL as u32;
        let reader = tokio::spawn(async move {
            let mut ids = 0;
            while ids < appends as usize {
                match tokio::time::timeout(Duration::from_secs(10), listener.next()).await {
                    Ok(Next::Posts(posts)) => ids += posts.len(),
                    Ok(_) => panic!("the reading listener was dropped"),
                    Err(_) => panic!("the reading listener stopped getting posts at {ids}"),
                }
            }
        });
        for i in 0..appends {
            append(&log, 100 + i * 2..102 + i * 2, "hello again");
            // Each append its own batch.
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        reader.await.unwrap();
        let mut dropped = false;
        while let Ok(next) = tokio::time::timeout(Duration::from_secs(2), slow.next()).await {
            match next {
                Next::Dropped(n) => {
                    assert!(n > 0);
                    dropped = true;
                    break;
                }
                Next::Posts(_) => {}
                Next::Closed => break,
            }
        }
        assert!(dropped, "a listener past the backlog was not dropped");
        stop.cancel();
    }
}
