#!/usr/bin/env bash
# Search benchmarks on a fresh `chorus run` (release, index on):
#
#   scripts/bench_search.sh searchable [RATE] [SECONDS]   (default 10000 60)
#     sends RATE posts/s for SECONDS and reports p50/p99 from 202 to the post
#     being a search hit (examples/bench_search.rs).
#   scripts/bench_search.sh latency [POSTS] [ROUNDS]      (default 10000000 100)
#     ingests POSTS (examples/bench_ingest.rs), waits until all are indexed,
#     then times a word, a phrase and a filter-only search, ROUNDS each.
#
# Extra TOML for the server in $CHORUS_BENCH_CONFIG; another binary in $CHORUS_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
MODE="${1:-searchable}"
cargo build --release --quiet --bin chorus --example bench_search --example bench_ingest
BIN="${CHORUS_BIN:-$CARGO_TARGET_DIR/release/chorus}"
. scripts/server.sh
start_server "$BIN" "${CHORUS_BENCH_CONFIG:-}"
case "$MODE" in
    searchable)
        "$CARGO_TARGET_DIR/release/examples/bench_search" searchable "http://$ADDR" "${2:-10000}" "${3:-60}"
        ;;
    latency)
        POSTS="${2:-10000000}"
        "$CARGO_TARGET_DIR/release/examples/bench_ingest" "http://$ADDR" "$POSTS" 1000 4 >&2
        # Every post (and the probes of bench_ingest) in the index.
        until python3 - "$ADDR" "$POSTS" <<'PY'
import json, sys, urllib.request
status = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/v1/status"))
sys.exit(0 if status["index"]["documents"] >= int(sys.argv[2]) else 1)
PY
        do sleep 1; done
        "$CARGO_TARGET_DIR/release/examples/bench_search" latency "http://$ADDR" "${3:-100}"
        echo "index on disk: $(du -sh "$DIR/data/index" | cut -f1)"
        ;;
    *) echo "usage: $0 searchable [RATE] [SECONDS] | latency [POSTS] [ROUNDS]" >&2; exit 2 ;;
esac
echo "server peak RSS: $(grep VmHWM /proc/$PID/status | awk '{print $2/1024 " MiB"}')"
kill -TERM "$PID"
wait "$PID" || true
