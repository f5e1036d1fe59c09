//! The archive's lifecycle through the real binary: compaction of closed
//! hour partitions while queries run (they always see every post once),
//! through `POST /v1/lifecycle` and `chorus lifecycle`, online and offline.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{
    Server, corpus_bodies, metrics, ndjson, post, post_accepted, rescored, run_cli, sql, wait_for_count, wait_idle,
};

/// Files roll every second; the scheduler is off (passes happen when the
/// test says); an hour is compacted as soon as it has two files.
const CONFIG: &str = "[archive]\nmax_file_age_secs = 1\n[lifecycle]\nscheduler = false\ncompact_after_secs = 0\n\
compact_min_files = 2\n[index]\nenabled = false\n[batch]\nscheduler = false\n[query]\nmax_seconds = 300\n";

/// The Parquet files of each hour directory of the archive of `data`.
fn files_per_hour(data: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    files_per_hour_under(&data.join("archive/posts"))
}

/// The Parquet files of each hour directory under `posts`.
pub fn files_per_hour_under(posts: &Path) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out = std::collections::BTreeMap::new();
    for day in std::fs::read_dir(posts).unwrap() {
        let day = day.unwrap().path();
        for hour in std::fs::read_dir(&day).unwrap() {
            let hour = hour.unwrap().path();
            let mut names: Vec<String> = std::fs::read_dir(&hour)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".parquet"))
                .collect();
            names.sort();
            out.insert(hour.strip_prefix(posts).unwrap().display().to_string(), names);
        }
    }
    out
}

/// A lifecycle pass (`POST /v1/lifecycle`) while `CHECK` runs without
/// pause, every answer `expected`: the pass's answer.
pub async fn lifecycle_under_queries(client: &reqwest::Client, server: &Server, expected: &[Value]) -> Value {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (client, url, stop, expected) = (client.clone(), server.url("/v1/sql"), stop.clone(), expected.to_vec());
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(Ordering::Relaxed) || reads == 0 {
                let r = client.post(&url).json(&json!({ "sql": CHECK })).send().await.unwrap();
                assert!(
                    r.status().is_success(),
                    "a query failed during the pass: {}",
                    r.text().await.unwrap()
                );
                let body: Value = r.json().await.unwrap();
                assert_eq!(
                    body["rows"].as_array().unwrap(),
                    &expected,
                    "a query saw another answer"
                );
                reads += 1;
            }
            reads
        })
    };
    let r = client.post(server.url("/v1/lifecycle")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let run: Value = r.json().await.unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
    run
}

/// NDJSON of `n` posts created in the last two hours (ids from 10,000).
pub fn recent_posts(n: usize, bodies: &[String]) -> String {
    let now = chrono::Utc::now().timestamp();
    (0..n)
        .map(|i| {
            let mut p = post(10_000 + i, bodies);
            p["created_at"] = json!(now - 7200 + i as i64 * 60);
            p.to_string() + "\n"
        })
        .collect()
}

/// The answer every query must give: posts, distinct posts, their scores.
pub const CHECK: &str = "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(score) AS score FROM posts";
const CHECK_LATEST: &str = "SELECT count(*) AS n, sum(score) AS score FROM posts_latest";

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_under_running_queries_keeps_every_post_once() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let server = Server::start(&data, CONFIG, &[]);
    // Four sends a roll apart: several files in each hour of three days.
    for round in 0..4 {
        post_accepted(&client, &server, ndjson(round * 300..(round + 1) * 300, &bodies)).await;
        wait_for_count(&client, &server, (round as u64 + 1) * 300, Duration::from_secs(120)).await;
        // Archived (committed in files), not only visible from the log
        // tail: a file still to roll would join the pass after `before`.
        wait_idle(&client, &server).await;
    }
    let before = files_per_hour(&data);
    let many = before.values().filter(|f| f.len() >= 2).count();
    assert!(many >= 24, "too few hours with several files to test: {before:?}");
    let expected = sql(&client, &server, CHECK).await;
    assert_eq!(expected[0]["n"], 1200);
    let expected_latest = sql(&client, &server, CHECK_LATEST).await;

    let run = lifecycle_under_queries(&client, &server, &expected).await;

    let compaction = &run["compaction"];
    assert_eq!(compaction["hours"], many as u64, "{run}");
    let files_before: usize = before.values().filter(|f| f.len() >= 2).map(Vec::len).sum();
    assert_eq!(compaction["files_before"], files_before as u64, "{run}");
    assert_eq!(compaction["files_after"], many as u64, "{run}");
    assert!(compaction.get("skipped").is_none(), "{run}");

    // Every hour that had several files has one compacted file now.
    let after = files_per_hour(&data);
    assert_eq!(after.keys().collect::<Vec<_>>(), before.keys().collect::<Vec<_>>());
    for (hour, files) in &after {
        if before[hour].len() >= 2 {
            assert!(files.len() == 1 && files[0].starts_with("c-"), "{hour}: {files:?}");
        } else {
            assert_eq!(files, &before[hour], "{hour}");
        }
    }
    assert_eq!(sql(&client, &server, CHECK).await, expected);
    assert_eq!(sql(&client, &server, CHECK_LATEST).await, expected_latest);
    let m = metrics(&client, &server).await;
    assert!(
        m.contains(&format!("chorus_archive_hours_compacted_total {many}")),
        "{m}"
    );
    assert!(m.contains("chorus_lifecycle_runs_total 1"), "{m}");

    // Through the CLI, via the server: nothing left to do.
    let config_path = data.with_extension("toml");
    let (ok, out, err) = run_cli(&data, &config_path, &["lifecycle"]);
    assert!(ok, "{err}");
    assert!(out.contains("compacted nothing"), "{out}");

    // Re-sends with new scores land in compacted hours as new files; the
    // newest copy wins in posts_latest, before and after the next pass.
    let resent = rescored((0..40).map(|i| i * 7), &bodies, 1000);
    post_accepted(&client, &server, resent).await;
    wait_for_count(&client, &server, 1240, Duration::from_secs(120)).await;
    wait_idle(&client, &server).await;
    let latest = sql(&client, &server, CHECK_LATEST).await;
    assert_eq!(latest[0]["n"], 1200);
    assert_ne!(latest, expected_latest);
    let all = sql(&client, &server, CHECK).await;
    server.stop();

    // Offline, on the directory itself.
    let (ok, out, err) = run_cli(&data, &config_path, &["lifecycle"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("compacted ") && !out.contains("compacted nothing"),
        "{out}"
    );
    for (hour, files) in files_per_hour(&data) {
        assert_eq!(files.len(), 1, "{hour}: {files:?}");
    }
    let (ok, out, err) = run_cli(&data, &config_path, &["sql", "--format", "json", CHECK]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows, json!(all), "{out}");
    let (ok, out, err) = run_cli(&data, &config_path, &["sql", "--format", "json", CHECK_LATEST]);
    assert!(ok, "{err}");
    let rows: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rows, json!(latest), "{out}");

    // A restart reads the compacted archive as the same posts.
    let server = Server::start(&data, CONFIG, &[]);
    assert_eq!(sql(&client, &server, CHECK).await, all);
    assert_eq!(sql(&client, &server, CHECK_LATEST).await, latest);
    server.stop();
}

/// `[lifecycle] archive_retention_days`: a pass removes the hour
/// partitions that ended longer ago than that (SQL no longer counts their
/// posts) and keeps the recent ones, offline and through a running server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_removes_the_hours_past_it_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = data.with_extension("toml");
    let config = "[index]\nenabled = false\n[lifecycle]\nscheduler = false\narchive_retention_days = 30\n\
                  keep_retired_secs = 0\n[batch]\nscheduler = false\n";
    std::fs::write(&config_path, config).unwrap();
    let bodies = corpus_bodies();
    // 300 posts of January 2019, and 50 of the last hours.
    let recent = recent_posts(50, &bodies);
    let input = dir.path().join("posts.ndjson");
    std::fs::write(&input, ndjson(0..300, &bodies) + &recent).unwrap();
    let (ok, _, err) = run_cli(&data, &config_path, &["ingest", input.to_str().unwrap()]);
    assert!(ok, "{err}");
    let count = |data: &Path| -> String { crate::server::sql_first_row(data, "SELECT count(*) FROM posts") };
    assert_eq!(count(&data), "350");
    let old_hours = files_per_hour(&data)
        .keys()
        .filter(|h| h.starts_with("dt=2019"))
        .count();
    assert!(old_hours >= 24, "{old_hours}");

    let (ok, out, err) = run_cli(&data, &config_path, &["lifecycle"]);
    assert!(ok, "{err}");
    assert!(out.contains(&format!("expired {old_hours} hour partitions")), "{out}");
    assert_eq!(count(&data), "50");
    assert!(files_per_hour(&data).keys().all(|h| !h.starts_with("dt=2019")));

    // Through a running server: old posts re-sent with new scores land in old
    // hours again,
    // and the next pass removes them; the metric counts every hour.
    let server = Server::start(&data, config, &[]);
    let client = reqwest::Client::new();
    let resent = rescored(0..10, &bodies, 1000);
    post_accepted(&client, &server, resent).await;
    wait_for_count(&client, &server, 60, Duration::from_secs(120)).await;
    wait_idle(&client, &server).await;
    let r = client.post(server.url("/v1/lifecycle")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let run: Value = r.json().await.unwrap();
    assert!(run["expired"]["hours"].as_u64().unwrap() >= 1, "{run}");
    assert_eq!(
        sql(&client, &server, "SELECT count(*) AS n FROM posts").await[0]["n"],
        50
    );
    let m = metrics(&client, &server).await;
    assert!(m.contains("chorus_archive_hours_expired_total "), "{m}");
    server.stop();
}
