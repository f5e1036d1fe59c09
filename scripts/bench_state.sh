#!/usr/bin/env bash
# The enrich stage's seen-state after POSTS posts: starts `chorus run`
# (release) on a fresh data directory with the extra TOML in $2, sends POSTS
# posts with examples/bench_ingest, waits WAIT seconds (for the expiry
# sweep), prints the state's metrics, stops the server and counts the
# stopped directory's state with examples/state_size.
#
# Usage: scripts/bench_state.sh [POSTS] [TOML] [WAIT]   (default 5000000, "", 5)
# e.g.   scripts/bench_state.sh 5000000 $'[enrich]\nseen_retention_secs = 20' 45
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
POSTS="${1:-5000000}"
WAIT="${3:-5}"
cargo build --release --quiet --bin chorus --example bench_ingest --example state_size
T="$CARGO_TARGET_DIR/release"
. scripts/server.sh
start_server "$T/chorus" "${2:-}"
"$T/examples/bench_ingest" "http://$ADDR" "$POSTS" 1000 4 | tail -1
sleep "$WAIT"
curl -s "http://$ADDR/metrics" | grep -E "^chorus_(state_bytes|enrich_seen_expired_total)"
kill -TERM "$PID"
wait "$PID" || true
"$T/examples/state_size" "$DIR/data"
