//! Scores the Reddit corpus in a loop, for profilers and quick timing:
//!
//! ```text
//! cargo run --release --example profile_sentiment -- MODE [SECONDS | passes:N]
//! ```
//!
//! MODE is `textblob`, `vader`, `clean`, `all` (cleanup then both analyzers,
//! one post at a time) or `batch` (`clean_and_score_batch` over batches of
//! `$BATCH`, default 1,000). With SECONDS (default 5) it prints the best
//! one-second rate, the machines being shared and noisy; with `passes:N` it
//! makes exactly N passes and prints nothing, for instruction counters such
//! as callgrind. `CORPUS_TEXT=...` replaces the corpus with copies of one text.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chorus::enrich::{self, TextBlob, Vader, clean};

// The allocator of the `chorus` binary, so that cleanup's allocations cost
// what they cost in the enrich stage.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("all", String::as_str);
    let bodies = bodies();
    let batch: usize = std::env::var("BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
    let pass = || match mode {
        "textblob" => {
            for b in &bodies {
                black_box(TextBlob::global().sentiment(b));
            }
        }
        "vader" => {
            for b in &bodies {
                black_box(Vader::global().polarity_scores(b));
            }
        }
        "clean" => {
            for b in &bodies {
                black_box(clean::clean(b));
            }
        }
        "batch" => {
            for chunk in bodies.chunks(batch.max(1)) {
                black_box(enrich::clean_and_score_batch(chunk));
            }
        }
        _ => {
            for b in &bodies {
                black_box(enrich::score(&clean::clean(b)));
            }
        }
    };
    let arg = args.get(2).map_or("5", String::as_str);
    if let Some(n) = arg.strip_prefix("passes:") {
        for _ in 0..n.parse::<usize>().unwrap_or(1) {
            pass();
        }
        return;
    }
    let seconds: f64 = arg.parse().unwrap_or(5.0);
    let mut best = 0f64;
    let all = Instant::now();
    while all.elapsed() < Duration::from_secs_f64(seconds) {
        let (start, mut done) = (Instant::now(), 0usize);
        while start.elapsed() < Duration::from_secs(1) {
            pass();
            done += bodies.len();
        }
        best = best.max(done as f64 / start.elapsed().as_secs_f64());
    }
    println!("{mode}: {best:.0} comments/s (best one-second round)");
}

/// The Reddit corpus bodies, or copies of `$CORPUS_TEXT`.
fn bodies() -> Vec<String> {
    if let Ok(text) = std::env::var("CORPUS_TEXT") {
        return vec![text; 11_619];
    }
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sentiment/reddit_comments.ndjson"
    );
    std::fs::read_to_string(path)
        .expect("corpus fixture")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("corpus line is JSON");
            v["body"].as_str().unwrap_or("").to_string()
        })
        .collect()
}
