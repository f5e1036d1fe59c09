//! chorus: collect social-media comments, score their sentiment, keep them
//! all, and query them.
//!
//! Modules, in the direction dependencies point:
//!
//! * [`record`]: the canonical post record, its column names, and the
//!   validation of submitted posts.
//! * [`log`]: the durable, partitioned log between stages (embedded fjall
//!   engine; the seam for Kafka).
//! * [`enrich`]: text cleanup and the TextBlob- and VADER-identical
//!   analyzers (pure, no I/O).
//! * [`mapping`]: raw platform JSON (Reddit comments, tweets) onto the record.
//! * [`transforms`]: the enrich stage (`posts.raw` → `posts.enriched`).
//! * [`sinks`]: the archive (Parquet, Hive partitions).
//! * [`sources`]: where posts come from besides the HTTP API (the demo generator).
//! * [`query`]: SQL over the archive and the log's tail (DataFusion).
//! * [`views`]: the batch layer: scheduled SQL views, versioned on disk.
//! * [`warehouse`]: the export of posts and views to PostgreSQL/Redshift.
//! * [`wire`]: the bodies of HTTP answers and the stored dead letters,
//!   shared by `http`, `cli` and `sources`.
//! * [`http`]: the HTTP API.
//! * [`alerts`]: saved searches that breach thresholds, with webhooks.
//! * [`config`], [`metrics`]: configuration and counters.
//! * [`consumers`]: the registry of the stages that read the log.
//! * [`topology`]: the one module that wires the components together.
//! * [`cli`]: the command-line commands, each a function the thin binary calls.

pub mod alerts;
pub mod cli;
pub mod config;
pub mod consumers;
pub mod dashboard;
pub mod enrich;
pub mod http;
pub mod lifecycle;
pub mod log;
pub mod mapping;
pub mod metrics;
pub mod priority;
pub mod query;
pub mod record;
pub mod sinks;
pub mod sources;
#[doc(hidden)]
pub mod testing;
pub mod topology;
pub mod transforms;
pub mod views;
pub mod warehouse;
pub mod wire;
