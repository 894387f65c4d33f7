#!/usr/bin/env bash
# Companies and outreach benchmark: SearchCompanies latency over 100,000
# companies (and the same query as plain SQL), MergeCompanies of 10 sources
# with 1,000 jobs each, RecordCampaignEvent at 32 concurrent callers (and
# the same transaction as plain SQL).
#
#   scripts/bench-companies.sh [--companies N] [--queries Q] [--campaigns-per-caller C]
#
# Builds in release mode, recreates the database bi_data_bench_companies,
# starts a release server on 127.0.0.1:50062 and runs benches/companies.rs
# against it. Client, server and PostgreSQL share the machine.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench-companies
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

ARGS=()
while (($#)); do
    case $1 in
    --companies | --queries | --campaigns-per-caller) ARGS+=("$1" "$2"); shift 2 ;;
    -h | --help) sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

DB=bi_data_bench_companies
# Every run starts from an empty database (dev-env.sh creates it again).
psql -q "postgres://bi_data_owner:bi_data@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
BI_DATA_EXTRA_DBS=$DB stage "dev-env" bash "$ROOT/scripts/dev-env.sh" --no-tools
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/$DB"

stage "cargo build --release" cargo build --release --locked --bin bi-data --bench companies
export JWT_SECRET=bench-secret-not-for-production
export DATABASE_URL=$URL
stage "migrate" target/release/bi-data migrate

LOG=$(mktemp)
# No cache (env.sh exports REDIS_URL): the figures are the database paths'.
target/release/bi-data serve --listen 127.0.0.1:50062 --metrics-listen 127.0.0.1:0 \
    --redis-url "" --slow-query-ms 10000 >"$LOG" 2>&1 &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -f "$LOG"' EXIT
for _ in $(seq 1 100); do
    grep -q "SERVING" "$LOG" && break
    sleep 0.1
done

log "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
BIN=$(ls -t target/release/deps/companies-* | grep -v '\.d$' | head -n 1)
"$BIN" --addr http://127.0.0.1:50062 --database-url "$URL" "${ARGS[@]}"
