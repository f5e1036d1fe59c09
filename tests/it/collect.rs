//! Collectors through the real binary and a real `chorus run` as the
//! remote: the durable spool while the remote is down, and
//! `chorus collect reddit` end to end against replayed Reddit traffic.

use std::sync::Arc;
use std::time::Duration;

use chorus::metrics::Metrics;
use chorus::record::IncomingPost;
use chorus::sources::output::{Remote, Spool};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::replay::{self, Script, recorded};
use crate::server::{Server, chorus, metrics, sql, wait_for_count};

fn askreddit_posts() -> Vec<IncomingPost> {
    let listing = recorded("reddit/listings/r_askreddit_comments_2021-11-06_first_page");
    let v: Value = serde_json::from_slice(&listing.body).unwrap();
    v["data"]["children"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| chorus::mapping::reddit::comment(c).unwrap())
        .collect()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn eventually(what: &str, within: Duration, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spool_keeps_posts_while_the_remote_is_down_and_never_doubles_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("remote");
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let spool = Arc::new(Spool::open(&dir.path().join("spool")).unwrap());
    let posts = askreddit_posts();
    for chunk in posts[..60].chunks(20) {
        spool.write(chunk).unwrap();
    }
    let mut remote = Remote::new(&format!("http://{listen}"), None).unwrap();
    remote.batch_ms = 50;
    let metrics = Arc::new(Metrics::default());
    let stop = CancellationToken::new();
    let sender = {
        let (spool, metrics, stop) = (spool.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move { spool.send(&remote, &metrics, &stop).await })
    };
    // Nobody listens: the batches stay, the sender retries.
    eventually("the sender retries", Duration::from_secs(10), || {
        metrics.collector_retries.get() >= 2
    })
    .await;
    assert_eq!(spool.pending().unwrap().len(), 3);

    // The remote comes up: everything is delivered, once.
    let server = Server::start_on(&data, "", &[], &listen);
    eventually("the spool drains", Duration::from_secs(60), || {
        spool.pending().unwrap().is_empty()
    })
    .await;
    let client = reqwest::Client::new();
    wait_for_count(&client, &server, 60, Duration::from_secs(30)).await;

    // A crash between the 202 and the delete resends a batch: the remote
    // drops the exact re-submission.
    spool.write(&posts[..20]).unwrap();
    spool.write(&posts[60..]).unwrap();
    eventually("the spool drains", Duration::from_secs(60), || {
        spool.pending().unwrap().is_empty()
    })
    .await;
    wait_for_count(&client, &server, 100, Duration::from_secs(30)).await;

    // The remote dies and comes back: nothing lost meanwhile.
    server.kill9();
    let more: Vec<IncomingPost> = posts
        .iter()
        .map(|p| IncomingPost {
            id: format!("{}_copy", p.id),
            ..p.clone()
        })
        .collect();
    spool.write(&more).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(spool.pending().unwrap().len(), 1);
    let server = Server::start_on(&data, "", &[], &listen);
    eventually("the spool drains", Duration::from_secs(60), || {
        spool.pending().unwrap().is_empty()
    })
    .await;
    wait_for_count(&client, &server, 200, Duration::from_secs(30)).await;
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts",
    )
    .await;
    // Every post once: as many rows as distinct ids.
    assert_eq!(rows[0]["n"], 200);
    assert_eq!(rows[0]["ids"], 200);
    stop.cancel();
    sender.await.unwrap().unwrap();
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_collect_reddit_streams_into_a_remote_chorus_and_keeps_secrets_out_of_logs() {
    let script = Arc::new(Script::default());
    script.answer(
        "/api/v1/access_token",
        [recorded("reddit/oauth/token_password_grant_2026-06-10")],
    );
    script.answer(
        "/r/askreddit+news/comments",
        [
            recorded("reddit/listings/r_askreddit_comments_2021-11-06_first_page"),
            recorded("reddit/listings/r_askreddit_comments_2021-11-06_poll_before"),
            recorded("reddit/listings/r_all_comments_2016-12-22_poll_before_empty"),
        ],
    );
    let reddit = replay::serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("remote"), "", &[]);
    let collector_data = dir.path().join("collector");
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chorus"))
        .arg("--data")
        .arg(&collector_data)
        .args([
            "collect",
            "reddit",
            "--subreddit",
            "askreddit+news",
            "--user-agent",
            "test:chorus-tests:0.1 (by /u/chorus_test)",
            "--auth-url",
            &format!("http://{reddit}"),
            "--api-url",
            &format!("http://{reddit}"),
            "--to",
            &server.url(""),
            "--batch-ms",
            "100",
        ])
        .env("REDDIT_CLIENT_ID", "client-id-42")
        .env("REDDIT_CLIENT_SECRET", "very-secret-value")
        .env("REDDIT_USERNAME", "chorus_test")
        .env("REDDIT_PASSWORD", "hunter2-password")
        .env("CHORUS_LOG", "trace")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let client = reqwest::Client::new();
    wait_for_count(&client, &server, 103, Duration::from_secs(60)).await;
    let form = script.requests_to("/api/v1/access_token")[0].form();
    assert_eq!(form["grant_type"], "password");
    // SIGTERM: the collector stops cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &child.id().unwrap().to_string()])
        .status()
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    for secret in ["very-secret-value", "hunter2-password", "client-id-42"] {
        assert!(!stderr.contains(secret), "a secret reached the log: {stderr}");
    }
    let rows = sql(
        &client,
        &server,
        "SELECT community, count(*) AS n FROM posts GROUP BY community ORDER BY community",
    )
    .await;
    assert_eq!(rows[0]["community"], "AskReddit");
    assert_eq!(rows[0]["n"], 103);
    // The checkpoint names the newest comment.
    let checkpoint: Value =
        serde_json::from_slice(&std::fs::read(collector_data.join("collect/reddit-askreddit_news.json")).unwrap())
            .unwrap();
    assert_eq!(checkpoint["newest"], "t1_hjlzwgw");

    // Without credentials, or with a bad user agent: a clear refusal.
    let out = chorus()
        .arg("--data")
        .arg(&collector_data)
        .args([
            "collect",
            "reddit",
            "--subreddit",
            "askreddit",
            "--user-agent",
            "x:y:1 (by /u/z)",
        ])
        .env_remove("REDDIT_CLIENT_ID")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("REDDIT_CLIENT_ID is not set"));
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chorus_run_starts_the_configured_sources() {
    let script = Arc::new(Script::default());
    script.answer(
        "/api/v1/access_token",
        [recorded("reddit/oauth/token_client_credentials_2016-12-22")],
    );
    script.answer(
        "/r/all/comments",
        [
            recorded("reddit/listings/r_all_comments_2016-12-22"),
            recorded("reddit/listings/r_all_comments_2016-12-22_poll_before_empty"),
        ],
    );
    let reddit = replay::serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[[sources]]\nkind = \"reddit\"\nsubreddits = \"all\"\nuser_agent = \"test:chorus-tests:0.1 (by /u/chorus_test)\"\n\
         auth_url = \"http://{reddit}\"\napi_url = \"http://{reddit}\"\n"
    );
    let env = [("REDDIT_CLIENT_ID", "id"), ("REDDIT_CLIENT_SECRET", "secret")];
    let server = Server::start(&dir.path().join("data"), &config, &env);
    let client = reqwest::Client::new();
    wait_for_count(&client, &server, 100, Duration::from_secs(60)).await;
    let metrics = metrics(&client, &server).await;
    assert!(metrics.contains("chorus_collector_posts_total 100\n"), "{metrics}");
    server.stop();

    // A source that cannot start (no credentials) stops `chorus run` at
    // once with the reason.
    let out = chorus()
        .arg("--data")
        .arg(dir.path().join("other"))
        .arg("--config")
        .arg(dir.path().join("data.toml"))
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("[[sources]] reddit-all") && stderr.contains("REDDIT_CLIENT_ID"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_a_remote_refuses_inside_a_202_are_kept_in_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    // The remote takes bodies of at most 200 bytes; the collector had none.
    let server = Server::start(&dir.path().join("remote"), "[server]\nmax_post_bytes = 200\n", &[]);
    let spool_dir = dir.path().join("spool");
    let spool = Arc::new(Spool::open(&spool_dir).unwrap());
    let long = IncomingPost::new("reddit", "t1_long", &"x".repeat(500), 1_546_300_800_000_000);
    let posts = vec![
        IncomingPost::new("reddit", "t1_a", "short", 1_546_300_800_000_000),
        long,
        IncomingPost::new("reddit", "t1_b", "short too", 1_546_300_800_000_000),
    ];
    spool.write(&posts).unwrap();
    let mut remote = Remote::new(&server.url(""), None).unwrap();
    remote.batch_ms = 10;
    let (metrics, stop) = (Arc::new(Metrics::default()), CancellationToken::new());
    let sender = {
        let (spool, metrics, stop) = (spool.clone(), metrics.clone(), stop.clone());
        tokio::spawn(async move { spool.send(&remote, &metrics, &stop).await })
    };
    eventually("the spool drains", Duration::from_secs(30), || {
        spool.pending().unwrap().is_empty()
    })
    .await;
    stop.cancel();
    sender.await.unwrap().unwrap();
    let client = reqwest::Client::new();
    wait_for_count(&client, &server, 2, Duration::from_secs(30)).await;
    let refused: Vec<std::path::PathBuf> = std::fs::read_dir(spool_dir.join("refused"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(refused.len(), 1, "{refused:?}");
    let kept: Vec<Value> = std::fs::read_to_string(&refused[0])
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(kept.len(), 1);
    assert_eq!(kept[0]["post"]["id"], "t1_long");
    assert_eq!(kept[0]["post"]["body"], "x".repeat(500));
    assert!(
        kept[0]["error"].as_str().unwrap().contains("max_post_bytes (200)"),
        "{}",
        kept[0]
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_fails_stops_alone_and_chorus_run_keeps_serving() {
    // A Mastodon instance that refuses the token: that collector stops.
    let script = Arc::new(Script::default());
    script.answer(
        "/api/v1/streaming/public",
        [recorded("reddit/errors/http401_invalid_token_2016-08-08")],
    );
    let address = replay::serve(script.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!("[[sources]]\nkind = \"mastodon\"\ninstance = \"http://{address}\"\n");
    let server = Server::start(&dir.path().join("data"), &config, &[("MASTODON_TOKEN", "refused")]);
    eventually("the collector asked the instance", Duration::from_secs(30), || {
        !script.requests_to("/api/v1/streaming/public").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Only once: a refused token is not retried.
    assert_eq!(script.requests_to("/api/v1/streaming/public").len(), 1);
    let client = reqwest::Client::new();
    let post = r#"{"platform":"x","id":"1","body":"still here","created_at":1546300800}"#;
    let r = client.post(server.url("/v1/posts")).body(post).send().await.unwrap();
    assert_eq!(r.status(), 202);
    wait_for_count(&client, &server, 1, Duration::from_secs(30)).await;
    server.stop();
}
