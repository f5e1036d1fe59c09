//! chorus's one integration-test binary; a module per area.

mod adversarial_bodies;
mod alerts;
mod collect;
mod collectors;
mod dashboard;
mod hardening;
mod kafka;
mod lifecycle;
mod mapping;
mod objects;
mod opensearch;
mod pipeline;
mod reddit;
mod replay;
mod score_cli;
mod search;
mod sentiment_golden;
mod server;
mod views;
mod warehouse;

use std::path::PathBuf;

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
