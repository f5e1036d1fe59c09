//! The archive sink (Firehose → S3): reads `posts.enriched` and writes
//! zstd Parquet files, Hive-partitioned by creation time,
//! `archive/posts/dt=YYYY-MM-DD/hour=HH/p<partition>-<first>-<last>.parquet`;
//! and reads `posts.dead` into `archive/errors/dt=YYYY-MM-DD/…ndjson`.
//!
//! A file rolls when it reaches a size or an age bound (the Firehose
//! buffering hints). It is written under `archive/.tmp`, synced, renamed
//! into place, and only then is the log offset committed. The name derives
//! from the log partition and the offsets it covers, and leftovers of a
//! crash between rename and commit are removed at start, so a replay
//! rewrites the same file and never adds a duplicate.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::time::{Duration, Instant};
use tokio::sync::RwLock;

use chrono::{Datelike, NaiveDate};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::log::{Entry, Log, LogError, Topic};
use crate::metrics::Metrics;
use crate::record::batch::{partition_of_time, schema, to_record_batch, with_partition_columns};
use crate::record::{Limits, PostView, column};
use crate::sinks::consume::{self, Commit, Committed, Input, Sink};
use crate::transforms::enrich::{DeadLetter, dead_letter};

pub mod bucket;
pub mod compact;
pub mod lease;
pub mod objects;

pub use objects::{Endpoint, ObjectArchive};

/// The archive's consumer name on `posts.enriched`.
pub const CONSUMER: &str = "archive";
/// Its consumer name on `posts.dead`.
pub const ERRORS_CONSUMER: &str = "archive-errors";
/// What the archive reads for its post files.
pub const INPUT: Input = Input {
    consumer: CONSUMER,
    topic: Topic::Enriched,
};
/// What it reads for its dead-letter files.
pub const ERRORS_INPUT: Input = Input {
    consumer: ERRORS_CONSUMER,
    topic: Topic::Dead,
};
/// Directory of the post files, under the archive root.
pub const POSTS_DIR: &str = "posts";
/// The archive's directory, under the data directory.
pub const DIR: &str = "archive";
/// Directory of the dead letters, under the archive root.
pub const ERRORS_DIR: &str = "errors";
const TMP_DIR: &str = ".tmp";
/// Files open at once per log partition (one per Hive partition its posts
/// fall in); more, as in a backfill of unsorted posts, rolls them early.
const MAX_OPEN_FILES: usize = 24;
/// Columns written without dictionary encoding.
const UNIQUE_COLUMNS: &[&str] = &[
    column::ID,
    column::BODY,
    column::TEXT,
    column::URL,
    column::PARENT_ID,
    column::CREATED_AT,
    column::INGESTED_AT,
    column::POLARITY,
    column::SUBJECTIVITY,
    column::VADER_NEG,
    column::VADER_NEU,
    column::VADER_POS,
    column::VADER_COMPOUND,
];

/// Settings of the archive sink.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveConfig {
    /// Where the archive is: `file:///an/absolute/directory`; none, the
    /// data directory's `archive/`. Processes that share a Kafka log share
    /// the archive through it (`chorus run --roles serve` on another
    /// data directory reads the files the archive process writes).
    pub url: Option<String>,
    /// Files roll once the posts buffered for them, all log partitions
    /// together, reach this many bytes as on the log (Firehose's buffer
    /// size, one buffer per stream, measured before compression): it also
    /// bounds the memory the buffered posts take.
    pub max_file_bytes: u64,
    /// A file rolls once its first post is this many seconds old (Firehose:
    /// buffer interval).
    pub max_file_age_secs: u64,
    /// Rows per Parquet row group.
    pub row_group_rows: usize,
    /// zstd level of the Parquet pages.
    pub zstd_level: i32,
    /// An `s3://` archive's S3-compatible server (path-style requests);
    /// none: AWS.
    pub endpoint: Option<String>,
    /// An `s3://` archive's region; none: `AWS_REGION`, else `us-east-1`.
    pub region: Option<String>,
    /// Whether an `endpoint` may be plain `http://`.
    pub allow_http: bool,
    /// An `s3://` archive's writer lease lasts this long unrenewed, seconds
    /// ([`lease`]): after a writer is killed, another process may take the
    /// archive over once it has passed; the machines' clocks may differ by
    /// up to a third of it.
    pub lease_secs: u64,
}

/// Where an archive is, as `[archive] url` says.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// A directory on this machine.
    Dir(PathBuf),
    /// A bucket (and prefix) of an object store: `s3://bucket/prefix`.
    Objects(url::Url),
}

impl Default for ArchiveConfig {
    fn default() -> Self {
        ArchiveConfig {
            url: None,
            max_file_bytes: 64 * 1024 * 1024,
            max_file_age_secs: 60,
            row_group_rows: 128 * 1024,
            zstd_level: 1,
            endpoint: None,
            region: None,
            allow_http: false,
            lease_secs: 30,
        }
    }
}

impl ArchiveConfig {
    /// The archive's local directory: `url`'s, or `data`'s `archive/`,
    /// which for an `s3://` archive holds the files being written before
    /// they are put, and the batch views.
    pub fn root(&self, data: &Path) -> Result<PathBuf, String> {
        Ok(match self.location(data)? {
            Location::Dir(dir) => dir,
            Location::Objects(_) => data.join(DIR),
        })
    }

    /// Where the archive is: `url`'s directory or bucket, or `data`'s
    /// `archive/`.
    pub fn location(&self, data: &Path) -> Result<Location, String> {
        let Some(text) = &self.url else {
            return Ok(Location::Dir(data.join(DIR)));
        };
        let url = url::Url::parse(text).map_err(|e| {
            format!(
                "[archive] url = {text:?} is not a URL ({e}): give file:///an/absolute/directory or s3://bucket/prefix"
            )
        })?;
        match url.scheme() {
            "file" => url.to_file_path().map(Location::Dir).map_err(|()| {
                format!(
                    "[archive] url = {text:?}: a file URL names an absolute directory on this machine, as \
                     file:///var/lib/chorus/archive"
                )
            }),
            "s3" if url.host_str().is_some_and(|b| !b.is_empty()) => Ok(Location::Objects(url)),
            "s3" => Err(format!(
                "[archive] url = {text:?} names no bucket: give s3://bucket/prefix"
            )),
            scheme => Err(format!(
                "[archive] url = {text:?}: {scheme}:// is not an archive location; give file:///an/absolute/directory \
                 or s3://bucket/prefix"
            )),
        }
    }

    /// How an `s3://` archive's store is reached.
    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http,
        }
    }
}

/// Failures of the archive sink.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading or committing the log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// A file could not be written.
    #[error("archive {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Parquet encoding failed.
    #[error("archive parquet: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow conversion failed.
    #[error("archive arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    /// A request to the object store failed.
    #[error("archive {key}: {source}")]
    Store {
        /// The object (its URL).
        key: String,
        /// The cause.
        source: object_store::Error,
    },
    /// The archive's store cannot be reached as configured.
    #[error("{0}")]
    Other(String),
    /// Another process writes this archive.
    #[error(
        "the archive {0} is written by another chorus process: one process runs the archive role per archive \
         ([archive] url); the others read it (--roles serve)"
    )]
    InUse(PathBuf),
    /// Another process holds the writer lease of this archive in a bucket.
    #[error(
        "the archive {url} is written by another chorus process ({holder}; its lease runs out in {seconds} s \
         unless renewed): one process runs the archive role per archive ([archive] url); the others read it \
         (--roles serve)"
    )]
    Leased {
        /// The archive.
        url: String,
        /// Who holds the lease.
        holder: String,
        /// Seconds until it runs out unrenewed.
        seconds: u64,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// How the archive's Parquet files are written (by the sink and by
/// compaction alike).
pub(crate) fn writer_properties(config: &ArchiveConfig) -> Result<WriterProperties, ArchiveError> {
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(config.zstd_level)?))
        .set_max_row_group_row_count(Some(config.row_group_rows.max(1)));
    // Mostly distinct values: a dictionary costs time and memory and
    // saves nothing.
    for column in UNIQUE_COLUMNS {
        props = props.set_column_dictionary_enabled((*column).into(), false);
    }
    Ok(props.build())
}

/// The directory of one Hive partition, relative to the archive root.
fn partition_dir(dt: NaiveDate, hour: u32) -> PathBuf {
    Path::new(POSTS_DIR)
        .join(format!("dt={:04}-{:02}-{:02}", dt.year(), dt.month(), dt.day()))
        .join(format!("hour={hour:02}"))
}

/// The file name for log `partition`, offsets `first..=last`.
fn file_name(partition: u32, first: u64, last: u64, extension: &str) -> String {
    format!("p{partition}-{first:012}-{last:012}.{extension}")
}

/// `(partition, first, last)` of an archive file name.
pub fn parse_file_name(name: &str) -> Option<(u32, u64, u64)> {
    let stem = name.strip_suffix(".parquet").or_else(|| name.strip_suffix(".ndjson"))?;
    let mut parts = stem.strip_prefix('p')?.split('-');
    let partition = parts.next()?.parse().ok()?;
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((partition, first, last))
}

/// Where an archive's committed files are, for `chorus status`.
#[derive(Debug, Clone)]
pub enum Stored {
    /// In this directory.
    Dir(PathBuf),
    /// In this bucket.
    Objects(Arc<ObjectArchive>),
}

impl Stored {
    /// The committed files (a listing: call off the async threads).
    pub fn summary(&self) -> Result<crate::wire::ArchiveStatus, ArchiveError> {
        match self {
            Stored::Dir(root) => summary(root),
            Stored::Objects(store) => store.summary(),
        }
    }
}

/// The committed files under the archive's `root` (files being written
/// are not counted).
pub fn summary(root: &Path) -> Result<crate::wire::ArchiveStatus, ArchiveError> {
    let mut status = crate::wire::ArchiveStatus::default();
    for path in files_under(&root.join(POSTS_DIR))? {
        if let Ok(meta) = fs::metadata(&path) {
            status.files += 1;
            status.bytes += meta.len();
        }
    }
    status.error_files = files_under(&root.join(ERRORS_DIR))?.len() as u64;
    Ok(status)
}

/// Every file under `dir`, recursively (missing directory: none).
pub fn files_under(dir: &Path) -> Result<Vec<PathBuf>, ArchiveError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io(&d)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io(&d))?;
            let path = entry.path();
            if entry.file_type().map_err(io(&path))?.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    Ok(out)
}

/// Syncs a directory so that a rename in it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Creates `dir` and whatever is missing of its parents, syncing each new
/// directory's parent, so that after a power loss the directory (and the
/// file renamed into it) is still reachable from the archive root.
pub(crate) fn create_dir_synced(dir: &Path) -> Result<(), ArchiveError> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent() {
        create_dir_synced(parent)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    }
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

/// What the archive has read but not committed yet, per log partition, as
/// Arrow batches of `posts` (with `dt` and `hour`): queries use them
/// instead of decoding the same posts again.
#[derive(Debug, Default)]
pub struct ArchiveTail {
    parts: std::sync::Mutex<Vec<Option<PartitionTail>>>,
    /// Set once nothing more will come (an offline run whose writer is
    /// done and whose enrich stage has caught up): the archive then rolls
    /// what it holds at once rather than at its age bound.
    input_done: std::sync::atomic::AtomicBool,
}

/// One partition's part of [`ArchiveTail`].
#[derive(Debug, Clone, Default)]
pub struct PartitionTail {
    /// The batches hold the offsets from the committed one up to this.
    pub next: u64,
    /// Posts read since the last commit.
    pub batches: Vec<arrow::array::RecordBatch>,
}

impl ArchiveTail {
    /// A partition's buffered posts, if the archive is running.
    pub fn get(&self, partition: u32) -> Option<PartitionTail> {
        let parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        parts.get(partition as usize).cloned().flatten()
    }

    /// Tells the archive that its input is complete: it rolls its files
    /// as soon as it has read everything.
    pub fn input_done(&self) {
        self.input_done.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    fn is_input_done(&self) -> bool {
        self.input_done.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn update(&self, partition: u32, f: impl FnOnce(&mut PartitionTail)) {
        let mut parts = self.parts.lock().unwrap_or_else(|e| e.into_inner());
        if parts.len() <= partition as usize {
            parts.resize(partition as usize + 1, None);
        }
        f(parts[partition as usize].get_or_insert_with(PartitionTail::default));
    }
}

/// Where the archive sink puts its files.
#[derive(Debug)]
pub enum Placement {
    /// Renamed (and synced) into a directory: the archive's root.
    Dir(PathBuf),
    /// Put into an object store; files are written in `staging` first.
    Objects {
        /// A local directory for the files being written.
        staging: PathBuf,
        /// The archive.
        store: Box<ObjectArchive>,
        /// The same archive, reached on connections of its own: the writer
        /// lease is renewed from a thread of its own ([`lease`]).
        lease: Box<ObjectArchive>,
    },
}

/// The archive sink, ready to run.
pub struct Archive {
    /// The archive's directory, or the staging directory of an archive on
    /// an object store.
    root: PathBuf,
    objects: Option<ObjectArchive>,
    log: Arc<dyn Log>,
    config: ArchiveConfig,
    metrics: Arc<Metrics>,
    /// Held for writing while files are renamed and offsets committed;
    /// queries hold it for reading while they list files and read offsets,
    /// so that no post is seen both in a file and in the log.
    gate: Arc<RwLock<()>>,
    tail: Arc<ArchiveTail>,
    /// Held while the archive is open: one process writes an archive.
    _lock: File,
    /// An archive in a bucket: its writer lease, held while it is open.
    lease: Option<lease::Lease>,
}

/// The file a process writing the archive holds a lock on.
const LOCK_FILE: &str = ".lock";
/// The file (or object, in a bucket) naming the log the archive belongs to.
pub const LOG_FILE: &str = ".log";
/// Largest `LOG_FILE` read (a log's identity is well under it).
const LOG_FILE_BYTES: u64 = 4096;

/// Checks that the archive at `root` (or in `objects`) belongs to the log
/// `identity`, or marks it so if it names none yet. Its file names are that
/// log's offsets: opened from another log (a data directory whose log was
/// made anew, another machine's), every file would look uncommitted and be
/// deleted as a crash's leftover, and new files would reuse old names.
fn bind_to_log(root: &Path, objects: Option<&ObjectArchive>, identity: &str) -> Result<(), ArchiveError> {
    if read_log_file(root, objects, identity)? {
        return Ok(());
    }
    // Written whole, then renamed (or put whole) into place.
    let tmp = root.join(format!("{LOG_FILE}.tmp"));
    let mut file = File::create(&tmp).map_err(io(&tmp))?;
    file.write_all(identity.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io(&tmp))?;
    match objects {
        None => {
            let path = root.join(LOG_FILE);
            fs::rename(&tmp, &path).map_err(io(&path))?;
            sync_dir(root)
        }
        Some(store) => {
            store.put_file(&tmp, LOG_FILE)?;
            fs::remove_file(&tmp).map_err(io(&tmp))
        }
    }
}

/// For a process that reads an archive another process writes (`--roles
/// serve`): fails if the archive at `root` (or in `objects`) belongs to
/// another log than `identity`, whose offsets its queries would take its
/// file names for. An archive that names no log yet (its writer has not
/// started) is fine.
pub fn check_log(root: &Path, objects: Option<&ObjectArchive>, identity: &str) -> Result<(), ArchiveError> {
    read_log_file(root, objects, identity).map(|_| ())
}

/// Whether the archive names `identity` as its log (false: it names none);
/// an error if it names another.
fn read_log_file(root: &Path, objects: Option<&ObjectArchive>, identity: &str) -> Result<bool, ArchiveError> {
    let (place, found) = match objects {
        None => {
            let path = root.join(LOG_FILE);
            let found = match File::open(&path) {
                Ok(file) => {
                    use std::io::Read as _;
                    let mut text = String::new();
                    file.take(LOG_FILE_BYTES).read_to_string(&mut text).map_err(io(&path))?;
                    Some(text)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(io(&path)(e)),
            };
            (root.display().to_string(), found)
        }
        Some(store) => {
            let found = match store.read_small(LOG_FILE, LOG_FILE_BYTES) {
                Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
                Err(ArchiveError::Store {
                    source: object_store::Error::NotFound { .. },
                    ..
                }) => None,
                Err(e) => return Err(e),
            };
            (store.url().to_string(), found)
        }
    };
    match found {
        Some(theirs) if theirs.trim() == identity => Ok(true),
        Some(theirs) => Err(ArchiveError::Other(format!(
            "the archive {place} belongs to another log ({}) than this data directory's ({identity}): its file \
             names are that log's offsets, which mean nothing in this one (a writer would take every file for \
             a crash's leftover and delete it; queries would count posts twice or not at all). Give this \
             process the log the archive belongs to, or another [archive] url (move the archive aside to keep \
             it)",
            theirs.trim()
        ))),
        None => Ok(false),
    }
}

impl Archive {
    /// The archive at `placement` (a directory is created), after removing
    /// what a crash left uncommitted.
    pub fn open(
        placement: Placement,
        log: Arc<dyn Log>,
        config: ArchiveConfig,
        metrics: Arc<Metrics>,
        gate: Arc<RwLock<()>>,
        tail: Arc<ArchiveTail>,
    ) -> Result<Archive, ArchiveError> {
        let (root, objects) = match placement {
            Placement::Dir(root) => (root, None),
            Placement::Objects { staging, store, lease } => (staging, Some((*store, *lease))),
        };
        let root = root.as_path();
        fs::create_dir_all(root).map_err(io(root))?;
        // On an object store this only keeps a second process on this
        // machine from writing through the same staging directory.
        let lock_path = root.join(LOCK_FILE);
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(ArchiveError::InUse(root.to_path_buf()));
            }
            Err(fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        // In a bucket, the lease keeps any other process, on any machine,
        // from writing the archive; taken before anything is removed.
        let (objects, lease) = match objects {
            Some((store, lease)) => (
                Some(store),
                Some(lease::Lease::acquire(
                    lease,
                    root,
                    Duration::from_secs(config.lease_secs),
                )?),
            ),
            None => (None, None),
        };
        bind_to_log(root, objects.as_ref(), &log.identity())?;
        let tmp = root.join(TMP_DIR);
        if tmp.exists() {
            fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
        }
        fs::create_dir_all(&tmp).map_err(io(&tmp))?;
        if objects.is_none() {
            create_dir_synced(&root.join(POSTS_DIR))?;
            compact::recover(root)?;
        }
        for (dir, consumer, topic) in [
            (POSTS_DIR, CONSUMER, Topic::Enriched),
            (ERRORS_DIR, ERRORS_CONSUMER, Topic::Dead),
        ] {
            let uncommitted = |name: &str| -> Result<bool, ArchiveError> {
                Ok(match parse_file_name(name) {
                    Some((p, first, _)) => p < log.partitions() && first >= log.committed(consumer, topic, p)?,
                    None => false,
                })
            };
            // Placed but never committed: the replay writes it again.
            match &objects {
                None => {
                    for path in files_under(&root.join(dir))? {
                        if uncommitted(path.file_name().and_then(|n| n.to_str()).unwrap_or_default())? {
                            fs::remove_file(&path).map_err(io(&path))?;
                        }
                    }
                }
                Some(store) => {
                    for (key, _) in store.list(dir)? {
                        if uncommitted(key.rsplit('/').next().unwrap_or_default())? {
                            store.delete(&key)?;
                        }
                    }
                }
            }
        }
        Ok(Archive {
            root: root.to_path_buf(),
            objects,
            log,
            config,
            metrics,
            gate,
            tail,
            _lock: lock,
            lease,
        })
    }

    /// Puts the finished file `tmp` at `rel` (a path under the archive):
    /// renamed into its directory and synced, or put whole into the
    /// object store. Durable when this returns.
    fn place(&self, tmp: &Path, rel: &Path) -> Result<(), ArchiveError> {
        match &self.objects {
            None => {
                let target = self.root.join(rel);
                let dir = target.parent().unwrap_or(&self.root);
                create_dir_synced(dir)?;
                fs::rename(tmp, &target).map_err(io(&target))?;
                sync_dir(dir)
            }
            Some(store) => {
                if let Some(lease) = &self.lease {
                    lease.check()?;
                }
                let key: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
                store.put_file(tmp, &key.join("/"))?;
                fs::remove_file(tmp).map_err(io(tmp))
            }
        }
    }

    /// A Parquet file being written at `tmp`.
    fn create_file(&self, tmp: PathBuf) -> Result<OpenFile, ArchiveError> {
        let file = File::create(&tmp).map_err(io(&tmp))?;
        let handle = file.try_clone().map_err(io(&tmp))?;
        let writer = ArrowWriter::try_new(file, schema(), Some(writer_properties(&self.config)?))?;
        Ok(OpenFile { tmp, handle, writer })
    }

    /// Runs until `shutdown`, drains what the log still holds, then
    /// flushes and commits (the shared [`consume::run`] loop, feeding the
    /// post files and the dead-letter files).
    pub fn run(self, shutdown: CancellationToken) -> Result<(), ArchiveError> {
        let mut posts = PostsSink {
            archive: &self,
            files: Vec::new(),
        };
        let mut errors = ErrorsSink {
            archive: &self,
            files: Vec::new(),
        };
        consume::run(&*self.log, &mut [&mut posts, &mut errors], shutdown)
    }
}

/// `posts.enriched` into Parquet files.
struct PostsSink<'a> {
    archive: &'a Archive,
    /// Per log partition.
    files: Vec<PostFiles>,
}

impl Sink for PostsSink<'_> {
    type Error = ArchiveError;

    fn input(&self) -> Input {
        INPUT
    }

    fn start(&mut self, committed: &[u64]) -> Result<Option<Vec<u64>>, ArchiveError> {
        self.files = (0..committed.len() as u32).map(PostFiles::new).collect();
        for (partition, next) in committed.iter().enumerate() {
            self.archive.tail.update(partition as u32, |t| {
                t.next = *next;
                t.batches.clear();
            });
        }
        Ok(None)
    }

    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), ArchiveError> {
        let archive = self.archive;
        let files = &mut self.files[partition as usize];
        let mut groups: BTreeMap<(NaiveDate, u32), Vec<PostView<'_>>> = BTreeMap::new();
        let mut dead = Vec::new();
        for entry in entries {
            files.buffered_bytes += entry.value.len() as u64;
            // A record this stage cannot store goes to the dead letters
            // (before its offset commits), never into a file or directory
            // that SQL could not read.
            let post = match PostView::from_log_bytes(&entry.value) {
                Ok(post) => match post.incoming.check(&Limits::ANY_BODY) {
                    Ok(()) => post,
                    Err(e) => {
                        dead.push(dead_letter(
                            Topic::Enriched,
                            partition,
                            entry,
                            &format!("out of bounds: {e}"),
                        ));
                        continue;
                    }
                },
                Err(e) => {
                    dead.push(dead_letter(
                        Topic::Enriched,
                        partition,
                        entry,
                        &format!("not an enriched post: {e}"),
                    ));
                    continue;
                }
            };
            groups
                .entry(partition_of_time(post.incoming.created_at))
                .or_default()
                .push(post);
        }
        if !dead.is_empty() {
            let refs: Vec<(&[u8], &[u8])> = dead.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            archive.log.append(Topic::Dead, &refs)?;
            archive.metrics.dead_letters.add(dead.len() as u64);
        }
        if files.first.is_none() {
            files.first = Some(entries[0].offset);
            files.opened = Instant::now();
        }
        let mut tail_batches = Vec::with_capacity(groups.len());
        for (group, posts) in groups {
            let open = match files.open.entry(group) {
                std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                std::collections::btree_map::Entry::Vacant(v) => {
                    let tmp = archive.root.join(TMP_DIR).join(format!(
                        "p{}-{}-{}-{:02}.parquet.tmp",
                        files.partition,
                        files.first.unwrap_or(0),
                        group.0,
                        group.1
                    ));
                    v.insert(archive.create_file(tmp)?)
                }
            };
            let batch = to_record_batch(&posts)?;
            open.writer.write(&batch)?;
            files.rows += posts.len() as u64;
            tail_batches.push(with_partition_columns(&batch, std::iter::repeat_n(group, posts.len()))?);
        }
        let next = entries[entries.len() - 1].offset + 1;
        archive.tail.update(files.partition, |t| {
            t.batches.extend(tail_batches);
            t.next = next;
        });
        Ok(())
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        // One buffer for all partitions, as a Firehose stream has: once it
        // is full, every partition's files roll.
        if self.archive.tail.is_input_done()
            || self.files.iter().map(|f| f.buffered_bytes).sum::<u64>() >= self.archive.config.max_file_bytes
        {
            return pending.to_vec();
        }
        let max_age = Duration::from_secs(self.archive.config.max_file_age_secs);
        pending
            .iter()
            .copied()
            .filter(|p| self.files[*p as usize].should_roll(max_age))
            .collect()
    }

    /// Closes and syncs the open files of each partition, then renames
    /// them into place and commits the offsets, under the query gate.
    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, ArchiveError> {
        let archive = self.archive;
        let mut rolled = Vec::new();
        for &(partition, next) in commit.offsets() {
            let files = &mut self.files[partition as usize];
            let Some(first) = files.first.take() else {
                continue;
            };
            let name = file_name(partition, first, next - 1, "parquet");
            let mut done = Vec::new();
            for ((dt, hour), open) in std::mem::take(&mut files.open) {
                open.writer.close()?;
                open.handle.sync_all().map_err(io(&open.tmp))?;
                done.push((open.tmp, partition_dir(dt, hour).join(&name)));
            }
            rolled.push((partition, first, std::mem::take(&mut files.rows), done));
            files.buffered_bytes = 0;
        }
        let committed = {
            let _gate = archive.gate.blocking_write();
            for (_, _, _, done) in &rolled {
                for (tmp, target) in done {
                    archive.place(tmp, target)?;
                }
            }
            let committed = commit.now()?;
            // Still under the gate: queries now find these posts in files.
            for (partition, ..) in &rolled {
                archive.tail.update(*partition, |t| t.batches.clear());
            }
            committed
        };
        for (partition, first, rows, done) in rolled {
            archive.metrics.archive_rows.add(rows);
            archive.metrics.archive_files.add(done.len() as u64);
            tracing::debug!(partition, first, files = done.len(), "Archive files committed.");
        }
        Ok(committed)
    }
}

/// `posts.dead` into NDJSON files.
struct ErrorsSink<'a> {
    archive: &'a Archive,
    files: Vec<ErrorFile>,
}

impl Sink for ErrorsSink<'_> {
    type Error = ArchiveError;

    fn input(&self) -> Input {
        ERRORS_INPUT
    }

    fn start(&mut self, committed: &[u64]) -> Result<Option<Vec<u64>>, ArchiveError> {
        self.files = committed.iter().map(|_| ErrorFile::new()).collect();
        Ok(None)
    }

    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), ArchiveError> {
        let file = &mut self.files[partition as usize];
        if file.first.is_none() {
            file.first = Some(entries[0].offset);
            file.opened = Instant::now();
        }
        for entry in entries {
            let failed_at = serde_json::from_slice::<DeadLetter>(&entry.value).map_or(0, |d| d.failed_at);
            let lines = file.lines.entry(partition_of_time(failed_at).0).or_default();
            lines.extend_from_slice(&entry.value);
            lines.push(b'\n');
        }
        Ok(())
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        let max_age = Duration::from_secs(self.archive.config.max_file_age_secs);
        pending
            .iter()
            .copied()
            .filter(|p| self.files[*p as usize].opened.elapsed() >= max_age)
            .collect()
    }

    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, ArchiveError> {
        let archive = self.archive;
        let mut count = 0;
        for &(partition, next) in commit.offsets() {
            let file = &mut self.files[partition as usize];
            let Some(first) = file.first.take() else {
                continue;
            };
            let name = file_name(partition, first, next - 1, "ndjson");
            for (dt, lines) in std::mem::take(&mut file.lines) {
                let tmp = archive.root.join(TMP_DIR).join(format!("{name}.{dt}.tmp"));
                let mut f = File::create(&tmp).map_err(io(&tmp))?;
                f.write_all(&lines).and_then(|()| f.sync_all()).map_err(io(&tmp))?;
                archive.place(&tmp, &Path::new(ERRORS_DIR).join(format!("dt={dt}")).join(&name))?;
                count += lines.iter().filter(|&&b| b == b'\n').count() as u64;
            }
        }
        let committed = commit.now()?;
        archive.metrics.archive_errors.add(count);
        Ok(committed)
    }
}

struct OpenFile {
    tmp: PathBuf,
    /// A second handle on the file, to sync it after the writer closes.
    handle: File,
    writer: ArrowWriter<File>,
}

/// The files being written for one log partition.
struct PostFiles {
    partition: u32,
    /// Offset of the first post in the open files.
    first: Option<u64>,
    opened: Instant,
    rows: u64,
    /// Bytes of the posts read into the open files, as on the log.
    buffered_bytes: u64,
    open: BTreeMap<(NaiveDate, u32), OpenFile>,
}

impl PostFiles {
    fn new(partition: u32) -> PostFiles {
        PostFiles {
            partition,
            first: None,
            opened: Instant::now(),
            rows: 0,
            buffered_bytes: 0,
            open: BTreeMap::new(),
        }
    }

    /// Whether the files must roll on their own (the size bound is the
    /// stream's, checked by the caller).
    fn should_roll(&self, max_age: Duration) -> bool {
        self.first.is_some() && (self.opened.elapsed() >= max_age || self.open.len() > MAX_OPEN_FILES)
    }
}

/// The dead letters being collected for one log partition.
struct ErrorFile {
    first: Option<u64>,
    opened: Instant,
    lines: BTreeMap<NaiveDate, Vec<u8>>,
}

impl ErrorFile {
    fn new() -> ErrorFile {
        ErrorFile {
            first: None,
            opened: Instant::now(),
            lines: BTreeMap::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;

    #[test]
    fn file_names_round_trip_and_sort_by_offset() {
        let name = file_name(3, 17, 4095, "parquet");
        assert_eq!(name, "p3-000000000017-000000004095.parquet");
        assert_eq!(parse_file_name(&name), Some((3, 17, 4095)));
        assert!(file_name(0, 9, 9, "parquet") < file_name(0, 10, 10, "parquet"));
        assert_eq!(parse_file_name("p3-1-2.parquet.tmp"), None);
        assert_eq!(parse_file_name("part-0.parquet"), None);
    }

    fn post(id: &str, created_at: i64) -> Vec<u8> {
        let incoming = crate::record::IncomingPost::new("reddit", id, "good", created_at);
        let scores = crate::enrich::score("good");
        incoming.into_post("good".into(), scores, 0).to_log_bytes()
    }

    /// Appends a post per (id, created_at) to `posts.enriched`, keyed by
    /// id; returns the records.
    fn append_posts(log: &Arc<dyn Log>, posts: &[(String, i64)]) -> Vec<Vec<u8>> {
        let values: Vec<Vec<u8>> = posts.iter().map(|(id, t)| post(id, *t)).collect();
        let records: Vec<(&[u8], &[u8])> = posts
            .iter()
            .zip(&values)
            .map(|((id, _), v)| (id.as_bytes(), v.as_slice()))
            .collect();
        log.append(Topic::Enriched, &records).unwrap();
        values
    }

    fn open_archive(root: &Path, log: &Arc<dyn Log>, config: ArchiveConfig) -> Archive {
        Archive::open(
            Placement::Dir(root.to_path_buf()),
            log.clone(),
            config,
            Arc::new(Metrics::default()),
            Arc::new(RwLock::new(())),
            Arc::new(ArchiveTail::default()),
        )
        .unwrap()
    }

    /// Runs `archive` until it has `files` files open, then stops it (it
    /// flushes and commits); the post files under `root`, sorted.
    /// Runs `archive` until it has `files` files open in `staging`, then
    /// stops it (which flushes and commits them).
    fn run_until_open_then_stop(archive: Archive, staging: &Path, files: usize) {
        let shutdown = CancellationToken::new();
        let runner = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || archive.run(shutdown))
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while files_under(&staging.join(TMP_DIR)).unwrap().len() < files {
            assert!(Instant::now() < deadline, "the archive did not open its files");
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.cancel();
        runner.join().unwrap().unwrap();
    }

    /// An archive as a reader finds it: in a directory or an object store.
    enum Seen<'a> {
        Dir(&'a Path),
        Objects(&'a ObjectArchive),
    }

    impl Seen<'_> {
        /// The post files, sorted, as paths under the archive.
        fn names(&self) -> Vec<String> {
            let mut names: Vec<String> = match self {
                Seen::Dir(root) => files_under(&root.join(POSTS_DIR))
                    .unwrap()
                    .iter()
                    .map(|p| p.strip_prefix(root).unwrap().display().to_string())
                    .collect(),
                Seen::Objects(store) => store.list(POSTS_DIR).unwrap().into_iter().map(|(k, _)| k).collect(),
            };
            names.sort();
            names
        }

        fn read(&self, name: &str) -> Vec<u8> {
            match self {
                Seen::Dir(root) => std::fs::read(root.join(name)).unwrap(),
                Seen::Objects(store) => store.read(name).unwrap(),
            }
        }

        /// Puts a file there as a crashed writer would have left it.
        fn plant(&self, name: &str, bytes: &[u8]) {
            match self {
                Seen::Dir(root) => {
                    let path = root.join(name);
                    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                    std::fs::write(path, bytes).unwrap();
                }
                Seen::Objects(store) => {
                    let tmp = tempfile::NamedTempFile::new().unwrap();
                    std::fs::write(tmp.path(), bytes).unwrap();
                    store.put_file(tmp.path(), name).unwrap();
                }
            }
        }
    }

    /// Writes posts of three hours through archives `open` makes (files
    /// written in `staging`, read back as `seen`): each file holds the
    /// posts of its hour, is committed with its offsets, and a crash's
    /// leftovers (placed, not committed) are removed at the next start.
    fn writes_hive_files_commits_them_and_removes_leftovers(
        open: &dyn Fn(&Arc<dyn Log>) -> Archive,
        staging: &Path,
        seen: &Seen<'_>,
    ) {
        use crate::log::fjall::FjallLog;
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(FjallLog::open(&dir.path().join("log"), 1).unwrap());
        // Two hours of one day, and the next day.
        let hour = 3_600_000_000i64;
        let times = [
            1_546_300_800_000_000,
            1_546_300_800_000_000 + hour,
            1_546_300_800_000_000 + 24 * hour,
        ];
        let posts: Vec<(String, i64)> = times.iter().enumerate().map(|(i, t)| (format!("t1_{i}"), *t)).collect();
        append_posts(&log, &posts);
        // Shut down at once: what was read is flushed and committed.
        run_until_open_then_stop(open(&log), staging, 3);
        let names = seen.names();
        assert_eq!(
            names,
            [
                "posts/dt=2019-01-01/hour=00/p0-000000000000-000000000002.parquet",
                "posts/dt=2019-01-01/hour=01/p0-000000000000-000000000002.parquet",
                "posts/dt=2019-01-02/hour=00/p0-000000000000-000000000002.parquet",
            ]
        );
        assert_eq!(log.committed(CONSUMER, Topic::Enriched, 0).unwrap(), 3);
        let file = bytes::Bytes::from(seen.read(&names[1]));
        let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
        assert_eq!(reader.metadata().file_metadata().num_rows(), 1);
        assert_eq!(reader.schema().fields().len(), crate::record::column::ALL.len());
        // The values are the post's, as appended and scored.
        let read_file = |name: &str| {
            let file = bytes::Bytes::from(seen.read(name));
            let batch = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .unwrap()
                .build()
                .unwrap()
                .next()
                .unwrap()
                .unwrap();
            let text = |c: &str| {
                arrow::array::AsArray::as_string::<i32>(batch.column_by_name(c).unwrap())
                    .value(0)
                    .to_string()
            };
            let polarity = arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(
                batch.column_by_name(column::POLARITY).unwrap(),
            )
            .value(0);
            (batch.num_rows(), text(column::ID), text(column::BODY), polarity)
        };
        let expected = |id: &str| {
            (
                1,
                id.to_string(),
                "good".to_string(),
                crate::enrich::score("good").polarity,
            )
        };
        let before: Vec<_> = names.iter().map(|n| read_file(n)).collect();
        assert_eq!(before, [expected("t1_0"), expected("t1_1"), expected("t1_2")]);

        // A crash after the files are placed and before the commit: the
        // offset stays where it was, the files are removed at start and
        // the replay writes the very same names and rows again — no row
        // twice.
        log.commit(CONSUMER, Topic::Enriched, 0, 0).unwrap();
        run_until_open_then_stop(open(&log), staging, 3);
        assert_eq!(seen.names(), names);
        assert_eq!(names.iter().map(|n| read_file(n)).collect::<Vec<_>>(), before);
        assert_eq!(log.committed(CONSUMER, Topic::Enriched, 0).unwrap(), 3);

        // A crash after a placement and before the commit leaves a file
        // whose first offset is not committed: it is removed at the next
        // start; the committed ones stay.
        let leftover = "posts/dt=2019-01-02/hour=00/p0-000000000003-000000000009.parquet";
        seen.plant(leftover, b"partial");
        assert!(seen.names().contains(&leftover.to_string()));
        drop(open(&log));
        assert_eq!(seen.names(), names);
    }

    #[test]
    fn writes_hive_files_commits_them_and_removes_uncommitted_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("archive");
        let open = |log: &Arc<dyn Log>| open_archive(&root, log, ArchiveConfig::default());
        writes_hive_files_commits_them_and_removes_leftovers(&open, &root, &Seen::Dir(&root));
    }

    /// The same on a real S3-compatible server (s3s-fs): each file is put
    /// whole before its offsets commit, and leftover objects are deleted.
    #[test]
    fn on_an_s3_server_files_are_put_before_their_commit_and_leftover_objects_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let server = objects::testing::S3Server::start(dir.path(), "chorus");
        let url = "s3://chorus/team/archive";
        let staging = dir.path().join("staging");
        let open = |log: &Arc<dyn Log>| {
            Archive::open(
                Placement::Objects {
                    staging: staging.clone(),
                    store: Box::new(server.archive(url)),
                    lease: Box::new(server.archive(url)),
                },
                log.clone(),
                ArchiveConfig::default(),
                Arc::new(Metrics::default()),
                Arc::new(RwLock::new(())),
                Arc::new(ArchiveTail::default()),
            )
            .unwrap()
        };
        let reader = server.archive(url);
        writes_hive_files_commits_them_and_removes_leftovers(&open, &staging, &Seen::Objects(&reader));
        // Under the URL's prefix in the bucket, nothing left in staging.
        assert!(
            server
                .dir()
                .join("chorus/team/archive/posts/dt=2019-01-01/hour=00")
                .is_dir()
        );
        assert!(files_under(&staging.join(TMP_DIR)).unwrap().is_empty());
    }

    #[test]
    fn a_file_larger_than_a_part_is_put_in_parts_and_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let server = objects::testing::S3Server::start(dir.path(), "chorus");
        let store = server.archive("s3://chorus/big");
        let local = dir.path().join("big");
        // Two and a half parts of bytes that differ from part to part.
        let bytes: Vec<u8> = (0..objects::PART_BYTES * 5 / 2).map(|i| (i % 251) as u8).collect();
        std::fs::write(&local, &bytes).unwrap();
        store.put_file(&local, "posts/x/big.parquet").unwrap();
        assert_eq!(store.read("posts/x/big.parquet").unwrap(), bytes);
        assert_eq!(
            store.list("posts").unwrap(),
            [("posts/x/big.parquet".to_string(), bytes.len() as u64)]
        );
        store.delete("posts/x/big.parquet").unwrap();
        store.delete("posts/x/big.parquet").unwrap();
        assert!(store.list("posts").unwrap().is_empty());
    }

    #[test]
    fn a_stop_drains_what_the_log_holds_before_flushing() {
        use crate::log::fjall::FjallLog;
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(FjallLog::open(&dir.path().join("log"), 2).unwrap());
        // More than one read (4,096 records) per partition.
        let posts: Vec<(String, i64)> = (0..10_000)
            .map(|i| (format!("t1_{i}"), 1_546_300_800_000_000 + i))
            .collect();
        append_posts(&log, &posts);
        let archive = open_archive(&dir.path().join("archive"), &log, ArchiveConfig::default());
        // Told to stop before it starts: it still archives everything.
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        archive.run(shutdown).unwrap();
        let committed: u64 = (0..2)
            .map(|p| log.committed(CONSUMER, Topic::Enriched, p).unwrap())
            .sum();
        assert_eq!(committed, 10_000);
        let rows: i64 = files_under(&dir.path().join("archive").join(POSTS_DIR))
            .unwrap()
            .iter()
            .map(|path| {
                let file = File::open(path).unwrap();
                let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
                reader.metadata().file_metadata().num_rows()
            })
            .sum();
        assert_eq!(rows, 10_000);
    }

    #[test]
    fn the_size_bound_is_one_buffer_for_all_partitions() {
        use crate::log::fjall::FjallLog;
        let dir = tempfile::tempdir().unwrap();
        let log: Arc<dyn Log> = Arc::new(FjallLog::open(&dir.path().join("log"), 2).unwrap());
        // 9,000 posts on partition 0, 1,000 on partition 1.
        let on = |partition| {
            (0..)
                .map(|i| (format!("t1_{i}"), 1_546_300_800_000_000))
                .filter(move |(id, _)| crate::log::partition_of(id.as_bytes(), 2) == partition)
        };
        let posts: Vec<(String, i64)> = on(0).take(9_000).chain(on(1).take(1_000)).collect();
        let values = append_posts(&log, &posts);
        // The bound holds 3,000 posts: partition 1 alone never reaches it.
        let config = ArchiveConfig {
            max_file_bytes: values[..3_000].iter().map(|v| v.len() as u64).sum(),
            max_file_age_secs: 3_600,
            ..ArchiveConfig::default()
        };
        let archive = open_archive(&dir.path().join("archive"), &log, config);
        let shutdown = CancellationToken::new();
        let runner = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || archive.run(shutdown))
        };
        // Rolled by size, long before the age bound or a stop.
        let deadline = Instant::now() + Duration::from_secs(30);
        while log.committed(CONSUMER, Topic::Enriched, 1).unwrap() < 1_000
            || log.committed(CONSUMER, Topic::Enriched, 0).unwrap() == 0
        {
            assert!(
                Instant::now() < deadline,
                "the full buffer did not roll every partition"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        shutdown.cancel();
        runner.join().unwrap().unwrap();
    }

    #[test]
    fn the_archive_url_names_a_local_directory_or_a_bucket_or_is_refused_clearly() {
        let data = Path::new("/data");
        let at = |url: Option<&str>| {
            ArchiveConfig {
                url: url.map(String::from),
                ..ArchiveConfig::default()
            }
            .root(data)
        };
        assert_eq!(at(None).unwrap(), Path::new("/data/archive"));
        assert_eq!(
            at(Some("file:///srv/a%20b/archive")).unwrap(),
            Path::new("/srv/a b/archive")
        );
        // An archive in a bucket writes its files here before it puts them.
        assert_eq!(at(Some("s3://bucket/prefix")).unwrap(), Path::new("/data/archive"));
        for (url, says) in [
            ("/srv/archive", "is not a URL"),
            ("file://host/srv/archive", "absolute directory on this machine"),
        ] {
            let e = at(Some(url)).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let location = |url: &str| {
            ArchiveConfig {
                url: Some(url.to_string()),
                ..ArchiveConfig::default()
            }
            .location(data)
        };
        assert_eq!(
            location("s3://bucket/a/prefix").unwrap(),
            Location::Objects(url::Url::parse("s3://bucket/a/prefix").unwrap())
        );
        for (url, says) in [
            ("s3:///prefix", "names no bucket"),
            ("http://host/archive", "http:// is not an archive location"),
        ] {
            let e = location(url).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
    }

    #[test]
    fn hive_partition_of_a_time() {
        // 2019-01-01T12:34:56Z
        let (dt, hour) = partition_of_time(1_546_346_096_000_000);
        assert_eq!(partition_dir(dt, hour), Path::new("posts/dt=2019-01-01/hour=12"));
    }
}
