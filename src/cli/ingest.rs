//! `chorus ingest FILE…`: backfill from NDJSON or JSON files, plain, `.gz`
//! or `.zst` (Pushshift / Arctic Shift dumps need zstd's 2^31 window), to
//! the running server if there is one, else straight into the log.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use crate::log::Log;
use crate::mapping::stream::{Item, Records};
use crate::mapping::{Format, Parsed, Rejection};
use crate::record::{Limits, now_micros};

/// Lines per batch sent to a server...
pub const BATCH_LINES: usize = 1000;
/// ...or appended to the log (each append is one durable write: larger
/// batches make a backfill fewer of them)...
pub const LOG_BATCH_LINES: usize = 10_000;
/// ...or bytes, whichever comes first (under the server's default body
/// limit; a server with a smaller one answers 413 and the batch is split).
pub const BATCH_BYTES: usize = 8 << 20;

/// The longest record (line or array element) read: twice the body limit
/// (JSON escapes) plus room for the other fields. Longer ones are rejected
/// without being held in memory.
fn record_bound(limits: &Limits) -> usize {
    limits.max_post_bytes.saturating_mul(2).saturating_add(64 << 10)
}
/// zstd's largest window (2^31), which the Pushshift dumps use.
const ZSTD_WINDOW_LOG_MAX: u32 = 31;

/// Where ingested posts go.
pub enum Destination<'a> {
    /// The log of a data directory opened by this process.
    Log(&'a dyn Log),
    /// A running server's `POST /v1/posts`.
    Remote {
        /// Base URL, e.g. `http://127.0.0.1:7700`.
        base: String,
        /// Bearer token, if the server needs one.
        token: Option<String>,
    },
}

/// Totals of an ingest run.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Posts accepted.
    pub accepted: u64,
    /// Lines refused.
    pub rejected: u64,
    /// Posts left out by `--since`, `--until`, `--community`.
    pub skipped: u64,
}

/// Opens a file, decompressing by its extension.
pub fn open(path: &Path) -> anyhow::Result<(Box<dyn Read + Send>, ProgressBar)> {
    let file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = progress_bar(size, path);
    let counted = bar.wrap_read(file);
    let name = path.to_string_lossy();
    let reader: Box<dyn Read + Send> = if name.ends_with(".gz") {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(counted)))
    } else if name.ends_with(".zst") || name.ends_with(".zstd") {
        let mut decoder = zstd::stream::read::Decoder::new(counted)
            .with_context(|| format!("{}: not a zstd stream", path.display()))?;
        decoder
            .window_log_max(ZSTD_WINDOW_LOG_MAX)
            .with_context(|| format!("{}: zstd window", path.display()))?;
        Box::new(decoder)
    } else {
        Box::new(counted)
    };
    Ok((reader, bar))
}

fn progress_bar(size: u64, path: &Path) -> ProgressBar {
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(size);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {bytes}/{total_bytes} {msg} (eta {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    bar
}

/// Ingests every file; rejected lines are reported on `errors`.
pub async fn ingest_files(
    files: &[PathBuf],
    format: Format,
    filter: &Filter,
    destination: &Destination<'_>,
    limits: &Limits,
    errors: &mut dyn std::io::Write,
) -> anyhow::Result<Summary> {
    let mut total = Summary::default();
    let client = reqwest::Client::new();
    for path in files {
        let start = Instant::now();
        let (reader, bar) = open(path)?;
        let mut reader = BufReader::with_capacity(1 << 20, reader);
        let mut summary = Summary::default();
        let first = reader
            .fill_buf()
            .with_context(|| format!("cannot read {}", path.display()))?
            .iter()
            .find(|b| !b.is_ascii_whitespace())
            .copied();
        // NDJSON lines, or the elements of one JSON array, read one at a
        // time: memory stays bounded by the batches in flight, whatever
        // the file.
        let records = Records::new(reader, record_bound(limits), first == Some(b'['));
        let mut progress = |outcome: Outcome, batch: &Batch, summary: &mut Summary| {
            summary.accepted += outcome.accepted;
            summary.skipped += outcome.skipped;
            for note in &batch.notes {
                let _ = writeln!(errors, "{note}");
            }
            summary.rejected += batch.notes.len() as u64;
            report(errors, path, &outcome, batch.first, summary);
            let read = summary.accepted + summary.skipped;
            let rate = read as f64 / start.elapsed().as_secs_f64().max(1e-9);
            bar.set_message(format!("{read} posts, {rate:.0} posts/s"));
        };
        let mut batches = Batches {
            records,
            path,
            bound: record_bound(limits),
            lines: match destination {
                Destination::Log(_) => LOG_BATCH_LINES,
                Destination::Remote { .. } => BATCH_LINES,
            },
            next_line: 1,
            done: false,
        };
        match destination {
            Destination::Log(log) => {
                append_in_parallel(batches, format, filter, *log, limits, |outcome, batch| {
                    progress(outcome, batch, &mut summary)
                })?;
            }
            Destination::Remote { base, token } => {
                let server = (&client, base.as_str(), token.as_deref());
                while let Some(batch) = batches.next_batch()? {
                    let outcome = send(&batch.lines, format, filter, limits, server).await?;
                    progress(outcome, &batch, &mut summary);
                }
            }
        }
        bar.finish_and_clear();
        let secs = start.elapsed().as_secs_f64();
        let filtered = if filter.is_active() {
            format!(", {} left out by the filters", summary.skipped)
        } else {
            String::new()
        };
        eprintln!(
            "{}: {} posts accepted{filtered}, {} lines rejected, {:.1} s ({:.0} posts/s read)",
            path.display(),
            summary.accepted,
            summary.rejected,
            secs,
            (summary.accepted + summary.skipped) as f64 / secs.max(1e-9)
        );
        total.accepted += summary.accepted;
        total.rejected += summary.rejected;
        total.skipped += summary.skipped;
    }
    Ok(total)
}

/// Lines of a file read for one request or append.
struct Batch {
    /// The file's line (or array element) number of `lines[0]`.
    first: usize,
    /// The records; one too long to read is an empty line, so that the
    /// numbering holds.
    lines: Vec<Vec<u8>>,
    /// What the reading itself refused (`file:line: reason`), one line per
    /// rejected record.
    notes: Vec<String>,
}

/// A file's records in batches of at most `lines` lines or [`BATCH_BYTES`].
struct Batches<'a, R> {
    records: Records<R>,
    path: &'a Path,
    bound: usize,
    lines: usize,
    next_line: usize,
    done: bool,
}

impl<R: BufRead> Batches<'_, R> {
    /// The next batch; `None` after the last. A broken JSON array ends the
    /// file after the batch it breaks in.
    fn next_batch(&mut self) -> anyhow::Result<Option<Batch>> {
        if self.done {
            return Ok(None);
        }
        let mut batch = Batch {
            first: self.next_line,
            lines: Vec::with_capacity(self.lines.min(BATCH_LINES)),
            notes: Vec::new(),
        };
        let (mut bytes, mut buf) = (0usize, Vec::new());
        while batch.lines.len() < self.lines && bytes < BATCH_BYTES {
            let item = self.records.next(&mut buf).with_context(|| {
                format!(
                    "cannot read {} after record {}",
                    self.path.display(),
                    batch.first + batch.lines.len()
                )
            })?;
            match item {
                Some(Item::Record { .. }) => {
                    bytes += buf.len();
                    batch.lines.push(std::mem::take(&mut buf));
                }
                Some(Item::TooLong { number, bytes }) => {
                    // Kept as a blank line so the batch's numbering holds.
                    batch.lines.push(Vec::new());
                    batch.notes.push(format!(
                        "{}:{number}: a record of {bytes} bytes, more than the bound of {} (twice [server] \
                         max_post_bytes, plus 64 KiB)",
                        self.path.display(),
                        self.bound
                    ));
                }
                Some(Item::Broken { number, reason }) => {
                    batch.notes.push(format!(
                        "{}:{number}: malformed JSON array: {reason}",
                        self.path.display()
                    ));
                    self.done = true;
                    break;
                }
                None => {
                    self.done = true;
                    break;
                }
            }
        }
        self.next_line += batch.lines.len();
        Ok((!batch.lines.is_empty() || !batch.notes.is_empty()).then_some(batch))
    }
}

/// Appends `batches` to `log`: one thread reads (and decompresses) them,
/// one per core parses and filters them, and this one appends them in
/// file order, calling `done` after each. At most one batch per worker and
/// two more are read and not yet appended (a slow batch holds the others
/// back rather than letting them pile up). An error stops the reading; the
/// batches before it are appended.
fn append_in_parallel<R: BufRead + Send>(
    mut batches: Batches<'_, R>,
    format: Format,
    filter: &Filter,
    log: &dyn Log,
    limits: &Limits,
    mut done: impl FnMut(Outcome, &Batch),
) -> anyhow::Result<()> {
    use std::sync::mpsc;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // A slot per batch in flight: the reader takes one before it reads a
    // batch, this thread gives it back once the batch is appended.
    let in_flight = workers + 2;
    let (free_tx, free_rx) = mpsc::sync_channel::<()>(in_flight);
    for _ in 0..in_flight {
        let _ = free_tx.send(());
    }
    let (work_tx, work_rx) = mpsc::channel::<(u64, Batch)>();
    let work_rx = std::sync::Mutex::new(work_rx);
    let (parsed_tx, parsed_rx) = mpsc::channel::<(u64, Batch, Parsed, u64)>();
    std::thread::scope(|s| {
        let reading = s.spawn(move || -> anyhow::Result<()> {
            let mut seq = 0;
            // Ends when this thread stops giving slots back (done or failed).
            while free_rx.recv().is_ok() {
                let Some(batch) = batches.next_batch()? else { break };
                if work_tx.send((seq, batch)).is_err() {
                    break;
                }
                seq += 1;
            }
            Ok(())
        });
        for _ in 0..workers {
            let (work_rx, parsed_tx) = (&work_rx, parsed_tx.clone());
            s.spawn(move || {
                loop {
                    let next = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok((seq, batch)) = next else { break };
                    let (parsed, skipped) = parse_batch(&batch.lines, format, filter, limits);
                    if parsed_tx.send((seq, batch, parsed, skipped)).is_err() {
                        break;
                    }
                }
            });
        }
        drop(parsed_tx);
        // In file order: each post gets its ingest time as it is appended.
        let appended = (|| -> anyhow::Result<()> {
            let mut waiting = BTreeMap::new();
            let mut next = 0;
            for item in parsed_rx.iter() {
                waiting.insert(item.0, item);
                while let Some((_, batch, parsed, skipped)) = waiting.remove(&next) {
                    next += 1;
                    let appended =
                        crate::log::append_posts(log, parsed.posts, now_micros()).context("appending to the log")?;
                    let outcome = Outcome {
                        accepted: appended as u64,
                        skipped,
                        rejected: parsed.rejected,
                        rejected_total: parsed.rejected_total as u64,
                    };
                    done(outcome, &batch);
                    let _ = free_tx.send(());
                }
            }
            Ok(())
        })();
        // Stops the reader and then the workers, if an append failed.
        drop(free_tx);
        drop(parsed_rx);
        let read = reading
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the reading thread panicked")));
        appended.and(read)
    })
}

/// Parses one batch of lines; the posts that pass `filter`, and how many
/// did not.
fn parse_batch(lines: &[Vec<u8>], format: Format, filter: &Filter, limits: &Limits) -> (Parsed, u64) {
    let mut parsed = Parsed::new(*limits);
    for (i, line) in lines.iter().enumerate() {
        parsed.take_line(i + 1, line, format);
    }
    let before = parsed.posts.len();
    parsed.posts.retain(|p| filter.keeps(p));
    let skipped = (before - parsed.posts.len()) as u64;
    (parsed, skipped)
}

/// Which posts a backfill keeps: `--since`, `--until`, `--community`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Posts created at or after this instant (µs), if set.
    pub since: Option<i64>,
    /// Posts created before this instant (µs), if set.
    pub until: Option<i64>,
    /// Communities kept (compared case-insensitively, without `r/`); empty: all.
    pub communities: Vec<String>,
}

impl Filter {
    /// Parses `--since` / `--until` (RFC 3339, `YYYY-MM-DD` as midnight UTC,
    /// or Unix seconds) and `--community` values (repeated or
    /// comma-separated).
    pub fn new(since: Option<&str>, until: Option<&str>, communities: &[String]) -> anyhow::Result<Filter> {
        let instant = |flag: &str, text: &str| -> anyhow::Result<i64> {
            if let Ok(date) = chrono::NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
                return Ok(date
                    .and_hms_opt(0, 0, 0)
                    .expect("midnight exists")
                    .and_utc()
                    .timestamp_micros());
            }
            crate::record::parse_timestamp(&serde_json::Value::String(text.to_string()), "time")
                .map_err(|_| anyhow::anyhow!("{flag} {text:?}: give RFC 3339, YYYY-MM-DD or Unix seconds"))
        };
        let filter = Filter {
            since: since.map(|t| instant("--since", t)).transpose()?,
            until: until.map(|t| instant("--until", t)).transpose()?,
            communities: communities
                .iter()
                .flat_map(|c| c.split(','))
                .map(|c| c.trim().trim_start_matches("r/").to_lowercase())
                .filter(|c| !c.is_empty())
                .collect(),
        };
        if let (Some(since), Some(until)) = (filter.since, filter.until)
            && since >= until
        {
            bail!("--since must be before --until");
        }
        Ok(filter)
    }

    /// Whether any bound is set.
    pub fn is_active(&self) -> bool {
        self.since.is_some() || self.until.is_some() || !self.communities.is_empty()
    }

    /// Whether `post` passes.
    pub fn keeps(&self, post: &crate::record::IncomingPost) -> bool {
        self.since.is_none_or(|s| post.created_at >= s)
            && self.until.is_none_or(|u| post.created_at < u)
            && (self.communities.is_empty()
                || post
                    .community
                    .as_deref()
                    .is_some_and(|c| self.communities.iter().any(|k| k.eq_ignore_ascii_case(c))))
    }
}

/// Reports a batch's rejections as `file:line: reason` on `errors`.
fn report(errors: &mut dyn std::io::Write, path: &Path, outcome: &Outcome, first_line: usize, summary: &mut Summary) {
    for r in &outcome.rejected {
        let _ = writeln!(errors, "{}:{}: {}", path.display(), first_line + r.line - 1, r.error);
    }
    let unlisted = outcome.rejected_total.saturating_sub(outcome.rejected.len() as u64);
    if unlisted > 0 {
        let _ = writeln!(
            errors,
            "{}: {unlisted} more lines rejected near line {first_line}",
            path.display()
        );
    }
    summary.rejected += outcome.rejected_total;
}

/// What became of one batch.
#[derive(Debug, Default)]
struct Outcome {
    accepted: u64,
    skipped: u64,
    /// The first rejections, with reasons.
    rejected: Vec<Rejection>,
    /// Rejections in all, listed or not.
    rejected_total: u64,
}

/// Sends one batch of lines to a server (`client`, its base URL and
/// token); returns what was accepted, skipped by the filter, and the
/// rejections, numbered from 1 within the batch.
async fn send(
    lines: &[Vec<u8>],
    format: Format,
    filter: &Filter,
    limits: &Limits,
    (client, base, token): (&reqwest::Client, &str, Option<&str>),
) -> anyhow::Result<Outcome> {
    if filter.is_active() {
        // Filtered here: what passes goes as canonical records.
        let (parsed, skipped) = parse_batch(lines, format, filter, limits);
        let canonical: Vec<Vec<u8>> = parsed.posts.iter().map(|p| p.to_canonical_json()).collect();
        let (accepted, mut rejected, total) = post_split(client, base, token, Format::Canonical, &canonical).await?;
        rejected.extend(parsed.rejected);
        return Ok(Outcome {
            accepted,
            skipped,
            rejected,
            rejected_total: total + parsed.rejected_total as u64,
        });
    }
    let (accepted, rejected, rejected_total) = post_split(client, base, token, format, lines).await?;
    Ok(Outcome {
        accepted,
        skipped: 0,
        rejected,
        rejected_total,
    })
}

/// What the server made of some lines: accepted, the rejections listed
/// (numbered from 1 within the lines), and the rejections in all.
type Sent = (u64, Vec<Rejection>, u64);

/// `POST /v1/posts` of `lines` as NDJSON; a batch the server finds too large
/// (413) is sent again in halves, down to one line, which is then rejected.
fn post_split<'a>(
    client: &'a reqwest::Client,
    base: &'a str,
    token: Option<&'a str>,
    format: Format,
    lines: &'a [Vec<u8>],
) -> std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<Sent>> + Send + 'a>> {
    Box::pin(async move {
        if lines.iter().all(|l| l.trim_ascii().is_empty()) {
            return Ok((0, Vec::new(), 0));
        }
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for line in lines {
            body.extend_from_slice(line);
            if line.last() != Some(&b'\n') {
                body.push(b'\n');
            }
        }
        if let Some(sent) = post_lines(client, base, token, format, body).await? {
            return Ok(sent);
        }
        if lines.len() == 1 {
            let error = "larger than the server's body limit (413)".to_string();
            return Ok((
                0,
                vec![Rejection {
                    line: 1,
                    error,
                    malformed: false,
                }],
                1,
            ));
        }
        let mid = lines.len() / 2;
        let (a, mut a_rejected, a_total) = post_split(client, base, token, format, &lines[..mid]).await?;
        let (b, b_rejected, b_total) = post_split(client, base, token, format, &lines[mid..]).await?;
        a_rejected.extend(b_rejected.into_iter().map(|r| Rejection {
            line: r.line + mid,
            ..r
        }));
        Ok((a + b, a_rejected, a_total + b_total))
    })
}

/// `POST /v1/posts` of `body`, resent while the server is saturated;
/// `None` when the server finds it too large (413).
async fn post_lines(
    client: &reqwest::Client,
    base: &str,
    token: Option<&str>,
    format: Format,
    body: Vec<u8>,
) -> anyhow::Result<Option<Sent>> {
    let url = format!("{base}/v1/posts");
    let mut delay = std::time::Duration::from_millis(200);
    loop {
        let answer = crate::wire::client::post_posts(client, &url, token, format, body.clone())
            .await
            .with_context(|| format!("POST {url}"))?;
        let (status, text) = (answer.status, answer.text);
        if status == 429 || status == 503 {
            // The server is saturated: wait as it asks, then resend.
            tokio::time::sleep(answer.retry_after.unwrap_or(delay)).await;
            delay = (delay * 2).min(std::time::Duration::from_secs(5));
            continue;
        }
        if status == 413 {
            return Ok(None);
        }
        if !((200..300).contains(&status) || status == 400 || status == 422) {
            bail!("{url} answered {status}: {text}");
        }
        let answer: crate::wire::IngestResponse =
            serde_json::from_str(&text).with_context(|| format!("{url} answered {status}: {text}"))?;
        // Servers of earlier versions list every rejection and no total.
        let total = answer.rejected_total.unwrap_or(0).max(answer.rejected.len()) as u64;
        return Ok(Some((answer.accepted as u64, answer.rejected, total)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Topic;
    use crate::log::fjall::FjallLog;
    use crate::record::RawPost;

    #[tokio::test]
    async fn a_backfill_appends_many_batches_in_file_order_and_numbers_every_rejection() {
        let dir = tempfile::tempdir().unwrap();
        let limits = Limits { max_post_bytes: 1000 };
        // 25,000 lines: three batches of the log, parsed on every core.
        let mut text = String::new();
        for line in 1..=25_000 {
            match line {
                3 => text.push_str("{broken\n"),
                12_345 => text.push_str("{\"platform\":\"reddit\",\"id\":\"no-body\",\"created_at\":1}\n"),
                20_001 => text.push_str(&format!("\"{}\"\n", "x".repeat(record_bound(&limits) + 10))),
                _ => text.push_str(&format!(
                    "{{\"id\":\"c{line}\",\"subreddit\":\"s\",\"body\":\"line {line}\",\"created_utc\":1546344000}}\n"
                )),
            }
        }
        let path = dir.path().join("dump.ndjson");
        std::fs::write(&path, text).unwrap();
        let log = FjallLog::open(&dir.path().join("log"), 4).unwrap();
        let mut errors = Vec::new();
        let summary = ingest_files(
            std::slice::from_ref(&path),
            Format::Auto,
            &Filter::default(),
            &Destination::Log(&log),
            &limits,
            &mut errors,
        )
        .await
        .unwrap();
        assert_eq!(
            summary,
            Summary {
                accepted: 24_997,
                rejected: 3,
                skipped: 0
            }
        );
        let errors = String::from_utf8(errors).unwrap();
        let lines: Vec<&str> = errors.lines().collect();
        let at = |n: usize| format!("{}:{n}: ", path.display());
        assert_eq!(lines.len(), 3, "{errors}");
        assert!(
            lines[0].starts_with(&at(3)) && lines[0].contains("malformed JSON"),
            "{errors}"
        );
        assert!(
            lines[1].starts_with(&at(12_345)) && lines[1].contains("body"),
            "{errors}"
        );
        assert!(
            lines[2].starts_with(&at(20_001)) && lines[2].contains("more than the bound"),
            "{errors}"
        );
        // Every post once, each ingested after the lines above it.
        let mut times = Vec::new();
        for (p, end) in log.end_offsets(Topic::Raw).unwrap().into_iter().enumerate() {
            for entry in log.read(Topic::Raw, p as u32, 0, end as usize, usize::MAX).unwrap() {
                let raw = RawPost::from_log_bytes(&entry.value).unwrap();
                let line: usize = raw.incoming.id.trim_start_matches("t1_c").parse().unwrap();
                times.push((line, raw.ingested_at));
            }
        }
        times.sort();
        assert_eq!(times.len(), 24_997);
        assert!(
            times.windows(2).all(|w| w[0].1 < w[1].1),
            "ingest times follow the file"
        );
    }
}
