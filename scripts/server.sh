# Sourced by the benchmark scripts: start_server BIN TOML [ARGS…] starts
# `BIN run [ARGS…]` on a fresh data directory under a new $DIR with the
# extra configuration TOML, waits for its server.json and sets PID and ADDR;
# the server is killed and $DIR removed when the script exits (moved to
# $CHORUS_BENCH_KEEP instead when that is set, to look at or reuse).
# start_helper BIN ROLES then starts a second process with the same
# configuration and only ROLES (`run --roles`), on its own data directory
# $DIR/helper, and waits until its consumer group gave it a partition.
start_server() {
    DIR="$(mktemp -d)"
    HELPER_PID=""
    READER_PID=""
    trap 'kill $PID $HELPER_PID $READER_PID 2>/dev/null || true; wait $PID $HELPER_PID $READER_PID 2>/dev/null || true; if [ -n "${CHORUS_BENCH_KEEP:-}" ]; then mv "$DIR" "$CHORUS_BENCH_KEEP"; else rm -rf "$DIR"; fi' EXIT
    # @DIR@ in the configuration stands for this directory.
    printf '%s\n' "${2//@DIR@/$DIR}" > "$DIR/chorus.toml"
    "$1" --data "$DIR/data" --config "$DIR/chorus.toml" run --listen 127.0.0.1:0 "${@:3}" 2> "$DIR/server.log" &
    PID=$!
    for _ in $(seq 100); do
        [ -f "$DIR/data/server.json" ] && break
        sleep 0.1
    done
    ADDR="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$DIR/data/server.json")"
}

# start_reader BIN ROLES starts a process with only ROLES (say "serve") on
# its own data directory $DIR/reader, and sets READER_ADDR when it listens.
start_reader() {
    "$1" --data "$DIR/reader" --config "$DIR/chorus.toml" run --listen 127.0.0.1:0 --roles "$2" 2> "$DIR/reader.log" &
    READER_PID=$!
    for _ in $(seq 300); do
        [ -f "$DIR/reader/server.json" ] && break
        kill -0 "$READER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if [ ! -f "$DIR/reader/server.json" ]; then
        echo "the --roles $2 process did not start:" >&2
        tail -20 "$DIR/reader.log" >&2
        return 1
    fi
    READER_ADDR="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["address"])' "$DIR/reader/server.json")"
}

start_helper() {
    "$1" --data "$DIR/helper" --config "$DIR/chorus.toml" run --listen 127.0.0.1:0 --roles "$2" 2> "$DIR/helper.log" &
    HELPER_PID=$!
    for _ in $(seq 600); do
        # A partition, not the empty assignment an eager rebalance may
        # hand a member first (the log may hold colour codes).
        grep -q "Partitions assigned.*partitions.*\[[0-9]" "$DIR/helper.log" && return 0
        kill -0 "$HELPER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "the --roles $2 process got no partitions:" >&2
    tail -20 "$DIR/helper.log" >&2
    return 1
}
