//! A Bluesky post from a Jetstream event onto the record: `id` is the
//! post's at-uri, `author` the DID, `community` the first hashtag, `lang`
//! the first of `langs`.

use serde_json::Value;

use crate::record::{IncomingPost, RecordError, parse_timestamp};

/// The platform name of Bluesky posts.
pub const PLATFORM: &str = "bluesky";
/// The collection of posts.
pub const POST_COLLECTION: &str = "app.bsky.feed.post";

/// What a Jetstream event is, for a collector.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A post was created (or edited): the record.
    Post(Box<IncomingPost>),
    /// Anything else (likes, follows, deletes, identity, account): skipped.
    Other(String),
}

/// Reads one Jetstream event (`{"did","time_us","kind","commit":{…}}`).
pub fn event(value: &Value) -> Result<Event, RecordError> {
    if !value.is_object() {
        return Err(RecordError::NotAnObject(crate::record::json_type(value)));
    }
    let kind = value.get("kind").and_then(Value::as_str).unwrap_or("");
    let commit = value.get("commit");
    let collection = commit.and_then(|c| c.get("collection")).and_then(Value::as_str);
    let operation = commit.and_then(|c| c.get("operation")).and_then(Value::as_str);
    if kind != "commit" || collection != Some(POST_COLLECTION) || !matches!(operation, Some("create" | "update")) {
        return Ok(Event::Other(format!(
            "{kind} {} {}",
            collection.unwrap_or("-"),
            operation.unwrap_or("-")
        )));
    }
    let commit = commit.ok_or(RecordError::Missing("commit"))?;
    let did = value
        .get("did")
        .and_then(Value::as_str)
        .ok_or(RecordError::Missing("did"))?;
    let rkey = commit
        .get("rkey")
        .and_then(Value::as_str)
        .ok_or(RecordError::Missing("rkey"))?;
    let record = commit.get("record").ok_or(RecordError::Missing("record"))?;
    let text = record
        .get("text")
        .and_then(Value::as_str)
        .ok_or(RecordError::Missing("text"))?;
    let created_at = match record.get("createdAt") {
        Some(t @ Value::String(_)) => parse_timestamp(t, "createdAt")?,
        // Jetstream's own receive time, µs.
        _ => value
            .get("time_us")
            .and_then(Value::as_i64)
            .ok_or(RecordError::Missing("createdAt"))?,
    };
    let uri = format!("at://{did}/{POST_COLLECTION}/{rkey}");
    let reply = |which: &str| {
        record
            .pointer(&format!("/reply/{which}/uri"))
            .and_then(Value::as_str)
            .map(String::from)
    };
    let tag = record
        .get("facets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|f| f.get("features").and_then(Value::as_array).into_iter().flatten())
        .find(|f| f.get("$type").and_then(Value::as_str) == Some("app.bsky.richtext.facet#tag"))
        .and_then(|f| f.get("tag").and_then(Value::as_str))
        .map(String::from);
    Ok(Event::Post(Box::new(IncomingPost {
        platform: PLATFORM.into(),
        community: tag,
        author: Some(did.to_string()),
        body: text.to_string(),
        created_at,
        parent_id: reply("parent"),
        thread_id: reply("root").or_else(|| Some(uri.clone())),
        url: Some(format!("https://bsky.app/profile/{did}/post/{rkey}")),
        score: None,
        reposts: None,
        author_followers: None,
        location: None,
        lang: record
            .get("langs")
            .and_then(Value::as_array)
            .and_then(|l| l.first())
            .and_then(Value::as_str)
            .map(String::from),
        id: uri,
    })))
}

/// One event as a post; anything but a post creation is refused with what
/// it is.
pub fn post(value: &Value) -> Result<IncomingPost, RecordError> {
    match event(value)? {
        Event::Post(post) => Ok(*post),
        Event::Other(what) => Err(RecordError::Invalid {
            field: "commit",
            reason: format!("not a post creation ({what})"),
        }),
    }
}
