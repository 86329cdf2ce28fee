"""Cross-process push lag: a job changes on process A, a WebSocket subscriber on process B.

Redis as shipped (`appendonly yes`, `appendfsync everysec`), two dubsim processes A and B.
A child process (so that the submitter's work is not in its event loop) holds two admin
WebSocket subscribers, `{"op": "subscribe", "all": true}`, one on A and one on B, at the same
time. This process submits premium jobs to A at a steady rate (scenario duration_s 0.05).
Lag = the moment a subscriber receives a job's `job.completed` frame (time.time() in the child)
minus that event's `at` (the server's clock, same host, microseconds). Reported per subscriber:
p50/p99/max over every job; B is the cross-process figure (target p50 <= 2 ms), A the
same-process comparison. On Redis every process, A included, learns of a change by tailing the
stream (XREAD BLOCK), so A's figure is the floor B's is compared with; which process ran the
job does not matter to either. For reference the same is measured on SQLite (one process,
the subscriber on it) in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
import time
from typing import Any

import aiohttp

from bench._common import TOKEN, child, read_json_line, summary_ms, tell, write_result
from bench.lifecycle import servers

NAME = "cross_lag"


async def subscribe(urls: list[str], max_seconds: float) -> None:
    """The child: subscribers on each url; prints {"ready"}, then, on stdin's {"stop"} (or
    EOF, or max_seconds), {"lags": [{job id: seconds} per url]}."""
    lags: list[dict[str, float]] = [{} for _ in urls]

    async def listen(i: int, ws: aiohttp.ClientWebSocketResponse) -> None:
        async for msg in ws:
            now = time.time()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if data.get("event_type") == "job.completed":
                at = dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00")).timestamp()
                lags[i][data["job"]["id"]] = now - at

    async with aiohttp.ClientSession() as session:
        sockets = []
        for url in urls:
            ws = await session.ws_connect(url.replace("http", "ws", 1) + "/v1/ws?token=" + TOKEN)
            await ws.send_json({"op": "subscribe", "all": True})
            sockets.append(ws)
        await asyncio.sleep(0.2)  # the subscribe is processed before the first submit
        tasks = [asyncio.create_task(listen(i, ws)) for i, ws in enumerate(sockets)]
        print(json.dumps({"ready": True}), flush=True)
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(max_seconds):
                await loop.run_in_executor(None, sys.stdin.readline)
        except TimeoutError:
            pass
        for task in tasks:
            task.cancel()
        for ws in sockets:
            await ws.close()
    print(json.dumps({"lags": lags}), flush=True)


async def submit(url: str, jobs: int, rate: float, duration_s: float) -> list[str]:
    """`jobs` premium jobs to `url`, one every 1/rate s (on schedule, not after each answer)."""
    ids: list[str] = []
    body = {"role": "premium", "scenario": {"duration_s": duration_s}}
    headers = {"X-User-Id": "cross-lag"}
    async with aiohttp.ClientSession(url, headers=headers) as session:
        loop = asyncio.get_running_loop()
        start = loop.time()

        async def one(i: int) -> None:
            await asyncio.sleep(max(0.0, start + i / rate - loop.time()))
            async with session.post("/v1/jobs", json=body) as resp:
                if resp.status == 201:
                    ids.append((await resp.json())["id"])

        await asyncio.gather(*(one(i) for i in range(jobs)))
    return ids


def measure(urls: list[str], args: argparse.Namespace) -> tuple[list[str], float, list[Any]]:
    """Subscribers on every url (a child process), submits to the first; (ids, s, lags)."""
    sub = child(f"bench.{NAME}", "--max-seconds", args.max_seconds, "--subscriber", *urls)
    try:
        read_json_line(sub)
        t0 = time.monotonic()
        ids = asyncio.run(submit(urls[0], args.jobs, args.rate, args.duration_s))
        submit_s = time.monotonic() - t0
        time.sleep(2 + 5 * args.duration_s)  # the last jobs complete
        tell(sub, {"stop": True})
        lags = read_json_line(sub)["lags"]
    finally:
        if sub.stdin is not None:
            sub.stdin.close()
        sub.wait(30)
    return ids, submit_s, lags


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=200, help="submits per second")
    parser.add_argument("--duration-s", type=float, default=0.05, help="each job's duration")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--subscriber", nargs="+", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.subscriber:
        asyncio.run(subscribe(args.subscriber, args.max_seconds))
        return
    figures: dict[str, Any] = {"load_average_1m_before": round(os.getloadavg()[0], 2)}
    cases = (("redis", 2, ("on_a_same_process", "on_b_cross_process")), ("sqlite", 1, ("sqlite",)))
    for backend, processes, labels in cases:
        with servers(backend, processes, workers=50) as (procs, _):
            ids, submit_s, lags = measure([p.url for p in procs], args)
        figures[f"{backend}_jobs_submitted"] = len(ids)
        figures[f"{backend}_submit_s"] = round(submit_s, 2)
        for label, seen in zip(labels, lags, strict=True):
            values = [seen[i] for i in ids if i in seen]
            figures[label] = {**summary_ms(values), "missing": len(ids) - len(values)}
    figures["target"] = "cross-process p50 <= 2 ms"
    print(json.dumps(figures, indent=2))
    write_result(NAME, figures, {k: v for k, v in vars(args).items() if k != "subscriber"})


if __name__ == "__main__":
    main()
