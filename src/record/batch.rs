//! The record's Arrow schema, defined once, and the conversion of enriched
//! posts into Arrow record batches (what the archive writes and SQL reads).

use std::sync::{Arc, LazyLock};

use arrow::array::{
    ArrayRef, Date32Array, Float64Builder, Int32Array, Int64Builder, RecordBatch, StringBuilder,
    TimestampMicrosecondBuilder,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::error::ArrowError;
use chrono::{DateTime, NaiveDate, Timelike};

use super::{PostView, column};

/// The time zone of both timestamp columns.
pub const TIME_ZONE: &str = "UTC";

/// The Arrow type of `created_at` and `ingested_at`: µs, UTC.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIME_ZONE.into()))
}

/// The Arrow schema of [`Post`](super::Post), in [`column::ALL`] order.
pub fn schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        use DataType::{Float64, Int64, Utf8};
        let f = |name: &str, data_type: DataType, nullable: bool| Field::new(name, data_type, nullable);
        Arc::new(Schema::new(vec![
            f(column::PLATFORM, Utf8, false),
            f(column::ID, Utf8, false),
            f(column::COMMUNITY, Utf8, true),
            f(column::AUTHOR, Utf8, true),
            f(column::BODY, Utf8, false),
            f(column::TEXT, Utf8, false),
            f(column::CREATED_AT, timestamp_type(), false),
            f(column::INGESTED_AT, timestamp_type(), false),
            f(column::PARENT_ID, Utf8, true),
            f(column::THREAD_ID, Utf8, true),
            f(column::URL, Utf8, true),
            f(column::SCORE, Int64, true),
            f(column::REPOSTS, Int64, true),
            f(column::AUTHOR_FOLLOWERS, Int64, true),
            f(column::LOCATION, Utf8, true),
            f(column::LANG, Utf8, true),
            f(column::POLARITY, Float64, false),
            f(column::SUBJECTIVITY, Float64, false),
            f(column::VADER_NEG, Float64, false),
            f(column::VADER_NEU, Float64, false),
            f(column::VADER_POS, Float64, false),
            f(column::VADER_COMPOUND, Float64, false),
            f(column::SENTIMENT, Utf8, false),
        ]))
    });
    SCHEMA.clone()
}

/// Name of the Hive partition column of the creation date (`posts`, archive).
pub const DT: &str = "dt";
/// Name of the Hive partition column of the creation hour, 0–23.
pub const HOUR: &str = "hour";

/// The Hive partition of a creation time (µs): its UTC date and hour.
pub fn partition_of_time(micros: i64) -> (NaiveDate, u32) {
    let t = DateTime::from_timestamp_micros(micros).unwrap_or_default();
    (t.date_naive(), t.hour())
}

/// The schema of the `posts` table: the record's columns, then `dt` (a
/// date) and `hour` (an integer), as the archive's directories give them.
pub fn posts_schema() -> SchemaRef {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let mut fields: Vec<Field> = schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(DT, DataType::Date32, false));
        fields.push(Field::new(HOUR, DataType::Int32, false));
        Arc::new(Schema::new(fields))
    });
    SCHEMA.clone()
}

/// `batch` (of [`schema`]) with each row's `dt` and `hour` added, from
/// `partitions` (one per row): a batch of [`posts_schema`].
pub fn with_partition_columns(
    batch: &RecordBatch,
    partitions: impl IntoIterator<Item = (NaiveDate, u32)>,
) -> Result<RecordBatch, ArrowError> {
    let (dts, hours): (Vec<i32>, Vec<i32>) = partitions
        .into_iter()
        .map(|(dt, hour)| ((dt - NaiveDate::default()).num_days() as i32, hour as i32))
        .unzip();
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(Date32Array::from(dts)));
    columns.push(Arc::new(Int32Array::from(hours)));
    RecordBatch::try_new(posts_schema(), columns)
}

/// Builds one record batch of posts, in the order given.
pub fn to_record_batch(posts: &[PostView<'_>]) -> Result<RecordBatch, ArrowError> {
    RecordBatch::try_new(schema(), columns(posts, &[true; 23]))
}

/// A batch of [`posts_schema`]'s columns with every field nullable, where
/// only the columns `keep` marks hold the posts' values and the others are
/// all null: for expressions that read a few columns (the speed layer),
/// without copying bodies and texts.
pub fn to_projected_batch(posts: &[PostView<'_>], keep: &[bool]) -> Result<RecordBatch, ArrowError> {
    static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
        let fields: Vec<Field> = posts_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_nullable(true))
            .collect();
        Arc::new(Schema::new(fields))
    });
    let wanted = |i: usize| keep.get(i).copied().unwrap_or(false);
    let mut columns = columns(posts, &std::array::from_fn::<bool, 23, _>(wanted));
    if wanted(23) || wanted(24) {
        let (dts, hours): (Vec<i32>, Vec<i32>) = posts
            .iter()
            .map(|p| {
                let (dt, hour) = partition_of_time(p.incoming.created_at);
                ((dt - NaiveDate::default()).num_days() as i32, hour as i32)
            })
            .unzip();
        columns.push(Arc::new(Date32Array::from(dts)));
        columns.push(Arc::new(Int32Array::from(hours)));
    } else {
        columns.push(arrow::array::new_null_array(&DataType::Date32, posts.len()));
        columns.push(arrow::array::new_null_array(&DataType::Int32, posts.len()));
    }
    RecordBatch::try_new(SCHEMA.clone(), columns)
}

/// The 23 record columns of `posts`; those not in `keep`, all null.
fn columns(posts: &[PostView<'_>], keep: &[bool; 23]) -> Vec<ArrayRef> {
    let n = posts.len();
    let strings = |get: &dyn for<'p> Fn(&'p PostView<'p>) -> Option<&'p str>| -> ArrayRef {
        let bytes = posts.iter().map(|p| get(p).map_or(0, str::len)).sum();
        let mut b = StringBuilder::with_capacity(n, bytes);
        for p in posts {
            b.append_option(get(p));
        }
        Arc::new(b.finish())
    };
    let ints = |get: &dyn Fn(&PostView<'_>) -> Option<i64>| -> ArrayRef {
        let mut b = Int64Builder::with_capacity(n);
        for p in posts {
            b.append_option(get(p));
        }
        Arc::new(b.finish())
    };
    let floats = |get: &dyn Fn(&PostView<'_>) -> f64| -> ArrayRef {
        let mut b = Float64Builder::with_capacity(n);
        for p in posts {
            b.append_value(get(p));
        }
        Arc::new(b.finish())
    };
    let times = |get: &dyn Fn(&PostView<'_>) -> i64| -> ArrayRef {
        let mut b = TimestampMicrosecondBuilder::with_capacity(n).with_timezone(TIME_ZONE);
        for p in posts {
            b.append_value(get(p));
        }
        Arc::new(b.finish())
    };
    let builders: [&dyn Fn() -> ArrayRef; 23] = [
        &|| strings(&|p| Some(&p.incoming.platform)),
        &|| strings(&|p| Some(&p.incoming.id)),
        &|| strings(&|p| p.incoming.community.as_deref()),
        &|| strings(&|p| p.incoming.author.as_deref()),
        &|| strings(&|p| Some(&p.incoming.body)),
        &|| strings(&|p| Some(&p.text)),
        &|| times(&|p| p.incoming.created_at),
        &|| times(&|p| p.ingested_at),
        &|| strings(&|p| p.incoming.parent_id.as_deref()),
        &|| strings(&|p| p.incoming.thread_id.as_deref()),
        &|| strings(&|p| p.incoming.url.as_deref()),
        &|| ints(&|p| p.incoming.score),
        &|| ints(&|p| p.incoming.reposts),
        &|| ints(&|p| p.incoming.author_followers),
        &|| strings(&|p| p.incoming.location.as_deref()),
        &|| strings(&|p| p.incoming.lang.as_deref()),
        &|| floats(&|p| p.scores.polarity),
        &|| floats(&|p| p.scores.subjectivity),
        &|| floats(&|p| p.scores.vader_neg),
        &|| floats(&|p| p.scores.vader_neu),
        &|| floats(&|p| p.scores.vader_pos),
        &|| floats(&|p| p.scores.vader_compound),
        &|| strings(&|p| Some(p.scores.sentiment.as_str())),
    ];
    let fields = schema();
    builders
        .iter()
        .zip(keep)
        .zip(fields.fields())
        .map(|((build, keep), field)| {
            if *keep {
                build()
            } else {
                arrow::array::new_null_array(field.data_type(), n)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, TimestampMicrosecondType};

    use super::*;
    use crate::record::{IncomingPost, Post, Scores, Sentiment};

    fn post(id: &str, community: Option<&str>) -> Post {
        IncomingPost {
            community: community.map(String::from),
            score: Some(3),
            lang: Some("en".into()),
            ..IncomingPost::new("reddit", id, "**Great**", 1_546_344_000_000_000)
        }
        .into_post(
            "Great".into(),
            Scores {
                polarity: 0.8,
                subjectivity: 0.75,
                vader_neg: 0.0,
                vader_neu: 0.0,
                vader_pos: 1.0,
                vader_compound: 0.6249,
                sentiment: Sentiment::Positive,
            },
            1_700_000_000_000_000,
        )
    }

    #[test]
    fn schema_has_every_column_in_contract_order() {
        let schema = schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(names, column::ALL);
    }

    #[test]
    fn batch_holds_the_values_and_nulls() {
        let posts = [post("t1_a", Some("politics")), post("t1_b", None)];
        let views: Vec<PostView<'_>> = posts.iter().map(Post::view).collect();
        let batch = to_record_batch(&views).unwrap();
        assert_eq!(batch.num_rows(), 2);
        let id = batch.column_by_name(column::ID).unwrap().as_string::<i32>();
        assert_eq!(id.value(1), "t1_b");
        let community = batch.column_by_name(column::COMMUNITY).unwrap().as_string::<i32>();
        assert_eq!(community.value(0), "politics");
        assert!(community.is_null(1));
        let created = batch.column_by_name(column::CREATED_AT).unwrap();
        assert_eq!(
            created.as_primitive::<TimestampMicrosecondType>().value(0),
            1_546_344_000_000_000
        );
        let polarity = batch.column_by_name(column::POLARITY).unwrap();
        assert_eq!(polarity.as_primitive::<Float64Type>().value(1), 0.8);
        let sentiment = batch.column_by_name(column::SENTIMENT).unwrap().as_string::<i32>();
        assert_eq!(sentiment.value(0), "positive");
    }
}
