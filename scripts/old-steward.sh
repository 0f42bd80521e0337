#!/usr/bin/env bash
# Builds the `steward` command of an earlier git revision, for the mixed-version tests
# (tests/tests/mixed_versions.rs, run by scripts/mixed-versions.sh).
#
#   bash scripts/old-steward.sh [REV]      # REV: any commit-ish; default OLD_STEWARD_REV below
#
# The binary lands in <target>/old-steward/<commit>/steward (<target>: $CARGO_TARGET_DIR, else
# <repo>/target; <commit>: REV resolved to its full hash, so a moving branch name never serves a
# stale binary). The last line on stdout is its absolute path; build output and notes go to
# stderr. Idempotent: an existing binary is reused without building. The source comes from
# `git archive REV` (the committed tree: the working tree's edits never leak in) and is built
# with its own Cargo.lock (--locked) in a build directory shared by every revision,
# <target>/old-steward/build, so a second revision recompiles only what changed.
# Non-interactive (CI=true, no stdin). Needs the revision in the clone's history: in a shallow
# clone, `git fetch --unshallow` first.
set -euo pipefail

# The last version that speaks only the JSON wire format.
OLD_STEWARD_REV="ef36e0d"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REV="${1:-$OLD_STEWARD_REV}"

log() { printf '[old-steward] %s\n' "$*" >&2; }
die() { printf '[old-steward] ERROR: %s\n' "$*" >&2; exit 1; }

command -v git >/dev/null 2>&1 || die "git not found"
command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (rustup)"

if ! COMMIT="$(git -C "$REPO_ROOT" rev-parse --verify --quiet "${REV}^{commit}")"; then
    hint=""
    if [[ "$(git -C "$REPO_ROOT" rev-parse --is-shallow-repository 2>/dev/null)" == "true" ]]; then
        hint=" (this clone is shallow: run 'git fetch --unshallow' first)"
    fi
    die "revision '$REV' is not a commit of $REPO_ROOT$hint"
fi

ROOT="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/old-steward"
DEST_DIR="$ROOT/$COMMIT"
BIN="$DEST_DIR/steward"

if [[ -x "$BIN" ]]; then
    log "steward of $REV ($COMMIT) already built"
    printf '%s\n' "$BIN"
    exit 0
fi

mkdir -p "$ROOT"
# One build at a time: the build directory and the binary it writes are shared.
exec 9>"$ROOT/.lock"
flock 9
if [[ -x "$BIN" ]]; then # built by another run while this one waited for the lock
    log "steward of $REV ($COMMIT) already built"
    printf '%s\n' "$BIN"
    exit 0
fi

SRC="$(mktemp -d "$ROOT/src.XXXXXX")"
trap 'rm -rf "$SRC"' EXIT

log "extracting $REV ($COMMIT) into $SRC"
# -m: the files get the time of extraction, not the commit's. With the commit's time, cargo
# would take the sources of a revision committed before the last build as unchanged and
# hand back the binary of the revision built before (the shared build directory's
# fingerprints do not depend on where the source lies).
git -C "$REPO_ROOT" archive --format=tar "$COMMIT" | tar -x -m -C "$SRC"
[[ -f "$SRC/examples/Cargo.toml" ]] || die "$REV has no examples/Cargo.toml: no steward command to build there"

# Package and binary as that revision names them (the `steward` binary of the CLI package).
PKG="$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$SRC/examples/Cargo.toml" | head -n1)"
[[ -n "$PKG" ]] || die "cannot read the package name from $REV's examples/Cargo.toml"

BUILD="$ROOT/build"
log "building $PKG (bin steward) of $REV, release, CARGO_TARGET_DIR=$BUILD"
started=$SECONDS
(
    cd "$SRC"
    CARGO_TARGET_DIR="$BUILD" cargo build --release --locked -p "$PKG" --bin steward </dev/null >&2
)
log "built in $((SECONDS - started)) s"

mkdir -p "$DEST_DIR"
cp "$BUILD/release/steward" "$BIN.tmp"
printf '%s %s\n' "$REV" "$COMMIT" >"$DEST_DIR/REVISION"
mv -f "$BIN.tmp" "$BIN" # the binary appears whole or not at all
log "steward of $REV: $("$BIN" --version 2>/dev/null || echo '(no --version)')"
printf '%s\n' "$BIN"
