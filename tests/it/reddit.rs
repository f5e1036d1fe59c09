//! The Reddit collector against a local server replaying REAL recorded
//! Reddit traffic (`tests/fixtures/reddit/`), under paused tokio time: the
//! waits are measured on the virtual clock, nothing really sleeps.

use std::sync::Arc;
use std::time::Duration;

use chorus::metrics::Metrics;
use chorus::record::IncomingPost;
use chorus::sources::output::{Output, Spool};
use chorus::sources::reddit::{Credentials, RedditCollector, RedditConfig};
use tokio_util::sync::CancellationToken;

use crate::replay::{self, Recorded, Script, recorded};

const TOKEN: &str = "/api/v1/access_token";
const COMMENTS: &str = "/r/askreddit/comments";
const AGENT: &str = "test:chorus-tests:0.1 (by /u/chorus_test)";

fn first_page() -> Recorded {
    recorded("reddit/listings/r_askreddit_comments_2021-11-06_first_page")
}
fn poll_before() -> Recorded {
    recorded("reddit/listings/r_askreddit_comments_2021-11-06_poll_before")
}
fn empty() -> Recorded {
    recorded("reddit/listings/r_all_comments_2016-12-22_poll_before_empty")
}
fn app_token() -> Recorded {
    recorded("reddit/oauth/token_client_credentials_2026-06-08")
}

fn fullnames(r: &Recorded) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    v["data"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["data"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn credentials(password: bool) -> Credentials {
    Credentials::from_lookup(move |name| match name {
        "REDDIT_CLIENT_ID" => Some("the-client-id".into()),
        "REDDIT_CLIENT_SECRET" => Some("the-secret".into()),
        "REDDIT_USERNAME" if password => Some("chorus_test".into()),
        "REDDIT_PASSWORD" if password => Some("pa55word".into()),
        _ => None,
    })
    .unwrap()
}

/// A run of the collector against a replay server.
struct Run {
    script: Arc<Script>,
    config: RedditConfig,
    data: tempfile::TempDir,
    metrics: Arc<Metrics>,
}

impl Run {
    async fn new() -> Run {
        let script = Arc::new(Script::default());
        let address = replay::serve(script.clone()).await;
        let base = format!("http://{address}");
        Run {
            script,
            config: RedditConfig {
                subreddits: "askreddit".into(),
                auth_url: base.clone(),
                api_url: base,
                user_agent: AGENT.into(),
                // Timeouts would fire on the paused clock.
                request_timeout_secs: 0,
                ..RedditConfig::default()
            },
            data: tempfile::tempdir().unwrap(),
            metrics: Arc::new(Metrics::default()),
        }
    }

    /// Runs a collector until `done(requests to the listing)` or it ends;
    /// returns its result.
    async fn until(&self, password: bool, done: impl Fn(usize) -> bool) -> anyhow::Result<()> {
        let collector = RedditCollector::new(
            self.config.clone(),
            credentials(password),
            self.data.path(),
            self.metrics.clone(),
        )?;
        let spool = Arc::new(Spool::open(&self.data.path().join("spool")).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector.run(Output::Spool(spool), shutdown.clone()));
        loop {
            if task.is_finished() {
                return task.await.unwrap();
            }
            if done(self.script.requests_to(COMMENTS).len()) {
                shutdown.cancel();
                return task.await.unwrap();
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What the collector emitted, in order.
    fn emitted(&self) -> Vec<IncomingPost> {
        let spool = Spool::open(&self.data.path().join("spool")).unwrap();
        let mut posts = Vec::new();
        for file in spool.pending().unwrap() {
            for line in std::fs::read_to_string(file).unwrap().lines() {
                posts.push(IncomingPost::from_json_text(line.as_bytes()).unwrap());
            }
        }
        posts
    }
}

#[tokio::test(start_paused = true)]
async fn streams_oldest_first_with_before_and_never_repeats() {
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    run.script
        .answer(COMMENTS, [first_page(), poll_before(), first_page(), empty()]);
    run.until(false, |n| n >= 5).await.unwrap();

    // The token request: HTTP Basic client auth, the app-only grant, the
    // configured User-Agent.
    let token = &run.script.requests_to(TOKEN)[0];
    assert_eq!(token.method, "POST");
    assert_eq!(
        token.header("authorization").unwrap(),
        "Basic dGhlLWNsaWVudC1pZDp0aGUtc2VjcmV0"
    );
    assert_eq!(token.form()["grant_type"], "client_credentials");
    assert_eq!(token.header("user-agent").unwrap(), AGENT);

    let polls = run.script.requests_to(COMMENTS);
    let first = fullnames(&first_page());
    let second = fullnames(&poll_before());
    assert_eq!(polls[0].query.get("before"), None);
    assert_eq!(polls[0].query["limit"], "100");
    assert_eq!(polls[0].query["raw_json"], "1");
    assert_eq!(polls[0].header("authorization").unwrap(), "Bearer <ACCESS_TOKEN>");
    // As recorded: the follow-up poll asks for what is newer than the
    // newest comment seen.
    assert_eq!(polls[1].query["before"], first[0]);
    assert_eq!(polls[2].query["before"], second[0]);

    // Oldest first; the third answer (the first page again) adds nothing.
    let emitted: Vec<String> = run.emitted().into_iter().map(|p| p.id).collect();
    let mut expected: Vec<String> = first.iter().rev().cloned().collect();
    expected.extend(second.iter().rev().cloned());
    assert_eq!(emitted, expected);
    let posts = run.emitted();
    assert!(posts.windows(2).all(|w| w[0].created_at <= w[1].created_at));
    assert!(
        posts
            .iter()
            .all(|p| p.platform == "reddit" && p.community.as_deref() == Some("AskReddit"))
    );
    assert_eq!(run.metrics.reddit_possible_gaps.get(), 0);

    // A restart resumes from the checkpoint: before= the newest, nothing
    // emitted twice.
    run.script.answer(COMMENTS, [first_page(), empty()]);
    let before = run.script.requests_to(COMMENTS).len();
    run.until(false, |n| n >= before + 2).await.unwrap();
    let polls = run.script.requests_to(COMMENTS);
    assert_eq!(polls[before].query["before"], second[0]);
    assert_eq!(run.emitted().len(), expected.len());
}

#[tokio::test(start_paused = true)]
async fn idle_polls_back_off_from_one_to_sixteen_seconds_and_drop_a_dead_anchor() {
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    run.script.answer(COMMENTS, [first_page(), empty()]);
    run.until(false, |n| n >= 8).await.unwrap();
    let polls = run.script.requests_to(COMMENTS);
    let gaps: Vec<f64> = polls.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
    // After news, the next poll waits only for the rate limit (the first
    // page's headers: 253 s left for 281 requests).
    assert!((gaps[0] - 253.0 / 281.0).abs() < 0.01, "{gaps:?}");
    // Then 1, 2, 4, 8, 16, 16 s nominal, each drawn in [80 %, 100 %].
    for (gap, nominal) in gaps[1..].iter().zip([1.0, 2.0, 4.0, 8.0, 16.0, 16.0]) {
        assert!(*gap >= 0.8 * nominal - 0.01 && *gap <= nominal + 0.01, "{gaps:?}");
    }
    // Four empty before= polls in a row: the fifth goes without before
    // (a deleted anchor answers nothing forever), then before= again.
    let befores: Vec<bool> = polls.iter().map(|p| p.query.contains_key("before")).collect();
    assert_eq!(befores, [false, true, true, true, true, false, true, true]);
}

#[tokio::test(start_paused = true)]
async fn rate_limit_headers_pace_requests_and_429_waits_retry_after() {
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    let used_up = first_page()
        .with_header("x-ratelimit-remaining", "0.0")
        .with_header("x-ratelimit-reset", "37");
    let throttled = recorded("reddit/errors/http429_too_many_requests_retry_after_2021-05-24");
    let no_headers = recorded("reddit/listings/r_all_comments_2020-07-15");
    run.script
        .answer(COMMENTS, [used_up, throttled, no_headers, poll_before(), empty()]);
    run.until(false, |n| n >= 5).await.unwrap();
    let polls = run.script.requests_to(COMMENTS);
    let gap = |i: usize| (polls[i + 1].at - polls[i].at).as_secs_f64();
    // The window is used up: nothing until it resets.
    assert!(gap(0) >= 37.0 && gap(0) < 37.1, "{}", gap(0));
    // 429 as recorded (HTML body, retry-after: 4, no x-ratelimit-*).
    assert!(gap(1) >= 4.0 && gap(1) < 4.1, "{}", gap(1));
    assert_eq!(run.metrics.collector_rate_limited.get(), 1);
    // A response without any rate-limit header: 600 ms spacing.
    assert!((gap(2) - 0.6).abs() < 0.01, "{}", gap(2));
    // The listing without headers came from r/all: its comments were
    // emitted like any others.
    assert_eq!(run.emitted().len(), 100 + 100 + 3);
}

#[tokio::test(start_paused = true)]
async fn every_recorded_server_error_is_retried_with_growing_waits() {
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    let errors = [
        "http500_internal_server_error_2022-04-30",
        "http500_internal_server_error_empty_2016-07-25",
        "http502_bad_gateway_2016-07-25",
        "http503_service_unavailable_2016-07-25",
        "http504_gateway_timeout_2016-07-25",
        "http520_cloudflare_unknown_2016-07-25",
        "http522_cloudflare_timeout_2016-07-25",
    ];
    let mut answers: Vec<Recorded> = errors
        .iter()
        .map(|e| recorded(&format!("reddit/errors/{e}")).without_rate_limits())
        .collect();
    answers.push(first_page());
    answers.push(empty());
    run.script.answer(COMMENTS, answers);
    run.until(false, |n| n >= 9).await.unwrap();
    assert_eq!(run.metrics.collector_retries.get(), 7);
    assert_eq!(run.emitted().len(), 100);
    let polls = run.script.requests_to(COMMENTS);
    let waits: Vec<f64> = polls.windows(2).map(|w| (w[1].at - w[0].at).as_secs_f64()).collect();
    // 1, 2, 4, 8, 16, 32, 60 s nominal (jitter within [80 %, 100 %]).
    for (wait, nominal) in waits.iter().zip([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0]) {
        assert!(*wait >= 0.8 * nominal && *wait <= nominal + 0.61, "{waits:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_401_renews_the_token_and_retries() {
    let run = Run::new().await;
    let refreshed = recorded("reddit/oauth/token_refresh_grant_2026-06-13");
    run.script.answer(TOKEN, [refreshed, app_token()]);
    let invalid = recorded("reddit/errors/http401_invalid_token_2016-08-08");
    assert!(
        invalid
            .headers
            .iter()
            .any(|(n, v)| n.eq_ignore_ascii_case("www-authenticate") && v.contains("invalid_token"))
    );
    run.script.answer(COMMENTS, [invalid, first_page(), empty()]);
    run.until(false, |n| n >= 3).await.unwrap();
    assert_eq!(run.script.requests_to(TOKEN).len(), 2);
    assert_eq!(run.emitted().len(), 100);
    // A second 401 in a row stops the collector with the reason.
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    run.script.answer(
        COMMENTS,
        [
            recorded("reddit/errors/http401_invalid_token_html_2020-07-04"),
            recorded("reddit/errors/http401_retry_2017-04-11"),
        ],
    );
    let error = run.until(false, |_| false).await.unwrap_err().to_string();
    assert!(error.contains("401") && error.contains("refused twice"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn the_password_grant_sends_the_login_and_token_errors_stop_with_the_reason() {
    let run = Run::new().await;
    run.script
        .answer(TOKEN, [recorded("reddit/oauth/token_password_grant_2026-06-10")]);
    run.script.answer(COMMENTS, [first_page(), empty()]);
    run.until(true, |n| n >= 1).await.unwrap();
    let form = run.script.requests_to(TOKEN)[0].form();
    assert_eq!(form["grant_type"], "password");
    assert_eq!(form["username"], "chorus_test");
    assert_eq!(form["password"], "pa55word");

    // Errors that arrive as HTTP 200, and a 400.
    for (fixture, reason) in [
        ("token_error_invalid_grant_http200_2016-02-14", "invalid_grant"),
        ("token_error_invalid_grant_otp_http200_2021-05-21", "invalid_grant"),
        (
            "token_error_unauthorized_client_http200_2016-02-14",
            "unauthorized_client",
        ),
        (
            "token_error_invalid_request_bad_device_id_2016-08-06",
            "invalid_request",
        ),
        ("token_error_http400_2016-02-07", "400"),
    ] {
        let run = Run::new().await;
        run.script.answer(TOKEN, [recorded(&format!("reddit/oauth/{fixture}"))]);
        let error = run.until(true, |_| false).await.unwrap_err().to_string();
        assert!(error.contains(reason), "{fixture}: {error}");
        assert!(!error.contains("pa55word") && !error.contains("the-secret"), "{error}");
        assert!(run.script.requests_to(COMMENTS).is_empty());
    }

    // 429 from the token endpoint (JSON, no retry headers): retried.
    let run = Run::new().await;
    run.script.answer(
        TOKEN,
        [recorded("reddit/oauth/token_error_http429_2021-05-25"), app_token()],
    );
    run.script.answer(COMMENTS, [first_page(), empty()]);
    run.until(false, |n| n >= 1).await.unwrap();
    assert_eq!(run.script.requests_to(TOKEN).len(), 2);
    assert_eq!(run.metrics.collector_rate_limited.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn client_errors_stop_the_collector_with_the_reason() {
    for (fixture, words) in [
        ("http403_forbidden_quarantined_2016-12-18", "private, quarantined"),
        ("http403_insufficient_scope_2016-02-16", "403"),
        ("http403_other_user_saved_2016-03-12", "403"),
        ("http404_not_found_2016-07-16", "exist"),
        ("http413_too_large_2017-01-29", "too large"),
        ("http414_uri_too_long_2021-05-10", "414"),
    ] {
        let run = Run::new().await;
        run.script.answer(TOKEN, [app_token()]);
        run.script
            .answer(COMMENTS, [recorded(&format!("reddit/errors/{fixture}"))]);
        let error = run.until(false, |_| false).await.unwrap_err().to_string();
        assert!(error.contains(words), "{fixture}: {error}");
        assert_eq!(run.script.requests_to(COMMENTS).len(), 1, "{fixture} is not retried");
    }
}

#[tokio::test(start_paused = true)]
async fn a_full_page_of_unseen_comments_is_counted_and_filled_with_after() {
    // Seen: the 2021 first page. Then a poll answers a full page of
    // comments never seen (the 2020 recording): a possible gap.
    let other = recorded("reddit/listings/r_askreddit_comments_2020-07-10");
    let other_names = fullnames(&other);
    for fill in [false, true] {
        let mut run = Run::new().await;
        run.config.fill_gaps = fill;
        run.script.answer(TOKEN, [app_token()]);
        let mut answers = vec![first_page(), other.clone()];
        if fill {
            // Paging back from the oldest of that page meets seen comments.
            answers.push(first_page());
        }
        answers.push(empty());
        run.script.answer(COMMENTS, answers);
        run.until(false, |n| n >= 4).await.unwrap();
        assert_eq!(run.metrics.reddit_possible_gaps.get(), 1);
        let polls = run.script.requests_to(COMMENTS);
        if fill {
            assert_eq!(polls[2].query["after"], *other_names.last().unwrap());
            assert_eq!(polls[2].query.get("before"), None);
            assert_eq!(polls[3].query["before"], other_names[0]);
        } else {
            assert_eq!(polls[2].query["before"], other_names[0]);
        }
        assert_eq!(run.emitted().len(), 200);
    }
}

#[tokio::test(start_paused = true)]
async fn skip_existing_emits_only_what_comes_after_the_first_poll() {
    let mut run = Run::new().await;
    run.config.skip_existing = true;
    run.script.answer(TOKEN, [app_token()]);
    run.script.answer(COMMENTS, [first_page(), poll_before(), empty()]);
    run.until(false, |n| n >= 3).await.unwrap();
    let ids: Vec<String> = run.emitted().into_iter().map(|p| p.id).collect();
    let expected: Vec<String> = fullnames(&poll_before()).into_iter().rev().collect();
    assert_eq!(ids, expected);
}

#[tokio::test(start_paused = true)]
async fn every_recorded_token_answer_gives_the_bearer_and_its_lifetime() {
    for name in [
        "token_authorization_code_2020-07-04",
        "token_client_credentials_2016-12-22",
        "token_client_credentials_2026-06-08",
        "token_installed_client_device_id_2016-11-26",
        "token_password_grant_2026-06-10",
        "token_refresh_grant_2026-06-13",
        "token_script_with_ratelimit_headers_2021-05-21",
        "token_temporary_grant_2016-02-14",
    ] {
        let answer = recorded(&format!("reddit/oauth/{name}"));
        let body: serde_json::Value = serde_json::from_slice(&answer.body).unwrap();
        let (token, lifetime) = (
            body["access_token"].as_str().unwrap().to_string(),
            body["expires_in"].as_u64().unwrap(),
        );
        let run = Run::new().await;
        run.script.answer(TOKEN, [answer]);
        run.script.answer(COMMENTS, [first_page(), empty()]);
        // Runs past the token's lifetime: one renewal, a minute early.
        let collector = RedditCollector::new(
            run.config.clone(),
            credentials(false),
            run.data.path(),
            run.metrics.clone(),
        )
        .unwrap();
        let spool = Arc::new(Spool::open(&run.data.path().join("spool")).unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(collector.run(Output::Spool(spool), shutdown.clone()));
        tokio::time::sleep(Duration::from_secs(lifetime + 30)).await;
        shutdown.cancel();
        task.await.unwrap().unwrap();
        let polls = run.script.requests_to(COMMENTS);
        assert_eq!(
            polls[0].header("authorization").unwrap(),
            format!("Bearer {token}"),
            "{name}"
        );
        let tokens = run.script.requests_to(TOKEN);
        assert_eq!(tokens.len(), 2, "{name}");
        let renewed = (tokens[1].at - tokens[0].at).as_secs_f64();
        assert!(
            (lifetime as f64 - 60.0..=lifetime as f64 - 43.0).contains(&renewed),
            "{name}: {renewed}"
        );
        assert_eq!(run.emitted().len(), 100, "{name}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_408_is_retried_and_a_refused_connection_is_retried_with_backoff() {
    // No 408 was recorded from Reddit: this answer is made up for the test
    // (a stand-in, not a recording).
    let run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    let request_timeout = Recorded {
        status: 408,
        headers: vec![("content-type".into(), "text/plain".into())],
        body: b"request timeout".to_vec(),
    };
    run.script.answer(COMMENTS, [request_timeout, first_page(), empty()]);
    run.until(false, |n| n >= 3).await.unwrap();
    assert_eq!(run.metrics.collector_retries.get(), 1);
    assert_eq!(run.emitted().len(), 100);

    // Nothing listens where the API should be: connection errors are
    // retried with growing waits, the collector keeps going.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut run = Run::new().await;
    run.script.answer(TOKEN, [app_token()]);
    run.config.api_url = format!("http://127.0.0.1:{port}");
    let collector = RedditCollector::new(
        run.config.clone(),
        credentials(false),
        run.data.path(),
        run.metrics.clone(),
    )
    .unwrap();
    let spool = Arc::new(Spool::open(&run.data.path().join("spool")).unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(collector.run(Output::Spool(spool), shutdown.clone()));
    let started = tokio::time::Instant::now();
    while run.metrics.collector_retries.get() < 4 {
        assert!(!task.is_finished(), "the collector gave up on a refused connection");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // 1 + 2 + 4 s of backoff at least (jitter within [80 %, 100 %]).
    assert!(
        started.elapsed() >= Duration::from_secs_f64(0.8 * 7.0),
        "{:?}",
        started.elapsed()
    );
    shutdown.cancel();
    task.await.unwrap().unwrap();
}
