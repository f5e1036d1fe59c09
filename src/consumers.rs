//! The registry of the log's consumers: every stage that reads a topic,
//! derived once from the configuration. Retention keeps what any of them
//! has not committed, `chorus status` and `/metrics` show each one's lag,
//! and ingest throttles on the lag of those that read `posts.raw`. A new
//! stage or sink registers its [`Input`] here and nowhere else.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::log::{Input, Log, LogError, Topic};
use crate::sinks::archive;
use crate::transforms::enrich;
use crate::wire::{StageStatus, Status};

/// The consumers of a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consumers {
    inputs: Vec<Input>,
}

/// One consumer's position in its topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    /// Who reads what.
    pub input: Input,
    /// Per partition: `(end offset, committed offset)`.
    pub partitions: Vec<(u64, u64)>,
}

impl Position {
    /// Records appended and not yet committed, over all partitions.
    pub fn lag(&self) -> u64 {
        self.partitions.iter().map(|(end, c)| end.saturating_sub(*c)).sum()
    }
}

impl Consumers {
    /// The consumers the stages of `config` register.
    pub fn of(config: &Config) -> Consumers {
        let mut inputs = vec![enrich::INPUT, archive::INPUT, archive::ERRORS_INPUT];
        if config.index.enabled {
            inputs.push(crate::sinks::index::INPUT);
        }
        if config.warehouse.enabled() {
            inputs.push(crate::warehouse::INPUT);
        }
        if config.opensearch.enabled() {
            inputs.push(crate::sinks::opensearch::INPUT);
        }
        if config.batch.speed_layer && config.views().is_ok_and(|v| !v.is_empty()) {
            inputs.push(crate::views::speed::INPUT);
        }
        Consumers { inputs }
    }

    /// Every consumer, in pipeline order.
    pub fn inputs(&self) -> &[Input] {
        &self.inputs
    }

    /// Where each consumer is.
    pub fn positions(&self, log: &dyn Log) -> Result<Vec<Position>, LogError> {
        self.inputs
            .iter()
            .map(|input| {
                let ends = log.end_offsets(input.topic)?;
                let committed = log.committed_all(input.consumer, input.topic)?;
                let partitions = ends.into_iter().zip(committed).collect();
                Ok(Position {
                    input: *input,
                    partitions,
                })
            })
            .collect()
    }

    /// Per partition of `topic`, the offset below which every consumer of
    /// it has committed (what retention may remove). A topic nobody reads
    /// keeps nothing back.
    pub fn safe_offsets(&self, log: &dyn Log, topic: Topic) -> Result<Vec<u64>, LogError> {
        let mut safe = log.end_offsets(topic)?;
        for input in self.inputs.iter().filter(|i| i.topic == topic) {
            for (offset, committed) in safe.iter_mut().zip(log.committed_all(input.consumer, topic)?) {
                *offset = (*offset).min(committed);
            }
        }
        Ok(safe)
    }

    /// Every consumer's offsets and lag, as `chorus status` and
    /// `GET /v1/status` show them.
    pub fn status(&self, log: &dyn Log) -> Result<Status, LogError> {
        let stages = self
            .positions(log)?
            .into_iter()
            .map(|position| StageStatus {
                topic: position.input.topic.name().into(),
                consumer: position.input.consumer.into(),
                end: position.partitions.iter().map(|p| p.0).sum(),
                committed: position.partitions.iter().map(|p| p.1).sum(),
                lag: position.lag(),
                partitions: position.partitions.iter().map(|&(end, c)| [end, c]).collect(),
            })
            .collect();
        Ok(Status {
            views: Vec::new(),
            stages,
            index: None,
            archive: None,
        })
    }

    /// What ingest throttles on, from one reading of `posts.raw`'s ends and
    /// of each of its consumers' committed offsets: the posts waiting (the
    /// largest lag among them) and how far enrichment got (the slowest
    /// one's committed offsets, summed over the partitions).
    pub fn ingest_backlog(&self, log: &dyn Log) -> Result<(u64, u64), LogError> {
        let mut ends = None;
        let (mut lag, mut slowest) = (0, None::<u64>);
        for input in self.inputs.iter().filter(|i| i.topic == Topic::Raw) {
            let ends = match &ends {
                Some(ends) => ends,
                None => ends.insert(log.end_offsets(Topic::Raw)?),
            };
            let committed = log.committed_all(input.consumer, input.topic)?;
            lag = lag.max(ends.iter().zip(&committed).map(|(e, c)| e.saturating_sub(*c)).sum());
            let sum = committed.iter().sum();
            slowest = Some(slowest.map_or(sum, |s: u64| s.min(sum)));
        }
        Ok((lag, slowest.unwrap_or(0)))
    }

    /// The consumers an offline run waits for before it stops the stages,
    /// with what they have not committed: every consumer behind but the
    /// archive's, which buffer files by age and write what they hold when
    /// stopped (a sink that commits as it goes, like the warehouse export,
    /// may be far behind and need more than a stop's grace to catch up).
    pub fn unsettled(&self, log: &dyn Log) -> Result<Vec<Position>, LogError> {
        let mut positions = self.positions(log)?;
        positions.retain(|p| p.lag() > 0 && ![archive::INPUT, archive::ERRORS_INPUT].contains(&p.input));
        Ok(positions)
    }
}

/// Ingest's bound on the posts waiting for enrichment: at most
/// `[server] max_enrich_lag`, and at most what the enrich stage drains in
/// `max_enrich_wait_ms` at the rate it was last seen to drain a backlog, so
/// that the delay from `202` to visible stays bounded whatever the stage's
/// speed (30,000 posts are half a second of work on the embedded log, four
/// seconds through a broker on the same two cores).
///
/// The rate comes from the enrich consumer's committed offsets, read at
/// most once a second, so it holds for enrich processes anywhere in the
/// consumer group. A reading counts when posts were waiting at the one
/// before: as the stage's speed if they still wait, as a floor under it if
/// it emptied the queue (an idle stage's rate is the traffic's, not what it
/// can do). A reading without progress (a stalled stage, a rebalance)
/// leaves the rate as it was: the stage is not throttled down to nothing,
/// and ingest still stops at what it drained in `max_wait` before.
#[derive(Debug)]
pub struct Throttle {
    max_lag: u64,
    max_wait: Duration,
    drain: Mutex<Drain>,
}

#[derive(Debug, Default)]
struct Drain {
    last: Option<Reading>,
    per_second: Option<f64>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    at: Instant,
    committed: u64,
    lag: u64,
}

/// Committed offsets are read at most this often for the drain rate.
const READ_EVERY: Duration = Duration::from_secs(1);
/// The rate bound never goes under this many posts (one client's batch
/// always gets through a slow stage).
const MIN_BOUND: u64 = 1_000;

impl Throttle {
    /// Throttle above `max_lag` posts, or above `max_wait` of the measured
    /// drain rate (zero: the count alone).
    pub fn new(max_lag: u64, max_wait: Duration) -> Throttle {
        Throttle {
            max_lag,
            max_wait,
            drain: Mutex::new(Drain::default()),
        }
    }

    /// The posts waiting for enrichment and the bound they must stay under.
    pub fn check(&self, consumers: &Consumers, log: &dyn Log) -> Result<(u64, u64), LogError> {
        let (lag, committed) = consumers.ingest_backlog(log)?;
        let bound = self.bound(Instant::now(), lag, || Ok(committed))?;
        Ok((lag, bound))
    }

    /// The bound at `now`, `lag` posts waiting; `committed` reads how far
    /// the stage got when a reading is due.
    fn bound(
        &self,
        now: Instant,
        lag: u64,
        committed: impl FnOnce() -> Result<u64, LogError>,
    ) -> Result<u64, LogError> {
        if self.max_wait.is_zero() {
            return Ok(self.max_lag);
        }
        let mut drain = self.drain.lock().unwrap_or_else(|p| p.into_inner());
        if drain
            .last
            .is_none_or(|r| now.saturating_duration_since(r.at) >= READ_EVERY)
        {
            let reading = Reading {
                at: now,
                committed: committed()?,
                lag,
            };
            if let Some(last) = drain.last
                && last.lag > 0
                && reading.committed > last.committed
            {
                let seconds = now.saturating_duration_since(last.at).as_secs_f64();
                let rate = (reading.committed - last.committed) as f64 / seconds;
                drain.per_second = match (drain.per_second, lag > 0) {
                    // Busy all along: its speed.
                    (Some(r), true) => Some((r + rate) / 2.0),
                    (None, true) => Some(rate),
                    // It emptied the queue: at least that fast.
                    (Some(r), false) => Some(r.max(rate)),
                    (None, false) => None,
                };
            }
            drain.last = Some(reading);
        }
        Ok(match drain.per_second {
            None => self.max_lag,
            Some(rate) => {
                ((rate * self.max_wait.as_secs_f64()) as u64).clamp(MIN_BOUND.min(self.max_lag), self.max_lag)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::fjall::FjallLog;

    /// A one-partition log whose `posts.enriched` holds ten records.
    fn ten_enriched_records() -> (tempfile::TempDir, FjallLog) {
        let dir = tempfile::tempdir().unwrap();
        let log = FjallLog::open(dir.path(), 1).unwrap();
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..10).map(|i| (vec![i], vec![i])).collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Enriched, &refs).unwrap();
        (dir, log)
    }

    #[test]
    fn retention_keeps_what_the_slowest_consumer_of_a_topic_has_not_committed() {
        let (_dir, log) = ten_enriched_records();
        let slow = Input {
            consumer: "slow",
            topic: Topic::Enriched,
        };
        let consumers = Consumers {
            inputs: vec![archive::INPUT, slow],
        };
        log.commit(archive::CONSUMER, Topic::Enriched, 0, 10).unwrap();
        log.commit("slow", Topic::Enriched, 0, 3).unwrap();
        assert_eq!(consumers.safe_offsets(&log, Topic::Enriched).unwrap(), vec![3]);
        // Nobody reads posts.raw in this registry.
        assert_eq!(consumers.safe_offsets(&log, Topic::Raw).unwrap(), vec![0]);
        let positions = consumers.positions(&log).unwrap();
        assert_eq!(positions.iter().map(Position::lag).collect::<Vec<_>>(), vec![0, 7]);
        assert_eq!(consumers.ingest_backlog(&log).unwrap(), (0, 0));
    }

    #[test]
    fn an_offline_run_waits_for_every_consumer_behind_but_the_archive() {
        let (_dir, log) = ten_enriched_records();
        let consumers = Consumers {
            inputs: vec![archive::INPUT, crate::warehouse::INPUT],
        };
        // The archive is behind (it writes what it holds when stopped): no wait for it.
        log.commit(crate::warehouse::CONSUMER, Topic::Enriched, 0, 4).unwrap();
        let behind = consumers.unsettled(&log).unwrap();
        assert_eq!(behind.len(), 1);
        assert_eq!((behind[0].input, behind[0].lag()), (crate::warehouse::INPUT, 6));
        log.commit(crate::warehouse::CONSUMER, Topic::Enriched, 0, 10).unwrap();
        assert!(consumers.unsettled(&log).unwrap().is_empty());
    }

    #[test]
    fn the_throttle_bounds_the_wait_by_the_rate_enrichment_drains_a_backlog() {
        let throttle = Throttle::new(30_000, Duration::from_millis(1_000));
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let reads = std::cell::Cell::new(0);
        let committed = |n: u64| {
            let reads = &reads;
            move || {
                reads.set(reads.get() + 1);
                Ok(n)
            }
        };
        // No rate measured yet: the count alone.
        assert_eq!(throttle.bound(at(0), 9_000, committed(0)).unwrap(), 30_000);
        // Within a second the offsets are not read again.
        assert_eq!(throttle.bound(at(500), 9_000, committed(1)).unwrap(), 30_000);
        assert_eq!(reads.get(), 1);
        // 4,000 posts drained in two seconds with a backlog all along:
        // 2,000/s, so a second's wait is 2,000 posts.
        assert_eq!(throttle.bound(at(2_000), 8_000, committed(4_000)).unwrap(), 2_000);
        assert_eq!(reads.get(), 2);
        // It emptied the queue at 1,000/s: a floor, not its speed.
        assert_eq!(throttle.bound(at(3_000), 0, committed(5_000)).unwrap(), 2_000);
        // Idle (nothing waited at the reading before): says nothing.
        assert_eq!(throttle.bound(at(4_000), 5_000, committed(5_100)).unwrap(), 2_000);
        // Faster now (20,000/s): the mean of the readings, 11,000.
        assert_eq!(throttle.bound(at(5_000), 5_000, committed(25_100)).unwrap(), 11_000);
        // Stalled (a rebalance, a dead process): the rate stays as it was.
        for second in 6..12 {
            assert_eq!(
                throttle.bound(at(second * 1_000), 9_000, committed(25_100)).unwrap(),
                11_000
            );
        }
        // Then it empties the queue at 40,000/s: at least that.
        assert_eq!(throttle.bound(at(13_000), 0, committed(105_100)).unwrap(), 30_000);
        // Slow (500/s with a backlog): one batch's worth floors the bound.
        let slow = Throttle::new(30_000, Duration::from_millis(1_000));
        slow.bound(at(0), 9_000, committed(0)).unwrap();
        assert_eq!(slow.bound(at(1_000), 9_000, committed(500)).unwrap(), MIN_BOUND);
        // Zero wait turns the rate bound off.
        let count_only = Throttle::new(30_000, Duration::ZERO);
        assert_eq!(count_only.bound(at(0), 9_000, committed(0)).unwrap(), 30_000);
        // A failed reading is the caller's error, not a bound.
        let failing = Throttle::new(30_000, Duration::from_secs(1));
        assert!(
            failing
                .bound(at(0), 1, || Err(LogError::Unavailable("gone".into())))
                .is_err()
        );
    }

    #[test]
    fn the_backlog_is_the_enrich_consumers_lag_and_committed_offsets_summed() {
        let dir = tempfile::tempdir().unwrap();
        let log = FjallLog::open(dir.path(), 2).unwrap();
        let consumers = Consumers::of(&Default::default());
        assert_eq!(consumers.ingest_backlog(&log).unwrap(), (0, 0));
        let records: Vec<(Vec<u8>, Vec<u8>)> = (0..40u32).map(|i| (i.to_be_bytes().to_vec(), b"{}".to_vec())).collect();
        let refs: Vec<(&[u8], &[u8])> = records.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
        log.append(Topic::Raw, &refs).unwrap();
        assert_eq!(consumers.ingest_backlog(&log).unwrap(), (40, 0));
        let ends = log.end_offsets(Topic::Raw).unwrap();
        assert!(ends.iter().all(|e| *e >= 7), "{ends:?}");
        log.commit(enrich::CONSUMER, Topic::Raw, 0, 5).unwrap();
        log.commit(enrich::CONSUMER, Topic::Raw, 1, 7).unwrap();
        assert_eq!(consumers.ingest_backlog(&log).unwrap(), (40 - 12, 12));
    }
}
