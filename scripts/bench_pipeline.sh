#!/usr/bin/env bash
# Pipeline benchmark: starts `chorus run` (release) on a fresh data
# directory, sends POSTS posts (corpus texts, replicated) in NDJSON batches
# of 1,000 over HTTP from another process (examples/bench_ingest.rs), and
# reports posts/s until all are in `posts`, p50/p99 from 202 to visible in
# SQL, posts/s until all are searchable too (`searchable_posts_per_second`:
# the index, which SQL does not wait for, has caught up), and the server's
# peak RSS.
#
# Usage: scripts/bench_pipeline.sh [POSTS] [CONCURRENCY]   (default 1000000, 4)
# Extra TOML for the server can be given in $CHORUS_BENCH_CONFIG (e.g.
# [log] backend = "kafka" with the brokers of a running broker); another
# server binary (to compare two builds) in $CHORUS_BIN. With
# $CHORUS_BENCH_HELPER_ROLES (e.g. "enrich", on Kafka) a second process with
# only those roles runs beside it, in the same consumer groups. With
# $CHORUS_BENCH_READER_ROLES (e.g. "serve", on Kafka) the server runs
# ingest,enrich,archive,index only and the SQL probes go to a process of its
# own with those roles, sharing the server's archive through [archive] url.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
POSTS="${1:-1000000}"
CONCURRENCY="${2:-4}"
cargo build --release --quiet --bin chorus --example bench_ingest
BIN="${CHORUS_BIN:-$CARGO_TARGET_DIR/release/chorus}"
. scripts/server.sh
CONFIG="${CHORUS_BENCH_CONFIG:-}"
if [ -n "${CHORUS_BENCH_READER_ROLES:-}" ]; then
    CONFIG="$CONFIG"$'\n[archive]\nurl = "file://@DIR@/data/archive"'
fi
start_server "$BIN" "$CONFIG" ${CHORUS_BENCH_READER_ROLES:+--roles ingest,enrich,archive,index}
QUERY_URL="http://$ADDR"
if [ -n "${CHORUS_BENCH_READER_ROLES:-}" ]; then
    start_reader "$BIN" "$CHORUS_BENCH_READER_ROLES"
    QUERY_URL="http://$READER_ADDR"
    echo "bench: SQL from a second process with --roles $CHORUS_BENCH_READER_ROLES at $QUERY_URL" >&2
fi
if [ -n "${CHORUS_BENCH_HELPER_ROLES:-}" ]; then
    start_helper "$BIN" "$CHORUS_BENCH_HELPER_ROLES"
    echo "bench: a second process with --roles $CHORUS_BENCH_HELPER_ROLES beside the server" >&2
fi
echo "bench: $POSTS posts to http://$ADDR, concurrency $CONCURRENCY" >&2
CHORUS_BENCH_QUERY_URL="$QUERY_URL" "$CARGO_TARGET_DIR/release/examples/bench_ingest" "http://$ADDR" "$POSTS" 1000 "$CONCURRENCY"
echo "server peak RSS: $(grep VmHWM /proc/$PID/status | awk '{print $2/1024 " MiB"}')"
# CPU the server used (user + system), less sensitive than wall time to
# what else the shared machine runs.
TICKS="$(getconf CLK_TCK)"
awk -v t="$TICKS" -v n="$POSTS" '{cpu = ($14 + $15) / t; printf "server CPU: %.1f s, %.1f us per post\n", cpu, cpu * 1e6 / n}' "/proc/$PID/stat"
if [ -n "${HELPER_PID:-}" ]; then
    awk -v t="$TICKS" -v n="$POSTS" '{cpu = ($14 + $15) / t; printf "second process CPU: %.1f s, %.1f us per post\n", cpu, cpu * 1e6 / n}' "/proc/$HELPER_PID/stat"
fi
if [ -n "${READER_PID:-}" ]; then
    awk -v t="$TICKS" -v n="$POSTS" '{cpu = ($14 + $15) / t; printf "query process CPU: %.1f s, %.1f us per post\n", cpu, cpu * 1e6 / n}' "/proc/$READER_PID/stat"
    echo "query process peak RSS: $(grep VmHWM /proc/$READER_PID/status | awk '{print $2/1024 " MiB"}')"
fi
# (With [log] backend = "kafka" the log is on the broker: no log/ here.)
echo "data directory: $(du -sh "$DIR/data/log" 2>/dev/null | cut -f1) log, $(du -sh "$DIR/data/archive" | cut -f1) archive"
# CPU by thread (the stages' threads are named: enrich-N, archive, index,
# speed, tantivy's, tokio's), per post.
echo "server CPU by thread:"
for t in /proc/$PID/task/*; do
    # A thread may exit while this runs: skip it.
    name="$(tr ' ' '_' 2>/dev/null < "$t/comm")" || continue
    ticks="$(awk '{print $14 + $15}' 2>/dev/null < "$t/stat")" || continue
    echo "$name $ticks"
done | awk -v t="$TICKS" -v n="$POSTS" '{ sub(/-[0-9]+$/, "", $1); cpu[$1] += $2 }
    END { for (k in cpu) if (cpu[k] > 0) printf "  %-18s %7.1f s %7.2f us per post\n", k, cpu[k] / t, cpu[k] / t * 1e6 / n }' | sort -k2 -rn
kill -TERM "$PID"
wait "$PID" || true
