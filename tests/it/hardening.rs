//! Hostile input through the real binary: each test is a finding of the
//! hardening issue, named after what a user would see, and failed on the
//! code before the fix.

use std::time::Duration;

use serde_json::{Value, json};

use crate::server::{Server, chorus, sql, wait_for_count};

/// Files roll every second, so the archive is written while tests run.
const FAST_ROLL: &str = "[archive]\nmax_file_age_secs = 1\n";

/// One canonical post.
fn canonical(id: &str, created_at: i64) -> Value {
    json!({"platform": "reddit", "id": id, "body": "I love this", "created_at": created_at})
}

/// NDJSON of `values`.
fn lines(values: &[Value]) -> String {
    values.iter().map(|v| format!("{v}\n")).collect()
}

async fn post(client: &reqwest::Client, server: &Server, query: &str, body: String) -> (u16, Value) {
    let response = client
        .post(server.url(&format!("/v1/posts{query}")))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The dead letters of a stopped data directory, through `chorus tail`.
fn dead_letters(data: &std::path::Path) -> Vec<Value> {
    let out = chorus()
        .arg("--data")
        .arg(data)
        .args(["tail", "--topic", "dead", "--from-beginning", "--no-follow"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reddit_comment_with_a_70000_character_id_is_a_rejected_line_and_every_partition_keeps_flowing() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let client = reqwest::Client::new();
    let huge =
        json!({"id": "x".repeat(70_000), "subreddit": "politics", "body": "hello", "created_utc": 1_546_300_800});
    let fine = json!({"id": "abc", "subreddit": "politics", "body": "hello", "created_utc": 1_546_300_800});
    let (status, answer) = post(&client, &server, "?format=reddit", lines(&[huge.clone(), fine])).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    assert_eq!(answer["rejected"][0]["line"], 1);
    let reason = answer["rejected"][0]["error"].as_str().unwrap();
    assert!(
        reason.contains("\"id\"") && reason.contains("longer than 512"),
        "{reason}"
    );
    let (status, answer) = post(&client, &server, "?format=reddit", lines(&[huge])).await;
    assert_eq!(status, 422, "{answer}");
    // Posts on every log partition are still enriched and queryable.
    let posts: Vec<Value> = (0..200).map(|i| canonical(&format!("t1_{i}"), 1_546_300_800)).collect();
    let (status, _) = post(&client, &server, "", lines(&posts)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 201, Duration::from_secs(60)).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bluesky_event_from_the_year_10000_is_refused_and_sql_keeps_answering() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let client = reqwest::Client::new();
    // No createdAt: the mapping falls back to time_us, here in year 10000.
    let event = |time_us: i64, rkey: &str| {
        json!({"did": "did:plc:abc", "time_us": time_us, "kind": "commit", "commit": {
            "operation": "create", "collection": "app.bsky.feed.post", "rkey": rkey,
            "record": {"$type": "app.bsky.feed.post", "text": "far future"}}})
    };
    let (status, answer) = post(
        &client,
        &server,
        "?format=bluesky",
        lines(&[event(253_402_300_800_000_000, "a"), event(1_783_175_888_085_434, "b")]),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 1);
    let reason = answer["rejected"][0]["error"].as_str().unwrap();
    assert!(
        reason.contains("created_at") && reason.contains("1970..2200"),
        "{reason}"
    );
    // Canonical posts and v1.1-style dates are held to the same range.
    let (status, answer) = post(
        &client,
        &server,
        "",
        lines(&[json!({"platform": "x", "id": "1", "body": "b", "created_at": "9999-12-31T23:00:00Z"})]),
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    wait_for_count(&client, &server, 1, Duration::from_secs(60)).await;
    // Once archived, SQL still reads every partition directory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    server.stop();
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .args([
            "sql",
            "--format",
            "csv",
            "SELECT count(*) AS n, max(dt) AS dt FROM posts",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "n,dt\n1,2026-07-04\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_over_max_post_bytes_is_a_rejected_line_and_its_batch_is_taken() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "[server]\nmax_post_bytes = 1000\n", &[]);
    let client = reqwest::Client::new();
    let mut big = canonical("t1_big", 1_546_300_800);
    big["body"] = json!("a".repeat(1001));
    let mut nul = canonical("t1_\u{0}nul", 1_546_300_800);
    nul["author"] = json!("me");
    let mut tab = canonical("t1_tab", 1_546_300_800);
    tab["author"] = json!("a\tb");
    let (status, answer) = post(
        &client,
        &server,
        "",
        lines(&[
            canonical("t1_a", 1_546_300_800),
            big,
            nul,
            tab,
            canonical("t1_b", 1_546_300_800),
        ]),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["accepted"], 2, "{answer}");
    let errors: Vec<(u64, String)> = answer["rejected"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["line"].as_u64().unwrap(), r["error"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert_eq!(errors[0].0, 2);
    assert!(errors[0].1.contains("more than max_post_bytes (1000)"), "{errors:?}");
    assert_eq!(errors[1].0, 3);
    assert!(
        errors[1].1.contains("\"id\": contains the control character"),
        "{errors:?}"
    );
    assert_eq!(errors[2].0, 4);
    assert!(
        errors[2].1.contains("\"author\": contains the control character"),
        "{errors:?}"
    );
    wait_for_count(&client, &server, 2, Duration::from_secs(60)).await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_in_the_log_that_break_the_bounds_go_to_the_dead_letters_and_the_rest_is_enriched() {
    use chorus::record::IncomingPost;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // What an earlier version accepted: a 70,000-byte id (whose state key
    // the storage engine refuses) and a post from the year 10000.
    let long_id = "x".repeat(70_000);
    crate::server::plant_raw(
        &data,
        vec![
            IncomingPost::new("reddit", &long_id, "long id", 1_546_300_800_000_000),
            IncomingPost::new("bluesky", "at://far", "far future", 253_402_300_800_000_000),
            IncomingPost::new("reddit", "t1_ok", "I love this", 1_546_300_800_000_000),
        ],
    );
    let server = Server::start(&data, FAST_ROLL, &[]);
    let client = reqwest::Client::new();
    let posts: Vec<Value> = (0..100).map(|i| canonical(&format!("t1_{i}"), 1_546_300_800)).collect();
    let (status, _) = post(&client, &server, "", lines(&posts)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 101, Duration::from_secs(60)).await;
    let rows = sql(&client, &server, "SELECT count(*) AS n FROM posts WHERE id = 't1_ok'").await;
    assert_eq!(rows[0]["n"], 1);
    server.stop();
    let dead = dead_letters(&data);
    let mut reasons: Vec<String> = dead.iter().map(|d| d["error"].as_str().unwrap().to_string()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("\"created_at\"") && reasons[0].contains("outside 1970..2200"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].contains("\"id\"") && reasons[1].contains("longer than 512"),
        "{reasons:?}"
    );
    // The archive keeps them in archive/errors/dt=…/ as NDJSON, with the
    // reason (Firehose's S3 backup of failed records).
    let mut archived: Vec<Value> = Vec::new();
    for day in std::fs::read_dir(data.join("archive/errors")).unwrap() {
        let day = day.unwrap().path();
        assert!(day.file_name().unwrap().to_str().unwrap().starts_with("dt="), "{day:?}");
        for file in std::fs::read_dir(&day).unwrap() {
            let text = std::fs::read_to_string(file.unwrap().path()).unwrap();
            archived.extend(text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()));
        }
    }
    assert_eq!(archived.len(), 2, "{archived:?}");
    assert!(
        archived
            .iter()
            .all(|d| d["topic"] == "posts.raw" && d["error"].as_str().unwrap().contains("out of bounds"))
    );
    assert!(
        archived
            .iter()
            .any(|d| d["value"].as_str().unwrap().contains("far future"))
    );
    // After a restart, nothing is stuck and SQL still answers.
    let out = chorus().arg("--data").arg(&data).arg("status").output().unwrap();
    let status = String::from_utf8(out.stdout).unwrap();
    for line in status.lines().filter(|l| l.starts_with("posts.")) {
        assert!(line.trim_end().ends_with(" 0"), "a stage lags: {status}");
    }
}

/// Peak resident memory of a process, bytes (`VmHWM`).
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sql_ends_with_a_clear_error_while_ingest_goes_on_and_memory_stays_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = "[archive]\nmax_file_age_secs = 1\n[query]\nmax_seconds = 4\nmax_memory = 67108864\nmax_rows = 1000\n";
    let server = Server::start(&data, config, &[]);
    let client = reqwest::Client::new();
    // Posts stream in all along.
    let sender = {
        let (client, url) = (client.clone(), server.url("/v1/posts"));
        tokio::spawn(async move {
            let mut sent = 0u64;
            for batch in 0..40 {
                let posts: Vec<Value> = (0..100)
                    .map(|i| canonical(&format!("t1_{batch}_{i}"), 1_546_300_800))
                    .collect();
                loop {
                    let response = client.post(&url).body(lines(&posts)).send().await.unwrap();
                    match response.status().as_u16() {
                        202 => break,
                        429 => tokio::time::sleep(Duration::from_millis(100)).await,
                        other => panic!("ingest answered {other} during hostile queries"),
                    }
                }
                sent += 100;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            sent
        })
    };
    let ask = |query: String| {
        let (client, url) = (client.clone(), server.url("/v1/sql"));
        async move {
            let response = client.post(url).json(&json!({ "sql": query })).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }
    };
    let error_of = |answer: &Value| answer["error"].as_str().unwrap_or_default().to_string();
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (status, answer) = ask("SELECT count(*) FROM range(1000000000000)".into()).await;
    assert_eq!(status, 504, "{answer}");
    assert!(error_of(&answer).contains("max_seconds (4 s)"), "{answer}");
    let (status, answer) = ask("SELECT count(*) FROM posts a, posts b, posts c, range(1000000) d".into()).await;
    assert!(status == 504 || status == 507, "{status} {answer}");
    let (status, answer) =
        ask("SELECT value % 50000000 AS k, count(*) FROM range(200000000) GROUP BY k ORDER BY 2 DESC".into()).await;
    assert!(status == 504 || status == 507, "{status} {answer}");
    let (status, answer) = ask("SELECT repeat('x', 2147483647)".into()).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).contains("max_value_bytes"), "{answer}");
    let (status, answer) = ask("SELECT lpad(body, length(body) * 100000000) FROM posts".into()).await;
    assert_eq!(status, 400, "{}", error_of(&answer));
    assert!(error_of(&answer).contains("max_value_bytes"), "{answer}");
    // 100,000 terms: longer than the text bound; 20,000: deeper than the
    // depth bound (each used to overflow the stack and abort the process).
    let (status, answer) = ask(format!("SELECT 1{}", "+1".repeat(100_000))).await;
    assert_eq!(status, 413, "{answer}");
    assert!(error_of(&answer).contains("max_sql_bytes"), "{answer}");
    let (status, answer) = ask(format!("SELECT 1{}", "+1".repeat(20_000))).await;
    assert_eq!(status, 400, "{answer}");
    assert!(error_of(&answer).contains("max_expression_depth"), "{answer}");
    // A large result is cut at max_rows, and the answer says so.
    let (status, answer) = ask("SELECT * FROM range(1000000000)".into()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"].as_array().unwrap().len(), 1000);
    assert!(
        answer["truncated"].as_str().unwrap().contains("max_rows (1000)"),
        "{answer}"
    );
    // Still up, and everything sent was taken.
    let sent = sender.await.unwrap();
    wait_for_count(&client, &server, sent, Duration::from_secs(60)).await;
    let peak = peak_rss(server.child.id());
    assert!(peak < 1 << 30, "peak RSS {} MiB", peak >> 20);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_web_page_of_another_origin_or_a_rebound_host_gets_403_and_cannot_query_or_inject() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        "[server]\nallowed_origins = [\"https://dash.example.org\"]\n",
        &[],
    );
    let client = reqwest::Client::new();
    let send = |path: &str, origin: Option<&str>, host: Option<&str>, body: String| {
        let mut request = client
            .post(server.url(path))
            .header("content-type", "text/plain")
            .body(body);
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        if let Some(host) = host {
            request = request.header("host", host);
        }
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.text().await.unwrap())
        }
    };
    let post = lines(&[canonical("t1_evil", 1_546_300_800)]);
    let query = json!({"sql": "SELECT count(*) AS n FROM posts"}).to_string();
    for path in ["/v1/posts", "/v1/sql"] {
        let body = if path == "/v1/sql" { query.clone() } else { post.clone() };
        let (status, text) = send(path, Some("https://evil.example"), None, body.clone()).await;
        assert_eq!(status, 403, "{path}: {text}");
        assert!(text.contains("allowed_origins"), "{text}");
        // DNS rebinding: the page's own origin, but the attacker's name.
        let (status, text) = send(path, None, Some("evil.example:7700"), body.clone()).await;
        assert_eq!(status, 403, "{path}: {text}");
        let (status, _) = send(path, Some("https://dash.example.org"), None, body.clone()).await;
        assert!(status == 200 || status == 202, "{path}: {status}");
        let own = format!("http://localhost:{}", server.address.port());
        let (status, _) = send(
            path,
            Some(&own),
            Some(&format!("localhost:{}", server.address.port())),
            body,
        )
        .await;
        assert!(status == 200 || status == 202, "{path}: {status}");
    }
    // Two posts got in (one per allowed origin), the refused one did not.
    wait_for_count(&client, &server, 1, Duration::from_secs(60)).await;
    let rows = sql(&client, &server, "SELECT count(*) AS n FROM posts").await;
    assert_eq!(rows[0]["n"], 1, "the post is one post, sent twice");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixteen_megabytes_of_bad_lines_get_a_short_422_that_counts_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let body = "1\n".repeat(8_000_000);
    let response = client.post(server.url("/v1/posts")).body(body).send().await.unwrap();
    assert_eq!(response.status(), 422);
    let text = response.text().await.unwrap();
    assert!(text.len() < 64 * 1024, "a {} byte answer", text.len());
    let answer: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(answer["rejected"].as_array().unwrap().len(), 100);
    assert_eq!(answer["rejected_total"], 8_000_000);
    assert_eq!(answer["rejected"][99]["line"], 100);
    let peak = peak_rss(server.child.id());
    assert!(peak < 512 << 20, "peak RSS {} MiB for one request", peak >> 20);
    server.stop();
}

#[test]
fn a_client_holding_half_a_request_does_not_keep_chorus_run_from_stopping() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "[server]\nshutdown_grace_secs = 2\n", &[]);
    // Half the headers, and half a body, then silence.
    let mut headers = std::net::TcpStream::connect(server.address).unwrap();
    headers
        .write_all(b"POST /v1/posts HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        .unwrap();
    let mut body = std::net::TcpStream::connect(server.address).unwrap();
    body.write_all(b"POST /v1/posts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"plat")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let start = std::time::Instant::now();
    server.stop();
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "stopped after {:?}",
        start.elapsed()
    );
    drop((headers, body));
}

#[test]
fn an_empty_token_in_the_configuration_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("chorus.toml");
    std::fs::write(&config, "[server]\ntokens = [\"\"]\n").unwrap();
    let out = chorus()
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&config)
        .args(["run", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("empty token"), "{stderr}");
}

#[test]
fn chorus_ingest_rejects_an_oversized_line_streams_a_json_array_and_splits_batches_a_server_finds_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("chorus.toml");
    std::fs::write(&config, "[server]\nmax_post_bytes = 2000\n").unwrap();
    let good = |i: usize| canonical(&format!("t1_{i}"), 1_546_300_800).to_string();
    // A 100 MB line between good ones: rejected without being held whole.
    let ndjson = dir.path().join("posts.ndjson");
    let mut text = format!("{}\n{}\n", good(0), good(1));
    text.push_str(&format!(
        "{{\"platform\":\"x\",\"id\":\"1\",\"body\":\"{}\"}}\n",
        "a".repeat(100_000_000)
    ));
    text.push_str(&format!("{}\n", good(2)));
    std::fs::write(&ndjson, text).unwrap();
    // A JSON array read element by element, one element too long.
    let array = dir.path().join("posts.json");
    let mut elements: Vec<String> = (3..500).map(good).collect();
    elements.insert(10, format!("{{\"body\": \"{}\"}}", "b".repeat(100_000)));
    std::fs::write(&array, format!("[\n{}\n]\n", elements.join(",\n"))).unwrap();
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .arg("--config")
        .arg(&config)
        .arg("ingest")
        .arg(&ndjson)
        .arg(&array)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Rejected lines make the exit status non-zero; the rest is taken.
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("posts.ndjson: 3 posts accepted, 1 lines rejected"),
        "{stderr}"
    );
    assert!(
        stderr.contains("posts.ndjson:3: a record of 100000035 bytes"),
        "{stderr}"
    );
    assert!(
        stderr.contains("posts.json: 497 posts accepted, 1 lines rejected"),
        "{stderr}"
    );
    assert!(stderr.contains("posts.json:11: a record of 100012 bytes"), "{stderr}");
    assert_eq!(crate::server::sql_first_row(&data, "SELECT count(*) FROM posts"), "500");

    // Through a server whose body limit is smaller than a batch: split.
    let server = Server::start(&data, "[server]\nmax_body_bytes = 4096\n", &[]);
    let more = dir.path().join("more.ndjson");
    let lines: String = (1000..1300).map(|i| format!("{}\n", good(i))).collect();
    std::fs::write(&more, lines).unwrap();
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .arg("ingest")
        .arg(&more)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("300 posts accepted, 0 lines rejected"), "{stderr}");
    server.stop();
    assert_eq!(crate::server::sql_first_row(&data, "SELECT count(*) FROM posts"), "800");
}

/// A tmpfs of `mib` MiB mounted on `dir`, unmounted when dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, mib: u64) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(dir)
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (CAP_SYS_ADMIN): the disk-full test cannot run"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Tmpfs {
    /// Fills the disk with a ballast file until at most `leave` bytes are
    /// free (0: until a write fails); its path, to free the space again.
    fn fill(&self, leave: u64) -> std::path::PathBuf {
        use std::io::Write;
        let ballast = self.0.join("ballast");
        let mut file = std::fs::File::create(&ballast).unwrap();
        let chunk = vec![7u8; 1 << 20];
        while chorus::http::free_bytes(&self.0).unwrap() > leave && file.write_all(&chunk).is_ok() {}
        ballast
    }
}

/// NDJSON of `n` canonical posts with ids `t1_<batch>_<i>`.
fn numbered_batch(batch: usize, n: usize) -> String {
    lines(
        &(0..n)
            .map(|i| canonical(&format!("t1_{batch}_{i}"), 1_546_300_800))
            .collect::<Vec<_>>(),
    )
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gets_507_loses_nothing_accepted_and_ingest_resumes_once_space_is_freed() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), 96);
    let data = disk.0.join("data");
    let config = "[archive]\nmax_file_age_secs = 1\n[log]\nmin_free_bytes = 25165824\n";
    let server = Server::start(&data, config, &[]);
    let client = reqwest::Client::new();
    let batch = |n: usize| numbered_batch(n, 100);
    let (status, _) = post(&client, &server, "", batch(0)).await;
    assert_eq!(status, 202);
    // Fill the disk to 16 MiB free, under the 24 MiB reserve.
    let ballast = disk.fill(16 << 20);
    let (status, answer) = post(&client, &server, "", batch(1)).await;
    assert_eq!(status, 507, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("min_free_bytes"), "{answer}");
    // What was accepted is still enriched and queryable meanwhile.
    wait_for_count(&client, &server, 100, Duration::from_secs(60)).await;
    // Space is freed: ingest resumes by itself.
    std::fs::remove_file(&ballast).unwrap();
    let (status, answer) = post(&client, &server, "", batch(1)).await;
    assert_eq!(status, 202, "{answer}");
    wait_for_count(&client, &server, 200, Duration::from_secs(60)).await;
    server.stop();
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_that_fails_for_good_stops_chorus_run_with_an_error_and_a_restart_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&dir.path().join("disk"), 96);
    let data = disk.0.join("data");
    // No reserve: the log itself runs into the full disk.
    let mut server = Server::start(&data, "[log]\nmin_free_bytes = 0\n", &[]);
    let client = reqwest::Client::new();
    let batch = |n: usize| numbered_batch(n, 1000);
    let (status, _) = post(&client, &server, "", batch(0)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 1000, Duration::from_secs(60)).await;
    let ballast = disk.fill(0);
    let (mut refused, mut accepted) = (0, 1);
    for n in 1..50 {
        match client.post(server.url("/v1/posts")).body(batch(n)).send().await {
            Ok(r) if r.status() == 202 => accepted += 1,
            Ok(r) => {
                assert_eq!(r.status(), 503);
                refused += 1;
            }
            Err(_) => break,
        }
    }
    // Ingest refuses with 503, unless a stage (enrich, a sink, the speed
    // layer) ran into the full disk first and stopped the process, which
    // ended the requests: either way it was noticed, and the process must
    // now stop with an error.
    let _ = refused;
    // The process stops by itself, loudly.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "chorus run kept running on a failed log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!status.success(), "{status}");
    // Space freed, a restart recovers every post that got a 202.
    std::fs::remove_file(&ballast).unwrap();
    let restarted = Server::start(&data, "[log]\nmin_free_bytes = 0\n", &[]);
    // Every post that got a 202 (wait_for_count also fails on more).
    wait_for_count(&client, &restarted, 1000 * accepted, Duration::from_secs(60)).await;
    restarted.stop();
    let _ = server.child.wait();
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_http_answers_in_every_format_it_names() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let posts: Vec<Value> = (0..3)
        .map(|i| canonical(&format!("t1_{i}"), 1_546_300_800 + i))
        .collect();
    let (status, _) = post(&client, &server, "", lines(&posts)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 3, Duration::from_secs(60)).await;
    let query = json!({"sql": "SELECT id, sentiment FROM posts ORDER BY id"});
    let answer = |format: &'static str| {
        let (client, url, query) = (
            client.clone(),
            server.url(&format!("/v1/sql?format={format}")),
            query.clone(),
        );
        async move {
            let r = client.post(url).json(&query).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    assert_eq!(
        answer("csv").await,
        (
            200,
            "id,sentiment\nt1_0,positive\nt1_1,positive\nt1_2,positive\n".into()
        )
    );
    let (status, ndjson) = answer("ndjson").await;
    assert_eq!(status, 200);
    let rows: Vec<Value> = ndjson.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows[2], json!({"id": "t1_2", "sentiment": "positive"}));
    let (status, table) = answer("table").await;
    assert_eq!(status, 200);
    assert!(table.contains("| t1_1 | positive  |"), "{table}");
    let (status, json_rows) = answer("json").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&json_rows)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let (status, text) = answer("xml").await;
    assert_eq!(status, 400);
    assert!(text.contains("use table, csv, json or ndjson"), "{text}");
    server.stop();
}

#[test]
fn chorus_demo_generates_posts_serves_them_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let mut child = chorus()
        .arg("--data")
        .arg(&data)
        .args(["demo", "--listen", "127.0.0.1:0", "--rate", "200", "--count", "300"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the demo's posts never all showed up"
        );
        if let Some(status) = child.try_wait().unwrap() {
            panic!("chorus demo exited: {status}");
        }
        if data.join("server.json").exists() {
            let out = chorus()
                .arg("--data")
                .arg(&data)
                .args([
                    "sql",
                    "--format",
                    "csv",
                    "SELECT count(*) AS n, count(DISTINCT community) AS c FROM posts",
                ])
                .output()
                .unwrap();
            if String::from_utf8_lossy(&out.stdout).lines().nth(1) == Some("300,8") {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    std::process::Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("everything accepted is in"), "{stderr}");
    // Offline now: the archive alone holds all 300.
    assert_eq!(crate::server::sql_first_row(&data, "SELECT count(*) FROM posts"), "300");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_one_mebibyte_posts_are_cleaned_scored_and_visible_within_seconds() {
    use crate::adversarial_bodies::{PATTERNS, body};
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let client = reqwest::Client::new();
    let start = std::time::Instant::now();
    for (i, pattern) in PATTERNS.iter().enumerate() {
        let mut post_value = canonical(&format!("t1_hostile_{i}"), 1_546_300_800);
        post_value["body"] = json!(body(pattern, (1 << 20) - 64));
        let (status, answer) = post(&client, &server, "", lines(&[post_value])).await;
        assert_eq!(status, 202, "{}: {answer}", pattern.0);
    }
    // Cleanup and both analyzers are linear: even unoptimised, 27 MiB of
    // hostile text is through in well under a minute (a line of `[(`
    // repeated took minutes per MiB when link ends were found by scanning).
    wait_for_count(&client, &server, PATTERNS.len() as u64, Duration::from_secs(120)).await;
    let took = start.elapsed();
    assert!(took < Duration::from_secs(120), "{took:?}");
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n FROM posts WHERE octet_length(body) > 1000000 AND vader_compound BETWEEN -1 AND 1",
    )
    .await;
    assert_eq!(rows[0]["n"], PATTERNS.len());
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_on_one_hour_of_one_day_finds_its_posts_and_reads_only_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let client = reqwest::Client::new();
    // Three days, two hours each.
    let posts: Vec<Value> = (0..60)
        .map(|i| canonical(&format!("t1_{i}"), 1_546_300_800 + (i % 3) * 86_400 + (i % 2) * 3_600))
        .collect();
    let (status, _) = post(&client, &server, "", lines(&posts)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 60, Duration::from_secs(60)).await;
    server.stop();
    let out = chorus()
        .arg("--data")
        .arg(&data)
        .args([
            "sql",
            "--format",
            "csv",
            "EXPLAIN SELECT id FROM posts WHERE dt = DATE '2019-01-02' AND hour = 1",
        ])
        .output()
        .unwrap();
    let plan = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(plan.contains("dt=2019-01-02/hour=01"), "{plan}");
    for other in ["dt=2019-01-01", "dt=2019-01-03", "dt=2019-01-02/hour=00"] {
        assert!(!plan.contains(other), "{other} is read: {plan}");
    }
    assert_eq!(
        crate::server::sql_first_row(
            &data,
            "SELECT count(*) FROM posts WHERE dt = DATE '2019-01-02' AND hour = 1"
        ),
        "10"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_past_max_concurrent_gets_429_and_the_next_one_runs() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "[query]\nmax_concurrent = 1\nmax_seconds = 3\n", &[]);
    let client = reqwest::Client::new();
    let slow = {
        let (client, url) = (client.clone(), server.url("/v1/sql"));
        tokio::spawn(async move {
            let body = json!({"sql": "SELECT count(*) FROM range(1000000000000)"});
            client.post(url).json(&body).send().await.unwrap().status().as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    let r = client
        .post(server.url("/v1/sql"))
        .json(&json!({"sql": "SELECT 1 AS one"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    assert!(r.text().await.unwrap().contains("max_concurrent"));
    assert_eq!(slow.await.unwrap(), 504);
    // The cancelled query really stopped: its slot is free again (within a
    // few seconds: it stops at its next yield).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client
            .post(server.url("/v1/sql"))
            .json(&json!({"sql": "SELECT 1 AS one"}))
            .send()
            .await
            .unwrap();
        if r.status() == 200 {
            let answer: Value = r.json().await.unwrap();
            assert_eq!(answer["rows"][0]["one"], 1);
            break;
        }
        assert_eq!(r.status(), 429);
        assert!(
            std::time::Instant::now() < deadline,
            "the cancelled query kept its slot"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.stop();
}

#[test]
fn ingest_bodies_past_max_concurrent_ingest_get_429_while_the_first_is_still_arriving() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(
        &data,
        "[server]\nmax_concurrent_ingest = 1\nbody_timeout_secs = 30\n",
        &[],
    );
    // One client sends half its body and waits: it holds the only slot.
    let mut slow = std::net::TcpStream::connect(server.address).unwrap();
    slow.write_all(b"POST /v1/posts HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{\"platform\":")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = reqwest::Client::new();
    let (status, text) = rt.block_on(async {
        let r = client
            .post(server.url("/v1/posts"))
            .body(lines(&[canonical("t1_a", 1_546_300_800)]))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    });
    assert_eq!(status, 429, "{text}");
    assert!(text.contains("max_concurrent_ingest"), "{text}");
    // The slow client gives up: the slot is free again.
    drop(slow);
    std::thread::sleep(Duration::from_millis(300));
    let status = rt.block_on(async {
        client
            .post(server.url("/v1/posts"))
            .body(lines(&[canonical("t1_a", 1_546_300_800)]))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    assert_eq!(status, 202);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_in_a_running_pipeline_removes_processed_log_segments_and_sql_still_counts_every_post() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // Segments of 500 records, a size bound every segment passes, a pass
    // every second: everything processed but the newest segment goes.
    let config = format!(
        "{FAST_ROLL}[log]\npartitions = 1\nsegment_records = 500\nretention_hours = 0\n\
         retention_bytes = 1\nretention_check_secs = 1\n"
    );
    let server = Server::start(&data, &config, &[]);
    let client = reqwest::Client::new();
    let first = |topic: &str, server: &Server| {
        let (client, url) = (client.clone(), server.url(&format!("/v1/log/{topic}/0?offset=0&max=1")));
        async move {
            let answer: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            (answer["records"][0]["offset"].as_u64(), answer["end"].as_u64().unwrap())
        }
    };
    let posts: Vec<Value> = (0..3_000)
        .map(|i| canonical(&format!("t1_{i}"), 1_546_300_800 + i))
        .collect();
    for chunk in posts.chunks(1_000) {
        let (status, answer) = post(&client, &server, "", lines(chunk)).await;
        assert_eq!(status, 202, "{answer}");
    }
    wait_for_count(&client, &server, 3_000, Duration::from_secs(60)).await;
    // Both topics lose their processed segments: their first record is
    // now in the newest segment (2,500..3,000), their end unchanged.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (raw, enriched) = (first("raw", &server).await, first("enriched", &server).await);
        if raw.0 == Some(2_500) && enriched.0 == Some(2_500) {
            assert_eq!((raw.1, enriched.1), (3_000, 3_000));
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "raw {raw:?}, enriched {enriched:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // What the log no longer holds is in the archive: SQL counts each post
    // once, and ingest goes on after a restart with offsets that continue.
    let rows = sql(
        &client,
        &server,
        "SELECT count(*) AS n, count(DISTINCT id) AS d FROM posts",
    )
    .await;
    assert_eq!(
        (rows[0]["n"].as_i64(), rows[0]["d"].as_i64()),
        (Some(3_000), Some(3_000))
    );
    server.stop();
    let server = Server::start(&data, &config, &[]);
    let more: Vec<Value> = (3_000..3_600)
        .map(|i| canonical(&format!("t1_{i}"), 1_546_300_800 + i))
        .collect();
    let (status, _) = post(&client, &server, "", lines(&more)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 3_600, Duration::from_secs(60)).await;
    // Segments began at 3,000 and 3,500: all but the newest go once processed.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let raw = first("raw", &server).await;
        if raw == (Some(3_500), 3_600) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "raw {raw:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let rows = sql(&client, &server, "SELECT count(*) AS n FROM posts").await;
    assert_eq!(rows[0]["n"].as_i64(), Some(3_600));
    server.stop();
}

/// Under strace, every directory the archive creates is synced into its
/// parent before a file is renamed into it, and the file's directory after
/// the rename (else a power cut could lose a file whose offset committed).
/// strace is a test peer (scripts/test.sh installs it); it is not optional.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_archive_syncs_every_directory_it_creates_and_every_rename_before_going_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, FAST_ROLL, &[]);
    let trace = dir.path().join("trace");
    let mut strace = std::process::Command::new("strace")
        .args([
            "-f",
            "-y",
            "-e",
            "trace=mkdir,mkdirat,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .args(["-p", &server.child.id().to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("strace is a test peer: scripts/test.sh installs it");
    // strace says on stderr when it is attached (to each thread).
    {
        use std::io::BufRead;
        let mut err = std::io::BufReader::new(strace.stderr.take().unwrap());
        let mut line = String::new();
        err.read_line(&mut line).unwrap();
        assert!(line.contains("attached"), "strace: {line}");
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
    }
    let client = reqwest::Client::new();
    // Three days: three new dt= and hour= directories.
    let posts: Vec<Value> = (0..30)
        .map(|i| canonical(&format!("t1_{i}"), 1_546_300_800 + (i % 3) * 86_400))
        .collect();
    let (status, _) = post(&client, &server, "", lines(&posts)).await;
    assert_eq!(status, 202);
    wait_for_count(&client, &server, 30, Duration::from_secs(60)).await;
    server.stop();
    strace.wait().unwrap();

    let text = std::fs::read_to_string(&trace).unwrap();
    let archive = data.join("archive").to_string_lossy().into_owned();
    let quoted = |line: &str, n: usize| line.split('"').nth(2 * n + 1).map(str::to_string);
    let synced = |line: &str| {
        let start = line.find("sync(")?;
        let path = &line[start..];
        Some(path[path.find('<')? + 1..path.find('>')?].to_string())
    };
    let parent = |p: &str| std::path::Path::new(p).parent().unwrap().to_string_lossy().into_owned();
    // A call another thread interrupted is split in two lines
    // (`mkdir(… <unfinished ...>`, then `<... mkdir resumed>) = 0`): joined,
    // at the place it completed.
    let mut pending: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    let mut joined: Vec<String> = Vec::new();
    for line in text.lines() {
        let pid = line.split_whitespace().next().unwrap_or_default();
        if let Some(start) = line.strip_suffix(" <unfinished ...>") {
            pending.insert(pid, start);
        } else if let Some(at) = line.find("<... ") {
            let rest = line[at..].split_once("resumed>").map_or("", |(_, r)| r);
            joined.push(format!("{}{rest}", pending.remove(pid).unwrap_or(line)));
        } else {
            joined.push(line.to_string());
        }
    }
    let lines: Vec<&str> = joined.iter().map(String::as_str).collect();
    let (mut dirs, mut renames) = (0, 0);
    for (i, line) in lines.iter().enumerate() {
        let later_sync_of = |path: &str, before: &dyn Fn(&str) -> bool| {
            lines[i + 1..]
                .iter()
                .take_while(|l| !before(l))
                .any(|l| synced(l).as_deref() == Some(path))
        };
        if line.contains("mkdir(") && line.trim_end().ends_with("= 0") {
            let created = quoted(line, 0).unwrap();
            if !created.starts_with(&archive) || created.starts_with(&format!("{archive}/.tmp")) {
                continue;
            }
            dirs += 1;
            // Synced into its parent before anything is renamed into it.
            let into = |l: &str| l.contains("rename") && quoted(l, 1).is_some_and(|t| t.starts_with(&created));
            assert!(
                later_sync_of(&parent(&created), &into),
                "{created} not synced into its parent:\n{text}"
            );
        }
        if line.contains("rename(") && line.trim_end().ends_with("= 0") {
            let target = quoted(line, 1).unwrap();
            if !target.starts_with(&archive) {
                continue;
            }
            renames += 1;
            assert!(
                later_sync_of(&parent(&target), &|_| false),
                "{target}'s directory not synced:\n{text}"
            );
        }
    }
    // dt= and hour= of three days; at least a file per day.
    assert!(dirs >= 6, "{dirs} directories:\n{text}");
    assert!(renames >= 3, "{renames} renames:\n{text}");
}
