"""Durability across `kill -9`: nothing accepted is lost or doubled, and every wait ends right.

300 jobs (both plans, every scenario outcome) are submitted with an Idempotency-Key each and
waited on by dubsim-clients; the server is killed with SIGKILL while jobs are processing and
restarted on the same SQLite file (and port) while submissions and waits carry on.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import sqlite3
from collections import Counter
from typing import Any

import aiohttp

from client import AsyncClient, JobCancelled, JobFailed
from service.hub import Hub
from service.jobs import JobService
from service.models import Role, Status, SubmitRequest
from service.settings import Config
from service.store import SQLiteStore
from tests.conftest import ADMIN
from tests.reliability.conftest import all_jobs

JOBS = 300
KILL_AFTER = 150  # accepted jobs before the kill
# (scenario, expected outcome of wait()); stuck jobs are cancelled by the admin at the end
SCENARIOS: list[tuple[dict[str, Any] | None, str]] = [
    (None, "completed"),  # chance, error_rate 0
    ({"duration_s": 0.2}, "completed"),
    ({"duration_s": 3.0}, "completed"),  # long: processing when the server dies
    ({"duration_s": 0.3, "fail_attempts": 1}, "completed"),
    ({"duration_s": 0.2, "outcome": "failed"}, "permanently_failed"),
    ({"duration_s": 0.4, "outcome": "permanently_failed"}, "permanently_failed"),
    ({"duration_s": 0.5, "outcome": "stuck"}, "cancelled"),
]


def durable_statuses(db: str) -> dict[str, str]:
    """Each job's status as the SQLite file holds it (read while the server is dead)."""
    conn = sqlite3.connect(db)
    try:
        rows = conn.execute("SELECT id, data FROM jobs").fetchall()
    finally:
        conn.close()
    return {job_id: json.loads(data)["status"] for job_id, data in rows}


async def outcome_of(client: AsyncClient, job_id: str) -> str:
    try:
        return (await client.wait(job_id, timeout=90)).status.value
    except JobFailed:
        return "permanently_failed"
    except JobCancelled:
        return "cancelled"


async def submitter(
    session: aiohttp.ClientSession,
    base: str,
    accepted: dict[str, str],
    expected: dict[str, str],
    start_wait: Any,
) -> None:
    """Submit JOBS jobs, retrying each with its Idempotency-Key until it is accepted."""
    plans = itertools.cycle(["premium", "free", "free", "premium", "free"])
    for n in range(JOBS):
        scenario, outcome = SCENARIOS[n % len(SCENARIOS)]
        key = f"job-{n}"
        body = {"role": next(plans), "scenario": scenario}
        headers = {"X-User-Id": f"user{n % 7}", "Idempotency-Key": key}
        async with asyncio.timeout(60):
            while True:
                try:
                    async with session.post(base + "/v1/jobs", json=body, headers=headers) as resp:
                        if resp.status in (200, 201):
                            job = await resp.json()
                            break
                        assert resp.status >= 500, await resp.text()
                except (aiohttp.ClientError, OSError):
                    pass  # the server is down: the same key makes the retry safe
                await asyncio.sleep(0.05)
        assert accepted.setdefault(key, job["id"]) == job["id"], "one key, two jobs"
        expected[job["id"]] = outcome
        start_wait(job["id"])
        await asyncio.sleep(0.004)


async def test_kill_9_loses_nothing_and_every_wait_ends_right(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    server = server_process(workers=400, rate_limit=100_000, translation_delay=0.3)
    db = server.db
    accepted: dict[str, str] = {}  # idempotency key -> job id
    expected: dict[str, str] = {}  # job id -> the outcome its wait must return
    waits: dict[str, asyncio.Task[str]] = {}
    clients = [AsyncClient(server.url, user_id=f"waiter{i}") for i in range(3)]
    seqs_before: list[int] = []
    seqs_after: list[int] = []

    async def watch_all(seqs: list[int]) -> None:
        """An admin WebSocket recording every event's seq until the connection dies."""
        async with session.ws_connect(server.url + "/v1/ws", headers=ADMIN) as ws:
            await ws.send_json({"op": "subscribe", "all": True})
            async for msg in ws:
                data = json.loads(msg.data)
                if data.get("type") == "event":
                    seqs.append(data["seq"])

    def start_wait(job_id: str) -> None:
        client = clients[len(waits) % len(clients)]
        waits[job_id] = asyncio.create_task(outcome_of(client, job_id))

    watcher = asyncio.create_task(watch_all(seqs_before))
    watcher_after: asyncio.Task[None] | None = None
    feeder = asyncio.create_task(submitter(session, server.url, accepted, expected, start_wait))
    try:
        async with asyncio.timeout(60):
            while len(accepted) < KILL_AFTER:
                await asyncio.sleep(0.02)
        server.kill(signal.SIGKILL)
        with contextlib.suppress(aiohttp.ClientError):
            await asyncio.wait_for(watcher, 10)
        durable = durable_statuses(db)
        await asyncio.to_thread(server.start)  # same file, same port

        watcher_after = asyncio.create_task(watch_all(seqs_after))
        async with session.get(server.url + "/healthz") as resp:
            seq_after_restart = (await resp.json())["seq"]
        await asyncio.wait_for(feeder, 90)
        # stuck jobs never end by themselves: the admin cancels them (some are still
        # pending, some processing: both end cancelled)
        for job_id, outcome in expected.items():
            if outcome == "cancelled":
                async with session.post(
                    server.url + f"/v1/jobs/{job_id}/cancel", json={}, headers=ADMIN
                ) as resp:
                    assert resp.status == 200, await resp.text()
        results = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True))
        listed = await all_jobs(session, server.url, ADMIN)
    finally:
        tasks = [feeder, watcher, *waits.values(), *([watcher_after] if watcher_after else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for client in clients:
            await client.aclose()

    # every accepted job is there, exactly once, and nothing else is
    ids = [job["id"] for job in listed]
    assert len(accepted) == JOBS and len(set(accepted.values())) == JOBS
    assert len(ids) == len(set(ids)) == JOBS
    assert set(ids) == set(accepted.values())
    assert {job["role"] for job in listed} == {"free", "premium"}
    # the kill hit jobs mid-flight; the ones it caught processing were requeued and finished
    interrupted = {job_id for job_id, status in durable.items() if status == "processing"}
    assert interrupted, f"no job was processing at the kill: {Counter(durable.values())}"
    assert len(durable) >= KILL_AFTER
    # every wait that was running across the restart returned the right outcome
    assert results == expected, {
        j: (results[j], expected[j]) for j in expected if results[j] != expected[j]
    }
    final = {job["id"]: job["status"] for job in listed}
    assert all(final[j] == expected[j] for j in interrupted)
    # seq continues without reuse
    assert seqs_before, "the admin socket saw no event before the kill"
    assert seq_after_restart > max(seqs_before)
    assert seqs_after and min(seqs_after) > max(seqs_before)
    assert seqs_after == sorted(set(seqs_after))  # strictly increasing


async def test_restart_keeps_attempt_within_max_attempts(tmp_path: Any) -> None:
    """BUG (reported): a restart that interrupts a job's last attempt requeues it, and its
    next attempt is numbered max_attempts + 1; the invariant attempt <= max_attempts breaks.
    In-process, no scheduler: the same file opened twice is the kill and the restart."""
    db = str(tmp_path / "attempts.db")
    config = Config(max_attempts=1)

    service = JobService(SQLiteStore(db), Hub(buffer_size=100, queue_limit=100), config)
    await service.open()
    record, _, _ = await service.submit("u", SubmitRequest(role=Role.PREMIUM))
    assert await service.begin_attempt(record, 1.0)  # its first and last attempt (durable)
    await service.store.close()  # the process dies here; the attempt was running

    again = JobService(SQLiteStore(db), Hub(buffer_size=100, queue_limit=100), config)
    await again.open()
    try:
        record = again.get(record.job.id)
        # requeued, and the attempt the restart interrupted does not count
        assert (record.job.status, record.job.attempt) == (Status.PENDING, 0)
        assert await again.begin_attempt(record, 1.0)
        assert (record.job.attempt, record.job.max_attempts) == (1, 1)
        await again.fail_attempt(record, 1, "timeout", "t", retryable=True, retry_in_s=1)
        assert (record.job.status, record.job.attempt) == (Status.PERMANENTLY_FAILED, 1)
    finally:
        await again.store.close()
