"""Error callbacks, raising callbacks and rejected messages."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest

import steward
from conftest import Collector, wait_until


def test_error_callback_for_a_rejected_message(make_node) -> None:
    make_node("central").start()
    make_node("ship1").start()
    ship2 = make_node("ship2").start()
    errors = Collector()
    results = Collector()
    ship2.on_error(errors)
    ship2.on_result(results)
    # ship1's default access list lets only central call shellCommand.
    receipt = ship2.send("ship1", "shellCommand", ["id"])
    with pytest.raises(steward.NotAllowed, match="may not call shellCommand") as exc:
        receipt.result(timeout=30)
    assert isinstance(exc.value, steward.Rejected) and exc.value.kind == "rejected"
    [report] = errors.wait_for(lambda xs: any(r.kind == "rejected" for r in xs))
    assert report.message_id == receipt.id and report.node == "ship2"
    assert "not in its access list" in report.reason
    [final] = results.wait_for(lambda xs: len(xs) == 1)
    assert final.state == "rejected" and final.id == receipt.id
    # The receiver said why as a code; NotAllowed is chosen by it, not by the reason's words.
    assert final.refusal == "notAllowed"


def test_allow_rules_let_other_senders_in(make_node) -> None:
    make_node("ship1", allow=[("ship2", "echo")]).start()
    ship2 = make_node("ship2").start()
    assert ship2.send("ship1", "echo", ["ok"]).result(timeout=30).stdout == "ok"
    with pytest.raises(steward.NotAllowed):
        ship2.send("ship1", "shellCommand", ["true"]).result(timeout=30)


def test_raising_callback_is_logged_and_the_node_keeps_working(
    pair: tuple[steward.Node, steward.Node], caplog: pytest.LogCaptureFixture
) -> None:
    central, _ = pair
    after = Collector()

    def broken(status: steward.MessageStatus) -> None:
        raise RuntimeError(f"callback bug for {status.id}")

    central.on_result(broken)
    central.on_result(after)
    first = central.send("ship1", "echo", ["1"])
    assert first.result(timeout=30).stdout == "1"
    after.wait_for(lambda xs: len(xs) == 1)
    records = [r for r in caplog.records if r.name == "steward" and r.levelno == logging.ERROR]
    assert any("on_result callback raised" in r.getMessage() for r in records), records
    failing = next(r for r in records if "on_result callback raised" in r.getMessage())
    assert failing.exc_info is not None and f"callback bug for {first.id}" in str(failing.exc_info[1])
    # Still working: later messages complete and later callbacks run.
    assert central.send("ship1", "echo", ["2"]).result(timeout=30).stdout == "2"
    after.wait_for(lambda xs: len(xs) == 2)


def test_error_callback_for_delivery_failure(make_node) -> None:
    central = make_node("central").start()
    errors = Collector()
    central.on_error(errors)
    receipt = central.send("nobody", "echo", ack_timeout=0.1, retries=1, retry_wait=0.05)
    with pytest.raises(steward.DeliveryFailed):
        receipt.result(timeout=30)
    errors.wait_for(lambda xs: any(r.kind == "deliveryFailed" for r in xs))


def test_expired_and_cancelled(make_node) -> None:
    central = make_node("central").start()
    with pytest.raises(steward.Expired):
        central.send("nobody", "echo", ttl=0.2).result(timeout=30)
    pending = central.send("nobody", "echo")
    assert pending.cancel()
    with pytest.raises(steward.Cancelled):
        pending.result(timeout=30)
    with pytest.raises(steward.TimedOut, match="still pending"):
        central.send("nobody", "echo").result(timeout=0.1)


def test_async_callbacks_are_awaited(pair: tuple[steward.Node, steward.Node]) -> None:
    """`async def` given to on_result and on_error runs on the callback thread's loop, and may
    itself await a receipt."""
    central, _ = pair
    results = Collector()
    errors = Collector()
    inner: list[str] = []

    async def on_result(status: steward.MessageStatus) -> None:
        await asyncio.sleep(0)
        if status.id == first.id:
            inner.append((await central.send("ship1", "echo", ["inner"])).stdout)
        results(status)

    async def on_error(report: steward.ErrorReport) -> None:
        await asyncio.sleep(0)
        errors(report)

    assert central.on_result(on_result) is on_result
    assert central.on_error(on_error) is on_error
    first = central.send("ship1", "echo", ["1"])
    refused = central.send("ship1", "no_such_method")
    assert first.result(timeout=30).stdout == "1"
    with pytest.raises(steward.Rejected):
        refused.result(timeout=30)
    [report] = errors.wait_for(lambda xs: any(r.message_id == refused.id for r in xs))
    assert report.kind == "rejected"
    items = results.wait_for(lambda xs: {first.id, refused.id} <= {s.id for s in xs})
    assert inner == ["inner"]
    assert {s.id: s.state for s in items}[refused.id] == "rejected"


def test_async_event_callback_is_awaited(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    seen = Collector()

    async def notice(req: steward.Request) -> str:
        await asyncio.sleep(0)
        seen(req.data)
        return "noted " + " ".join(req.data)

    ship.on_event("notice", notice)
    result = central.send("ship1", "notice", ["a", "b"], kind="event").result(timeout=30)
    assert result.ok and result.stdout == "noted a b"
    assert seen.wait_for(lambda xs: len(xs) == 1) == [["a", "b"]]


def test_raising_async_callback_is_logged(
    pair: tuple[steward.Node, steward.Node], caplog: pytest.LogCaptureFixture
) -> None:
    central, _ = pair
    after = Collector()

    async def broken(status: steward.MessageStatus) -> None:
        await asyncio.sleep(0)
        raise RuntimeError(f"async callback bug for {status.id}")

    central.on_result(broken)
    central.on_result(after)
    receipt = central.send("ship1", "echo", ["1"])
    receipt.result(timeout=30)
    after.wait_for(lambda xs: len(xs) == 1)

    def logged() -> list[logging.LogRecord]:
        return [
            r
            for r in caplog.records
            if r.name == "steward" and r.levelno == logging.ERROR and "on_result callback raised" in r.getMessage()
        ]

    wait_until(lambda: bool(logged()), what="the async callback's exception to be logged")
    [record] = logged()
    assert record.exc_info is not None and f"async callback bug for {receipt.id}" in str(record.exc_info[1])


def test_stop_lets_a_running_async_callback_finish(make_node) -> None:
    central = make_node("central").start()
    make_node("ship1").start()
    started = threading.Event()
    finished = threading.Event()

    async def slow(status: steward.MessageStatus) -> None:
        started.set()
        await asyncio.sleep(0.2)
        finished.set()

    central.on_result(slow)
    central.send("ship1", "echo", ["1"]).result(timeout=30)
    assert started.wait(10)
    central.stop()
    assert finished.is_set()
