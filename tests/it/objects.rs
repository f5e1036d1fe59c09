//! The archive on a real S3-compatible server (s3s-fs, built and named by
//! scripts/test.sh) through the real binary: `[archive] url = "s3://…"`.
//! Posts survive kill -9 exactly once, SQL answers as over the same posts
//! archived on disk, dead letters land in the bucket's `errors/`, and
//! compaction and retention work on the bucket while queries run.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chorus::sinks::archive::objects::testing::S3Server;
use serde_json::{Value, json};

use crate::lifecycle::{CHECK, files_per_hour_under, lifecycle_under_queries, recent_posts};
use crate::server::{Server, corpus_bodies, get_json, ndjson, post_accepted, sql, wait_for_count, wait_idle};

/// The bucket and the archive's prefix in it.
const BUCKET: &str = "lake";
const PREFIX: &str = "team/chorus";

/// Files roll every second; passes and views only when the test asks
/// (`lifecycle`: more of `[lifecycle]`); the index off (not what is tested
/// here).
fn settings(lifecycle: &str) -> String {
    format!(
        "max_file_age_secs = 1\n[lifecycle]\nscheduler = false\ncompact_after_secs = 0\ncompact_min_files = 2\n\
         {lifecycle}[index]\nenabled = false\n[batch]\nscheduler = false\n[query]\nmax_seconds = 300\n"
    )
}

/// The configuration of a data directory whose archive is on `server`.
fn on_s3(server: &S3Server, lifecycle: &str) -> String {
    format!(
        "[archive]\nurl = \"s3://{BUCKET}/{PREFIX}\"\nendpoint = \"{}\"\nallow_http = true\n{}",
        server.endpoint,
        settings(lifecycle)
    )
}

/// The same with the archive on disk.
fn on_disk() -> String {
    format!("[archive]\n{}", settings(""))
}

/// Where s3s-fs keeps the archive's objects as files.
fn in_bucket(server: &S3Server, dir: &str) -> std::path::PathBuf {
    server.dir().join(BUCKET).join(PREFIX).join(dir)
}

/// Posts `batch * BATCH ..` as NDJSON.
const BATCH: usize = 400;

fn batch(n: usize, bodies: &[String]) -> String {
    ndjson(n * BATCH..(n + 1) * BATCH, bodies)
}

/// A post from the year 10000 written straight into the log of `data`, as
/// an older version accepted: enrich sends it to the dead letters.
fn plant_dead_letter(data: &Path) {
    use chorus::record::IncomingPost;
    crate::server::plant_raw(
        data,
        vec![IncomingPost::new(
            "bluesky",
            "at://far",
            "far future",
            253_402_300_800_000_000,
        )],
    );
}

/// Questions whose answers must not depend on where the archive is.
const QUESTIONS: &[&str] = &[
    // Sums of floats rounded: the order of the additions differs.
    "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(score) AS score, round(sum(polarity), 6) AS polarity, \
     round(sum(vader_compound), 6) AS compound, min(created_at) AS first, max(created_at) AS last FROM posts",
    "SELECT community, count(*) AS n, sum(score) AS score FROM posts_latest GROUP BY community ORDER BY community",
    "SELECT dt, hour, count(*) AS n FROM posts GROUP BY dt, hour ORDER BY dt, hour",
    "SELECT sentiment, count(*) AS n FROM posts_latest GROUP BY sentiment ORDER BY sentiment",
];

/// The answers of [`QUESTIONS`] on a running server.
async fn answers(client: &reqwest::Client, server: &Server) -> Vec<Vec<Value>> {
    let mut out = Vec::new();
    for q in QUESTIONS {
        out.push(sql(client, server, q).await);
    }
    out
}

/// At most this many batches a round, a pause apart: the kill lands while
/// files roll, and the archive stays small enough for a debug build's
/// queries over many small objects.
const BATCHES_A_ROUND: usize = 6;

/// A client that sends batches from `first` on, one after the other,
/// until the server dies: the batches acknowledged, the one in flight (or
/// the next to send), and the next new one.
async fn send_until_killed(
    client: reqwest::Client,
    url: String,
    bodies: Arc<Vec<String>>,
    mut queue: Vec<usize>,
    first: usize,
) -> (Vec<usize>, usize, usize) {
    let mut acked = Vec::new();
    let mut fresh = first;
    loop {
        let n = queue.pop().unwrap_or_else(|| {
            fresh += 1;
            fresh - 1
        });
        if acked.len() >= BATCHES_A_ROUND {
            // Enough for this round: wait for the kill.
            while client.get(url.replace("/v1/posts", "/healthz")).send().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            return (acked, n, fresh);
        }
        tokio::time::sleep(Duration::from_millis(150)).await;
        match client.post(&url).body(batch(n, &bodies)).send().await {
            Ok(r) if r.status() == 202 => acked.push(n),
            Ok(r) if r.status() == 429 => {
                queue.push(n);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Ok(r) => panic!("ingest answered {} before the kill", r.status()),
            Err(_) => return (acked, n, fresh),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_with_the_archive_on_s3_loses_and_doubles_nothing_and_sql_answers_as_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path(), BUCKET);
    let env = s3.env();
    let data = dir.path().join("data");
    plant_dead_letter(&data);
    let config = on_s3(&s3, "");
    let bodies = Arc::new(corpus_bodies());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();

    // Sends killed at moments that vary: files rolled and put, some
    // committed, some not (a kill between a PUT and its commit leaves an
    // object whose offsets the next start finds uncommitted).
    let mut acknowledged: HashSet<usize> = HashSet::new();
    let (mut retry, mut next) = (Vec::new(), 0usize);
    for kill_after in [1300u64, 2100, 900, 1700] {
        let server = Server::start(&data, &config, &env);
        let sender = tokio::spawn(send_until_killed(
            client.clone(),
            server.url("/v1/posts"),
            bodies.clone(),
            std::mem::take(&mut retry),
            next,
        ));
        tokio::time::sleep(Duration::from_millis(kill_after)).await;
        server.kill9();
        let (acked, failed, fresh) = sender.await.unwrap();
        acknowledged.extend(acked);
        retry.push(failed);
        next = fresh;
    }
    let server = Server::start(&data, &config, &env);
    for n in retry {
        post_accepted(&client, &server, batch(n, &bodies)).await;
        acknowledged.insert(n);
    }
    // A client that never saw a 202 sends a batch again: nothing doubles.
    post_accepted(&client, &server, batch(0, &bodies)).await;
    acknowledged.insert(0);
    let posts = acknowledged.len() * BATCH;
    assert!(
        acknowledged.len() >= 4,
        "too few batches went through: {acknowledged:?}"
    );
    wait_for_count(&client, &server, posts as u64, Duration::from_secs(300)).await;
    wait_idle(&client, &server).await;
    let on_s3 = answers(&client, &server).await;
    assert_eq!(on_s3[0][0]["n"], posts, "{:?}", on_s3[0]);
    assert_eq!(on_s3[0][0]["ids"], posts);
    let status = get_json(&client, &server, "/v1/status").await;
    assert!(status["archive"]["files"].as_u64().unwrap() > 0, "{status}");

    // The same posts, sent once to a server whose archive is on disk.
    let disk_data = dir.path().join("disk");
    let disk = Server::start(&disk_data, &on_disk(), &[]);
    let mut sent: Vec<usize> = acknowledged.iter().copied().collect();
    sent.sort();
    for n in &sent {
        post_accepted(&client, &disk, batch(*n, &bodies)).await;
    }
    wait_for_count(&client, &disk, posts as u64, Duration::from_secs(300)).await;
    wait_idle(&client, &disk).await;
    assert_eq!(answers(&client, &disk).await, on_s3, "the same SQL over the same posts");
    disk.stop();

    // Stopped: every post is in the bucket, once (no leftover of a kill),
    // as a reader of the objects alone sees them.
    server.stop();
    let files = chorus::sinks::archive::files_under(&in_bucket(&s3, "posts")).unwrap();
    assert!(
        files.iter().all(|f| f.extension().is_some_and(|e| e == "parquet")),
        "{files:?}"
    );
    let glob = in_bucket(&s3, "posts").join("*/*/*.parquet");
    let row = crate::server::duckdb_row(
        "",
        &format!(
            "SELECT count(*), count(DISTINCT id) FROM read_parquet('{}', hive_partitioning = true)",
            glob.display()
        ),
    );
    assert_eq!(row, [Some(posts as f64), Some(posts as f64)]);
    // Nothing left in the staging directory.
    assert!(
        chorus::sinks::archive::files_under(&data.join("archive/.tmp"))
            .unwrap()
            .is_empty()
    );
    // The dead letter is in the bucket's errors/, with its reason.
    let errors = chorus::sinks::archive::files_under(&in_bucket(&s3, "errors")).unwrap();
    let letters: Vec<Value> = errors
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(f)
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert!(
        letters[0]["error"].as_str().unwrap().contains("out of bounds"),
        "{letters:?}"
    );

    // Offline, `chorus sql` and `chorus status` read the same bucket.
    let config_path = data.with_extension("toml");
    let out = crate::server::chorus()
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .args(["sql", "--format", "json", QUESTIONS[0]])
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let offline: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(offline, json!(on_s3[0]));
    // Spectrum's partitions are the bucket's hours, listed.
    let out = crate::server::chorus()
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config_path)
        .args(["ddl", "redshift", "--iam-role", "arn:aws:iam::1:role/r"])
        .envs(env)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let ddl = String::from_utf8(out.stdout).unwrap();
    let added: Vec<&str> = ddl
        .lines()
        .filter(|l| l.contains("ADD IF NOT EXISTS PARTITION"))
        .filter_map(|l| l.split(&format!("LOCATION 's3://{BUCKET}/{PREFIX}/posts/")).nth(1))
        .map(|l| l.trim_end_matches("/';"))
        .collect();
    let hours: Vec<String> = crate::lifecycle::files_per_hour_under(&in_bucket(&s3, "posts"))
        .into_keys()
        .collect();
    assert_eq!(added, hours, "{ddl}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn compaction_and_retention_on_s3_under_running_queries_keep_every_post_once() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path(), BUCKET);
    let env = s3.env();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let server = Server::start(&data, &on_s3(&s3, ""), &env);
    // Four sends a roll apart: several files in each hour of three days.
    for round in 0..4 {
        post_accepted(&client, &server, ndjson(round * 300..(round + 1) * 300, &bodies)).await;
        wait_for_count(&client, &server, (round as u64 + 1) * 300, Duration::from_secs(120)).await;
        wait_idle(&client, &server).await;
    }
    let posts = in_bucket(&s3, "posts");
    let before = files_per_hour_under(&posts);
    let many = before.values().filter(|f| f.len() >= 2).count();
    assert!(many >= 24, "too few hours with several files to test: {before:?}");
    let expected = sql(&client, &server, CHECK).await;
    assert_eq!(expected[0]["n"], 1200);

    // Queries run without pause while the bucket is compacted.
    let run = lifecycle_under_queries(&client, &server, &expected).await;
    assert_eq!(run["compaction"]["hours"], many as u64, "{run}");
    assert_eq!(run["compaction"]["files_after"], many as u64, "{run}");

    // One compacted object per such hour; the replaced ones retired out of
    // what other engines read, which see every post once.
    let after = files_per_hour_under(&posts);
    for (hour, files) in &after {
        if before[hour].len() >= 2 {
            assert!(files.len() == 1 && files[0].starts_with("c-"), "{hour}: {files:?}");
        } else {
            assert_eq!(files, &before[hour], "{hour}");
        }
    }
    let glob = posts.join("*/*/*.parquet");
    let row = crate::server::duckdb_row("", &format!("SELECT count(*) FROM read_parquet('{}')", glob.display()));
    assert_eq!(row, [Some(1200.0)]);
    assert_eq!(sql(&client, &server, CHECK).await, expected);
    server.stop();

    // Retention: the 2019 hours go, posts of the last hours stay.
    let recent = recent_posts(50, &bodies);
    let config = on_s3(&s3, "archive_retention_days = 30\n");
    let server = Server::start(&data, &config, &env);
    post_accepted(&client, &server, recent).await;
    wait_for_count(&client, &server, 1250, Duration::from_secs(120)).await;
    wait_idle(&client, &server).await;
    let r = client.post(server.url("/v1/lifecycle")).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let run: Value = r.json().await.unwrap();
    assert_eq!(run["expired"]["hours"], before.len() as u64, "{run}");
    assert_eq!(
        sql(&client, &server, "SELECT count(*) AS n FROM posts").await[0]["n"],
        50
    );
    // (s3s-fs keeps the emptied directories.)
    for (hour, files) in files_per_hour_under(&posts) {
        assert!(!hour.starts_with("dt=2019") || files.is_empty(), "{hour}: {files:?}");
    }
    // The retired copies wait under .retired/ for the queries that may
    // still read them.
    let retired = chorus::sinks::archive::files_under(&in_bucket(&s3, ".retired")).unwrap();
    assert!(
        retired.len() >= before.values().map(Vec::len).sum::<usize>(),
        "{}",
        retired.len()
    );
    server.stop();
}

/// One writer per bucket. Two processes share a Kafka log and an `s3://`
/// archive (each its own data directory, as on two machines): the second
/// is refused while the first holds the writer lease; once the first is
/// killed and its lease has run out unrenewed, the second takes the archive
/// over and adds to it from the log's committed offsets; a clean stop hands
/// the lease back at once; and a writer whose lease another process took
/// stops instead of writing on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_has_one_writer_at_a_time_and_a_dead_writers_lease_runs_out() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start(dir.path(), BUCKET);
    let broker = chorus::log::kafka::testing::Broker::start(dir.path().join("broker"));
    let env = s3.env();
    let config = format!(
        "[log]\nbackend = \"kafka\"\nbrokers = \"{}\"\ntopic_prefix = \"it-lease.\"\npartitions = 2\n{}",
        broker.address,
        on_s3(&s3, "").replace("allow_http = true\n", "allow_http = true\nlease_secs = 3\n")
    );
    let lease = in_bucket(&s3, ".writer");
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();

    let first = Server::start(&dir.path().join("first"), &config, &env);
    post_accepted(&client, &first, batch(0, &bodies)).await;
    wait_idle(&client, &first).await;
    assert!(lease.exists(), "no lease object in the bucket");
    let second_data = dir.path().join("second");
    std::fs::write(second_data.with_extension("toml"), &config).unwrap();
    let refused = |what: &str| {
        let stderr = crate::server::run_refused(
            &second_data,
            &second_data.with_extension("toml"),
            &["run", "--listen", "127.0.0.1:0"],
            &env,
        );
        assert!(
            stderr.contains("is written by another chorus process") && stderr.contains("lease runs out"),
            "{what}: {stderr}"
        );
    };
    refused("beside a running writer");

    // Killed: its lease stays until it runs out, then the second takes over.
    first.kill9();
    let killed = std::time::Instant::now();
    refused("right after the kill");
    let second = loop {
        if let Ok(server) = std::panic::catch_unwind(|| Server::start(&second_data, &config, &env)) {
            break server;
        }
        assert!(killed.elapsed() < Duration::from_secs(30), "never took the lease over");
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(
        killed.elapsed() >= Duration::from_secs(2),
        "took over after {:?}, before the lease ran out",
        killed.elapsed()
    );
    post_accepted(&client, &second, batch(1, &bodies)).await;
    wait_for_count(&client, &second, 2 * BATCH as u64, Duration::from_secs(120)).await;
    wait_idle(&client, &second).await;
    let rows = sql(&client, &second, "SELECT count(DISTINCT id) AS ids FROM posts").await;
    assert_eq!(
        rows[0]["ids"],
        2 * BATCH,
        "the first writer's posts and the second's, once each"
    );

    // A clean stop deletes the lease: the next writer starts at once.
    second.stop();
    assert!(!lease.exists(), "the lease outlived a clean stop");
    let mut third = Server::start(&second_data, &config, &env);

    // Another process takes the lease (here: overwrites it): the writer's
    // next renewal is refused and it stops rather than write on.
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        r#"{"host":"elsewhere","pid":1,"staging":"/x","renewed_at":9000000000000000,"lease_secs":3}"#,
    )
    .unwrap();
    s3.archive(&format!("s3://{BUCKET}/{PREFIX}"))
        .put_file(&other, ".writer")
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        // Posts keep coming, so the archive has files to put.
        let _ = client.post(third.url("/v1/posts")).body(batch(2, &bodies)).send().await;
        if let Some(status) = third.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the writer went on without its lease"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(!status.success(), "{status:?}");
    drop(broker);
}
