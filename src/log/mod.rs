//! The durable log between pipeline stages: topics split into partitions,
//! appends that are on disk before they return, and committed offsets per
//! consumer name. [`Log`] is the seam; [`fjall::FjallLog`] is the
//! embedded default, [`kafka::KafkaLog`] the log on a Kafka-protocol
//! broker; [`conformance`] holds the checks every backend must pass.
//!

pub mod conformance;
pub mod fjall;
pub mod json;
pub mod kafka;

use std::fmt;
use std::time::Duration;

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

    /// Its place in [`Topic::ALL`] (backends keep per-topic tables).
    pub fn index(self) -> usize {
        match self {
            Topic::Raw => 0,
            Topic::Enriched => 1,
            Topic::Dead => 2,
        }
    }

    /// The topic of a name (`posts.raw`), or its short form (`raw`).
    pub fn from_name(name: &str) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| t.name() == name || t.name().strip_prefix("posts.") == Some(name))
    }

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
    pub value: Value,
}

/// What a stage reads: its consumer name on a topic (offsets are
/// committed per consumer, topic and partition).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Input {
    /// The consumer name its offsets are committed under.
    pub consumer: &'static str,
    /// The topic read.
    pub topic: Topic,
}

/// The bytes of a record read back: shared with the backend where it can
/// (reading a record does not copy it), and seen as a `&[u8]`. The log's
/// own type: which backend's buffer it holds is not part of the seam.
#[derive(Clone)]
pub struct Value(Bytes);

#[derive(Clone)]
enum Bytes {
    /// The embedded log's buffer.
    Store(fjall::StoreBytes),
    /// Bytes from anywhere else.
    Shared(bytes::Bytes),
}

impl Value {
    /// A value of the embedded log's store.
    pub(crate) fn from_store(bytes: fjall::StoreBytes) -> Value {
        Value(Bytes::Store(bytes))
    }
}

impl std::ops::Deref for Value {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.0 {
            Bytes::Store(b) => b,
            Bytes::Shared(b) => b,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Value) -> bool {
        **self == **other
    }
}

impl Eq for Value {}

impl From<Vec<u8>> for Value {
    fn from(bytes: Vec<u8>) -> Self {
        Value(Bytes::Shared(bytes.into()))
    }
}

impl From<bytes::Bytes> for Value {
    fn from(bytes: bytes::Bytes) -> Self {
        Value(Bytes::Shared(bytes))
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
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
    /// The backend cannot be reached now (a broker down or not answering
    /// in time): the same call may succeed later. A write that failed so
    /// may have landed all the same, wholly (a transaction) or record by
    /// record (appends): callers retry only what is safe to repeat.
    #[error("log unavailable: {0}")]
    Unavailable(String),
}

/// A state entry: its key and value.
pub type StateEntry = (Vec<u8>, Vec<u8>);

/// What a stage reads from the log at a time at most, bytes (with posts of
/// up to 1 MiB, a batch of 2,000 records could otherwise be 2 GiB).
pub const READ_BYTES: usize = 16 << 20;

impl LogError {
    /// A storage failure, with the engine's message.
    pub(crate) fn storage(e: impl fmt::Display) -> LogError {
        LogError::Storage(e.to_string())
    }

    /// Refuses a partition beyond the `partitions` of `topic`.
    pub(crate) fn check_partition(topic: Topic, partition: u32, partitions: u32) -> Result<(), LogError> {
        if partition < partitions {
            Ok(())
        } else {
            Err(LogError::NoSuchPartition {
                topic,
                partitions,
                partition,
            })
        }
    }

    /// Whether the log can take no further write in this process (the
    /// storage engine poisoned itself after a failed write, as on a full
    /// disk): the pipeline must stop; a restart recovers from the journal.
    pub fn is_fatal(&self) -> bool {
        matches!(self, LogError::Storage(message) if message.contains("Poisoned"))
    }

    /// Whether the same call may succeed if made again later. A bad request
    /// (no such partition, a bad consumer name) or a storage failure never
    /// mends by itself; an unavailable backend may.
    pub fn retry_helps(&self) -> bool {
        matches!(self, LogError::Unavailable(_))
    }
}

/// Writes that land together or not at all: appends to any topics, state
/// entries and consumer commits. A stage that appends its output and
/// commits its input in one transaction never repeats output after a crash
/// (with Kafka: a producer transaction with `sendOffsetsToTransaction`).
#[derive(Debug, Default)]
pub struct Transaction<'a> {
    appends: Vec<(Topic, &'a [u8], &'a [u8])>,
    state: Vec<(&'a [u8], &'a [u8])>,
    removed_state: Vec<&'a [u8]>,
    commits: Vec<(&'a str, Topic, u32, u64)>,
}

impl<'a> Transaction<'a> {
    /// An empty transaction.
    pub fn new() -> Transaction<'a> {
        Transaction::default()
    }

    /// Appends `(key, value)` to `topic`, in the partition of `key`.
    pub fn append(&mut self, topic: Topic, key: &'a [u8], value: &'a [u8]) -> &mut Self {
        self.appends.push((topic, key, value));
        self
    }

    /// The commit of a transaction that appends the output of one input
    /// partition and commits it. A backend whose transactions are not
    /// atomic (Kafka without broker transactions) finds such output again
    /// when a crash came between the appends and the commit, by topic, key
    /// and value (a stage's output of the same input is the same bytes), and
    /// does not append it a second time when the stage replays its input.
    fn input_commit(&self) -> Option<(&'a str, Topic, u32, u64)> {
        match self.commits.as_slice() {
            [commit] if !self.appends.is_empty() => Some(*commit),
            _ => None,
        }
    }

    /// Sets a state entry (a small key-value store stages keep beside the
    /// log, e.g. which posts were already seen).
    pub fn put_state(&mut self, key: &'a [u8], value: &'a [u8]) -> &mut Self {
        self.state.push((key, value));
        self
    }

    /// Removes a state entry.
    pub fn remove_state(&mut self, key: &'a [u8]) -> &mut Self {
        self.removed_state.push(key);
        self
    }

    /// Commits `consumer`'s position in a topic partition.
    pub fn commit(&mut self, consumer: &'a str, topic: Topic, partition: u32, next_offset: u64) -> &mut Self {
        self.commits.push((consumer, topic, partition, next_offset));
        self
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.appends.is_empty() && self.state.is_empty() && self.removed_state.is_empty() && self.commits.is_empty()
    }
}

/// A partitioned, durable, replayable log (the embedded engine or Kafka).
///
/// The rules every backend keeps, checked by [`conformance`]:
///
/// * A partition's offsets increase but need not be dense nor start at 0
///   (Kafka's transaction markers and retention take offsets): a reader
///   goes on from the last record's offset + 1, and never counts records
///   to find an offset. [`Log::lag`] may count offsets that hold no record.
/// * A record goes to the partition of its key ([`partition_of`]).
/// * An error says whether trying again can help ([`LogError::retry_helps`]).
///
/// And the rule for callers: **every call may block** — on the disk here,
/// on the network with Kafka. A call is made from a thread that may block
/// (a stage's own thread, `tokio::task::spawn_blocking`, or the query
/// runtime, whose threads run nothing but queries), never on the HTTP
/// server's async workers, where one slow call would stall every request.
pub trait Log: Send + Sync {
    /// Partitions per topic.
    fn partitions(&self) -> u32;

    /// What tells this log from any other, for the archive, whose file
    /// names are this log's offsets: an embedded log's id (made when it was
    /// created), or a Kafka cluster's id and the topic prefix.
    fn identity(&self) -> String;

    /// Writes a transaction atomically; returns only once it is durable.
    /// The positions are those of its appends, in order.
    fn write(&self, tx: &Transaction<'_>) -> Result<Vec<Position>, LogError>;

    /// Appends `(key, value)` records; each goes to the partition of its
    /// key ([`partition_of`]). Returns only once every record is durable.
    fn append(&self, topic: Topic, records: &[(&[u8], &[u8])]) -> Result<Vec<Position>, LogError> {
        let mut tx = Transaction::new();
        for (key, value) in records {
            tx.append(topic, key, value);
        }
        self.write(&tx)
    }

    /// Up to `max` records of a partition from `offset` on, in order, and no
    /// more once they hold `max_bytes` (at least one record, whatever its
    /// size, so a reader always makes progress).
    fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError>;

    /// Records that `consumer` has processed everything before `next_offset`.
    fn commit(&self, consumer: &str, topic: Topic, partition: u32, next_offset: u64) -> Result<(), LogError> {
        self.write(Transaction::new().commit(consumer, topic, partition, next_offset))
            .map(drop)
    }

    /// The offset `consumer` resumes from (0 if it never committed).
    fn committed(&self, consumer: &str, topic: Topic, partition: u32) -> Result<u64, LogError>;

    /// A state entry written by [`Transaction::put_state`].
    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError>;

    /// Up to `max` state entries whose keys start with `prefix`, in key
    /// order, after the key `after` (from the first, without it): for
    /// sweeping a stage's state in bounded steps.
    fn scan_state(&self, prefix: &[u8], after: Option<&[u8]>, max: usize) -> Result<Vec<StateEntry>, LogError>;

    /// Brings this process's view of the state up to what other processes
    /// sharing the log wrote (a no-op where only one process writes it).
    fn refresh_state(&self) -> Result<(), LogError> {
        Ok(())
    }

    /// Disk bytes the state takes (0 where the backend cannot tell).
    fn state_bytes(&self) -> u64 {
        0
    }

    /// The offset the next append to each partition will get.
    fn end_offsets(&self, topic: Topic) -> Result<Vec<u64>, LogError>;

    /// Blocks until `topic` has records beyond `seen` (end offsets the
    /// caller knows), or `timeout` passes. Consumers call it when idle.
    fn wait_for_appends(&self, topic: Topic, seen: &[u64], timeout: Duration) {
        let _ = (topic, seen);
        std::thread::sleep(timeout);
    }

    /// Removes old records of `topic` by `retention`, but never a record at
    /// or past `safe[partition]` (what every consumer has committed).
    /// Returns how many records it removed. (Kafka applies its own
    /// retention: the default does nothing.)
    fn enforce_retention(&self, topic: Topic, retention: &Retention, safe: &[u64]) -> Result<u64, LogError> {
        let _ = (topic, retention, safe);
        Ok(0)
    }

    /// The partitions of `topic` that `consumer` reads in this process now,
    /// kept from any other process until the [`Owned`] is dropped: a stage
    /// asks for it before each round of reads and drops it before it waits.
    /// Processes sharing a log under the same consumer name split the
    /// partitions between them: on Kafka, they are one consumer group (eager
    /// rebalancing), a partition handed over only once its old
    /// owner's batch is written and committed, and the new owner's state
    /// caught up first. The embedded log belongs to one process: it owns
    /// every partition.
    fn owned(&self, consumer: &str, topic: Topic) -> Result<Owned, LogError> {
        let _ = (consumer, topic);
        Ok(Owned::all(self.partitions()))
    }

    /// The offset `consumer` resumes from in each partition of `topic`
    /// (one request on a broker, not one per partition).
    fn committed_all(&self, consumer: &str, topic: Topic) -> Result<Vec<u64>, LogError> {
        (0..self.partitions())
            .map(|partition| self.committed(consumer, topic, partition))
            .collect()
    }

    /// How many records `consumer` has not committed yet, summed over the
    /// topic's partitions.
    fn lag(&self, consumer: &str, topic: Topic) -> Result<u64, LogError> {
        let ends = self.end_offsets(topic)?;
        let committed = self.committed_all(consumer, topic)?;
        Ok(ends.iter().zip(&committed).map(|(end, c)| end.saturating_sub(*c)).sum())
    }
}

/// What [`Log::owned`] answers: partitions, held while this lives.
pub struct Owned {
    /// In order.
    pub partitions: Vec<u32>,
    _hold: Option<Box<dyn Send>>,
}

impl Owned {
    /// Every partition, held by nothing (a log of one process).
    pub fn all(partitions: u32) -> Owned {
        Owned {
            partitions: (0..partitions).collect(),
            _hold: None,
        }
    }

    /// `partitions`, held until `hold` is dropped.
    pub(crate) fn held(partitions: Vec<u32>, hold: Box<dyn Send>) -> Owned {
        Owned {
            partitions,
            _hold: Some(hold),
        }
    }
}

impl fmt::Debug for Owned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Owned").field("partitions", &self.partitions).finish()
    }
}

/// Wakes consumers waiting for appends of this process: a backend bumps it
/// after each append ([`Appended::notify`]) and [`Log::wait_for_appends`]
/// waits on it ([`Appended::wait_unless`]).
#[derive(Debug, Default)]
pub(crate) struct Appended {
    generation: std::sync::Mutex<u64>,
    woken: std::sync::Condvar,
}

impl Appended {
    /// Wakes every waiter.
    pub(crate) fn notify(&self) {
        if let Ok(mut generation) = self.generation.lock() {
            *generation += 1;
            self.woken.notify_all();
        }
    }

    /// Waits up to `timeout` for a notify, unless `ready` says there is
    /// news already. Appends notify under the lock `ready` is checked
    /// under, so none is missed between the check and the wait.
    pub(crate) fn wait_unless(&self, ready: impl Fn() -> bool, timeout: Duration) {
        let Ok(generation) = self.generation.lock() else {
            return;
        };
        if !ready() {
            let _ = self.woken.wait_timeout(generation, timeout);
        }
    }
}

/// How long the log keeps records that every consumer has processed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove records older than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest records while a topic partition is larger.
    pub max_bytes: Option<u64>,
}

/// A record of `topic` as JSON for people (`chorus tail`, `GET /v1/log`):
/// posts decoded from their log encoding, dead letters as stored; a record
/// that does not decode shows as its bytes in a string (lossy UTF-8).
pub fn record_json(topic: Topic, value: &[u8]) -> serde_json::Value {
    use crate::record::{Post, RawPost};
    let decoded = match topic {
        Topic::Raw => RawPost::from_log_bytes(value)
            .ok()
            .and_then(|p| serde_json::to_value(p).ok()),
        Topic::Enriched => Post::from_log_bytes(value)
            .ok()
            .and_then(|p| serde_json::to_value(p).ok()),
        Topic::Dead => serde_json::from_slice(value).ok(),
    };
    decoded.unwrap_or_else(|| serde_json::Value::String(String::from_utf8_lossy(value).into_owned()))
}

/// Appends accepted posts to `posts.raw`, durably, each keyed by its
/// platform and id; returns how many.
pub fn append_posts(
    log: &dyn Log,
    posts: Vec<crate::record::IncomingPost>,
    ingested_at: i64,
) -> Result<usize, LogError> {
    // Each post its own microsecond, later than any this process gave
    // before: versions of a post are ordered as they were sent, even within
    // one batch, so "the newest ingested_at" (posts_latest, the index, the
    // speed layer) names one version.
    let first = crate::record::reserve_ingest_times(ingested_at, posts.len());
    let records: Vec<(Vec<u8>, Vec<u8>)> = posts
        .into_iter()
        .enumerate()
        .map(|(i, incoming)| {
            let key = post_key(&incoming.platform, &incoming.id);
            let value = crate::record::RawPost {
                incoming,
                ingested_at: first + i as i64,
            }
            .to_log_bytes();
            (key, value)
        })
        .collect();
    if records.is_empty() {
        return Ok(0);
    }
    let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    log.append(Topic::Raw, &refs)?;
    Ok(records.len())
}

/// The partition key of a post: its platform and id.
pub fn post_key(platform: &str, id: &str) -> Vec<u8> {
    prefixed_post_key(b"", platform, id)
}

/// [`post_key`] after `prefix`, in one allocation (state keys are a stage's
/// prefix and the post key).
pub fn prefixed_post_key(prefix: &[u8], platform: &str, id: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(prefix.len() + platform.len() + 1 + id.len());
    key.extend_from_slice(prefix);
    key.extend_from_slice(platform.as_bytes());
    key.push(0);
    key.extend_from_slice(id.as_bytes());
    key
}

/// The partition of a key: FNV-1a, stable across versions and platforms, so
/// that a post always lands in the same partition.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    use std::hash::Hasher;
    let mut h = Fnv1a::new();
    h.write(key);
    (h.finish() % u64::from(partitions.max(1))) as u32
}

/// 64-bit FNV-1a: a hash that never changes between runs or versions, for
/// what is stored (partitions; the content hashes of earlier versions of
/// the enrich stage).
#[derive(Debug, Clone, Copy)]
pub struct Fnv1a(u64);

impl Fnv1a {
    /// The hasher before any byte.
    pub fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a::new()
    }
}

impl std::hash::Hasher for Fnv1a {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
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
