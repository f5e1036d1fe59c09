//! The index sink on its own (`scripts/bench_index.sh`): fills a fresh log's
//! `posts.enriched` with N enriched posts (Reddit comments of the corpus,
//! replicated under unique ids, scored by chorus's analyzers), then runs
//! the index sink over it until it has drained and committed, with
//! `[index]`'s defaults (a commit every second while behind the log, upsert by (platform, id),
//! the record stored). Prints posts/s and the CPU the sink used.
//!
//! Usage: bench_index [POSTS] [CORPUS]   (default 1000000, the Reddit corpus)

use std::sync::Arc;
use std::time::Instant;

use chorus::log::fjall::FjallLog;
use chorus::log::{Log, Topic};
use chorus::metrics::Metrics;
use chorus::record::IncomingPost;
use chorus::sinks::index::{IndexConfig, IndexSink};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// The `chorus` binary's allocator: the sink runs here as it does there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// User + system CPU of this process so far, seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills in a plain struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let posts: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let corpus = args.get(2).cloned().unwrap_or_else(|| {
        format!(
            "{}/tests/fixtures/sentiment/reddit_comments.ndjson",
            env!("CARGO_MANIFEST_DIR")
        )
    });
    let bodies: Vec<String> = std::fs::read_to_string(&corpus)
        .expect("corpus")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("body").and_then(Value::as_str).map(str::to_string))
        .collect();
    // Enriched once per distinct body; the posts differ in id, community,
    // author and time.
    let enriched: Vec<_> = bodies
        .iter()
        .map(|body| {
            let incoming = IncomingPost {
                lang: Some("en".into()),
                ..IncomingPost::new("reddit", "", body, 0)
            };
            chorus::enrich::enrich_post(incoming, 0)
        })
        .collect();
    let dir = tempfile::tempdir().expect("temporary directory");
    let log = Arc::new(FjallLog::open(&dir.path().join("log"), 4).expect("log"));
    let now = chorus::record::now_micros();
    let fill = Instant::now();
    for chunk in (0..posts).collect::<Vec<_>>().chunks(10_000) {
        let records: Vec<(Vec<u8>, Vec<u8>)> = chunk
            .iter()
            .map(|&i| {
                let mut post = enriched[i % enriched.len()].clone();
                post.incoming.id = format!("t1_{i:x}");
                post.incoming.community = Some(format!("c{}", i % 50));
                post.incoming.author = Some(format!("u{}", i % 9973));
                post.incoming.created_at = now - (posts - i) as i64 * 1000;
                post.ingested_at = now;
                (post.incoming.id.clone().into_bytes(), post.to_log_bytes())
            })
            .collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Enriched, &refs).expect("append");
    }
    eprintln!(
        "bench_index: {posts} posts in the log ({:.1} s)",
        fill.elapsed().as_secs_f64()
    );

    let metrics = Arc::new(Metrics::default());
    let (sink, searcher) =
        IndexSink::open(&dir.path().join("index"), &IndexConfig::default(), metrics.clone()).expect("index");
    let stop = CancellationToken::new();
    // Stopped once every post went through the writer: the sink then
    // commits and returns (it commits every second on the way).
    let watcher = {
        let (stop, metrics) = (stop.clone(), metrics.clone());
        std::thread::spawn(move || {
            while metrics.index_documents.get() < posts as u64 {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            stop.cancel();
        })
    };
    let cpu = cpu_seconds();
    let start = Instant::now();
    sink.run(&*log, stop).expect("index sink");
    watcher.join().expect("watcher");
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu;
    let documents = searcher.documents();
    assert_eq!(documents, posts as u64, "every post indexed once");
    println!(
        "{{\"posts\": {posts}, \"seconds\": {secs:.2}, \"posts_per_second\": {:.0}, \"cpu_seconds\": {cpu:.2}, \
         \"cores\": {:.2}, \"us_cpu_per_post\": {:.1}, \"commits\": {}, \"index_mib\": {:.0}}}",
        posts as f64 / secs,
        cpu / secs,
        cpu * 1e6 / posts as f64,
        metrics.index_commits.get(),
        searcher.disk_bytes() as f64 / (1 << 20) as f64
    );
}
