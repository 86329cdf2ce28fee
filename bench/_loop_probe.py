"""`python -m bench._loop_probe <dubsim flags>`: dubsim with an event-loop lag probe.

The probe sleeps 5 ms at a time on the server's own loop and records how late each wake-up
is (wall time, lag in s); the samples go to `$LOOP_PROBE_OUT` (JSON) when the server stops.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator

from aiohttp import web

import service.__main__ as server
from service.app import create_app
from service.settings import Settings

TICK_S = 0.005


def create_probed_app(settings: Settings) -> web.Application:
    app = create_app(settings)
    app.cleanup_ctx.append(_probe)
    return app


async def _probe(app: web.Application) -> AsyncIterator[None]:
    samples: list[tuple[float, float]] = []

    async def run() -> None:
        while True:
            start = time.perf_counter()
            await asyncio.sleep(TICK_S)
            samples.append((time.time(), time.perf_counter() - start - TICK_S))

    task = asyncio.create_task(run())
    yield
    task.cancel()
    _write(os.environ["LOOP_PROBE_OUT"], samples)


def _write(path: str, samples: list[tuple[float, float]]) -> None:
    with open(path, "w") as out:
        json.dump(samples, out)


if __name__ == "__main__":
    server.create_app = create_probed_app  # type: ignore[assignment]
    server.main(sys.argv[1:])
