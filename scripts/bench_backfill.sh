#!/usr/bin/env bash
# Backfill benchmark: generates a Pushshift-style RC dump of LINES comment
# lines (.zst, 2^31 window; examples/make_dump.rs), then times
# `chorus ingest` of it into a fresh data directory (no server: the log,
# then enrich and archive until drained). Reports the ingest rate (read,
# mapped and durably appended) and the wall time until everything is
# enriched and archived.
#
# Usage: scripts/bench_backfill.sh [LINES]   (default 1000000)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
LINES="${1:-1000000}"
cargo build --release --quiet --bin chorus --example make_dump
BIN="$CARGO_TARGET_DIR/release/chorus"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$CARGO_TARGET_DIR/release/examples/make_dump" "$DIR/RC_2019-01.zst" "$LINES"
echo "bench: dump of $LINES lines, $(du -h "$DIR/RC_2019-01.zst" | cut -f1) compressed" >&2
START=$(date +%s.%N)
"$BIN" --data "$DIR/data" ingest "$DIR/RC_2019-01.zst"
END=$(date +%s.%N)
python3 - "$START" "$END" "$LINES" <<'PY'
import sys
start, end, lines = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"until enriched and archived: {end - start:.1f} s, {lines / (end - start):,.0f} posts/s end to end")
PY
"$BIN" --data "$DIR/data" sql "SELECT count(*) AS posts, count(DISTINCT community) AS communities FROM posts"
