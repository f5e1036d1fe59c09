#!/usr/bin/env bash
# chorus on Kafka against what the broker itself sustains, in one run.
# Each part gets a fresh tansu 0.6.0 broker (sqlite engine) in a temporary
# directory, on the same machine:
#
#   1. produce only: a plain idempotent rdkafka producer writes POSTS raw
#      records (what the broker takes in);
#   2. the plain pipeline (examples/bench_kafka_plain.rs): the same records
#      through two topics as chorus's stages move them, a relay and a sink
#      in consumer groups, offsets committed after the output is durable;
#   3. chorus: `chorus run` with `[log] backend = "kafka"` and
#      scripts/bench_pipeline.sh (posts over HTTP until visible in SQL);
#   4. the same with a second process, `chorus run --roles enrich`, in the
#      enrich consumer group (two enrich processes split the partitions);
#   5. the server without serve (`--roles ingest,enrich,archive,index`) and
#      SQL from a process of its own (`--roles serve`) over the shared
#      archive and the log's tail.
#
# It prints each part's figures and the CPU the broker used for it.
#
# Usage: scripts/bench_kafka.sh [POSTS] [ENCODING]   (default 100000, json)
# CHORUS_BENCH_PARTS picks parts by name: produce plain chorus enrich2 serve
# (default: all), e.g. to compare builds or settings on one part.
# The broker binary comes from $CHORUS_TEST_TANSU or ~/.cache/chorus/tansu
# (scripts/test.sh builds it there).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
POSTS="${1:-100000}"
ENCODING="${2:-json}"
TANSU="${CHORUS_TEST_TANSU:-$HOME/.cache/chorus/tansu/bin/tansu}"
if [ ! -x "$TANSU" ]; then
    echo "bench_kafka: no tansu broker at $TANSU (scripts/test.sh builds it)" >&2
    exit 1
fi
cargo build --release --quiet --bin chorus --example bench_ingest --example bench_kafka_plain
TICKS="$(getconf CLK_TCK)"
PARTS=" ${CHORUS_BENCH_PARTS:-produce plain chorus enrich2 serve} "
part() { [[ "$PARTS" == *" $1 "* ]]; }
WORK="$(mktemp -d)"
BROKER_PID=""
trap '[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null; rm -rf "$WORK"' EXIT

start_broker() {
    local dir="$WORK/$1"
    mkdir -p "$dir"
    PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    (cd "$dir" && exec "$TANSU" broker --listener-url "tcp://127.0.0.1:$PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$PORT" \
        --storage-engine sqlite://tansu.db >"$dir/broker.log" 2>&1) &
    BROKER_PID=$!
    for _ in $(seq 100); do
        (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
        sleep 0.1
    done
    BROKER_START="$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")"
}

stop_broker() {
    local ticks
    ticks="$(awk '{print $14 + $15}' "/proc/$BROKER_PID/stat")"
    awk -v a="$BROKER_START" -v b="$ticks" -v t="$TICKS" -v n="$POSTS" -v what="$1" \
        'BEGIN { cpu = (b - a) / t; printf "%s: broker CPU %.1f s, %.0f us per post\n", what, cpu, cpu * 1e6 / n }'
    kill "$BROKER_PID"
    wait "$BROKER_PID" 2>/dev/null || true
    BROKER_PID=""
}

if part produce; then
    start_broker produce
    "$CARGO_TARGET_DIR/release/examples/bench_kafka_plain" "127.0.0.1:$PORT" "$POSTS" 4 "" --produce-only
    stop_broker "produce only"
fi

if part plain; then
    start_broker plain
    "$CARGO_TARGET_DIR/release/examples/bench_kafka_plain" "127.0.0.1:$PORT" "$POSTS" 4
    stop_broker "plain pipeline"
fi

chorus_config() {
    printf '[log]\nbackend = "kafka"\nbrokers = "127.0.0.1:%s"\nencoding = "%s"\n' "$PORT" "$ENCODING"
}

if part chorus; then
    start_broker chorus
    CHORUS_BENCH_CONFIG="$(chorus_config)" scripts/bench_pipeline.sh "$POSTS"
    stop_broker "chorus"
fi

if part enrich2; then
    start_broker chorus-2-enrich
    CHORUS_BENCH_CONFIG="$(chorus_config)" CHORUS_BENCH_HELPER_ROLES=enrich scripts/bench_pipeline.sh "$POSTS"
    stop_broker "chorus, 2 enrich processes"
fi

if part serve; then
    start_broker chorus-reader
    CHORUS_BENCH_CONFIG="$(chorus_config)" CHORUS_BENCH_READER_ROLES=serve scripts/bench_pipeline.sh "$POSTS"
    stop_broker "chorus, SQL in a process of its own"
fi
