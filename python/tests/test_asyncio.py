"""asyncio: ``reserve_async`` gives holds without blocking the event loop, also while a
dry lane waits for the sidecar; a cancelled wait leaks nothing."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import time

import pytest

import tollgate
from harness import MODEL, TENANT, region_totals


def test_reserve_async_awaits_and_manages_holds(pod) -> None:
    auth, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT)

    async def main() -> int:
        spent = 0
        for i in range(100):
            hold = await gate.reserve_async(MODEL, input_tokens=10, max_output_tokens=40)
            assert hold.amount == 50
            spent += hold.commit(input_tokens=10, output_tokens=i % 40)
        async with gate.reserve_async(MODEL, input_tokens=5, max_output_tokens=5) as h:
            spent += h.commit(input_tokens=5, output_tokens=5)
        with pytest.raises(KeyError):
            async with gate.reserve_async(MODEL, input_tokens=5, max_output_tokens=5) as h:
                raise KeyError("the call failed")
        assert not h.open and h.charged is None
        with pytest.raises(tollgate.ReserveError) as e:
            await gate.reserve_async("no-such-model", input_tokens=1)
        assert e.value.reason == "unknown_model"
        return spent

    spent = asyncio.run(main())
    del gate
    gc.collect()
    assert sc.stop()
    st = auth.statement()
    assert (st.calls, st.total) == (101, spent)


def test_a_dry_lane_never_blocks_the_event_loop(pod) -> None:
    """With the sidecar paused, the loop thread's lane stays dry: the reserve goes to an
    executor thread and waits there while a ticker task keeps running on the loop. A waiter
    cancelled meanwhile leaks no hold."""
    _, sc = pod
    gate = tollgate.Gate(sc.region, tenant=TENANT, max_wait=0.2)
    ticks = []

    async def ticker(stop: asyncio.Event) -> None:
        while not stop.is_set():
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.001)

    async def main() -> None:
        stop = asyncio.Event()
        t = asyncio.create_task(ticker(stop))
        await asyncio.sleep(0.01)
        start = time.perf_counter()
        with pytest.raises(tollgate.Denied) as e:
            await gate.reserve_async(MODEL, input_tokens=1, max_output_tokens=1)
        end = time.perf_counter()
        assert e.value.limit is None
        assert end - start >= 0.2, "the dry lane was not waited for"
        during = sum(1 for s in ticks if start < s < end)
        assert during >= 20, f"the loop ran only {during} ticks during a {end - start:.3f} s wait"
        # A waiter cancelled while its executor thread waits: the hold it may still get is
        # dropped, and a dropped hold cancels itself.
        waiter = asyncio.create_task(gate.reserve_async(MODEL, input_tokens=1, max_output_tokens=1).__aenter__())
        await asyncio.sleep(0.02)
        os.kill(sc.proc.pid, signal.SIGCONT)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        await asyncio.sleep(0.3)
        stop.set()
        await t
        # Resumed: the next awaits pass.
        for _ in range(20):
            try:
                hold = await gate.reserve_async(MODEL, input_tokens=1, max_output_tokens=1)
                hold.commit(1, 1)
                return
            except tollgate.Denied as d:
                await asyncio.sleep(d.retry_after)
        raise AssertionError("no call passed after the sidecar resumed")

    os.kill(sc.proc.pid, signal.SIGSTOP)
    try:
        asyncio.run(main())
    finally:
        os.kill(sc.proc.pid, signal.SIGCONT)
    del gate
    gc.collect()
    assert sc.stop()
    assert region_totals(sc.region)["held"] == 0
