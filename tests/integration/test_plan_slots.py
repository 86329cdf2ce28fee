"""A HeyGen plan's concurrency holds across processes on one Redis.

Each process learns what the others run from the shared log, a moment late, so a process may
try to start a job when the plan's last slot was just taken elsewhere. The store counts each
user's plan-limited jobs processing in the commit script and refuses such a start
(test_redis_store.py); the scheduler then leaves the job pending and queued, to start when a
slot frees (test_scheduler.py). Here, end to end: two processes starting one user's jobs at the
same instant run exactly the plan's number, and a slot freed on one process is taken by the next
job, once.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from service.app import create_app
from service.appkeys import SCHEDULER, SERVICE
from tests.conftest import ADMIN, make_settings
from tests.integration.test_heygen import STUCK, key, statuses, v3_submit

PRO_SLOTS = 3  # HeyGen's pro plan: three translations at once


async def test_two_processes_starting_at_once_run_no_more_than_the_plan(
    aiohttp_client: Any, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url, auto_process=False, workers=50, rate_limit=1000)
    a, b = [await aiohttp_client(create_app(settings)) for _ in range(2)]
    pro = key("pro-user", "pro", STUCK)
    ids = await v3_submit(a, pro, ["Spanish", "French", "German", "Dutch", "Thai", "Greek"])

    async def process(client: TestClient[Any, Any]) -> int:
        # what POST /v1/process does, called directly so that both processes pick their jobs
        # in the same instant (over HTTP one of them may already have heard of the other's)
        return len(await client.app[SCHEDULER].start_now(6))

    # both at once: each process's read model still shows none of the user's jobs running
    started = await asyncio.gather(process(a), process(b))
    assert sum(started) == PRO_SLOTS, started
    for client in (a, b):
        await client.app[SERVICE].store.sync()
    assert await statuses(a, "pro-user") == {"processing": PRO_SLOTS, "pending": 3}
    assert await statuses(b, "pro-user") == {"processing": PRO_SLOTS, "pending": 3}

    # one of them ends (cancelled on the other process): exactly one parked job takes its
    # slot, wherever it was parked, with nobody asking again
    settings_auto = {"auto_process": True}
    for client in (a, b):
        resp = await client.patch("/v1/config", json=settings_auto, headers=ADMIN)
        assert resp.status == 200
    running = [
        j for j in ids if (await (await a.get(f"/v1/jobs/{j}")).json())["status"] == "processing"
    ]
    assert (await b.delete(f"/v3/video-translations/{running[0]}", headers=pro)).status == 200
    want = {"cancelled": 1, "processing": PRO_SLOTS, "pending": 2}
    async with asyncio.timeout(20):
        while await statuses(a, "pro-user") != want:
            await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # nothing more starts: the plan is full again
    assert await statuses(a, "pro-user") == want
    assert await statuses(b, "pro-user") == want
