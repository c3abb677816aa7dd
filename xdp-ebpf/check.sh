#!/usr/bin/env bash
# CI check: the committed object xdp-ebpf/xturn-xdp.bpf.o is exactly what xdp-ebpf/build.sh
# makes from the committed sources (xdp-ebpf/program, xdp-ebpf/common, program/Cargo.lock).
# It rebuilds from scratch into a temporary directory and compares the bytes; the build is
# reproducible (see build.sh), so any difference means the object is stale.
# Installs the BPF toolchain first when missing (see build.sh; root needed for apt-get).
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

"$HERE/build.sh" --out "$TMP/xturn-xdp.bpf.o" --target-dir "$TMP/target"
if cmp -s "$TMP/xturn-xdp.bpf.o" "$HERE/xturn-xdp.bpf.o"; then
    echo "xdp-ebpf/check.sh: committed xturn-xdp.bpf.o matches its source ($(sha256sum <"$HERE/xturn-xdp.bpf.o" | cut -c1-16))"
    exit 0
fi
echo "xdp-ebpf/check.sh: xdp-ebpf/xturn-xdp.bpf.o does not match a fresh build of its source:" >&2
echo "  committed $(sha256sum <"$HERE/xturn-xdp.bpf.o" | cut -c1-64)" >&2
echo "  rebuilt   $(sha256sum <"$TMP/xturn-xdp.bpf.o" | cut -c1-64)" >&2
echo "  toolchain: $(/usr/bin/rustc -V), $(bpf-linker --version 2>/dev/null || echo 'no bpf-linker')" >&2
echo "Run xdp-ebpf/build.sh and commit xdp-ebpf/xturn-xdp.bpf.o with the source change." >&2
exit 1
