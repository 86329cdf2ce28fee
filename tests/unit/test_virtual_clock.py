"""VirtualClock on its own: order of wake-ups, now() at each, timeouts, waits, settling."""

from __future__ import annotations

import asyncio
import math

import pytest

from service.clock import VirtualClock


async def test_sleepers_wake_in_time_order_each_seeing_its_due_time() -> None:
    clock = VirtualClock(1000.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, *delays: float) -> None:
        for delay in delays:
            await clock.sleep(delay)
            woke.append((name, clock.now()))

    tasks = [
        asyncio.create_task(sleeper("a", 30, 30)),  # 1030, 1060
        asyncio.create_task(sleeper("b", 45)),  # 1045
        asyncio.create_task(sleeper("c", 30)),  # 1030, registered after a: woken after a
    ]
    await asyncio.sleep(0)
    await clock.advance(59)
    assert woke == [("a", 1030.0), ("c", 1030.0), ("b", 1045.0)]
    assert clock.now() == 1059.0
    await clock.advance(1)
    assert woke[-1] == ("a", 1060.0)
    await asyncio.gather(*tasks)


async def test_a_woken_task_runs_to_its_next_wait_before_time_moves_on() -> None:
    clock = VirtualClock(0.0)
    seen: list[float] = []

    async def worker() -> None:
        await clock.sleep(10)
        await asyncio.sleep(0.05)  # real work, off the clock (a store round trip)
        seen.append(clock.now())  # still 10: the advance waited for this task
        await clock.sleep(10)
        seen.append(clock.now())

    task = asyncio.create_task(worker())
    await asyncio.sleep(0)
    await clock.advance(100)
    assert seen == [10.0, 20.0]
    await task


async def test_timeout_and_wait_run_on_the_clock() -> None:
    clock = VirtualClock(0.0)
    outcome: list[str] = []

    async def guarded() -> None:
        try:
            async with clock.timeout(50):
                await clock.sleep(math.inf)
        except TimeoutError:
            outcome.append(f"timeout at {clock.now():g}")

    event = asyncio.Event()

    async def waiter() -> None:
        outcome.append(f"wait {await clock.wait(event, 20)} at {clock.now():g}")

    tasks = [asyncio.create_task(guarded()), asyncio.create_task(waiter())]
    await asyncio.sleep(0)
    await clock.advance(49)
    assert outcome == ["wait False at 20"]
    await clock.advance(1)
    assert outcome == ["wait False at 20", "timeout at 50"]
    await asyncio.gather(*tasks)


async def test_advance_refuses_bad_seconds_and_time_never_goes_back() -> None:
    clock = VirtualClock(5.0)
    for bad in (0, -1, math.nan, math.inf, 400 * 86_400):
        with pytest.raises(ValueError):
            await clock.advance(bad)
    assert clock.now() == 5.0
