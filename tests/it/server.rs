//! Helpers that run the real `chorus` binary on a temporary data directory.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// The `chorus` binary under test.
pub fn chorus() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_chorus"));
    c.env_remove("CHORUS_TOKENS").env_remove("CHORUS_DATA");
    c
}

/// A running `chorus run`, killed when dropped.
pub struct Server {
    pub child: Child,
    pub address: SocketAddr,
}

impl Server {
    /// Starts `chorus run` on `data` with `config` (TOML) and extra env.
    pub fn start(data: &Path, config: &str, env: &[(&str, &str)]) -> Server {
        Server::start_on(data, config, env, "127.0.0.1:0")
    }

    /// Starts `chorus run` listening on `listen`.
    pub fn start_on(data: &Path, config: &str, env: &[(&str, &str)], listen: &str) -> Server {
        Server::start_with(data, config, env, &["--listen", listen])
    }

    /// Starts `chorus run --roles ROLES` listening on a free port.
    pub fn start_roles(data: &Path, config: &str, env: &[(&str, &str)], roles: &str) -> Server {
        Server::start_with(data, config, env, &["--listen", "127.0.0.1:0", "--roles", roles])
    }

    /// Starts `chorus run` with `args`.
    pub fn start_with(data: &Path, config: &str, env: &[(&str, &str)], args: &[&str]) -> Server {
        let config_path = data.with_extension("toml");
        std::fs::write(&config_path, config).unwrap();
        let _ = std::fs::remove_file(data.join("server.json"));
        let mut cmd = chorus();
        cmd.arg("--data")
            .arg(data)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // CHORUS_TEST_SERVER_LOG=FILE: the servers' logs, appended to FILE.
        if let Ok(path) = std::env::var("CHORUS_TEST_SERVER_LOG")
            && let Ok(file) = std::fs::OpenOptions::new().create(true).append(true).open(path)
        {
            cmd.stderr(file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(text) = std::fs::read_to_string(data.join("server.json"))
                && let Ok(info) = serde_json::from_str::<Value>(&text)
                && info["pid"].as_u64() == Some(u64::from(child.id()))
            {
                let address: SocketAddr = info["address"].as_str().unwrap().parse().unwrap();
                if std::net::TcpStream::connect(address).is_ok() {
                    return Server { child, address };
                }
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("chorus run exited early: {status}");
            }
            assert!(Instant::now() < deadline, "chorus run did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Stops with SIGTERM (archive flushed) and waits.
    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "chorus run did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills with SIGKILL, no chance to flush.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A SQL answer's rows through `POST /v1/sql`.
pub async fn sql(client: &reqwest::Client, server: &Server, query: &str) -> Vec<Value> {
    let response = client
        .post(server.url("/v1/sql"))
        .json(&json!({ "sql": query }))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{query}: {status} {body}");
    body["rows"].as_array().unwrap().clone()
}

/// Texts of the Reddit corpus, for realistic bodies.
pub fn corpus_bodies() -> Vec<String> {
    std::fs::read_to_string(crate::fixture("sentiment/reddit_comments.ndjson"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["body"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

/// Canonical post `i` over the corpus, created across three days.
pub fn post(i: usize, bodies: &[String]) -> Value {
    const COMMUNITIES: [&str; 5] = ["politics", "news", "worldnews", "science", "AskReddit"];
    json!({
        "platform": "reddit",
        "id": format!("t1_{i}"),
        "community": COMMUNITIES[i % COMMUNITIES.len()],
        "author": format!("user{}", i % 997),
        "body": bodies[i % bodies.len()],
        "created_at": 1_546_300_800 + (i as i64 * 2_591) % 259_200,
        "score": (i % 100) as i64,
    })
}

/// NDJSON of posts `range`.
pub fn ndjson(range: std::ops::Range<usize>, bodies: &[String]) -> String {
    let mut out = String::new();
    for i in range {
        out.push_str(&post(i, bodies).to_string());
        out.push('\n');
    }
    out
}

/// NDJSON of posts `ids` sent again with new scores (`score` plus the
/// post's place in `ids`): new versions of the same posts.
pub fn rescored(ids: impl IntoIterator<Item = usize>, bodies: &[String], score: i64) -> String {
    ids.into_iter()
        .enumerate()
        .map(|(n, i)| {
            let mut p = post(i, bodies);
            p["score"] = json!(score + n as i64);
            p.to_string() + "\n"
        })
        .collect()
}

/// The first row of a DuckDB query (from PyPI, installed by
/// scripts/test.sh), as floats: `prelude` is Python run first on the
/// connection `c` (extensions, secrets).
pub fn duckdb_row(prelude: &str, query: &str) -> Vec<Option<f64>> {
    let python = std::env::var("CHORUS_TEST_PYTHON")
        .expect("CHORUS_TEST_PYTHON is not set: run the suite with scripts/test.sh, which installs DuckDB");
    let script = format!(
        "import duckdb, json, os\nc = duckdb.connect()\n{prelude}\nrow = c.sql({query:?}).fetchone()\n\
         print(json.dumps([float(v) if v is not None else None for v in row]))\n"
    );
    let out = Command::new(python).arg("-c").arg(script).output().unwrap();
    assert!(out.status.success(), "duckdb: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    // The row is the last line (an extension may print before it).
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Waits until `SELECT count(*) FROM posts` is `expected` (never more).
pub async fn wait_for_count(client: &reqwest::Client, server: &Server, expected: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let rows = sql(client, server, "SELECT count(*) AS n FROM posts").await;
        let n = rows[0]["n"].as_u64().unwrap();
        assert!(n <= expected, "more posts than sent: {n}");
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {expected} posts visible");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The first row of `chorus sql --format csv QUERY` on `data` (through the
/// running server if there is one, else offline).
pub fn sql_first_row(data: &Path, query: &str) -> String {
    let out = chorus()
        .arg("--data")
        .arg(data)
        .args(["sql", "--format", "csv", query])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .nth(1)
        .unwrap_or_default()
        .to_string()
}

/// `POST /v1/posts` of `body` (NDJSON or one post), which must be
/// answered `202`.
pub async fn post_accepted(client: &reqwest::Client, server: &Server, body: String) {
    let r = client.post(server.url("/v1/posts")).body(body).send().await.unwrap();
    let status = r.status();
    assert_eq!(status, 202, "{}", r.text().await.unwrap_or_default());
}

/// The JSON answer of `GET path` on a running server.
pub async fn get_json(client: &reqwest::Client, server: &Server, path: &str) -> Value {
    client.get(server.url(path)).send().await.unwrap().json().await.unwrap()
}

/// `GET /metrics` of a running server.
pub async fn metrics(client: &reqwest::Client, server: &Server) -> String {
    client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// `chorus` with `args` on `data` (config beside it), whether it succeeded, its stdout and stderr.
pub fn run_cli(data: &Path, config: &Path, args: &[&str]) -> (bool, String, String) {
    let out = chorus()
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `chorus --data DATA --config CONFIG ARGS` (with `env`), which must
/// refuse to start: it must exit by itself, unsuccessfully, within a
/// minute (one still running is killed and the test fails, rather than
/// hang). Returns its stderr.
pub fn run_refused(data: &Path, config: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut child = chorus()
        .arg("--data")
        .arg(data)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("chorus {args:?} started; it should have been refused");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "chorus {args:?} exited successfully: {stderr}");
    stderr
}

/// Waits (up to three minutes) until every stage has read everything its
/// topic holds: the speed layer and the warehouse too, dead letters aside.
pub async fn wait_idle(client: &reqwest::Client, server: &Server) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let status = get_json(client, server, "/v1/status").await;
        let busy: u64 = status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["topic"] != "posts.dead")
            .map(|s| s["lag"].as_u64().unwrap())
            .sum();
        if busy == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "the stages did not catch up: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST /v1/batch[?view=…]`: the runs' answers.
pub async fn batch(client: &reqwest::Client, server: &Server, view: Option<&str>) -> Vec<Value> {
    let url = match view {
        Some(v) => server.url(&format!("/v1/batch?view={v}")),
        None => server.url("/v1/batch"),
    };
    let r = client.post(url).send().await.unwrap();
    assert!(r.status().is_success(), "batch: {}", r.status());
    r.json::<Vec<Value>>().await.unwrap()
}

/// Writes `posts` into `posts.raw` of the embedded log of `data` (4
/// partitions) directly, as an older version that accepted them would
/// have: what the pipeline does with records its API would refuse.
pub fn plant_raw(data: &Path, posts: Vec<chorus::record::IncomingPost>) {
    use chorus::log::{Log, Topic, fjall::FjallLog, post_key};
    let log = FjallLog::open(&data.join("log"), 4).unwrap();
    for incoming in posts {
        let key = post_key(&incoming.platform, &incoming.id);
        let value = chorus::record::RawPost {
            incoming,
            ingested_at: 1,
        }
        .to_log_bytes();
        log.append(Topic::Raw, &[(&key, &value)]).unwrap();
    }
}
