#!/usr/bin/env bash
# Backfill benchmark: generates a Pushshift-style RC dump of LINES comment
# lines (.zst, 2^31 window; examples/make_dump.rs), then times
# `chorus ingest` of it into a fresh data directory (no server: the log,
# then enrich and archive until drained). Reports the ingest rate (read,
# mapped and durably appended) and the wall time until everything is
# enriched and archived. Then the archive's lifecycle on what the backfill
# wrote: three queries (whole `chorus sql` processes, best of
# $CHORUS_BENCH_ROUNDS, default 3) on the files as ingested, the compaction
# of every hour (`chorus lifecycle`, timed), the same queries again.
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
# Every closed hour with two files or more is compacted by the pass below.
printf '[lifecycle]\nscheduler = false\ncompact_after_secs = 0\ncompact_min_files = 2\n' > "$DIR/chorus.toml"
START=$(date +%s.%N)
"$BIN" --data "$DIR/data" --config "$DIR/chorus.toml" ingest "$DIR/RC_2019-01.zst"
END=$(date +%s.%N)
python3 - "$START" "$END" "$LINES" <<'PY'
import sys
start, end, lines = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
print(f"until enriched and archived: {end - start:.1f} s, {lines / (end - start):,.0f} posts/s end to end")
PY
"$BIN" --data "$DIR/data" --config "$DIR/chorus.toml" sql "SELECT count(*) AS posts, count(DISTINCT community) AS communities FROM posts"

ROUNDS="${CHORUS_BENCH_ROUNDS:-3}"
QUERIES=(
    "SELECT count(*) FROM posts"
    "SELECT community, count(*), avg(vader_compound) FROM posts GROUP BY community"
    "SELECT count(*) FROM posts_latest WHERE sentiment = 'negative'"
)
# Best of ROUNDS wall times of a whole `chorus sql` process, in seconds.
time_queries() {
    for q in "${QUERIES[@]}"; do
        best=""
        for _ in $(seq "$ROUNDS"); do
            t0=$(date +%s.%N)
            "$BIN" --data "$DIR/data" --config "$DIR/chorus.toml" sql --format csv "$q" > /dev/null
            t1=$(date +%s.%N)
            best=$(python3 -c "import sys; a=float(sys.argv[2])-float(sys.argv[1]); b=sys.argv[3]; print(a if b=='' else min(a, float(b)))" "$t0" "$t1" "$best")
        done
        printf '  %-80s %6.3f s\n' "$q" "$best"
    done
}
files() { find "$DIR/data/archive/posts" -name '*.parquet' | wc -l; }
echo "queries on the archive as ingested ($(files) files), best of $ROUNDS:"
time_queries
t0=$(date +%s.%N)
"$BIN" --data "$DIR/data" --config "$DIR/chorus.toml" lifecycle
t1=$(date +%s.%N)
python3 -c "import sys; print(f'compaction (chorus lifecycle): {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$t0" "$t1"
echo "queries on the compacted archive ($(files) files), best of $ROUNDS:"
time_queries
