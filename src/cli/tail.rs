//! `chorus tail` (kafka-console-consumer): prints the records of a topic
//! as NDJSON, from its end (or beginning), following new ones.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::log::{Log, Topic};

/// Where the records come from.
pub enum Source<'a> {
    /// A log opened by this process.
    Log(&'a dyn Log),
    /// A running server (`GET /v1/log/{topic}/{partition}`).
    Remote {
        /// Base URL.
        base: String,
        /// Bearer token, if needed.
        token: Option<String>,
        /// Partitions per topic.
        partitions: u32,
    },
}

/// What to print.
pub struct Options {
    /// Topic to read.
    pub topic: Topic,
    /// Start at offset 0 instead of the end.
    pub from_beginning: bool,
    /// Keep waiting for new records.
    pub follow: bool,
    /// Stop after this many records.
    pub max: Option<u64>,
}

/// Prints records until caught up (without `follow`), `max`, or `shutdown`.
pub async fn tail(
    source: &Source<'_>,
    options: &Options,
    out: &mut dyn Write,
    shutdown: &CancellationToken,
) -> anyhow::Result<u64> {
    let client = reqwest::Client::new();
    let partitions = match source {
        Source::Log(log) => log.partitions(),
        Source::Remote { partitions, .. } => *partitions,
    };
    let mut next: Vec<u64> = vec![0; partitions as usize];
    if !options.from_beginning {
        for (p, n) in next.iter_mut().enumerate() {
            *n = read(source, &client, options.topic, p as u32, u64::MAX, 1).await?.0;
        }
    }
    let mut printed = 0u64;
    loop {
        let mut any = false;
        for p in 0..partitions {
            let (_, records) = read(source, &client, options.topic, p, next[p as usize], 1000).await?;
            for (offset, value) in records {
                writeln!(out, "{value}")?;
                next[p as usize] = offset + 1;
                printed += 1;
                any = true;
                if options.max.is_some_and(|m| printed >= m) {
                    out.flush()?;
                    return Ok(printed);
                }
            }
        }
        out.flush()?;
        if !any {
            if !options.follow {
                return Ok(printed);
            }
            tokio::select! {
                () = shutdown.cancelled() => return Ok(printed),
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }
}

/// The end offset of a partition and its records from `offset`.
async fn read(
    source: &Source<'_>,
    client: &reqwest::Client,
    topic: Topic,
    partition: u32,
    offset: u64,
    max: usize,
) -> anyhow::Result<(u64, Vec<(u64, String)>)> {
    match source {
        Source::Log(log) => {
            let end = log.end_offsets(topic)?[partition as usize];
            if offset == u64::MAX {
                return Ok((end, Vec::new()));
            }
            let records = log
                .read(topic, partition, offset, max, crate::log::READ_BYTES)?
                .into_iter()
                .map(|e| (e.offset, crate::log::record_json(topic, &e.value).to_string()))
                .collect();
            Ok((end, records))
        }
        Source::Remote { base, token, .. } => {
            let offset = if offset == u64::MAX { 0 } else { offset };
            let max = if offset == 0 && max == 1 { 0 } else { max };
            let url = format!("{base}/v1/log/{}/{partition}?offset={offset}&max={max}", topic.name());
            let mut request = client.get(&url);
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.with_context(|| format!("GET {url}"))?;
            let status = response.status();
            let body: Value = response.json().await.with_context(|| format!("GET {url}"))?;
            if !status.is_success() {
                bail!("{url} answered {status}: {body}");
            }
            let end = body["end"].as_u64().unwrap_or(0);
            let records = body["records"]
                .as_array()
                .map(|r| {
                    r.iter()
                        .map(|r| (r["offset"].as_u64().unwrap_or(0), r["value"].to_string()))
                        .collect()
                })
                .unwrap_or_default();
            Ok((end, records))
        }
    }
}
