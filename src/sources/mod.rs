//! Where posts come from besides the HTTP API, and how any source hands
//! accepted posts to the log.

pub mod backoff;
pub mod bluesky;
pub mod checkpoint;
pub mod demo;
pub mod hackernews;
pub mod mastodon;
pub mod output;
pub mod reddit;
pub mod seen;
pub mod sse;

pub use crate::wire::client::{MAX_WAIT, clamped_secs, retry_after};

/// One `[[sources]]` entry of the configuration: a collector that
/// `chorus run` starts, writing into the local log.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceConfig {
    /// The Reddit comment stream of some subreddits.
    Reddit(reddit::RedditConfig),
    /// Hacker News items, forward from `maxitem`.
    Hackernews(hackernews::HackerNewsConfig),
    /// A Mastodon instance's streaming API.
    Mastodon(mastodon::MastodonConfig),
    /// Bluesky posts from Jetstream.
    Bluesky(bluesky::BlueskyConfig),
}

impl SourceConfig {
    /// A short name for logs, the checkpoint and the spool directory.
    pub fn name(&self) -> String {
        match self {
            SourceConfig::Reddit(c) => c.name(),
            SourceConfig::Hackernews(_) => "hackernews".into(),
            SourceConfig::Bluesky(_) => "bluesky".into(),
            SourceConfig::Mastodon(c) => {
                let host = reqwest::Url::parse(&c.instance)
                    .ok()
                    .and_then(|u| u.host_str().map(String::from))
                    .unwrap_or_default();
                format!("mastodon-{host}-{}", c.stream)
            }
        }
    }

    /// Checks the configuration and the credentials it needs from the
    /// environment, before anything starts.
    pub fn validate(&self) -> anyhow::Result<()> {
        match self {
            SourceConfig::Reddit(c) => {
                c.validate()?;
                reddit::Credentials::from_env()?;
            }
            SourceConfig::Hackernews(c) => c.validate()?,
            SourceConfig::Mastodon(c) => c.validate()?,
            SourceConfig::Bluesky(c) => c.validate()?,
        }
        Ok(())
    }

    /// Collects into `output` until `shutdown` or a fatal error; the
    /// checkpoint lives in `data`.
    pub async fn run(
        self,
        data: &std::path::Path,
        output: output::Output,
        metrics: std::sync::Arc<crate::metrics::Metrics>,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<()> {
        match self {
            SourceConfig::Reddit(config) => {
                let credentials = reddit::Credentials::from_env()?;
                reddit::RedditCollector::new(config, credentials, data, metrics)?
                    .run(output, shutdown)
                    .await
            }
            SourceConfig::Hackernews(config) => hackernews::run(config, data, output, metrics, shutdown).await,
            SourceConfig::Bluesky(config) => bluesky::run(config, data, output, metrics, shutdown).await,
            SourceConfig::Mastodon(config) => {
                let token = std::env::var(mastodon::TOKEN_ENV).ok().filter(|t| !t.is_empty());
                mastodon::run(config, token, output, metrics, shutdown).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn waits_a_remote_asks_for_are_clamped_not_a_panic() {
        let headers = |v: &str| {
            let mut map = reqwest::header::HeaderMap::new();
            map.insert(reqwest::header::RETRY_AFTER, v.parse().unwrap());
            map
        };
        assert_eq!(retry_after(&headers("1e30")), Some(MAX_WAIT));
        assert_eq!(retry_after(&headers("2.5")), Some(Duration::from_millis(2500)));
        assert_eq!(retry_after(&headers("nan")), None);
        assert_eq!(retry_after(&headers("-3")), None);
        assert_eq!(retry_after(&headers("Fri, 31 Dec 9999 23:59:59 GMT")), Some(MAX_WAIT));
        assert_eq!(
            clamped_secs(1e19, Duration::from_secs(86_400), "expires_in"),
            Duration::from_secs(86_400)
        );
        assert_eq!(clamped_secs(f64::NAN, MAX_WAIT, "x"), Duration::ZERO);
        assert_eq!(clamped_secs(f64::INFINITY, MAX_WAIT, "x"), MAX_WAIT);
    }
}
