#!/usr/bin/env bash
# The NAT lab's ICE matrix (tests/tests/natlab.rs): two aioice agents behind every pair of
# the lab's NATs, xturn as their STUN and TURN server; writes bench/NATLAB.md with the
# matrix, the date and this command. Needs root, nftables and aioice (tests/run.sh
# installs them). About a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp)
XTURN_NATLAB_OUT="$tmp" cargo test -q -p xturn-tests --test natlab \
    ice_punches_through_cones_and_falls_back_to_the_relay_otherwise -- --nocapture
{
    echo "# The NAT lab: ICE through every pair of NATs"
    echo
    echo "Made by \`bash bench/natlab.sh\` on $(date -u +%Y-%m-%d) (the test"
    echo "\`tests/tests/natlab.rs\` ice_punches_through_cones_and_falls_back_to_the_relay_otherwise,"
    echo "which fails if any cell differs from the article's story). Two aioice $(python3 -c 'import aioice; print(aioice.__version__)') agents, one"
    echo "behind each router, gather host, srflx and relay candidates from xturn, signal through"
    echo "files, run ICE, then send 200 datagrams that the other echoes. \"direct\": the nominated"
    echo "pair has no relayed candidate; the last column counts every packet xturn relayed in the"
    echo "run (ICE checks on relay pairs included), from its status file."
    echo
    cat "$tmp"
} > bench/NATLAB.md
rm -f "$tmp"
echo "wrote bench/NATLAB.md"
