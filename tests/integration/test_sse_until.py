"""`GET /v1/events?job=ID&until=terminal`: the stream ends by itself after the outcome; and the
stream module keeps its per-app state on the app."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from service.api import stream
from service.app import create_app
from tests.conftest import ApiFactory, make_settings

OUTCOMES = {"job.completed", "job.permanently_failed", "job.cancelled"}


def events_of(body: str) -> list[tuple[str, dict[str, Any]]]:
    found = []
    for block in body.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        if "event" in fields and "data" in fields:
            found.append((fields["event"], json.loads(fields["data"])))
    return found


async def submit(client: Any, body: dict[str, Any]) -> str:
    resp = await client.post("/v1/jobs", json=body)
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def read_to_end(client: Any, query: str) -> list[tuple[str, dict[str, Any]]]:
    """The whole stream: returns only if the server ends it (the test's timeout otherwise)."""
    async with asyncio.timeout(30):
        resp = await client.get("/v1/events?" + query)
        assert resp.status == 200, await resp.text()
        return events_of(await resp.text())


async def test_stream_ends_after_the_terminal_event(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 0.3, "fail_attempts": 1}})
    events = await read_to_end(client, f"job={job}&until=terminal")
    types = [t for t, _ in events]
    assert types[0] == "snapshot"
    assert "job.failed" in types  # a failed attempt is not the end
    assert types[-1] == "job.completed"
    assert events[-1][1]["job"]["id"] == job


async def test_stream_of_a_finished_job_ends_after_its_snapshot(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"outcome": "stuck"}})
    await client.post(
        f"/v1/jobs/{job}/cancel", json={}, headers={"Authorization": "Bearer test-admin-token"}
    )
    events = await read_to_end(client, f"job={job}&until=terminal")
    assert [(t, d["job"]["status"]) for t, d in events] == [("snapshot", "cancelled")]


async def test_stream_of_several_jobs_ends_when_all_have_ended(api: ApiFactory) -> None:
    client = await api()
    quick = await submit(client, {"scenario": {"duration_s": 0.05}})
    slow = await submit(client, {"scenario": {"duration_s": 0.6, "outcome": "permanently_failed"}})
    events = await read_to_end(client, f"job={quick}&job={slow}&until=terminal")
    ended = [(d["job"]["id"], t) for t, d in events if t in OUTCOMES]
    assert ended[-1] == (slow, "job.permanently_failed")
    assert (quick, "job.completed") in ended


async def test_until_needs_jobs_and_a_known_value(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {})
    for query, status in [
        ("until=terminal&mine=1", 422),
        (f"job={job}&until=forever", 422),
        (f"job={job}&until=", 422),
    ]:
        resp = await client.get("/v1/events?" + query, headers={"X-User-Id": "u"})
        assert resp.status == status, query
        error = (await resp.json())["error"]
        assert error["code"] == "validation_error" and error["details"]["field"] == "until"


def test_each_app_has_its_own_closing_tasks() -> None:
    first, second = (create_app(make_settings()) for _ in range(2))
    assert first[stream.CLOSING] == set() and second[stream.CLOSING] == set()
    assert first[stream.CLOSING] is not second[stream.CLOSING]
    assert not hasattr(stream, "_tasks")  # no module-level set shared by every app
