#!/usr/bin/env bash
# Document benchmark: a 64 MiB upload and download (MiB/s, server RSS),
# GetDocument BASIC vs FULL, AppendMessages at 32 concurrent conversations
# and, with --search-docs N, SearchDocuments over N documents of ~5 KB.
#
#   scripts/bench-documents.sh [--mib N] [--search-docs N] [--append-seconds S]
#
# Builds the release server (under /tmp/bi-bench.lock, so two benchmarks
# never share the machine), recreates and migrates database
# bi_data_bench_docs, starts the server without the cache and runs
# scripts/bench_documents.py against it. LOCAL USE ONLY: the dev database
# password and a fixed throw-away JWT secret.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench-documents
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

# A fresh database each run (documents of earlier runs would skew search).
psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE IF EXISTS bi_data_bench_docs WITH (FORCE)" || true
BI_DATA_EXTRA_DBS=bi_data_bench_docs bash "$ROOT/scripts/dev-env.sh"
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
export DATABASE_URL="postgres://bi_data_owner:bi_data@127.0.0.1:5432/bi_data_bench_docs"
export JWT_SECRET=bench-documents-secret
exec 9>/tmp/bi-bench.lock
flock 9
cargo build --release --locked
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/bi-data
"$BIN" migrate
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --metrics-listen 127.0.0.1:0 --redis-url "" >/tmp/bench-documents-server.log 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
TENANT=$(python3 -c 'import uuid; print(uuid.uuid4())')
TOKEN=$("$BIN" token --tenant "$TENANT" --roles writer --subject bench)
for _ in $(seq 100); do
    grpcurl -plaintext "127.0.0.1:$PORT" grpc.health.v1.Health/Check 2>/dev/null | grep -q SERVING && break
    sleep 0.2
done
SEARCH_DOCS=0
ARGS=()
while [[ $# -gt 0 ]]; do
    case $1 in
    --search-docs) SEARCH_DOCS=$2; shift 2 ;;
    *) ARGS+=("$1"); shift ;;
    esac
done
if [[ $SEARCH_DOCS -gt 0 ]]; then
    # Loaded directly (a superuser's COPY: row-level security refuses COPY
    # FROM for everyone else); search goes through the server.
    t0=$(now_us)
    python3 "$ROOT/scripts/gen_documents.py" "$TENANT" "$SEARCH_DOCS" | psql -q -h 127.0.0.1 -U postgres bi_data_bench_docs \
        -c "COPY documents (tenant_id, id, title, content, owner, metadata) FROM STDIN"
    psql -q -h 127.0.0.1 -U postgres bi_data_bench_docs -c "VACUUM ANALYZE documents"
    log "loaded $SEARCH_DOCS documents in $(fmt_dur "$t0")"
    ARGS+=(--search)
fi
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
"$ROOT/.tools/venv/bin/python" "$ROOT/scripts/bench_documents.py" --addr "127.0.0.1:$PORT" --token "$TOKEN" \
    --pid "$SERVER" "${ARGS[@]}"
log "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
