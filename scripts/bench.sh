#!/usr/bin/env bash
# The performance command of bi-data:
#
#   scripts/bench.sh [--quick] [load generator flags]
#
# e.g. scripts/bench.sh --quick                 (smoke run: 2 s per scenario)
#      scripts/bench.sh --only get,list-deep --duration 30
#      scripts/bench.sh --only cached,mixed-cached --duration 20
#      scripts/bench.sh --rate 3000             (open loop for every scenario)
#      BENCH_NOTE="quiet machine" scripts/bench.sh
#
# 1. scripts/dev-env.sh --no-tools (PostgreSQL running, roles bi_data_owner
#    and bi_data_app);
# 2. databases bi_data_bench (the service's schema, via `bi-data migrate`)
#    and bi_data_pgbench (`pgbench -i -s 10`, once), both owned by
#    bi_data_owner: benchmarks never touch the dev or test databases;
# 3. cargo build --release (server) and the load generator
#    (benches/load, `cargo bench --bench load`);
# 4. runs the load generator: loads 1,000,000 jobs once with COPY (about a
#    minute or two; reused by later runs), starts the release server as a
#    child process, runs every scenario through the service and as plain
#    SQL at the same concurrency, then `pgbench -S`, and prints one table.
#    The cache scenarios (`cached`, `mixed-cached`) start a redis-server of
#    their own on a free port and three more servers in turn (cache off,
#    Redis, Redis + near cache): GetJob over a hot set (`--hot-set`) against
#    the same SQL, and a 90/10 GetJob/UpdateJob mix whose every read is
#    checked against the last acknowledged write (stale reads counted), with
#    hit ratios and redis-server CPU under the table.
#    The report is also written to target/bench/report.md and the server's
#    log to target/bench/server.log. `--help` lists the generator's flags.
#
# LOCAL USE ONLY: the dev database password from scripts/env.sh and a fixed
# throw-away JWT secret.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LOG_TAG=bench
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"

for arg in "$@"; do
    case $arg in
    -h | --help)
        sed -n '2,33p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    esac
done

PG_HOST=127.0.0.1
PG_PORT=5432
OWNER=bi_data_owner
PASSWORD=bi_data # dev/test only, as in scripts/env.sh
BENCH_DB=${BENCH_DB:-bi_data_bench}
PGBENCH_DB=${PGBENCH_DB:-bi_data_pgbench}
PGBENCH_SCALE=${PGBENCH_SCALE:-10}
export BENCH_DATABASE_URL="postgres://$OWNER:$PASSWORD@$PG_HOST:$PG_PORT/$BENCH_DB"
export BENCH_PGBENCH_URL="postgresql://$OWNER:$PASSWORD@$PG_HOST:$PG_PORT/$PGBENCH_DB"

T_START=$(now_us)

stage "dev-env" bash "$ROOT/scripts/dev-env.sh" --no-tools

# psql as a superuser, the ways dev-env.sh tries: TCP as postgres without a
# password, else the local socket as the OS user postgres.
psql_super() { # psql_super DB; SQL on stdin
    local db=$1
    local args=(psql -X -q -v ON_ERROR_STOP=1 -d "$db")
    if PGCONNECT_TIMEOUT=5 "${args[@]}" -h "$PG_HOST" -p "$PG_PORT" -U postgres -w -c 'SELECT 1' >/dev/null 2>&1 </dev/null; then
        PGCONNECT_TIMEOUT=5 "${args[@]}" -h "$PG_HOST" -p "$PG_PORT" -U postgres -w
    elif [[ $(id -u) -eq 0 ]] && command -v runuser >/dev/null 2>&1; then
        (cd / && runuser -u postgres -- "${args[@]}" -p "$PG_PORT")
    else
        (cd / && sudo -u postgres "${args[@]}" -p "$PG_PORT")
    fi
}

step_begin "databases $BENCH_DB, $PGBENCH_DB"
psql_super postgres <<SQL
SET client_min_messages = warning;
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L',
              d, '$OWNER', 'UTF8', 'C.UTF-8', 'C.UTF-8')
  FROM unnest(ARRAY['$BENCH_DB', '$PGBENCH_DB']) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SQL
# The superuser set-up every bi-data database gets (pg_trgm, the LEAKPROOF
# operators that let search and JSON filters use their indexes under
# row-level security): without it the bench measured scans.
psql_super "$BENCH_DB" <"$ROOT/deploy/postgres/superuser.sql"
step_end

stage "cargo build --release (server)" cargo build --release --locked --bin bi-data
stage "cargo bench --no-run (load generator)" cargo bench --locked --bench load --no-run
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/bi-data
[[ -x $BIN ]] || die "no binary at $BIN"

migrate() { env DATABASE_URL="$BENCH_DATABASE_URL" MIGRATION_DATABASE_URL="$BENCH_DATABASE_URL" "$BIN" migrate >&2; }
stage "bi-data migrate ($BENCH_DB)" migrate

step_begin "pgbench data ($PGBENCH_DB, scale $PGBENCH_SCALE)"
have_accounts=$(psql "$BENCH_PGBENCH_URL" -X -q -w -At -c "SELECT to_regclass('pgbench_accounts') IS NOT NULL" </dev/null)
if [[ $have_accounts == t ]]; then
    step_end "present"
else
    pgbench -i -q -s "$PGBENCH_SCALE" "$BENCH_PGBENCH_URL" >&2
    step_end "initialised"
fi

log "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
stage "load generator" cargo bench --locked --bench load -- --server-bin "$BIN" "$@"
log "done in $(fmt_dur "$T_START"); report: ${CARGO_TARGET_DIR:-$ROOT/target}/bench/report.md"
