"""SIGTERM drains: every open request kind gets its goodbye and the process exits 0.

One real server process with a WebSocket, an SSE stream, a plain long poll and a long poll
`until=terminal` open on a job that never moves (manual mode); SIGTERM; each client must get
its documented goodbye (WS close 1001, SSE `event: error` going_away then the end of the
stream, the long polls: 200 with the job as it is) and the process must exit 0 well within
SHUTDOWN_GRACE_S. The time bound is a generous ceiling, not a measurement.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from typing import Any

import aiohttp

GRACE_S = 5.0
CEILING_S = GRACE_S + 10  # generous: a loaded box must not turn this red


async def subscribers(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.findall(r'dubsim_subscribers\{transport="(\w+)"\} ([0-9.]+)', text)
    return {name: float(value) for name, value in found}


async def test_sigterm_ends_every_open_request_with_its_goodbye(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    server = server_process(auto_process="false", shutdown_grace_s=GRACE_S)
    async with session.post(server.url + "/v1/jobs", json={}) as resp:
        assert resp.status == 201
        job = await resp.json()
    job_url = f"{server.url}/v1/jobs/{job['id']}"

    async def long_poll(query: str) -> tuple[int, dict[str, Any]]:
        async with aiohttp.ClientSession() as own, own.get(job_url + query) as resp:
            return resp.status, await resp.json()

    polls = [
        asyncio.create_task(long_poll("?wait=60")),
        asyncio.create_task(long_poll("?wait=60&until=terminal")),
    ]
    ws = await session.ws_connect(server.url + "/v1/ws")
    await ws.send_json({"op": "subscribe", "jobs": [job["id"]], "id": 1})
    assert json.loads((await ws.receive(timeout=10)).data)["type"] == "subscribed"
    sse = await session.get(f"{server.url}/v1/events?job={job['id']}")
    assert sse.status == 200
    assert b"event: snapshot" in await sse.content.readuntil(b"\n\n")
    async with asyncio.timeout(20):  # every request is open on the server before SIGTERM
        while await subscribers(session, server.url) != {"ws": 1, "sse": 1, "poll": 2}:
            await asyncio.sleep(0.05)

    assert server.proc is not None
    server.proc.send_signal(signal.SIGTERM)

    msg = await ws.receive(timeout=CEILING_S)
    while msg.type is aiohttp.WSMsgType.TEXT:  # a snapshot may still be queued
        msg = await ws.receive(timeout=CEILING_S)
    assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001, msg
    rest = await asyncio.wait_for(sse.content.read(), CEILING_S)  # read() = to the end
    assert b"event: error" in rest and b"going_away" in rest, rest
    for status, body in await asyncio.wait_for(asyncio.gather(*polls), CEILING_S):
        assert status == 200 and body["id"] == job["id"] and body["status"] == "pending", body
    try:
        code = await asyncio.to_thread(server.proc.wait, CEILING_S)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"still running {CEILING_S} s after SIGTERM") from None
    assert code == 0
    sse.close()
    await ws.close()
