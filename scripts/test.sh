#!/usr/bin/env bash
# Runs chorus's whole test suite. Installs the test peers it needs when they
# are missing, then runs every test:
#   * DuckDB and its httpfs extension (PyPI), the independent reader of the
#     Parquet archive (on disk and on an S3 server), in a virtualenv under
#     ~/.cache/chorus (needs python3 with venv and pip);
#   * cargo-fuzz (crates.io), for a short run of every fuzz target from its
#     committed corpus (FUZZ_SECONDS each, default 20; 0 skips it on purpose).
#   * strace (apt), with which a test watches the archive sync each directory
#     it creates;
#   * PostgreSQL 15 (apt), the warehouse the export tests write to (each
#     test runs its own server: initdb in a temporary directory, as the
#     postgres user when run as root);
#   * tansu 0.6.0 (crates.io), a Kafka-protocol broker on its sqlite
#     engine, built once into ~/.cache/chorus/tansu (about 12 minutes);
#     the Kafka log's tests start their own broker with it;
#   * s3s-fs 0.14.1 (crates.io), an S3-compatible server over a directory,
#     built once into ~/.cache/chorus/s3s (a few minutes); the tests of the
#     archive on object storage start their own server with it;
#   * chromium (apt) and playwright-core (npm, under ~/.cache/chorus/node),
#     with which tests/browser/dashboard.cjs drives the dashboard.
# The disk-full tests mount a tmpfs, which needs root. A missing peer fails
# the run; no test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"

VENV="${CHORUS_TEST_VENV:-$HOME/.cache/chorus/venv-test}"
if ! "$VENV/bin/python" -c "import duckdb, duckdb_extension_httpfs" 2>/dev/null; then
    echo "test.sh: installing DuckDB and its httpfs extension into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "duckdb==1.4.2" "duckdb-extension-httpfs==1.4.2"
fi
export CHORUS_TEST_PYTHON="$VENV/bin/python"
if ! command -v strace >/dev/null; then
    echo "test.sh: installing strace" >&2
    apt-get install -y -qq strace >/dev/null
fi

PG_BIN="${CHORUS_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}"
if [ ! -x "$PG_BIN/initdb" ]; then
    echo "test.sh: installing PostgreSQL 15" >&2
    apt-get install -y -qq postgresql-15 >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq postgresql-15 >/dev/null; }
fi
export CHORUS_TEST_PG_BIN="$PG_BIN"

TANSU_ROOT="${CHORUS_TANSU_ROOT:-$HOME/.cache/chorus/tansu}"
if [ ! -x "$TANSU_ROOT/bin/tansu" ]; then
    echo "test.sh: building the tansu broker into $TANSU_ROOT (once)" >&2
    # Its own target directory, kept: a failed build resumes where it stopped.
    CARGO_TARGET_DIR="$HOME/.cache/chorus/tansu-target" cargo install --quiet --locked \
        --root "$TANSU_ROOT" tansu@0.6.0 --features dynostore,libsql
fi
export CHORUS_TEST_TANSU="$TANSU_ROOT/bin/tansu"

S3S_ROOT="${CHORUS_S3S_ROOT:-$HOME/.cache/chorus/s3s}"
if [ ! -x "$S3S_ROOT/bin/s3s-fs" ]; then
    echo "test.sh: building the s3s-fs server into $S3S_ROOT (once)" >&2
    CARGO_TARGET_DIR="$HOME/.cache/chorus/s3s-target" cargo install --quiet --locked \
        --root "$S3S_ROOT" s3s-fs@0.14.1 --features binary
fi
export CHORUS_TEST_S3S="$S3S_ROOT/bin/s3s-fs"

if ! command -v chromium >/dev/null; then
    echo "test.sh: installing chromium" >&2
    apt-get install -y -qq chromium >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; }
fi
if ! command -v npm >/dev/null; then
    echo "test.sh: installing nodejs and npm" >&2
    apt-get install -y -qq nodejs npm >/dev/null
fi
NODE_DIR="${CHORUS_TEST_NODE_DIR:-$HOME/.cache/chorus/node}"
if [ ! -d "$NODE_DIR/node_modules/playwright-core" ]; then
    echo "test.sh: installing playwright-core into $NODE_DIR" >&2
    mkdir -p "$NODE_DIR"
    npm install --silent --no-audit --no-fund --prefix "$NODE_DIR" playwright-core@1.57.0
fi
export CHORUS_TEST_NODE_MODULES="$NODE_DIR/node_modules"
export CHORUS_CHROMIUM="$(command -v chromium)"
# The browser test's screenshots, kept as artefacts of the run.
export CHORUS_SCREENSHOTS="${CHORUS_SCREENSHOTS:-$CARGO_TARGET_DIR/screenshots}"

cargo test --all-targets

FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
if [ "$FUZZ_SECONDS" != 0 ]; then
    if ! command -v cargo-fuzz >/dev/null; then
        echo "test.sh: installing cargo-fuzz" >&2
        cargo install --quiet --locked cargo-fuzz --version 0.13.2
    fi
    # Instrumented builds in their own target directory, kept between runs.
    FUZZ_TARGET_DIR="${CHORUS_FUZZ_TARGET_DIR:-$HOME/.cache/chorus/fuzz-target}"
    NEW="$(mktemp -d)"
    trap 'rm -rf "$NEW"' EXIT
    for target in $(cargo fuzz list --fuzz-dir fuzz); do
        mkdir -p "$NEW/$target"
        # New inputs go to a scratch directory; the committed corpus is read
        # only. A crash (or a failed build) is a non-zero exit: the run fails.
        if ! CARGO_TARGET_DIR="$FUZZ_TARGET_DIR" cargo fuzz run --fuzz-dir fuzz --sanitizer none "$target" \
            "$NEW/$target" "fuzz/corpus/$target" -- \
            -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
            > "$NEW/$target.log" 2>&1; then
            tail -40 "$NEW/$target.log" >&2
            echo "test.sh: fuzz target $target failed; see fuzz/artifacts/$target" >&2
            exit 1
        fi
        echo "fuzz $target: $(grep -m1 '^stat::number_of_executed_units' "$NEW/$target.log" | awk '{print $2}') runs, no crash"
    done
fi
