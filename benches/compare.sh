#!/usr/bin/env bash
# Side-by-side remote-write ingestion benchmark on this machine: the same
# strata-loadgen traffic pushed to Strata (single process), Prometheus 2.42
# (Debian, remote-write receiver) and VictoriaMetrics (Debian), one after the
# other, each on 127.0.0.1 with free ports and a temp data dir, each stopped
# by PID on exit. Prints samples/s, CPU seconds per 1M samples and RSS bytes
# per active series, with ratios to Prometheus.
#
# Environment (defaults in brackets):
#   SERIES [50000]  ROUNDS [10]  CONCURRENCY [4]  BATCH_SERIES [2000]
#   INSTANCES [100]  SETTLE [5] seconds before reading RSS
#   MAX_DURATION [120] seconds of pushing per target
#   TARGETS ["strata prometheus victoriametrics"]
#   SKIP_BUILD [0]  KEEP [0] keep the temp dir  READY_TIMEOUT [60] seconds
#   CARGO_TARGET_DIR [$HOME/.cache/strata-target]
# Exit status: 0 when every target acknowledged every sample, else 1.
set -euo pipefail

SERIES=${SERIES:-50000}
ROUNDS=${ROUNDS:-10}
CONCURRENCY=${CONCURRENCY:-4}
BATCH_SERIES=${BATCH_SERIES:-2000}
INSTANCES=${INSTANCES:-100}
SETTLE=${SETTLE:-5}
MAX_DURATION=${MAX_DURATION:-120}
TARGETS=${TARGETS:-"strata prometheus victoriametrics"}
SKIP_BUILD=${SKIP_BUILD:-0}
KEEP=${KEEP:-0}
READY_TIMEOUT=${READY_TIMEOUT:-60}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$HOME/.cache/strata-target}

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=$CARGO_TARGET_DIR/release/strata
LOADGEN=$CARGO_TARGET_DIR/release/strata-loadgen
HOST=127.0.0.1 # the only address this script ever uses

log() { printf 'compare: %s\n' "$*" >&2; }
# shellcheck source=benches/lib.sh
source "$ROOT/benches/lib.sh"

WORK=$(mktemp -d "${TMPDIR:-/tmp}/strata-compare.XXXXXX")
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
    local need=0 sudo=()
    [[ " $TARGETS " == *" prometheus "* ]] && ! command -v prometheus >/dev/null && need=1
    [[ " $TARGETS " == *" victoriametrics "* ]] && ! command -v victoria-metrics >/dev/null && need=1
    ((need)) || return 0
    if [[ $(id -u) != 0 ]]; then
        sudo=(sudo)
    fi
    log "installing prometheus and victoria-metrics (Debian packages)"
    "${sudo[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends prometheus victoria-metrics >/dev/null
}

# start_target NAME: starts it in the background; sets PID, PUSH_URL.
start_target() {
    local name=$1 dir=$WORK/$1 port grpc_port
    mkdir -p "$dir"
    port=$(free_port)
    case $name in
    strata)
        grpc_port=$(free_port)
        (cd "$dir" && exec "$STRATA" \
            --server.http-listen-address=$HOST --server.http-listen-port="$port" \
            --server.grpc-listen-address=$HOST --server.grpc-listen-port="$grpc_port" \
            --ring.replication-factor=1 --auth.enabled=false \
            --limits.ingestion-rate=100000000 --limits.ingestion-burst-size=100000000 \
            --limits.max-series-per-metric=0 --limits.max-series-per-tenant=0 \
            >"$dir/log" 2>&1) &
        PID=$!
        PUSH_URL=http://$HOST:$port/api/v1/push
        READY_URL=http://$HOST:$port/ready
        ;;
    prometheus)
        printf 'global:\n  scrape_interval: 15s\nscrape_configs: []\n' >"$dir/prometheus.yml"
        prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
            --web.listen-address=$HOST:"$port" --web.enable-remote-write-receiver \
            >"$dir/log" 2>&1 &
        PID=$!
        PUSH_URL=http://$HOST:$port/api/v1/write
        READY_URL=http://$HOST:$port/-/ready
        ;;
    victoriametrics)
        victoria-metrics -storageDataPath="$dir/data" -httpListenAddr=$HOST:"$port" \
            -retentionPeriod=100y >"$dir/log" 2>&1 &
        PID=$!
        PUSH_URL=http://$HOST:$port/api/v1/write
        READY_URL=http://$HOST:$port/health
        ;;
    *)
        log "unknown target $name (known: strata prometheus victoriametrics)"
        return 1
        ;;
    esac
    PIDS+=("$PID")
    wait_ready "$name" "$PID" "$READY_URL"
}

# json_field FILE KEY: a top-level number (or true/false/null) from the loadgen's JSON line.

# ------------------------------------------------------------------------------------------------

for target in $TARGETS; do
    case $target in strata | prometheus | victoriametrics) ;; *)
        log "unknown target $target (known: strata prometheus victoriametrics)"
        exit 2
        ;;
    esac
done
command -v curl >/dev/null || {
    log "curl is needed"
    exit 2
}
install_packages
if [[ $SKIP_BUILD != 1 ]]; then
    log "building strata and strata-loadgen (release)"
    (cd "$ROOT" && cargo build --release -j 2 --bin strata --bin strata-loadgen)
fi
for bin in "$LOADGEN" $([[ " $TARGETS " == *" strata "* ]] && echo "$STRATA"); do
    [[ -x $bin ]] || {
        log "$bin is missing (build it or unset SKIP_BUILD)"
        exit 2
    }
done

log "traffic: $SERIES series x $ROUNDS rounds, $BATCH_SERIES series a request, concurrency $CONCURRENCY; work dir $WORK"
FAILED=()
for target in $TARGETS; do
    log "--- $target"
    result=$WORK/$target.json
    : >"$result"
    if ! start_target "$target"; then
        FAILED+=("$target")
        continue
    fi
    rc=0
    timeout --kill-after=10 $((MAX_DURATION + 300)) "$LOADGEN" \
        --url "$PUSH_URL" --target-name "$target" --header 'X-Scope-OrgID: bench' \
        --series "$SERIES" --rounds "$ROUNDS" --batch-series "$BATCH_SERIES" \
        --concurrency "$CONCURRENCY" --instances "$INSTANCES" \
        --max-duration "${MAX_DURATION}s" --pid "$PID" --settle "$SETTLE" --json \
        >"$result" || rc=$?
    if ((rc != 0)); then
        log "$target: strata-loadgen exited $rc; last lines of $target's log:"
        tail -n 5 "$WORK/$target/log" >&2 || true
        FAILED+=("$target")
    fi
    stop_pid "$PID"
done

# ------------------------------------------------------------------------------------------------

base=$WORK/prometheus.json
echo
printf '%s series x %s rounds = %s samples per target, concurrency %s, %s series a request (2 cores, shared with the load generator)\n' \
    "$SERIES" "$ROUNDS" "$((SERIES * ROUNDS))" "$CONCURRENCY" "$BATCH_SERIES"
printf '%-16s %12s %14s %14s %10s %10s %10s  %s\n' target samples/s "CPU s/1M" "RSS B/series" "x rate" "x CPU" "x RSS" result
for target in $TARGETS; do
    f=$WORK/$target.json
    rate=$(json_field "$f" samples_per_second)
    cpu=$(json_field "$f" cpu_seconds_per_million_samples)
    rss=$(json_field "$f" rss_bytes_per_active_series)
    ok=$(json_field "$f" ok)
    base_rate=$(json_field "$base" samples_per_second)
    base_cpu=$(json_field "$base" cpu_seconds_per_million_samples)
    base_rss=$(json_field "$base" rss_bytes_per_active_series)
    result=ok
    [[ $ok == true ]] || result="FAILED (log: $WORK/$target; rerun with KEEP=1 to keep it)"
    [[ -s $f ]] || result="FAILED (no report)"
    awk -v t="$target" -v r="$rate" -v c="$cpu" -v m="$rss" -v br="$base_rate" -v bc="$base_cpu" -v bm="$base_rss" -v res="$result" '
        function num(x) { return x != "" && x != "null" }
        function fmt(x, p) { return num(x) ? sprintf("%." p "f", x) : "n/a" }
        function ratio(x, b) { return (num(x) && num(b) && b + 0 > 0) ? sprintf("%.2f", x / b) : "n/a" }
        BEGIN { printf "%-16s %12s %14s %14s %10s %10s %10s  %s\n", t, fmt(r, 0), fmt(c, 2), fmt(m, 0), ratio(r, br), ratio(c, bc), ratio(m, bm), res }'
done
echo "(x columns: this target / Prometheus; higher rate is better, lower CPU and RSS are better)"

if ((${#FAILED[@]})); then
    log "failed: ${FAILED[*]}"
    exit 1
fi
