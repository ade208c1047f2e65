#!/usr/bin/env bash
# Installs what the test suite needs from Debian packages, and nothing when it is already there.
#
#   prometheus   the real Prometheus server the fleetscale-metrics integration tests start
#                (on free loopback ports, with their own config and storage; the tests never
#                use the packaged service, so it is not started here).
#
# Idempotent: safe to run on every CI run. Needs root (or sudo) only when something is missing.
# Override the binary the tests use with FLEETSCALE_PROMETHEUS=/path/to/prometheus.
set -euo pipefail

say() { printf 'install-test-deps: %s\n' "$*"; }

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
