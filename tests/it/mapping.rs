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

#[test]
fn every_recorded_reddit_comment_maps() {
    for rel in [
        "reddit/listings/r_askreddit_comments_2021-11-06_first_page.body.json",
        "reddit/listings/r_askreddit_comments_2021-11-06_poll_before.body.json",
        "reddit/listings/r_askreddit_comments_2020-07-10.body.json",
        "reddit/listings/r_all_comments_2016-12-22.body.json",
        "reddit/listings/r_all_comments_2020-07-15.body.json",
    ] {
        let listing = json(rel);
        let children = listing["data"]["children"].as_array().unwrap();
        assert!(!children.is_empty());
        for child in children {
            let post = mapping::reddit::comment(child).unwrap();
            assert!(post.id.starts_with("t1_"));
            assert_eq!(post.community.as_deref(), child["data"]["subreddit"].as_str());
            assert_eq!(post.body, child["data"]["body"].as_str().unwrap());
            let url = post.url.as_deref().unwrap();
            assert!(url.starts_with("https://www.reddit.com/"), "{url}");
            assert!(url.contains(post.id.trim_start_matches("t1_")), "{url}");
        }
    }
}
