//! The formats of a query result, written by `chorus sql` and by
//! `POST /v1/sql`.

use std::io::Write;

use arrow::error::ArrowError;
use arrow::json::writer::{JsonArray, LineDelimited, WriterBuilder};
use serde_json::{Value, json};

use crate::query::QueryResult;

/// How `chorus sql` prints rows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// An aligned text table.
    Table,
    /// CSV with a header line.
    Csv,
    /// One JSON array of row objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// Writes `result` in `format`.
pub fn write(result: &QueryResult, format: Format, out: &mut dyn Write) -> Result<(), ArrowError> {
    let batches: Vec<&arrow::array::RecordBatch> = result.batches.iter().collect();
    match format {
        Format::Table => {
            let table = if batches.is_empty() {
                arrow::util::pretty::pretty_format_batches(&[arrow::array::RecordBatch::new_empty(
                    result.schema.clone(),
                )])?
            } else {
                arrow::util::pretty::pretty_format_batches(&result.batches)?
            };
            writeln!(out, "{table}")?;
        }
        Format::Csv => {
            let mut writer = arrow::csv::WriterBuilder::new().with_header(true).build(&mut *out);
            if batches.is_empty() {
                writer.write(&arrow::array::RecordBatch::new_empty(result.schema.clone()))?;
            }
            for batch in &batches {
                writer.write(batch)?;
            }
        }
        Format::Json => {
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, JsonArray>(&mut *out);
            writer.write_batches(&batches)?;
            writer.finish()?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                // The writer prints nothing for no rows.
                write!(out, "[]")?;
            }
            writeln!(out)?;
        }
        Format::Ndjson => {
            let mut writer = WriterBuilder::new()
                .with_explicit_nulls(true)
                .build::<_, LineDelimited>(&mut *out);
            writer.write_batches(&batches)?;
            writer.finish()?;
        }
    }
    Ok(())
}

/// The body of a `POST /v1/sql` answer:
/// `{"columns":[{"name","type"}…],"rows":[{column: value…}…]}`, with
/// `"truncated": "<why>"` when the result was cut at a bound.
pub fn to_json(result: &QueryResult) -> Result<Value, ArrowError> {
    let columns: Vec<Value> = result
        .schema
        .fields()
        .iter()
        .map(|f| json!({"name": f.name(), "type": f.data_type().to_string()}))
        .collect();
    let mut buf = Vec::new();
    write(result, Format::Ndjson, &mut buf)?;
    let rows = buf
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice::<Value>)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ArrowError::JsonError(e.to_string()))?;
    let mut answer = json!({"columns": columns, "rows": rows});
    if let Some(reason) = &result.truncated {
        answer["truncated"] = Value::String(reason.clone());
    }
    Ok(answer)
}
