//! `chorus status` (`GET /v1/status`): per topic and partition, the end
//! offset, and each stage's committed offset and lag.

use std::io::Write;

use serde::{Deserialize, Serialize};

use crate::consumers::Consumers;
use crate::log::{Log, LogError};

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

/// Reads the status of every registered consumer from the log.
pub fn collect(log: &dyn Log, consumers: &Consumers) -> Result<Status, LogError> {
    let stages = consumers
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
