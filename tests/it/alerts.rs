//! Saved-search alerts through the real binary, with a local webhook
//! receiver (a real HTTP server in the test) that refuses the first
//! delivery, so the retry is checked too.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::Server;

/// A webhook receiver: answers 500 to its first request, 200 after;
/// returns its address and what it received.
async fn receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let received: Arc<Mutex<Vec<Value>>> = Arc::default();
    let app = {
        let received = received.clone();
        axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: axum::Json<Value>| {
                let received = received.clone();
                async move {
                    let mut all = received.lock().unwrap();
                    all.push(body.0);
                    if all.len() == 1 {
                        axum::http::StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        axum::http::StatusCode::OK
                    }
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, received)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_breaches_once_is_counted_shown_and_posted_to_its_webhook_with_retries() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (url, received) = receiver().await;
    let config = format!(
        "[index]\nalert_check_secs = 1\n\
         [[alerts]]\nname = \"quakes\"\nq = \"earthquake\"\nwindow_secs = 400000000\nmin_count = 3\nwebhook = \"{url}\"\n\
         [[alerts]]\nname = \"gloom\"\ncommunity = \"news\"\nwindow_secs = 400000000\nmax_negative_share = 0.5\nmin_posts = 4\n"
    );
    let server = Server::start(&data, &config, &[]);
    let client = reqwest::Client::new();
    let post = |id: &str, community: &str, body: &str| {
        json!({"platform": "reddit", "id": id, "community": community, "body": body, "created_at": 1_546_300_800})
            .to_string()
    };
    let lines = [
        post("1", "news", "A terrible earthquake killed many, awful"),
        post("2", "news", "Another earthquake, horrible and sad"),
        post("3", "science", "The earthquake was measured by a new sensor"),
        post("4", "news", "I hate this awful news"),
        post("5", "rust", "I love rust"),
    ]
    .join("\n");
    crate::server::post_accepted(&client, &server, lines).await;

    // Delivered after one refusal (retried 1 s later).
    let deadline = Instant::now() + Duration::from_secs(20);
    while received.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < deadline,
            "the webhook got {:?}",
            received.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let breach = received.lock().unwrap()[1].clone();
    assert_eq!(breach["alert"], "quakes");
    assert_eq!(breach["count"], 3);
    assert_eq!(breach["threshold"], "min_count");
    assert_eq!(breach, received.lock().unwrap()[0], "the retry is the same breach");

    let alerts: Value = crate::server::get_json(&client, &server, "/v1/alerts").await;
    let by_name = |name: &str| {
        alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("quakes")["breached"], true);
    assert_eq!(by_name("quakes")["count"], 3);
    // 3 of the 3 news posts are negative: the share alert breaches too.
    let gloom = by_name("gloom");
    assert_eq!(gloom["breached"], false, "3 posts are under min_posts = 4: {gloom}");
    crate::server::post_accepted(&client, &server, post("6", "news", "Dreadful, sad, terrible day")).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let alerts: Value = crate::server::get_json(&client, &server, "/v1/alerts").await;
        let gloom = alerts
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["name"] == "gloom")
            .unwrap()
            .clone();
        if gloom["breached"] == true {
            assert_eq!(gloom["count"], 4);
            assert!(gloom["negative_share"].as_f64().unwrap() >= 0.5, "{gloom}");
            break;
        }
        assert!(Instant::now() < deadline, "{gloom}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Checked again and again while it holds: still one breach each.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let metrics = crate::server::metrics(&client, &server).await;
    assert!(
        metrics.contains("chorus_alert_breaches_total{alert=\"quakes\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chorus_alert_breaches_total{alert=\"gloom\"} 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("chorus_alert_breached{alert=\"quakes\"} 1\n"),
        "{metrics}"
    );
    assert_eq!(received.lock().unwrap().len(), 2, "a breach was posted twice");
    server.stop();
}

#[test]
fn an_alert_that_cannot_be_meant_stops_chorus_run_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("c.toml");
    for (alert, says) in [
        (
            "name = \"x\"\nwindow_secs = 60\nmin_count = 1\nmax_negative_share = 0.5\n",
            "exactly one threshold",
        ),
        (
            "name = \"x\"\nwindow_secs = 60\nmax_negative_share = 2.0\n",
            "a share, 0 to 1",
        ),
        (
            "name = \"x\"\nwindow_secs = 60\nmin_count = 1\nq = \"a AND (\"\n",
            "Syntax Error",
        ),
        (
            "name = \"x\"\nwindow_secs = 60\nmin_count = 1\nwebhook = \"ftp://h/\"\n",
            "http or https",
        ),
    ] {
        std::fs::write(&config, format!("[[alerts]]\n{alert}")).unwrap();
        let stderr = crate::server::run_refused(
            &dir.path().join("data"),
            &config,
            &["run", "--listen", "127.0.0.1:0"],
            &[],
        );
        assert!(stderr.contains(says), "{alert}: {stderr}");
    }
}
