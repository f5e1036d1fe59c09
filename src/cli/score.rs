//! `chorus score`: the sentiment of texts given as arguments, or of NDJSON
//! `{"id","body"}` lines on stdin, scored exactly as given (no cleanup), so
//! that the output can be compared with Python TextBlob and vaderSentiment.
//!
//! Lines are read in blocks by one thread; every core parses, scores and
//! formats whole blocks; this thread writes them in input order. So the
//! reading, the JSON and the writing run beside the analyzers instead of
//! between their batches, and the output is the same bytes as one thread's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{BufRead, Read, Write};
use std::sync::{Arc, Mutex, mpsc};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::enrich::{self, Scores};
use crate::record::{Sentiment, json_type};

/// Output format of `chorus score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned, human-readable table.
    #[default]
    Table,
    /// One JSON object per input, in input order; floats round-trip exactly.
    Ndjson,
}

/// Input handed to a worker at once: whole lines, about this many bytes
/// (and the rest of the line that crosses it).
const BLOCK_BYTES: u64 = 256 * 1024;

/// One output row (the columns in this order).
#[derive(Serialize)]
struct Row<'a> {
    id: &'a Value,
    polarity: f64,
    subjectivity: f64,
    vader_neg: f64,
    vader_neu: f64,
    vader_pos: f64,
    vader_compound: f64,
    sentiment: Sentiment,
}

/// What `chorus score` did: how many inputs it scored and how many lines it
/// rejected (the exit status is non-zero when any was rejected).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Inputs scored and printed.
    pub scored: usize,
    /// Malformed input lines, each reported on the error stream.
    pub rejected: usize,
}

/// Scores each of `texts` (ids are their 1-based positions).
pub fn score_texts(texts: &[String], format: Format, out: &mut dyn Write) -> anyhow::Result<Summary> {
    let mut rows = Vec::new();
    for (i, text) in texts.iter().enumerate() {
        format_row(format, &mut rows, &Value::from(i + 1), text, enrich::score(text))?;
    }
    if format == Format::Table && !texts.is_empty() {
        write_header(out)?;
    }
    out.write_all(&rows)?;
    out.flush()?;
    Ok(Summary {
        scored: texts.len(),
        rejected: 0,
    })
}

/// A block of whole input lines.
struct Block {
    seq: u64,
    bytes: Vec<u8>,
}

/// A block scored: its rows formatted, its rejected lines (1-based within
/// the block) with the reason, and how many lines it held.
struct Scored {
    seq: u64,
    rows: Vec<u8>,
    rejected: Vec<(usize, String)>,
    lines: usize,
    scored: usize,
}

/// Scores NDJSON `{"id","body"}` lines from `input`. A malformed line (or
/// one that is not UTF-8) is reported on `err` with its line number and
/// skipped; the others are still scored and printed in input order. Blank
/// lines are ignored.
pub fn score_ndjson(
    input: &mut (dyn BufRead + Send),
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Bounded: at most a few blocks read ahead and scored ahead.
    let (work_tx, work_rx) = mpsc::sync_channel::<Block>(workers * 2);
    // Dropped with the last worker, which stops the reader.
    let work_rx = Arc::new(Mutex::new(work_rx));
    let (done_tx, done_rx) = mpsc::sync_channel::<anyhow::Result<Scored>>(workers * 2);
    std::thread::scope(|s| {
        let reader = s.spawn(move || read_blocks(input, &work_tx));
        for _ in 0..workers {
            let (work_rx, done_tx) = (work_rx.clone(), done_tx.clone());
            s.spawn(move || {
                loop {
                    let block = work_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                    let Ok(block) = block else {
                        return;
                    };
                    if done_tx.send(score_block(block, format)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((work_rx, done_tx));
        // Written in input order; returning early (a write failed) drops
        // the receiver, which stops the workers, then the reader.
        let written = write_in_order(done_rx, format, out, err);
        let read = reader.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        let summary = written?;
        read?;
        Ok(summary)
    })
}

/// Sends `input` to `work` in blocks of whole lines until its end (or
/// until nobody takes them).
fn read_blocks(input: &mut (dyn BufRead + Send), work: &mpsc::SyncSender<Block>) -> std::io::Result<()> {
    for seq in 0.. {
        let mut bytes = Vec::with_capacity(BLOCK_BYTES as usize + 1024);
        let n = (&mut *input).take(BLOCK_BYTES).read_to_end(&mut bytes)?;
        if n == 0 {
            return Ok(());
        }
        if bytes.last() != Some(&b'\n') {
            input.read_until(b'\n', &mut bytes)?;
        }
        if work.send(Block { seq, bytes }).is_err() {
            return Ok(());
        }
    }
    Ok(())
}

/// Writes the scored blocks as they come, in input order.
fn write_in_order(
    done: mpsc::Receiver<anyhow::Result<Scored>>,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut waiting: BTreeMap<u64, Scored> = BTreeMap::new();
    let (mut next, mut lines_before, mut header) = (0u64, 0usize, format == Format::Table);
    for scored in done {
        let scored = scored?;
        waiting.insert(scored.seq, scored);
        while let Some(block) = waiting.remove(&next) {
            for (line, reason) in &block.rejected {
                writeln!(err, "chorus score: line {}: {reason}", lines_before + line)?;
            }
            if header && !block.rows.is_empty() {
                write_header(out)?;
                header = false;
            }
            out.write_all(&block.rows)?;
            summary.scored += block.scored;
            summary.rejected += block.rejected.len();
            lines_before += block.lines;
            next += 1;
        }
    }
    out.flush()?;
    Ok(summary)
}

/// Parses, scores and formats the lines of `block`.
fn score_block(block: Block, format: Format) -> anyhow::Result<Scored> {
    let mut scored = Scored {
        seq: block.seq,
        rows: Vec::with_capacity(block.bytes.len() / 2),
        rejected: Vec::new(),
        lines: 0,
        scored: 0,
    };
    let mut pieces = block.bytes.split(|b| *b == b'\n').peekable();
    while let Some(piece) = pieces.next() {
        if piece.is_empty() && pieces.peek().is_none() {
            // What follows the last line's newline is not a line.
            break;
        }
        scored.lines += 1;
        let Ok(line) = std::str::from_utf8(piece) else {
            scored.rejected.push((scored.lines, "not UTF-8".into()));
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        match parse_line(line) {
            Ok((id, body)) => {
                format_row(format, &mut scored.rows, &id, &body, enrich::score(&body))?;
                scored.scored += 1;
            }
            Err(reason) => scored.rejected.push((scored.lines, reason)),
        }
    }
    Ok(scored)
}

/// A line as most are: an object with an `id` and a string `body`.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: Option<Value>,
    #[serde(borrow)]
    body: Cow<'a, str>,
}

/// Reads one `{"id","body"}` line: `body` must be a string, `id` any JSON
/// value (null when absent; of keys given twice, the last).
fn parse_line(line: &str) -> Result<(Value, Cow<'_, str>), String> {
    if let Ok(Line { id, body }) = serde_json::from_str::<Line<'_>>(line) {
        return Ok((id.unwrap_or(Value::Null), body));
    }
    // Anything else (and a key given twice) the slow way, which says why.
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object with \"id\" and \"body\"".into());
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    match object.remove("body") {
        Some(Value::String(body)) => Ok((id, Cow::Owned(body))),
        Some(other) => Err(format!("\"body\" must be a string, got {}", json_type(&other))),
        None => Err("missing \"body\"".into()),
    }
}

fn write_header(out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<12} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8}  {:<9} text",
        "id", "polarity", "subject", "neg", "neu", "pos", "compound", "sentiment"
    )
}

/// Appends the row of one scored input to `out`.
fn format_row(format: Format, out: &mut Vec<u8>, id: &Value, body: &str, scores: Scores) -> anyhow::Result<()> {
    match format {
        Format::Ndjson => {
            let row = Row {
                id,
                polarity: scores.polarity,
                subjectivity: scores.subjectivity,
                vader_neg: scores.vader_neg,
                vader_neu: scores.vader_neu,
                vader_pos: scores.vader_pos,
                vader_compound: scores.vader_compound,
                sentiment: scores.sentiment,
            };
            serde_json::to_writer(&mut *out, &row)?;
            out.push(b'\n');
        }
        Format::Table => {
            let id = match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            writeln!(
                out,
                "{:<12} {:>8.4} {:>8.4} {:>6.3} {:>6.3} {:>6.3} {:>8.4}  {:<9} {}",
                id,
                scores.polarity,
                scores.subjectivity,
                scores.vader_neg,
                scores.vader_neu,
                scores.vader_pos,
                scores.vader_compound,
                scores.sentiment.as_str(),
                preview(body, 60)
            )?;
        }
    }
    Ok(())
}

/// The first `max` characters of `text` on one line.
fn preview(text: &str, max: usize) -> String {
    let flat: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if flat.chars().count() <= max {
        flat
    } else {
        let mut s: String = flat.chars().take(max - 1).collect();
        s.push('…');
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_lines_are_reported_and_skipped() {
        let input = "{\"id\":\"a\",\"body\":\"good\"}\nnot json\n\n{\"id\":2}\n{\"id\":3,\"body\":5}\n{\"id\":\"b\",\"body\":\"bad\"}\n";
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = score_ndjson(&mut input.as_bytes(), Format::Ndjson, &mut out, &mut err).unwrap();
        assert_eq!(summary, Summary { scored: 2, rejected: 3 });
        let out = String::from_utf8(out).unwrap();
        let ids: Vec<Value> = out
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["id"].clone())
            .collect();
        assert_eq!(ids, vec![Value::from("a"), Value::from("b")]);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("line 2: invalid JSON"), "{err}");
        assert!(err.contains("line 4: missing \"body\""), "{err}");
        assert!(err.contains("line 5: \"body\" must be a string, got a number"), "{err}");
    }

    #[test]
    fn many_blocks_keep_input_order_and_line_numbers_and_match_one_by_one_scoring() {
        // About 1.3 MB: five blocks and more, lines of every kind on both
        // sides of block boundaries; CRLF endings; no newline at the end.
        let bodies = [
            "I love it",
            "This is awful!!",
            "meh",
            "The book was good.",
            "ünïcödé 😀 great",
        ];
        let mut input = Vec::new();
        let mut expected_ids = Vec::new();
        let mut bad_lines = Vec::new();
        for i in 0..40_000usize {
            let line = i + 1;
            match i % 997 {
                13 => {
                    input.extend_from_slice(b"{\"id\": 1, \"body\": \"\xff\xfe\"}\n");
                    bad_lines.push((line, "not UTF-8"));
                }
                14 => {
                    input.extend_from_slice(b"{\"id\": 2}\n");
                    bad_lines.push((line, "missing \"body\""));
                }
                15 => input.extend_from_slice(b"   \r\n"),
                _ => {
                    let body = bodies[i % bodies.len()];
                    let ending = if i % 3 == 0 { "\r\n" } else { "\n" };
                    input.extend_from_slice(
                        format!(
                            "{{\"id\":\"x{i}\",\"body\":{}}}{ending}",
                            serde_json::to_string(body).unwrap()
                        )
                        .as_bytes(),
                    );
                    expected_ids.push(format!("x{i}"));
                }
            }
        }
        input.extend_from_slice(b"{\"body\": \"last, no newline\"}");
        assert!(input.len() as u64 > 5 * BLOCK_BYTES);
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let summary = score_ndjson(&mut input.as_slice(), Format::Ndjson, &mut out, &mut err).unwrap();
        assert_eq!(summary.scored, expected_ids.len() + 1);
        assert_eq!(summary.rejected, bad_lines.len());
        let rows: Vec<Value> = out
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        let ids: Vec<Value> = rows.iter().map(|r| r["id"].clone()).collect();
        let mut want: Vec<Value> = expected_ids.iter().map(|i| Value::from(i.as_str())).collect();
        want.push(Value::Null);
        assert_eq!(ids, want);
        // Each row's scores are those of its body scored alone.
        for (row, i) in rows.iter().zip(expected_ids.iter()) {
            let n: usize = i[1..].parse().unwrap();
            let alone = enrich::score(bodies[n % bodies.len()]);
            assert_eq!(row["vader_compound"].as_f64(), Some(alone.vader_compound));
            assert_eq!(row["polarity"].as_f64(), Some(alone.polarity));
        }
        let err = String::from_utf8(err).unwrap();
        let reported: Vec<String> = err.lines().map(String::from).collect();
        let want: Vec<String> = bad_lines
            .iter()
            .map(|(l, why)| format!("chorus score: line {l}: {why}"))
            .collect();
        assert_eq!(reported, want);
    }

    #[test]
    fn ndjson_floats_round_trip() {
        let mut out = Vec::new();
        score_texts(&["The book was good.".into()], Format::Ndjson, &mut out).unwrap();
        let row: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(row["id"], 1);
        assert_eq!(row["polarity"].as_f64(), Some(0.7));
        assert_eq!(row["subjectivity"].as_f64(), Some(0.6000000000000001));
        assert_eq!(row["sentiment"], "positive");
    }
}
