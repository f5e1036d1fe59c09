//! Stages that read one topic and write another.

pub mod enrich;
