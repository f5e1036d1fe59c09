//! `chorus score`: the sentiment of texts given as arguments, or of NDJSON
//! `{"id","body"}` lines on stdin, scored exactly as given (no cleanup), so
//! that the output can be compared with Python TextBlob and vaderSentiment.

use std::io::{BufRead, Write};

use serde::Serialize;
use serde_json::Value;

use crate::enrich::{self, Scores};
use crate::record::json_type;

/// Output format of `chorus score`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// An aligned, human-readable table.
    #[default]
    Table,
    /// One JSON object per input, in input order; floats round-trip exactly.
    Ndjson,
}

/// Inputs scored per parallel batch when reading stdin.
const BATCH: usize = 4096;

/// One output row.
#[derive(Serialize)]
struct Row<'a> {
    id: &'a Value,
    #[serde(flatten)]
    scores: Scores,
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
    let items: Vec<(Value, &str)> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| (Value::from(i + 1), t.as_str()))
        .collect();
    let mut table = TableWriter::new(format);
    write_batch(&items, &mut table, out)?;
    table.finish(out)?;
    Ok(Summary {
        scored: items.len(),
        rejected: 0,
    })
}

/// Scores NDJSON `{"id","body"}` lines from `input`. A malformed line is
/// reported on `err` with its line number and skipped; the others are still
/// scored and printed in input order. Blank lines are ignored.
pub fn score_ndjson(
    input: &mut dyn BufRead,
    format: Format,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> anyhow::Result<Summary> {
    let mut summary = Summary::default();
    let mut table = TableWriter::new(format);
    let mut lines: Vec<(Value, String)> = Vec::with_capacity(BATCH);
    let mut line = String::new();
    let mut lineno = 0usize;
    loop {
        line.clear();
        let eof = input.read_line(&mut line)? == 0;
        if !eof {
            lineno += 1;
            if !line.trim().is_empty() {
                match parse_line(&line) {
                    Ok(item) => lines.push(item),
                    Err(reason) => {
                        summary.rejected += 1;
                        writeln!(err, "chorus score: line {lineno}: {reason}")?;
                    }
                }
            }
        }
        if lines.len() >= BATCH || (eof && !lines.is_empty()) {
            let items: Vec<(Value, &str)> = lines.iter().map(|(id, body)| (id.clone(), body.as_str())).collect();
            write_batch(&items, &mut table, out)?;
            summary.scored += items.len();
            lines.clear();
        }
        if eof {
            break;
        }
    }
    table.finish(out)?;
    Ok(summary)
}

/// Reads one `{"id","body"}` line: `body` must be a string, `id` any JSON
/// value (null when absent).
fn parse_line(line: &str) -> Result<(Value, String), String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(mut object) = value else {
        return Err("expected a JSON object with \"id\" and \"body\"".into());
    };
    let id = object.remove("id").unwrap_or(Value::Null);
    match object.remove("body") {
        Some(Value::String(body)) => Ok((id, body)),
        Some(other) => Err(format!("\"body\" must be a string, got {}", json_type(&other))),
        None => Err("missing \"body\"".into()),
    }
}

/// Scores a batch on every core, then writes it in input order.
fn write_batch(items: &[(Value, &str)], table: &mut TableWriter, out: &mut dyn Write) -> anyhow::Result<()> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().div_ceil(256))
        .max(1);
    let chunk = items.len().div_ceil(workers).max(1);
    let scores: Vec<Scores> = if workers == 1 {
        items.iter().map(|(_, body)| enrich::score(body)).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = items
                .chunks(chunk)
                .map(|part| s.spawn(move || part.iter().map(|(_, body)| enrich::score(body)).collect::<Vec<_>>()))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
                .collect()
        })
    };
    for ((id, body), scores) in items.iter().zip(scores) {
        table.row(out, id, body, scores)?;
    }
    Ok(())
}

/// Writes rows as NDJSON, or as a table with a header.
struct TableWriter {
    format: Format,
    header_done: bool,
}

impl TableWriter {
    fn new(format: Format) -> Self {
        TableWriter {
            format,
            header_done: false,
        }
    }

    fn row(&mut self, out: &mut dyn Write, id: &Value, body: &str, scores: Scores) -> anyhow::Result<()> {
        match self.format {
            Format::Ndjson => {
                serde_json::to_writer(&mut *out, &Row { id, scores })?;
                out.write_all(b"\n")?;
            }
            Format::Table => {
                if !self.header_done {
                    writeln!(
                        out,
                        "{:<12} {:>8} {:>8} {:>6} {:>6} {:>6} {:>8}  {:<9} text",
                        "id", "polarity", "subject", "neg", "neu", "pos", "compound", "sentiment"
                    )?;
                    self.header_done = true;
                }
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

    fn finish(&mut self, out: &mut dyn Write) -> anyhow::Result<()> {
        out.flush()?;
        Ok(())
    }
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
