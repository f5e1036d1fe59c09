//! `posts_latest` without sorting every post.
//!
//! One row per (`platform`, `id`), the newest `ingested_at`, is a window
//! (`row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at
//! DESC)`) that sorts — and past its memory, spills — every column of
//! every post, although almost every post has one version only. So a query
//! over `posts_latest` first reads the keys alone, hashes each one (xxh3,
//! a seed drawn per query), and finds the hashes seen more than once:
//! the posts sent again, and the rare keys that share a hash with another.
//! A post whose hash is seen once is the only row of its key and is read as
//! it is; only the others go through the window. A collision therefore
//! costs time, never a wrong answer.
//!
//! The hashes of the keys (8 bytes a post) are taken from the query's
//! memory pool; when they do not fit, the query falls back to the window
//! over every post.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, BooleanArray};
use arrow::datatypes::DataType;
use datafusion::common::{Result, exec_err};
use datafusion::execution::context::SessionContext;
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};
use futures::StreamExt;

use crate::record::column;

/// The function that says whether a key is among the hashes seen more
/// than once (the SQL of `posts_latest` calls it).
pub const RESENT: &str = "chorus_resent";

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

/// Calls `f` with the hash of each row's key.
fn each_hash(seed: u64, platform: &ArrayRef, id: &ArrayRef, mut f: impl FnMut(u64)) -> Result<()> {
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
                other => return exec_err!("{RESENT}: a key column is {other}, not a string"),
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

/// The SQL of `posts_latest` (its `columns` of table `posts`, one row per
/// key). With `read` (the query reads it), the keys are read now and only
/// the posts whose hash was seen more than once go through the window;
/// without it, or when the hashes do not fit in the query's memory, the
/// window is over every post.
pub async fn view(ctx: &SessionContext, posts: &str, columns: &str, read: bool) -> Result<String> {
    Ok(if read && register(ctx, posts, fastrand::u64(..)).await? {
        split(posts, columns)
    } else {
        window(posts, columns, "")
    })
}

/// The window over the rows of `posts` that pass `filter`.
fn window(posts: &str, columns: &str, filter: &str) -> String {
    format!(
        "SELECT {columns} FROM (SELECT *, row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at DESC) \
         AS chorus_rank FROM {posts}{filter}) WHERE chorus_rank = 1"
    )
}

/// The posts whose hash was seen once as they are, the others through the
/// window.
fn split(posts: &str, columns: &str) -> String {
    format!(
        "SELECT {columns} FROM {posts} WHERE NOT {RESENT}(platform, id) UNION ALL {}",
        window(posts, columns, &format!(" WHERE {RESENT}(platform, id)"))
    )
}

/// Reads the keys of `posts` in `ctx` and registers [`RESENT`] for them.
/// False when their hashes do not fit in the query's memory.
async fn register(ctx: &SessionContext, posts: &str, seed: u64) -> Result<bool> {
    let reservation = MemoryConsumer::new("posts_latest: key hashes").register(&ctx.runtime_env().memory_pool);
    let mut hashes: Vec<u64> = Vec::new();
    let mut stream = ctx
        .table(posts)
        .await?
        .select_columns(&[column::PLATFORM, column::ID])?
        .execute_stream()
        .await?;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let wanted = (hashes.len() + batch.num_rows()) * size_of::<u64>();
        if wanted > reservation.size() {
            // Room for twice as many, as the vector grows.
            let grow = wanted.max(2 * reservation.size()) - reservation.size();
            if reservation.try_grow(grow).is_err() {
                return Ok(false);
            }
            hashes.reserve_exact(reservation.size() / size_of::<u64>() - hashes.len());
        }
        each_hash(seed, batch.column(0), batch.column(1), |h| hashes.push(h))?;
    }
    drop(stream);
    hashes.sort_unstable();
    let mut resent = Hashes::default();
    for pair in hashes.windows(2) {
        if pair[0] == pair[1] {
            resent.insert(pair[0]);
        }
    }
    drop(hashes);
    // What stays held is the set (about 16 bytes a hash with its table)
    // and its filter (2 bytes a hash).
    reservation.resize(resent.capacity() * 2 * size_of::<u64>() + resent.len() * 2);
    install(ctx, seed, resent, reservation);
    Ok(true)
}

fn install(ctx: &SessionContext, seed: u64, resent: Hashes, reservation: MemoryReservation) {
    // About 16 bits a hash: most keys not in the set are told by one bit,
    // without a look into the set (a random read far larger than a cache).
    let bits = (resent.len() * 16).next_power_of_two().max(64);
    let mut filter = vec![0u64; bits / 64];
    for h in &resent {
        let bit = (*h as usize) & (bits - 1);
        filter[bit / 64] |= 1 << (bit % 64);
    }
    ctx.register_udf(ScalarUDF::new_from_impl(Resent {
        seed,
        resent: Arc::new(resent),
        filter: Arc::new(filter),
        signature: Signature::string(2, Volatility::Immutable),
        _reservation: Arc::new(reservation),
    }));
}

/// `chorus_resent(platform, id)`: whether the key's hash was seen more
/// than once when the query started.
struct Resent {
    seed: u64,
    resent: Arc<Hashes>,
    /// One bit per value of a hash's low bits: set for those of the set.
    filter: Arc<Vec<u64>>,
    signature: Signature,
    _reservation: Arc<MemoryReservation>,
}

impl std::fmt::Debug for Resent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resent").field("hashes", &self.resent.len()).finish()
    }
}

impl PartialEq for Resent {
    fn eq(&self, other: &Self) -> bool {
        self.seed == other.seed && Arc::ptr_eq(&self.resent, &other.resent)
    }
}

impl Eq for Resent {}

impl Hash for Resent {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.seed.hash(state);
    }
}

impl ScalarUDFImpl for Resent {
    fn name(&self) -> &str {
        RESENT
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let [platform, id] = arrays.as_slice() else {
            return exec_err!("{RESENT} takes platform and id");
        };
        let mut out = Vec::with_capacity(id.len());
        let mask = self.filter.len() * 64 - 1;
        each_hash(self.seed, platform, id, |h| {
            let bit = (h as usize) & mask;
            out.push(self.filter[bit / 64] & (1 << (bit % 64)) != 0 && self.resent.contains(&h));
        })?;
        Ok(ColumnarValue::Array(Arc::new(BooleanArray::from(out))))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use arrow::array::{Int64Array, RecordBatch, StringArray};
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

    #[tokio::test]
    async fn only_the_resent_keys_go_through_the_window_and_the_answer_is_the_windows() {
        let mut rng = fastrand::Rng::with_seed(12);
        for _ in 0..5 {
            let ctx = SessionContext::new();
            let (table, rows) = posts(&mut rng);
            ctx.register_table("posts", Arc::new(table)).unwrap();
            let sql = view(&ctx, "posts", COLUMNS, true).await.unwrap();
            assert!(sql.contains(RESENT), "{sql}");
            ctx.sql(&format!("CREATE VIEW posts_latest AS {sql}")).await.unwrap();
            check(&ctx, &rows).await;
        }
    }

    #[tokio::test]
    async fn keys_that_share_a_hash_with_another_are_still_counted_once() {
        // Every key's hash in the set, as if each collided with another:
        // all rows go through the window, which gives the same answer.
        let mut rng = fastrand::Rng::with_seed(7);
        let ctx = SessionContext::new();
        let (table, rows) = posts(&mut rng);
        ctx.register_table("posts", Arc::new(table)).unwrap();
        let seed = 99;
        let all = rows
            .iter()
            .map(|r| key_hash(seed, Some(&r.0), r.1.as_deref()))
            .collect();
        let reservation = MemoryConsumer::new("test").register(&ctx.runtime_env().memory_pool);
        install(&ctx, seed, all, reservation);
        ctx.sql(&format!("CREATE VIEW posts_latest AS {}", split("posts", COLUMNS)))
            .await
            .unwrap();
        check(&ctx, &rows).await;
    }

    #[tokio::test]
    async fn keys_past_the_memory_of_a_query_fall_back_to_the_window() {
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(GreedyMemoryPool::new(1024)))
            .build_arc()
            .unwrap();
        let ctx = SessionContext::new_with_config_rt(SessionConfig::new(), runtime);
        let (table, _) = posts(&mut fastrand::Rng::with_seed(3));
        ctx.register_table("posts", Arc::new(table)).unwrap();
        let sql = view(&ctx, "posts", COLUMNS, true).await.unwrap();
        assert!(!sql.contains(RESENT), "{sql}");
        // Not read: no keys read either.
        assert!(
            !view(&SessionContext::new(), "posts", COLUMNS, false)
                .await
                .unwrap()
                .contains(RESENT)
        );
    }
}
