"""A ship node in its own process: serves `whoami`, prints "ready", runs until stdin closes.

Usage: python ship.py NATS_URL DATA_DIR
"""

import os
import sys

import steward

url, data_dir = sys.argv[1], sys.argv[2]
# signatures off: the test is about a node in another process, not enrolment (conftest.OPEN).
node = steward.Node("ship1", [url], data_dir=data_dir, ack_timeout=1, retry_wait=0.05, signatures="off")


@node.method("whoami")
def whoami(req: steward.Request) -> str:
    return f"ship1 pid {os.getpid()} called by {req.from_node}"


with node:
    print("ready", flush=True)
    sys.stdin.read()
print("stopped", flush=True)
