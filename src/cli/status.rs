//! `chorus status` (`GET /v1/status`): per topic and partition, the end
//! offset, and each stage's committed offset and lag.

use std::io::Write;

pub use crate::wire::{StageStatus, Status};

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
    if let Some(index) = status.index {
        writeln!(
            out,
            "index: {} documents, {:.1} MiB",
            index.documents,
            index.bytes as f64 / (1 << 20) as f64
        )?;
    }
    if let Some(archive) = status.archive {
        writeln!(
            out,
            "archive: {} files, {:.1} MiB; {} files of dead letters",
            archive.files,
            archive.bytes as f64 / (1 << 20) as f64,
            archive.error_files
        )?;
    }
    for view in &status.views {
        let served = match &view.version {
            Some(v) => format!("{} rows, built {}", v.rows, crate::wire::format_micros(v.finished_at)),
            None => "never built".to_string(),
        };
        let next = view.next_run.map_or_else(
            || "no next run".to_string(),
            |t| format!("next run {}", crate::wire::format_micros(t)),
        );
        writeln!(out, "view {}: {served}; {next} ({})", view.name, view.schedule)?;
        if let Some(error) = &view.error {
            writeln!(out, "  last run FAILED: {error}")?;
        }
    }
    Ok(())
}
