"""Webhook deliveries: throughput to one fast receiver and to 100, and event-to-delivery lag.

The real server (`python -m service`, SQLite file) posts to aiohttp receivers in this process
on loopback, answering 204 at once.

  throughput-1    one endpoint (events "*"), created disabled; premium jobs of 0.05 s run to
                  the end (three events each), then the endpoint is enabled: deliveries per
                  second while it drains that backlog (read back from the durable event log).
  throughput-100  the same with 100 endpoints (admin-owned, so every job matches each), each
                  on its own path of one receiver server: aggregate deliveries per second.
  baseline        a bare aiohttp client POSTing to the same receiver one at a time.
  lag             one enabled endpoint (events: job.completed); jobs submitted at a steady
                  rate; lag = receive time (time.time() here) minus the event's `at` (the
                  server's clock, same host). Target p50 <= 5 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import time
from typing import Any

import aiohttp
from aiohttp import web

from bench._common import TOKEN, dubsim, summary_ms, temp_db, write_result

NAME = "webhooks"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class Sink:
    """Receivers: counts deliveries per path and remembers when each arrived."""

    def __init__(self) -> None:
        self.count = 0
        self.first: float | None = None
        self.last = 0.0
        self.lags: list[float] = []
        self.target = 0
        self.done = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        now = time.time()
        self.count += 1
        self.first = self.first or now
        self.last = now
        if self.target == 0:  # measuring lag
            at = json.loads(body)["at"]
            self.lags.append(now - dt.datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp())
        if self.target and self.count >= self.target:
            self.done.set()
        return web.Response(status=204)

    def reset(self, target: int) -> None:
        self.count, self.first, self.last, self.target = 0, None, 0.0, target
        self.lags = []
        self.done = asyncio.Event()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


async def submit_and_finish(http: aiohttp.ClientSession, base: str, jobs: int) -> None:
    ids = []
    for _ in range(jobs):
        resp = await http.post(
            base + "/v1/jobs",
            json={"role": "premium", "scenario": {"duration_s": 0.05}},
            headers={"X-User-Id": "bench"},
        )
        ids.append((await resp.json())["id"])
    for job_id in ids:
        while True:
            resp = await http.get(f"{base}/v1/jobs/{job_id}?wait=30&until=terminal")
            if (await resp.json())["status"] == "completed":
                break


async def throughput(endpoints: int, jobs: int) -> dict[str, Any]:
    sink = Sink()
    await sink.start()
    with temp_db() as db:
        server = dubsim(db=db, workers=50, event_buffer=max(10_000, jobs * 3 + 10))
        try:
            async with aiohttp.ClientSession() as http:
                ids = []
                for i in range(endpoints):
                    resp = await http.post(
                        server.url + "/v1/webhooks",
                        json={"url": f"http://127.0.0.1:{sink.port}/r{i}", "events": ["*"]},
                        headers=ADMIN,
                    )
                    hook_id = (await resp.json())["id"]
                    ids.append(hook_id)
                    await http.patch(
                        f"{server.url}/v1/webhooks/{hook_id}",
                        json={"status": "disabled"},
                        headers=ADMIN,
                    )
                await submit_and_finish(http, server.url, jobs)
                sink.reset(endpoints * jobs * 3)
                cpu0 = server.cpu_seconds()
                started = time.time()
                for hook_id in ids:
                    await http.patch(
                        f"{server.url}/v1/webhooks/{hook_id}",
                        json={"status": "enabled"},
                        headers=ADMIN,
                    )
                await asyncio.wait_for(sink.done.wait(), timeout=600)
                elapsed = sink.last - started
                cpu = server.cpu_seconds() - cpu0
        finally:
            server.stop()
    await sink.stop()
    return {
        "endpoints": endpoints,
        "deliveries": sink.count,
        "seconds": round(elapsed, 3),
        "per_second": round(sink.count / elapsed, 1),
        "server_cpu_s": round(cpu, 2),
    }


async def lag(jobs: int, rate: float) -> dict[str, Any]:
    sink = Sink()
    await sink.start()
    with temp_db() as db:
        server = dubsim(db=db, workers=50)
        try:
            async with aiohttp.ClientSession() as http:
                await http.post(
                    server.url + "/v1/webhooks",
                    json={"url": f"http://127.0.0.1:{sink.port}/lag", "events": ["job.completed"]},
                    headers=ADMIN,
                )
                sink.reset(0)
                for _ in range(jobs):
                    await http.post(
                        server.url + "/v1/jobs",
                        json={"role": "premium", "scenario": {"duration_s": 0.05}},
                        headers={"X-User-Id": "bench"},
                    )
                    await asyncio.sleep(1 / rate)
                async with asyncio.timeout(60):
                    while sink.count < jobs:
                        await asyncio.sleep(0.05)
        finally:
            server.stop()
    await sink.stop()
    return summary_ms(sink.lags)


async def baseline(requests: int) -> dict[str, Any]:
    """The same receiver, POSTed to one request at a time by a bare aiohttp client in this
    process: the ceiling for one endpoint (one delivery in flight)."""
    sink = Sink()
    await sink.start()
    sink.reset(10**9)
    body = b'{"seq":1,"type":"job.completed","at":"2026-01-01T00:00:00Z","job":{}}'
    async with aiohttp.ClientSession() as http:
        started = time.time()
        for _ in range(requests):
            async with http.post(f"http://127.0.0.1:{sink.port}/base", data=body) as resp:
                await resp.read()
        elapsed = time.time() - started
    await sink.stop()
    return {"requests": requests, "per_second": round(requests / elapsed, 1)}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    base = await baseline(args.jobs)
    print("baseline, bare client:", base, flush=True)
    one = await throughput(1, args.jobs)
    print("throughput, 1 endpoint:", one, flush=True)
    many = await throughput(100, args.jobs_many)
    print("throughput, 100 endpoints:", many, flush=True)
    lags = await lag(args.lag_jobs, args.rate)
    print("lag:", lags, flush=True)
    return {"baseline": base, "one": one, "hundred": many, "lag": lags}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.webhooks", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs for the 1-endpoint run")
    parser.add_argument("--jobs-many", type=int, default=50, help="jobs for the 100-endpoint run")
    parser.add_argument("--lag-jobs", type=int, default=300)
    parser.add_argument("--rate", type=float, default=50.0, help="jobs/s in the lag run")
    args = parser.parse_args(argv)
    figures = asyncio.run(run(args))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
