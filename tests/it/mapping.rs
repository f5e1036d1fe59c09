//! Every recorded platform fixture onto the record.

use chorus::mapping::{self, Format, bluesky, hackernews, mastodon};
use chorus::sources::sse;
use serde_json::Value;

use crate::fixture;

fn json(rel: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(rel)).unwrap()).unwrap()
}

fn lines(rel: &str) -> Vec<Value> {
    std::fs::read_to_string(fixture(rel))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn bluesky_jetstream_events_map_posts_and_skip_the_rest() {
    let events = lines("bluesky/jetstream_v1_window_152_events_2026-07-04.jsonl");
    assert_eq!(events.len(), 152);
    let mut posts = Vec::new();
    for e in &events {
        match bluesky::event(e).unwrap() {
            bluesky::Event::Post(p) => posts.push(*p),
            bluesky::Event::Other(_) => {}
        }
    }
    // The manifest: 17 post creations (the post delete is skipped).
    assert_eq!(posts.len(), 17);
    let youtube = posts
        .iter()
        .find(|p| p.id == "at://did:plc:dclwtltrt2ggsryagfzk7dp4/app.bsky.feed.post/3mptbyoeyc22k")
        .unwrap();
    assert_eq!(youtube.body, "www.youtube.com/watch?v=V5lD...");
    assert_eq!(youtube.lang.as_deref(), Some("en"));
    assert_eq!(youtube.author.as_deref(), Some("did:plc:dclwtltrt2ggsryagfzk7dp4"));
    assert_eq!(youtube.created_at, 1_783_175_886_240_000);
    assert_eq!(
        youtube.url.as_deref(),
        Some("https://bsky.app/profile/did:plc:dclwtltrt2ggsryagfzk7dp4/post/3mptbyoeyc22k")
    );
    // Auto-detected, and refused with the reason when it is not a post.
    let like = &events[0];
    assert_eq!(mapping::detect(like), Format::Bluesky);
    let error = mapping::to_posts(like, Format::Auto).unwrap_err().to_string();
    assert!(
        error.contains("not a post creation (commit app.bsky.feed.like create)"),
        "{error}"
    );

    // The hand-picked golden set: one post, a reply.
    let golden = lines("bluesky/jetstream_v1_golden_10_events_2026-05-25.jsonl");
    let replies: Vec<_> = golden
        .iter()
        .filter_map(|e| match bluesky::event(e).unwrap() {
            bluesky::Event::Post(p) => Some(*p),
            bluesky::Event::Other(_) => None,
        })
        .collect();
    assert_eq!(replies.len(), 1);
    assert!(replies[0].parent_id.as_deref().unwrap().starts_with("at://"));
    assert!(replies[0].thread_id.as_deref().unwrap().starts_with("at://"));
}

#[test]
fn mastodon_streamed_statuses_map_with_their_html_as_text() {
    let mut posts = Vec::new();
    let mut kinds = Vec::new();
    for rel in [
        "mastodon/streaming_user_sse_update_2026-08-02.body.sse",
        "mastodon/streaming_user_sse_updates_2026-08-02.body.sse",
        "mastodon/streaming_direct_sse_conversation_2026-08-02.body.sse",
    ] {
        let mut parser = sse::Parser::default();
        for event in parser.feed(&std::fs::read(fixture(rel)).unwrap()) {
            kinds.push(event.event.clone());
            if let Some(post) = mastodon::stream_payload(&event.event, &event.data) {
                posts.push(post.unwrap());
            }
        }
    }
    assert_eq!(
        kinds,
        [
            "update",
            "update",
            "notification",
            "update",
            "notification",
            "status.update",
            "delete",
            "conversation"
        ]
    );
    assert_eq!(posts.len(), 4);
    let first = &posts[0];
    assert_eq!(first.body, "it's cool guy");
    assert_eq!(first.lang.as_deref(), Some("ja"));
    assert_eq!(first.community.as_deref(), Some("localhost"));
    assert_eq!(first.author.as_deref(), Some("mastodonpy_test"));
    assert_eq!(
        first.id,
        "http://localhost:3000/ap/users/117020617404561855/statuses/117024248092393661"
    );
    assert_eq!(first.created_at, 1_785_648_316_840_000);

    // The WebSocket form: the payload is a JSON string to parse again.
    let message = json("mastodon/websocket_public_update.json");
    let post = mastodon::stream_payload(message["event"].as_str().unwrap(), message["payload"].as_str().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(post.community.as_deref(), Some("fosstodon.org"));
    assert_eq!(post.parent_id.as_deref(), Some("108913981098896721"));
    assert!(
        post.body.starts_with("And now I can't exit the inner nvim"),
        "{}",
        post.body
    );
    for rel in [
        "mastodon/websocket_public_delete.json",
        "mastodon/websocket_user_filters_changed.json",
    ] {
        let m = json(rel);
        let payload = m["payload"].as_str().unwrap_or("");
        assert!(mastodon::stream_payload(m["event"].as_str().unwrap(), payload).is_none());
    }
}

#[test]
fn hacker_news_items_map_and_users_are_refused() {
    let comment = hackernews::item(&json("hackernews/item_comment_2921983.json")).unwrap();
    assert_eq!(comment.id, "2921983");
    assert_eq!(comment.author.as_deref(), Some("norvig"));
    assert_eq!(comment.parent_id.as_deref(), Some("2921506"));
    assert_eq!(
        comment.body,
        "Aw shucks, guys ... you make me blush with your compliments.\n\nTell you what, Ill make a deal: I'll keep writing if you keep reading. K?"
    );
    assert_eq!(comment.created_at, 1_314_211_127_000_000);
    let ask = hackernews::item(&json("hackernews/item_story_121003.json")).unwrap();
    assert!(
        ask.body
            .starts_with("Ask HN: The Arc Effect\n\nor HN: the Next Iteration\n\nI get the impression")
    );
    assert_eq!(ask.score, Some(25));
    assert_eq!(ask.thread_id.as_deref(), Some("121003"));
    for rel in [
        "hackernews/item_story_8863.json",
        "hackernews/item_job_192327.json",
        "hackernews/item_poll_126809.json",
        "hackernews/item_pollopt_160705.json",
    ] {
        let value = json(rel);
        assert_eq!(mapping::detect(&value), Format::HackerNews, "{rel}");
        let post = &mapping::to_posts(&value, Format::Auto).unwrap()[0];
        assert_eq!(post.platform, "hackernews");
        assert!(!post.body.is_empty(), "{rel}");
    }
    assert!(hackernews::item(&json("hackernews/user_jl.json")).is_err());
    let mut dead = json("hackernews/item_comment_2921983.json");
    dead["dead"] = Value::Bool(true);
    assert!(hackernews::item(&dead).unwrap_err().to_string().contains("dead"));
}

/// Every comment (`t1`) in a Reddit answer: listings, comment trees
/// (nested `replies`), `morechildren` envelopes.
fn comments(value: &Value, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.get("kind").and_then(Value::as_str) == Some("t1") {
                out.push(value.clone());
            }
            for v in map.values() {
                comments(v, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|v| comments(v, out)),
        _ => {}
    }
}

#[test]
fn every_recorded_reddit_comment_maps() {
    let dir = fixture("reddit/listings");
    let mut total = 0;
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path.to_string_lossy().ends_with(".body.json") {
            continue;
        }
        files += 1;
        let mut found = Vec::new();
        comments(
            &serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap(),
            &mut found,
        );
        // Only the recorded empty poll has no comment.
        assert_eq!(
            found.is_empty(),
            path.to_string_lossy().contains("empty"),
            "{}",
            path.display()
        );
        for child in &found {
            let post = mapping::reddit::comment(child).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let data = &child["data"];
            assert_eq!(post.id, data["name"].as_str().unwrap());
            assert!(post.id.starts_with("t1_"));
            assert_eq!(post.community.as_deref(), data["subreddit"].as_str());
            assert_eq!(post.body, data["body"].as_str().unwrap());
            assert_eq!(post.author.as_deref(), data["author"].as_str());
            assert_eq!(post.created_at, (data["created_utc"].as_f64().unwrap() * 1e6) as i64);
            let url = post.url.as_deref().unwrap();
            assert!(url.starts_with("https://www.reddit.com/"), "{url}");
            assert!(url.contains(post.id.trim_start_matches("t1_")), "{url}");
        }
        total += found.len();
    }
    assert_eq!(files, 12);
    assert!(total > 2_000, "{total}");
}

fn tweets_of(rel: &str) -> Vec<Value> {
    let value = json(rel);
    match value {
        Value::Array(items) => items
            .into_iter()
            .map(|i| {
                if i.get("tweet").is_some() {
                    i["tweet"].clone()
                } else {
                    i
                }
            })
            .collect(),
        v if v.get("statuses").is_some() => v["statuses"].as_array().unwrap().clone(),
        v => vec![v],
    }
}

#[test]
fn every_recorded_v1_1_tweet_maps_with_its_user_fields() {
    let mut n = 0;
    for rel in [
        "twitter/v1.1/home_timeline_2019-07-13.body.json",
        "twitter/v1.1/search_tweets_2019-07-13.body.json",
        "twitter/v1.1/status_show_2019-07-13.body.json",
        "twitter/v1.1/user_timeline_2020-12-29.body.json",
        "twitter/v1.1/tweet_objects_samples.json",
    ] {
        for tweet in tweets_of(rel) {
            assert_eq!(mapping::detect(&tweet), Format::Tweet, "{rel}");
            let post = &mapping::to_posts(&tweet, Format::Auto).unwrap()[0];
            assert_eq!(post.platform, "twitter");
            assert_eq!(post.id, tweet["id_str"].as_str().unwrap());
            assert_eq!(post.body, tweet["text"].as_str().unwrap());
            assert_eq!(post.author.as_deref(), tweet["user"]["screen_name"].as_str());
            assert_eq!(post.author_followers, tweet["user"]["followers_count"].as_i64());
            assert_eq!(post.score, tweet["favorite_count"].as_i64());
            assert_eq!(post.reposts, tweet["retweet_count"].as_i64());
            let location = tweet["user"]["location"].as_str().filter(|l| !l.is_empty());
            assert_eq!(post.location.as_deref(), location);
            n += 1;
        }
    }
    assert!(n > 40, "{n}");
}

#[test]
fn every_recorded_v2_response_maps_and_errors_are_refused() {
    for (rel, expected) in [
        ("twitter/v2/get_tweet_2022-10-07.body.json", 1),
        ("twitter/v2/get_tweets_2022-10-07.body.json", 2),
        ("twitter/v2/search_recent_2022-10-07.body.json", 10),
        (
            "twitter/v2/home_timeline_reverse_chronological_2022-10-07.body.json",
            98,
        ),
        ("twitter/v2/users_tweets_2022-10-07.body.json", 2),
        ("twitter/v2/create_tweet_201_2021-11-03.body.json", 1),
        ("twitter/v2_postman_examples/single_tweet_tweet_fields.body.json", 1),
        ("twitter/v2_postman_examples/multiple_tweets_tweet_fields.body.json", 58),
        (
            "twitter/v2_postman_examples/multiple_tweets_1_deleted_1_valid.body.json",
            1,
        ),
        ("twitter/v2_postman_examples/recent_search_tweet_fields.body.json", 10),
        ("twitter/v2_postman_examples/recent_search_expanded_users.body.json", 4),
    ] {
        let value = json(rel);
        let posts = mapping::to_posts(&value, Format::Tweet).unwrap_or_else(|e| panic!("{rel}: {e}"));
        let data: Vec<Value> = match &value["data"] {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        assert_eq!(posts.len(), data.len(), "{rel}");
        assert_eq!(posts.len(), expected, "{rel}");
        for (post, tweet) in posts.iter().zip(&data) {
            assert_eq!(post.id, tweet["id"].as_str().unwrap());
            assert_eq!(post.body, tweet["text"].as_str().unwrap());
            if let Some(metrics) = tweet.get("public_metrics") {
                assert_eq!(post.score, metrics["like_count"].as_i64(), "{rel}");
                assert_eq!(post.reposts, metrics["retweet_count"].as_i64(), "{rel}");
            }
            // With includes.users, the author is the username.
            if let (Some(author), Some(users)) = (tweet["author_id"].as_str(), value["includes"]["users"].as_array()) {
                let user = users.iter().find(|u| u["id"] == author).unwrap();
                assert_eq!(post.author.as_deref(), user["username"].as_str());
            }
        }
    }
    // Only errors (a deleted tweet), a 401 problem: refused, not mapped.
    for rel in [
        "twitter/v2_postman_examples/single_tweet_deleted.body.json",
        "twitter/v2_postman_examples/stream_rules_401.body.json",
        "twitter/v2_postman_examples/filtered_stream_429.body.json",
    ] {
        assert!(mapping::to_posts(&json(rel), Format::Tweet).is_err(), "{rel}");
    }
}
