//! Scores the Reddit corpus in a loop, for profilers:
//! `cargo run --release --example profile_sentiment -- textblob|vader|all SECONDS`.

use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let which = args.get(1).map_or("all", String::as_str);
    let seconds: f64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(5.0);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sentiment/reddit_comments.ndjson"
    );
    // CORPUS_TEXT=... replaces the corpus with 11,619 copies of one text.
    let bodies: Vec<String> = if let Ok(text) = std::env::var("CORPUS_TEXT") {
        vec![text; 11_619]
    } else {
        std::fs::read_to_string(path)
            .expect("corpus")
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("json")["body"]
                    .as_str()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    };
    // `passes:N` instead of seconds: exactly N passes over the corpus (for
    // instruction-counting profilers such as callgrind).
    let passes: Option<usize> = args
        .get(2)
        .and_then(|s| s.strip_prefix("passes:"))
        .and_then(|n| n.parse().ok());
    let tb = chorus::enrich::TextBlob::global();
    let vader = chorus::enrich::Vader::global();
    // Best of one-second rounds: the machines are shared and noisy.
    if let Some(n) = passes {
        for _ in 0..n {
            for b in &bodies {
                match which {
                    "textblob" => drop(std::hint::black_box(tb.sentiment(b))),
                    "vader" => drop(std::hint::black_box(vader.polarity_scores(b))),
                    "clean" => drop(std::hint::black_box(chorus::enrich::clean::clean(b))),
                    _ => drop(std::hint::black_box(chorus::enrich::score(
                        &chorus::enrich::clean::clean(b),
                    ))),
                }
            }
        }
        return;
    }
    let mut best = 0f64;
    let all = Instant::now();
    while all.elapsed() < Duration::from_secs_f64(seconds) {
        let start = Instant::now();
        let mut done = 0usize;
        while start.elapsed() < Duration::from_secs(1) {
            if which == "batch" {
                let size: usize = std::env::var("BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(1000);
                for batch in bodies.chunks(size) {
                    std::hint::black_box(chorus::enrich::clean_and_score_batch(batch));
                }
                done += bodies.len();
                continue;
            }
            for b in &bodies {
                match which {
                    "textblob" => {
                        std::hint::black_box(tb.sentiment(b));
                    }
                    "vader" => {
                        std::hint::black_box(vader.polarity_scores(b));
                    }
                    "clean" => {
                        std::hint::black_box(chorus::enrich::clean::clean(b));
                    }
                    _ => {
                        let text = chorus::enrich::clean::clean(b);
                        std::hint::black_box(chorus::enrich::score(&text));
                    }
                }
            }
            done += bodies.len();
        }
        best = best.max(done as f64 / start.elapsed().as_secs_f64());
    }
    println!("{which}: {best:.0} comments/s (best one-second round)");
}
