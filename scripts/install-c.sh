#!/usr/bin/env bash
# Builds the steward C library (steward-ffi) in release mode and installs it under PREFIX:
#
#   PREFIX/lib/libsteward_ffi.so, PREFIX/lib/libsteward_ffi.a   (debug info stripped)
#   PREFIX/include/steward.h
#   PREFIX/lib/pkgconfig/steward.pc                               (from steward-ffi/steward.pc.in)
#
# Usage: scripts/install-c.sh PREFIX        e.g. scripts/install-c.sh "$HOME/.local"
#
# Then: export PKG_CONFIG_PATH=PREFIX/lib/pkgconfig
#       cc app.c $(pkg-config --cflags --libs steward) -o app
# The .pc file's Libs carry -Wl,-rpath,PREFIX/lib, so the program finds the shared library at
# run time without LD_LIBRARY_PATH or ldconfig.
#
# DESTDIR (optional, for packaging) is prepended to every installed path but not to the paths
# written into steward.pc. Non-interactive and idempotent; exits non-zero on any failure.
set -euo pipefail

die() { printf 'install-c: %s\n' "$*" >&2; exit 1; }

[[ $# == 1 && -n "$1" ]] || die "usage: scripts/install-c.sh PREFIX   (e.g. scripts/install-c.sh \"\$HOME/.local\")"
PREFIX="$1"
[[ "$PREFIX" == /* ]] || PREFIX="$PWD/$PREFIX"
PREFIX="${PREFIX%/}"
[[ -n "$PREFIX" ]] || die "refusing to install into /: pass e.g. /usr/local"
# pkg-config splits its output on whitespace, and sed below uses '|' as the delimiter.
[[ "$PREFIX" =~ [[:space:]\|\\\'\"\$] ]] && die "PREFIX must not contain spaces, quotes, '|', '\\' or '\$': $PREFIX"
DEST="${DESTDIR:-}$PREFIX"

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

echo "install-c: cargo build --release -p steward-ffi" >&2
cargo build --release -p steward-ffi </dev/null

META="$(cargo metadata --no-deps --format-version 1 </dev/null)"
TARGET_DIR="$(grep -o '"target_directory":"[^"]*"' <<<"$META" | head -n1 | sed 's/.*:"\(.*\)"/\1/')"
VERSION="$(grep -o '"name":"steward-ffi","version":"[^"]*"' <<<"$META" | head -n1 | sed 's/.*"version":"\(.*\)"/\1/')"
[[ -n "$TARGET_DIR" && -n "$VERSION" ]] || die "cannot read the target directory or version from cargo metadata"
LIB="$TARGET_DIR/release"
for f in libsteward_ffi.so libsteward_ffi.a; do
    [[ -f "$LIB/$f" ]] || die "missing $LIB/$f after the build"
done

install -d "$DEST/lib/pkgconfig" "$DEST/include"
install -m 0755 "$LIB/libsteward_ffi.so" "$DEST/lib/libsteward_ffi.so"
install -m 0644 "$LIB/libsteward_ffi.a" "$DEST/lib/libsteward_ffi.a"
# No debug info in what is installed (the release profile has none; this also drops what the
# Rust standard library brings along), nor the LLVM bitcode the standard library's objects
# embed (unused by ordinary linking). Symbols stay, so backtraces keep function names.
STRIP="${STRIP:-strip}"
if command -v "$STRIP" >/dev/null 2>&1; then
    "$STRIP" --strip-debug --remove-section=.llvmbc --remove-section=.llvmcmd \
        "$DEST/lib/libsteward_ffi.so" "$DEST/lib/libsteward_ffi.a"
else
    echo "install-c: warning: '$STRIP' not found; the libraries keep any debug info" >&2
fi
install -m 0644 steward-ffi/include/steward.h "$DEST/include/steward.h"
sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@VERSION@|$VERSION|g" steward-ffi/steward.pc.in \
    >"$DEST/lib/pkgconfig/steward.pc.tmp"
chmod 0644 "$DEST/lib/pkgconfig/steward.pc.tmp"
mv -f "$DEST/lib/pkgconfig/steward.pc.tmp" "$DEST/lib/pkgconfig/steward.pc"

echo "install-c: installed steward $VERSION under $DEST:"
ls -l "$DEST/lib/libsteward_ffi.so" "$DEST/lib/libsteward_ffi.a" "$DEST/include/steward.h" \
    "$DEST/lib/pkgconfig/steward.pc"
cat <<EOF
Build a program with:
  export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
  cc app.c \$(pkg-config --cflags --libs steward) -o app
(steward.pc adds -Wl,-rpath,$PREFIX/lib, so ./app finds libsteward_ffi.so when run.)
EOF
