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
//!
//! A query is hostile until bounded ([`QueryConfig`]): its text length and
//! expression depth are checked before planning; it runs on its own runtime
//! (threads with large stacks, at a lower CPU priority than ingest), with
//! its own memory pool (sorts, joins and aggregates spill to the data
//! directory past it), a time limit, a cap on concurrent queries, amplifying
//! functions bounded (`query::bounded`), and a result cut at `max_rows` rows or
//! `max_result_bytes`, saying so.

mod bounded;
pub mod files;
mod latest;
mod utc;
mod wrapped;

use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, Semaphore};

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::MemTable;
use datafusion::datasource::TableType;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::context::{SQLOptions, SessionConfig, SessionContext};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::{ExecutionPlan, execute_stream};
use datafusion::sql::parser::{DFParser, Statement as SqlStatement};
use datafusion::sql::sqlparser::ast::{Expr as SqlExpr, Visit, Visitor};

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
/// Memory for the parsed footers of archive files (about 10 KB a file).
const FOOTER_CACHE_BYTES: usize = 256 << 20;
/// Plans of one query, at most, when compactions keep changing the files
/// under it (see `files`).
const MAX_PLANS: u32 = 5;

/// A query's partitions, at least, over an archive in a bucket: the
/// requests in flight at once.
const OBJECT_STORE_PARTITIONS: usize = 32;

/// Bytes read at once from the end of an archive file for its footer.
const FOOTER_HINT_BYTES: usize = 64 << 10;

/// The bounds of one query (`[query]` in the configuration).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// Memory of one query's sorts, joins and aggregates, bytes; past it
    /// they spill to the data directory, or the query fails.
    pub max_memory: usize,
    /// A query running longer is cancelled with an error.
    pub max_seconds: u64,
    /// Rows of an answer; a longer result is cut, and the answer says so.
    pub max_rows: usize,
    /// Bytes of an answer (Arrow memory); a larger result is cut likewise.
    pub max_result_bytes: usize,
    /// Queries running at once; one more is answered 429.
    pub max_concurrent: usize,
    /// Longest SQL text, bytes.
    pub max_sql_bytes: usize,
    /// Deepest nesting of expressions (`1+1+…` nests one level per term).
    pub max_expression_depth: usize,
    /// Largest value a function such as `repeat` or `lpad` may build, bytes.
    pub max_value_bytes: usize,
    /// Disk a query may spill to, bytes.
    pub max_spill_bytes: u64,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            max_memory: 512 << 20,
            max_seconds: 30,
            max_rows: 100_000,
            max_result_bytes: 256 << 20,
            max_concurrent: 4,
            max_sql_bytes: 64 << 10,
            max_expression_depth: 256,
            max_value_bytes: 16 << 20,
            max_spill_bytes: 4 << 30,
        }
    }
}

/// Stack of the query threads: planning and the checks walk expression
/// trees recursively, and dropping a deep tree recurses too.
const QUERY_STACK_BYTES: usize = 256 << 20;
/// Query threads run at this nice value, below ingest and the stages.
const QUERY_NICE: i32 = 10;

/// Why a query did not run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// The statement is not allowed (writes, several statements…): a client error.
    #[error("{0}")]
    Refused(String),
    /// The SQL does not parse or plan: a client error.
    #[error("{0}")]
    Invalid(String),
    /// The SQL text is longer than `max_sql_bytes`.
    #[error("the SQL text is {0} bytes, more than [query] max_sql_bytes ({1})")]
    TooLong(usize, usize),
    /// `max_concurrent` queries are running.
    #[error("{0} queries are running, the most [query] max_concurrent allows; retry later")]
    Busy(usize),
    /// The query ran past `max_seconds` and was cancelled.
    #[error("the query ran longer than [query] max_seconds ({0} s) and was cancelled")]
    Timeout(u64),
    /// The query needed more memory or spill space than it may have.
    #[error("the query needs more memory than [query] max_memory allows: {0}")]
    Memory(String),
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
    /// Why the result was cut short, if it was (`max_rows`, `max_result_bytes`).
    pub truncated: Option<String>,
}

pub use crate::wire::Snapshot;

/// A query streamed out by [`QueryEngine::export`].
pub struct Export {
    /// The result's columns.
    pub schema: SchemaRef,
    /// What it read.
    pub snapshot: Snapshot,
    /// Its batches; an error is the last item.
    pub batches: tokio::sync::mpsc::Receiver<Result<RecordBatch, QueryError>>,
}

/// Runs SQL over a data directory's archive and log, within [`QueryConfig`].
pub struct QueryEngine {
    tables: Arc<Tables>,
    config: QueryConfig,
    permits: Arc<Semaphore>,
    runtime: QueryRuntime,
}

/// What every query reads: the archive's files and the log's tail.
struct Tables {
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
    /// Each query gets its own memory pool beside these.
    runtime: Arc<RuntimeEnv>,
    /// The archive's files; each query lists them as of its snapshot.
    files: files::ArchiveFiles,
    /// The batch views served as `views.<name>`.
    views: Vec<String>,
    /// The speed layer of those that merge.
    speed: Option<Arc<crate::views::speed::Speed>>,
}

/// What [`QueryEngine::export`] runs.
pub enum Statement {
    /// One read-only SQL statement.
    Sql(String),
    /// An aggregate over `posts_latest`: an optional filter, the group
    /// expressions and the aggregate expressions.
    Aggregate(Option<Expr>, Vec<Expr>, Vec<Expr>),
}

/// The threads queries run on, apart from those that answer ingest.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        // Dropped from async code too, where a blocking shutdown panics.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

impl QueryEngine {
    /// An engine over `archive_root` and `log`; `gate` is the archive's;
    /// queries spill to `spill_dir`.
    pub fn new(
        archive_root: &Path,
        log: Arc<dyn Log>,
        gate: Arc<RwLock<()>>,
        archive_tail: Arc<ArchiveTail>,
        config: QueryConfig,
        spill_dir: &Path,
    ) -> Result<QueryEngine, QueryError> {
        // Footers of the archive's files are kept between the scans of a
        // query and between queries (DataFusion's default, 50 MB, held the
        // footers of about 5,000 files: past them, each scan read every
        // footer again).
        let caches = CacheManagerConfig::default()
            .with_list_files_cache_limit(0)
            .with_metadata_cache_limit(FOOTER_CACHE_BYTES);
        let spill = DiskManagerBuilder::default()
            .with_mode(DiskManagerMode::Directories(vec![spill_dir.to_path_buf()]))
            .with_max_temp_directory_size(config.max_spill_bytes);
        std::fs::create_dir_all(spill_dir).map_err(|e| QueryError::Failed(format!("{}: {e}", spill_dir.display())))?;
        let runtime = RuntimeEnvBuilder::new()
            .with_cache_manager(caches)
            .with_disk_manager_builder(spill)
            .build_arc()
            .map_err(|e| QueryError::Failed(format!("the query runtime: {e}")))?;
        let threads = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(std::thread::available_parallelism().map_or(2, usize::from))
            .thread_name("query")
            .thread_stack_size(QUERY_STACK_BYTES)
            .on_thread_start(|| crate::priority::lower_current_thread(QUERY_NICE))
            .enable_all()
            .build()
            .map_err(|e| QueryError::Failed(format!("cannot start the query threads: {e}")))?;
        Ok(QueryEngine {
            tables: Arc::new(Tables {
                archive_root: archive_root.to_path_buf(),
                log,
                gate,
                archive_tail,
                tail: std::sync::Mutex::new(Vec::new()),
                runtime,
                files: files::ArchiveFiles::local(archive_root),
                views: Vec::new(),
                speed: None,
            }),
            permits: Arc::new(Semaphore::new(config.max_concurrent.max(1))),
            config,
            runtime: QueryRuntime(Some(threads)),
        })
    }

    /// The bounds queries run within.
    pub fn config(&self) -> &QueryConfig {
        &self.config
    }

    /// Serves the batch views `names` as the tables `views.<name>` (those
    /// that have a version).
    pub fn with_views(mut self, names: Vec<String>, speed: Option<Arc<crate::views::speed::Speed>>) -> QueryEngine {
        if let Some(tables) = Arc::get_mut(&mut self.tables) {
            tables.views = names;
            tables.speed = speed;
        }
        self
    }

    /// Reads the archive's posts from `url` (`s3://bucket/prefix`) in
    /// `store` rather than from the local directory (which still holds the
    /// batch views).
    pub fn with_archive_objects(mut self, url: &url::Url, store: Arc<dyn object_store::ObjectStore>) -> QueryEngine {
        if let Some(tables) = Arc::get_mut(&mut self.tables) {
            tables.files = files::ArchiveFiles::objects(url, store);
        }
        self
    }

    /// Runs `sql` within `bounds` (except `max_rows` and
    /// `max_result_bytes`: the result is streamed, not held) and without
    /// taking one of the `max_concurrent` slots, for a batch run: the plan
    /// and the snapshot of `posts` it reads come back at once, the result's
    /// batches through the returned channel (an error ends it).
    pub async fn export(&self, statement: Statement, bounds: &QueryConfig) -> Result<Export, QueryError> {
        self.export_with(statement, bounds, true).await
    }

    /// [`QueryEngine::export`] of a statement that may read the served
    /// views (`views.<name>`, batch ⊕ speed): for the warehouse export, not
    /// for a batch run (which holds the speed layer paused).
    pub async fn export_served(&self, statement: Statement, bounds: &QueryConfig) -> Result<Export, QueryError> {
        self.export_with(statement, bounds, false).await
    }

    async fn export_with(&self, statement: Statement, bounds: &QueryConfig, batch: bool) -> Result<Export, QueryError> {
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(QueryError::Failed("the query threads have stopped".into()));
        };
        let seconds = bounds.max_seconds;
        let (tables, bounds, sql) = (self.tables.clone(), bounds.clone(), statement);
        let (planned_tx, planned_rx) = tokio::sync::oneshot::channel();
        let (batches_tx, batches_rx) = tokio::sync::mpsc::channel(2);
        runtime.spawn(async move {
            let seconds = bounds.max_seconds;
            let work = async {
                let (ctx, plan, snapshot) = match tables.plan(&sql, &bounds, batch).await {
                    Ok(planned) => planned,
                    Err(e) => {
                        let _ = planned_tx.send(Err(e));
                        return;
                    }
                };
                let mut stream = match execute_stream(plan.clone(), ctx.task_ctx()) {
                    Ok(stream) => stream,
                    Err(e) => {
                        let _ = planned_tx.send(Err(failure(e)));
                        return;
                    }
                };
                if planned_tx.send(Ok((plan.schema(), snapshot))).is_err() {
                    return;
                }
                while let Some(batch) = stream.next().await {
                    let stop = batch.is_err();
                    if batches_tx.send(batch.map_err(failure)).await.is_err() || stop {
                        return;
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(seconds), work).await.is_err() {
                let _ = batches_tx.send(Err(QueryError::Timeout(seconds))).await;
            }
        });
        let (schema, snapshot) = planned_rx
            .await
            .map_err(|_| QueryError::Failed(format!("the query ran longer than {seconds} s or stopped")))??;
        Ok(Export {
            schema,
            snapshot,
            batches: batches_rx,
        })
    }

    /// Runs one read-only statement within the bounds.
    pub async fn sql(&self, sql: &str) -> Result<QueryResult, QueryError> {
        if sql.len() > self.config.max_sql_bytes {
            return Err(QueryError::TooLong(sql.len(), self.config.max_sql_bytes));
        }
        let permit = self
            .permits
            .clone()
            .try_acquire_owned()
            .map_err(|_| QueryError::Busy(self.config.max_concurrent))?;
        let Some(runtime) = self.runtime.0.as_ref() else {
            return Err(QueryError::Failed("the query threads have stopped".into()));
        };
        let (tables, config, sql) = (self.tables.clone(), self.config.clone(), sql.to_string());
        let mut task = runtime.spawn(async move {
            let result = tables.run(&sql, &config).await;
            drop(permit);
            result
        });
        match tokio::time::timeout(Duration::from_secs(self.config.max_seconds), &mut task).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) if e.is_panic() => Err(QueryError::Failed(format!(
                "the query panicked: {}",
                crate::transforms::enrich::panic_message(&*e.into_panic())
            ))),
            Ok(Err(e)) => Err(QueryError::Failed(e.to_string())),
            Err(_) => {
                // Dropping the query's future drops its streams, which stop
                // the tasks DataFusion spawned for it; that happens at its
                // next yield, so wait a moment for it (and its slot).
                task.abort();
                if tokio::time::timeout(Duration::from_secs(5), task).await.is_err() {
                    tracing::warn!("A cancelled query has not stopped after 5 s; it keeps its slot until it does.");
                }
                Err(QueryError::Timeout(self.config.max_seconds))
            }
        }
    }
}

/// Fails past `max` levels of nested expressions.
struct DepthCheck {
    depth: usize,
    max: usize,
}

impl Visitor for DepthCheck {
    type Break = ();

    fn pre_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.depth += 1;
        if self.depth > self.max {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    }

    fn post_visit_expr(&mut self, _: &SqlExpr) -> ControlFlow<()> {
        self.depth -= 1;
        ControlFlow::Continue(())
    }
}

/// Whether `statement` nests expressions deeper than `max`.
fn too_deep(statement: &SqlStatement, max: usize) -> bool {
    let mut check = DepthCheck { depth: 0, max };
    match statement {
        SqlStatement::Statement(s) => s.visit(&mut check).is_break(),
        SqlStatement::Explain(explain) => too_deep(&explain.statement, max),
        // Refused when planned.
        _ => false,
    }
}

impl Tables {
    /// Checks and plans one query: its context, its physical plan and
    /// what it reads.
    async fn plan(
        &self,
        statement: &Statement,
        config: &QueryConfig,
        batch: bool,
    ) -> Result<(SessionContext, Arc<dyn ExecutionPlan>, Snapshot), QueryError> {
        if let Statement::Sql(sql) = statement {
            Tables::check(sql, config)?;
        }
        for attempt in 1..=MAX_PLANS {
            let registry = Arc::new(datafusion::execution::object_store::DefaultObjectStoreRegistry::new());
            // Fair, not greedy: with a greedy pool one partition's sort took
            // half the pool while another's merge (which cannot spill) asked for
            // more, and `by_location` over 10M posts failed; a fair pool caps
            // each spilling consumer at its share of what the others leave.
            let pool = TrackConsumersPool::new(
                FairSpillPool::new(config.max_memory),
                std::num::NonZeroUsize::new(3).expect("3 is not zero"),
            );
            let runtime = Arc::new(RuntimeEnv {
                memory_pool: Arc::new(pool),
                disk_manager: self.runtime.disk_manager.clone(),
                cache_manager: self.runtime.cache_manager.clone(),
                // The archive's files as of this query's snapshot.
                object_store_registry: registry.clone(),
            });
            // A sort keeps this much aside for merging what it spilled (10 MB
            // by default, too little for a window over millions of posts).
            let mut session =
                SessionConfig::new().with_sort_spill_reservation_bytes((config.max_memory / 16).max(10 << 20));
            // The bytes read from a file's end to get its footer in one read:
            // DataFusion's 512 KiB (sized for object stores' round trips) read
            // and zeroed 370 MB to plan a query over 721 archive files of
            // ~5 KB footers, 0.4 s of each query. A larger footer costs a
            // second read of a local file, not a wrong answer.
            session.options_mut().execution.parquet.metadata_size_hint = Some(FOOTER_HINT_BYTES);
            if !self.files.is_local() {
                // A scan reads the files of each of its partitions one after
                // the other: over an object store, one round trip at a time
                // per partition. With one partition per core, a column of
                // 3,094 small objects on s3s-fs took 51 s (CPU 1.5 s).
                session.options_mut().execution.target_partitions = session
                    .options()
                    .execution
                    .target_partitions
                    .max(OBJECT_STORE_PARTITIONS);
            }
            let ctx = SessionContext::new_with_config_rt(session, runtime);
            register_functions(&ctx, config.max_value_bytes);
            let (plan, snapshot) = {
                // Files and offsets are read under the gate, and the physical
                // plan (which lists the files) is made before it is released.
                let _gate = self.gate.read().await;
                let needs_latest = match statement {
                    Statement::Sql(sql) => sql.to_ascii_lowercase().contains(POSTS_LATEST),
                    Statement::Aggregate(..) => true,
                };
                let (snapshot, files) = self
                    .register_tables(&ctx, &registry, needs_latest, config.max_memory)
                    .await?;
                // A batch run reads posts, not the views (whose speed layer it
                // holds paused); a query that names no view does not pay for
                // merging them.
                if let Statement::Sql(sql) = statement
                    && !batch
                    && sql.to_ascii_lowercase().contains(crate::views::SCHEMA)
                {
                    self.register_views(&ctx).await?;
                }
                let df = match statement {
                    Statement::Sql(sql) => {
                        let options = SQLOptions::new()
                            .with_allow_ddl(false)
                            .with_allow_dml(false)
                            .with_allow_statements(false);
                        ctx.sql_with_options(sql, options).await.map_err(refusal)?
                    }
                    Statement::Aggregate(filter, groups, aggregates) => {
                        let mut df = ctx.table(POSTS_LATEST).await.map_err(refusal)?;
                        if let Some(filter) = filter {
                            df = df.filter(filter.clone()).map_err(refusal)?;
                        }
                        df.aggregate(groups.clone(), aggregates.clone()).map_err(refusal)?
                    }
                };
                let plan = df.create_physical_plan().await.map_err(refusal)?;
                if files.stale() {
                    // A compaction rewrote files committed after the offsets
                    // read (a serve process of its own): read them again.
                    tracing::debug!(
                        attempt,
                        "The archive changed while a query was planned; planning it again."
                    );
                    continue;
                }
                (plan, snapshot)
            };
            return Ok((ctx, plan, snapshot));
        }
        Err(QueryError::Failed(format!(
            "the archive was compacted under the query {MAX_PLANS} times in a row; try again"
        )))
    }

    /// The checks of an SQL text before it is planned.
    fn check(sql: &str, config: &QueryConfig) -> Result<(), QueryError> {
        let statements = DFParser::parse_sql(sql).map_err(|e| QueryError::Invalid(e.to_string()))?;
        match statements.len() {
            1 => {}
            0 => return Err(QueryError::Invalid("no SQL statement given".into())),
            n => {
                return Err(QueryError::Refused(format!("one statement per query, got {n}")));
            }
        }
        if statements.iter().any(|s| too_deep(s, config.max_expression_depth)) {
            return Err(QueryError::Refused(format!(
                "expressions nest deeper than [query] max_expression_depth ({}): simplify the query",
                config.max_expression_depth
            )));
        }
        Ok(())
    }

    /// One query, on the query threads.
    async fn run(&self, sql: &str, config: &QueryConfig) -> Result<QueryResult, QueryError> {
        let (ctx, plan, _) = self.plan(&Statement::Sql(sql.to_string()), config, false).await?;
        let schema = plan.schema();
        let mut stream = execute_stream(plan as Arc<dyn ExecutionPlan>, ctx.task_ctx()).map_err(failure)?;
        let (mut batches, mut rows, mut bytes, mut truncated) = (Vec::new(), 0usize, 0usize, None);
        while let Some(batch) = stream.next().await {
            let batch = batch.map_err(failure)?;
            let room = config.max_rows - rows;
            let batch = if batch.num_rows() > room {
                truncated = Some(format!(
                    "the result has more than [query] max_rows ({}) rows; the first {} are given (add LIMIT, \
                     or aggregate)",
                    config.max_rows, config.max_rows
                ));
                batch.slice(0, room)
            } else {
                batch
            };
            rows += batch.num_rows();
            bytes += batch.get_array_memory_size();
            if bytes > config.max_result_bytes {
                truncated = Some(format!(
                    "the result is larger than [query] max_result_bytes ({} bytes); the first {rows} rows are \
                     given (select fewer columns, add LIMIT, or aggregate)",
                    config.max_result_bytes
                ));
            }
            batches.push(batch);
            if truncated.is_some() {
                break;
            }
        }
        Ok(QueryResult {
            schema,
            batches,
            truncated,
        })
    }

    /// Registers `posts` and `posts_latest` in `ctx`; with `needs_latest`,
    /// `posts_latest` is made for reading (its keys are read first, within
    /// `max_memory`).
    async fn register_tables(
        &self,
        ctx: &SessionContext,
        registry: &datafusion::execution::object_store::DefaultObjectStoreRegistry,
        needs_latest: bool,
        max_memory: usize,
    ) -> Result<(Snapshot, files::ArchiveFiles), QueryError> {
        let failed = |e: DataFusionError| QueryError::Failed(e.to_string());
        if self.files.is_local() {
            let dir = self.archive_root.join(archive::POSTS_DIR);
            std::fs::create_dir_all(&dir).map_err(|e| QueryError::Failed(format!("{}: {e}", dir.display())))?;
        }
        let url = ListingTableUrl::parse(self.files.dir_url(archive::POSTS_DIR)).map_err(failed)?;
        let format = ParquetFormat::default().with_metadata_size_hint(Some(FOOTER_HINT_BYTES));
        let options = ListingOptions::new(Arc::new(format))
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
        let archived = PaddedHours(Arc::new(archived));
        // The committed offsets are read first, then the files listed (when
        // the plan is made, or `posts_latest`'s keys read below) leaving out
        // those of later rolls: see `files`.
        let (recent, snapshot) = self.recent_batches()?;
        let files = self.files.snapshot(&snapshot.archived);
        datafusion::execution::object_store::ObjectStoreRegistry::register_store(
            registry,
            files.store_url(),
            Arc::new(files.clone()),
        );
        let recent = MemTable::try_new(posts_schema(), vec![recent]).map_err(failed)?;
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
        latest::register(ctx, POSTS, &columns, needs_latest, max_memory)
            .await
            .map_err(failed)?;
        Ok((snapshot, files))
    }

    /// `views.<name>` for each view with a version: its Parquet files.
    async fn register_views(&self, ctx: &SessionContext) -> Result<(), QueryError> {
        let failed = |e: DataFusionError| QueryError::Failed(e.to_string());
        let store = crate::views::Store::new(&self.archive_root);
        let mut schema = None;
        for name in &self.views {
            let speed = self.speed.as_ref().and_then(|s| Some((s, s.view(name)?)));
            let version = match speed {
                // Read under the speed layer's lock, with which a run swaps
                // the version and drops the epochs it covers.
                Some(_) => None,
                None => match store.current(name).map_err(|e| QueryError::Failed(e.to_string()))? {
                    Some(version) => Some(version),
                    None => continue,
                },
            };
            let schema = match &schema {
                Some(schema) => schema,
                None => {
                    let catalog = ctx
                        .catalog(&ctx.state().config().options().catalog.default_catalog)
                        .ok_or_else(|| QueryError::Failed("no default catalog".into()))?;
                    let views: Arc<dyn datafusion::catalog::SchemaProvider> =
                        Arc::new(datafusion::catalog::MemorySchemaProvider::new());
                    catalog
                        .register_schema(crate::views::SCHEMA, views.clone())
                        .map_err(failed)?;
                    schema.insert(views)
                }
            };
            if let Some((speed, v)) = speed {
                let mut state = speed.pause().await;
                let current = store
                    .current(name)
                    .map_err(|e| QueryError::Failed(e.to_string()))?
                    .filter(|c| c.partial);
                let dir = current.as_ref().map(|c| store.version_dir(name, &c.version));
                let served = speed
                    .serve(
                        &mut state,
                        v,
                        current
                            .as_ref()
                            .map(|c| (c.version.as_str(), c.snapshot.until.as_slice())),
                        || crate::views::read_version(dir.as_deref().unwrap_or(Path::new("."))),
                    )
                    .map_err(|e| QueryError::Failed(format!("view {name}: {e}")))?;
                drop(state);
                let table = MemTable::try_new(served.schema(), vec![vec![served]]).map_err(failed)?;
                schema.register_table(name.clone(), Arc::new(table)).map_err(failed)?;
                continue;
            }
            // A version of partial sums (made with the speed layer on) is
            // not the view's columns: served again after the next run.
            let Some(version) = version.filter(|v| !v.partial) else {
                continue;
            };
            let dir = store.version_dir(name, &version.version);
            let url = ListingTableUrl::parse(format!("{}/", dir.display())).map_err(failed)?;
            let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension(".parquet");
            let config = ListingTableConfig::new(url)
                .with_listing_options(options)
                .infer_schema(&ctx.state())
                .await
                .map_err(failed)?;
            let table = ListingTable::try_new(config).map_err(failed)?;
            schema.register_table(name.clone(), Arc::new(table)).map_err(failed)?;
        }
        Ok(())
    }

    /// The enriched posts past the archive's committed offsets. Batches
    /// already converted are kept between queries, so a query converts
    /// only the posts enriched since the previous one.
    fn recent_batches(&self) -> Result<(Vec<RecordBatch>, Snapshot), QueryError> {
        let mut cache = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let partitions = self.log.partitions() as usize;
        cache.resize_with(partitions, Vec::new);
        let mut out = Vec::new();
        let mut snapshot = Snapshot::default();
        // Where each partition ends now, and what the archive committed,
        // each in one request: the tail is read up to those ends and no
        // further (on a broker, a read past the end waits for its answer).
        let ends = self.log.end_offsets(Topic::Enriched)?;
        let archived = self.log.committed_all(archive::CONSUMER, Topic::Enriched)?;
        for (p, cached) in cache.iter_mut().enumerate() {
            snapshot.archived.push(archived[p]);
            // Posts the running archive holds (committed or buffered), then
            // the log past them.
            let start = match self.archive_tail.get(p as u32) {
                Some(tail) => {
                    out.extend(tail.batches);
                    tail.next
                }
                None => archived[p],
            };
            // Drop what the archive now holds; cut a batch it holds in part.
            cached.retain(|b| b.next > start);
            if let Some(b) = cached.first_mut()
                && b.offsets.first().is_some_and(|first| *first < start)
            {
                let skip = b.offsets.partition_point(|o| *o < start);
                b.batch = b.batch.slice(skip, b.batch.num_rows() - skip);
                b.offsets.drain(..skip);
            }
            let mut next = cached.last().map_or(start, |b| b.next);
            while next < ends[p] {
                let entries = self
                    .log
                    .read(Topic::Enriched, p as u32, next, 8192, crate::log::READ_BYTES)?;
                let Some(last) = entries.last() else {
                    break;
                };
                // Offsets need not be dense (Kafka's transaction markers
                // take some): each row's is kept.
                let offsets: Vec<u64> = entries.iter().map(|e| e.offset).collect();
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
                    offsets,
                    next,
                    batch: with_partition_columns(&batch, partitions).map_err(failed)?,
                });
            }
            out.extend(cached.iter().map(|b| b.batch.clone()));
            snapshot.until.push(next);
        }
        Ok((out, snapshot))
    }
}

/// The archive's files, with `hour = N` filters given to the listing as
/// `hour >= N AND hour <= N`. The directories are `hour=HH`, zero-padded
/// (the layout Athena and Hive expect), but DataFusion turns equalities on
/// every partition column into a listing prefix written from the literal
/// (`dt=2019-01-02/hour=1`), which matches no directory: `WHERE dt = … AND
/// hour = 1` found nothing. The range still prunes by the parsed values.
#[derive(Debug)]
struct PaddedHours(Arc<ListingTable>);

/// `hour = N` (either side) as `hour >= N AND hour <= N`, inside ANDs.
fn hour_equality_as_range(filter: &Expr) -> Expr {
    match filter {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => match (op, left.as_ref(), right.as_ref()) {
            (Operator::And, l, r) => hour_equality_as_range(l).and(hour_equality_as_range(r)),
            (Operator::Eq, Expr::Column(c), lit @ Expr::Literal(..))
            | (Operator::Eq, lit @ Expr::Literal(..), Expr::Column(c))
                if c.name == HOUR =>
            {
                let column = Expr::Column(c.clone());
                column.clone().gt_eq(lit.clone()).and(column.lt_eq(lit.clone()))
            }
            _ => filter.clone(),
        },
        _ => filter.clone(),
    }
}

#[async_trait::async_trait]
impl TableProvider for PaddedHours {
    fn schema(&self) -> SchemaRef {
        self.0.schema()
    }

    fn table_type(&self) -> TableType {
        self.0.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> datafusion::error::Result<Vec<TableProviderFilterPushDown>> {
        self.0.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let filters: Vec<Expr> = filters.iter().map(hour_equality_as_range).collect();
        self.0.scan(state, projection, &filters, limit).await
    }
}

/// Enriched posts of one partition converted to Arrow: row i is the
/// record at `offsets[i]`; the next record is at `next` or later.
struct TailBatch {
    offsets: Vec<u64>,
    next: u64,
    batch: RecordBatch,
}

/// An execution error as the client's error: a memory bound is named.
fn failure(e: DataFusionError) -> QueryError {
    let message = e.to_string();
    if bounded::is_value_too_large(&e) {
        QueryError::Refused(message)
    } else if matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        QueryError::Memory(message)
    } else {
        QueryError::Failed(message)
    }
}

/// Turns a planning error into the client's error.
fn refusal(e: DataFusionError) -> QueryError {
    if bounded::is_value_too_large(&e) || matches!(e.find_root(), DataFusionError::ResourcesExhausted(_)) {
        return failure(e);
    }
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

/// Replaces built-in SQL functions of `ctx` with chorus's: amplifying ones
/// bounded by `max_value_bytes`, `date_trunc` fast on UTC timestamps.
pub fn register_functions(ctx: &SessionContext, max_value_bytes: usize) {
    bounded::register(ctx, max_value_bytes);
    utc::register(ctx);
}
