//! Search benchmarks against a running `chorus run` (`scripts/bench_search.sh`).
//!
//! * `bench_search searchable URL RATE SECONDS`: sends RATE posts/s (Reddit
//!   comments of the corpus, in bodies of 100 every 10 ms) for SECONDS, one
//!   probe post per body, and polls `GET /v1/search` for the probes: p50/p99
//!   from the `202` to the probe being a search hit.
//! * `bench_search latency URL ROUNDS`: over what the server holds, runs a
//!   word, a phrase and a filter-only search ROUNDS times each (one at a
//!   time, every aggregation included, as the dashboard asks): p50/p99 ms.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

const PROBE_COMMUNITY: &str = "bench-probe";
const BODY_POSTS: usize = 100;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn corpus() -> Vec<String> {
    let path = format!(
        "{}/tests/fixtures/sentiment/reddit_comments.ndjson",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(path)
        .expect("corpus")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("body").filter(|b| b.is_string()).map(Value::to_string))
        .collect()
}

async fn searchable(base: String, rate: usize, seconds: u64) {
    let bodies = Arc::new(corpus());
    let client = reqwest::Client::new();
    let acked: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let refused = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let permits = Arc::new(tokio::sync::Semaphore::new(16));
    let started = chrono::Utc::now().timestamp() - 1;
    let every = Duration::from_secs_f64(BODY_POSTS as f64 / rate as f64);
    let bodies_total = (seconds as f64 / every.as_secs_f64()) as usize;
    let sender = {
        let (client, base, acked, refused) = (client.clone(), base.clone(), acked.clone(), refused.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut tasks = Vec::new();
            for n in 0..bodies_total {
                tick.tick().await;
                let permit = permits.clone().acquire_owned().await.expect("semaphore");
                let now = chrono::Utc::now().timestamp();
                let mut body = String::with_capacity(BODY_POSTS * 700);
                for k in 0..BODY_POSTS {
                    let i = n * BODY_POSTS + k;
                    let text = &bodies[i % bodies.len()];
                    let (id, community) = if k == 0 {
                        (format!("probe-{n}"), PROBE_COMMUNITY.to_string())
                    } else {
                        (format!("s{i}"), format!("c{}", i % 50))
                    };
                    body.push_str(&format!(
                        r#"{{"author":"u{}","body":{text},"community":"{community}","created_at":{now},"id":"{id}","platform":"bench"}}"#,
                        i % 9973
                    ));
                    body.push('\n');
                }
                let (client, base, acked, refused) = (client.clone(), base.clone(), acked.clone(), refused.clone());
                tasks.push(tokio::spawn(async move {
                    let _permit = permit;
                    match client.post(format!("{base}/v1/posts")).body(body).send().await {
                        Ok(r) if r.status() == 202 => {
                            acked.lock().unwrap().insert(format!("probe-{n}"), Instant::now());
                        }
                        Ok(r) => {
                            eprintln!("ingest answered {}", r.status());
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Err(e) => {
                            eprintln!("ingest: {e}");
                            refused.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks {
                t.await.expect("sender");
            }
        })
    };
    let mut seen: HashMap<String, f64> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(seconds + 30);
    loop {
        let url = format!(
            "{base}/v1/search?community={PROBE_COMMUNITY}&since={}&limit=1000",
            rfc3339(started)
        );
        if let Ok(r) = client.get(&url).send().await
            && let Ok(answer) = r.json::<Value>().await
        {
            let polled = Instant::now();
            let acked = acked.lock().unwrap();
            for hit in answer["hits"].as_array().into_iter().flatten() {
                if let Some(id) = hit["id"].as_str()
                    && !seen.contains_key(id)
                    && let Some(at) = acked.get(id)
                {
                    seen.insert(id.to_string(), polled.duration_since(*at).as_secs_f64());
                }
            }
        }
        let done = sender.is_finished() && seen.len() >= acked.lock().unwrap().len();
        if done || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let acked = acked.lock().unwrap().len();
    let mut latencies: Vec<f64> = seen.into_values().collect();
    latencies.sort_by(f64::total_cmp);
    println!(
        "{{\"rate\": {rate}, \"seconds\": {seconds}, \"probes_acknowledged\": {acked}, \"probes_searchable\": {}, \
         \"searchable_p50_ms\": {:.0}, \"searchable_p99_ms\": {:.0}, \"searchable_max_ms\": {:.0}, \"refused_bodies\": {}}}",
        latencies.len(),
        percentile(&latencies, 0.5) * 1000.0,
        percentile(&latencies, 0.99) * 1000.0,
        percentile(&latencies, 1.0) * 1000.0,
        refused.load(std::sync::atomic::Ordering::Relaxed)
    );
}

fn rfc3339(secs: i64) -> String {
    chrono::DateTime::from_timestamp(secs, 0)
        .expect("a time")
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

async fn latency(base: String, rounds: usize) {
    let client = reqwest::Client::new();
    let queries = [
        ("word", "q=people"),
        ("phrase", "q=%22i%20think%22"),
        ("filter_only", "community=c7"),
    ];
    let mut out = Vec::new();
    for (name, query) in queries {
        let mut times = Vec::with_capacity(rounds);
        let mut total = 0;
        for _ in 0..rounds {
            let start = Instant::now();
            let r = client
                .get(format!("{base}/v1/search?{query}"))
                .send()
                .await
                .expect("search");
            assert!(r.status().is_success(), "{name}: {}", r.status());
            let answer: Value = r.json().await.expect("JSON");
            times.push(start.elapsed().as_secs_f64());
            total = answer["total"].as_u64().unwrap_or(0);
        }
        times.sort_by(f64::total_cmp);
        out.push(format!(
            "\"{name}\": {{\"total\": {total}, \"p50_ms\": {:.1}, \"p99_ms\": {:.1}}}",
            percentile(&times, 0.5) * 1000.0,
            percentile(&times, 0.99) * 1000.0
        ));
    }
    let status: Value = client
        .get(format!("{base}/v1/status"))
        .send()
        .await
        .expect("status")
        .json()
        .await
        .expect("JSON");
    println!(
        "{{\"documents\": {}, \"rounds\": {rounds}, {}}}",
        status["index"]["documents"],
        out.join(", ")
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_search searchable URL RATE SECONDS | latency URL ROUNDS";
    let base = args.get(2).cloned().expect(usage);
    match args.get(1).map(String::as_str) {
        Some("searchable") => {
            let rate = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(10_000);
            let seconds = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(60);
            searchable(base, rate, seconds).await;
        }
        Some("latency") => latency(base, args.get(3).and_then(|s| s.parse().ok()).unwrap_or(100)).await,
        _ => panic!("{usage}"),
    }
}
