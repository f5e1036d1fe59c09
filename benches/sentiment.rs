//! Comments per second per core on the Reddit corpus: TextBlob alone, VADER
//! alone, and cleanup + both (what the enrich stage does per post).
//!
//! `cargo bench --bench sentiment`; the README lists the figures and the
//! Python reference measured on the same file.

use std::hint::black_box;

use chorus::enrich::{self, TextBlob, Vader, clean};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

// The allocator of the `chorus` binary, so that cleanup's allocations cost
// what they cost in the enrich stage.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn bodies() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/sentiment/reddit_comments.ndjson"
    );
    let text = std::fs::read_to_string(path).expect("reddit corpus fixture");
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("corpus line is JSON");
            v["body"].as_str().unwrap_or_default().to_string()
        })
        .collect()
}

fn sentiment(c: &mut Criterion) {
    let bodies = bodies();
    let tb = TextBlob::global();
    let vader = Vader::global();
    let mut group = c.benchmark_group("reddit_corpus");
    group.throughput(Throughput::Elements(bodies.len() as u64));
    group.sample_size(20);
    group.bench_function("textblob", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(tb.sentiment(black_box(body)));
            }
        })
    });
    group.bench_function("vader", |b| {
        b.iter(|| {
            for body in &bodies {
                black_box(vader.polarity_scores(black_box(body)));
            }
        })
    });
    // What the enrich stage does with a batch of posts read from the log.
    group.bench_function("clean_textblob_vader", |b| {
        b.iter(|| {
            for batch in bodies.chunks(1000) {
                black_box(enrich::clean_and_score_batch(black_box(batch)));
            }
        })
    });
    // The same one post at a time, for comparison.
    group.bench_function("clean_textblob_vader_one_by_one", |b| {
        b.iter(|| {
            for body in &bodies {
                let text = clean::clean(black_box(body));
                black_box(enrich::score(&text));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, sentiment);
criterion_main!(benches);
