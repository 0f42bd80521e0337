#!/usr/bin/env bash
# Fuzzes the message parser, the inmsg.txt reader and the binary frame decoder with cargo fuzz
# (libFuzzer).
#   bash scripts/fuzz.sh [SECONDS per target, default 60]
# cargo fuzz needs nightly compiler flags; on a stable toolchain RUSTC_BOOTSTRAP=1 enables them.
# A crash leaves its input in steward/fuzz/artifacts/<target>/: add it as a regression test
# (e.g. in steward/src/wire/message.rs or node/ingest.rs tests) before fixing.
set -euo pipefail
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SECONDS_PER_TARGET="${1:-60}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd "$REPO_ROOT/steward"
seed='[{"toNode":"ship1","data":["bash","-c","ls -l ../"],"commandOrEvent":"command","method":"shellCommand"}]'
# A binary envelope (version 2): echo "hi" from central, with a session tag.
frame_seed='\x02\x01\x02\x01\x05hello\x07central\x00\x01\x02hi\x01\x2a\x01\x00\x00\x00\x00\x00\x03AAAAAAAAAAAAAAAA'
for target in parse_json inmsg wire_frame; do
    mkdir -p "fuzz/corpus/$target"
    if [[ "$target" == wire_frame ]]; then
        [[ -f "fuzz/corpus/$target/seed" ]] || printf "$frame_seed" > "fuzz/corpus/$target/seed"
    else
        [[ -f "fuzz/corpus/$target/seed" ]] || printf '%s\n' "$seed" > "fuzz/corpus/$target/seed"
    fi
    echo "==== fuzzing $target for ${SECONDS_PER_TARGET}s ===="
    RUSTC_BOOTSTRAP=1 cargo fuzz run -O "$target" -- -max_total_time="$SECONDS_PER_TARGET" -max_len=8192
done
echo "no crash found"
