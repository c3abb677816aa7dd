#!/usr/bin/env bash
# bench/stream.sh: TURN over TCP and over TLS on the client leg, xturn against coturn, the
# same loads in one run on loopback: `xturn-bench stream` opens FLOWS connections (an
# allocation and a channel each) and sends SIZE-byte ChannelData to a UDP peer at RATE/s
# (then flat out) for DURATION s; it reports the delivered rate and the server threads'
# CPU time per delivered datagram (schedstat). Each server runs alone, pinned to
# RELAY_CPU with one relay thread; the generator runs on GEN_CPU. On loopback the kernel's
# TCP receive work runs on the sender's CPU, so the server's own CPU is the comparable
# figure here, not a core's busy share.
#
#   bash bench/stream.sh            # COTURN=/path/to/turnserver for another build
#
# A CA and a server certificate are made in a temporary directory with openssl.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-5}
RATE=${RATE:-20000}
FLOWS=${FLOWS:-4}
SIZE=${SIZE:-200}
COTURN=${COTURN:-turnserver}
RELAY_CPU=${RELAY_CPU:-1}
GEN_CPU=${GEN_CPU:-0}
# Kept beside RESULTS.md; `xturn-bench report` appends it as a section of its own.
OUT=${OUT:-bench/stream.md}

command -v "$COTURN" >/dev/null || { echo "bench/stream.sh: $COTURN not found (Debian: apt-get install coturn)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "bench/stream.sh: openssl not found" >&2; exit 1; }
cargo build --release -q -p xturn-relay --bin xturn -p xturn-bench --bin xturn-bench
X=target/release/xturn
B=target/release/xturn-bench

TMP=$(mktemp -d)
SERVER_PID=""
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    rm -rf "$TMP"
}
trap cleanup EXIT

(
    cd "$TMP"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key -out ca.pem \
        -days 2 -subj "/CN=bench CA" 2>/dev/null
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout server.key -out server.csr \
        -subj "/CN=127.0.0.1" 2>/dev/null
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >san.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem \
        -days 2 -extfile san.ext 2>/dev/null
    chmod 0644 server.key
)

RESULTS="$TMP/results"
mkdir -p "$RESULTS"

# $1 label, $2 tcp port, $3 tls port
run_loads() {
    local label=$1 tcp=$2 tls=$3
    for transport in tcp tls; do
        local port=$tcp extra=()
        if [ "$transport" = tls ]; then port=$tls; extra=(--tls-ca "$TMP/ca.pem"); fi
        for rate in "$RATE" 0; do
            taskset -c "$GEN_CPU" "$B" stream --server "127.0.0.1:$port" "${extra[@]}" \
                --user bench:bench --flows "$FLOWS" --rate "$rate" --duration "$DURATION" \
                --size "$SIZE" --relay-pid "$SERVER_PID" --label "$label" \
                --json-out "$RESULTS/$label-$transport-$rate.json"
        done
    done
}

wait_tcp() {
    for _ in $(seq 1 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "bench/stream.sh: nothing listens on 127.0.0.1:$1" >&2
    exit 1
}

# ---- xturn -------------------------------------------------------------------------------
XTURN_CMD=("$X" --listening-ip 127.0.0.1 --listening-port 34780 --tls-listening-port 35349
    --cert "$TMP/server.pem" --pkey "$TMP/server.key" --user bench:bench --realm bench
    --allow-loopback-peers --threads 1 --log-level warn)
taskset -c "$RELAY_CPU" "${XTURN_CMD[@]}" >"$TMP/xturn.log" 2>&1 &
SERVER_PID=$!
wait_tcp 34780
wait_tcp 35349
run_loads xturn 34780 35349
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

# ---- coturn ------------------------------------------------------------------------------
COTURN_CMD=("$COTURN" -n --no-dtls --no-cli --no-rfc5780 -L 127.0.0.1 --listening-port 34880
    --tls-listening-port 35449 --cert "$TMP/server.pem" --pkey "$TMP/server.key"
    --relay-threads 1 -a -f --user bench:bench --realm bench --allow-loopback-peers
    --pidfile "$TMP/turnserver.pid" --log-file "$TMP/turnserver.log" --simple-log)
taskset -c "$RELAY_CPU" "${COTURN_CMD[@]}" >"$TMP/coturn.out" 2>&1 &
SERVER_PID=$!
wait_tcp 34880
wait_tcp 35449
run_loads coturn 34880 35449
COTURN_VERSION=$("$COTURN" --version 2>/dev/null | head -1 || echo unknown)
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=""

# ---- report ------------------------------------------------------------------------------
mkdir -p "$(dirname "$OUT")"
CHANGED=$(git status --porcelain -- control relay bench | wc -l)
python3 - "$RESULTS" "$OUT" "$COTURN_VERSION" "$(git rev-parse --short HEAD)" "$CHANGED" \
    "DURATION=$DURATION RATE=$RATE FLOWS=$FLOWS SIZE=$SIZE RELAY_CPU=$RELAY_CPU GEN_CPU=$GEN_CPU" \
    "${XTURN_CMD[*]}" "${COTURN_CMD[*]}" "$(nproc)" "$(uname -r)" <<'EOF'
import datetime, json, os, sys
d, out, coturn, commit, changed, knobs, xcmd, ccmd, ncpu, kernel = sys.argv[1:11]
rows = {}
for f in sorted(os.listdir(d)):
    r = json.load(open(os.path.join(d, f)))
    rows[(r["label"], r["transport"], r["offered_rate"])] = r
when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
lines = [
    f"- Date: {when}; {ncpu} CPUs, Linux {kernel}",
    f"- Command: `bash bench/stream.sh` ({knobs})",
    f"- xturn: `{xcmd}` at commit {commit} ({changed} changed files under control/ relay/ bench/)",
    f"- coturn: `{coturn}` (Debian's), `{ccmd}`",
    "- Both on loopback, each alone and pinned to the relay CPU with one relay thread; the"
    " generator's connections (an allocation and a channel each) write ten padded"
    " ChannelData messages per write; the peer is a UDP socket of the generator. Delivered/s"
    " counts what arrived while the clients sent. The kernel's TCP receive work for"
    " loopback runs on the sending CPU, so the servers' own threads' CPU time (schedstat)"
    " per delivered datagram is the cost compared, not a core's busy share.",
    "",
    "| transport | offered/s | server | delivered/s | server threads' CPU per datagram | their share of a core | sent | received |",
    "|---|---|---|---|---|---|---|---|",
]
for t in ["tcp", "tls"]:
    for rate in sorted({k[2] for k in rows}, key=lambda x: (x == 0, x)):
        for label in ["xturn", "coturn"]:
            r = rows.get((label, t, rate))
            if not r:
                continue
            us = r["relay_cpu_us_per_datagram"]
            share = r["relay_cpu_share"]
            lines.append(
                f"| {t} | {'max' if rate == 0 else rate} | {label} | {r['received_per_s']:.0f} | "
                f"{us:.2f} us | {share * 100:.0f} % | {r['sent']} | {r['received']} |"
            )
        x, c = rows.get(("xturn", t, rate)), rows.get(("coturn", t, rate))
        if x and c and x["relay_cpu_us_per_datagram"] and c["relay_cpu_us_per_datagram"]:
            lines.append(
                f"| {t} | {'max' if rate == 0 else rate} | **xturn/coturn** | "
                f"{x['received_per_s'] / max(c['received_per_s'], 1):.2f}x | "
                f"{c['relay_cpu_us_per_datagram'] / x['relay_cpu_us_per_datagram']:.2f}x less | | | |"
            )
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
EOF
echo "bench/stream.sh: wrote $OUT"
