//! The HTTP API (API Gateway): `POST /v1/posts`, `POST /v1/sql`,
//! `GET /metrics`, `GET /healthz`. Ingest answers `202` only after the
//! accepted posts are durable in `posts.raw`.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, to_bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::log::{Log, LogError, Topic};
use crate::mapping::{self, Format};
use crate::metrics::{Gauges, Metrics};
use crate::query::{QueryEngine, QueryError};
use crate::record::now_micros;
use crate::wire::{IngestResponse, TRUNCATED_HEADER};

/// What the handlers share.
pub struct AppState {
    /// The pipeline's log.
    pub log: Arc<dyn Log>,
    /// Queries, when the process has the serve role.
    pub serving: Option<Serving>,
    /// The stages this process runs; routes of the others answer 404.
    pub roles: crate::topology::Roles,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Accepted bearer tokens; empty: no authentication.
    pub tokens: Vec<String>,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// The bounds of an accepted post.
    pub limits: crate::record::Limits,
    /// Ingest throttles above this many posts waiting for enrichment.
    pub throttle: crate::consumers::Throttle,
    /// The stages that read the log (lag, status, metrics).
    pub consumers: crate::consumers::Consumers,
    /// Bounds of the listener.
    pub http: HttpLimits,
    /// Origins (`scheme://host[:port]`) whose pages may call the API besides
    /// the server's own; any other `Origin` is refused with 403.
    pub allowed_origins: Vec<String>,
    /// The address the server listens on (its own origin, and a `Host`
    /// always accepted).
    pub listen: std::net::SocketAddr,
    /// The data directory, whose disk ingest watches.
    pub data_dir: std::path::PathBuf,
    /// The archive's directory (`[archive] url`), for `/v1/status`.
    pub archive: crate::sinks::archive::Stored,
    /// Ingest answers 507 while the data directory's disk has less free.
    pub min_free_bytes: u64,
    /// Cancelled to stop the pipeline when the log fails for good.
    pub stop: CancellationToken,
    /// Why the API stopped the pipeline, if it did.
    pub failure: std::sync::Mutex<Option<String>>,
    /// Ingest bodies being read or parsed at once (`max_concurrent_ingest`).
    pub ingest_permits: Arc<tokio::sync::Semaphore>,
    /// Posts parsed and not yet in the log: the enrich lag bound counts
    /// them, so concurrent bodies cannot all pass it at once.
    pub ingest_pending: Arc<std::sync::atomic::AtomicU64>,
    /// Search over the index, when there is one (`[index] enabled`).
    pub searcher: Option<crate::sinks::index::Searcher>,
    /// The live stream of enriched posts (`GET /v1/stream`).
    pub live: Option<crate::sinks::index::live::Live>,
    /// The `[[alerts]]` and their states.
    pub alerts: crate::alerts::Alerts,
    /// Searches running at once ([`MAX_CONCURRENT_SEARCHES`]).
    pub search_permits: Arc<tokio::sync::Semaphore>,
}

/// What a process with the serve role answers queries from.
pub struct Serving {
    /// SQL over the data directory.
    pub query: Arc<QueryEngine>,
    /// The batch views.
    pub batch: Arc<crate::views::Batch>,
    /// The archive's lifecycle (`POST /v1/lifecycle`).
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
}

impl AppState {
    /// The views' states, where this process serves them.
    fn views(&self) -> Vec<crate::wire::ViewStatus> {
        self.serving.as_ref().map(|s| s.batch.status()).unwrap_or_default()
    }

    /// `404` for a route of a stage this process does not run.
    fn not_here(&self) -> Response {
        let message = if self.roles.all() {
            "no such route".to_string()
        } else {
            format!(
                "no such route here: this process runs the roles {} (chorus run --roles)",
                self.roles
            )
        };
        error(StatusCode::NOT_FOUND, message)
    }
}

/// Listeners of `GET /v1/stream` at once; one more gets 429.
pub const MAX_STREAM_LISTENERS: usize = 64;
/// Searches run at once (each on a blocking thread); one more gets 429.
pub const MAX_CONCURRENT_SEARCHES: usize = 8;
/// A comment line goes to an idle stream this often, so that proxies and
/// clients see it alive.
const STREAM_KEEPALIVE: Duration = Duration::from_secs(15);

/// Posts counted against the throttle's bound for the duration of an append.
struct Pending<'a> {
    counter: &'a std::sync::atomic::AtomicU64,
    posts: u64,
}

impl<'a> Pending<'a> {
    /// Counts `posts` as pending, then reads the lag and its bound: `Err`
    /// with the posts waiting before them (the lag plus those pending
    /// elsewhere) when adding these would pass the bound. Counting before reading makes any
    /// two bodies see each other, so the bound holds exactly; a body is
    /// always let through when nothing else waits, however large it is.
    fn reserve(
        counter: &'a std::sync::atomic::AtomicU64,
        posts: u64,
        lag_and_bound: impl FnOnce() -> Result<(u64, u64), LogError>,
    ) -> Result<Result<Self, (u64, u64)>, LogError> {
        use std::sync::atomic::Ordering;
        let others = counter.fetch_add(posts, Ordering::AcqRel);
        let pending = Self { counter, posts };
        let (lag, bound) = lag_and_bound()?;
        let waiting = lag.saturating_add(others);
        if waiting > 0 && waiting.saturating_add(posts) > bound {
            return Ok(Err((waiting, bound)));
        }
        Ok(Ok(pending))
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        self.counter.fetch_sub(self.posts, std::sync::atomic::Ordering::AcqRel);
    }
}

/// Free bytes (for unprivileged users) on the disk holding `path`.
pub fn free_bytes(path: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stat` is a plain struct statvfs fills in; it is read only on success.
    unsafe {
        let mut stat: libc::statvfs = std::mem::zeroed();
        if libc::statvfs(path.as_ptr(), &mut stat) != 0 {
            return None;
        }
        Some((stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64))
    }
}

/// The API's routes.
pub fn router(state: Arc<AppState>) -> Router {
    // Every process answers for its health, counters, status and log.
    let mut api = Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/log/{topic}/{partition}", get(read_log));
    if state.roles.has(crate::topology::Role::Ingest) {
        api = api.route("/v1/posts", post(ingest));
    }
    if state.serving.is_some() {
        api = api
            .route("/v1/sql", post(sql))
            .route(
                "/v1/views",
                get(|State(state): State<Arc<AppState>>| async move { Json(state.views()) }),
            )
            .route("/v1/views/{name}", get(view))
            .route("/v1/search", get(search))
            .route("/v1/stream", get(stream))
            .route(
                "/v1/alerts",
                get(|State(state): State<Arc<AppState>>| async move { Json(state.alerts.states()) }),
            );
    }
    // What changes the archive, where the process writes it.
    if state.serving.is_some() && state.roles.has(crate::topology::Role::Archive) {
        api = api
            .route("/v1/batch", post(batch))
            .route("/v1/lifecycle", post(lifecycle));
    }
    let api = api.route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let mut router = Router::new().route("/healthz", get(|| async { Json(json!({"status": "ok"})) }));
    if state.serving.is_some() {
        router = router.merge(crate::dashboard::routes());
    }
    router
        .merge(api)
        .fallback(|State(state): State<Arc<AppState>>| async move { state.not_here() })
        .layer(middleware::from_fn_with_state(state.clone(), check_origin))
        .with_state(state)
}

/// Bounds of the HTTP listener (`[server]`).
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// A request's headers must arrive within this (also the idle time a
    /// kept-alive connection may wait for its next request).
    pub header_timeout: Duration,
    /// A request's body must arrive within this.
    pub body_timeout: Duration,
    /// On shutdown, requests in flight get this long before their
    /// connections are closed.
    pub shutdown_grace: Duration,
    /// Ingest bodies read and parsed at once; one more gets 429.
    pub max_concurrent_ingest: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            max_concurrent_ingest: 16,
        }
    }
}

/// Serves until `shutdown`: then stops accepting, lets requests in flight
/// finish for at most `shutdown_grace`, and closes every connection.
pub async fn serve(listener: TcpListener, state: Arc<AppState>, shutdown: CancellationToken) -> std::io::Result<()> {
    let limits = state.http;
    let failure = state.clone();
    let failure = &failure.failure;
    let service = hyper_util::service::TowerToHyperService::new(router(state.clone()));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connections = Arc::new(tokio::sync::Semaphore::new(limits.max_connections.max(1)));
    let tasks = tokio_util::task::TaskTracker::new();
    let closing = CancellationToken::new();
    loop {
        let permit = tokio::select! {
            permit = connections.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(error = %e, "Accepting a connection failed.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let connection = http.serve_connection(hyper_util::rt::TokioIo::new(stream), service.clone());
        let (closing, grace) = (closing.clone(), limits.shutdown_grace);
        let stopping = shutdown.clone();
        tasks.spawn(async move {
            let _permit = permit;
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "A connection ended with an error.");
                    }
                    return;
                }
                () = stopping.cancelled() => {}
            }
            // Shutting down: finish the request in flight, then close.
            connection.as_mut().graceful_shutdown();
            tokio::select! {
                _ = connection.as_mut() => {}
                () = tokio::time::sleep(grace) => {}
                () = closing.cancelled() => {}
            }
        });
    }
    drop(listener);
    tasks.close();
    if tokio::time::timeout(limits.shutdown_grace, tasks.wait()).await.is_err() {
        tracing::warn!("Connections still open after the shutdown grace; closing them.");
        closing.cancel();
        tasks.wait().await;
    }
    match failure.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(reason) => Err(std::io::Error::other(reason)),
        None => Ok(()),
    }
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": message.into()}))).into_response()
}

/// Refuses requests from web pages of other origins (a page the operator
/// opens could otherwise POST to the loopback server) and, with no token
/// set, requests whose `Host` is not this server's (DNS rebinding).
async fn check_origin(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    let headers = request.headers();
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("(not text)");
        // A page this server served (the dashboard) under the name the
        // request is addressed to is its own; a foreign name is refused by
        // the Host check below unless tokens are set.
        let same_origin = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .is_some_and(|host| origin.strip_prefix("http://") == Some(host));
        if !same_origin && !own_origin(origin, state.listen) && !state.allowed_origins.iter().any(|o| o == origin) {
            return error(
                StatusCode::FORBIDDEN,
                format!("requests from pages of {origin:?} are refused; list it in [server] allowed_origins"),
            );
        }
    }
    if state.tokens.is_empty() {
        let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        if !local_host(host, state.listen) {
            return error(
                StatusCode::FORBIDDEN,
                format!("Host {host:?} is not this server's: without a token only loopback names are served"),
            );
        }
    }
    next.run(request).await
}

/// The host part of `host[:port]` (IPv6 in brackets kept).
fn host_name(authority: &str) -> &str {
    if authority.starts_with('[') {
        return authority.split_inclusive(']').next().unwrap_or(authority);
    }
    authority.rsplit_once(':').map_or(authority, |(h, _)| h)
}

/// Whether `host` (a `Host` header) names this server: a loopback name or
/// the listen address.
fn local_host(host: &str, listen: std::net::SocketAddr) -> bool {
    let name = host_name(host);
    let listen_ip = match listen.ip() {
        std::net::IpAddr::V6(ip) => format!("[{ip}]"),
        ip => ip.to_string(),
    };
    name.eq_ignore_ascii_case("localhost") || name == "127.0.0.1" || name == "[::1]" || name == listen_ip
}

/// Whether `origin` is the server's own (`http://` + a local host + its port).
fn own_origin(origin: &str, listen: std::net::SocketAddr) -> bool {
    let Some(authority) = origin.strip_prefix("http://") else {
        return false;
    };
    let port = authority[host_name(authority).len()..].strip_prefix(':');
    port == Some(&listen.port().to_string()) && local_host(authority, listen)
}

async fn authenticate(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if state.tokens.is_empty() {
        return next.run(request).await;
    }
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token)
            if state
                .tokens
                .iter()
                .any(|t| constant_time_eq(t.as_bytes(), token.as_bytes())) =>
        {
            next.run(request).await
        }
        Some(_) => unauthorized("invalid bearer token"),
        None => unauthorized("missing bearer token (Authorization: Bearer …)"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = error(StatusCode::UNAUTHORIZED, message);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"chorus\""),
    );
    response
}

/// Compares without an early exit, so timing does not reveal a prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads the body, refusing it with 413 past the limit.
async fn body_bytes(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    timeout: Duration,
) -> Result<axum::body::Bytes, Response> {
    let too_large = || {
        let mut r = error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body larger than {limit} bytes; split it into smaller batches"),
        );
        // The rest of the body is not read: the connection cannot be reused.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        r
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    match tokio::time::timeout(timeout, to_bytes(body, limit)).await {
        Ok(read) => read.map_err(|_| too_large()),
        Err(_) => {
            let mut r = error(
                StatusCode::REQUEST_TIMEOUT,
                format!("the request body did not arrive within {} s", timeout.as_secs()),
            );
            r.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}

#[derive(Deserialize)]
struct IngestParams {
    format: Option<String>,
}

async fn ingest(
    State(state): State<Arc<AppState>>,
    Query(params): Query<IngestParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = match params.format.as_deref() {
        None => Format::Auto,
        Some(name) => match Format::parse(name) {
            Some(f) => f,
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "unknown format {name:?}: use auto, canonical, reddit, tweet, bluesky, mastodon or hackernews"
                    ),
                );
            }
        },
    };
    // The disk almost full: refuse before the log hits the end of it
    // (the storage engine cannot go on after a failed write); the stages
    // keep the reserve to finish what was accepted.
    if let Some(free) = free_bytes(&state.data_dir)
        && free < state.min_free_bytes
    {
        tracing::warn!(
            free,
            reserve = state.min_free_bytes,
            "Ingest refused: the disk is almost full."
        );
        return retry_later(
            StatusCode::INSUFFICIENT_STORAGE,
            format!(
                "the disk of {} has {free} bytes free, under [log] min_free_bytes ({}); free some space \
                 (or lower retention) and retry",
                state.data_dir.display(),
                state.min_free_bytes
            ),
            "30",
        );
    }
    // Saturated: tell the client to come back instead of buffering (the
    // posts of bodies being appended count too).
    let pending = state.ingest_pending.load(std::sync::atomic::Ordering::Acquire);
    match off_the_workers(&state, |state| state.throttle.check(&state.consumers, &*state.log)).await {
        Ok((lag, bound)) if lag.saturating_add(pending) > bound => {
            return saturated(&state, lag.saturating_add(pending), bound);
        }
        Ok(_) => {}
        Err(e) => return unavailable(&e.to_string()),
    }
    // Bodies read and parsed at once are bounded (each may be
    // max_body_bytes): one more waits its turn as a 429.
    let Ok(_permit) = state.ingest_permits.clone().try_acquire_owned() else {
        state.metrics.ingest_throttled.add(1);
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "{} ingest requests are being read already ([server] max_concurrent_ingest); retry later",
                state.http.max_concurrent_ingest
            ),
            "1",
        );
    };
    let bytes = match body_bytes(&headers, body, state.max_body_bytes, state.http.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if bytes.trim_ascii().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "empty body: send a JSON object, a JSON array or NDJSON",
        );
    }
    let task_state = state.clone();
    let task = tokio::task::spawn_blocking(move || {
        let state = task_state;
        let parsed = mapping::parse_document(&bytes, format, &state.limits);
        let all_malformed = parsed.all_malformed();
        // Checked again now that the body's posts are counted, so bodies
        // read side by side cannot all pass the bound.
        let _pending = match Pending::reserve(&state.ingest_pending, parsed.posts.len() as u64, || {
            state.throttle.check(&state.consumers, &*state.log)
        })? {
            Ok(p) => p,
            Err(waiting) => return Ok::<_, LogError>(Err(waiting)),
        };
        let appended = crate::log::append_posts(&*state.log, parsed.posts, now_micros());
        Ok(Ok((appended, parsed.rejected, parsed.rejected_total, all_malformed)))
    });
    let (appended, rejected, rejected_total, all_malformed) = match task.await {
        Ok(Ok(Ok(result))) => result,
        Ok(Ok(Err((waiting, bound)))) => return saturated(&state, waiting, bound),
        Ok(Err(e)) => return unavailable(&e.to_string()),
        Err(e) => return error(StatusCode::INTERNAL_SERVER_ERROR, format!("ingest task failed: {e}")),
    };
    let accepted = match appended {
        Ok(n) => n,
        Err(e) => {
            if e.is_fatal() {
                // The log cannot take another write: stop the whole
                // process loudly rather than answer 503 forever.
                tracing::error!(error = %e, "The log failed for good; stopping.");
                *state.failure.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                state.stop.cancel();
            }
            return unavailable(&e.to_string());
        }
    };
    state.metrics.ingest_accepted.add(accepted as u64);
    state.metrics.ingest_rejected.add(rejected_total as u64);
    let status = if accepted > 0 {
        StatusCode::ACCEPTED
    } else if all_malformed {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    let answer = IngestResponse {
        accepted,
        rejected_total: (rejected_total > rejected.len()).then_some(rejected_total),
        rejected,
    };
    (status, Json(answer)).into_response()
}

/// The 429 of a pipeline with `waiting` posts not yet enriched, over
/// `bound`.
fn saturated(state: &AppState, waiting: u64, bound: u64) -> Response {
    state.metrics.ingest_throttled.add(1);
    retry_later(
        StatusCode::TOO_MANY_REQUESTS,
        format!(
            "{waiting} posts wait for enrichment, over the {bound} this pipeline takes ([server] max_enrich_lag, \
             or what enrichment drains in max_enrich_wait_ms); retry later"
        ),
        "1",
    )
}

/// An error answer that tells the client to come back after `seconds`.
fn retry_later(status: StatusCode, message: impl Into<String>, seconds: &'static str) -> Response {
    let mut r = error(status, message);
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(seconds));
    r
}

fn unavailable(reason: &str) -> Response {
    tracing::error!(%reason, "Ingest refused: the log is unavailable.");
    retry_later(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("log unavailable: {reason}"),
        "5",
    )
}

#[derive(Deserialize)]
struct SqlRequest {
    sql: String,
}

#[derive(Deserialize)]
struct SqlParams {
    format: Option<String>,
}

async fn sql(
    State(state): State<Arc<AppState>>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let format = match sql_format(params.format.as_deref()) {
        Ok(format) => format,
        Err(response) => return *response,
    };
    let bytes = match body_bytes(&headers, body, state.max_body_bytes, state.http.body_timeout).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let request: SqlRequest = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("expected {{\"sql\": \"…\"}}: {e}")),
    };
    // The routes that use it exist only when it does.
    let Some(serving) = &state.serving else {
        return state.not_here();
    };
    sql_answer(serving.query.sql(&request.sql).await, format)
}

/// The `format` parameter of an SQL answer: `None` is JSON.
fn sql_format(format: Option<&str>) -> Result<Option<crate::wire::sql::Format>, Box<Response>> {
    match format {
        None => Ok(None),
        Some("table") => Ok(Some(crate::wire::sql::Format::Table)),
        Some("csv") => Ok(Some(crate::wire::sql::Format::Csv)),
        Some("json") => Ok(Some(crate::wire::sql::Format::Json)),
        Some("ndjson") => Ok(Some(crate::wire::sql::Format::Ndjson)),
        Some(other) => Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            format!("unknown format {other:?}: use table, csv, json or ndjson"),
        ))),
    }
}

/// A query's result (or failure) as `POST /v1/sql` answers it.
fn sql_answer(
    result: Result<crate::query::QueryResult, QueryError>,
    format: Option<crate::wire::sql::Format>,
) -> Response {
    match result {
        Ok(result) => {
            let mut response = match format {
                None => match crate::wire::sql::to_json(&result) {
                    Ok(value) => Json(value).into_response(),
                    Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                },
                Some(format) => {
                    let mut text = Vec::new();
                    match crate::wire::sql::write(&result, format, &mut text) {
                        Ok(()) => text.into_response(),
                        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
                    }
                }
            };
            if let Some(value) = result.truncated.and_then(|r| HeaderValue::from_str(&r).ok()) {
                response.headers_mut().insert(TRUNCATED_HEADER, value);
            }
            response
        }
        Err(e @ (QueryError::Refused(_) | QueryError::Invalid(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e @ QueryError::TooLong(..)) => error(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
        Err(e @ QueryError::Busy(_)) => retry_later(StatusCode::TOO_MANY_REQUESTS, e.to_string(), "1"),
        Err(e @ QueryError::Timeout(_)) => error(StatusCode::GATEWAY_TIMEOUT, e.to_string()),
        Err(e @ QueryError::Memory(_)) => error(StatusCode::INSUFFICIENT_STORAGE, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn metrics(State(state): State<Arc<AppState>>) -> Response {
    let (lags, state_bytes) = off_the_workers(&state, |state| {
        let lags = state
            .consumers
            .positions(&*state.log)
            .map(|positions| positions.iter().map(|p| (p.input, p.lag())).collect())
            .unwrap_or_default();
        Ok((lags, state.log.state_bytes()))
    })
    .await
    .unwrap_or_default();
    let gauges = Gauges {
        lags,
        state_bytes,
        alerts: state
            .alerts
            .states()
            .into_iter()
            .map(|a| (a.name, a.breaches, a.breached))
            .collect(),
        views: state.views(),
    };
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(&gauges),
    )
        .into_response()
}

/// `GET /v1/views/{name}`: the view as `POST /v1/sql` would answer
/// `SELECT * FROM views.<name>`.
async fn view(
    State(state): State<Arc<AppState>>,
    axum::extract::Path(name): axum::extract::Path<String>,
    Query(params): Query<SqlParams>,
) -> Response {
    let format = match sql_format(params.format.as_deref()) {
        Ok(format) => format,
        Err(response) => return *response,
    };
    // The routes that use it exist only when it does.
    let Some(serving) = &state.serving else {
        return state.not_here();
    };
    if !serving.batch.views().iter().any(|v| v.name == name) {
        let names: Vec<&str> = serving.batch.views().iter().map(|v| v.name.as_str()).collect();
        return error(
            StatusCode::NOT_FOUND,
            format!("no view is named {name:?}; the views are: {}", names.join(", ")),
        );
    }
    let status = serving.batch.status().into_iter().find(|v| v.name == name);
    // A version of partial sums is served only with the speed layer that
    // adds to it (a query process of its own has none).
    if let Some(v) = &status
        && !v.speed_layer
        && v.version.as_ref().is_some_and(|version| version.partial)
    {
        let why = v.batch_only.as_deref().unwrap_or("the speed layer is off");
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "view {name}'s version holds the speed layer's partial sums, not served here ({why}); \
                 the next run with [batch] speed_layer = false makes one that is"
            ),
        );
    }
    let built = status.is_some_and(|v| v.version.is_some() || v.speed_layer);
    if !built {
        return error(
            StatusCode::NOT_FOUND,
            format!(
                "view {name} has not been built yet: run `chorus batch --view {name}` (or POST /v1/batch?view={name})"
            ),
        );
    }
    let sql = format!("SELECT * FROM {}.{name}", crate::views::SCHEMA);
    sql_answer(serving.query.sql(&sql).await, format)
}

#[derive(serde::Deserialize)]
struct BatchParams {
    view: Option<String>,
}

/// `POST /v1/batch[?view=NAME]`: runs the views (or one) now and answers
/// with each run's outcome once all are done.
async fn batch(State(state): State<Arc<AppState>>, Query(params): Query<BatchParams>) -> Response {
    // The routes that use it exist only when it does.
    let Some(serving) = &state.serving else {
        return state.not_here();
    };
    match serving.batch.run(params.view.as_deref(), Arc::new(|_| {})).await {
        Ok(runs) => Json(runs).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

/// Runs `f` on a thread that may block: log calls block (see [`Log`]),
/// and the async workers must not.
async fn off_the_workers<T: Send + 'static>(
    state: &Arc<AppState>,
    f: impl FnOnce(&AppState) -> Result<T, LogError> + Send + 'static,
) -> Result<T, LogError> {
    let state = state.clone();
    tokio::task::spawn_blocking(move || f(&state))
        .await
        .unwrap_or_else(|e| Err(LogError::Storage(format!("a log call failed: {e}"))))
}

/// `POST /v1/lifecycle`: one pass of the archive's lifecycle now
/// (after the one under way, if any), answered once it is done.
async fn lifecycle(State(state): State<Arc<AppState>>) -> Response {
    let Some(serving) = &state.serving else {
        return state.not_here();
    };
    let lifecycle = serving.lifecycle.clone();
    let stop = state.stop.clone();
    match tokio::task::spawn_blocking(move || lifecycle.run(&stop)).await {
        Ok(Ok(run)) => Json(run).into_response(),
        Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

async fn status(State(state): State<Arc<AppState>>) -> Response {
    match off_the_workers(&state, |state| state.consumers.status(&*state.log)).await {
        Ok(mut status) => {
            status.index = state.searcher.as_ref().map(|s| crate::wire::IndexStatus {
                documents: s.documents(),
                bytes: s.disk_bytes(),
            });
            let stored = state.archive.clone();
            status.archive = tokio::task::spawn_blocking(move || stored.summary().ok())
                .await
                .ok()
                .flatten();
            status.views = state.views();
            Json(status).into_response()
        }
        Err(e) => unavailable(&e.to_string()),
    }
}

/// `GET /v1/search`.
async fn search(
    State(state): State<Arc<AppState>>,
    Query(params): Query<crate::wire::search::SearchParams>,
) -> Response {
    let Some(searcher) = state.searcher.clone() else {
        return error(
            StatusCode::NOT_FOUND,
            "search is off: this server runs with [index] enabled = false",
        );
    };
    let request = match params.request(now_micros()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let Ok(permit) = state.search_permits.clone().try_acquire_owned() else {
        return retry_later(
            StatusCode::TOO_MANY_REQUESTS,
            format!("{MAX_CONCURRENT_SEARCHES} searches are running already; retry later"),
            "1",
        );
    };
    // The permit goes with the work: a client that hangs up does not free
    // its slot while its search still runs.
    let work = move || {
        let _permit = permit;
        searcher.search(&request)
    };
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(answer)) => Json(answer).into_response(),
        Ok(Err(e)) => search_error(e),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, format!("search task failed: {e}")),
    }
}

/// The answer to a search (or stream) that cannot run: the client's `400`
/// (with the position in `q` when the parser knows it), else a `500`.
fn search_error(e: crate::sinks::index::search::SearchError) -> Response {
    use crate::sinks::index::search::SearchError;
    match e {
        SearchError::Query { message, position } => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": format!("q: {message}"), "position": position})),
        )
            .into_response(),
        e @ SearchError::Invalid(_) => error(StatusCode::BAD_REQUEST, e.to_string()),
        e => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// `GET /v1/stream`: server-sent events, a `data:` line of JSON per
/// enriched post matching `q` and the filters, from now on.
async fn stream(
    State(state): State<Arc<AppState>>,
    Query(params): Query<crate::wire::search::SearchParams>,
) -> Response {
    use crate::sinks::index::live::Next;
    let Some(live) = state.live.clone() else {
        return error(StatusCode::NOT_FOUND, "the live stream is off on this server");
    };
    let request = match params.request(now_micros()) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let listener = match live.listen(request, MAX_STREAM_LISTENERS) {
        Ok(Some(l)) => l,
        Ok(None) => {
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                format!("{MAX_STREAM_LISTENERS} clients are listening already; retry later"),
                "5",
            );
        }
        Err(e) => return search_error(e),
    };
    let stop = state.stop.clone();
    // (listener, done): the stream ends after a drop notice or at stop.
    let events = futures::stream::unfold((listener, false), move |(mut listener, done)| {
        let stop = stop.clone();
        async move {
            if done {
                return None;
            }
            let next = tokio::select! {
                _ = stop.cancelled() => return None,
                next = tokio::time::timeout(STREAM_KEEPALIVE, listener.next()) => next,
            };
            let (chunk, done) = match next {
                Err(_) => (": keepalive\n\n".to_string(), false),
                Ok(Next::Posts(posts)) => {
                    let mut chunk = String::new();
                    for post in posts {
                        chunk.push_str("data: ");
                        chunk.push_str(&post);
                        chunk.push_str("\n\n");
                    }
                    (chunk, false)
                }
                Ok(Next::Dropped(missed)) => (
                    format!(
                        "event: dropped\ndata: {}\n\n",
                        json!({"reason": "this client read too slowly and was dropped", "missed_batches": missed})
                    ),
                    true,
                ),
                Ok(Next::Closed) => return None,
            };
            Some((
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(chunk)),
                (listener, done),
            ))
        }
    });
    let opening = futures::stream::once(async { Ok(axum::body::Bytes::from_static(b": connected\n\n")) });
    let body = Body::from_stream(futures::StreamExt::chain(opening, events));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

#[derive(Deserialize)]
struct LogParams {
    offset: Option<u64>,
    max: Option<usize>,
}

/// Records of one topic partition, for `chorus tail` against a running
/// server: `{"end": N, "records": [{"offset", "value"}…]}`.
async fn read_log(
    State(state): State<Arc<AppState>>,
    axum::extract::Path((topic, partition)): axum::extract::Path<(String, u32)>,
    Query(params): Query<LogParams>,
) -> Response {
    let Some(topic) = Topic::from_name(&topic) else {
        return error(
            StatusCode::NOT_FOUND,
            format!("no topic {topic:?}: raw, enriched or dead"),
        );
    };
    let log = state.log.clone();
    let offset = params.offset.unwrap_or(0);
    let max = params.max.unwrap_or(1000).min(10_000);
    let read = tokio::task::spawn_blocking(move || {
        let end = log.end_offsets(topic)?.get(partition as usize).copied().unwrap_or(0);
        Ok::<_, crate::log::LogError>((end, log.read(topic, partition, offset, max, crate::log::READ_BYTES)?))
    })
    .await;
    match read {
        Ok(Ok((end, entries))) => {
            let records: Vec<Value> = entries
                .into_iter()
                .map(|e| json!({"offset": e.offset, "value": crate::log::record_json(topic, &e.value)}))
                .collect();
            Json(json!({"end": end, "records": records})).into_response()
        }
        Ok(Err(e @ crate::log::LogError::NoSuchPartition { .. })) => error(StatusCode::NOT_FOUND, e.to_string()),
        Ok(Err(e)) => unavailable(&e.to_string()),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::RwLock;

    use super::*;
    use crate::log::fjall::FjallLog;
    use crate::sinks::archive::ArchiveTail;

    /// `POST /v1/posts` of `body` to the API at `base`.
    async fn post_to(
        client: &reqwest::Client,
        base: &str,
        body: impl Into<reqwest::Body>,
    ) -> reqwest::Result<reqwest::Response> {
        client.post(format!("{base}/v1/posts")).body(body).send().await
    }

    /// `GET /metrics` of the API at `base`.
    async fn metrics_of(client: &reqwest::Client, base: &str) -> String {
        client
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The API over a log that nothing enriches, so the lag only grows.
    async fn serve_without_enrich(dir: &std::path::Path, max_enrich_lag: u64) -> (String, CancellationToken) {
        let log: Arc<dyn Log> = Arc::new(FjallLog::open(&dir.join("log"), 2).unwrap());
        let query = QueryEngine::new(
            &dir.join("archive"),
            log.clone(),
            Arc::new(RwLock::new(())),
            Arc::new(ArchiveTail::default()),
            Default::default(),
            &dir.join("tmp"),
        )
        .unwrap();
        let query = Arc::new(query);
        let batch = Arc::new(crate::views::Batch::new(
            query.clone(),
            &dir.join("archive"),
            Vec::new(),
            Default::default(),
            Arc::new(Metrics::default()),
            (log.clone(), None, Default::default()),
        ));
        let lifecycle = Arc::new(crate::lifecycle::Lifecycle::new(
            dir.join("archive"),
            Default::default(),
            Default::default(),
            Default::default(),
            Arc::new(RwLock::new(())),
            Arc::new(Metrics::default()),
        ));
        let state = Arc::new(AppState {
            log,
            serving: Some(Serving {
                query,
                batch,
                lifecycle,
            }),
            roles: Default::default(),
            metrics: Arc::new(Metrics::default()),
            tokens: Vec::new(),
            max_body_bytes: 1 << 20,
            limits: Default::default(),
            throttle: crate::consumers::Throttle::new(max_enrich_lag, Duration::ZERO),
            consumers: crate::consumers::Consumers::of(&Default::default()),
            http: HttpLimits::default(),
            allowed_origins: Vec::new(),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: dir.to_path_buf(),
            archive: crate::sinks::archive::Stored::Dir(dir.join("archive")),
            min_free_bytes: 0,
            stop: CancellationToken::new(),
            failure: Default::default(),
            ingest_permits: Arc::new(tokio::sync::Semaphore::new(16)),
            ingest_pending: Default::default(),
            searcher: None,
            live: None,
            alerts: Default::default(),
            search_permits: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_SEARCHES)),
        });
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(serve(listener, state, shutdown.clone()));
        (base, shutdown)
    }

    #[tokio::test]
    async fn a_saturated_pipeline_answers_429_with_retry_after_and_keeps_what_it_accepted() {
        let dir = tempfile::tempdir().unwrap();
        let (base, shutdown) = serve_without_enrich(dir.path(), 2).await;
        let client = reqwest::Client::new();
        let post = |i: usize| format!(r#"{{"platform":"x","id":"{i}","body":"ok","created_at":1}}"#);
        let body = (0..3).map(post).collect::<Vec<_>>().join("\n");
        let r = post_to(&client, &base, body).await.unwrap();
        assert_eq!(r.status(), 202);
        // 3 posts wait for enrichment, more than the bound of 2.
        let r = post_to(&client, &base, post(9)).await.unwrap();
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "1");
        assert!(r.text().await.unwrap().contains("3 posts wait for enrichment"));
        // A large batch gets its 429 too, not a transport error while it is
        // still being sent (the throttle answers before reading the body).
        let large = (100..10_000).map(post).collect::<Vec<_>>().join("\n");
        assert!(large.len() > 500_000 && large.len() < 1 << 20);
        for _ in 0..5 {
            let r = post_to(&client, &base, large.clone())
                .await
                .expect("a throttled client gets an answer");
            assert_eq!(r.status(), 429);
        }
        let metrics = metrics_of(&client, &base).await;
        assert!(metrics.contains("chorus_ingest_posts_accepted_total 3\n"), "{metrics}");
        assert!(metrics.contains("chorus_ingest_requests_throttled_total 6\n"));
        assert!(metrics.contains("chorus_enrich_lag_records 3\n"));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn bodies_sent_side_by_side_cannot_all_pass_the_lag_bound() {
        let dir = tempfile::tempdir().unwrap();
        // A bound of 10 posts; each body carries 6 of them.
        let (base, shutdown) = serve_without_enrich(dir.path(), 10).await;
        let client = reqwest::Client::new();
        let body = |b: usize| {
            (0..6)
                .map(|i| format!(r#"{{"platform":"x","id":"{b}-{i}","body":"ok","created_at":1}}"#))
                .collect::<Vec<_>>()
                .join("\n")
        };
        // Each body alone finds the lag under the bound when it starts
        // (0 or 6 posts wait); counted once parsed, the second one would
        // pass it (12 > 10), so it is refused and nothing of it is kept.
        let r = post_to(&client, &base, body(0)).await.unwrap();
        assert_eq!(r.status(), 202);
        let r = post_to(&client, &base, body(1)).await.unwrap();
        assert_eq!(r.status(), 429);
        assert!(r.text().await.unwrap().contains("6 posts wait for enrichment"));
        // Eight bodies at once over an empty log: one goes through whole,
        // the others are refused whole.
        let dir = tempfile::tempdir().unwrap();
        let (base, shutdown2) = serve_without_enrich(dir.path(), 10).await;
        let answers = futures::future::join_all((0..8).map(|b| {
            let (client, base) = (client.clone(), base.clone());
            async move { post_to(&client, &base, body(b)).await.unwrap().status().as_u16() }
        }))
        .await;
        let accepted = answers.iter().filter(|s| **s == 202).count();
        assert!(answers.iter().all(|s| *s == 202 || *s == 429), "{answers:?}");
        assert_eq!(accepted, 1, "{answers:?}");
        let metrics = metrics_of(&client, &base).await;
        assert!(
            metrics.contains(&format!("chorus_enrich_lag_records {}\n", accepted * 6)),
            "{metrics}"
        );
        shutdown.cancel();
        shutdown2.cancel();
    }
}
