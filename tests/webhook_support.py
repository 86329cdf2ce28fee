"""Test helpers for webhooks: a real aiohttp receiver on loopback, an independent signature
verifier written from the Standard Webhooks spec, and a fake clock to drive retry schedules."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """True if any `v1,` signature in the header is the HMAC-SHA256 the spec defines:
    base64(hmac_sha256(base64decode(secret without "whsec_"), f"{id}.{timestamp}.{body}"))."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    for part in headers["webhook-signature"].split(" "):
        version, _, signature = part.partition(",")
        if version == "v1" and hmac.compare_digest(signature, expected):
            return True
    return False


class Got:
    def __init__(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.path = path
        self.headers = headers
        self.body = body

    @property
    def id(self) -> str:
        return self.headers["webhook-id"]

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)  # type: ignore[no-any-return]


class Receiver:
    """Records every POST; answers from `plan` (status, headers) in order, then 200."""

    def __init__(self) -> None:
        self.got: list[Got] = []
        self.plan: deque[tuple[int, dict[str, str]]] = deque()
        self.hold: asyncio.Event | None = None  # set: requests wait for it before answering
        self.arrived = asyncio.Condition()
        self.server: TestServer | None = None

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        app.router.add_get("/{path:.*}", self._handle)
        self.server = TestServer(app, host="127.0.0.1")
        await self.server.start_server()
        return self

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def _handle(self, request: web.Request) -> web.Response:
        got = Got(
            request.path, {k.lower(): v for k, v in request.headers.items()}, await request.read()
        )
        async with self.arrived:
            self.got.append(got)
            self.arrived.notify_all()
        if self.hold is not None:
            await self.hold.wait()
        status, headers = self.plan.popleft() if self.plan else (200, {})
        return web.Response(status=status, headers=headers)

    async def wait_for(
        self, count: int, timeout: float = 20.0, path: str | None = None
    ) -> list[Got]:
        async with asyncio.timeout(timeout):
            async with self.arrived:
                await self.arrived.wait_for(lambda: len(self.of(path)) >= count)
        return self.of(path)

    def of(self, path: str | None) -> list[Got]:
        return [g for g in self.got if path is None or g.path == path]

    async def close(self) -> None:
        if self.server is not None:
            await self.server.close()


class FakeClock:
    """Time that moves only on advance(); sleeps wake when their deadline is passed."""

    def __init__(self, start: float | None = None) -> None:
        self.t = time.time() if start is None else start
        self.sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (self.t + seconds, future)
        self.sleepers.append(entry)
        try:
            await future
        finally:
            self.sleepers.remove(entry)

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for deadline, future in list(self.sleepers):
            if deadline <= self.t + 1e-9 and not future.done():
                future.set_result(None)

    async def next_wait(self, timeout: float = 20.0, longer_than: float = 0.0) -> float:
        """Wait until someone sleeps longer than `longer_than`; how long that sleep is."""
        async with asyncio.timeout(timeout):
            while True:
                waits = [d - self.t for d, f in self.sleepers if not f.done()]
                waits = [w for w in waits if w > longer_than]
                if waits:
                    return min(waits)
                await asyncio.sleep(0.01)
