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
