//! The batch, speed and serving layers, through the real binary: served
//! views equal their SQL over `posts_latest`, across re-sends with changed
//! counts, batch runs at random moments, restarts and kill -9.

use serde_json::{Value, json};

use crate::server::{Server, batch, corpus_bodies, get_json, metrics, post_accepted, run_cli, sql, wait_idle};

/// Files roll every second, so the views read archive files and the log;
/// the scheduler is off (runs happen when the test says); queries of a
/// debug build beside the other tests get time.
const CONFIG: &str = "[archive]\nmax_file_age_secs = 1\n[batch]\nscheduler = false\nkeep_replaced_secs = 0\nspeed_layer = true\n\
[index]\nenabled = false\n[query]\nmax_seconds = 300\n";

/// Each built-in view's SQL (as `views::BUILT_IN`, written out again: the
/// test checks the served view against the definition a user reads).
const BUILT_IN: [(&str, &str, &[&str]); 3] = [
    (
        "by_location",
        "SELECT location, count(id) AS count_id, sum(author_followers) AS sum_followers_count, \
         sum(score) AS sum_favorite_count, sum(reposts) AS sum_retweet_count FROM posts_latest GROUP BY location",
        &["location"],
    ),
    (
        "by_community_hour",
        "SELECT platform, community, date_trunc('hour', created_at) AS hour, count(*) AS posts, \
         avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound, \
         sum(CASE WHEN sentiment = 'positive' THEN 1 ELSE 0 END) AS positive, \
         sum(CASE WHEN sentiment = 'neutral' THEN 1 ELSE 0 END) AS neutral, \
         sum(CASE WHEN sentiment = 'negative' THEN 1 ELSE 0 END) AS negative \
         FROM posts_latest GROUP BY 1, 2, 3",
        &["platform", "community", "hour"],
    ),
    (
        "by_author_day",
        "SELECT platform, author, date_trunc('day', created_at) AS day, count(*) AS posts, \
         avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound \
         FROM posts_latest GROUP BY 1, 2, 3",
        &["platform", "author", "day"],
    ),
];

/// A random post over a small pool of ids, so that re-sends (same id,
/// other counts, text or location) are frequent.
fn random_post(rng: &mut fastrand::Rng, bodies: &[String]) -> Value {
    const LOCATIONS: [Option<&str>; 4] = [Some("Cupertino"), Some("Berlin"), Some("Lagos"), None];
    const COMMUNITIES: [&str; 3] = ["apple", "news", "tech"];
    let id = rng.usize(0..400);
    let platform = if rng.bool() { "twitter" } else { "reddit" };
    let mut post = json!({
        "platform": platform,
        "id": format!("p{id}"),
        "community": COMMUNITIES[id % 3],
        "author": format!("user{}", id % 23),
        "body": bodies[rng.usize(0..bodies.len())],
        "created_at": 1_700_000_000 + (id as i64 * 3_607) % 259_200,
        "score": rng.i64(0..1000),
        "reposts": rng.i64(0..50),
        "author_followers": rng.i64(0..100_000),
    });
    if let Some(location) = LOCATIONS[rng.usize(0..LOCATIONS.len())] {
        post["location"] = json!(location);
    }
    if rng.u8(0..10) == 0 {
        // Some posts leave the counts out (NULL in the sums).
        post.as_object_mut().unwrap().remove("reposts");
    }
    post
}

/// Rows keyed by their group columns, for comparing two answers.
fn keyed(rows: Vec<Value>, keys: &[&str]) -> std::collections::BTreeMap<String, Value> {
    rows.into_iter()
        .map(|row| {
            let key: Vec<String> = keys.iter().map(|k| row[*k].to_string()).collect();
            (key.join("|"), row)
        })
        .collect()
}

/// Whether two answers agree: integers and text exactly, floats to 1e-9
/// (sums of floats depend on their order).
fn assert_same(
    view: &str,
    served: &std::collections::BTreeMap<String, Value>,
    sql: &std::collections::BTreeMap<String, Value>,
    when: &str,
) {
    let served_keys: Vec<&String> = served.keys().collect();
    let sql_keys: Vec<&String> = sql.keys().collect();
    assert_eq!(served_keys, sql_keys, "{view} {when}: the groups differ");
    for (key, row) in sql {
        let got = &served[key];
        for (column, want) in row.as_object().unwrap() {
            let have = &got[column];
            match (want.as_f64(), have.as_f64()) {
                (Some(w), Some(h)) if !(want.is_i64() && have.is_i64()) => assert!(
                    (w - h).abs() <= 1e-9 * w.abs().max(1.0),
                    "{view} {when}: {key} {column}: served {h}, SQL {w}"
                ),
                _ => assert_eq!(have, want, "{view} {when}: {key} {column}"),
            }
        }
    }
}

/// Checks every built-in view, served, against its SQL now.
async fn check_views(client: &reqwest::Client, server: &Server, when: &str) {
    wait_idle(client, server).await;
    for (view, definition, keys) in BUILT_IN {
        let served = keyed(sql(client, server, &format!("SELECT * FROM views.{view}")).await, keys);
        let direct = keyed(sql(client, server, definition).await, keys);
        assert_same(view, &served, &direct, when);
        // The HTTP view answers the same rows as the SQL table.
        let answer = get_json(client, server, &format!("/v1/views/{view}")).await;
        let by_http = keyed(answer["rows"].as_array().expect("rows").clone(), keys);
        assert_same(view, &by_http, &direct, when);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn served_views_equal_their_sql_across_resends_batch_runs_restarts_and_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    // CHORUS_TEST_KEEP=DIR keeps the data directory to look at.
    let data = std::env::var("CHORUS_TEST_KEEP").map_or_else(|_| dir.path().join("data"), std::path::PathBuf::from);
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let seed = std::env::var("CHORUS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_261_201);
    eprintln!("seed {seed} (CHORUS_TEST_SEED reruns it)");
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut server = Server::start(&data, CONFIG, &[]);
    // Served before any batch run: the speed layer alone. Enough posts in
    // one request (~1,250 a partition, most of them re-sends) that the
    // layer reads more at once than it adds in one step (1,024).
    let first: String = (0..5_000)
        .map(|_| random_post(&mut rng, &bodies).to_string() + "\n")
        .collect();
    post_accepted(&client, &server, first).await;
    check_views(&client, &server, "before any batch run").await;
    for round in 0..12 {
        let posts: String = (0..rng.usize(50..300))
            .map(|_| random_post(&mut rng, &bodies).to_string() + "\n")
            .collect();
        let action = rng.u8(0..5);
        eprintln!("round {round}: action {action}");
        match action {
            // A batch run while posts arrive.
            0 | 1 => {
                let view = if rng.bool() {
                    Some(BUILT_IN[rng.usize(0..3)].0)
                } else {
                    None
                };
                let (runs, ()) = tokio::join!(batch(&client, &server, view), post_accepted(&client, &server, posts));
                assert!(
                    runs.iter().all(|r| r["error"].is_null()),
                    "round {round}: a run failed: {runs:?}"
                );
            }
            // Posts, then kill -9 at once (acknowledged posts are durable).
            2 => {
                post_accepted(&client, &server, posts).await;
                server.kill9();
                server = Server::start(&data, CONFIG, &[]);
            }
            // Posts, then a clean restart.
            3 => {
                post_accepted(&client, &server, posts).await;
                server.stop();
                server = Server::start(&data, CONFIG, &[]);
            }
            _ => post_accepted(&client, &server, posts).await,
        }
        check_views(&client, &server, &format!("after round {round}")).await;
    }
    // The views did run, and their versions hold partial sums of many
    // posts (re-sends counted once).
    let status = get_json(&client, &server, "/v1/status").await;
    for view in status["views"].as_array().unwrap() {
        assert_eq!(view["speed_layer"], true, "{view}");
    }
    let distinct = sql(&client, &server, "SELECT count(*) AS n FROM posts_latest").await[0]["n"]
        .as_u64()
        .unwrap();
    let counted: u64 = sql(&client, &server, "SELECT sum(count_id) AS n FROM views.by_location").await[0]["n"]
        .as_u64()
        .unwrap();
    assert_eq!(counted, distinct);
    let all = sql(&client, &server, "SELECT count(*) AS n FROM posts").await[0]["n"]
        .as_u64()
        .unwrap();
    assert!(
        all > distinct,
        "the test sent no re-sends ({all} posts, {distinct} distinct)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_run_keeps_the_previous_version_serving_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // A view that plans, and fails once a body is not a number; and a view
    // whose max cannot take back a re-sent post: served batch-only.
    let config = format!(
        "{CONFIG}[[views]]\nname = \"numeric\"\nsql = \"SELECT community, sum(CAST(body AS BIGINT)) AS total FROM \
         posts_latest GROUP BY community\"\n[[views]]\nname = \"top_score\"\nsql = \"SELECT community, max(score) AS \
         best FROM posts_latest GROUP BY community\"\n"
    );
    let client = reqwest::Client::new();
    let server = Server::start(&data, &config, &[]);
    let post = |id: &str, body: &str, score: i64| {
        json!({"platform": "reddit", "id": id, "community": "c", "body": body, "created_at": 1_700_000_000, "score": score})
            .to_string()
    };
    post_accepted(&client, &server, post("a", "12", 5)).await;
    wait_idle(&client, &server).await;
    let runs = batch(&client, &server, Some("numeric")).await;
    assert!(runs[0]["error"].is_null(), "{runs:?}");
    let runs = batch(&client, &server, Some("top_score")).await;
    assert!(runs[0]["error"].is_null(), "{runs:?}");
    post_accepted(&client, &server, post("b", "not a number", 9)).await;
    wait_idle(&client, &server).await;
    let runs = batch(&client, &server, Some("numeric")).await;
    let error = runs[0]["error"].as_str().expect("the run fails");
    assert!(error.to_lowercase().contains("cast"), "{error}");
    // The previous version still serves, and status and metrics say why.
    let rows = sql(&client, &server, "SELECT total FROM views.numeric").await;
    assert_eq!(rows, [json!({"total": 12})]);
    let status = get_json(&client, &server, "/v1/status").await;
    let numeric = status["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "numeric")
        .unwrap()
        .clone();
    assert!(numeric["error"].as_str().unwrap().contains(error), "{numeric}");
    assert_eq!(numeric["version"]["rows"], 1);
    let text = metrics(&client, &server).await;
    assert!(text.contains("chorus_view_failing{view=\"numeric\"} 1\n"), "{text}");
    assert!(text.contains("chorus_view_failures_total 1\n"), "{text}");
    // max() is served batch-only: the new post shows after the next run.
    let top = status["views"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "top_score")
        .unwrap()
        .clone();
    assert_eq!(top["speed_layer"], false);
    assert!(top["batch_only"].as_str().unwrap().contains("max"), "{top}");
    assert_eq!(
        sql(&client, &server, "SELECT best FROM views.top_score").await,
        [json!({"best": 5})]
    );
    batch(&client, &server, Some("top_score")).await;
    assert_eq!(
        sql(&client, &server, "SELECT best FROM views.top_score").await,
        [json!({"best": 9})]
    );
    // Unknown and unbuilt views are 404s that say what to do.
    let r = client.get(server.url("/v1/views/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("by_location"));
    server.stop();

    // Offline: `chorus status` shows the failure, `chorus batch` runs and
    // fails with a non-zero exit, the other views still built.
    let config_path = data.with_extension("toml");
    let (ok, out, _) = run_cli(&data, &config_path, &["status"]);
    assert!(ok);
    assert!(
        out.contains("view numeric:") && out.contains("last run FAILED"),
        "{out}"
    );
    let (ok, out, err) = run_cli(&data, &config_path, &["batch"]);
    assert!(!ok, "a failed view fails the command: {out} {err}");
    assert!(
        out.contains("by_location: 2 rows") || out.contains("by_location: 1 rows"),
        "{out}"
    );
    assert!(out.contains("numeric: FAILED"), "{out}");
    let (ok, out, _) = run_cli(&data, &config_path, &["batch", "--view", "by_community_hour"]);
    assert!(ok);
    assert!(out.contains("by_community_hour: 1 rows"), "{out}");
    let (ok, _, err) = run_cli(&data, &config_path, &["batch", "--view", "nope"]);
    assert!(!ok && err.contains("no view is named \"nope\""), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_never_see_a_half_made_version() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let server = Server::start(&data, CONFIG, &[]);
    let mut rng = fastrand::Rng::with_seed(7);
    let posts: String = (0..500)
        .map(|_| random_post(&mut rng, &bodies).to_string() + "\n")
        .collect();
    post_accepted(&client, &server, posts).await;
    wait_idle(&client, &server).await;
    let expected = sql(
        &client,
        &server,
        "SELECT sum(count_id) AS n, count(*) AS groups FROM views.by_location",
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (client, url, stop) = (client.clone(), server.url("/v1/sql"), stop.clone());
        tokio::spawn(async move {
            let mut reads = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client
                    .post(&url)
                    .json(&json!({"sql": "SELECT sum(count_id) AS n, count(*) AS groups FROM views.by_location"}))
                    .send()
                    .await
                    .unwrap();
                assert!(
                    r.status().is_success(),
                    "a read failed during swaps: {}",
                    r.text().await.unwrap()
                );
                let body: Value = r.json().await.unwrap();
                assert_eq!(body["rows"].as_array().unwrap(), &expected, "a read saw another answer");
                reads += 1;
            }
            reads
        })
    };
    for _ in 0..8 {
        let runs = batch(&client, &server, Some("by_location")).await;
        assert!(runs[0]["error"].is_null());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
    // Replaced versions are gone after their grace period (0 s here).
    let versions = std::fs::read_dir(data.join("archive/views/by_location"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_name().to_string_lossy().starts_with('v'))
        .count();
    assert!(versions <= 2, "{versions} versions kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_the_speed_layer_on_or_off_keeps_the_views_right() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let bodies = corpus_bodies();
    let client = reqwest::Client::new();
    let mut rng = fastrand::Rng::with_seed(11);
    let off = CONFIG.replace("speed_layer = true", "speed_layer = false");
    let posts = |rng: &mut fastrand::Rng| -> String {
        (0..150).map(|_| random_post(rng, &bodies).to_string() + "\n").collect()
    };
    let (view, definition, keys) = BUILT_IN[0];
    let served = |server: &Server| {
        let (client, server_url) = (client.clone(), server.url("/v1/sql"));
        async move {
            let r = client
                .post(server_url)
                .json(&json!({"sql": format!("SELECT * FROM views.{view}")}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    // Off: served as of the last run, not past it.
    let server = Server::start(&data, &off, &[]);
    post_accepted(&client, &server, posts(&mut rng)).await;
    wait_idle(&client, &server).await;
    batch(&client, &server, None).await;
    let at_run = keyed(sql(&client, &server, definition).await, keys);
    post_accepted(&client, &server, posts(&mut rng)).await;
    wait_idle(&client, &server).await;
    let (status, answer) = served(&server).await;
    assert_eq!(status, 200, "{answer}");
    assert_same(
        view,
        &keyed(answer["rows"].as_array().unwrap().clone(), keys),
        &at_run,
        "speed off",
    );
    let view_state = get_json(&client, &server, "/v1/views").await;
    assert!(
        view_state[0]["batch_only"]
            .as_str()
            .unwrap()
            .contains("speed_layer is off"),
        "{view_state}"
    );
    server.stop();
    // On: exact now at once (the version of final columns is not added to;
    // the layer counts every post from the log), and after a run too.
    let server = Server::start(&data, CONFIG, &[]);
    check_views(&client, &server, "speed switched on").await;
    post_accepted(&client, &server, posts(&mut rng)).await;
    batch(&client, &server, None).await;
    check_views(&client, &server, "speed on, after a run").await;
    server.stop();
    // Off again: the version of partial sums is not served as the view's
    // columns; the next run makes one that is.
    let server = Server::start(&data, &off, &[]);
    let (status, answer) = served(&server).await;
    assert_eq!(status, 400, "{answer}");
    batch(&client, &server, None).await;
    let (status, answer) = served(&server).await;
    assert_eq!(status, 200, "{answer}");
    let now = keyed(sql(&client, &server, definition).await, keys);
    assert_same(
        view,
        &keyed(answer["rows"].as_array().unwrap().clone(), keys),
        &now,
        "speed off again",
    );
    post_accepted(&client, &server, posts(&mut rng)).await;
    server.stop();
    // On again after a run made while it was off: the layer's state no
    // longer fits the version, so it is built again from the log.
    let server = Server::start(&data, CONFIG, &[]);
    check_views(&client, &server, "speed on again").await;
    server.stop();
    // Another kept view, first opened by an offline `chorus sql`: the state
    // starts again there, and the next server still counts every post.
    let more = format!(
        "{CONFIG}[[views]]\nname = \"per_platform\"\nsql = \"SELECT platform, count(*) AS posts FROM posts_latest \
         GROUP BY platform\"\n"
    );
    let config_path = dir.path().join("more.toml");
    std::fs::write(&config_path, &more).unwrap();
    let (ok, _, err) = run_cli(&data, &config_path, &["sql", "SELECT * FROM views.per_platform"]);
    assert!(ok, "{err}");
    let server = Server::start(&data, &more, &[]);
    check_views(&client, &server, "after the views changed offline").await;
    let served = keyed(
        sql(&client, &server, "SELECT * FROM views.per_platform").await,
        &["platform"],
    );
    let direct = keyed(
        sql(
            &client,
            &server,
            "SELECT platform, count(*) AS posts FROM posts_latest GROUP BY platform",
        )
        .await,
        &["platform"],
    );
    assert_same("per_platform", &served, &direct, "after the views changed offline");
    server.stop();
}
