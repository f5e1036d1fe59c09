//! The Hacker News and Mastodon collectors against a local server replaying
//! the recorded responses and events, under paused tokio time.

use std::sync::Arc;
use std::time::Duration;

use chorus::metrics::Metrics;
use chorus::record::IncomingPost;
use chorus::sources::SourceConfig;
use chorus::sources::hackernews::HackerNewsConfig;
use chorus::sources::mastodon::{self, MastodonConfig};
use chorus::sources::output::{Output, Spool};
use tokio_util::sync::CancellationToken;

use crate::replay::{self, Recorded, Script};

/// A 200 with a recorded body file (the README examples for HN, the SSE
/// captures for Mastodon).
fn body(rel: &str, content_type: &str) -> Recorded {
    Recorded {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        body: std::fs::read(crate::fixture(rel)).unwrap(),
    }
}

fn text(body: &str) -> Recorded {
    Recorded {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: body.as_bytes().to_vec(),
    }
}

fn emitted(spool: &Spool) -> Vec<IncomingPost> {
    spool
        .pending()
        .unwrap()
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| IncomingPost::from_json_text(l.as_bytes()).unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Runs `source` for `duration` of (paused) time, a spool under `data` as
/// its output; what it emitted, in order.
async fn collect_for(source: SourceConfig, data: &std::path::Path, duration: Duration) -> Vec<IncomingPost> {
    let spool = Arc::new(Spool::open(&data.join("spool")).unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn({
        let (data, spool, shutdown) = (data.to_path_buf(), spool.clone(), shutdown.clone());
        async move {
            source
                .run(&data, Output::Spool(spool), Arc::new(Metrics::default()), shutdown)
                .await
        }
    });
    tokio::time::sleep(duration).await;
    shutdown.cancel();
    task.await.unwrap().unwrap();
    emitted(&spool)
}

#[tokio::test(start_paused = true)]
async fn hacker_news_walks_forward_from_the_checkpoint_and_waits_for_null_items() {
    let script = Arc::new(Script::default());
    let address = replay::serve(script.clone()).await;
    let data = tempfile::tempdir().unwrap();
    // Resume just before the recorded comment.
    std::fs::create_dir_all(data.path().join("collect")).unwrap();
    std::fs::write(data.path().join("collect/hackernews.json"), r#"{"last":2921982}"#).unwrap();
    script.answer("/v0/maxitem.json", [text("2921984")]);
    script.answer(
        "/v0/item/2921983.json",
        [body("hackernews/item_comment_2921983.json", "application/json")],
    );
    // Not served yet, twice, then there (the recorded Ask HN item stands
    // in for it).
    script.answer(
        "/v0/item/2921984.json",
        [
            text("null"),
            text("null"),
            body("hackernews/item_story_121003.json", "application/json"),
        ],
    );
    let config = HackerNewsConfig {
        api_url: format!("http://{address}/v0"),
        request_timeout_secs: 0,
        ..HackerNewsConfig::default()
    };
    let posts = collect_for(SourceConfig::Hackernews(config), data.path(), Duration::from_secs(30)).await;
    let ids: Vec<String> = posts.into_iter().map(|p| p.id).collect();
    assert_eq!(ids, ["2921983", "121003"]);
    assert_eq!(script.requests_to("/v0/item/2921984.json").len(), 3);
    assert!(script.requests_to("/v0/item/2921985.json").is_empty());
    let checkpoint = std::fs::read_to_string(data.path().join("collect/hackernews.json")).unwrap();
    assert_eq!(checkpoint, r#"{"last":2921984}"#);
    // Then maxitem every 5 s.
    let polls = script.requests_to("/v0/maxitem.json");
    let gaps: Vec<f64> = polls
        .windows(2)
        .skip(1)
        .map(|w| (w[1].at - w[0].at).as_secs_f64())
        .collect();
    assert!(
        !gaps.is_empty() && gaps.iter().all(|g| (g - 5.0).abs() < 0.01),
        "{gaps:?}"
    );

    // A first start begins at the recorded maxitem: nothing older.
    let script = Arc::new(Script::default());
    let address = replay::serve(script.clone()).await;
    let fresh = tempfile::tempdir().unwrap();
    script.answer(
        "/v0/maxitem.json",
        [body("hackernews/maxitem.json", "application/json")],
    );
    let config = HackerNewsConfig {
        api_url: format!("http://{address}/v0"),
        request_timeout_secs: 0,
        ..HackerNewsConfig::default()
    };
    let posts = collect_for(SourceConfig::Hackernews(config), fresh.path(), Duration::from_secs(1)).await;
    assert!(posts.is_empty());
    let checkpoint = std::fs::read_to_string(fresh.path().join("collect/hackernews.json")).unwrap();
    assert_eq!(checkpoint, r#"{"last":9130260}"#);
}

#[tokio::test(start_paused = true)]
async fn mastodon_streams_statuses_and_reconnects_when_the_stream_ends() {
    let script = Arc::new(Script::default());
    let address = replay::serve(script.clone()).await;
    let sse = "text/event-stream; charset=utf-8";
    script.answer(
        "/api/v1/streaming/user",
        [
            body("mastodon/streaming_user_sse_update_2026-08-02.body.sse", sse),
            body("mastodon/streaming_user_sse_updates_2026-08-02.body.sse", sse),
            replay::recorded("reddit/errors/http401_invalid_token_2016-08-08"),
        ],
    );
    let config = MastodonConfig {
        instance: format!("http://{address}"),
        stream: "user".into(),
        ..MastodonConfig::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path()).unwrap());
    let metrics = Arc::new(Metrics::default());
    let result = mastodon::run(
        config,
        Some("the-token".into()),
        Output::Spool(spool.clone()),
        metrics.clone(),
        CancellationToken::new(),
    )
    .await;
    // Each recorded stream ends; the collector reconnects until the
    // instance refuses the token.
    let error = result.unwrap_err().to_string();
    assert!(error.contains("401") && error.contains("MASTODON_TOKEN"), "{error}");
    let requests = script.requests_to("/api/v1/streaming/user");
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].header("authorization").unwrap(), "Bearer the-token");
    let posts = emitted(&spool);
    // One update, then update, update and status.update (notifications,
    // delete skipped).
    assert_eq!(posts.len(), 4);
    assert_eq!(posts[0].body, "it's cool guy");
    assert!(posts.iter().all(|p| p.platform == "mastodon"));
    assert_eq!(metrics.collector_retries.get(), 2);
}

/// A Jetstream stand-in replaying the recorded window: each connection's
/// URI is recorded; the events from its `cursor` on (as Jetstream replays)
/// are sent, at most `plan[i]` on connection `i` before it is closed (all,
/// then kept open, past the plan). With `hold`, a connection of the plan
/// is not closed but kept open and silent, as a stalled stream is.
#[allow(clippy::result_large_err)] // tungstenite's handshake callback type
async fn jetstream_with(plan: Vec<usize>, hold: bool) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    use futures::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::Message;
    let events: Vec<String> = std::fs::read_to_string(crate::fixture(
        "bluesky/jetstream_v1_window_152_events_2026-07-04.jsonl",
    ))
    .unwrap()
    .lines()
    .map(String::from)
    .collect();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let uris = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = uris.clone();
    tokio::spawn(async move {
        for connection in 0.. {
            let (tcp, _) = listener.accept().await.unwrap();
            let uri = Arc::new(std::sync::Mutex::new(String::new()));
            let capture = uri.clone();
            let mut socket = tokio_tungstenite::accept_hdr_async(
                tcp,
                move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
                    *capture.lock().unwrap() = request.uri().to_string();
                    Ok(response)
                },
            )
            .await
            .unwrap();
            let uri = uri.lock().unwrap().clone();
            seen.lock().unwrap().push(uri.clone());
            let cursor: Option<i64> = uri
                .split(['?', '&'])
                .find_map(|kv| kv.strip_prefix("cursor="))
                .map(|c| c.parse().unwrap());
            let replay: Vec<&String> = events
                .iter()
                .filter(|e| {
                    let t = serde_json::from_str::<serde_json::Value>(e).unwrap()["time_us"]
                        .as_i64()
                        .unwrap();
                    cursor.is_none_or(|c| t >= c)
                })
                .collect();
            let limit = plan.get(connection).copied();
            for event in replay.iter().take(limit.unwrap_or(usize::MAX)) {
                socket.send(Message::text(event.as_str())).await.unwrap();
            }
            if limit.is_some() && !hold {
                socket.close(None).await.unwrap();
            } else {
                // Stay open, as a live stream does.
                tokio::spawn(async move { while socket.next().await.is_some() {} });
            }
        }
    });
    (address, uris)
}

async fn jetstream(plan: Vec<usize>) -> (std::net::SocketAddr, Arc<std::sync::Mutex<Vec<String>>>) {
    jetstream_with(plan, false).await
}

fn recorded_posts() -> Vec<IncomingPost> {
    std::fs::read_to_string(crate::fixture(
        "bluesky/jetstream_v1_window_152_events_2026-07-04.jsonl",
    ))
    .unwrap()
    .lines()
    .filter_map(
        |l| match chorus::mapping::bluesky::event(&serde_json::from_str(l).unwrap()).unwrap() {
            chorus::mapping::bluesky::Event::Post(p) => Some(*p),
            chorus::mapping::bluesky::Event::Other(_) => None,
        },
    )
    .collect()
}

async fn run_bluesky(config: chorus::sources::bluesky::BlueskyConfig, data: &std::path::Path) -> Vec<IncomingPost> {
    collect_for(SourceConfig::Bluesky(config), data, Duration::from_secs(20)).await
}

#[tokio::test(start_paused = true)]
async fn bluesky_reconnects_from_the_cursor_with_overlap_and_drops_replays() {
    let (address, uris) = jetstream(vec![80]).await;
    let data = tempfile::tempdir().unwrap();
    let config = chorus::sources::bluesky::BlueskyConfig {
        url: format!("ws://{address}/subscribe"),
        ..Default::default()
    };
    let posts = run_bluesky(config, data.path()).await;
    let expected = recorded_posts();
    assert_eq!(expected.len(), 17);
    let ids: Vec<&str> = posts.iter().map(|p| p.id.as_str()).collect();
    let expected_ids: Vec<&str> = expected.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(ids, expected_ids, "every post once, in stream order");

    let times: Vec<i64> = std::fs::read_to_string(crate::fixture(
        "bluesky/jetstream_v1_window_152_events_2026-07-04.jsonl",
    ))
    .unwrap()
    .lines()
    .map(|l| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["time_us"]
            .as_i64()
            .unwrap()
    })
    .collect();
    let uris = uris.lock().unwrap().clone();
    assert_eq!(uris.len(), 2);
    assert_eq!(uris[0], "/subscribe?wantedCollections=app.bsky.feed.post");
    let resume = times[..80].iter().max().unwrap() - 5_000_000;
    assert_eq!(
        uris[1],
        format!("/subscribe?wantedCollections=app.bsky.feed.post&cursor={resume}")
    );
    let checkpoint: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data.path().join("collect/bluesky.json")).unwrap()).unwrap();
    assert_eq!(checkpoint["cursor"], *times.iter().max().unwrap());

    // A restart resumes from the checkpoint and emits nothing twice.
    let (address, uris) = jetstream(vec![]).await;
    let config = chorus::sources::bluesky::BlueskyConfig {
        url: format!("ws://{address}/subscribe"),
        ..Default::default()
    };
    let again = run_bluesky(config, data.path()).await;
    assert_eq!(
        again.len(),
        17,
        "the spool still holds the first run's posts, and no more"
    );
    assert!(uris.lock().unwrap()[0].contains(&format!("cursor={}", times.iter().max().unwrap() - 5_000_000)));
}

#[tokio::test(start_paused = true)]
async fn bluesky_keeps_only_the_asked_languages_and_keywords() {
    let (address, _) = jetstream(vec![]).await;
    let data = tempfile::tempdir().unwrap();
    let config = chorus::sources::bluesky::BlueskyConfig {
        url: format!("ws://{address}/subscribe"),
        langs: vec!["en".into()],
        ..Default::default()
    };
    let posts = run_bluesky(config, data.path()).await;
    // Any of the post's languages "en", or a regional variant ("en-US").
    let english: Vec<String> = std::fs::read_to_string(crate::fixture(
        "bluesky/jetstream_v1_window_152_events_2026-07-04.jsonl",
    ))
    .unwrap()
    .lines()
    .filter_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        let langs = v.pointer("/commit/record/langs")?.as_array()?.clone();
        let english = langs
            .iter()
            .any(|l| l == "en" || l.as_str().unwrap().starts_with("en-"));
        match chorus::mapping::bluesky::event(&v).unwrap() {
            chorus::mapping::bluesky::Event::Post(p) if english => Some(p.id),
            _ => None,
        }
    })
    .collect();
    // One post is ["es", "en"]: kept for its second language.
    assert!(
        recorded_posts()
            .iter()
            .any(|p| p.lang.as_deref() == Some("es") && english.contains(&p.id))
    );
    assert!(!english.is_empty() && english.len() < 17);
    assert_eq!(posts.into_iter().map(|p| p.id).collect::<Vec<_>>(), english);

    let (address, _) = jetstream(vec![]).await;
    let data = tempfile::tempdir().unwrap();
    let config = chorus::sources::bluesky::BlueskyConfig {
        url: format!("ws://{address}/subscribe"),
        keywords: vec!["YOUTUBE".into()],
        ..Default::default()
    };
    let posts = run_bluesky(config, data.path()).await;
    assert!(!posts.is_empty());
    assert!(posts.iter().all(|p| p.body.to_lowercase().contains("youtube")));
}

#[tokio::test(start_paused = true)]
async fn a_silent_jetstream_connection_is_dropped_after_the_read_timeout_and_resumed() {
    // The first connection sends 80 events, then stays open and silent.
    let (address, uris) = jetstream_with(vec![80], true).await;
    let data = tempfile::tempdir().unwrap();
    let config = chorus::sources::bluesky::BlueskyConfig {
        url: format!("ws://{address}/subscribe"),
        read_timeout_secs: 5,
        ..Default::default()
    };
    let posts = run_bluesky(config, data.path()).await;
    // Each connection that goes silent for 5 s is dropped and resumed
    // from the cursor (the replay server's later ones go silent too, once
    // everything is sent): 20 s of collecting make a few.
    let uris = uris.lock().unwrap().clone();
    assert!((2..=5).contains(&uris.len()), "{uris:?}");
    assert!(uris[1..].iter().all(|u| u.contains("&cursor=")), "{uris:?}");
    let ids: Vec<String> = posts.into_iter().map(|p| p.id).collect();
    let expected: Vec<String> = recorded_posts().into_iter().map(|p| p.id).collect();
    assert_eq!(ids, expected, "every post once, after the resume");
}
