#!/usr/bin/env bash
# AnalyticsService benchmark: a monthly trend over two years, a group-by on
# industry with P90 salary, the outreach funnel and the opportunity pipeline
# over 1,000,000 jobs and 100,000 campaigns, uncached, as plain SQL and
# cached; GenerateReport over 100,000 and 1,000,000 rows with the server's
# RSS while it streams.
#
#   scripts/bench-analytics.sh [--jobs N] [--calls N]
#
# Builds in release mode, recreates the database bi_data_bench_analytics,
# starts two release servers on it (127.0.0.1:50063 without cache,
# 127.0.0.1:50064 with the Redis of scripts/env.sh) and runs
# benches/analytics.rs against them. Client, servers, PostgreSQL and Redis
# share the machine. Loading 1,000,000 jobs takes a few minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench-analytics
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

ARGS=()
while (($#)); do
    case $1 in
    --jobs | --calls) ARGS+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

DB=bi_data_bench_analytics
psql -q "postgres://bi_data_owner:bi_data@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
BI_DATA_EXTRA_DBS=$DB stage "dev-env" bash "$ROOT/scripts/dev-env.sh" --no-tools
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/$DB"

stage "cargo build --release" cargo build --release --locked --bin bi-data --bench analytics
export JWT_SECRET=bench-secret-not-for-production
export DATABASE_URL=$URL
stage "migrate" target/release/bi-data migrate

LOG_A=$(mktemp)
LOG_B=$(mktemp)
target/release/bi-data serve --listen 127.0.0.1:50063 --metrics-listen 127.0.0.1:0 --redis-url "" \
    --no-migrate --slow-query-ms 10000 >"$LOG_A" 2>&1 &
PID_A=$!
target/release/bi-data serve --listen 127.0.0.1:50064 --metrics-listen 127.0.0.1:0 --redis-url "$REDIS_URL" \
    --no-migrate --slow-query-ms 10000 >"$LOG_B" 2>&1 &
PID_B=$!
trap 'kill $PID_A $PID_B 2>/dev/null; wait $PID_A $PID_B 2>/dev/null; rm -f "$LOG_A" "$LOG_B"' EXIT
for _ in $(seq 1 100); do
    grep -q "SERVING" "$LOG_A" && grep -q "SERVING" "$LOG_B" && break
    sleep 0.1
done

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
BIN=$(ls -t target/release/deps/analytics-* | grep -v '\.d$' | head -n 1)
"$BIN" --uncached http://127.0.0.1:50063 --cached http://127.0.0.1:50064 --database-url "$URL" \
    --server-pid "$PID_A" "${ARGS[@]}"
