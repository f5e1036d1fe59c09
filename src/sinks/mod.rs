//! Where enriched posts go.

pub mod archive;
pub mod consume;
pub mod index;
pub mod opensearch;
