# shellcheck shell=bash
# Shared helpers for the bi-data scripts: logging and stage timing.
# Sourced (not executed) by scripts/*.sh and .ci/run; needs bash >= 5
# (EPOCHREALTIME).

# Monotonic-enough wall clock in microseconds.
now_us() {
    local t=${EPOCHREALTIME:-}
    if [[ -n $t ]]; then
        printf '%s' "${t/./}"
    else
        printf '%s' "$(($(date +%s) * 1000000))"
    fi
}

# fmt_dur START_US [END_US] -> "12.345s"
fmt_dur() {
    local start=$1 end=${2:-$(now_us)}
    local d=$((end - start))
    ((d < 0)) && d=0
    printf '%d.%03ds' $((d / 1000000)) $(((d % 1000000) / 1000))
}

log() { printf '[%s] %s\n' "${LOG_TAG:-bi-data}" "$*" >&2; }
die() {
    log "ERROR: $*"
    exit 1
}

# stage NAME CMD ARGS... : runs CMD, prints its duration, records it in
# STAGE_REPORT, and returns CMD's exit status.
STAGE_REPORT=()
stage() {
    local name=$1
    shift
    local t0 rc=0
    t0=$(now_us)
    log "==> ${name}"
    "$@" || rc=$?
    local dur
    dur=$(fmt_dur "$t0")
    if ((rc == 0)); then
        log "<== ${name}: ok (${dur})"
        STAGE_REPORT+=("$(printf '%-34s ok      %s' "$name" "$dur")")
    else
        log "<== ${name}: FAILED with exit ${rc} (${dur})"
        STAGE_REPORT+=("$(printf '%-34s FAILED  %s (exit %d)' "$name" "$dur" "$rc")")
    fi
    return "$rc"
}

print_stage_report() {
    local line
    log "---- stage timings ----"
    for line in "${STAGE_REPORT[@]}"; do
        log "  $line"
    done
}

# step_begin NAME / step_end: timing for in-process steps (shell functions)
# that rely on `set -e`. Do not wrap such functions in `stage`: bash ignores
# errexit inside a function called as `f || ...`. If the script dies between
# begin and end, step_exit_trap names the step that failed.
CURRENT_STEP=""
CURRENT_STEP_T0=0
step_begin() {
    CURRENT_STEP=$1
    CURRENT_STEP_T0=$(now_us)
    log "==> ${CURRENT_STEP}"
}
step_end() {
    local note=${1:-ok}
    log "<== ${CURRENT_STEP}: ${note} ($(fmt_dur "$CURRENT_STEP_T0"))"
    CURRENT_STEP=""
}
# Use as: trap step_exit_trap EXIT
step_exit_trap() {
    local rc=$?
    if ((rc != 0)) && [[ -n $CURRENT_STEP ]]; then
        log "<== ${CURRENT_STEP}: FAILED with exit ${rc} ($(fmt_dur "$CURRENT_STEP_T0"))"
    fi
    return "$rc"
}
