#!/usr/bin/env bash
# The index sink on its own, on ONE core: fills a fresh log with POSTS
# enriched Reddit comments, then times the index sink (examples/bench_index.rs)
# draining it with [index]'s defaults. Prints posts/s and CPU per post.
#
# Usage: scripts/bench_index.sh [POSTS]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
POSTS="${1:-1000000}"
cargo build --release --quiet --example bench_index
taskset -c 0 "$CARGO_TARGET_DIR/release/examples/bench_index" "$POSTS"
