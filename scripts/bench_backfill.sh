#!/usr/bin/env bash
# Backfill benchmark: generates a Pushshift-style RC dump of LINES comment
# lines (.zst, 2^31 window; examples/make_dump.rs), then times
# `chorus ingest` of it into a fresh data directory (no server: the log,
# then enrich and archive until drained). Reports the ingest rate (read,
# mapped and durably appended), the wall time until everything is
# enriched and archived (chorus says when; a backfill runs the index at the
# lowest priority, so the time until the process exits, the index caught
# up, is reported too), and the process's peak RSS, beside that of zstd's
# own decoder over the same file. Then the archive's
# lifecycle on what the backfill wrote: three queries (whole `chorus sql` processes, best of
# $CHORUS_BENCH_ROUNDS, default 3) on the files as ingested, the compaction
# of every hour (`chorus lifecycle`, timed), the same queries again.
#
# The same run is then made with the archive in a bucket of an
# S3-compatible server (s3s-fs on this machine, over a directory of the
# same disk: what the S3 protocol and the server cost, not a network) when
# $CHORUS_BENCH_S3S names its binary (scripts/test.sh builds it into
# ~/.cache/chorus/s3s/bin/s3s-fs, the default); CHORUS_BENCH_S3S=none
# skips it.
#
# $CHORUS_BENCH_CONFIG is added to both runs' config (e.g.
# $'[index]\nenabled = false').
#
# Usage: scripts/bench_backfill.sh [LINES [SPAN_SECS]]
#   (default 1000000 lines over one month; 10000000 259200 is 10M over
#   three days, the density of a real month's dump)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
LINES="${1:-1000000}"
SPAN="${2:-2678400}"
cargo build --release --quiet --bin chorus --example make_dump
BIN="$CARGO_TARGET_DIR/release/chorus"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT
"$CARGO_TARGET_DIR/release/examples/make_dump" "$DIR/RC_2019-01.zst" "$LINES" "$SPAN"
echo "bench: dump of $LINES lines, $(du -h "$DIR/RC_2019-01.zst" | cut -f1) compressed" >&2
# What the dump's format alone asks of memory: zstd's own decoder over the
# same file (its window, 2 GiB for --long=31 dumps, is resident in any
# decoder once the output is past it).
if command -v zstd > /dev/null; then
    /usr/bin/time -f "zstd -d alone: peak RSS %M KB, %e s" \
        zstd -dcq --long=31 --memory=2048MB "$DIR/RC_2019-01.zst" > /dev/null
fi
S3S="${CHORUS_BENCH_S3S:-$HOME/.cache/chorus/s3s/bin/s3s-fs}"
ROUNDS="${CHORUS_BENCH_ROUNDS:-3}"
QUERIES=(
    "SELECT count(*) FROM posts"
    "SELECT community, count(*), avg(vader_compound) FROM posts GROUP BY community"
    "SELECT count(*) FROM posts_latest WHERE sentiment = 'negative'"
)

# One backfill into $DIR/$1 with the [archive] table $2; its post files
# are counted under $3.
backfill() {
    local data="$DIR/$1" archive="$2" posts="$3"
    # Every closed hour with two files or more is compacted by the pass below.
    printf '%s\n[lifecycle]\nscheduler = false\ncompact_after_secs = 0\ncompact_min_files = 2\n%s\n' \
        "$archive" "${CHORUS_BENCH_CONFIG:-}" > "$data.toml"
    # The ingest, timed from outside: when it says everything read is in
    # the archive (queryable by SQL; a backfill runs the index at the
    # lowest priority, after), when it exits (the index caught up too),
    # and its peak RSS.
    python3 - "$LINES" "$BIN" --data "$data" --config "$data.toml" ingest "$DIR/RC_2019-01.zst" <<'PY'
import resource, subprocess, sys, time
lines, command = int(sys.argv[1]), sys.argv[2:]
start = time.time()
archived = None
child = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
for line in child.stderr:
    sys.stderr.write(line)
    if "everything read is in the archive" in line:
        archived = time.time() - start
if child.wait() != 0:
    sys.exit(f"chorus ingest failed ({child.returncode})")
end = time.time() - start
archived = archived or end
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(f"until enriched and archived: {archived:.1f} s, {lines / archived:,.0f} posts/s end to end")
print(f"until the process exited (the index caught up too): {end:.1f} s, {lines / end:,.0f} posts/s")
print(f"chorus ingest: peak RSS {peak:,.0f} MiB")
PY
    "$BIN" --data "$data" --config "$data.toml" sql "SELECT count(*) AS posts, count(DISTINCT community) AS communities FROM posts"
    # Best of ROUNDS wall times of a whole `chorus sql` process, in seconds.
    time_queries() {
        for q in "${QUERIES[@]}"; do
            best=""
            for _ in $(seq "$ROUNDS"); do
                t0=$(date +%s.%N)
                "$BIN" --data "$data" --config "$data.toml" sql --format csv "$q" > /dev/null
                t1=$(date +%s.%N)
                best=$(python3 -c "import sys; a=float(sys.argv[2])-float(sys.argv[1]); b=sys.argv[3]; print(a if b=='' else min(a, float(b)))" "$t0" "$t1" "$best")
            done
            printf '  %-80s %6.3f s\n' "$q" "$best"
        done
    }
    files() { find "$posts" -name '*.parquet' | wc -l; }
    echo "queries on the archive as ingested ($(files) files), best of $ROUNDS:"
    time_queries
    local t0 t1
    t0=$(date +%s.%N)
    "$BIN" --data "$data" --config "$data.toml" lifecycle
    t1=$(date +%s.%N)
    python3 -c "import sys; print(f'compaction (chorus lifecycle): {float(sys.argv[2]) - float(sys.argv[1]):.1f} s')" "$t0" "$t1"
    echo "queries on the compacted archive ($(files) files), best of $ROUNDS:"
    time_queries
}

echo "== the archive on local disk" >&2
backfill disk "[archive]" "$DIR/disk/archive/posts"

if [ "$S3S" != none ]; then
    echo "== the archive in a bucket of s3s-fs ($S3S)" >&2
    mkdir -p "$DIR/objects/lake"
    PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "$S3S" --host 127.0.0.1 --port "$PORT" --access-key bench --secret-key bench-secret "$DIR/objects" \
        > "$DIR/s3s.log" 2>&1 &
    S3S_PID=$!
    trap 'kill $S3S_PID 2>/dev/null; rm -rf "$DIR"' EXIT
    for _ in $(seq 100); do
        python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $PORT), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
    export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret
    backfill s3 "$(printf '[archive]\nurl = "s3://lake/chorus"\nendpoint = "http://127.0.0.1:%s"\nallow_http = true' "$PORT")" \
        "$DIR/objects/lake/chorus/posts"
fi
