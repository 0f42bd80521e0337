"""Blocks in Receipt.result() on a message nobody answers; Ctrl-C must interrupt it promptly.

Usage: python blocked_result.py NATS_URL DATA_DIR
Prints "waiting" once the main thread is inside result() (a watcher thread checks the main
thread's current line), and "interrupted" when KeyboardInterrupt arrives.
"""

import pathlib
import signal
import sys
import threading
import time

import steward

MARKER = "# <- blocked here"
WAIT_LINE = next(
    i for i, line in enumerate(pathlib.Path(__file__).read_text().splitlines(), 1)
    if line.rstrip().endswith(MARKER) and "WAIT_LINE" not in line and "MARKER =" not in line
)


def announce_when_blocked() -> None:
    main = threading.main_thread().ident
    while True:
        frame = sys._current_frames().get(main)
        if frame is not None and frame.f_lineno == WAIT_LINE:
            print("waiting", flush=True)
            return
        time.sleep(0.01)


# A parent started in the background (e.g. `cmd &` in a non-interactive shell) passes SIGINT
# on as ignored, and Python then installs no KeyboardInterrupt handler: install it explicitly.
signal.signal(signal.SIGINT, signal.default_int_handler)

url, data_dir = sys.argv[1], sys.argv[2]
with steward.Node("central", [url], data_dir=data_dir, ack_timeout=1, retry_wait=0.05) as node:
    receipt = node.send("nobody", "echo", ["x"])
    threading.Thread(target=announce_when_blocked, daemon=True).start()
    try:
        receipt.result()  # <- blocked here
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(0)
print("result returned, which it must not", flush=True)
sys.exit(1)
