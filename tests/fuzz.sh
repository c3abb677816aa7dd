#!/usr/bin/env bash
# A short, bounded run of every cargo-fuzz target (control/fuzz, relay/fuzz): FUZZ_SECONDS
# (default 15) each, on the stable toolchain without a sanitizer (-s none: Rust code needs
# none for memory safety; a panic is the failure). Installs cargo-fuzz from crates.io on
# first use. tests/run.sh calls it; a longer hunt: FUZZ_SECONDS=600 bash tests/fuzz.sh.
# A crash leaves its input in <crate>/fuzz/artifacts/<target>/ and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${FUZZ_SECONDS:-15}
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "tests/fuzz.sh: installing cargo-fuzz"
    cargo install --quiet --locked cargo-fuzz
fi
run() {
    local dir=$1 target=$2 seeds="$1/seeds/$2"
    mkdir -p "$dir/corpus/$target"
    local extra=()
    [ -d "$seeds" ] && extra=("$seeds")
    echo "tests/fuzz.sh: $dir $target for ${SECS}s"
    (cd "$dir" && cargo fuzz run --sanitizer none "$target" "corpus/$target" "${extra[@]/#$dir\//}" -- \
        -max_total_time="$SECS" -max_len=2048 -print_final_stats=1 2>&1 |
        grep -E "^(Done|stat::number_of_executed_units|==|thread '|SUMMARY|Test unit written)" || true)
    # libFuzzer exits non-zero on a crash; the pipe above hides it, the artifact does not.
    if ls "$dir/artifacts/$target"/crash-* >/dev/null 2>&1; then
        echo "tests/fuzz.sh: $target crashed: $(ls "$dir/artifacts/$target"/crash-*)" >&2
        return 1
    fi
}
for t in stun_message channel_data server; do run control/fuzz "$t"; done
for t in frame config; do run relay/fuzz "$t"; done
