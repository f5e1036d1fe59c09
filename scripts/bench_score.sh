#!/usr/bin/env bash
# `chorus score` against the Python reference, whole processes, one run:
# the test corpora (tests/fixtures/sentiment: Reddit comments, GoEmotions,
# tweets, edge and fuzz cases) repeated to LINES NDJSON `{"id","body"}`
# lines, scored by `chorus score --format ndjson` (every core), and the
# first PY_LINES of them by the reference oracle (TextBlob 0.20.1 +
# vaderSentiment 3.3.2 on CPython 3.12, one process, as the reference
# Lambda ran it), each timed from start to exit with its output written to
# a file. Then chorus's scores of those PY_LINES are compared with
# Python's, field by field, bit for bit.
#
# Usage: scripts/bench_score.sh [LINES] [PY_LINES]   (default 1000000, 21000)
#   SKIP_PYTHON=1: chorus only.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
LINES="${1:-1000000}"
PY_LINES="${2:-21000}"
cargo build --release --quiet --bin chorus
BIN="$CARGO_TARGET_DIR/release/chorus"
DIR="$(mktemp -d)"
trap 'rm -rf "$DIR"' EXIT

corpora=(tests/fixtures/sentiment/{reddit_comments,goemotions_reddit_comments,tweets_tweepy,vader_tweets_sentiment,edge_cases,fuzz}.ndjson)
python3 - "$LINES" "$DIR/in.ndjson" "${corpora[@]}" <<'PY'
import json, sys
lines, out, files = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
bodies = []
for f in files:
    with open(f, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                bodies.append(json.loads(line).get("body") or "")
with open(out, "w", encoding="utf-8") as fh:
    for i in range(lines):
        fh.write(json.dumps({"id": f"c{i}", "body": bodies[i % len(bodies)]}) + "\n")
PY
echo "input: $LINES lines, $(du -h "$DIR/in.ndjson" | cut -f1), from ${#corpora[@]} corpora" >&2

# Seconds of a whole process reading $2 and writing $3.
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "${@:4}" < "$2" > "$3"
    t1=$(date +%s.%N)
    python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$t0" "$t1" > "$1"
}
timed "$DIR/t_chorus" "$DIR/in.ndjson" "$DIR/chorus.ndjson" "$BIN" score --format ndjson
python3 - "$LINES" "$(cat "$DIR/t_chorus")" <<'PY'
import sys
n, t = int(sys.argv[1]), float(sys.argv[2])
print(f"chorus score: {n:,} texts in {t:.2f} s = {n / t:,.0f} texts/s")
PY

if [[ -z "${SKIP_PYTHON:-}" ]]; then
    venv="${ORACLE_VENV:-.venv-oracle}"
    if [[ ! -x "$venv/bin/python" ]]; then
        PYENV_VERSION=3.12.1 python -m venv "$venv"
        "$venv/bin/pip" install -q textblob==0.20.1 vadersentiment==3.3.2
    fi
    head -n "$PY_LINES" "$DIR/in.ndjson" > "$DIR/py_in.ndjson"
    timed "$DIR/t_python" "$DIR/py_in.ndjson" "$DIR/python.ndjson" "$venv/bin/python" scripts/sentiment_oracle.py
    python3 - "$PY_LINES" "$(cat "$DIR/t_python")" "$LINES" "$(cat "$DIR/t_chorus")" "$DIR/chorus.ndjson" "$DIR/python.ndjson" <<'PY'
import json, sys
n, t, cn, ct = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
print(f"Python TextBlob + VADER: {n:,} texts in {t:.2f} s = {n / t:,.0f} texts/s")
print(f"chorus / Python: {(cn / ct) / (n / t):.0f}x")
pairs = {"polarity": "textblob_polarity", "subjectivity": "textblob_subjectivity",
         "vader_neg": "vader_neg", "vader_neu": "vader_neu", "vader_pos": "vader_pos",
         "vader_compound": "vader_compound"}
differ = 0
with open(sys.argv[5]) as ours, open(sys.argv[6]) as theirs:
    for i, (a, b) in enumerate(zip(ours, theirs)):
        a, b = json.loads(a), json.loads(b)
        assert a["id"] == b["id"], (i, a["id"], b["id"])
        differ += any(a[k] != b[v] for k, v in pairs.items())
        if i + 1 == n:
            break
print(f"scores that differ from Python's in any bit: {differ} of {n:,}")
sys.exit(1 if differ else 0)
PY
fi
