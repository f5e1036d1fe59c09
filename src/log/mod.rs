//! The durable log between pipeline stages: topics split into partitions,
//! appends that are on disk before they return, and committed offsets per
//! consumer name. [`Log`] is the seam a Kafka backend will implement;
//! [`fjall::FjallLog`] is the embedded default.
//!
//! Not here yet (issue 3): retention by age and size, the stages that use
//! the log.

pub mod fjall;

use std::fmt;

/// The pipeline's topics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Topic {
    /// Posts as accepted from clients and collectors.
    Raw,
    /// Posts after cleanup and scoring.
    Enriched,
    /// Posts the enrich stage could not use, with the reason.
    Dead,
}

impl Topic {
    /// Every topic.
    pub const ALL: [Topic; 3] = [Topic::Raw, Topic::Enriched, Topic::Dead];

    /// The topic's name, as in Kafka.
    pub fn name(self) -> &'static str {
        match self {
            Topic::Raw => "posts.raw",
            Topic::Enriched => "posts.enriched",
            Topic::Dead => "posts.dead",
        }
    }
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where an appended record landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Position {
    /// The partition.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
}

/// One record read back from the log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// Its offset in the partition.
    pub offset: u64,
    /// The bytes appended.
    pub value: Vec<u8>,
}

/// Log failures. Appends either fully succeed (durably) or report one of these.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The storage engine failed.
    #[error("log storage: {0}")]
    Storage(String),
    /// A partition number beyond the topic's partitions.
    #[error("{topic} has {partitions} partitions, not partition {partition}")]
    NoSuchPartition {
        /// The topic.
        topic: Topic,
        /// How many partitions it has.
        partitions: u32,
        /// The partition asked for.
        partition: u32,
    },
    /// A consumer name that cannot be stored.
    #[error("consumer name {0:?}: use 1 to 64 characters of [A-Za-z0-9._-]")]
    BadConsumer(String),
}

/// A partitioned, durable, replayable log (the embedded engine or Kafka).
pub trait Log: Send + Sync {
    /// Partitions per topic.
    fn partitions(&self) -> u32;

    /// Appends `(key, value)` records; each goes to the partition of its
    /// key ([`partition_of`]). Returns only once every record is durable.
    fn append(&self, topic: Topic, records: &[(&[u8], &[u8])]) -> Result<Vec<Position>, LogError>;

    /// Up to `max` records of a partition from `offset` on, in order.
    fn read(&self, topic: Topic, partition: u32, offset: u64, max: usize) -> Result<Vec<Entry>, LogError>;

    /// Records that `consumer` has processed everything before `next_offset`.
    fn commit(&self, consumer: &str, topic: Topic, partition: u32, next_offset: u64) -> Result<(), LogError>;

    /// The offset `consumer` resumes from (0 if it never committed).
    fn committed(&self, consumer: &str, topic: Topic, partition: u32) -> Result<u64, LogError>;

    /// The offset the next append to each partition will get.
    fn end_offsets(&self, topic: Topic) -> Result<Vec<u64>, LogError>;

    /// How many records `consumer` has not committed yet, summed over the
    /// topic's partitions.
    fn lag(&self, consumer: &str, topic: Topic) -> Result<u64, LogError> {
        let mut lag = 0;
        for (partition, end) in self.end_offsets(topic)?.into_iter().enumerate() {
            let committed = self.committed(consumer, topic, partition as u32)?;
            lag += end.saturating_sub(committed);
        }
        Ok(lag)
    }
}

/// The partition of a key: FNV-1a, stable across versions and platforms, so
/// that a post always lands in the same partition.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % u64::from(partitions.max(1))) as u32
}

/// Whether `name` may be used as a consumer name.
pub(crate) fn valid_consumer(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values (FNV-1a 64, computed independently in Python): a
        // change would move every stored post to another partition.
        assert_eq!(partition_of(b"reddit\0t1_abc", 4), 3);
        assert_eq!(partition_of(b"reddit\0t1_abc", 7), 6);
        assert_eq!(partition_of(b"twitter\x001234", 4), 0);
        assert_eq!(partition_of(b"", 4), (0xcbf2_9ce4_8422_2325u64 % 4) as u32);
        let mut counts = [0usize; 4];
        for i in 0..4000 {
            counts[partition_of(format!("reddit\0t1_{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| (800..1200).contains(&c)), "{counts:?}");
    }

    #[test]
    fn consumer_names() {
        assert!(valid_consumer("enrich"));
        assert!(valid_consumer("archive-sink.v2"));
        assert!(!valid_consumer(""));
        assert!(!valid_consumer("a/b"));
        assert!(!valid_consumer(&"x".repeat(65)));
    }
}
