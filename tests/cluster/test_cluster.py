"""Several dubsim processes on one Redis behind nginx (deploy/nginx.conf), driven for real:
one service whichever process a request reaches, WS and SSE through the proxy, and a backend
killed with SIGKILL mid-run whose attempts and clients move to the other one."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from client import AsyncClient
from deploy.cluster import Cluster

TOKEN = "cluster-test-admin-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
LEASE_S = 2.0


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    env = {
        "LEASE_S": str(LEASE_S),
        "ERROR_RATE": "0",
        "TRANSLATION_DELAY": "0.2",
        "RATE_LIMIT": "100000",
        "WORKERS": "4",
        "HEARTBEAT_S": "2",
    }
    running = Cluster(tmp_path, processes=2, admin_token=TOKEN, env=env)
    try:
        running.start()
        yield running
    finally:
        running.stop()


async def submit(session: aiohttp.ClientSession, base: str, **body: Any) -> dict[str, Any]:
    async with session.post(f"{base}/v1/jobs", json=body) as resp:
        assert resp.status == 201, await resp.text()
        job: dict[str, Any] = await resp.json()
        return job


async def test_one_service_whichever_process_answers(cluster: Cluster) -> None:
    a, b = cluster.backend_url(0), cluster.backend_url(1)
    async with aiohttp.ClientSession() as session:
        # made on A, read at once on B: never a 404
        for _ in range(20):
            job = await submit(session, a, scenario={"outcome": "stuck"})
            async with session.get(f"{b}/v1/jobs/{job['id']}") as resp:
                assert resp.status == 200
        # cancelled on B; A sees the outcome, and the attempt (on whichever process) stops
        async with session.post(f"{b}/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN) as r:
            assert r.status == 200 and (await r.json())["status"] == "cancelled"
        async with session.get(f"{a}/v1/jobs/{job['id']}?wait=5&until=terminal") as resp:
            assert (await resp.json())["status"] == "cancelled"
        # runtime config changed on A applies on B
        patch = {"translation_delay": 0.05}
        async with session.patch(f"{a}/v1/config", json=patch, headers=ADMIN) as resp:
            assert resp.status == 200
        for _ in range(50):
            async with session.get(f"{b}/v1/config") as resp:
                if (await resp.json())["translation_delay"] == 0.05:
                    break
            await asyncio.sleep(0.1)
        else:
            pytest.fail("B never saw A's config")
        # an idempotent submit repeated on the other process answers with the same job
        key = {"Idempotency-Key": "same-one"}
        async with session.post(f"{a}/v1/jobs", json={}, headers=key) as resp:
            first = await resp.json()
        async with session.post(f"{b}/v1/jobs", json={}, headers=key) as resp:
            assert resp.status == 200 and (await resp.json())["id"] == first["id"]


async def test_ws_and_sse_through_nginx(cluster: Cluster) -> None:
    async with aiohttp.ClientSession() as session:
        job = await submit(session, cluster.url, scenario={"duration_s": 0.5})
        async with session.ws_connect(f"{cluster.url}/v1/ws") as ws:
            await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
            types = []
            async with asyncio.timeout(30):
                while "job.completed" not in types:
                    msg = json.loads((await ws.receive()).data)
                    types.append(msg.get("event_type") or msg["type"])
        assert types[0] == "subscribed" and "snapshot" in types
        async with session.get(f"{cluster.url}/v1/events?job={job['id']}&last_event_id=0") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            seen: list[str] = []
            async with asyncio.timeout(30):
                async for line in resp.content:
                    if line.startswith(b"event: "):
                        seen.append(line[7:].strip().decode())
                    if "job.completed" in seen:
                        break
        # the replay through the proxy, in order, from the shared log
        assert seen[0] == "job.created" and seen[-1] == "job.completed"


async def test_a_backend_killed_mid_run_loses_nothing(cluster: Cluster) -> None:
    """SIGKILL one process while jobs run on both and clients wait through nginx: every job
    still reaches its outcome (the other process takes over the dead one's attempts once their
    lease runs out), and every client wait returns it."""
    outcomes = ["completed", "permanently_failed", "completed", "cancelled"] * 10
    async with aiohttp.ClientSession() as session:
        jobs = []
        for i, outcome in enumerate(outcomes):
            scenario: dict[str, Any] = {"duration_s": 3.0}
            if outcome == "permanently_failed":
                scenario["outcome"] = "permanently_failed"
            elif outcome == "cancelled":
                scenario["outcome"] = "stuck"
            base = cluster.backend_url(i % 2)
            jobs.append(await submit(session, base, role="premium", scenario=scenario))
        async with AsyncClient(cluster.url, token=TOKEN) as client:
            waits = [asyncio.create_task(client.wait(j["id"], timeout=90)) for j in jobs]
            await asyncio.sleep(1.0)  # attempts are running on both processes now
            cluster.kill_backend(0)
            for job, outcome in zip(jobs, outcomes, strict=True):
                if outcome == "cancelled":
                    async with session.post(
                        f"{cluster.url}/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN
                    ) as resp:
                        assert resp.status == 200, await resp.text()
            results = await asyncio.gather(*waits, return_exceptions=True)
    got = []
    for result in results:
        if isinstance(result, BaseException):
            got.append(type(result).__name__)
        else:
            got.append(result.status)
    expected = [
        {"completed": "completed", "cancelled": "JobCancelled"}.get(o, "JobFailed")
        for o in outcomes
    ]
    assert got == expected


async def test_a_video_upload_passes_the_proxy(cluster: Cluster) -> None:
    """POST /v1/assets takes up to MAX_UPLOAD_MB (500): the proxy must not refuse a video of a
    few MB with its own 413 before dubsim sees it; other bodies stay dubsim's 64 KiB."""
    body = bytes(range(256)) * (3 * 4096)  # 3 MiB, not a video: dubsim's own 422 says so
    async with aiohttp.ClientSession() as session:
        async with session.post(
            f"{cluster.url}/v1/assets", data=io.BytesIO(body), headers={"X-User-Id": "alice"}
        ) as resp:
            assert resp.status == 422, await resp.text()
            assert (await resp.json())["error"]["code"] == "invalid_video"
        async with session.post(
            f"{cluster.url}/v1/jobs",
            data=b'{"callback_id": "' + b"x" * 70_000 + b'"}',
            headers={"Content-Type": "application/json"},
        ) as resp:
            assert resp.status == 413
            assert (await resp.json())["error"]["code"] == "payload_too_large"
