//! The one place that wires components together: a data directory's log,
//! the enrich stage, the archive sink, the HTTP API and the sources, run
//! under one shutdown token.
//!
//! Layout of a data directory:
//! `log/` (fjall), `archive/posts/…` and `archive/errors/…` (Parquet and
//! NDJSON), `server.json` (address of the running server, for other
//! commands).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::RwLock;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::config::{LogBackend, LogEncoding};
use crate::consumers::Consumers;
use crate::http::{self, AppState};
use crate::log::fjall::FjallLog;
use crate::log::kafka::{KafkaLog, KafkaSettings};
use crate::log::{Log, LogError, Retention, Topic};
use crate::metrics::Metrics;
use crate::query::QueryEngine;
use crate::sinks::archive::{Archive, ArchiveError, ArchiveTail, ObjectArchive};
use crate::sinks::index::{IndexError, IndexSink, Searcher};
use crate::transforms::enrich;

/// Environment variable naming the data directory.
pub const DATA_ENV: &str = "CHORUS_DATA";
/// Data directory used when neither `--data` nor `CHORUS_DATA` is given.
pub const DEFAULT_DATA_DIR: &str = "chorus-data";
/// File in the data directory that tells other commands where the
/// running server listens.
pub const SERVER_FILE: &str = "server.json";

/// Pipeline failures.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// The archive failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The search index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// Anything else, with context.
    #[error("{0}")]
    Other(String),
}

/// What `server.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Where the API listens.
    pub address: SocketAddr,
    /// The server's process id.
    pub pid: u32,
}

/// The data directory: `--data`, else `$CHORUS_DATA`, else `./chorus-data`.
pub fn data_dir(explicit: Option<&Path>) -> PathBuf {
    match explicit {
        Some(p) => p.to_path_buf(),
        None => std::env::var_os(DATA_ENV).map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from),
    }
}

/// The running server of a data directory, if `server.json` names one
/// that answers.
pub fn running_server(data: &Path) -> Option<ServerInfo> {
    let text = std::fs::read_to_string(data.join(SERVER_FILE)).ok()?;
    let info: ServerInfo = serde_json::from_str(&text).ok()?;
    std::net::TcpStream::connect_timeout(&info.address, std::time::Duration::from_millis(500))
        .ok()
        .map(|_| info)
}

/// An opened data directory and the shared parts of its pipeline.
pub struct Pipeline {
    data: PathBuf,
    /// `[archive] url`'s directory, or the data directory's `archive/`
    /// (for an archive in a bucket: its staging directory and the batch
    /// views).
    archive_root: PathBuf,
    /// `[archive] url` when it names a bucket.
    archive_objects: Option<url::Url>,
    config: Config,
    log: Arc<dyn Log>,
    metrics: Arc<Metrics>,
    gate: Arc<RwLock<()>>,
    archive_tail: Arc<ArchiveTail>,
}

impl Pipeline {
    /// Opens (creating) the data directory. Fails if another process has it.
    pub fn open(data: &Path, config: Config) -> Result<Pipeline, PipelineError> {
        let archive_root = config.archive.root(data).map_err(PipelineError::Other)?;
        let archive_objects = match config.archive.location(data).map_err(PipelineError::Other)? {
            crate::sinks::archive::Location::Objects(url) => Some(url),
            crate::sinks::archive::Location::Dir(_) => None,
        };
        let in_use = |e: LogError| match e {
            LogError::Storage(msg) if msg.to_lowercase().contains("lock") => PipelineError::Other(format!(
                "{} is in use by another chorus process ({msg})",
                data.display()
            )),
            e => e.into(),
        };
        let log: Arc<dyn Log> = match config.log.backend {
            LogBackend::Embedded => Arc::new(
                FjallLog::open_with_segments(&data.join("log"), config.log.partitions, config.log.segment_records)
                    .map_err(in_use)?,
            ),
            LogBackend::Kafka => {
                let settings = KafkaSettings {
                    json: config.log.encoding == LogEncoding::Json,
                    ..KafkaSettings::new(
                        &config.log.brokers,
                        &config.log.topic_prefix,
                        config.log.partitions,
                        config.log.replication,
                    )
                };
                Arc::new(KafkaLog::open(settings, &data.join("state")).map_err(in_use)?)
            }
        };
        Ok(Pipeline {
            data: data.to_path_buf(),
            archive_root,
            archive_objects,
            config,
            log,
            metrics: Arc::new(Metrics::default()),
            gate: Arc::new(RwLock::new(())),
            archive_tail: Arc::new(ArchiveTail::default()),
        })
    }

    /// The log.
    pub fn log(&self) -> Arc<dyn Log> {
        self.log.clone()
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The stages that read the log, as configured.
    pub fn consumers(&self) -> Consumers {
        Consumers::of(&self.config)
    }

    /// The counters.
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// The archive's root directory (for an archive in a bucket: its
    /// staging directory and the batch views).
    pub fn archive_root(&self) -> PathBuf {
        self.archive_root.clone()
    }

    /// Where the archive's committed files are.
    pub fn archive_stored(&self) -> Result<crate::sinks::archive::Stored, PipelineError> {
        Ok(match &self.archive_objects {
            None => crate::sinks::archive::Stored::Dir(self.archive_root()),
            Some(url) => crate::sinks::archive::Stored::Objects(Arc::new(
                ObjectArchive::connect(url, &self.config.archive.endpoint()).map_err(PipelineError::Other)?,
            )),
        })
    }

    /// A query engine over this directory, within `[query]`'s bounds;
    /// queries spill to `tmp/query` in it.
    fn query_engine_with(&self, speed: Option<Arc<crate::views::speed::Speed>>) -> Result<QueryEngine, PipelineError> {
        let views = self.config.views().map_err(PipelineError::Other)?;
        let engine = QueryEngine::new(
            &self.archive_root(),
            self.log(),
            self.gate.clone(),
            self.archive_tail.clone(),
            self.config.query.clone(),
            &self.data.join("tmp").join("query"),
        )
        .map_err(|e| PipelineError::Other(e.to_string()))?
        .with_views(views.into_iter().map(|v| v.name).collect(), speed);
        Ok(match &self.archive_objects {
            None => engine,
            Some(url) => engine.with_archive_objects(
                url,
                crate::sinks::archive::objects::connect_store(url, &self.config.archive.endpoint())
                    .map_err(PipelineError::Other)?,
            ),
        })
    }

    /// A query engine over this directory, within `[query]`'s bounds
    /// (queries spill to `tmp/query` in it), with the batch layer over it
    /// and the speed layer restored from the log's state.
    pub async fn query_engine(&self) -> Result<(Arc<QueryEngine>, Arc<crate::views::Batch>), PipelineError> {
        let (engine, batch, _) = self.layers().await?;
        Ok((engine, batch))
    }

    /// The speed layer alone, restored from the log's state (or built
    /// again), as the server opens it; `None` when it is off or cannot
    /// start. For benchmarks of the layer outside the pipeline.
    pub async fn speed_layer(&self) -> Result<Option<Arc<crate::views::speed::Speed>>, PipelineError> {
        Ok(self.layers().await?.2)
    }

    async fn layers(
        &self,
    ) -> Result<
        (
            Arc<QueryEngine>,
            Arc<crate::views::Batch>,
            Option<Arc<crate::views::speed::Speed>>,
        ),
        PipelineError,
    > {
        let views = self.config.views().map_err(PipelineError::Other)?;
        // The speed layer may have to be built again from posts_latest:
        // with an engine of its own, dropped when it is open.
        let (speed, batch_only) = {
            let engine = self.query_engine_with(None)?;
            crate::views::open_speed(&*self.log, (&self.archive_root(), &engine), &views, &self.config.batch).await
        };
        let engine = Arc::new(self.query_engine_with(speed.clone())?);
        let batch = self.batch_layer(&engine, views, speed.clone(), batch_only);
        Ok((engine, batch, speed))
    }

    /// The batch layer over `engine`: `views`, merged with `speed` but for
    /// those `batch_only` gives a reason for.
    fn batch_layer(
        &self,
        engine: &Arc<QueryEngine>,
        views: Vec<crate::views::View>,
        speed: Option<Arc<crate::views::speed::Speed>>,
        batch_only: std::collections::HashMap<String, String>,
    ) -> Arc<crate::views::Batch> {
        Arc::new(crate::views::Batch::new(
            engine.clone(),
            &self.archive_root(),
            views,
            self.config.batch.clone(),
            self.metrics.clone(),
            (self.log(), speed, batch_only),
        ))
    }

    /// A query engine and the batch views' status for a process that reads
    /// an archive another process writes (`--roles serve` without
    /// `archive`): the views' versions of final columns are served; those of
    /// partial sums need the speed layer, which runs with the archive.
    fn reader_layers(&self) -> Result<(Arc<QueryEngine>, Arc<crate::views::Batch>), PipelineError> {
        // Its queries take the archive's file names for this log's offsets.
        let objects = match &self.archive_objects {
            Some(url) => {
                Some(ObjectArchive::connect(url, &self.config.archive.endpoint()).map_err(PipelineError::Other)?)
            }
            None => None,
        };
        crate::sinks::archive::check_log(&self.archive_root(), objects.as_ref(), &self.log.identity())?;
        let views = self.config.views().map_err(PipelineError::Other)?;
        let engine = Arc::new(self.query_engine_with(None)?);
        let batch_only = views
            .iter()
            .filter(|_| self.config.batch.speed_layer)
            .map(|v| {
                let reason = "served by the process that runs the archive role (with the speed layer)";
                (v.name.clone(), reason.to_string())
            })
            .collect();
        let batch = self.batch_layer(&engine, views, None, batch_only);
        Ok((engine, batch))
    }

    /// The archive's lifecycle (compaction), sharing the archive's gate.
    pub fn lifecycle(&self) -> Result<Arc<crate::lifecycle::Lifecycle>, PipelineError> {
        let longest_reader = self.config.query.max_seconds.max(self.config.batch.max_seconds);
        let lifecycle = crate::lifecycle::Lifecycle::new(
            self.archive_root(),
            self.config.archive.clone(),
            self.config.lifecycle.clone(),
            std::time::Duration::from_secs(longest_reader),
            self.gate.clone(),
            self.metrics.clone(),
        );
        Ok(Arc::new(match &self.archive_objects {
            None => lifecycle,
            Some(url) => lifecycle
                .in_bucket(ObjectArchive::connect(url, &self.config.archive.endpoint()).map_err(PipelineError::Other)?),
        }))
    }

    /// The exporter of the batch views to the warehouse, when `[warehouse]`
    /// has a URL and exports views.
    pub fn exporter(&self, engine: &Arc<QueryEngine>) -> Option<Arc<crate::warehouse::Exporter>> {
        let config = &self.config.warehouse;
        let views = self.config.views().ok()?;
        if !config.enabled() || !config.views || views.is_empty() {
            return None;
        }
        Some(Arc::new(crate::warehouse::Exporter::new(
            config.clone(),
            engine.clone(),
            crate::views::Store::new(&self.archive_root()),
            views.into_iter().map(|v| v.name).collect(),
            self.metrics.clone(),
        )))
    }

    /// The index's directory.
    pub fn index_dir(&self) -> PathBuf {
        self.data.join(crate::sinks::index::DIR)
    }

    /// A searcher over the index of a directory no server runs on.
    pub fn searcher(&self) -> Result<Searcher, IndexError> {
        Searcher::open(&self.index_dir(), self.config.index.stemming)
    }

    /// Removes what a crash left uncommitted in the archive (done by
    /// [`Pipeline::run`] too); call before querying a directory that is not
    /// running.
    pub fn recover_archive(&self) -> Result<(), PipelineError> {
        match self.archive() {
            Ok(_) => Ok(()),
            // Another process writes it (a shared archive): what it left
            // uncommitted is its own, and queries leave it out anyway.
            Err(e @ (ArchiveError::InUse(_) | ArchiveError::Leased { .. })) => {
                tracing::info!(reason = %e, "The archive is not recovered here.");
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    fn archive(&self) -> Result<Archive, ArchiveError> {
        let placement = match &self.archive_objects {
            None => crate::sinks::archive::Placement::Dir(self.archive_root()),
            Some(url) => {
                let connect =
                    || ObjectArchive::connect(url, &self.config.archive.endpoint()).map_err(ArchiveError::Other);
                crate::sinks::archive::Placement::Objects {
                    staging: self.archive_root(),
                    store: Box::new(connect()?),
                    lease: Box::new(connect()?),
                }
            }
        };
        Archive::open(
            placement,
            self.log(),
            self.config.archive.clone(),
            self.metrics.clone(),
            self.gate.clone(),
            self.archive_tail.clone(),
        )
    }

    /// Runs the stages while `work` runs (an offline ingest, a collector
    /// writing into the log); once it is done, waits until every consumer
    /// has caught up but the archive's (unless `shutdown` came first; a
    /// wait of more than a few seconds says what it waits for), then stops
    /// them, which drain what is left. With `index_after_archive` (a
    /// backfill of files), the index starts reading only once the archive
    /// is complete. Returns what `work` returned.
    pub async fn run_alongside<T>(
        self: &Arc<Self>,
        work: impl std::future::Future<Output = T>,
        index_after_archive: bool,
        shutdown: CancellationToken,
    ) -> Result<T, PipelineError> {
        // A backfill of files builds the index once the archive is
        // complete (run beside the stages, even at the lowest priority, it
        // took a tenth of the cores from them and finished no sooner); a
        // collector, which runs until stopped, keeps it up to date as it
        // goes.
        let index_may_start = index_after_archive.then(CancellationToken::new);
        let runner = {
            let (pipeline, shutdown) = (self.clone(), shutdown.clone());
            let front = Front {
                background_index: true,
                index_waits_for: index_may_start.clone(),
                ..Front::default()
            };
            tokio::spawn(async move { pipeline.run(front, shutdown).await })
        };
        let started = std::time::Instant::now();
        let out = work.await;
        let consumers = self.consumers();
        let waiting = std::time::Instant::now();
        let mut said = waiting;
        let mut archived = false;
        while !runner.is_finished() && !shutdown.is_cancelled() {
            let behind = consumers.unsettled(&*self.log)?;
            // Once enrich has caught up nothing more comes to the archive,
            // which then rolls what it holds at once; the stages that run
            // at a lower priority, as the index does, may still be behind.
            if !behind.iter().any(|p| p.input == enrich::INPUT) {
                self.archive_tail.input_done();
                if !archived {
                    let positions = consumers.positions(&*self.log)?;
                    let mut archive = positions.iter().filter(|p| p.input == crate::sinks::archive::INPUT);
                    archived = archive.all(|p| p.lag() == 0);
                    if archived {
                        if let Some(start) = &index_may_start {
                            start.cancel();
                        }
                        let behind: Vec<String> = behind
                            .iter()
                            .map(|p| format!("{} ({} records)", p.input.consumer, p.lag()))
                            .collect();
                        let waiting = match behind.is_empty() {
                            true => String::new(),
                            false => format!("; waiting for {} to catch up", behind.join(", ")),
                        };
                        eprintln!(
                            "chorus: everything read is in the archive (SQL) after {:.1} s{waiting}",
                            started.elapsed().as_secs_f64()
                        );
                    }
                }
            }
            if behind.is_empty() && archived {
                break;
            }
            if said.elapsed() >= std::time::Duration::from_secs(10) {
                said = std::time::Instant::now();
                let behind: Vec<String> = behind
                    .iter()
                    .map(|p| format!("{} ({} records)", p.input.consumer, p.lag()))
                    .collect();
                eprintln!(
                    "chorus: waiting {} s for {} to catch up (Ctrl-C stops; what is left is read at the next start)",
                    waiting.elapsed().as_secs(),
                    behind.join(", ")
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        shutdown.cancel();
        runner
            .await
            .map_err(|e| PipelineError::Other(format!("pipeline: {e}")))??;
        Ok(out)
    }

    /// An output into this pipeline's log, for a collector.
    pub fn log_output(&self) -> crate::sources::output::Output {
        crate::sources::output::Output::Log(self.log(), self.config.server.limits())
    }

    /// Runs the stages of `front.roles` (all by default: enrich, the
    /// archive and the sinks beside it; the HTTP API when a listener is
    /// given, the demo generator when asked) until `shutdown`, then stops
    /// them in order: the API and the generator first, then enrich, then
    /// the archive; each stage first drains what its input holds (at most
    /// [`crate::transforms::DRAIN_GRACE`]), so a clean stop leaves every
    /// accepted post in the archive.
    pub async fn run(&self, front: Front, shutdown: CancellationToken) -> Result<(), PipelineError> {
        let Front {
            listener,
            demo,
            roles,
            background_index,
            index_waits_for,
        } = front;
        roles.check(&self.config).map_err(PipelineError::Other)?;
        // Opened (which removes what a crash left uncommitted) only where
        // the archive runs.
        let archive = if roles.has(Role::Archive) {
            Some(self.archive()?)
        } else {
            None
        };
        // A failing component cancels `stop`, which stops the others.
        let stop = shutdown.child_token();
        // The stages stop one after the other, each draining what the one
        // before it wrote: see the end of this function.
        let (enrich_stop, archive_stop) = (CancellationToken::new(), CancellationToken::new());
        // Opened before any stage starts: the speed layer may be built
        // again from posts_latest, which nothing may change meanwhile. It
        // runs with the archive, and queries (serve) with both.
        let layers = if roles.has(Role::Archive) {
            Some(self.layers().await?)
        } else {
            None
        };
        let speed = layers.as_ref().and_then(|(_, _, speed)| speed.clone());
        let enrich_task = if roles.has(Role::Enrich) {
            // The seen-state keeps what each post counts for the speed
            // layer: of this process's, or of the views' columns when the
            // speed layer runs in another process (which writes them first).
            let (priors, elsewhere) = match &layers {
                Some(_) => (speed.as_ref().map(|s| s.priors().clone()), false),
                None => {
                    let views = self.config.views().map_err(PipelineError::Other)?;
                    (crate::views::priors(&views, &self.config.batch).await, true)
                }
            };
            let (log, metrics, stop, own, config) =
                (self.log(), self.metrics.clone(), stop.clone(), enrich_stop.clone(), {
                    // The seen-state lives as long as the log keeps records.
                    let mut enrich = self.config.enrich.clone();
                    if enrich.seen_retention_secs == 0 {
                        enrich.seen_retention_secs = self.config.log.retention_hours.saturating_mul(3600);
                    }
                    enrich.priors = priors;
                    enrich
                });
            Some(spawn_thread("enrich", move || {
                let result = match (&config.priors, elsewhere) {
                    (Some(priors), true) => enrich::wait_for_priors(&*log, priors, &own),
                    _ => Ok(true),
                }
                .and_then(|ready| match ready {
                    true => enrich::run(log, &config, metrics, own),
                    false => Ok(()),
                })
                .map_err(PipelineError::from);
                stop.cancel();
                result
            })?)
        } else {
            None
        };
        let archive_task = match archive {
            Some(archive) => {
                let (stop, own) = (stop.clone(), archive_stop.clone());
                Some(spawn_thread("archive", move || {
                    let result = archive.run(own).map_err(PipelineError::from);
                    stop.cancel();
                    result
                })?)
            }
            None => None,
        };
        // The index reads what the archive reads, and stops with it. Its
        // thread opens it, so that tantivy's own threads, started then,
        // share its priority.
        let (index_task, searcher) = if roles.has(Role::Index) && self.config.index.enabled {
            let (opened, searcher) = tokio::sync::oneshot::channel();
            let (dir, config, metrics) = (self.index_dir(), self.config.index.clone(), self.metrics.clone());
            let (log, stop, own) = (self.log(), stop.clone(), archive_stop.clone());
            let task = spawn_thread("index", move || {
                if background_index {
                    crate::priority::idle_current_thread();
                }
                let sink = match IndexSink::open(&dir, &config, metrics) {
                    Ok((sink, searcher)) => {
                        let _ = opened.send(Ok(searcher));
                        sink
                    }
                    Err(e) => {
                        let _ = opened.send(Err(e));
                        return Ok(());
                    }
                };
                if let Some(start) = index_waits_for {
                    while !start.is_cancelled() && !own.is_cancelled() {
                        std::thread::sleep(std::time::Duration::from_millis(50));
                    }
                }
                let result = sink.run(&*log, own).map_err(PipelineError::from);
                stop.cancel();
                result
            })?;
            let searcher = searcher
                .await
                .map_err(|_| PipelineError::Other("the index thread ended before opening the index".into()))??;
            (Some(task), Some(searcher))
        } else {
            (None, None)
        };
        // The speed layer reads what the archive reads, and stops with it.
        let speed_task = if layers.is_some() && self.consumers().inputs().contains(&crate::views::speed::INPUT) {
            let (log, stop, own) = (self.log(), stop.clone(), archive_stop.clone());
            Some(spawn_thread("speed", move || {
                let mut sink = crate::views::speed::SpeedSink::new(speed.as_deref(), &*log);
                let result = crate::sinks::consume::run(&*log, &mut [&mut sink], own)
                    .map_err(|e| PipelineError::Other(e.to_string()));
                stop.cancel();
                result
            })?)
        } else {
            None
        };
        // The warehouse export and the delivery to OpenSearch read what the
        // archive reads, and stop with it.
        let warehouse_task = if roles.has(Role::Archive) && self.config.warehouse.enabled() {
            let sink = crate::warehouse::sink::WarehouseSink::new(
                self.config.warehouse.clone(),
                self.log(),
                self.metrics.clone(),
                archive_stop.clone(),
            )
            .map_err(|e| PipelineError::Other(e.to_string()))?;
            Some(self.spawn_sink("warehouse", "The warehouse export", &stop, move |log| sink.run(log))?)
        } else {
            None
        };
        let opensearch_task = if roles.has(Role::Archive) && self.config.opensearch.enabled() {
            let sink = crate::sinks::opensearch::OpenSearchSink::new(
                self.config.opensearch.clone(),
                self.log(),
                self.metrics.clone(),
                archive_stop.clone(),
            )
            .map_err(|e| PipelineError::Other(e.to_string()))?;
            Some(self.spawn_sink("opensearch", "The OpenSearch delivery", &stop, move |log| sink.run(log))?)
        } else {
            None
        };
        let exporter = match (&layers, roles.has(Role::Batch)) {
            (Some((query, _, _)), true) => self
                .exporter(query)
                .map(|exporter| tokio::spawn(exporter.run(stop.clone()))),
            _ => None,
        };
        // Retention keeps what any stage, in any process, has not committed.
        let retention_task = if roles.has(Role::Archive) {
            let (log, stop, retention) = (self.log(), stop.clone(), self.config.log.retention());
            let consumers = self.consumers();
            let pause = self.config.log.retention_check_secs.clamp(1, 86_400) * 10;
            Some(spawn_thread("retention", move || {
                while !stop.is_cancelled() {
                    if let Err(e) = enforce_retention(&*log, &consumers, &retention) {
                        tracing::warn!(error = %e, "Log retention failed; will retry.");
                    }
                    // Every retention_check_secs, waking at once on shutdown.
                    for _ in 0..pause {
                        if stop.is_cancelled() {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
                Ok(())
            })?)
        } else {
            None
        };
        // The archive's lifecycle: a pass every interval, and one on request
        // (`POST /v1/lifecycle`), never two at once.
        let lifecycle = self.lifecycle()?;
        let lifecycle_task = if roles.has(Role::Archive) && self.config.lifecycle.scheduler {
            let (lifecycle, stop) = (lifecycle.clone(), stop.clone());
            Some(spawn_thread("lifecycle", move || {
                lifecycle.run_every_interval(&stop);
                Ok(())
            })?)
        } else {
            None
        };
        let mut server_file = None;
        let mut scheduler = None;
        let server = match listener {
            Some(listener) => {
                let address = listener
                    .local_addr()
                    .map_err(|e| PipelineError::Other(format!("listener: {e}")))?;
                let path = self.data.join(SERVER_FILE);
                let info = ServerInfo {
                    address,
                    pid: std::process::id(),
                };
                std::fs::write(&path, serde_json::to_vec_pretty(&info).unwrap_or_default())
                    .map_err(|e| PipelineError::Other(format!("{}: {e}", path.display())))?;
                server_file = Some(path);
                let serving = match (&layers, roles.has(Role::Serve)) {
                    (Some((query, batch, _)), true) => Some(http::Serving {
                        query: query.clone(),
                        batch: batch.clone(),
                        lifecycle: lifecycle.clone(),
                    }),
                    // A query process of its own: the archive's files as
                    // another process writes them, and the log past them.
                    (None, true) => {
                        let (query, batch) = self.reader_layers()?;
                        Some(http::Serving {
                            query,
                            batch,
                            lifecycle: lifecycle.clone(),
                        })
                    }
                    _ => None,
                };
                if let (Some(serving), true) = (&serving, roles.has(Role::Batch) && self.config.batch.scheduler) {
                    scheduler = Some(tokio::spawn(serving.batch.clone().schedule(stop.clone())));
                }
                let searcher = searcher.filter(|_| serving.is_some());
                let live = match serving {
                    Some(_) => Some(
                        crate::sinks::index::live::Live::start(
                            self.log(),
                            self.config.index.stemming,
                            crate::sinks::index::live::BACKLOG,
                            stop.clone(),
                        )
                        .map_err(|e| PipelineError::Other(format!("cannot start the live stream: {e}")))?,
                    ),
                    None => None,
                };
                let state = Arc::new(AppState {
                    log: self.log(),
                    serving,
                    roles: roles.clone(),
                    metrics: self.metrics.clone(),
                    tokens: self.config.tokens(),
                    max_body_bytes: self.config.server.max_body_bytes,
                    limits: self.config.server.limits(),
                    throttle: crate::consumers::Throttle::new(
                        self.config.server.max_enrich_lag,
                        std::time::Duration::from_millis(self.config.server.max_enrich_wait_ms),
                    ),
                    consumers: self.consumers(),
                    http: self.config.server.http_limits(),
                    allowed_origins: self.config.server.allowed_origins.clone(),
                    listen: address,
                    data_dir: self.data.clone(),
                    archive: self.archive_stored()?,
                    min_free_bytes: self.config.log.min_free_bytes,
                    stop: stop.clone(),
                    failure: Default::default(),
                    ingest_permits: Arc::new(tokio::sync::Semaphore::new(
                        self.config.server.max_concurrent_ingest.max(1),
                    )),
                    ingest_pending: Default::default(),
                    alerts: match &searcher {
                        Some(searcher) => crate::alerts::Alerts::start(
                            self.config.alerts.clone(),
                            searcher.clone(),
                            std::time::Duration::from_secs(self.config.index.alert_check_secs.max(1)),
                            stop.clone(),
                        ),
                        None => Default::default(),
                    },
                    search_permits: Arc::new(tokio::sync::Semaphore::new(http::MAX_CONCURRENT_SEARCHES)),
                    searcher,
                    live,
                });
                let stop = stop.clone();
                Some(tokio::spawn(async move {
                    let result = http::serve(listener, state, stop.clone()).await;
                    stop.cancel();
                    result.map_err(|e| PipelineError::Other(format!("HTTP server: {e}")))
                }))
            }
            None => None,
        };
        // The demo generator: a failure stops the pipeline (it is the
        // demo's only input).
        let generator = demo.filter(|_| roles.has(Role::Ingest)).map(|options| {
            let (log, stop) = (self.log(), stop.clone());
            let seed = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64);
            std::thread::spawn(move || {
                if let Err(e) = crate::sources::demo::run(log, options.rate, options.count, seed, &stop) {
                    tracing::error!(error = %e, "Demo generator stopped.");
                    stop.cancel();
                }
            })
        });
        // Collectors of `[[sources]]`: a failing one is logged and stops
        // alone; the pipeline keeps serving.
        let mut collectors = Vec::new();
        let sources = if roles.has(Role::Ingest) {
            self.config.sources.clone()
        } else {
            Vec::new()
        };
        for source in sources {
            let (data, output, metrics, stop) = (
                self.data.clone(),
                crate::sources::output::Output::Log(self.log(), self.config.server.limits()),
                self.metrics.clone(),
                stop.clone(),
            );
            collectors.push(tokio::spawn(async move {
                let name = source.name();
                if let Err(e) = source.run(&data, output, metrics, stop).await {
                    tracing::error!(source = %name, error = format!("{e:#}"), "A collector stopped.");
                }
            }));
        }
        stop.cancelled().await;
        for collector in collectors {
            let _ = collector.await;
        }
        if let Some(generator) = generator {
            let _ = tokio::task::spawn_blocking(move || generator.join()).await;
        }
        let mut result = Ok(());
        if let Some(server) = server {
            result = server
                .await
                .unwrap_or_else(|e| Err(PipelineError::Other(format!("HTTP server: {e}"))));
        }
        if let Some(path) = server_file {
            let _ = std::fs::remove_file(path);
        }
        // The scheduler stops with `stop` (a run under way is dropped, its
        // unfinished files removed by the next run).
        if let Some(scheduler) = scheduler {
            let _ = scheduler.await;
        }
        if let Some(exporter) = exporter {
            let _ = exporter.await;
        }
        // The API has stopped, so `posts.raw` no longer grows: enrich drains
        // it, then the archive drains `posts.enriched` and flushes.
        let mut tasks = Vec::new();
        tasks.extend(enrich_task.map(|task| (Some(enrich_stop), task)));
        tasks.extend(archive_task.map(|task| (Some(archive_stop.clone()), task)));
        tasks.extend(index_task.map(|task| (Some(archive_stop.clone()), task)));
        tasks.extend(speed_task.map(|task| (Some(archive_stop.clone()), task)));
        tasks.extend(warehouse_task.map(|task| (Some(archive_stop.clone()), task)));
        tasks.extend(opensearch_task.map(|task| (Some(archive_stop.clone()), task)));
        tasks.extend(lifecycle_task.map(|task| (None, task)));
        tasks.extend(retention_task.map(|task| (None, task)));
        for (token, task) in tasks {
            if let Some(token) = token {
                token.cancel();
            }
            let joined = tokio::task::spawn_blocking(move || {
                task.join()
                    .unwrap_or_else(|_| Err(PipelineError::Other("a pipeline thread panicked".into())))
            })
            .await
            .unwrap_or_else(|e| Err(PipelineError::Other(e.to_string())));
            if result.is_ok() {
                result = joined;
            }
        }
        result
    }
}

/// Runs one collector that sends to `remote` through a durable spool in
/// `data/spool/<source>/`, with the spool's sender beside it, until
/// `shutdown` (or until the remote refuses the token). Returns the
/// collector's own result and the batches still waiting in the spool.
pub async fn collect_to_remote(
    data: &Path,
    source: crate::sources::SourceConfig,
    remote: crate::sources::output::Remote,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> anyhow::Result<(anyhow::Result<()>, usize)> {
    use anyhow::Context as _;

    use crate::sources::output::{Output, SPOOL_DIR, Spool};
    let spool_dir = data.join(SPOOL_DIR).join(source.name());
    let spool =
        Arc::new(Spool::open(&spool_dir).with_context(|| format!("opening the spool {}", spool_dir.display()))?);
    let sender_stop = CancellationToken::new();
    let mut sender = {
        let (spool, metrics, stop) = (spool.clone(), metrics.clone(), sender_stop.clone());
        tokio::spawn(async move { spool.send(&remote, &metrics, &stop).await })
    };
    let collector = source.run(data, Output::Spool(spool.clone()), metrics, shutdown.clone());
    let result = tokio::select! {
        result = collector => result,
        sent = &mut sender => {
            // The sender only ends early on a refused token.
            shutdown.cancel();
            sent.context("spool sender")??;
            return Ok((Ok(()), spool.pending()?.len()));
        }
    };
    sender_stop.cancel();
    sender.await.context("spool sender")??;
    Ok((result, spool.pending()?.len()))
}

/// What feeds a running pipeline besides its `[[sources]]`.
#[derive(Debug, Default)]
pub struct Front {
    /// The HTTP API's listener.
    pub listener: Option<TcpListener>,
    /// The demo generator.
    pub demo: Option<DemoOptions>,
    /// The stages this process runs.
    pub roles: Roles,
    /// Whether the index runs at the lowest CPU priority, as in a backfill
    /// or an offline collector.
    pub background_index: bool,
    /// The index opens at once but starts reading only when this is
    /// cancelled (a backfill of files: once everything read is in the
    /// archive), or the pipeline stops.
    pub index_waits_for: Option<CancellationToken>,
}

/// A stage a process runs (`chorus run --roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The ingest API (`POST /v1/posts`), the `[[sources]]` collectors and
    /// the demo generator: what writes `posts.raw`.
    Ingest,
    /// The enrich stage (`posts.raw` → `posts.enriched`); on Kafka, a member
    /// of its consumer group.
    Enrich,
    /// The archive, the speed layer, the warehouse sink, the lifecycle and
    /// log retention.
    Archive,
    /// The search index.
    Index,
    /// Queries: SQL, views, search, the live stream, alerts and the
    /// dashboard.
    Serve,
    /// The batch views' scheduler and their export to the warehouse.
    Batch,
}

impl Role {
    /// Every role, in pipeline order.
    pub const ALL: [Role; 6] = [
        Role::Ingest,
        Role::Enrich,
        Role::Archive,
        Role::Index,
        Role::Serve,
        Role::Batch,
    ];

    /// The role's name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Enrich => "enrich",
            Role::Archive => "archive",
            Role::Index => "index",
            Role::Serve => "serve",
            Role::Batch => "batch",
        }
    }
}

/// The stages a process runs: all of them unless `--roles` says otherwise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles(std::collections::BTreeSet<Role>);

impl Default for Roles {
    fn default() -> Self {
        Roles(Role::ALL.into_iter().collect())
    }
}

impl std::str::FromStr for Roles {
    type Err = String;

    /// A comma-separated list of role names.
    fn from_str(text: &str) -> Result<Roles, String> {
        let mut roles = std::collections::BTreeSet::new();
        for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let role = Role::ALL.into_iter().find(|r| r.name() == name).ok_or_else(|| {
                let names: Vec<&str> = Role::ALL.iter().map(|r| r.name()).collect();
                format!("unknown role {name:?}: the roles are {}", names.join(", "))
            })?;
            roles.insert(role);
        }
        if roles.is_empty() {
            return Err("no role given: name at least one of ingest, enrich, archive, index, serve, batch".into());
        }
        Ok(Roles(roles))
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.iter().map(|r| r.name()).collect();
        f.write_str(&names.join(","))
    }
}

impl Roles {
    /// Whether the process runs `role`.
    pub fn has(&self, role: Role) -> bool {
        self.0.contains(&role)
    }

    /// Whether the process runs every stage.
    pub fn all(&self) -> bool {
        Role::ALL.iter().all(|r| self.has(*r))
    }

    /// Refuses a split that cannot work with `config`.
    pub fn check(&self, config: &Config) -> Result<(), String> {
        if self.all() {
            return Ok(());
        }
        if config.log.backend == LogBackend::Embedded {
            return Err(format!(
                "--roles {self}: the embedded log belongs to one process, which runs every stage; \
                 stages in separate processes share a Kafka log ([log] backend = \"kafka\")"
            ));
        }
        if self.has(Role::Batch) && !(self.has(Role::Archive) && self.has(Role::Serve)) {
            return Err(format!(
                "--roles {self}: batch builds the views over the archive of its own process: \
                 run it with archive and serve"
            ));
        }
        Ok(())
    }
}

/// The demo generator's settings.
#[derive(Debug, Clone, Copy)]
pub struct DemoOptions {
    /// Posts per second.
    pub rate: u32,
    /// Stop generating after this many.
    pub count: Option<u64>,
}

/// Applies `retention` to every topic, behind every consumer that reads it.
pub fn enforce_retention(log: &dyn Log, consumers: &Consumers, retention: &Retention) -> Result<u64, LogError> {
    let mut removed = 0;
    for topic in Topic::ALL {
        let safe = consumers.safe_offsets(log, topic)?;
        let n = log.enforce_retention(topic, retention, &safe)?;
        if n > 0 {
            tracing::info!(%topic, records = n, "Log retention removed old records.");
        }
        removed += n;
    }
    Ok(removed)
}

impl Pipeline {
    /// Runs a sink (`run`, on the log) on a thread of its own named
    /// `name`; when it ends, for whatever reason, the whole process stops
    /// (`stop`), a failure logged as `what` failing.
    fn spawn_sink<E: std::fmt::Display>(
        &self,
        name: &str,
        what: &'static str,
        stop: &CancellationToken,
        run: impl FnOnce(&dyn Log) -> Result<(), E> + Send + 'static,
    ) -> Result<std::thread::JoinHandle<Result<(), PipelineError>>, PipelineError> {
        let (log, stop) = (self.log(), stop.clone());
        spawn_thread(name, move || {
            let result = run(&*log).map_err(|e| {
                tracing::error!(error = %e, "{what} failed; stopping.");
                PipelineError::Other(e.to_string())
            });
            stop.cancel();
            result
        })
    }
}

fn spawn_thread(
    name: &str,
    f: impl FnOnce() -> Result<(), PipelineError> + Send + 'static,
) -> Result<std::thread::JoinHandle<Result<(), PipelineError>>, PipelineError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .map_err(|e| PipelineError::Other(format!("cannot start the {name} thread: {e}")))
}

/// Refuses an address that is not loopback when no token is configured.
pub fn check_listen(address: SocketAddr, tokens: &[String]) -> Result<(), PipelineError> {
    if tokens.is_empty() && !address.ip().is_loopback() {
        return Err(PipelineError::Other(format!(
            "refusing to listen on {address} without tokens: set [server] tokens or CHORUS_TOKENS, \
             or listen on 127.0.0.1"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_kafka() -> Config {
        let mut config = Config::default();
        config.log.backend = LogBackend::Kafka;
        config
    }

    #[test]
    fn roles_split_the_stages_that_can_run_apart() {
        let all: Roles = "ingest,enrich,archive,index,serve,batch".parse().unwrap();
        assert_eq!(all, Roles::default());
        assert!(
            all.check(&Config::default()).is_ok(),
            "one process runs all on the embedded log"
        );
        let kafka = on_kafka();
        for split in [
            "ingest",
            "enrich",
            "ingest, enrich",
            "archive,index",
            "archive,serve",
            "archive,serve,batch",
            "serve",
            "index,serve",
        ] {
            let roles: Roles = split.parse().unwrap();
            assert!(roles.check(&kafka).is_ok(), "{split}: {:?}", roles.check(&kafka));
            assert!(roles.check(&Config::default()).is_err(), "{split} on the embedded log");
        }
        for (split, says) in [
            ("serve,batch", "run it with archive and serve"),
            ("archive,batch", "run it with archive and serve"),
        ] {
            let error = split.parse::<Roles>().unwrap().check(&kafka).unwrap_err();
            assert!(error.contains(says), "{split}: {error}");
        }
        assert_eq!("enrich,ingest".parse::<Roles>().unwrap().to_string(), "ingest,enrich");
        assert!("ingest,,".parse::<Roles>().is_ok());
        assert!(" , ".parse::<Roles>().unwrap_err().contains("no role given"));
    }
}
