//! The registry of the log's consumers: every stage that reads a topic,
//! derived once from the configuration. Retention keeps what any of them
//! has not committed, `chorus status` and `/metrics` show each one's lag,
//! and ingest throttles on the lag of those that read `posts.raw`. A new
//! stage or sink registers its [`Input`] here and nowhere else.

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
                let partitions = ends
                    .iter()
                    .enumerate()
                    .map(|(p, end)| Ok((*end, log.committed(input.consumer, input.topic, p as u32)?)))
                    .collect::<Result<_, LogError>>()?;
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
            for (p, offset) in safe.iter_mut().enumerate() {
                *offset = (*offset).min(log.committed(input.consumer, topic, p as u32)?);
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

    /// The lag ingest throttles on: the largest among the consumers of
    /// `posts.raw`.
    pub fn ingest_lag(&self, log: &dyn Log) -> Result<u64, LogError> {
        let mut lag = 0;
        for input in self.inputs.iter().filter(|i| i.topic == Topic::Raw) {
            lag = lag.max(log.lag(input.consumer, input.topic)?);
        }
        Ok(lag)
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
        assert_eq!(consumers.ingest_lag(&log).unwrap(), 0);
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
}
