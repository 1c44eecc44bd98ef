# shellcheck shell=bash
# Helpers shared by the benchmark scripts (sourced, not run). They expect
# HOST, WORK (a directory with one sub-directory per target, each holding
# its `log`), READY_TIMEOUT and a `log` function from the sourcing script.

# stop_pid PID: SIGTERM, wait up to 10 s, then SIGKILL.
stop_pid() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || return 0
    for _ in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# A port nothing listens on, not handed out before in this run.
USED_PORTS=" "
free_port() {
    local port
    for _ in $(seq 1 200); do
        port=$((20000 + RANDOM % 40000))
        [[ $USED_PORTS == *" $port "* ]] && continue
        if ! (exec 3<>"/dev/tcp/$HOST/$port") 2>/dev/null; then
            USED_PORTS+="$port "
            echo "$port"
            return 0
        fi
    done
    log "no free port found"
    return 1
}

# wait_ready NAME PID URL: poll URL until it answers 2xx, the process dies, or READY_TIMEOUT.
wait_ready() {
    local name=$1 pid=$2 url=$3 deadline=$((SECONDS + READY_TIMEOUT))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited before it was ready; its log:"
            tail -n 20 "$WORK/$name/log" >&2 || true
            return 1
        fi
        if curl -fsS --max-time 2 -o /dev/null "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    log "$name not ready at $url after ${READY_TIMEOUT}s; its log:"
    tail -n 20 "$WORK/$name/log" >&2 || true
    return 1
}

# json_field FILE KEY: a scalar field of a one-line JSON report.
json_field() {
    [[ -s $1 ]] || return 0
    sed -n "s/.*\"$2\":\([^,}]*\).*/\1/p" "$1" | head -n 1
}
