//! What chorus says on the wire: the bodies of its HTTP answers and the
//! records it stores for people to read (dead letters), shared by the
//! server (`http`), the commands (`cli`) and the collectors (`sources`),
//! which use these types instead of importing each other.

pub mod client;
pub mod search;
pub mod sql;

use serde::{Deserialize, Serialize};

use crate::mapping::Rejection;

/// Header of a `POST /v1/sql` text answer that was cut at a bound: why.
pub const TRUNCATED_HEADER: &str = "x-chorus-truncated";

/// The `202` body of `POST /v1/posts`.
#[derive(Debug, Serialize, Deserialize)]
pub struct IngestResponse {
    /// Posts durably accepted.
    pub accepted: usize,
    /// Lines refused, with reasons: the first 100
    /// ([`crate::mapping::MAX_LISTED_REJECTIONS`]).
    pub rejected: Vec<Rejection>,
    /// Lines refused in all, when more than are listed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejected_total: Option<usize>,
}

/// A record the pipeline could not use, as stored on `posts.dead` and in
/// `archive/errors`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Topic the record came from.
    pub topic: String,
    /// Its partition there.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// Why it was refused.
    pub error: String,
    /// The record as it was (lossy UTF-8).
    pub value: String,
    /// When it was refused, µs since the epoch.
    pub failed_at: i64,
}

/// One stage's position in one topic.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StageStatus {
    /// Topic read.
    pub topic: String,
    /// Consumer name.
    pub consumer: String,
    /// Records appended to the topic, over all partitions.
    pub end: u64,
    /// Records the consumer committed, over all partitions.
    pub committed: u64,
    /// `end - committed`.
    pub lag: u64,
    /// Per partition: `[end, committed]`.
    pub partitions: Vec<[u64; 2]>,
}

/// The status of a data directory's pipeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    /// One entry per stage.
    pub stages: Vec<StageStatus>,
    /// The search index, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<IndexStatus>,
    /// The archive's committed files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive: Option<ArchiveStatus>,
    /// The batch views.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<ViewStatus>,
}

/// What one query's `posts` covered, per partition of `posts.enriched`:
/// the archive's files hold its records before `archived[p]`, the log's
/// tail was read from there up to `until[p]` (so every record before
/// `until[p]`, and none after, was seen).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Per partition: the offset the archive's committed files reach.
    pub archived: Vec<u64>,
    /// Per partition: the offset the query read the log up to.
    pub until: Vec<u64>,
}

/// One version of a batch view (its `CURRENT` file).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewVersion {
    /// Its directory name.
    pub version: String,
    /// Rows.
    pub rows: u64,
    /// Bytes of its Parquet file.
    pub bytes: u64,
    /// The watermark: what of `posts` the run covered.
    pub snapshot: Snapshot,
    /// When the run began, µs since the epoch.
    pub started_at: i64,
    /// When it was made current.
    pub finished_at: i64,
    /// The SQL it ran.
    pub sql: String,
    /// Whether it holds the partial sums a speed layer adds to (else the
    /// view's own columns).
    #[serde(default)]
    pub partial: bool,
}

/// The outcome of one view's batch run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewRun {
    /// The view.
    pub view: String,
    /// The version made, when the run worked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ViewVersion>,
    /// Why it failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long it took.
    pub seconds: f64,
}

/// What a compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Compaction {
    /// Hour partitions rewritten.
    pub hours: u64,
    /// Files they held before.
    pub files_before: u64,
    /// Files they hold now (one each).
    pub files_after: u64,
    /// Posts rewritten.
    pub rows: u64,
    /// Bytes of the files replaced.
    pub bytes_before: u64,
    /// Bytes of the files written.
    pub bytes_after: u64,
    /// Hours left as they were, with the reason.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

/// What retention removed from the archive in a lifecycle pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// Hour partitions of posts past `[lifecycle] archive_retention_days`.
    pub hours: u64,
    /// Their files.
    pub files: u64,
    /// Days of dead letters past it.
    pub error_days: u64,
}

/// The answer of `POST /v1/lifecycle` (and what `chorus lifecycle` prints).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LifecycleRun {
    /// The archive's closed hours compacted.
    pub compaction: Compaction,
    /// What retention removed (nothing unless the archive has one).
    #[serde(default)]
    pub expired: Expired,
    /// Files compaction replaced earlier, removed now that no query can
    /// still read them.
    pub retired_removed: u64,
    /// How long the pass took.
    pub seconds: f64,
}

/// A batch view in `chorus status` and `GET /v1/status`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewStatus {
    /// Its name.
    pub name: String,
    /// When it runs (cron, UTC).
    pub schedule: String,
    /// Its next scheduled run, µs since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_run: Option<i64>,
    /// The version served.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ViewVersion>,
    /// Why the last run failed, when it did (the version above still serves).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When the last run failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<i64>,
    /// Whether a speed layer adds the posts past the version's snapshot.
    pub speed_layer: bool,
    /// Why it has none, when it has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch_only: Option<String>,
}

/// The archive's committed files on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveStatus {
    /// Files of posts.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files of dead letters.
    pub error_files: u64,
}

/// The search index's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IndexStatus {
    /// Documents searchable (one per post).
    pub documents: u64,
    /// Bytes of its segments on disk.
    pub bytes: u64,
}

/// A time in µs since the epoch as RFC 3339 (UTC, to the second).
pub fn format_micros(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros).map_or_else(
        || micros.to_string(),
        |t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    )
}
