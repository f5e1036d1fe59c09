//! The dashboard at `/` (OpenSearch Dashboards): one page and its assets,
//! embedded in the binary so that it works offline. The page holds no data;
//! it calls the API (`/v1/…`) with the token the user gives it.

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// An embedded file: name, content type, bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    bytes: &'static [u8],
}

const INDEX: &[u8] = include_bytes!("index.html");

/// An [`Asset`] of the file at `path` (beside this module).
macro_rules! asset {
    ($name:literal, $path:literal, $content_type:literal) => {
        Asset {
            name: $name,
            content_type: $content_type,
            bytes: include_bytes!($path),
        }
    };
}

const ASSETS: &[Asset] = &[
    asset!("app.js", "app.js", "text/javascript; charset=utf-8"),
    asset!("app.css", "app.css", "text/css; charset=utf-8"),
    asset!(
        "uPlot.iife.min.js",
        "vendor/uPlot.iife.min.js",
        "text/javascript; charset=utf-8"
    ),
    asset!("uPlot.min.css", "vendor/uPlot.min.css", "text/css; charset=utf-8"),
    asset!("uPlot.LICENSE", "vendor/uPlot.LICENSE", "text/plain; charset=utf-8"),
];

/// Scripts and styles only from this server, no frames, no plugins; the
/// page talks only to its own origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                   img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

/// `GET /` and `GET /assets/{name}`, served without a token (the page asks
/// for one when the API answers 401).
pub fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { page("text/html; charset=utf-8", INDEX) }))
        .route("/assets/{name}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Response {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => page(a.content_type, a.bytes),
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

fn page(content_type: &'static str, bytes: &'static [u8]) -> Response {
    let mut response = bytes.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    // Assets change with the binary, which is small to re-check.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_embedded_assets() {
        let page = std::str::from_utf8(INDEX).unwrap();
        for reference in page.split(['"', '\'']).filter(|s| s.starts_with("/assets/")) {
            let name = &reference["/assets/".len()..];
            assert!(ASSETS.iter().any(|a| a.name == name), "{name} is not embedded");
        }
        // Nothing from elsewhere: the dashboard works offline.
        for asset in ASSETS.iter().filter(|a| a.name.starts_with("app")) {
            let text = std::str::from_utf8(asset.bytes).unwrap();
            assert!(
                !text.contains("http://") && !text.contains("https://"),
                "{}",
                asset.name
            );
        }
        assert!(!page.contains("http://") && !page.contains("https://"));
    }
}
