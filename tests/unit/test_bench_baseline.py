"""The benchmarks' bare durable lifecycle (bench/_bare_lifecycle.py) does what its ratio claims
to measure: every job reaches `completed` through three committed states, each with its event,
and a submit is answered only once its job is on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from bench._bare_lifecycle import Lifecycle, make_app


def _rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


async def test_each_job_is_durable_before_its_answer_and_passes_three_committed_states(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    db = tmp_path / "bare.db"
    client = await aiohttp_client(make_app(str(db)))
    ids = []
    for _ in range(20):
        resp = await client.post("/v1/jobs", json={"role": "premium"})
        assert resp.status == 201
        job = await resp.json()
        # answered: already on disk (another connection sees it)
        assert _rows(db, f"SELECT count(*) FROM jobs WHERE id = '{job['id']}'") == [(1,)]
        ids.append(job["id"])
    for _ in range(500):
        text = await (await client.get("/metrics")).text()
        if text.strip().endswith(" 20"):
            break
        await asyncio.sleep(0.01)
    assert text == 'dubsim_jobs{status="completed"} 20\n'
    statuses = {
        job_id: msgspec.json.decode(data)["status"]
        for job_id, data in _rows(db, "SELECT id, data FROM jobs")
    }
    assert statuses == dict.fromkeys(ids, "completed")
    events = _rows(db, "SELECT type FROM events ORDER BY seq")
    assert sorted(t for (t,) in events) == sorted(
        ["job.created", "job.started", "job.completed"] * 20
    )
    last = await (await client.get("/v1/jobs")).json()
    assert last["jobs"][0]["finished_at"].endswith("Z")


class _Held(Lifecycle):
    """Its writer waits for `opened` before its first commit."""

    opened: asyncio.Event

    async def writer(self) -> None:
        await _Held.opened.wait()
        await super().writer()


async def test_a_submit_is_not_answered_before_its_commit(
    aiohttp_client: Any, tmp_path: Path
) -> None:
    _Held.opened = asyncio.Event()
    client = await aiohttp_client(make_app(str(tmp_path / "held.db"), _Held))
    answer = asyncio.create_task(client.post("/v1/jobs", json={"role": "premium"}))
    await asyncio.sleep(0.3)
    assert not answer.done()  # nothing committed: nothing answered
    _Held.opened.set()
    resp = await asyncio.wait_for(answer, 10)
    assert resp.status == 201
