"""Every transition a user (or the admin) can trigger, over HTTP, judged by tests/contract.py.

Each case walks a fresh job to a state through the public API only (manual mode, scripted
scenarios, a retry backoff far longer than the test so a failed job stays failed), then
tries the admin's commands on it: the legal ones answer 200 with the new state, the illegal
ones 409 with the job untouched (same body, same ETag).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest

from tests.conftest import ADMIN, ApiFactory, make_settings, wait_for_status
from tests.contract import CANCELLABLE, LEGAL, RETRYABLE, STATES

# manual mode: nothing starts until POST /v1/process; a failed attempt waits an hour to retry
MANUAL = {"auto_process": False, "retry_delay": 3600}
SCENARIO_FOR = {
    "pending": {"duration_s": 0.05},
    "processing": {"outcome": "stuck"},
    "completed": {"duration_s": 0.05},
    "failed": {"duration_s": 0.05, "outcome": "failed"},
    "permanently_failed": {"duration_s": 0.05, "outcome": "permanently_failed"},
    "cancelled": {"duration_s": 0.05},
}


async def submit(client: Any, scenario: dict[str, Any]) -> dict[str, Any]:
    resp = await client.post("/v1/jobs", json={"role": "premium", "scenario": scenario})
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def job_in(client: Any, state: str) -> dict[str, Any]:
    """A fresh job walked to `state` through the public API (the client is in manual mode)."""
    job = await submit(client, SCENARIO_FOR[state])
    if state == "cancelled":
        resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
        assert resp.status == 200, await resp.text()
    elif state != "pending":
        resp = await client.post("/v1/process", json={"count": 1}, headers=ADMIN)
        started = (await resp.json())["started"]
        assert [j["id"] for j in started] == [job["id"]]
    _, now = await snapshot(client, job["id"])
    if now["status"] != state:
        now = await wait_for_status(client, job["id"], {state})
    assert now["status"] == state
    return now


async def snapshot(client: Any, job_id: str) -> tuple[str | None, dict[str, Any]]:
    resp = await client.get(f"/v1/jobs/{job_id}")
    assert resp.status == 200
    return resp.headers.get("ETag"), await resp.json()


async def statuses_of(client: Any, job_id: str) -> list[str]:
    """The job's statuses in event order (SSE replay from the start), repeats collapsed."""
    seen: list[str] = []
    async with client.get(f"/v1/events?job={job_id}&last_event_id=0") as resp:
        async for line in resp.content:
            if line.startswith(b"data: "):
                status = json.loads(line[6:])["job"]["status"]
                if not seen or seen[-1] != status:
                    seen.append(status)
                if status in ("completed", "permanently_failed", "cancelled"):
                    break
    return seen


def assert_legal_path(path: list[str]) -> None:
    for was, to in itertools.pairwise(path):
        assert to in LEGAL[was], f"{was} -> {to} in {path}"


# ---- the admin's commands from every state ---------------------------------------------


@pytest.mark.parametrize("state", sorted(CANCELLABLE))
async def test_cancel_is_accepted_from(api: ApiFactory, state: str) -> None:
    client = await api(**MANUAL)
    job = await job_in(client, state)
    resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={"reason": "r"}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "cancelled" and body["cancel_reason"] == "r"
    _, now = await snapshot(client, job["id"])
    assert now["status"] == "cancelled" and now["finished_at"]
    assert await statuses_of(client, job["id"]) == [
        *{"pending": ["pending"], "processing": ["pending", "processing"]}.get(
            state, ["pending", "processing", "failed"]
        ),
        "cancelled",
    ]


@pytest.mark.parametrize("state", sorted(STATES - CANCELLABLE))
async def test_cancel_is_refused_from(api: ApiFactory, state: str) -> None:
    client = await api(**MANUAL)
    job = await job_in(client, state)
    before = await snapshot(client, job["id"])
    resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "conflict"
    assert await snapshot(client, job["id"]) == before


async def test_retry_is_accepted_from_permanently_failed(api: ApiFactory) -> None:
    client = await api(**MANUAL)
    job = await job_in(client, "permanently_failed")
    assert job["attempt"] == 1 and job["error"]
    resp = await client.post(f"/v1/jobs/{job['id']}/retry", headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["status"] == "pending" and body["attempt"] == 0
    assert body["error"] is None and body["finished_at"] is None
    _, now = await snapshot(client, job["id"])
    assert now["status"] == "pending"


@pytest.mark.parametrize("state", sorted(STATES - RETRYABLE))
async def test_retry_is_refused_from(api: ApiFactory, state: str) -> None:
    client = await api(**MANUAL)
    job = await job_in(client, state)
    before = await snapshot(client, job["id"])
    resp = await client.post(f"/v1/jobs/{job['id']}/retry", headers=ADMIN)
    assert resp.status == 409, await resp.text()
    assert (await resp.json())["error"]["code"] == "conflict"
    assert await snapshot(client, job["id"]) == before


async def test_process_moves_pending_to_processing(api: ApiFactory) -> None:
    client = await api(**MANUAL)
    job = await submit(client, {"outcome": "stuck"})
    resp = await client.post("/v1/process", json={"count": 5}, headers=ADMIN)
    started = (await resp.json())["started"]
    assert [(j["id"], j["status"], j["attempt"]) for j in started] == [(job["id"], "processing", 1)]


# ---- the scheduler's moves, as the event log tells them ------------------------------


@pytest.mark.parametrize(
    ("scenario", "path"),
    [
        ({"duration_s": 0.05}, ["pending", "processing", "completed"]),
        (
            {"duration_s": 0.05, "fail_attempts": 1},
            ["pending", "processing", "failed", "pending", "processing", "completed"],
        ),
        (
            {"duration_s": 0.05, "outcome": "permanently_failed"},
            ["pending", "processing", "permanently_failed"],
        ),
    ],
    ids=["completes", "fails-then-retries", "fails-for-good"],
)
async def test_scheduler_paths(api: ApiFactory, scenario: dict[str, Any], path: list[str]) -> None:
    client = await api(retry_delay=0.01)
    job = await submit(client, scenario)
    await wait_for_status(client, job["id"], {path[-1]})
    seen = await statuses_of(client, job["id"])
    assert seen == path
    assert_legal_path(seen)


async def test_restart_requeues_an_interrupted_attempt_as_pending(
    aiohttp_client: Any, tmp_path: Any
) -> None:
    """processing -> pending: the attempt died with the process and does not count."""
    from service.app import create_app

    db = str(tmp_path / "restart.db")
    first = await aiohttp_client(create_app(make_settings(db=db, **MANUAL)))
    job = await job_in(first, "processing")
    assert job["attempt"] == 1
    await first.close()  # the attempt is interrupted; the job is left processing on disk
    second = await aiohttp_client(create_app(make_settings(db=db, **MANUAL)))
    _, again = await snapshot(second, job["id"])
    assert (again["status"], again["attempt"], again["progress"]) == ("pending", 0, 0)
