//! The warehouse export against a real PostgreSQL 15, started per test
//! (initdb in a temporary directory, as the `postgres` user when run as
//! root): posts exactly once across kill -9, dropped connections and a
//! database that goes away; `by_location` equal to the reference's own
//! SQL over the exported posts; view swaps atomic for a concurrent reader.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Server, batch, corpus_bodies, get_json, run_cli, sql, wait_idle};

/// A PostgreSQL server of its own, stopped (immediately) when dropped.
struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// Whether this process runs as root (postgres refuses to).
fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Postgres {
    fn start() -> Postgres {
        let bin =
            PathBuf::from(std::env::var("CHORUS_TEST_PG_BIN").unwrap_or_else(|_| "/usr/lib/postgresql/15/bin".into()));
        assert!(
            bin.join("initdb").exists(),
            "PostgreSQL 15 is not installed in {} (scripts/test.sh installs it: apt-get install postgresql-15)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(dir.path())
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let pg = Postgres { dir, bin, port };
        pg.run(
            "initdb",
            &[
                "-D",
                &pg.data(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        pg.up();
        pg
    }

    fn data(&self) -> String {
        self.dir.path().join("data").display().to_string()
    }

    /// Runs one of PostgreSQL's programs (as `postgres` when root).
    fn run(&self, program: &str, args: &[&str]) {
        let path = self.bin.join(program);
        let mut command = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        let out = command.args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn up(&self) {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("log").display().to_string();
        self.run(
            "pg_ctl",
            &["-D", &self.data(), "-l", &log, "-w", "-o", &options, "start"],
        );
    }

    fn down(&self) {
        self.run("pg_ctl", &["-D", &self.data(), "-m", "immediate", "-w", "stop"]);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(
            &format!("host=127.0.0.1 port={} user=postgres dbname=postgres", self.port),
            tokio_postgres::NoTls,
        )
        .await
        .unwrap();
        tokio::spawn(connection);
        client
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let path = self.bin.join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "stop"];
        let _ = if is_root() {
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(path)
                .args(args)
                .output()
        } else {
            Command::new(path).args(args).output()
        };
    }
}

/// A config exporting to `pg`, files rolling every second, no index, the
/// scheduler off, queries over 100k posts of a debug build given time.
fn config(pg: &Postgres, extra: &str) -> String {
    format!(
        "[archive]\nmax_file_age_secs = 1\n[index]\nenabled = false\n[query]\nmax_seconds = 300\n[batch]\nscheduler = false\nkeep_replaced_secs = 0\n\
         [warehouse]\nurl = \"{}\"\nbatch_rows = 2000\nflush_ms = 200\nmax_backoff_secs = 1\n{extra}",
        pg.url()
    )
}

/// A PostgreSQL, and a server exporting to it on a data directory of its
/// own, with the corpus texts and an HTTP client.
struct Setup {
    pg: Postgres,
    _dir: tempfile::TempDir,
    server: Server,
    bodies: Vec<String>,
    client: reqwest::Client,
}

fn setup() -> Setup {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"), &config(&pg, ""), &[]);
    Setup {
        pg,
        _dir: dir,
        server,
        bodies: corpus_bodies(),
        client: reqwest::Client::new(),
    }
}

/// Posts `body` (NDJSON), again while the server answers 429.
async fn post_all(client: &reqwest::Client, server: &Server, body: String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let r = client
            .post(server.url("/v1/posts"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            202 => return,
            429 => {
                assert!(Instant::now() < deadline, "throttled for two minutes");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            status => panic!("{status}: {}", r.text().await.unwrap_or_default()),
        }
    }
}

/// Post `i`: `score` 0..100, or `10_000 + i` when re-sent.
fn post(i: usize, bodies: &[String], resent: bool) -> Value {
    const LOCATIONS: [Option<&str>; 4] = [Some("Cupertino"), Some("Berlin"), Some("Lagos"), None];
    const COMMUNITIES: [&str; 3] = ["apple", "news", "tech"];
    json!({
        "platform": if i.is_multiple_of(2) { "twitter" } else { "reddit" },
        "id": format!("w{i}"),
        "community": COMMUNITIES[i % 3],
        "author": format!("user{}", i % 101),
        "body": bodies[i % bodies.len()],
        "created_at": 1_700_000_000 + (i as i64 * 3_607) % 259_200,
        "score": if resent { 10_000 + i as i64 } else { (i % 100) as i64 },
        "reposts": (i % 7) as i64,
        "author_followers": (i * 31 % 5000) as i64,
        "location": LOCATIONS[i % 4],
    })
}

fn ndjson(range: std::ops::Range<usize>, bodies: &[String], resent: bool) -> String {
    range.map(|i| post(i, bodies, resent).to_string() + "\n").collect()
}

async fn count(pg: &tokio_postgres::Client, query: &str) -> i64 {
    pg.query_one(query, &[]).await.unwrap().get(0)
}

/// Drops every connection chorus has to the database.
async fn drop_connections(pg: &tokio_postgres::Client) -> i64 {
    pg.query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'chorus'",
        &[],
    )
    .await
    .unwrap()
    .len() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn posts_are_exported_exactly_once_across_kill_9_dropped_connections_and_a_database_restart() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let config = config(&pg, "");
    let mut server = Server::start(&data, &config, &[]);
    let db = pg.client().await;
    const N: usize = 100_000;
    const CHUNK: usize = 5_000;
    let mut dropped = 0;
    for (round, start) in (0..N).step_by(CHUNK).enumerate() {
        post_all(&client, &server, ndjson(start..start + CHUNK, &bodies, false)).await;
        match round {
            // kill -9 while the warehouse is behind (some merged, some not).
            7 => {
                let merged = count(&db, "SELECT count(*) FROM chorus.posts").await;
                eprintln!("kill -9 with {merged} of {} posts merged", start + CHUNK);
                server.kill9();
                server = Server::start(&data, &config, &[]);
            }
            // Connections dropped under the sink mid-stream.
            9 | 11 | 13 => dropped += drop_connections(&db).await,
            _ => {}
        }
    }
    assert!(dropped > 0, "no connection of chorus was dropped");
    // Re-sends of 1000 posts with new counts: replaced, never added.
    post_all(&client, &server, ndjson(0..1000, &bodies, true)).await;
    // The database goes away for a while, then comes back.
    let db_restart = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        pg.down();
        tokio::time::sleep(Duration::from_secs(3)).await;
        pg.up();
    };
    let (_, ()) = tokio::join!(
        db_restart,
        post_all(&client, &server, ndjson(N..N + 2000, &bodies, false))
    );
    wait_idle(&client, &server).await;
    let db = pg.client().await;
    let total = (N + 2000) as i64;
    assert_eq!(count(&db, "SELECT count(*) FROM chorus.posts").await, total);
    assert_eq!(
        count(&db, "SELECT count(DISTINCT (platform, id)) FROM chorus.posts").await,
        total
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM chorus.posts WHERE score >= 10000").await,
        1000
    );
    // The same posts as chorus's own posts_latest, column for column.
    let chorus_sums = &sql(
        &client,
        &server,
        "SELECT count(*) AS n, sum(score) AS score, sum(author_followers) AS followers, \
         sum(CASE WHEN sentiment = 'positive' THEN 1 ELSE 0 END) AS positive, \
         sum(length(body)) AS body FROM posts_latest",
    )
    .await[0];
    let row = db
        .query_one(
            "SELECT count(*), sum(score)::bigint, sum(author_followers)::bigint, \
             count(*) FILTER (WHERE sentiment = 'positive'), sum(length(body))::bigint FROM chorus.posts",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), chorus_sums["n"].as_i64().unwrap());
    assert_eq!(row.get::<_, i64>(1), chorus_sums["score"].as_i64().unwrap());
    assert_eq!(row.get::<_, i64>(2), chorus_sums["followers"].as_i64().unwrap());
    assert_eq!(row.get::<_, i64>(3), chorus_sums["positive"].as_i64().unwrap());
    assert_eq!(row.get::<_, i64>(4), chorus_sums["body"].as_i64().unwrap());
    let metrics = crate::server::metrics(&client, &server).await;
    let retries: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("chorus_warehouse_retries_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(retries > 0, "the database restart caused no retry:\n{metrics}");
    server.stop();
}

/// The reference's nightly SQL (`batch_layer`), over the exported posts:
/// de-duplicate with `DISTINCT`, then count and sum per location.
const REFERENCE_BATCH_LAYER: &str = "WITH raw_dedup AS (\
     SELECT DISTINCT id, location, author_followers AS followers_count, score AS favorite_count, \
     reposts AS retweet_count, created_at FROM chorus.posts) \
     SELECT location, count(id) AS count_id, sum(followers_count) AS sum_followers_count, \
     sum(favorite_count) AS sum_favorite_count, sum(retweet_count) AS sum_retweet_count \
     FROM raw_dedup GROUP BY location";

/// `(location, count_id, sums)` rows of a by_location answer from
/// PostgreSQL, sorted.
async fn by_location(db: &tokio_postgres::Client, query: &str) -> Vec<(Option<String>, i64, i64, i64, i64)> {
    let mut rows: Vec<_> = db
        .query(
            &format!(
                "SELECT location, count_id::bigint, sum_followers_count::bigint, sum_favorite_count::bigint, \
                 sum_retweet_count::bigint FROM ({query}) AS v"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    rows.sort();
    rows
}

/// The version of `view` the warehouse records, if any.
async fn exported_version(db: &tokio_postgres::Client, view: &str) -> Option<String> {
    db.query_opt("SELECT version FROM chorus.chorus_views WHERE name = $1", &[&view])
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
}

/// Runs `view` now through the server and waits until the warehouse holds
/// that version.
async fn run_and_export(client: &reqwest::Client, server: &Server, db: &tokio_postgres::Client, view: &str) -> String {
    let runs = batch(client, server, Some(view)).await;
    assert!(runs[0]["error"].is_null(), "{runs:?}");
    let version = runs[0]["version"]["version"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(60);
    while exported_version(db, view).await.as_deref() != Some(version.as_str()) {
        assert!(Instant::now() < deadline, "{view} {version} was not exported");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    version
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn by_location_in_the_warehouse_equals_the_reference_sql_and_a_run_while_it_is_down_reaches_it_later() {
    let Setup {
        pg,
        server,
        bodies,
        client,
        _dir,
    } = setup();
    post_all(&client, &server, ndjson(0..3000, &bodies, false)).await;
    // Re-sends with new counts: the reference's DISTINCT over six columns
    // counted these twice in its raw table; the exported posts hold one
    // row per post, so its SQL and the view agree.
    post_all(&client, &server, ndjson(0..500, &bodies, true)).await;
    wait_idle(&client, &server).await;
    let db = pg.client().await;
    run_and_export(&client, &server, &db, "by_location").await;
    let exported = by_location(&db, "SELECT * FROM chorus.by_location").await;
    let reference = by_location(&db, REFERENCE_BATCH_LAYER).await;
    assert_eq!(exported.len(), 4, "{exported:?}");
    assert_eq!(exported, reference);
    assert_eq!(exported.iter().map(|r| r.1).sum::<i64>(), 3000);
    // And the same rows chorus serves.
    let served = get_json(&client, &server, "/v1/views/by_location").await;
    let mut served: Vec<(Option<String>, i64, i64, i64, i64)> = served["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["location"].as_str().map(String::from),
                r["count_id"].as_i64().unwrap(),
                r["sum_followers_count"].as_i64().unwrap(),
                r["sum_favorite_count"].as_i64().unwrap(),
                r["sum_retweet_count"].as_i64().unwrap(),
            )
        })
        .collect();
    served.sort();
    assert_eq!(served, exported);
    // The other built-in views are tables of the warehouse too, with the
    // view's columns.
    run_and_export(&client, &server, &db, "by_community_hour").await;
    let columns: Vec<String> = db
        .query(
            "SELECT column_name::text FROM information_schema.columns WHERE table_schema = 'chorus' \
             AND table_name = 'by_community_hour' ORDER BY ordinal_position",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        columns,
        [
            "platform",
            "community",
            "hour",
            "posts",
            "mean_polarity",
            "mean_vader_compound",
            "positive",
            "neutral",
            "negative"
        ]
    );
    assert_eq!(
        count(&db, "SELECT sum(posts)::bigint FROM chorus.by_community_hour").await,
        3000
    );
    // A run while the warehouse is down serves at once, and reaches the
    // warehouse once it is back.
    drop(db);
    pg.down();
    let runs = batch(&client, &server, Some("by_author_day")).await;
    assert!(runs[0]["error"].is_null(), "{runs:?}");
    let version = runs[0]["version"]["version"].as_str().unwrap().to_string();
    let served = get_json(&client, &server, "/v1/views/by_author_day").await;
    let posts: i64 = served["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["posts"].as_i64().unwrap())
        .sum();
    assert_eq!(posts, 3000);
    // Its export fails meanwhile (retried with backoff up to 1 s here).
    tokio::time::sleep(Duration::from_secs(3)).await;
    pg.up();
    let db = pg.client().await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while exported_version(&db, "by_author_day").await.as_deref() != Some(version.as_str()) {
        assert!(
            Instant::now() < deadline,
            "by_author_day {version} was not exported after the warehouse came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        count(&db, "SELECT sum(posts)::bigint FROM chorus.by_author_day").await,
        3000
    );
    // The views exported before are still there, whole.
    assert_eq!(by_location(&db, "SELECT * FROM chorus.by_location").await, exported);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrent_reader_sees_each_view_swap_whole() {
    let Setup {
        pg,
        server,
        bodies,
        client,
        _dir,
    } = setup();
    let db = pg.client().await;
    const ROUND: usize = 400;
    post_all(&client, &server, ndjson(0..ROUND, &bodies, false)).await;
    wait_idle(&client, &server).await;
    run_and_export(&client, &server, &db, "by_location").await;
    // A reader reads the view as fast as it can while new versions are
    // swapped in: each read is one whole version (a multiple of ROUND
    // posts, never fewer than the read before), and none fails.
    let stop = tokio_util::sync::CancellationToken::new();
    let reader = {
        let (reader_db, stop) = (pg.client().await, stop.clone());
        tokio::spawn(async move {
            let (mut reads, mut last) = (0u64, 0i64);
            while !stop.is_cancelled() {
                let row = reader_db
                    .query_one("SELECT count(*), sum(count_id)::bigint FROM chorus.by_location", &[])
                    .await
                    .unwrap_or_else(|e| panic!("read {reads} failed: {e}"));
                let (groups, posts): (i64, i64) = (row.get(0), row.get(1));
                assert_eq!(groups, 4, "read {reads}: a view of {groups} locations");
                assert!(
                    (posts as u64).is_multiple_of(ROUND as u64) && posts >= last,
                    "read {reads}: {posts} posts after {last}"
                );
                last = posts;
                reads += 1;
            }
            (reads, last)
        })
    };
    for round in 1..6 {
        post_all(
            &client,
            &server,
            ndjson(round * ROUND..(round + 1) * ROUND, &bodies, false),
        )
        .await;
        wait_idle(&client, &server).await;
        run_and_export(&client, &server, &db, "by_location").await;
    }
    stop.cancel();
    let (reads, last) = reader.await.unwrap();
    assert_eq!(last, 6 * ROUND as i64);
    assert!(reads > 20, "only {reads} reads during the swaps");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_batch_exports_the_views_and_ddl_prints_their_tables() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let config_path = dir.path().join("chorus.toml");
    std::fs::write(&config_path, config(&pg, "")).unwrap();
    let input = dir.path().join("posts.ndjson");
    std::fs::write(&input, ndjson(0..800, &bodies, false)).unwrap();
    let (ok, _, err) = run_cli(&data, &config_path, &["ingest", input.to_str().unwrap()]);
    assert!(ok, "{err}");
    let db = pg.client().await;
    assert_eq!(count(&db, "SELECT count(*) FROM chorus.posts").await, 800);
    let (ok, out, err) = run_cli(&data, &config_path, &["batch"]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("by_location: exported to the warehouse (4 rows)"), "{out}");
    assert_eq!(
        count(&db, "SELECT sum(count_id)::bigint FROM chorus.by_location").await,
        800
    );
    assert_eq!(count(&db, "SELECT count(*) FROM chorus.chorus_views").await, 3);
    // A URL with a password is refused before anything runs, without
    // printing the password.
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        format!(
            "[warehouse]\nurl = \"postgres://postgres:hunter2@127.0.0.1:{}/postgres\"\n",
            pg.port
        ),
    )
    .unwrap();
    let (ok, out, err) = run_cli(&data, &bad, &["batch"]);
    assert!(
        !ok && err.contains("PGPASSWORD") && !err.contains("hunter2") && !out.contains("hunter2"),
        "{err}"
    );
    // The Redshift DDL: the posts table with the archive's columns, the
    // load from S3, and a table per view with its version's columns.
    let (ok, ddl, err) = run_cli(
        &data,
        &config_path,
        &[
            "ddl",
            "redshift",
            "--s3",
            "s3://bucket/chorus",
            "--iam-role",
            "arn:aws:iam::1:role/load",
        ],
    );
    assert!(ok, "{err}");
    assert!(
        ddl.contains("COPY \"chorus_staging\" FROM 's3://bucket/chorus/posts/'"),
        "{ddl}"
    );
    assert!(
        ddl.contains("CREATE TABLE \"chorus\".\"by_location__chorus_next\""),
        "{ddl}"
    );
    assert!(ddl.contains("\"count_id\" BIGINT NOT NULL"), "{ddl}");
    assert!(ddl.contains("'s3://bucket/chorus/views/by_author_day/v"), "{ddl}");
    // PostgreSQL runs the DDL's table statements (it accepts Redshift's
    // types): the same tables, in another schema.
    let tables: String = ddl
        .split(';')
        .filter(|s| s.trim_start().starts_with("CREATE TABLE") || s.contains("CREATE SCHEMA"))
        .map(|s| {
            s.replace("\"chorus\".", "\"ddl_check\".")
                .replace("\"chorus\"", "\"ddl_check\"")
                + ";"
        })
        .collect();
    db.batch_execute(&tables)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{tables}"));
    let columns = count(
        &db,
        "SELECT count(*) FROM information_schema.columns WHERE table_schema = 'ddl_check' AND table_name = 'posts'",
    )
    .await;
    assert_eq!(columns, 23);
}

/// A data directory (index off) into which `chorus ingest` wrote posts
/// `0..n`: the directory, the data directory and the config file.
fn ingested(n: usize) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config_path = dir.path().join("chorus.toml");
    std::fs::write(&config_path, "[index]\nenabled = false\n").unwrap();
    let input = dir.path().join("posts.ndjson");
    std::fs::write(&input, ndjson(0..n, &corpus_bodies(), false)).unwrap();
    let (ok, _, err) = run_cli(&data, &config_path, &["ingest", input.to_str().unwrap()]);
    assert!(ok, "{err}");
    (dir, data, config_path)
}

/// `chorus ddl athena|trino|redshift` over a real archive: each engine's
/// table has the columns of the archive's Parquet files, in their order,
/// with the type that engine reads each Parquet type as, then `dt` and
/// `hour`; Spectrum gets one partition per hour directory the archive has.
/// (No Athena, Trino or Redshift runs here: the statements are checked
/// against the files, not run.)
#[test]
fn the_external_tables_have_the_archive_files_columns_and_partitions() {
    use chorus::warehouse::external::{Engine, column_type, parse_columns};
    let (_dir, data, config_path) = ingested(300);
    // The schema of a file the archive wrote, and its hour directories.
    let posts = data.join("archive/posts");
    let mut hours = Vec::new();
    let mut file = None;
    for day in std::fs::read_dir(&posts).unwrap() {
        let day = day.unwrap().path();
        for hour in std::fs::read_dir(&day).unwrap() {
            let hour = hour.unwrap().path();
            let name = |p: &std::path::Path| p.file_name().unwrap().to_str().unwrap().to_string();
            hours.push(format!("{}/{}", name(&day), name(&hour)));
            file = std::fs::read_dir(&hour)
                .unwrap()
                .next()
                .map(|f| f.unwrap().path())
                .or(file);
        }
    }
    hours.sort();
    assert!(hours.len() > 1, "{hours:?}");
    let parquet = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
        std::fs::File::open(file.unwrap()).unwrap(),
    )
    .unwrap()
    .schema()
    .clone();
    for (engine, name) in [
        (Engine::Athena, "athena"),
        (Engine::Trino, "trino"),
        (Engine::Spectrum, "redshift"),
    ] {
        let (ok, ddl, err) = run_cli(&data, &config_path, &["ddl", name, "--s3", "s3://bucket/team/chorus"]);
        assert!(ok, "{err}");
        let columns = parse_columns(engine, &ddl[ddl.find("archive read in place").unwrap_or(0)..]);
        let mut expected: Vec<String> = parquet.fields().iter().map(|f| f.name().clone()).collect();
        expected.extend(["dt".to_string(), "hour".to_string()]);
        assert_eq!(
            columns.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            expected,
            "{name}:\n{ddl}"
        );
        for (field, (_, ty)) in parquet.fields().iter().zip(&columns) {
            assert_eq!(
                Some(ty.as_str()),
                column_type(engine, field.data_type()),
                "{name}: {field}"
            );
        }
        assert!(ddl.contains("'s3://bucket/team/chorus/posts/'"), "{name}:\n{ddl}");
        if engine == Engine::Spectrum {
            let added: Vec<String> = ddl
                .lines()
                .filter(|l| l.contains("ADD IF NOT EXISTS PARTITION"))
                .map(|l| {
                    let location = l.split("LOCATION 's3://bucket/team/chorus/posts/").nth(1).unwrap();
                    location.trim_end_matches("/';").to_string()
                })
                .collect();
            assert_eq!(added, hours, "{ddl}");
        }
    }
    // Without --s3, an archive on disk gets a placeholder to replace.
    let (ok, ddl, err) = run_cli(&data, &config_path, &["ddl", "athena"]);
    assert!(ok, "{err}");
    assert!(ddl.contains("LOCATION 's3://<bucket>/<prefix>/posts/'"), "{ddl}");
}

/// An engine that reads the archive where it is, on S3: the archive's
/// files put into a real S3-compatible server (s3s-fs) by chorus's object
/// writer, then read by DuckDB through its httpfs extension (from PyPI,
/// installed by scripts/test.sh) with Hive partitioning: the same posts,
/// scores and partitions as chorus's own SQL over them.
#[test]
fn duckdb_reads_the_archive_on_an_s3_server_as_chorus_does() {
    use chorus::sinks::archive::objects::testing::{ACCESS_KEY, S3Server, SECRET_KEY};
    let (dir, data, config_path) = ingested(400);
    const CHECK: &str = "SELECT count(*) AS n, count(DISTINCT id) AS ids, sum(score) AS score, \
                         sum(vader_compound) AS compound, count(DISTINCT dt) AS days, count(DISTINCT hour) AS hours";
    let (ok, ours, err) = run_cli(
        &data,
        &config_path,
        &["sql", "--format", "json", &format!("{CHECK} FROM posts")],
    );
    assert!(ok, "{err}");
    let ours: Value = serde_json::from_str(&ours).unwrap();

    let server = S3Server::start(dir.path(), "lake");
    let store = server.archive("s3://lake/team/chorus");
    let root = data.join("archive");
    let files = chorus::sinks::archive::files_under(&root.join("posts")).unwrap();
    assert!(files.len() > 10, "{} files", files.len());
    for path in &files {
        let key = path.strip_prefix(&root).unwrap().to_str().unwrap();
        store.put_file(path, key).unwrap();
    }

    let endpoint = server.endpoint.trim_start_matches("http://");
    let prelude = format!(
        "import duckdb_extension_httpfs\n\
         c.sql(\"LOAD '\" + os.path.join(os.path.dirname(duckdb_extension_httpfs.__file__), 'extensions', 'v' + duckdb.__version__, 'httpfs.duckdb_extension') + \"'\")\n\
         c.sql(\"CREATE SECRET s3 (TYPE s3, KEY_ID '{ACCESS_KEY}', SECRET '{SECRET_KEY}', REGION 'us-east-1', ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)\")"
    );
    let theirs: Vec<f64> = crate::server::duckdb_row(
        &prelude,
        &format!("{CHECK} FROM read_parquet('s3://lake/team/chorus/posts/*/*/*.parquet', hive_partitioning = true)"),
    )
    .into_iter()
    .map(|v| v.unwrap())
    .collect();
    let row = &ours[0];
    let expected: Vec<f64> = ["n", "ids", "score", "compound", "days", "hours"]
        .iter()
        .map(|k| row[*k].as_f64().unwrap())
        .collect();
    assert_eq!(theirs.len(), expected.len());
    for (i, (a, b)) in theirs.iter().zip(&expected).enumerate() {
        assert!(
            (a - b).abs() <= 1e-9 * b.abs().max(1.0),
            "column {i}: DuckDB {a}, chorus {b}"
        );
    }
    assert_eq!(expected[0], 400.0);
}
