//! The batch layer (the reference's nightly Redshift SQL): named SQL views
//! over `posts_latest`, recomputed on a schedule or by `chorus batch`, each
//! run written as a new version under `archive/views/<name>/` and made
//! current by an atomic pointer swap, with the snapshot it covered (its
//! watermark). The versions are served as the SQL tables `views.<name>`
//! and by `GET /v1/views/<name>`.
//!
//! On disk, per view: `v<start µs>/data.parquet` for each version,
//! `CURRENT` (JSON: the version served, its rows and its [`crate::wire::Snapshot`]),
//! `FAILED` (JSON: the last run's error, while the last run failed), and
//! `.tmp-v…/` while a run writes. A reader reads `CURRENT`, then that
//! version's files; a version another replaced is removed once
//! `[batch] keep_replaced_secs` have passed, so a query planned just
//! before a swap still finds its files.

pub mod cron;
pub mod speed;

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::log::Log;
use crate::metrics::Metrics;
use crate::query::{QueryConfig, QueryEngine, Statement};
use crate::record::now_micros;
pub use crate::wire::{ViewRun, ViewStatus, ViewVersion};
use cron::Cron;

/// The SQL schema the views are tables of: `views.<name>`.
pub const SCHEMA: &str = "views";
/// Directory of the views, under the archive root.
pub const DIR: &str = "views";
const CURRENT: &str = "CURRENT";
const FAILED: &str = "FAILED";
/// The Parquet file of a version, in its directory.
pub const DATA_FILE: &str = "data.parquet";
const TMP_PREFIX: &str = ".tmp-";
/// Longest view name.
const MAX_NAME_LEN: usize = 63;

/// The views every installation has (the reference's `batch_layer` first).
pub const BUILT_IN: [(&str, &str); 3] = [
    (
        "by_location",
        "SELECT location, count(id) AS count_id, sum(author_followers) AS sum_followers_count, \
         sum(score) AS sum_favorite_count, sum(reposts) AS sum_retweet_count \
         FROM posts_latest GROUP BY location",
    ),
    (
        "by_community_hour",
        "SELECT platform, community, date_trunc('hour', created_at) AS hour, count(*) AS posts, \
         avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound, \
         sum(CASE WHEN sentiment = 'positive' THEN 1 ELSE 0 END) AS positive, \
         sum(CASE WHEN sentiment = 'neutral' THEN 1 ELSE 0 END) AS neutral, \
         sum(CASE WHEN sentiment = 'negative' THEN 1 ELSE 0 END) AS negative \
         FROM posts_latest GROUP BY 1, 2, 3",
    ),
    (
        "by_author_day",
        "SELECT platform, author, date_trunc('day', created_at) AS day, count(*) AS posts, \
         avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound \
         FROM posts_latest GROUP BY 1, 2, 3",
    ),
];

/// One `[[views]]` entry: a new view, or another SQL or schedule for a
/// built-in one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// The table name: `views.<name>`, `GET /v1/views/<name>`.
    pub name: String,
    /// One SELECT over `posts_latest` (or `posts`); a built-in view's own
    /// when left out.
    #[serde(default)]
    pub sql: Option<String>,
    /// When it runs: a cron expression in UTC (default `[batch] schedule`).
    #[serde(default)]
    pub schedule: Option<String>,
}

/// `[batch]`: how batch runs go.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// When views without their own schedule run (cron, UTC): nightly.
    pub schedule: String,
    /// Whether the built-in views exist.
    pub built_in_views: bool,
    /// Whether `chorus run` runs views on their schedules.
    pub scheduler: bool,
    /// Whether views whose aggregates merge are kept up to the second
    /// between runs (the speed layer).
    pub speed_layer: bool,
    /// How long a replaced version stays on disk, seconds.
    pub keep_replaced_secs: u64,
    /// Memory of one run's sorts and aggregates, bytes (past it they spill).
    pub max_memory: usize,
    /// A run longer than this fails, seconds.
    pub max_seconds: u64,
}

impl BatchConfig {
    /// The bounds of a batch run's queries: the run's memory and time, the
    /// rest as `query`.
    pub fn bounds(&self, query: &QueryConfig) -> QueryConfig {
        QueryConfig {
            max_memory: self.max_memory,
            max_seconds: self.max_seconds,
            ..query.clone()
        }
    }
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            schedule: "0 0 * * *".into(),
            built_in_views: true,
            scheduler: true,
            speed_layer: false,
            keep_replaced_secs: 600,
            max_memory: 1 << 30,
            max_seconds: 3600,
        }
    }
}

/// A view as configured: name, SQL, schedule.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// Its name.
    pub name: String,
    /// Its SQL.
    pub sql: String,
    /// When it runs.
    pub schedule: Cron,
}

/// The views of a configuration: the built-in ones (unless turned off),
/// changed or joined by `[[views]]`.
pub fn resolve(batch: &BatchConfig, configured: &[ViewConfig]) -> Result<Vec<View>, String> {
    let default_schedule: Cron = batch.schedule.parse().map_err(|e| format!("[batch] schedule: {e}"))?;
    let mut views: Vec<View> = if batch.built_in_views {
        BUILT_IN
            .iter()
            .map(|(name, sql)| View {
                name: name.to_string(),
                sql: sql.to_string(),
                schedule: default_schedule.clone(),
            })
            .collect()
    } else {
        Vec::new()
    };
    let mut seen = std::collections::HashSet::new();
    for entry in configured {
        let name = &entry.name;
        check_name(name).map_err(|e| format!("[[views]] {name:?}: {e}"))?;
        if !seen.insert(name.as_str()) {
            return Err(format!("[[views]] {name}: two entries have this name"));
        }
        let schedule = match &entry.schedule {
            Some(text) => text.parse().map_err(|e| format!("[[views]] {name}: schedule: {e}"))?,
            None => default_schedule.clone(),
        };
        if let Some(sql) = &entry.sql
            && sql.trim().is_empty()
        {
            return Err(format!("[[views]] {name}: sql is empty"));
        }
        match views.iter_mut().find(|v| &v.name == name) {
            Some(view) => {
                if let Some(sql) = &entry.sql {
                    view.sql = sql.clone();
                }
                view.schedule = schedule;
            }
            None => views.push(View {
                name: name.clone(),
                sql: entry.sql.clone().ok_or_else(|| {
                    format!("[[views]] {name}: sql is missing (only a built-in view may leave it out)")
                })?,
                schedule,
            }),
        }
    }
    Ok(views)
}

/// A view name: a lowercase SQL identifier, so `views.<name>` needs no
/// quotes and the name is a safe directory name.
fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_lowercase());
    if !first_ok || !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err("a view name is a lowercase letter, then lowercase letters, digits or _".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("a view name has at most {MAX_NAME_LEN} characters"));
    }
    Ok(())
}

/// Why a view's files could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A pointer file does not parse.
    #[error("{path}: damaged: {message}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The last failed run of a view.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    /// When it failed, µs since the epoch.
    pub at: i64,
    /// Why.
    pub error: String,
}

/// The views' files under an archive root.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// The views of the archive at `archive_root`.
    pub fn new(archive_root: &Path) -> Store {
        Store {
            root: archive_root.join(DIR),
        }
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The directory of one version.
    pub fn version_dir(&self, name: &str, version: &str) -> PathBuf {
        self.dir(name).join(version)
    }

    fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
        match fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| StoreError::Damaged {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(path)(e)),
        }
    }

    /// Writes `value` to `path` atomically: a temporary file, synced, then
    /// renamed over it, and the directory synced.
    fn write_json(path: &Path, value: &impl Serialize) -> Result<(), StoreError> {
        let tmp = path.with_extension("tmp");
        let bytes = serde_json::to_vec_pretty(value).map_err(|e| StoreError::Damaged {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        fs::write(&tmp, bytes).map_err(io(&tmp))?;
        fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(io(&tmp))?;
        fs::rename(&tmp, path).map_err(io(path))?;
        sync_parent(path)
    }

    /// The version `views.<name>` serves, if it has one.
    pub fn current(&self, name: &str) -> Result<Option<ViewVersion>, StoreError> {
        Store::read_json(&self.dir(name).join(CURRENT))
    }

    /// The last run's failure, if the last run failed.
    pub fn failure(&self, name: &str) -> Result<Option<Failure>, StoreError> {
        Store::read_json(&self.dir(name).join(FAILED))
    }

    /// A fresh directory for a run's files.
    fn start(&self, name: &str, version: &str) -> Result<PathBuf, StoreError> {
        let dir = self.dir(name);
        crate::sinks::archive::create_dir_synced(&dir).map_err(|e| StoreError::Damaged {
            path: dir.clone(),
            message: e.to_string(),
        })?;
        let tmp = dir.join(format!("{TMP_PREFIX}{version}"));
        fs::create_dir(&tmp).map_err(io(&tmp))?;
        // Synced into its parent like every directory of the archive (a run
        // cut short leaves it behind, for the next run to remove).
        sync_parent(&tmp)?;
        Ok(tmp)
    }

    /// Moves a run's files into place and makes it the current version.
    fn publish(&self, name: &str, tmp: &Path, version: &ViewVersion) -> Result<(), StoreError> {
        let dir = self.version_dir(name, &version.version);
        fs::rename(tmp, &dir).map_err(io(&dir))?;
        sync_parent(&dir)?;
        Store::write_json(&self.dir(name).join(CURRENT), version)?;
        match fs::remove_file(self.dir(name).join(FAILED)) {
            Ok(()) => sync_parent(&self.dir(name).join(FAILED)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&self.dir(name))(e)),
        }
    }

    /// Records a failed run (the current version keeps serving).
    fn fail(&self, name: &str, error: &str) -> Result<(), StoreError> {
        let dir = self.dir(name);
        fs::create_dir_all(&dir).map_err(io(&dir))?;
        Store::write_json(
            &dir.join(FAILED),
            &Failure {
                at: now_micros(),
                error: error.to_string(),
            },
        )
    }

    /// Removes what runs left behind: versions replaced more than `keep`
    /// ago (by the time their successor was written), and unfinished runs.
    /// Call with no run of this view under way.
    fn clean(&self, name: &str, keep: Duration) -> Result<(), StoreError> {
        let dir = self.dir(name);
        let current = self.current(name)?.map(|v| v.version);
        let mut versions = Vec::new();
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(&dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&dir))?;
            let file_name = entry.file_name().to_string_lossy().into_owned();
            if file_name.starts_with(TMP_PREFIX) {
                fs::remove_dir_all(entry.path()).map_err(io(&entry.path()))?;
            } else if file_name.starts_with('v') && entry.path().is_dir() {
                versions.push(file_name);
            }
        }
        versions.sort();
        let now = std::time::SystemTime::now();
        for pair in versions.windows(2) {
            let (old, successor) = (&pair[0], &pair[1]);
            if Some(old) == current.as_ref() {
                continue;
            }
            let written = fs::metadata(dir.join(successor).join(DATA_FILE)).and_then(|m| m.modified());
            let replaced_long_ago = written.is_ok_and(|t| now.duration_since(t).unwrap_or_default() >= keep);
            if replaced_long_ago {
                let path = dir.join(old);
                fs::remove_dir_all(&path).map_err(io(&path))?;
            }
        }
        Ok(())
    }
}

fn sync_parent(path: &Path) -> Result<(), StoreError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::File::open(parent).and_then(|d| d.sync_all()).map_err(io(parent))
}

/// What a batch run reports as it goes.
#[derive(Debug, Clone)]
pub enum Progress {
    /// View `index` of `of` started.
    Started {
        /// The view.
        view: String,
        /// Its place in this run, from 0.
        index: usize,
        /// Views in this run.
        of: usize,
    },
    /// Rows written so far.
    Rows(u64),
    /// The view is done.
    Finished(ViewRun),
}

/// Why each view without a speed layer has none, by name.
pub type BatchOnly = std::collections::HashMap<String, String>;

/// Receives [`Progress`].
pub type OnProgress = Arc<dyn Fn(Progress) + Send + Sync>;

/// The batches of a version directory's Parquet file.
pub fn read_version(dir: &Path) -> Result<Vec<arrow::array::RecordBatch>, String> {
    let path = dir.join(DATA_FILE);
    let file = fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.build())
        .map_err(|e| format!("{}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The columns the seen-state keeps for the speed layer of `views`, as
/// [`open_speed`] chooses them, without opening it: for an enrich stage
/// whose speed layer runs in another process. `None` when there would be
/// no speed layer.
pub async fn priors(views: &[View], batch: &BatchConfig) -> Option<crate::transforms::enrich::Priors> {
    if !batch.speed_layer {
        return None;
    }
    let mut mergeable = Vec::new();
    for view in views {
        if let Ok(m) = speed::analyze(&view.name, &view.sql).await {
            mergeable.push(m);
        }
    }
    (!mergeable.is_empty()).then(|| speed::priors_of(&mergeable))
}

/// The speed layer of `views` (those whose aggregates merge), restored
/// from `log`'s state (or built again from `posts_latest` with `engine`,
/// within `batch`'s bounds), and why each other view is served batch-only.
pub async fn open_speed(
    log: &dyn Log,
    (archive_root, engine): (&Path, &QueryEngine),
    views: &[View],
    batch: &BatchConfig,
) -> (Option<Arc<speed::Speed>>, std::collections::HashMap<String, String>) {
    let mut reasons = std::collections::HashMap::new();
    if !batch.speed_layer {
        for view in views {
            reasons.insert(view.name.clone(), "[batch] speed_layer is off".to_string());
        }
        return (None, reasons);
    }
    let store = Store::new(archive_root);
    let mut mergeable = Vec::new();
    let mut versions = Vec::new();
    for view in views {
        match speed::analyze(&view.name, &view.sql).await {
            Ok(m) => {
                // A version of final columns (made with the speed layer off)
                // has no partial sums to add to: the layer counts every post.
                let current = store.current(&view.name).ok().flatten().filter(|v| v.partial);
                versions.push(current.map(|v| speed::Base {
                    dir: store.version_dir(&view.name, &v.version),
                    until: v.snapshot.until,
                }));
                mergeable.push(m);
            }
            Err(reason) => {
                reasons.insert(view.name.clone(), reason);
            }
        }
    }
    if mergeable.is_empty() {
        return (None, reasons);
    }
    let bounds = batch.bounds(engine.config());
    match speed::Speed::open(log, (engine, &bounds), mergeable, &versions).await {
        Ok(speed) => (Some(Arc::new(speed)), reasons),
        Err(e) => {
            tracing::error!(error = %e, "The speed layer cannot start; views are served batch-only.");
            for view in views {
                reasons.entry(view.name.clone()).or_insert_with(|| e.to_string());
            }
            (None, reasons)
        }
    }
}

/// The batch layer of a data directory: its views, their store, and runs
/// (one at a time).
pub struct Batch {
    engine: Arc<QueryEngine>,
    log: Arc<dyn Log>,
    speed: Option<Arc<speed::Speed>>,
    /// Why each view without a speed layer has none.
    batch_only: std::collections::HashMap<String, String>,
    store: Store,
    views: Vec<View>,
    config: BatchConfig,
    metrics: Arc<Metrics>,
    running: tokio::sync::Mutex<()>,
}

impl Batch {
    /// The batch layer over `engine`'s data, with `views`.
    pub fn new(
        engine: Arc<QueryEngine>,
        archive_root: &Path,
        views: Vec<View>,
        config: BatchConfig,
        metrics: Arc<Metrics>,
        (log, speed, batch_only): (Arc<dyn Log>, Option<Arc<speed::Speed>>, BatchOnly),
    ) -> Batch {
        Batch {
            engine,
            log,
            speed,
            batch_only,
            store: Store::new(archive_root),
            views,
            config,
            metrics,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// The configured views.
    pub fn views(&self) -> &[View] {
        &self.views
    }

    /// Runs `only` (or every view) now, one after the other, waiting for a
    /// run under way to finish first. An unknown name is an error; a view
    /// that fails is reported in its [`ViewRun`] and the others still run.
    pub async fn run(&self, only: Option<&str>, progress: OnProgress) -> Result<Vec<ViewRun>, String> {
        let views: Vec<&View> = match only {
            Some(name) => vec![self.views.iter().find(|v| v.name == name).ok_or_else(|| {
                let names: Vec<&str> = self.views.iter().map(|v| v.name.as_str()).collect();
                format!("no view is named {name:?}; the views are: {}", names.join(", "))
            })?],
            None => self.views.iter().collect(),
        };
        let _running = self.running.lock().await;
        let mut runs = Vec::new();
        for (index, view) in views.iter().enumerate() {
            progress(Progress::Started {
                view: view.name.clone(),
                index,
                of: views.len(),
            });
            let run = self.run_one(view, progress.clone()).await;
            progress(Progress::Finished(run.clone()));
            runs.push(run);
        }
        Ok(runs)
    }

    /// One run of one view, its failure recorded.
    async fn run_one(&self, view: &View, progress: OnProgress) -> ViewRun {
        let started = now_micros();
        self.metrics.view_runs.add(1);
        let result = self.build(view, started, progress).await;
        let seconds = (now_micros() - started) as f64 / 1e6;
        let run = match result {
            Ok(version) => {
                tracing::info!(view = %view.name, rows = version.rows, seconds, "Batch view built.");
                ViewRun {
                    view: view.name.clone(),
                    version: Some(version),
                    error: None,
                    seconds,
                }
            }
            Err(error) => {
                self.metrics.view_failures.add(1);
                tracing::error!(view = %view.name, error = %error, "Batch view run failed; the previous version keeps serving.");
                if let Err(e) = self.store.fail(&view.name, &error) {
                    tracing::error!(view = %view.name, error = %e, "Cannot record the failed run.");
                }
                ViewRun {
                    view: view.name.clone(),
                    version: None,
                    error: Some(error),
                    seconds,
                }
            }
        };
        if let Err(e) = self
            .store
            .clean(&view.name, Duration::from_secs(self.config.keep_replaced_secs))
        {
            tracing::warn!(view = %view.name, error = %e, "Cannot remove replaced versions; will retry after the next run.");
        }
        run
    }

    /// Computes a view into a new version and makes it current.
    async fn build(&self, view: &View, started: i64, progress: OnProgress) -> Result<ViewVersion, String> {
        let version = format!("v{started:020}");
        let tmp = self.store.start(&view.name, &version).map_err(|e| e.to_string())?;
        let bounds = self.config.bounds(self.engine.config());
        let speed = self.speed.as_ref().and_then(|s| Some((s, s.view(&view.name)?)));
        let export = match speed {
            Some((speed, v)) => {
                // The stage waits while the run plans: its next epoch begins
                // exactly where the run's snapshot ends.
                let mut paused = speed.pause().await;
                let export = self
                    .engine
                    .export(speed.views[v].partial_plan()?, &bounds)
                    .await
                    .map_err(|e| e.to_string())?;
                speed
                    .begin_epoch(&*self.log, &mut paused, v, &export.snapshot.until)
                    .map_err(|e| e.to_string())?;
                export
            }
            None => self
                .engine
                .export(Statement::Sql(view.sql.clone()), &bounds)
                .await
                .map_err(|e| e.to_string())?,
        };
        let path = tmp.join(DATA_FILE);
        let (schema, mut batches) = (export.schema, export.batches);
        let (rows, bytes) = tokio::task::spawn_blocking(move || -> Result<(u64, u64), String> {
            let failed = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
            let file = fs::File::create(&path).map_err(|e| failed(&e))?;
            let props = WriterProperties::builder()
                .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).map_err(|e| failed(&e))?))
                .build();
            let mut writer = ArrowWriter::try_new(file, schema, Some(props)).map_err(|e| failed(&e))?;
            let mut rows = 0u64;
            while let Some(batch) = batches.blocking_recv() {
                let batch = batch.map_err(|e| e.to_string())?;
                rows += batch.num_rows() as u64;
                writer.write(&batch).map_err(|e| failed(&e))?;
                progress(Progress::Rows(rows));
            }
            let file = writer.into_inner().map_err(|e| failed(&e))?;
            file.sync_all().map_err(|e| failed(&e))?;
            let bytes = file.metadata().map_err(|e| failed(&e))?.len();
            Ok((rows, bytes))
        })
        .await
        .map_err(|e| format!("the writer of the view stopped: {e}"))??;
        let version = ViewVersion {
            version,
            rows,
            bytes,
            snapshot: export.snapshot,
            started_at: started,
            finished_at: now_micros(),
            sql: view.sql.clone(),
            partial: speed.is_some(),
        };
        match speed {
            Some((speed, v)) => {
                let mut paused = speed.pause().await;
                self.store
                    .publish(&view.name, &tmp, &version)
                    .map_err(|e| e.to_string())?;
                speed
                    .published(&*self.log, &mut paused, v, &version.snapshot.until)
                    .map_err(|e| e.to_string())?;
            }
            None => self
                .store
                .publish(&view.name, &tmp, &version)
                .map_err(|e| e.to_string())?,
        }
        Ok(version)
    }

    /// Each view's state: what it serves, its last failure, its next run.
    pub fn status(&self) -> Vec<ViewStatus> {
        let now = now_micros() / 1_000_000;
        self.views
            .iter()
            .map(|view| {
                let current = self.store.current(&view.name);
                let failure = self.store.failure(&view.name);
                let error = match (&current, &failure) {
                    (Err(e), _) | (_, Err(e)) => Some(e.to_string()),
                    (_, Ok(Some(f))) => Some(f.error.clone()),
                    _ => None,
                };
                ViewStatus {
                    name: view.name.clone(),
                    schedule: view.schedule.to_string(),
                    next_run: view.schedule.next_after(now).map(|t| t * 1_000_000),
                    failed_at: failure.ok().flatten().map(|f| f.at),
                    version: current.ok().flatten(),
                    error,
                    speed_layer: self
                        .speed
                        .as_ref()
                        .is_some_and(|s| s.view(&view.name).is_some() && s.broken(&view.name).is_none()),
                    batch_only: self
                        .batch_only
                        .get(&view.name)
                        .cloned()
                        .or_else(|| self.speed.as_ref().and_then(|s| s.broken(&view.name))),
                }
            })
            .collect()
    }

    /// Whether `view` should run at `now` (Unix seconds): a fire time has
    /// passed since its last run began (or it never ran).
    fn due(&self, view: &View, now: i64) -> bool {
        let Some(fire) = view.schedule.last_at_or_before(now) else {
            return false;
        };
        let current = self.store.current(&view.name).ok().flatten();
        // A version of the other kind (the speed layer switched on or off
        // since) is rebuilt at once.
        let kept = self.speed.as_ref().is_some_and(|s| s.view(&view.name).is_some());
        if current.as_ref().is_some_and(|v| v.partial != kept) {
            return true;
        }
        let last_success = current.map(|v| v.started_at);
        let last_failure = self.store.failure(&view.name).ok().flatten().map(|f| f.at);
        match last_success.max(last_failure) {
            Some(last) => last < fire * 1_000_000,
            None => true,
        }
    }

    /// Runs the views on their schedules until `stop`; a view whose fire
    /// time passed while nothing ran (the process was down) runs at start.
    pub async fn schedule(self: Arc<Self>, stop: CancellationToken) {
        let quiet: OnProgress = Arc::new(|_| {});
        while !stop.is_cancelled() {
            let now = now_micros() / 1_000_000;
            for view in &self.views {
                if stop.is_cancelled() {
                    return;
                }
                if self.due(view, now) {
                    let _running = self.running.lock().await;
                    // Another run (chorus batch) may have done it meanwhile.
                    if self.due(view, now) {
                        tokio::select! {
                            _ = self.run_one(view, quiet.clone()) => {}
                            () = stop.cancelled() => return,
                        }
                    }
                }
            }
            let now = now_micros() / 1_000_000;
            let next = self.views.iter().filter_map(|v| v.schedule.next_after(now)).min();
            // Woken at least every minute, so a changed clock is noticed.
            let wait = next.map_or(60, |t| (t - now).clamp(1, 60)) as u64;
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(wait)) => {}
                () = stop.cancelled() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::Snapshot;

    fn entry(name: &str, sql: Option<&str>, schedule: Option<&str>) -> ViewConfig {
        ViewConfig {
            name: name.into(),
            sql: sql.map(String::from),
            schedule: schedule.map(String::from),
        }
    }

    #[test]
    fn views_are_the_built_in_ones_changed_or_joined_by_the_configuration() {
        let views = resolve(&BatchConfig::default(), &[]).unwrap();
        let names: Vec<&str> = views.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["by_location", "by_community_hour", "by_author_day"]);
        assert!(views.iter().all(|v| v.schedule.to_string() == "0 0 * * *"));

        let views = resolve(
            &BatchConfig::default(),
            &[
                entry("by_location", None, Some("@hourly")),
                entry("negative_share", Some("SELECT 1 AS one"), None),
            ],
        )
        .unwrap();
        assert_eq!(views[0].schedule.to_string(), "@hourly");
        assert_eq!(views[0].sql, BUILT_IN[0].1);
        assert_eq!(views[3].name, "negative_share");

        let off = BatchConfig {
            built_in_views: false,
            ..BatchConfig::default()
        };
        assert!(resolve(&off, &[]).unwrap().is_empty());
    }

    #[test]
    fn bad_view_entries_are_refused_with_the_reason() {
        let error = |entries: &[ViewConfig]| resolve(&BatchConfig::default(), entries).unwrap_err();
        assert!(error(&[entry("Bad-Name", Some("SELECT 1"), None)]).contains("lowercase letter"));
        assert!(error(&[entry("../x", Some("SELECT 1"), None)]).contains("lowercase letter"));
        assert!(error(&[entry("mine", None, None)]).contains("sql is missing"));
        assert!(error(&[entry("mine", Some(" "), None)]).contains("sql is empty"));
        assert!(error(&[entry("mine", Some("SELECT 1"), Some("every day"))]).contains("schedule"));
        let twice = [
            entry("mine", Some("SELECT 1"), None),
            entry("mine", Some("SELECT 2"), None),
        ];
        assert!(error(&twice).contains("two entries"));
        let bad_default = BatchConfig {
            schedule: "nightly".into(),
            ..BatchConfig::default()
        };
        assert!(resolve(&bad_default, &[]).unwrap_err().contains("[batch] schedule"));
    }

    #[test]
    fn replaced_versions_go_after_the_grace_period_and_unfinished_runs_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        let version = |v: &str| ViewVersion {
            version: v.into(),
            rows: 0,
            bytes: 0,
            snapshot: Snapshot::default(),
            started_at: 0,
            finished_at: 0,
            sql: String::new(),
            partial: false,
        };
        for v in ["v001", "v002"] {
            let tmp = store.start("x", v).unwrap();
            fs::write(tmp.join(DATA_FILE), b"").unwrap();
            store.publish("x", &tmp, &version(v)).unwrap();
        }
        let crashed = store.start("x", "v003").unwrap();
        store.clean("x", Duration::from_secs(3600)).unwrap();
        assert!(!crashed.exists(), "an unfinished run is removed");
        assert!(store.version_dir("x", "v001").exists(), "kept during the grace period");
        store.clean("x", Duration::ZERO).unwrap();
        assert!(!store.version_dir("x", "v001").exists());
        assert!(store.version_dir("x", "v002").exists(), "the current version stays");
        assert_eq!(store.current("x").unwrap().unwrap().version, "v002");
    }
}
