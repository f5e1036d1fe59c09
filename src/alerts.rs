//! Saved-search alerts (`[[alerts]]`), as Kibana's and OpenSearch
//! Dashboards' monitors: every `check_secs` each alert's search runs over
//! the posts created in its window, and when the count reaches `min_count`
//! (or the negative share reaches `max_negative_share`) the alert breaches:
//! logged, counted in `/metrics`, shown by `GET /v1/alerts` and, with a
//! `webhook`, POSTed there as JSON — retried with backoff on a task of its
//! own, so a slow or dead receiver never holds up the checks or the
//! pipeline. An alert breaches once per crossing; it re-arms when the
//! condition no longer holds.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::sinks::index::Searcher;
use crate::wire::search::{MAX_QUERY_BYTES, SearchRequest};

/// Webhook deliveries waiting at once; past it the oldest is dropped
/// (logged).
const MAX_PENDING_DELIVERIES: usize = 100;
/// Attempts of one delivery.
const DELIVERY_ATTEMPTS: u32 = 6;

/// One `[[alerts]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Its name (unique), in logs, metrics and the webhook body.
    pub name: String,
    /// The search (as `GET /v1/search`'s `q`); empty: every post.
    #[serde(default)]
    pub q: String,
    /// Only this community.
    pub community: Option<String>,
    /// Only this platform.
    pub platform: Option<String>,
    /// Only this author.
    pub author: Option<String>,
    /// The posts looked at: those created in the last this many seconds.
    pub window_secs: u64,
    /// Breach when at least this many posts match in the window...
    pub min_count: Option<u64>,
    /// ... or when at least this share of them (0..=1) is negative,
    pub max_negative_share: Option<f64>,
    /// ... counted once the window holds this many posts (default 10).
    pub min_posts: Option<u64>,
    /// Where a breach is POSTed as JSON (http or https).
    pub webhook: Option<String>,
}

impl AlertConfig {
    /// Refuses an alert that cannot be meant.
    pub fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        if name.trim().is_empty() || name.len() > 128 || name.chars().any(|c| c.is_control() || c == '"') {
            return Err(format!(
                "[[alerts]] name {name:?}: 1 to 128 characters, no quotes or control characters"
            ));
        }
        if self.window_secs == 0 {
            return Err(format!("[[alerts]] {name}: window_secs must be at least 1"));
        }
        match (self.min_count, self.max_negative_share) {
            (None, None) | (Some(_), Some(_)) => {
                return Err(format!(
                    "[[alerts]] {name}: give exactly one threshold, min_count or max_negative_share"
                ));
            }
            (_, Some(share)) if !(0.0..=1.0).contains(&share) => {
                return Err(format!("[[alerts]] {name}: max_negative_share is a share, 0 to 1"));
            }
            _ => {}
        }
        if let Some(url) = &self.webhook {
            let parsed = reqwest::Url::parse(url).map_err(|e| format!("[[alerts]] {name}: webhook {url:?}: {e}"))?;
            if !matches!(parsed.scheme(), "http" | "https") {
                return Err(format!("[[alerts]] {name}: webhook must be http or https"));
            }
        }
        let query = crate::sinks::index::search::with_prefixes(&self.q);
        if tantivy::query_grammar::parse_query(&query).is_err() {
            let at = tantivy::query_grammar::parse_query_lenient(&self.q)
                .1
                .first()
                .map(|e| e.pos);
            return Err(format!(
                "[[alerts]] {name}: q {:?} does not parse (Syntax Error at byte {})",
                self.q,
                at.map_or("?".to_string(), |p| p.to_string())
            ));
        }
        if self.q.len() > MAX_QUERY_BYTES {
            return Err(format!("[[alerts]] {name}: q is longer than {MAX_QUERY_BYTES} bytes"));
        }
        Ok(())
    }

    /// The search over the posts created in the window that ends `now` (µs).
    fn request(&self, now: i64) -> SearchRequest {
        let window = i64::try_from(self.window_secs)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000);
        SearchRequest {
            q: self.q.clone(),
            since: Some(now.saturating_sub(window)),
            community: self.community.clone(),
            platform: self.platform.clone(),
            author: self.author.clone(),
            ..SearchRequest::default()
        }
    }
}

/// An alert's state, as `GET /v1/alerts` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertState {
    /// Its name.
    pub name: String,
    /// Whether its condition holds now.
    pub breached: bool,
    /// Breaches since the start.
    pub breaches: u64,
    /// When it last breached (RFC 3339).
    pub last_breach: Option<String>,
    /// Matching posts in the window at the last check.
    pub count: u64,
    /// Their negative share at the last check.
    pub negative_share: Option<f64>,
    /// The last check's error, if it failed.
    pub error: Option<String>,
}

/// The body POSTed to a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breach {
    /// The alert's name.
    pub alert: String,
    /// When (RFC 3339).
    pub at: String,
    /// The window, seconds.
    pub window_secs: u64,
    /// Matching posts in it.
    pub count: u64,
    /// Their negative share.
    pub negative_share: Option<f64>,
    /// What was crossed: `min_count` or `max_negative_share`.
    pub threshold: String,
    /// Its value.
    pub limit: f64,
}

/// The alerts of a running server.
#[derive(Clone, Default)]
pub struct Alerts {
    states: Arc<Mutex<Vec<AlertState>>>,
}

impl Alerts {
    /// Each alert's state.
    pub fn states(&self) -> Vec<AlertState> {
        self.states.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts checking `alerts` over `searcher` every `check`, until `stop`.
    pub fn start(alerts: Vec<AlertConfig>, searcher: Searcher, check: Duration, stop: CancellationToken) -> Alerts {
        let states = alerts
            .iter()
            .map(|a| AlertState {
                name: a.name.clone(),
                breached: false,
                breaches: 0,
                last_breach: None,
                count: 0,
                negative_share: None,
                error: None,
            })
            .collect();
        let this = Alerts {
            states: Arc::new(Mutex::new(states)),
        };
        if alerts.is_empty() {
            return this;
        }
        let (deliveries, receiver) = tokio::sync::mpsc::channel::<(String, Breach)>(MAX_PENDING_DELIVERIES);
        tokio::spawn(deliver(receiver, stop.clone()));
        let states = this.states.clone();
        tokio::spawn(async move {
            loop {
                for (i, alert) in alerts.iter().enumerate() {
                    let (alert, searcher) = (alert.clone(), searcher.clone());
                    let checked = tokio::task::spawn_blocking(move || {
                        let request = alert.request(crate::record::now_micros());
                        let tally = searcher.tally(&request).map_err(|e| e.to_string())?;
                        Ok::<_, String>((alert, tally))
                    })
                    .await
                    .map_err(|e| e.to_string())
                    .and_then(|r| r);
                    let mut all = states.lock().unwrap_or_else(|p| p.into_inner());
                    let state = &mut all[i];
                    let (alert, (count, split)) = match checked {
                        Ok(found) => found,
                        Err(e) => {
                            tracing::warn!(alert = %state.name, error = %e, "An alert's check failed.");
                            state.error = Some(e);
                            continue;
                        }
                    };
                    state.error = None;
                    let share = (count > 0).then(|| split.negative as f64 / count as f64);
                    state.count = count;
                    state.negative_share = share;
                    let crossed = match (alert.min_count, alert.max_negative_share) {
                        (Some(min), _) => (count >= min).then_some(("min_count", min as f64)),
                        (None, Some(max)) => (count >= alert.min_posts.unwrap_or(10)
                            && share.is_some_and(|s| s >= max))
                        .then_some(("max_negative_share", max)),
                        (None, None) => None,
                    };
                    let was = state.breached;
                    state.breached = crossed.is_some();
                    let (Some((threshold, limit)), false) = (crossed, was) else {
                        continue;
                    };
                    let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
                    state.breaches += 1;
                    state.last_breach = Some(at.clone());
                    tracing::warn!(alert = %alert.name, count, negative_share = ?share, threshold, "Alert breached.");
                    if let Some(url) = &alert.webhook {
                        let breach = Breach {
                            alert: alert.name.clone(),
                            at,
                            window_secs: alert.window_secs,
                            count,
                            negative_share: share,
                            threshold: threshold.into(),
                            limit,
                        };
                        if deliveries.try_send((url.clone(), breach)).is_err() {
                            tracing::error!(alert = %alert.name, "Too many webhook deliveries wait; this breach is not sent.");
                        }
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(check) => {}
                }
            }
        });
        this
    }
}

/// Sends breaches to their webhooks one after the other, each retried
/// with backoff (1, 2, 4… s) on a transport error or a non-2xx answer.
async fn deliver(mut receiver: tokio::sync::mpsc::Receiver<(String, Breach)>, stop: CancellationToken) {
    let client = match reqwest::Client::builder().timeout(Duration::from_secs(10)).build() {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "No HTTP client for alert webhooks.");
            return;
        }
    };
    loop {
        let (url, breach) = tokio::select! {
            _ = stop.cancelled() => return,
            next = receiver.recv() => match next { Some(n) => n, None => return },
        };
        for attempt in 0..DELIVERY_ATTEMPTS {
            let result = client.post(&url).json(&breach).send().await;
            match result {
                Ok(r) if r.status().is_success() => break,
                Ok(r) => {
                    tracing::warn!(alert = %breach.alert, status = %r.status(), attempt, "The alert webhook refused a breach.")
                }
                Err(e) => {
                    tracing::warn!(alert = %breach.alert, error = %e, attempt, "The alert webhook is unreachable.")
                }
            }
            if attempt + 1 == DELIVERY_ATTEMPTS {
                tracing::error!(alert = %breach.alert, "A breach could not be delivered; given up.");
                break;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1 << attempt)) => {}
            }
        }
    }
}
