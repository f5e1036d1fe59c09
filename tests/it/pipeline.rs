//! The pipeline end to end through the real binary: HTTP ingest → log →
//! enrich → archive → SQL, crash recovery, an independent Parquet reader,
//! and the documented errors for bad input.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Server, chorus, corpus_bodies, metrics, ndjson, post, sql, sql_first_row, wait_for_count};

/// Files roll every second, so queries cross the archive boundary; queries
/// of a debug build get time while the other tests load both cores (a
/// lookup in `posts` once passed the default 30 s in CI: what is asserted
/// is the answer, not its latency).
const FAST_ROLL: &str = "[archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 300\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_posts_over_http_are_counted_once_and_read_by_duckdb() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for part in 0..4 {
        let (client, url, bodies) = (client.clone(), server.url("/v1/posts"), bodies.clone());
        senders.push(tokio::spawn(async move {
            for batch in (part..N / 1000).step_by(4) {
                let body = ndjson(batch * 1000..(batch + 1) * 1000, &bodies);
                loop {
                    let response = client.post(&url).body(body.clone()).send().await.unwrap();
                    if response.status() == 429 {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    assert_eq!(response.status(), 202);
                    let answer: Value = response.json().await.unwrap();
                    assert_eq!(answer, json!({"accepted": 1000, "rejected": []}));
                    break;
                }
            }
        }));
    }
    for s in senders {
        s.await.unwrap();
    }
    wait_for_count(&client, &server, N as u64, Duration::from_secs(600)).await;

    // Every post once: as many rows as posts sent, each id once.
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(DISTINCT platform || '/' || id) AS ids, sum(polarity) AS p, \
         count(DISTINCT dt) AS days FROM posts",
    )
    .await;
    assert_eq!(rows[0]["n"], N);
    assert_eq!(rows[0]["ids"], N);
    assert_eq!(rows[0]["days"], 3);
    let polarity = rows[0]["p"].as_f64().unwrap();
    // Scored as Python scores them: where cleanup left the body as it was,
    // each score equals the Python golden of that body, bit for bit.
    let goldens: std::collections::HashMap<String, Value> =
        std::fs::read_to_string(crate::fixture("sentiment/reddit_comments.expected.ndjson"))
            .unwrap()
            .lines()
            .zip(bodies.iter())
            .map(|(line, body)| (body.clone(), serde_json::from_str(line).unwrap()))
            .collect();
    let groups = sql(
        &client,
        &server,
        "SELECT body, polarity, subjectivity, vader_compound, count(*) AS n FROM posts WHERE text = body \
         GROUP BY 1, 2, 3, 4",
    )
    .await;
    let mut checked = 0;
    for group in &groups {
        let golden = &goldens[group["body"].as_str().unwrap()];
        for (ours, python) in [
            ("polarity", "textblob_polarity"),
            ("subjectivity", "textblob_subjectivity"),
            ("vader_compound", "vader_compound"),
        ] {
            assert_eq!(
                group[ours].as_f64(),
                golden[python].as_f64(),
                "{ours} of {}",
                group["body"]
            );
        }
        checked += group["n"].as_u64().unwrap();
    }
    assert!(
        checked > N as u64 / 4,
        "only {checked} posts had a body cleanup left unchanged"
    );
    let one = sql(
        &client,
        &server,
        "SELECT body, text, community FROM posts WHERE id = 't1_7'",
    )
    .await;
    assert_eq!(one[0]["body"], post(7, &bodies)["body"]);
    assert_eq!(one[0]["community"], "worldnews");

    let metrics = metrics(&client, &server).await;
    assert!(
        metrics.contains(&format!("chorus_ingest_posts_accepted_total {N}\n")),
        "{metrics}"
    );
    assert!(metrics.contains(&format!("chorus_enrich_posts_written_total {N}\n")));

    // SIGTERM flushes the open files: then the archive alone holds
    // everything, and DuckDB reads it as Athena would.
    server.stop();
    let status = chorus().arg("--data").arg(&data).arg("status").output().unwrap();
    let status = String::from_utf8(status.stdout).unwrap();
    assert!(
        status.contains("posts.enriched   archive                100000       100000          0"),
        "{status}"
    );
    let glob = format!("{}/archive/posts/**/*.parquet", data.display());
    // The independent reader.
    let read = crate::server::duckdb_row(
        "",
        &format!(
            "SELECT count(*), sum(polarity), count(DISTINCT dt), min(hour), max(hour) FROM read_parquet('{glob}', hive_partitioning = true)"
        ),
    );
    assert_eq!(read[0], Some(N as f64));
    assert!((read[1].unwrap() - polarity).abs() < 1e-6);
    assert_eq!(read[2], Some(3.0));
    assert_eq!((read[3], read[4]), (Some(0.0), Some(23.0)));
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, sum(polarity) AS p FROM posts",
        ])
        .output()
        .unwrap();
    let csv = String::from_utf8(out.stdout).unwrap();
    let line = csv.lines().nth(1).unwrap();
    let (n, p) = line.split_once(',').unwrap();
    assert_eq!(n, N.to_string());
    assert!((p.parse::<f64>().unwrap() - polarity).abs() < 1e-6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_ingest_loses_no_acknowledged_post_and_adds_no_duplicate() {
    const BATCH: usize = 500;
    const ROUNDS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut acknowledged: HashSet<usize> = HashSet::new();
    // Batches sent without a 202 (the server died first) are sent again
    // after the restart, as a client that retries until it gets one would.
    let mut retry: Vec<usize> = Vec::new();
    let mut next_batch = 0usize;
    let mut kills_in_flight = 0usize;
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..=ROUNDS {
        let server = Server::start(&data, FAST_ROLL, &[]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let kill_after = Duration::from_millis(100 + seed % 900);
        let url = server.url("/v1/posts");
        let sender = {
            let (client, bodies) = (client.clone(), bodies.clone());
            let mut queue = std::mem::take(&mut retry);
            let first_new = next_batch;
            tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut fresh = first_new;
                loop {
                    let batch = queue.pop().unwrap_or_else(|| {
                        fresh += 1;
                        fresh - 1
                    });
                    let body = ndjson(batch * BATCH..(batch + 1) * BATCH, &bodies);
                    match client.post(&url).body(body).send().await {
                        Ok(r) if r.status() == 202 => acked.push(batch),
                        Ok(r) if r.status() == 429 => {
                            // Throttled: the same batch again, later.
                            queue.push(batch);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        Ok(r) => panic!("ingest answered {} before the kill", r.status()),
                        // A refused connection: the kill came between
                        // requests; anything else: in the middle of one.
                        Err(e) => return (acked, batch, fresh, !e.is_connect()),
                    }
                }
            })
        };
        // Kill at a moment that varies, mostly with a request in flight.
        tokio::time::sleep(kill_after).await;
        server.kill9();
        let (acked, failed, fresh, in_flight) = sender.await.unwrap();
        kills_in_flight += usize::from(in_flight);
        for batch in acked {
            acknowledged.extend(batch * BATCH..(batch + 1) * BATCH);
        }
        retry.push(failed);
        next_batch = fresh;
    }
    assert!(kills_in_flight > 0, "no kill landed while a request was in flight");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let send = |body: String| {
        let (client, url) = (client.clone(), server.url("/v1/posts"));
        async move {
            loop {
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                if r.status() != 429 {
                    return r.status();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    for batch in retry {
        assert_eq!(send(ndjson(batch * BATCH..(batch + 1) * BATCH, &bodies)).await, 202);
        acknowledged.extend(batch * BATCH..(batch + 1) * BATCH);
    }
    // A client that never saw a 202 sends the same batch again: dropped.
    assert_eq!(send(ndjson(0..BATCH, &bodies)).await, 202);
    assert!(acknowledged.contains(&0) && acknowledged.len() >= 2 * BATCH);
    // Wait until the stages have caught up, then compare.
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let status: Value = crate::server::get_json(&client, &server, "/v1/status").await;
        if status["stages"][0]["lag"] == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "enrich did not catch up: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every acknowledged post exactly once: rows counted as they are, not
    // DISTINCT, and no id that was never acknowledged.
    let rows = sql(&client, &server, "SELECT count(*) AS n FROM posts").await;
    assert_eq!(rows[0]["n"], acknowledged.len(), "a replay or a resend added rows");
    let ids = sql(&client, &server, "SELECT id FROM posts").await;
    let stored: HashSet<usize> = ids
        .iter()
        .map(|r| r["id"].as_str().unwrap()[3..].parse().unwrap())
        .collect();
    assert_eq!(stored.len(), acknowledged.len());
    let lost: Vec<&usize> = acknowledged.iter().filter(|i| !stored.contains(i)).take(5).collect();
    assert!(lost.is_empty(), "acknowledged posts lost, e.g. {lost:?}");
    let metrics = crate::server::metrics(&client, &server).await;
    let dropped: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chorus_enrich_duplicates_dropped_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(dropped >= BATCH as u64, "the resent batch was not dropped: {dropped}");
    // Files written before a kill and never committed were replaced, not added.
    server.stop();
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .args(["sql", "--format", "csv", "SELECT count(*) FROM posts"])
        .output()
        .unwrap();
    let archived = acknowledged.len().to_string();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap().lines().nth(1),
        Some(archived.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_the_documented_status_and_message() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[server]\nmax_body_bytes = 100000\n";
    let server = Server::start(&data, config, &[("CHORUS_TOKENS", "s3cret,other")]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    let posts = |body: String| client.post(server.url("/v1/posts")).bearer_auth("s3cret").body(body);

    // No token, a wrong token.
    let r = client.post(server.url("/v1/posts")).body("{}").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer realm=\"chorus\"");
    assert!(r.text().await.unwrap().contains("missing bearer token"));
    let r = client
        .post(server.url("/v1/sql"))
        .bearer_auth("nope")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(client.get(server.url("/healthz")).send().await.unwrap().status(), 200);

    // Malformed JSON: 400; wrong types: 422 with the reason per line.
    let r = posts("{\"platform\": ".into()).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 0);
    assert!(
        answer["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed JSON")
    );
    let wrong = json!({"platform": "reddit", "id": 5, "body": "x", "created_at": 1}).to_string();
    let r = posts(wrong).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        answer["rejected"][0],
        json!({"line": 1, "error": "\"id\" must be a string, got a number"})
    );
    let ms = json!({"platform": "reddit", "id": "a", "body": "x", "created_at": 1_546_300_800_000u64}).to_string();
    let answer: Value = posts(ms).send().await.unwrap().json().await.unwrap();
    assert!(
        answer["rejected"][0]["error"]
            .as_str()
            .unwrap()
            .contains("is it in ms?")
    );

    // Valid lines are accepted beside the bad ones, and numbered.
    let mixed = format!("{}\nnot json\n{}\n", post(1, &bodies), json!({"platform": "x"}));
    let r = posts(mixed).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let answer: Value = r.json().await.unwrap();
    assert_eq!(answer["accepted"], 1);
    let lines: Vec<u64> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [2, 3]);

    // Too large: 413, nothing stored.
    let big = ndjson(0..400, &bodies);
    assert!(big.len() > 100_000);
    let r = posts(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(
        r.headers()["connection"],
        "close",
        "the unread body makes the connection unusable"
    );
    assert!(r.text().await.unwrap().contains("larger than 100000 bytes"));

    // SQL: writes, DDL, file access and a second statement are refused.
    for (query, message) in [
        ("DROP TABLE posts", "read-only"),
        ("INSERT INTO posts SELECT * FROM posts", "read-only"),
        ("COPY (SELECT 1) TO '/tmp/chorus-copy.csv'", "read-only"),
        (
            "CREATE EXTERNAL TABLE t STORED AS CSV LOCATION '/etc/passwd'",
            "read-only",
        ),
        ("SELECT 1; SELECT 2", "one statement per query, got 2"),
        ("SELEC 1", "SQL error"),
        ("SELECT nope FROM posts", "nope"),
    ] {
        let r = client
            .post(server.url("/v1/sql"))
            .bearer_auth("other")
            .json(&json!({ "sql": query }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{query}");
        let body: Value = r.json().await.unwrap();
        assert!(body["error"].as_str().unwrap().contains(message), "{query}: {body}");
    }
    assert!(!std::path::Path::new("/tmp/chorus-copy.csv").exists());
    let r = client
        .post(server.url("/v1/sql"))
        .bearer_auth("other")
        .body("SELECT 1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The accepted post is there; the refused ones are not.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = client
            .post(server.url("/v1/sql"))
            .bearer_auth("s3cret")
            .json(&json!({"sql": "SELECT id FROM posts"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if r["rows"].as_array().unwrap().len() == 1 {
            assert_eq!(r["rows"][0]["id"], "t1_1");
            assert_eq!(r["columns"][0], json!({"name": "id", "type": "Utf8"}));
            break;
        }
        assert!(Instant::now() < deadline, "{r}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);

    // Listening beyond loopback without a token is refused at start.
    let out = chorus()
        .arg("--data")
        .arg(dir.path().join("other"))
        .args(["run", "--listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("refusing to listen on 0.0.0.0:0 without tokens"));
}

#[test]
fn config_example_parses_and_an_unknown_key_is_refused_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = chorus().args(["config", "example"]).output().unwrap();
    assert!(out.status.success());
    let path = dir.path().join("chorus.toml");
    std::fs::write(&path, &out.stdout).unwrap();
    let status = chorus()
        .arg("--config")
        .arg(&path)
        .arg("--data")
        .arg(dir.path().join("d"))
        .arg("status")
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    std::fs::write(&path, "[archive]\nmax_file_age = 5\n").unwrap();
    let out = chorus()
        .arg("--config")
        .arg(&path)
        .arg("--data")
        .arg(dir.path().join("d"))
        .arg("status")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("chorus.toml: line 2: unknown field `max_file_age`"),
        "{err}"
    );
}

#[test]
fn ingest_reads_plain_gzip_and_zstd_files_offline_and_through_the_server() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    // A Pushshift-style dump line, compressed with a long window as the
    // real dumps are.
    let pushshift = std::fs::read_to_string(crate::fixture("pushshift/RC_2018-10_first2lines_raw.ndjson")).unwrap();
    let mut encoder = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
    encoder.long_distance_matching(true).unwrap();
    encoder.window_log(31).unwrap();
    encoder.write_all(pushshift.as_bytes()).unwrap();
    let zst = dir.path().join("RC_2018-10.zst");
    std::fs::write(&zst, encoder.finish().unwrap()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(ndjson(0..2500, &bodies).as_bytes()).unwrap();
    let gz_path = dir.path().join("posts.ndjson.gz");
    std::fs::write(&gz_path, gz.finish().unwrap()).unwrap();
    let array = dir.path().join("posts.json");
    let items: Vec<serde_json::Value> = (2500..2510).map(|i| post(i, &bodies)).collect();
    std::fs::write(&array, serde_json::to_string_pretty(&items).unwrap()).unwrap();
    let bad = dir.path().join("bad.ndjson");
    std::fs::write(&bad, format!("{}\n{{broken\n", post(2600, &bodies))).unwrap();

    let out = chorus()
        .arg("--data")
        .arg(&data)
        .arg("ingest")
        .args([&zst, &gz_path, &array])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("2512 posts accepted, 0 lines rejected"), "{stderr}");
    assert!(
        stderr.contains("everything read is in the archive (SQL) after"),
        "{stderr}"
    );
    // A backfill's index starts once the archive is complete: it had read
    // nothing then.
    assert!(
        stderr.contains("; waiting for index (2512 records) to catch up"),
        "{stderr}"
    );
    // It caught up before ingest returned: the dump's comment is found.
    let found = chorus()
        .arg("--data")
        .arg(&data)
        .args(["search", "BoneAppleTea", "--format", "json"])
        .output()
        .unwrap();
    assert!(found.status.success(), "{}", String::from_utf8_lossy(&found.stderr));
    let found: serde_json::Value = serde_json::from_slice(&found.stdout).unwrap();
    assert_eq!(found["total"], 1, "{found}");
    assert_eq!(found["hits"][0]["id"], "t1_e6xucdd", "{found}");
    let count = |query: &str| sql_first_row(&data, query);
    // Offline ingest enriched and archived everything before it returned.
    assert_eq!(count("SELECT count(*) FROM posts"), "2512");
    assert_eq!(
        count(
            "SELECT id || ' ' || community FROM posts WHERE platform = 'reddit' AND id LIKE 't1_e6%' ORDER BY id LIMIT 1"
        ),
        "t1_e6xucdd Unexpected"
    );

    // With a server running, ingest goes through its API; a bad line is
    // reported with its file and line, and the exit status says so.
    let server = Server::start(&data, "", &[]);
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .arg("ingest")
        .arg(&bad)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("sending to the server"), "{stderr}");
    assert!(stderr.contains("bad.ndjson:2: malformed JSON"), "{stderr}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = sql_first_row(&data, "SELECT count(*) FROM posts");
        if n == "2513" {
            break;
        }
        assert!(Instant::now() < deadline, "{n}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // tail prints the enriched records as NDJSON.
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .args(["tail", "--from-beginning", "--max", "3"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert!(lines[0]["vader_compound"].is_f64() && lines[0]["text"].is_string());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_reddit_comments_and_tweets_are_mapped_and_posts_latest_keeps_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), "", &[]);
    let client = reqwest::Client::new();
    let read =
        |rel: &str| -> Value { serde_json::from_str(&std::fs::read_to_string(crate::fixture(rel)).unwrap()).unwrap() };
    let send = |query: &'static str, body: String| {
        let (client, url) = (client.clone(), server.url(&format!("/v1/posts{query}")));
        async move {
            let r = client.post(url).body(body).send().await.unwrap();
            assert_eq!(r.status(), 202);
            r.json::<Value>().await.unwrap()
        }
    };
    // A real listing's children, as a JSON array, by ?format=reddit.
    let listing = read("reddit/listings/r_askreddit_comments_2021-11-06_first_page.body.json");
    let children = listing["data"]["children"].as_array().unwrap();
    let answer = send("?format=reddit", Value::Array(children.clone()).to_string()).await;
    assert_eq!(answer["accepted"].as_u64().unwrap() as usize, children.len());
    // Pushshift lines and tweets (v1.1 objects, a v2 response), detected.
    let pushshift = std::fs::read_to_string(crate::fixture("pushshift/RC_2018-10_first2lines_raw.ndjson")).unwrap();
    assert_eq!(send("", pushshift).await["accepted"], 2);
    let v1: Vec<String> = read("twitter/v1.1_tweet_objects_samples.json")
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["tweet"].to_string())
        .collect();
    assert_eq!(
        send("?format=tweet", v1.join("\n")).await["accepted"].as_u64().unwrap() as usize,
        v1.len()
    );
    let v2 = read("twitter/v2_get_tweets_2022-10-07.body.json");
    assert_eq!(send("", v2.to_string()).await["accepted"], 2);

    let total = children.len() + 2 + v1.len() + 2;
    wait_for_count(&client, &server, total as u64, Duration::from_secs(60)).await;
    let first = &children[0]["data"];
    let rows = sql(
        &client,
        &server,
        &format!(
            "SELECT platform, community, author, body, score, thread_id, created_at FROM posts WHERE id = '{}'",
            first["name"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rows[0]["platform"], "reddit");
    assert_eq!(rows[0]["community"], first["subreddit"]);
    assert_eq!(rows[0]["author"], first["author"]);
    assert_eq!(rows[0]["body"], first["body"]);
    assert_eq!(rows[0]["thread_id"], first["link_id"]);
    let tweets = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(author_followers) AS with_followers, min(created_at) AS first FROM posts WHERE platform = 'twitter'",
    )
    .await;
    assert_eq!(tweets[0]["n"].as_u64().unwrap() as usize, v1.len() + 2);
    assert_eq!(tweets[0]["with_followers"].as_u64().unwrap() as usize, v1.len());

    // The same comment again with a new score: posts has both versions,
    // posts_latest the newer one only.
    let mut edited = children[0].clone();
    edited["data"]["score"] = json!(999);
    send("?format=reddit", edited.to_string()).await;
    wait_for_count(&client, &server, total as u64 + 1, Duration::from_secs(60)).await;
    let id = first["name"].as_str().unwrap();
    let versions = sql(
        &client,
        &server,
        &format!("SELECT count(*) AS n FROM posts WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(versions[0]["n"], 2);
    let latest = sql(
        &client,
        &server,
        &format!("SELECT score FROM posts_latest WHERE id = '{id}'"),
    )
    .await;
    assert_eq!(latest, [json!({"score": 999})]);
    let n = sql(&client, &server, "SELECT count(*) AS n FROM posts_latest").await;
    assert_eq!(n[0]["n"].as_u64().unwrap() as usize, total);
}

#[test]
fn ingest_filters_by_time_and_community_offline_and_through_the_server() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    // 2019-01-02 00:00 ≤ created_at < 2019-01-03 00:00, worldnews or
    // politics (any case, with or without r/).
    let (since, until) = (1_546_387_200i64, 1_546_473_600i64);
    let expected = |range: std::ops::Range<usize>| {
        range
            .filter(|&i| {
                let p = post(i, &bodies);
                let t = p["created_at"].as_i64().unwrap();
                let c = p["community"].as_str().unwrap();
                (since..until).contains(&t) && (c == "worldnews" || c == "politics")
            })
            .count()
    };
    let file = dir.path().join("posts.ndjson");
    std::fs::write(&file, ndjson(0..3000, &bodies)).unwrap();
    let filters = [
        "--since",
        "2019-01-02",
        "--until",
        "2019-01-03T00:00:00Z",
        "--community",
        "WorldNews,r/politics",
    ];
    let ingest = |args: &[&str]| {
        chorus()
            .arg("--data")
            .arg(&data)
            .arg("ingest")
            .arg(&file)
            .args(args)
            .output()
            .unwrap()
    };
    let out = ingest(&filters);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let kept = expected(0..3000);
    assert!(kept > 100 && kept < 1000, "{kept}");
    assert!(
        stderr.contains(&format!(
            "{kept} posts accepted, {} left out by the filters",
            3000 - kept
        )),
        "{stderr}"
    );
    let count = |data: &std::path::Path| {
        sql_first_row(data, "SELECT count(*) FROM posts")
            .parse::<usize>()
            .unwrap()
    };
    assert_eq!(count(&data), kept);

    // Through a running server: filtered before sending.
    let server = Server::start(&data, "", &[]);
    std::fs::write(&file, ndjson(3000..6000, &bodies)).unwrap();
    let out = ingest(&filters);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let total = kept + expected(3000..6000);
    let deadline = Instant::now() + Duration::from_secs(60);
    while count(&data) != total {
        assert!(Instant::now() < deadline, "{} of {total}", count(&data));
        std::thread::sleep(Duration::from_millis(100));
    }
    server.stop();

    let out = ingest(&["--since", "yesterday"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--since \"yesterday\": give RFC 3339, YYYY-MM-DD or Unix seconds")
    );
}

/// The archive's file names are its log's offsets. A data directory whose
/// log was removed (to reclaim space, say) and made anew, with its archive
/// kept, used to start by taking every archive file for a crash's leftover
/// and deleting it. It is refused now, saying why, and the files stay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archive_whose_log_was_made_anew_is_refused_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[archive]\nmax_file_age_secs = 1\n[index]\nenabled = false\n";
    let server = Server::start(&data, config, &[]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    crate::server::post_accepted(&client, &server, ndjson(0..500, &bodies)).await;
    crate::server::wait_idle(&client, &server).await;
    server.stop();
    let parquet = |root: &std::path::Path| -> usize {
        crate::lifecycle::files_per_hour_under(&root.join("posts"))
            .values()
            .map(Vec::len)
            .sum()
    };
    let archive = data.join("archive");
    let files = parquet(&archive);
    assert!(files > 0, "nothing archived");

    std::fs::remove_dir_all(data.join("log")).unwrap();
    std::fs::write(data.with_extension("toml"), config).unwrap();
    let stderr = crate::server::run_refused(
        &data,
        &data.with_extension("toml"),
        &["run", "--listen", "127.0.0.1:0"],
        &[],
    );
    assert!(stderr.contains("belongs to another log"), "{stderr}");
    assert_eq!(parquet(&archive), files, "archive files were deleted");
    // Offline SQL says the same rather than deleting anything.
    let stderr = crate::server::run_refused(
        &data,
        &data.with_extension("toml"),
        &["sql", "SELECT count(*) FROM posts"],
        &[],
    );
    assert!(stderr.contains("belongs to another log"), "{stderr}");
    assert_eq!(parquet(&archive), files, "archive files were deleted");
}
