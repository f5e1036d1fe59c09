//! `posts_latest` without sorting every post.
//!
//! One row per (`platform`, `id`), the newest `ingested_at`, is a window
//! (`row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at
//! DESC)`) that sorts — and past its memory, spills — every column of
//! every post, although almost every post has one version only. So a query
//! over `posts_latest` first reads the keys alone, hashes each one (xxh3,
//! a seed drawn per query), and finds the hashes seen more than once: the
//! posts sent again, and the rare keys that share a hash with another.
//! Then one scan of `posts` ([`LatestExec`]) passes a row whose hash was
//! seen once as it is (it is the only row of its key), and keeps the
//! others aside, in memory, until every partition of the scan is read;
//! of those, the newest row of each key (compared by the key itself, so a
//! collision costs time, never a wrong answer) is given last.
//!
//! The hashes of the keys (8 bytes a post) and the rows kept aside are
//! taken from the query's memory pool; when the hashes do not fit, or the
//! rows to keep aside would take more than a quarter of it, `posts_latest`
//! is the window over every post (which spills) instead.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch};
use arrow::compute::{cast, filter_record_batch};
use arrow::datatypes::{DataType, Int64Type, SchemaRef};
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, exec_err};
use datafusion::datasource::TableType;
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

use crate::record::column;

/// The hashes are already uniform: a set keyed by them needs no hashing.
#[derive(Default)]
struct Identity(u64);

impl Hasher for Identity {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

type Hashes = HashSet<u64, BuildHasherDefault<Identity>>;

/// The hash of a string (a null as a value no string hashes to, but for
/// chance) under `seed`.
fn part_hash(seed: u64, s: Option<&str>) -> u64 {
    match s {
        Some(s) => xxhash_rust::xxh3::xxh3_64_with_seed(s.as_bytes(), seed),
        None => seed.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15,
    }
}

/// The seed of a key's id: its platform's hash under the query's seed.
fn platform_hash(seed: u64, platform: Option<&str>) -> u64 {
    part_hash(seed, platform)
}

/// The hash of one key under `seed`.
#[cfg(test)]
fn key_hash(seed: u64, platform: Option<&str>, id: Option<&str>) -> u64 {
    part_hash(platform_hash(seed, platform), id)
}

/// A string column's values, by row.
enum Strings<'a> {
    Utf8(&'a arrow::array::StringArray),
    Large(&'a arrow::array::LargeStringArray),
    View(&'a arrow::array::StringViewArray),
}

impl<'a> Strings<'a> {
    fn of(a: &'a ArrayRef) -> Result<Strings<'a>> {
        Ok(match a.data_type() {
            DataType::Utf8 => Strings::Utf8(a.as_string::<i32>()),
            DataType::LargeUtf8 => Strings::Large(a.as_string::<i64>()),
            DataType::Utf8View => Strings::View(a.as_string_view()),
            other => return exec_err!("posts_latest: a key column is {other}, not a string"),
        })
    }

    #[inline]
    fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Utf8(s) => (!s.is_null(i)).then(|| s.value(i)),
            Strings::Large(s) => (!s.is_null(i)).then(|| s.value(i)),
            Strings::View(s) => (!s.is_null(i)).then(|| s.value(i)),
        }
    }
}

/// Calls `f` with the hash of each row's key.
fn each_hash(seed: u64, platform: &ArrayRef, id: &ArrayRef, mut f: impl FnMut(u64)) -> Result<()> {
    let (platforms, ids) = (Strings::of(platform)?, Strings::of(id)?);
    // Platforms are few and come in runs: each one's seed is made once a run.
    let mut last: Option<(Option<&str>, u64)> = None;
    for row in 0..platform.len().min(id.len()) {
        let p = platforms.get(row);
        let platform_seed = match last {
            Some((q, s)) if q == p => s,
            _ => {
                let s = platform_hash(seed, p);
                last = Some((p, s));
                s
            }
        };
        f(part_hash(platform_seed, ids.get(row)));
    }
    Ok(())
}

/// Registers `posts_latest` in `ctx` over table `posts` (whose `columns`
/// it has, in order). With `read` (the query reads it), the keys are read
/// now and [`LatestExec`] serves it; without it, or when the keys or the
/// rows to keep aside would not fit in `max_memory`, it is the window over
/// every post.
pub async fn register(ctx: &SessionContext, posts: &str, columns: &str, read: bool, max_memory: usize) -> Result<()> {
    let window = ctx
        .sql(&format!(
            "SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at \
             DESC) AS chorus_rank FROM {posts}) WHERE chorus_rank = 1"
        ))
        .await?
        .into_view();
    let table = match read {
        true => match resent_keys(ctx, posts, fastrand::u64(..)).await? {
            Some(resent) => Arc::new(Latest {
                posts: ctx.table_provider(posts).await?,
                resent: Arc::new(resent),
                window,
                max_memory,
            }),
            None => window,
        },
        false => window,
    };
    ctx.register_table(crate::query::POSTS_LATEST, table)?;
    Ok(())
}

/// Bytes a string value kept aside is counted for, when deciding whether
/// the rows kept aside fit (with 8 bytes a row besides).
const STRING_ASIDE_BYTES: usize = 32;

/// The hashes seen more than once, with a bit filter over them and the
/// reservation that holds them.
struct Resent {
    seed: u64,
    /// The bits of a key's hash kept (all but in a test that makes
    /// different keys share hashes).
    mask: u64,
    hashes: Hashes,
    /// The rows that have them.
    rows: usize,
    /// One bit per value of a hash's low bits: set for those of the set.
    filter: Vec<u64>,
    _reservation: MemoryReservation,
}

impl Resent {
    fn new(seed: u64, hashes: Hashes, rows: usize, reservation: MemoryReservation) -> Resent {
        // About 16 bits a hash: most keys not in the set are told by one bit.
        let bits = (hashes.len() * 16).next_power_of_two().max(64);
        let mut filter = vec![0u64; bits / 64];
        for h in &hashes {
            let bit = (*h as usize) & (bits - 1);
            filter[bit / 64] |= 1 << (bit % 64);
        }
        Resent {
            seed,
            mask: u64::MAX,
            hashes,
            rows,
            filter,
            _reservation: reservation,
        }
    }

    #[inline]
    fn contains(&self, h: u64) -> bool {
        let bit = (h as usize) & (self.filter.len() * 64 - 1);
        self.filter[bit / 64] & (1 << (bit % 64)) != 0 && self.hashes.contains(&h)
    }
}

/// Reads the keys of `posts` and returns the hashes seen more than once
/// (with the number of rows that have them); `None` when the hashes of
/// every key do not fit in the query's memory. Each partition of the scan
/// hashes its own keys and files them by their top bits on its own task;
/// then each bucket (the same bits in every partition: small enough to
/// sort in the cache) is sorted and counted, the buckets shared among as
/// many tasks.
async fn resent_keys(ctx: &SessionContext, posts: &str, seed: u64) -> Result<Option<Resent>> {
    let started = std::time::Instant::now();
    let reservation =
        Arc::new(MemoryConsumer::new("posts_latest: key hashes").register(&ctx.runtime_env().memory_pool));
    let streams = ctx
        .table(posts)
        .await?
        .select_columns(&[column::PLATFORM, column::ID])?
        .execute_stream_partitioned()
        .await?;
    let tasks: Vec<_> = streams
        .into_iter()
        .map(|stream| tokio::spawn(bucketed_hashes(stream, seed, reservation.clone())))
        .collect();
    let workers = tasks.len().max(1);
    let mut parts = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(Ok(Some(part))) => parts.push(part),
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(e),
            Err(e) => return exec_err!("posts_latest: reading the keys failed: {e}"),
        }
    }
    let read = started.elapsed();
    let parts = Arc::new(parts);
    let per_task = BUCKETS.div_ceil(workers);
    let counters: Vec<_> = (0..workers)
        .map(|w| {
            let parts = parts.clone();
            tokio::spawn(async move { repeated(&parts, w * per_task..((w + 1) * per_task).min(BUCKETS)) })
        })
        .collect();
    let mut resent = Hashes::default();
    let mut aside = 0usize;
    for counter in counters {
        let (hashes, rows) = counter
            .await
            .or_else(|e| exec_err!("posts_latest: counting the keys failed: {e}"))?;
        resent.reserve(hashes.len());
        resent.extend(hashes);
        aside += rows;
    }
    drop(parts);
    // What stays held is the set (about 16 bytes a hash with its table)
    // and its filter (2 bytes a hash).
    let Ok(reservation) = Arc::try_unwrap(reservation) else {
        return exec_err!("posts_latest: a key reader outlived the scan");
    };
    reservation.resize(resent.capacity() * 2 * size_of::<u64>() + resent.len() * 2);
    tracing::debug!(?read, counted = ?started.elapsed() - read, resent = resent.len(), rows = aside, "posts_latest: keys read");
    Ok(Some(Resent::new(seed, resent, aside, reservation)))
}

/// The buckets key hashes are filed in, by their top bits.
const BUCKET_BITS: u32 = 11;
const BUCKETS: usize = 1 << BUCKET_BITS;

#[inline]
fn bucket(hash: u64) -> usize {
    (hash >> (64 - BUCKET_BITS)) as usize
}

/// One partition's key hashes, filed by bucket: bucket `b` is
/// `hashes[starts[b]..starts[b + 1]]`.
struct Bucketed {
    starts: Vec<usize>,
    hashes: Vec<u64>,
}

impl Bucketed {
    /// `hashes` filed by bucket, with a second buffer from `reservation`;
    /// sorted in place instead (also filed by bucket) when it has no room.
    fn new(mut hashes: Vec<u64>, reservation: &MemoryReservation) -> Bucketed {
        let mut starts = vec![0usize; BUCKETS + 1];
        let bytes = hashes.len() * size_of::<u64>();
        if reservation.try_grow(bytes).is_err() {
            hashes.sort_unstable();
            for (b, start) in starts.iter_mut().enumerate().skip(1) {
                *start = hashes.partition_point(|h| bucket(*h) < b);
            }
            return Bucketed { starts, hashes };
        }
        for h in &hashes {
            starts[bucket(*h) + 1] += 1;
        }
        for b in 1..=BUCKETS {
            starts[b] += starts[b - 1];
        }
        let mut at = starts.clone();
        let mut filed = vec![0u64; hashes.len()];
        for h in hashes {
            let slot = &mut at[bucket(h)];
            filed[*slot] = h;
            *slot += 1;
        }
        reservation.shrink(bytes);
        Bucketed { starts, hashes: filed }
    }

    fn bucket(&self, b: usize) -> &[u64] {
        &self.hashes[self.starts[b]..self.starts[b + 1]]
    }
}

/// The hashes of one partition's keys, filed by bucket; `None` when they
/// do not fit in `reservation`'s pool.
async fn bucketed_hashes(
    mut stream: SendableRecordBatchStream,
    seed: u64,
    reservation: Arc<MemoryReservation>,
) -> Result<Option<Bucketed>> {
    let mut hashes: Vec<u64> = Vec::new();
    let mut reserved = 0usize;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let wanted = (hashes.len() + batch.num_rows()) * size_of::<u64>();
        if wanted > reserved {
            // Room for twice as many, as the vector grows.
            let grow = wanted.max(2 * reserved) - reserved;
            if reservation.try_grow(grow).is_err() {
                return Ok(None);
            }
            reserved += grow;
            hashes.reserve_exact(reserved / size_of::<u64>() - hashes.len());
        }
        each_hash(seed, batch.column(0), batch.column(1), |h| hashes.push(h))?;
    }
    Ok(Some(Bucketed::new(hashes, &reservation)))
}

/// The hashes of `buckets` that `parts` hold more than once, and the
/// number of rows that have them.
fn repeated(parts: &[Bucketed], buckets: std::ops::Range<usize>) -> (Vec<u64>, usize) {
    let (mut found, mut rows) = (Vec::new(), 0usize);
    let mut all = Vec::new();
    for b in buckets {
        all.clear();
        for part in parts {
            all.extend_from_slice(part.bucket(b));
        }
        all.sort_unstable();
        for run in all.chunk_by(|a, b| a == b) {
            if run.len() > 1 {
                found.push(run[0]);
                rows += run.len();
            }
        }
    }
    (found, rows)
}

/// `posts_latest` as a table: [`LatestExec`] over a scan of `posts`, or
/// the window when the rows to keep aside would take more than a quarter
/// of `max_memory`.
struct Latest {
    posts: Arc<dyn TableProvider>,
    resent: Arc<Resent>,
    window: Arc<dyn TableProvider>,
    max_memory: usize,
}

impl fmt::Debug for Latest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Latest")
            .field("resent", &self.resent.hashes.len())
            .finish()
    }
}

#[async_trait]
impl TableProvider for Latest {
    fn schema(&self) -> SchemaRef {
        self.posts.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        // Filters are not pushed below the choice of the newest row (as
        // they would not be below the window): they apply to its result.
        let schema = self.posts.schema();
        let index = |name: &str| schema.index_of(name);
        let keys = [
            index(column::PLATFORM)?,
            index(column::ID)?,
            index(column::INGESTED_AT)?,
        ];
        let wanted: Vec<usize> = projection
            .cloned()
            .unwrap_or_else(|| (0..schema.fields().len()).collect());
        let mut read = wanted.clone();
        for k in keys {
            if !read.contains(&k) {
                read.push(k);
            }
        }
        let row_bytes: usize = 8 + read
            .iter()
            .map(|c| match schema.field(*c).data_type() {
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => STRING_ASIDE_BYTES,
                other => other.primitive_width().unwrap_or(STRING_ASIDE_BYTES),
            })
            .sum::<usize>();
        if self.resent.rows.saturating_mul(row_bytes) > self.max_memory / 4 {
            return self.window.scan(state, projection, filters, limit).await;
        }
        let input = self.posts.scan(state, Some(&read), &[], None).await?;
        let at = |c: usize| read.iter().position(|r| *r == c).expect("every key column is read");
        let output: Vec<usize> = wanted.iter().map(|c| at(*c)).collect();
        Ok(Arc::new(LatestExec::new(
            input,
            self.resent.clone(),
            [at(keys[0]), at(keys[1]), at(keys[2])],
            output,
        )?))
    }
}

/// The newest row of each key of its input (see the module's text).
pub struct LatestExec {
    input: Arc<dyn ExecutionPlan>,
    resent: Arc<Resent>,
    /// The input's columns of platform, id and ingested_at.
    keys: [usize; 3],
    /// The input's columns given, in order.
    output: Vec<usize>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    aside: Arc<Mutex<Aside>>,
}

/// The rows kept aside by the partitions, until the last one ends.
struct Aside {
    /// Partitions still reading.
    reading: usize,
    /// Each with its rows' key hashes.
    batches: Vec<(RecordBatch, Vec<u64>)>,
    reservation: Option<MemoryReservation>,
}

impl fmt::Debug for LatestExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LatestExec").finish_non_exhaustive()
    }
}

impl DisplayAs for LatestExec {
    fn fmt_as(&self, _: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LatestExec: resent_hashes={}", self.resent.hashes.len())
    }
}

impl LatestExec {
    fn new(input: Arc<dyn ExecutionPlan>, resent: Arc<Resent>, keys: [usize; 3], output: Vec<usize>) -> Result<Self> {
        let schema = Arc::new(input.schema().project(&output)?);
        let partitions = input.properties().partitioning.partition_count();
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(partitions),
            EmissionType::Both,
            Boundedness::Bounded,
        ));
        Ok(LatestExec {
            input,
            resent,
            keys,
            output,
            schema,
            properties,
            aside: Arc::new(Mutex::new(Aside {
                reading: partitions,
                batches: Vec::new(),
                reservation: None,
            })),
        })
    }
}

impl ExecutionPlan for LatestExec {
    fn name(&self) -> &str {
        "LatestExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        if children.len() != 1 {
            return exec_err!("LatestExec has one input");
        }
        Ok(Arc::new(LatestExec::new(
            children.swap_remove(0),
            self.resent.clone(),
            self.keys,
            self.output.clone(),
        )?))
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        {
            let mut aside = self.aside.lock().unwrap_or_else(|e| e.into_inner());
            if aside.reservation.is_none() {
                aside.reservation =
                    Some(MemoryConsumer::new("posts_latest: rows kept aside").register(context.memory_pool()));
            }
        }
        let input = self.input.execute(partition, context)?;
        let split = Arc::new(Split {
            resent: self.resent.clone(),
            keys: self.keys,
            output: self.output.clone(),
            schema: self.schema.clone(),
            aside: self.aside.clone(),
        });
        let last = split.clone();
        let rows = input
            .map(move |batch| split.split(batch?))
            .chain(futures::stream::once(async move { last.finish() }));
        // The last batch (the newest of the rows kept aside, or nothing)
        // may be empty: left out.
        let rows = rows.filter(|b| futures::future::ready(b.as_ref().map_or(true, |b| b.num_rows() > 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), rows)))
    }
}

/// A post's key: platform and id.
type Key<'a> = (Option<&'a str>, Option<&'a str>);
/// Where a row kept aside is (batch, row) and its `ingested_at`.
type Place = (usize, usize, Option<i64>);

/// What one partition's stream needs.
struct Split {
    resent: Arc<Resent>,
    keys: [usize; 3],
    output: Vec<usize>,
    schema: SchemaRef,
    aside: Arc<Mutex<Aside>>,
}

impl Split {
    /// The rows of `batch` whose hash was seen once; the others are kept aside.
    fn split(&self, batch: RecordBatch) -> Result<RecordBatch> {
        if self.resent.hashes.is_empty() {
            return Ok(batch.project(&self.output)?);
        }
        // The hashes first, then the look-ups: a loop of look-ups alone
        // keeps many of the filter's cache misses in flight at once.
        let mut hashes = Vec::with_capacity(batch.num_rows());
        each_hash(
            self.resent.seed,
            batch.column(self.keys[0]),
            batch.column(self.keys[1]),
            |h| hashes.push(h & self.resent.mask),
        )?;
        let resent: Vec<bool> = hashes.iter().map(|h| self.resent.contains(*h)).collect();
        let any = resent.contains(&true);
        if !any {
            return Ok(batch.project(&self.output)?);
        }
        let kept_hashes: Vec<u64> = hashes
            .iter()
            .zip(&resent)
            .filter(|(_, r)| **r)
            .map(|(h, _)| *h)
            .collect();
        let resent = BooleanArray::from(resent);
        let kept = filter_record_batch(&batch, &resent)?;
        {
            let mut aside = self.aside.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(reservation) = &aside.reservation {
                reservation.try_grow(kept.get_array_memory_size() + kept_hashes.len() * size_of::<u64>())?;
            }
            aside.batches.push((kept, kept_hashes));
        }
        let once = arrow::compute::not(&resent)?;
        Ok(filter_record_batch(&batch.project(&self.output)?, &once)?)
    }

    /// When this partition is the last to end: the newest of each key of
    /// the rows kept aside.
    fn finish(&self) -> Result<RecordBatch> {
        let started = std::time::Instant::now();
        let batches = {
            let mut aside = self.aside.lock().unwrap_or_else(|e| e.into_inner());
            aside.reading = aside.reading.saturating_sub(1);
            if aside.reading > 0 || aside.batches.is_empty() {
                return Ok(RecordBatch::new_empty(self.schema.clone()));
            }
            let batches = std::mem::take(&mut aside.batches);
            if let Some(reservation) = &aside.reservation {
                reservation.free();
            }
            batches
        };
        // Per key: where its newest row is (a null ingested_at first, as the
        // window's DESC orders nulls; the first of equals). Read in place:
        // the rows kept aside are not copied into one batch first. Keys are
        // found by their hash; one whose hash another key took first (a
        // collision) by itself.
        let mut columns = Vec::with_capacity(batches.len());
        for (batch, _) in &batches {
            let at = cast(batch.column(self.keys[2]), &DataType::Int64)?;
            columns.push((
                Strings::of(batch.column(self.keys[0]))?,
                Strings::of(batch.column(self.keys[1]))?,
                at,
            ));
        }
        let rows: usize = batches.iter().map(|(b, _)| b.num_rows()).sum();
        // A null ingested_at counts as newest; of equal times, the first.
        let keep_newer = |old: &mut Place, new: Place| {
            let newer = match (new.2, old.2) {
                (None, Some(_)) => true,
                (Some(a), Some(b)) => a > b,
                _ => false,
            };
            if newer {
                *old = new;
            }
        };
        let mut newest: HashMap<u64, Place, BuildHasherDefault<Identity>> =
            HashMap::with_capacity_and_hasher(rows, BuildHasherDefault::default());
        let mut collided: HashMap<Key<'_>, Place, rustc_hash::FxBuildHasher> = HashMap::default();
        for (b, ((platforms, ids, at), (_, hashes))) in columns.iter().zip(&batches).enumerate() {
            let at = at.as_primitive::<Int64Type>();
            for (row, hash) in hashes.iter().enumerate() {
                let place = (b, row, (!at.is_null(row)).then(|| at.value(row)));
                match newest.entry(*hash) {
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(place);
                    }
                    std::collections::hash_map::Entry::Occupied(mut o) => {
                        let (ob, orow, _) = *o.get();
                        let (op, oi, _) = &columns[ob];
                        let key = (platforms.get(row), ids.get(row));
                        if (op.get(orow), oi.get(orow)) == key {
                            keep_newer(o.get_mut(), place);
                        } else {
                            collided
                                .entry(key)
                                .and_modify(|old| keep_newer(old, place))
                                .or_insert(place);
                        }
                    }
                }
            }
        }
        let mut winners: Vec<(usize, usize)> = newest
            .into_values()
            .chain(collided.into_values())
            .map(|(b, row, _)| (b, row))
            .collect();
        winners.sort_unstable();
        if self.output.is_empty() {
            // No column read (`count(*)`): the rows alone.
            let options = arrow::array::RecordBatchOptions::new().with_row_count(Some(winners.len()));
            return Ok(RecordBatch::try_new_with_options(
                self.schema.clone(),
                vec![],
                &options,
            )?);
        }
        let projected = batches
            .iter()
            .map(|(b, _)| b.project(&self.output))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let projected: Vec<&RecordBatch> = projected.iter().collect();
        let newest = arrow::compute::interleave_record_batch(&projected, &winners)?;
        tracing::debug!(rows, newest = winners.len(), took = ?started.elapsed(), "posts_latest: the newest of the rows kept aside");
        Ok(newest)
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use datafusion::execution::runtime_env::RuntimeEnvBuilder;
    use datafusion::prelude::SessionConfig;

    use super::*;

    const COLUMNS: &str = "platform, id, ingested_at, score";

    /// A row of the test's `posts`: platform, id, ingested_at, score.
    type Row = (String, Option<String>, i64, i64);
    /// Per key: its newest `ingested_at` and the scores of the rows that have it.
    type Newest<'a> = HashMap<(&'a str, Option<&'a str>), (i64, Vec<i64>)>;

    /// `posts` of random rows over few keys: re-sends, ties on
    /// `ingested_at`, null ids; in four partitions of several batches.
    fn posts(rng: &mut fastrand::Rng) -> (MemTable, Vec<Row>) {
        let schema = Arc::new(Schema::new(vec![
            Field::new("platform", DataType::Utf8, false),
            Field::new("id", DataType::Utf8, true),
            Field::new("ingested_at", DataType::Int64, false),
            Field::new("score", DataType::Int64, false),
        ]));
        let rows: Vec<_> = (0..3000)
            .map(|n| {
                let platform = ["reddit", "twitter"][rng.usize(0..2)].to_string();
                let id = (rng.u8(..) != 0).then(|| format!("p{}", rng.usize(0..1500)));
                (platform, id, rng.i64(0..40), n)
            })
            .collect();
        let partitions = rows
            .chunks(250)
            .map(|chunk| {
                RecordBatch::try_new(
                    schema.clone(),
                    vec![
                        Arc::new(StringArray::from_iter_values(chunk.iter().map(|r| r.0.as_str()))),
                        Arc::new(chunk.iter().map(|r| r.1.as_deref()).collect::<StringArray>()),
                        Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.2))),
                        Arc::new(Int64Array::from_iter_values(chunk.iter().map(|r| r.3))),
                    ],
                )
                .unwrap()
            })
            .collect::<Vec<_>>()
            .chunks(3)
            .map(<[_]>::to_vec)
            .collect();
        (MemTable::try_new(schema, partitions).unwrap(), rows)
    }

    /// Checks `posts_latest` against the rows: one row per key, of its
    /// newest `ingested_at` (any one of those that tie).
    async fn check(ctx: &SessionContext, rows: &[Row]) {
        let mut newest = Newest::new();
        for (platform, id, at, score) in rows {
            let entry = newest.entry((platform, id.as_deref())).or_insert((*at, Vec::new()));
            if *at > entry.0 {
                *entry = (*at, Vec::new());
            }
            if *at == entry.0 {
                entry.1.push(*score);
            }
        }
        let batches = ctx
            .sql("SELECT * FROM posts_latest")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let mut seen = HashMap::new();
        for batch in &batches {
            let (platform, id) = (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>());
            let (at, score) = (
                batch.column(2).as_primitive::<arrow::datatypes::Int64Type>(),
                batch.column(3).as_primitive::<arrow::datatypes::Int64Type>(),
            );
            for i in 0..batch.num_rows() {
                let key = (platform.value(i), (!id.is_null(i)).then(|| id.value(i)));
                let (want_at, scores) = &newest[&key];
                assert_eq!(at.value(i), *want_at, "{key:?}: not the newest");
                assert!(scores.contains(&score.value(i)), "{key:?}: not a row of the newest");
                assert!(seen.insert(key, ()).is_none(), "{key:?} twice");
            }
        }
        assert_eq!(seen.len(), newest.len(), "a key is missing");
    }

    /// The physical plan of `sql`, as EXPLAIN shows it.
    async fn plan(ctx: &SessionContext, sql: &str) -> String {
        let plan = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string()
    }

    /// A context with the test's `posts`.
    fn with_posts(rng: &mut fastrand::Rng, ctx: SessionContext) -> (SessionContext, Vec<Row>) {
        let (table, rows) = posts(rng);
        ctx.register_table("posts", Arc::new(table)).unwrap();
        (ctx, rows)
    }

    #[tokio::test]
    async fn only_the_resent_keys_are_kept_aside_and_the_answer_is_the_windows() {
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..5 {
            let (ctx, rows) = with_posts(&mut rng, SessionContext::new());
            register(&ctx, "posts", COLUMNS, true, 1 << 30).await.unwrap();
            assert!(plan(&ctx, "SELECT * FROM posts_latest").await.contains("LatestExec"));
            check(&ctx, &rows).await;
            // Read twice in one query: each read has its own rows aside.
            let keys = rows
                .iter()
                .filter_map(|r| r.1.as_ref().map(|id| (&r.0, id)))
                .collect::<HashSet<_>>()
                .len();
            let batches = ctx
                .sql("SELECT count(*) FROM posts_latest a JOIN posts_latest b ON a.platform = b.platform AND a.id = b.id")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(batches[0].column(0).as_primitive::<Int64Type>().value(0), keys as i64);
            // No column read: the rows alone, one a key (null ids included).
            let all_keys = rows.iter().map(|r| (&r.0, &r.1)).collect::<HashSet<_>>().len();
            let batches = ctx
                .sql("SELECT count(*) FROM posts_latest")
                .await
                .unwrap()
                .collect()
                .await
                .unwrap();
            assert_eq!(
                batches[0].column(0).as_primitive::<Int64Type>().value(0),
                all_keys as i64
            );
        }
    }

    #[tokio::test]
    async fn keys_that_share_a_hash_with_another_are_still_counted_once() {
        // Hashes of 3 bits, all in the set: every row is kept aside, and
        // about 1,500 keys share 8 hashes; the keys tell them apart.
        let (ctx, rows) = with_posts(&mut fastrand::Rng::with_seed(7), SessionContext::new());
        let seed = 99;
        let mask = 0b111;
        let all: Hashes = rows
            .iter()
            .map(|r| key_hash(seed, Some(&r.0), r.1.as_deref()) & mask)
            .collect();
        assert_eq!(all.len(), 8);
        let reservation = MemoryConsumer::new("test").register(&ctx.runtime_env().memory_pool);
        let latest = Latest {
            posts: ctx.table_provider("posts").await.unwrap(),
            resent: Arc::new(Resent {
                mask,
                ..Resent::new(seed, all, rows.len(), reservation)
            }),
            window: Arc::new(
                MemTable::try_new(ctx.table_provider("posts").await.unwrap().schema(), vec![vec![]]).unwrap(),
            ),
            max_memory: 1 << 30,
        };
        ctx.register_table(crate::query::POSTS_LATEST, Arc::new(latest))
            .unwrap();
        check(&ctx, &rows).await;
    }

    #[test]
    fn hashes_filed_by_bucket_or_sorted_in_place_count_the_same_repeats() {
        // Hashes with repeats within and across two partitions, crowded in
        // a few buckets as well as spread over all.
        let mut rng = fastrand::Rng::with_seed(21);
        let parts: Vec<Vec<u64>> = (0..2)
            .map(|_| {
                (0..20_000)
                    .map(|_| match rng.u8(0..3) {
                        0 => rng.u64(0..5_000) << 50,
                        _ => rng.u64(0..30_000).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    })
                    .collect()
            })
            .collect();
        let mut counts: HashMap<u64, usize> = HashMap::new();
        for h in parts.iter().flatten() {
            *counts.entry(*h).or_default() += 1;
        }
        let mut want: Vec<u64> = counts.iter().filter(|(_, n)| **n > 1).map(|(h, _)| *h).collect();
        want.sort_unstable();
        let want_rows: usize = counts.values().filter(|n| **n > 1).sum();
        assert!(want.len() > 1000);
        // A pool with room for the second buffer files by bucket; one
        // without sorts in place.
        for pool in [usize::MAX, 0] {
            let pool: Arc<dyn datafusion::execution::memory_pool::MemoryPool> = Arc::new(GreedyMemoryPool::new(pool));
            let reservation = MemoryConsumer::new("test").register(&pool);
            let filed: Vec<Bucketed> = parts.iter().map(|p| Bucketed::new(p.clone(), &reservation)).collect();
            let (mut found, mut rows) = (Vec::new(), 0);
            for range in [0..BUCKETS / 3, BUCKETS / 3..BUCKETS] {
                let (f, r) = repeated(&filed, range);
                found.extend(f);
                rows += r;
            }
            found.sort_unstable();
            assert_eq!(found, want);
            assert_eq!(rows, want_rows);
        }
    }

    #[tokio::test]
    async fn past_the_memory_of_a_query_it_is_the_window_over_every_post() {
        // The hashes do not fit in the pool.
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1024)))
            .build_arc()
            .unwrap();
        let (ctx, _) = with_posts(
            &mut fastrand::Rng::with_seed(3),
            SessionContext::new_with_config_rt(SessionConfig::new(), runtime),
        );
        register(&ctx, "posts", COLUMNS, true, 1024).await.unwrap();
        let window = plan(&ctx, "SELECT * FROM posts_latest").await;
        assert!(
            window.contains("WindowAggExec") && !window.contains("LatestExec"),
            "{window}"
        );
        // The rows to keep aside would pass a quarter of max_memory.
        let (ctx, rows) = with_posts(&mut fastrand::Rng::with_seed(4), SessionContext::new());
        register(&ctx, "posts", COLUMNS, true, 100_000).await.unwrap();
        assert!(!plan(&ctx, "SELECT * FROM posts_latest").await.contains("LatestExec"));
        check(&ctx, &rows).await;
        // Not read: no keys read either.
        let (ctx, rows) = with_posts(&mut fastrand::Rng::with_seed(5), SessionContext::new());
        register(&ctx, "posts", COLUMNS, false, 1 << 30).await.unwrap();
        assert!(!plan(&ctx, "SELECT * FROM posts_latest").await.contains("LatestExec"));
        check(&ctx, &rows).await;
    }
}
