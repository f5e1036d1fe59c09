//! The client side of HTTP: what chorus's commands and collectors send to
//! a chorus server, and how they read a remote's answer (`Retry-After`).

use std::time::Duration;

use crate::mapping::Format;

/// The longest wait a remote's answer can ask for (`Retry-After`, a rate
/// limit's reset); longer values are clamped to it, and logged.
pub const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(3600);

/// `seconds` a remote asked to wait, as a duration in 0..=`limit` (NaN and
/// negatives are 0; a value past `limit`, `1e30` say, is `limit`, logged).
pub fn clamped_secs(seconds: f64, limit: std::time::Duration, what: &str) -> std::time::Duration {
    if seconds.is_nan() || seconds <= 0.0 {
        return std::time::Duration::ZERO;
    }
    if seconds > limit.as_secs_f64() {
        tracing::warn!(
            seconds,
            limit = limit.as_secs(),
            what,
            "A remote asked for a longer wait than allowed; clamped."
        );
        return limit;
    }
    std::time::Duration::from_secs_f64(seconds)
}

/// A `Retry-After` header in seconds (the HTTP-date form is read too),
/// at most [`MAX_WAIT`].
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<std::time::Duration> {
    let value = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(seconds) = value.parse::<f64>() {
        return (seconds.is_finite() && seconds >= 0.0).then(|| clamped_secs(seconds, MAX_WAIT, "Retry-After"));
    }
    let at = chrono::DateTime::parse_from_rfc2822(value).ok()?;
    let wait = at.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(wait.to_std().unwrap_or_default().min(MAX_WAIT))
}

/// The answer to one `POST /v1/posts`.
#[derive(Debug)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Its `Retry-After`, if any.
    pub retry_after: Option<Duration>,
    /// The body.
    pub text: String,
}

/// Sends `body` (NDJSON, or one JSON document) of `format` to a chorus's `POST /v1/posts` `url`;
/// what the server answered (the caller decides what a status means).
pub async fn post_posts(
    client: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    format: Format,
    body: Vec<u8>,
) -> reqwest::Result<Answer> {
    let mut request = client.post(url).query(&[("format", format.name())]).body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?;
    let status = response.status().as_u16();
    let retry_after = retry_after(response.headers());
    let text = response.text().await.unwrap_or_default();
    Ok(Answer {
        status,
        retry_after,
        text,
    })
}
