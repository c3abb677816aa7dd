#!/usr/bin/env bash
# bench/compare.sh: the same loads against coturn, against xturn on sockets, (STUN only)
# against xturn --xdp on the client-side veth, and (TURN data) against xturn with the
# AF_XDP forwarder (--xdp on both relay veths), in the standard NETLAB topology; then
# kernel-bypass loads: the XDP Binding responder against a bare XDP_TX reflector, the
# AF_XDP forwarder against a bare AF_XDP reflector (ChannelData frames with the 5-tuples
# of real allocations), and the XDP programs' micro-benchmark; and bench/RESULTS.md +
# bench/latency.svg from the results.
#
#   ns client (192.0.2.2) --veth-- ns relay (192.0.2.1 | 198.51.100.1) --veth-- ns peer (198.51.100.2)
#
# The server runs in the relay namespace pinned to RELAY_CPU; the generator (client ns)
# and the sink (peer ns) share GEN_CPU. Threaded NAPI is on for every veth; the relay
# side's napi/* threads are pinned to RELAY_CPU and the outer ones to GEN_CPU, so the
# relay core carries all of the relay's packet work (NETLAB.md, "Measuring CPU fairly").
#
# Usage (as root):  bash bench/compare.sh
# Environment: DURATION (seconds per load, default 6), GEN_CPU (0), RELAY_CPU (1),
#              COTURN_UPSTREAM=PATH to run the same loads against a turnserver built
#              from coturn's repository too (column coturn-upstream),
#              NO_BUILD=1 to skip `cargo build --release`, XTURN_BIN=PATH to benchmark
#              another xturn binary (e.g. one built from a given commit) and XTURN_REV=TEXT
#              to say in the report where it came from; OUT_DIR (default bench/) for
#              results/, RESULTS.md and latency.svg (e.g. a /tmp directory for a trial).
# Bounded: each load stops by itself; a watchdog ends the whole run after WATCHDOG s; the
# namespaces and every process started here are removed on exit, also on failure.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
. "$ROOT/bench/lab.sh"
DURATION=${DURATION:-6}
GEN_CPU=${GEN_CPU:-0}
RELAY_CPU=${RELAY_CPU:-1}
ALLOCS=64
PEER_PORTS=4
SIZE=100
RATES=(20000 50000)
ECHO_RATE=20000
STUN_RATE=20000       # fixed-rate Binding load for every server: CPU per answer
XDP_STUN_RATE=100000  # and one xturn-xdp alone can carry
WATCHDOG=${WATCHDOG:-3000} # seconds for the whole run (about 17 minutes with coturn-upstream, 2026-12-05, before the in-kernel and closed-loop loads)
AFXDP_NICE=-10        # nice value of the forwarder threads (xturn's default) and of xsk-reflect's
BYPASS_RUNS=${BYPASS_RUNS:-5} # kernel-bypass loads of each relay and reflector (medians; the flood is noisy)
LOOP_RUNS=${LOOP_RUNS:-3}     # closed-loop loads of each relay and reflector (medians)

log() { echo "compare.sh: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "run as root (it creates network namespaces)"
    exit 1
fi
for tool in turnserver:coturn ethtool:ethtool taskset:util-linux; do
    if ! command -v "${tool%%:*}" >/dev/null 2>&1; then
        log "installing ${tool##*:}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${tool##*:}" >/dev/null
    fi
done
if [ "${NO_BUILD:-0}" != 1 ]; then
    cargo build --release --quiet -p xturn-relay -p xturn-bench
fi
B=$ROOT/target/release/xturn-bench
XT=${XTURN_BIN:-$ROOT/target/release/xturn}
REV=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git -C "$ROOT" status --porcelain -- bench control relay 2>/dev/null | wc -l)
XTURN_REV=${XTURN_REV:-"the working tree at commit $REV ($DIRTY changed files under bench/ control/ relay/)"}
[ -x "$B" ] && [ -x "$XT" ] || { log "missing $B or $XT"; exit 1; }

P=xt$(($$ % 10000))
NC=${P}c NR=${P}r NP=${P}p
TMP=$(mktemp -d /tmp/xturn-bench.XXXXXX)
OUT_DIR=${OUT_DIR:-$ROOT/bench}
RES=$OUT_DIR/results
PIDS=()
MAIN=$$

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$pid" 2>/dev/null || true
    done
    lab_down "$P"
    lab_down "${P}d"
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Watchdog: the whole comparison must end within WATCHDOG seconds.
watchdog() {
    sleep "$WATCHDOG" &
    local s=$!
    trap 'kill $s 2>/dev/null; exit 0' TERM
    wait $s && { echo "compare.sh: watchdog: over $WATCHDOG s, stopping" >&2; kill -TERM "$MAIN"; }
}
watchdog &
PIDS+=($!)

# ---- topology ---------------------------------------------------------------------------
log "topology $NC -- $NR -- $NP"
lab_up "$P" "$GEN_CPU" "$RELAY_CPU"
NAPI_NOTE=$LAB_NAPI

rm -rf "$RES"
mkdir -p "$RES"

# ---- helpers ----------------------------------------------------------------------------
SERVER=192.0.2.1:3478
LOAD_DURATION=$DURATION
record() { # record NAME CMD...: the exact command line, for the report (results/commands.txt)
    local name=$1 a line=""
    shift
    for a in "$@"; do
        a=${a//"$ROOT/"/}
        case "$a" in *[[:space:]]* | "") a="'$a'" ;; esac
        line="$line${line:+ }$a"
    done
    printf '%s\t%s\n' "$name" "$line" >>"$RES/commands.txt"
}
gen() { # gen NAME MODE ARGS... : run the generator in the client namespace for LOAD_DURATION s
    local name=$1
    shift
    local cmd=(ip netns exec "$NC" taskset -c "$GEN_CPU" "$B" "$@" --server "$SERVER" --cpus "$GEN_CPU"
        --relay-cpus "$RELAY_CPU" --relay-threads "$LAB_RELAY_NAPI_PIDS" --duration "$LOAD_DURATION"
        --json-out "$RES/$name.json" --quiet)
    record "$name" "${cmd[@]}"
    "${cmd[@]}" >"$TMP/$name.txt"
    sed 's/^/    /' "$TMP/$name.txt" >&2
}
start_sink() { # start_sink NAME [--echo]
    local name=$1
    shift
    rm -f "$TMP/sink.json"
    local cmd=(ip netns exec "$NP" taskset -c "$GEN_CPU" "$B" sink --listen "198.51.100.2:40000-$((40000 + PEER_PORTS - 1))"
        --cpus "$GEN_CPU" --idle-exit 1 --duration 90 --json-out "$TMP/sink.json" --quiet "$@")
    record "$name sink" "${cmd[@]}"
    "${cmd[@]}" >"$TMP/sink.txt" &
    SINK=$!
    PIDS+=("$SINK")
    sleep 0.3
}
wait_sink() {
    wait "$SINK"
    sed 's/^/    /' "$TMP/sink.txt" >&2
}
stop_pid() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
affinity() { # the CPUs each thread of a process may run on, for the record
    cat /proc/"$1"/task/*/status 2>/dev/null | awk '/Cpus_allowed_list/ {print $2}' | sort -u | tr '\n' ' '
}

TURN_ARGS=(--user bench:bench --allocations "$ALLOCS" --peer 198.51.100.2:40000 --peer-ports "$PEER_PORTS" --size "$SIZE")

# The loads. Each is a function of (result name, server PID) that starts what it needs.
load_stun() { gen "$1" stun --sockets 32 --relay-pid "$2"; }
load_stun_rate() { gen "$1" stun --sockets 32 --rate "$3" --relay-pid "$2"; } # NAME PID RATE
load_relay() { # NAME PID RATE
    start_sink "$1"
    gen "$1" relay "${TURN_ARGS[@]}" --rate "$3" --sink-json "$TMP/sink.json" --relay-pid "$2"
    wait_sink
}
load_echo() { # NAME PID RATE
    start_sink "$1" --echo
    gen "$1" echo "${TURN_ARGS[@]}" --rate "$3" --relay-pid "$2"
    wait_sink
}
load_churn() { gen "$1" churn --user bench:bench --allocations 16 --relay-pid "$2"; }

# measured NAME LOAD ARGS...: run a load when the machine is quiet, and again (at most
# twice) if other processes used more than 2 % of a CPU meanwhile; the interference left
# is recorded for the report. With STATS_HOOK set, `$STATS_HOOK before|after NAME` runs
# right before and after each attempt (xturn-afxdp: the server's counters).
NOISE=()
STATS_HOOK=""
measured() {
    local name=$1 attempt f0 f1 limit=$((DURATION * 2 > 10 ? DURATION * 2 : 10))
    shift
    for attempt in 1 2 3; do
        wait_quiet "$GEN_CPU" "$RELAY_CPU" || log "$name: the machine is not quiet ($LAB_BUSY); going on"
        [ -z "$STATS_HOOK" ] || "$STATS_HOOK" before "$name"
        f0=$(foreign_ticks $$ "$P")
        log "$name (attempt $attempt)"
        "$@"
        f1=$(foreign_ticks $$ "$P")
        [ -z "$STATS_HOOK" ] || "$STATS_HOOK" after "$name"
        if [ $((f1 - f0)) -le "$limit" ]; then
            break
        fi
        log "$name: other processes used $((f1 - f0)) jiffies of CPU during the load"
    done
    NOISE+=("$name: $((f1 - f0 > 0 ? f1 - f0 : 0)) (attempts: $attempt)")
    echo "$name $((f1 - f0 > 0 ? f1 - f0 : 0)) $limit" >>"$RES/interference.txt"
}

# The highest offered rate the relay carries losing at most 1 % at or before itself (drops
# after it, in the peer side's veth ring on the generator's core, do not count): a binary search over
# 20k..320k pps in six short steps; the best step's result becomes NAME-relay-sustained.
SWEEP_DURATION=${SWEEP_DURATION:-3}
sweep_relay() { # sweep_relay NAME SERVER_PID
    local s=$1 pid=$2 lo=20000 hi=320000 mid best=0 step loss sent
    mkdir -p "$RES/sweep" "$TMP/sweep"
    LOAD_DURATION=$SWEEP_DURATION
    for step in 1 2 3 4 5 6; do
        mid=$(((lo + hi) / 2000 * 1000))
        measured "$s-sweep-$mid" load_relay "sweep/$s-$mid" "$pid" "$mid"
        # What the relay lost (not the drops after it, on the generator's core), and
        # whether the generator really offered the rate.
        loss=$(sed -n 's/^  "relay_loss": \([0-9.eE+-]*\),$/\1/p' "$RES/sweep/$s-$mid.json")
        sent=$(sed -n 's/^  "sent_pps": \([0-9.eE+-]*\),$/\1/p' "$RES/sweep/$s-$mid.json")
        if awk -v l="${loss:-1}" -v s="${sent:-0}" -v r="$mid" 'BEGIN { exit !(l <= 0.01 && s >= 0.98 * r) }'; then
            best=$mid
            lo=$mid
        else
            hi=$mid
        fi
    done
    LOAD_DURATION=$DURATION
    if [ "$best" -gt 0 ]; then
        cp "$RES/sweep/$s-$best.json" "$RES/$s-relay-sustained.json"
        grep "^$s-sweep-$best " "$RES/interference.txt" | tail -1 |
            sed "s/^$s-sweep-$best /$s-relay-sustained /" >>"$RES/interference.txt" || true
        for f in "$RES"/afxdp-stats/"$s-sweep-$best".*.json; do
            if [ -f "$f" ]; then cp "$f" "${f/$s-sweep-$best./$s-relay-sustained.}"; fi
        done
    fi
    log "$s: sustained rate $best pps (loss <= 1 %)"
}

run_data_loads() { # run_data_loads NAME SERVER_PID: the TURN data loads
    local s=$1 pid=$2 rate
    measured "$s-relay-max" load_relay "$s-relay-max" "$pid" 0
    for rate in "${RATES[@]}"; do
        measured "$s-relay-$((rate / 1000))k" load_relay "$s-relay-$((rate / 1000))k" "$pid" "$rate"
    done
    sweep_relay "$s" "$pid"
    measured "$s-echo-$((ECHO_RATE / 1000))k" load_echo "$s-echo-$((ECHO_RATE / 1000))k" "$pid" "$ECHO_RATE"
}
run_server_loads() { # run_server_loads NAME SERVER_PID
    local s=$1 pid=$2
    measured "$s-stun" load_stun "$s-stun" "$pid"
    measured "$s-stun-$((STUN_RATE / 1000))k" load_stun_rate "$s-stun-$((STUN_RATE / 1000))k" "$pid" "$STUN_RATE"
    run_data_loads "$s" "$pid"
    measured "$s-churn" load_churn "$s-churn" "$pid"
}

# ---- coturn -----------------------------------------------------------------------------
coturn_cmd() { # coturn_cmd BINARY: the command line, in COTURN_CMD (recvmmsg on where it exists)
    COTURN_CMD=("$1" -n --no-tls --no-dtls --no-cli --no-rfc5780 -L 192.0.2.1 -E 198.51.100.1
        --relay-threads 1 -a -f --user bench:bench --realm bench
        --pidfile "$TMP/turnserver.pid" --log-file "$TMP/turnserver.log" --simple-log)
    # Read the help text first: `grep -q` on a pipe would end turnserver with SIGPIPE, which
    # pipefail counts as a failed test (the run of 2026-12-05 said "does not exist" so).
    local help
    help=$("$1" --help 2>&1 || true)
    if grep -q -- --udp-recvmmsg <<<"$help"; then
        COTURN_CMD+=(--udp-recvmmsg)
        RECVMMSG_NOTE="with \`--udp-recvmmsg\`"
    else
        RECVMMSG_NOTE="\`--udp-recvmmsg\` does not exist in this version"
    fi
}
run_coturn() { # run_coturn NAME: start COTURN_CMD pinned, run every server load, stop it
    log "$1: ${COTURN_CMD[*]}"
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "${COTURN_CMD[@]}" >"$TMP/$1.out" 2>&1 &
    CPID=$!
    PIDS+=("$CPID")
    ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
    RUN_AFF=$(affinity "$CPID")
    run_server_loads "$1" "$CPID"
    stop_pid "$CPID"
}
coturn_cmd turnserver
COTURN_VERSION=$(turnserver --version 2>/dev/null | head -1 || echo unknown)
run_coturn coturn
COTURN_AFF=$RUN_AFF
DEBIAN_COTURN_CMD=("${COTURN_CMD[@]}")
DEBIAN_RECVMMSG_NOTE=$RECVMMSG_NOTE

# ---- coturn upstream (COTURN_UPSTREAM=PATH: a turnserver built from coturn's repository) --
UPSTREAM_NOTE=""
if [ -n "${COTURN_UPSTREAM:-}" ]; then
    [ -x "$COTURN_UPSTREAM" ] || { log "COTURN_UPSTREAM=$COTURN_UPSTREAM is not an executable"; exit 1; }
    coturn_cmd "$COTURN_UPSTREAM"
    UPSTREAM_CMD=("${COTURN_CMD[@]}")
    UP_VERSION=$("$COTURN_UPSTREAM" --version 2>/dev/null | head -1 || echo unknown)
    run_coturn coturn-upstream
    UPSTREAM_NOTE="
- coturn-upstream: \`$UP_VERSION\` built from coturn's public repository (github.com/coturn/coturn) with its own CMake build and Debian's -dev packages, command \`${COTURN_CMD[*]}\` (thread affinity seen: $RUN_AFF; $RECVMMSG_NOTE; no \`--multiplex-peer\`: every allocation keeps its own relayed address, as strict clients require)"
fi
COTURN_CMD=("${DEBIAN_COTURN_CMD[@]}")
RECVMMSG_NOTE=$DEBIAN_RECVMMSG_NOTE

# ---- xturn ------------------------------------------------------------------------------
# The lab's peers are in a documentation range (denied by default); one client address
# and one user make every allocation, and the loads measure paths, not budgets: lift the
# per-address, per-user and per-prefix limits as coturn has none of them.
XTURN_CMD=("$XT" --listening-ip 192.0.2.1 --relay-ip 198.51.100.1 --user bench:bench --realm bench
    --rfc5766-channels --threads 1 --log-level warn --allowed-peer-ip 198.51.100.0/24
    --ip-quota 0 --user-quota 0 --unauth-rate-per-prefix 0 --binding-rate-per-prefix 0)
log "xturn: ${XTURN_CMD[*]}"
ip netns exec "$NR" taskset -c "$RELAY_CPU" "${XTURN_CMD[@]}" >"$TMP/xturn.out" 2>&1 &
XPID=$!
PIDS+=("$XPID")
ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
XTURN_AFF=$(affinity "$XPID")
run_server_loads xturn "$XPID"
stop_pid "$XPID"

# ---- xturn --xdp: Binding answered by the XDP program -----------------------------------
# The same binary and options plus --xdp on the relay's client-side veth. Frames the
# relay sends back with XDP_TX arrive only if the client's veth has an XDP program: hold
# xturn's XDP_PASS program there while the socket generator runs.
wait_line() { # wait_line FILE TEXT: at most 5 s
    local _
    for _ in $(seq 1 50); do
        grep -q "$2" "$1" 2>/dev/null && return 0
        sleep 0.1
    done
    log "no \"$2\" in $1: $(cat "$1" 2>/dev/null)"
    return 1
}
# `ping` sends a Binding request, which the XDP program answers with XDP_TX: that arrives
# only if the client's veth has an XDP program, xturn's XDP_PASS one (`xdp-pass`).
pass_and_ping() { # pass_and_ping SECONDS: xdp-pass on the client's veth (PASSPID), then ping
    ip netns exec "$NC" taskset -c "$GEN_CPU" "$B" xdp-pass "${P}ca" --duration "$1" >"$TMP/xdp-pass.out" 2>&1 &
    PASSPID=$!
    PIDS+=("$PASSPID")
    wait_line "$TMP/xdp-pass.out" "xdp-pass:"
    ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
}
XDP_CMD=("${XTURN_CMD[@]}" --xdp "${P}rc")
log "xturn-xdp: ${XDP_CMD[*]}"
ip netns exec "$NR" taskset -c "$RELAY_CPU" "${XDP_CMD[@]}" >"$TMP/xturn-xdp.out" 2>&1 &
XDPID=$!
PIDS+=("$XDPID")
# The STUN loads need the pass program too (the answers are XDP_TX'd): it stays.
pass_and_ping 300
XDP_AFF=$(affinity "$XDPID")
measured xturn-xdp-stun load_stun xturn-xdp-stun "$XDPID"
for rate in "$STUN_RATE" "$XDP_STUN_RATE"; do
    measured "xturn-xdp-stun-$((rate / 1000))k" load_stun_rate "xturn-xdp-stun-$((rate / 1000))k" "$XDPID" "$rate"
done
stop_pid "$PASSPID"

# The responder's capacity: `xturn-bench xdp-load` sends live XDP frames (one Binding
# request each) out of the client's veth, flat out, and drops what comes back there.
RC_MAC=$(ip netns exec "$NR" cat "/sys/class/net/${P}rc/address")
load_xdp() { # NAME PID: the kernel-bypass load against the program on the relay's veth
    gen "$1" xdp-load --iface "${P}ca" --dst-mac "$RC_MAC" --relay-iface "${P}rc" --relay-pid "$2"
}
load_xdp_responder() { # NAME PID: the same, with xturn's own counters before and after
    ip netns exec "$NR" "$XT" stats --xdp "${P}rc" --json >"$RES/xdp-stats-before.json"
    load_xdp "$@"
    ip netns exec "$NR" "$XT" stats --xdp "${P}rc" --json >"$RES/xdp-stats-after.json"
}
measured xdp-responder load_xdp_responder xdp-responder "$XDPID"
stop_pid "$XDPID"

# ---- xturn --xdp IF1,IF2: TURN data through the AF_XDP forwarder -------------------------
# The same binary and options as xturn on sockets plus --xdp on both relay veths: the XDP
# program steers ChannelData from clients and UDP from peers to AF_XDP sockets, and the
# forwarder thread (pinned to RELAY_CPU like the server's other threads: they inherit the
# taskset mask) rewrites the frames and sends them out of the other veth. The program's
# FIB lookup needs IP forwarding in the relay namespace: on only while this server runs.
FWD0=$(ip netns exec "$NR" sysctl -n net.ipv4.conf.all.forwarding)
AFXDP_CMD=("${XTURN_CMD[@]}" --xdp "${P}rc,${P}rp" --afxdp-nice "$AFXDP_NICE")
log "xturn-afxdp: ${AFXDP_CMD[*]} (net.ipv4.conf.all.forwarding=1 in $NR)"
record "xturn-afxdp server" ip netns exec "$NR" sysctl -qw net.ipv4.conf.all.forwarding=1
record "xturn-afxdp server" ip netns exec "$NR" taskset -c "$RELAY_CPU" "${AFXDP_CMD[@]}"
start_afxdp() { # start_afxdp LOG: the server with forwarding on, answering a Binding ping
    ip netns exec "$NR" sysctl -qw net.ipv4.conf.all.forwarding=1
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "${AFXDP_CMD[@]}" >"$1" 2>&1 &
    AFPID=$!
    PIDS+=("$AFPID")
    # The data loads do not need the pass program on the client's veth (AF_XDP copy-mode
    # transmission into a veth does not), so it is held for the ping only.
    pass_and_ping 60
    stop_pid "$PASSPID"
    # The relay's work now runs in the forwarder thread (one of the server's threads, so
    # --relay-pid covers it) and in the relay veths' NAPI threads: check that those are
    # still the kthreads pinned and measured (attaching XDP and AF_XDP must not have
    # replaced them).
    NAPI_BEFORE=$LAB_RELAY_NAPI_PIDS
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    if [ "$LAB_RELAY_NAPI_PIDS" = "$NAPI_BEFORE" ]; then
        AFXDP_NAPI_NOTE="the relay-side NAPI kthreads were checked after the server attached: the same ($LAB_RELAY_NAPI_PIDS), pinned to CPU $RELAY_CPU"
    else
        AFXDP_NAPI_NOTE="the relay-side NAPI kthreads changed when the server attached ($NAPI_BEFORE -> $LAB_RELAY_NAPI_PIDS) and the new ones were pinned to CPU $RELAY_CPU"
        log "$AFXDP_NAPI_NOTE"
    fi
}
stop_afxdp() {
    stop_pid "$AFPID"
    ip netns exec "$NR" sysctl -qw "net.ipv4.conf.all.forwarding=$FWD0"
}
record "xturn-afxdp ping" ip netns exec "$NC" taskset -c "$GEN_CPU" "$B" xdp-pass "${P}ca" --duration 60
start_afxdp "$TMP/xturn-afxdp.out"
AFXDP_AFF=$(affinity "$AFPID")
AFXDP_THREADS=$(cat /proc/"$AFPID"/task/*/comm 2>/dev/null | tr '\n' ' ')
mkdir -p "$RES/afxdp-stats"
STATS_IF=${P}rc
afxdp_stats() { # before|after NAME: the XDP program's and the AF_XDP forwarder's counters
    # The server rewrites its status file every 0.5 s from counters its threads publish
    # every 0.5 s: wait for the last packets of the load to be in it.
    [ "$1" = before ] || sleep 1.2
    [ "$1:$2" != "before:xturn-afxdp-relay-max" ] ||
        record "xturn-afxdp counters" ip netns exec "$NR" "$XT" stats --xdp "$STATS_IF" --json
    if ip netns exec "$NR" "$XT" stats --xdp "$STATS_IF" --json >"$TMP/stats.json"; then
        mv "$TMP/stats.json" "$RES/afxdp-stats/$2.$1.json"
    else
        log "$2: xturn stats failed; no counters for this load"
        rm -f "$RES/afxdp-stats/$2.before.json"
    fi
}
STATS_HOOK=afxdp_stats
run_data_loads xturn-afxdp "$AFPID"

STATS_HOOK=""
stop_afxdp
log "xturn-afxdp stopped; net.ipv4.conf.all.forwarding=$(ip netns exec "$NR" sysctl -n net.ipv4.conf.all.forwarding) in $NR again"

# ---- the price of defaults: xturn-afxdp again, in the topology left at veth defaults -------
# A second topology like the first but as users have it (no ethtool, no GRO, no XDP
# program on the client's and peer's veths), IP forwarding on in its relay namespace; the
# same server command on its veths and the same TURN data loads. Binding requests (the
# ping) are answered by the socket path there, since XDP_TX would not arrive.
D=${P}d
log "topology ${D}c -- ${D}r -- ${D}p at veth defaults"
lab_up_plain "$D"
SAVED_LAB=("$NC" "$NR" "$NP" "$LAB_RELAY_NAPI_PIDS")
NC=${D}c NR=${D}r NP=${D}p
DEF_CMD=("${XTURN_CMD[@]}" --xdp "${D}rc,${D}rp" --afxdp-nice "$AFXDP_NICE")
record "xturn-afxdp-defaults server" ip netns exec "$NR" sysctl -qw net.ipv4.conf.all.forwarding=1
record "xturn-afxdp-defaults server" ip netns exec "$NR" taskset -c "$RELAY_CPU" "${DEF_CMD[@]}"
ip netns exec "$NR" sysctl -qw net.ipv4.conf.all.forwarding=1
ip netns exec "$NR" taskset -c "$RELAY_CPU" "${DEF_CMD[@]}" >"$TMP/xturn-afxdp-defaults.out" 2>&1 &
DFPID=$!
PIDS+=("$DFPID")
ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
lab_pin_relay_napi "$D" "$RELAY_CPU"
DEFAULTS_NAPI_NOTE="relay-side NAPI kthreads $LAB_RELAY_NAPI_PIDS pinned to CPU $RELAY_CPU; the outer veths have no NAPI"
STATS_IF=${D}rc
STATS_HOOK=afxdp_stats
run_data_loads xturn-afxdp-defaults "$DFPID"
STATS_HOOK=""
stop_pid "$DFPID"
grep -E "XDP_TX|Binding requests" "$TMP/xturn-afxdp-defaults.out" | sed 's/^/    /' >&2 || true
lab_down "$D"
NC=${SAVED_LAB[0]} NR=${SAVED_LAB[1]} NP=${SAVED_LAB[2]} LAB_RELAY_NAPI_PIDS=${SAVED_LAB[3]}
STATS_IF=${P}rc

# ---- the generator's ceiling: a trivial reflector on the relay core ---------------------
log "reflector"
ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" reflect --listen "$SERVER" --cpus "$RELAY_CPU" --duration 400 --quiet \
    >"$TMP/reflect.txt" 2>&1 &
RPID=$!
PIDS+=("$RPID")
sleep 0.3
REFL_ARGS=(--reflector --allocations "$ALLOCS" --size "$SIZE" --relay-pid "$RPID")
measured reflector-relay-max gen reflector-relay-max relay "${REFL_ARGS[@]}" --rate 0
measured reflector-echo-max gen reflector-echo-max echo "${REFL_ARGS[@]}" --rate 0
measured "reflector-echo-$((ECHO_RATE / 1000))k" gen "reflector-echo-$((ECHO_RATE / 1000))k" echo "${REFL_ARGS[@]}" --rate "$ECHO_RATE"
stop_pid "$RPID"

# ---- the bare XDP_TX reflector under the same kernel-bypass load, and the programs alone --
ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" xdp-reflect "${P}rc" --duration 120 >"$TMP/xdp-reflect.out" 2>&1 &
XRPID=$!
PIDS+=("$XRPID")
wait_line "$TMP/xdp-reflect.out" "xdp-reflect:"
measured xdp-reflector load_xdp xdp-reflector "$XRPID"
stop_pid "$XRPID"

# ---- the forwarder against the bare AF_XDP reflector, kernel-bypass load, interleaved ----
# The forwarder's capacity: `xturn-bench xdp-relay-load` sets up allocations and channels
# with TURN from fixed ports, then sends ChannelData frames with exactly those 5-tuples
# as live XDP frames out of the client's veth, flat out; `xdp-drop` on the peer's veth
# takes the relayed frames (ARP still answered) and its receive counter is "delivered".
# The yardstick, `xturn-bench xsk-reflect` (xturn's ring module, copy mode, one thread
# pinned to RELAY_CPU), swaps addresses and sends every frame back out of the relay's
# client-side veth; the same generator (--reflector: the same frames, no TURN) drops them
# on the client's veth and counts them there: one AF_XDP receive and one copy-mode
# transmit per frame, like the forwarder, without its per-frame work.
# Flat out, the delivered rate moves by tens of percent from run to run and drifts with
# the host over minutes: the two take turns, BYPASS_RUNS runs each (a fresh server or
# reflector every time), and are compared by medians.
DROP_CMD=(ip netns exec "$NP" taskset -c "$GEN_CPU" "$B" xdp-drop "${P}pa" --duration 600)
XSK_CMD=(ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" xsk-reflect "${P}rc" --cpus "$RELAY_CPU" --nice "$AFXDP_NICE" --seconds 600
    --json-out "$RES/afxdp-xsk-reflect.json")
record "afxdp-forwarder holder" "${DROP_CMD[@]}"
record "afxdp-reflector holder" "${XSK_CMD[@]}"
# Where the kernel refuses live-frame BPF_PROG_RUN, xdp-relay-load pumps its frames
# through a spare veth pair of the client namespace (an AF_XDP socket sends them into
# ${P}g0, an XDP program on ${P}g1 redirects them to ${P}ca as XDP frames); its NAPI
# thread runs on the generator's core.
ip -n "$NC" link add "${P}g0" type veth peer name "${P}g1"
for d in "${P}g0" "${P}g1"; do
    ip -n "$NC" link set "$d" up
    ip netns exec "$NC" ethtool -K "$d" tx off gro on >/dev/null
    ip netns exec "$NC" sh -c "echo 1 > /sys/class/net/$d/threaded"
done
pin_pump_napi() {
    local f comm pid
    for f in /proc/[0-9]*/comm; do
        read -r comm <"$f" 2>/dev/null || continue
        case "$comm" in "napi/${P}g"*)
            pid=${f#/proc/}
            taskset -pc "$GEN_CPU" "${pid%/comm}" >/dev/null ;;
        esac
    done
}
pin_pump_napi
BYPASS_ARGS=(--iface "${P}ca" --dst-mac "$RC_MAC" --allocations "$ALLOCS" --size "$SIZE" --relay-iface "${P}rc"
    --pump "${P}g0:${P}g1")
load_bypass_forwarder() { # NAME PID
    gen "$1" xdp-relay-load "${BYPASS_ARGS[@]}" --user bench:bench --peer 198.51.100.2:40000 \
        --peer-ports "$PEER_PORTS" --relay-egress "${P}rp" --deliver-iface "${P}pa" \
        --deliver-pid "$DROPPID" --relay-pid "$2"
}
load_bypass_reflector() { # NAME PID
    gen "$1" xdp-relay-load "${BYPASS_ARGS[@]}" --reflector --relay-pid "$2"
}
# The in-kernel relay (--fast-path xdp) under the same load: the XDP program rewrites each
# ChannelData frame to the peer's UDP datagram and redirects it to the peer-side veth,
# where xdp-drop (an XDP program: what makes a frame redirected into a veth arrive)
# counts it. Its yardstick is the bare XDP_TX reflector (`xturn-bench xdp-reflect`) on
# the relay's client-side veth with the reflector's frames: one XDP run and one XDP
# transmit per frame, as for the relay, without its per-frame work.
INKERNEL_CMD=("${AFXDP_CMD[@]}" --fast-path xdp)
XDPTX_CMD=(ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" xdp-reflect "${P}rc" --duration 600)
record "inkernel server" ip netns exec "$NR" taskset -c "$RELAY_CPU" "${INKERNEL_CMD[@]}"
record "inkernel holder" "${DROP_CMD[@]}"
record "xdptx-reflector holder" "${XDPTX_CMD[@]}"
start_drop() { # xdp-drop on the peer's veth (DROPPID): it counts what was delivered
    "${DROP_CMD[@]}" >"$TMP/xdp-drop.out" 2>&1 &
    DROPPID=$!
    PIDS+=("$DROPPID")
    wait_line "$TMP/xdp-drop.out" "xdp-drop:"
}
start_inkernel() { # LOG [echo [CMD]]: the peer side's program first, xdp-drop (with `echo`:
    # the closed loop's xdp-echo, start_echo), so that the server's probe finds that frames
    # sent out of the peer-side veth arrive; then the server (the array named CMD, default
    # INKERNEL_CMD) as start_afxdp
    if [ "${2:-}" = echo ]; then
        start_echo
    else
        start_drop
    fi
    local -n server_cmd=${3:-INKERNEL_CMD}
    local saved=("${AFXDP_CMD[@]}")
    AFXDP_CMD=("${server_cmd[@]}")
    start_afxdp "$1"
    AFXDP_CMD=("${saved[@]}")
    # The server's status file says what its probe found (it re-reads it every second).
    local _
    for _ in $(seq 1 30); do
        ip netns exec "$NR" "$XT" stats --xdp "${P}rc" --json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
ok = any(i.get("name") == sys.argv[1] and i.get("xdp_tx")
         for s in v.get("servers", []) for i in ((s.get("xdp") or {}).get("interfaces") or []))
sys.exit(0 if ok else 1)' "${P}rp" && return 0
        sleep 0.2
    done
    log "in-kernel relay: the server did not find that frames sent out of ${P}rp arrive"
    exit 1
}
for k in $(seq 1 "$BYPASS_RUNS"); do
    start_inkernel "$TMP/xturn-inkernel.out"
    STATS_HOOK=afxdp_stats
    measured "afxdp-inkernel-$k" load_bypass_forwarder "afxdp-inkernel-$k" "$AFPID"
    STATS_HOOK=""
    stop_pid "$DROPPID"
    stop_afxdp

    "${XDPTX_CMD[@]}" >"$TMP/xdp-reflect-relay.out" 2>&1 &
    XTPID=$!
    PIDS+=("$XTPID")
    wait_line "$TMP/xdp-reflect-relay.out" "xdp-reflect:"
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "afxdp-xdptx-$k" load_bypass_reflector "afxdp-xdptx-$k" "$XTPID"
    stop_pid "$XTPID"

    start_afxdp "$TMP/xturn-afxdp-bypass.out"
    start_drop
    STATS_HOOK=afxdp_stats
    measured "afxdp-forwarder-$k" load_bypass_forwarder "afxdp-forwarder-$k" "$AFPID"
    STATS_HOOK=""
    stop_pid "$DROPPID"
    stop_afxdp

    "${XSK_CMD[@]}" >"$TMP/xsk-reflect.out" 2>&1 &
    XSPID=$!
    PIDS+=("$XSPID")
    wait_line "$TMP/xsk-reflect.out" "xsk-reflect:"
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "afxdp-reflector-$k" load_bypass_reflector "afxdp-reflector-$k" "$XSPID"
    stop_pid "$XSPID"
done
log "xturn-afxdp and xsk-reflect stopped; net.ipv4.conf.all.forwarding=$(ip netns exec "$NR" sysctl -n net.ipv4.conf.all.forwarding) in $NR again"
sed 's/^/    /' "$TMP/xsk-reflect.out" >&2

# ---- closed loop: every relay at saturation ------------------------------------------------
# The pump alone cannot saturate the in-kernel relay (its core stays mostly idle), so the
# load closes the loop: `xdp-echo` on the peer's veth sends every relayed datagram back
# to its relayed address as the peer's answer, and xdp-relay-load's echo on the client's
# veth sends every datagram relayed back to the client to the server again as the
# client's next ChannelData (addresses and ports swapped, TTL 64: checksums stay right).
# The pump only fills the loop and makes up for what the relay drops (LOOP_RATE); the
# relay then runs flat out in both directions, and delivered counts both. Each echo stops
# after LOOP_BUDGET frames (the loop is bounded in count) and is detached at the end of
# the load (and in time). The bare reflectors take the same loop on the client's side.
# Socket servers get xturn's XDP_PASS program on both relay veths for the load: frames an
# XDP program sends (XDP_TX) into a veth without one were dropped here (peer side) or left
# the client veth's transmit queue stopped after the load (client side).
LOOP_RATE=${LOOP_RATE:-20000}
LOOP_BUDGET=${LOOP_BUDGET:-200000000}
ECHO_CMD=(ip netns exec "$NP" taskset -c "$GEN_CPU" "$B" xdp-echo "${P}pa" --duration 600 --budget "$LOOP_BUDGET")
record "loop holder" "${ECHO_CMD[@]}"
start_echo() {
    "${ECHO_CMD[@]}" >"$TMP/xdp-echo.out" 2>&1 &
    DROPPID=$!
    PIDS+=("$DROPPID")
    wait_line "$TMP/xdp-echo.out" "xdp-echo:"
}
load_loop() { # NAME PID: a relay in the closed loop (xdp-echo on the peer's veth: DROPPID)
    gen "$1" xdp-relay-load "${BYPASS_ARGS[@]}" --user bench:bench --peer 198.51.100.2:40000 \
        --peer-ports "$PEER_PORTS" --relay-egress "${P}rp" --deliver-iface "${P}pa" \
        --deliver-pid "$DROPPID" --relay-pid "$2" --rate "$LOOP_RATE" --loop "$LOOP_BUDGET"
}
load_loop_reflector() { # NAME PID
    gen "$1" xdp-relay-load "${BYPASS_ARGS[@]}" --reflector --relay-pid "$2" --rate "$LOOP_RATE" --loop "$LOOP_BUDGET"
}
PASS_RC=(ip netns exec "$NR" "$B" xdp-pass "${P}rc" --duration 600)
PASS_RP=(ip netns exec "$NR" "$B" xdp-pass "${P}rp" --duration 600)
record "loop socket servers" "${PASS_RC[@]}"
record "loop socket servers" "${PASS_RP[@]}"
start_pass() { # xturn's XDP_PASS on both relay veths (PRC, PRP), for a socket server in the loop
    "${PASS_RC[@]}" >"$TMP/pass-rc.out" 2>&1 &
    PRC=$!
    "${PASS_RP[@]}" >"$TMP/pass-rp.out" 2>&1 &
    PRP=$!
    PIDS+=("$PRC" "$PRP")
    wait_line "$TMP/pass-rc.out" "xdp-pass:"
    wait_line "$TMP/pass-rp.out" "xdp-pass:"
}
stop_pass() {
    stop_pid "$PRC"
    stop_pid "$PRP"
}
loop_socket_server() { # NAME CMD...: a socket server in the closed loop
    local name=$1
    shift
    record "$name server" ip netns exec "$NR" taskset -c "$RELAY_CPU" "$@"
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "$@" >"$TMP/$name.out" 2>&1 &
    local spid=$!
    PIDS+=("$spid")
    ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
    start_pass
    start_echo
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "afxdp-$name" load_loop "afxdp-$name" "$spid"
    stop_pid "$DROPPID"
    stop_pass
    stop_pid "$spid"
}
# The in-kernel relay also takes the loop with one interface for both legs, as the XDP_TX
# reflector has: the peer is a second address on the client's veth (allowed for this
# server only), so the program sends both directions back out of the client-side relay
# veth with XDP_TX; the client's echo answers for the client and the peer, and its
# receive counter holds both directions. (start_inkernel's xdp-echo on the peer's veth
# gets no frames here; it only lets the server's start-up check pass.)
ONE_PEER=192.0.2.3
ip -n "$NC" addr add "$ONE_PEER/24" dev "${P}ca"
INKERNEL1_CMD=("${INKERNEL_CMD[@]}" --allowed-peer-ip "$ONE_PEER/32")
record "loop-inkernel1 server" ip -n "$NC" addr add "$ONE_PEER/24" dev "${P}ca"
record "loop-inkernel1 server" ip netns exec "$NR" taskset -c "$RELAY_CPU" "${INKERNEL1_CMD[@]}"
load_loop_one() { # NAME PID: the in-kernel relay in the loop with its peer on the client's side
    gen "$1" xdp-relay-load "${BYPASS_ARGS[@]}" --user bench:bench --peer "$ONE_PEER:40000" \
        --peer-ports "$PEER_PORTS" --relay-egress "${P}rc" --deliver-iface "${P}ca" \
        --relay-pid "$2" --rate "$LOOP_RATE" --loop "$LOOP_BUDGET"
}
for k in $(seq 1 "$LOOP_RUNS"); do
    start_inkernel "$TMP/xturn-inkernel-loop.out" echo
    STATS_HOOK=afxdp_stats
    measured "afxdp-loop-inkernel-$k" load_loop "afxdp-loop-inkernel-$k" "$AFPID"
    STATS_HOOK=""
    stop_pid "$DROPPID"
    stop_afxdp

    start_inkernel "$TMP/xturn-inkernel1-loop.out" echo INKERNEL1_CMD
    STATS_HOOK=afxdp_stats
    measured "afxdp-loop-inkernel1-$k" load_loop_one "afxdp-loop-inkernel1-$k" "$AFPID"
    STATS_HOOK=""
    stop_pid "$DROPPID"
    stop_afxdp

    "${XDPTX_CMD[@]}" >"$TMP/xdp-reflect-loop.out" 2>&1 &
    XTPID=$!
    PIDS+=("$XTPID")
    wait_line "$TMP/xdp-reflect-loop.out" "xdp-reflect:"
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "afxdp-loop-xdptx-$k" load_loop_reflector "afxdp-loop-xdptx-$k" "$XTPID"
    stop_pid "$XTPID"

    start_afxdp "$TMP/xturn-afxdp-loop.out"
    start_echo
    STATS_HOOK=afxdp_stats
    measured "afxdp-loop-forwarder-$k" load_loop "afxdp-loop-forwarder-$k" "$AFPID"
    STATS_HOOK=""
    stop_pid "$DROPPID"
    stop_afxdp

    "${XSK_CMD[@]/#$RES\/afxdp-xsk-reflect.json/$TMP/xsk-reflect-loop.json}" >"$TMP/xsk-reflect-loop.out" 2>&1 &
    XSPID=$!
    PIDS+=("$XSPID")
    wait_line "$TMP/xsk-reflect-loop.out" "xsk-reflect:"
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "afxdp-loop-xsk-$k" load_loop_reflector "afxdp-loop-xsk-$k" "$XSPID"
    stop_pid "$XSPID"

    loop_socket_server "loop-sockets-$k" "${XTURN_CMD[@]}"
    if [ -n "${COTURN_UPSTREAM:-}" ]; then
        loop_socket_server "loop-upstream-$k" "${UPSTREAM_CMD[@]}"
    fi
    loop_socket_server "loop-coturn-$k" "${COTURN_CMD[@]}"
done
# ---- scale: cost per packet at 16, 1,000 and 10,000 allocations, every xturn mode -------
# The kernel-bypass load with N allocations (one channel each, the frames of all N flows
# in turn) against xturn on sockets, with the AF_XDP forwarder, and with the in-kernel
# relay; xdp-drop on the peer's veth counts what was delivered. The figure that matters
# is the relay threads' CPU per delivered frame, and how it grows with N.
SCALE_ALLOCS=${SCALE_ALLOCS:-16 1000 10000}
SCALE_ARGS=(--iface "${P}ca" --dst-mac "$RC_MAC" --size "$SIZE" --relay-iface "${P}rc" --pump "${P}g0:${P}g1" --user bench:bench
    --peer 198.51.100.2:40000 --peer-ports "$PEER_PORTS" --relay-egress "${P}rp" --deliver-iface "${P}pa")
# Then each load again at one fixed rate for the mode at every N (about half of what
# the mode relays flat out at 16 allocations): flat out the pump's rate itself moves from
# run to run, and the cost per frame with it.
SCALE_RATE_SOCKETS=${SCALE_RATE_SOCKETS:-40000}
SCALE_RATE_BYPASS=${SCALE_RATE_BYPASS:-100000}
load_scale() { # NAME PID ALLOCS [RATE] (a failed load is logged and left out of the report)
    gen "$1" xdp-relay-load "${SCALE_ARGS[@]}" --allocations "$3" --deliver-pid "$DROPPID" --relay-pid "$2" \
        --rate "${4:-0}" || log "$1 failed: $(tail -1 "$TMP/$1.txt" 2>/dev/null)"
}
for n in $SCALE_ALLOCS; do
    start_drop
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "${XTURN_CMD[@]}" >"$TMP/xturn-scale.out" 2>&1 &
    XPID=$!
    PIDS+=("$XPID")
    ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
    measured "scale-sockets-$n" load_scale "scale-sockets-$n" "$XPID" "$n"
    measured "scalerate-sockets-$n" load_scale "scalerate-sockets-$n" "$XPID" "$n" "$SCALE_RATE_SOCKETS"
    stop_pid "$XPID"
    stop_pid "$DROPPID"

    start_afxdp "$TMP/xturn-afxdp-scale.out"
    start_drop
    measured "scale-afxdp-$n" load_scale "scale-afxdp-$n" "$AFPID" "$n"
    measured "scalerate-afxdp-$n" load_scale "scalerate-afxdp-$n" "$AFPID" "$n" "$SCALE_RATE_BYPASS"
    stop_pid "$DROPPID"
    stop_afxdp

    start_inkernel "$TMP/xturn-inkernel-scale.out"
    measured "scale-inkernel-$n" load_scale "scale-inkernel-$n" "$AFPID" "$n"
    measured "scalerate-inkernel-$n" load_scale "scalerate-inkernel-$n" "$AFPID" "$n" "$SCALE_RATE_BYPASS"
    stop_pid "$DROPPID"
    stop_afxdp
done
# And each mode in the closed loop (as in the section above), at saturation in both
# directions: the cost per relayed datagram with the relay core kept busy at every N.
load_scale_loop() { # NAME PID ALLOCS (xdp-echo on the peer's veth: DROPPID)
    gen "$1" xdp-relay-load "${SCALE_ARGS[@]}" --allocations "$3" --deliver-pid "$DROPPID" --relay-pid "$2" \
        --rate "$LOOP_RATE" --loop "$LOOP_BUDGET" || log "$1 failed: $(tail -1 "$TMP/$1.txt" 2>/dev/null)"
}
for n in $SCALE_ALLOCS; do
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "${XTURN_CMD[@]}" >"$TMP/xturn-scale.out" 2>&1 &
    XPID=$!
    PIDS+=("$XPID")
    ip netns exec "$NC" "$B" ping --server "$SERVER" --timeout 10 >&2
    start_pass
    start_echo
    lab_pin_napi "$P" "$GEN_CPU" "$RELAY_CPU"
    measured "scaleloop-sockets-$n" load_scale_loop "scaleloop-sockets-$n" "$XPID" "$n"
    stop_pid "$DROPPID"
    stop_pass
    stop_pid "$XPID"

    start_afxdp "$TMP/xturn-afxdp-scale.out"
    start_echo
    measured "scaleloop-afxdp-$n" load_scale_loop "scaleloop-afxdp-$n" "$AFPID" "$n"
    stop_pid "$DROPPID"
    stop_afxdp

    start_inkernel "$TMP/xturn-inkernel-scale.out" echo
    measured "scaleloop-inkernel-$n" load_scale_loop "scaleloop-inkernel-$n" "$AFPID" "$n"
    stop_pid "$DROPPID"
    stop_afxdp
done

xdp_cost() { # BPF_PROG_TEST_RUN of the responder, the reflector and XDP_PASS on the relay core
    ip netns exec "$NR" taskset -c "$RELAY_CPU" "$B" xdp-cost --cpus "$RELAY_CPU" --runs 200000 \
        --json-out "$RES/xdp-cost.json" >"$TMP/xdp-cost.txt"
    sed 's/^/    /' "$TMP/xdp-cost.txt" >&2
}
measured xdp-cost xdp_cost

# ---- report -----------------------------------------------------------------------------
noise_summary() { # one sentence about interference, from NOISE and interference.txt
    local max reruns
    max=$(awk '{ if ($2 > m) m = $2 } END { print m + 0 }' "$RES/interference.txt")
    reruns=$(printf '%s\n' "${NOISE[@]}" | grep -v 'attempts: 1)' | tr '\n' ';' || true)
    echo "Largest CPU use by other processes during a kept load: $max jiffies (1/$(getconf CLK_TCK) s).${reruns:+ Loads that needed re-runs (other-process jiffies of the kept run): ${reruns%;}.}"
}
NOTES=$(
    cat <<EOF
Set-up: network namespaces \`client\` (192.0.2.2) -- \`relay\` (192.0.2.1 | 198.51.100.1) -- \`peer\` (198.51.100.2) joined by veth pairs with TX checksum offload off, GRO on and threaded NAPI; NAPI threads pinned:$NAPI_NOTE. Each server runs alone in the relay namespace under \`taskset -c $RELAY_CPU\` with one relay thread (thread affinity seen: coturn $COTURN_AFF, xturn $XTURN_AFF); the generator (\`xturn-bench\`, 1 thread) and the sink share CPU $GEN_CPU. Every load runs $DURATION s with $ALLOCS allocations (one UDP socket each; channels bound to $PEER_PORTS sink ports), $SIZE-byte ChannelData payloads; "relay core busy" is 1 - idle of CPU $RELAY_CPU from /proc/stat over the measured interval, so it includes the server's NAPI and softirq work, and anything else that ran there; "relay threads' CPU" is the exact runtime (schedstat) of the server's threads and the relay-side NAPI kthreads only, which other processes cannot inflate.

- coturn: \`$COTURN_VERSION\`, command \`${COTURN_CMD[*]}\` (paths under a temporary directory; $RECVMMSG_NOTE)$UPSTREAM_NOTE
- xturn: \`${XTURN_CMD[*]#"$ROOT/"}\`, built from $XTURN_REV; the generator from commit $REV
- xturn-xdp: the same binary, \`${XDP_CMD[*]#"$ROOT/"}\` (thread affinity seen: $XDP_AFF), with xturn's XDP_PASS program on the client's veth (\`xturn-bench xdp-pass\`) during its socket loads; it runs the STUN loads only (IP forwarding is off in the relay namespace then, so TURN data would take the socket path; TURN data through AF_XDP is the xturn-afxdp column). Its capacity is measured with \`xturn-bench xdp-load\` (live-frame BPF_PROG_RUN from the client namespace, pinned to CPU $GEN_CPU, flat out for $DURATION s) against it and against \`xturn-bench xdp-reflect\` (a bare XDP_TX reflector on the same veth), and the programs alone with \`xturn-bench xdp-cost\` (BPF_PROG_TEST_RUN on CPU $RELAY_CPU).
- xturn-afxdp: the same binary, \`${AFXDP_CMD[*]#"$ROOT/"}\` (thread affinity seen: $AFXDP_AFF; threads: $AFXDP_THREADS), with \`net.ipv4.conf.all.forwarding=1\` in the relay namespace while it ran (the XDP program's bpf_fib_lookup needs it; $FWD0 before and after, for the other servers); xturn's XDP_PASS program was on the client's veth only for the start-up \`ping\` (a Binding request, answered with XDP_TX). It runs the TURN data loads (relay flat out and at fixed rates, the sustained-rate search, echo); \`xturn stats --json\` (the XDP program's counters and the forwarder's status file) was saved before and after each load (results/afxdp-stats/). The relay's work is in the server's forwarder thread (covered by \`--relay-pid\`, which counts all of the server's threads) and in the relay veths' NAPI threads (\`--relay-threads\`); $AFXDP_NAPI_NOTE. Its capacity is measured with \`xturn-bench xdp-relay-load\` ($ALLOCS allocations and channels set up with TURN from fixed local ports, then live-frame BPF_PROG_RUN of ChannelData frames with exactly those 5-tuples out of the client's veth, flat out for $DURATION s, $BYPASS_RUNS runs, each against a freshly started server and taking turns with the reflector's, from CPU $GEN_CPU; \`xturn-bench xdp-drop\` on the peer's veth takes the relayed frames and its receive counter is what was delivered) against it, and the same frames (\`--reflector\`, no TURN) against \`xturn-bench xsk-reflect\` (the bare AF_XDP copy-mode reflector on the relay's client-side veth, pinned to CPU $RELAY_CPU, its thread at nice $AFXDP_NICE like the forwarder's, so that both run before the NAPI thread feeding them; the frames come back to the client's veth, where they are dropped and counted).
- xturn-afxdp-defaults (section "The price of defaults"): the same binary, \`${DEF_CMD[*]#"$ROOT/"}\`, in a second topology built like the first but left at veth defaults (no ethtool: TX checksum offload on, GRO off; no XDP program on the client's and peer's veths; threaded NAPI only where the XDP program gives the relay's veths one: $DEFAULTS_NAPI_NOTE), forwarding on in its relay namespace, the TURN data loads only, right after xturn-afxdp's.
- Loads, per server: \`stun\` (Binding flood from 32 sockets, flat out), \`stun-$((STUN_RATE / 1000))k\` (the same at a fixed rate: CPU per answer; xturn-xdp also at $((XDP_STUN_RATE / 1000))k), \`relay-max\` (ChannelData one way, flat out; received = the sink's per-flow counts), \`relay-20k\`/\`relay-50k\` (fixed offered rates: the CPU cost figures), \`relay-sustained\` (the highest offered rate at which at most 1 % is lost at or before the relay, i.e. not counting drops after it on the generator's core, found by a six-step binary search over 20k-320k pps with $SWEEP_DURATION s steps; every step's JSON is in results/sweep/), \`echo-$((ECHO_RATE / 1000))k\` (round trips through relay and an echoing sink at a fixed rate, latency from timestamps in the payload), \`churn\` (16 cycles in flight, each from a fresh 5-tuple: Allocate with its 401 round, Refresh, Refresh(0); flat out).
- Interference: each load starts when both CPUs are under 5 % busy and is run again (at most twice) if other processes (any this script did not start, other tests' xturn servers included, and the NAPI threads of other namespaces' veths) used more than 2 % of a CPU during it. $(noise_summary)
- With two CPUs the generator, the sink and the peer side's NAPI thread share one core. The generator offers far more than either server relays (see its ceiling below), so the flat-out rows measure the servers; but there the relay core is split between the server and the NAPI thread feeding it (receive livelock), which moves those figures by some 20 % from run to run. The fixed-rate rows (CPU cost) and \`relay-sustained\` are the stable comparison. "Dropped leaving the relay" counts datagrams lost in the peer side's veth ring because the generator's core was busy, not because of the relay.
EOF
)
# The results directory describes itself, so the report can be regenerated from it alone.
printf '%s\n' "$NOTES" >"$RES/notes.md"
echo "${COTURN_UPSTREAM:+COTURN_UPSTREAM=$COTURN_UPSTREAM }bash bench/compare.sh (DURATION=$DURATION GEN_CPU=$GEN_CPU RELAY_CPU=$RELAY_CPU)" >"$RES/command.txt"
date -u '+%Y-%m-%d %H:%M UTC' >"$RES/date.txt"
mkdir -p "$OUT_DIR"
"$B" report --dir "$RES" --out "$OUT_DIR/RESULTS.md" --svg "$OUT_DIR/latency.svg"
log "wrote $OUT_DIR/RESULTS.md, $OUT_DIR/latency.svg and $RES/*.json"
