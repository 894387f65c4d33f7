#!/usr/bin/env bash
# The fault suite (docs/reliability.md):
#
#   scripts/fault-suite.sh [--long]
#
# Runs the scenarios of tests/it/faults and tests/it/deadlines (private
# PostgreSQL clusters and Redis servers started by the tests themselves,
# the shared ones untouched) and prints each scenario's FAULT line of
# figures, with the machine's load average. --long adds the long variants
# (full load: 100 writes/s + 1,000 reads/s through a restart and a kill;
# a 2-minute property campaign). The quick scenarios also run in
# scripts/test.sh (so in .ci/run).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=fault-suite
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

LONG=()
while (($#)); do
    case $1 in
    --long) LONG=(--include-ignored); shift ;;
    -h | --help) sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument: $1" ;;
    esac
done

if [[ ${BI_DATA_SKIP_DEV_ENV:-0} != 1 ]]; then
    stage "dev-env" bash "$ROOT/scripts/dev-env.sh" --no-tools
fi
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
log "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
# One scenario at a time: their figures are not disturbed by each other.
stage "cargo test faults" bash -c 'cargo test --locked --test it -- faults:: deadlines:: --test-threads 1 --nocapture "$@" 2>&1 | tee "'"$OUT"'"' _ "${LONG[@]}"
log "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo
grep -E '^(test .*)?FAULT ' "$OUT" | sed -E 's/^test [^ ]+ \.\.\. //' || true
grep -qE '^test result: ok' "$OUT"
