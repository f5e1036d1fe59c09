#!/usr/bin/env bash
# Runs chorus's whole test suite. Installs the test peers it needs when they
# are missing, then runs every test:
#   * DuckDB (PyPI), the independent reader of the Parquet archive, in a
#     virtualenv under ~/.cache/chorus (needs python3 with venv and pip).
# A missing peer fails the run; no test is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"

VENV="${CHORUS_TEST_VENV:-$HOME/.cache/chorus/venv-test}"
if ! "$VENV/bin/python" -c "import duckdb" 2>/dev/null; then
    echo "test.sh: installing DuckDB into $VENV" >&2
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "duckdb==1.4.2"
fi
export CHORUS_TEST_PYTHON="$VENV/bin/python"

cargo test --all-targets
