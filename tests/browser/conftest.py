"""Browser-test fixtures: a real dubsim server process and Debian's Chromium via Playwright.

Each test gets its own server (fresh SQLite file, known admin token, short delays) so tests
never see each other's jobs or config, and its own browser, so one crash stays one failure.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import (
    Browser,
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    async_playwright,
    expect,
)

ROOT = Path(__file__).resolve().parents[2]
# the same lookup as `make system-deps` (DUBSIM_CHROMIUM overrides the Debian path)
CHROMIUM_LOOKUP = ROOT / "tools" / "chromium-path"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
ADMIN_TOKEN = "browser-test-admin-token"
STARTUP_TIMEOUT_S = 30.0
SHUTDOWN_TIMEOUT_S = 15.0
# Generous: a loaded CI box must not turn a slow page into a red test.
UI_TIMEOUT_MS = 20_000
expect.set_options(timeout=UI_TIMEOUT_MS)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Server:
    """`python -m service` as a subprocess; restartable on the same port and SQLite file."""

    def __init__(self, db: Path, log: Path, **flags: Any) -> None:
        self.db = db
        self.log = log
        self.port = _free_port()
        self.flags = {
            "admin-token": ADMIN_TOKEN,
            "translation-delay": 1,
            "error-rate": 0,
            "rate-limit": 1000,
            "premium-rate-limit": 1_000_000,  # the 5,000-job test submits premium jobs
            "max-in-flight": 1_000_000,
            "workers": 4,
            **flags,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = ADMIN_TOKEN

    def argv(self) -> list[str]:
        argv = [sys.executable, "-m", "service", "--host", "127.0.0.1", "--port", str(self.port)]
        argv += ["--db", str(self.db)]
        for name, value in self.flags.items():
            argv += [f"--{name}", str(value).lower() if isinstance(value, bool) else str(value)]
        return argv

    def spawn(self) -> subprocess.Popen[bytes]:
        assert self.proc is None, "already running"
        with self.log.open("ab") as out:
            return subprocess.Popen(self.argv(), cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)

    async def start(self) -> None:
        """Start the process and wait until /healthz answers (never a fixed sleep)."""
        self.proc = self.spawn()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        async with aiohttp.ClientSession() as http:
            while True:
                if self.proc.poll() is not None:
                    code = self.proc.returncode
                    self.proc = None
                    raise RuntimeError(f"server exited with {code} at startup:\n{self.tail()}")
                try:
                    async with http.get(self.url + "/healthz") as resp:
                        if resp.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"server not healthy after {STARTUP_TIMEOUT_S}s:\n{self.tail()}"
                    )
                await asyncio.sleep(0.05)

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, SHUTDOWN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            raise RuntimeError(f"server ignored SIGTERM:\n{self.tail()}") from None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        admin: bool = True,
        user: str | None = None,
        expect: int | None = None,
    ) -> Any:
        """One REST call as the test's own client (not through the page)."""
        headers = {}
        if admin:
            headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        if user:
            headers["X-User-Id"] = user
        async with (
            aiohttp.ClientSession() as http,
            http.request(method, self.url + path, json=json, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None) if resp.content_length != 0 else None
            if expect is not None:
                assert resp.status == expect, (resp.status, body)
            return body

    async def submit(self, user: str = "rest-user", role: str = "free", **scenario: Any) -> Any:
        body: dict[str, Any] = {"role": role}
        if scenario:
            body["scenario"] = scenario
        return await self.call("POST", "/v1/jobs", json=body, admin=False, user=user, expect=201)

    async def bulk_submit(self, count: int) -> None:
        """Submit `count` jobs quickly (many users, both plans), as a load generator would."""
        connector = aiohttp.TCPConnector(limit=32)
        async with aiohttp.ClientSession(connector=connector) as http:

            async def one(i: int) -> None:
                body = {"role": "premium" if i % 3 == 0 else "free"}
                headers = {"X-User-Id": f"user{i % 40:02d}"}
                async with http.post(self.url + "/v1/jobs", json=body, headers=headers) as resp:
                    assert resp.status == 201, await resp.text()

            await asyncio.gather(*(one(i) for i in range(count)))

    async def wait_status(self, job_id: str, *statuses: str) -> Any:
        """Long-poll the job until it reaches one of `statuses` (within 30 s)."""
        async with asyncio.timeout(30):
            while True:
                job = await self.call("GET", f"/v1/jobs/{job_id}?wait=5", expect=200)
                if job["status"] in statuses:
                    return job


@dataclass
class Dash:
    """A page on the dashboard plus everything the browser said while we used it."""

    page: Page
    context: BrowserContext
    server: Server
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    async def open(self) -> None:
        await self.page.goto(self.server.url + "/")
        await self.page.locator("#conn[data-state='live']").wait_for(timeout=UI_TIMEOUT_MS)

    async def login(self, token: str = ADMIN_TOKEN) -> None:
        """Log in through the page's form and wait until the "all" stream is live."""
        await self.page.get_by_label("Admin token").fill(token)
        await self.page.get_by_role("button", name="Log in").click()
        await self.page.locator("#admin-badge").wait_for(state="visible", timeout=UI_TIMEOUT_MS)
        await self.page.locator("#conn[data-state='live']").wait_for(timeout=UI_TIMEOUT_MS)

    def row(self, job_id: str) -> Locator:
        return self.page.locator(f"#jobs-body tr[data-id='{job_id}']")

    async def wait_row_status(self, job_id: str, status: str) -> None:
        await self.page.locator(
            f"#jobs-body tr[data-id='{job_id}'][data-status='{status}']"
        ).wait_for(timeout=UI_TIMEOUT_MS)

    def unexpected_console_errors(self, *allowed: str) -> list[str]:
        return [e for e in self.console_errors if not any(a in e for a in allowed)]


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def chromium_path() -> str:
    """Chromium's path; without it the browser tests fail in CI and skip elsewhere."""
    found = subprocess.run([CHROMIUM_LOOKUP], capture_output=True, text=True, check=False)
    path = found.stdout.strip()
    if found.returncode != 0:
        message = f"Chromium not found at {path} (run `make system-deps`)"
        if in_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    srv = Server(tmp_path / "dubsim.db", tmp_path / "server.log")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.stop()


@pytest.fixture
async def browser(chromium_path: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _new_dash(browser: Browser, server: Server, **context_args: Any) -> Dash:
    context_args.setdefault("viewport", {"width": 1440, "height": 900})
    context = await browser.new_context(**context_args)
    context.set_default_timeout(UI_TIMEOUT_MS)
    page = await context.new_page()
    dash = Dash(page=page, context=context, server=server)

    def on_console(msg: ConsoleMessage) -> None:
        if msg.type == "error":
            dash.console_errors.append(msg.text)

    page.on("console", on_console)
    page.on("pageerror", lambda exc: dash.page_errors.append(str(exc)))
    return dash


@pytest.fixture
async def make_dash(
    browser: Browser, server: Server
) -> AsyncIterator[Callable[..., Awaitable[Dash]]]:
    """A factory for dashboard pages (with context options such as `viewport`)."""
    made: list[Dash] = []

    async def make(**context_args: Any) -> Dash:
        made.append(await _new_dash(browser, server, **context_args))
        return made[-1]

    yield make
    for d in made:
        await d.context.close()
    # An uncaught exception in the page is a bug whatever the test was about.
    for d in made:
        assert d.page_errors == [], d.page_errors


@pytest.fixture
async def dash(make_dash: Callable[..., Awaitable[Dash]]) -> Dash:
    return await make_dash()
