#!/usr/bin/env bash
# BatchCreateJobs from a Python (grpcio) client, 1,000 jobs per call, with
# ImportJobs of as many rows from the same client as the baseline.
#
#   scripts/bench-batch.sh [--calls N] [--batch M]
#
# Builds in release mode (under /tmp/bi-bench.lock), recreates the database
# bi_data_bench_batch, starts a release server without the cache and runs
# scripts/bench_batch.py against it. Prints the load average around the run.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench-batch
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

DB=bi_data_bench_batch
psql -q "postgres://bi_data_owner:bi_data@127.0.0.1:5432/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
BI_DATA_EXTRA_DBS=$DB stage "dev-env" bash "$ROOT/scripts/dev-env.sh"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
export DATABASE_URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/$DB"
export JWT_SECRET=bench-batch-secret
exec 9>/tmp/bi-bench.lock
flock 9
stage "cargo build --release" cargo build --release --locked --bin bi-data
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/bi-data
"$BIN" migrate
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 --redis-url "" >/tmp/bench-batch-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
TOKEN=$("$BIN" token --tenant "$(python3 -c 'import uuid; print(uuid.uuid4())')" --roles writer --subject bench)
for _ in $(seq 100); do
    grpcurl -plaintext "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING && break
    sleep 0.2
done
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/.tools/venv/bin/python" "$ROOT/scripts/bench_batch.py" --addr "127.0.0.1:$PORT" --token "$TOKEN" "$@"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
