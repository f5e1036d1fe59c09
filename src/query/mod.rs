//! SQL over every post (Glue + Athena): DataFusion reads the archive's
//! Parquet files and the enriched posts not archived yet, as one table.
//!
//! * `posts`: every enriched post. Archived files are read with their Hive
//!   partition columns `dt` (date) and `hour` (0–23), which prune files;
//!   the log's tail past the archive's committed offsets is added to it. Both
//!   are taken under the archive's gate, so a post is never counted twice.
//! * `posts_latest`: one row per (`platform`, `id`), the newest `ingested_at`.
//!
//! Queries are read-only: one statement, no DDL, DML, COPY or `SET`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::RwLock;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion::sql::parser::DFParser;

use crate::log::{Log, LogError, Topic};
use crate::record::batch::{
    DT, HOUR, partition_of_time, posts_schema, schema as post_schema, to_record_batch, with_partition_columns,
};
use crate::record::{PostView, column};
use crate::sinks::archive::{self, ArchiveTail};

/// Name of the table of every post.
pub const POSTS: &str = "posts";
/// Name of the view of the newest version of each post.
pub const POSTS_LATEST: &str = "posts_latest";

/// Why a query did not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not allowed (writes, several statements…): a client error.
    #[error("{0}")]
    Refused(String),
    /// The SQL does not parse or plan: a client error.
    #[error("{0}")]
    Invalid(String),
    /// Reading the data failed.
    #[error("query failed: {0}")]
    Failed(String),
}

impl From<LogError> for QueryError {
    fn from(e: LogError) -> Self {
        QueryError::Failed(e.to_string())
    }
}

impl From<archive::ArchiveError> for QueryError {
    fn from(e: archive::ArchiveError) -> Self {
        QueryError::Failed(e.to_string())
    }
}

/// A query's result: its schema and batches.
#[derive(Debug)]
pub struct QueryResult {
    /// Output columns.
    pub schema: SchemaRef,
    /// Output rows.
    pub batches: Vec<RecordBatch>,
}

/// Runs SQL over a data directory's archive and log.
pub struct QueryEngine {
    archive_root: PathBuf,
    log: Arc<dyn Log>,
    gate: Arc<RwLock<()>>,
    /// What the running archive has read and not committed, as Arrow.
    archive_tail: Arc<ArchiveTail>,
    /// Per partition: the log's tail past that, as Arrow.
    tail: std::sync::Mutex<Vec<Vec<TailBatch>>>,
    /// Shared by every query: its caches of Parquet footers and of file
    /// statistics (keyed by path, size and modification time, bounded) save
    /// reading every file's footer again on each query. Its cache of
    /// directory listings is off, since the archive adds files all the time.
    runtime: Arc<RuntimeEnv>,
}

impl QueryEngine {
    /// An engine over `archive_root` and `log`; `gate` is the archive's.
    pub fn new(
        archive_root: &Path,
        log: Arc<dyn Log>,
        gate: Arc<RwLock<()>>,
        archive_tail: Arc<ArchiveTail>,
    ) -> QueryEngine {
        let caches = CacheManagerConfig::default().with_list_files_cache_limit(0);
        // Invariant: the runtime fails to build only on settings given to
        // it; these are the defaults and a cache limit.
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .build_arc()
            .expect("the query runtime builds");
        QueryEngine {
            archive_root: archive_root.to_path_buf(),
            log,
            gate,
            archive_tail,
            tail: std::sync::Mutex::new(Vec::new()),
            runtime,
        }
    }

    /// Runs one read-only statement.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, QueryError> {
        let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Invalid(e.to_string()))?;
        match statements.len() {
            1 => {}
            0 => return Err(QueryError::Invalid("no SQL statement given".into())),
            n => {
                return Err(QueryError::Refused(format!("one statement per query, got {n}")));
            }
        }
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), self.runtime.clone());
        let plan = {
            // Files and offsets are read under the gate, and the physical
            // plan (which lists the files) is made before it is released.
            let _gate = self.gate.read().await;
            self.register_tables(&ctx).await?;
            let options = SQLOptions::new()
                .with_allow_ddl(false)
                .with_allow_dml(false)
                .with_allow_statements(false);
            let df = ctx.sql_with_options(sql, options).await.map_err(refusal)?;
            df.create_physical_plan().await.map_err(refusal)?
        };
        let schema = plan.schema();
        let batches = collect(plan as Arc<dyn ExecutionPlan>, ctx.task_ctx())
            .await
            .map_err(|e| QueryError::Failed(e.to_string()))?;
        Ok(QueryResult { schema, batches })
    }

    async fn register_tables(&self, ctx: &SessionContext) -> Result<(), QueryError> {
        let failed = |e: DataFusionError| QueryError::Failed(e.to_string());
        let dir = self.archive_root.join(archive::POSTS_DIR);
        std::fs::create_dir_all(&dir).map_err(|e| QueryError::Failed(format!("{}: {e}", dir.display())))?;
        let url = ListingTableUrl::parse(format!("{}/", dir.display())).map_err(failed)?;
        let options = ListingOptions::new(Arc::new(ParquetFormat::default()))
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![(DT.into(), DataType::Date32), (HOUR.into(), DataType::Int32)]);
        let config = ListingTableConfig::new(url)
            .with_listing_options(options)
            .with_schema(post_schema());
        // Per-file statistics are kept between queries (the runtime's
        // cache, checked against each file's size and modification time):
        // computing them from the footers of every file in range was a
        // cost that grew with the archive, paid by each query.
        let archived = ListingTable::try_new(config)
            .map_err(failed)?
            .with_cache(self.runtime.cache_manager.get_file_statistic_cache());
        let recent = MemTable::try_new(posts_schema(), vec![self.recent_batches()?]).map_err(failed)?;
        let df = ctx
            .read_table(Arc::new(archived))
            .and_then(|a| a.union(ctx.read_table(Arc::new(recent))?))
            .map_err(failed)?;
        ctx.register_table(POSTS, df.into_view()).map_err(failed)?;
        let columns = column::ALL
            .iter()
            .chain(&[DT, HOUR])
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let view = format!(
            "CREATE VIEW {POSTS_LATEST} AS SELECT {columns} FROM (SELECT *, row_number() OVER \
             (PARTITION BY platform, id ORDER BY ingested_at DESC) AS chorus_rank FROM {POSTS}) \
             WHERE chorus_rank = 1"
        );
        ctx.sql(&view).await.map_err(failed)?;
        Ok(())
    }

    /// The enriched posts past the archive's committed offsets. Batches
    /// already converted are kept between queries, so a query converts
    /// only the posts enriched since the previous one.
    fn recent_batches(&self) -> Result<Vec<RecordBatch>, QueryError> {
        let mut cache = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let partitions = self.log.partitions() as usize;
        cache.resize_with(partitions, Vec::new);
        let mut out = Vec::new();
        for (p, cached) in cache.iter_mut().enumerate() {
            // Posts the running archive holds (committed or buffered), then
            // the log past them.
            let start = match self.archive_tail.get(p as u32) {
                Some(tail) => {
                    out.extend(tail.batches);
                    tail.next
                }
                None => self.log.committed(archive::CONSUMER, Topic::Enriched, p as u32)?,
            };
            // Drop what the archive now holds; cut a batch it holds in part.
            cached.retain(|b| b.first + b.batch.num_rows() as u64 > start);
            if let Some(b) = cached.first_mut()
                && b.first < start
            {
                let skip = (start - b.first) as usize;
                b.batch = b.batch.slice(skip, b.batch.num_rows() - skip);
                b.first = start;
            }
            let mut next = cached.last().map_or(start, |b| b.first + b.batch.num_rows() as u64);
            loop {
                let entries = self.log.read(Topic::Enriched, p as u32, next, 8192)?;
                let Some(last) = entries.last() else {
                    break;
                };
                let first = entries[0].offset;
                // Offsets are dense, so row i has offset first + i.
                debug_assert_eq!(last.offset + 1 - first, entries.len() as u64);
                next = last.offset + 1;
                let posts = entries
                    .iter()
                    .map(|e| PostView::from_log_bytes(&e.value))
                    .collect::<Result<Vec<PostView<'_>>, _>>()
                    .map_err(|e| QueryError::Failed(format!("posts.enriched partition {p}: {e}")))?;
                let failed = |e: arrow::error::ArrowError| QueryError::Failed(e.to_string());
                let batch = to_record_batch(&posts).map_err(failed)?;
                let partitions = posts.iter().map(|p| partition_of_time(p.incoming.created_at));
                cached.push(TailBatch {
                    first,
                    batch: with_partition_columns(&batch, partitions).map_err(failed)?,
                });
            }
            out.extend(cached.iter().map(|b| b.batch.clone()));
        }
        Ok(out)
    }
}

/// Enriched posts of one partition converted to Arrow, from offset `first`.
struct TailBatch {
    first: u64,
    batch: RecordBatch,
}

/// Turns a planning error into the client's error.
fn refusal(e: DataFusionError) -> QueryError {
    let message = e.to_string();
    let lower = message.to_lowercase();
    let is_write = ["ddl not supported", "dml not supported", "statement not supported"]
        .iter()
        .any(|m| lower.contains(m));
    if is_write {
        QueryError::Refused(format!(
            "queries are read-only: only SELECT (and WITH, EXPLAIN, SHOW) may run ({message})"
        ))
    } else {
        QueryError::Invalid(message)
    }
}
