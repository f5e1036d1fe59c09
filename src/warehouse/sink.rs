//! The posts export: `posts.enriched` into `<schema>.posts`, through the
//! shared consume loop.
//!
//! Records are kept in memory, the newest `ingested_at` per (platform, id),
//! until a batch is due (`batch_rows` posts, 64 MiB, or `flush_ms`); the
//! batch is copied into a temporary staging table and merged in one
//! transaction, then the log's offsets are committed. After a crash between
//! the two, the replay merges the same rows again, which changes nothing.
//! While the warehouse is unreachable the batch is retried with backoff and
//! nothing is committed (the log keeps the records: retention waits for
//! this consumer too).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{
    INPUT, POSTS_TABLE, STAGING, WarehouseConfig, WarehouseError, connect, copy_in, merge_posts, prepare, qualified,
    within,
};
use crate::log::{Entry, Input, Log, Topic};
use crate::metrics::Metrics;
use crate::record::{Limits, PostView};
use crate::sinks::consume::{self, Commit, Committed, Sink};
use crate::transforms::enrich::dead_letter;

/// Bytes of records held at most before a batch is due.
const MAX_BUFFERED_BYTES: usize = 64 << 20;

/// The posts export's sink.
pub struct WarehouseSink {
    config: WarehouseConfig,
    log: Arc<dyn Log>,
    metrics: Arc<Metrics>,
    /// Runs the database client on this sink's thread.
    runtime: tokio::runtime::Runtime,
    client: Option<tokio_postgres::Client>,
    /// Per post key: the newest `ingested_at` read and its record.
    buffered: HashMap<Vec<u8>, (i64, Vec<u8>)>,
    bytes: usize,
    /// When the oldest uncommitted record was read.
    since: Option<Instant>,
    /// Retries stop when this is cancelled (shutting down).
    stop: CancellationToken,
}

impl WarehouseSink {
    /// A sink for `config` (whose `url` is set); it connects when it first
    /// has posts to merge.
    pub fn new(
        config: WarehouseConfig,
        log: Arc<dyn Log>,
        metrics: Arc<Metrics>,
        stop: CancellationToken,
    ) -> Result<WarehouseSink, WarehouseError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| WarehouseError::Database {
                message: format!("cannot start the client's runtime: {e}"),
                retry: false,
            })?;
        Ok(WarehouseSink {
            config,
            log,
            metrics,
            runtime,
            client: None,
            buffered: HashMap::new(),
            bytes: 0,
            since: None,
            stop,
        })
    }

    /// Exports `posts.enriched` until `stop` (given to [`WarehouseSink::new`]
    /// too), through the shared consume loop. Stopping while the warehouse
    /// is unreachable is not a failure: what was not merged is read again
    /// at the next start.
    pub fn run(mut self, log: &dyn Log) -> Result<(), WarehouseError> {
        let stop = self.stop.clone();
        match consume::run(log, &mut [&mut self], stop) {
            Err(WarehouseError::Stopped) => {
                tracing::warn!(
                    warehouse = %self.config.describe(),
                    "Stopped while the warehouse was unreachable; the posts not merged yet are exported at the next start."
                );
                Ok(())
            }
            other => other,
        }
    }

    /// Merges `batch` (of the record's schema), connecting first if needed.
    async fn merge(
        client: &mut Option<tokio_postgres::Client>,
        config: &WarehouseConfig,
        batch: &arrow::array::RecordBatch,
    ) -> Result<u64, WarehouseError> {
        if client.as_ref().is_some_and(tokio_postgres::Client::is_closed) {
            *client = None;
        }
        let posts = qualified(&config.schema, POSTS_TABLE);
        let client = match client {
            Some(client) => client,
            None => {
                let c = connect(config).await?;
                prepare(&c, config).await?;
                c.batch_execute(&format!("CREATE TEMP TABLE {STAGING} (LIKE {posts})"))
                    .await?;
                client.insert(c)
            }
        };
        // Emptied by TRUNCATE, not DELETE: autovacuum never visits a
        // temporary table, so deleted rows would pile up and every batch
        // scan them all (the export slowed from 10k to 5k posts/s in 2M).
        client.batch_execute(&format!("TRUNCATE {STAGING}")).await?;
        let tx = client.transaction().await?;
        let rows = copy_in(
            &tx,
            STAGING,
            &batch.schema(),
            Box::pin(futures::stream::iter([Ok(batch.clone())])),
        )
        .await?;
        for sql in merge_posts(&posts) {
            tx.execute(&sql, &[]).await?;
        }
        tx.commit().await?;
        Ok(rows)
    }
}

impl Sink for WarehouseSink {
    type Error = WarehouseError;

    fn input(&self) -> Input {
        INPUT
    }

    fn write(&mut self, partition: u32, entries: &[Entry]) -> Result<(), WarehouseError> {
        let mut dead = Vec::new();
        for entry in entries {
            // What the archive cannot read or store it sends to the dead
            // letters itself; the warehouse leaves it out.
            let Ok(post) = PostView::from_log_bytes(&entry.value) else {
                continue;
            };
            if post.incoming.check(&Limits::ANY_BODY).is_err() {
                continue;
            }
            if post.incoming.body.contains('\0') || post.text.contains('\0') {
                dead.push(dead_letter(
                    Topic::Enriched,
                    partition,
                    entry,
                    "the warehouse cannot store it: its body holds a NUL character, which PostgreSQL text cannot",
                ));
                continue;
            }
            let key = crate::log::post_key(&post.incoming.platform, &post.incoming.id);
            let ingested_at = post.ingested_at;
            self.since.get_or_insert_with(Instant::now);
            match self.buffered.get_mut(&key) {
                Some(held) if held.0 > ingested_at => {}
                Some(held) => {
                    self.bytes = self.bytes - held.1.len() + entry.value.len();
                    *held = (ingested_at, entry.value.to_vec());
                }
                None => {
                    self.bytes += entry.value.len() + key.len();
                    self.buffered.insert(key, (ingested_at, entry.value.to_vec()));
                }
            }
        }
        if !dead.is_empty() {
            let refs: Vec<(&[u8], &[u8])> = dead.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            self.log.append(Topic::Dead, &refs)?;
            self.metrics.dead_letters.add(dead.len() as u64);
        }
        Ok(())
    }

    fn due(&self, pending: &[u32]) -> Vec<u32> {
        let late = self
            .since
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(self.config.flush_ms));
        if self.buffered.len() >= self.config.batch_rows || self.bytes >= MAX_BUFFERED_BYTES || late {
            pending.to_vec()
        } else {
            Vec::new()
        }
    }

    fn flush(&mut self, commit: Commit<'_>) -> Result<Committed, WarehouseError> {
        if !self.buffered.is_empty() {
            let views: Vec<PostView<'_>> = self
                .buffered
                .values()
                .filter_map(|(_, bytes)| PostView::from_log_bytes(bytes).ok())
                .collect();
            let batch = crate::record::batch::to_record_batch(&views)
                .map_err(|e| WarehouseError::Data(format!("the posts' columns: {e}")))?;
            let max_pause = Duration::from_secs(self.config.max_backoff_secs.max(1));
            let mut attempt = 0u32;
            loop {
                let client = &mut self.client;
                let config = &self.config;
                let result = self.runtime.block_on(within(
                    config,
                    "the merge of posts",
                    Self::merge(client, config, &batch),
                ));
                match result {
                    Ok(rows) => {
                        self.metrics.warehouse_rows.add(rows);
                        break;
                    }
                    Err(e) if e.retry() => {
                        self.client = None;
                        attempt += 1;
                        self.metrics.warehouse_retries.add(1);
                        if self.stop.is_cancelled() {
                            tracing::warn!(error = %e, "The warehouse is unreachable while stopping.");
                            return Err(WarehouseError::Stopped);
                        }
                        let pause = super::backoff(attempt, max_pause);
                        tracing::warn!(error = %e, attempt, retry_in_ms = pause.as_millis() as u64,
                            posts = batch.num_rows(), "Cannot merge posts into the warehouse; will retry.");
                        if !consume::pause_unless_stopped(&self.stop, pause) {
                            return Err(WarehouseError::Stopped);
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        self.buffered.clear();
        self.bytes = 0;
        self.since = None;
        Ok(commit.now()?)
    }
}
