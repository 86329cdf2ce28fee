"""`Prefer: wait=N` on POST /v1/jobs: the 201 comes when the job is terminal or after N s.

The job is durable before the wait begins; a bad N is refused before anything is created; the
wait holds nothing once the client has gone, and ends at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import aiohttp
import pytest

from service.api._gate import GATE
from service.api.stream import close_streams
from tests.conftest import ADMIN, ApiFactory

USER = {"X-User-Id": "alice"}


async def test_answers_with_the_outcome_when_it_comes_first(api: ApiFactory) -> None:
    client = await api()
    resp = await client.post(
        "/v1/jobs", json={"scenario": {"duration_s": 0.3}}, headers={**USER, "Prefer": "wait=30"}
    )
    assert resp.status == 201
    assert resp.headers["Preference-Applied"] == "wait=30"
    body = await resp.json()
    assert body["status"] == "completed"
    assert resp.headers["Location"] == f"/v1/jobs/{body['id']}"


async def test_answers_after_n_seconds_with_the_job_as_it_is(api: ApiFactory) -> None:
    client = await api()
    resp = await client.post(
        "/v1/jobs",
        json={"scenario": {"outcome": "stuck"}},
        headers={**USER, "Prefer": "respond-async, wait=1"},
    )
    assert resp.status == 201
    assert resp.headers["Preference-Applied"] == "wait=1"
    assert (await resp.json())["status"] in ("pending", "processing")
    assert client.server.app[GATE].open == 0


async def test_no_prefer_answers_at_once_without_preference_applied(api: ApiFactory) -> None:
    client = await api()
    resp = await client.post("/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers=USER)
    assert resp.status == 201
    assert "Preference-Applied" not in resp.headers
    assert (await resp.json())["status"] == "pending"


@pytest.mark.parametrize("value", ["wait=61", "wait=-1", "wait=soon", "wait=", "wait=nan"])
async def test_a_bad_wait_is_refused_and_creates_nothing(api: ApiFactory, value: str) -> None:
    client = await api()
    resp = await client.post("/v1/jobs", json={}, headers={**USER, "Prefer": value})
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "validation_error"
    assert "Prefer" in error["message"]
    listing = await (await client.get("/v1/jobs", headers=ADMIN)).json()
    assert listing["jobs"] == []


async def test_a_disconnected_client_holds_nothing(server_process: Any) -> None:
    # a real server process: aiohttp's test server cancels a handler whose client went away,
    # the production runner does not, so only a real one shows the wait letting go by itself
    server = server_process(db=":memory:")
    body = json.dumps({"scenario": {"outcome": "stuck"}}).encode()
    _, writer = await asyncio.open_connection("127.0.0.1", server.port)
    writer.write(
        b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Prefer: wait=60\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    await writer.drain()
    async with aiohttp.ClientSession() as session:
        async with asyncio.timeout(20):
            while await waiting(session, server.url) != 1:
                await asyncio.sleep(0.02)
        # the job exists (durable) while its submitter waits
        async with session.get(server.url + "/v1/jobs", headers=ADMIN) as resp:
            assert len((await resp.json())["jobs"]) == 1
        writer.close()
        async with asyncio.timeout(20):  # let go long before the 60 s
            while await waiting(session, server.url) != 0:
                await asyncio.sleep(0.02)


async def waiting(session: aiohttp.ClientSession, url: str) -> float:
    """Open waits (long polls and Prefer: wait), from the server's /metrics."""
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.search(r'dubsim_subscribers\{transport="poll"\} ([0-9.]+)', text)
    return float(found.group(1)) if found else 0.0


async def test_shutdown_ends_the_wait(api: ApiFactory) -> None:
    client = await api()

    async def submit() -> Any:
        resp = await client.post(
            "/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers={"Prefer": "wait=60"}
        )
        return resp.status, await resp.json()

    waiting = asyncio.create_task(submit())
    gate = client.server.app[GATE]
    async with asyncio.timeout(20):
        while gate.open != 1:
            await asyncio.sleep(0.01)
    await close_streams(client.server.app)
    status, body = await asyncio.wait_for(waiting, 20)
    assert status == 201
    assert body["status"] in ("pending", "processing")
