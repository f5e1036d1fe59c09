//! The OpenSearch sink through the real binary, against a STAND-IN for
//! OpenSearch: no OpenSearch (a JVM service) can run on the machines
//! chorus is tested on, so this test serves the two endpoints the sink
//! uses (`PUT _index_template/<name>`, `POST _bulk`) itself. It checks the
//! bulk protocol as OpenSearch defines it (NDJSON action and source lines,
//! the content type, basic authentication), keeps documents by index and
//! `_id` with OpenSearch's external versioning, and answers what a busy or
//! strict cluster answers: a whole request refused with 503, items
//! rejected with 429, an item refused with a mapping error.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use serde_json::{Value, json};

use crate::server::{Server, corpus_bodies, get_json, metrics, ndjson, post as post_json, post_accepted, wait_idle};

/// What the stand-in holds and how it misbehaves.
#[derive(Default)]
struct StandIn {
    template: Option<Value>,
    /// (index, _id) → (version, source).
    docs: HashMap<(String, String), (i64, Value)>,
    /// Whole bulk requests to answer 503 before serving any.
    unavailable: usize,
    /// `_id`s rejected with 429 the first time they come.
    busy_once: HashSet<String>,
    /// `_id`s refused with a mapping error every time.
    refused: HashSet<String>,
    /// What the protocol checks found wrong.
    violations: Vec<String>,
    bulks: usize,
}

type Shared = Arc<Mutex<StandIn>>;

const AUTH: &str = "Basic ZWxhc3RpYzpzM2NyZXQ="; // elastic:s3cret

fn authorized(headers: &HeaderMap, state: &Shared) -> bool {
    let ok = headers.get("authorization").and_then(|v| v.to_str().ok()) == Some(AUTH);
    if !ok {
        state
            .lock()
            .unwrap()
            .violations
            .push("a request without the credentials".into());
    }
    ok
}

async fn put_template(
    State(state): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if !authorized(&headers, &state) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let mut s = state.lock().unwrap();
    match serde_json::from_slice::<Value>(&body) {
        Ok(template) if name == "chorus-posts" => {
            s.template = Some(template);
            (StatusCode::OK, r#"{"acknowledged":true}"#.into())
        }
        _ => {
            s.violations
                .push(format!("template {name}: {}", String::from_utf8_lossy(&body)));
            (StatusCode::BAD_REQUEST, "{}".into())
        }
    }
}

async fn bulk(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> (StatusCode, String) {
    if !authorized(&headers, &state) {
        return (StatusCode::UNAUTHORIZED, "{}".into());
    }
    let mut s = state.lock().unwrap();
    s.bulks += 1;
    if headers.get("content-type").and_then(|v| v.to_str().ok()) != Some("application/x-ndjson") {
        s.violations
            .push("a bulk request that is not application/x-ndjson".into());
    }
    if s.unavailable > 0 {
        s.unavailable -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"cluster_block_exception"}"#.into(),
        );
    }
    let text = String::from_utf8_lossy(&body).into_owned();
    if !text.ends_with('\n') {
        s.violations.push("a bulk body without its final newline".into());
    }
    let lines: Vec<&str> = text.lines().collect();
    if !lines.len().is_multiple_of(2) {
        s.violations
            .push(format!("{} bulk lines: not action and source pairs", lines.len()));
        return (StatusCode::BAD_REQUEST, "{}".into());
    }
    let columns: HashSet<String> = s
        .template
        .as_ref()
        .and_then(|t| t["template"]["mappings"]["properties"].as_object())
        .map(|p| p.keys().cloned().collect())
        .unwrap_or_default();
    let mut items = Vec::new();
    for pair in lines.chunks(2) {
        let (Ok(action), Ok(source)) = (
            serde_json::from_str::<Value>(pair[0]),
            serde_json::from_str::<Value>(pair[1]),
        ) else {
            s.violations.push(format!("lines that are not JSON: {pair:?}"));
            return (StatusCode::BAD_REQUEST, "{}".into());
        };
        let index = action["index"]["_index"].as_str().unwrap_or_default().to_string();
        let id = action["index"]["_id"].as_str().unwrap_or_default().to_string();
        let version = action["index"]["version"].as_i64().unwrap_or(-1);
        if action["index"]["version_type"] != "external_gte" || index.is_empty() || id.is_empty() {
            s.violations.push(format!(
                "an action without index, _id or external_gte version: {action}"
            ));
        }
        // The template's "dynamic": "strict": no field it does not map.
        if let Some(extra) = source
            .as_object()
            .and_then(|o| o.keys().find(|k| !columns.contains(*k)))
        {
            s.violations.push(format!("a field the template does not map: {extra}"));
        }
        let (status, error) = if s.refused.contains(&id) {
            (
                400,
                json!({"type": "mapper_parsing_exception", "reason": "failed to parse field [body]"}),
            )
        } else if s.busy_once.remove(&id) {
            (
                429,
                json!({"type": "es_rejected_execution_exception", "reason": "write queue is full"}),
            )
        } else {
            match s.docs.get(&(index.clone(), id.clone())) {
                Some((held, _)) if *held > version => (
                    409,
                    json!({"type": "version_conflict_engine_exception", "reason": "current version is higher"}),
                ),
                held => {
                    let status = if held.is_some() { 200 } else { 201 };
                    s.docs.insert((index.clone(), id.clone()), (version, source));
                    (status, Value::Null)
                }
            }
        };
        let mut item = json!({"_index": index, "_id": id, "status": status});
        if !error.is_null() {
            item["error"] = error;
        }
        items.push(json!({ "index": item }));
    }
    let answer =
        json!({"took": 1, "errors": items.iter().any(|i| i["index"]["status"].as_u64() >= Some(300)), "items": items});
    (StatusCode::OK, answer.to_string())
}

/// Starts the stand-in on a free port: its URL and state.
async fn start_stand_in(state: Shared) -> String {
    let app = Router::new()
        .route("/_index_template/{name}", put(put_template))
        .route("/_bulk", post(bulk))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// Waits until the stand-in holds `n` documents.
async fn wait_for_documents(state: &Shared, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let held = state.lock().unwrap().docs.len();
        if held == n {
            return;
        }
        assert!(Instant::now() < deadline, "{held} of {n} documents delivered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_delivered_once_each_retried_when_the_cluster_is_busy_and_refusals_are_dead_letters() {
    let state: Shared = Arc::default();
    {
        let mut s = state.lock().unwrap();
        s.unavailable = 2;
        s.busy_once = ["reddit:t1_3", "reddit:t1_4"].map(String::from).into();
        s.refused = ["reddit:t1_7"].map(String::from).into();
    }
    let url = start_stand_in(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = format!(
        "[index]\nenabled = false\n[opensearch]\nurl = \"{url}\"\nflush_ms = 200\nmax_backoff_secs = 1\nbatch_docs = 100\n"
    );
    let env = [
        ("CHORUS_OPENSEARCH_USERNAME", "elastic"),
        ("CHORUS_OPENSEARCH_PASSWORD", "s3cret"),
    ];
    let server = Server::start(&data, &config, &env);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    post_accepted(&client, &server, ndjson(0..500, &bodies)).await;
    wait_for_documents(&state, 499).await;
    wait_idle(&client, &server).await;
    {
        let s = state.lock().unwrap();
        assert!(s.violations.is_empty(), "{:?}", s.violations);
        let template = s.template.as_ref().expect("no index template was put");
        assert_eq!(template["index_patterns"], json!(["chorus-posts*"]));
        // Every post but the refused one, once, in the index of its day.
        for i in (0..500).filter(|i| *i != 7) {
            let p = post_json(i, &bodies);
            let day = chrono::DateTime::from_timestamp(p["created_at"].as_i64().unwrap(), 0)
                .unwrap()
                .format("%Y.%m.%d");
            let key = (format!("chorus-posts-{day}"), format!("reddit:t1_{i}"));
            let (_, source) = s.docs.get(&key).unwrap_or_else(|| panic!("{key:?} missing"));
            assert_eq!(source["id"], format!("t1_{i}"));
            assert_eq!(source["score"], p["score"]);
            assert!(source["created_at"].as_str().unwrap().ends_with('Z'), "{source}");
            assert!(source["vader_compound"].is_f64(), "{source}");
        }
        assert!(s.bulks >= 4, "{} bulk requests", s.bulks);
    }
    let m = metrics(&client, &server).await;
    assert!(m.contains("chorus_opensearch_documents_total 499"), "{m}");
    assert!(m.contains("chorus_opensearch_failed_total 1"), "{m}");
    let retries: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("chorus_opensearch_retries_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(
        retries >= 3,
        "{retries} retries: two refused requests and a round of busy items"
    );
    // The refused post is a dead letter with the cluster's reason.
    let mut reasons = Vec::new();
    for p in 0..4 {
        let read = get_json(&client, &server, &format!("/v1/log/dead/{p}")).await;
        for r in read["records"].as_array().unwrap() {
            reasons.push(r["value"]["error"].as_str().unwrap_or_default().to_string());
        }
    }
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("mapper_parsing_exception"), "{reasons:?}");

    // Re-sent with new scores: the same documents, newer versions.
    let resent = crate::server::rescored(0..20, &bodies, 5000);
    post_accepted(&client, &server, resent).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let updated = state
            .lock()
            .unwrap()
            .docs
            .values()
            .filter(|(_, d)| d["score"].as_i64() >= Some(5000))
            .count();
        if updated == 19 {
            break;
        }
        assert!(Instant::now() < deadline, "{updated} of 19 re-sent posts updated");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state.lock().unwrap().docs.len(), 499);
    server.stop();

    // A restart reads nothing again: every offset was committed.
    let bulks = state.lock().unwrap().bulks;
    let server = Server::start(&data, &config, &env);
    wait_idle(&client, &server).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(state.lock().unwrap().bulks, bulks);
    server.stop();
}

/// Credentials the cluster refuses stop the process with its answer
/// (retrying cannot help), without the password, and nothing is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_credentials_stop_the_process_with_the_clusters_answer() {
    let state: Shared = Arc::default();
    let url = start_stand_in(state.clone()).await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("chorus.toml");
    std::fs::write(
        &config_path,
        format!("[index]\nenabled = false\n[opensearch]\nurl = \"{url}\"\nflush_ms = 100\n"),
    )
    .unwrap();
    let input = dir.path().join("posts.ndjson");
    std::fs::write(&input, ndjson(0..5, &corpus_bodies())).unwrap();
    let out = tokio::task::spawn_blocking(move || {
        crate::server::chorus()
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&config_path)
            .args(["ingest", input.to_str().unwrap()])
            .env("CHORUS_OPENSEARCH_USERNAME", "elastic")
            .env("CHORUS_OPENSEARCH_PASSWORD", "wrong-password")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");
    assert!(!stderr.contains("wrong-password"), "{stderr}");
    assert!(state.lock().unwrap().docs.is_empty());
}
