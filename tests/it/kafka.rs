//! The pipeline with its log on a real Kafka-protocol broker (tansu 0.6.0
//! on its sqlite engine, built by scripts/test.sh): `[log] backend =
//! "kafka"`.

use std::time::{Duration, Instant};

use chorus::log::kafka::testing::Broker;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{Value, json};

use crate::server::{Server, corpus_bodies, get_json, ndjson, sql, wait_for_count};

/// A broker and `chorus run` on it (its topics named with `prefix`,
/// records on them in `encoding`), in a temporary directory.
struct OnKafka {
    broker: Broker,
    data: std::path::PathBuf,
    config: String,
    server: Server,
    _dir: tempfile::TempDir,
}

fn on_kafka(prefix: &str, encoding: &str) -> OnKafka {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let data = dir.path().join("data");
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"{prefix}\"\npartitions = 3\n\
         encoding = \"{encoding}\"\n[archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 300\n",
        broker.address
    );
    let server = Server::start(&data, &config, &[]);
    OnKafka {
        broker,
        data,
        config,
        server,
        _dir: dir,
    }
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

/// Waits until `posts_latest` holds `expected` posts, each once.
async fn wait_for_latest(client: &reqwest::Client, server: &Server, expected: u64, when: &str) {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let rows = sql(
            client,
            server,
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts_latest",
        )
        .await;
        let (n, ids) = (rows[0]["n"].as_u64().unwrap(), rows[0]["ids"].as_u64().unwrap());
        assert_eq!(n, ids, "a post counted twice in posts_latest");
        assert!(n <= expected, "more posts than sent: {n}");
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {expected} posts {when}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Starts the killed server again at once, sends the batches of `batch`
/// posts it never acknowledged (of `batches`), and waits until
/// `posts_latest` holds every post once. The new process joins the enrich
/// group while its killed predecessor is still in it: on tansu 0.6 that
/// left it without partitions for good in ~3 restarts of 4, until it
/// learnt to join again (`rejoin_if_stranded` in the Kafka log).
async fn restart_and_resend(
    client: &reqwest::Client,
    (data, config): (&std::path::Path, &str),
    batches: usize,
    batch: usize,
    acked: &[usize],
    bodies: &[String],
) -> Server {
    let server = Server::start(data, config, &[]);
    for b in (0..batches).filter(|b| !acked.contains(b)) {
        send_all(client, &server, b * batch..(b + 1) * batch, bodies).await;
    }
    wait_for_latest(client, &server, (batches * batch) as u64, "after the restart").await;
    server
}

/// Sends `batches` batches of `batch` posts from `first` on, one every
/// `pause` (a 429 is retried), in a task of its own.
fn stream_posts(
    client: &reqwest::Client,
    server: &Server,
    bodies: &[String],
    (first, batches, batch): (usize, usize, usize),
    pause: Duration,
) -> tokio::task::JoinHandle<()> {
    let (client, url, bodies) = (client.clone(), server.url("/v1/posts"), bodies.to_vec());
    tokio::spawn(async move {
        for b in 0..batches {
            let start = first + b * batch;
            let body = ndjson(start..start + batch, &bodies);
            loop {
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                if r.status() == 202 {
                    break;
                }
                assert_eq!(r.status(), 429, "{}", r.text().await.unwrap());
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            tokio::time::sleep(pause).await;
        }
    })
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
    // chorus's compact encoding on the topics here; JSON in the others.
    let OnKafka {
        broker,
        data,
        config,
        server,
        _dir,
    } = on_kafka("it-flow.", "compact");
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
    let OnKafka {
        broker: _broker,
        data,
        config,
        server,
        _dir,
    } = on_kafka("it-kill.", "json");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
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

    let server = restart_and_resend(&client, (&data, &config), BATCHES, BATCH, &acked, &bodies).await;
    let expected = (BATCHES * BATCH) as u64;
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
    let OnKafka {
        mut broker,
        server,
        _dir,
        ..
    } = on_kafka("it-restart.", "json");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    // A client that sends every batch until it is acknowledged (a 503
    // while the broker is away, or no answer in time, means later).
    let sender = {
        let (client, url, bodies) = (client.clone(), server.url("/v1/posts"), bodies.clone());
        tokio::spawn(async move {
            // Never forever: a server that died answers nothing again.
            let deadline = std::time::Instant::now() + Duration::from_secs(300);
            for batch in 0..BATCHES {
                let body = ndjson(batch * BATCH..(batch + 1) * BATCH, &bodies);
                loop {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "batch {batch} was not acknowledged within 300 s"
                    );
                    let sent = client
                        .post(&url)
                        .body(body.clone())
                        .timeout(Duration::from_secs(120))
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status() == 202 => break,
                        _ => tokio::time::sleep(Duration::from_millis(300)).await,
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
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
    sender.await.unwrap();
    let expected = (BATCHES * BATCH) as u64;
    wait_for_latest(&client, &server, expected, "after the broker restart").await;
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

/// Every message of a topic, read from the start by a plain librdkafka
/// consumer (as `kafka-console-consumer --from-beginning` would).
fn messages_of(broker: &Broker, topic: &str, partitions: i32, expected: usize) -> Vec<Value> {
    use rdkafka::message::Message;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .set("group.id", "it-plain-reader")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while out.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            let payload = message.payload().unwrap_or_default();
            out.push(serde_json::from_slice(payload).unwrap_or_else(|e| {
                panic!(
                    "{topic} holds a record that is not JSON ({e}): {}",
                    String::from_utf8_lossy(payload)
                )
            }));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_kafka_clients_write_posts_chorus_takes_and_read_its_posts_as_json() {
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
    let OnKafka {
        broker,
        data,
        server,
        _dir,
        ..
    } = on_kafka("it-json.", "json");
    let client = reqwest::Client::new();
    // One post through the API first, so the topics exist.
    send_all(&client, &server, 0..1, &corpus_bodies()).await;
    wait_for_count(&client, &server, 1, Duration::from_secs(60)).await;

    // A plain producer, with its own choice of partitions: a canonical
    // record, a Reddit comment as the API returns it, the canonical one
    // again in another partition, and a record that is no post.
    let canonical = r#"{"platform":"reddit","id":"t1_kafka1","community":"rust","body":"Kafka interop is wonderful","created_at":"2024-01-02T03:04:05Z"}"#;
    let reddit = r#"{"id":"kafka2","name":"t1_kafka2","subreddit":"news","author":"someone","body":"This is a terrible outage","created_utc":1704164645,"score":12,"link_id":"t3_q","parent_id":"t3_q"}"#;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", &broker.address)
        .create()
        .unwrap();
    for (partition, payload) in [(0, canonical), (0, reddit), (2, canonical), (1, r#"{"no":"post"}"#)] {
        producer
            .send(
                BaseRecord::<str, str>::to("it-json.posts.raw")
                    .partition(partition)
                    .payload(payload),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    // Both posts enriched, the one sent twice counted once.
    let deadline = Instant::now() + Duration::from_secs(120);
    let rows = loop {
        let rows = sql(
            &client,
            &server,
            "SELECT id, community, CAST(date_part('epoch', created_at) AS BIGINT) AS created_s, sentiment, score \
             FROM posts_latest WHERE id LIKE 't1_kafka%' ORDER BY id",
        )
        .await;
        if rows.len() == 2 {
            break rows;
        }
        assert!(rows.len() < 2, "{rows:?}");
        assert!(
            Instant::now() < deadline,
            "the posts of another producer were not taken: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(rows[0]["community"], "rust");
    assert_eq!(rows[0]["sentiment"], "positive");
    assert_eq!(rows[0]["created_s"], 1_704_164_645, "RFC 3339 read as the API reads it");
    assert_eq!(rows[1]["community"], "news");
    assert_eq!(rows[1]["sentiment"], "negative");
    assert_eq!(rows[1]["score"], 12);

    // The record that is no post is a dead letter with its reason.
    let dead = messages_of(&broker, "it-json.posts.dead", 3, 1);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].to_string().contains("not a raw post"), "{}", dead[0]);

    // posts.enriched is JSON any client reads: the record's columns.
    let enriched = messages_of(&broker, "it-json.posts.enriched", 3, 3);
    let ours: Vec<&Value> = enriched.iter().filter(|p| p["id"] == "t1_kafka1").collect();
    assert!(!ours.is_empty(), "{enriched:?}");
    for column in [
        "platform",
        "body",
        "text",
        "created_at",
        "ingested_at",
        "polarity",
        "vader_compound",
    ] {
        assert!(!ours[0][column].is_null(), "{column} missing: {}", ours[0]);
    }
    assert_eq!(ours[0]["sentiment"], "positive");

    // `chorus tail` reads the topics as kafka-console-consumer would:
    // through the running server, and straight from the broker on another
    // data directory (no server there).
    let tail = |data: &std::path::Path, args: &[&str]| -> Vec<Value> {
        let out = crate::server::chorus()
            .arg("--data")
            .arg(data)
            .arg("--config")
            .arg(_dir.path().join("data.toml"))
            .args(["tail", "--from-beginning", "--no-follow"])
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "chorus tail {args:?}: {stderr}");
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    };
    let through_server = tail(&data, &[]);
    let from_broker = tail(&_dir.path().join("elsewhere"), &[]);
    let on_topic = records_on(&broker, "it-json.posts.enriched", 3);
    assert_eq!(through_server.len() as u64, on_topic, "{through_server:?}");
    let ids = |records: &[Value]| {
        let mut ids: Vec<String> = records.iter().map(|r| r["id"].as_str().unwrap().to_string()).collect();
        ids.sort();
        ids
    };
    assert_eq!(ids(&from_broker), ids(&through_server));
    for id in ["t1_kafka1", "t1_kafka2"] {
        assert!(ids(&through_server).iter().any(|i| i == id), "{id}: {through_server:?}");
    }
    let dead = tail(&_dir.path().join("elsewhere"), &["--topic", "dead"]);
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].to_string().contains("not a raw post"), "{}", dead[0]);
    server.stop();
}

/// A counter's value in `/metrics` (0 when absent).
async fn counter(client: &reqwest::Client, server: &Server, name: &str) -> u64 {
    let text = crate::server::metrics(client, server).await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok())
        .unwrap_or(0.0) as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_enrich_process_takes_half_the_partitions_and_its_kill_loses_nothing() {
    const BATCH: usize = 500;
    const SESSION_MS: &str = "6000";
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"it-roles.\"\npartitions = 4\n\
         [archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 300\n",
        broker.address
    );
    let env = [("CHORUS_KAFKA_SESSION_TIMEOUT_MS", SESSION_MS)];
    // Every stage in one process; a second one that only enriches, with
    // its own data directory (its local state), on the same brokers.
    let main = Server::start(&dir.path().join("main"), &config, &env);
    let helper = Server::start_roles(&dir.path().join("helper"), &config, &env, "enrich");
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();

    // The helper answers for itself but takes no posts and serves no SQL.
    let refused = client
        .post(helper.url("/v1/posts"))
        .body(ndjson(0..1, &bodies))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 404);
    let message: Value = refused.json().await.unwrap();
    assert!(message["error"].as_str().unwrap().contains("roles enrich"), "{message}");

    // Posts until both processes have enriched some: the group split the
    // partitions between them.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        send_all(&client, &main, sent..sent + BATCH, &bodies).await;
        sent += BATCH;
        let (by_main, by_helper) = (
            counter(&client, &main, "chorus_enrich_posts_read_total").await,
            counter(&client, &helper, "chorus_enrich_posts_read_total").await,
        );
        if by_main > 0 && by_helper > 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the partitions were not split: main enriched {by_main}, helper {by_helper}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Sent again: an exact re-submission is dropped by the enrich stage of
    // whichever process owns its partition, so `posts` (every version)
    // holds each post once.
    send_all(&client, &main, 0..BATCH, &bodies).await;
    wait_for_count(&client, &main, sent as u64, Duration::from_secs(120)).await;
    wait_for_latest(&client, &main, sent as u64, "with two enrich processes").await;

    // kill -9 of the helper while posts stream in; the main process takes
    // its partitions over once the session timeout has passed.
    let sender = stream_posts(&client, &main, &bodies, (sent, 10, BATCH), Duration::from_millis(100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    helper.kill9();
    let killed = Instant::now();
    sender.await.unwrap();
    sent += 10 * BATCH;
    wait_for_latest(&client, &main, sent as u64, "after the helper was killed").await;
    let took = killed.elapsed();
    // The session timeout, then a rebalance, a catch-up of the state, the
    // search for output past the last commit and an archive file: 10-20 s
    // alone, up to 32 s with other brokers' tests beside it.
    assert!(took < Duration::from_secs(60), "took over in {took:?}");
    eprintln!("the main process took the killed one's partitions over in {took:?}");
    // Nothing doubled, nothing lost: every post sent, once, in SQL and
    // search.
    let rows = sql(
        &client,
        &main,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids, min(CAST(substr(id, 4) AS BIGINT)) AS lo, \
         max(CAST(substr(id, 4) AS BIGINT)) AS hi FROM posts_latest",
    )
    .await;
    assert_eq!(
        (
            rows[0]["n"].as_u64(),
            rows[0]["ids"].as_u64(),
            rows[0]["lo"].as_u64(),
            rows[0]["hi"].as_u64()
        ),
        (Some(sent as u64), Some(sent as u64), Some(0), Some(sent as u64 - 1))
    );
    // Nor in `posts` (every version): no partition was enriched by two
    // processes at once, during the split or the takeover.
    wait_for_count(&client, &main, sent as u64, Duration::from_secs(60)).await;
    main.stop();
    drop(broker);
}

#[test]
fn roles_are_refused_where_they_cannot_work() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chorus.toml");
    std::fs::write(&config, "").unwrap();
    let data = dir.path().join("data");
    for (roles, says) in [
        ("enrich", "embedded log belongs to one process"),
        (
            "ingest,enrich,archive,index,serve,batch,search",
            "unknown role \"search\"",
        ),
        ("", "no role given"),
    ] {
        let out = crate::server::chorus()
            .arg("--data")
            .arg(&data)
            .arg("--config")
            .arg(&config)
            .args(["run", "--listen", "127.0.0.1:0", "--roles", roles])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--roles {roles} was accepted");
        assert!(stderr.contains(says), "--roles {roles}: {stderr}");
    }
}

/// A stage killed mid-transaction: the enrich stage's output is on the
/// broker, its state and its commit are not (a test hook aborts the process
/// right after the appends: tansu has no Kafka transactions to make the
/// three one). After the restart the stage reads that input again, finds
/// its output on the broker by the input each record names, and does not
/// append it twice: `posts` (every version of every post) and the topic
/// hold each post once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_killed_between_its_appends_and_its_commit_appends_nothing_twice() {
    const BODIES: usize = 6;
    const BATCH: usize = 1000;
    let OnKafka {
        broker,
        data,
        config,
        server,
        _dir,
    } = on_kafka("it-midtx.", "json");
    server.stop();
    let mut server = Server::start_with(
        &data,
        &config,
        &[("CHORUS_TEST_ABORT_AFTER_APPENDS", "2")],
        &["--listen", "127.0.0.1:0"],
    );
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let mut acked = Vec::new();
    for body in 0..BODIES {
        let sent = client
            .post(server.url("/v1/posts"))
            .body(ndjson(body * BATCH..(body + 1) * BATCH, &bodies))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => acked.push(body),
            _ => break,
        }
    }
    // The hook fired: the process aborted (SIGABRT), it did not stop.
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the process did not abort mid-transaction");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status:?}");
    assert!(!acked.is_empty(), "nothing was acknowledged before the abort");

    let server = restart_and_resend(&client, (&data, &config), BODIES, BATCH, &acked, &bodies).await;
    let expected = (BODIES * BATCH) as u64;
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts",
    )
    .await;
    assert_eq!(
        (rows[0]["n"].as_u64(), rows[0]["ids"].as_u64()),
        (Some(expected), Some(expected)),
        "every version of every post once in posts"
    );
    assert_eq!(records_on(&broker, "it-midtx.posts.enriched", 3), expected);
    server.stop();
}

/// Post files of the archive at `root`: (compacted, rolled).
fn archive_files(root: &std::path::Path) -> (usize, usize) {
    let mut stack = vec![root.join("posts")];
    let (mut compacted, mut rolled) = (0, 0);
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.path().is_dir() {
                stack.push(entry.path());
            } else if name.starts_with("c-") {
                compacted += 1;
            } else if name.starts_with('p') {
                rolled += 1;
            }
        }
    }
    (compacted, rolled)
}

/// `chorus run --roles index,serve` in a process of its own (its own data
/// directory, the archive shared through `[archive] url`) answers SQL over
/// the files the archive process writes and the log past them, and search
/// from its own index. Queried without pause while posts stream in, files
/// roll every second and every hour is compacted again every second, it
/// never counts a post twice and never loses one it counted before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_process_of_its_own_counts_each_post_once_across_rolls_and_compactions() {
    const BATCH: usize = 250;
    const BATCHES: usize = 24;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let archive = dir.path().join("shared-archive");
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"it-serve.\"\npartitions = 3\n\
         [archive]\nurl = \"file://{}\"\nmax_file_age_secs = 1\n\
         [lifecycle]\ninterval_secs = 1\ncompact_after_secs = 0\ncompact_min_files = 2\n\
         [query]\nmax_seconds = 300\n",
        broker.address,
        archive.display()
    );
    let writer = Server::start_roles(
        &dir.path().join("writer"),
        &config,
        &[],
        "ingest,enrich,archive,serve,batch",
    );
    let reader = Server::start_roles(&dir.path().join("reader"), &config, &[], "index,serve");
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();

    // A second process cannot write the same archive.
    let out = crate::server::chorus()
        .arg("--data")
        .arg(dir.path().join("third"))
        .arg("--config")
        .arg(dir.path().join("writer.toml"))
        .args(["run", "--listen", "127.0.0.1:0", "--roles", "archive"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second archive process started");
    assert!(stderr.contains("written by another chorus process"), "{stderr}");
    // What changes the archive is not the reader's to do.
    for route in ["/v1/batch", "/v1/lifecycle"] {
        let r = client.post(reader.url(route)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{route}");
    }

    // Posts stream in while the reader is queried without pause.
    let sender = stream_posts(
        &client,
        &writer,
        &bodies,
        (0, BATCHES, BATCH),
        Duration::from_millis(400),
    );
    let total = (BATCH * BATCHES) as u64;
    let (mut seen, mut queries) = (0u64, 0);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut settled = None;
    loop {
        let rows = sql(
            &client,
            &reader,
            "SELECT count(*) AS n, count(DISTINCT id) AS ids FROM posts",
        )
        .await;
        queries += 1;
        let (n, ids) = (rows[0]["n"].as_u64().unwrap(), rows[0]["ids"].as_u64().unwrap());
        assert_eq!(n, ids, "query {queries}: a post counted twice ({n} rows, {ids} ids)");
        assert!(n >= seen, "query {queries}: {n} posts after {seen}: some were lost");
        assert!(n <= total, "query {queries}: {n} posts of {total} sent");
        seen = n;
        // Once every post is there, the compactions go on a while longer
        // (every hour is compacted again as late files come): keep asking.
        if n == total && settled.is_none() {
            settled = Some(Instant::now());
        }
        if settled.is_some_and(|at| at.elapsed() > Duration::from_secs(5)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {n} of {total} posts after {queries} queries"
        );
    }
    sender.await.unwrap();
    // Rolled files were compacted under the queries.
    let (compacted, _) = archive_files(&archive);
    assert!(compacted > 0, "nothing was compacted");
    assert!(
        archive.join(".retired").exists(),
        "no file was replaced by a compaction"
    );
    wait_for_latest(&client, &reader, total, "in the reader").await;

    // Search from the reader's own index.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let found: Value = get_json(&client, &reader, "/v1/search?limit=1").await;
        if found["total"] == total {
            break;
        }
        assert!(Instant::now() < deadline, "search found {found}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A view the writer built (speed layer off, the default: its final
    // columns) is served by the reader as by the writer.
    let runs = crate::server::batch(&client, &writer, Some("by_location")).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let by_writer: Value = get_json(&client, &writer, "/v1/views/by_location").await;
    let by_reader: Value = get_json(&client, &reader, "/v1/views/by_location").await;
    assert_eq!(by_reader, by_writer);
    assert_eq!(by_reader["rows"][0]["count_id"], total, "{by_reader}");
    eprintln!("{queries} queries, {compacted} compacted files");
    reader.stop();
    writer.stop();
    drop(broker);
}

/// With the speed layer on, a view's version holds partial sums the writer's
/// speed layer adds to: a query process of its own, which has none, says so
/// instead of answering with part of the view.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_process_says_why_it_does_not_serve_a_view_of_partial_sums() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"it-partial.\"\npartitions = 2\n\
         [archive]\nurl = \"file://{}\"\nmax_file_age_secs = 1\n[batch]\nspeed_layer = true\n",
        broker.address,
        dir.path().join("shared-archive").display()
    );
    let writer = Server::start(&dir.path().join("writer"), &config, &[]);
    let reader = Server::start_roles(&dir.path().join("reader"), &config, &[], "serve");
    let client = reqwest::Client::new();
    send_all(&client, &writer, 0..1000, &corpus_bodies()).await;
    wait_for_count(&client, &writer, 1000, Duration::from_secs(120)).await;
    crate::server::batch(&client, &writer, Some("by_location")).await;
    let served: Value = get_json(&client, &writer, "/v1/views/by_location").await;
    assert_eq!(served["rows"][0]["count_id"], 1000, "{served}");
    let refused = client.get(reader.url("/v1/views/by_location")).send().await.unwrap();
    assert_eq!(refused.status(), 404);
    let message: Value = refused.json().await.unwrap();
    let message = message["error"].as_str().unwrap();
    assert!(
        message.contains("partial sums, not served here") && message.contains("runs the archive role"),
        "{message}"
    );
    // A query process on another log (here: another topic prefix) would
    // take the archive's file names for its own log's offsets: refused.
    let stranger = dir.path().join("stranger");
    std::fs::write(
        stranger.with_extension("toml"),
        config.replace("it-partial.", "it-stranger."),
    )
    .unwrap();
    let stderr = crate::server::run_refused(
        &stranger,
        &stranger.with_extension("toml"),
        &["run", "--listen", "127.0.0.1:0", "--roles", "serve"],
        &[],
    );
    assert!(stderr.contains("belongs to another log"), "{stderr}");
    reader.stop();
    writer.stop();
    drop(broker);
}

/// Enrich processes joining the group while posts stream in: each
/// partition is enriched by one process at a time, so `posts` (every
/// version of every post) holds each post once. With cooperative-sticky
/// rebalancing, tansu 0.6 gave the third process partitions the second
/// still held, and 330 of 20,000 posts were enriched twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enrich_processes_joining_mid_stream_never_enrich_a_post_twice() {
    const BATCH: usize = 500;
    const BATCHES: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start(dir.path().join("broker"));
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"it-join.\"\npartitions = 6\n\
         [archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 300\n",
        broker.address
    );
    let main = Server::start(&dir.path().join("main"), &config, &[]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    let second = Server::start_roles(&dir.path().join("second"), &config, &[], "enrich");
    let sender = stream_posts(&client, &main, &bodies, (0, BATCHES, BATCH), Duration::from_millis(250));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let third = Server::start_roles(&dir.path().join("third"), &config, &[], "enrich");
    sender.await.unwrap();
    let sent = (BATCHES * BATCH) as u64;
    wait_for_latest(&client, &main, sent, "with three enrich processes").await;
    wait_for_count(&client, &main, sent, Duration::from_secs(60)).await;
    for (name, helper) in [("second", &second), ("third", &third)] {
        let read = counter(&client, helper, "chorus_enrich_posts_read_total").await;
        assert!(read > 0, "the {name} process enriched nothing");
    }
    // Any post enriched twice would have come by now (its partition's
    // lag is zero): `posts` still holds each once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rows = sql(&client, &main, "SELECT count(*) AS n FROM posts").await;
    assert_eq!(rows[0]["n"].as_u64(), Some(sent));
    second.stop();
    third.stop();
    main.stop();
    drop(broker);
}
