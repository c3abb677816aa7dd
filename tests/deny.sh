#!/usr/bin/env bash
# cargo-deny: licenses (permissive only, deny.toml), sources (crates.io only) and bans, and
# the RustSec advisories. Installs cargo-deny from crates.io on first use. The advisory
# database is a GitHub repository: where github.com cannot be reached (this project's CI
# machines reach only package registries) and no copy is in ~/.cargo/advisory-dbs, the
# advisories check is skipped with a line saying so, not passed.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! cargo deny --version >/dev/null 2>&1; then
    echo "tests/deny.sh: installing cargo-deny"
    cargo install --quiet --locked cargo-deny
fi
cargo deny --offline check licenses bans sources
if compgen -G "$HOME/.cargo/advisory-dbs/advisory-db-*/crates" >/dev/null; then
    cargo deny --offline check advisories
elif timeout 10 git ls-remote https://github.com/RustSec/advisory-db HEAD >/dev/null 2>&1; then
    cargo deny check advisories
else
    echo "tests/deny.sh: RustSec advisories NOT checked: github.com unreachable and no local copy" >&2
fi
