//! The warehouse export (Firehose → Redshift in the reference): posts and
//! batch views copied into PostgreSQL (or a database that speaks its
//! protocol), for the BI tools that read a warehouse.
//!
//! * **Posts** ([`sink`]): read from `posts.enriched` through the shared
//!   consume loop, loaded in batches with binary `COPY` into a temporary
//!   staging table and merged into `<schema>.posts` by (platform, id), the
//!   newest `ingested_at` winning as in `posts_latest`: a replay rewrites
//!   the same rows and never adds one. The log's offsets are committed only
//!   after the database committed the merge.
//! * **Views** ([`Exporter`]): each batch view's current version, as served
//!   (`SELECT * FROM views.<name>`), copied into a new table that replaces
//!   `<schema>.<name>` in the same transaction, with the version recorded
//!   in `<schema>.chorus_views`: a reader sees the old table or the new
//!   one, never half of one. A version not exported yet (the database was
//!   down) is exported when it is back.
//!
//! The password comes from `PGPASSWORD`, as for libpq's clients; a URL
//! that holds one is refused. Every identifier sent is quoted and every
//! value is a parameter or a `COPY` field. The SQL is within what both
//! PostgreSQL 15 and Redshift accept (`DELETE … USING` + `INSERT`, no
//! `ON CONFLICT`); `COPY … FROM STDIN` is PostgreSQL's: into Redshift,
//! posts load from the archive with the `COPY … FORMAT AS PARQUET` that
//! `chorus ddl redshift` prints.

pub mod external;
pub mod sink;

use std::collections::HashMap;
use std::error::Error as _;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, ArrayRef, BooleanArray, Date32Array, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::{DataType, Schema, TimeUnit};
use bytes::{BufMut, BytesMut};
use serde::{Deserialize, Serialize};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_util::sync::CancellationToken;

use crate::log::{Input, Topic};
use crate::metrics::Metrics;
use crate::query::{QueryEngine, Statement};
use crate::views::Store;

/// The warehouse's consumer name on `posts.enriched`.
pub const CONSUMER: &str = "warehouse";
/// What the posts export reads.
pub const INPUT: Input = Input {
    consumer: CONSUMER,
    topic: Topic::Enriched,
};
/// Where the password comes from, as for libpq's clients.
pub const PASSWORD_ENV: &str = "PGPASSWORD";
/// The table of posts, in the configured schema.
pub const POSTS_TABLE: &str = "posts";
/// The table that records which version of each view was exported.
pub const VIEWS_TABLE: &str = "chorus_views";
/// The name a view's next table has until it replaces the view's table.
const NEXT_SUFFIX: &str = "__chorus_next";

/// Settings of the warehouse export (`[warehouse]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WarehouseConfig {
    /// `postgres://user@host:port/database` (no password: `PGPASSWORD`).
    /// None: no export.
    pub url: Option<String>,
    /// The schema of the tables (created when missing).
    pub schema: String,
    /// Posts merged in one transaction, at most.
    pub batch_rows: usize,
    /// Longest time, ms, a post waits before its batch is merged.
    pub flush_ms: u64,
    /// Longest pause, s, between two attempts while the database is down.
    pub max_backoff_secs: u64,
    /// Longest time, s, one attempt (connect, copy and merge) may take.
    pub attempt_timeout_secs: u64,
    /// Whether the batch views are exported after each run.
    pub views: bool,
}

impl Default for WarehouseConfig {
    fn default() -> Self {
        WarehouseConfig {
            url: None,
            schema: "chorus".into(),
            batch_rows: 20_000,
            flush_ms: 1000,
            max_backoff_secs: 30,
            attempt_timeout_secs: 300,
            views: true,
        }
    }
}

impl WarehouseConfig {
    /// Whether an export is configured.
    pub fn enabled(&self) -> bool {
        self.url.is_some()
    }

    /// Refuses settings that cannot work, before anything runs: a URL
    /// with a password or TLS, an empty schema, a view whose name is one
    /// of the warehouse's own tables.
    pub fn check(&self, views: &[crate::views::View]) -> Result<(), String> {
        if self.url.is_none() {
            return Ok(());
        }
        self.connection()?;
        if self.schema.is_empty() || self.schema.len() > 63 {
            return Err("[warehouse] schema must be 1 to 63 characters".into());
        }
        if self.batch_rows == 0 {
            return Err("[warehouse] batch_rows must be at least 1".into());
        }
        for view in views {
            if view.name == POSTS_TABLE || view.name == VIEWS_TABLE || view.name.len() + NEXT_SUFFIX.len() > 63 {
                return Err(format!(
                    "[warehouse] view {:?} cannot be a table of the warehouse: the name is taken ({POSTS_TABLE}, \
                     {VIEWS_TABLE}) or longer than {} characters; rename the view or set [warehouse] views = false",
                    view.name,
                    63 - NEXT_SUFFIX.len()
                ));
            }
        }
        Ok(())
    }

    /// The connection settings: the URL's, the password from
    /// `PGPASSWORD`, `application_name = chorus`.
    pub fn connection(&self) -> Result<tokio_postgres::Config, String> {
        let Some(url) = &self.url else {
            return Err("[warehouse] url is not set".into());
        };
        let mut config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("[warehouse] url is not a PostgreSQL connection URL: {e}"))?;
        if config.get_password().is_some() {
            return Err(format!(
                "[warehouse] url holds a password: remove it and give it in {PASSWORD_ENV} (a config file and \
                 logs are no place for it)"
            ));
        }
        if config.get_ssl_mode() == tokio_postgres::config::SslMode::Require {
            return Err(
                "[warehouse] url asks for TLS (sslmode=require), which chorus does not speak to the \
                        warehouse yet: connect over a private network or a local TLS tunnel"
                    .into(),
            );
        }
        if let Ok(password) = std::env::var(PASSWORD_ENV) {
            config.password(password);
        }
        if config.get_application_name().is_none() {
            config.application_name("chorus");
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        Ok(config)
    }

    /// Where the warehouse is, for messages: host, port and database,
    /// never a password.
    pub fn describe(&self) -> String {
        match self.connection() {
            Ok(c) => {
                let host = match c.get_hosts().first() {
                    Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
                    #[cfg(unix)]
                    Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
                    None => "localhost".into(),
                };
                let port = c.get_ports().first().copied().unwrap_or(5432);
                format!("{host}:{port}/{}", c.get_dbname().unwrap_or(""))
            }
            Err(_) => "(no warehouse)".into(),
        }
    }
}

/// Warehouse failures.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    /// The database (or the way to it) failed; `retry` says whether trying
    /// again can help (a lost connection, a restart, a deadlock) or not (a
    /// refused permission, a table of another shape).
    #[error("the warehouse: {message}")]
    Database {
        /// What went wrong, with the server's detail.
        message: String,
        /// Whether another attempt can succeed.
        retry: bool,
    },
    /// Data the warehouse cannot take (a type it has no column for).
    #[error("the warehouse cannot take it: {0}")]
    Data(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] crate::log::LogError),
    /// Shutting down while the database was unreachable: nothing more was
    /// committed, the rest is exported at the next start.
    #[error("stopped while the warehouse was unreachable")]
    Stopped,
}

impl WarehouseError {
    /// Whether another attempt can succeed.
    pub fn retry(&self) -> bool {
        matches!(self, WarehouseError::Database { retry: true, .. })
    }
}

impl From<tokio_postgres::Error> for WarehouseError {
    fn from(e: tokio_postgres::Error) -> Self {
        let retry = match e.code() {
            // No SQLSTATE: the connection failed, closed or timed out.
            None => true,
            // Connection exceptions, transaction rollbacks (serialization,
            // deadlock), insufficient resources, operator intervention
            // (shutdown, restart), system errors.
            Some(state) => matches!(state.code().get(..2), Some("08" | "40" | "53" | "57" | "58")),
        };
        let message = match e.as_db_error() {
            Some(db) => {
                let mut m = format!("{} (SQLSTATE {})", db.message(), db.code().code());
                if let Some(detail) = db.detail() {
                    let _ = write!(m, ": {detail}");
                }
                m
            }
            None => match e.source() {
                Some(source) => format!("{e}: {source}"),
                None => e.to_string(),
            },
        };
        WarehouseError::Database { message, retry }
    }
}

/// A quoted SQL identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `schema.table`, both quoted.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

/// The SQL dialect of printed or sent DDL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL (15 and later).
    Postgres,
    /// Amazon Redshift (its `TEXT` is `VARCHAR(256)`: strings are
    /// `VARCHAR(65535)`, its largest).
    Redshift,
}

/// The warehouse column type of an Arrow type, and the Arrow type its
/// values are cast to before they are sent.
fn column_type(data_type: &DataType) -> Option<(Type, DataType)> {
    use DataType as D;
    Some(match data_type {
        D::Utf8 | D::LargeUtf8 | D::Utf8View => (Type::TEXT, D::Utf8),
        D::Dictionary(_, value) if matches!(**value, D::Utf8 | D::LargeUtf8 | D::Utf8View) => (Type::TEXT, D::Utf8),
        D::Boolean => (Type::BOOL, D::Boolean),
        D::Int8 | D::Int16 | D::UInt8 => (Type::INT2, D::Int16),
        D::Int32 | D::UInt16 => (Type::INT4, D::Int32),
        D::Int64 | D::UInt32 | D::UInt64 => (Type::INT8, D::Int64),
        D::Float16 | D::Float32 => (Type::FLOAT4, D::Float32),
        D::Float64 => (Type::FLOAT8, D::Float64),
        D::Timestamp(_, Some(tz)) => (Type::TIMESTAMPTZ, D::Timestamp(TimeUnit::Microsecond, Some(tz.clone()))),
        D::Timestamp(_, None) => (Type::TIMESTAMP, D::Timestamp(TimeUnit::Microsecond, None)),
        D::Date32 | D::Date64 => (Type::DATE, D::Date32),
        _ => return None,
    })
}

fn type_name(ty: &Type, dialect: Dialect) -> &'static str {
    match *ty {
        Type::TEXT if dialect == Dialect::Redshift => "VARCHAR(65535)",
        Type::TEXT => "TEXT",
        Type::BOOL => "BOOLEAN",
        Type::INT2 => "SMALLINT",
        Type::INT4 => "INTEGER",
        Type::INT8 => "BIGINT",
        Type::FLOAT4 => "REAL",
        Type::FLOAT8 => "DOUBLE PRECISION",
        Type::TIMESTAMPTZ => "TIMESTAMPTZ",
        Type::TIMESTAMP => "TIMESTAMP",
        _ => "DATE",
    }
}

/// Each column's warehouse type, or why a column has none.
fn column_types(schema: &Schema) -> Result<Vec<(Type, DataType)>, WarehouseError> {
    schema
        .fields()
        .iter()
        .map(|f| {
            column_type(f.data_type()).ok_or_else(|| {
                WarehouseError::Data(format!(
                    "column {:?} is of type {}, which has no warehouse column; cast it in the view's SQL \
                     (e.g. CAST({} AS DOUBLE) or CAST({} AS VARCHAR))",
                    f.name(),
                    f.data_type(),
                    f.name(),
                    f.name()
                ))
            })
        })
        .collect()
}

/// `CREATE TABLE [IF NOT EXISTS] table (…)` for `schema`'s columns, in
/// order, with `NOT NULL` where the column holds no null and the primary
/// key when given.
pub fn create_table(
    table: &str,
    schema: &Schema,
    dialect: Dialect,
    if_not_exists: bool,
    primary_key: &[&str],
) -> Result<String, WarehouseError> {
    let types = column_types(schema)?;
    let mut sql = format!(
        "CREATE TABLE {}{table} (\n",
        if if_not_exists { "IF NOT EXISTS " } else { "" }
    );
    for (i, (field, (ty, _))) in schema.fields().iter().zip(&types).enumerate() {
        let _ = writeln!(
            sql,
            "    {} {}{}{}",
            ident(field.name()),
            type_name(ty, dialect),
            if field.is_nullable() { "" } else { " NOT NULL" },
            if i + 1 < types.len() || !primary_key.is_empty() {
                ","
            } else {
                ""
            }
        );
    }
    if !primary_key.is_empty() {
        let keys: Vec<String> = primary_key.iter().map(|k| ident(k)).collect();
        let _ = writeln!(sql, "    PRIMARY KEY ({})", keys.join(", "));
    }
    sql.push(')');
    Ok(sql)
}

/// The staging table posts are loaded into before their merge (temporary:
/// one per connection).
pub(crate) const STAGING: &str = "\"chorus_staging\"";

/// The statements that merge the staging table (`STAGING`) into `posts` (qualified): fresh
/// statistics of the staging rows (so that posts are looked up by their
/// key, not scanned per batch), then per (platform, id) the row with the
/// newest `ingested_at` wins, whether it was in `posts` or in the staging
/// rows (which may hold a post twice). Within what PostgreSQL and Redshift
/// both accept.
pub fn merge_posts(posts: &str) -> [String; 3] {
    let columns: Vec<String> = crate::record::column::ALL.iter().map(|c| ident(c)).collect();
    let columns = columns.join(", ");
    [
        format!("ANALYZE {STAGING}"),
        format!(
            "DELETE FROM {posts} USING {STAGING} \
             WHERE {posts}.\"platform\" = {STAGING}.\"platform\" AND {posts}.\"id\" = {STAGING}.\"id\" \
             AND {posts}.\"ingested_at\" <= {STAGING}.\"ingested_at\""
        ),
        format!(
            "INSERT INTO {posts} ({columns}) SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER \
             (PARTITION BY \"platform\", \"id\" ORDER BY \"ingested_at\" DESC) AS chorus_rank FROM {STAGING}) AS s \
             WHERE s.chorus_rank = 1 AND NOT EXISTS (SELECT 1 FROM {posts} AS p \
             WHERE p.\"platform\" = s.\"platform\" AND p.\"id\" = s.\"id\")"
        ),
    ]
}

/// `CREATE TABLE IF NOT EXISTS` of `chorus_views` (which version of each
/// view the warehouse holds).
fn views_table(schema: &str, dialect: Dialect) -> String {
    let text = type_name(&Type::TEXT, dialect);
    format!(
        "CREATE TABLE IF NOT EXISTS {} (\n    \"name\" {text} NOT NULL,\n    \"version\" {text} NOT NULL,\n    \
         \"rows\" BIGINT NOT NULL,\n    \"exported_at\" TIMESTAMPTZ NOT NULL\n)",
        qualified(schema, VIEWS_TABLE)
    )
}

/// A view's table replaced in one transaction: the statements that make
/// its next table (to be filled between the two) and those that swap it
/// in.
fn swap_view(
    schema: &str,
    name: &str,
    columns: &Schema,
    dialect: Dialect,
) -> Result<(String, String, String), WarehouseError> {
    let (table, next) = (
        qualified(schema, name),
        qualified(schema, &format!("{name}{NEXT_SUFFIX}")),
    );
    let create = format!(
        "DROP TABLE IF EXISTS {next};\n{}",
        create_table(&next, columns, dialect, false, &[])?
    );
    let swap = format!(
        "DROP TABLE IF EXISTS {table};\nALTER TABLE {next} RENAME TO {}",
        ident(name)
    );
    Ok((create, next, swap))
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;
/// Days from the Unix epoch to PostgreSQL's.
const PG_EPOCH_DAYS: i32 = 10_957;

/// One value of a `COPY` row.
#[derive(Debug)]
enum Cell<'a> {
    Null,
    Text(&'a str),
    Bool(bool),
    I16(i16),
    I32(i32),
    I64(i64),
    F32(f32),
    F64(f64),
    /// A timestamp, µs since the Unix epoch.
    Micros(i64),
    /// A date, days since the Unix epoch.
    Days(i32),
}

impl ToSql for Cell<'_> {
    fn to_sql(&self, ty: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Cell::Null => Ok(IsNull::Yes),
            Cell::Text(s) => s.to_sql(ty, out),
            Cell::Bool(v) => v.to_sql(ty, out),
            Cell::I16(v) => v.to_sql(ty, out),
            Cell::I32(v) => v.to_sql(ty, out),
            Cell::I64(v) => v.to_sql(ty, out),
            Cell::F32(v) => v.to_sql(ty, out),
            Cell::F64(v) => v.to_sql(ty, out),
            Cell::Micros(us) => {
                out.put_i64(us.saturating_sub(PG_EPOCH_MICROS));
                Ok(IsNull::No)
            }
            Cell::Days(d) => {
                out.put_i32(d.saturating_sub(PG_EPOCH_DAYS));
                Ok(IsNull::No)
            }
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each column's cell kind is chosen from its type (`column_type`).
        true
    }

    to_sql_checked!();
}

/// A column cast to the type its cells are read from.
enum Column {
    Text(StringArray),
    Bool(BooleanArray),
    I16(Int16Array),
    I32(Int32Array),
    I64(Int64Array),
    F32(Float32Array),
    F64(Float64Array),
    Micros(TimestampMicrosecondArray),
    Days(Date32Array),
}

impl Column {
    fn of(name: &str, array: &ArrayRef, to: &DataType) -> Result<Column, WarehouseError> {
        let options = CastOptions {
            safe: false,
            ..CastOptions::default()
        };
        let cast = cast_with_options(array, to, &options)
            .map_err(|e| WarehouseError::Data(format!("column {name:?}: {e}")))?;
        let any = cast.as_any();
        let column = match to {
            DataType::Utf8 => any.downcast_ref::<StringArray>().cloned().map(Column::Text),
            DataType::Boolean => any.downcast_ref::<BooleanArray>().cloned().map(Column::Bool),
            DataType::Int16 => any.downcast_ref::<Int16Array>().cloned().map(Column::I16),
            DataType::Int32 => any.downcast_ref::<Int32Array>().cloned().map(Column::I32),
            DataType::Int64 => any.downcast_ref::<Int64Array>().cloned().map(Column::I64),
            DataType::Float32 => any.downcast_ref::<Float32Array>().cloned().map(Column::F32),
            DataType::Float64 => any.downcast_ref::<Float64Array>().cloned().map(Column::F64),
            DataType::Timestamp(..) => any
                .downcast_ref::<TimestampMicrosecondArray>()
                .cloned()
                .map(Column::Micros),
            DataType::Date32 => any.downcast_ref::<Date32Array>().cloned().map(Column::Days),
            _ => None,
        };
        column.ok_or_else(|| WarehouseError::Data(format!("column {name:?}: cannot be read as {to}")))
    }

    fn cell(&self, row: usize) -> Cell<'_> {
        macro_rules! at {
            ($a:expr, $cell:expr) => {
                if $a.is_null(row) {
                    Cell::Null
                } else {
                    $cell($a.value(row))
                }
            };
        }
        match self {
            Column::Text(a) => at!(a, Cell::Text),
            Column::Bool(a) => at!(a, Cell::Bool),
            Column::I16(a) => at!(a, Cell::I16),
            Column::I32(a) => at!(a, Cell::I32),
            Column::I64(a) => at!(a, Cell::I64),
            Column::F32(a) => at!(a, Cell::F32),
            Column::F64(a) => at!(a, Cell::F64),
            Column::Micros(a) => at!(a, Cell::Micros),
            Column::Days(a) => at!(a, Cell::Days),
        }
    }
}

/// Record batches on their way to the warehouse.
pub type Batches<'a> = std::pin::Pin<Box<dyn futures::Stream<Item = Result<RecordBatch, WarehouseError>> + Send + 'a>>;

/// Copies `batches` (of `schema`) into `table` with binary `COPY`, in
/// `tx`; returns the rows copied. A string holding NUL (which PostgreSQL
/// text cannot store) is an error naming its column.
async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    schema: &Schema,
    mut batches: Batches<'_>,
) -> Result<u64, WarehouseError> {
    use futures::StreamExt as _;
    let types = column_types(schema)?;
    let columns: Vec<String> = schema.fields().iter().map(|f| ident(f.name())).collect();
    let sink = tx
        .copy_in(&format!(
            "COPY {table} ({}) FROM STDIN (FORMAT binary)",
            columns.join(", ")
        ))
        .await?;
    let pg_types: Vec<Type> = types.iter().map(|(t, _)| t.clone()).collect();
    let writer = BinaryCopyInWriter::new(sink, &pg_types);
    let mut writer = std::pin::pin!(writer);
    while let Some(batch) = batches.next().await {
        let batch = batch?;
        let columns = batch
            .columns()
            .iter()
            .zip(schema.fields())
            .zip(&types)
            .map(|((array, field), (_, to))| Column::of(field.name(), array, to))
            .collect::<Result<Vec<Column>, WarehouseError>>()?;
        for (column, field) in columns.iter().zip(schema.fields()) {
            if let Column::Text(a) = column
                && a.iter().flatten().any(|s| s.contains('\0'))
            {
                return Err(WarehouseError::Data(format!(
                    "column {:?} holds a NUL character, which PostgreSQL text cannot store",
                    field.name()
                )));
            }
        }
        let mut cells: Vec<Cell<'_>> = Vec::with_capacity(columns.len());
        for row in 0..batch.num_rows() {
            cells.clear();
            cells.extend(columns.iter().map(|c| c.cell(row)));
            let refs: Vec<&(dyn ToSql + Sync)> = cells.iter().map(|c| c as &(dyn ToSql + Sync)).collect();
            writer.as_mut().write(&refs).await?;
        }
    }
    Ok(writer.finish().await?)
}

/// A connection to the warehouse, its driver running on the current
/// runtime until the client is dropped.
pub async fn connect(config: &WarehouseConfig) -> Result<tokio_postgres::Client, WarehouseError> {
    let connection = config
        .connection()
        .map_err(|message| WarehouseError::Database { message, retry: false })?;
    let (client, driver) = connection.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = driver.await {
            tracing::debug!(error = %e, "The warehouse connection ended.");
        }
    });
    Ok(client)
}

/// Creates the schema, `posts` and `chorus_views` when missing, and checks
/// that an existing `posts` has the record's columns.
pub async fn prepare(client: &tokio_postgres::Client, config: &WarehouseConfig) -> Result<(), WarehouseError> {
    let schema = &config.schema;
    let posts = qualified(schema, POSTS_TABLE);
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {};\n{};\n{}",
            ident(schema),
            create_table(
                &posts,
                &crate::record::batch::schema(),
                Dialect::Postgres,
                true,
                &["platform", "id"]
            )?,
            views_table(schema, Dialect::Postgres)
        ))
        .await?;
    let rows = client
        .query(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 \
             ORDER BY ordinal_position",
            &[schema, &POSTS_TABLE],
        )
        .await?;
    let found: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    if found != crate::record::column::ALL {
        return Err(WarehouseError::Database {
            message: format!(
                "{posts} exists with other columns ({}) than the record's ({}): drop or rename it, or set another \
                 [warehouse] schema",
                found.join(", "),
                crate::record::column::ALL.join(", ")
            ),
            retry: false,
        });
    }
    Ok(())
}

/// Pause before attempt `attempt` (from 1): 0.2 s doubling, at most `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_millis(200u64.saturating_mul(1 << attempt.min(16))).min(max)
}

/// `work` bounded by `[warehouse] attempt_timeout_secs`: past it, a
/// retryable failure saying that `what` got no answer in time.
pub(crate) async fn within<T>(
    config: &WarehouseConfig,
    what: &str,
    work: impl std::future::Future<Output = Result<T, WarehouseError>>,
) -> Result<T, WarehouseError> {
    let timeout = Duration::from_secs(config.attempt_timeout_secs.max(1));
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
        Err(WarehouseError::Database {
            message: format!("{what}: no answer within {} s", timeout.as_secs()),
            retry: true,
        })
    })
}

/// Exports the batch views' current versions to the warehouse.
pub struct Exporter {
    config: WarehouseConfig,
    engine: Arc<QueryEngine>,
    store: Store,
    views: Vec<String>,
    metrics: Arc<Metrics>,
    state: tokio::sync::Mutex<State>,
}

/// What the exporter knows of the warehouse's views.
#[derive(Debug, Default)]
struct State {
    /// The version of each view the warehouse holds, as last read or
    /// written.
    exported: HashMap<String, String>,
    /// The version of each view that could not be exported (not retried).
    failed: HashMap<String, String>,
}

/// What one view export did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewExport {
    /// The view.
    pub view: String,
    /// Its version now in the warehouse.
    pub version: String,
    /// Rows of its table.
    pub rows: u64,
}

impl Exporter {
    /// An exporter of `views` (their versions in `store`) read through
    /// `engine`.
    pub fn new(
        config: WarehouseConfig,
        engine: Arc<QueryEngine>,
        store: Store,
        views: Vec<String>,
        metrics: Arc<Metrics>,
    ) -> Exporter {
        Exporter {
            config,
            engine,
            store,
            views,
            metrics,
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// Exports every view whose current version the warehouse does not
    /// hold yet. A failure retrying can mend (the warehouse is down) stops
    /// it; one it cannot (a column type the warehouse has no column for)
    /// is reported for that view, which is not tried again before its next
    /// version.
    pub async fn export_pending(&self) -> Result<Vec<Result<ViewExport, (String, String)>>, WarehouseError> {
        let mut state = self.state.lock().await;
        let mut client = None;
        let mut done = Vec::new();
        for name in &self.views {
            let Some(current) = self
                .store
                .current(name)
                .map_err(|e| WarehouseError::Data(e.to_string()))?
            else {
                continue;
            };
            let settled = |state: &State| {
                state.exported.get(name) == Some(&current.version) || state.failed.get(name) == Some(&current.version)
            };
            if settled(&state) {
                continue;
            }
            let client = match &mut client {
                Some(client) => client,
                None => {
                    let c = connect(&self.config).await?;
                    prepare(&c, &self.config).await?;
                    let sql = format!(
                        "SELECT \"name\", \"version\" FROM {}",
                        qualified(&self.config.schema, VIEWS_TABLE)
                    );
                    for row in c.query(&sql, &[]).await? {
                        state.exported.insert(row.get(0), row.get(1));
                    }
                    client.insert(c)
                }
            };
            if settled(&state) {
                continue;
            }
            let exported = within(
                &self.config,
                &format!("the export of view {name}"),
                self.export_view(client, name, &current.version),
            )
            .await;
            match exported {
                Ok(rows) => {
                    tracing::info!(view = %name, version = %current.version, rows, "View exported to the warehouse.");
                    self.metrics.warehouse_view_exports.add(1);
                    state.exported.insert(name.clone(), current.version.clone());
                    done.push(Ok(ViewExport {
                        view: name.clone(),
                        version: current.version,
                        rows,
                    }));
                }
                Err(e) if e.retry() => return Err(e),
                Err(e) => {
                    tracing::error!(view = %name, version = %current.version, error = %e,
                        "The view cannot be exported to the warehouse; its next version will be tried.");
                    self.metrics.warehouse_failures.add(1);
                    state.failed.insert(name.clone(), current.version.clone());
                    done.push(Err((name.clone(), e.to_string())));
                    // The transaction failed; the connection is renewed.
                    if client.is_closed() {
                        break;
                    }
                }
            }
        }
        Ok(done)
    }

    /// Copies the view as served into a new table and swaps it in, with
    /// its version recorded, in one transaction.
    async fn export_view(
        &self,
        client: &mut tokio_postgres::Client,
        name: &str,
        version: &str,
    ) -> Result<u64, WarehouseError> {
        let bounds = crate::query::QueryConfig {
            max_seconds: self.config.attempt_timeout_secs.max(1),
            ..self.engine.config().clone()
        };
        let export = self
            .engine
            .export_served(
                Statement::Sql(format!("SELECT * FROM {}.{name}", crate::views::SCHEMA)),
                &bounds,
            )
            .await
            // Reading the view again can succeed (a time-out, a busy engine).
            .map_err(|e| WarehouseError::Database {
                message: format!("view {name} cannot be read: {e}"),
                retry: true,
            })?;
        let schema = self.config.schema.as_str();
        let (create, next, swap) = swap_view(schema, name, &export.schema, Dialect::Postgres)?;
        let tx = client.transaction().await?;
        tx.batch_execute(&create).await?;
        let batches = futures::stream::unfold(export.batches, |mut receiver| async move {
            let batch = receiver.recv().await?;
            Some((
                batch.map_err(|e| WarehouseError::Database {
                    message: format!("view {name} cannot be read: {e}"),
                    retry: true,
                }),
                receiver,
            ))
        });
        let rows = copy_in(&tx, &next, &export.schema, Box::pin(batches)).await?;
        tx.batch_execute(&swap).await?;
        let views = qualified(schema, VIEWS_TABLE);
        tx.execute(&format!("DELETE FROM {views} WHERE \"name\" = $1"), &[&name])
            .await?;
        tx.execute(
            &format!(
                "INSERT INTO {views} (\"name\", \"version\", \"rows\", \"exported_at\") VALUES ($1, $2, $3, now())"
            ),
            &[&name, &version, &(rows as i64)],
        )
        .await?;
        tx.commit().await?;
        Ok(rows)
    }

    /// Exports what is pending, then again whenever a view has a version
    /// not exported (checked every 2 s), retrying with backoff while the
    /// warehouse is down, until `stop`. A failure that retrying cannot
    /// mend is logged and tried again at the view's next version.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let mut attempt = 0u32;
        let max = Duration::from_secs(self.config.max_backoff_secs.max(1));
        while !stop.is_cancelled() {
            let pause = match self.export_pending().await {
                Ok(_) => {
                    attempt = 0;
                    Duration::from_secs(2)
                }
                Err(e) => {
                    attempt += 1;
                    self.metrics.warehouse_retries.add(1);
                    tracing::warn!(error = %e, attempt, "View export to the warehouse failed; will retry.");
                    backoff(attempt, max)
                }
            };
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

/// `chorus ddl redshift`: the schema, `posts` (the archive's Parquet
/// columns in the files' order: `dt` and `hour` live only in the object
/// keys, and Redshift's `COPY … FORMAT AS PARQUET` matches columns by
/// position and count), `chorus_views`, a table per view with a version
/// (`views`: name, version directory and schema), the load of the archive
/// on S3 into a staging table and its merge by (platform, id).
pub fn redshift_ddl(
    schema: &str,
    archive_url: &str,
    iam_role: &str,
    views: &[(String, String, arrow::datatypes::SchemaRef)],
) -> Result<String, WarehouseError> {
    let posts = qualified(schema, POSTS_TABLE);
    let archive = archive_url.trim_end_matches('/');
    let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "-- chorus: tables for Amazon Redshift, and the load of the archive at {archive}.\n\
         -- The columns are the archive's Parquet columns, in the files' order (COPY matches them by\n\
         -- position), dt and hour being only in the object keys.\n"
    );
    let _ = writeln!(out, "CREATE SCHEMA IF NOT EXISTS {};\n", ident(schema));
    let _ = writeln!(
        out,
        "{};\n",
        create_table(
            &posts,
            &crate::record::batch::schema(),
            Dialect::Redshift,
            true,
            &["platform", "id"]
        )?
    );
    let _ = writeln!(out, "{};\n", views_table(schema, Dialect::Redshift));
    let _ = writeln!(
        out,
        "-- Load: every post file of the archive into a staging table, then merge by (platform, id),\n\
         -- the newest ingested_at winning (a post re-sent is in several files; reloading adds nothing).\n\
         CREATE TEMP TABLE {STAGING} (LIKE {posts});\n\
         COPY {STAGING} FROM {} IAM_ROLE {} FORMAT AS PARQUET;\nBEGIN;",
        quote(&format!("{archive}/{}/", crate::sinks::archive::POSTS_DIR)),
        quote(iam_role)
    );
    for statement in merge_posts(&posts) {
        let _ = writeln!(out, "{statement};");
    }
    let _ = writeln!(out, "COMMIT;\nDROP TABLE {STAGING};");
    for (name, version, view_schema) in views {
        let (create, next, swap) = swap_view(schema, name, view_schema, Dialect::Redshift)?;
        let _ = writeln!(
            out,
            "\n-- View {name}, version {version}: a new table swapped in, in one transaction.\nBEGIN;\n\
             {create};\nCOPY {next} FROM {} IAM_ROLE {} FORMAT AS PARQUET;\n{swap};\nCOMMIT;",
            quote(&format!(
                "{archive}/{}/{name}/{version}/{}",
                crate::views::DIR,
                crate::views::DATA_FILE
            )),
            quote(iam_role),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted_and_a_quote_inside_is_doubled() {
        assert_eq!(ident("posts"), "\"posts\"");
        assert_eq!(ident("a\"; DROP TABLE x; --"), "\"a\"\"; DROP TABLE x; --\"");
        assert_eq!(qualified("chorus", "by_location"), "\"chorus\".\"by_location\"");
    }

    #[test]
    fn the_posts_table_has_the_archive_columns_in_order_with_types_both_engines_read() {
        let schema = crate::record::batch::schema();
        for dialect in [Dialect::Postgres, Dialect::Redshift] {
            let sql = create_table("t", &schema, dialect, true, &["platform", "id"]).unwrap();
            let columns: Vec<&str> = sql
                .lines()
                .skip(1)
                .filter_map(|l| l.trim().strip_prefix('"'))
                .filter_map(|l| l.split('"').next())
                .collect();
            assert_eq!(columns, crate::record::column::ALL);
            assert!(sql.contains("\"created_at\" TIMESTAMPTZ NOT NULL"), "{sql}");
            assert!(sql.contains("\"score\" BIGINT,"), "{sql}");
            assert!(sql.contains("\"vader_compound\" DOUBLE PRECISION NOT NULL"), "{sql}");
            assert!(sql.ends_with("PRIMARY KEY (\"platform\", \"id\")\n)"), "{sql}");
        }
        let redshift = create_table("t", &schema, Dialect::Redshift, true, &[]).unwrap();
        assert!(redshift.contains("\"body\" VARCHAR(65535) NOT NULL"), "{redshift}");
        assert!(
            !redshift.contains("TEXT"),
            "Redshift's TEXT is VARCHAR(256): {redshift}"
        );
    }

    #[test]
    fn a_column_type_without_a_warehouse_column_is_refused_with_its_name() {
        let schema = Schema::new(vec![arrow::datatypes::Field::new(
            "ratio",
            DataType::Decimal128(10, 2),
            true,
        )]);
        let error = create_table("t", &schema, Dialect::Postgres, false, &[])
            .unwrap_err()
            .to_string();
        assert!(error.contains("\"ratio\"") && error.contains("CAST"), "{error}");
    }

    #[test]
    fn a_password_in_the_url_is_refused_and_pgpassword_is_used() {
        let config = |url: &str| WarehouseConfig {
            url: Some(url.into()),
            ..WarehouseConfig::default()
        };
        let error = config("postgres://u:secret@127.0.0.1:5432/db")
            .connection()
            .unwrap_err();
        assert!(error.contains(PASSWORD_ENV) && !error.contains("secret"), "{error}");
        assert!(
            config("postgres://u@127.0.0.1/db?sslmode=require")
                .connection()
                .is_err()
        );
        let ok = config("postgres://u@127.0.0.1:6543/db").connection().unwrap();
        assert_eq!(ok.get_application_name(), Some("chorus"));
        assert_eq!(config("postgres://u@127.0.0.1:6543/db").describe(), "127.0.0.1:6543/db");
        assert!(config("not a url").connection().is_err());
    }

    #[test]
    fn the_redshift_ddl_loads_the_archive_and_merges_without_on_conflict() {
        let ddl = redshift_ddl("chorus", "s3://bucket/chorus/", "arn:aws:iam::1:role/r", &[]).unwrap();
        assert!(ddl.contains("COPY \"chorus_staging\" FROM 's3://bucket/chorus/posts/' IAM_ROLE 'arn:aws:iam::1:role/r' FORMAT AS PARQUET;"), "{ddl}");
        assert!(
            ddl.contains("DELETE FROM \"chorus\".\"posts\" USING \"chorus_staging\""),
            "{ddl}"
        );
        assert!(!ddl.to_uppercase().contains("ON CONFLICT"), "{ddl}");
        let quoted = redshift_ddl("chorus", "s3://b/x", "it's", &[]).unwrap();
        assert!(quoted.contains("IAM_ROLE 'it''s'"), "{quoted}");
    }

    #[test]
    fn backoff_doubles_up_to_its_bound() {
        let max = Duration::from_secs(30);
        assert_eq!(backoff(1, max), Duration::from_millis(400));
        assert_eq!(backoff(2, max), Duration::from_millis(800));
        assert_eq!(backoff(40, max), max);
    }
}
