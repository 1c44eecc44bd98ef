#!/usr/bin/env bash
# Side-by-side query latency benchmark on this machine: Strata (single
# process), Prometheus 2.42 (Debian, remote-write receiver) and
# VictoriaMetrics (Debian) run at the same time, each on 127.0.0.1 with free
# ports and a temp data dir, each stopped by PID on exit. strata-loadgen
# pushes once, through `strata-querybench tee`, which forwards every request
# body unchanged to all three, so they hold the very same samples. Once all
# three count the same number of series, `strata-querybench bench` times
# typical dashboard queries against each (interleaved) and prints median
# latencies, ratios to Prometheus and whether the results agree.
#
# Environment (defaults in brackets):
#   SERIES [100000]  ROUNDS [61]  INTERVAL [60s]: the data spans (ROUNDS-1) x INTERVAL,
#     ending ~1 minute before the push starts
#   CONCURRENCY [4]  BATCH_SERIES [2000]  INSTANCES [100]  MAX_DURATION [300] seconds of pushing
#   RUNS [7]  WARMUP [1]  RANGES [1h,6h] (clipped to the data)  STEPS [15s,60s]
#   BENCH_MAX_DURATION [20m]  MAX_PER_QUERY [60s] per query and target
#   ONLY [all]: a regex of query names to run (rate_by_job p99_by_job topk_instance avg_load count_by_job)
#   BENCH_ARGS []: more `strata-querybench bench` arguments, split on spaces
#     (e.g. '--query one=node_load1{job="api"} --query vec=vector(1)' replaces the queries)
#   PERF [0]: 1 = also profile Strata (perf record -e cpu-clock -g) while it
#     repeats PERF_QUERY [p99_by_job] over PERF_RANGE [1h] at PERF_STEP [15s]
#   SKIP_BUILD [0]  KEEP [0] keep the temp dir  READY_TIMEOUT [60] seconds
#   COUNT_TIMEOUT [180] seconds for all three to count every series
#   QUIET_TIMEOUT [60] seconds to wait for the servers' background work to calm down
#   CARGO_TARGET_DIR [$HOME/.cache/strata-target]
# Exit status: 0 when the data loaded everywhere and every query answered, else 1.
set -euo pipefail

SERIES=${SERIES:-100000}
ROUNDS=${ROUNDS:-61}
INTERVAL=${INTERVAL:-60s}
CONCURRENCY=${CONCURRENCY:-4}
BATCH_SERIES=${BATCH_SERIES:-2000}
INSTANCES=${INSTANCES:-100}
MAX_DURATION=${MAX_DURATION:-300}
RUNS=${RUNS:-7}
WARMUP=${WARMUP:-1}
RANGES=${RANGES:-1h,6h}
STEPS=${STEPS:-15s,60s}
BENCH_MAX_DURATION=${BENCH_MAX_DURATION:-20m}
MAX_PER_QUERY=${MAX_PER_QUERY:-60s}
ONLY=${ONLY:-}
BENCH_ARGS=${BENCH_ARGS:-}
PERF=${PERF:-0}
PERF_QUERY=${PERF_QUERY:-p99_by_job}
PERF_RANGE=${PERF_RANGE:-1h}
PERF_STEP=${PERF_STEP:-15s}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
READY_TIMEOUT=${READY_TIMEOUT:-60}
COUNT_TIMEOUT=${COUNT_TIMEOUT:-180}
QUIET_TIMEOUT=${QUIET_TIMEOUT:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=$CARGO_TARGET_DIR/release/strata
LOADGEN=$CARGO_TARGET_DIR/release/strata-loadgen
QB=$CARGO_TARGET_DIR/release/strata-querybench
HOST=127.0.0.1 # the only address this script ever uses
TARGETS="strata prometheus victoriametrics"

log() { printf 'query_compare: %s\n' "$*" >&2; }
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-query-compare.XXXXXX")
PIDS=()


cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        stop_pid "$pid"
    done
    if [[ $KEEP == 1 ]]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages() {
    local sudo=()
    command -v prometheus >/dev/null && command -v victoria-metrics >/dev/null && return 0
    if [[ $(id -u) != 0 ]]; then
        sudo=(sudo)
    fi
    log "installing prometheus and victoria-metrics (Debian packages)"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends prometheus victoria-metrics >/dev/null
}

declare -A PID_OF PUSH_URL QUERY_URL BASE_URL

# start_target NAME: starts it in the background; fills PID_OF, PUSH_URL, QUERY_URL.
start_target() {
    local name=$1 dir=$WORK/$1 port grpc_port pid ready
    mkdir -p "$dir"
    port=$(free_port)
    case $name in
    strata)
        grpc_port=$(free_port)
        (cd "$dir" && exec "$STRATA" \
            --server.http-listen-address=$HOST --server.http-listen-port="$port" \
            --server.grpc-listen-address=$HOST --server.grpc-listen-port="$grpc_port" \
            --ring.replication-factor=1 --auth.enabled=false \
            --limits.ingestion-rate=1e9 --limits.ingestion-burst-size=1000000000 \
            --limits.max-series-per-metric=0 --limits.max-series-per-tenant=0 \
            --querier.engine.max-samples=500000000 \
            >"$dir/log" 2>&1) &
        pid=$!
        PUSH_URL[$name]=http://$HOST:$port/api/v1/push
        QUERY_URL[$name]=http://$HOST:$port/prometheus
        ready=http://$HOST:$port/ready
        ;;
    prometheus)
        printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$dir/prometheus.yml"
        prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
            --web.listen-address=$HOST:"$port" --web.enable-remote-write-receiver \
            >"$dir/log" 2>&1 &
        pid=$!
        PUSH_URL[$name]=http://$HOST:$port/api/v1/write
        QUERY_URL[$name]=http://$HOST:$port
        ready=http://$HOST:$port/-/ready
        ;;
    victoriametrics)
        victoria-metrics -storageDataPath="$dir/data" -httpListenAddr=$HOST:"$port" \
            -retentionPeriod=100y >"$dir/log" 2>&1 &
        pid=$!
        PUSH_URL[$name]=http://$HOST:$port/api/v1/write
        # nocache=1: no rollup result cache (repeats would be served from it; Prometheus has none).
        QUERY_URL[$name]="http://$HOST:$port?nocache=1"
        ready=http://$HOST:$port/health
        ;;
    esac
    BASE_URL[$name]=http://$HOST:$port
    PID_OF[$name]=$pid
    PIDS+=("$pid")
    wait_ready "$name" "$pid" "$ready"
}

# json_field FILE KEY: a top-level number (or true/false/null) from a flat JSON object.

cpu_ticks() {
    awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0
}

# wait_quiet: until every server uses < 10% of a core over 2 s (their
# background work, e.g. VictoriaMetrics' merges, would skew the timings), or QUIET_TIMEOUT.
wait_quiet() {
    local deadline=$((SECONDS + QUIET_TIMEOUT)) name busy before after
    declare -A before_of
    while ((SECONDS < deadline)); do
        for name in $TARGETS; do
            before_of[$name]=$(cpu_ticks "${PID_OF[$name]}")
        done
        sleep 2
        busy=""
        for name in $TARGETS; do
            before=${before_of[$name]}
            after=$(cpu_ticks "${PID_OF[$name]}")
            # USER_HZ is 100: 20 ticks in 2 s is 10% of a core.
            if ((after - before >= 20)); then
                busy+=" $name($((after - before))%/2)"
            fi
        done
        if [[ -z $busy ]]; then
            return 0
        fi
        log "waiting for background work:$busy"
    done
    log "still busy after ${QUIET_TIMEOUT}s; timing anyway"
}

# ------------------------------------------------------------------------------------------------

command -v curl >/dev/null || {
    log "curl is needed"
    exit 2
}
install_packages
if [[ $SKIP_BUILD != 1 ]]; then
    log "building strata, strata-loadgen and strata-querybench (release)"
    (cd "$ROOT" && cargo build --release -j 2 --bin strata --bin strata-loadgen --bin strata-querybench)
fi
for bin in "$STRATA" "$LOADGEN" "$QB"; do
    [[ -x $bin ]] || {
        log "$bin is missing (build it or unset SKIP_BUILD)"
        exit 2
    }
done

log "work dir $WORK"
# Private copies: the target dir is shared, and a rebuild during the run
# would otherwise change the binaries under us (and perf's symbols).
mkdir -p "$WORK/bin"
cp "$STRATA" "$LOADGEN" "$QB" "$WORK/bin/"
STRATA=$WORK/bin/strata
LOADGEN=$WORK/bin/strata-loadgen
QB=$WORK/bin/strata-querybench
for target in $TARGETS; do
    start_target "$target" || exit 1
    log "$target: pid ${PID_OF[$target]}, queries at ${QUERY_URL[$target]}"
done

# The fan-out: one push, the same bytes to all three.
tee_args=()
for target in $TARGETS; do
    tee_args+=(--target "$target=${PUSH_URL[$target]}")
done
mkdir -p "$WORK/tee"
"$QB" tee --listen $HOST:0 --port-file "$WORK/tee/port" --max-lifetime 2h "${tee_args[@]}" \
    >"$WORK/tee/log" 2>&1 &
TEE_PID=$!
PIDS+=("$TEE_PID")
for _ in $(seq 1 100); do
    [[ -s $WORK/tee/port ]] && break
    kill -0 "$TEE_PID" 2>/dev/null || break
    sleep 0.1
done
[[ -s $WORK/tee/port ]] || {
    log "the tee did not start; its log:"
    cat "$WORK/tee/log" >&2
    exit 1
}
TEE_URL=http://$HOST:$(cat "$WORK/tee/port")

log "loading $SERIES series x $ROUNDS rounds at $INTERVAL into all three ($BATCH_SERIES series a request, concurrency $CONCURRENCY)"
load_started=$SECONDS
rc=0
timeout --kill-after=10 $((MAX_DURATION + 300)) "$LOADGEN" \
    --url "$TEE_URL/api/v1/write" --target-name all-three --header 'X-Scope-OrgID: bench' \
    --series "$SERIES" --rounds "$ROUNDS" --interval "$INTERVAL" --batch-series "$BATCH_SERIES" \
    --concurrency "$CONCURRENCY" --instances "$INSTANCES" --max-duration "${MAX_DURATION}s" \
    --json >"$WORK/loadgen.json" 2>"$WORK/loadgen.log" || rc=$?
curl -fsS --max-time 5 "$TEE_URL/stats" >"$WORK/tee/stats.json" || true
stop_pid "$TEE_PID"
if ((rc != 0)); then
    log "strata-loadgen exited $rc after $((SECONDS - load_started))s:"
    tail -n 8 "$WORK/loadgen.log" >&2 || true
    log "per-target forwarding: $(sed 's/.*"targets":{\(.*\)}}$/\1/' "$WORK/tee/stats.json" 2>/dev/null)"
    exit 1
fi
log "loaded in $((SECONDS - load_started))s: $(json_field "$WORK/loadgen.json" samples_per_second) samples/s through the tee"

first_ms=$(json_field "$WORK/tee/stats.json" first_ms)
last_ms=$(json_field "$WORK/tee/stats.json" last_ms)
interval_ms=$(json_field "$WORK/tee/stats.json" interval_ms)
if ! [[ $first_ms =~ ^[0-9]+$ && $last_ms =~ ^[0-9]+$ ]]; then
    log "the tee saw no samples: $(cat "$WORK/tee/stats.json" 2>/dev/null)"
    exit 1
fi
log "data: $(((last_ms - first_ms) / 1000))s of samples, every ${interval_ms}ms, ending $(((${EPOCHSECONDS:-$(date +%s)} * 1000 - last_ms) / 1000))s ago"

target_args=()
pid_args=()
bench_args=()
[[ -n $ONLY ]] && bench_args+=(--only "$ONLY")
# shellcheck disable=SC2206 # split on spaces on purpose
[[ -n $BENCH_ARGS ]] && bench_args+=($BENCH_ARGS)
for target in $TARGETS; do
    target_args+=(--target "$target=${QUERY_URL[$target]}")
    pid_args+=(--pid "$target=${PID_OF[$target]}")
done

log "waiting until all three count $SERIES series (up to ${COUNT_TIMEOUT}s)"
deadline=$((SECONDS + COUNT_TIMEOUT))
counted=0
while ((SECONDS < deadline)); do
    curl -fsS --max-time 10 -o /dev/null "${BASE_URL[victoriametrics]}/internal/force_flush" || true
    if "$QB" count "${target_args[@]}" --header 'X-Scope-OrgID: bench' \
        --time-ms $((last_ms + 1000)) --expect "$SERIES" >"$WORK/count.txt" 2>&1; then
        counted=1
        break
    fi
    sleep 2
done
log "counts: $(tr '\n' ' ' <"$WORK/count.txt")"
if ((!counted)); then
    log "the three did not count $SERIES series each within ${COUNT_TIMEOUT}s"
    exit 1
fi

wait_quiet

log "timing queries ($RUNS runs each after $WARMUP warm-up, targets interleaved)"
rc=0
"$QB" bench "${target_args[@]}" "${pid_args[@]}" --header 'X-Scope-OrgID: bench' \
    --data-start-ms "$first_ms" --data-end-ms "$last_ms" --sample-interval "${interval_ms}ms" \
    --runs "$RUNS" --warmup "$WARMUP" --range "$RANGES" --step "$STEPS" \
    --max-duration "$BENCH_MAX_DURATION" --max-per-query "$MAX_PER_QUERY" "${bench_args[@]}" \
    --json >"$WORK/bench.json" 2>"$WORK/bench.txt" || rc=$?
# The table (and the notes under it) without the progress lines.
echo
grep -v '^strata-querybench: ' "$WORK/bench.txt" || true
grep '^strata-querybench: \(warning\|error\)' "$WORK/bench.txt" >&2 || true
echo "($SERIES series x $ROUNDS rounds every $INTERVAL; servers share the 2 cores with each other and the client; VictoriaMetrics with nocache=1)"

if [[ $PERF == 1 ]]; then
    if command -v perf >/dev/null; then
        log "profiling Strata during $PERF_QUERY $PERF_RANGE @$PERF_STEP"
        perf record -e cpu-clock -F 999 -g -p "${PID_OF[strata]}" -o "$WORK/perf.data" \
            >"$WORK/perf.log" 2>&1 &
        perf_pid=$!
        PIDS+=("$perf_pid")
        sleep 1
        "$QB" bench --target "strata=${QUERY_URL[strata]}" --header 'X-Scope-OrgID: bench' \
            --data-start-ms "$first_ms" --data-end-ms "$last_ms" --only "^${PERF_QUERY}\$" \
            --runs 5 --warmup 0 --range "$PERF_RANGE" --step "$PERF_STEP" --no-instant \
            >"$WORK/perf-bench.txt" 2>&1 || true
        kill -INT "$perf_pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$perf_pid" 2>/dev/null || break
            sleep 0.1
        done
        perf report -i "$WORK/perf.data" --stdio --no-children --sort symbol --percent-limit 1.5 \
            -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | sed 's/[ -]*$//' | head -n 30 >"$WORK/perf.txt" || true
        echo
        echo "Strata's CPU profile during $PERF_QUERY $PERF_RANGE @$PERF_STEP (self time, >= 1.5%):"
        cat "$WORK/perf.txt"
        [[ $KEEP == 1 ]] || log "rerun with KEEP=1 to keep perf.data for perf report"
    else
        log "PERF=1 but perf is missing (apt-get install linux-perf)"
    fi
fi

if ((rc != 0)); then
    log "some queries failed (see the notes under the table)"
    exit 1
fi
