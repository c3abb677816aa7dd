#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does (.ci/run calls this script):
# formatting, clippy, the XDP object check, cargo test, cargo-deny and a short fuzz run.
# On a fresh Debian machine it first installs what the tests need: coturn's turnutils_*
# clients (Debian package coturn), Python's aioice and Debian's chromium (headless WebRTC),
# Python's prometheus_client (its OpenMetrics parser checks /metrics),
# used as independent interop peers, ethtool (the tuned XDP lab turns offloads off) and
# systemd (systemd-analyze verifies the unit file; no systemd is started) and nftables
# (the 1:1 NAT in front of the relay in tests/tests/nat1to1.rs), openssl (the TLS tests'
# CA) and stun-client (Debian's RFC 3489 `stun` client; pystun3 comes from pip).
# Run as root: the XDP tests (BPF_PROG_TEST_RUN, veth in network namespaces) need it.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=""
command -v turnutils_uclient >/dev/null 2>&1 || missing="$missing coturn"
command -v ethtool >/dev/null 2>&1 || missing="$missing ethtool"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
command -v nft >/dev/null 2>&1 || missing="$missing nftables"
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v stun >/dev/null 2>&1 || missing="$missing stun-client"
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: missing Debian packages:$missing; run as root to install them" >&2
        exit 1
    fi
    echo "tests/run.sh: installing$missing (interop clients, headless browser, ethtool, systemd-analyze, nft, openssl, stun)"
    apt-get update -qq
    # shellcheck disable=SC2086 # a list of package names
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

if ! python3 -c "import aioice" >/dev/null 2>&1; then
    echo "tests/run.sh: installing aioice (Python TURN client used by aiortc) with pip"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore aioice
fi
if ! python3 -c "import stun" >/dev/null 2>&1; then
    echo "tests/run.sh: installing pystun3 (an RFC 3489 STUN client) with pip"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore pystun3
fi
if ! python3 -c "import prometheus_client" >/dev/null 2>&1; then
    echo "tests/run.sh: installing prometheus_client (its parser reads xturn's /metrics) with pip"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore prometheus_client
fi

# The committed XDP object must be what its source builds to (installs the BPF toolchain
# on first use: Debian rustc-web + llvm-22, bpf-linker from crates.io).
bash xdp-ebpf/check.sh

cargo fmt --all -- --check
# No import cycle between the modules of control/ and relay/src (issue 15).
python3 tests/imports.py control/src relay/src
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace

# Licenses, sources and RustSec advisories of the dependency tree (deny.toml).
bash tests/deny.sh
# A short bounded run of every fuzz target (control/fuzz, relay/fuzz).
bash tests/fuzz.sh
