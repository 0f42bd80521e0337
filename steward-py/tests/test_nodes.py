"""Two nodes in one process: the original shellCommand round trip, fan-out, state, lifecycle."""

from __future__ import annotations

import asyncio
import logging
import pathlib
import socket
import sysconfig

import pytest

import steward
from conftest import OPEN, Collector, NatsServer, free_port, wait_until

ORIGINAL_JSON = (
    '[{"toNode":"ship1","data":["bash","-c","ls -l ../"],'
    '"commandOrEvent":"command","method":"shellCommand"}]'
)


def test_installed_package() -> None:
    """The tests exercise the installed wheel, not the source tree."""
    installed = pathlib.Path(sysconfig.get_paths()["purelib"]).resolve()
    assert pathlib.Path(steward.__file__).resolve().is_relative_to(installed), steward.__file__
    assert steward._steward.__file__.endswith(".so")


def test_original_shell_command_round_trip(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    [receipt] = central.send_json(ORIGINAL_JSON)
    assert receipt.subject == "ship1.command.shellCommand"
    result = receipt.result(timeout=30)
    assert result.ok and result.status == "ok"
    assert result.exit_code == 0
    assert result.node == "ship1"
    # The command runs in ship1's data directory, so ../ lists the test's directory.
    assert result.stdout.startswith("total ")
    assert "ship1" in result.stdout and "central" in result.stdout
    assert result.duration >= 0
    assert not result.truncated and result.error is None


def test_send_shell_command_and_failure_exit_code(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    ok = central.send(to="ship1", method="shellCommand", data=["bash", "-c", "echo out; echo err >&2"])
    bad = central.send(to="ship1", method="shellCommand", data=["bash", "-c", "exit 3"])
    r = ok.result(timeout=30)
    assert (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 0)
    f = bad.result(timeout=30)
    assert f.status == "failed" and f.exit_code == 3 and not f.ok


def test_fan_out_to_a_list_of_nodes(make_node) -> None:
    central = make_node("central").start()
    make_node("ship1").start()
    make_node("ship2").start()
    receipts = central.send(to=["ship1", "ship2"], method="echo", data=["hi"])
    assert isinstance(receipts, list) and [r.to_node for r in receipts] == ["ship1", "ship2"]
    results = [r.result(timeout=30) for r in receipts]
    assert [(r.node, r.stdout) for r in results] == [("ship1", "hi"), ("ship2", "hi")]


def test_status_and_message_state(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    receipt = central.send("ship1", "echo", ["a", "b"], id="my-id-1")
    assert receipt.id == "my-id-1"
    assert receipt.result(timeout=30).stdout == "a b"
    st = central.message("my-id-1")
    assert st is not None
    assert (st.id, st.state, st.to_node, st.is_final) == ("my-id-1", "completed", "ship1", True)
    assert st.result is not None and st.result.stdout == "a b"
    assert st.message["toNode"] == "ship1" and st.message["data"] == ["a", "b"]
    assert st.to_dict()["state"] == "completed"
    assert central.message("unknown-id") is None
    [dest] = central.status()
    assert (dest.node, dest.completed, dest.pending, dest.failed) == ("ship1", 1, 0, 0)
    assert dest.last_ack_ms is not None
    assert [m.id for m in central.recent_messages()] == ["my-id-1"]
    assert receipt.status().state == "completed"
    assert receipt.wait(timeout=5).state == "completed"


def test_on_result_sees_every_final_state(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair
    seen = Collector()
    assert central.on_result(seen) is seen
    receipts = [central.send("ship1", "echo", [str(i)]) for i in range(5)]
    items = seen.wait_for(lambda xs: len(xs) == 5)
    assert sorted(s.id for s in items) == sorted(r.id for r in receipts)
    assert all(s.state == "completed" for s in items)
    assert central.remove_listener(seen)
    assert not central.remove_listener(seen)


def test_context_manager_and_explicit_lifecycle(tmp_path: pathlib.Path, nats: NatsServer) -> None:
    node = steward.Node("central", [nats.url], data_dir=tmp_path / "c")
    assert not node.running and "configured" in repr(node)
    with node as n:
        assert n is node and node.running
        wait_until(lambda: node.connected, what="the node to connect")
    assert not node.running and "stopped" in repr(node)
    with pytest.raises(steward.Stopped):
        node.send("ship1", "echo")
    with pytest.raises(steward.Stopped):
        node.start()
    node.stop()  # idempotent

    # The data directory is free again: a new node on it starts.
    again = steward.Node("central", [nats.url], data_dir=tmp_path / "c").start()
    try:
        assert again.running
        with pytest.raises(steward.DataDirInUse):
            steward.Node("central", [nats.url], data_dir=tmp_path / "c").start()
    finally:
        again.stop()


def test_unstarted_node_refuses_to_send(tmp_path: pathlib.Path) -> None:
    node = steward.Node("central", data_dir=tmp_path)
    with pytest.raises(steward.ConfigError, match="not started"):
        node.send("ship1", "echo")
    node.stop()


def test_messages_wait_for_a_node_that_starts_later(make_node) -> None:
    central = make_node("central").start()
    receipt = central.send("ship1", "echo", ["late"])
    ship = make_node("ship1")
    ship.start()
    assert receipt.result(timeout=30).stdout == "late"


def test_rust_logs_reach_python_logging(
    tmp_path: pathlib.Path, nats: NatsServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="steward")
    with steward.Node("central", [nats.url], data_dir=tmp_path / "c"):
        pass
    messages = [(r.name, r.getMessage()) for r in caplog.records]
    assert any(name == "steward.node" and "node started" in m for name, m in messages), messages
    assert any(name == "steward.node" and "node stopped" in m for name, m in messages), messages


def test_embedded_broker(tmp_path: pathlib.Path) -> None:
    port = free_port()
    address = f"127.0.0.1:{port}"
    with steward.Node("central", data_dir=tmp_path / "c", embedded_broker=address, **OPEN) as central:  # type: ignore[arg-type]
        assert central.brokers == [f"nats://{address}"]
        with steward.Node("ship1", [f"nats://{address}"], data_dir=tmp_path / "s", **OPEN) as ship:  # type: ignore[arg-type]
            wait_until(lambda: ship.connected, what="ship1 to connect to the embedded broker")
            r = central.send("ship1", "shellCommand", ["echo", "embedded"]).result(timeout=30)
            assert r.stdout == "embedded\n"
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_embedded_broker_address_in_use(tmp_path: pathlib.Path, nats: NatsServer) -> None:
    node = steward.Node("central", data_dir=tmp_path, embedded_broker=f"127.0.0.1:{nats.port}")
    with pytest.raises(steward.ConfigError, match="already listens"):
        node.start()
    node.stop()


def test_receipt_for_a_message_sent_before_a_restart(make_node) -> None:
    first = make_node("central").start()
    sent = first.send("ship1", "echo", ["after restart"])  # ship1 is not running yet
    first.stop()
    with pytest.raises(steward.Stopped):
        sent.result(timeout=1)

    central = make_node("central").start()  # a new node on the same data_dir
    receipt = central.receipt(sent.id)
    assert isinstance(receipt, steward.Receipt)
    assert (receipt.id, receipt.to_node, receipt.subject) == (sent.id, "ship1", "ship1.command.echo")
    assert receipt.status().state in ("queued", "sent")
    make_node("ship1").start()
    assert receipt.result(timeout=30).stdout == "after restart"
    assert receipt.wait(timeout=5).state == "completed"

    async def awaited() -> steward.Result:
        return await central.receipt(sent.id)

    assert asyncio.run(awaited()).stdout == "after restart"
    with pytest.raises(steward.NotFound, match="no-such-id"):
        central.receipt("no-such-id")
