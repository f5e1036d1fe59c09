//! `chorus status` (`GET /v1/status`): per topic and partition, the end
//! offset, and each stage's committed offset and lag.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::log::{Log, LogError, Topic};
use crate::sinks::archive;
use crate::transforms::enrich;

/// The consumers of each topic.
const CONSUMERS: [(Topic, &str); 3] = [
    (Topic::Raw, enrich::CONSUMER),
    (Topic::Enriched, archive::CONSUMER),
    (Topic::Dead, archive::ERRORS_CONSUMER),
];

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
}

/// Reads the status from the log.
pub fn collect(log: &dyn Log) -> Result<Status, LogError> {
    let mut stages = Vec::new();
    for (topic, consumer) in CONSUMERS {
        let ends = log.end_offsets(topic)?;
        let mut partitions = Vec::new();
        for (p, end) in ends.iter().enumerate() {
            partitions.push([*end, log.committed(consumer, topic, p as u32)?]);
        }
        let end: u64 = partitions.iter().map(|p| p[0]).sum();
        let committed: u64 = partitions.iter().map(|p| p[1]).sum();
        stages.push(StageStatus {
            topic: topic.name().into(),
            consumer: consumer.into(),
            end,
            committed,
            lag: end.saturating_sub(committed),
            partitions,
        });
    }
    Ok(Status { stages })
}

/// Prints the status as a table.
pub fn print(status: &Status, out: &mut dyn Write) -> std::io::Result<()> {
    writeln!(
        out,
        "{:<16} {:<16} {:>12} {:>12} {:>10}",
        "topic", "consumer", "end", "committed", "lag"
    )?;
    for s in &status.stages {
        writeln!(
            out,
            "{:<16} {:<16} {:>12} {:>12} {:>10}",
            s.topic, s.consumer, s.end, s.committed, s.lag
        )?;
    }
    Ok(())
}
