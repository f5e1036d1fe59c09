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
//! * [`cli`]: the command-line commands, each a function the thin binary calls.

pub mod cli;
pub mod enrich;
pub mod log;
pub mod record;
