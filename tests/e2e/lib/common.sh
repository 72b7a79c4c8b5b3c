# shellcheck shell=bash
# Shared plumbing of the e2e harness: logging, the work directory, process tracking,
# checks and the result matrix. Sourced by tests/e2e/run.sh.

E2E_PREFIX=ffe                       # every namespace, interface and user starts with this
E2E_LOCK=/run/ffe-e2e.lock           # one run at a time on a machine
E2E_USER_COMMENT="ftpfront e2e test user (tests/e2e/run.sh)"

RUN_STARTED=$SECONDS
STARTED_PIDS=()                      # every background process this run started
RESULTS=()                           # "scenario|server|client|result|MiB/s|note"
FAILURES=0
WORK=""

say() { printf '%s\n' "$*"; }
step() { printf '\n==> [%3ds] %s\n' "$((SECONDS - RUN_STARTED))" "$*"; }
die() { printf 'e2e: %s\n' "$*" >&2; exit 1; }

# Finds a program on FTP_TESTS_EXTRA_PATH, PATH, or in the extracted Debian packages.
find_program() {
    local name=$1 pkg=${2:-} dir
    local prefix=${FTP_TESTS_PREFIX:-/opt/ftpfront-test}
    local IFS=:
    for dir in ${FTP_TESTS_EXTRA_PATH:-} $PATH ${pkg:+$prefix/$pkg/usr/sbin} /usr/sbin /sbin; do
        if [[ -n "$dir" && -x "$dir/$name" && -f "$dir/$name" ]]; then
            printf '%s\n' "$dir/$name"
            return 0
        fi
    done
    return 1
}

# Only one harness may own the ffe-* names at a time: wait for a running one to finish.
take_lock() {
    exec 9>"$E2E_LOCK"
    if ! flock -n 9; then
        say "e2e: another run holds $E2E_LOCK; waiting for it (up to 10 minutes)"
        flock -w 600 9 || die "could not take $E2E_LOCK"
    fi
}

make_workdir() {
    WORK=$(mktemp -d "/tmp/${E2E_PREFIX}-e2e.XXXXXX")
    chmod 755 "$WORK" # the FTP user's home lives below it
    mkdir -p "$WORK/checks" "$WORK/proxy" "$WORK/servers" "$WORK/clients"
}

# spawn_in NS COMMAND...: starts COMMAND in namespace ffe-NS in the background and
# remembers its pid (`ip netns exec` execs, so it is the program's own) in LAST_PID and for
# the teardown.
spawn_in() {
    local ns=$1
    shift
    ip netns exec "$E2E_PREFIX-$ns" "$@" &
    LAST_PID=$!
    STARTED_PIDS+=("$LAST_PID")
}

# Stops a process this run started (TERM, then KILL after 5 s) and forgets it, so that the
# teardown never signals a recycled pid.
stop_pid() {
    local pid=$1 kept=() p
    for p in "${STARTED_PIDS[@]}"; do
        if [[ "$p" != "$pid" ]]; then kept+=("$p"); fi
    done
    STARTED_PIDS=("${kept[@]}")
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# Ends a process and its descendants (a check's background clients).
kill_tree() {
    local child
    for child in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
        kill_tree "$child"
    done
    kill -TERM "$1" 2>/dev/null || true
}

stop_started_processes() {
    local pid
    for pid in "${STARTED_PIDS[@]}"; do
        stop_pid "$pid"
    done
}

# Waits until "$@" succeeds, for at most $1 seconds.
wait_until() {
    local seconds=$1 deadline
    shift
    deadline=$((SECONDS + seconds))
    until "$@" 2>/dev/null; do
        ((SECONDS < deadline)) || return 1
        sleep 0.1
    done
}

# ---------------------------------------------------------------------------------------
# Checks and the matrix
#
# run_check SCENARIO SERVER CLIENT FUNCTION ARGS... runs FUNCTION in a subshell with
# `set -e`, its output going to a log of its own; a check reports a transfer speed with
# `report_speed MIBS` and a remark with `report_note TEXT`. A failing check prints its log
# and the tail of the proxy log, and the run goes on. Never call run_check inside an `if`,
# `&&` or `||`: bash would silently switch `set -e` off in the check.

CHECK_DIR=""
run_check() {
    local scenario=$1 server=$2 client=$3
    shift 3
    local n=$((${#RESULTS[@]} + 1)) status=0 started=$SECONDS proxy_mark
    proxy_mark=$(proxy_log_length)
    CHECK_DIR="$WORK/checks/$(printf '%03d' "$n")"
    mkdir -p "$CHECK_DIR"
    (
        set -euo pipefail
        trap 'for job in $(jobs -p); do kill_tree "$job"; done' EXIT
        "$@"
    ) >"$CHECK_DIR/log" 2>&1 &
    wait $! || status=$?
    local speed note result=pass
    speed=$(cat "$CHECK_DIR/speed" 2>/dev/null || true)
    note=$(cat "$CHECK_DIR/note" 2>/dev/null || true)
    if ((status != 0)); then
        result=FAIL
        FAILURES=$((FAILURES + 1))
    fi
    RESULTS+=("$scenario|$server|$client|$result|$speed|$note")
    printf '  %-4s %-40s %-10s %-11s %6s  %ss%s\n' "$result" "$scenario" "$server" "$client" \
        "${speed:+$speed}" "$((SECONDS - started))" "${note:+  ($note)}"
    if ((status != 0)); then
        say "  ---- log of the failed check (exit $status) ----"
        sed 's/^/  | /' "$CHECK_DIR/log" | tail -n 80
        show_proxy_log_since "$proxy_mark"
        if [[ -n "${SERVER_IP[$server]:-}" ]]; then show_server_logs "$server"; fi
        say "  ---- end ----"
    fi
}

record_not_applicable() {
    RESULTS+=("$1|$2|$3|n/a||$4")
    printf '  %-4s %-40s %-10s %-11s %6s  %s\n' n/a "$1" "$2" "$3" "" "($4)"
}

report_speed() { printf '%s' "$1" >"$CHECK_DIR/speed"; }
report_note() { printf '%s' "$*" >"$CHECK_DIR/note"; }

# A failing assertion inside a check: prints why and fails the check.
fail() {
    printf 'ASSERTION FAILED: %s\n' "$*" >&2
    return 1
}

# The short matrix: one row per server x client, one column per scenario 1-7 (pass only if
# every check of that scenario passed), and the speeds of the 50 MiB transfers.
print_matrix() {
    local servers=$1 clients=$2
    step "results ($(((SECONDS - RUN_STARTED) / 60))m$(((SECONDS - RUN_STARTED) % 60))s)"
    local -A cell=() get=() put=()
    local row scenario server client result speed note n c key
    for row in "${RESULTS[@]}"; do
        IFS='|' read -r scenario server client result speed note <<<"$row"
        n=${scenario%% *}
        for c in ${client//+/ }; do
            key="$server|$c|$n"
            case "${cell[$key]:-}|$result" in
                FAIL\|* | *\|FAIL) cell[$key]=FAIL ;;
                pass\|* | *\|pass) cell[$key]=pass ;;
                *) cell[$key]=$result ;;
            esac
            if [[ $scenario == *download*50* ]]; then get["$server|$c"]=$speed; fi
            if [[ $scenario == *upload*50* ]]; then put["$server|$c"]=$speed; fi
        done
    done
    printf '%-10s %-7s' server client
    for n in 1 2 3 4 5 6 7; do printf ' %-5s' "$n"; done
    printf ' %9s %9s\n' "get MiB/s" "put MiB/s"
    for server in $servers; do
        for client in $clients; do
            printf '%-10s %-7s' "$server" "$client"
            for n in 1 2 3 4 5 6 7; do printf ' %-5s' "${cell["$server|$client|$n"]:--}"; done
            printf ' %9s %9s\n' "${get["$server|$client"]:--}" "${put["$server|$client"]:--}"
        done
    done
    say "(1 no proxy: LIST/RETR fail | 2 LIST, MLSD, 50 MiB get+put | 3 227s public | 4 active"
    say " mode refused | 5 foreign IP refused | 6 same NAT at once | 7 one data port; - = not run)"
}

# The verdict: every failed check by name (their logs were printed when they failed).
print_summary() {
    local row scenario server client result speed note
    say ""
    if ((FAILURES > 0)); then
        say "e2e: $FAILURES of ${#RESULTS[@]} checks FAILED:"
        for row in "${RESULTS[@]}"; do
            IFS='|' read -r scenario server client result speed note <<<"$row"
            if [[ $result == FAIL ]]; then say "  $scenario ($server, $client)"; fi
        done
    else
        say "e2e: all ${#RESULTS[@]} checks passed"
    fi
}
