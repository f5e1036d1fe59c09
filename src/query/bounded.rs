//! SQL functions whose result can be far larger than their arguments
//! (`repeat('x', 2147483647)` is 2 GiB from 24 bytes of SQL), wrapped so
//! that a call whose result could pass `max_value_bytes` fails with a clear
//! error before anything is allocated. DataFusion's memory pool tracks the
//! buffers of sorts, joins and aggregates, not what a scalar function
//! builds, so these bounds are checked on the arguments, row by row.

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};

/// How a function's result grows with its arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Growth {
    /// `repeat(s, n)`: `len(s) × n` bytes.
    Repeat,
    /// `lpad(s, n [, fill])`, `rpad`: up to `n` characters of 4 bytes.
    Pad,
    /// `replace(s, from, to)`: every `from` (or every gap, when empty) as `to`.
    Replace,
    /// `regexp_replace(s, pattern, replacement [, flags])`: every match
    /// (empty ones too) as the replacement, whose `$0` may copy the match.
    RegexpReplace,
    /// `array_repeat(v, n)`: `n` elements.
    ArrayRepeat,
    /// `range([start,] stop [, step])`, `generate_series`: a list of
    /// `(stop - start) / step` numbers, dates or timestamps.
    Series,
}

/// The functions wrapped, by name.
const WRAPPED: [(&str, Growth); 8] = [
    ("repeat", Growth::Repeat),
    ("lpad", Growth::Pad),
    ("rpad", Growth::Pad),
    ("replace", Growth::Replace),
    ("regexp_replace", Growth::RegexpReplace),
    ("array_repeat", Growth::ArrayRepeat),
    ("range", Growth::Series),
    ("generate_series", Growth::Series),
];

/// Replaces the built-in amplifying functions of `ctx` with bounded ones.
pub fn register(ctx: &SessionContext, max_value_bytes: usize) {
    for (name, growth) in WRAPPED {
        super::wrapped::wrap(
            ctx,
            name,
            Bounded {
                growth,
                max: max_value_bytes as u64,
            },
        );
    }
}

/// A call refused because its result could pass `max_value_bytes`: the
/// client's error.
#[derive(Debug)]
pub struct ValueTooLarge(String);

impl std::fmt::Display for ValueTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ValueTooLarge {}

/// Whether `e` is a refused call (see [`ValueTooLarge`]).
pub fn is_value_too_large(e: &DataFusionError) -> bool {
    matches!(e.find_root(), DataFusionError::External(inner) if inner.is::<ValueTooLarge>())
}

/// A built-in function with a bound on the size of its result.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Bounded {
    growth: Growth,
    max: u64,
}

/// Per row: the byte length of a string argument (0 for null).
fn lengths(arg: &ColumnarValue, rows: usize) -> Vec<u64> {
    match arg {
        ColumnarValue::Scalar(s) => vec![scalar_len(s); rows.max(1)],
        ColumnarValue::Array(a) => {
            let len = |i: usize| -> u64 {
                if a.is_null(i) {
                    return 0;
                }
                match a.data_type() {
                    DataType::Utf8 => a.as_string::<i32>().value(i).len() as u64,
                    DataType::LargeUtf8 => a.as_string::<i64>().value(i).len() as u64,
                    DataType::Utf8View => a.as_string_view().value(i).len() as u64,
                    // Not a string: the array's memory per row.
                    _ => (a.get_array_memory_size() / a.len().max(1)) as u64,
                }
            };
            (0..a.len()).map(len).collect()
        }
    }
}

fn scalar_len(s: &ScalarValue) -> u64 {
    match s {
        ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
            v.as_ref().map_or(0, |v| v.len() as u64)
        }
        other => other.size() as u64,
    }
}

/// Per row: an integer argument (0 for null or negative).
fn counts(arg: &ColumnarValue, rows: usize) -> Vec<u64> {
    let of = |v: Option<i64>| v.map_or(0, |v| v.max(0) as u64);
    match arg {
        ColumnarValue::Scalar(s) => {
            let v = match s.cast_to(&DataType::Int64) {
                Ok(ScalarValue::Int64(v)) => v,
                _ => None,
            };
            vec![of(v); rows.max(1)]
        }
        ColumnarValue::Array(a) => match arrow::compute::cast(a, &DataType::Int64) {
            Ok(ints) => {
                let ints = ints.as_primitive::<arrow::datatypes::Int64Type>();
                (0..ints.len())
                    .map(|i| of((!ints.is_null(i)).then(|| ints.value(i))))
                    .collect()
            }
            Err(_) => vec![u64::MAX; a.len()],
        },
    }
}

/// The value of `arg` at `row`.
fn scalar_at(arg: &ColumnarValue, row: usize) -> Option<ScalarValue> {
    match arg {
        ColumnarValue::Scalar(s) => Some(s.clone()),
        ColumnarValue::Array(a) => ScalarValue::try_from_array(a, row).ok(),
    }
}

const DAY_NANOS: i128 = 86_400_000_000_000;

/// A bound of a series as a number: integers as they are, dates and
/// timestamps in nanoseconds (None for null or another type).
fn series_point(s: &ScalarValue) -> Option<i128> {
    use ScalarValue as S;
    Some(match s {
        S::Int8(v) => (*v)? as i128,
        S::Int16(v) => (*v)? as i128,
        S::Int32(v) => (*v)? as i128,
        S::Int64(v) => (*v)? as i128,
        S::UInt8(v) => (*v)? as i128,
        S::UInt16(v) => (*v)? as i128,
        S::UInt32(v) => (*v)? as i128,
        S::UInt64(v) => (*v)? as i128,
        S::Date32(v) => (*v)? as i128 * DAY_NANOS,
        S::Date64(v) => (*v)? as i128 * 1_000_000,
        S::TimestampSecond(v, _) => (*v)? as i128 * 1_000_000_000,
        S::TimestampMillisecond(v, _) => (*v)? as i128 * 1_000_000,
        S::TimestampMicrosecond(v, _) => (*v)? as i128 * 1_000,
        S::TimestampNanosecond(v, _) => (*v)? as i128,
        _ => return None,
    })
}

/// A step of a series in the unit of [`series_point`], at its shortest
/// (a month as 28 days).
fn series_step(s: &ScalarValue) -> Option<i128> {
    use ScalarValue as S;
    match s {
        S::IntervalYearMonth(v) => Some((*v)? as i128 * 28 * DAY_NANOS),
        S::IntervalDayTime(v) => {
            let v = (*v)?;
            Some(v.days as i128 * DAY_NANOS + v.milliseconds as i128 * 1_000_000)
        }
        S::IntervalMonthDayNano(v) => {
            let v = (*v)?;
            Some(v.months as i128 * 28 * DAY_NANOS + v.days as i128 * DAY_NANOS + v.nanoseconds as i128)
        }
        other => series_point(other),
    }
}

/// The most elements a series call makes in one row.
fn series_elements(args: &[ColumnarValue], rows: usize) -> u64 {
    let rows = if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        1
    } else {
        rows.max(1)
    };
    let mut most = 0u64;
    for row in 0..rows {
        let values: Vec<Option<ScalarValue>> = args.iter().map(|a| scalar_at(a, row)).collect();
        let point = |i: usize| values.get(i).cloned().flatten().as_ref().and_then(series_point);
        let (start, stop, step) = match values.len() {
            1 => (Some(0), point(0), Some(1)),
            2 => (point(0), point(1), Some(1)),
            _ => (
                point(0),
                point(1),
                values.get(2).cloned().flatten().as_ref().and_then(series_step),
            ),
        };
        let (Some(start), Some(stop), Some(step)) = (start, stop, step) else {
            continue;
        };
        // A step of 0 or away from `stop` makes no elements (or an error).
        if step == 0 || (stop - start).signum() * step.signum() < 0 {
            continue;
        }
        let n = (stop - start).unsigned_abs() / step.unsigned_abs() + 1;
        most = most.max(u64::try_from(n).unwrap_or(u64::MAX));
    }
    most
}

impl Bounded {
    /// The largest result a row could have, bytes.
    fn largest_result(&self, args: &[ColumnarValue], rows: usize) -> u64 {
        let arg = |i: usize| args.get(i);
        let zip_max = |a: Vec<u64>, b: Vec<u64>, f: &dyn Fn(u64, u64) -> u64| {
            a.iter()
                .zip(b.iter().cycle())
                .map(|(x, y)| f(*x, *y))
                .max()
                .unwrap_or(0)
        };
        match (self.growth, arg(0), arg(1), arg(2)) {
            (Growth::Repeat, Some(s), Some(n), _) => {
                zip_max(lengths(s, rows), counts(n, rows), &|len, n| len.saturating_mul(n))
            }
            (Growth::Pad, Some(_), Some(n), _) => counts(n, rows).into_iter().max().unwrap_or(0).saturating_mul(4),
            (Growth::ArrayRepeat, Some(v), Some(n), _) => zip_max(lengths(v, rows), counts(n, rows), &|len, n| {
                len.max(8).saturating_mul(n)
            }),
            (Growth::Series, ..) => series_elements(args, rows).saturating_mul(8),
            (Growth::Replace, Some(s), Some(from), Some(to)) => {
                let s = lengths(s, rows);
                let from = lengths(from, rows);
                let to = lengths(to, rows);
                s.iter()
                    .zip(from.iter().cycle())
                    .zip(to.iter().cycle())
                    .map(|((s, from), to)| (s / (*from).max(1) + 1).saturating_mul(*to).saturating_add(*s))
                    .max()
                    .unwrap_or(0)
            }
            (Growth::RegexpReplace, Some(s), Some(_), Some(replacement)) => {
                zip_max(lengths(s, rows), lengths(replacement, rows), &|s, r| {
                    (s + 1).saturating_mul(r + 1).saturating_mul(2)
                })
            }
            _ => 0,
        }
    }
}

impl super::wrapped::Call for Bounded {
    fn call(&self, inner: &ScalarUDF, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let largest = self.largest_result(&args.args, args.number_rows);
        if largest > self.max {
            return Err(DataFusionError::External(Box::new(ValueTooLarge(format!(
                "{}: a result could be {largest} bytes, more than the {} a value may hold ([query] max_value_bytes)",
                inner.name(),
                self.max
            )))));
        }
        inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first value of `sql`, or the error.
    async fn run(sql: &str) -> std::result::Result<String, DataFusionError> {
        let ctx = SessionContext::new();
        register(&ctx, 16 << 20);
        let batches = ctx.sql(sql).await?.collect().await?;
        Ok(arrow::util::display::array_value_to_string(batches[0].column(0), 0).unwrap())
    }

    #[tokio::test]
    async fn series_past_max_value_bytes_are_refused_before_they_are_built() {
        for sql in [
            "SELECT cardinality(range(1, 300000000))",
            "SELECT cardinality(generate_series(300000000))",
            "SELECT cardinality(range(300000000, 0, -1))",
            "SELECT cardinality(generate_series(TIMESTAMP '1970-01-01', TIMESTAMP '2200-01-01', INTERVAL '1 second'))",
            "SELECT cardinality(range(DATE '1970-01-01', DATE '9999-01-01', INTERVAL '1 day'))",
            // One row of a column asks for too much.
            "SELECT sum(cardinality(range(0, x))) FROM (VALUES (10), (100000000)) t(x)",
        ] {
            let error = run(sql).await.expect_err(sql);
            assert!(is_value_too_large(&error), "{sql}: {error}");
            assert!(error.to_string().contains("max_value_bytes"), "{error}");
        }
        // What fits is answered as before.
        for (sql, expected) in [
            ("SELECT cardinality(range(1, 1000))", "999"),
            ("SELECT cardinality(generate_series(1, 1000000))", "1000000"),
            ("SELECT cardinality(range(10, 0))", "0"),
            ("SELECT cardinality(range(0, 1000000000, 1000))", "1000000"),
            (
                "SELECT cardinality(range(DATE '2000-01-01', DATE '2010-01-01', INTERVAL '1 day'))",
                "3653",
            ),
            (
                "SELECT cardinality(generate_series(TIMESTAMP '2024-01-01', TIMESTAMP '2024-01-02', INTERVAL '1 minute'))",
                "1441",
            ),
            (
                "SELECT sum(cardinality(range(0, x))) FROM (VALUES (10), (1000)) t(x)",
                "1010",
            ),
        ] {
            assert_eq!(run(sql).await.unwrap(), expected, "{sql}");
        }
    }
}
