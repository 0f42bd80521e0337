#!/usr/bin/env bash
# Benchmarks (issue 5): steward next to raw async-nats on the same nats-server in the same run.
# Builds the release binary and runs the whole suite: round trip, throughput at 1/64/1,024 in
# flight, events with and without ACK, fan-out to 100/1,000/10,000 nodes, a 100,000-message
# backlog and a sender SIGKILLed with 100,000 pending, memory/disk/CPU footprint. Prints one
# table (measure, steward, raw NATS, ratio, target, met?) and writes it as JSON.
#
# Usage: scripts/bench.sh [--quick] [--json PATH] [--only SECTION,...] [--fanout N,...] [--backlog N]
#   --quick      10,000-message backlog, fan-out to 100 and 1,000 nodes, fewer samples (< 1 min)
#   --json PATH  where the JSON goes (default target/bench/latest.json)
#   --only       throughput,fanout,backlog,footprint (or pipeline: a profiling target)
# Takes about 90 s on 2 cores (--quick: about 25 s). Env: NATS_SERVER_BIN picks the nats-server.
# The figures depend on the machine's load: the last line of the output gives the load average
# before and after the run.
set -euo pipefail
cd "$(dirname "$0")/.."

for a in "$@"; do
    case "$a" in
        -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    esac
done

if [[ -z "${NATS_SERVER_BIN:-}" && -x .venv/bin/nats-server ]]; then
    export NATS_SERVER_BIN="$PWD/.venv/bin/nats-server"
fi
cargo build --release -p steward-tests --bin steward-bench >&2
exec ./target/release/steward-bench "$@"
