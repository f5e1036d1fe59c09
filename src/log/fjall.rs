//! The embedded log on fjall. Each topic partition is a run of segments,
//! one keyspace each, as Kafka's are files: retention drops whole segments.
//! A segment holds chunks of consecutive records, one entry each (key: the
//! first offset, big-endian, so keys sort by offset, then the record
//! count). One keyspace holds committed offsets, one stage state, one
//! metadata. A transaction writes one atomic batch and syncs it to disk
//! before it returns.

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode, Slice};

/// The store's buffer a [`Value`] read from it holds: a record's part of
/// its chunk.
pub(crate) type StoreBytes = ByteView;

use byteview::ByteView;

use super::{
    Entry, Log, LogError, Position, Retention, StateEntry, Topic, Transaction, Value, partition_of, valid_consumer,
};

/// Records per segment: retention drops at most this many at a time.
pub const SEGMENT_RECORDS: u64 = 1 << 20;

/// A chunk closes once its records hold this many bytes (or
/// [`CHUNK_RECORDS`] records). The store's cost is per entry, not per
/// byte: a memtable insert, an allocation and a journal item each, copied
/// and compared again when the memtable is flushed. A backfill of 3M
/// posts took 29.4-31.0 s with one entry per record, 24.5 s with chunks
/// (docs/BENCHMARKS.md, "The log in chunks").
const CHUNK_BYTES: usize = 64 * 1024;
/// At most this many records per chunk (empty records take no bytes).
const CHUNK_RECORDS: usize = 4096;

/// The key of the chunk of `count` records from offset `first`. A log
/// written before chunks holds one record per entry under an 8-byte key
/// (the offset): read as a chunk of one.
fn chunk_key(first: u64, count: u32) -> [u8; 12] {
    let mut key = [0; 12];
    key[..8].copy_from_slice(&first.to_be_bytes());
    key[8..].copy_from_slice(&count.to_be_bytes());
    key
}

/// The first offset and record count of the chunk under `key`.
fn decode_key(key: &[u8]) -> Result<(u64, u64), LogError> {
    let offset = |bytes: &[u8]| u64::from_be_bytes(bytes.try_into().unwrap_or_default());
    match key.len() {
        8 => Ok((offset(key), 1)),
        12 => Ok((
            offset(&key[..8]),
            u64::from(u32::from_be_bytes(key[8..].try_into().unwrap_or_default())),
        )),
        _ => Err(LogError::storage("damaged log key")),
    }
}

/// A chunk's value: each record's length (4 bytes, little-endian), then
/// its bytes.
fn pack(records: &[&[u8]]) -> Result<ByteView, LogError> {
    let len = records.iter().map(|r| 4 + r.len()).sum();
    let mut chunk = ByteView::builder(len);
    let mut at = 0;
    for record in records {
        let n = u32::try_from(record.len()).map_err(|_| LogError::storage("a record of 4 GiB or more"))?;
        chunk[at..at + 4].copy_from_slice(&n.to_le_bytes());
        chunk[at + 4..at + 4 + record.len()].copy_from_slice(record);
        at += 4 + record.len();
    }
    Ok(chunk.freeze())
}

/// Calls `each` with the offset and bytes (a slice of `chunk`, not a copy)
/// of every record of the chunk under `key`, in order, until it says
/// stop (false).
fn unpack(key: &[u8], chunk: ByteView, mut each: impl FnMut(u64, ByteView) -> bool) -> Result<(), LogError> {
    let (first, count) = decode_key(key)?;
    if key.len() == 8 {
        each(first, chunk);
        return Ok(());
    }
    let damaged = || LogError::Storage(format!("damaged log chunk at offset {first}"));
    let mut at = 0usize;
    for offset in first..first + count {
        let len = chunk.get(at..at + 4).ok_or_else(damaged)?;
        let len = u32::from_le_bytes(len.try_into().map_err(|_| damaged())?) as usize;
        let end = (at + 4)
            .checked_add(len)
            .filter(|&end| end <= chunk.len())
            .ok_or_else(damaged)?;
        if !each(offset, chunk.slice(at + 4..end)) {
            return Ok(());
        }
        at = end;
    }
    if at == chunk.len() { Ok(()) } else { Err(damaged()) }
}

/// One segment: the records of a partition from offset `base` on.
#[derive(Clone)]
struct Segment {
    base: u64,
    keyspace: Keyspace,
}

/// The fjall-backed [`Log`].
pub struct FjallLog {
    db: Database,
    /// [`Log::identity`], made when the log was created.
    identity: String,
    partitions: u32,
    /// Per topic (in `Topic::ALL` order), per partition: its segments,
    /// oldest first (never empty).
    segments: RwLock<Vec<Vec<Vec<Segment>>>>,
    segment_records: u64,
    offsets: Keyspace,
    meta: Keyspace,
    state: Keyspace,
    /// Bumped after every append, to wake idle consumers.
    appended: super::Appended,
    /// Per topic, per partition: the next offset. One lock for appends
    /// keeps offsets dense and batches atomic.
    next: Mutex<Vec<Vec<u64>>>,
    /// Per topic, per partition: its newest records.
    recent: Vec<Vec<Mutex<Recent>>>,
    /// Bytes of records each partition's [`Recent`] keeps.
    recent_bytes: usize,
}

/// Bytes of a topic's newest records kept in memory (shared among its
/// partitions), read by consumers that follow the log without a lookup in
/// the store. They are the records of the memtables until those are
/// flushed (the same bytes, shared), so they add to memory only past that.
pub const RECENT_BYTES: usize = 32 << 20;

/// The newest records appended to one partition, in offset order: a read
/// from an offset they hold is served from memory. They always end at the
/// partition's end (they are added under the append lock, after the write
/// is durable), so a read at or past their first offset needs nothing else.
struct Recent {
    /// The offset of `values[0]` (the partition's end when empty).
    first: u64,
    values: VecDeque<ByteView>,
    bytes: usize,
}

impl Recent {
    /// Adds the record at `offset` and forgets the oldest past `bound` bytes.
    fn push(&mut self, offset: u64, value: ByteView, bound: usize) {
        if offset != self.first + self.values.len() as u64 {
            // Not the next offset (never expected): what is held is given up
            // rather than served out of order.
            self.values.clear();
            self.bytes = 0;
            self.first = offset;
        }
        self.bytes += value.len();
        self.values.push_back(value);
        while self.bytes > bound
            && let Some(old) = self.values.pop_front()
        {
            self.bytes -= old.len();
            self.first += 1;
        }
    }

    /// Forgets the records before `offset` (retention removed them).
    fn forget_before(&mut self, offset: u64) {
        while self.first < offset
            && let Some(old) = self.values.pop_front()
        {
            self.bytes -= old.len();
            self.first += 1;
        }
    }

    /// Up to `max` records from `offset` and no more once they hold
    /// `max_bytes` (at least one); `None` when `offset` is before the first
    /// held.
    fn read(&self, offset: u64, max: usize, max_bytes: usize) -> Option<Vec<Entry>> {
        let skip = usize::try_from(offset.checked_sub(self.first)?).unwrap_or(usize::MAX);
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for (i, value) in self.values.iter().enumerate().skip(skip).take(max) {
            bytes += value.len();
            out.push(Entry {
                offset: self.first + i as u64,
                value: Value::from_store(value.clone()),
            });
            if bytes >= max_bytes {
                break;
            }
        }
        Some(out)
    }
}

/// Memtable size of a segment: fjall's default (64 MiB) times a dozen
/// segments would hold most of a GiB in memory.
const SEGMENT_MEMTABLE_BYTES: u64 = 16 * 1024 * 1024;
/// fjall's background workers (flushes, compactions). With more than one,
/// the first hands every compaction request on to the others and takes the
/// next one off the queue: while another worker compacts, it spins on the
/// queue (2-3% of the pipeline's CPU on two cores, docs/BENCHMARKS.md).
pub(crate) const WORKER_THREADS: usize = 1;
/// Block cache shared by every keyspace.
const CACHE_BYTES: u64 = 64 * 1024 * 1024;

fn segment_options() -> KeyspaceCreateOptions {
    // Values stay in the tables (no key-value separation: log keys never
    // overlap, so compaction has nothing to gain from it) and blocks are not
    // compressed. Measured with scripts/bench_pipeline.sh over 1M posts:
    // server CPU 41 µs per post with separated, LZ4-compressed values; 37
    // with LZ4 blocks; 34-35 with neither, for 20% more disk.
    // Segments are only ever scanned by offset, never probed for a key, so
    // they build no bloom filters, and their blocks are 32 KiB (fewer index
    // entries); 2M posts: 15.7-16.3 µs per post with filters and 4 KiB
    // blocks, 14.6-15.2 without.
    KeyspaceCreateOptions::default()
        .max_memtable_size(SEGMENT_MEMTABLE_BYTES)
        .data_block_compression_policy(::fjall::config::CompressionPolicy::disabled())
        .filter_policy(::fjall::config::FilterPolicy::disabled())
        .data_block_size_policy(::fjall::config::BlockSizePolicy::all(32 * 1024))
}

impl FjallLog {
    /// Opens (or creates) the log in `dir` with `partitions` partitions per
    /// topic. Reopening with another partition count is refused, since keys
    /// would land elsewhere.
    pub fn open(dir: &Path, partitions: u32) -> Result<FjallLog, LogError> {
        FjallLog::open_with_segments(dir, partitions, SEGMENT_RECORDS)
    }

    /// [`FjallLog::open`] with `segment_records` records per new segment.
    pub fn open_with_segments(dir: &Path, partitions: u32, segment_records: u64) -> Result<FjallLog, LogError> {
        if partitions == 0 {
            return Err(LogError::Storage("a log needs at least one partition".into()));
        }
        std::fs::create_dir_all(dir).map_err(LogError::storage)?;
        let db = Database::builder(dir)
            .cache_size(CACHE_BYTES)
            .worker_threads(WORKER_THREADS)
            // fjall compresses journal items over 4 KiB (every chunk) with
            // LZ4 by default: 4% of the pipeline's CPU, for records the
            // tables keep uncompressed anyway.
            .journal_compression(::fjall::CompressionType::None)
            .open()
            .map_err(LogError::storage)?;
        let offsets = db
            .keyspace("consumer_offsets", KeyspaceCreateOptions::default)
            .map_err(LogError::storage)?;
        let state = db
            .keyspace("state", KeyspaceCreateOptions::default)
            .map_err(LogError::storage)?;
        let meta = db
            .keyspace("meta", KeyspaceCreateOptions::default)
            .map_err(LogError::storage)?;
        match meta.get("partitions").map_err(LogError::storage)? {
            Some(v) => {
                let stored = u32::from_be_bytes(v.as_ref().try_into().map_err(|_| LogError::storage("damaged meta"))?);
                if stored != partitions {
                    return Err(LogError::Storage(format!(
                        "{} was created with {stored} partitions, not {partitions}",
                        dir.display()
                    )));
                }
            }
            None => {
                meta.insert("partitions", partitions.to_be_bytes())
                    .map_err(LogError::storage)?;
                db.persist(PersistMode::SyncAll).map_err(LogError::storage)?;
            }
        }
        let identity = match meta.get("id").map_err(LogError::storage)? {
            Some(id) => String::from_utf8_lossy(&id).into_owned(),
            None => {
                let id = format!("embedded:{:032x}", fastrand::u128(..));
                meta.insert("id", id.as_bytes()).map_err(LogError::storage)?;
                db.persist(PersistMode::SyncAll).map_err(LogError::storage)?;
                id
            }
        };
        // Segment keyspaces are "<topic>.<partition>" (base 0) and
        // "<topic>.<partition>.<base>".
        let names: Vec<String> = db
            .list_keyspace_names()
            .iter()
            .map(|n| n.as_ref().to_string())
            .collect();
        let mut segments = Vec::new();
        let mut next = Vec::new();
        for topic in Topic::ALL {
            let mut parts = Vec::new();
            let mut ends = Vec::new();
            for p in 0..partitions {
                let prefix = format!("{}.{p}", topic.name());
                let mut bases: Vec<u64> = names
                    .iter()
                    .filter_map(|n| n.strip_prefix(&prefix)?.strip_prefix('.')?.parse().ok())
                    .collect();
                if bases.is_empty() || names.contains(&prefix) {
                    bases.push(0);
                }
                bases.sort_unstable();
                let mut segs = Vec::new();
                for base in bases {
                    segs.push(Segment {
                        base,
                        keyspace: db
                            .keyspace(&segment_name(topic, p, base), segment_options)
                            .map_err(LogError::storage)?,
                    });
                }
                // The end: after the last record of the newest segment that
                // has one (a crash may leave the newest one empty).
                let mut end = segs.last().map_or(0, |s| s.base);
                for seg in segs.iter().rev() {
                    if let Some(guard) = seg.keyspace.last_key_value() {
                        let (key, _) = guard.into_inner().map_err(LogError::storage)?;
                        let (first, count) = decode_key(&key)?;
                        end = end.max(first + count);
                        break;
                    }
                }
                parts.push(segs);
                ends.push(end);
            }
            segments.push(parts);
            next.push(ends);
        }
        let recent = next
            .iter()
            .map(|ends| {
                ends.iter()
                    .map(|&end| {
                        Mutex::new(Recent {
                            first: end,
                            values: VecDeque::new(),
                            bytes: 0,
                        })
                    })
                    .collect()
            })
            .collect();
        Ok(FjallLog {
            db,
            identity,
            partitions,
            segments: RwLock::new(segments),
            segment_records: segment_records.max(1),
            offsets,
            meta,
            state,
            appended: super::Appended::default(),
            next: Mutex::new(next),
            recent,
            recent_bytes: RECENT_BYTES / partitions as usize,
        })
    }

    fn check_partition(&self, topic: Topic, partition: u32) -> Result<(), LogError> {
        LogError::check_partition(topic, partition, self.partitions)
    }

    /// The segments of a partition (cheap handles).
    fn segments_of(&self, topic: Topic, partition: u32) -> Result<Vec<Segment>, LogError> {
        self.check_partition(topic, partition)?;
        let segments = self
            .segments
            .read()
            .map_err(|_| LogError::storage("a writer panicked"))?;
        Ok(segments[topic.index()][partition as usize].clone())
    }

    /// The keyspace an append at `offset` goes to, and the base of its
    /// segment, starting a new segment when the newest is full (the full
    /// one is pushed to `sealed`).
    fn segment_for_append(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        sealed: &mut Vec<Keyspace>,
    ) -> Result<(Keyspace, u64), LogError> {
        self.check_partition(topic, partition)?;
        {
            let segments = self
                .segments
                .read()
                .map_err(|_| LogError::storage("a writer panicked"))?;
            let newest = segments[topic.index()][partition as usize]
                .last()
                .ok_or_else(|| LogError::storage("a partition without segments"))?;
            if offset < newest.base + self.segment_records {
                return Ok((newest.keyspace.clone(), newest.base));
            }
        }
        let keyspace = self
            .db
            .keyspace(&segment_name(topic, partition, offset), segment_options)
            .map_err(LogError::storage)?;
        let mut segments = self
            .segments
            .write()
            .map_err(|_| LogError::storage("a writer panicked"))?;
        let segs = &mut segments[topic.index()][partition as usize];
        if let Some(previous) = segs.last() {
            // Retention measures a segment's age from when it was sealed.
            let key = format!("sealed/{}", segment_name(topic, partition, previous.base));
            self.meta
                .insert(key, super::super::record::now_micros().to_be_bytes())
                .map_err(LogError::storage)?;
            sealed.push(previous.keyspace.clone());
        }
        segs.push(Segment {
            base: offset,
            keyspace: keyspace.clone(),
        });
        Ok((keyspace, offset))
    }

    fn offset_key(consumer: &str, topic: Topic, partition: u32) -> Result<Vec<u8>, LogError> {
        if !valid_consumer(consumer) {
            return Err(LogError::BadConsumer(consumer.to_string()));
        }
        Ok(format!("{consumer}/{}/{partition}", topic.name()).into_bytes())
    }
}

/// How long closing the log waits for its memtables to flush.
const CLOSE_FLUSH_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

impl Drop for FjallLog {
    /// Flushes every memtable to its tables before the log closes.
    ///
    /// fjall replays its journal at open, and retires a journal only once
    /// it is past 64 MB: without this, every open after a clean stop (each
    /// `chorus batch`, `sql`, `status`, a restart) puts up to 64 MB of
    /// records back into memtables, to be flushed by whichever process
    /// writes next. With the tables holding them, the replay reads the
    /// journal but skips its records: measured on a 54 MB journal (10M
    /// posts ingested), the open took 0.32 s instead of 0.39 s and
    /// `chorus batch --view by_location` 1.75–1.84 s instead of 1.92 s.
    /// A crash still replays everything: nothing depends on this.
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        let mut keyspaces = vec![self.offsets.clone(), self.meta.clone(), self.state.clone()];
        if let Ok(segments) = self.segments.read() {
            keyspaces.extend(segments.iter().flatten().flatten().map(|s| s.keyspace.clone()));
        }
        for keyspace in &keyspaces {
            if let Err(e) = keyspace.rotate_memtable() {
                tracing::warn!(error = %e, "Could not flush the log at close; the next open replays its journal.");
                return;
            }
        }
        // Bounded: a flush that cannot finish (a full disk) must not hang
        // the process at exit; the journal still has every record.
        while keyspaces.iter().any(|k| k.sealed_memtable_count() > 0) {
            if started.elapsed() > CLOSE_FLUSH_WAIT {
                tracing::warn!("The log's flush at close did not finish in time; the next open replays its journal.");
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        tracing::debug!(took = ?started.elapsed(), "log flushed at close");
    }
}

/// The keyspace name of the segment of `topic`/`partition` from `base`.
fn segment_name(topic: Topic, partition: u32, base: u64) -> String {
    if base == 0 {
        format!("{}.{partition}", topic.name())
    } else {
        format!("{}.{partition}.{base}", topic.name())
    }
}

/// Up to `max` entries of `keyspace` whose keys start with `prefix`, in key
/// order, after the key `after` (from the first, without it): a state
/// store's [`Log::scan_state`].
pub(crate) fn scan_prefix(
    keyspace: &Keyspace,
    prefix: &[u8],
    after: Option<&[u8]>,
    max: usize,
) -> Result<Vec<StateEntry>, LogError> {
    let mut out = Vec::new();
    let range = match after {
        Some(after) => keyspace.range::<&[u8], _>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
        None => keyspace.range::<&[u8], _>(prefix..),
    };
    for guard in range {
        let (key, value) = guard.into_inner().map_err(LogError::storage)?;
        if !key.starts_with(prefix) || out.len() >= max {
            break;
        }
        out.push((key.to_vec(), value.to_vec()));
    }
    Ok(out)
}

fn decode_offset(key: &[u8]) -> Result<u64, LogError> {
    Ok(u64::from_be_bytes(
        key.try_into().map_err(|_| LogError::storage("damaged offset key"))?,
    ))
}

impl Log for FjallLog {
    fn identity(&self) -> String {
        self.identity.clone()
    }

    fn partitions(&self) -> u32 {
        self.partitions
    }

    fn write(&self, tx: &Transaction<'_>) -> Result<Vec<Position>, LogError> {
        if tx.is_empty() {
            return Ok(Vec::new());
        }
        let mut batch = self.db.batch().durability(Some(PersistMode::SyncAll));
        for &(consumer, topic, partition, next_offset) in &tx.commits {
            self.check_partition(topic, partition)?;
            batch.insert(
                &self.offsets,
                Self::offset_key(consumer, topic, partition)?,
                next_offset.to_be_bytes(),
            );
        }
        for &(key, value) in &tx.state {
            batch.insert(&self.state, key, value);
        }
        for &key in &tx.removed_state {
            batch.remove(&self.state, key);
        }
        let mut next = self.next.lock().map_err(|_| LogError::storage("a writer panicked"))?;
        let mut assigned = next.clone();
        let mut positions = Vec::with_capacity(tx.appends.len());
        // Per topic partition (topic-major), the records appended to it.
        let parts = self.partitions as usize;
        let mut grouped: Vec<Vec<&[u8]>> = vec![Vec::new(); Topic::ALL.len() * parts];
        for &(topic, key, value) in &tx.appends {
            let partition = partition_of(key, self.partitions);
            let offset = &mut assigned[topic.index()][partition as usize];
            grouped[topic.index() * parts + partition as usize].push(value);
            positions.push(Position {
                partition,
                offset: *offset,
            });
            *offset += 1;
        }
        let mut chunks = Vec::new();
        let mut sealed = Vec::new();
        for (i, mut records) in grouped.iter().map(Vec::as_slice).enumerate() {
            let (topic, partition) = (Topic::ALL[i / parts], (i % parts) as u32);
            let mut offset = next[topic.index()][partition as usize];
            while !records.is_empty() {
                let (keyspace, base) = self.segment_for_append(topic, partition, offset, &mut sealed)?;
                // A chunk stays in one segment.
                let room = usize::try_from(base + self.segment_records - offset).unwrap_or(usize::MAX);
                let (mut n, mut bytes) = (0, 0);
                while n < records.len().min(room).min(CHUNK_RECORDS) && (n == 0 || bytes < CHUNK_BYTES) {
                    bytes += records[n].len();
                    n += 1;
                }
                // One copy of the bytes, shared by the store and `recent`.
                let chunk = pack(&records[..n])?;
                let key = chunk_key(offset, n as u32);
                batch.insert(&keyspace, key, Slice::from(chunk.clone()));
                chunks.push((topic, partition, key, chunk));
                offset += n as u64;
                records = &records[n..];
            }
        }
        // The batch is written and synced before the offsets advance: a
        // failed write leaves the log as it was.
        batch.commit().map_err(LogError::storage)?;
        for (topic, partition, key, chunk) in chunks {
            let mut recent = self.recent[topic.index()][partition as usize]
                .lock()
                .map_err(|_| LogError::storage("a reader panicked"))?;
            unpack(&key, chunk, |offset, value| {
                recent.push(offset, value, self.recent_bytes);
                true
            })?;
        }
        // A sealed segment takes no more writes: its memtable is flushed
        // now rather than held in memory, and retention's size bound (on
        // disk) sees it.
        for keyspace in sealed {
            if let Err(e) = keyspace.rotate_memtable() {
                tracing::warn!(error = %e, "Could not flush a sealed log segment; it stays in memory.");
            }
        }
        let grew = *next != assigned;
        *next = assigned;
        drop(next);
        if grew {
            self.appended.notify();
        }
        Ok(positions)
    }

    fn wait_for_appends(&self, topic: Topic, seen: &[u64], timeout: Duration) {
        let has_more = || {
            self.next
                .lock()
                .map(|next| next[topic.index()].iter().zip(seen).any(|(end, seen)| end > seen))
                .unwrap_or(true)
        };
        self.appended.wait_unless(has_more, timeout);
    }

    fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
        Ok(self.state.get(key).map_err(LogError::storage)?.map(|v| v.to_vec()))
    }

    fn state_bytes(&self) -> u64 {
        self.state.disk_space()
    }

    fn scan_state(&self, prefix: &[u8], after: Option<&[u8]>, max: usize) -> Result<Vec<StateEntry>, LogError> {
        scan_prefix(&self.state, prefix, after, max)
    }

    fn read(
        &self,
        topic: Topic,
        partition: u32,
        offset: u64,
        max: usize,
        max_bytes: usize,
    ) -> Result<Vec<Entry>, LogError> {
        self.check_partition(topic, partition)?;
        let recent = self.recent[topic.index()][partition as usize]
            .lock()
            .map_err(|_| LogError::storage("a writer panicked"))?
            .read(offset, max, max_bytes);
        if let Some(entries) = recent {
            return Ok(entries);
        }
        let segments = self.segments_of(topic, partition)?;
        // The segment holding `offset` (or the oldest kept, if retention
        // removed it: reading resumes at the earliest record, as Kafka's
        // `auto.offset.reset=earliest`).
        let first = segments.partition_point(|s| s.base <= offset).saturating_sub(1);
        let (mut out, mut bytes) = (Vec::new(), 0usize);
        for segment in &segments[first..] {
            if out.len() >= max || bytes >= max_bytes {
                break;
            }
            // From the chunk holding `offset` if one starts before it (any
            // key from `offset` on sorts after `offset`'s 8 bytes); only the
            // first segment can hold one, the later ones start past it.
            let mut from = offset.to_be_bytes().to_vec();
            if segment.base <= offset
                && let Some(guard) = segment.keyspace.range(..=chunk_key(offset, u32::MAX)).next_back()
            {
                let key = guard.key().map_err(LogError::storage)?;
                let (start, count) = decode_key(&key)?;
                if start + count > offset {
                    from = key.to_vec();
                }
            }
            for guard in segment.keyspace.range(from..) {
                if out.len() >= max || bytes >= max_bytes {
                    break;
                }
                let (key, chunk) = guard.into_inner().map_err(LogError::storage)?;
                unpack(&key, chunk.into(), |at, value| {
                    if at < offset {
                        return true;
                    }
                    bytes += value.len();
                    out.push(Entry {
                        offset: at,
                        value: Value::from_store(value),
                    });
                    out.len() < max && bytes < max_bytes
                })?;
            }
        }
        Ok(out)
    }

    fn enforce_retention(&self, topic: Topic, retention: &Retention, safe: &[u64]) -> Result<u64, LogError> {
        let now = super::super::record::now_micros();
        let mut removed = 0;
        for partition in 0..self.partitions {
            let segments = self.segments_of(topic, partition)?;
            let safe_offset = safe.get(partition as usize).copied().unwrap_or(0);
            let mut bytes: u64 = segments.iter().map(|s| s.keyspace.disk_space()).sum();
            // Oldest first; the newest segment always stays.
            for pair in segments.windows(2) {
                let (segment, next_base) = (&pair[0], pair[1].base);
                if next_base > safe_offset {
                    // Not every consumer is past it: keep (never lose data).
                    break;
                }
                let sealed_key = format!("sealed/{}", segment_name(topic, partition, segment.base));
                let sealed_at = match self.meta.get(&sealed_key).map_err(LogError::storage)? {
                    Some(v) => {
                        i64::from_be_bytes(v.as_ref().try_into().map_err(|_| LogError::storage("damaged meta"))?)
                    }
                    None => now,
                };
                let too_old = retention
                    .max_age
                    .is_some_and(|age| now - sealed_at >= age.as_micros() as i64);
                let too_big = retention.max_bytes.is_some_and(|max| bytes > max);
                if !(too_old || too_big) {
                    break;
                }
                bytes = bytes.saturating_sub(segment.keyspace.disk_space());
                {
                    let mut all = self
                        .segments
                        .write()
                        .map_err(|_| LogError::storage("a writer panicked"))?;
                    all[topic.index()][partition as usize].retain(|s| s.base != segment.base);
                }
                // Not served from memory either: a read from a removed
                // offset resumes at the earliest kept.
                self.recent[topic.index()][partition as usize]
                    .lock()
                    .map_err(|_| LogError::storage("a reader panicked"))?
                    .forget_before(next_base);
                self.meta.remove(sealed_key).map_err(LogError::storage)?;
                self.db
                    .delete_keyspace(segment.keyspace.clone())
                    .map_err(LogError::storage)?;
                removed += next_base - segment.base;
            }
        }
        Ok(removed)
    }

    fn committed(&self, consumer: &str, topic: Topic, partition: u32) -> Result<u64, LogError> {
        self.check_partition(topic, partition)?;
        let key = Self::offset_key(consumer, topic, partition)?;
        match self.offsets.get(key).map_err(LogError::storage)? {
            Some(v) => decode_offset(&v),
            None => Ok(0),
        }
    }

    fn end_offsets(&self, topic: Topic) -> Result<Vec<u64>, LogError> {
        let next = self.next.lock().map_err(|_| LogError::storage("a writer panicked"))?;
        Ok(next[topic.index()].clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Retention;

    fn records(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
        (0..n)
            .map(|i| (format!("reddit\0t1_{i}").into_bytes(), format!("post {i}").into_bytes()))
            .collect()
    }

    fn as_refs(r: &[(Vec<u8>, Vec<u8>)]) -> Vec<(&[u8], &[u8])> {
        r.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect()
    }

    #[test]
    fn reads_served_from_the_newest_records_in_memory_equal_those_from_the_store() {
        let dir = tempfile::tempdir().unwrap();
        // Every read of 2 partitions x 60 records, from every offset, with
        // bounds in records and bytes that cut inside and across what memory
        // holds.
        let reads = |log: &FjallLog| -> Vec<Vec<Entry>> {
            let mut all = Vec::new();
            for p in 0..2 {
                for offset in 0..45 {
                    for (max, max_bytes) in [(1, usize::MAX), (7, usize::MAX), (100, 250), (100, usize::MAX)] {
                        all.push(log.read(Topic::Enriched, p, offset, max, max_bytes).unwrap());
                    }
                }
            }
            all
        };
        let served = {
            let mut log = FjallLog::open(dir.path(), 2).unwrap();
            log.recent_bytes = 400;
            for round in 0..20 {
                let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..6)
                    .map(|i| (format!("k{round}-{i}").into_bytes(), vec![b'a' + i as u8; 20 + 13 * i]))
                    .collect();
                log.append(Topic::Enriched, &as_refs(&recs)).unwrap();
            }
            for p in 0..2 {
                let recent = log.recent[1][p].lock().unwrap();
                let end = log.end_offsets(Topic::Enriched).unwrap()[p];
                // Memory holds the newest records only, up to the partition's end.
                assert!(recent.first > 0 && !recent.values.is_empty(), "{}", recent.first);
                assert_eq!(recent.first + recent.values.len() as u64, end);
                assert!(recent.bytes <= 400);
            }
            reads(&log)
        };
        // Reopened, memory holds nothing: every read is the store's.
        let log = FjallLog::open(dir.path(), 2).unwrap();
        assert!(log.recent[1].iter().all(|r| r.lock().unwrap().values.is_empty()));
        assert_eq!(served, reads(&log));
        assert!(served.iter().any(|r| r.len() > 1));
    }

    #[test]
    fn records_packed_into_chunks_read_back_from_any_offset_across_chunks_and_segments() {
        let dir = tempfile::tempdir().unwrap();
        // 300 records of up to 1.3 KiB in one append: several chunks (64 KiB
        // each), cut again where a segment (100 records) ends.
        let recs: Vec<(Vec<u8>, Vec<u8>)> = (0..300)
            .map(|i| (b"one-key".to_vec(), vec![b'a' + (i % 26) as u8; 1000 + (i * 7) % 300]))
            .collect();
        {
            let log = FjallLog::open_with_segments(dir.path(), 1, 100).unwrap();
            let positions = log.append(Topic::Raw, &as_refs(&recs)).unwrap();
            assert_eq!(positions.last().unwrap().offset, 299);
        }
        let log = FjallLog::open_with_segments(dir.path(), 1, 100).unwrap();
        assert_eq!(log.end_offsets(Topic::Raw).unwrap(), vec![300]);
        let chunks: usize = log
            .segments_of(Topic::Raw, 0)
            .unwrap()
            .iter()
            .map(|s| s.keyspace.iter().count())
            .sum();
        assert!(chunks > 3 && chunks < 20, "{chunks} chunks");
        for offset in 0..300u64 {
            for (max, max_bytes) in [(1, usize::MAX), (57, usize::MAX), (1000, 5_000)] {
                let read = log.read(Topic::Raw, 0, offset, max, max_bytes).unwrap();
                assert!(!read.is_empty(), "from {offset}");
                for (k, entry) in read.iter().enumerate() {
                    assert_eq!(entry.offset, offset + k as u64);
                    assert_eq!(&*entry.value, &recs[entry.offset as usize].1[..]);
                }
                let bytes: usize = read.iter().map(|e| e.value.len()).sum();
                let last = read.len() - 1;
                assert!(
                    read.len() == max || bytes >= max_bytes || offset + read.len() as u64 == 300,
                    "a read from {offset} stopped early"
                );
                assert!(last == 0 || bytes - read[last].value.len() < max_bytes);
            }
        }
    }

    #[test]
    fn a_log_of_one_record_per_entry_reads_on_and_a_damaged_chunk_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        {
            let log = FjallLog::open(dir.path(), 1).unwrap();
            let segment = &log.segments_of(Topic::Raw, 0).unwrap()[0].keyspace;
            // As logs before chunks were written: the offset as the key.
            for offset in 0..3u64 {
                segment.insert(offset.to_be_bytes(), format!("old {offset}")).unwrap();
            }
        }
        let log = FjallLog::open(dir.path(), 1).unwrap();
        assert_eq!(log.end_offsets(Topic::Raw).unwrap(), vec![3]);
        log.append(Topic::Raw, &[(b"k".as_slice(), b"new 3".as_slice())])
            .unwrap();
        let read = log.read(Topic::Raw, 0, 1, 10, usize::MAX).unwrap();
        let values: Vec<&[u8]> = read.iter().map(|e| &*e.value).collect();
        assert_eq!(values, [b"old 1".as_slice(), b"old 2", b"new 3"]);
        // A chunk whose lengths run past its end (reopened: read from the
        // store, not from memory).
        let segment = log.segments_of(Topic::Raw, 0).unwrap()[0].keyspace.clone();
        segment.insert(chunk_key(4, 2), [9u8, 0, 0, 0, b'x']).unwrap();
        drop(segment);
        drop(log);
        let log = FjallLog::open(dir.path(), 1).unwrap();
        assert_eq!(log.end_offsets(Topic::Raw).unwrap(), vec![6]);
        let err = log.read(Topic::Raw, 0, 4, 10, usize::MAX).unwrap_err().to_string();
        assert!(err.contains("damaged log chunk at offset 4"), "{err}");
    }

    #[test]
    fn a_clean_close_leaves_every_record_in_the_tables_not_only_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(50);
        let before;
        {
            let log = FjallLog::open(dir.path(), 2).unwrap();
            log.append(Topic::Enriched, &as_refs(&recs)).unwrap();
            log.commit("archive", Topic::Enriched, 1, 3).unwrap();
            before = log.end_offsets(Topic::Enriched).unwrap();
        }
        // What the next open would replay is gone: the tables alone must
        // hold the records and the commits.
        let mut journals = 0;
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "jnl") {
                std::fs::remove_file(&path).unwrap();
                journals += 1;
            }
        }
        assert!(
            journals > 0,
            "fjall's journal files are no longer *.jnl in the log's directory"
        );
        let log = FjallLog::open(dir.path(), 2).unwrap();
        assert_eq!(log.end_offsets(Topic::Enriched).unwrap(), before);
        assert_eq!(log.committed("archive", Topic::Enriched, 1).unwrap(), 3);
        crate::log::conformance::assert_holds(&log, Topic::Enriched, &recs);
    }

    /// Not a check of its own: the child process of the test below, which
    /// runs it (hence ignored). With `CHORUS_CRASH_LOG` set it writes
    /// transactions (an output record, its state, the input offset) until
    /// it is killed, printing each one the log acknowledged.
    #[test]
    #[ignore = "the child process of a_kill_during_transactions_keeps_each_one_whole_or_not_at_all, which runs it"]
    fn crash_child_writes_transactions_until_killed() {
        use std::io::Write;
        let Some(dir) = std::env::var_os("CHORUS_CRASH_LOG") else {
            return;
        };
        let log = FjallLog::open(Path::new(&dir), 2).unwrap();
        let body = vec![b'x'; 4096];
        let mut out = std::io::stdout().lock();
        // Goes on where the previous (killed) child stopped.
        for i in log.committed("crash", Topic::Raw, 0).unwrap().. {
            let (key, state_key) = (format!("k{i}"), format!("seen/k{i}"));
            let mut tx = Transaction::new();
            tx.append(Topic::Enriched, key.as_bytes(), &body)
                .put_state(state_key.as_bytes(), key.as_bytes())
                .commit("crash", Topic::Raw, 0, i + 1);
            log.write(&tx).unwrap();
            writeln!(out, "acked {i}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn a_kill_during_transactions_keeps_each_one_whole_or_not_at_all() {
        use std::io::BufRead;
        let dir = tempfile::tempdir().unwrap();
        for round in 0..8u64 {
            let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                .args([
                    "--exact",
                    "log::fjall::tests::crash_child_writes_transactions_until_killed",
                ])
                .args(["--ignored", "--nocapture", "--test-threads=1"])
                .env("CHORUS_CRASH_LOG", dir.path())
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            // The child's output is drained all along, so the kill lands
            // wherever its loop is (mostly inside a write), not while it
            // waits on a full pipe.
            let stdout = child.stdout.take().unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let reader = std::thread::spawn(move || {
                let mut acked = None;
                for line in std::io::BufReader::new(stdout).lines() {
                    if let Some(i) = line.unwrap().strip_prefix("acked ") {
                        acked = Some(i.parse::<u64>().unwrap());
                        let _ = tx.send(());
                    }
                }
                acked
            });
            // A different point of a write each round.
            for _ in 0..(round + 1) * 25 {
                rx.recv().expect("the child writes transactions");
            }
            std::thread::sleep(Duration::from_micros(150 * round + 50));
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let acked = reader.join().unwrap();
            let acked = acked.expect("the child wrote transactions");

            let log = FjallLog::open(dir.path(), 2).unwrap();
            let committed = log.committed("crash", Topic::Raw, 0).unwrap();
            // Every acknowledged transaction is there; at most the ones in
            // flight when the kill landed are on top of them.
            assert!(committed > acked, "round {round}: committed {committed}, acked {acked}");
            // The output records, the state and the offset agree: no
            // transaction is half there.
            let outputs: u64 = log.end_offsets(Topic::Enriched).unwrap().iter().sum();
            assert_eq!(outputs, committed, "round {round}");
            for i in 0..committed {
                let key = format!("k{i}");
                assert_eq!(
                    log.state(format!("seen/k{i}").as_bytes()).unwrap().as_deref(),
                    Some(key.as_bytes()),
                    "round {round}: transaction {i}"
                );
            }
            assert_eq!(log.state(format!("seen/k{committed}").as_bytes()).unwrap(), None);
            // The next child goes on from this recovered log.
        }
    }

    #[test]
    fn retention_drops_old_segments_only_behind_every_consumer() {
        let dir = tempfile::tempdir().unwrap();
        let recs = records(25);
        {
            let log = FjallLog::open_with_segments(dir.path(), 1, 10).unwrap();
            log.append(Topic::Raw, &as_refs(&recs)).unwrap();
            let keep_all = Retention {
                max_age: Some(Duration::from_secs(3600)),
                max_bytes: None,
            };
            assert_eq!(log.enforce_retention(Topic::Raw, &keep_all, &[25]).unwrap(), 0);
            let drop_old = Retention {
                max_age: Some(Duration::ZERO),
                max_bytes: None,
            };
            // The consumer is at 15: only the segment 0..10 is behind it.
            assert_eq!(log.enforce_retention(Topic::Raw, &drop_old, &[15]).unwrap(), 10);
            assert_eq!(log.read(Topic::Raw, 0, 0, 100, usize::MAX).unwrap()[0].offset, 10);
            // Everything consumed: all but the newest segment goes.
            assert_eq!(log.enforce_retention(Topic::Raw, &drop_old, &[25]).unwrap(), 10);
            assert_eq!(log.read(Topic::Raw, 0, 3, 100, usize::MAX).unwrap().len(), 5);
        }
        // After a reopen the offsets continue where they were.
        let log = FjallLog::open_with_segments(dir.path(), 1, 10).unwrap();
        assert_eq!(log.end_offsets(Topic::Raw).unwrap(), vec![25]);
        let positions = log.append(Topic::Raw, &as_refs(&records(1))).unwrap();
        assert_eq!(positions[0].offset, 25);
        let all = log.read(Topic::Raw, 0, 0, 100, usize::MAX).unwrap();
        assert_eq!(
            all.iter().map(|e| e.offset).collect::<Vec<_>>(),
            (20..26).collect::<Vec<_>>()
        );
        // A size bound alone removes the oldest segments too (sizes are
        // measured on disk: flush the memtables first).
        log.append(Topic::Raw, &as_refs(&records(30))).unwrap();
        for segment in log.segments_of(Topic::Raw, 0).unwrap() {
            segment.keyspace.rotate_memtable_and_wait().unwrap();
        }
        let small = Retention {
            max_age: None,
            max_bytes: Some(1),
        };
        assert!(log.enforce_retention(Topic::Raw, &small, &[56]).unwrap() >= 30);
        assert_eq!(log.end_offsets(Topic::Raw).unwrap(), vec![56]);
    }

    #[test]
    fn refuses_to_open_with_another_partition_count() {
        let dir = tempfile::tempdir().unwrap();
        drop(FjallLog::open(dir.path(), 2).unwrap());
        let err = FjallLog::open(dir.path(), 4).err().unwrap().to_string();
        assert!(err.contains("created with 2 partitions, not 4"), "{err}");
    }

    /// A log in a temporary directory, for the conformance checks.
    struct Place {
        dir: tempfile::TempDir,
        partitions: u32,
    }

    impl crate::log::conformance::Place for Place {
        fn open(&self) -> std::sync::Arc<dyn Log> {
            std::sync::Arc::new(FjallLog::open(self.dir.path(), self.partitions).unwrap())
        }
    }

    fn place(partitions: u32) -> Box<dyn crate::log::conformance::Place> {
        Box::new(Place {
            dir: tempfile::tempdir().unwrap(),
            partitions,
        })
    }

    crate::log_conformance!(place);
}
