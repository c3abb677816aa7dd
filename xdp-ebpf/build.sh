#!/usr/bin/env bash
# Builds xturn's XDP program (xdp-ebpf/program + xdp-ebpf/common) into the committed
# object xdp-ebpf/xturn-xdp.bpf.o, which relay/src/xdp.rs includes at compile time, so
# the workspace builds with stable cargo alone. Run it after changing either crate and
# commit the object with the source; xdp-ebpf/check.sh proves in CI that they match.
#
# Usage: xdp-ebpf/build.sh [--out FILE] [--target-dir DIR]
#
# Toolchain (installed when missing; installing needs root on Debian/Ubuntu):
#   - Debian's rustc (/usr/bin/rustc >= 1.96) with a prebuilt `core` for
#     bpfel-unknown-none: packages rustc-web libstd-rust-web-dev libstd-rust-web-dev-bpf.
#     RUSTC_BOOTSTRAP=1 lets it compile aya-ebpf's `asm_experimental_arch`; no build-std.
#   - bpf-linker 0.13.0 built against LLVM 22 (package llvm-22-dev), with cargo install.
#
# Reproducibility: source and registry paths are remapped (--remap-path-prefix), DWARF is
# stripped (BTF, which aya and the ABI test read, stays), so the object depends only on the
# sources, Cargo.lock and the toolchain versions above, not on where the checkout lives.
set -euo pipefail

# Called by cargo as RUSTC_WRAPPER (see step 3): run rustc with the path remapping. Flags
# given here, unlike RUSTFLAGS, do not enter cargo's -C metadata hash, which names every
# function of the object; so a checkout elsewhere yields the same bytes.
if [ -n "${XTURN_XDP_REMAP:-}" ]; then
    # shellcheck disable=SC2086 # XTURN_XDP_REMAP is a list of flags without spaces inside.
    exec "$@" $XTURN_XDP_REMAP
fi

HERE="$(cd "$(dirname "$0")" && pwd)"
OUT="$HERE/xturn-xdp.bpf.o"
TARGET_DIR="$HERE/program/target"
while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT="$2"; shift 2 ;;
        --target-dir) TARGET_DIR="$2"; shift 2 ;;
        *) echo "usage: $0 [--out FILE] [--target-dir DIR]" >&2; exit 2 ;;
    esac
done

RUSTC_BIN=/usr/bin/rustc
LLVM_PREFIX=/usr/lib/llvm-22
BPF_LINKER_VERSION=0.13.0
DEB_PACKAGES="rustc-web libstd-rust-web-dev libstd-rust-web-dev-bpf llvm-22-dev"
CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"

need_root() {
    if [ "$(id -u)" != 0 ]; then
        echo "xdp-ebpf/build.sh: $1 is missing; install as root: apt-get install $DEB_PACKAGES" >&2
        exit 1
    fi
}

# 1. Debian's rustc with the BPF core library, and LLVM 22 for bpf-linker.
if ! [ -x "$RUSTC_BIN" ] || ! [ -d /usr/lib/rustlib/bpfel-unknown-none ] || ! [ -x "$LLVM_PREFIX/bin/llvm-objcopy" ] \
    || ! [ -f "$LLVM_PREFIX/lib/libLLVM.so" ]; then
    need_root "the BPF Rust toolchain"
    echo "xdp-ebpf/build.sh: installing $DEB_PACKAGES" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $DEB_PACKAGES >/dev/null
fi

# 2. bpf-linker, built against that LLVM.
if ! command -v bpf-linker >/dev/null 2>&1 || [ "$(bpf-linker --version)" != "bpf-linker $BPF_LINKER_VERSION" ]; then
    echo "xdp-ebpf/build.sh: installing bpf-linker $BPF_LINKER_VERSION (LLVM 22)" >&2
    LLVM_PREFIX="$LLVM_PREFIX" cargo install "bpf-linker@$BPF_LINKER_VERSION" --locked \
        --no-default-features --features llvm-22 -j1 --quiet
    export PATH="$CARGO_HOME/bin:$PATH"
fi

# The committed object was built with exactly these; other versions may emit other bytes.
want_rustc="1.96.0"
have_rustc="$("$RUSTC_BIN" -vV | sed -n 's/^release: //p')"
have_llvm="$("$RUSTC_BIN" -vV | sed -n 's/^LLVM version: //p')"
if [ "$have_rustc" != "$want_rustc" ] || [ "${have_llvm%%.*}" != 22 ]; then
    echo "xdp-ebpf/build.sh: warning: $RUSTC_BIN is $have_rustc (LLVM $have_llvm); the committed object was built with $want_rustc (LLVM 22)" >&2
fi

# 3. The program. BTF generated from debug info (--btf); memset/memcpy expanded inline (a
# BPF program cannot call them); BPF ISA v3 (Linux >= 5.1: 32-bit ALU and jumps, which
# keep the verifier's bounds precise). Misaligned memory access allowed (LLVM 22's
# allows-misaligned-mem-access): without it every 16- or 32-bit field of the packet (the
# IP header sits at offset 14) and every copy of a byte-array key is done a byte at a
# time; the verifier accepts misaligned packet and map-value access on architectures with
# efficient unaligned access (x86-64, arm64) and the JIT emits plain loads. Paths that end
# up in BTF line info are remapped to fixed names by the wrapper above.
RUSTFLAGS="-C link-arg=--btf -C link-arg=--disable-expand-memcpy-in-order -C target-cpu=v3 -C link-arg=--cpu-features=+allows-misaligned-mem-access"
(
    cd "$HERE/program"
    XTURN_XDP_REMAP="--remap-path-prefix=$HERE/program=/xturn/xdp-ebpf/program --remap-path-prefix=$CARGO_HOME=/cargo" \
        RUSTC_WRAPPER="$HERE/build.sh" RUSTC="$RUSTC_BIN" RUSTC_BOOTSTRAP=1 RUSTFLAGS="$RUSTFLAGS" \
        CARGO_TARGET_DIR="$TARGET_DIR" cargo build --quiet --locked --release --target bpfel-unknown-none -j1
)
"$LLVM_PREFIX/bin/llvm-objcopy" --strip-debug \
    "$TARGET_DIR/bpfel-unknown-none/release/xturn-xdp" "$OUT"
echo "xdp-ebpf/build.sh: wrote $OUT ($(wc -c <"$OUT") bytes, sha256 $(sha256sum "$OUT" | cut -c1-16))" >&2
