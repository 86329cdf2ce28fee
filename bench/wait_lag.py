"""Wait lag and cost: how soon each way of waiting learns a job's outcome, and what it costs.

200 jobs with deterministic durations (`scenario.duration_s`, evenly spread over 0.2-3 s,
shuffled with a fixed seed) are submitted 5 ms apart and all waited for concurrently, one
strategy at a time:

  a  ws        dubsim client `AsyncClient.wait` (the shared WebSocket)
  b  sse       one SSE stream (`/v1/events?mine=1`) opened before the submits
  c  longpoll  `GET /v1/jobs/{id}?wait=30&until=terminal` with `If-None-Match`
  c2 client-lp dubsim client, socket disabled, its long-poll fallback
  d  hint      dubsim client, socket disabled, long poll off: polls at the server's hints
  e  fixed-1s  GET every 1 s
  f  fixed-5s  GET every 5 s
  g  backoff   GET after 1, 2, 4, 8, 16 s, giving up after 5 tries

Requests are counted on the client side (a wrapping transport for the dubsim client, a counter
for the hand-written waiters): HTTP requests per job beyond the submit; connection setups
(WebSocket upgrade, SSE stream) are counted apart since one serves all 200 jobs.
Lag = the moment the waiter returns (time.time(), this process) minus the server's `at` of the
job's terminal event (microseconds, same host clock), read afterwards by replaying the server's
event buffer over a WebSocket, so no observer runs during the measurement.
Then (d) again on 20 jobs of 15 s, for its own target.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import aiohttp

from bench._common import RESULTS, TOKEN, dubsim, pyplot, summary_ms, write_result
from client import AsyncClient, PollPolicy, TransportError
from client._transport import AiohttpTransport, Request, Response, WebSocketConnection

NAME = "wait_lag"
TERMINAL = {"completed", "permanently_failed", "cancelled"}
LABELS = {
    "ws": "(a) client, WebSocket",
    "sse": "(b) SSE stream",
    "longpoll": "(c) long poll ?wait=",
    "client-lp": "(c2) client, no socket, long poll",
    "hint": "(d) client, no socket, hints",
    "fixed-1s": "(e) fixed 1 s",
    "fixed-5s": "(f) fixed 5 s",
    "backoff": "(g) backoff 1..16 s x5",
}


class Counting:
    """Wraps the real transport: counts requests by method; optionally refuses WebSockets."""

    def __init__(self, *, socket: bool) -> None:
        # no connection cap, like the hand-written waiters (the client's default is 100, which
        # queues the 101st concurrent long poll behind the others)
        self.inner = AiohttpTransport(connection_limit=0)
        self.socket = socket
        self.requests: dict[str, int] = {}
        self.ws_connects = 0

    async def handle(self, request: Request) -> Response:
        self.requests[request.method] = self.requests.get(request.method, 0) + 1
        return await self.inner.handle(request)

    async def connect_websocket(self, url: str, headers: Mapping[str, str]) -> WebSocketConnection:
        if not self.socket:
            raise TransportError("socket disabled by the benchmark")
        self.ws_connects += 1
        return await self.inner.connect_websocket(url, headers)

    async def aclose(self) -> None:
        await self.inner.aclose()


def durations(n: int, low: float, high: float, seed: int = 6) -> list[float]:
    values = [round(low + (high - low) * i / max(1, n - 1), 3) for i in range(n)]
    random.Random(seed).shuffle(values)
    return values


STAGGER_S = 0.005  # submits 5 ms apart: the waiter's own loop is not what is measured

Waiter = Callable[[str, str], Awaitable[None]]  # (job id, etag) -> returns when terminal


async def run_strategy(
    url: str, strategy: str, durs: list[float], user: str
) -> tuple[dict[str, float], dict[str, Any]]:
    """Submit and wait every job; returns (job id -> return time, cost counters)."""
    returned: dict[str, float] = {}
    cost: dict[str, Any] = {"get": 0, "connections": 0, "gave_up": 0}
    headers = {"X-User-Id": user, "Content-Type": "application/json"}
    if strategy in ("ws", "client-lp", "hint"):
        transport = Counting(socket=strategy == "ws")
        policy = PollPolicy(long_poll=strategy == "client-lp")
        async with AsyncClient(url, user_id=user, transport=transport, policy=policy) as client:

            async def one(i: int, d: float) -> None:
                await asyncio.sleep(i * STAGGER_S)
                job = await client.submit(role="premium", scenario={"duration_s": d})
                await client.wait(job.id, timeout=60)
                returned[job.id] = time.time()

            await asyncio.gather(*(one(i, d) for i, d in enumerate(durs)))
            cost["get"] = sum(transport.requests.values()) - len(durs)
            cost["connections"] = transport.ws_connects
        return returned, cost

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(url, connector=connector, headers=headers) as session:
        waiters: dict[str, asyncio.Future[None]] = {}
        stream_task = None
        if strategy == "sse":
            ready = asyncio.Event()
            stream_task = asyncio.create_task(_sse_listen(session, waiters, ready))
            cost["connections"] = 1
            await ready.wait()

        async def get(job_id: str, **kw: Any) -> aiohttp.ClientResponse:
            cost["get"] += 1
            return await session.get(f"/v1/jobs/{job_id}", **kw)

        async def one(i: int, d: float) -> None:
            await asyncio.sleep(i * STAGGER_S)
            body = {"role": "premium", "scenario": {"duration_s": d}}
            async with session.post("/v1/jobs", json=body) as resp:
                job = await resp.json()
                etag = resp.headers["ETag"]
            job_id = job["id"]
            if strategy == "sse":
                waiters.setdefault(job_id, asyncio.get_running_loop().create_future())
                await waiters[job_id]
            elif strategy == "longpoll":
                while True:
                    resp = await get(
                        job_id,
                        params={"wait": "30", "until": "terminal"},
                        headers={"If-None-Match": etag},
                    )
                    async with resp:
                        if resp.status == 200:
                            etag = resp.headers["ETag"]
                            if (await resp.json())["status"] in TERMINAL:
                                break
            else:
                delays = {
                    "fixed-1s": [1.0] * 1000,
                    "fixed-5s": [5.0] * 1000,
                    "backoff": [1.0, 2.0, 4.0, 8.0, 16.0],
                }[strategy]
                for delay in delays:
                    await asyncio.sleep(delay)
                    async with await get(job_id) as resp:
                        if (await resp.json())["status"] in TERMINAL:
                            break
                else:
                    cost["gave_up"] += 1
                    return
            returned[job_id] = time.time()

        await asyncio.gather(*(one(i, d) for i, d in enumerate(durs)))
        if stream_task is not None:
            stream_task.cancel()
    return returned, cost


async def _sse_listen(
    session: aiohttp.ClientSession, waiters: dict[str, asyncio.Future[None]], ready: asyncio.Event
) -> None:
    loop = asyncio.get_running_loop()
    async with session.get("/v1/events", params={"mine": "1"}) as resp:
        ready.set()
        async for line in resp.content:
            if not line.startswith(b"data: "):
                continue
            event = json.loads(line[6:])
            job = event.get("job") or {}
            if job.get("status") in TERMINAL:
                fut = waiters.setdefault(job["id"], loop.create_future())
                if not fut.done():
                    fut.set_result(None)


async def terminal_times(url: str, since: int, ids: set[str]) -> dict[str, float]:
    """The server's `at` for each job's terminal event, replayed from its event buffer."""
    found: dict[str, float] = {}
    async with aiohttp.ClientSession() as session:
        ws_url = url.replace("http", "ws", 1) + "/v1/ws?token=" + TOKEN
        async with session.ws_connect(ws_url) as ws:
            await ws.send_json({"op": "subscribe", "all": True, "since": since})
            async with asyncio.timeout(30):
                async for msg in ws:
                    data = json.loads(msg.data)
                    if data.get("type") != "event" or data["job"]["id"] not in ids:
                        continue
                    if data["job"]["status"] in TERMINAL:
                        at = dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
                        found[data["job"]["id"]] = at.timestamp()
                        if len(found) == len(ids):
                            break
    return found


async def current_seq(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.get(url + "/healthz") as resp:
        body = await resp.json()
    return int(body["seq"])


async def measure(url: str, strategy: str, durs: list[float], tag: str) -> dict[str, Any]:
    since = await current_seq(url)
    started = time.monotonic()
    returned, cost = await run_strategy(url, strategy, durs, user=f"bench-{tag}-{strategy}")
    wall = time.monotonic() - started
    finished = await terminal_times(url, since, set(returned))
    lags = [returned[j] - finished[j] for j in returned if j in finished]
    n = len(durs)
    return {
        "strategy": strategy,
        "label": LABELS[strategy],
        "jobs": n,
        "requests_per_job": round(cost["get"] / n, 3),
        "connections": cost["connections"],
        "requests_per_job_incl_connections": round((cost["get"] + cost["connections"]) / n, 3),
        "gave_up": cost["gave_up"],
        "lag": summary_ms(lags),
        "wall_s": round(wall, 2),
    }


def plot(rows: list[dict[str, Any]], path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for row in rows:
        x = max(row["requests_per_job_incl_connections"], 0.004)
        p50, p99 = row["lag"]["p50_ms"], row["lag"]["p99_ms"]
        if p50 is None:
            continue
        ax.errorbar(x, p50, yerr=[[0], [p99 - p50]], fmt="o", capsize=3)
        ax.annotate(row["label"], (x, p50), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("HTTP requests per job beyond the submit (incl. shared connection setup)")
    ax.set_ylabel("lag after the terminal transition, ms (dot p50, bar to p99)")
    ax.set_title("wait: lag against cost (200 jobs of 0.2-3 s)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    server = dubsim(
        translation_delay=15,
        error_rate=0,
        workers=1000,
        rate_limit=1_000_000,
        event_buffer=200_000,
        subscriber_queue=1_000_000,  # the replay afterwards is one burst of ~3,000 events
    )
    try:
        durs = durations(args.jobs, 0.2, 3.0)
        rows = []
        for strategy in args.strategies.split(","):
            row = await measure(server.url, strategy, durs, "short")
            rows.append(row)
            print(
                f"{row['label']:36} req/job {row['requests_per_job']:6.3f}  "
                f"lag p50 {row['lag']['p50_ms']} p99 {row['lag']['p99_ms']} max {row['lag']['max_ms']} ms"
            )
        long_row = None
        if args.long_jobs:
            long_row = await measure(server.url, "hint", [15.0] * args.long_jobs, "long")
            print(
                f"(d) on 15 s jobs: {long_row['requests_per_job']} req/job, lag {long_row['lag']}"
            )
    finally:
        server.stop()
    plot(rows, str(RESULTS / f"{NAME}.png"))
    return {"strategies": rows, "hint_15s": long_row}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.wait_lag", description=__doc__)
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--strategies", default=",".join(LABELS))
    parser.add_argument("--long-jobs", type=int, default=20, help="15 s jobs for (d); 0 skips")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
