//! Load generator for `scripts/bench_pipeline.sh`: sends N posts (corpus
//! texts, replicated, unique ids) as NDJSON batches over HTTP to a running
//! `chorus run`, and reports posts/s until every post is visible in
//! `SELECT count(*) FROM posts`, and the latency from `202` to visible in
//! SQL (p50, p99), measured with one probe post per batch; then the time
//! until every post is searchable too (the index has caught up).
//!
//! Usage: bench_ingest URL POSTS [BATCH] [CONCURRENCY] [CORPUS]
//! (CORPUS: NDJSON with a "body" field; default the Reddit corpus.) The SQL
//! goes to `$CHORUS_BENCH_QUERY_URL` when set (a query process of its own),
//! else to URL.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const PROBE_COMMUNITY: &str = "bench-probe";

/// One NDJSON request body: `size` posts of batch `batch`. `bodies` are
/// the corpus texts as JSON string literals (escaped once, up front), so the
/// load generator spends little of the machine's CPU, which it shares with
/// the server. The lines are what `serde_json::json!` would write: the same
/// fields, keys in sorted order.
fn batch_body(batch: usize, size: usize, bodies: &[String], now_secs: i64, probe_secs: i64) -> String {
    use std::fmt::Write;
    let bulk_secs = (now_secs / 3600 - 24) * 3600;
    let mut out = String::with_capacity(size * 700);
    for k in 0..size {
        let i = batch * size + k;
        let body = &bodies[i % bodies.len()];
        // Invariant: writing to a String cannot fail.
        if k == 0 {
            // The probe, created now; the others within one hour of
            // yesterday (one Hive partition), so the probe query prunes
            // their files and stays cheap. (Its creation time also lets the
            // poller skip the files of probes already seen.)
            writeln!(
                out,
                r#"{{"body":{body},"community":"{PROBE_COMMUNITY}","created_at":{probe_secs},"id":"probe-{batch}","platform":"bench"}}"#
            )
        } else {
            writeln!(
                out,
                r#"{{"author":"u{}","body":{body},"community":"c{}","created_at":{},"id":"p{i}","platform":"bench","score":{}}}"#,
                i % 9973,
                i % 50,
                bulk_secs + (i as i64 * 7) % 3600,
                i % 100
            )
        }
        .expect("writing to a String");
    }
    out
}

/// How long the end of a run may wait for the server to catch up.
const WAIT_LIMIT: Duration = Duration::from_secs(600);

/// Asks `done` every 50 ms until it says yes; past [`WAIT_LIMIT`] the run
/// stops with a message naming `what` it waited for.
async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT_LIMIT;
    while !done().await {
        if Instant::now() > deadline {
            eprintln!(
                "bench_ingest: gave up waiting for {what} after {} s",
                WAIT_LIMIT.as_secs()
            );
            std::process::exit(1);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sql(client: &reqwest::Client, base: &str, query: &str) -> Vec<Value> {
    loop {
        match client
            .post(format!("{base}/v1/sql"))
            .json(&json!({"sql": query}))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => {
                let v: Value = r.json().await.unwrap_or_default();
                return v["rows"].as_array().cloned().unwrap_or_default();
            }
            Ok(r) => eprintln!("sql: {}", r.status()),
            Err(e) => eprintln!("sql: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = args.get(1).cloned().unwrap_or_else(|| "http://127.0.0.1:7700".into());
    let query_base = std::env::var("CHORUS_BENCH_QUERY_URL").unwrap_or_else(|_| base.clone());
    let posts: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let batch_size: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let concurrency: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(4);
    let corpus = args.get(5).cloned().unwrap_or_else(|| {
        format!(
            "{}/tests/fixtures/sentiment/reddit_comments.ndjson",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let bodies: Arc<Vec<String>> = Arc::new(
        std::fs::read_to_string(&corpus)
            .expect("corpus")
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v.get("body").filter(|b| b.is_string()).map(Value::to_string))
            .collect(),
    );
    let batches = posts / batch_size;
    let total = batches * batch_size;
    let client = reqwest::Client::new();
    let now_secs = chrono::Utc::now().timestamp();
    let today = chrono::Utc::now().date_naive();
    let acked: Arc<Mutex<HashMap<usize, Instant>>> = Arc::default();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let throttled = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let transport_errors = Arc::new(std::sync::atomic::AtomicU64::new(0));
    // When each batch's probe was created (Unix seconds; 0: not yet).
    let built: Arc<Vec<std::sync::atomic::AtomicI64>> =
        Arc::new((0..batches).map(|_| std::sync::atomic::AtomicI64::new(0)).collect());
    let start = Instant::now();
    let mut senders = Vec::new();
    for _ in 0..concurrency {
        let (client, base, bodies, acked, next, throttled, transport_errors, built) = (
            client.clone(),
            base.clone(),
            bodies.clone(),
            acked.clone(),
            next.clone(),
            throttled.clone(),
            transport_errors.clone(),
            built.clone(),
        );
        senders.push(tokio::spawn(async move {
            loop {
                let batch = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if batch >= batches {
                    return;
                }
                let probe_secs = chrono::Utc::now().timestamp();
                built[batch].store(probe_secs, std::sync::atomic::Ordering::Relaxed);
                let body = batch_body(batch, batch_size, &bodies, now_secs, probe_secs);
                loop {
                    match client.post(format!("{base}/v1/posts")).body(body.clone()).send().await {
                        Ok(r) if r.status() == 202 => {
                            acked.lock().unwrap().insert(batch, Instant::now());
                            break;
                        }
                        Ok(r) if r.status() == 429 || r.status() == 503 => {
                            throttled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Ok(r) => panic!("ingest answered {}", r.status()),
                        Err(e) => {
                            // A connection can fail under load: resend, as
                            // a client must (exact re-submissions are
                            // dropped by the server).
                            eprintln!("ingest: {e}; resending");
                            transport_errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                    }
                }
            }
        }));
    }
    // Probe poller: when does each acknowledged batch become visible?
    let mut latencies: Vec<f64> = Vec::new();
    let mut seen = vec![false; batches];
    // The oldest batch whose probe was not seen yet.
    let mut oldest_unseen = 0;
    let mut last_report = Instant::now();
    while latencies.len() < batches {
        while seen.get(oldest_unseen) == Some(&true) {
            oldest_unseen += 1;
        }
        // Probes created since the oldest unseen one (batches are built in
        // order; a second of margin), so the files of probes already seen
        // are pruned by their statistics, and bulk posts (dated yesterday)
        // by their partition.
        let since = match built[oldest_unseen].load(std::sync::atomic::Ordering::Relaxed) {
            0 => chrono::Utc::now().timestamp(),
            secs => secs,
        } - 1;
        let probe_query = format!(
            "SELECT id FROM posts WHERE dt >= DATE '{today}' AND community = '{PROBE_COMMUNITY}' \
             AND created_at >= to_timestamp_seconds({since})"
        );
        let rows = sql(&client, &query_base, &probe_query).await;
        let polled = Instant::now();
        let acked_now = acked.lock().unwrap().clone();
        for row in rows {
            let Some(batch) = row["id"]
                .as_str()
                .and_then(|id| id.strip_prefix("probe-"))
                .and_then(|n| n.parse::<usize>().ok())
            else {
                continue;
            };
            if batch < batches
                && !seen[batch]
                && let Some(at) = acked_now.get(&batch)
            {
                seen[batch] = true;
                latencies.push(polled.duration_since(*at).as_secs_f64());
            }
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!(
                "{:>6.1} s: {} of {batches} batches acknowledged, {} visible",
                start.elapsed().as_secs_f64(),
                acked_now.len(),
                latencies.len()
            );
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for s in senders {
        s.await.unwrap();
    }
    let sent_secs = start.elapsed().as_secs_f64();
    // Everything visible: count(*) reaches the total.
    wait_for("every post to be visible in SQL", async || {
        let rows = sql(
            &client,
            &query_base,
            "SELECT count(*) AS n FROM posts WHERE platform = 'bench'",
        )
        .await;
        rows.first().and_then(|r| r["n"].as_u64()) == Some(total as u64)
    })
    .await;
    let secs = start.elapsed().as_secs_f64();
    // Every post searchable too: the index's consumer (when the server has
    // one) has lag 0. (The archive's lag is not waited for: SQL reads what
    // its next file will hold from the log, and it rolls on its own time.)
    wait_for("the index to catch up", async || {
        let status: Option<Value> = match client.get(format!("{base}/v1/status")).send().await {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let stages = status.as_ref().and_then(|s| s["stages"].as_array());
        stages.is_some_and(|stages| {
            stages
                .iter()
                .filter(|s| s["consumer"] == "index")
                .all(|s| s["lag"].as_u64() == Some(0))
        })
    })
    .await;
    let searchable_secs = start.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{{\"posts\": {total}, \"seconds\": {secs:.2}, \"posts_per_second\": {:.0}, \"acknowledged_seconds\": {sent_secs:.2}, \
         \"searchable_seconds\": {searchable_secs:.2}, \"searchable_posts_per_second\": {:.0}, \
         \"visible_p50_ms\": {:.0}, \"visible_p99_ms\": {:.0}, \"visible_max_ms\": {:.0}, \"throttled_requests\": {}, \"transport_errors\": {}}}",
        total as f64 / secs,
        total as f64 / searchable_secs,
        percentile(&latencies, 0.5) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0,
        percentile(&latencies, 1.0) * 1000.0,
        throttled.load(std::sync::atomic::Ordering::Relaxed),
        transport_errors.load(std::sync::atomic::Ordering::Relaxed)
    );
}
