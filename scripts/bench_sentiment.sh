#!/usr/bin/env bash
# Sentiment throughput, chorus against the Python reference, on the same
# corpus in the same session (run it on an otherwise idle machine):
#
#   scripts/bench_sentiment.sh            # both
#   SKIP_PYTHON=1 scripts/bench_sentiment.sh
#
# chorus: `cargo bench --bench sentiment` (criterion, one thread).
# Python: sentiment_oracle.py --bench (TextBlob 0.20.1, vaderSentiment 3.3.2,
# CPython 3.12) from a venv at $ORACLE_VENV (default .venv-oracle), created
# with pyenv's 3.12.1 when missing; the oracle script is looked up at
# $ORACLE (default scripts/sentiment_oracle.py, the project's oracle).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
corpus=tests/fixtures/sentiment/reddit_comments.ndjson

if [[ -z "${SKIP_PYTHON:-}" ]]; then
  venv="${ORACLE_VENV:-.venv-oracle}"
  oracle="${ORACLE:-scripts/sentiment_oracle.py}"
  if [[ ! -x "$venv/bin/python" ]]; then
    PYENV_VERSION=3.12.1 python -m venv "$venv"
    "$venv/bin/pip" install -q textblob==0.20.1 vadersentiment==3.3.2
  fi
  echo "== Python reference"
  "$venv/bin/python" "$oracle" --bench --min-seconds 5 "$corpus"
fi

echo "== chorus (criterion; thrpt is comments per second on one core)"
cargo bench --bench sentiment -- --warm-up-time 2 --measurement-time 8 2>&1 | grep -E "^reddit_corpus|thrpt:" | grep -v "%"
