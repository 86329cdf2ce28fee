"""Redis stalls (SIGSTOP) and answers again (SIGCONT): every process reports healthy again by
itself and sees what the others write, without anyone writing on it first.

The bug these pin: a failure recorded by a path other than the writer (a read, a rate hit, a
document, a lease round) was cleared only by a later write or by the writer's probe, and the
writer probed only once something woke it. An idle process (or one whose requests all failed
before they reached a commit) stayed 503 on /healthz for as long as nothing wrote on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from deploy.cluster import Cluster
from service.settings import Config
from service.store import StoreUnavailable
from service.store import redis as redis_module
from service.store.redis import RedisStore
from tests.conftest import ADMIN
from tests.unit.test_store import Log, create

LONG = 30.0  # generous waits: the contract is "recovers by itself", not a latency


async def until(predicate: Callable[[], bool], timeout: float = LONG) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# ---- one store: each path that can record a failure is cleared without a write ----------


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
async def store(
    redis_url: str, log: Log, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[RedisStore]:
    monkeypatch.setattr(redis_module, "PROBE_INTERVAL_S", 0.05)
    opened = RedisStore(redis_url, event_buffer=100)
    await opened.open(log, lambda config: None)
    yield opened
    await opened.close()


FAILING: dict[str, Callable[[RedisStore], Awaitable[Any]]] = {
    "sync": lambda s: s.sync(),
    "renew_leases": lambda s: s.renew_leases(["a"], 1.0, 0.0),
    "expired_leases": lambda s: s.expired_leases(0.0),
    "get_doc": lambda s: s.get_doc("keys", "k"),
    "docs": lambda s: s.docs("keys"),
    "put_doc": lambda s: s.put_doc("keys", "k", b"v"),
    "rate_hit": lambda s: s.rate_hit("u", 1, 1000.0),
    "save_config": lambda s: s.save_config(Config(max_attempts=4)),
}


@pytest.mark.parametrize("path", list(FAILING))
async def test_a_failure_outside_the_writer_clears_by_itself_once_redis_answers(
    store: RedisStore, log: Log, tmp_path: Path, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    working = store._redis
    for streak in range(2):  # the second streak: the probe loop did not stop after the first
        store._redis = aioredis.from_url(f"unix://{tmp_path}/nothing-listens-here.sock")
        try:
            with pytest.raises(StoreUnavailable):
                await FAILING[path](store)
            assert "redis unavailable" in (store.health() or ""), store.health()
            await asyncio.sleep(0.3)  # several probes fail meanwhile (Redis still away)
            assert store.health() is not None, f"streak {streak}: healthy while Redis is away"
        finally:
            await store._redis.aclose()
            store._redis = working
        with caplog.at_level(logging.WARNING, logger="service.store.redis"):
            await until(lambda: store.health() is None)  # nobody wrote: the probe did
        await asyncio.sleep(0.3)  # the probe loop goes back to waiting for the next failure
        assert store.health() is None
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == [
        "redis takes writes again"
    ] * 2
    assert log.events == []  # nothing committed: the recovery came from the probe


# ---- the tail and the writer outlive an error that is not Redis being away -------------


async def test_the_tail_goes_on_after_an_unexpected_error(
    store: RedisStore, log: Log, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tail: Any = store._tail_conn
    real, calls = tail.xread, 0

    async def broken_then_working(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls <= 3:
            raise RuntimeError("not a redis error")
        return await real(*args, **kwargs)

    monkeypatch.setattr(tail, "xread", broken_then_working)
    with caplog.at_level(logging.ERROR, logger="service.store.redis"):
        await until(lambda: calls > 3)  # the tail read (and failed) three times, then again
    assert [r.getMessage() for r in caplog.records] == ["reading the stream failed"] * 3
    async with asyncio.timeout(LONG):  # a commit returns once the tail has applied it
        assert await store.commit(create("a")) == 1
    assert [e.job.id for e in log.events] == ["a"]
    await until(lambda: store.health() is None)


async def test_the_writer_goes_on_after_an_unexpected_error(
    store: RedisStore, log: Log, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = store._pipeline

    async def broken_once(batch: Any) -> Any:
        monkeypatch.setattr(store, "_pipeline", real)
        raise RuntimeError("not a redis error")

    monkeypatch.setattr(store, "_pipeline", broken_once)
    async with asyncio.timeout(LONG):  # a 503, not a commit waiting forever on a dead writer
        with pytest.raises(StoreUnavailable) as refused:
            await store.commit(create("a"))
    assert refused.value.reason == "redis unavailable: not a redis error"
    async with asyncio.timeout(LONG):
        assert await store.commit(create("a")) == 1
    assert [e.job.id for e in log.events] == ["a"]
    assert store.health() is None


# ---- two processes, a real SIGSTOP ------------------------------------------------------


async def healthz(session: aiohttp.ClientSession, base: str) -> tuple[int, str]:
    async with asyncio.timeout(LONG), session.get(f"{base}/healthz") as resp:
        return resp.status, await resp.text()


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(LONG):
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                if (await healthz(session, base))[0] == 200:
                    return
            await asyncio.sleep(0.1)


async def submit(session: aiohttp.ClientSession, base: str) -> tuple[int, str | None]:
    async with (
        asyncio.timeout(LONG),
        session.post(f"{base}/v1/jobs", json={"scenario": {"outcome": "stuck"}}) as resp,
    ):
        body = await resp.json()
        return resp.status, body.get("id")


async def sees(session: aiohttp.ClientSession, base: str, job_id: str) -> None:
    async with asyncio.timeout(LONG):
        while True:
            async with session.get(f"{base}/v1/jobs/{job_id}", headers=ADMIN) as resp:
                if resp.status == 200:
                    return
            await asyncio.sleep(0.1)


async def test_after_a_redis_stall_both_processes_recover_by_themselves(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Redis SIGSTOPped while each process has a write in flight (refused: 503), then
    SIGCONTed: each process answers /healthz 200 again without anyone writing on it, and then
    a write on either is seen on the other."""
    cluster = redis_cluster  # two processes, LEASE_S 2, Redis with AOF fsync always
    a, b = cluster.backend_url(0), cluster.backend_url(1)
    assert cluster.redis is not None
    cluster.redis.send_signal(signal.SIGSTOP)
    try:
        refused = await asyncio.gather(submit(session, a), submit(session, b))
        during = await asyncio.gather(healthz(session, a), healthz(session, b))
    finally:
        cluster.redis.send_signal(signal.SIGCONT)
    assert [status for status, _ in refused] == [503, 503], refused
    assert all(s == 503 and "redis unavailable" in text for s, text in during), during
    # the contract: healthy again by itself (no request on a or b writes before this)
    await asyncio.gather(wait_healthy(session, a), wait_healthy(session, b))
    made_on_a, made_on_b = await submit(session, a), await submit(session, b)
    assert (made_on_a[0], made_on_b[0]) == (201, 201), (made_on_a, made_on_b)
    assert made_on_a[1] is not None and made_on_b[1] is not None
    await asyncio.gather(sees(session, b, made_on_a[1]), sees(session, a, made_on_b[1]))
