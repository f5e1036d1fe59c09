//! Hacker News, forward from `maxitem`: polls `GET {api_url}/maxitem.json`,
//! fetches every new item `GET {api_url}/item/<id>.json` (a few at a time,
//! emitted in id order), maps comments and stories, and checkpoints the last
//! id emitted. Deleted and dead items are skipped; an item the API does not
//! serve yet (`null`, which happens for a moment after `maxitem` moves) is
//! asked again a few times before it is skipped.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::checkpoint::Checkpoint;
use super::output::Output;
use crate::mapping::hackernews;
use crate::metrics::Metrics;

/// Times an item answered `null` is asked again before it is skipped.
const NULL_RETRIES: u32 = 5;

/// The Hacker News collector (`[[sources]] kind = "hackernews"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HackerNewsConfig {
    /// The Firebase API base.
    pub api_url: String,
    /// Seconds between `maxitem` polls.
    pub poll_secs: u64,
    /// Items fetched at once.
    pub concurrency: usize,
    /// On a first start (no checkpoint), also fetch this many items before
    /// `maxitem`.
    pub backfill: u64,
    /// Timeout of one HTTP request, seconds (0: none).
    pub request_timeout_secs: u64,
}

impl Default for HackerNewsConfig {
    fn default() -> Self {
        HackerNewsConfig {
            api_url: "https://hacker-news.firebaseio.com/v0".into(),
            poll_secs: 5,
            concurrency: 8,
            backfill: 0,
            request_timeout_secs: 30,
        }
    }
}

impl HackerNewsConfig {
    /// Refuses an unusable configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        reqwest::Url::parse(&self.api_url).with_context(|| format!("api_url {:?} is not a URL", self.api_url))?;
        if self.concurrency == 0 {
            bail!("concurrency must be at least 1");
        }
        Ok(())
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    last: Option<u64>,
}

/// Runs the collector until `shutdown` or a fatal error.
pub async fn run(
    config: HackerNewsConfig,
    data: &Path,
    output: Output,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let checkpoint = Checkpoint::new(data, "hackernews");
    let mut last = checkpoint.load::<State>()?.last;
    let mut builder = reqwest::Client::builder().user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")));
    if config.request_timeout_secs > 0 {
        builder = builder.timeout(Duration::from_secs(config.request_timeout_secs));
    }
    let http = builder.build()?;
    let base = config.api_url.trim_end_matches('/').to_string();
    let mut retry = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    let poll = Duration::from_secs(config.poll_secs.max(1));
    tracing::info!(api = %base, resume = ?last, "Collecting Hacker News items.");
    loop {
        let step = async {
            let max: u64 = get_json(&http, &format!("{base}/maxitem.json"), &metrics)
                .await?
                .as_u64()
                .context("maxitem is not a number")?;
            let from = last.map_or(max.saturating_sub(config.backfill) + 1, |l| l + 1);
            if from > max {
                return Ok::<_, anyhow::Error>((Vec::new(), last.or(Some(max))));
            }
            // At most a few thousand per step, so progress is checkpointed.
            let to = max.min(from + 4095);
            let items: Vec<anyhow::Result<Option<Value>>> = futures::stream::iter(from..=to)
                .map(|id| fetch_item(&http, &base, id, &metrics))
                .buffered(config.concurrency)
                .collect()
                .await;
            let mut posts = Vec::new();
            for (id, item) in (from..=to).zip(items) {
                let Some(item) = item? else {
                    tracing::warn!(id, "Hacker News never served this item; skipped.");
                    metrics.collector_invalid.add(1);
                    continue;
                };
                match hackernews::item(&item) {
                    Ok(post) => posts.push(post),
                    // Deleted, dead, or without text: not a post.
                    Err(e) => tracing::debug!(id, reason = %e, "Item skipped."),
                }
            }
            Ok((posts, Some(to)))
        };
        let result = tokio::select! {
            r = step => r,
            () = shutdown.cancelled() => return Ok(()),
        };
        let wait = match result {
            Ok((posts, next_last)) => {
                let news = !posts.is_empty() || next_last != last;
                output.emit(posts, &metrics).await?;
                if next_last != last {
                    last = next_last;
                    checkpoint.save(&State { last })?;
                }
                retry.reset();
                if news { Duration::ZERO } else { poll }
            }
            Err(e) => {
                metrics.collector_retries.add(1);
                let wait = retry.next_delay();
                tracing::warn!(
                    error = format!("{e:#}"),
                    wait_secs = wait.as_secs_f64(),
                    "Hacker News failed; retrying."
                );
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

/// An item, or `None` when the API keeps answering `null`.
async fn fetch_item(http: &reqwest::Client, base: &str, id: u64, metrics: &Metrics) -> anyhow::Result<Option<Value>> {
    let url = format!("{base}/item/{id}.json");
    for attempt in 0..=NULL_RETRIES {
        let value = get_json(http, &url, metrics).await?;
        if !value.is_null() {
            return Ok(Some(value));
        }
        if attempt < NULL_RETRIES {
            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
        }
    }
    Ok(None)
}

async fn get_json(http: &reqwest::Client, url: &str, metrics: &Metrics) -> anyhow::Result<Value> {
    metrics.collector_requests.add(1);
    let response = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let body = response.text().await.with_context(|| format!("GET {url}"))?;
    if !status.is_success() {
        bail!("GET {url}: {status}");
    }
    serde_json::from_str(&body).with_context(|| format!("GET {url}: not JSON"))
}
