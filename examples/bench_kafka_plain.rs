//! What the broker itself sustains for chorus's traffic, for
//! `scripts/bench_kafka.sh`: a plain rdkafka pipeline that moves the same
//! records through two topics as chorus's stages do, with none of chorus
//! in the way.
//!
//! * a producer writes POSTS posts (corpus texts, replicated, the fields
//!   `examples/bench_ingest.rs` sends) as chorus's JSON records of
//!   `posts.raw` to `<prefix>plain.raw`, in the partition of their key,
//!   idempotent with `acks=all`;
//! * a relay in a consumer group reads them and writes each post's
//!   enriched JSON record (as chorus's `posts.enriched` holds it, computed
//!   before the clock starts: the relay does no scoring) to
//!   `<prefix>plain.enriched`, then commits its input offsets once that
//!   output is acknowledged;
//! * a sink in another group reads `plain.enriched` and commits.
//!
//! It reports posts/s from the first produce to the last post read by the
//! sink, and p50/p99 from a post's produce to its read by the sink (the
//! relay keeps the raw record's timestamp).
//!
//! With `--produce-only` it only produces the raw records and reports what
//! the broker takes in (records/s until all are acknowledged).
//!
//! Usage: bench_kafka_plain BROKERS POSTS [PARTITIONS] [TOPIC_PREFIX] [--produce-only]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::{Message, Timestamp};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::Value;

use chorus::log::{partition_of, post_key};
use chorus::record::{IncomingPost, RawPost};

fn config(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config.set("bootstrap.servers", brokers);
    config
}

fn producer(brokers: &str) -> BaseProducer {
    config(brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        // As chorus's producer.
        .set("linger.ms", "2")
        .create()
        .expect("producer")
}

fn consumer(brokers: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        // As chorus's readers.
        .set("fetch.wait.max.ms", "100")
        .create()
        .expect("consumer");
    consumer.subscribe(&[topic]).expect("subscribe");
    consumer
}

/// The posts: their keys, `posts.raw` JSON and `posts.enriched` JSON, as
/// chorus writes them.
fn posts(n: usize) -> Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> {
    let corpus = format!(
        "{}/tests/fixtures/sentiment/reddit_comments.ndjson",
        env!("CARGO_MANIFEST_DIR")
    );
    let bodies: Vec<String> = std::fs::read_to_string(&corpus)
        .expect("corpus")
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|v| v.get("body").and_then(Value::as_str).map(str::to_string))
        .collect();
    let now = chorus::record::now_micros();
    let bulk_secs = (now / 3_600_000_000 - 24) * 3600;
    (0..n)
        .map(|i| {
            let mut post = IncomingPost::new(
                "bench",
                &format!("p{i}"),
                &bodies[i % bodies.len()],
                (bulk_secs + (i as i64 * 7) % 3600) * 1_000_000,
            );
            post.author = Some(format!("u{}", i % 9973));
            post.community = Some(format!("c{}", i % 50));
            post.score = Some((i % 100) as i64);
            let key = post_key(&post.platform, &post.id);
            let ingested_at = now + i as i64;
            let raw = serde_json::to_vec(&RawPost {
                incoming: post.clone(),
                ingested_at,
            })
            .expect("raw JSON");
            let enriched = serde_json::to_vec(&chorus::enrich::enrich_post(post, ingested_at)).expect("enriched JSON");
            (key, raw, enriched)
        })
        .collect()
}

fn create_topics(brokers: &str, names: &[String], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create().expect("admin");
    let new: Vec<NewTopic<'_>> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let results = futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new())).expect("create topics");
    for result in results {
        if let Err((name, code)) = result {
            panic!("creating {name}: {code}");
        }
    }
}

/// Sends until librdkafka takes the record (its queue may be full).
fn send(producer: &BaseProducer, mut record: BaseRecord<'_, [u8], [u8]>) {
    loop {
        match producer.send(record) {
            Ok(()) => return,
            Err((_, back)) => {
                record = back;
                producer.poll(Duration::from_millis(5));
            }
        }
    }
}

fn main() {
    let mut args: Vec<String> = std::env::args().collect();
    let produce_only = args.iter().any(|a| a == "--produce-only");
    args.retain(|a| a != "--produce-only");
    let brokers = args.get(1).cloned().unwrap_or_else(|| "127.0.0.1:9092".into());
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let partitions: u32 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(4);
    let prefix = args.get(4).cloned().unwrap_or_default();
    let (raw_topic, enriched_topic) = (format!("{prefix}plain.raw"), format!("{prefix}plain.enriched"));
    eprintln!("plain: building {n} posts");
    let posts = Arc::new(posts(n));
    let bytes: usize = posts.iter().map(|(k, r, e)| 2 * k.len() + r.len() + e.len()).sum();
    eprintln!(
        "plain: {:.0} bytes a raw record, {:.0} an enriched one",
        posts.iter().map(|p| p.1.len()).sum::<usize>() as f64 / n as f64,
        posts.iter().map(|p| p.2.len()).sum::<usize>() as f64 / n as f64
    );
    create_topics(
        &brokers,
        &[raw_topic.clone(), enriched_topic.clone()],
        partitions as i32,
    );
    let done = Arc::new(AtomicBool::new(false));
    if produce_only {
        let start = Instant::now();
        let output = producer(&brokers);
        for (key, raw, _) in posts.iter() {
            let partition = partition_of(key, partitions) as i32;
            send(
                &output,
                BaseRecord::to(&raw_topic)
                    .partition(partition)
                    .key(&key[..])
                    .payload(&raw[..]),
            );
            output.poll(Duration::ZERO);
        }
        output.flush(Duration::from_secs(60)).expect("raw records acknowledged");
        println!("produce only: {:.0}/s", n as f64 / start.elapsed().as_secs_f64());
        return;
    }
    let start = Instant::now();

    // The relay: raw → enriched, committing after its output is acknowledged.
    let relay = {
        let (brokers, posts, done) = (brokers.clone(), posts.clone(), done.clone());
        let (raw_topic, enriched_topic) = (raw_topic.clone(), enriched_topic.clone());
        let group = format!("{prefix}plain.relay");
        std::thread::spawn(move || {
            let input = consumer(&brokers, &group, &raw_topic);
            let output = producer(&brokers);
            let mut offsets = TopicPartitionList::new();
            let mut in_batch = 0;
            while !done.load(Ordering::Relaxed) {
                let message = input.poll(Duration::from_millis(20));
                let idle = message.is_none();
                if let Some(message) = message {
                    let message = message.expect("relay read");
                    let key = message.key().expect("key");
                    let i: usize = std::str::from_utf8(&key[b"bench\0p".len()..])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .expect("a bench key");
                    let timestamp = match message.timestamp() {
                        Timestamp::CreateTime(t) | Timestamp::LogAppendTime(t) => t,
                        Timestamp::NotAvailable => 0,
                    };
                    send(
                        &output,
                        BaseRecord::to(&enriched_topic)
                            .partition(message.partition())
                            .key(key)
                            .payload(&posts[i].2[..])
                            .timestamp(timestamp),
                    );
                    offsets
                        .add_partition_offset(&raw_topic, message.partition(), Offset::Offset(message.offset() + 1))
                        .expect("offset");
                    in_batch += 1;
                }
                if in_batch >= 10_000 || (idle && in_batch > 0) {
                    output
                        .flush(Duration::from_secs(60))
                        .expect("relay output acknowledged");
                    input.commit(&offsets, CommitMode::Async).expect("relay commit");
                    in_batch = 0;
                }
            }
        })
    };

    // The sink: reads enriched records and measures.
    let sink = {
        let (brokers, done) = (brokers.clone(), done.clone());
        let enriched_topic = enriched_topic.clone();
        let group = format!("{prefix}plain.sink");
        std::thread::spawn(move || {
            let input = consumer(&brokers, &group, &enriched_topic);
            let mut latencies_ms: Vec<i64> = Vec::with_capacity(n);
            let mut since_commit = 0;
            while latencies_ms.len() < n {
                let Some(message) = input.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let message = message.expect("sink read");
                let now = chrono::Utc::now().timestamp_millis();
                if let Some(t) = message.timestamp().to_millis() {
                    latencies_ms.push(now - t);
                }
                since_commit += 1;
                if since_commit >= 2000 {
                    input.commit_message(&message, CommitMode::Async).expect("sink commit");
                    since_commit = 0;
                }
            }
            done.store(true, Ordering::Relaxed);
            latencies_ms
        })
    };

    let output = producer(&brokers);
    for (key, raw, _) in posts.iter() {
        let partition = partition_of(key, partitions) as i32;
        send(
            &output,
            BaseRecord::to(&raw_topic)
                .partition(partition)
                .key(&key[..])
                .payload(&raw[..]),
        );
        output.poll(Duration::ZERO);
    }
    output.flush(Duration::from_secs(60)).expect("raw records acknowledged");
    let produced = start.elapsed();
    let mut latencies = sink.join().expect("sink");
    let seconds = start.elapsed().as_secs_f64();
    relay.join().expect("relay");
    latencies.sort_unstable();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];
    println!(
        "{}",
        serde_json::json!({
            "posts": n,
            "seconds": (seconds * 100.0).round() / 100.0,
            "posts_per_second": (n as f64 / seconds).round(),
            "produced_seconds": (produced.as_secs_f64() * 100.0).round() / 100.0,
            "p50_ms": at(0.5),
            "p99_ms": at(0.99),
            "max_ms": at(1.0),
            "mib_moved": bytes / (1 << 20),
        })
    );
}
