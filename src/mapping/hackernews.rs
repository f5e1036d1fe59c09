//! A Hacker News item (Firebase API) onto the record: `id` is the item
//! number, `body` the title and/or the HTML text as text, `parent_id` the
//! parent item. Deleted and dead items carry no text and are refused.

use serde_json::Value;

use super::{html, opt_int, opt_str};
use crate::record::{IncomingPost, RecordError, json_type, parse_timestamp};

/// The platform name of Hacker News items.
pub const PLATFORM: &str = "hackernews";

/// Maps one item.
pub fn item(value: &Value) -> Result<IncomingPost, RecordError> {
    if !value.is_object() {
        return Err(RecordError::NotAnObject(json_type(value)));
    }
    let id = value
        .get("id")
        .and_then(Value::as_u64)
        .ok_or(RecordError::Missing("id"))?;
    for flag in ["deleted", "dead"] {
        if value.get(flag).and_then(Value::as_bool) == Some(true) {
            return Err(RecordError::Invalid {
                field: "id",
                reason: format!("item {id} is {flag}"),
            });
        }
    }
    let title = opt_str(value, "title")?.filter(|t| !t.is_empty());
    let text = opt_str(value, "text")?
        .map(|t| html::to_text(&t))
        .filter(|t| !t.is_empty());
    let body = match (title, text) {
        (Some(title), Some(text)) => format!("{title}\n\n{text}"),
        (Some(one), None) | (None, Some(one)) => one,
        (None, None) => return Err(RecordError::Missing("text")),
    };
    let kind = opt_str(value, "type")?;
    let parent = value.get("parent").and_then(Value::as_u64).map(|p| p.to_string());
    Ok(IncomingPost {
        platform: PLATFORM.into(),
        id: id.to_string(),
        community: None,
        author: opt_str(value, "by")?,
        body,
        created_at: parse_timestamp(value.get("time").ok_or(RecordError::Missing("time"))?, "time")?,
        thread_id: match kind.as_deref() {
            Some("story" | "poll" | "job") => Some(id.to_string()),
            _ => None,
        },
        parent_id: parent,
        url: Some(format!("https://news.ycombinator.com/item?id={id}")),
        score: opt_int(value, "score")?,
        reposts: None,
        author_followers: None,
        location: None,
        lang: None,
    })
}
