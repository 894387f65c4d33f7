#!/usr/bin/env bash
# The test command of bi-data:
#
#   scripts/test.sh [extra cargo test arguments, e.g. -- --nocapture]
#
# Prepares the machine (scripts/dev-env.sh: PostgreSQL, Redis, roles, test
# database, grpcurl/buf/Python tools), loads scripts/env.sh (TEST_DATABASE_URL,
# REDIS_URL, GRPCURL, ...), then runs `cargo test --locked` (unit, integration
# and doc tests). Prints the duration of each stage; exits non-zero on any
# failure. Set BI_DATA_SKIP_DEV_ENV=1 to skip the dev-env stage when it has
# just run (.ci/run does this).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG="test"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

T_START=$(now_us)
finish() {
    local rc=$?
    print_stage_report
    log "total $(fmt_dur "$T_START"): $([[ $rc -eq 0 ]] && echo ok || echo "FAILED (exit $rc)")"
}
trap finish EXIT

if [[ ${BI_DATA_SKIP_DEV_ENV:-0} != 1 ]]; then
    stage "dev-env" bash "$ROOT/scripts/dev-env.sh"
fi

# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

stage "cargo test --locked" cargo test --locked --no-fail-fast "$@"
