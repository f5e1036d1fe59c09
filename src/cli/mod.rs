//! The commands of the `chorus` binary, each a function over explicit
//! input and output streams so that tests can drive them.

pub mod ingest;
pub mod score;
pub mod serve;
pub mod status;
pub mod tail;
