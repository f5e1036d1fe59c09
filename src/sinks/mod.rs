//! Where enriched posts go.

pub mod archive;
