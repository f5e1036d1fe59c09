//! A Reddit comment onto the record: `id` is the fullname `t1_…`,
//! `community` the subreddit, `thread_id` the submission (`link_id`).

use serde_json::Value;

use super::{opt_int, opt_str, req_str};
use crate::record::{IncomingPost, RecordError, json_type, parse_timestamp};

/// The platform name of Reddit posts.
pub const PLATFORM: &str = "reddit";

/// Maps one comment: the `data` of a listing child (a `{"kind":"t1",
/// "data":…}` child is unwrapped too) or a Pushshift dump line.
pub fn comment(value: &Value) -> Result<IncomingPost, RecordError> {
    let value = match value.get("kind") {
        Some(Value::String(kind)) if kind == "t1" => value.get("data").ok_or(RecordError::Missing("data"))?,
        Some(Value::String(kind)) => {
            return Err(RecordError::Invalid {
                field: "kind",
                reason: format!("{kind:?} is not a comment (t1)"),
            });
        }
        _ => value,
    };
    if !value.is_object() {
        return Err(RecordError::NotAnObject(json_type(value)));
    }
    // Listings carry the fullname in `name`; dumps only the base-36 `id`.
    let id = match opt_str(value, "name")? {
        Some(name) => name,
        None => {
            let id = req_str(value, "id")?;
            if id.starts_with("t1_") { id } else { format!("t1_{id}") }
        }
    };
    let created = value
        .get("created_utc")
        .filter(|v| !v.is_null())
        .ok_or(RecordError::Missing("created_utc"))?;
    let permalink = opt_str(value, "permalink")?;
    let link_id = opt_str(value, "link_id")?;
    let url = match permalink {
        Some(p) if p.starts_with("http") => Some(p),
        Some(p) => Some(format!("https://www.reddit.com{p}")),
        // Older records have no permalink: the comment's short link.
        None => link_id.as_deref().map(|link| {
            format!(
                "https://www.reddit.com/comments/{}/_/{}",
                link.trim_start_matches("t3_"),
                id.trim_start_matches("t1_")
            )
        }),
    };
    Ok(IncomingPost {
        platform: PLATFORM.into(),
        id,
        community: opt_str(value, "subreddit")?,
        author: opt_str(value, "author")?,
        body: req_str(value, "body")?,
        created_at: parse_timestamp(created, "created_utc")?,
        parent_id: opt_str(value, "parent_id")?,
        thread_id: link_id.clone(),
        url,
        score: opt_int(value, "score")?,
        reposts: None,
        author_followers: None,
        location: None,
        lang: None,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_a_pushshift_line_and_a_listing_child() {
        let line = json!({"author":"TistedLogic","body":"Is it still r/BoneAppleTea worthy?","created_utc":1538352000,
            "id":"e6xucdd","link_id":"t3_9ka1hp","parent_id":"t1_e6xu13x",
            "permalink":"/r/Unexpected/comments/9ka1hp/jesus_fking_woah/e6xucdd/","score":2,"subreddit":"Unexpected"});
        let p = comment(&line).unwrap();
        assert_eq!(p.id, "t1_e6xucdd");
        assert_eq!(p.community.as_deref(), Some("Unexpected"));
        assert_eq!(p.created_at, 1_538_352_000_000_000);
        assert_eq!(p.thread_id.as_deref(), Some("t3_9ka1hp"));
        assert_eq!(
            p.url.as_deref(),
            Some("https://www.reddit.com/r/Unexpected/comments/9ka1hp/jesus_fking_woah/e6xucdd/")
        );
        let child = json!({"kind":"t1","data":{"name":"t1_hjlzwfl","id":"hjlzwfl","body":"hi","subreddit":"AskReddit",
            "created_utc":1636241137.0,"score":1}});
        assert_eq!(comment(&child).unwrap().id, "t1_hjlzwfl");
        let link = json!({"kind":"t3","data":{}});
        assert!(comment(&link).unwrap_err().to_string().contains("not a comment"));
        let no_body = json!({"id":"x","subreddit":"a","created_utc":1});
        assert_eq!(comment(&no_body).unwrap_err().to_string(), "missing \"body\"");
    }
}
