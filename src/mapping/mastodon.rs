//! A Mastodon status onto the record: `id` is the status's ActivityPub
//! `uri` (unique across instances), `community` the author's instance,
//! `body` the HTML content as text. A boost maps to the boosted status.

use serde_json::Value;

use super::{html, opt_int, opt_str, req_str};
use crate::record::{IncomingPost, RecordError, json_type, parse_timestamp};

/// The platform name of Mastodon statuses.
pub const PLATFORM: &str = "mastodon";

/// Maps one Status entity.
pub fn status(value: &Value) -> Result<IncomingPost, RecordError> {
    if !value.is_object() {
        return Err(RecordError::NotAnObject(json_type(value)));
    }
    if let Some(boosted) = value.get("reblog").filter(|r| r.is_object()) {
        return status(boosted);
    }
    let account = value.get("account").ok_or(RecordError::Missing("account"))?;
    let acct = opt_str(account, "acct")?;
    let url = opt_str(value, "url")?;
    let uri = opt_str(value, "uri")?;
    let id = uri.clone().or_else(|| url.clone()).ok_or(RecordError::Missing("uri"))?;
    // `user@instance` for remote accounts; the status's own host otherwise.
    let instance = acct
        .as_deref()
        .and_then(|a| a.split_once('@').map(|(_, host)| host.to_string()))
        .or_else(|| {
            let link = url.as_deref().or(uri.as_deref())?;
            reqwest::Url::parse(link).ok()?.host_str().map(String::from)
        });
    let content = req_str(value, "content")?;
    let spoiler = opt_str(value, "spoiler_text")?.filter(|s| !s.is_empty());
    let text = html::to_text(&content);
    Ok(IncomingPost {
        platform: PLATFORM.into(),
        id,
        community: instance,
        author: acct,
        body: match spoiler {
            Some(warning) => format!("{warning}\n\n{text}"),
            None => text,
        },
        created_at: parse_timestamp(
            value.get("created_at").ok_or(RecordError::Missing("created_at"))?,
            "created_at",
        )?,
        parent_id: opt_str(value, "in_reply_to_id")?,
        thread_id: None,
        url,
        score: opt_int(value, "favourites_count")?,
        reposts: opt_int(value, "reblogs_count")?,
        author_followers: opt_int(account, "followers_count")?,
        location: None,
        lang: opt_str(value, "language")?,
    })
}

/// A streaming event (`update`, `status.update`) whose payload is a
/// Status, as server-sent events give it or as the WebSocket message wraps
/// it (`{"event","payload"}` with the payload a JSON string).
pub fn stream_payload(event: &str, data: &str) -> Option<Result<IncomingPost, RecordError>> {
    if !matches!(event, "update" | "status.update") {
        return None;
    }
    Some(
        serde_json::from_str::<Value>(data)
            .map_err(|e| RecordError::Invalid {
                field: "payload",
                reason: format!("not JSON: {e}"),
            })
            .and_then(|v| status(&v)),
    )
}
