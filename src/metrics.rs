//! Pipeline counters, their names (one place), and the Prometheus text
//! format `GET /metrics` serves.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// One monotonically increasing counter.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Every counter of a running pipeline.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Posts accepted by `POST /v1/posts` (durable in `posts.raw`).
    pub ingest_accepted: Counter,
    /// Lines refused by `POST /v1/posts`.
    pub ingest_rejected: Counter,
    /// Requests refused because the pipeline was saturated.
    pub ingest_throttled: Counter,
    /// Raw records the enrich stage read.
    pub enrich_in: Counter,
    /// Enriched posts it appended.
    pub enrich_out: Counter,
    /// Exact re-submissions it dropped.
    pub enrich_duplicates: Counter,
    /// Seen-state entries it removed once older than their retention.
    pub enrich_seen_expired: Counter,
    /// Records it sent to `posts.dead`.
    pub dead_letters: Counter,
    /// Posts written to archive files.
    pub archive_rows: Counter,
    /// Archive files committed.
    pub archive_files: Counter,
    /// Dead letters written to `archive/errors`.
    pub archive_errors: Counter,
    /// Posts written to the search index (a re-sent post replaces its
    /// document: the index holds one per post).
    pub index_documents: Counter,
    /// Records of `posts.enriched` the index could not read (the archive
    /// sends them to the dead letters).
    pub index_skipped: Counter,
    /// Index commits (each makes what it covers searchable).
    pub index_commits: Counter,
    /// Posts collectors made durable (in the log or a spool).
    pub collector_posts: Counter,
    /// Requests collectors sent to platforms.
    pub collector_requests: Counter,
    /// Failed requests collectors will retry (5xx, timeouts, remote down).
    pub collector_retries: Counter,
    /// Times a platform said "too many requests".
    pub collector_rate_limited: Counter,
    /// Items a collector could not map onto the record (skipped, logged).
    pub collector_invalid: Counter,
    /// Reddit polls that came back as a full page of unseen comments.
    pub reddit_possible_gaps: Counter,
    /// Comments recovered by paging back after such a poll (`fill_gaps`).
    pub reddit_gap_comments: Counter,
    /// Spooled posts a remote chorus accepted.
    pub spool_sent: Counter,
    /// Batch view runs started.
    pub view_runs: Counter,
    /// Batch view runs that failed.
    pub view_failures: Counter,
    /// Posts merged into the warehouse (a re-sent post replaces its row).
    pub warehouse_rows: Counter,
    /// Failed warehouse attempts that are being retried.
    pub warehouse_retries: Counter,
    /// Documents indexed in OpenSearch.
    pub opensearch_documents: Counter,
    /// Older versions OpenSearch refused (a newer one was indexed).
    pub opensearch_stale: Counter,
    /// Documents OpenSearch refused for good (sent to the dead letters).
    pub opensearch_failed: Counter,
    /// OpenSearch requests and documents retried.
    pub opensearch_retries: Counter,
    /// View versions exported to the warehouse.
    pub warehouse_view_exports: Counter,
    /// View versions the warehouse could not take (not retried).
    pub warehouse_failures: Counter,
    /// Archive lifecycle passes done.
    pub lifecycle_runs: Counter,
    /// Archive lifecycle passes that failed (retried at the next).
    pub lifecycle_failures: Counter,
    /// Hour partitions of the archive compacted.
    pub archive_hours_compacted: Counter,
    /// Archive files compaction made unneeded (files before less after).
    pub archive_files_compacted: Counter,
    /// Hour partitions of the archive removed by its retention.
    pub archive_hours_expired: Counter,
}

/// Gauges read at scrape time (they live in the log).
#[derive(Debug, Default)]
pub struct Gauges {
    /// Each registered consumer's lag: records of its topic not committed.
    pub lags: Vec<(crate::log::Input, u64)>,
    /// Disk bytes of the stages' state (the enrich stage's seen posts).
    pub state_bytes: u64,
    /// Each alert: name, breaches so far, whether it is breached now.
    pub alerts: Vec<(String, u64, bool)>,
    /// Each batch view's state.
    pub views: Vec<crate::wire::ViewStatus>,
}

impl Metrics {
    /// The Prometheus text exposition of the counters and `gauges`.
    pub fn render(&self, gauges: &Gauges) -> String {
        let counters: [(&str, &str, &Counter); 37] = [
            (
                "chorus_ingest_posts_accepted_total",
                "Posts accepted by the ingest API.",
                &self.ingest_accepted,
            ),
            (
                "chorus_ingest_posts_rejected_total",
                "Lines refused by the ingest API.",
                &self.ingest_rejected,
            ),
            (
                "chorus_ingest_requests_throttled_total",
                "Ingest requests refused with 429/503 while the pipeline was saturated.",
                &self.ingest_throttled,
            ),
            (
                "chorus_enrich_posts_read_total",
                "Raw records read by the enrich stage.",
                &self.enrich_in,
            ),
            (
                "chorus_enrich_posts_written_total",
                "Enriched posts appended to posts.enriched.",
                &self.enrich_out,
            ),
            (
                "chorus_enrich_duplicates_dropped_total",
                "Exact re-submissions dropped by the enrich stage.",
                &self.enrich_duplicates,
            ),
            (
                "chorus_enrich_seen_expired_total",
                "Seen-state entries removed once older than the log's retention.",
                &self.enrich_seen_expired,
            ),
            (
                "chorus_dead_letters_written_total",
                "Records sent to posts.dead.",
                &self.dead_letters,
            ),
            (
                "chorus_archive_posts_written_total",
                "Posts written to archive Parquet files.",
                &self.archive_rows,
            ),
            (
                "chorus_archive_files_committed_total",
                "Archive files committed.",
                &self.archive_files,
            ),
            (
                "chorus_archive_errors_written_total",
                "Dead letters written to archive/errors.",
                &self.archive_errors,
            ),
            (
                "chorus_collector_posts_total",
                "Posts collectors made durable (log or spool).",
                &self.collector_posts,
            ),
            (
                "chorus_collector_requests_total",
                "Requests collectors sent to platforms.",
                &self.collector_requests,
            ),
            (
                "chorus_collector_retries_total",
                "Failed collector requests that are retried.",
                &self.collector_retries,
            ),
            (
                "chorus_collector_rate_limited_total",
                "Times a platform answered too many requests.",
                &self.collector_rate_limited,
            ),
            (
                "chorus_collector_invalid_total",
                "Collected items that could not be mapped onto the record.",
                &self.collector_invalid,
            ),
            (
                "chorus_reddit_possible_gaps_total",
                "Reddit polls that returned a full page of unseen comments (some may have been missed).",
                &self.reddit_possible_gaps,
            ),
            (
                "chorus_reddit_gap_comments_total",
                "Comments recovered by paging back after a full page (fill_gaps).",
                &self.reddit_gap_comments,
            ),
            (
                "chorus_index_documents_total",
                "Posts written to the search index.",
                &self.index_documents,
            ),
            (
                "chorus_index_skipped_total",
                "Enriched records the index could not read.",
                &self.index_skipped,
            ),
            (
                "chorus_index_commits_total",
                "Index commits (each makes its posts searchable).",
                &self.index_commits,
            ),
            (
                "chorus_spool_posts_sent_total",
                "Spooled posts accepted by the remote chorus.",
                &self.spool_sent,
            ),
            ("chorus_view_runs_total", "Batch view runs started.", &self.view_runs),
            (
                "chorus_view_failures_total",
                "Batch view runs that failed (the previous version kept serving).",
                &self.view_failures,
            ),
            (
                "chorus_warehouse_rows_total",
                "Posts merged into the warehouse.",
                &self.warehouse_rows,
            ),
            (
                "chorus_warehouse_retries_total",
                "Warehouse attempts that failed and are retried (the warehouse was unreachable).",
                &self.warehouse_retries,
            ),
            (
                "chorus_opensearch_documents_total",
                "Documents indexed in OpenSearch.",
                &self.opensearch_documents,
            ),
            (
                "chorus_opensearch_stale_total",
                "Older versions of posts OpenSearch refused because a newer one is indexed.",
                &self.opensearch_stale,
            ),
            (
                "chorus_opensearch_failed_total",
                "Documents OpenSearch refused, sent to the dead letters.",
                &self.opensearch_failed,
            ),
            (
                "chorus_opensearch_retries_total",
                "OpenSearch requests and documents retried (unreachable, 429 or 5xx).",
                &self.opensearch_retries,
            ),
            (
                "chorus_warehouse_view_exports_total",
                "View versions exported to the warehouse.",
                &self.warehouse_view_exports,
            ),
            (
                "chorus_warehouse_failures_total",
                "View versions the warehouse could not take (see the log).",
                &self.warehouse_failures,
            ),
            (
                "chorus_lifecycle_runs_total",
                "Archive lifecycle passes done.",
                &self.lifecycle_runs,
            ),
            (
                "chorus_lifecycle_failures_total",
                "Archive lifecycle passes that failed.",
                &self.lifecycle_failures,
            ),
            (
                "chorus_archive_hours_compacted_total",
                "Hour partitions of the archive compacted into one file.",
                &self.archive_hours_compacted,
            ),
            (
                "chorus_archive_files_compacted_total",
                "Archive files compaction made unneeded.",
                &self.archive_files_compacted,
            ),
            (
                "chorus_archive_hours_expired_total",
                "Hour partitions of the archive removed by its retention.",
                &self.archive_hours_expired,
            ),
        ];
        let mut out = String::new();
        for (name, help, counter) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        let lag_of = |consumer: &str| {
            gauges
                .lags
                .iter()
                .find(|(input, _)| input.consumer == consumer)
                .map_or(0, |(_, lag)| *lag)
        };
        let named = [
            (
                "chorus_enrich_lag_records",
                "Records of posts.raw not yet enriched.",
                lag_of(crate::transforms::enrich::CONSUMER),
            ),
            (
                "chorus_archive_lag_records",
                "Records of posts.enriched not yet archived.",
                lag_of(crate::sinks::archive::CONSUMER),
            ),
            (
                "chorus_state_bytes",
                "Disk bytes of the stages' state (seen posts), flushed to disk.",
                gauges.state_bytes,
            ),
        ];
        for (name, help, value) in named {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}");
        }
        let name = "chorus_consumer_lag_records";
        let _ = writeln!(
            out,
            "# HELP {name} Records of a topic its consumer has not committed.\n# TYPE {name} gauge"
        );
        if !gauges.alerts.is_empty() {
            let _ = writeln!(
                out,
                "# HELP chorus_alert_breaches_total Times an alert's condition came to hold.\n# TYPE chorus_alert_breaches_total counter"
            );
            for (name, breaches, _) in &gauges.alerts {
                let _ = writeln!(out, "chorus_alert_breaches_total{{alert=\"{name}\"}} {breaches}");
            }
            let _ = writeln!(
                out,
                "# HELP chorus_alert_breached Whether an alert's condition holds now.\n# TYPE chorus_alert_breached gauge"
            );
            for (name, _, breached) in &gauges.alerts {
                let _ = writeln!(out, "chorus_alert_breached{{alert=\"{name}\"}} {}", u8::from(*breached));
            }
        }
        if !gauges.views.is_empty() {
            let _ = writeln!(
                out,
                "# HELP chorus_view_failing Whether a batch view's last run failed.\n# TYPE chorus_view_failing gauge"
            );
            for view in &gauges.views {
                let _ = writeln!(
                    out,
                    "chorus_view_failing{{view=\"{}\"}} {}",
                    view.name,
                    u8::from(view.error.is_some())
                );
            }
            let _ = writeln!(
                out,
                "# HELP chorus_view_rows Rows of the version a batch view serves.\n# TYPE chorus_view_rows gauge"
            );
            for view in &gauges.views {
                let rows = view.version.as_ref().map_or(0, |v| v.rows);
                let _ = writeln!(out, "chorus_view_rows{{view=\"{}\"}} {rows}", view.name);
            }
            let _ = writeln!(
                out,
                "# HELP chorus_view_last_success_timestamp_seconds When the version a batch view serves was made (0: never).\n# TYPE chorus_view_last_success_timestamp_seconds gauge"
            );
            for view in &gauges.views {
                let at = view.version.as_ref().map_or(0, |v| v.finished_at / 1_000_000);
                let _ = writeln!(
                    out,
                    "chorus_view_last_success_timestamp_seconds{{view=\"{}\"}} {at}",
                    view.name
                );
            }
        }
        for (input, lag) in &gauges.lags {
            let _ = writeln!(
                out,
                "{name}{{consumer=\"{}\",topic=\"{}\"}} {lag}",
                input.consumer,
                input.topic.name()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.ingest_accepted.add(3);
        let text = m.render(&Gauges {
            lags: vec![(crate::transforms::enrich::INPUT, 7), (crate::sinks::archive::INPUT, 0)],
            state_bytes: 4096,
            alerts: vec![("spike".into(), 2, true)],
            views: Vec::new(),
        });
        assert!(text.contains("chorus_alert_breaches_total{alert=\"spike\"} 2\n"));
        assert!(text.contains("chorus_alert_breached{alert=\"spike\"} 1\n"));
        assert!(
            text.contains("# TYPE chorus_ingest_posts_accepted_total counter\nchorus_ingest_posts_accepted_total 3\n")
        );
        assert!(text.contains("chorus_enrich_lag_records 7\n"));
        assert!(text.contains("chorus_consumer_lag_records{consumer=\"enrich\",topic=\"posts.raw\"} 7\n"));
        assert!(text.contains("chorus_consumer_lag_records{consumer=\"archive\",topic=\"posts.enriched\"} 0\n"));
        assert!(text.contains("chorus_state_bytes 4096\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, value) = line.split_once(' ').unwrap();
            assert!(name.starts_with("chorus_"), "{line}");
            value.parse::<u64>().unwrap();
        }
    }
}
