"""Socket chaos: 1,000 waits while the server keeps closing the clients' WebSockets.

An in-process app; a chaos task closes every live WebSocket from the server side about every
100 ms (mostly a close frame with a varying code, sometimes an abrupt transport abort). Each
job is waited on with dubsim-client's `wait()`; every wait must return its job's true outcome.

What the clients did to get there is counted by a transport wrapper (the client's public
`transport=` hook): which waits polled over REST, which jobs were re-subscribed with `since`
(resumed), how many sockets were opened. The figures are printed (`pytest -s`).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
from collections.abc import Mapping
from typing import Any

from aiohttp import WSCloseCode

from client import AiohttpTransport, AsyncClient, JobCancelled, JobFailed
from client._transport import Request, Response, WebSocketConnection
from service.appkeys import HUB, SOCKETS
from tests.conftest import ADMIN, ApiFactory

JOBS = 600
CHAOS_PERIOD_S = 0.1
SCENARIOS: list[tuple[dict[str, Any], str]] = [
    ({"duration_s": 0.3}, "completed"),
    ({"duration_s": 1.2}, "completed"),
    ({"duration_s": 0.2, "fail_attempts": 1}, "completed"),
    ({"duration_s": 0.2, "outcome": "failed"}, "permanently_failed"),
    ({"duration_s": 0.5, "outcome": "permanently_failed"}, "permanently_failed"),
    ({"duration_s": 0.3, "outcome": "stuck"}, "cancelled"),  # the admin cancels these
]
JOB_PATH = re.compile(r"/v1/jobs/([^/?]+)(\?|$)")


class Tally:
    def __init__(self) -> None:
        self.polled: set[str] = set()  # waits that asked REST at least once
        self.polls = 0
        self.resumed: set[str] = set()  # jobs re-subscribed with `since`
        self.resubscribes = 0
        self.resumed_jobs = 0  # job ids over all those messages
        self.connects = 0


class _CountingSocket:
    def __init__(self, ws: WebSocketConnection, tally: Tally) -> None:
        self._ws = ws
        self._tally = tally

    async def send(self, text: str) -> None:
        message = json.loads(text)
        if message.get("op") == "subscribe" and "since" in message:
            self._tally.resubscribes += 1
            self._tally.resumed_jobs += len(message["jobs"])
            self._tally.resumed.update(message["jobs"])
        await self._ws.send(text)

    async def receive(self) -> str | None:
        return await self._ws.receive()

    async def close(self) -> None:
        await self._ws.close()

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code


class CountingTransport(AiohttpTransport):
    def __init__(self, tally: Tally) -> None:
        super().__init__()
        self.tally = tally

    async def handle(self, request: Request) -> Response:
        match = JOB_PATH.search(request.url)
        if request.method == "GET" and match:
            self.tally.polls += 1
            self.tally.polled.add(match.group(1))
        return await super().handle(request)

    async def connect_websocket(self, url: str, headers: Mapping[str, str]) -> WebSocketConnection:
        ws = await super().connect_websocket(url, headers)
        self.tally.connects += 1
        return _CountingSocket(ws, self.tally)


async def chaos(app: Any, stop: asyncio.Event, closed: list[int]) -> None:
    rng = random.Random(11)
    codes = [WSCloseCode.GOING_AWAY, WSCloseCode.INTERNAL_ERROR, 4000, WSCloseCode.OK]
    closing: set[asyncio.Task[Any]] = set()
    for tick in itertools.count():
        for ws in list(app[SOCKETS]):
            transport = getattr(getattr(ws, "_req", None), "transport", None)
            if tick % 5 == 4 and transport is not None:
                transport.abort()  # no close frame at all: the peer just vanishes
            else:
                task = asyncio.create_task(ws.close(code=rng.choice(codes), message=b"chaos"))
                closing.add(task)
                task.add_done_callback(closing.discard)
            closed[0] += 1
        try:
            await asyncio.wait_for(stop.wait(), CHAOS_PERIOD_S)
            break
        except TimeoutError:
            pass
    await asyncio.gather(*closing, return_exceptions=True)


async def outcome_of(client: AsyncClient, job_id: str) -> str:
    try:
        return (await client.wait(job_id, timeout=120)).status.value
    except JobFailed:
        return "permanently_failed"
    except JobCancelled:
        return "cancelled"


async def test_waits_survive_server_side_socket_chaos(api: ApiFactory) -> None:
    http = await api(workers=JOBS, rate_limit=1_000_000, retry_delay=0.05)
    app = http.server.app
    base = str(http.make_url("")).rstrip("/")
    tally = Tally()
    clients = [AsyncClient(base, transport=CountingTransport(tally)) for _ in range(4)]
    expected: dict[str, str] = {}
    waits: dict[str, asyncio.Task[str]] = {}
    stop = asyncio.Event()
    closed = [0]
    chaos_task = asyncio.create_task(chaos(app, stop, closed))

    async def submit(n: int) -> None:
        scenario, outcome = SCENARIOS[n % len(SCENARIOS)]
        role = "premium" if n % 3 else "free"
        resp = await http.post(
            "/v1/jobs",
            json={"role": role, "scenario": scenario},
            headers={"X-User-Id": f"u{n % 9}"},
        )
        assert resp.status == 201, await resp.text()
        job_id = (await resp.json())["id"]
        expected[job_id] = outcome
        waits[job_id] = asyncio.create_task(outcome_of(clients[n % len(clients)], job_id))

    try:
        for start in range(0, JOBS, 50):
            await asyncio.gather(*(submit(n) for n in range(start, start + 50)))
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)  # let the stuck ones start (and get caught by the chaos)
        for job_id, outcome in expected.items():
            if outcome == "cancelled":
                resp = await http.post(f"/v1/jobs/{job_id}/cancel", json={}, headers=ADMIN)
                assert resp.status == 200, await resp.text()
        results = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True))
    finally:
        stop.set()
        for task in waits.values():
            task.cancel()
        await asyncio.gather(chaos_task, *waits.values(), return_exceptions=True)
        stats = [client.stats for client in clients]
        for client in clients:
            await client.aclose()

    hub = app[HUB]
    print(
        f"\nchaos: {closed[0]} server-side socket closes, {tally.connects} client sockets opened; "
        f"{len(tally.polled)}/{JOBS} waits fell back to polling ({tally.polls} polls); "
        f"{len(tally.resumed)}/{JOBS} waits resumed by seq ({tally.resubscribes} resubscribe "
        f"messages); server resets {hub.resets}"
    )
    wrong = {j: (results[j], expected[j]) for j in expected if results[j] != expected[j]}
    assert len(results) == JOBS and not wrong, wrong
    # the chaos really happened and really hit the waits
    assert closed[0] >= 10 and tally.connects > len(clients)
    assert tally.resumed, "no wait ever resumed: the chaos missed the sockets"
    # the client's own counters tell the same story as the wire
    assert sum(s.sockets_opened for s in stats) == tally.connects
    assert sum(s.waits for s in stats) == JOBS
    assert sum(s.waits_polled for s in stats) == len(tally.polled)
    assert sum(s.polls for s in stats) == tally.polls
    assert sum(s.resumed for s in stats) == tally.resumed_jobs
