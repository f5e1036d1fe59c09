//! The TOML configuration: plain data with documented defaults. Every
//! section refuses unknown keys, naming the file and line.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sinks::archive::ArchiveConfig;
use crate::transforms::enrich::EnrichConfig;

/// File read when `--config` is not given, if it exists.
pub const DEFAULT_FILE: &str = "chorus.toml";
/// Environment variable with bearer tokens, comma-separated.
pub const TOKENS_ENV: &str = "CHORUS_TOKENS";

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The HTTP listener and ingest API.
    pub server: ServerConfig,
    /// The embedded log.
    pub log: LogConfig,
    /// The enrich stage.
    pub enrich: EnrichConfig,
    /// The archive sink.
    pub archive: ArchiveConfig,
    /// The archive's lifecycle (compaction).
    pub lifecycle: crate::lifecycle::LifecycleConfig,
    /// The search index sink.
    pub index: crate::sinks::index::IndexConfig,
    /// The bounds of SQL queries.
    pub query: crate::query::QueryConfig,
    /// The demo generator (`chorus demo`).
    pub demo: DemoConfig,
    /// Collectors `chorus run` starts (`[[sources]]` tables with a `kind`).
    pub sources: Vec<crate::sources::SourceConfig>,
    /// Saved-search alerts (`[[alerts]]`).
    pub alerts: Vec<crate::alerts::AlertConfig>,
    /// Batch views (`[[views]]`), beside the built-in ones.
    pub views: Vec<crate::views::ViewConfig>,
    /// How batch runs go.
    pub batch: crate::views::BatchConfig,
    /// The export to PostgreSQL/Redshift (`[warehouse]`), off by default.
    pub warehouse: crate::warehouse::WarehouseConfig,
    /// The delivery to an OpenSearch cluster (`[opensearch]`), off by
    /// default.
    pub opensearch: crate::sinks::opensearch::OpenSearchConfig,
}

/// The HTTP listener.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Bearer tokens accepted by the API; also `CHORUS_TOKENS`. None: no
    /// authentication, allowed only on a loopback address.
    pub tokens: Vec<String>,
    /// Largest request body, bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Largest body of one post, bytes: a larger post is a rejected line
    /// (its batch is still taken).
    pub max_post_bytes: usize,
    /// Ingest answers 429 with `Retry-After` while more raw posts than this
    /// wait for the enrich stage.
    pub max_enrich_lag: u64,
    /// Ingest also answers 429 while the posts waiting would take the
    /// enrich stage longer than this to drain at its measured rate (0: the
    /// count alone).
    pub max_enrich_wait_ms: u64,
    /// Origins (`scheme://host[:port]`) whose web pages may call the API
    /// besides the server's own; other `Origin`s get 403.
    pub allowed_origins: Vec<String>,
    /// Connections open at once.
    pub max_connections: usize,
    /// Seconds a client has to send a request's headers (and an idle
    /// kept-alive connection to start its next request).
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body (else 408).
    pub body_timeout_secs: u64,
    /// Seconds requests in flight get on shutdown before their connections
    /// are closed.
    pub shutdown_grace_secs: u64,
    /// Ingest bodies read and parsed at once (each up to `max_body_bytes`);
    /// one more gets 429.
    pub max_concurrent_ingest: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
            tokens: Vec::new(),
            max_body_bytes: 16 * 1024 * 1024,
            max_post_bytes: crate::record::DEFAULT_MAX_POST_BYTES,
            max_enrich_lag: 30_000,
            max_enrich_wait_ms: 1_000,
            allowed_origins: Vec::new(),
            max_connections: 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            shutdown_grace_secs: 10,
            max_concurrent_ingest: 16,
        }
    }
}

impl ServerConfig {
    /// The bounds of the listener.
    pub fn http_limits(&self) -> crate::http::HttpLimits {
        let secs = std::time::Duration::from_secs;
        crate::http::HttpLimits {
            max_connections: self.max_connections,
            header_timeout: secs(self.header_timeout_secs.max(1)),
            body_timeout: secs(self.body_timeout_secs.max(1)),
            shutdown_grace: secs(self.shutdown_grace_secs),
            max_concurrent_ingest: self.max_concurrent_ingest.max(1),
        }
    }

    /// The bounds of an accepted post.
    pub fn limits(&self) -> crate::record::Limits {
        crate::record::Limits {
            max_post_bytes: self.max_post_bytes,
        }
    }
}

/// The embedded log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Where the log is: the embedded store in the data directory, or a
    /// Kafka-protocol broker.
    pub backend: LogBackend,
    /// With `backend = "kafka"`: `bootstrap.servers` (`host:port,…`).
    pub brokers: String,
    /// With `backend = "kafka"`: put before every topic and consumer group
    /// name, so several chorus deployments can share a cluster.
    pub topic_prefix: String,
    /// With `backend = "kafka"`: the replication factor of topics chorus
    /// creates.
    pub replication: u32,
    /// With `backend = "kafka"`: how records are written on the topics.
    pub encoding: LogEncoding,
    /// Partitions per topic (fixed when the data directory is created).
    pub partitions: u32,
    /// Records every consumer has processed are removed after this many
    /// hours (0: kept forever).
    pub retention_hours: u64,
    /// ...or while a topic partition is larger than this many bytes (0: no
    /// size bound).
    pub retention_bytes: u64,
    /// Records per log segment, the unit retention removes (a setting of
    /// new segments; existing ones keep their size).
    pub segment_records: u64,
    /// Seconds between two retention passes.
    pub retention_check_secs: u64,
    /// Ingest answers 507 while the data directory's disk has fewer free
    /// bytes than this: the stages keep the rest to finish what was taken.
    pub min_free_bytes: u64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            backend: LogBackend::Embedded,
            brokers: "127.0.0.1:9092".into(),
            topic_prefix: String::new(),
            replication: 1,
            encoding: LogEncoding::Json,
            partitions: 4,
            retention_hours: 168,
            retention_bytes: 0,
            segment_records: crate::log::fjall::SEGMENT_RECORDS,
            retention_check_secs: 30,
            min_free_bytes: 256 << 20,
        }
    }
}

/// Where the log is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogBackend {
    /// fjall, in the data directory's `log/`.
    Embedded,
    /// Topics on a Kafka-protocol broker (`brokers`).
    Kafka,
}

/// How records are written on Kafka topics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogEncoding {
    /// One JSON object per post, the record's columns: any Kafka client
    /// reads them (and other producers' JSON posts are taken).
    Json,
    /// chorus's compact binary encoding (less CPU and bytes; only chorus
    /// reads it).
    Compact,
}

impl LogConfig {
    /// The retention policy these settings describe.
    pub fn retention(&self) -> crate::log::Retention {
        crate::log::Retention {
            max_age: (self.retention_hours > 0).then(|| std::time::Duration::from_secs(self.retention_hours * 3600)),
            max_bytes: (self.retention_bytes > 0).then_some(self.retention_bytes),
        }
    }
}

/// The demo generator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DemoConfig {
    /// Posts per second.
    pub rate: u32,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig { rate: 50 }
    }
}

/// Configuration failures.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not valid configuration.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, with its line.
        message: String,
    },
}

impl Config {
    /// Parses TOML text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|span| text[..span.start.min(text.len())].matches('\n').count() + 1);
            let message = e.message().trim().to_string();
            ConfigError::Invalid {
                path: path.to_path_buf(),
                message: match line {
                    Some(line) => format!("line {line}: {message}"),
                    None => message,
                },
            }
        })
    }

    /// `--config FILE` if given, else `chorus.toml` if present, else defaults.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new(DEFAULT_FILE).exists() => PathBuf::from(DEFAULT_FILE),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let config = Config::parse(&text, &path)?;
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.clone(),
            message,
        })?;
        Ok(config)
    }

    /// The batch views: the built-in ones with `[[views]]`.
    pub fn views(&self) -> Result<Vec<crate::views::View>, String> {
        crate::views::resolve(&self.batch, &self.views)
    }

    /// Refuses settings that cannot be meant: an empty token (which would
    /// make `Authorization: Bearer ` a valid credential).
    pub fn check(&self) -> Result<(), String> {
        if self.server.tokens.iter().any(|t| t.trim().is_empty()) {
            return Err("[server] tokens holds an empty token: remove it, or give a real one".into());
        }
        if self.log.segment_records == 0 {
            return Err("[log] segment_records must be at least 1".into());
        }
        self.archive.root(std::path::Path::new("."))?;
        self.warehouse.check(&self.views()?)?;
        self.opensearch.validate()?;
        let mut names = std::collections::HashSet::new();
        for alert in &self.alerts {
            alert.validate()?;
            if !names.insert(alert.name.as_str()) {
                return Err(format!("[[alerts]] {}: two alerts have this name", alert.name));
            }
        }
        if !self.alerts.is_empty() && !self.index.enabled {
            return Err("[[alerts]] search the index: they need [index] enabled = true".into());
        }
        Ok(())
    }

    /// Tokens from the config and from `CHORUS_TOKENS`.
    pub fn tokens(&self) -> Vec<String> {
        let mut tokens = self.server.tokens.clone();
        if let Ok(env) = std::env::var(TOKENS_ENV) {
            tokens.extend(
                env.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(String::from),
            );
        }
        tokens
    }
}

/// `chorus config example`: every key with its default and meaning.
pub const EXAMPLE: &str = r#"# chorus configuration. Every key is optional; shown with its default.
# Secrets (tokens, credentials) are better given in the environment.

[server]
# Address of the HTTP API (ingest, SQL, metrics).
listen = "127.0.0.1:7700"
# Bearer tokens accepted by the API, added to those in $CHORUS_TOKENS
# (comma-separated). With none, the API is open: allowed on loopback only.
tokens = []
# Largest request body in bytes; larger requests get 413.
max_body_bytes = 16777216
# Largest body of one post in bytes (on every path: API, chorus ingest,
# collectors); a larger post is a rejected line, the rest of its batch is
# still accepted.
max_post_bytes = 1048576
# While more raw posts than this wait for the enrich stage, ingest answers
# 429 with Retry-After instead of buffering (under a second of work on two
# cores: it bounds the delay from 202 to visible in SQL).
max_enrich_lag = 30000
# ... or while they would take enrichment longer than this (milliseconds)
# at the rate it was last seen to drain a backlog: the same bound on the
# delay where enrichment is slower (through a broker); 0 turns it off.
max_enrich_wait_ms = 1000
# Web pages of these origins (e.g. "https://dash.example.org") may call the
# API besides the server's own; a request with any other Origin gets 403.
# Without tokens, a Host that is not a loopback name or the listen address
# gets 403 too (DNS rebinding).
allowed_origins = []
# Connections open at once; seconds a client has to send a request's
# headers (also how long an idle kept-alive connection stays) and its body
# (else 408); seconds requests in flight get on shutdown.
max_connections = 1024
header_timeout_secs = 10
body_timeout_secs = 60
shutdown_grace_secs = 10
# Ingest bodies read and parsed at once (memory: this times max_body_bytes
# at most); one more gets 429 with Retry-After.
max_concurrent_ingest = 16

[log]
# "embedded": the log is in the data directory (log/). "kafka": its topics
# (posts.raw, posts.enriched, posts.dead) are on a Kafka-protocol broker;
# the stages' state goes to the compacted topic chorus.state and is kept in
# the data directory (state/). Kafka's own retention applies to the topics
# (retention_* below are the embedded log's). librdkafka
# properties, credentials among them, come from CHORUS_KAFKA_* variables
# (CHORUS_KAFKA_SASL_PASSWORD sets sasl.password).
backend = "embedded"
# With backend = "kafka": bootstrap servers, host:port[,host:port...].
brokers = "127.0.0.1:9092"
# With backend = "kafka": put before every topic and consumer group name.
topic_prefix = ""
# With backend = "kafka": replication factor of the topics chorus creates.
replication = 1
# With backend = "kafka": "json" writes each post as a JSON object of its
# columns, which any Kafka client reads, and reads posts other producers
# write to posts.raw as the ingest API would (canonical or platform JSON);
# "compact" is chorus's binary encoding (less CPU, only chorus reads it).
encoding = "json"
# Partitions per topic. Fixed when the data directory (or the Kafka topics)
# is created.
partitions = 4
# Records that every stage has processed are removed, a segment at a time,
# once older than this many hours (0: never)...
retention_hours = 168
# ...or while a topic partition holds more than this many bytes (0: no bound).
# Records a stage has not processed yet are never removed.
retention_bytes = 0
# Records per log segment (new segments), the unit that retention removes.
segment_records = 1048576
# Seconds between two retention passes.
retention_check_secs = 30
# Ingest answers 507 (Retry-After) while the data directory's disk has less
# free space than this, so the log never runs into a full disk; it resumes
# by itself once space is freed.
min_free_bytes = 268435456

[enrich]
# Worker threads; 0 means one per core.
workers = 0
# Raw posts enriched and written per log transaction.
batch = 2000
# Seconds a post is remembered so that its exact re-submission is dropped;
# 0: as long as the log keeps records ([log] retention_hours). Older
# entries are removed a step at a time.
seen_retention_secs = 0

[archive]
# Where the archive is (file:///an/absolute/directory); by default the data
# directory's archive/. Processes of one pipeline on one machine (or a shared
# file system) give the same url: `chorus run --roles serve` answers SQL from
# the files the process with the archive role writes.
# url = "file:///var/lib/chorus/archive"
# Parquet files roll when the posts buffered for them reach this size
# (bytes, all log partitions together, as one Firehose stream's buffer) or
# age (seconds), whichever comes first: Firehose's buffering hints.
max_file_bytes = 67108864
max_file_age_secs = 60
# Rows per Parquet row group, and the zstd level of its pages.
row_group_rows = 131072
zstd_level = 1
# In a bucket: url = "s3://bucket/prefix", and for an S3-compatible server
# endpoint = "http://127.0.0.1:9000" (with allow_http = true for plain
# http) and region; credentials from the AWS_* variables. One process
# writes a bucket: it holds a writer lease (the object .writer), renewed
# every third of lease_secs; a killed writer's lease may be taken over
# once lease_secs have passed unrenewed.
lease_secs = 30

[lifecycle]
# Every interval_secs `chorus run` compacts each hour partition of the
# archive that ended compact_after_secs ago and holds compact_min_files
# files or more into one file (a file a minute per log partition is ~170,000
# files a month for a query to open; compacted, 720). `chorus lifecycle`
# does a pass now. A query sees the old files or the new one, never both;
# the old ones are kept
# keep_retired_secs (at least the longest query or batch run) for the
# queries that listed them, then removed.
scheduler = true
interval_secs = 600
compact_after_secs = 3600
compact_min_files = 4
keep_retired_secs = 3600
# Retention: each pass removes the hour partitions of the archive (and the
# days of dead letters) that ended more than this many days ago; 0 keeps
# everything (index documents and log records have their own retention:
# [index] retention_days, [log] retention_hours).
archive_retention_days = 0
# For a bucket: `chorus lifecycle --s3-rules` prints S3 lifecycle rules that
# move the archive's objects to Standard-IA and then Glacier Instant
# Retrieval (still read in place) this many days after they were written
# (0: never), and expire them after archive_retention_days.
s3_infrequent_access_after_days = 0
s3_glacier_ir_after_days = 0

[index]
# The search index (GET /v1/search, chorus search, the dashboard), written
# from posts.enriched; false: no index, no search.
enabled = true
# A post is searchable at most this long (ms) after it is enriched while the
# index keeps up (500 keeps p99 from 202 to searchable under a second); while
# it catches up on a backlog it commits every second (or at this interval if
# longer), which indexes more posts/s.
commit_interval_ms = 500
# Documents are deleted this many days after they were ingested (0: never).
retention_days = 30
# Memory of the index writer (bytes, at least 15 MiB).
writer_memory_bytes = 67108864
# Seconds between two checks of the [[alerts]].
alert_check_secs = 10
# English stemming of the text (`running` finds `runs`). Changing it sets the
# index aside (DIR/index.other-schema-<time>) and builds a new one from the
# log.
stemming = false

[query]
# The bounds of one SQL query (`chorus sql`, POST /v1/sql). Memory of its
# sorts, joins and aggregates in bytes (past it they spill to DIR/tmp/query,
# up to max_spill_bytes, or the query fails):
max_memory = 536870912
max_spill_bytes = 4294967296
# Seconds before a query is cancelled with an error.
max_seconds = 30
# An answer holds at most this many rows and bytes; a longer result is cut
# and the answer says so ("truncated").
max_rows = 100000
max_result_bytes = 268435456
# Queries running at once; one more is answered 429.
max_concurrent = 4
# Longest SQL text (bytes) and deepest nesting of expressions.
max_sql_bytes = 65536
max_expression_depth = 256
# Largest value repeat(), lpad(), rpad(), replace(), regexp_replace() or
# array_repeat() may build, in bytes.
max_value_bytes = 16777216

[demo]
# Posts per second generated by `chorus demo`.
rate = 50

# Collectors `chorus run` starts, one [[sources]] table each (none by
# default). Credentials come from the environment only:
# REDDIT_CLIENT_ID, REDDIT_CLIENT_SECRET, and for a script app's password
# grant REDDIT_USERNAME and REDDIT_PASSWORD.
#
# [[sources]]
# kind = "reddit"
# subreddits = "politics+news"
# user_agent = "linux:chorus:0.1.0 (by /u/yourname)"   # required by Reddit
# auth_url = "https://www.reddit.com"
# api_url = "https://oauth.reddit.com"
# limit = 100                 # comments per poll (1..100)
# fill_gaps = false           # page back after a full page of unseen comments
# skip_existing = false       # first start: skip what is already there
# max_idle_secs = 16          # longest wait between polls when nothing is new
# seen_capacity = 10000       # recent fullnames remembered to drop repeats
# request_timeout_secs = 30
#
# [[sources]]
# kind = "hackernews"
# api_url = "https://hacker-news.firebaseio.com/v0"
# poll_secs = 5               # seconds between maxitem polls
# concurrency = 8             # items fetched at once
# backfill = 0                # first start: also fetch this many older items
# request_timeout_secs = 30
#
# [[sources]]
# kind = "mastodon"           # token in MASTODON_TOKEN
# instance = "https://mastodon.social"
# stream = "public"           # public, public/local, hashtag?tag=rust, user
# read_timeout_secs = 90      # a stream silent this long is dropped and resumed
#
# [[sources]]
# kind = "bluesky"
# url = "wss://jetstream2.us-east.bsky.network/subscribe"
# langs = []                  # keep posts with one of these languages (e.g. ["en"])
# keywords = []               # keep only posts containing one of these words
# overlap_secs = 5            # seconds asked again on reconnect (duplicates dropped)
# read_timeout_secs = 60      # a connection silent this long is dropped and resumed

# Saved-search alerts (none by default), checked every [index] alert_check_secs:
# [[alerts]]
# name = "quakes"
# q = "earthquake OR tsunami" # search syntax; community, platform, author filter too
# window_secs = 600           # the posts created in the last 10 minutes
# min_count = 50              # breach at 50 matching posts...
# # max_negative_share = 0.6  # ...or (instead) at 60 % negative, from min_posts posts
# # min_posts = 10
# webhook = "http://127.0.0.1:9000/hook"   # the breach is POSTed here as JSON

[batch]
# Batch views (the reference's nightly Redshift SQL): by_location,
# by_community_hour and by_author_day are built in, and [[views]] adds more.
# When views without their own schedule run: cron, five fields, UTC.
schedule = "0 0 * * *"
built_in_views = true
# Whether `chorus run` runs them on schedule (a run missed while chorus was
# down runs at start); `chorus batch` runs them now either way.
scheduler = true
# Views whose aggregates merge (count, sum, avg over posts_latest, grouped)
# are kept up to the second between runs (the speed layer). Off, a view is
# served as of its last run. It costs about 25 us of CPU per post today
# (scripts/bench_pipeline.sh), hence off by default.
speed_layer = false
# Seconds a replaced version stays on disk for the queries still reading it.
keep_replaced_secs = 600
# Memory of one run's sorts and aggregates (past it they spill), and its
# time limit in seconds.
max_memory = 1073741824
max_seconds = 3600

# More views, one [[views]] table each (served as views.<name> in SQL and at
# GET /v1/views/<name>); a built-in name changes that view's sql or schedule:
# [[views]]
# name = "negative_by_community"
# sql = "SELECT community, count(*) AS posts, sum(CASE WHEN sentiment = 'negative' THEN 1 ELSE 0 END) AS negative FROM posts_latest GROUP BY community"
# schedule = "@hourly"

[warehouse]
# Posts and batch views copied into PostgreSQL (the reference's Redshift):
# <schema>.posts, one row per post (merged by platform and id, the newest
# ingested_at winning), and a table per view, replaced after each run. Off
# until a URL is set; the password comes from $PGPASSWORD, never the URL.
# url = "postgres://chorus@127.0.0.1:5432/analytics"
schema = "chorus"
# Posts merged in one transaction at most, and the longest a post waits, ms.
batch_rows = 20000
flush_ms = 1000
# While the database is unreachable: retries with backoff up to this many
# seconds apart (nothing is committed meanwhile: the log keeps the posts).
max_backoff_secs = 30
# Longest one attempt (connect, copy, merge) may take, seconds.
attempt_timeout_secs = 300
# Whether the batch views are exported after each run.
views = true

[opensearch]
# Posts delivered to an OpenSearch (or Elasticsearch) cluster through _bulk,
# as the reference's Firehose did: one document per post (_id
# "<platform>:<id>", versioned by ingested_at, so a replay or a late older
# version never duplicates or overwrites), in the index of its creation
# time. Off until a URL is set; basic authentication from
# $CHORUS_OPENSEARCH_USERNAME and $CHORUS_OPENSEARCH_PASSWORD.
# url = "https://search-chorus-abc123.us-east-1.es.amazonaws.com"
index = "chorus-posts"
# The index name's suffix: "none", "hour" (-YYYY.MM.DD-HH), "day"
# (-YYYY.MM.DD), "week" (-YYYY-wWW) or "month" (-YYYY.MM).
rotation = "day"
# A bulk request holds at most this many documents and bytes; a batch goes
# at least every flush_ms while posts arrive.
batch_docs = 1000
batch_bytes = 5242880
flush_ms = 1000
# Longest one request may take (seconds), and the longest pause between
# retries while the cluster is unreachable or busy (nothing is committed
# meanwhile: the log keeps the posts).
timeout_secs = 30
max_backoff_secs = 30
# An index template with the mapping of the columns is put at start.
template = true
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_parses_to_the_defaults() {
        let parsed = Config::parse(EXAMPLE, Path::new("example.toml")).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn sources_parse_with_defaults_and_refuse_unknown_keys() {
        let text = "[[sources]]\nkind = \"reddit\"\nsubreddits = \"politics+news\"\nfill_gaps = true\n";
        let parsed = Config::parse(text, Path::new("c.toml")).unwrap();
        let crate::sources::SourceConfig::Reddit(reddit) = &parsed.sources[0] else {
            panic!("not a reddit source: {:?}", parsed.sources[0]);
        };
        assert_eq!(reddit.subreddits, "politics+news");
        assert!(reddit.fill_gaps);
        assert_eq!(reddit.limit, 100);
        let bad = "[[sources]]\nkind = \"reddit\"\nsubreddit = \"politics\"\n";
        let err = Config::parse(bad, Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.contains("c.toml") && err.contains("subreddit"), "{err}");
        let unknown = "[[sources]]\nkind = \"myspace\"\n";
        assert!(Config::parse(unknown, Path::new("c.toml")).is_err());
    }

    #[test]
    fn an_unknown_key_names_the_file_and_line() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n\n[archive]\nmax_file_byte = 5\n";
        let err = Config::parse(text, Path::new("/etc/chorus.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("/etc/chorus.toml: line 5: unknown field `max_file_byte`"),
            "{err}"
        );
        let err = Config::parse("[sever]\n", Path::new("c.toml")).unwrap_err().to_string();
        assert!(err.starts_with("c.toml: line 1: unknown field `sever`"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_an_error() {
        let err = Config::parse("[log]\npartitions = \"four\"\n", Path::new("c.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("c.toml: line 2:"), "{err}");
    }
}
