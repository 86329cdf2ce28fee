"""Shared fixtures: an in-process app per test, and a real server process when needed."""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from deploy.redis_server import RedisServer
from service.app import create_app
from service.settings import Settings
from tests.schedule import arrange, xdist_workers

ADMIN_TOKEN = "test-admin-token"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
ROOT = Path(__file__).resolve().parents[1]

# Fast, deterministic defaults for tests; each test overrides what it cares about.
TEST_SETTINGS: dict[str, Any] = {
    "db": ":memory:",
    "admin_token": ADMIN_TOKEN,
    "translation_delay": 0.2,
    "retry_delay": 0.01,
    "error_rate": 0.0,
    "seed": 7,
    "heartbeat_s": 5.0,
    # quotas out of the way unless a test is about them (tests/integration/test_quotas.py)
    "premium_rate_limit": 1_000_000,
    "max_in_flight": 1_000_000,
    # uploads (fuzzers post to /v1/assets too) go to a temporary directory, never the clone
    "media_dir": tempfile.mkdtemp(prefix="dubsim-test-media-"),
}
# removed when the test process ends (each xdist worker has its own)
atexit.register(shutil.rmtree, TEST_SETTINGS["media_dir"], True)


HANG_REPORT_S = 60.0  # a teardown still running after this prints its loop's tasks


def _print_running_tasks() -> None:
    """From a timer thread: have every running event loop print what its tasks and suspended
    async generators (fixtures, cleanup contexts) wait on, down the chain of awaits
    (pytest-timeout shows only the threads, all of them in select)."""

    def chain(awaiting: Any) -> None:
        while awaiting is not None:
            frame = getattr(awaiting, "cr_frame", None) or getattr(awaiting, "ag_frame", None)
            if frame is not None:
                code = frame.f_code
                print(f"    {code.co_filename}:{frame.f_lineno} {code.co_name}", file=sys.stderr)
            awaiting = getattr(awaiting, "cr_await", None) or getattr(awaiting, "ag_await", None)

    def report(loop: asyncio.AbstractEventLoop) -> None:
        tasks = asyncio.all_tasks(loop)
        print(f"\n--- teardown still running: {len(tasks)} tasks ---", file=sys.stderr)
        for task in tasks:
            print(f"- task {task.get_name()}", file=sys.stderr)
            chain(task.get_coro())
        for obj in gc.get_objects():
            if isinstance(obj, types.AsyncGeneratorType) and obj.ag_await is not None:
                print(f"- async generator {obj.__qualname__}", file=sys.stderr)
                chain(obj)

    for obj in gc.get_objects():
        if isinstance(obj, asyncio.AbstractEventLoop) and obj.is_running():
            obj.call_soon_threadsafe(report, obj)


@pytest.hookimpl(trylast=True)  # after -k/-m deselect: slices are of what runs
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under xdist, the long tests first in each worker's slice (tests/schedule.py)."""
    if (workers := xdist_workers()) > 1:
        items[:] = arrange(items, workers)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item) -> Iterator[None]:
    timer = threading.Timer(HANG_REPORT_S, _print_running_tasks)
    timer.daemon = True
    timer.start()
    try:
        return (yield)
    finally:
        timer.cancel()


def make_settings(**overrides: Any) -> Settings:
    return Settings.from_flat({**TEST_SETTINGS, **overrides})


ApiFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the session; each test that uses it starts from FLUSHALL."""
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.flush()
    return redis_server.url


BACKENDS = ["sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> dict[str, Any]:
    """Settings that select a store: SQLite in memory, or a clean Redis."""
    if request.param == "redis":
        return {"redis_url": request.getfixturevalue("redis_url")}
    return {}


@pytest.fixture
def api(aiohttp_client: Any, backend: dict[str, Any]) -> ApiFactory:
    """`client = await api(error_rate=0.5)`: a fresh app with test settings, served in-process,
    once per store backend (the same contract holds on both)."""

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        settings = make_settings(**{**backend, **overrides})
        return await aiohttp_client(create_app(settings))  # type: ignore[no-any-return]

    return factory


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerProcess:
    """`python -m service` in a subprocess, on a free port, ready when /healthz answers."""

    def __init__(self, db: str, **flags: Any) -> None:
        self.db = db
        self.port = free_port()
        self.flags = {**TEST_SETTINGS, "db": db, **flags}
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        args = [sys.executable, "-m", "service", "--port", str(self.port)]
        for key, value in self.flags.items():
            args += ["--" + key.replace("_", "-"), str(value)]
        self.proc = subprocess.Popen(
            args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                out = self.proc.stdout.read().decode() if self.proc.stdout else ""
                raise RuntimeError(f"server exited with {self.proc.returncode}: {out}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                import urllib.request

                with urllib.request.urlopen(self.url + "/healthz", timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not become healthy in time")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        if self.proc is not None and self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory for real server processes; all are killed at the end of the test."""
    started: list[ServerProcess] = []

    def factory(db: str | None = None, **flags: Any) -> ServerProcess:
        server = ServerProcess(db or str(tmp_path / "dubsim.db"), **flags)
        server.start()
        started.append(server)
        return server

    yield factory
    for server in started:
        server.kill()


async def wait_for_status(
    client: TestClient[Any, Any] | aiohttp.ClientSession,
    job_id: str,
    statuses: set[str],
    timeout: float = 20.0,
) -> dict[str, Any]:
    """Poll until the job reaches one of `statuses` (tests' generous timeout, not a timing claim):
    a plain read, then long polls from the state last seen (If-None-Match), so a status already
    reached, or reached between two requests, ends the wait at once instead of after `wait`."""
    query, headers = "", dict[str, str]()
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get(f"/v1/jobs/{job_id}{query}", headers=headers)
            if resp.status == 304:  # nothing changed within the wait
                await resp.read()
                continue
            job: dict[str, Any] = await resp.json()
            if job["status"] in statuses:
                return job
            query, headers = "?wait=5", {"If-None-Match": resp.headers["ETag"]}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


os.environ.setdefault("PYTHONUNBUFFERED", "1")
