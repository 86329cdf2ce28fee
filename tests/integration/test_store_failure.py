"""Failure is loud and consistent: a store that can't commit answers 503 + Retry-After with a JSON
reason, changes nothing anyone can see, turns /healthz to 503 naming the cause, and the service
recovers by itself once the store does. On SQLite the store is locked by another program; on
Redis, the Redis server is stopped (SIGSTOP: it hangs) or killed and restarted."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from deploy.redis_server import RedisServer
from tests.conftest import ADMIN, make_settings, wait_for_status


async def healthy(client: TestClient[Any, Any], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await client.get("/healthz")).status != 200:
            await asyncio.sleep(0.1)


async def assert_refused(client: TestClient[Any, Any], job_id: str, before: dict[str, Any]) -> None:
    """Every kind of change is refused with 503, and nothing moved. (Sent together: against a
    hung Redis each waits out the socket timeout.)"""
    cancel, submit, patch, legacy = await asyncio.gather(
        client.post(f"/v1/jobs/{job_id}/cancel", json={}, headers=ADMIN),
        client.post("/v1/jobs", json={"role": "premium"}),
        client.patch("/v1/config", json={"error_rate": 0.5}, headers=ADMIN),
        client.post(f"/cancel/{job_id}", json={}, headers=ADMIN),
    )
    assert cancel.status == 503, await cancel.text()
    assert int(cancel.headers["Retry-After"]) >= 1
    body = await cancel.json()
    assert body["error"]["code"] == "store_unavailable" and body["error"]["message"]
    assert submit.status == 503
    assert patch.status == 503
    assert legacy.status == 503 and (await legacy.json())["status"] == "failed"
    # memory is not ahead of the store: the job, the config and the list are as they were
    assert await (await client.get(f"/v1/jobs/{job_id}")).json() == before
    assert (await (await client.get("/v1/config")).json())["error_rate"] == 0.0
    listed = await (await client.get("/v1/jobs", headers=ADMIN)).json()
    assert [j["id"] for j in listed["jobs"]] == [job_id]
    health = await client.get("/healthz")
    assert health.status == 503
    assert (await health.json())["status"] == "unavailable"
    assert (await health.json())["reason"]


async def test_sqlite_locked_refuses_changes_then_recovers(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from service.app import create_app

    db = str(tmp_path / "locked.db")
    client = await aiohttp_client(create_app(make_settings(db=db, auto_process=False)))
    job = await (await client.post("/v1/jobs", json={"role": "premium"})).json()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another program holds the file longer than we wait
    try:
        await assert_refused(client, job["id"], job)
        assert "locked" in (await (await client.get("/healthz")).json())["reason"]
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    await healthy(client)  # by itself: nobody had to write for it to notice
    cancel = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
    assert cancel.status == 200 and (await cancel.json())["status"] == "cancelled"


async def test_sqlite_attempts_outlive_a_locked_store(aiohttp_client: Any, tmp_path: Path) -> None:
    """A job whose completion can't be committed stays processing (as on disk) and completes
    once the store is back: the outcome is not dropped, nor published early."""
    from service.app import create_app

    db = str(tmp_path / "locked.db")
    client = await aiohttp_client(create_app(make_settings(db=db)))
    job = await (await client.post("/v1/jobs", json={"scenario": {"duration_s": 1.0}})).json()
    await wait_for_status(client, job["id"], {"processing"})
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        await asyncio.sleep(1.5)  # the attempt ends while the store refuses writes
        during = await (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert during["status"] == "processing"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    done = await wait_for_status(client, job["id"], {"completed"}, timeout=30)
    assert done["attempt"] == 1


async def test_redis_stopped_refuses_changes_then_recovers(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    from service.app import create_app

    redis = RedisServer(tmp_path, appendonly=True)
    redis.start()
    try:
        settings = make_settings(redis_url=redis.url, auto_process=False)
        client = await aiohttp_client(create_app(settings))
        job = await (await client.post("/v1/jobs", json={"role": "premium"})).json()
        assert redis.proc is not None
        redis.proc.send_signal(signal.SIGSTOP)  # hung: connections open, nothing answers
        try:
            await assert_refused(client, job["id"], job)
        finally:
            redis.proc.send_signal(signal.SIGCONT)
        await healthy(client)
        cancel = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
        assert cancel.status == 200

        # killed and restarted from its AOF: what was acknowledged is still there
        redis.stop(signal.SIGKILL)
        health = await client.get("/healthz")
        assert health.status == 503
        redis.start()
        await healthy(client)
        again = await (await client.get(f"/v1/jobs/{job['id']}")).json()
        assert again["status"] == "cancelled"
        resp = await client.post("/v1/jobs", json={"role": "premium"})
        assert resp.status == 201
        await client.close()
        # a new process on the same Redis loads the same truth
        fresh = await aiohttp_client(create_app(settings))
        listed = await (await fresh.get("/v1/jobs", headers=ADMIN)).json()
        assert {j["id"]: j["status"] for j in listed["jobs"]}[job["id"]] == "cancelled"
        assert len(listed["jobs"]) == 2
    finally:
        redis.stop()
