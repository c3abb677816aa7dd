#!/usr/bin/env bash
# bench/xsk-reflect.sh: the bare AF_XDP reflector (`xturn-bench xsk-reflect`, xturn's ring
# module) against the bare XDP_TX reflector (`xdp-reflect`) under the same kernel-bypass
# load (`xdp-load`: live-frame BPF_PROG_RUN from the client namespace), in the NETLAB
# topology of bench/lab.sh (threaded NAPI, relay side pinned to RELAY_CPU, generator and
# outer NAPI threads to GEN_CPU). Prints each run's summary; the JSON results go to OUT.
#
# Usage (as root):  bash bench/xsk-reflect.sh
# Environment: DURATION (seconds per load, default 6), GEN_CPU (0), RELAY_CPU (1),
#              OUT (default: a new /tmp directory), NO_BUILD=1 to skip the release build.
# Bounded: every load stops by itself; namespaces and processes are removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lab.sh"
DURATION=${DURATION:-6}
GEN_CPU=${GEN_CPU:-0}
RELAY_CPU=${RELAY_CPU:-1}
OUT=${OUT:-$(mktemp -d /tmp/xsk-reflect.XXXXXX)}
log() { echo "xsk-reflect.sh: $*" >&2; }

[ "$(id -u)" = 0 ] || { log "run as root (it creates network namespaces)"; exit 1; }
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet -p xturn-bench
fi
B=$ROOT/target/release/xturn-bench
P=xx$(($$ % 10000))
NC=${P}c NR=${P}r
PIDS=()
cleanup() {
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    lab_down "$P"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$OUT"

lab_up "$P" "$GEN_CPU" "$RELAY_CPU"
RC_MAC=$(ip netns exec "$NR" cat "/sys/class/net/${P}rc/address")

wait_line() { # FILE TEXT: at most 10 s
    local _
    for _ in $(seq 1 100); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    log "no \"$2\" in $1:"
    cat "$1" >&2
    return 1
}

load() { # NAME PID: xdp-load against whatever reflects on the relay's veth
    wait_quiet "$GEN_CPU" "$RELAY_CPU" || log "$1: the machine is not quiet ($LAB_BUSY); going on"
    ip netns exec "$NC" taskset -c "$GEN_CPU" "$B" xdp-load --iface "${P}ca" --dst-mac "$RC_MAC" \
        --relay-iface "${P}rc" --relay-pid "$2" --server 192.0.2.1:3478 --cpus "$GEN_CPU" \
        --relay-cpus "$RELAY_CPU" --relay-threads "$LAB_RELAY_NAPI_PIDS" --duration "$DURATION" \
        --json-out "$OUT/$1-load.json" --quiet
}

xsk() { # NAME ARGS...: the AF_XDP reflector on every queue of the relay's veth, all on RELAY_CPU
    local name=$1
    shift
    ip netns exec "$NR" "$B" xsk-reflect "${P}rc" --cpus "$RELAY_CPU" --seconds $((DURATION + 8)) \
        --json-out "$OUT/$name.json" "$@" >"$OUT/$name.txt" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    wait_line "$OUT/$name.txt" "xsk-reflect:"
    log "$name: $(head -1 "$OUT/$name.txt")"
    load "$name" "$pid"
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" || true
    sed 's/^/    /' "$OUT/$name.txt" >&2
}

# (Not --busy-poll: on a core shared with the NAPI thread, spinning only takes its time.)
xsk xsk-reflect

ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" xdp-reflect "${P}rc" --duration 60 >"$OUT/xdp-reflect.txt" 2>&1 &
XR=$!
PIDS+=("$XR")
wait_line "$OUT/xdp-reflect.txt" "xdp-reflect:"
load xdp-reflect "$XR"
kill -TERM "$XR" 2>/dev/null || true
wait "$XR" || true
log "results in $OUT"
