"""MAX_IN_FLIGHT counts each user's unfinished jobs, whatever ends them, on every process.

The count is kept by the store on Redis (one hash, moved by the commit script with each job)
and by JobService's read model everywhere; both must follow a job that is cancelled, fails
for good, completes, is retried by an admin (it counts again) and is deleted (a finished job
no longer counted must not be uncounted twice). On Redis the test runs two processes on one
Redis and acts on both, and a restart of both keeps the count (also one a Redis held from
before the count existed: it is rebuilt from the jobs at start).
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.appkeys import SERVICE
from tests.conftest import ADMIN, make_settings

USER = "cycle"
WHO = {"X-User-Id": USER}
QUICK = {"duration_s": 0.01}
CAP = 3


@pytest.fixture
async def raw(backend: dict[str, Any]) -> AsyncIterator[Any]:
    """A plain Redis client on the test's Redis (None on SQLite)."""
    if "redis_url" not in backend:
        yield None
        return
    client: Any = aioredis.from_url(backend["redis_url"])
    yield client
    await client.aclose()


async def processes(aiohttp_client: Any, backend: dict[str, Any]) -> list[TestClient[Any, Any]]:
    """Two processes on one Redis; the one process of a SQLite file."""
    settings = make_settings(**backend, max_in_flight=CAP, rate_limit=1000, auto_process=False)
    count = 2 if "redis_url" in backend else 1
    return [await aiohttp_client(create_app(settings)) for _ in range(count)]


async def counts(clients: list[TestClient[Any, Any]], raw: Any) -> list[int]:
    """The user's count as each process sees it, and (Redis) as the store keeps it."""
    seen = []
    for client in clients:
        service = client.app[SERVICE]
        await service.store.sync()
        seen.append(service.in_flight(USER))
    if raw is not None:
        seen.append(int(await raw.hget("dubsim:inflight", USER) or 0))
    return seen


async def submit(client: TestClient[Any, Any], body: dict[str, Any] | None = None) -> str:
    resp = await client.post("/v1/jobs", json=body or {"scenario": QUICK}, headers=WHO)
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]  # type: ignore[no-any-return]


async def burst(clients: list[TestClient[Any, Any]], n: int = 6) -> collections.Counter[int]:
    """n submissions at once, spread over the processes: the answers' statuses."""

    async def one(client: TestClient[Any, Any]) -> int:
        resp = await client.post("/v1/jobs", json={"scenario": QUICK}, headers=WHO)
        await resp.read()
        return resp.status

    return collections.Counter(
        await asyncio.gather(*(one(clients[i % len(clients)]) for i in range(n)))
    )


async def admin(client: TestClient[Any, Any], path: str, body: dict[str, Any]) -> Any:
    resp = await client.post(path, json=body, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def outcome(client: TestClient[Any, Any], job_id: str) -> str:
    resp = await client.get(f"/v1/jobs/{job_id}?wait=10&until=terminal")
    assert resp.status == 200
    return (await resp.json())["status"]  # type: ignore[no-any-return]


async def test_the_count_follows_cancel_failure_completion_retry_and_deletion(
    aiohttp_client: Any, backend: dict[str, Any], raw: Any
) -> None:
    clients = await processes(aiohttp_client, backend)
    a, b = clients[0], clients[-1]
    stores = len(clients) + (raw is not None)
    failing = {"role": "premium", "scenario": {"outcome": "permanently_failed", **QUICK}}
    p = await submit(a, failing)  # premium: the first one POST /v1/process starts
    q = await submit(b)
    r = await submit(a)
    assert await counts(clients, raw) == [3] * stores
    assert await burst(clients) == {429: 6}

    await admin(b, f"/v1/jobs/{r}/cancel", {})  # cancelled: no longer counted
    assert await counts(clients, raw) == [2] * stores
    s = await submit(a)
    assert await counts(clients, raw) == [3] * stores

    await admin(b, "/v1/process", {"count": 1})
    assert await outcome(a, p) == "permanently_failed"
    assert await counts(clients, raw) == [2] * stores
    await submit(b)
    assert await burst(clients) == {429: 6}

    await admin(a, "/v1/process", {"count": 1})
    assert await outcome(b, q) == "completed"
    assert await counts(clients, raw) == [2] * stores
    await submit(a)
    assert await counts(clients, raw) == [3] * stores

    await admin(b, f"/v1/jobs/{p}/retry", {})  # an admin retry: unfinished again, counted
    assert await counts(clients, raw) == [4] * stores
    assert await burst(clients) == {429: 6}

    deleted = await admin(a, "/v1/cleanup", {})  # r (cancelled) and q (completed) go
    assert deleted == {"deleted": 2}
    assert await counts(clients, raw) == [4] * stores

    await admin(b, f"/v1/jobs/{p}/cancel", {})
    await admin(a, f"/v1/jobs/{s}/cancel", {})
    assert await counts(clients, raw) == [2] * stores
    assert await burst(clients) == {201: 1, 429: 5}  # one place left, taken once
    assert await counts(clients, raw) == [3] * stores


async def test_the_count_survives_a_restart_of_every_process(
    aiohttp_client: Any, redis_url: str
) -> None:
    # on SQLite, one process: its count is its read model, loaded from the file at start
    backend = {"redis_url": redis_url}
    raw: Any = aioredis.from_url(redis_url)
    try:
        await restart_twice(aiohttp_client, backend, raw)
    finally:
        await raw.aclose()


async def restart_twice(aiohttp_client: Any, backend: dict[str, Any], raw: Any) -> None:
    clients = await processes(aiohttp_client, backend)
    ids = [await submit(clients[i % 2]) for i in range(CAP)]
    await admin(clients[0], f"/v1/jobs/{ids[0]}/cancel", {})
    await submit(clients[1])
    assert await counts(clients, raw) == [3, 3, 3]
    for client in clients:
        await client.close()

    clients = await processes(aiohttp_client, backend)
    assert await counts(clients, raw) == [3, 3, 3]
    assert await burst(clients) == {429: 6}
    await admin(clients[1], f"/v1/jobs/{ids[1]}/cancel", {})
    assert await burst(clients) == {201: 1, 429: 5}
    for client in clients:
        await client.close()

    # a Redis written before the count existed: no count, no marks on the jobs
    for job_id in await raw.zrange("dubsim:jobs", 0, -1):
        await raw.hdel(b"dubsim:job:" + job_id, "f")
    await raw.delete("dubsim:inflight", "dubsim:counted")
    clients = await processes(aiohttp_client, backend)
    assert await counts(clients, raw) == [3, 3, 3]  # rebuilt from the jobs at start
    assert await burst(clients) == {429: 6}
    await admin(clients[0], f"/v1/jobs/{ids[2]}/cancel", {})
    assert await counts(clients, raw) == [2, 2, 2]
    assert await burst(clients) == {201: 1, 429: 5}
