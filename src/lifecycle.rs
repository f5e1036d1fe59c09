//! The archive's lifecycle (what the reference left to S3 lifecycle
//! rules): the small files of each closed hour compacted into one, and the
//! files compaction replaced removed once no query can still be reading
//! them. `chorus run` does a pass every `[lifecycle] interval_secs`;
//! `chorus lifecycle` (or `POST /v1/lifecycle`) does one now.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::sinks::archive::compact;
use crate::sinks::archive::{ArchiveConfig, ArchiveError};
use crate::wire::LifecycleRun;

/// `[lifecycle]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LifecycleConfig {
    /// Whether `chorus run` does a pass every `interval_secs`.
    pub scheduler: bool,
    /// Seconds between passes.
    pub interval_secs: u64,
    /// An hour partition is compacted once it ended this many seconds ago
    /// (posts created in it still arrive for a while).
    pub compact_after_secs: u64,
    /// ...and holds at least this many files.
    pub compact_min_files: usize,
    /// Seconds a replaced file is kept for the queries that listed it
    /// before the swap; never less than the longest query or batch run
    /// (`[query] max_seconds`, `[batch] max_seconds`) and a minute.
    pub keep_retired_secs: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            scheduler: true,
            interval_secs: 600,
            compact_after_secs: 3600,
            compact_min_files: 4,
            keep_retired_secs: 3600,
        }
    }
}

/// The lifecycle of one archive; a pass at a time.
pub struct Lifecycle {
    root: PathBuf,
    archive: ArchiveConfig,
    config: LifecycleConfig,
    /// How long retired files are kept: `keep_retired_secs`, or the
    /// floor the longest reader sets.
    keep_retired: Duration,
    gate: Arc<RwLock<()>>,
    metrics: Arc<Metrics>,
    /// Held by the pass under way: a scheduled pass and a requested one
    /// never rewrite the same hour at once.
    running: Mutex<()>,
}

impl Lifecycle {
    /// The lifecycle of the archive at `root`, whose sink and queries hold
    /// `gate`; `longest_reader` is the longest a query or batch run may
    /// take.
    pub fn new(
        root: PathBuf,
        archive: ArchiveConfig,
        config: LifecycleConfig,
        longest_reader: Duration,
        gate: Arc<RwLock<()>>,
        metrics: Arc<Metrics>,
    ) -> Lifecycle {
        let floor = longest_reader + Duration::from_secs(60);
        let keep_retired = Duration::from_secs(config.keep_retired_secs).max(floor);
        Lifecycle {
            root,
            archive,
            config,
            keep_retired,
            gate,
            metrics,
            running: Mutex::new(()),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LifecycleConfig {
        &self.config
    }

    /// One pass now (blocking: call it off the async runtime). Stops
    /// between hours once `stop` is cancelled.
    pub fn run(&self, stop: &CancellationToken) -> Result<LifecycleRun, ArchiveError> {
        let run = self.pass(stop);
        if run.is_err() {
            self.metrics.lifecycle_failures.add(1);
        }
        run
    }

    fn pass(&self, stop: &CancellationToken) -> Result<LifecycleRun, ArchiveError> {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let started = Instant::now();
        let now = chrono::Utc::now().timestamp_micros();
        let compaction = compact::compact(
            &self.root,
            &self.archive,
            &self.gate,
            now,
            Duration::from_secs(self.config.compact_after_secs),
            self.config.compact_min_files,
            stop,
        )?;
        let retired_removed = compact::remove_retired(&self.root, now, self.keep_retired)?;
        self.metrics.lifecycle_runs.add(1);
        self.metrics.archive_hours_compacted.add(compaction.hours);
        self.metrics
            .archive_files_compacted
            .add(compaction.files_before.saturating_sub(compaction.files_after));
        let run = LifecycleRun {
            compaction,
            retired_removed,
            seconds: started.elapsed().as_secs_f64(),
        };
        if run.compaction.hours > 0 || run.retired_removed > 0 {
            tracing::info!(
                hours = run.compaction.hours,
                files_before = run.compaction.files_before,
                rows = run.compaction.rows,
                retired_removed = run.retired_removed,
                seconds = run.seconds,
                "Archive lifecycle pass."
            );
        }
        Ok(run)
    }

    /// Passes every `interval_secs` until `stop` (blocking: the lifecycle
    /// thread's loop). A failed pass is logged and retried at the next.
    pub fn run_every_interval(&self, stop: &CancellationToken) {
        let pause = self.config.interval_secs.clamp(1, 86_400) * 10;
        while !stop.is_cancelled() {
            if let Err(e) = self.run(stop) {
                tracing::warn!(error = %e, "The archive lifecycle pass failed; will retry.");
            }
            for _ in 0..pause {
                if stop.is_cancelled() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}
