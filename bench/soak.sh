#!/usr/bin/env bash
# bench/soak.sh: the hardening soak (not in CI; about 13 minutes). xturn on plain sockets
# in the standard lab (bench/lab.sh, veth defaults), then:
#   1. churn: ALLOCS (10,000) allocations live at once, each held HOLD seconds, deleted and
#      created again from a new 5-tuple, for CHURN_SECONDS (600);
#   2. a spoofed unauthenticated flood: FLOOD (1,000,000) Allocate requests as raw frames,
#      each from a new address and port in 203.0.113.0/24 and 198.51.100.0/24;
# and the server's resident memory (VmRSS) at start, its peak (VmHWM), after the churn
# (once the last allocation is gone) and after the flood. Prints a Markdown block for
# bench/RESULTS.md: written to bench/soak.md (or RESULT_FILE), which the report of
# bench/compare.sh includes in RESULTS.md. Usage: bash bench/soak.sh [RESULT_FILE]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/lab.sh
source "$ROOT/bench/lab.sh"

ALLOCS=${ALLOCS:-10000}
HOLD=${HOLD:-20}
CHURN_SECONDS=${CHURN_SECONDS:-600}
FLOOD=${FLOOD:-1000000}
FLOOD_RATE=${FLOOD_RATE:-100000}
OUT=${1:-$ROOT/bench/soak.md}

log() { echo "soak.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || { log "run as root (network namespaces)"; exit 1; }
cargo build --release --quiet -p xturn-relay -p xturn-bench
B=$ROOT/target/release/xturn-bench
XT=$ROOT/target/release/xturn
P=xs$(($$ % 10000))
TMP=$(mktemp -d /tmp/xturn-soak.XXXXXX)
XPID=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    [ -n "$XPID" ] && kill -TERM "$XPID" 2>/dev/null || true
    sleep 1
    [ -n "$XPID" ] && kill -KILL "$XPID" 2>/dev/null || true
    lab_down "$P"
    rm -rf "$TMP"
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

lab_up_plain "$P"
# Allocations live at most 60 s, so that anything the churn leaves (a cycle cut short)
# is gone a minute after it ends; the lab's peers need the documentation range allowed;
# one client address and one user make every allocation, and that client's /24 needs a
# 401 per new allocation: its budget is twice the churn's rate. The flood comes from other
# prefixes, under the default budget.
ip netns exec "${P}r" "$XT" --listening-ip 192.0.2.1 --relay-ip 198.51.100.1 \
    --user soak:soak --threads 1 --log-level warn --ip-quota 0 --user-quota 0 \
    --unauth-rate-per-prefix "$((2 * ALLOCS / HOLD + 100))" \
    --default-allocate-lifetime 60 --max-allocate-lifetime 60 \
    --allowed-peer-ip 198.51.100.0/24 >"$TMP/xturn.log" 2>&1 &
XPID=$!
ip netns exec "${P}c" "$B" ping --server 192.0.2.1:3478 --timeout 10 >&2
mem() { awk -v k="$1:" '$1 == k { print $2 }' "/proc/$XPID/status"; }
# Warm up (100 allocations for 5 s), so that the start figure includes the code and the
# per-thread state every allocation path touches once, then wait for them to expire.
ip netns exec "${P}c" "$B" churn --server 192.0.2.1:3478 --user soak:soak --allocations 100 \
    --hold 1 --rate 100 --duration 5 --quiet >/dev/null
sleep 65
RSS0=$(mem VmRSS)
ANON0=$(mem RssAnon)
log "start: VmRSS $RSS0 kB (anonymous $ANON0 kB)"

ROUNDS=$(((CHURN_SECONDS + 599) / 600))
PER=$((CHURN_SECONDS / ROUNDS))
for r in $(seq 1 "$ROUNDS"); do
    ip netns exec "${P}c" "$B" churn --server 192.0.2.1:3478 --user soak:soak \
        --allocations "$ALLOCS" --hold "$HOLD" --rate $((ALLOCS / HOLD)) \
        --duration "$PER" --quiet --json-out "$TMP/churn-$r.json" >&2
done
PEAK_CHURN=$(mem VmHWM)
ALLOCATED=$(python3 -c "import json,glob; print(sum(json.load(open(f))['allocations'] for f in glob.glob('$TMP/churn-*.json')))" 2>/dev/null || echo "?")
log "churn done ($ALLOCATED allocations made), waiting for leftovers to expire"
sleep 65
RSS1=$(mem VmRSS)
ANON1=$(mem RssAnon)
ALIVE=$("$XT" stats --json | python3 -c "import json,sys; v=json.load(sys.stdin); print(sum(len(s['allocations']) for s in v['servers'] if s['pid']==$XPID))")
log "after churn: VmRSS $RSS1 kB, $ALIVE allocations"

MAC=$(ip netns exec "${P}r" cat "/sys/class/net/${P}rc/address")
ip netns exec "${P}c" "$B" spoof --server 192.0.2.1:3478 --iface "${P}ca" --dst-mac "$MAC" \
    --prefix 203.0.113.0/24 --prefix 198.51.100.0/24 --count "$FLOOD" --rate "$FLOOD_RATE" \
    --json >"$TMP/spoof.json"
sleep 3
RSS2=$(mem VmRSS)
ANON2=$(mem RssAnon)
PEAK=$(mem VmHWM)
DROPPED=$("$XT" stats --json | python3 -c "import json,sys; v=json.load(sys.stdin); print(json.dumps([s['dropped'] for s in v['servers'] if s['pid']==$XPID][0]))")
FLOOD_S=$(python3 -c "import json; r=json.load(open('$TMP/spoof.json')); print(f\"{r['sent']} in {r['seconds']:.1f} s\")")
log "after flood: VmRSS $RSS2 kB, dropped $DROPPED"

REPORT=$(
    cat <<EOF
### Memory under churn and a spoofed flood ($(date -u +%Y-%m-%d), commit $(git -C "$ROOT" rev-parse --short HEAD))

\`bash bench/soak.sh\` (ALLOCS=$ALLOCS HOLD=$HOLD CHURN_SECONDS=$CHURN_SECONDS FLOOD=$FLOOD FLOOD_RATE=$FLOOD_RATE):
xturn on sockets, one worker thread, veth defaults.

| moment | VmRSS (kB) | of it anonymous (kB) |
|---|---|---|
| start (warmed up, no allocation) | $RSS0 | $ANON0 |
| peak during the churn (VmHWM) | $PEAK_CHURN | |
| after the churn ($ALLOCATED allocations made, $ALIVE left) | $RSS1 | $ANON1 |
| after the flood ($FLOOD_S) | $RSS2 | $ANON2 |
| peak over the run (VmHWM) | $PEAK | |

After the churn: $((RSS1 - RSS0)) kB above the start ($((ANON1 - ANON0)) kB anonymous); after
the flood: $((RSS2 - RSS1)) kB above that.
Dropped on purpose (status file): \`$DROPPED\`.
EOF
)
echo "$REPORT"
[ -n "$OUT" ] && echo "$REPORT" >"$OUT"
exit 0
