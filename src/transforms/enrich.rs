//! The enrich stage: reads `posts.raw`, drops exact re-submissions, cleans
//! and scores each post, appends it to `posts.enriched` (or a dead letter
//! with the reason to `posts.dead`), and commits its input offset in the
//! same log transaction as its output, so a crash never repeats output.
//!
//! Each worker thread owns the partitions `p` with `p % workers == w`, so
//! the stage uses every core it is given and keeps per-partition order.

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::enrich;
use crate::log::{Entry, Fnv1a, Log, LogError, Topic, Transaction, partition_of, prefixed_post_key};
use crate::metrics::Metrics;
use crate::record::{IncomingPost, Limits, PostView, Prior, RawView, now_micros};
pub use crate::wire::DeadLetter;

/// The enrich stage's consumer name on `posts.raw`.
pub const CONSUMER: &str = "enrich";
/// What the enrich stage reads.
pub const INPUT: crate::log::Input = crate::log::Input {
    consumer: CONSUMER,
    topic: Topic::Raw,
};

/// Prefix of the state entries that remember which posts were seen.
const SEEN_PREFIX: &[u8] = b"enrich.seen/";

/// Settings of the enrich stage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EnrichConfig {
    /// Worker threads (0: one per core).
    pub workers: usize,
    /// Raw records read and written per transaction.
    pub batch: usize,
    /// Seconds the stage remembers a post to drop its exact re-submissions
    /// (0: as long as the log keeps records, `[log] retention_hours`).
    pub seen_retention_secs: u64,
    /// With the speed layer on: the columns its views read, which the
    /// seen-state keeps of each post's counted version, so that a re-send
    /// carries what it replaces ([`crate::record::Prior`]).
    #[serde(skip)]
    pub priors: Option<Priors>,
}

/// The columns of each post the seen-state keeps for the speed layer.
#[derive(Debug, Clone, PartialEq)]
pub struct Priors {
    /// Which of the record's columns ([`crate::record::batch::schema`]).
    pub keep: [bool; 23],
}

impl Priors {
    /// An identifier of the layout, stored in every entry that follows it.
    pub fn id(&self) -> u32 {
        let names: Vec<&str> = crate::record::column::ALL
            .iter()
            .zip(self.keep)
            .filter(|(_, k)| *k)
            .map(|(n, _)| *n)
            .collect();
        xxhash_rust::xxh3::xxh3_64(format!("priors v2|{}", names.join(",")).as_bytes()) as u32
    }
}

/// What the state says of the seen-state's priors: every post of
/// `posts_latest` has its counted version kept in the layout `id`, and
/// every record enriched since carries its [`crate::record::Prior`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PriorsState {
    /// [`Priors::id`] of the layout.
    pub id: u32,
}

/// The state key of [`PriorsState`].
const PRIORS_KEY: &[u8] = b"enrich.priors";

/// What the state says of the seen-state's priors, if it holds them.
pub fn priors_state(log: &dyn Log) -> Result<Option<PriorsState>, LogError> {
    Ok(log
        .state(PRIORS_KEY)?
        .and_then(|bytes| serde_json::from_slice(&bytes).ok()))
}

/// Gives the seen-state of `posts` (each the counted version of its post,
/// as `posts_latest` has it) their priors in `priors`' layout, keeping the
/// content hash each entry has. Call [`priors_done`] after the last.
pub fn write_priors(log: &dyn Log, priors: &Priors, posts: &[crate::record::PostView<'_>]) -> Result<(), LogError> {
    let id = priors.id();
    let now = now_secs();
    let mut entries = Vec::with_capacity(posts.len());
    for post in posts {
        let key = prefixed_post_key(SEEN_PREFIX, &post.incoming.platform, &post.incoming.id);
        let mut value = vec![SEEN_V5];
        // Without a hash this stage can compare (an entry of an earlier
        // form, or none), the next copy of the post is enriched again and
        // replaces this one as any changed copy does.
        let old = log.state(&key)?;
        value.extend_from_slice(old.as_deref().and_then(content_hash).unwrap_or(&[0; 8]));
        value.extend_from_slice(&now.to_be_bytes());
        value.extend_from_slice(&id.to_be_bytes());
        value.extend_from_slice(&post.to_masked_log_bytes(&priors.keep));
        entries.push((key, value));
    }
    let mut tx = Transaction::new();
    for (key, value) in &entries {
        tx.put_state(key, value);
    }
    log.write(&tx).map(|_| ())
}

/// Records that the seen-state holds priors in `priors`' layout for every
/// post of `posts_latest`, and that records carry priors from now on.
pub fn priors_done(log: &dyn Log, priors: &Priors) -> Result<(), LogError> {
    let value = serde_json::to_vec(&PriorsState { id: priors.id() }).map_err(|e| LogError::Storage(e.to_string()))?;
    let mut tx = Transaction::new();
    tx.put_state(PRIORS_KEY, &value);
    log.write(&tx).map(|_| ())
}

/// Waits until the state holds the priors in `priors`' layout, written by
/// the speed layer of another process (the one with the archive role) when
/// it opens; the stage must not start before. Returns `false` if
/// `shutdown` came first.
pub fn wait_for_priors(log: &dyn Log, priors: &Priors, shutdown: &CancellationToken) -> Result<bool, LogError> {
    let started = std::time::Instant::now();
    let mut said = None;
    loop {
        log.refresh_state()?;
        if priors_state(log)?.is_some_and(|p| p.id == priors.id()) {
            if said.is_some() {
                tracing::info!("The speed layer's priors are in the state: enriching.");
            }
            return Ok(true);
        }
        if said.is_none_or(|at: std::time::Instant| at.elapsed() >= Duration::from_secs(10)) {
            said = Some(std::time::Instant::now());
            tracing::warn!(
                waited_secs = started.elapsed().as_secs(),
                "The enrich stage waits for the speed layer's priors: the process with the archive role \
                 writes them when it starts (with the same views)."
            );
        }
        for _ in 0..10 {
            if shutdown.is_cancelled() {
                return Ok(false);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Default for EnrichConfig {
    fn default() -> Self {
        EnrichConfig {
            workers: 0,
            batch: 2000,
            seen_retention_secs: 0,
            priors: None,
        }
    }
}

impl EnrichConfig {
    /// Worker threads actually used for a log with `partitions`.
    pub fn worker_count(&self, partitions: u32) -> usize {
        let wanted = if self.workers == 0 {
            std::thread::available_parallelism().map_or(2, usize::from)
        } else {
            self.workers
        };
        wanted.clamp(1, partitions.max(1) as usize)
    }
}

/// Runs the stage until `shutdown`; returns the first log failure.
pub fn run(
    log: Arc<dyn Log>,
    config: &EnrichConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Result<(), LogError> {
    let workers = config.worker_count(log.partitions());
    let batch = config.batch.max(1);
    let priors = config.priors.as_ref().map(|p| (p.keep, p.id()));
    match (&priors, priors_state(&*log)?) {
        (Some((_, id)), Some(stored)) if stored.id == *id => {}
        (Some(_), _) => {
            return Err(LogError::Storage(
                "the seen-state does not hold the speed layer's priors: the speed layer must be opened \
                 (which builds them) before the enrich stage starts"
                    .into(),
            ));
        }
        // Without the speed layer the entries stop following any layout:
        // switched on again, it builds them again.
        (None, Some(_)) => {
            let mut tx = Transaction::new();
            tx.remove_state(PRIORS_KEY);
            log.write(&tx)?;
        }
        (None, None) => {}
    }
    // Entries that keep priors are the speed layer's memory of every post:
    // they do not expire.
    let seen_retention = if priors.is_some() {
        0
    } else {
        config.seen_retention_secs
    };
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let (log, metrics, shutdown) = (log.clone(), metrics.clone(), shutdown.clone());
                std::thread::Builder::new()
                    .name(format!("enrich-{w}"))
                    .spawn_scoped(scope, move || {
                        // A panic is a failure of the stage like any other:
                        // it must stop the other workers, not leave them
                        // running beside partitions nobody enriches.
                        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                            worker(&*log, w, workers, (batch, seen_retention, priors), &metrics, &shutdown)
                        }))
                        .unwrap_or_else(|panic| {
                            Err(LogError::Storage(format!(
                                "enrich worker {w} panicked: {}",
                                panic_message(&*panic)
                            )))
                        });
                        if result.is_err() {
                            // One broken worker stops the others cleanly.
                            shutdown.cancel();
                        }
                        result
                    })
                    .map_err(|e| LogError::Storage(format!("cannot start an enrich thread: {e}")))
            })
            .collect();
        let mut first_error = Ok(());
        for handle in handles {
            let result = match handle {
                Ok(h) => h
                    .join()
                    .unwrap_or_else(|_| Err(LogError::Storage("an enrich thread panicked".into()))),
                Err(e) => Err(e),
            };
            if first_error.is_ok() {
                first_error = result;
            }
        }
        first_error
    })
}

fn worker(
    log: &dyn Log,
    w: usize,
    workers: usize,
    (batch, seen_retention_secs, priors): (usize, u64, Option<([bool; 23], u32)>),
    metrics: &Metrics,
    shutdown: &CancellationToken,
) -> Result<(), LogError> {
    let partitions = log.partitions();
    // Next offset per partition; partitions of other workers (and other
    // processes) never count as news.
    let mut next = vec![u64::MAX; partitions as usize];
    let mut drain = super::Drain::new(shutdown.clone());
    let mut sweeper = Sweeper::new(seen_retention_secs);
    loop {
        let mut busy = false;
        // The partitions of this worker among those of this process, held
        // for the round (another process of the group gets them between
        // rounds, never during one).
        let owned = log.owned(CONSUMER, Topic::Raw)?;
        let mine: Vec<u32> = owned
            .partitions
            .iter()
            .copied()
            .filter(|p| *p as usize % workers == w)
            .collect();
        for p in 0..partitions {
            match (mine.contains(&p), next[p as usize] == u64::MAX) {
                // Gained: read on from its group's commit.
                (true, true) => next[p as usize] = log.committed(CONSUMER, Topic::Raw, p)?,
                (false, false) => next[p as usize] = u64::MAX,
                _ => {}
            }
        }
        if !shutdown.is_cancelled() {
            sweeper.step(log, &mine, metrics)?;
        }
        for &p in &mine {
            let entries = log.read(Topic::Raw, p, next[p as usize], batch, crate::log::READ_BYTES)?;
            if let Some(last) = entries.last() {
                let next_offset = last.offset + 1;
                process(log, (p, priors.as_ref()), &entries, next_offset, metrics)?;
                next[p as usize] = next_offset;
                busy = true;
            }
        }
        drop(owned);
        if drain.should_stop(busy) {
            return Ok(());
        }
        if !busy {
            log.wait_for_appends(Topic::Raw, &next, Duration::from_millis(200));
        }
    }
}

/// Enriches one batch of a partition and writes the result in one
/// transaction with the commit of `next_offset`; with `priors` (the speed
/// layer's columns and their layout id), each record carries the version
/// of its post it replaces.
fn process(
    log: &dyn Log,
    (partition, priors): (u32, Option<&([bool; 23], u32)>),
    entries: &[Entry],
    next_offset: u64,
    metrics: &Metrics,
) -> Result<(), LogError> {
    metrics.enrich_in.add(entries.len() as u64);
    let mut dead: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut raws: Vec<RawView> = Vec::with_capacity(entries.len());
    // Per kept post: its state key (prefix + post key) and seen-state value.
    let mut seen: Vec<(Vec<u8>, SeenValue)> = Vec::with_capacity(entries.len());
    // Within the batch: state key → the value of its latest content.
    let mut in_batch: FxHashMap<Vec<u8>, SeenValue> = FxHashMap::default();
    // With priors: the stored entry of each key the batch holds.
    let mut stored: FxHashMap<Vec<u8>, Vec<u8>> = FxHashMap::default();
    let mut duplicates = 0;
    let now = now_secs();
    // The log entry of each kept post, for its dead letter if scoring fails.
    let mut kept_entries: Vec<&Entry> = Vec::with_capacity(entries.len());
    for entry in entries {
        let raw = match RawView::from_log_bytes(&entry.value) {
            Ok(raw) => raw,
            Err(e) => {
                dead.push(dead_letter(
                    Topic::Raw,
                    partition,
                    entry,
                    &format!("not a raw post: {e}"),
                ));
                continue;
            }
        };
        // Posts are checked at ingest; this keeps a record written by an
        // earlier version (or another producer) from stopping the stage.
        if let Err(e) = raw.incoming.check(&Limits::ANY_BODY) {
            dead.push(dead_letter(
                Topic::Raw,
                partition,
                entry,
                &format!("out of bounds: {e}"),
            ));
            continue;
        }
        let value = seen_value(&raw, now);
        let state_key = prefixed_post_key(SEEN_PREFIX, &raw.incoming.platform, &raw.incoming.id);
        let again = match in_batch.get(&state_key) {
            Some(previous) => same_hash(previous, &value),
            None => match log.state(&state_key)? {
                Some(previous) => {
                    let same = same_content(&previous, &value, &raw);
                    if priors.is_some() {
                        stored.insert(state_key.clone(), previous);
                    }
                    same
                }
                None => false,
            },
        };
        if again {
            duplicates += 1;
            continue;
        }
        in_batch.insert(state_key.clone(), value);
        raws.push(raw);
        kept_entries.push(entry);
        seen.push((state_key, value));
    }
    let bodies: Vec<&str> = raws.iter().map(|raw| raw.incoming.body.as_ref()).collect();
    let cleaned = score_or_isolate(&bodies);
    drop(bodies);
    let mut enriched: Vec<(&[u8], Vec<u8>)> = Vec::with_capacity(raws.len());
    let mut kept_seen: Vec<(&[u8], &[u8])> = Vec::with_capacity(seen.len());
    // With priors: the entry each key ends the batch with.
    let mut latest: FxHashMap<&[u8], Vec<u8>> = FxHashMap::default();
    for (((raw, seen), entry), result) in raws.iter().zip(&seen).zip(&kept_entries).zip(cleaned) {
        match result {
            Ok((text, scores)) => {
                let mut record = raw.to_post_log_bytes(&text, &scores);
                if let Some((keep, id)) = priors {
                    let previous = latest
                        .get(seen.0.as_slice())
                        .or_else(|| stored.get(&seen.0))
                        .map(Vec::as_slice);
                    let counted = previous.and_then(|v| counted_version(v, *id));
                    let stale = counted.as_ref().is_some_and(|(_, at)| *at > raw.ingested_at);
                    if stale {
                        // An older version arriving late: posts_latest
                        // keeps the newer, and so does the entry.
                        Prior::Stale.append_to(&mut record);
                    } else {
                        if let Some((masked, _)) = counted {
                            Prior::Replaces(masked).append_to(&mut record);
                        }
                        let post = PostView {
                            incoming: raw.incoming.clone(),
                            text: std::borrow::Cow::Borrowed(&text),
                            ingested_at: raw.ingested_at,
                            scores,
                        };
                        let mut value = Vec::with_capacity(96);
                        value.push(SEEN_V5);
                        value.extend_from_slice(&seen.1[1..13]);
                        value.extend_from_slice(&id.to_be_bytes());
                        value.extend_from_slice(&post.to_masked_log_bytes(keep));
                        latest.insert(&seen.0, value);
                    }
                } else {
                    kept_seen.push((&seen.0, &seen.1));
                }
                // The post key is the state key without its prefix.
                enriched.push((&seen.0[SEEN_PREFIX.len()..], record));
            }
            Err(panic) => dead.push(dead_letter(
                Topic::Raw,
                partition,
                entry,
                &format!("cleanup or scoring failed: {panic}"),
            )),
        }
    }
    let mut tx = Transaction::new();
    for (key, value) in &enriched {
        tx.append(Topic::Enriched, key, value);
    }
    for (key, value) in &dead {
        tx.append(Topic::Dead, key, value);
    }
    for (state_key, value) in kept_seen {
        tx.put_state(state_key, value);
    }
    for (state_key, value) in &latest {
        tx.put_state(state_key, value);
    }
    tx.commit(CONSUMER, Topic::Raw, partition, next_offset);
    log.write(&tx)?;
    metrics.enrich_out.add(enriched.len() as u64);
    metrics.dead_letters.add(dead.len() as u64);
    metrics.enrich_duplicates.add(duplicates);
    Ok(())
}

/// The counted version a seen-state entry keeps in layout `id`: its masked
/// record and `ingested_at` (none for an entry of another layout or none).
fn counted_version(value: &[u8], id: u32) -> Option<(&[u8], i64)> {
    if !seen_v5(value) || value[13..17] != id.to_be_bytes() {
        return None;
    }
    let masked = &value[17..];
    let post = PostView::from_log_bytes(masked).ok()?;
    Some((masked, post.ingested_at))
}

/// The content hash ([`RawView::content_hash`]) a seen-state entry holds,
/// if it is of a form that holds one (not the legacy FNV-1a forms).
fn content_hash(value: &[u8]) -> Option<&[u8]> {
    match (value.len(), value.first()) {
        (13, Some(&SEEN_V3)) | (9, Some(2)) => Some(&value[1..9]),
        _ if seen_v5(value) => Some(&value[1..9]),
        _ => None,
    }
}

/// Whether `value` is an entry that keeps a prior ([`SEEN_V5`]).
fn seen_v5(value: &[u8]) -> bool {
    value.len() > 17 && value[0] == SEEN_V5
}

/// What the seen-state of a post holds: [`SEEN_V3`], the XXH3 content hash
/// of [`RawView::content_hash`] (big-endian), then when it was seen (Unix
/// seconds, big-endian u32), by which the entry expires.
type SeenValue = [u8; 13];

/// First byte of a [`SeenValue`]. Earlier versions stored 9 bytes (version
/// byte 2 and the same hash, no time) or 8 bytes (the FNV-1a of the
/// incoming fields' `Hash`, [`legacy_hash`]).
const SEEN_V3: u8 = 3;
/// First byte of an entry of 8 legacy bytes given a time by the sweep.
const SEEN_LEGACY_TIMED: u8 = 4;
/// First byte of an entry that keeps its post's counted version for the
/// speed layer: a [`SeenValue`]'s 13 bytes, the layout id ([`Priors::id`],
/// big-endian u32), then the masked record
/// ([`PostView::to_masked_log_bytes`]).
const SEEN_V5: u8 = 5;

fn seen_value(raw: &RawView, now_secs: u32) -> SeenValue {
    let mut value = [SEEN_V3; 13];
    value[1..9].copy_from_slice(&raw.content_hash().to_be_bytes());
    value[9..].copy_from_slice(&now_secs.to_be_bytes());
    value
}

/// Whether two seen values record the same content (times aside).
fn same_hash(a: &SeenValue, b: &SeenValue) -> bool {
    a[..9] == b[..9]
}

/// Whether the stored seen-state `previous` is that of `raw`, whose value
/// is `value`.
fn same_content(previous: &[u8], value: &SeenValue, raw: &RawView) -> bool {
    if let Some(hash) = content_hash(previous) {
        return hash == &value[1..9];
    }
    match (previous.len(), previous.first()) {
        // Written by an earlier version: compare the hash it used.
        (13, Some(&SEEN_LEGACY_TIMED)) => previous[1..9] == legacy_hash(&raw.incoming.clone().into_owned()),
        (8, _) => previous == legacy_hash(&raw.incoming.clone().into_owned()),
        _ => false,
    }
}

/// When a seen-state entry was seen, if it says (entries of earlier
/// versions do not).
fn seen_at(value: &[u8]) -> Option<u32> {
    match value.first() {
        Some(&SEEN_V3) | Some(&SEEN_LEGACY_TIMED) if value.len() == 13 => {
            Some(u32::from_be_bytes(value[9..13].try_into().ok()?))
        }
        _ if seen_v5(value) => Some(u32::from_be_bytes(value[9..13].try_into().ok()?)),
        _ => None,
    }
}

/// Seconds since the epoch, as the seen-state stores them.
fn now_secs() -> u32 {
    (now_micros() / 1_000_000).clamp(0, i64::from(u32::MAX)) as u32
}

/// Entries one sweep step looks at.
const SWEEP_STEP: usize = 10_000;

/// Removes a worker's seen-state entries older than `ttl`, a bounded step
/// at a time between batches (the worker is the only writer of its
/// partitions' entries, so a step never races with a fresh entry). An
/// entry of an earlier version, which has no time, is given the sweep's.
struct Sweeper {
    ttl: Option<u32>,
    cursor: Option<Vec<u8>>,
    next_pass: std::time::Instant,
}

impl Sweeper {
    fn new(ttl_secs: u64) -> Sweeper {
        Sweeper {
            ttl: (ttl_secs > 0).then(|| ttl_secs.min(u64::from(u32::MAX)) as u32),
            cursor: None,
            next_pass: std::time::Instant::now(),
        }
    }

    /// One step, if a pass is due; whether it did any work.
    fn step(&mut self, log: &dyn Log, mine: &[u32], metrics: &Metrics) -> Result<bool, LogError> {
        let Some(ttl) = self.ttl else {
            return Ok(false);
        };
        if std::time::Instant::now() < self.next_pass {
            return Ok(false);
        }
        let entries = log.scan_state(SEEN_PREFIX, self.cursor.as_deref(), SWEEP_STEP)?;
        let now = now_secs();
        let partitions = log.partitions();
        let (mut expired, mut timed) = (Vec::new(), Vec::new());
        for (key, value) in &entries {
            if !mine.contains(&partition_of(&key[SEEN_PREFIX.len()..], partitions)) {
                continue;
            }
            match seen_at(value) {
                Some(at) if now.saturating_sub(at) > ttl => expired.push(key.as_slice()),
                Some(_) => {}
                None => {
                    let mut v = [0u8; 13];
                    match value.len() {
                        9 => {
                            v[0] = SEEN_V3;
                            v[1..9].copy_from_slice(&value[1..9]);
                        }
                        8 => {
                            v[0] = SEEN_LEGACY_TIMED;
                            v[1..9].copy_from_slice(value);
                        }
                        // Not an entry this stage wrote: let it expire.
                        _ => {
                            expired.push(key.as_slice());
                            continue;
                        }
                    }
                    v[9..].copy_from_slice(&now.to_be_bytes());
                    timed.push((key.as_slice(), v));
                }
            }
        }
        let mut tx = Transaction::new();
        for key in &expired {
            tx.remove_state(key);
        }
        for (key, value) in &timed {
            tx.put_state(key, value);
        }
        log.write(&tx)?;
        metrics.enrich_seen_expired.add(expired.len() as u64);
        if entries.len() < SWEEP_STEP {
            // A pass is done: the next one after a tenth of the retention.
            self.cursor = None;
            let pause = Duration::from_secs(u64::from(ttl / 10).clamp(1, 3600));
            self.next_pass = std::time::Instant::now() + pause;
        } else {
            self.cursor = entries.last().map(|(k, _)| k.clone());
        }
        Ok(!entries.is_empty())
    }
}

/// The content hash earlier versions stored: FNV-1a over the `Hash` of
/// the incoming fields.
fn legacy_hash(incoming: &IncomingPost) -> [u8; 8] {
    let mut h = Fnv1a::new();
    incoming.hash(&mut h);
    h.finish().to_be_bytes()
}

/// Cleans and scores `bodies` as one batch; should that panic (a bug, not
/// data the analyzers refuse: they take any text), each body again on its
/// own, so only the bodies that make it panic fail, with the panic's message.
fn score_or_isolate(bodies: &[&str]) -> Vec<Result<(String, crate::record::Scores), String>> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    if let Ok(all) = catch_unwind(AssertUnwindSafe(|| enrich::clean_and_score_batch(bodies))) {
        return all.into_iter().map(Ok).collect();
    }
    bodies
        .iter()
        .map(|body| {
            catch_unwind(AssertUnwindSafe(|| {
                let text = enrich::clean::clean(body);
                let scores = enrich::score(&text);
                (text, scores)
            }))
            .map_err(|panic| format!("panicked: {}", panic_message(&*panic)))
        })
        .collect()
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// A dead letter for `entry`, keyed by where it came from.
pub(crate) fn dead_letter(topic: Topic, partition: u32, entry: &Entry, error: &str) -> (Vec<u8>, Vec<u8>) {
    let letter = DeadLetter {
        topic: topic.name().to_string(),
        partition,
        offset: entry.offset,
        error: error.to_string(),
        value: String::from_utf8_lossy(&entry.value).into_owned(),
        failed_at: now_micros(),
    };
    let key = format!("{}/{partition}/{}", topic.name(), entry.offset).into_bytes();
    // Invariant: strings and integers always serialise.
    let value = serde_json::to_vec(&letter).expect("a dead letter serialises");
    (key, value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fjall::FjallLog;
    use crate::record::{Post, RawPost};

    fn raw(id: &str, body: &str) -> Vec<u8> {
        let incoming = IncomingPost {
            community: Some("politics".into()),
            ..IncomingPost::new("reddit", id, body, 1_546_344_000_000_000)
        };
        RawPost {
            incoming,
            ingested_at: now_micros(),
        }
        .to_log_bytes()
    }

    /// What the enrich stage of 54ddb92 stored as the content hash of
    /// `raw("t1_a", "seen before the upgrade")` (computed with that commit).
    const LEGACY_HASH_OF_T1_A: [u8; 8] = [99, 228, 2, 16, 127, 23, 183, 98];

    /// A fresh 4-partition log (kept in the returned directory) and metrics.
    fn open_log() -> (tempfile::TempDir, Arc<FjallLog>, Arc<Metrics>) {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(FjallLog::open(dir.path(), 4).unwrap());
        (dir, log, Arc::new(Metrics::default()))
    }

    fn run_until_drained(log: &Arc<FjallLog>, metrics: &Arc<Metrics>) {
        run_with(log, metrics, EnrichConfig::default());
    }

    fn run_with(log: &Arc<FjallLog>, metrics: &Arc<Metrics>, config: EnrichConfig) {
        let shutdown = CancellationToken::new();
        let handle = {
            let (log, metrics, shutdown) = (log.clone() as Arc<dyn Log>, metrics.clone(), shutdown.clone());
            std::thread::spawn(move || run(log, &config, metrics, shutdown))
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while log.lag(CONSUMER, Topic::Raw).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline, "enrich did not drain posts.raw");
            std::thread::sleep(Duration::from_millis(10));
        }
        shutdown.cancel();
        handle.join().unwrap().unwrap();
    }

    fn enriched(log: &FjallLog) -> Vec<Post> {
        (0..log.partitions())
            .flat_map(|p| log.read(Topic::Enriched, p, 0, usize::MAX, usize::MAX).unwrap())
            .map(|e| Post::from_log_bytes(&e.value).unwrap())
            .collect()
    }

    #[test]
    fn enriches_drops_resubmissions_and_dead_letters_garbage() {
        let (_dir, log, metrics) = open_log();
        let a = raw("t1_a", "I **love** it https://x.org");
        let a_again = raw("t1_a", "I **love** it https://x.org");
        let a_edited = raw("t1_a", "I hate it now");
        let b = raw("t1_b", "meh");
        log.append(
            Topic::Raw,
            &[
                (b"reddit\0t1_a", &a),
                (b"reddit\0t1_b", &b),
                (b"reddit\0t1_a", &a_again),
            ],
        )
        .unwrap();
        log.append(Topic::Raw, &[(b"junk", b"{not json")]).unwrap();
        run_until_drained(&log, &metrics);
        // A re-submission in a later batch is dropped too; an edit is kept.
        log.append(Topic::Raw, &[(b"reddit\0t1_a", &a_again), (b"reddit\0t1_a", &a_edited)])
            .unwrap();
        run_until_drained(&log, &metrics);

        let mut posts = enriched(&log);
        posts.sort_by_key(|p| (p.incoming.id.clone(), p.ingested_at));
        let texts: Vec<(&str, &str)> = posts
            .iter()
            .map(|p| (p.incoming.id.as_str(), p.text.as_str()))
            .collect();
        assert_eq!(
            texts,
            [("t1_a", "I love it"), ("t1_a", "I hate it now"), ("t1_b", "meh")]
        );
        assert_eq!(posts[0].scores, enrich::score("I love it"));
        assert_eq!(posts[0].incoming.body, "I **love** it https://x.org");
        assert_eq!(metrics.enrich_duplicates.get(), 2);

        let dead: Vec<DeadLetter> = (0..4)
            .flat_map(|p| log.read(Topic::Dead, p, 0, 9, usize::MAX).unwrap())
            .map(|e| serde_json::from_slice(&e.value).unwrap())
            .collect();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].value, "{not json");
        assert!(dead[0].error.starts_with("not a raw post"), "{}", dead[0].error);
        assert_eq!(log.lag(CONSUMER, Topic::Raw).unwrap(), 0);
    }

    /// A raw post of `id` with `score`, accepted at `ingested_at`.
    fn scored(id: &str, score: i64, ingested_at: i64) -> Vec<u8> {
        let incoming = IncomingPost {
            community: Some("politics".into()),
            score: Some(score),
            url: Some("https://example.org/a/long/link".into()),
            ..IncomingPost::new("reddit", id, "I love it", 1_546_344_000_000_000)
        };
        RawPost { incoming, ingested_at }.to_log_bytes()
    }

    /// Each enriched record of partition order: (id, score, what its prior
    /// says: "new", "stale" or the replaced score).
    fn priors_of(log: &FjallLog) -> Vec<(String, Option<i64>, String)> {
        (0..log.partitions())
            .flat_map(|p| log.read(Topic::Enriched, p, 0, usize::MAX, usize::MAX).unwrap())
            .map(|e| {
                let (post, prior) = PostView::with_prior(&e.value).unwrap();
                let prior = match prior {
                    Prior::None => "new".to_string(),
                    Prior::Stale => "stale".to_string(),
                    Prior::Replaces(bytes) => {
                        let old = PostView::from_log_bytes(bytes).unwrap();
                        // Only the kept columns: no URL, no text.
                        assert_eq!((old.incoming.url, old.text.as_ref()), (None, ""));
                        format!("{:?}", old.incoming.score)
                    }
                };
                (post.incoming.id.to_string(), post.incoming.score, prior)
            })
            .collect()
    }

    #[test]
    fn with_priors_each_record_carries_the_version_it_replaces() {
        let (_dir, log, metrics) = open_log();
        let mut keep = [false; 23];
        keep[2] = true; // community
        keep[11] = true; // score
        let priors = Priors { keep };
        let config = EnrichConfig {
            priors: Some(priors.clone()),
            ..EnrichConfig::default()
        };
        // Without the speed layer having built the priors, the stage
        // refuses to start rather than write records that lie.
        let refused = run(log.clone(), &config, metrics.clone(), CancellationToken::new()).unwrap_err();
        assert!(refused.to_string().contains("priors"), "{refused}");
        priors_done(&*log, &priors).unwrap();
        let key: &[u8] = b"reddit\0t1_a";
        // In one batch: a new post, a re-send, an exact copy, an older
        // version arriving late; then in a later batch another re-send.
        log.append(
            Topic::Raw,
            &[
                (key, &scored("t1_a", 1, 100)),
                (key, &scored("t1_a", 2, 200)),
                (key, &scored("t1_a", 2, 200)),
                (key, &scored("t1_a", 9, 150)),
            ],
        )
        .unwrap();
        run_with(&log, &metrics, config.clone());
        log.append(Topic::Raw, &[(key, &scored("t1_a", 3, 300))]).unwrap();
        run_with(&log, &metrics, config.clone());
        let s = |v: &str| v.to_string();
        assert_eq!(
            priors_of(&log),
            [
                (s("t1_a"), Some(1), s("new")),
                (s("t1_a"), Some(2), s("Some(1)")),
                (s("t1_a"), Some(9), s("stale")),
                (s("t1_a"), Some(3), s("Some(2)")),
            ]
        );
        assert_eq!(metrics.enrich_duplicates.get(), 1);
        // The entry keeps the newest version counted.
        let stored = log
            .state(&prefixed_post_key(SEEN_PREFIX, "reddit", "t1_a"))
            .unwrap()
            .unwrap();
        assert_eq!(counted_version(&stored, priors.id()).map(|(_, at)| at), Some(300));
        // Without the speed layer the stage says the priors are gone, and
        // the next records carry none.
        run_with(&log, &metrics, EnrichConfig::default());
        assert_eq!(priors_state(&*log).unwrap(), None);
        log.append(Topic::Raw, &[(key, &scored("t1_a", 4, 400))]).unwrap();
        run_with(&log, &metrics, EnrichConfig::default());
        assert_eq!(priors_of(&log).last().unwrap().2, "new");
    }

    #[test]
    fn rebuilt_priors_keep_the_hash_so_copies_are_still_dropped() {
        let (_dir, log, metrics) = open_log();
        let key: &[u8] = b"reddit\0t1_a";
        log.append(Topic::Raw, &[(key, &scored("t1_a", 1, 100))]).unwrap();
        run_until_drained(&log, &metrics);
        // The speed layer switched on: the priors of every post, from
        // what posts_latest holds.
        let mut keep = [false; 23];
        keep[11] = true;
        let priors = Priors { keep };
        let posts = enriched(&log);
        let views: Vec<PostView<'_>> = posts.iter().map(Post::view).collect();
        write_priors(&*log, &priors, &views).unwrap();
        priors_done(&*log, &priors).unwrap();
        let config = EnrichConfig {
            priors: Some(priors),
            ..EnrichConfig::default()
        };
        log.append(
            Topic::Raw,
            &[(key, &scored("t1_a", 1, 100)), (key, &scored("t1_a", 5, 500))],
        )
        .unwrap();
        run_with(&log, &metrics, config);
        assert_eq!(metrics.enrich_duplicates.get(), 1, "the copy is dropped");
        assert_eq!(priors_of(&log).last().unwrap().2, "Some(1)");
    }

    #[test]
    fn a_resubmission_seen_by_an_earlier_version_is_still_dropped() {
        let (_dir, log, metrics) = open_log();
        // The state an earlier version left for t1_a: an 8-byte FNV-1a.
        let a = raw("t1_a", "seen before the upgrade");
        let incoming = RawPost::from_log_bytes(&a).unwrap().incoming;
        let state_key = prefixed_post_key(SEEN_PREFIX, "reddit", "t1_a");
        let old = legacy_hash(&incoming);
        // A change to `IncomingPost`'s fields or to its `Hash` would break
        // the comparison with state written by earlier versions.
        assert_eq!(old, LEGACY_HASH_OF_T1_A);
        let mut tx = Transaction::new();
        tx.put_state(&state_key, &old);
        log.write(&tx).unwrap();
        let a_edited = raw("t1_a", "edited after the upgrade");
        log.append(Topic::Raw, &[(b"reddit\0t1_a", &a), (b"reddit\0t1_a", &a_edited)])
            .unwrap();
        run_until_drained(&log, &metrics);
        let texts: Vec<String> = enriched(&log).into_iter().map(|p| p.text).collect();
        assert_eq!(texts, ["edited after the upgrade"]);
        assert_eq!(metrics.enrich_duplicates.get(), 1);
        // The state now holds the new form, with the time it was seen.
        assert_eq!(log.state(&state_key).unwrap().map(|v| v.len()), Some(13));
    }

    #[test]
    fn seen_state_expires_after_its_retention_and_a_late_resubmission_is_enriched_again() {
        let (_dir, log, metrics) = open_log();
        // An entry an earlier version left (9 bytes, no time) for t1_old.
        let old_key = prefixed_post_key(SEEN_PREFIX, "reddit", "t1_old");
        let mut tx = Transaction::new();
        tx.put_state(&old_key, &[2, 1, 2, 3, 4, 5, 6, 7, 8]);
        log.write(&tx).unwrap();
        let a = raw("t1_a", "remember me");
        log.append(Topic::Raw, &[(b"reddit\0t1_a", &a)]).unwrap();
        let shutdown = CancellationToken::new();
        let config = EnrichConfig {
            seen_retention_secs: 1,
            ..EnrichConfig::default()
        };
        let handle = {
            let (log, metrics, shutdown) = (log.clone() as Arc<dyn Log>, metrics.clone(), shutdown.clone());
            std::thread::spawn(move || run(log, &config, metrics, shutdown))
        };
        let key = prefixed_post_key(SEEN_PREFIX, "reddit", "t1_a");
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        // Remembered at first (a re-submission now is dropped)...
        while log.state(&key).unwrap().is_none() {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        // ...then forgotten once older than a second, the old entry too
        // (given a time by the first pass, expired by a later one).
        while log.state(&key).unwrap().is_some() || log.state(&old_key).unwrap().is_some() {
            assert!(std::time::Instant::now() < deadline, "the seen-state never expired");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(metrics.enrich_seen_expired.get(), 2);
        log.append(Topic::Raw, &[(b"reddit\0t1_a", &a)]).unwrap();
        while log.lag(CONSUMER, Topic::Raw).unwrap() > 0 {
            assert!(std::time::Instant::now() < deadline);
            std::thread::sleep(Duration::from_millis(10));
        }
        shutdown.cancel();
        handle.join().unwrap().unwrap();
        assert_eq!(
            enriched(&log).len(),
            2,
            "past the retention, the re-submission is a new version"
        );
        assert_eq!(metrics.enrich_duplicates.get(), 0);
    }

    /// A stand-in for a broken storage engine (no real one panics on
    /// demand): the real log, except that reading one partition panics.
    struct PanicsOnPartition(Arc<FjallLog>, u32);

    impl Log for PanicsOnPartition {
        fn partitions(&self) -> u32 {
            self.0.partitions()
        }
        fn identity(&self) -> String {
            self.0.identity()
        }
        fn write(&self, tx: &Transaction<'_>) -> Result<Vec<crate::log::Position>, LogError> {
            self.0.write(tx)
        }
        fn read(&self, topic: Topic, p: u32, offset: u64, max: usize, bytes: usize) -> Result<Vec<Entry>, LogError> {
            assert!(p != self.1 || topic != Topic::Raw, "the storage engine broke");
            self.0.read(topic, p, offset, max, bytes)
        }
        fn committed(&self, consumer: &str, topic: Topic, p: u32) -> Result<u64, LogError> {
            self.0.committed(consumer, topic, p)
        }
        fn state(&self, key: &[u8]) -> Result<Option<Vec<u8>>, LogError> {
            self.0.state(key)
        }
        fn scan_state(
            &self,
            prefix: &[u8],
            after: Option<&[u8]>,
            max: usize,
        ) -> Result<Vec<crate::log::StateEntry>, LogError> {
            self.0.scan_state(prefix, after, max)
        }
        fn end_offsets(&self, topic: Topic) -> Result<Vec<u64>, LogError> {
            self.0.end_offsets(topic)
        }
    }

    #[test]
    fn a_worker_that_panics_stops_the_whole_stage_with_the_panic_as_its_error() {
        let (_dir, log, metrics) = open_log();
        let broken: Arc<dyn Log> = Arc::new(PanicsOnPartition(log.clone(), 1));
        let config = EnrichConfig {
            workers: 2,
            ..EnrichConfig::default()
        };
        let shutdown = CancellationToken::new();
        let handle = {
            let shutdown = shutdown.clone();
            std::thread::spawn(move || run(broken, &config, metrics, shutdown))
        };
        // The other worker does not go on alone: the stage returns.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !handle.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "a worker kept running beside a panicked one"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let error = handle.join().unwrap().unwrap_err().to_string();
        assert!(error.contains("panicked: the storage engine broke"), "{error}");
        assert!(shutdown.is_cancelled());
    }
}
