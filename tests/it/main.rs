//! chorus's one integration-test binary; a module per area.

mod score_cli;
mod sentiment_golden;

use std::path::PathBuf;

/// A file under `tests/fixtures/`.
pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
