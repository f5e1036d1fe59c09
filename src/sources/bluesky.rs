//! Bluesky through Jetstream: a WebSocket
//! `{url}?wantedCollections=app.bsky.feed.post[&cursor=<time_us>]` of JSON
//! events. Post creations are mapped (optionally kept only for some
//! languages or keywords) and emitted in batches; everything else is
//! skipped. The checkpoint holds the cursor (the newest `time_us` handled)
//! and the recently emitted post ids: a reconnect or restart asks for the
//! events from a few seconds before the cursor (`overlap_secs`; Jetstream's
//! `time_us` is not strictly increasing) and drops the posts already
//! emitted. Disconnections reconnect with backoff (1 s doubling to 60 s).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::checkpoint::Checkpoint;
use super::output::Output;
use super::seen::Seen;
use crate::mapping::bluesky::{self, Event, POST_COLLECTION};
use crate::metrics::Metrics;
use crate::record::IncomingPost;

/// Post ids remembered (and checkpointed) to drop replays.
const SEEN: usize = 5000;
/// Most posts per emitted batch.
const BATCH: usize = 500;
/// Longest a post waits for a fuller batch.
const BATCH_WAIT: Duration = Duration::from_millis(500);

/// The Jetstream collector (`[[sources]] kind = "bluesky"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BlueskyConfig {
    /// Jetstream's subscribe endpoint.
    pub url: String,
    /// Keep posts with one of these among their languages, or a regional
    /// variant of one (`en` keeps `en-US`); empty: all.
    pub langs: Vec<String>,
    /// Keep posts containing one of these words (case-insensitive); empty: all.
    pub keywords: Vec<String>,
    /// Seconds of events asked again on reconnect.
    pub overlap_secs: u64,
    /// A connection silent for this many seconds is dropped and resumed.
    pub read_timeout_secs: u64,
}

impl Default for BlueskyConfig {
    fn default() -> Self {
        BlueskyConfig {
            url: "wss://jetstream2.us-east.bsky.network/subscribe".into(),
            langs: Vec::new(),
            keywords: Vec::new(),
            overlap_secs: 5,
            read_timeout_secs: 60,
        }
    }
}

impl BlueskyConfig {
    /// Refuses an unusable configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = reqwest::Url::parse(&self.url).with_context(|| format!("url {:?} is not a URL", self.url))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            bail!("url {:?}: Jetstream is a WebSocket (ws:// or wss://)", self.url);
        }
        Ok(())
    }

    /// Whether a post with these `langs` (all of the record's) passes.
    fn keeps(&self, post: &IncomingPost, langs: &[&str]) -> bool {
        let lang_ok = self.langs.is_empty()
            || langs.iter().any(|l| {
                self.langs.iter().any(|k| {
                    l.eq_ignore_ascii_case(k)
                        || (l.len() > k.len() && l.as_bytes()[k.len()] == b'-' && l[..k.len()].eq_ignore_ascii_case(k))
                })
            });
        // `keywords` are lowercased once, in `run`.
        lang_ok
            && (self.keywords.is_empty() || {
                let text = post.body.to_lowercase();
                self.keywords.iter().any(|k| text.contains(k.as_str()))
            })
    }

    fn subscribe_url(&self, cursor: Option<i64>) -> String {
        let mut url = format!(
            "{}{}wantedCollections={POST_COLLECTION}",
            self.url,
            if self.url.contains('?') { "&" } else { "?" }
        );
        if let Some(cursor) = cursor {
            let from = cursor - self.overlap_secs as i64 * 1_000_000;
            url.push_str(&format!("&cursor={from}"));
        }
        url
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    cursor: Option<i64>,
    recent: Vec<String>,
}

/// What the collector remembers between connections.
struct Stream {
    cursor: Option<i64>,
    seen: Seen,
}

/// Runs until `shutdown` or a fatal error.
pub async fn run(
    config: BlueskyConfig,
    data: &Path,
    output: Output,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let config = BlueskyConfig {
        keywords: config.keywords.iter().map(|k| k.to_lowercase()).collect(),
        ..config
    };
    let checkpoint = Checkpoint::new(data, "bluesky");
    let state: State = checkpoint.load()?;
    let mut stream = Stream {
        cursor: state.cursor,
        seen: Seen::new(SEEN),
    };
    for id in &state.recent {
        stream.seen.insert(id);
    }
    let mut reconnect = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    tracing::info!(url = %config.url, cursor = ?stream.cursor, "Collecting Bluesky posts.");
    loop {
        let url = config.subscribe_url(stream.cursor);
        metrics.collector_requests.add(1);
        let result = tokio::select! {
            r = session(&config, &url, &mut stream, &checkpoint, &output, &metrics, &mut reconnect) => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        match result {
            Ok(()) => tracing::info!(%url, "Jetstream closed the connection; reconnecting."),
            Err(e) => {
                if e.downcast_ref::<Fatal>().is_some() {
                    return Err(e);
                }
                tracing::warn!(%url, error = format!("{e:#}"), "Jetstream failed; reconnecting.");
            }
        }
        metrics.collector_retries.add(1);
        tokio::select! {
            () = tokio::time::sleep(reconnect.next_delay()) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// An error that must stop the collector (the output failed).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

/// One connection: events until it closes or fails.
async fn session(
    config: &BlueskyConfig,
    url: &str,
    stream: &mut Stream,
    checkpoint: &Checkpoint,
    output: &Output,
    metrics: &Metrics,
    reconnect: &mut Backoff,
) -> anyhow::Result<()> {
    let (mut socket, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let mut batch: Vec<IncomingPost> = Vec::new();
    let mut cursor = stream.cursor;
    loop {
        let next = if batch.is_empty() {
            let silence = Duration::from_secs(config.read_timeout_secs.max(1));
            match tokio::time::timeout(silence, socket.next()).await {
                Ok(message) => message.map(Some),
                // Nothing is pending: drop the connection and resume.
                Err(_) => anyhow::bail!("{url} sent nothing for {} s", silence.as_secs()),
            }
        } else {
            match tokio::time::timeout(BATCH_WAIT, socket.next()).await {
                Ok(message) => message.map(Some),
                Err(_) => Some(None),
            }
        };
        // A failed read ends the session too, after the batch is emitted:
        // its posts are remembered as seen.
        let timed_out = matches!(next, Some(None));
        let (ended, failure) = match next {
            None => (true, None),
            Some(None) => (false, None),
            Some(Some(Err(e))) => (true, Some(e)),
            Some(Some(Ok(message))) => match message {
                Message::Text(text) => {
                    handle(config, text.as_str(), stream, &mut cursor, &mut batch, metrics);
                    reconnect.reset();
                    (false, None)
                }
                Message::Binary(bytes) => {
                    handle(
                        config,
                        &String::from_utf8_lossy(&bytes),
                        stream,
                        &mut cursor,
                        &mut batch,
                        metrics,
                    );
                    (false, None)
                }
                Message::Close(_) => (true, None),
                _ => (false, None),
            },
        };
        let due = batch.len() >= BATCH || ended || timed_out;
        if due && (cursor != stream.cursor || !batch.is_empty()) {
            output
                .emit(std::mem::take(&mut batch), metrics)
                .await
                .map_err(|e| anyhow::Error::new(Fatal(format!("{e:#}"))))?;
            stream.cursor = cursor;
            let state = State {
                cursor,
                recent: stream.seen.newest(SEEN),
            };
            checkpoint
                .save(&state)
                .map_err(|e| anyhow::Error::new(Fatal(format!("{e:#}"))))?;
        }
        if let Some(e) = failure {
            return Err(e).with_context(|| format!("reading {url}"));
        }
        if ended {
            return Ok(());
        }
    }
}

/// One event: advances the cursor, adds a kept, unseen post to `batch`.
fn handle(
    config: &BlueskyConfig,
    text: &str,
    stream: &mut Stream,
    cursor: &mut Option<i64>,
    batch: &mut Vec<IncomingPost>,
    metrics: &Metrics,
) {
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            metrics.collector_invalid.add(1);
            tracing::warn!(error = %e, "Skipping a Jetstream message that is not JSON.");
            return;
        }
    };
    if let Some(t) = value.get("time_us").and_then(Value::as_i64) {
        *cursor = Some(cursor.map_or(t, |c| c.max(t)));
    }
    match bluesky::event(&value) {
        Ok(Event::Post(post)) => {
            let langs: Vec<&str> = value
                .pointer("/commit/record/langs")
                .and_then(Value::as_array)
                .map(|l| l.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            if config.keeps(&post, &langs) && stream.seen.insert(&post.id) {
                batch.push(*post);
            }
        }
        Ok(Event::Other(_)) => {}
        Err(e) => {
            metrics.collector_invalid.add(1);
            tracing::warn!(reason = %e, "Skipping a post that does not map onto the record.");
        }
    }
}
