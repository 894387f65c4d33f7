#!/usr/bin/env bash
# Bulk-ingest benchmark: ImportJobs vs a raw binary COPY, re-import, server
# memory over a long import, and SearchJobs latency.
#
#   scripts/bench-ingest.sh [--rows N] [--memory-rows M] [--search-queries Q]
#
# Defaults: --rows 200000 --memory-rows 1000000 --search-queries 200.
# Builds in release mode, sets up the database bi_data_bench_ingest (dropped
# and recreated each run, so every run starts from an empty table), starts a
# release server on 127.0.0.1:50061 and runs benches/ingest.rs against it.
# Client, server and PostgreSQL share the machine, as the targets assume.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench-ingest
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

ROWS=200000
MEMORY_ROWS=1000000
QUERIES=200
while (($#)); do
    case $1 in
    --rows) ROWS=$2; shift 2 ;;
    --memory-rows) MEMORY_ROWS=$2; shift 2 ;;
    --search-queries) QUERIES=$2; shift 2 ;;
    -h | --help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

DB=bi_data_bench_ingest
# Every run starts from an empty database (dev-env.sh creates it again).
psql -q "postgres://bi_data_owner:bi_data@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
BI_DATA_EXTRA_DBS=$DB stage "dev-env" bash "$ROOT/scripts/dev-env.sh" --no-tools
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/$DB"

stage "cargo build --release" cargo build --release --locked --bin bi-data --bench ingest
export JWT_SECRET=bench-secret-not-for-production
export DATABASE_URL=$URL
stage "migrate" target/release/bi-data migrate

LOG=$(mktemp)
# No cache (env.sh exports REDIS_URL): SearchJobs repeats its query pairs,
# and with Redis every repeat would be a cache hit, not a search.
target/release/bi-data serve --listen 127.0.0.1:50061 --metrics-listen 127.0.0.1:0 \
    --redis-url "" --slow-query-ms 10000 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
    grep -q "SERVING" "$LOG" && break
    sleep 0.1
done

PEAK_FILE=$(mktemp)
( peak=0; while kill -0 $PID 2>/dev/null; do
    r=$(awk '/VmRSS/ {print $2}' /proc/$PID/status 2>/dev/null || echo 0)
    ((r > peak)) && peak=$r && echo "$peak" >"$PEAK_FILE"
    sleep 0.2
done ) &
SAMPLER=$!

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
BIN=$(ls -t target/release/deps/ingest-* | grep -v '\.d$' | head -n 1)
"$BIN" --addr http://127.0.0.1:50061 --database-url "$URL" --rows "$ROWS" \
    --memory-rows "$MEMORY_ROWS" --search-queries "$QUERIES" --server-pid "$PID"
kill $SAMPLER 2>/dev/null || true
log "server peak RSS over the whole run: $(( $(cat "$PEAK_FILE" 2>/dev/null || echo 0) / 1024 )) MiB"
rm -f "$PEAK_FILE"
