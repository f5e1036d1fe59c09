//! A Reddit comment onto the record: `id` is the fullname `t1_…`,
//! `community` the subreddit, `thread_id` the submission (`link_id`).

use std::borrow::Cow;

use serde_json::Value;

use super::scan::{Members, number_of};
use super::{int_of, opt_int, opt_str, req_str};
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
        None => fullname(req_str(value, "id")?),
    };
    let created = value
        .get("created_utc")
        .filter(|v| !v.is_null())
        .ok_or(RecordError::Missing("created_utc"))?;
    let link_id = opt_str(value, "link_id")?;
    let url = comment_url(opt_str(value, "permalink")?, link_id.as_deref(), &id);
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

/// The fullname of a comment known by its base-36 `id` (dumps carry no
/// `name`).
fn fullname(id: String) -> String {
    if id.starts_with("t1_") { id } else { format!("t1_{id}") }
}

/// The comment's link: its permalink on reddit.com; for older records,
/// which have none, the short link through its submission.
fn comment_url(permalink: Option<String>, link_id: Option<&str>, id: &str) -> Option<String> {
    match permalink {
        Some(p) if p.starts_with("http") => Some(p),
        Some(p) => Some(format!("https://www.reddit.com{p}")),
        None => link_id.map(|link| {
            format!(
                "https://www.reddit.com/comments/{}/_/{}",
                link.trim_start_matches("t3_"),
                id.trim_start_matches("t1_")
            )
        }),
    }
}

/// Reads one comment straight from a line's JSON text, without building
/// its value: the fast path of backfills from the dumps. Gives exactly
/// what [`comment`] gives for the parsed line, or `None` when it cannot
/// be sure (anything unusual: a listing child, a missing or mistyped
/// field, a repeated key, a line that is not JSON), and the caller then
/// parses the line and maps it with [`comment`], which also says why.
/// With `detect`, also `None` unless [`super::detect`] would take the line
/// for a Reddit comment (no `platform`; `subreddit` and `body` given).
pub fn comment_from_text(text: &[u8], detect: bool) -> Option<IncomingPost> {
    let text = std::str::from_utf8(text).ok()?;
    let mut members = Members::new(text)?;
    // Each field read: `Some(value)`, its value `None` for `null`.
    let (mut name, mut id, mut subreddit, mut author, mut body) = (None, None, None, None, None);
    let (mut parent_id, mut link_id, mut permalink, mut created, mut score) = (None, None, None, None, None);
    while let Some(key) = members.next_key()? {
        match key {
            "name" => once(&mut name, members.string_or_null()?)?,
            "id" => once(&mut id, members.string_or_null()?)?,
            "subreddit" => once(&mut subreddit, members.string_or_null()?)?,
            "author" => once(&mut author, members.string_or_null()?)?,
            "body" => once(&mut body, members.string_or_null()?)?,
            "parent_id" => once(&mut parent_id, members.string_or_null()?)?,
            "link_id" => once(&mut link_id, members.string_or_null()?)?,
            "permalink" => once(&mut permalink, members.string_or_null()?)?,
            "created_utc" => once(&mut created, members.number_or_null()?)?,
            "score" => once(&mut score, members.number_or_null()?)?,
            // A listing child (or a record of another kind), or with
            // `detect` a canonical post: for the full parse to tell.
            "kind" => return None,
            "platform" if detect => return None,
            _ => members.skip()?,
        }
    }
    let subreddit = subreddit.flatten();
    if detect && subreddit.is_none() {
        return None;
    }
    let own = |s: Option<Cow<str>>| s.map(Cow::into_owned);
    let id = match name.flatten() {
        Some(name) => name.into_owned(),
        None => fullname(id.flatten()?.into_owned()),
    };
    let created_at = parse_timestamp(&Value::Number(number_of(created.flatten()?)?), "created_utc").ok()?;
    let link_id = own(link_id.flatten());
    let url = comment_url(own(permalink.flatten()), link_id.as_deref(), &id);
    Some(IncomingPost {
        platform: PLATFORM.into(),
        id,
        community: own(subreddit),
        author: own(author.flatten()),
        body: body.flatten()?.into_owned(),
        created_at,
        parent_id: own(parent_id.flatten()),
        thread_id: link_id,
        url,
        score: score.flatten().and_then(number_of).as_ref().and_then(int_of),
        reposts: None,
        author_followers: None,
        location: None,
        lang: None,
    })
}

/// Records a field's value; `None` (give up) if it was given before: a
/// repeated key is left to the full parse, where the last one wins.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.replace(value).is_none().then_some(())
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

    /// Every child's `data` of the recorded listings (real comments from
    /// the API), as JSON text.
    fn recorded_comments() -> Vec<String> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/reddit/listings");
        let mut out = Vec::new();
        fn walk(v: &Value, out: &mut Vec<String>) {
            match v {
                Value::Object(map) => {
                    if map.get("kind") == Some(&Value::String("t1".into()))
                        && let Some(data) = map.get("data")
                    {
                        out.push(data.to_string());
                    }
                    map.values().for_each(|v| walk(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
                _ => {}
            }
        }
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.to_string_lossy().ends_with(".body.json") {
                let value: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
                walk(&value, &mut out);
            }
        }
        out
    }

    #[test]
    fn the_fast_path_gives_what_the_mapping_gives_or_leaves_the_line_to_it() {
        let dump = include_str!("../../tests/fixtures/pushshift/RC_2018-10_first2lines_raw.ndjson");
        let recorded = recorded_comments();
        assert!(recorded.len() > 50, "{} recorded comments", recorded.len());
        let plain: Vec<String> = dump.lines().map(String::from).chain(recorded).collect();
        // Lines the fast path must read, and must give as the mapping does.
        let mut read = plain.clone();
        read.extend(
            [
                r#"{"id":"abc","body":"a \"quoted\" line\nand \u00e9 \ud83d\ude00","subreddit":"x","created_utc":1546344000.25,"score":-3}"#,
                r#"{"id":"t1_abc","body":"","subreddit":"x","created_utc":1546344000,"score":2.9}"#,
                r#"{"name":"t1_n","id":"n","body":"b","subreddit":"x","created_utc":1546344000}"#,
                r#"{"id":"abc","body":"b","subreddit":"x","created_utc":1546344000,"link_id":"t3_l","permalink":null}"#,
                r#"{"id":"abc","body":"b","subreddit":"x","created_utc":1546344000,"permalink":"https://old.reddit.com/r/x/c/l/_/abc/"}"#,
                r#"{"id":"abc","body":"b","subreddit":"x","created_utc":1546344000,"score":18446744073709551615}"#,
                r#"{"id":"abc","body":"b","subreddit":"x","created_utc":1546344000,"edited":[{"deep":[1,2,{"x":null}]}]}"#,
            ]
            .map(String::from),
        );
        // Lines it must leave to the mapping (or to another format).
        let left = [
            r#"{"kind":"t1","data":{"id":"a","body":"b","subreddit":"x","created_utc":1}}"#,
            r#"{"kind":null,"id":"a","body":"b","subreddit":"x","created_utc":1546344000}"#,
            r#"{"platform":"reddit","id":"a","body":"b","subreddit":"x","created_utc":1546344000}"#,
            r#"{"platform":null,"id":"a","body":"b","subreddit":"x","created_utc":1546344000}"#,
            r#"{"id":"a","body":"b","subreddit":null,"created_utc":1546344000}"#,
            r#"{"id":"a","body":"b","subreddit":"x","subreddit":"y","created_utc":1546344000}"#,
            r#"{"id":"a","body":null,"subreddit":"x","created_utc":1546344000}"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":null}"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":"1546344000"}"#,
            r#"{"name":"t1_n","id":7,"body":"b","subreddit":"x","created_utc":1546344000}"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":1546344000000}"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":1546344000,"score":"3"}"#,
            r#"{"body":"b","subreddit":"x","created_utc":1546344000}"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":1546344000} trailing"#,
            r#"[{"id":"a","body":"b","subreddit":"x","created_utc":1546344000}]"#,
            r#"{"id":"a","body":"b","subreddit":"x","created_utc":1546344000,"author":5}"#,
        ];
        for (i, line) in read.iter().enumerate() {
            let value: Value = serde_json::from_str(line).unwrap();
            let mapped = comment(&value).unwrap();
            for detect in [false, true] {
                let fast = comment_from_text(line.as_bytes(), detect);
                assert_eq!(fast.as_ref(), Some(&mapped), "line {i} (detect {detect}): {line}");
            }
            assert_eq!(super::super::detect(&value), super::super::Format::Reddit, "{line}");
        }
        for line in left {
            assert_eq!(comment_from_text(line.as_bytes(), true), None, "{line}");
            if let Ok(value) = serde_json::from_str::<Value>(line)
                && let Some(fast) = comment_from_text(line.as_bytes(), false)
            {
                assert_eq!(Ok(fast), comment(&value), "{line}");
            }
        }
        assert!(
            comment_from_text(left[2].as_bytes(), false).is_some(),
            "the format was given"
        );
    }
}
