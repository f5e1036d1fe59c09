//! A local HTTP server that answers with REAL recorded responses
//! (`tests/fixtures/<platform>/…`, each a wrapper JSON naming its status,
//! headers and body file), in the order a test scripts them, and records
//! every request it receives with the (possibly paused) tokio time.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::time::Instant;

/// One recorded response.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// Headers that describe the recorded transfer, not the response: the
/// bodies are stored decoded, and sanitised upstream (lengths changed).
const TRANSFER_HEADERS: [&str; 4] = ["content-length", "transfer-encoding", "connection", "content-encoding"];

/// Reads `tests/fixtures/<rel>.json` and its body file.
pub fn recorded(rel: &str) -> Recorded {
    let path = crate::fixture(&format!("{rel}.json"));
    let wrapper: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let response = &wrapper["response"];
    let status = response["status"]["code"].as_u64().unwrap() as u16;
    let mut headers = Vec::new();
    for (name, values) in response["headers"].as_object().unwrap() {
        if TRANSFER_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        for v in values.as_array().unwrap() {
            headers.push((name.clone(), v.as_str().unwrap().to_string()));
        }
    }
    let body = match response["body_file"].as_str() {
        Some(file) => std::fs::read(path.parent().unwrap().join(file)).unwrap(),
        None => Vec::new(),
    };
    Recorded { status, headers, body }
}

impl Recorded {
    /// The same response with one header replaced (or added).
    pub fn with_header(mut self, name: &str, value: &str) -> Recorded {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// The same response without any `x-ratelimit-*` header.
    pub fn without_rate_limits(mut self) -> Recorded {
        self.headers
            .retain(|(n, _)| !n.to_ascii_lowercase().starts_with("x-ratelimit"));
        self
    }
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub query: HashMap<String, String>,
    pub headers: HeaderMap,
    pub body: String,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers.get(name).map(|v| v.to_str().unwrap().to_string())
    }

    /// The form fields of an `application/x-www-form-urlencoded` body.
    pub fn form(&self) -> HashMap<String, String> {
        url::form_urlencoded::parse(self.body.as_bytes()).into_owned().collect()
    }
}

/// Scripted answers per route, and the requests received.
#[derive(Default)]
pub struct Script {
    /// Route path → answers, in order; the last one repeats when the queue
    /// is down to it.
    pub routes: Mutex<HashMap<String, VecDeque<Recorded>>>,
    pub requests: Mutex<Vec<Request>>,
}

impl Script {
    /// Queues answers for `path`.
    pub fn answer(&self, path: &str, answers: impl IntoIterator<Item = Recorded>) {
        self.routes
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(answers);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }

    /// Requests to `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests().into_iter().filter(|r| r.path == path).collect()
    }
}

/// Serves `script` on a free local port.
pub async fn serve(script: Arc<Script>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let script = script.clone();
        async move { answer(&script, method, uri, headers, body) }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    address
}

fn answer(script: &Script, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().trim_end_matches('/').to_string();
    let query = uri
        .query()
        .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
        .unwrap_or_default();
    script.requests.lock().unwrap().push(Request {
        method,
        path: path.clone(),
        query,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        at: Instant::now(),
    });
    let recorded = {
        let mut routes = script.routes.lock().unwrap();
        let Some(queue) = routes.get_mut(&path) else {
            return (StatusCode::NOT_FOUND, format!("no script for {path}")).into_response();
        };
        if queue.len() > 1 {
            queue.pop_front().unwrap()
        } else {
            queue.front().cloned().unwrap()
        }
    };
    let mut response = Response::new(axum::body::Body::from(recorded.body));
    *response.status_mut() = StatusCode::from_u16(recorded.status).unwrap();
    for (name, value) in recorded.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(name), HeaderValue::try_from(value)) {
            response.headers_mut().append(name, value);
        }
    }
    response
}
