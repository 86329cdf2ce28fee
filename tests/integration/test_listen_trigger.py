"""`dubsim listen` (a real subprocess) and `dubsim trigger` against a real server.

The receiver is a real aiohttp server that checks every signature with its own HMAC (the
Standard Webhooks rule, written out here: base64(hmac_sha256(base64decode(secret[6:]),
f"{id}.{ts}.{body}"))) and refuses a bad one with 401. `listen` must forward, signed, every
event that `trigger` makes, for every event type; resume after its socket is cut without a gap
or a duplicate; and end with exit code 0 on Ctrl-C.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import io
import json
import os
import signal
import sys
import threading
from typing import Any

import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestClient, TestServer

from client.__main__ import main
from service.api._gate import GATE
from service.appkeys import SOCKETS
from tests.conftest import ADMIN_TOKEN, ROOT, ApiFactory

SECRET = "whsec_" + base64.b64encode(b"a thirty-two byte test secret!!!").decode()
EVENT_TYPES = [
    "job.created",
    "job.started",
    "job.progress",
    "job.failed",
    "job.retrying",
    "job.completed",
    "job.permanently_failed",
    "job.cancelled",
    "job.deleted",
]


class Receiver:
    """Verifies each delivery independently; keeps the good ones."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.refused = 0
        self.changed = asyncio.Event()

    def valid(self, headers: Any, body: bytes) -> bool:
        msg_id, stamp = headers.get("webhook-id", ""), headers.get("webhook-timestamp", "")
        key = base64.b64decode(SECRET[6:])
        mac = hmac.new(key, f"{msg_id}.{stamp}.".encode() + body, hashlib.sha256).digest()
        expected = "v1," + base64.b64encode(mac).decode()
        offered = headers.get("webhook-signature", "").split()
        return any(hmac.compare_digest(expected, sig) for sig in offered)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        if not self.valid(request.headers, body):
            self.refused += 1
            return web.Response(status=401)
        self.events.append(json.loads(body))
        self.ids.append(request.headers["webhook-id"])
        self.changed.set()
        return web.Response(status=204)

    async def until(self, check: Any, timeout: float = 30) -> None:
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def seen(self, job_id: str, kind: str) -> bool:
        return any(e["type"] == kind and e["job"]["id"] == job_id for e in self.events)


@pytest.fixture
async def receiver() -> Any:
    recv = Receiver()
    app = web.Application()
    app.router.add_post("/hooks", recv.handle)
    server = TestServer(app)
    await server.start_server()
    yield recv, str(server.make_url("/hooks"))
    await server.close()


def env() -> dict[str, str]:
    return {**os.environ, "DUBSIM_TOKEN": ADMIN_TOKEN, "PYTHONUNBUFFERED": "1"}


_CLI = threading.Lock()  # redirect_stdout is process-wide: one in-process CLI run at a time


async def dubsim(url: str, *args: str) -> tuple[int, str, str]:
    """The CLI's own entry point, in a thread (a subprocess per call costs seconds on a loaded
    machine; `listen` below runs as a real subprocess)."""

    def run() -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        with _CLI, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(["--url", url, "--token", ADMIN_TOKEN, *args])
        return code, out.getvalue(), err.getvalue()

    return await asyncio.wait_for(asyncio.to_thread(run), 60)


async def start_listen(url: str, target: str, *extra: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", url, "listen", "--forward-to", target, *extra,
        cwd=ROOT, env=env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    first = await asyncio.wait_for(proc.stdout.readline(), 30)
    assert first.decode().strip() == f"secret: {SECRET}"
    await asyncio.wait_for(proc.stdout.readline(), 30)  # "forwarding ... to ..."
    return proc


async def stop(proc: asyncio.subprocess.Process) -> tuple[int, str]:
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out.decode()


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_trigger_makes_every_event_and_listen_forwards_it_signed(
    api: ApiFactory, receiver: Any
) -> None:
    client: TestClient[Any, Any] = await api()
    recv, target = receiver
    url = str(client.make_url("")).rstrip("/")
    # --since 0: everything from the start, so nothing depends on when the socket is up
    listen = await start_listen(url, target, "--secret", SECRET, "--since", "0")
    try:
        # all at once (nine CLI processes); each must make its own event happen
        results = await asyncio.gather(*(dubsim(url, "trigger", k, "--json") for k in EVENT_TYPES))
        for kind, (code, out, err) in zip(EVENT_TYPES, results, strict=True):
            assert code == 0, err
            assert json.loads(out)["event_type"] == kind
            job_id = json.loads(out)["id"]
            await recv.until(lambda job_id=job_id, kind=kind: recv.seen(job_id, kind))
    finally:
        code, out = await stop(listen)
    assert recv.refused == 0
    # the body a real webhook carries (the SSE `data:`), so one receiver serves both
    assert all(list(e) == ["seq", "type", "at", "job"] for e in recv.events)
    assert out.strip().endswith("stopped")
    # one line per delivery: event, seq, job, the receiver's status and the time it took
    lines = [line for line in out.splitlines() if " -> " in line]
    assert len(lines) == len(recv.events)
    assert all(line.split(" -> ")[1].startswith("204 (") for line in lines)
    seqs = [e["seq"] for e in recv.events]
    assert recv.ids == [f"evt_{s}" for s in seqs]
    assert seqs == sorted(set(seqs))  # in order, each once


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_listen_resumes_after_a_dropped_socket_without_a_gap(
    api: ApiFactory, receiver: Any
) -> None:
    client: TestClient[Any, Any] = await api()
    recv, target = receiver
    url = str(client.make_url("")).rstrip("/")
    listen = await start_listen(url, target, "--secret", SECRET, "--since", "0")
    try:
        first = await client.post("/v1/jobs", json={"scenario": {"duration_s": 0.1}})
        first_id = (await first.json())["id"]
        await recv.until(lambda: recv.seen(first_id, "job.completed"))
        sockets = [ws for ws in client.app[SOCKETS] if isinstance(ws, web.WebSocketResponse)]
        assert sockets
        gate = client.app[GATE]
        gate.closing = True  # no new socket for now: listen's reconnects get 503 ...
        for ws in sockets:  # ... the server cuts listen's socket ...
            await ws.close(code=WSCloseCode.SERVICE_RESTART)
        # ... and a whole job runs while it is away
        second = await client.post("/v1/jobs", json={"scenario": {"duration_s": 0.1}})
        second_id = (await second.json())["id"]
        async with asyncio.timeout(30):
            while (await (await client.get(f"/v1/jobs/{second_id}")).json())["status"] != (
                "completed"
            ):
                await asyncio.sleep(0.05)
        assert not recv.seen(second_id, "job.created")
        gate.closing = False  # back: it resumes after the last seq it saw
        await recv.until(lambda: recv.seen(second_id, "job.completed"))
    finally:
        await stop(listen)
    seqs = [e["seq"] for e in recv.events]
    # every job event, exactly once, in order: no gap across the drop (SQLite seqs are dense)
    assert seqs == list(range(seqs[0], seqs[-1] + 1))
    assert recv.refused == 0


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_listen_with_an_event_filter_and_a_wrong_receiver_secret(
    api: ApiFactory, receiver: Any
) -> None:
    client: TestClient[Any, Any] = await api()
    recv, target = receiver
    url = str(client.make_url("")).rstrip("/")
    listen = await start_listen(url, target, "--secret", SECRET, "--events", "job.completed")
    try:
        job = await client.post("/v1/jobs", json={"scenario": {"duration_s": 0.1}})
        job_id = (await job.json())["id"]
        await recv.until(lambda: recv.seen(job_id, "job.completed"))
    finally:
        await stop(listen)
    assert [e["type"] for e in recv.events] == ["job.completed"]

    # a listener that signs with another secret is refused by this receiver: the check is real
    other = "whsec_" + base64.b64encode(b"another thirty-two byte secret!!").decode()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "client", "--url", url, "listen", "--forward-to", target,
        "--secret", other, "--since", "0",
        cwd=ROOT, env=env(), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        async with asyncio.timeout(30):
            while recv.refused == 0:
                await asyncio.sleep(0.05)
    finally:
        await stop(proc)


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_bad_listen_arguments_exit_2(api: ApiFactory) -> None:
    client: TestClient[Any, Any] = await api()
    url = str(client.make_url("")).rstrip("/")
    bad = [
        ["--forward-to", "http://127.0.0.1:9/x", "--secret", "nope"],
        ["--forward-to", "http://127.0.0.1:9/x", "--events", "job.exploded"],
        ["--forward-to", "ftp://x"],
    ]
    for code, _, err in await asyncio.gather(*(dubsim(url, "listen", *args) for args in bad)):
        assert code == 2, err


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_clock_commands(api: ApiFactory) -> None:
    client: TestClient[Any, Any] = await api(
        clock="virtual", clock_start="2030-01-01T00:00:00+00:00"
    )
    url = str(client.make_url("")).rstrip("/")
    code, out, err = await dubsim(url, "clock", "advance", "3600")
    assert code == 0, err
    assert out.strip() == "2030-01-01T01:00:00.000Z, moved on 3600 s"
    shown, plain, refused = await asyncio.gather(
        dubsim(url, "clock", "--json"), dubsim(url, "clock"), dubsim(url, "clock", "advance", "-5")
    )
    assert shown[0] == 0, shown[2]
    assert json.loads(shown[1]) == {
        "now": "2030-01-01T01:00:00.000Z",
        "mode": "virtual",
        "advanced_s": None,
    }
    assert plain[1].strip() == "2030-01-01T01:00:00.000Z (virtual)"
    assert refused[0] == 2, refused[2]
    assert "seconds" in refused[2]
