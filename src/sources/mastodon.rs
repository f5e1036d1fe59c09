//! Mastodon's streaming API as server-sent events:
//! `GET {instance}/api/v1/streaming/<stream>` with the access token from
//! `MASTODON_TOKEN`. `update` and `status.update` events carry a status,
//! mapped and emitted as they arrive; heartbeats, notifications and deletes
//! are skipped. A dropped or ended stream reconnects with backoff (1 s
//! doubling to 60 s, reset once events flow). The streaming API has no
//! resume point: statuses posted while disconnected are not replayed.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::output::Output;
use super::sse;
use crate::mapping::mastodon;
use crate::metrics::Metrics;

/// Environment variable with the access token.
pub const TOKEN_ENV: &str = "MASTODON_TOKEN";

/// The Mastodon collector (`[[sources]] kind = "mastodon"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MastodonConfig {
    /// The instance, e.g. `https://mastodon.social`.
    pub instance: String,
    /// `public`, `public/local`, `hashtag?tag=rust`, `user`…
    pub stream: String,
    /// A stream silent this many seconds (heartbeats count; instances send
    /// one every 15 s or so) is dropped and resumed.
    pub read_timeout_secs: u64,
}

impl Default for MastodonConfig {
    fn default() -> Self {
        MastodonConfig {
            instance: String::new(),
            stream: "public".into(),
            read_timeout_secs: 90,
        }
    }
}

impl MastodonConfig {
    /// Refuses an unusable configuration.
    pub fn validate(&self) -> anyhow::Result<()> {
        let url = reqwest::Url::parse(&self.instance).with_context(|| {
            format!(
                "instance {:?}: give the server's URL, e.g. https://mastodon.social",
                self.instance
            )
        })?;
        if !matches!(url.scheme(), "http" | "https") {
            bail!("instance {:?}: only http and https", self.instance);
        }
        if self.stream.is_empty() {
            bail!("stream must name a stream: public, public/local, hashtag?tag=…, user");
        }
        Ok(())
    }

    fn url(&self) -> String {
        format!(
            "{}/api/v1/streaming/{}",
            self.instance.trim_end_matches('/'),
            self.stream.trim_start_matches('/')
        )
    }
}

/// Runs until `shutdown` or a fatal error (the token refused).
pub async fn run(
    config: MastodonConfig,
    token: Option<String>,
    output: Output,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.validate()?;
    let http = reqwest::Client::builder()
        .user_agent(concat!("chorus/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .build()?;
    let url = config.url();
    let mut reconnect = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
    tracing::info!(%url, "Collecting Mastodon statuses.");
    loop {
        let silence = Duration::from_secs(config.read_timeout_secs.max(1));
        let session = stream_once(
            &http,
            &url,
            token.as_deref(),
            &output,
            &metrics,
            &mut reconnect,
            silence,
        );
        let ended = tokio::select! {
            ended = session => ended,
            () = shutdown.cancelled() => return Ok(()),
        };
        match ended {
            Ok(()) => tracing::info!(%url, "The stream ended; reconnecting."),
            Err(Fatal(e)) => return Err(e),
            Err(Transient(e)) => tracing::warn!(%url, error = format!("{e:#}"), "The stream failed; reconnecting."),
        }
        metrics.collector_retries.add(1);
        tokio::select! {
            () = tokio::time::sleep(reconnect.next_delay()) => {}
            () = shutdown.cancelled() => return Ok(()),
        }
    }
}

enum Failure {
    Fatal(anyhow::Error),
    Transient(anyhow::Error),
}
use Failure::{Fatal, Transient};

/// One connection: reads events until the stream ends.
async fn stream_once(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    output: &Output,
    metrics: &Metrics,
    reconnect: &mut Backoff,
    silence: Duration,
) -> Result<(), Failure> {
    let mut request = http.get(url).header(reqwest::header::ACCEPT, "text/event-stream");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    metrics.collector_requests.add(1);
    let mut response = request
        .send()
        .await
        .map_err(|e| Transient(anyhow::anyhow!("GET {url}: {e}")))?;
    let status = response.status();
    match status.as_u16() {
        200 => {}
        401 | 403 => {
            return Err(Fatal(anyhow::anyhow!(
                "GET {url}: {status}: the instance refused the token (set {TOKEN_ENV})"
            )));
        }
        404 => {
            return Err(Fatal(anyhow::anyhow!(
                "GET {url}: 404: no such stream on this instance"
            )));
        }
        429 => {
            metrics.collector_rate_limited.add(1);
            if let Some(wait) = super::retry_after(response.headers()) {
                tokio::time::sleep(wait).await;
            }
            return Err(Transient(anyhow::anyhow!("GET {url}: 429")));
        }
        _ => return Err(Transient(anyhow::anyhow!("GET {url}: {status}"))),
    }
    let mut parser = sse::Parser::default();
    loop {
        let chunk = tokio::time::timeout(silence, response.chunk())
            .await
            .map_err(|_| Transient(anyhow::anyhow!("{url} sent nothing for {} s", silence.as_secs())))?
            .map_err(|e| Transient(anyhow::anyhow!("reading {url}: {e}")))?;
        let Some(chunk) = chunk else { return Ok(()) };
        let mut posts = Vec::new();
        for event in parser.feed(&chunk) {
            match mastodon::stream_payload(&event.event, &event.data) {
                Some(Ok(post)) => posts.push(post),
                Some(Err(e)) => {
                    metrics.collector_invalid.add(1);
                    tracing::warn!(reason = %e, "Skipping a status that does not map onto the record.");
                }
                None => {}
            }
        }
        if !posts.is_empty() {
            reconnect.reset();
            output.emit(posts, metrics).await.map_err(Fatal)?;
        }
    }
}
