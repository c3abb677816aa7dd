# bench/lab.sh: the standard NETLAB relay topology, sourced by bench/compare.sh.
#
#   ns client (192.0.2.2) --veth-- ns relay (192.0.2.1 | 198.51.100.1) --veth-- ns peer (198.51.100.2)
#
# lab_up PREFIX GEN_CPU RELAY_CPU creates namespaces ${PREFIX}c, ${PREFIX}r, ${PREFIX}p and
# veths ${PREFIX}ca/${PREFIX}rc, ${PREFIX}rp/${PREFIX}pa with TX checksum offload off
# (NETLAB.md), GRO on and threaded NAPI; the relay-side napi/* threads are pinned to
# RELAY_CPU and the outer ones to GEN_CPU, like two hosts whose NIC interrupts land on
# their own cores. It sets LAB_NAPI (a description for the report) and
# LAB_RELAY_NAPI_PIDS (the relay side's NAPI kthreads, comma-separated). lab_down PREFIX
# removes the namespaces (and with them the veths). Nothing here sends traffic.

lab_up() {
    local p=$1 gen=$2 relay=$3 d dev ns cpu
    lab_up_plain "$p"
    # dev:namespace:cpu
    local devs=("${p}ca:${p}c:$gen" "${p}rc:${p}r:$relay" "${p}rp:${p}r:$relay" "${p}pa:${p}p:$gen")
    for d in "${devs[@]}"; do
        IFS=: read -r dev ns cpu <<<"$d"
        # GRO on gives a veth its NAPI instance, which threaded mode then runs in a kthread.
        ip netns exec "$ns" ethtool -K "$dev" tx off gro on >/dev/null
        ip netns exec "$ns" sh -c "echo 1 > /sys/class/net/$dev/threaded"
    done
    lab_pin_napi "$p" "$gen" "$relay"
}

# lab_pin_napi PREFIX GEN_CPU RELAY_CPU: find the veths' napi/* kthreads, pin the relay
# side's to RELAY_CPU and the outer ones to GEN_CPU, and set LAB_NAPI and
# LAB_RELAY_NAPI_PIDS. lab_up calls it; call it again after attaching XDP programs or
# AF_XDP sockets to check that the NAPI threads are still the ones measured (a NAPI
# instance the kernel recreates gets a new, unpinned kthread).
lab_pin_napi() {
    local p=$1 gen=$2 relay=$3 d dev ns cpu found f comm pid
    local devs=("${p}ca:${p}c:$gen" "${p}rc:${p}r:$relay" "${p}rp:${p}r:$relay" "${p}pa:${p}p:$gen")
    LAB_NAPI=""
    LAB_RELAY_NAPI_PIDS=""
    for d in "${devs[@]}"; do
        IFS=: read -r dev ns cpu <<<"$d"
        found=0
        for f in /proc/[0-9]*/comm; do
            read -r comm <"$f" 2>/dev/null || continue
            case "$comm" in
            "napi/$dev-"*)
                pid=${f#/proc/}
                pid=${pid%/comm}
                taskset -pc "$cpu" "$pid" >/dev/null
                found=$((found + 1))
                if [ "$ns" = "${p}r" ]; then
                    LAB_RELAY_NAPI_PIDS="${LAB_RELAY_NAPI_PIDS:+$LAB_RELAY_NAPI_PIDS,}$pid"
                fi
                ;;
            esac
        done
        if [ "$found" = 0 ]; then
            echo "lab.sh: no napi thread for $dev (threaded NAPI unsupported?)" >&2
            return 1
        fi
        LAB_NAPI="$LAB_NAPI $dev→CPU$cpu"
    done
}

# lab_up_plain PREFIX: the same topology left as users have it: veths at their defaults
# (TX checksum offload on, GRO off), nothing else set. Without GRO or an XDP program a
# veth has no NAPI instance; once xturn attaches its program to the relay's veths,
# lab_pin_relay_napi PREFIX RELAY_CPU makes their NAPI threaded, pins it and sets
# LAB_RELAY_NAPI_PIDS.
lab_up_plain() {
    local p=$1 ns
    for ns in "${p}c" "${p}r" "${p}p"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "${p}ca" netns "${p}c" type veth peer "${p}rc" netns "${p}r"
    ip link add "${p}rp" netns "${p}r" type veth peer "${p}pa" netns "${p}p"
    ip -n "${p}c" addr add 192.0.2.2/24 dev "${p}ca"
    ip -n "${p}r" addr add 192.0.2.1/24 dev "${p}rc"
    ip -n "${p}r" addr add 198.51.100.1/24 dev "${p}rp"
    ip -n "${p}p" addr add 198.51.100.2/24 dev "${p}pa"
    ip -n "${p}c" link set "${p}ca" up
    ip -n "${p}r" link set "${p}rc" up
    ip -n "${p}r" link set "${p}rp" up
    ip -n "${p}p" link set "${p}pa" up
}

lab_pin_relay_napi() {
    local p=$1 relay=$2 dev f comm pid found
    LAB_RELAY_NAPI_PIDS=""
    for dev in "${p}rc" "${p}rp"; do
        ip netns exec "${p}r" sh -c "echo 1 > /sys/class/net/$dev/threaded"
        found=0
        for f in /proc/[0-9]*/comm; do
            read -r comm <"$f" 2>/dev/null || continue
            case "$comm" in
            "napi/$dev-"*)
                pid=${f#/proc/}
                pid=${pid%/comm}
                taskset -pc "$relay" "$pid" >/dev/null
                found=$((found + 1))
                LAB_RELAY_NAPI_PIDS="${LAB_RELAY_NAPI_PIDS:+$LAB_RELAY_NAPI_PIDS,}$pid"
                ;;
            esac
        done
        if [ "$found" = 0 ]; then
            echo "lab.sh: no napi thread for $dev (no XDP program attached?)" >&2
            return 1
        fi
    done
}

lab_down() {
    local p=$1 ns
    for ns in "${p}c" "${p}r" "${p}p"; do
        ip netns del "$ns" 2>/dev/null || true
    done
}

# cpu_ticks CPU: "busy total" jiffies of one CPU from /proc/stat (busy = all but idle+iowait).
cpu_ticks() {
    awk -v c="cpu$1" '$1 == c { b = $2 + $3 + $4 + $7 + $8 + $9; print b, b + $5 + $6 }' /proc/stat
}

# wait_quiet CPU... : wait (at most 30 s) until each CPU is under 5 % busy over half a
# second, so a load does not start while something else (a build) runs. Prints the last
# busy percentages; returns 1 if the machine never became quiet.
wait_quiet() {
    local try c a b busy ok
    for try in $(seq 1 60); do
        declare -A before=()
        for c in "$@"; do before[$c]=$(cpu_ticks "$c"); done
        sleep 0.5
        ok=1
        LAB_BUSY=""
        for c in "$@"; do
            read -r a b <<<"${before[$c]}"
            read -r busy total <<<"$(cpu_ticks "$c")"
            busy=$(((busy - a) * 100 / (total - b > 0 ? total - b : 1)))
            LAB_BUSY="$LAB_BUSY cpu$c=${busy}%"
            [ "$busy" -lt 5 ] || ok=0
        done
        [ "$ok" = 1 ] && return 0
    done
    return 1
}

# foreign_ticks EXCLUDE_PID [PREFIX]: CPU jiffies (user+system, children included) used so
# far by processes other than ours: every user-space process that is not EXCLUDE_PID (the
# script) or one of its descendants (the servers, generators and sinks it started), and
# with PREFIX the NAPI kthreads of other runs' veths (`napi/*` not named `napi/PREFIX*`:
# another test's traffic in other namespaces). Its growth during a load is interference,
# e.g. a compiler or another network test on the same machine (also one running xturn).
foreign_ticks() {
    awk -v me="$1" -v prefix="${2:-}" '
        FNR == 1 {
            comm = $0; sub(/^[^(]*\(/, "", comm); sub(/\)[^)]*$/, "", comm)
            rest = $0; sub(/^.*\) /, "", rest); split(rest, f, " ")
            pid = FILENAME; gsub(/[^0-9]/, "", pid)
            if (pid == 2 || pid == me) next
            if (f[2] == 2) {
                # A kernel thread: only the NAPI threads of other runs count.
                if (prefix == "" || comm !~ /^napi\// || index(comm, "napi/" prefix) == 1) next
                kt += f[12] + f[13]
                next
            }
            ppid[pid] = f[2]
            ticks[pid] = f[12] + f[13] + f[14] + f[15]
        }
        END {
            for (p in ticks) {
                q = p
                for (depth = 0; depth < 64 && q != "" && q != 0 && q != 1 && q != me; depth++) q = ppid[q]
                if (q != me) t += ticks[p]
            }
            print t + kt + 0
        }' /proc/[0-9]*/stat 2>/dev/null || true # a process may exit between the glob and the read (awk then exits 2)
}
