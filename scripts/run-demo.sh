#!/usr/bin/env bash
# The run command of bi-data: a local demo server with demo data.
#
#   scripts/run-demo.sh [--jobs N]
#
# 1. scripts/dev-env.sh (PostgreSQL, Redis, roles and databases, grpcurl/buf)
# 2. cargo build --locked (debug profile)
# 3. bi-data migrate, then bi-data demo-data --jobs N (default 1000): a new
#    tenant with N jobs and the companies, opportunities and campaigns that go
#    with them (a summary is printed); its token is written to .tools/demo-token
# 4. prints the tenant id, an `export TOKEN=...` line and grpcurl examples
# 5. exec bi-data serve in the foreground on LISTEN_ADDR (default
#    127.0.0.1:50051; metrics on 127.0.0.1:9464); stop it with Ctrl-C.
#
# LOCAL USE ONLY: tokens are signed with the fixed, public dev secret
# JWT_SECRET=dev-secret-change-me (unless JWT_SECRET is already set) and the
# database password is the dev value from scripts/env.sh. Never deploy these.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=run-demo
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

JOBS=1000
while (($#)); do
    case $1 in
    --jobs)
        [[ $# -ge 2 ]] || die "--jobs needs a number"
        JOBS=$2
        shift 2
        ;;
    --jobs=*)
        JOBS=${1#--jobs=}
        shift
        ;;
    -h | --help)
        sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *) die "unknown argument: $1 (try --help)" ;;
    esac
done
[[ $JOBS =~ ^[0-9]+$ ]] || die "--jobs must be a number, got '$JOBS'"

T_START=$(now_us)

stage "dev-env" bash "$ROOT/scripts/dev-env.sh"

# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
# Fixed dev secret: the demo token below and the server must agree on it.
export JWT_SECRET="${JWT_SECRET:-dev-secret-change-me}"

stage "cargo build --locked" cargo build --locked
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/debug/bi-data
[[ -x $BIN ]] || die "no binary at $BIN after cargo build"

stage "bi-data migrate" "$BIN" migrate

t0=$(now_us)
log "==> bi-data demo-data --jobs $JOBS"
demo_out=$("$BIN" demo-data --jobs "$JOBS") || die "bi-data demo-data failed"
log "<== bi-data demo-data: ok ($(fmt_dur "$t0"))"
TENANT_ID=$(printf '%s\n' "$demo_out" | sed -n 's/^tenant_id=//p' | tail -n 1)
TOKEN=$(printf '%s\n' "$demo_out" | sed -n 's/^token=//p' | tail -n 1)
if [[ -z $TENANT_ID || -z $TOKEN ]]; then
    printf '%s\n' "$demo_out" >&2
    die "demo-data printed no tenant_id=/token= lines"
fi
mkdir -p "$ROOT/.tools"
(umask 077 && printf '%s\n' "$TOKEN" >"$ROOT/.tools/demo-token")

# What demo-data made (companies, opportunities, campaigns...), without the
# tenant and token lines printed separately below.
DEMO_SUMMARY=$(printf '%s\n' "$demo_out" | grep -v -e '^tenant_id=' -e '^token=' | sed 's/^/  /')

LISTEN=${LISTEN_ADDR:-127.0.0.1:50051}
cat <<EOF

================================ bi-data demo ================================
tenant id : $TENANT_ID
demo data :
$DEMO_SUMMARY
listen    : $LISTEN (gRPC, plaintext)   metrics: http://${METRICS_ADDR:-127.0.0.1:9464}/metrics
token     : .tools/demo-token (JWT signed with the local dev secret; local use only)

In another shell, from $ROOT:

  source scripts/env.sh            # puts grpcurl (.tools/bin) on PATH
  export TOKEN=$TOKEN
  # or: export TOKEN=\$(cat .tools/demo-token)

  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" $LISTEN list

  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" \\
    -d '{"page_size": 3, "filter": "remote = true", "order_by": "salary_max desc", "count": true}' \\
    $LISTEN bi.data.v1.JobService/ListJobs

  grpcurl -plaintext -H "authorization: Bearer \$TOKEN" \\
    -d '{"page_size": 5}' $LISTEN bi.data.v1.AuditService/ListAuditEvents

Ready in $(fmt_dur "$T_START"). Starting the server (Ctrl-C stops it).
===============================================================================

EOF

exec "$BIN" serve
