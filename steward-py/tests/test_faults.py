"""Faults through Python: the link cut and restored, Ctrl-C during result(), two processes."""

from __future__ import annotations

import pathlib
import signal
import time

import pytest

import steward
from conftest import Collector, NatsServer, run_script, wait_until


def test_link_cut_and_restored_loses_nothing(
    pair: tuple[steward.Node, steward.Node], nats: NatsServer
) -> None:
    central, ship = pair
    assert central.send("ship1", "echo", ["warm-up"]).result(timeout=30).stdout == "warm-up"
    finals = Collector()
    central.on_result(finals)

    nats.kill()
    wait_until(lambda: not central.connected and not ship.connected, what="both nodes to notice")
    receipts = [central.send("ship1", "echo", [str(i)]) for i in range(20)]
    assert all(central.message(r.id).state in ("queued", "sent") for r in receipts)

    nats.restart()
    results = [r.result(timeout=60) for r in receipts]
    assert [r.stdout for r in results] == [str(i) for i in range(20)]
    ids = {r.id for r in receipts}
    finals.wait_for(lambda xs: ids <= {s.id for s in xs})
    [dest] = central.status()
    assert (dest.completed, dest.pending, dest.failed) == (21, 0, 0)


def test_ctrl_c_interrupts_a_blocked_result(tmp_path: pathlib.Path, nats: NatsServer) -> None:
    stderr = tmp_path / "stderr.txt"
    proc = run_script("blocked_result.py", stderr, nats.url, str(tmp_path / "central"))
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "waiting"
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        line = proc.stdout.readline().strip()
        elapsed = time.monotonic() - sent
        assert line == "interrupted", stderr.read_text()
        assert elapsed < 2.0, f"KeyboardInterrupt took {elapsed:.2f} s"
        assert proc.wait(timeout=30) == 0
    finally:
        _reap(proc)


def test_two_nodes_in_two_processes(tmp_path: pathlib.Path, nats: NatsServer, make_node) -> None:
    stderr = tmp_path / "stderr.txt"
    proc = run_script("ship.py", stderr, nats.url, str(tmp_path / "ship1"))
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "ready", stderr.read_text()
        central = make_node("central").start()
        who = central.send("ship1", "whoami").result(timeout=30)
        assert who.stdout == f"ship1 pid {proc.pid} called by central"
        shell = central.send("ship1", "shellCommand", ["bash", "-c", "echo $PPID"]).result(timeout=30)
        assert shell.stdout.strip() == str(proc.pid)
        proc.stdin.close()
        assert proc.stdout.readline().strip() == "stopped"
        assert proc.wait(timeout=30) == 0
    finally:
        _reap(proc)


def _reap(proc) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        if stream is not None:
            stream.close()


def test_stop_returns_when_the_broker_is_gone(
    make_node, nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    ship = make_node("ship1").start()
    wait_until(lambda: ship.connected, what="ship1 to connect")
    nats.kill()
    started = time.monotonic()
    ship.stop()
    assert time.monotonic() - started < 15
    assert not ship.running
