//! Tweets onto the record, API v1.1 (`user` inside the tweet) and v2
//! (`author_id` resolved through `includes.users`). A v2 tweet without
//! `created_at` (not requested in `tweet.fields`) gets the time encoded in
//! its snowflake id.

use chrono::DateTime;
use serde_json::Value;

use super::{opt_int, opt_str, req_str};
use crate::record::{IncomingPost, RecordError, json_type, parse_timestamp};

/// The platform name of tweets.
pub const PLATFORM: &str = "twitter";

/// Twitter's snowflake epoch, ms since the Unix epoch.
const SNOWFLAKE_EPOCH_MS: i64 = 1_288_834_974_657;

/// The tweets of one value: a v1.1 tweet, a v2 tweet, or a v2 response
/// (`data` object or array, with `includes.users`).
pub fn tweets(value: &Value) -> Result<Vec<IncomingPost>, RecordError> {
    if !value.is_object() {
        return Err(RecordError::NotAnObject(json_type(value)));
    }
    if let Some(data) = value.get("data") {
        let users = value
            .pointer("/includes/users")
            .and_then(Value::as_array)
            .map(Vec::as_slice)
            .unwrap_or_default();
        return match data {
            Value::Array(items) => items.iter().map(|t| v2(t, users)).collect(),
            item => Ok(vec![v2(item, users)?]),
        };
    }
    if value.get("id_str").is_some() || value.get("user").is_some() {
        Ok(vec![v1(value)?])
    } else {
        Ok(vec![v2(value, &[])?])
    }
}

/// The creation time in a snowflake id, µs.
pub fn snowflake_micros(id: &str) -> Option<i64> {
    let id: u64 = id.parse().ok()?;
    Some(((id >> 22) as i64 + SNOWFLAKE_EPOCH_MS) * 1000)
}

fn v1(t: &Value) -> Result<IncomingPost, RecordError> {
    let id = match opt_str(t, "id_str")? {
        Some(id) => id,
        None => t
            .get("id")
            .and_then(Value::as_u64)
            .map(|n| n.to_string())
            .ok_or(RecordError::Missing("id_str"))?,
    };
    let created = req_str(t, "created_at")?;
    let created_at = DateTime::parse_from_str(&created, "%a %b %d %H:%M:%S %z %Y")
        .map(|d| d.timestamp_micros())
        .or_else(|_| parse_timestamp(&Value::String(created.clone()), "created_at"))
        .map_err(|_| RecordError::Invalid {
            field: "created_at",
            reason: format!("{created:?} is not a Twitter date"),
        })?;
    let body = match t.pointer("/extended_tweet/full_text").and_then(Value::as_str) {
        Some(full) => full.to_string(),
        None => match opt_str(t, "full_text")? {
            Some(full) => full,
            None => req_str(t, "text")?,
        },
    };
    let user = t.get("user").filter(|u| u.is_object());
    let screen_name = user.map(|u| opt_str(u, "screen_name")).transpose()?.flatten();
    Ok(IncomingPost {
        platform: PLATFORM.into(),
        url: screen_name
            .as_ref()
            .map(|name| format!("https://twitter.com/{name}/status/{id}")),
        id,
        community: None,
        author: screen_name,
        body,
        created_at,
        parent_id: opt_str(t, "in_reply_to_status_id_str")?,
        thread_id: None,
        score: opt_int(t, "favorite_count")?,
        reposts: opt_int(t, "retweet_count")?,
        author_followers: user.map(|u| opt_int(u, "followers_count")).transpose()?.flatten(),
        location: user
            .map(|u| opt_str(u, "location"))
            .transpose()?
            .flatten()
            .filter(|l| !l.is_empty()),
        lang: opt_str(t, "lang")?,
    })
}

fn v2(t: &Value, users: &[Value]) -> Result<IncomingPost, RecordError> {
    if !t.is_object() {
        return Err(RecordError::NotAnObject(json_type(t)));
    }
    let id = req_str(t, "id")?;
    let created_at = match t.get("created_at").filter(|v| !v.is_null()) {
        Some(v) => parse_timestamp(v, "created_at")?,
        None => snowflake_micros(&id).ok_or(RecordError::Invalid {
            field: "id",
            reason: "no created_at, and not a snowflake id".into(),
        })?,
    };
    let author_id = opt_str(t, "author_id")?;
    let user = author_id
        .as_deref()
        .and_then(|a| users.iter().find(|u| u.get("id").and_then(Value::as_str) == Some(a)));
    let username = user
        .and_then(|u| u.get("username"))
        .and_then(Value::as_str)
        .map(String::from);
    let metric = |v: Option<&Value>, name: &str| v.and_then(|m| m.get(name)).and_then(Value::as_i64);
    let parent_id = t
        .get("referenced_tweets")
        .and_then(Value::as_array)
        .and_then(|refs| {
            refs.iter()
                .find(|r| r.get("type").and_then(Value::as_str) == Some("replied_to"))
        })
        .and_then(|r| r.get("id"))
        .and_then(Value::as_str)
        .map(String::from);
    Ok(IncomingPost {
        platform: PLATFORM.into(),
        url: Some(match &username {
            Some(name) => format!("https://twitter.com/{name}/status/{id}"),
            None => format!("https://twitter.com/i/web/status/{id}"),
        }),
        body: req_str(t, "text")?,
        community: None,
        author: username.or(author_id),
        created_at,
        parent_id,
        thread_id: opt_str(t, "conversation_id")?,
        score: metric(t.get("public_metrics"), "like_count"),
        reposts: metric(t.get("public_metrics"), "retweet_count"),
        author_followers: metric(user.and_then(|u| u.get("public_metrics")), "followers_count"),
        location: user
            .and_then(|u| u.get("location"))
            .and_then(Value::as_str)
            .map(String::from),
        lang: opt_str(t, "lang")?,
        id,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn maps_a_v1_tweet_with_its_user() {
        let t = json!({"created_at":"Thu Jun 27 00:25:31 +0000 2019","id":1144039018356719616u64,
            "id_str":"1144039018356719616","text":"i just found out","favorite_count":5,"retweet_count":2,"lang":"en",
            "user":{"screen_name":"kingushbal","location":"Insta","followers_count":167129}});
        let p = &tweets(&t).unwrap()[0];
        assert_eq!(p.id, "1144039018356719616");
        assert_eq!(p.created_at, 1_561_595_131_000_000);
        assert_eq!(p.author.as_deref(), Some("kingushbal"));
        assert_eq!(p.location.as_deref(), Some("Insta"));
        assert_eq!(
            (p.score, p.reposts, p.author_followers),
            (Some(5), Some(2), Some(167_129))
        );
    }

    #[test]
    fn maps_a_v2_response_with_includes_and_snowflake_times() {
        let r = json!({"data":[{"id":"1578516068309794817","text":"2022-10-07 22:42:12.637103 tweepy","author_id":"9",
            "public_metrics":{"like_count":3,"retweet_count":1}}],
            "includes":{"users":[{"id":"9","username":"tweepy","location":"Earth","public_metrics":{"followers_count":40}}]}});
        let p = &tweets(&r).unwrap()[0];
        assert_eq!(p.author.as_deref(), Some("tweepy"));
        assert_eq!((p.score, p.reposts, p.author_followers), (Some(3), Some(1), Some(40)));
        // The snowflake time is the one the text was written at (to the ms).
        let text_time = chrono::NaiveDateTime::parse_from_str("2022-10-07 22:42:12.637103", "%Y-%m-%d %H:%M:%S%.f")
            .unwrap()
            .and_utc()
            .timestamp_micros();
        assert!(
            (p.created_at - text_time).abs() < 1_000_000,
            "{} vs {text_time}",
            p.created_at
        );
    }
}
