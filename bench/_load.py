"""A submit load generator process: POST /v1/jobs, closed loop or at a fixed rate.

    python -m bench._load --port P --concurrency C --seconds S [--rate R] [--body JSON]

Closed loop (no --rate): C connections each submit again as soon as the answer arrives.
Open loop (--rate R): R submissions per second spread over C connections. Prints one JSON
line {"submitted", "errors", "elapsed_s", "statuses"} at the end; stops early on stdin EOF.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

import aiohttp


async def run(args: argparse.Namespace) -> dict[str, object]:
    url = f"http://127.0.0.1:{args.port}/v1/jobs"
    headers = {"Content-Type": "application/json", "X-User-Id": "load"}
    body = args.body.encode()
    statuses: Counter[int] = Counter()
    errors = 0
    start = time.monotonic()
    end = start + args.seconds
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)

    async def watch_stdin() -> None:
        await reader.read()
        stop.set()

    watcher = asyncio.create_task(watch_stdin())
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal errors
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    await resp.read()
                    statuses[resp.status] += 1
            except (aiohttp.ClientError, OSError):
                errors += 1

        async def closed_loop() -> None:
            while time.monotonic() < end and not stop.is_set():
                if args.count and sum(statuses.values()) + errors >= args.count:
                    return
                await one()

        async def open_loop() -> None:
            interval = 1 / args.rate
            tick = start
            pending: set[asyncio.Task[None]] = set()
            while time.monotonic() < end and not stop.is_set():
                tick += interval
                delay = tick - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one())
                pending.add(task)
                task.add_done_callback(pending.discard)
            await asyncio.gather(*pending)

        if args.rate:
            await open_loop()
        else:
            await asyncio.gather(*(closed_loop() for _ in range(args.concurrency)))
    watcher.cancel()
    return {
        "submitted": sum(n for s, n in statuses.items() if s < 300),
        "errors": errors,
        "statuses": {str(k): v for k, v in statuses.items()},
        "elapsed_s": round(time.monotonic() - start, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="POST /v1/jobs load (a helper)")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--rate", type=float, default=0, help="jobs/s; 0 = closed loop")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (closed loop)")
    parser.add_argument("--body", default='{"role": "premium"}')
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args))), flush=True)


if __name__ == "__main__":
    main()
