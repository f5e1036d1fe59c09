//! Search through the real binary: posts searchable within a second of
//! their 202, totals that agree with SQL over the same posts, one document
//! per post however often it is re-sent, pages that cover every hit once,
//! and an index rebuilt from the log when it is lost.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::server::{Server, corpus_bodies, ndjson, sql, wait_for_count};

async fn search(client: &reqwest::Client, server: &Server, params: &[(&str, &str)]) -> (u16, Value) {
    let response = client.get(server.url("/v1/search")).query(params).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn total(client: &reqwest::Client, server: &Server, params: &[(&str, &str)]) -> u64 {
    let (status, answer) = search(client, server, params).await;
    assert_eq!(status, 200, "{params:?}: {answer}");
    answer["total"].as_u64().unwrap()
}

async fn sql_count(client: &reqwest::Client, server: &Server, filter: &str) -> u64 {
    let rows = sql(
        client,
        server,
        &format!("SELECT count(*) AS n FROM posts_latest {filter}"),
    )
    .await;
    rows[0]["n"].as_u64().unwrap()
}

async fn wait_for_documents(client: &reqwest::Client, server: &Server, expected: u64) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = total(client, server, &[]).await;
        assert!(n <= expected, "more documents than posts: {n} > {expected}");
        if n == expected {
            return;
        }
        assert!(Instant::now() < deadline, "only {n} of {expected} posts searchable");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_are_searchable_within_a_second_and_search_agrees_with_sql() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();

    // One post, then how long until a search finds it.
    let marker = json!({"platform": "reddit", "id": "t1_marker", "community": "rust",
        "body": "The zyzzyva borrow checker is wonderful", "created_at": 1_546_400_000});
    crate::server::post_accepted(&client, &server, marker.to_string()).await;
    let accepted = Instant::now();
    loop {
        if total(&client, &server, &[("q", "zyzzyva")]).await == 1 {
            break;
        }
        assert!(
            accepted.elapsed() < Duration::from_secs(2),
            "not searchable 2 s after its 202"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, answer) = search(&client, &server, &[("q", "zyzzyva")]).await;
    let hit = &answer["hits"][0];
    assert_eq!(hit["id"], "t1_marker");
    assert_eq!(hit["body"], "The zyzzyva borrow checker is wonderful");
    assert_eq!(hit["highlight"], "The <mark>zyzzyva</mark> borrow checker is wonderful");
    assert!(hit["vader_compound"].as_f64().unwrap() > 0.0);

    // 3,000 corpus posts: the totals of search and of SQL over the same
    // posts agree, filter by filter.
    for chunk in (0..3_000).collect::<Vec<_>>().chunks(1_000) {
        crate::server::post_accepted(&client, &server, ndjson(chunk[0]..chunk[chunk.len() - 1] + 1, &bodies)).await;
    }
    wait_for_count(&client, &server, 3_001, Duration::from_secs(60)).await;
    wait_for_documents(&client, &server, 3_001).await;
    for (params, filter) in [
        (vec![("sentiment", "negative")], "WHERE sentiment = 'negative'"),
        (vec![("community", "science")], "WHERE community = 'science'"),
        (
            vec![("community", "news"), ("sentiment", "positive")],
            "WHERE community = 'news' AND sentiment = 'positive'",
        ),
        (
            vec![("since", "2019-01-02"), ("until", "2019-01-03")],
            "WHERE created_at >= TIMESTAMP '2019-01-02 00:00:00' AND created_at < TIMESTAMP '2019-01-03 00:00:00'",
        ),
        (vec![("q", "community:politics")], "WHERE community = 'politics'"),
    ] {
        let expected = sql_count(&client, &server, filter).await;
        assert!(expected > 0, "{filter}");
        assert_eq!(
            total(&client, &server, &params).await,
            expected,
            "{params:?} vs {filter}"
        );
    }
    // A word: every hit holds it, and the aggregations count the matches.
    let (_, answer) = search(&client, &server, &[("q", "people"), ("limit", "50")]).await;
    let n = answer["total"].as_u64().unwrap();
    assert!(n > 20, "{answer}");
    for hit in answer["hits"].as_array().unwrap() {
        assert!(hit["text"].as_str().unwrap().to_lowercase().contains("people"), "{hit}");
        assert!(
            hit["highlight"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains("<mark>people</mark>"),
            "{hit}"
        );
    }
    let split = &answer["sentiment"];
    let sum =
        split["positive"].as_u64().unwrap() + split["neutral"].as_u64().unwrap() + split["negative"].as_u64().unwrap();
    assert_eq!(sum, n);
    let histogram: u64 = answer["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(histogram, n);
    assert!(answer["communities"].as_array().unwrap().len() <= 10);
    assert!(
        answer["terms"].as_array().unwrap().iter().any(|t| t["key"] == "people"),
        "{answer}"
    );
    // A phrase, OR, NOT and a prefix.
    let phrase = total(&client, &server, &[("q", "\"the people\"")]).await;
    assert!(phrase > 0 && phrase < n);
    let either = total(&client, &server, &[("q", "people OR government")]).await;
    let government = total(&client, &server, &[("q", "government")]).await;
    let both = total(&client, &server, &[("q", "people AND government")]).await;
    assert_eq!(either, n + government - both);
    assert_eq!(
        total(&client, &server, &[("q", "people AND NOT government")]).await,
        n - both
    );
    assert!(total(&client, &server, &[("q", "peop*")]).await >= n);
    // A bad query is a 400 with the parser's message and position.
    let (status, answer) = search(&client, &server, &[("q", "people AND (")]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap().contains("q:"), "{answer}");
    assert!(answer["position"].as_u64().is_some(), "{answer}");
    let (status, _) = search(&client, &server, &[("since", "yesterday")]).await;
    assert_eq!(status, 400);

    // Newest first, page by page: every post once, in order.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = vec![("community", "science"), ("limit", "97")];
        if let Some(a) = &after {
            params.push(("after", a.as_str()));
        }
        let (status, answer) = search(&client, &server, &params).await;
        assert_eq!(status, 200, "{answer}");
        for hit in answer["hits"].as_array().unwrap() {
            seen.push((
                hit["created_at"].as_i64().unwrap(),
                hit["id"].as_str().unwrap().to_string(),
            ));
        }
        match answer["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    let science = sql_count(&client, &server, "WHERE community = 'science'").await;
    assert_eq!(seen.len() as u64, science);
    let distinct: std::collections::HashSet<&String> = seen.iter().map(|(_, id)| id).collect();
    assert_eq!(distinct.len(), seen.len(), "a post on two pages");
    assert!(seen.windows(2).all(|w| w[0].0 >= w[1].0), "not newest first");

    // By relevance, page by page: every match once.
    let mut ids = std::collections::HashSet::new();
    let mut after: Option<String> = None;
    loop {
        let mut params = vec![("q", "people"), ("sort", "relevance"), ("limit", "13")];
        if let Some(a) = &after {
            params.push(("after", a.as_str()));
        }
        let (status, answer) = search(&client, &server, &params).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["total"].as_u64(), Some(n));
        for hit in answer["hits"].as_array().unwrap() {
            assert!(
                ids.insert(hit["id"].as_str().unwrap().to_string()),
                "{hit} on two pages"
            );
        }
        match answer["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(ids.len() as u64, n);
    // A span from the filters: the same bars' total.
    let (_, answer) = search(
        &client,
        &server,
        &[
            ("q", "people"),
            ("since", "2000-01-01T00:00:00Z"),
            ("until", "2100-01-01T00:00:00Z"),
        ],
    )
    .await;
    assert_eq!(answer["total"].as_u64(), Some(n));
    let bars: u64 = answer["histogram"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(bars, n, "{answer}");
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_post_is_one_document_and_a_lost_index_is_rebuilt_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let bodies = corpus_bodies();
    crate::server::post_accepted(&client, &server, ndjson(0..500, &bodies)).await;
    wait_for_documents(&client, &server, 500).await;
    // The same post three times, edited: one document, the last body.
    for body in ["first quokka version", "second quokka version", "third wombat version"] {
        let post =
            json!({"platform": "reddit", "id": "t1_7", "community": "news", "body": body, "created_at": 1_546_300_800});
        crate::server::post_accepted(&client, &server, post.to_string()).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while total(&client, &server, &[("q", "wombat")]).await != 1 {
        assert!(Instant::now() < deadline, "the last version never became searchable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total(&client, &server, &[("q", "quokka")]).await, 0);
    assert_eq!(total(&client, &server, &[("q", "id:t1_7")]).await, 1);
    assert_eq!(total(&client, &server, &[]).await, 500);
    let status: Value = crate::server::get_json(&client, &server, "/v1/status").await;
    assert_eq!(status["index"]["documents"], 500, "{status}");
    assert!(status["index"]["bytes"].as_u64().unwrap() > 0);
    // `chorus search` goes through the running server...
    let cli = |args: &[&str]| {
        let out = crate::server::chorus()
            .arg("--data")
            .arg(&data)
            .arg("search")
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let answer: Value = serde_json::from_str(&cli(&["wombat", "--format", "json"])).unwrap();
    assert_eq!(answer["total"], 1);
    assert_eq!(answer["hits"][0]["id"], "t1_7");
    let metrics = crate::server::metrics(&client, &server).await;
    assert!(
        metrics.contains("chorus_consumer_lag_records{consumer=\"index\",topic=\"posts.enriched\"}"),
        "{metrics}"
    );
    server.stop();
    // ... or reads the index of a stopped directory, with a table.
    let table = cli(&["wombat"]);
    assert!(table.starts_with("1 posts\n"), "{table}");
    assert!(table.contains("[wombat]"), "{table}");
    let bad = crate::server::chorus()
        .arg("--data")
        .arg(&data)
        .args(["search", "a AND ("])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("Syntax Error"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Edited again after a restart: the sink knows the key from the index
    // on disk, and still replaces the document.
    let server = Server::start(&data, "", &[]);
    let post = json!({"platform": "reddit", "id": "t1_7", "community": "news", "body": "fourth koala version", "created_at": 1_546_300_800});
    crate::server::post_accepted(&client, &server, post.to_string()).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while total(&client, &server, &[("q", "koala")]).await != 1 {
        assert!(
            Instant::now() < deadline,
            "the edit after a restart never became searchable"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(total(&client, &server, &[("q", "wombat")]).await, 0);
    assert_eq!(total(&client, &server, &[]).await, 500);
    // The same id on another platform is another post: it replaces nothing.
    let other = json!({"platform": "mastodon", "id": "t1_7", "body": "a koala elsewhere", "created_at": 1_546_300_900});
    crate::server::post_accepted(&client, &server, other.to_string()).await;
    wait_for_documents(&client, &server, 501).await;
    assert_eq!(total(&client, &server, &[("q", "koala")]).await, 2);
    assert_eq!(
        total(&client, &server, &[("q", "koala"), ("platform", "reddit")]).await,
        1
    );
    server.stop();

    // The index lost while stopped: the next start reads the log again.
    std::fs::remove_dir_all(data.join("index")).unwrap();
    let server = Server::start(&data, "", &[]);
    wait_for_documents(&client, &server, 501).await;
    assert_eq!(total(&client, &server, &[("q", "koala")]).await, 2);
    assert_eq!(total(&client, &server, &[("q", "wombat")]).await, 0);
    assert_eq!(total(&client, &server, &[("q", "koalas")]).await, 0);
    server.stop();

    // Other index settings (stemming): the old index is set aside, not
    // removed, and a new one built from the log.
    let server = Server::start(&data, "[index]\nstemming = true\n", &[]);
    wait_for_documents(&client, &server, 501).await;
    assert_eq!(total(&client, &server, &[("q", "koalas")]).await, 2);
    let aside: Vec<String> = std::fs::read_dir(&data)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("index.other-schema-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    server.stop();

    // With the index off: no search, and no index consumer holding the log.
    let server = Server::start(&data, "[index]\nenabled = false\n", &[]);
    let (status, answer) = search(&client, &server, &[("q", "wombat")]).await;
    assert_eq!(status, 404, "{answer}");
    let status: Value = crate::server::get_json(&client, &server, "/v1/status").await;
    assert!(
        status["stages"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["consumer"] != "index"),
        "{status}"
    );
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_sends_the_matching_posts_as_they_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    let response = client
        .get(server.url("/v1/stream"))
        .query(&[("q", "rust OR ferris"), ("sentiment", "positive")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response;
    let mut text = String::new();
    // The stream is open once its first comment arrives.
    while !text.contains(": connected") {
        text.push_str(&String::from_utf8_lossy(&body.chunk().await.unwrap().unwrap()));
    }
    let posts = [
        ("1", "I love rust, it is wonderful"),
        ("2", "rust is terrible and I hate it"),
        ("3", "Ferris the crab is great"),
        ("4", "a lovely day with no crab"),
    ];
    let lines: String = posts
        .iter()
        .map(|(id, body)| {
            format!(
                "{}\n",
                json!({"platform": "reddit", "id": id, "body": body, "created_at": 1_546_300_800})
            )
        })
        .collect();
    let sent = Instant::now();
    crate::server::post_accepted(&client, &server, lines).await;
    let mut ids = Vec::new();
    while ids.len() < 2 {
        let chunk = tokio::time::timeout(Duration::from_secs(5), body.chunk())
            .await
            .expect("no event within 5 s")
            .unwrap()
            .expect("the stream ended");
        for line in String::from_utf8_lossy(&chunk).lines() {
            if let Some(data) = line.strip_prefix("data: ") {
                let post: Value = serde_json::from_str(data).unwrap();
                ids.push(post["id"].as_str().unwrap().to_string());
            }
        }
    }
    assert!(
        sent.elapsed() < Duration::from_secs(2),
        "the stream took {:?}",
        sent.elapsed()
    );
    // Positive posts with rust or ferris only, as a search would find them
    // (in the order their log partitions delivered them).
    ids.sort();
    assert_eq!(ids, ["1", "3"]);
    let deadline = Instant::now() + Duration::from_secs(5);
    while total(&client, &server, &[("q", "rust OR ferris"), ("sentiment", "positive")]).await != 2 {
        assert!(Instant::now() < deadline, "search never agreed with the stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, answer) = {
        let r = client
            .get(server.url("/v1/stream"))
            .query(&[("q", "a AND (")])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };
    assert_eq!(status, 400, "{answer}");
    drop(body);
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_large_posts_stops_at_its_byte_bound_and_hostile_cursors_get_400() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start(&data, "", &[]);
    let client = reqwest::Client::new();
    // Twelve posts of ~900 KiB: a hit carries body and text, ~1.8 MiB, so
    // a page of 20 stops at the 16 MiB bound and `next` goes on from there.
    let word = "walrus ";
    let big = word.repeat(900 * 1024 / word.len());
    for i in 0..12 {
        let post = json!({"platform": "reddit", "id": format!("big{i}"), "body": big, "created_at": 1_546_300_800 + i});
        crate::server::post_accepted(&client, &server, post.to_string()).await;
    }
    wait_for_documents(&client, &server, 12).await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = vec![("q", "walrus"), ("limit", "20")];
        if let Some(a) = &after {
            params.push(("after", a.as_str()));
        }
        let (status, answer) = search(&client, &server, &params).await;
        assert_eq!(status, 200);
        assert_eq!(answer["total"], 12);
        let hits = answer["hits"].as_array().unwrap();
        assert!(!hits.is_empty() && hits.len() < 12, "{} hits on a page", hits.len());
        seen.extend(hits.iter().map(|h| h["id"].as_str().unwrap().to_string()));
        pages += 1;
        match answer["next"].as_str() {
            Some(next) => after = Some(next.to_string()),
            None => break,
        }
    }
    assert!(pages >= 2);
    let expected: Vec<String> = (0..12).rev().map(|i| format!("big{i}")).collect();
    assert_eq!(seen, expected, "every post once, newest first");
    // Cursors a client made up: a skip past the window, a time at the end
    // of i64 (no overflow), garbage.
    for (after, status) in [("0:1000000000", 400), ("9223372036854775807:0", 200), ("x", 400)] {
        let (got, answer) = search(&client, &server, &[("q", "walrus"), ("limit", "1"), ("after", after)]).await;
        assert_eq!(got, status, "{after}: {answer}");
    }
    let (status, _) = search(
        &client,
        &server,
        &[("sort", "relevance"), ("after", "18446744073709551615")],
    )
    .await;
    assert_eq!(status, 400);
    server.stop();
}
