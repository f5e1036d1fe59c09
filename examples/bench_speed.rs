//! The speed layer's cost per post outside the pipeline: opens a data
//! directory (one a `chorus run` with `[batch] speed_layer = true` left,
//! e.g. `CHORUS_BENCH_KEEP=DIR scripts/bench_pipeline.sh`), reads every
//! record of `posts.enriched` as the consume loop does (4,096 at a time;
//! written out here rather than through `consume::run` so the reads and
//! the layer are timed apart) and hands them to the speed layer. Nothing
//! is written: the layer's state is only in memory.
//!
//! Usage: cargo run --release --example bench_speed -- DATA_DIR [ROUNDS]
use std::time::{Duration, Instant};

use chorus::log::Topic;
use chorus::sinks::consume::{READ_RECORDS, Sink};

/// The server's allocator: the layer's figures depend on it (a first
/// build with the system allocator measured 1.36 µs a post, ~0.8 after).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let data = std::path::PathBuf::from(args.next().ok_or("usage: bench_speed DATA_DIR [ROUNDS]")?);
    let rounds: usize = args.next().map_or(Ok(3), |r| r.parse())?;
    let config = chorus::config::Config::parse("[batch]\nspeed_layer = true\n", std::path::Path::new("bench.toml"))?;
    let pipeline = chorus::topology::Pipeline::open(&data, config)?;
    let speed = pipeline.speed_layer().await?.ok_or("the speed layer did not start")?;
    let log = pipeline.log();
    let views: Vec<&str> = speed.views.iter().map(|v| v.name.as_str()).collect();
    println!("views: {}", views.join(", "));
    tokio::task::spawn_blocking(move || -> Result<(), String> {
        let mut sink = chorus::views::speed::SpeedSink::new(Some(&speed), &*log);
        for round in 0..rounds {
            let (mut read, mut applied, mut posts) = (Duration::ZERO, Duration::ZERO, 0usize);
            for partition in 0..log.partitions() {
                let mut next = 0;
                loop {
                    let started = Instant::now();
                    let entries = log
                        .read(Topic::Enriched, partition, next, READ_RECORDS, chorus::log::READ_BYTES)
                        .map_err(|e| e.to_string())?;
                    read += started.elapsed();
                    let Some(last) = entries.last() else { break };
                    next = last.offset + 1;
                    posts += entries.len();
                    let started = Instant::now();
                    sink.write(partition, &entries).map_err(|e| e.to_string())?;
                    applied += started.elapsed();
                }
            }
            let per = |d: Duration| d.as_secs_f64() * 1e6 / posts.max(1) as f64;
            println!(
                "round {round}: {posts} posts, read {:.3} us per post, speed layer {:.3} us per post",
                per(read),
                per(applied)
            );
        }
        Ok(())
    })
    .await??;
    Ok(())
}
