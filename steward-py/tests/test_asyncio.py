"""`await receipt` in asyncio: results arrive without blocking the event loop."""

from __future__ import annotations

import asyncio

import pytest

import steward


def test_await_receipts(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair

    async def main() -> list[str]:
        receipts = [central.send("ship1", "echo", [str(i)]) for i in range(10)]
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.001)

        tick_task = asyncio.create_task(ticker())
        results = await asyncio.gather(*receipts)
        tick_task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await tick_task
        assert ticks > 0  # the loop kept running while results were awaited
        return [r.stdout for r in results]

    assert asyncio.run(main()) == [str(i) for i in range(10)]


def test_await_raises_steward_errors(pair: tuple[steward.Node, steward.Node]) -> None:
    central, _ = pair

    async def main() -> None:
        with pytest.raises(steward.Rejected, match="does not serve"):
            await central.send("ship1", "no_such_method")
        with pytest.raises(steward.NoResult):
            await central.send("ship1", "echo", ack_timeout=0)

    asyncio.run(main())


def test_await_with_timeout_and_shutdown(make_node) -> None:
    central = make_node("central").start()
    receipt = central.send("nobody", "echo")
    # Awaiting outside a running loop is a clear error, not a hang.
    with pytest.raises(RuntimeError, match="running event loop"):
        receipt.__await__()

    async def main() -> None:
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(_await(central.send("nobody", "echo")), 0.2)
        task = asyncio.ensure_future(_await(receipt))
        await asyncio.sleep(0)  # let the task start awaiting
        central.stop()
        with pytest.raises(steward.Stopped):
            await task

    asyncio.run(main())


async def _await(receipt: steward.Receipt) -> steward.Result:
    return await receipt


def test_async_method_awaits_another_receipt(make_node) -> None:
    central = make_node("central").start()
    ship = make_node("ship1", allow=[("ship1", "*")])
    make_node("ship2", allow=[("ship1", "echo")]).start()

    @ship.method("relay")
    async def relay(req: steward.Request) -> str:
        result = await ship.send("ship2", "echo", req.data)
        return f"ship2 said {result.stdout}"

    ship.start()
    assert central.send("ship1", "relay", ["hi"]).result(timeout=30).stdout == "ship2 said hi"
