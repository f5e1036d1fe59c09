#!/usr/bin/env bash
# Runs chorus's whole test suite. Installs the test peers it needs when they
# are missing (none yet: the sentiment goldens are committed files, so
# Python is not needed to run the tests), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
cargo test --all-targets
