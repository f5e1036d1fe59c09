//! The Reddit comment stream, as PRAW's `subreddit.stream.comments()` does
//! it, and more carefully.
//!
//! * OAuth2 (`POST {auth_url}/api/v1/access_token`, HTTP Basic client
//!   auth): the script `password` grant when `REDDIT_USERNAME` and
//!   `REDDIT_PASSWORD` are set, else app-only `client_credentials`. The token
//!   is renewed a minute before it expires and after a `401`. Token errors
//!   that arrive as HTTP 200 with `{"error": …}` are errors.
//! * Polls `GET {api_url}/r/<subs>/comments?limit=100&raw_json=1&before=<newest
//!   seen fullname>`, emits oldest first, and drops what a bounded set of
//!   recently seen fullnames already holds. Nothing new: waits 1 s, doubling
//!   to 16 s (with jitter); news resets the wait. After four empty polls in a
//!   row it polls once without `before` (a deleted anchor makes Reddit answer
//!   `before=` polls with nothing, forever).
//! * Rate limits: `x-ratelimit-remaining` (a float string) and
//!   `x-ratelimit-reset` (seconds) spread the remaining requests evenly over
//!   what is left of the window, and none are sent once it is used up; with
//!   no such headers, at most one request every 600 ms (Reddit's 100 per
//!   minute). `429` waits `Retry-After` (or the reset, or a minute);
//!   408/500/502/503/504/520/522 and connection failures are retried with
//!   backoff; other statuses (403 private or quarantined, 404, 413, 414…)
//!   stop the collector with the reason.
//! * Gaps: a poll that returns a full page of unseen comments may have
//!   missed some. It is counted (`chorus_reddit_possible_gaps_total`), and
//!   with `fill_gaps` the collector pages back with `after=` until it meets
//!   a fullname it has seen (at most ten pages: Reddit keeps about 1,000).
//! * A checkpoint (`collect/reddit-<subs>.json`: newest fullname, recently
//!   seen fullnames) is saved after each batch is durable, so a restart
//!   resumes without re-emitting or skipping.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::checkpoint::Checkpoint;
use super::output::Output;
use super::seen::Seen;
use crate::mapping;
use crate::metrics::Metrics;
use crate::record::IncomingPost;

/// Environment variables of the credentials.
pub const CLIENT_ID_ENV: &str = "REDDIT_CLIENT_ID";
/// See [`CLIENT_ID_ENV`].
pub const CLIENT_SECRET_ENV: &str = "REDDIT_CLIENT_SECRET";
/// See [`CLIENT_ID_ENV`].
pub const USERNAME_ENV: &str = "REDDIT_USERNAME";
/// See [`CLIENT_ID_ENV`].
pub const PASSWORD_ENV: &str = "REDDIT_PASSWORD";

/// Statuses that are retried with backoff.
const RETRIED: [u16; 7] = [408, 500, 502, 503, 504, 520, 522];
/// Empty `before=` polls in a row after which one poll goes without it.
const EMPTY_POLLS_BEFORE_RESET: u32 = 4;
/// Most pages read back to fill a gap.
const MAX_FILL_PAGES: usize = 10;
/// Seen fullnames kept in the checkpoint.
const CHECKPOINT_SEEN: usize = 1000;
/// Spacing of requests when Reddit sends no rate-limit headers.
const DEFAULT_SPACING: Duration = Duration::from_millis(600);
/// A token is renewed this long before it expires.
const TOKEN_MARGIN: Duration = Duration::from_secs(60);

/// One Reddit comment stream (`[[sources]] kind = "reddit"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedditConfig {
    /// Subreddits, `+`-separated, as in `r/politics+news`.
    pub subreddits: String,
    /// Where tokens come from.
    pub auth_url: String,
    /// Where listings come from.
    pub api_url: String,
    /// `<platform>:<app id>:<version> (by /u/<user>)`, required by Reddit.
    pub user_agent: String,
    /// Comments per poll (Reddit's maximum is 100).
    pub limit: u32,
    /// Page back after a full page of unseen comments.
    pub fill_gaps: bool,
    /// On a first start (no checkpoint), skip the comments already there.
    pub skip_existing: bool,
    /// Longest wait between polls when nothing is new, seconds.
    pub max_idle_secs: u64,
    /// Recently seen fullnames remembered to drop repeats.
    pub seen_capacity: usize,
    /// Timeout of one HTTP request, seconds (0: none).
    pub request_timeout_secs: u64,
}

impl Default for RedditConfig {
    fn default() -> Self {
        RedditConfig {
            subreddits: String::new(),
            auth_url: "https://www.reddit.com".into(),
            api_url: "https://oauth.reddit.com".into(),
            user_agent: String::new(),
            limit: 100,
            fill_gaps: false,
            skip_existing: false,
            max_idle_secs: 16,
            seen_capacity: 10_000,
            request_timeout_secs: 30,
        }
    }
}

impl RedditConfig {
    /// Refuses a configuration Reddit would refuse, with the reason.
    pub fn validate(&self) -> anyhow::Result<()> {
        let subs: Vec<&str> = self.subreddits.split('+').collect();
        if self.subreddits.is_empty() || subs.iter().any(|s| !valid_subreddit(s)) {
            bail!(
                "subreddits {:?}: give names like politics+news (letters, digits, _; no r/)",
                self.subreddits
            );
        }
        if !valid_user_agent(&self.user_agent) {
            bail!(
                "user_agent {:?}: Reddit requires \"<platform>:<app id>:<version> (by /u/<user>)\", \
                 e.g. \"linux:chorus:0.1.0 (by /u/yourname)\" (--user-agent, or user_agent in the source's config)",
                self.user_agent
            );
        }
        if !(1..=100).contains(&self.limit) {
            bail!("limit {}: Reddit serves 1 to 100 comments per request", self.limit);
        }
        for (name, url) in [("auth_url", &self.auth_url), ("api_url", &self.api_url)] {
            reqwest::Url::parse(url).with_context(|| format!("{name} {url:?} is not a URL"))?;
        }
        Ok(())
    }

    /// The stream's name: its checkpoint's, its spool's, in logs.
    pub fn name(&self) -> String {
        format!("reddit-{}", self.subreddits.to_ascii_lowercase())
    }
}

fn valid_subreddit(name: &str) -> bool {
    !name.is_empty() && name.len() <= 21 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// `<platform>:<app id>:<version> (by /u/<user>)`.
fn valid_user_agent(agent: &str) -> bool {
    let Some((head, by)) = agent.split_once(" (by /u/") else {
        return false;
    };
    let Some(user) = by.strip_suffix(')') else {
        return false;
    };
    let parts: Vec<&str> = head.splitn(3, ':').collect();
    parts.len() == 3
        && parts.iter().all(|p| !p.is_empty() && !p.contains(char::is_whitespace))
        && !user.is_empty()
        && user.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The app's credentials, from the environment only. `Debug` hides them.
#[derive(Clone)]
pub struct Credentials {
    client_id: String,
    client_secret: String,
    login: Option<(String, String)>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("client_id", &"<hidden>")
            .field("grant", &self.grant())
            .finish()
    }
}

impl Credentials {
    /// Reads `REDDIT_CLIENT_ID`, `REDDIT_CLIENT_SECRET` and, for the
    /// password grant, `REDDIT_USERNAME` and `REDDIT_PASSWORD`.
    pub fn from_env() -> anyhow::Result<Credentials> {
        Self::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Reads the credentials through `lookup` (the environment, or a test's map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Credentials> {
        let need = |name: &str| {
            lookup(name).with_context(|| {
                format!(
                    "{name} is not set: create an app at https://www.reddit.com/prefs/apps and export its id and secret"
                )
            })
        };
        let login = match (lookup(USERNAME_ENV), lookup(PASSWORD_ENV)) {
            (Some(user), Some(password)) => Some((user, password)),
            (None, None) => None,
            _ => bail!("set both {USERNAME_ENV} and {PASSWORD_ENV} (script app), or neither (app-only)"),
        };
        Ok(Credentials {
            client_id: need(CLIENT_ID_ENV)?,
            client_secret: need(CLIENT_SECRET_ENV)?,
            login,
        })
    }

    /// `password` or `client_credentials`.
    pub fn grant(&self) -> &'static str {
        if self.login.is_some() {
            "password"
        } else {
            "client_credentials"
        }
    }
}

/// What the checkpoint file holds.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    subreddits: String,
    newest: Option<String>,
    seen: Vec<String>,
}

/// Request pacing from Reddit's rate-limit headers.
#[derive(Debug)]
struct RateLimit {
    next_request: Instant,
}

impl RateLimit {
    async fn wait(&self) {
        tokio::time::sleep_until(self.next_request).await;
    }

    /// Reads the headers of a response received at `now`.
    fn update(&mut self, headers: &HeaderMap, now: Instant) {
        let number = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<f64>().ok())
                .filter(|v| v.is_finite() && *v >= 0.0)
        };
        let (remaining, used, reset) = (
            number("x-ratelimit-remaining"),
            number("x-ratelimit-used"),
            number("x-ratelimit-reset"),
        );
        tracing::debug!(?remaining, ?used, ?reset, "Reddit rate limit.");
        self.next_request = match (remaining, reset) {
            // Used up: nothing until the window resets.
            (Some(remaining), Some(reset)) if remaining < 1.0 => {
                now + super::clamped_secs(reset, super::MAX_WAIT, "x-ratelimit-reset")
            }
            // Spread what is left evenly over the rest of the window.
            (Some(remaining), Some(reset)) => {
                now + super::clamped_secs(reset / remaining, super::MAX_WAIT, "x-ratelimit-reset")
            }
            _ => now + DEFAULT_SPACING,
        };
    }

    /// After a 429: nothing before `wait` has passed.
    fn pause(&mut self, wait: Duration) {
        self.next_request = self.next_request.max(Instant::now() + wait);
    }
}

struct Token {
    value: String,
    expires_at: Instant,
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Token")
            .field("value", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A token is trusted for at most a day, whatever `expires_in` says.
const MAX_TOKEN_LIFE: Duration = Duration::from_secs(24 * 3600);

/// One comment of a listing: its fullname and the mapped post (or why it
/// could not be mapped).
pub type Child = (String, Result<IncomingPost, String>);

/// The collector of one stream.
#[derive(Debug)]
pub struct RedditCollector {
    config: RedditConfig,
    credentials: Credentials,
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    checkpoint: Checkpoint,
    token: Option<Token>,
    limits: RateLimit,
    retry: Backoff,
    seen: Seen,
    newest: Option<String>,
    empty_polls: u32,
}

impl RedditCollector {
    /// A collector whose checkpoint lives in `data`; fails on an invalid
    /// configuration or an unreadable checkpoint.
    pub fn new(
        config: RedditConfig,
        credentials: Credentials,
        data: &Path,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<RedditCollector> {
        config.validate()?;
        let mut builder = reqwest::Client::builder().user_agent(config.user_agent.clone());
        if config.request_timeout_secs > 0 {
            builder = builder.timeout(Duration::from_secs(config.request_timeout_secs));
        }
        let checkpoint = Checkpoint::new(data, &config.name());
        let state: State = checkpoint.load()?;
        let mut seen = Seen::new(config.seen_capacity);
        for name in &state.seen {
            seen.insert(name);
        }
        Ok(RedditCollector {
            http: builder.build().context("building the HTTP client")?,
            credentials,
            metrics,
            checkpoint,
            token: None,
            limits: RateLimit {
                next_request: Instant::now(),
            },
            retry: Backoff::new(Duration::from_secs(1), Duration::from_secs(60)),
            seen,
            newest: state.newest,
            empty_polls: 0,
            config,
        })
    }

    /// Streams comments into `output` until `shutdown` or a fatal error.
    pub async fn run(mut self, output: Output, shutdown: CancellationToken) -> anyhow::Result<()> {
        tracing::info!(subreddits = %self.config.subreddits, grant = self.credentials.grant(),
            resume = ?self.newest, "Collecting Reddit comments.");
        let max_idle = Duration::from_secs(self.config.max_idle_secs.max(1));
        let mut idle = Backoff::new(Duration::from_secs(1).min(max_idle), max_idle);
        let first_start = self.newest.is_none();
        let mut first_poll = true;
        loop {
            let page = tokio::select! {
                page = self.poll() => page?,
                () = shutdown.cancelled() => return Ok(()),
            };
            let skip = first_poll && first_start && self.config.skip_existing;
            first_poll = false;
            let news = !page.fresh.is_empty();
            // Oldest first.
            let mut names = Vec::with_capacity(page.fresh.len());
            let mut posts = Vec::with_capacity(page.fresh.len());
            for (name, post) in page.fresh.into_iter().rev() {
                match post {
                    Ok(post) => posts.push(post),
                    Err(reason) => {
                        self.metrics.collector_invalid.add(1);
                        tracing::warn!(fullname = %name, %reason, "Skipping a comment that does not map onto the record.");
                    }
                }
                names.push(name);
            }
            if !skip {
                output.emit(posts, &self.metrics).await?;
            }
            for name in &names {
                self.seen.insert(name);
            }
            if page.newest.is_some() {
                self.newest = page.newest;
            }
            if news || skip {
                self.save_checkpoint()?;
            }
            if news {
                idle.reset();
                continue;
            }
            let wait = idle.next_delay();
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => return Ok(()),
            }
        }
    }

    fn save_checkpoint(&self) -> anyhow::Result<()> {
        let state = State {
            subreddits: self.config.subreddits.clone(),
            newest: self.newest.clone(),
            seen: self.seen.newest(CHECKPOINT_SEEN),
        };
        self.checkpoint.save(&state)
    }

    /// One poll (and the pages back when it filled a gap): the unseen
    /// comments, newest first, and the newest fullname of the listing.
    async fn poll(&mut self) -> anyhow::Result<Page> {
        let before = if self.empty_polls >= EMPTY_POLLS_BEFORE_RESET {
            self.empty_polls = 0;
            None
        } else {
            self.newest.clone()
        };
        let children = self.listing(before.as_deref(), None).await?;
        // Without `before`, the newest comment listed is a live anchor even
        // when seen already.
        let listed_newest = before
            .is_none()
            .then(|| children.first().map(|(n, _)| n.clone()))
            .flatten();
        let mut fresh: Vec<Child> = children.into_iter().filter(|(n, _)| !self.seen.contains(n)).collect();
        // A full page of unseen comments, after having seen some: there may
        // be more between this page and what was seen.
        if fresh.len() >= self.config.limit as usize && (self.newest.is_some() || !self.seen.is_empty()) {
            self.metrics.reddit_possible_gaps.add(1);
            if self.config.fill_gaps {
                let recovered = self.fill_gap(&mut fresh).await?;
                self.metrics.reddit_gap_comments.add(recovered as u64);
                tracing::info!(recovered, "Filled a gap in the comment stream.");
            } else {
                tracing::warn!("A full page of new comments: some may have been missed (fill_gaps pages back).");
            }
        }
        self.empty_polls = if fresh.is_empty() { self.empty_polls + 1 } else { 0 };
        let newest = fresh.first().map(|(n, _)| n.clone()).or(listed_newest);
        Ok(Page { fresh, newest })
    }

    /// Pages back with `after=` from the oldest of `fresh` until a seen
    /// fullname; appends the unseen ones to `fresh` (newest first).
    async fn fill_gap(&mut self, fresh: &mut Vec<Child>) -> anyhow::Result<usize> {
        let mut recovered = 0;
        for _ in 0..MAX_FILL_PAGES {
            let Some((after, _)) = fresh.last() else { break };
            let after = after.clone();
            let older = self.listing(None, Some(&after)).await?;
            let n = older.len();
            let unseen: Vec<Child> = older
                .into_iter()
                .filter(|(name, _)| !self.seen.contains(name) && !fresh.iter().any(|(f, _)| f == name))
                .collect();
            let met_seen = unseen.len() < n;
            recovered += unseen.len();
            fresh.extend(unseen);
            if n == 0 || met_seen {
                break;
            }
        }
        Ok(recovered)
    }

    /// `GET /r/<subs>/comments` with `before` or `after`; the comments,
    /// newest first.
    async fn listing(&mut self, before: Option<&str>, after: Option<&str>) -> anyhow::Result<Vec<Child>> {
        let url = format!(
            "{}/r/{}/comments",
            self.config.api_url.trim_end_matches('/'),
            self.config.subreddits
        );
        let mut query = vec![("limit", self.config.limit.to_string()), ("raw_json", "1".to_string())];
        if let Some(before) = before {
            query.push(("before", before.to_string()));
        }
        if let Some(after) = after {
            query.push(("after", after.to_string()));
        }
        let body = self.get(&url, &query).await?;
        read_listing(&body).map_err(|e| anyhow::anyhow!("{url}: {e:#}"))
    }

    /// A GET with the bearer token, within the rate limit, retried as
    /// documented; the body of the 200.
    async fn get(&mut self, url: &str, query: &[(&str, String)]) -> anyhow::Result<String> {
        let mut renewed_after_401 = false;
        loop {
            let token = self.token().await?;
            self.limits.wait().await;
            self.metrics.collector_requests.add(1);
            let sent = self.http.get(url).query(query).bearer_auth(&token).send().await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    self.transient(&format!("GET {url}: {e}"), None).await;
                    continue;
                }
            };
            let status = response.status();
            self.limits.update(response.headers(), Instant::now());
            let retry_after = super::retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            match status.as_u16() {
                200 => {
                    self.retry.reset();
                    return Ok(body);
                }
                401 if !renewed_after_401 => {
                    // Expired or revoked: one new token, then one retry.
                    tracing::info!("Reddit refused the access token (401); requesting a new one.");
                    self.token = None;
                    renewed_after_401 = true;
                }
                429 => {
                    self.metrics.collector_rate_limited.add(1);
                    let wait = retry_after.unwrap_or(Duration::from_secs(60));
                    tracing::warn!(
                        wait_secs = wait.as_secs_f64(),
                        "Reddit says too many requests; waiting."
                    );
                    self.limits.pause(wait);
                }
                code if RETRIED.contains(&code) => {
                    self.transient(&format!("GET {url}: {status}"), retry_after).await;
                }
                _ => bail!("GET {url}: {}", explain(status, &body, &self.config.subreddits)),
            }
        }
    }

    /// Waits before retrying a transient failure.
    async fn transient(&mut self, what: &str, retry_after: Option<Duration>) {
        self.metrics.collector_retries.add(1);
        let wait = retry_after.unwrap_or_else(|| self.retry.next_delay());
        tracing::warn!(wait_secs = wait.as_secs_f64(), "{what}; retrying.");
        tokio::time::sleep(wait).await;
    }

    /// A valid access token, requested when there is none or it expires
    /// within a minute.
    async fn token(&mut self) -> anyhow::Result<String> {
        if let Some(token) = &self.token
            && Instant::now() + TOKEN_MARGIN < token.expires_at
        {
            return Ok(token.value.clone());
        }
        let url = format!("{}/api/v1/access_token", self.config.auth_url.trim_end_matches('/'));
        let mut form = vec![("grant_type", self.credentials.grant().to_string())];
        if let Some((user, password)) = &self.credentials.login {
            form.push(("username", user.clone()));
            form.push(("password", password.clone()));
        }
        loop {
            self.metrics.collector_requests.add(1);
            let sent = self
                .http
                .post(&url)
                .basic_auth(&self.credentials.client_id, Some(&self.credentials.client_secret))
                .form(&form)
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => {
                    self.transient(&format!("POST {url}: {e}"), None).await;
                    continue;
                }
            };
            let status = response.status();
            let retry_after = super::retry_after(response.headers());
            let body = response.text().await.unwrap_or_default();
            match status.as_u16() {
                200 => {
                    let (value, expires_in) = read_token(&body, self.credentials.grant())
                        .map_err(|e| anyhow::anyhow!("POST {url}: {e:#}"))?;
                    self.token = Some(Token {
                        value: value.clone(),
                        expires_at: Instant::now() + expires_in,
                    });
                    self.retry.reset();
                    return Ok(value);
                }
                429 => {
                    self.metrics.collector_rate_limited.add(1);
                    self.transient(&format!("POST {url}: 429"), retry_after).await;
                }
                code if RETRIED.contains(&code) => {
                    self.transient(&format!("POST {url}: {status}"), retry_after).await;
                }
                _ => bail!(
                    "Reddit refused the {} grant: {status}: {} (check {CLIENT_ID_ENV}, {CLIENT_SECRET_ENV}{})",
                    self.credentials.grant(),
                    snippet(&body),
                    if self.credentials.login.is_some() {
                        format!(", {USERNAME_ENV}, {PASSWORD_ENV}")
                    } else {
                        String::new()
                    }
                ),
            }
        }
    }
}

#[derive(Debug)]
struct Page {
    fresh: Vec<Child>,
    newest: Option<String>,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: Option<String>,
    expires_in: Option<f64>,
    error: Option<Value>,
    error_description: Option<String>,
}

impl std::fmt::Debug for TokenAnswer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenAnswer")
            .field("access_token", &self.access_token.as_ref().map(|_| "<redacted>"))
            .field("expires_in", &self.expires_in)
            .field("error", &self.error)
            .field("error_description", &self.error_description)
            .finish()
    }
}

/// The comments of a listing answer: each child's fullname and its
/// mapped post (or why it could not be mapped); an answer that is not a
/// Listing is an error.
pub fn read_listing(body: &str) -> anyhow::Result<Vec<Child>> {
    let listing: Value = serde_json::from_str(body).context("the answer is not JSON")?;
    let children = listing
        .pointer("/data/children")
        .and_then(Value::as_array)
        .context("the answer is not a Listing")?;
    Ok(children
        .iter()
        .filter(|c| c.get("kind").and_then(Value::as_str) == Some("t1"))
        .filter_map(|c| {
            let name = c.pointer("/data/name").and_then(Value::as_str)?.to_string();
            Some((name, mapping::reddit::comment(c).map_err(|e| e.to_string())))
        })
        .collect())
}

/// The access token of a 200 answer of the token endpoint and how long to
/// trust it (`expires_in`, clamped to a day); Reddit's `{"error": …}`
/// answers (HTTP 200 too) are errors naming `grant`.
pub fn read_token(body: &str, grant: &str) -> anyhow::Result<(String, Duration)> {
    let answer: TokenAnswer =
        serde_json::from_str(body).with_context(|| format!("the token answer is not JSON: {}", snippet(body)))?;
    if let Some(error) = answer.error {
        bail!(
            "Reddit refused the {grant} grant: {}{}",
            error_text(&error),
            answer.error_description.map(|d| format!(" ({d})")).unwrap_or_default()
        );
    }
    let value = answer.access_token.context("no access_token in the answer")?;
    let expires_in = super::clamped_secs(answer.expires_in.unwrap_or(3600.0), MAX_TOKEN_LIFE, "expires_in");
    Ok((value, expires_in))
}

fn error_text(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// A readable reason for a status that stops the collector.
fn explain(status: StatusCode, body: &str, subreddits: &str) -> String {
    let why = match status.as_u16() {
        401 => "the access token was refused twice in a row".to_string(),
        403 => format!("forbidden: is one of r/{subreddits} private, quarantined or banned?"),
        404 => format!("not found: does every one of r/{subreddits} exist?"),
        413 | 414 => "the request is too large: too many subreddits in one stream? Split them.".to_string(),
        _ => "unexpected answer".to_string(),
    };
    format!("{status}: {why} ({})", snippet(body))
}

/// The start of a body, on one line, for an error message.
fn snippet(body: &str) -> String {
    let flat: String = body.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &flat[..i]),
        None => flat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The wait before the next request after a response with `headers`.
    fn pacing_after(headers: &HeaderMap) -> Duration {
        let now = Instant::now();
        let mut limits = RateLimit { next_request: now };
        limits.update(headers, now);
        limits.next_request - now
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, v.parse().unwrap());
        }
        map
    }

    #[test]
    fn tokens_are_redacted_in_debug_output() {
        let token = Token {
            value: "secret-access-token".into(),
            expires_at: Instant::now(),
        };
        let answer: TokenAnswer =
            serde_json::from_str(r#"{"access_token": "secret-access-token", "expires_in": 3600}"#).unwrap();
        let remote =
            crate::sources::output::Remote::new("http://127.0.0.1:1", Some("secret-remote-token".into())).unwrap();
        for text in [format!("{token:?}"), format!("{answer:?}"), format!("{remote:?}")] {
            assert!(!text.contains("secret"), "{text}");
            assert!(text.contains("redacted"), "{text}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn pacing_spreads_the_window_and_stops_when_it_is_used_up() {
        let spread = pacing_after(&headers(&[
            ("x-ratelimit-remaining", "281.0"),
            ("x-ratelimit-used", "319"),
            ("x-ratelimit-reset", "253"),
        ]));
        assert_eq!(spread, Duration::from_secs_f64(253.0 / 281.0));
        let used_up = pacing_after(&headers(&[
            ("x-ratelimit-remaining", "0.0"),
            ("x-ratelimit-reset", "42"),
        ]));
        assert_eq!(used_up, Duration::from_secs(42));
        assert_eq!(pacing_after(&HeaderMap::new()), DEFAULT_SPACING);
        // Absurd values are clamped, not a panic.
        let huge = pacing_after(&headers(&[
            ("x-ratelimit-remaining", "0.0"),
            ("x-ratelimit-reset", "1e30"),
        ]));
        assert_eq!(huge, crate::sources::MAX_WAIT);
        let spread_huge = pacing_after(&headers(&[
            ("x-ratelimit-remaining", "2.0"),
            ("x-ratelimit-reset", "1e12"),
        ]));
        assert_eq!(spread_huge, crate::sources::MAX_WAIT);
    }

    #[test]
    fn user_agents_and_subreddits_are_checked() {
        assert!(valid_user_agent("linux:chorus:0.1.0 (by /u/some_user)"));
        assert!(!valid_user_agent("chorus/0.1"));
        assert!(!valid_user_agent("linux:chorus (by /u/x)"));
        assert!(!valid_user_agent("linux:chorus:0.1 (by /u/)"));
        let mut config = RedditConfig {
            subreddits: "politics+news".into(),
            user_agent: "linux:chorus:0.1.0 (by /u/x)".into(),
            ..RedditConfig::default()
        };
        config.validate().unwrap();
        config.subreddits = "r/politics".into();
        assert!(config.validate().unwrap_err().to_string().contains("no r/"));
        config.subreddits = "politics".into();
        config.user_agent = String::new();
        assert!(config.validate().unwrap_err().to_string().contains("(by /u/<user>)"));
    }

    #[test]
    fn credentials_come_in_pairs_and_never_print() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        let app = Credentials::from_lookup(env(&[(CLIENT_ID_ENV, "id123"), (CLIENT_SECRET_ENV, "s3cret")])).unwrap();
        assert_eq!(app.grant(), "client_credentials");
        let script = Credentials::from_lookup(env(&[
            (CLIENT_ID_ENV, "id123"),
            (CLIENT_SECRET_ENV, "s3cret"),
            (USERNAME_ENV, "me"),
            (PASSWORD_ENV, "hunter2"),
        ]))
        .unwrap();
        assert_eq!(script.grant(), "password");
        let printed = format!("{script:?}");
        assert!(!printed.contains("s3cret") && !printed.contains("hunter2") && !printed.contains("id123"));
        let half = Credentials::from_lookup(env(&[
            (CLIENT_ID_ENV, "a"),
            (CLIENT_SECRET_ENV, "b"),
            (USERNAME_ENV, "me"),
        ]));
        assert!(half.unwrap_err().to_string().contains(PASSWORD_ENV));
        let none = Credentials::from_lookup(env(&[]));
        assert!(none.unwrap_err().to_string().contains(CLIENT_ID_ENV));
    }
}
