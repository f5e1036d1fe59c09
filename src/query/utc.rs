//! `date_trunc` to an hour or a day of UTC timestamps by arithmetic.
//!
//! DataFusion truncates a timestamp with a time zone through chrono's
//! calendar, value by value, even when the zone is UTC, where an hour and a
//! day have fixed lengths; `created_at` and `ingested_at` are UTC, and the
//! built-in views group by `date_trunc('hour' | 'day', created_at)`. This
//! wrapper floors such values to the unit directly and leaves every other
//! call (other zones, units, types, scalars) to the built-in function, so
//! results and errors are the built-in's.

use std::sync::Arc;

use arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::context::SessionContext;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF};

/// Replaces `ctx`'s `date_trunc` with one that floors UTC timestamps to an
/// hour or a day by arithmetic.
pub fn register(ctx: &SessionContext) {
    super::wrapped::wrap(ctx, "date_trunc", UtcDateTrunc);
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct UtcDateTrunc;

/// µs timestamps the built-in function truncates without error: it goes
/// through nanoseconds, which reach only 1677–2262 (a day of margin).
const IN_RANGE: std::ops::RangeInclusive<i64> = (i64::MIN / 1000 + 86_400_000_000)..=(i64::MAX / 1000 - 86_400_000_000);

/// The unit, in µs, of a granularity this wrapper truncates itself.
fn unit_of(granularity: &ColumnarValue) -> Option<i64> {
    let text = match granularity {
        ColumnarValue::Scalar(
            ScalarValue::Utf8(Some(v)) | ScalarValue::Utf8View(Some(v)) | ScalarValue::LargeUtf8(Some(v)),
        ) => v,
        _ => return None,
    };
    match text.to_ascii_lowercase().as_str() {
        "hour" => Some(3_600_000_000),
        "day" => Some(86_400_000_000),
        _ => None,
    }
}

/// Whether `tz` is UTC, where hours and days have fixed lengths.
fn is_utc(tz: &str) -> bool {
    matches!(tz, "UTC" | "+00:00")
}

/// `array` floored to `unit`, if every value is one this wrapper may
/// truncate itself.
fn floored(array: &dyn Array, unit: i64) -> Option<TimestampMicrosecondArray> {
    let DataType::Timestamp(TimeUnit::Microsecond, Some(tz)) = array.data_type() else {
        return None;
    };
    if !is_utc(tz) {
        return None;
    }
    let values = array.as_primitive::<TimestampMicrosecondType>();
    if !values.values().iter().all(|v| IN_RANGE.contains(v)) {
        return None;
    }
    Some(
        TimestampMicrosecondArray::from_iter_values_with_nulls(
            values.values().iter().map(|v| v - v.rem_euclid(unit)),
            values.nulls().cloned(),
        )
        .with_timezone(tz.clone()),
    )
}

impl super::wrapped::Call for UtcDateTrunc {
    fn call(&self, inner: &ScalarUDF, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        if let [granularity, ColumnarValue::Array(array)] = args.args.as_slice()
            && let Some(unit) = unit_of(granularity)
            && let Some(out) = floored(array.as_ref(), unit)
        {
            return Ok(ColumnarValue::Array(Arc::new(out)));
        }
        inner.invoke_with_args(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `date_trunc(unit, v)` over `values` in a session with or without
    /// the wrapper, as text (errors too).
    async fn truncated(wrapped: bool, tz: &str, unit: &str, values: &[Option<i64>]) -> Result<Vec<String>, String> {
        let ctx = SessionContext::new();
        if wrapped {
            register(&ctx);
        }
        let array = TimestampMicrosecondArray::from(values.to_vec()).with_timezone(tz);
        let batch = arrow::array::RecordBatch::try_from_iter([("t", Arc::new(array) as arrow::array::ArrayRef)])
            .map_err(|e| e.to_string())?;
        ctx.register_batch("t", batch).map_err(|e| e.to_string())?;
        let sql = format!("SELECT date_trunc('{unit}', t) AS d, arrow_typeof(date_trunc('{unit}', t)) AS ty FROM t");
        let batches = async { ctx.sql(&sql).await?.collect().await }
            .await
            .map_err(|e| e.to_string())?;
        Ok(arrow::util::pretty::pretty_format_batches(&batches)
            .map_err(|e| e.to_string())?
            .to_string()
            .lines()
            .map(str::to_string)
            .collect())
    }

    #[tokio::test]
    async fn utc_hours_and_days_equal_the_built_in_function() {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut values: Vec<Option<i64>> = vec![
            Some(0),
            Some(-1),
            Some(1),
            Some(3_600_000_000),
            Some(3_599_999_999),
            Some(-3_600_000_000),
            Some(-86_400_000_001),
            Some(7_258_118_399_999_999),
            None,
        ];
        values.extend((0..500).map(|_| Some(rng.i64(-5_000_000_000_000_000..7_300_000_000_000_000))));
        values.extend((0..50).map(|_| {
            rng.bool()
                .then(|| rng.i64(1_600_000_000_000_000..1_800_000_000_000_000))
        }));
        for tz in ["UTC", "+00:00", "Europe/Paris"] {
            for unit in ["hour", "day", "HOUR", "minute", "month"] {
                let built_in = truncated(false, tz, unit, &values).await;
                assert!(built_in.is_ok(), "{tz} {unit}: {built_in:?}");
                assert_eq!(truncated(true, tz, unit, &values).await, built_in, "{tz} {unit}");
            }
        }
        // Out of the nanosecond range the built-in function fails, and so
        // does the wrapper, with the same message.
        let far = [Some(i64::MAX / 2), Some(0)];
        let built_in = truncated(false, "UTC", "hour", &far).await;
        assert!(built_in.is_err(), "{built_in:?}");
        assert_eq!(truncated(true, "UTC", "hour", &far).await, built_in);
        // A bad unit: the built-in function's error.
        let bad = truncated(true, "UTC", "fortnight", &values).await.unwrap_err();
        assert_eq!(Err(bad), truncated(false, "UTC", "fortnight", &values).await);
    }
}
