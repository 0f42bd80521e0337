"""Python functions served as methods: sync and async, return values, exceptions, timeouts."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import pytest

import steward
from conftest import Collector


def test_sync_method(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    calls: list[steward.Request] = []

    @ship.method("greet")
    def greet(req: steward.Request) -> str:
        calls.append(req)
        return "hello " + " ".join(req.data)

    assert callable(greet)
    r = central.send("ship1", "greet", ["bob", "alice"]).result(timeout=30)
    assert (r.status, r.stdout, r.node) == ("ok", "hello bob alice", "ship1")
    [req] = calls
    assert (req.from_node, req.to_node, req.kind, req.method) == ("central", "ship1", "command", "greet")
    assert req.data == ["bob", "alice"] and req.method_timeout > 0 and req.data_dir


def test_async_method(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    started = threading.Event()

    @ship.method("slow_sum")
    async def slow_sum(req: steward.Request) -> dict[str, int]:
        started.set()
        await asyncio.sleep(0.05)
        return {"sum": sum(int(x) for x in req.data)}

    receipts = [central.send("ship1", "slow_sum", ["1", "2", str(i)]) for i in range(3)]
    results = [json.loads(r.result(timeout=30).stdout) for r in receipts]
    assert results == [{"sum": 3}, {"sum": 4}, {"sum": 5}]


def test_method_served_before_start_and_return_types(make_node) -> None:
    central = make_node("central").start()
    ship = make_node("ship1")

    @ship.method("kinds")
    def kinds(req: steward.Request) -> object:
        which = req.data[0]
        return {
            "none": None,
            "bytes": b"raw \xff bytes",
            "list": [1, "two", None],
            "result": steward.Result("custom out", "custom err", exit_code=7),
            "failure": steward.Result.failure("it broke", stdout="partial"),
            "object": object(),
        }[which]

    ship.start()
    got = {w: central.send("ship1", "kinds", [w]).result(timeout=30) for w in
           ["none", "bytes", "list", "result", "failure", "object"]}
    assert got["none"].ok and got["none"].stdout == ""
    assert got["bytes"].stdout == "raw \ufffd bytes"
    assert json.loads(got["list"].stdout) == [1, "two", None]
    assert (got["result"].stdout, got["result"].stderr, got["result"].exit_code) == ("custom out", "custom err", 7)
    assert got["failure"].status == "failed" and got["failure"].error == "it broke"
    assert got["failure"].stdout == "partial"
    assert got["object"].status == "failed" and "JSON-serialisable" in (got["object"].error or "")


def test_exception_becomes_a_failed_result(
    pair: tuple[steward.Node, steward.Node], caplog: pytest.LogCaptureFixture
) -> None:
    central, ship = pair

    @ship.method("boom")
    def boom(req: steward.Request) -> str:
        raise ValueError("kaboom " + req.data[0])

    @ship.method("aboom")
    async def aboom(req: steward.Request) -> str:
        await asyncio.sleep(0)
        raise KeyError("missing")

    r = central.send("ship1", "boom", ["x"]).result(timeout=30)
    assert r.status == "failed" and r.error == "ValueError: kaboom x"
    assert "Traceback" in r.stderr and "kaboom x" in r.stderr
    a = central.send("ship1", "aboom").result(timeout=30)
    assert a.status == "failed" and a.error == "KeyError: 'missing'"
    assert any("boom raised" in rec.getMessage() for rec in caplog.records if rec.name == "steward")
    # The node keeps serving.
    assert central.send("ship1", "echo", ["still", "here"]).result(timeout=30).stdout == "still here"


def test_event_method_with_on_event(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    got = Collector()
    ship.on_event("notice", lambda req: got(req.data))
    r = central.send("ship1", "notice", ["disk", "full"], kind="event").result(timeout=30)
    assert r.ok
    assert got.wait_for(lambda xs: len(xs) == 1) == [["disk", "full"]]
    # Served as an event, so a command to it is rejected.
    with pytest.raises(steward.Rejected, match="event"):
        central.send("ship1", "notice", ["x"]).result(timeout=30)


def test_async_method_past_its_timeout_is_cancelled(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    cancelled = threading.Event()

    @ship.method("hang")
    async def hang(req: steward.Request) -> str:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    r = central.send("ship1", "hang", method_timeout=0.3).result(timeout=30)
    assert r.status == "failed" and "did not finish within" in (r.error or "")
    assert cancelled.wait(10)


def test_unserve_and_replace(pair: tuple[steward.Node, steward.Node]) -> None:
    central, ship = pair
    ship.serve("version", lambda req: "1")
    assert central.send("ship1", "version").result(timeout=30).stdout == "1"
    ship.serve("version", lambda req: "2")
    assert central.send("ship1", "version").result(timeout=30).stdout == "2"
    assert ship.unserve("version")
    with pytest.raises(steward.Rejected, match="does not serve"):
        central.send("ship1", "version").result(timeout=30)


def test_bad_method_registrations(pair: tuple[steward.Node, steward.Node]) -> None:
    _, ship = pair
    with pytest.raises(steward.InvalidName, match="'.'"):
        ship.method("a.b")
    with pytest.raises(steward.InvalidName, match="reserved"):
        ship.serve("_private", lambda req: None)
    with pytest.raises(TypeError, match="callable"):
        ship.serve("ok_name", 42)  # type: ignore[arg-type]
    with pytest.raises(steward.ConfigError, match="kind"):
        ship.method("ok_name", kind="query")  # type: ignore[arg-type]


def test_callback_thread_logs_go_to_the_steward_logger(
    pair: tuple[steward.Node, steward.Node], caplog: pytest.LogCaptureFixture
) -> None:
    central, ship = pair
    threads: list[str] = []

    @ship.method("where")
    def where(req: steward.Request) -> str:
        threads.append(threading.current_thread().name)
        logging.getLogger("steward.test").warning("inside a method")
        return "ok"

    assert central.send("ship1", "where").result(timeout=30).ok
    assert threads == ["steward-ship1"]
    assert any(r.getMessage() == "inside a method" for r in caplog.records)


def test_delivery_never_waits_for_the_interpreter(make_node) -> None:
    """While a Python method holds the GIL (one long C call), the node's tokio threads still
    deliver a message, run it on another node and record its result: none of them needs the
    interpreter."""
    central = make_node("central").start()
    ship = make_node("ship1")
    make_node("ship2", allow=[("ship1", "echo")]).start()

    @ship.method("hog")
    def hog(req: steward.Request) -> dict[str, object]:
        receipt = ship.send("ship2", "echo", ["during the hog"])
        begin = time.time()
        sum(range(5 * 10**7))  # a single C call: the GIL is not released until it returns
        end = time.time()
        return {"id": receipt.id, "begin_ms": begin * 1000, "end_ms": end * 1000}

    ship.start()
    hogged = json.loads(central.send("ship1", "hog").result(timeout=60).stdout)
    echo = ship.message(hogged["id"])
    assert echo is not None and echo.state == "completed"
    assert echo.result is not None and echo.result.stdout == "during the hog"
    assert hogged["begin_ms"] - 1 <= echo.updated_ms <= hogged["end_ms"], (hogged, echo.updated_ms)
