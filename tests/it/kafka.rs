//! The pipeline with its log on a real Kafka-protocol broker (tansu 0.6.0
//! on its sqlite engine, built by scripts/test.sh): `[log] backend =
//! "kafka"`.

use std::time::{Duration, Instant};

use chorus::log::kafka::testing::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::server::{Server, corpus_bodies, get_json, ndjson, sql, wait_for_count};

fn config(broker: &Broker, prefix: &str) -> String {
    format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\n\
         [archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 300\n",
        broker.address
    )
}

/// Records on a topic, counted by a plain librdkafka consumer from outside
/// chorus (as `kafka-console-consumer` would read them).
fn records_on(broker: &Broker, topic: &str, partitions: i32) -> u64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    (0..partitions)
        .map(|p| {
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10)).unwrap();
            (high - low) as u64
        })
        .sum()
}

async fn send_all(client: &reqwest::Client, server: &Server, range: std::ops::Range<usize>, bodies: &[String]) {
    for start in range.clone().step_by(1000) {
        let body = ndjson(start..(start + 1000).min(range.end), bodies);
        loop {
            let response = client
                .post(server.url("/v1/posts"))
                .body(body.clone())
                .send()
                .await
                .unwrap();
            if response.status() == 429 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            assert_eq!(response.status(), 202);
            let answer: Value = response.json().await.unwrap();
            assert_eq!(answer["rejected"], json!([]));
            break;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_flow_through_kafka_topics_into_sql_and_search_and_survive_a_restart() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let data = dir.path().join("data");
    let config = config(&broker, "it-flow.");
    let server = Server::start(&data, &config, &[]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    send_all(&client, &server, 0..N, &bodies).await;
    wait_for_count(&client, &server, N as u64, Duration::from_secs(300)).await;
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts_latest",
    )
    .await;
    assert_eq!(
        (rows[0]["n"].as_u64(), rows[0]["ids"].as_u64()),
        (Some(N as u64), Some(N as u64))
    );

    // The topics are Kafka's: another client sees every post on each.
    assert_eq!(records_on(&broker, "it-flow.posts.raw", 3), N as u64);
    assert_eq!(records_on(&broker, "it-flow.posts.enriched", 3), N as u64);
    // The stages' offsets are the broker's consumer groups: a plain
    // consumer of the enrich stage's group reads where it stopped.
    let group: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "it-flow.chorus.enrich")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition("it-flow.posts.raw", p);
    }
    let committed: i64 = group
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap()
        .elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(n) => n,
            other => panic!("no committed offset: {other:?}"),
        })
        .sum();
    assert_eq!(committed, N as i64, "enrich committed every raw post in its group");

    // Searchable, and the status page sees no lag once caught up.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status: Value = get_json(&client, &server, "/v1/status").await;
        let lags: Vec<u64> = status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["lag"].as_u64().unwrap())
            .collect();
        if lags.iter().all(|&l| l == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "stages did not catch up: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let found: Value = get_json(&client, &server, "/v1/search?limit=1").await;
    assert_eq!(found["total"], N, "{found}");

    // A restart resumes from the broker's offsets: nothing read twice,
    // and posts sent after it are added once.
    server.stop();
    let server = Server::start(&data, &config, &[]);
    send_all(&client, &server, N..N + 1000, &bodies).await;
    wait_for_count(&client, &server, N as u64 + 1000, Duration::from_secs(300)).await;
    assert_eq!(records_on(&broker, "it-flow.posts.enriched", 3), N as u64 + 1000);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_ingest_loses_no_acknowledged_post_and_counts_each_once() {
    const BATCH: usize = 500;
    const BATCHES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let data = dir.path().join("data");
    let config = config(&broker, "it-kill.");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let server = Server::start(&data, &config, &[]);
    // Batches sent one after another until the kill; which got a 202.
    let sender = {
        let (client, url, bodies) = (client.clone(), server.url("/v1/posts"), bodies.clone());
        tokio::spawn(async move {
            let mut acked = Vec::new();
            for batch in 0..BATCHES {
                let body = ndjson(batch * BATCH..(batch + 1) * BATCH, &bodies);
                match client.post(&url).body(body).send().await {
                    Ok(r) if r.status() == 202 => acked.push(batch),
                    Ok(r) if r.status() == 429 => tokio::time::sleep(Duration::from_millis(100)).await,
                    _ => break,
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.kill9();
    let acked = sender.await.unwrap();
    assert!(!acked.is_empty(), "no batch was acknowledged before the kill");
    assert!(acked.len() < BATCHES, "every batch went through before the kill");

    // After the restart, a client sends what it never saw acknowledged.
    let server = Server::start(&data, &config, &[]);
    let missing: Vec<usize> = (0..BATCHES).filter(|b| !acked.contains(b)).collect();
    for batch in &missing {
        send_all(&client, &server, batch * BATCH..(batch + 1) * BATCH, &bodies).await;
    }
    let expected = (BATCHES * BATCH) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows = sql(
            &client,
            &server,
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts_latest",
        )
        .await;
        let (n, ids) = (rows[0]["n"].as_u64().unwrap(), rows[0]["ids"].as_u64().unwrap());
        assert_eq!(n, ids, "a post counted twice in posts_latest");
        assert!(n <= expected, "more posts than sent: {n}");
        if n == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} posts after the restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Every post sent is there, the acknowledged ones among them.
    let rows = sql(
        &client,
        &server,
        "SELECT min(CAST(substr(id, 4) AS BIGINT)) AS lo, max(CAST(substr(id, 4) AS BIGINT)) AS hi FROM posts_latest",
    )
    .await;
    assert_eq!(
        (rows[0]["lo"].as_u64(), rows[0]["hi"].as_u64()),
        (Some(0), Some(expected - 1))
    );
    let found: Value = get_json(&client, &server, "/v1/search?limit=1").await;
    assert!(found["total"].as_u64().unwrap() <= expected, "{found}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_rides_out_a_broker_restart_mid_stream() {
    const BATCH: usize = 500;
    const BATCHES: usize = 16;
    let dir = tempfile::tempdir().unwrap();
    let mut broker = Broker::start(dir.path().join("broker"));
    let data = dir.path().join("data");
    let config = config(&broker, "it-restart.");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let server = Server::start(&data, &config, &[]);
    // A client that sends every batch until it is acknowledged (a 503
    // while the broker is away, or no answer in time, means later).
    let sender = {
        let (client, url, bodies) = (client.clone(), server.url("/v1/posts"), bodies.clone());
        tokio::spawn(async move {
            let mut retried = 0;
            for batch in 0..BATCHES {
                let body = ndjson(batch * BATCH..(batch + 1) * BATCH, &bodies);
                loop {
                    let sent = client
                        .post(&url)
                        .body(body.clone())
                        .timeout(Duration::from_secs(120))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => break,
                        _ => {
                            retried += 1;
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            retried
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        !sender.is_finished(),
        "the posts were all sent before the broker went away"
    );
    // kill -9 of the broker, back 2 s later on the same port and data.
    let restarted = tokio::task::spawn_blocking(move || {
        broker.restart(Duration::from_secs(2));
        broker
    });
    let broker = restarted.await.unwrap();
    let _retried = sender.await.unwrap();
    let expected = (BATCHES * BATCH) as u64;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows = sql(
            &client,
            &server,
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts_latest",
        )
        .await;
        let (n, ids) = (rows[0]["n"].as_u64().unwrap(), rows[0]["ids"].as_u64().unwrap());
        assert_eq!(n, ids, "a post counted twice in posts_latest");
        if n == expected {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {expected} posts after the broker restart"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut server = server;
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "chorus stopped when the broker went away for a moment"
    );
    // Posts sent after the restart flow as before.
    send_all(&client, &server, expected as usize..expected as usize + 500, &bodies).await;
    wait_for_count(&client, &server, expected + 500, Duration::from_secs(120)).await;
    server.stop();
    drop(broker);
}
