#!/usr/bin/env bash
# Insert cost per row of every index of `jobs`, and of the generated search
# vector, measured in PostgreSQL itself (docs/performance.md, "The index
# budget"):
#
#   scripts/index-budget.sh [DATABASE] [ROWS]
#
# DATABASE (default bi_data_bench_ingest, left by scripts/bench-ingest.sh)
# must hold at least ROWS jobs (default 50,000). Needs superuser psql access
# (TCP as postgres, as scripts/dev-env.sh sets up). Prints a table and the
# load average around the run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DB=${1:-bi_data_bench_ingest}
ROWS=${2:-50000}
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
psql -h 127.0.0.1 -U postgres -d "$DB" -X -q -v rows="$ROWS" -f "$ROOT/scripts/index_budget.sql" 2>&1 |
    sed -n 's/.*BUDGET|//p' | awk -F'|' '{ printf "%-45s %8s us/row\n", $1, $2 }'
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
