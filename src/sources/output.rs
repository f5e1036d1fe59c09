//! Where a collector's posts go: the local log, or a remote chorus through a
//! durable spool.
//!
//! The spool is a directory of NDJSON batch files (canonical records),
//! each written temp → fsync → rename before [`Output::emit`] returns, so a
//! collector may advance its checkpoint as soon as `emit` succeeds. A sender
//! task posts the files in order to `POST /v1/posts` (merging them up to
//! `batch_posts` posts, or sending what it has after `batch_ms`), deletes a
//! file only after the server's `202`, and retries with backoff while the
//! server is down or saturated. A resend after a crash between the `202` and
//! the delete carries the same content, which the server's enrich stage
//! drops as an exact re-submission: nothing lost, nothing doubled.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::checkpoint::write_atomically;
use crate::log::Log;
use crate::mapping::Format;
use crate::metrics::Metrics;
use crate::record::{IncomingPost, Limits, now_micros};
use crate::wire::IngestResponse;
use crate::wire::client::{Answer, post_posts};

/// Directory of the spools inside a data directory.
pub const SPOOL_DIR: &str = "spool";
/// Sub-directory where batches the remote refused as invalid are kept.
pub const REFUSED_DIR: &str = "refused";

/// A collector's destination.
#[derive(Clone)]
pub enum Output {
    /// `posts.raw` of a log this process holds, taking posts within the
    /// limits.
    Log(Arc<dyn Log>, Limits),
    /// A remote `POST /v1/posts`, through a durable spool.
    Spool(Arc<Spool>),
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Output::Log(..) => f.write_str("Output::Log"),
            Output::Spool(spool) => write!(f, "Output::Spool({})", spool.dir.display()),
        }
    }
}

impl Output {
    /// Makes `posts` durable at the destination (the log, or the spool);
    /// returns how many.
    /// A post out of bounds ([`IncomingPost::check`]; at a remote, its own
    /// body limit applies) is logged, counted in `collector_invalid` and
    /// left out: it never reaches the log.
    pub async fn emit(&self, mut posts: Vec<IncomingPost>, metrics: &Metrics) -> anyhow::Result<usize> {
        let limits = match self {
            Output::Log(_, limits) => *limits,
            Output::Spool(_) => Limits::ANY_BODY,
        };
        posts.retain(|post| match post.check(&limits) {
            Ok(()) => true,
            Err(e) => {
                metrics.collector_invalid.add(1);
                tracing::warn!(platform = %post.platform, error = %e, "A collected post is out of bounds; left out.");
                false
            }
        });
        if posts.is_empty() {
            return Ok(0);
        }
        let n = posts.len();
        match self {
            Output::Log(log, _) => {
                let log = log.clone();
                tokio::task::spawn_blocking(move || crate::log::append_posts(&*log, posts, now_micros()))
                    .await
                    .context("the append task failed")?
                    .context("appending to the log")?;
            }
            Output::Spool(spool) => {
                let spool = spool.clone();
                tokio::task::spawn_blocking(move || spool.write(&posts))
                    .await
                    .context("the spool task failed")?
                    .context("writing to the spool")?;
            }
        }
        metrics.collector_posts.add(n as u64);
        Ok(n)
    }
}

impl Spool {
    /// Keeps in `refused/` the posts a remote refused inside a `202` (each
    /// line with the remote's reason), before their spool files are
    /// deleted: nothing the collector took is dropped silently. When the
    /// remote listed only some of the refused lines, the whole batch is kept.
    fn keep_refused_lines(&self, batch: &[PathBuf], body: &[u8], answer: &IngestResponse) -> anyhow::Result<()> {
        let refused = self.dir.join(REFUSED_DIR);
        fs::create_dir_all(&refused).with_context(|| format!("creating {}", refused.display()))?;
        let first = batch
            .first()
            .and_then(|p| p.file_name())
            .map_or_else(|| "batch".into(), |n| n.to_string_lossy().into_owned());
        let unlisted = answer.rejected_total.is_some_and(|total| total > answer.rejected.len());
        let mut out = Vec::new();
        if unlisted {
            out.extend_from_slice(body);
        } else {
            let lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
            for r in &answer.rejected {
                let post = lines
                    .get(r.line.wrapping_sub(1))
                    .and_then(|l| serde_json::from_slice::<serde_json::Value>(l).ok())
                    .unwrap_or(serde_json::Value::Null);
                let line = serde_json::json!({"error": r.error, "post": post});
                out.extend_from_slice(line.to_string().as_bytes());
                out.push(b'\n');
            }
        }
        let path = refused.join(format!("{first}.refused.ndjson"));
        super::checkpoint::write_atomically(&path, &out).with_context(|| format!("writing {}", path.display()))?;
        tracing::error!(
            refused = answer.rejected_total.unwrap_or(answer.rejected.len()),
            file = %path.display(),
            "The remote refused spooled posts; they are kept aside with the reasons."
        );
        Ok(())
    }
}

/// Where and how the spool sends.
#[derive(Clone)]
pub struct Remote {
    /// `POST /v1/posts` URL of the remote chorus.
    pub url: String,
    /// Bearer token, if the remote needs one.
    pub token: Option<String>,
    /// Most posts per request.
    pub batch_posts: usize,
    /// Longest a spooled post waits for a fuller batch.
    pub batch_ms: u64,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Remote")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("batch_posts", &self.batch_posts)
            .field("batch_ms", &self.batch_ms)
            .finish()
    }
}

impl Remote {
    /// `to` is a server's base URL (`http://host:7700`) or its full
    /// `…/v1/posts` URL.
    pub fn new(to: &str, token: Option<String>) -> anyhow::Result<Remote> {
        let parsed = reqwest::Url::parse(to).with_context(|| format!("--to {to:?} is not a URL"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            bail!("--to {to:?}: only http and https URLs are supported");
        }
        let trimmed = to.trim_end_matches('/');
        let url = if trimmed.ends_with("/v1/posts") {
            trimmed.to_string()
        } else {
            format!("{trimmed}/v1/posts")
        };
        Ok(Remote {
            url,
            token,
            batch_posts: 1000,
            batch_ms: 1000,
        })
    }
}

/// The durable spool of one collector.
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    next: AtomicU64,
    written: Notify,
}

impl Spool {
    /// Opens (creating) the spool directory `dir`; leftover temp files of a
    /// crash are removed, leftover batches are kept and sent first.
    pub fn open(dir: &Path) -> std::io::Result<Spool> {
        fs::create_dir_all(dir)?;
        let mut next = 0;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            match path.extension().and_then(|e| e.to_str()) {
                Some("tmp") => fs::remove_file(&path)?,
                Some("ndjson") => {
                    if let Some(seq) = sequence(&path) {
                        next = next.max(seq + 1);
                    }
                }
                _ => {}
            }
        }
        Ok(Spool {
            dir: dir.to_path_buf(),
            next: AtomicU64::new(next),
            written: Notify::new(),
        })
    }

    /// Writes one batch durably.
    pub fn write(&self, posts: &[IncomingPost]) -> std::io::Result<()> {
        let mut body = Vec::with_capacity(posts.len() * 512);
        for post in posts {
            body.extend_from_slice(&post.to_canonical_json());
            body.push(b'\n');
        }
        let seq = self.next.fetch_add(1, Ordering::SeqCst);
        write_atomically(&self.dir.join(format!("{seq:016}.ndjson")), &body)?;
        self.written.notify_one();
        Ok(())
    }

    /// The batch files waiting to be sent, oldest first.
    pub fn pending(&self) -> std::io::Result<Vec<PathBuf>> {
        let mut files: Vec<(u64, PathBuf)> = fs::read_dir(&self.dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter_map(|p| sequence(&p).map(|s| (s, p)))
            .collect();
        files.sort();
        Ok(files.into_iter().map(|(_, p)| p).collect())
    }

    /// Sends the spooled batches to `remote` until `shutdown`; then makes
    /// one last attempt to send what is left (what still fails stays on
    /// disk for the next start). Errors only when the remote refuses the
    /// token (401/403): the batches stay spooled.
    pub async fn send(&self, remote: &Remote, metrics: &Metrics, shutdown: &CancellationToken) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .context("building the HTTP client")?;
        // Per pending file: when it was first seen, and its posts.
        let mut known: HashMap<PathBuf, (Instant, usize)> = HashMap::new();
        let mut retry = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut single = false;
        loop {
            let files = self
                .pending()
                .with_context(|| format!("reading {}", self.dir.display()))?;
            known.retain(|p, _| files.contains(p));
            if files.is_empty() {
                if shutdown.is_cancelled() {
                    return Ok(());
                }
                tokio::select! {
                    () = self.written.notified() => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            let now = Instant::now();
            for f in &files {
                if !known.contains_key(f) {
                    let bytes = fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                    let lines = bytes.iter().filter(|b| **b == b'\n').count();
                    known.insert(f.clone(), (now, lines));
                }
            }
            // A batch: whole files, oldest first, up to `batch_posts` posts.
            let mut batch: Vec<PathBuf> = Vec::new();
            let mut posts = 0;
            for path in &files {
                let lines = known[path].1;
                if !batch.is_empty() && (posts + lines > remote.batch_posts || single) {
                    break;
                }
                posts += lines;
                batch.push(path.clone());
            }
            let oldest = known[&files[0]].0;
            let due = oldest + Duration::from_millis(remote.batch_ms);
            if posts < remote.batch_posts && batch.len() == files.len() && now < due && !shutdown.is_cancelled() {
                tokio::select! {
                    () = self.written.notified() => {}
                    () = tokio::time::sleep_until(due) => {}
                    () = shutdown.cancelled() => {}
                }
                continue;
            }
            let mut body = Vec::new();
            for path in &batch {
                body.extend(fs::read(path).with_context(|| format!("reading {}", path.display()))?);
            }
            let sent = post_posts(
                &client,
                &remote.url,
                remote.token.as_deref(),
                Format::Canonical,
                body.clone(),
            )
            .await;
            let wait = match sent {
                Ok(Answer {
                    status,
                    retry_after,
                    text,
                }) => match status {
                    200..=299 => {
                        if let Ok(answer) = serde_json::from_str::<IngestResponse>(&text) {
                            metrics.spool_sent.add(answer.accepted as u64);
                            if !answer.rejected.is_empty() || answer.rejected_total.is_some() {
                                self.keep_refused_lines(&batch, &body, &answer)?;
                            }
                        }
                        for path in &batch {
                            fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
                        }
                        retry.reset();
                        single = false;
                        continue;
                    }
                    401 | 403 => {
                        bail!(
                            "{} refused the token ({status}): {}; {posts} posts stay in {}",
                            remote.url,
                            text.trim(),
                            self.dir.display()
                        )
                    }
                    413 if batch.len() > 1 => {
                        single = true;
                        continue;
                    }
                    400 | 413 | 422 => {
                        // The request itself is refused: keep it aside,
                        // never drop it.
                        let refused = self.dir.join(REFUSED_DIR);
                        fs::create_dir_all(&refused)?;
                        for path in &batch {
                            let name = path.file_name().expect("a spool file has a name");
                            fs::rename(path, refused.join(name))?;
                        }
                        tracing::error!(%status, reason = %text.trim(), dir = %refused.display(),
                                "The remote refused a spooled batch; it is kept aside.");
                        continue;
                    }
                    _ => {
                        tracing::warn!(%status, url = %remote.url, "The remote is unavailable; will retry.");
                        retry_after.unwrap_or_else(|| retry.next_delay())
                    }
                },
                Err(e) => {
                    tracing::warn!(error = %e, url = %remote.url, "Cannot reach the remote; will retry.");
                    retry.next_delay()
                }
            };
            metrics.collector_retries.add(1);
            if shutdown.is_cancelled() {
                // One attempt after the stop: what is left waits on disk.
                return Ok(());
            }
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = shutdown.cancelled() => {}
            }
        }
    }
}

/// The sequence number of a spool batch file name.
fn sequence(path: &Path) -> Option<u64> {
    if path.extension()? != "ndjson" {
        return None;
    }
    path.file_stem()?.to_str()?.parse().ok()
}
