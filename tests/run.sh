#!/usr/bin/env bash
# Runs every check and test of the workspace, as CI does (.ci/run calls this script).
# On a fresh Debian machine it first installs what the tests need: coturn's turnutils_*
# clients (Debian package coturn) and Python's aioice, used as independent interop peers.
# Run as root: the XDP tests (BPF_PROG_TEST_RUN, veth in network namespaces) need it.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v turnutils_uclient >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ]; then
        echo "tests/run.sh: coturn's turnutils_uclient is missing; run as root to install it (apt-get install coturn)" >&2
        exit 1
    fi
    echo "tests/run.sh: installing coturn (interop clients turnutils_uclient/_peer/_stunclient)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends coturn >/dev/null
fi

if ! python3 -c "import aioice" >/dev/null 2>&1; then
    echo "tests/run.sh: installing aioice (Python TURN client used by aiortc) with pip"
    python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore aioice
fi

# The committed XDP object must be what its source builds to (installs the BPF toolchain
# on first use: Debian rustc-web + llvm-22, bpf-linker from crates.io).
bash xdp-ebpf/check.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
cargo build --workspace --bins --quiet
cargo test --workspace
