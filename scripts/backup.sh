#!/usr/bin/env bash
# Backup, point-in-time recovery and tenant moves for bi-data's PostgreSQL
# (docs/backup.md). One command, one subcommand per task:
#
#   scripts/backup.sh archive-setup --url URL --archive DIR [--pgdata DIR --restart [--log FILE]]
#       WAL archiving on (archive_mode, wal_level replica, an archive_command
#       that copies each segment to a temporary name, fsyncs it and renames
#       it; a segment already archived is accepted only if identical).
#   scripts/backup.sh wal-switch --url URL [--timeout SECONDS]
#       Closes the current WAL segment and waits until the archiver has it.
#   scripts/backup.sh base --url URL --backups DIR [--label NAME] [--format tar|plain] [--no-verify]
#       pg_basebackup (WAL streamed into the backup, SHA-256 manifest) into
#       DIR/<UTC time>-<label>, then pg_verifybackup.
#   scripts/backup.sh verify --backup DIR
#   scripts/backup.sh list --backups DIR
#   scripts/backup.sh restore --backups DIR --archive DIR --target NEWDIR
#           (--to-time TIME | --to-lsn X/Y | --latest) [--backup NAME]
#           [--timeline current|latest|N] [--port P [--socket-dir DIR]]
#           [--start [--log FILE] [--wait SECONDS]] [--keep-archiving]
#       A new data directory from the newest backup that ended before the
#       target, recovering from the archive up to the target, then promoted.
#   scripts/backup.sh prune --backups DIR [--archive DIR] [--keep N] [--max-age 7d] [--dry-run]
#       Deletes backups beyond the newest N and/or older than the age (never
#       the newest one), then the archived WAL no remaining backup needs.
#   scripts/backup.sh tenant-export --url URL --tenant UUID --out DIR
#   scripts/backup.sh tenant-import --url URL --in DIR
#       One tenant's rows of every tenant table (found from the catalog), one
#       COPY file per table plus manifest.tsv; the import runs in one
#       transaction and refuses a schema mismatch or a tenant with rows.
#
# Common options: --pg-bin DIR (PostgreSQL programs; default
# /usr/lib/postgresql/15/bin or pg_config --bindir), --os-user USER (the
# user PostgreSQL runs as; when this script runs as root, server-side steps
# run as that user, default postgres). URLs are libpq connection strings;
# archive-setup, wal-switch and base need a superuser (base: a role with
# REPLICATION), tenant-import a role that bypasses row-level security.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LOG_TAG="backup"
# shellcheck source=scripts/lib.sh
source "$ROOT/scripts/lib.sh"
SQL_DIR="$ROOT/scripts/backup"

# Scratch files and directories, removed however the script ends.
CLEANUP=()
cleanup() {
    ((${#CLEANUP[@]} == 0)) || rm -rf "${CLEANUP[@]}"
}
trap cleanup EXIT

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit "${1:-2}"
}

CMD=${1:-}
[[ -z $CMD || $CMD == -h || $CMD == --help ]] && usage 0
shift

URL="" ARCHIVE="" PGDATA_DIR="" RESTART=0 LOGFILE="" TIMEOUT=60 BACKUPS="" LABEL="bi-data"
FORMAT="tar" VERIFY=1 BACKUP="" TARGET="" TO_TIME="" TO_LSN="" LATEST=0 TIMELINE="current"
PORT="" SOCKET_DIR="" START=0 WAIT=300 KEEP_ARCHIVING=0 KEEP="" MAX_AGE="" DRY_RUN=0
TENANT="" OUT="" IN=""
PG_BIN=${PG_BIN:-}
OS_USER=${OS_USER:-postgres}
while (($#)); do
    opt=$1
    case $opt in
    --restart | --no-verify | --latest | --start | --keep-archiving | --dry-run) ;;
    --*) (($# >= 2)) || die "$opt needs a value" ;;
    *) die "unexpected argument '$opt' (see --help)" ;;
    esac
    case $opt in
    --url) URL=$2 ;;
    --archive) ARCHIVE=$2 ;;
    --pgdata) PGDATA_DIR=$2 ;;
    --restart) RESTART=1 ;;
    --log) LOGFILE=$2 ;;
    --timeout) TIMEOUT=$2 ;;
    --backups) BACKUPS=$2 ;;
    --label) LABEL=$2 ;;
    --format) FORMAT=$2 ;;
    --no-verify) VERIFY=0 ;;
    --backup) BACKUP=$2 ;;
    --target) TARGET=$2 ;;
    --to-time) TO_TIME=$2 ;;
    --to-lsn) TO_LSN=$2 ;;
    --latest) LATEST=1 ;;
    --timeline) TIMELINE=$2 ;;
    --port) PORT=$2 ;;
    --socket-dir) SOCKET_DIR=$2 ;;
    --start) START=1 ;;
    --wait) WAIT=$2 ;;
    --keep-archiving) KEEP_ARCHIVING=1 ;;
    --keep) KEEP=$2 ;;
    --max-age) MAX_AGE=$2 ;;
    --dry-run) DRY_RUN=1 ;;
    --tenant) TENANT=$2 ;;
    --out) OUT=$2 ;;
    --in) IN=$2 ;;
    --pg-bin) PG_BIN=$2 ;;
    --os-user) OS_USER=$2 ;;
    -h | --help) usage 0 ;;
    *) die "unknown option $opt (see --help)" ;;
    esac
    case $opt in
    --restart | --no-verify | --latest | --start | --keep-archiving | --dry-run) shift ;;
    *) shift 2 ;;
    esac
done

if [[ -z $PG_BIN ]]; then
    if [[ -x /usr/lib/postgresql/15/bin/pg_basebackup ]]; then
        PG_BIN=/usr/lib/postgresql/15/bin
    else
        PG_BIN=$(pg_config --bindir)
    fi
fi

PSQL="$PG_BIN/psql"
[[ -x $PSQL ]] || PSQL=psql

need() { # need VAR_VALUE OPTION
    [[ -n $1 ]] || die "$CMD needs $2"
}

# Runs a server-side program (pg_ctl) as the OS user PostgreSQL runs as.
as_os_user() {
    if ((EUID == 0)); then
        runuser -u "$OS_USER" -- "$@"
    else
        "$@"
    fi
}

# Hands a directory to the OS user PostgreSQL runs as (when root).
give_dir() {
    if ((EUID == 0)); then
        chown -R "$OS_USER:" "$1"
    fi
    chmod 700 "$1"
}

q() { # q URL SQL : one value
    "$PSQL" "$1" -X -q -At -v ON_ERROR_STOP=1 -c "$2"
}

# A path that goes into a shell command or a psql string: no quotes.
plain_path() {
    [[ $1 == /* ]] || die "$2 must be an absolute path: $1"
    [[ $1 =~ ^[A-Za-z0-9_./+:@-]+$ ]] || die "$2 may hold only letters, digits and _ . / + : @ - (it is quoted into commands): $1"
}

empty_or_new_dir() {
    if [[ -e $1 ]]; then
        [[ -d $1 && -z $(ls -A "$1") ]] || die "$1 exists and is not an empty directory"
    fi
}

# LSN "X/Y" -> a number (for comparisons).
lsn_num() {
    [[ $1 =~ ^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$ ]] || die "not an LSN: '$1' (expected X/Y, hex)"
    printf '%d' $(((16#${BASH_REMATCH[1]} << 32) | 16#${BASH_REMATCH[2]}))
}

# info_get FILE KEY
info_get() {
    sed -n "s/^$2=//p" "$1" | head -n1
}

# Completed backups (a backup.info was written), oldest first: names sort
# by their UTC time prefix.
list_backups() {
    local d
    for d in "$BACKUPS"/*/; do
        [[ -f ${d}backup.info ]] && basename "$d"
    done | sort
}

# ---------------------------------------------------------------------------

cmd_archive_setup() {
    need "$URL" --url
    need "$ARCHIVE" --archive
    plain_path "$ARCHIVE" --archive
    mkdir -p "$ARCHIVE"
    give_dir "$ARCHIVE"
    # Runs in the server's data directory through /bin/sh. %p is the segment
    # (relative path), %f its file name. An existing segment is never
    # overwritten: identical content is success (a retry after a crash
    # between rename and the server noting it), different content fails and
    # the server keeps the segment and retries (and logs it).
    local ac
    ac="d=$ARCHIVE; f=%f; if [ -f \"\$d/\$f\" ]; then cmp -s \"%p\" \"\$d/\$f\"; "
    ac+="else cp \"%p\" \"\$d/.\$f.tmp\" && sync \"\$d/.\$f.tmp\" && mv \"\$d/.\$f.tmp\" \"\$d/\$f\" && sync \"\$d\"; fi"
    local mode level
    mode=$(q "$URL" "SHOW archive_mode")
    level=$(q "$URL" "SHOW wal_level")
    "$PSQL" "$URL" -X -q -v ON_ERROR_STOP=1 -v ac="$ac" >/dev/null <<'SQL'
ALTER SYSTEM SET archive_mode = 'on';
ALTER SYSTEM SET archive_command = :'ac';
SELECT pg_reload_conf();
SQL
    if [[ $level == minimal ]]; then
        q "$URL" "ALTER SYSTEM SET wal_level = 'replica'" >/dev/null
    fi
    log "archive_command = $ac"
    if [[ $mode == off || $level == minimal ]]; then
        if ((RESTART)); then
            need "$PGDATA_DIR" "--pgdata (with --restart)"
            local lf=${LOGFILE:-${PGDATA_DIR%/}.log}
            log "restarting the cluster in $PGDATA_DIR (archive_mode/wal_level need a restart; log: $lf)"
            as_os_user "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t "$TIMEOUT" -l "$lf" restart >/dev/null
        else
            log "archive_mode or wal_level changed: RESTART the cluster for them to apply (or pass --pgdata DIR --restart)"
            return 0
        fi
    fi
    [[ $(q "$URL" "SHOW archive_mode") == on ]] || die "archive_mode is still off after the restart"
    # Proves the command works: one segment archived now.
    cmd_wal_switch
    log "WAL archiving into $ARCHIVE is on"
}

cmd_wal_switch() {
    need "$URL" --url
    # A restore point is a WAL record, so there is always something to switch.
    local seg
    seg=$(q "$URL" "SELECT pg_create_restore_point('bi-data wal-switch'); SELECT pg_walfile_name(pg_switch_wal())" | tail -n1)
    local t0 last failed
    t0=$(now_us)
    while :; do
        IFS='|' read -r last failed < <(q "$URL" "SELECT coalesce(last_archived_wal, ''), coalesce(last_failed_wal, '') FROM pg_stat_archiver")
        # Same timeline: segment names order as their positions.
        if [[ -n $last && ! $last < $seg ]]; then
            log "segment $seg archived (last archived: $last; $(fmt_dur "$t0"))"
            return 0
        fi
        if (($(now_us) - t0 > TIMEOUT * 1000000)); then
            die "segment $seg not archived after ${TIMEOUT}s (last archived: ${last:-none}, last failed: ${failed:-none}); see the server log"
        fi
        sleep 0.1
    done
}

cmd_base() {
    need "$URL" --url
    need "$BACKUPS" --backups
    [[ $LABEL =~ ^[A-Za-z0-9_.-]+$ ]] || die "--label: letters, digits, _ . - only"
    [[ $FORMAT == tar || $FORMAT == plain ]] || die "--format is tar or plain"
    mkdir -p "$BACKUPS"
    local name tmp dir
    name="$(date -u +%Y%m%dT%H%M%SZ)-$LABEL"
    dir="$BACKUPS/$name"
    [[ ! -e $dir ]] || die "$dir exists (two backups with one label within a second?)"
    # Written under a hidden name and renamed when complete and verified:
    # restore and prune never see a half-written backup.
    tmp="$BACKUPS/.$name.partial"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    # A failed or refused backup leaves nothing behind (after the final
    # rename there is nothing here to remove).
    CLEANUP+=("$tmp")
    local t0 t_end t_end_us
    t0=$(now_us)
    local target=$tmp
    [[ $FORMAT == plain ]] && target="$tmp/data"
    log "pg_basebackup ($FORMAT, WAL streamed, label $LABEL) into $dir"
    "$PG_BIN/pg_basebackup" -d "$URL" -D "$target" -F "${FORMAT:0:1}" -X stream -c fast -w \
        -l "$LABEL" --manifest-checksums=SHA256
    # When pg_basebackup returned: the backup's end point is before it.
    t_end_us=$(date -u +%s%6N)
    t_end=$((t_end_us / 1000000))
    "$PSQL" "$URL" -X -q -At -v ON_ERROR_STOP=1 -f "$SQL_DIR/server_settings.sql" >"$tmp/server.conf"
    local label_text manifest
    if [[ $FORMAT == tar ]]; then
        label_text=$(tar -xOf "$tmp/base.tar" backup_label)
        manifest="$tmp/backup_manifest"
    else
        label_text=$(cat "$tmp/data/backup_label")
        manifest="$tmp/data/backup_manifest"
    fi
    local start_wal start_lsn end_lsn timeline start_time
    start_lsn=$(sed -n 's/^START WAL LOCATION: \([0-9A-F/]*\) .*/\1/p' <<<"$label_text")
    start_wal=$(sed -n 's/^START WAL LOCATION: .*(file \([0-9A-F]*\)).*/\1/p' <<<"$label_text")
    timeline=$(sed -n 's/^START TIMELINE: //p' <<<"$label_text")
    start_time=$(sed -n 's/^START TIME: //p' <<<"$label_text")
    # The manifest's last WAL range: { "Timeline": 1, "Start-LSN": "0/3000028", "End-LSN": "0/3000100" }
    end_lsn=$(grep -o '"End-LSN": *"[0-9A-F/]*"' "$manifest" | tail -n1 | sed 's/.*"\([0-9A-F/]*\)"$/\1/')
    [[ -n $start_wal && -n $end_lsn ]] || die "cannot read the backup's WAL range (backup_label/backup_manifest)"
    local secs size
    secs=$(fmt_dur "$t0")
    size=$(du -sb "$tmp" | cut -f1)
    cat >"$tmp/backup.info" <<EOF
NAME=$name
LABEL=$LABEL
FORMAT=$FORMAT
TIMELINE=$timeline
START_LSN=$start_lsn
START_WAL_FILE=$start_wal
START_TIME=$start_time
END_LSN=$end_lsn
END_EPOCH=$((t_end + 1))
END_EPOCH_US=$t_end_us
END_TIME=$(date -u -d "@$((t_end + 1))" '+%Y-%m-%d %H:%M:%S+00')
SIZE_BYTES=$size
DURATION=$secs
EOF
    if ((VERIFY)); then
        verify_dir "$tmp"
    fi
    mv "$tmp" "$dir"
    log "backup $name: $((size / 1024)) KiB in $secs, WAL $start_lsn..$end_lsn (first segment $start_wal)"
    printf '%s\n' "$dir"
}

# pg_verifybackup checks every file against the manifest's SHA-256 and the
# WAL range with pg_waldump. PostgreSQL 15 reads plain backups only, so a
# tar backup is unpacked into a scratch directory first.
verify_dir() {
    local dir=$1 fmt
    fmt=$(info_get "$dir/backup.info" FORMAT)
    local t0
    t0=$(now_us)
    if [[ $fmt == plain ]]; then
        "$PG_BIN/pg_verifybackup" -q "$dir/data"
    else
        local scratch
        scratch=$(mktemp -d -p "$(dirname "$dir")" .verify.XXXXXX)
        CLEANUP+=("$scratch")
        tar -xf "$dir/base.tar" -C "$scratch"
        tar -xf "$dir/pg_wal.tar" -C "$scratch/pg_wal"
        "$PG_BIN/pg_verifybackup" -q -m "$dir/backup_manifest" "$scratch"
        rm -rf "$scratch"
    fi
    log "pg_verifybackup: backup in $(basename "$dir") is intact ($(fmt_dur "$t0"))"
}

cmd_verify() {
    need "$BACKUP" --backup
    [[ -f $BACKUP/backup.info ]] || die "$BACKUP is not a backup made by this script (no backup.info)"
    verify_dir "$BACKUP"
}

cmd_list() {
    need "$BACKUPS" --backups
    local b
    printf '%-40s %-6s %-22s %-14s %-14s %10s\n' NAME FORMAT END_TIME START_LSN END_LSN KIB
    for b in $(list_backups); do
        local f="$BACKUPS/$b/backup.info"
        printf '%-40s %-6s %-22s %-14s %-14s %10s\n' "$b" "$(info_get "$f" FORMAT)" "$(info_get "$f" END_TIME)" \
            "$(info_get "$f" START_LSN)" "$(info_get "$f" END_LSN)" $(($(info_get "$f" SIZE_BYTES) / 1024))
    done
}

# The newest backup that ended before the target (a restore can only
# recover forwards from a backup's end).
pick_backup() {
    local b chosen="" f
    for b in $(list_backups); do
        f="$BACKUPS/$b/backup.info"
        if [[ -n $TO_LSN ]]; then
            (($(lsn_num "$(info_get "$f" END_LSN)") <= $(lsn_num "$TO_LSN"))) && chosen=$b
        elif [[ -n $TO_TIME ]]; then
            # Microseconds (older backups: the second after their end).
            local end_us
            end_us=$(info_get "$f" END_EPOCH_US)
            [[ -n $end_us ]] || end_us=$(($(info_get "$f" END_EPOCH) * 1000000))
            ((end_us <= TARGET_EPOCH_US)) && chosen=$b
        else
            chosen=$b
        fi
    done
    [[ -n $chosen ]] || die "no backup in $BACKUPS ended before the target; nothing to recover forwards from"
    printf '%s' "$chosen"
}

cmd_restore() {
    need "$BACKUPS" --backups
    need "$ARCHIVE" --archive
    need "$TARGET" --target
    plain_path "$ARCHIVE" --archive
    plain_path "$TARGET" --target
    local targets=0
    [[ -n $TO_TIME ]] && targets=$((targets + 1))
    [[ -n $TO_LSN ]] && targets=$((targets + 1))
    ((LATEST)) && targets=$((targets + 1))
    ((targets == 1)) || die "restore needs exactly one of --to-time, --to-lsn, --latest"
    if [[ -n $TO_TIME ]]; then
        [[ $TO_TIME != *"'"* ]] || die "--to-time holds a quote"
        # The backup is chosen in UTC, the restored server reads the target in
        # its own time zone: without an offset the two could differ.
        [[ $TO_TIME =~ ([+-][0-9]{2}(:?[0-9]{2})?|Z|UTC)$ ]] ||
            die "--to-time needs its UTC offset (e.g. '2026-12-07 01:02:03+00:00' or '...Z')"
        TARGET_EPOCH_US=$(date -u -d "$TO_TIME" +%s%6N) ||
            die "date cannot read --to-time '$TO_TIME' (use e.g. '2026-12-07 01:02:03.456+00:00'), or name the backup with --backup"
    fi
    [[ -n $TO_LSN ]] && lsn_num "$TO_LSN" >/dev/null
    [[ -z $PORT || $PORT =~ ^[0-9]+$ ]] || die "--port is a number"
    ((START == 0)) || [[ -n $PORT ]] || die "--start needs --port"
    empty_or_new_dir "$TARGET"
    [[ -n $BACKUP ]] || BACKUP=$(pick_backup)
    local src="$BACKUPS/$BACKUP"
    [[ -f $src/backup.info ]] || die "$src is not a backup made by this script"
    local fmt
    fmt=$(info_get "$src/backup.info" FORMAT)
    local t0
    t0=$(now_us)
    log "restoring backup $BACKUP ($fmt, ended $(info_get "$src/backup.info" END_TIME) at $(info_get "$src/backup.info" END_LSN)) into $TARGET"
    mkdir -p "$TARGET"
    if [[ $fmt == tar ]]; then
        tar -xf "$src/base.tar" -C "$TARGET"
        tar -xf "$src/pg_wal.tar" -C "$TARGET/pg_wal"
    else
        cp -a "$src/data/." "$TARGET/"
        rm -f "$TARGET/backup_manifest"
    fi
    {
        echo "# scripts/backup.sh restore of $BACKUP at $(date -u '+%Y-%m-%d %H:%M:%S+00') (later lines win)"
        if [[ -f $src/server.conf ]]; then
            echo "# the source's settings from its command line and those recovery checks (server.conf)"
            cat "$src/server.conf"
        fi
        echo "restore_command = 'cp \"$ARCHIVE/%f\" \"%p\"'"
        if [[ -n $TO_TIME ]]; then
            echo "recovery_target_time = '$TO_TIME'"
        elif [[ -n $TO_LSN ]]; then
            echo "recovery_target_lsn = '$TO_LSN'"
        fi
        echo "recovery_target_timeline = '$TIMELINE'"
        ((LATEST)) || echo "recovery_target_action = 'promote'"
        # The copy must not archive into the original's archive: its new
        # timeline would be followed by later restores of the original.
        ((KEEP_ARCHIVING)) || echo "archive_mode = 'off'"
        [[ -n $PORT ]] && echo "port = $PORT"
        [[ -n $SOCKET_DIR ]] && echo "unix_socket_directories = '$SOCKET_DIR'"
        true
    } >>"$TARGET/postgresql.auto.conf"
    touch "$TARGET/recovery.signal"
    rm -f "$TARGET/postmaster.pid" "$TARGET/postmaster.opts"
    give_dir "$TARGET"
    log "data directory ready ($(fmt_dur "$t0")): recovery.signal, restore_command from $ARCHIVE, target ${TO_TIME:-${TO_LSN:-end of archive}}"
    if ((!START)); then
        log "start it with: pg_ctl -D $TARGET -l LOGFILE start  (it recovers, then promotes)"
        return 0
    fi
    local lf=${LOGFILE:-$TARGET/restore.log}
    as_os_user "$PG_BIN/pg_ctl" -D "$TARGET" -l "$lf" -w -t "$WAIT" start >/dev/null ||
        die "the restored cluster did not start: $(tail -n 20 "$lf" 2>/dev/null)"
    # Recovery ends with promotion: the control file says "in production".
    local state
    while :; do
        state=$("$PG_BIN/pg_controldata" "$TARGET" | sed -n 's/^Database cluster state: *//p')
        [[ $state == "in production" ]] && break
        if ! as_os_user "$PG_BIN/pg_ctl" -D "$TARGET" status >/dev/null; then
            die "the restored cluster stopped during recovery: $(grep -E 'FATAL|recovery' "$lf" | tail -n 5)"
        fi
        (($(now_us) - t0 > WAIT * 1000000)) && die "not promoted after ${WAIT}s (state: $state); see $lf"
        sleep 0.1
    done
    grep -E 'recovery stopping|last completed transaction|selected new timeline' "$lf" | sed 's/^/  /' >&2 || true
    log "restored cluster on port $PORT is in production ($(fmt_dur "$t0") from start of restore)"
}

# "7d" / "12h" / "30m" / "45s" / "90" -> seconds.
age_secs() {
    [[ $1 =~ ^([0-9]+)([smhd]?)$ ]] || die "--max-age: a number with s, m, h or d (e.g. 7d)"
    local n=${BASH_REMATCH[1]}
    case ${BASH_REMATCH[2]} in
    m) n=$((n * 60)) ;;
    h) n=$((n * 3600)) ;;
    d) n=$((n * 86400)) ;;
    esac
    printf '%d' "$n"
}

cmd_prune() {
    need "$BACKUPS" --backups
    [[ -n $KEEP || -n $MAX_AGE ]] || die "prune needs --keep N and/or --max-age AGE"
    [[ -z $KEEP || $KEEP =~ ^[1-9][0-9]*$ ]] || die "--keep is a number >= 1"
    local max_age=""
    [[ -n $MAX_AGE ]] && max_age=$(age_secs "$MAX_AGE")
    local -a all
    mapfile -t all < <(list_backups)
    local n=${#all[@]} i now
    ((n > 0)) || die "no backups in $BACKUPS"
    now=$(date -u +%s)
    local -a kept=()
    for ((i = 0; i < n; i++)); do
        local b=${all[i]} reason=""
        local end
        end=$(info_get "$BACKUPS/$b/backup.info" END_EPOCH)
        if ((i < n - 1)); then # the newest backup is never deleted
            [[ -n $KEEP ]] && ((i < n - KEEP)) && reason="beyond the newest $KEEP"
            [[ -n $max_age ]] && ((now - end > max_age)) && reason="${reason:+$reason, }older than $MAX_AGE"
        fi
        if [[ -n $reason ]]; then
            if ((DRY_RUN)); then
                log "would delete $b ($reason)"
            else
                rm -rf "${BACKUPS:?}/$b"
                log "deleted $b ($reason)"
            fi
        else
            kept+=("$b")
        fi
    done
    log "kept ${#kept[@]} backup(s): ${kept[*]}"
    if [[ -n $ARCHIVE ]]; then
        # Every WAL segment before the oldest kept backup's first segment is
        # needed by no backup left (pg_archivecleanup keeps history files).
        local oldest="${kept[0]}" first
        first=$(info_get "$BACKUPS/$oldest/backup.info" START_WAL_FILE)
        local before after
        before=$(find "$ARCHIVE" -maxdepth 1 -type f | wc -l)
        if ((DRY_RUN)); then
            "$PG_BIN/pg_archivecleanup" -n "$ARCHIVE" "$first" | sed 's/^/  would delete /' >&2
        else
            "$PG_BIN/pg_archivecleanup" "$ARCHIVE" "$first"
            # pg_archivecleanup leaves the backup history files
            # (<segment>.<offset>.backup) of the deleted backups.
            local h
            for h in "$ARCHIVE"/*.backup; do
                [[ -f $h ]] || continue
                [[ $(basename "$h") < $first ]] && rm -f "$h"
            done
        fi
        after=$(find "$ARCHIVE" -maxdepth 1 -type f | wc -l)
        log "archive $ARCHIVE: segments before $first (oldest kept backup $oldest) removed: $before -> $after files"
    fi
}

# ---------------------------------------------------------------------------
# Tenant export / import

tenant_psql() { # psql against URL with the tenant scope set (FORCE RLS for a non-bypassing owner)
    PGOPTIONS="${PGOPTIONS:-} -c app.tenant_id=$TENANT" "$PSQL" "$URL" -X -q -v ON_ERROR_STOP=1 "$@"
}

schema_versions() {
    q "$URL" "SELECT string_agg(version::text, ',' ORDER BY version) FROM refinery_schema_history"
}

tenant_tables() { # name \t level \t cols \t order_by, in import order
    "$PSQL" "$URL" -X -q -At -F $'\t' -v ON_ERROR_STOP=1 -f "$SQL_DIR/tenant_tables.sql"
}

check_tenant() {
    need "$TENANT" --tenant
    [[ $TENANT =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]] ||
        die "--tenant is a UUID"
    TENANT=${TENANT,,}
}

cmd_tenant_export() {
    need "$URL" --url
    need "$OUT" --out
    check_tenant
    plain_path "$OUT" --out
    empty_or_new_dir "$OUT"
    local unreachable
    unreachable=$("$PSQL" "$URL" -X -q -At -v ON_ERROR_STOP=1 -f "$SQL_DIR/tenant_unreachable.sql")
    [[ -z $unreachable ]] || die "tables without tenant_id reference tenant tables (their rows would be left behind): $unreachable"
    local versions
    versions=$(schema_versions)
    local t0
    t0=$(now_us)
    mkdir -p "$OUT"
    local script i=0 name level cols order_by file
    script=$(mktemp)
    CLEANUP+=("$script")
    local -a rows=()
    mapfile -t rows < <(tenant_tables)
    ((${#rows[@]} > 0)) || die "no tables with a tenant_id column: is this a migrated bi-data database?"
    {
        # One snapshot for every table: the export is consistent.
        echo "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;"
        for r in "${rows[@]}"; do
            IFS=$'\t' read -r name level cols order_by <<<"$r"
            i=$((i + 1))
            file=$(printf '%02d-%s.copy' "$i" "${name//[^A-Za-z0-9_.]/_}")
            echo "\\copy (SELECT $cols FROM $name x WHERE x.tenant_id = '$TENANT' ORDER BY $order_by) TO '$OUT/$file'"
        done
        echo "COMMIT;"
    } >"$script"
    tenant_psql -f "$script" >/dev/null
    i=0
    {
        printf 'format\tbi-data tenant export 1\n'
        printf 'tenant\t%s\n' "$TENANT"
        printf 'schema_versions\t%s\n' "$versions"
        for r in "${rows[@]}"; do
            IFS=$'\t' read -r name level cols order_by <<<"$r"
            i=$((i + 1))
            file=$(printf '%02d-%s.copy' "$i" "${name//[^A-Za-z0-9_.]/_}")
            # COPY text format: one line per row (newlines in values are escaped).
            printf 'table\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$level" "$file" \
                "$(wc -l <"$OUT/$file")" "$(sha256sum "$OUT/$file" | cut -d' ' -f1)" "$cols"
        done
    } >"$OUT/manifest.tsv"
    local total
    total=$(awk -F'\t' '$1 == "table" { n += $5 } END { print n + 0 }' "$OUT/manifest.tsv")
    log "tenant $TENANT: $total rows in $i tables exported to $OUT ($(fmt_dur "$t0")); schema versions $versions"
}

cmd_tenant_import() {
    need "$URL" --url
    need "$IN" --in
    plain_path "$IN" --in
    local manifest="$IN/manifest.tsv"
    [[ -f $manifest ]] || die "$manifest not found"
    [[ $(awk -F'\t' '$1 == "format" { print $2 }' "$manifest") == "bi-data tenant export 1" ]] ||
        die "$manifest is not a bi-data tenant export"
    TENANT=$(awk -F'\t' '$1 == "tenant" { print $2 }' "$manifest")
    check_tenant
    local want have
    want=$(awk -F'\t' '$1 == "schema_versions" { print $2 }' "$manifest")
    have=$(schema_versions)
    [[ $want == "$have" ]] ||
        die "schema versions differ: the export has $want, the target has ${have:-none}: migrate the target to the same version first; nothing imported"
    # The target's tenant tables must be the export's, column for column.
    local want_tables have_tables
    want_tables=$(awk -F'\t' '$1 == "table" { print $2 "\t" $7 }' "$manifest" | sort)
    have_tables=$(tenant_tables | cut -f1,3 | sort)
    [[ $want_tables == "$have_tables" ]] ||
        die "the target's tenant tables differ from the export's: $(diff <(echo "$want_tables") <(echo "$have_tables") | head -n 5 | tr '\n' ' '); nothing imported"
    [[ $(q "$URL" "SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user") == t ]] ||
        die "the import needs a role that bypasses row-level security (a superuser or BYPASSRLS: COPY FROM refuses tables with row-level security)"
    local name level file rows sha cols kind
    while IFS=$'\t' read -r kind name level file rows sha cols; do
        [[ $kind == table ]] || continue
        [[ -f $IN/$file ]] || die "$IN/$file is missing"
        [[ $(sha256sum "$IN/$file" | cut -d' ' -f1) == "$sha" ]] || die "$IN/$file does not match its sha256 in the manifest"
        [[ $(wc -l <"$IN/$file") == "$rows" ]] || die "$IN/$file does not hold $rows rows"
    done <"$manifest"
    local script t0
    script=$(mktemp)
    CLEANUP+=("$script")
    t0=$(now_us)
    {
        echo "BEGIN;"
        echo "SET CONSTRAINTS ALL DEFERRED;"
        echo "DO \$\$ BEGIN"
        while IFS=$'\t' read -r kind name level file rows sha cols; do
            [[ $kind == table ]] || continue
            echo "  IF EXISTS (SELECT 1 FROM $name WHERE tenant_id = '$TENANT') THEN"
            echo "    RAISE EXCEPTION 'tenant $TENANT already has rows in $name: import refused, nothing changed';"
            echo "  END IF;"
        done <"$manifest"
        echo "END \$\$;"
        # Parents first (the manifest is in foreign-key order); deferrable
        # constraints are checked at COMMIT.
        while IFS=$'\t' read -r kind name level file rows sha cols; do
            [[ $kind == table ]] || continue
            echo "\\copy $name ($cols) FROM '$IN/$file'"
        done <"$manifest"
        echo "DO \$\$ BEGIN"
        while IFS=$'\t' read -r kind name level file rows sha cols; do
            [[ $kind == table ]] || continue
            echo "  IF (SELECT count(*) FROM $name WHERE tenant_id = '$TENANT') <> $rows THEN"
            echo "    RAISE EXCEPTION '$name: the file holds rows of another tenant or the count differs; nothing imported';"
            echo "  END IF;"
        done <"$manifest"
        echo "END \$\$;"
        echo "COMMIT;"
    } >"$script"
    tenant_psql -f "$script" >/dev/null || die "import of tenant $TENANT failed; the transaction was rolled back, nothing changed"
    local total
    total=$(awk -F'\t' '$1 == "table" { n += $5 } END { print n + 0 }' "$manifest")
    log "tenant $TENANT: $total rows imported in one transaction ($(fmt_dur "$t0"))"
}

case $CMD in
archive-setup) cmd_archive_setup ;;
wal-switch) cmd_wal_switch ;;
base) cmd_base ;;
verify) cmd_verify ;;
list) cmd_list ;;
restore) cmd_restore ;;
prune) cmd_prune ;;
tenant-export) cmd_tenant_export ;;
tenant-import) cmd_tenant_import ;;
*) die "unknown command '$CMD' (see --help)" ;;
esac
