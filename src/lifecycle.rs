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
use crate::sinks::archive::{ArchiveConfig, ArchiveError, ObjectArchive, bucket, compact};
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
    /// Hour partitions of the archive (and days of dead letters) are
    /// removed once they ended this many days ago; 0: kept forever.
    pub archive_retention_days: u64,
    /// For `chorus lifecycle --s3-rules`: objects move to S3 Standard-IA
    /// this many days after they were written (0: never; S3 wants 30 or
    /// more).
    pub s3_infrequent_access_after_days: u64,
    /// ...and to S3 Glacier Instant Retrieval (still read in place by
    /// queries and Athena) after this many (0: never).
    pub s3_glacier_ir_after_days: u64,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig {
            scheduler: true,
            interval_secs: 600,
            compact_after_secs: 3600,
            compact_min_files: 4,
            keep_retired_secs: 3600,
            archive_retention_days: 0,
            s3_infrequent_access_after_days: 0,
            s3_glacier_ir_after_days: 0,
        }
    }
}

/// The S3 lifecycle configuration (the JSON of
/// `aws s3api put-bucket-lifecycle-configuration`) that does on a bucket
/// what `config` says, for the archive under `prefix` (`""` or ending in
/// `/`): its post files and dead letters move to Standard-IA and to Glacier
/// Instant Retrieval (a class queries and Athena still read in place) and
/// expire after the days given; incomplete multipart uploads are aborted
/// after a day. S3 counts days from when an object was written, chorus's
/// own retention from the hour a post was created in.
pub fn s3_rules(config: &LifecycleConfig, prefix: &str) -> Result<serde_json::Value, String> {
    let ia = config.s3_infrequent_access_after_days;
    let glacier = config.s3_glacier_ir_after_days;
    let expire = config.archive_retention_days;
    if ia > 0 && ia < 30 {
        return Err(format!(
            "[lifecycle] s3_infrequent_access_after_days = {ia}: S3 moves objects to Standard-IA after 30 days at \
             the earliest"
        ));
    }
    if ia > 0 && glacier > 0 && glacier <= ia {
        return Err(format!(
            "[lifecycle] s3_glacier_ir_after_days = {glacier} must come after s3_infrequent_access_after_days = {ia}"
        ));
    }
    let last_move = ia.max(glacier);
    if expire > 0 && last_move > 0 && expire <= last_move {
        return Err(format!(
            "[lifecycle] archive_retention_days = {expire} must come after the last move to another class \
             (day {last_move})"
        ));
    }
    let mut transitions = Vec::new();
    if ia > 0 {
        transitions.push(serde_json::json!({ "Days": ia, "StorageClass": "STANDARD_IA" }));
    }
    if glacier > 0 {
        transitions.push(serde_json::json!({ "Days": glacier, "StorageClass": "GLACIER_IR" }));
    }
    let mut rules = Vec::new();
    for (id, dir) in [
        ("chorus-archive-posts", crate::sinks::archive::POSTS_DIR),
        ("chorus-archive-dead-letters", crate::sinks::archive::ERRORS_DIR),
    ] {
        if transitions.is_empty() && expire == 0 {
            continue;
        }
        let mut rule = serde_json::json!({
            "ID": id,
            "Filter": { "Prefix": format!("{prefix}{dir}/") },
            "Status": "Enabled",
        });
        if !transitions.is_empty() {
            rule["Transitions"] = serde_json::json!(transitions);
        }
        if expire > 0 {
            rule["Expiration"] = serde_json::json!({ "Days": expire });
        }
        rules.push(rule);
    }
    rules.push(serde_json::json!({
        "ID": "chorus-archive-incomplete-uploads",
        "Filter": { "Prefix": prefix },
        "Status": "Enabled",
        "AbortIncompleteMultipartUpload": { "DaysAfterInitiation": 1 },
    }));
    Ok(serde_json::json!({ "Rules": rules }))
}

/// The lifecycle of one archive; a pass at a time.
pub struct Lifecycle {
    root: PathBuf,
    /// The archive, when it is in a bucket (`root` is then its staging
    /// directory).
    objects: Option<ObjectArchive>,
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
            objects: None,
            archive,
            config,
            keep_retired,
            gate,
            metrics,
            running: Mutex::new(()),
        }
    }

    /// The lifecycle of the archive in a bucket, `store`; `root` is its
    /// staging directory.
    pub fn in_bucket(mut self, store: ObjectArchive) -> Lifecycle {
        self.objects = Some(store);
        self
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
        let closed = Duration::from_secs(self.config.compact_after_secs);
        let cutoff = match self.config.archive_retention_days {
            0 => None,
            days => {
                let keep = i64::try_from(days.saturating_mul(86_400_000_000)).unwrap_or(i64::MAX);
                Some(now.saturating_sub(keep))
            }
        };
        let (compaction, expired, retired_removed) = match &self.objects {
            None => {
                let compaction = compact::compact(
                    &self.root,
                    &self.archive,
                    &self.gate,
                    now,
                    closed,
                    self.config.compact_min_files,
                    stop,
                )?;
                let expired = match cutoff {
                    None => compact::Expired::default(),
                    Some(cutoff) => compact::expire(&self.root, &self.gate, now, cutoff)?,
                };
                (
                    compaction,
                    expired,
                    compact::remove_retired(&self.root, now, self.keep_retired)?,
                )
            }
            Some(store) => {
                let compaction = bucket::compact(
                    store,
                    &self.root,
                    (&self.archive, &self.gate),
                    now,
                    (closed, self.config.compact_min_files),
                    stop,
                )?;
                let expired = match cutoff {
                    None => compact::Expired::default(),
                    Some(cutoff) => bucket::expire(store, now, cutoff)?,
                };
                (
                    compaction,
                    expired,
                    bucket::remove_retired(store, now, self.keep_retired)?,
                )
            }
        };
        self.metrics.archive_hours_expired.add(expired.hours);
        self.metrics.lifecycle_runs.add(1);
        self.metrics.archive_hours_compacted.add(compaction.hours);
        self.metrics
            .archive_files_compacted
            .add(compaction.files_before.saturating_sub(compaction.files_after));
        let run = LifecycleRun {
            compaction,
            expired,
            retired_removed,
            seconds: started.elapsed().as_secs_f64(),
        };
        if run.compaction.hours > 0 || run.retired_removed > 0 || run.expired != compact::Expired::default() {
            tracing::info!(
                hours = run.compaction.hours,
                expired_hours = run.expired.hours,
                expired_error_days = run.expired.error_days,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ia: u64, glacier: u64, expire: u64) -> LifecycleConfig {
        LifecycleConfig {
            s3_infrequent_access_after_days: ia,
            s3_glacier_ir_after_days: glacier,
            archive_retention_days: expire,
            ..LifecycleConfig::default()
        }
    }

    #[test]
    fn s3_rules_move_and_expire_posts_and_dead_letters_under_the_prefix() {
        let rules = s3_rules(&config(30, 90, 365), "team/chorus/").unwrap();
        let rules = rules["Rules"].as_array().unwrap();
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[0]["Filter"]["Prefix"], "team/chorus/posts/");
        assert_eq!(rules[1]["Filter"]["Prefix"], "team/chorus/errors/");
        assert_eq!(
            rules[0]["Transitions"],
            serde_json::json!([
                { "Days": 30, "StorageClass": "STANDARD_IA" },
                { "Days": 90, "StorageClass": "GLACIER_IR" }
            ])
        );
        assert_eq!(rules[0]["Expiration"]["Days"], 365);
        assert_eq!(rules[2]["AbortIncompleteMultipartUpload"]["DaysAfterInitiation"], 1);
        assert_eq!(rules[2]["Filter"]["Prefix"], "team/chorus/");
        // Nothing configured: only the cleanup of failed uploads.
        let rules = s3_rules(&LifecycleConfig::default(), "").unwrap();
        assert_eq!(rules["Rules"].as_array().unwrap().len(), 1);
        // Expiration alone.
        let rules = s3_rules(&config(0, 0, 90), "").unwrap();
        assert!(rules["Rules"][0].get("Transitions").is_none());
        assert_eq!(rules["Rules"][0]["Expiration"]["Days"], 90);
    }

    #[test]
    fn s3_rules_refuse_what_s3_would_and_say_why() {
        for (c, says) in [
            (config(10, 0, 0), "30 days at the earliest"),
            (config(60, 30, 0), "must come after s3_infrequent_access_after_days"),
            (config(30, 90, 60), "must come after the last move"),
        ] {
            let e = s3_rules(&c, "").unwrap_err();
            assert!(e.contains(says), "{e}");
        }
    }
}
