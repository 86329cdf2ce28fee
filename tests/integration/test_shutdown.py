"""SIGTERM drains: every open request kind gets its goodbye and the process exits 0.

One real server process with a WebSocket, an SSE stream, a plain long poll and a long poll
`until=terminal` open on a job that never moves (manual mode), plus a WebSocket whose peer
stopped reading with the server's send buffer full; SIGTERM; each reading client must get
its documented goodbye (WS close 1001, SSE `event: error` going_away then the end of the
stream, the long polls: 200 with the job as it is) and the process must exit 0 within the
default SHUTDOWN_GRACE_S plus a generous 10 s. With a 60 s grace too: every goodbye is bounded
on its own (a stalled peer is cut after 2 s), so nothing waits for the grace to run out.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
from typing import Any

import aiohttp
import pytest

from tests.reliability.test_memory import frame

CEILING_S = 5.0 + 10  # SHUTDOWN_GRACE_S's default + 10: generous, a loaded box stays green


async def subscribers(session: aiohttp.ClientSession, url: str) -> dict[str, float]:
    async with session.get(url + "/metrics") as resp:
        text = await resp.text()
    found = re.findall(r'dubsim_subscribers\{transport="(\w+)"\} ([0-9.]+)', text)
    return {name: float(value) for name, value in found}


async def stalled_socket(port: int) -> asyncio.StreamWriter:
    """A WebSocket that makes the server queue ~600 KB of replies and never reads them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(
        b"GET /v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    assert (await reader.readuntil(b"\r\n\r\n")).startswith(b"HTTP/1.1 101")
    unknown = [f"{i:04d}-" + "u" * 190 for i in range(300)]  # each answered by a ~60 KB error
    for _ in range(10):
        writer.write(frame(json.dumps({"op": "subscribe", "jobs": unknown}).encode()))
        await writer.drain()
    return writer


@pytest.mark.parametrize("grace_s", [5.0, 60.0])
async def test_sigterm_ends_every_open_request_with_its_goodbye(
    server_process: Any, session: aiohttp.ClientSession, grace_s: float
) -> None:
    server = server_process(auto_process="false", shutdown_grace_s=grace_s)
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
    stalled = await stalled_socket(server.port)
    sse = await session.get(f"{server.url}/v1/events?job={job['id']}")
    assert sse.status == 200
    assert b"event: snapshot" in await sse.content.readuntil(b"\n\n")
    async with asyncio.timeout(20):  # every request is open on the server before SIGTERM
        while await subscribers(session, server.url) != {"ws": 2, "sse": 1, "poll": 2}:
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
    stalled.transport.abort()
