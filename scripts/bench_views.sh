#!/usr/bin/env bash
# Batch-view benchmark: each built-in view's batch run over POSTS generated
# posts, beside the same SQL in PostgreSQL 15 over the same rows and in
# DuckDB (PyPI) over the same Parquet files, in one run.
#
#  1. Generates POSTS canonical posts (NDJSON; corpus texts, 20,000
#     authors, 50 communities, 200 locations, 30 days) plus RESEND% of them
#     sent again with new counts.
#  2. Starts a PostgreSQL 15 of its own (initdb in a temporary directory)
#     and `chorus ingest`s the file with [warehouse] pointed at it: the
#     time until every post is enriched, archived and merged into
#     chorus.posts is the export's figure.
#  3. Per view: `chorus batch --view V` (offline, no warehouse), timed with
#     its peak RSS; the same with `chorus run` up on the data directory
#     (the client asks the server, as psql does PostgreSQL), the client
#     timed, with the server's run time and peak RSS; DuckDB's `COPY (V's SQL over posts_latest, the same
#     window over read_parquet of the archive) TO parquet`, its whole
#     process timed with its peak RSS; PostgreSQL's `CREATE TABLE AS` of V's
#     SQL over chorus.posts (already one row per post: no window), timed
#     in the server (shared_buffers 1 GB, work_mem 256 MB, 2 parallel
#     workers).
#  4. `chorus lifecycle` compacts the archive's hour partitions (timed),
#     and step 3 runs again over the compacted files (PostgreSQL's figure
#     does not change: it reads its own table).
#
# Usage: scripts/bench_views.sh [POSTS] [RESEND_PERCENT]   (default 10000000 5)
# CHORUS_BENCH_DIR=DIR works (and stays) in DIR, reusing its posts.ndjson.
# Needs what scripts/test.sh installs (PostgreSQL 15, the DuckDB venv).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/chorus/target}"
POSTS="${1:-10000000}"
RESEND="${2:-5}"
PG_BIN="${CHORUS_TEST_PG_BIN:-/usr/lib/postgresql/15/bin}"
PY="${CHORUS_TEST_PYTHON:-$HOME/.cache/chorus/venv-test/bin/python}"
# With an example, like the other benchmarks: the same features (dev-dependencies
# included), so switching between them does not rebuild the dependencies.
cargo build --release --quiet --bin chorus --example bench_ingest
BIN="$CARGO_TARGET_DIR/release/chorus"
DIR="${CHORUS_BENCH_DIR:-$(mktemp -d)}"
mkdir -p "$DIR"
chown postgres:postgres "$DIR" 2>/dev/null || true
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
    as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -m immediate stop >/dev/null 2>&1 || true
    [ -n "${CHORUS_BENCH_DIR:-}" ] || rm -rf "$DIR"
}
trap cleanup EXIT

if [ -s "$DIR/posts.ndjson" ] && [ -n "${CHORUS_BENCH_DIR:-}" ]; then
    echo "bench: reusing $DIR/posts.ndjson" >&2
else
echo "bench: generating $POSTS posts (+$RESEND% re-sent) in $DIR" >&2
python3 - "$DIR/posts.ndjson" "$POSTS" "$RESEND" tests/fixtures/sentiment/reddit_comments.ndjson <<'PY'
import json, random, sys
out, n, resend, corpus = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
bodies = [json.dumps(json.loads(l)["body"]) for l in open(corpus)]
rng = random.Random(20261201)
locations = ["null"] + [json.dumps(f"City {i}") for i in range(199)]
start = 1_700_000_000
def line(i, bump):
    r = rng.random
    return ('{"platform":"%s","id":"b%d","community":"c%d","author":"u%d","body":%s,"created_at":%d,'
            '"score":%d,"reposts":%d,"author_followers":%d,"location":%s}\n' % (
        "twitter" if i % 3 == 0 else "reddit", i, i % 50, (i * 7919) % 20000, bodies[i % len(bodies)],
        start + (i * 2_591_999) // max(n, 1) , int(r() * 1000) + bump, int(r() * 50), (i * 31) % 100_000,
        locations[i % 200]))
with open(out, "w") as f:
    for i in range(n):
        f.write(line(i, 0))
    for i in range(0, n, max(1, 100 // max(resend, 1))) if resend else []:
        f.write(line(i, 1000))
PY
fi
echo "bench: $(wc -l < "$DIR/posts.ndjson") lines, $(du -h "$DIR/posts.ndjson" | cut -f1)" >&2

# CHORUS_BENCH_REUSE=1 (with CHORUS_BENCH_DIR) keeps the data directory and
# the database of an earlier run and times the views only.
REUSE=""
if [ -n "${CHORUS_BENCH_REUSE:-}" ] && [ -n "${CHORUS_BENCH_DIR:-}" ] && [ -d "$DIR/pg" ] && [ -d "$DIR/data" ]; then
    REUSE=1
else
    rm -rf "$DIR/pg" "$DIR/data"
    as_pg "$PG_BIN/initdb" -D "$DIR/pg" -U postgres -A trust -E UTF8 --locale=C --no-sync >/dev/null
fi
as_pg "$PG_BIN/pg_ctl" -D "$DIR/pg" -l "$DIR/pg.log" -w -o "-c listen_addresses=127.0.0.1 -p $PORT -k $DIR \
    -c fsync=off -c shared_buffers=1GB -c work_mem=256MB -c max_parallel_workers_per_gather=2 -c TimeZone=UTC" start >/dev/null
PSQL=("$PG_BIN/psql" -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1)

cat > "$DIR/ingest.toml" <<EOF
[index]
enabled = false
[batch]
scheduler = false
[warehouse]
url = "postgres://postgres@127.0.0.1:$PORT/postgres"
views = false
EOF
cat > "$DIR/batch.toml" <<EOF
[index]
enabled = false
[batch]
scheduler = false
[lifecycle]
compact_after_secs = 0
compact_min_files = 2
EOF

if [ -z "$REUSE" ]; then
echo "bench: chorus ingest with the warehouse export" >&2
/usr/bin/time -f "%e %M" -o "$DIR/ingest.time" "$BIN" --data "$DIR/data" --config "$DIR/ingest.toml" ingest "$DIR/posts.ndjson" 2>"$DIR/ingest.log" \
    || { tail -20 "$DIR/ingest.log"; exit 1; }
read -r SECS RSS < "$DIR/ingest.time"
ROWS=$("${PSQL[@]}" -At -c "SELECT count(*) FROM chorus.posts")
LINES=$(wc -l < "$DIR/posts.ndjson")
python3 -c "print(f'ingest + enrich + archive + warehouse: {$LINES:,} posts in {$SECS} s, {$LINES/$SECS:,.0f} posts/s, peak RSS {$RSS/1024:,.0f} MiB; chorus.posts holds {$ROWS:,} rows')"
"${PSQL[@]}" -c "VACUUM ANALYZE chorus.posts"
else
    echo "bench: reusing the data directory and database of $DIR" >&2
fi

declare -A SQL
SQL[by_location]="SELECT location, count(id) AS count_id, sum(author_followers) AS sum_followers_count, sum(score) AS sum_favorite_count, sum(reposts) AS sum_retweet_count FROM posts_latest GROUP BY location"
SQL[by_community_hour]="SELECT platform, community, date_trunc('hour', created_at) AS hour, count(*) AS posts, avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound, sum(CASE WHEN sentiment = 'positive' THEN 1 ELSE 0 END) AS positive, sum(CASE WHEN sentiment = 'neutral' THEN 1 ELSE 0 END) AS neutral, sum(CASE WHEN sentiment = 'negative' THEN 1 ELSE 0 END) AS negative FROM posts_latest GROUP BY 1, 2, 3"
SQL[by_author_day]="SELECT platform, author, date_trunc('day', created_at) AS day, count(*) AS posts, avg(polarity) AS mean_polarity, avg(vader_compound) AS mean_vader_compound FROM posts_latest GROUP BY 1, 2, 3"

# Every engine reads warm data: the archive's files and chorus.posts are
# read once before the first timing (else the first view alone pays for
# reading the disk).
find "$DIR/data/archive" -name '*.parquet' -exec cat {} + >/dev/null
"${PSQL[@]}" -At -c "SELECT count(*) FROM chorus.posts" >/dev/null

# CHORUS_BENCH_ROUNDS=N times each view N times, every engine in turn
# (this VM's speed drifts: interleaved rounds compare, runs far apart do
# not); CHORUS_BENCH_VIEWS names the views timed (default: all three).
VIEWS=""
for _ in $(seq "${CHORUS_BENCH_ROUNDS:-1}"); do
    VIEWS="$VIEWS ${CHORUS_BENCH_VIEWS:-by_location by_community_hour by_author_day}"
done

time_views() {
echo "bench: views over $(find "$DIR/data/archive/posts" -name '*.parquet' | wc -l) archive files ($1)"
printf '%-18s | %-22s | %-22s | %-22s | %-22s\n' view "chorus batch" "chorus batch, server up" "DuckDB $("$PY" -c 'import duckdb; print(duckdb.__version__)')" "PostgreSQL 15"
for view in $VIEWS; do
    sql="${SQL[$view]}"
    # chorus: the view's batch run, offline.
    /usr/bin/time -f "%e %M" -o "$DIR/c.time" "$BIN" --data "$DIR/data" --config "$DIR/batch.toml" batch --view "$view" >"$DIR/c.out" 2>"$DIR/c.err" \
        || { cat "$DIR/c.out" "$DIR/c.err"; exit 1; }
    read -r C_SECS C_RSS < "$DIR/c.time"
    C_ROWS=$(grep -o '[0-9]* rows' "$DIR/c.out" | head -1)
    # chorus with its server running (as PostgreSQL's): `chorus batch` asks
    # the server, which runs the view; the client process is timed, and the
    # run as the server reports it.
    "$BIN" --data "$DIR/data" --config "$DIR/batch.toml" run --listen 127.0.0.1:0 2>"$DIR/s.err" &
    S_PID=$!
    for _ in $(seq 300); do [ -f "$DIR/data/server.json" ] && break; sleep 0.1; done
    /usr/bin/time -f "%e" -o "$DIR/s.time" "$BIN" --data "$DIR/data" batch --view "$view" >"$DIR/s.out" 2>>"$DIR/s.err" \
        || { cat "$DIR/s.out" "$DIR/s.err"; exit 1; }
    S_SECS=$(cat "$DIR/s.time")
    S_RUN=$(grep -o 'in [0-9.]* s' "$DIR/s.out" | head -1)
    S_RSS=$(grep VmHWM /proc/$S_PID/status | awk '{print $2}')
    kill -TERM "$S_PID"; wait "$S_PID" || true
    # DuckDB: the same SQL, posts_latest as the same window over the files.
    /usr/bin/time -f "%e %M" -o "$DIR/d.time" "$PY" - "$DIR/data/archive/posts" "$sql" "$DIR/duck.parquet" >"$DIR/d.out" <<'PY'
import sys, time, duckdb
root, sql, out = sys.argv[1:]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
latest = (f"SELECT * FROM read_parquet('{root}/**/*.parquet', hive_partitioning = true) "
          "QUALIFY row_number() OVER (PARTITION BY platform, id ORDER BY ingested_at DESC) = 1")
t = time.time()
con.execute(f"COPY (WITH posts_latest AS ({latest}) {sql}) TO '{out}' (FORMAT parquet)")
rows = con.execute(f"SELECT count(*) FROM read_parquet('{out}')").fetchone()[0]
print(f"{time.time() - t:.2f} {rows}")
PY
    read -r _ D_ROWS < "$DIR/d.out"
    read -r D_SECS D_RSS < "$DIR/d.time"
    # PostgreSQL: CREATE TABLE AS over chorus.posts, and its backend's peak RSS.
    pg_sql="${sql//posts_latest/chorus.posts}"
    P_OUT=$("${PSQL[@]}" -At <<EOF
DROP TABLE IF EXISTS bench_out;
SELECT extract(epoch FROM clock_timestamp());
CREATE TABLE bench_out AS $pg_sql;
SELECT extract(epoch FROM clock_timestamp());
SELECT count(*) FROM bench_out;
EOF
)
    P_SECS=$(echo "$P_OUT" | sed -n 1,2p | awk 'NR==1{a=$1} NR==2{printf "%.2f", $1-a}')
    P_ROWS=$(echo "$P_OUT" | sed -n 3p)
    printf '%-18s | %6.2f s %6.0f MiB %s | %6.2f s (run %s), server %6.0f MiB | %6.2f s %6.0f MiB %s rows | %6s s %s rows\n' "$view" \
        "$C_SECS" "$((C_RSS / 1024))" "($C_ROWS)" "$S_SECS" "$S_RUN" "$((S_RSS / 1024))" "$D_SECS" "$((D_RSS / 1024))" "$D_ROWS" "$P_SECS" "$P_ROWS"
done
}

time_views "as ingested"
echo "bench: chorus lifecycle" >&2
/usr/bin/time -f "%e %M" -o "$DIR/l.time" "$BIN" --data "$DIR/data" --config "$DIR/batch.toml" lifecycle >"$DIR/l.out" 2>"$DIR/l.err" \
    || { cat "$DIR/l.out" "$DIR/l.err"; exit 1; }
read -r L_SECS L_RSS < "$DIR/l.time"
echo "chorus lifecycle: $(head -1 "$DIR/l.out") in $L_SECS s, peak RSS $((L_RSS / 1024)) MiB"
find "$DIR/data/archive/posts" -name '*.parquet' -exec cat {} + >/dev/null
time_views "compacted"
