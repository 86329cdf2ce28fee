"""Processes on several machines share one Redis and their clocks disagree. Deadlines and leases
are in Redis's time (`Store.wall()`), so a skew between a machine and Redis neither refuses
every write nor lets a live process's jobs be taken over."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis

from service.store.redis import DEADLINE_S, RedisStore
from tests.unit.test_redis_store import Configs, start
from tests.unit.test_store import Log, create

SKEW_S = 120.0  # far past any deadline (3 s) and lease (seconds) the store uses


@pytest.fixture
async def skewed(redis_url: str) -> AsyncIterator[Callable[[float], Any]]:
    """`await skewed(+120.0)`: an open store whose machine's clock is 120 s ahead of Redis's."""
    opened: list[RedisStore] = []

    async def open_one(skew_s: float) -> RedisStore:
        store = RedisStore(redis_url, event_buffer=100, local_time=lambda: time.time() + skew_s)
        await store.open(Log(), Configs())
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def redis_now(redis_url: str) -> float:
    client: Any = aioredis.from_url(redis_url)
    try:
        seconds, micros = await client.time()
    finally:
        await client.aclose()
    return float(seconds) + micros / 1e6


@pytest.mark.parametrize("skew_s", [-SKEW_S, SKEW_S])
async def test_a_machine_whose_clock_is_off_still_commits(
    skewed: Callable[[float], Any], skew_s: float
) -> None:
    store = await skewed(skew_s)
    assert await store.commit(create("a")) == 1
    assert await store.commit(start("a", 1, 30.0)) == 2


@pytest.mark.parametrize("skew_s", [-SKEW_S, SKEW_S])
async def test_wall_time_and_deadlines_are_on_redis_clock(
    skewed: Callable[[float], Any], redis_url: str, skew_s: float
) -> None:
    """A deadline is DEADLINE_S from now as Redis reads the time, not as this machine does
    (ahead, a late command would still act after its 503; behind, every one is refused)."""
    store = await skewed(skew_s)
    before = await redis_now(redis_url)
    wall, deadline = store.wall(), store._deadline() / 1000
    after = await redis_now(redis_url)
    assert before - 0.5 <= wall <= after + 0.5
    assert before + DEADLINE_S - 0.5 <= deadline <= after + DEADLINE_S + 0.5


async def test_a_live_process_keeps_its_jobs_whatever_the_clocks_say(
    skewed: Callable[[float], Any],
) -> None:
    """Process A (clock 2 min behind) starts a job with a 30 s lease; process B (clock 2 min
    ahead) looks for expired leases: A's is not one. A's renewal keeps it so."""
    a, b = await skewed(-SKEW_S), await skewed(SKEW_S)
    await a.commit(create("a"))
    await a.commit(start("a", 1, 30.0))
    assert await b.expired_leases(b.wall()) == []
    await a.renew_leases(["a"], 30.0, a.wall())
    assert await b.expired_leases(b.wall()) == []
    # and a lease that did run out (by Redis's time) is found, by either process
    await a.renew_leases(["a"], -1.0, a.wall())
    assert await b.expired_leases(b.wall()) == ["a"]
    assert await a.expired_leases(a.wall()) == ["a"]
