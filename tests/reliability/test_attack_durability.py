"""Outside attack on the durability promises (ack after durable, publish after durable, loud
failure, one writer per SQLite file, resume across restarts, Redis: many processes one service).

Written against the documented contract only (README, docs/*.md); a failing test here is a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import resource
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import pytest

from deploy.cluster import Cluster
from tests.conftest import ADMIN, ADMIN_TOKEN, ROOT, ServerProcess
from tests.reliability.conftest import all_jobs

TERMINAL = {"completed", "permanently_failed", "cancelled"}
LONG = 60.0  # generous waits: never a timing claim


# ---------------------------------------------------------------- helpers


class Watcher:
    """An admin WebSocket subscribed to everything, recording every message in a task."""

    def __init__(self, session: aiohttp.ClientSession, base: str, since: int | None = None):
        self.session, self.base, self.since = session, base, since
        self.messages: list[dict[str, Any]] = []
        self.task: asyncio.Task[None] | None = None
        self.subscribed = asyncio.Event()

    async def _run(self) -> None:
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with self.session.ws_connect(f"{self.base}/v1/ws", headers=ADMIN) as ws:
                sub: dict[str, Any] = {"op": "subscribe", "all": True}
                if self.since is not None:
                    sub["since"] = self.since
                await ws.send_json(sub)
                async for msg in ws:
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    data = json.loads(msg.data)
                    self.messages.append(data)
                    if data.get("type") == "subscribed":
                        self.subscribed.set()

    async def start(self) -> Watcher:
        self.task = asyncio.create_task(self._run())
        async with asyncio.timeout(LONG):
            await self.subscribed.wait()
        return self

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    @property
    def events(self) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == "event"]


async def state(session: aiohttp.ClientSession, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Every job (id -> (status, attempt, cancel_reason)) and the config."""
    jobs = await all_jobs(session, base, ADMIN)
    async with session.get(f"{base}/v1/config") as resp:
        config = await resp.json()
    return {j["id"]: (j["status"], j["attempt"], j["cancel_reason"]) for j in jobs}, config


async def submit(
    session: aiohttp.ClientSession, base: str, headers: dict[str, str] | None = None, **body: Any
) -> dict[str, Any]:
    async with session.post(f"{base}/v1/jobs", json=body, headers=headers or {}) as resp:
        assert resp.status in (200, 201), await resp.text()
        job: dict[str, Any] = await resp.json()
        return job


async def wait_terminal(session: aiohttp.ClientSession, base: str, job_id: str) -> dict[str, Any]:
    async with asyncio.timeout(LONG):
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/v1/jobs/{job_id}?wait=10&until=terminal") as r:
                    if r.status == 200:
                        job: dict[str, Any] = await r.json()
                        if job["status"] in TERMINAL:
                            return job
            await asyncio.sleep(0.1)


async def wait_healthy(session: aiohttp.ClientSession, base: str) -> None:
    async with asyncio.timeout(LONG):
        while True:
            with contextlib.suppress(aiohttp.ClientError, OSError):
                async with session.get(f"{base}/healthz") as resp:
                    if resp.status == 200:
                        return
            await asyncio.sleep(0.2)


def restart(server: ServerProcess) -> None:
    """kill -9, then start again on the same file and port."""
    server.kill(signal.SIGKILL)
    server.start()


async def replay_all(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """The whole durable event log, by resuming from seq 0 (buffer larger than the log)."""
    async with session.get(f"{base}/healthz") as resp:
        head = (await resp.json())["seq"]
    w = await Watcher(session, base, since=0).start()
    try:
        async with asyncio.timeout(LONG):
            while not w.events or w.events[-1]["seq"] < head:
                await asyncio.sleep(0.05)
    finally:
        await w.stop()
    assert not [m for m in w.messages if m.get("type") == "reset"], "since=0 gave a reset"
    return [e for e in w.events if e["seq"] <= head]


# ================================================================ 1. ack after durable (SQLite)

ROUTES_KILL = ["submit", "translate", "start", "cancel", "legacy-cancel", "retry", "process",
               "cleanup", "config"]  # fmt: skip


async def test_sqlite_each_acked_change_survives_kill_9(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    """Every mutating route: answer 2xx, kill -9 at once, restart: the change is there."""
    server = server_process(auto_process="false", rate_limit=1000, max_attempts=1)
    base = server.url
    stuck = [(await submit(session, base, scenario={"outcome": "stuck"}))["id"] for _ in range(3)]
    broken = await submit(
        session,
        base,
        role="premium",
        scenario={"outcome": "permanently_failed", "duration_s": 0.05},
    )
    async with session.post(f"{base}/v1/process", json={"count": 1}, headers=ADMIN) as resp:
        assert [j["id"] for j in (await resp.json())["started"]] == [broken["id"]]
    await wait_terminal(session, base, broken["id"])
    lost: list[str] = []
    for route in ROUTES_KILL:
        before, _ = await state(session, base)
        if route == "submit":
            resp = await session.post(f"{base}/v1/jobs", json={})
        elif route == "translate":
            resp = await session.post(f"{base}/translate", json={"role": "free"})
        elif route == "start":
            resp = await session.post(f"{base}/start")
        elif route == "cancel":
            resp = await session.post(
                f"{base}/v1/jobs/{stuck[0]}/cancel", json={"reason": "r"}, headers=ADMIN
            )
        elif route == "legacy-cancel":
            resp = await session.post(f"{base}/cancel/{stuck[1]}", json={}, headers=ADMIN)
        elif route == "retry":
            resp = await session.post(f"{base}/v1/jobs/{broken['id']}/retry", headers=ADMIN)
        elif route == "process":
            resp = await session.post(f"{base}/v1/process", json={"count": 1}, headers=ADMIN)
        elif route == "cleanup":
            resp = await session.post(f"{base}/v1/cleanup", json={}, headers=ADMIN)
        else:
            resp = await session.patch(
                f"{base}/v1/config", json={"error_rate": 0.42}, headers=ADMIN
            )
        assert resp.status in (200, 201), (route, resp.status, await resp.text())
        body = await resp.json()
        resp.release()
        after_ack, _ = await state(session, base)
        assert after_ack != before or route == "config", f"{route} changed nothing"
        await asyncio.to_thread(restart, server)
        after_restart, config_restart = await state(session, base)
        if route == "config":
            if config_restart["error_rate"] != 0.42:
                lost.append(f"config: {config_restart}")
        elif route == "process":
            # a started attempt dies with the process; documented: back to pending, not counted
            started = body["started"][0]["id"]
            if after_restart.get(started, ("gone",))[0] not in ("pending", "processing"):
                lost.append(f"process: {after_restart.get(started)}")
        elif after_restart != after_ack:
            lost.append(
                f"{route}: acked {body}, after restart differs: "
                f"{ {k: (after_ack.get(k), after_restart.get(k)) for k in set(after_ack) | set(after_restart) if after_ack.get(k) != after_restart.get(k)} }"
            )
    assert not lost, lost


async def test_sqlite_acks_under_load_survive_random_kill_9(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    """Cancels, submits (Idempotency-Key) and config patches run concurrently while the server is
    kill -9'd at a random moment, three rounds: every 2xx'd change is there after the restart."""
    rng = random.Random(10)
    server = server_process(rate_limit=100_000, workers=8, translation_delay=0.3)
    base = server.url
    acked_cancel: set[str] = set()
    acked_submit: dict[str, str] = {}
    acked_config: list[float] = []
    inflight_config: list[float] = []
    for rnd in range(3):
        jobs = [
            (await submit(session, base, role="premium" if i % 2 else "free",
                          scenario={"outcome": "stuck"} if i % 3 else {"duration_s": 0.5}))["id"]
            for i in range(30)
        ]  # fmt: skip

        async def canceller(ids: list[str]) -> None:
            for job_id in ids:
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.post(
                        f"{base}/v1/jobs/{job_id}/cancel", json={}, headers=ADMIN
                    ) as resp:
                        if resp.status == 200:
                            acked_cancel.add(job_id)
                await asyncio.sleep(0.01)

        async def submitter(r: int = rnd) -> None:
            for n in range(100):
                key = f"r{r}-{n}"
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.post(
                        f"{base}/v1/jobs", json={"scenario": {"duration_s": 0.2}},
                        headers={"Idempotency-Key": key},
                    ) as resp:  # fmt: skip
                        if resp.status in (200, 201):
                            acked_submit[key] = (await resp.json())["id"]
                await asyncio.sleep(0.01)

        async def configurer(rnd: int = rnd) -> None:
            for n in range(100):
                value = round(0.001 * (n + 1) + 0.1 * rnd, 3)
                inflight_config.append(value)
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.patch(
                        f"{base}/v1/config", json={"error_rate": value}, headers=ADMIN
                    ) as resp:
                        if resp.status == 200:
                            acked_config.append(value)
                await asyncio.sleep(0.02)

        tasks = [
            asyncio.create_task(canceller(jobs[0::2])),
            asyncio.create_task(canceller(jobs[1::2])),
            asyncio.create_task(submitter()),
            asyncio.create_task(configurer()),
        ]
        await asyncio.sleep(rng.uniform(0.2, 0.8))
        server.kill(signal.SIGKILL)
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(server.start)
        jobs_now, config = await state(session, base)
        not_cancelled = {
            j: jobs_now.get(j) for j in acked_cancel if jobs_now.get(j, ("?",))[0] != "cancelled"
        }
        assert not not_cancelled, f"round {rnd}: acked cancels lost: {not_cancelled}"
        missing = {k: v for k, v in acked_submit.items() if v not in jobs_now}
        assert not missing, f"round {rnd}: acked submissions lost: {missing}"
        if acked_config:
            last = acked_config[-1]
            allowed = inflight_config[inflight_config.index(last) :]
            assert config["error_rate"] in allowed, (rnd, last, config["error_rate"])
        # reset error_rate so jobs behave
        async with session.patch(f"{base}/v1/config", json={"error_rate": 0}, headers=ADMIN) as r:
            assert r.status == 200
        acked_config.clear()
        inflight_config.clear()


# ================================================================ 2. publish after durable


async def test_sqlite_seen_events_are_never_rolled_back_across_kill_9(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    """Events seen live before each of two kill -9s are all in the durable log afterwards,
    byte-for-byte the same, and a terminal state seen never changes."""
    rng = random.Random(2)
    server = server_process(rate_limit=100_000, workers=6, translation_delay=0.3, max_attempts=3)
    base = server.url
    seen: list[dict[str, Any]] = []
    scenarios = [
        {"duration_s": 0.2}, {"duration_s": 1.0}, {"duration_s": 0.3, "fail_attempts": 1},
        {"duration_s": 0.2, "outcome": "failed"}, {"duration_s": 0.3, "outcome": "permanently_failed"},
        {"outcome": "stuck"},
    ]  # fmt: skip
    ids: list[str] = []
    for _rnd in range(2):
        watcher = await Watcher(session, base).start()
        for i in range(40):
            job = await submit(session, base, role="premium" if i % 2 else "free",
                               scenario=scenarios[i % len(scenarios)])  # fmt: skip
            ids.append(job["id"])
            if i % 6 == 5:  # a stuck one: cancel it
                async with session.post(f"{base}/v1/jobs/{job['id']}/cancel", json={},
                                        headers=ADMIN) as resp:  # fmt: skip
                    assert resp.status == 200
        await asyncio.sleep(rng.uniform(0.3, 1.2))
        server.kill(signal.SIGKILL)
        await watcher.stop()
        seen += watcher.events
        await asyncio.to_thread(server.start)
    await asyncio.gather(*(wait_terminal(session, base, j) for j in ids))
    log = await replay_all(session, base)
    by_seq = {e["seq"]: e for e in log}
    rolled_back = [
        (e["seq"], e["event_type"]) for e in seen
        if by_seq.get(e["seq"], {}).get("job") != e["job"]
        or by_seq[e["seq"]]["event_type"] != e["event_type"]
    ]  # fmt: skip
    assert not rolled_back, (
        f"{len(rolled_back)} seen events not in the durable log: {rolled_back[:5]}"
    )
    final = {j["id"]: j for j in await all_jobs(session, base, ADMIN)}
    changed = []
    for e in seen:
        if e["job"]["status"] in TERMINAL:
            now = final[e["job"]["id"]]
            if (now["status"], now["attempt"], now["finished_at"]) != (
                e["job"]["status"],
                e["job"]["attempt"],
                e["job"]["finished_at"],
            ):
                changed.append((e["job"]["id"], e["job"]["status"], now["status"]))
    assert not changed, changed
    # the log is consistent with the read model: each job's last event is its current state
    last: dict[str, dict[str, Any]] = {}
    for e in log:
        last[e["job"]["id"]] = e
    assert all(last[j]["job"] == final[j] for j in final), "read model differs from the log"


# ================================================================ 3. failure is loud (SQLite)


LOCK_ROUTES = ["submit", "submit-idempotent", "cancel", "retry", "process", "cleanup", "config",
               "translate", "start", "legacy-cancel", "legacy-process"]  # fmt: skip


@pytest.mark.parametrize("route", LOCK_ROUTES)
async def test_sqlite_locked_db_answers_503_and_changes_nothing(
    route: str, server_process: Any, session: aiohttp.ClientSession
) -> None:
    """Another program holds BEGIN EXCLUSIVE for much longer than 2 s: the request gets
    503 + Retry-After + JSON, nothing changes (now or after the lock goes), /healthz is 503
    naming the cause, and the service recovers by itself."""
    server = server_process(auto_process="false", rate_limit=1000, max_attempts=1)
    base = server.url
    stuck = (await submit(session, base, scenario={"outcome": "stuck"}))["id"]
    broken = await submit(
        session,
        base,
        role="premium",
        scenario={"outcome": "permanently_failed", "duration_s": 0.05},
    )
    async with session.post(f"{base}/v1/process", json={"count": 1}, headers=ADMIN) as resp:
        assert resp.status == 200
    await wait_terminal(session, base, broken["id"])
    cancelled = (await submit(session, base, scenario={"outcome": "stuck"}))["id"]
    async with session.post(f"{base}/v1/jobs/{cancelled}/cancel", json={}, headers=ADMIN) as r:
        assert r.status == 200
    before = await state(session, base)

    calls: dict[str, tuple[str, str, dict[str, Any]]] = {
        "submit": ("POST", "/v1/jobs", {"json": {}}),
        "submit-idempotent": (
            "POST",
            "/v1/jobs",
            {"json": {}, "headers": {"Idempotency-Key": "k"}},
        ),
        "cancel": ("POST", f"/v1/jobs/{stuck}/cancel", {"json": {}, "headers": ADMIN}),
        "retry": ("POST", f"/v1/jobs/{broken['id']}/retry", {"headers": ADMIN}),
        "process": ("POST", "/v1/process", {"json": {"count": 1}, "headers": ADMIN}),
        "cleanup": ("POST", "/v1/cleanup", {"json": {}, "headers": ADMIN}),
        "config": ("PATCH", "/v1/config", {"json": {"error_rate": 0.5}, "headers": ADMIN}),
        "translate": ("POST", "/translate", {"json": {"role": "free"}}),
        "start": ("POST", "/start", {}),
        "legacy-cancel": ("POST", f"/cancel/{stuck}", {"json": {}, "headers": ADMIN}),
        "legacy-process": ("POST", "/process", {"headers": ADMIN}),
    }
    method, path, kwargs = calls[route]
    conn = sqlite3.connect(server.db, timeout=10, isolation_level=None)
    outcome: Any
    try:
        conn.execute("BEGIN EXCLUSIVE")
        try:
            async with asyncio.timeout(30):  # 15x the documented ~2 s
                async with session.request(method, base + path, **kwargs) as resp:
                    text = await resp.text()
                    outcome = (resp.status, resp.headers.get("Retry-After"),
                               resp.headers.get("Content-Type", ""), text)  # fmt: skip
        except TimeoutError:
            outcome = "no answer within 30 s while the DB was locked"
        during = await state(session, base)
        async with session.get(f"{base}/healthz") as resp:
            health = (resp.status, await resp.text())
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    await wait_healthy(session, base)
    await asyncio.sleep(1.0)  # anything queued behind the lock would have landed by now
    after = await state(session, base)

    assert outcome != "no answer within 30 s while the DB was locked", f"{route}: {outcome}"
    status, retry_after, ctype, text = outcome
    assert status == 503, (route, outcome)
    assert retry_after is not None and retry_after.isdigit(), outcome
    assert ctype.startswith("application/json") and json.loads(text), outcome
    assert during == before, f"{route}: memory ahead of the store while it refused"
    assert health[0] == 503 and "lock" in health[1], health
    assert after == before, f"{route}: a refused change was applied later"


async def test_sqlite_full_disk_answers_503_changes_nothing_and_recovers(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    """A 'full disk' (RLIMIT_FSIZE of the server set to 1 byte: every file write fails)."""
    server = server_process(auto_process="false", rate_limit=1000)
    base = server.url
    stuck = (await submit(session, base, scenario={"outcome": "stuck"}))["id"]
    before = await state(session, base)
    proc = psutil.Process(server.proc.pid)
    proc.rlimit(resource.RLIMIT_FSIZE, (1, resource.RLIM_INFINITY))
    try:
        answers = []
        for method, path, kw in [
            ("POST", "/v1/jobs", {"json": {}}),
            ("POST", f"/v1/jobs/{stuck}/cancel", {"json": {}, "headers": ADMIN}),
            ("PATCH", "/v1/config", {"json": {"error_rate": 0.5}, "headers": ADMIN}),
            ("POST", "/translate", {"json": {}}),
        ]:
            async with asyncio.timeout(30):
                async with session.request(method, base + path, **kw) as resp:
                    answers.append((path, resp.status, resp.headers.get("Retry-After")))
        during = await state(session, base)
        async with session.get(f"{base}/healthz") as resp:
            health = resp.status
    finally:
        proc.rlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    await wait_healthy(session, base)
    await asyncio.sleep(1.0)
    assert all(s == 503 and ra for _, s, ra in answers), answers
    assert during == before and health == 503
    assert await state(session, base) == before
    async with session.post(f"{base}/v1/jobs/{stuck}/cancel", json={}, headers=ADMIN) as resp:
        assert resp.status == 200  # recovered by itself


def run_to_exit(db: str, timeout: float = 30) -> tuple[int | None, str, str]:
    args = [sys.executable, "-m", "service", "--port", "0", "--db", db,
            "--admin-token", ADMIN_TOKEN]  # fmt: skip
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
        return proc.returncode, out.decode(), err.decode()
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        return None, out.decode(), err.decode()


@pytest.mark.parametrize("where", ["missing-dir", "parent-is-a-file"])
def test_unwritable_db_path_is_one_line_and_exit_2(tmp_path: Path, where: str) -> None:
    if where == "missing-dir":
        db = str(tmp_path / "no" / "such" / "dir" / "dubsim.db")
    else:
        (tmp_path / "plain-file").write_text("x")
        db = str(tmp_path / "plain-file" / "dubsim.db")
    code, _out, err = run_to_exit(db)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (code, err[-2000:])
    assert len(lines) == 1, err[-2000:]


# ================================================================ 4. one writer per SQLite file


@pytest.mark.parametrize("alias", ["same-path", "dot-path", "symlink", "hardlink"])
async def test_second_server_on_the_same_file_refuses_one_line_exit_2(
    alias: str, server_process: Any, tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    first = server_process(db=str(tmp_path / "dubsim.db"))
    if alias == "same-path":
        db = first.db
    elif alias == "dot-path":
        db = str(tmp_path / "." / "dubsim.db")
    elif alias == "symlink":
        os.symlink(first.db, tmp_path / "link.db")
        db = str(tmp_path / "link.db")
    else:
        os.link(first.db, tmp_path / "hard.db")
        db = str(tmp_path / "hard.db")
    code, _out, err = await asyncio.to_thread(run_to_exit, db, 15)
    lines = [line for line in err.splitlines() if line.strip()]
    await wait_healthy(session, first.url)
    assert code == 2, f"{alias}: exit {code} (None = still running after 15 s): {err[-1500:]}"
    assert len(lines) == 1, f"{alias}: {len(lines)} stderr lines: {err[-1500:]}"


# ================================================================ 5. resume survives restarts


async def test_resume_after_kill_9_gets_exactly_the_missed_events(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    """WS `since` and SSE `Last-Event-ID` after a kill -9 + restart mid-run: exactly the missed
    events (compared with the durable log), no reset."""
    server = server_process(rate_limit=100_000, workers=4, translation_delay=0.3)
    base = server.url
    watcher = await Watcher(session, base).start()
    ids = [(await submit(session, base, scenario={"duration_s": 0.4}))["id"] for _ in range(10)]
    async with asyncio.timeout(LONG):
        while len(watcher.events) < 15:
            await asyncio.sleep(0.05)
    await watcher.stop()
    last = watcher.events[-1]["seq"]
    ids += [(await submit(session, base, scenario={"duration_s": 1.5}))["id"] for _ in range(10)]
    await asyncio.sleep(0.7)  # some of them are processing
    await asyncio.to_thread(restart, server)
    await asyncio.gather(*(wait_terminal(session, base, j) for j in ids))
    log = await replay_all(session, base)
    missed = [e for e in log if e["seq"] > last]
    assert missed, "nothing was missed?"

    resumed = await Watcher(session, base, since=last).start()
    try:
        async with asyncio.timeout(LONG):
            while len(resumed.events) < len(missed):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await resumed.stop()
    assert not [m for m in resumed.messages if m["type"] in ("reset", "snapshot")]
    assert [(e["seq"], e["event_type"], e["job"]) for e in resumed.events] == [
        (e["seq"], e["event_type"], e["job"]) for e in missed
    ]

    got: list[dict[str, Any]] = []
    kinds: list[str] = []
    async with session.get(
        f"{base}/v1/events?all=1", headers={**ADMIN, "Last-Event-ID": str(last)}
    ) as resp:
        assert resp.status == 200
        async with asyncio.timeout(LONG):
            async for line in resp.content:
                if line.startswith(b"event: "):
                    kinds.append(line[7:].strip().decode())
                if line.startswith(b"data: "):
                    data = json.loads(line[6:])
                    if "job" in data and data.get("type") != "snapshot":
                        got.append(data)
                    if len(got) >= len(missed):
                        break
    assert "reset" not in kinds and "snapshot" not in kinds, kinds[:5]
    assert [(e["seq"], e["job"]) for e in got] == [(e["seq"], e["job"]) for e in missed]


# ================================================================ 6. Redis: many processes


def restart_redis(cluster: Cluster) -> None:
    assert cluster.redis is not None
    cluster.redis.send_signal(signal.SIGKILL)
    cluster.redis.wait(timeout=15)
    cluster.start_redis()


async def test_redis_refused_change_is_not_applied_later(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Redis stopped with SIGSTOP: writes get 503 + Retry-After; after SIGCONT none of the
    refused changes shows up (a 503 means nothing changed)."""
    a, b = redis_cluster.backend_url(0), redis_cluster.backend_url(1)
    stuck = (await submit(session, a, scenario={"outcome": "stuck"}))["id"]
    await asyncio.sleep(0.5)
    before = await state(session, b)
    assert redis_cluster.redis is not None
    redis_cluster.redis.send_signal(signal.SIGSTOP)
    try:

        async def call(base: str, method: str, path: str, **kw: Any) -> tuple[str, int, Any]:
            async with asyncio.timeout(LONG):
                async with session.request(method, base + path, **kw) as resp:
                    await resp.read()
                    return path, resp.status, resp.headers.get("Retry-After")

        answers = await asyncio.gather(
            call(a, "PATCH", "/v1/config", json={"error_rate": 0.3}, headers=ADMIN),
            call(b, "POST", "/v1/jobs", json={}, headers={"Idempotency-Key": "refused"}),
            call(a, "POST", f"/v1/jobs/{stuck}/cancel", json={"reason": "refused"}, headers=ADMIN),
        )
        async with session.get(f"{b}/healthz") as resp:
            health = resp.status, await resp.text()
    finally:
        redis_cluster.redis.send_signal(signal.SIGCONT)
    await wait_healthy(session, a)
    await wait_healthy(session, b)
    await asyncio.sleep(1.0)
    after_a, after_b = await state(session, a), await state(session, b)
    assert all(s == 503 and ra for _, s, ra in answers), answers
    assert health[0] == 503 and "redis" in health[1].lower(), health
    diff = {k: (before[0].get(k), after_a[0].get(k)) for k in set(before[0]) | set(after_a[0])
            if before[0].get(k) != after_a[0].get(k)}  # fmt: skip
    cfg_diff = {
        k: (before[1][k], after_a[1][k]) for k in before[1] if before[1][k] != after_a[1][k]
    }
    assert (cfg_diff, diff) == ({}, {}), f"refused changes applied: config {cfg_diff}, jobs {diff}"
    assert after_b == after_a


async def test_redis_killed_and_restarted_loses_no_ack(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Submits and cancels keep coming on both processes while Redis is kill -9'd and restarted
    (appendfsync always): every 2xx is there after, 503s while down, processes alive."""
    a, b = redis_cluster.backend_url(0), redis_cluster.backend_url(1)
    acked: dict[str, str] = {}
    cancelled: set[str] = set()
    statuses: Counter[int] = Counter()
    stop = asyncio.Event()

    async def load(base: str, tag: str) -> None:
        n = 0
        while not stop.is_set() and n < 200:
            n += 1
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with asyncio.timeout(30):
                    async with session.post(
                        f"{base}/v1/jobs", json={"scenario": {"outcome": "stuck"}},
                        headers={"Idempotency-Key": f"{tag}{n}"},
                    ) as resp:  # fmt: skip
                        statuses[resp.status] += 1
                        if resp.status in (200, 201):
                            job_id = (await resp.json())["id"]
                            acked[f"{tag}{n}"] = job_id
                    if n % 3 == 0 and acked:
                        victim = (
                            acked[f"{tag}{n}"]
                            if f"{tag}{n}" in acked
                            else next(iter(acked.values()))
                        )
                        async with session.post(f"{base}/v1/jobs/{victim}/cancel", json={},
                                                headers=ADMIN) as resp:  # fmt: skip
                            statuses[resp.status] += 1
                            if resp.status == 200:
                                cancelled.add(victim)
            await asyncio.sleep(0.02)

    tasks = [asyncio.create_task(load(a, "a")), asyncio.create_task(load(b, "b"))]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(restart_redis, redis_cluster)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.gather(*tasks)
    await wait_healthy(session, a)
    await wait_healthy(session, b)
    assert all(p is not None and p.poll() is None for p in redis_cluster.backends), "a process died"
    for base in (a, b):
        jobs, _ = await state(session, base)
        missing = {k: v for k, v in acked.items() if v not in jobs}
        assert not missing, f"{base}: acked submissions lost: {missing}"
        lost = {j: jobs[j] for j in cancelled if jobs[j][0] != "cancelled"}
        assert not lost, f"{base}: acked cancels lost: {lost}"
    assert set(statuses) <= {200, 201, 409, 503}, statuses


async def test_redis_racing_cancels_on_two_processes_move_each_job_once(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    a, b = redis_cluster.backend_url(0), redis_cluster.backend_url(1)
    watcher = await Watcher(session, b).start()
    ids = [(await submit(session, a if i % 2 else b, scenario={"outcome": "stuck"}))["id"]
           for i in range(40)]  # fmt: skip
    for job_id in ids:  # visible on the other process at once
        async with (
            session.get(f"{a}/v1/jobs/{job_id}") as r1,
            session.get(f"{b}/v1/jobs/{job_id}") as r2,
        ):
            assert (r1.status, r2.status) == (200, 200)
    await asyncio.sleep(0.5)

    async def cancel(base: str, job_id: str) -> int:
        async with session.post(f"{base}/v1/jobs/{job_id}/cancel", json={"reason": base},
                                headers=ADMIN) as resp:  # fmt: skip
            return resp.status

    results = await asyncio.gather(*(cancel(base, j) for j in ids for base in (a, b)))
    pairs = Counter(tuple(sorted(results[i : i + 2])) for i in range(0, len(results), 2))
    await asyncio.sleep(1.0)
    await watcher.stop()
    per_job = Counter(e["job"]["id"] for e in watcher.events if e["event_type"] == "job.cancelled")
    assert pairs == {(200, 409): len(ids)}, pairs
    assert all(per_job[j] == 1 for j in ids), Counter(per_job.values())


async def test_redis_kill_9_of_a_process_jobs_taken_over_no_duplicate_attempts(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Jobs (some failing attempts first) run on both processes; one is kill -9'd: every job
    finishes, no two job.started for the same attempt, attempt <= max_attempts."""
    a, b = redis_cluster.backend_url(0), redis_cluster.backend_url(1)
    watcher = await Watcher(session, b).start()
    expected = {}
    for i in range(24):
        scenario: dict[str, Any] = {"duration_s": 2.0}
        outcome = "completed"
        if i % 4 == 1:
            scenario["fail_attempts"] = 1
        elif i % 4 == 2:
            scenario["outcome"] = "failed"
            scenario["duration_s"] = 0.5
            outcome = "permanently_failed"
        job = await submit(session, a if i % 2 else b, role="premium", scenario=scenario)
        expected[job["id"]] = outcome
    await asyncio.sleep(1.0)
    redis_cluster.kill_backend(0)
    finals = await asyncio.gather(*(wait_terminal(session, b, j) for j in expected))
    await asyncio.sleep(0.5)
    await watcher.stop()
    assert {f["id"]: f["status"] for f in finals} == expected
    assert all(f["attempt"] <= f["max_attempts"] for f in finals), [
        (f["id"], f["attempt"]) for f in finals if f["attempt"] > f["max_attempts"]
    ]
    # an attempt interrupted by the kill is requeued (job.retrying, not counted) and started
    # again by the survivor; what must never happen is a start (or any move) of a job that
    # another process is running: each job.started follows a pending state, and progress or an
    # outcome only follows a start of that same attempt
    illegal = []
    for job_id in expected:
        chain = [e for e in watcher.events if e["job"]["id"] == job_id]
        for prev, cur in itertools.pairwise(chain):
            p, c = prev["job"], cur["job"]
            if cur["event_type"] == "job.started" and p["status"] != "pending":
                illegal.append((job_id, prev["seq"], prev["event_type"], cur["seq"], "started"))
            if cur["event_type"] in ("job.progress", "job.completed", "job.failed") and (
                p["status"] != "processing" or p["attempt"] != c["attempt"]
            ):
                illegal.append(
                    (job_id, prev["seq"], prev["event_type"], cur["seq"], cur["event_type"])
                )
    assert not illegal, f"a job moved by two runners: {illegal}"
    terminal_events = Counter(
        e["job"]["id"] for e in watcher.events if e["job"]["status"] in TERMINAL
    )
    assert all(v == 1 for v in terminal_events.values()), terminal_events


async def test_redis_resume_after_full_restart_gets_exactly_the_missed_events(
    redis_cluster: Cluster, session: aiohttp.ClientSession
) -> None:
    """Both processes and Redis restarted: resume with `since` gets the missed events, no reset."""
    a, b = redis_cluster.backend_url(0), redis_cluster.backend_url(1)
    watcher = await Watcher(session, a).start()
    ids = [(await submit(session, a, scenario={"duration_s": 0.3}))["id"] for _ in range(5)]
    await asyncio.gather(*(wait_terminal(session, a, j) for j in ids))
    await asyncio.sleep(0.3)
    await watcher.stop()
    last = watcher.events[-1]["seq"]
    ids += [(await submit(session, b, scenario={"duration_s": 1.5}))["id"] for _ in range(5)]
    await asyncio.sleep(0.5)
    redis_cluster.kill_backend(0)
    redis_cluster.kill_backend(1)
    await asyncio.to_thread(restart_redis, redis_cluster)
    await asyncio.to_thread(redis_cluster.start_backend, 0)
    await asyncio.to_thread(redis_cluster.start_backend, 1)
    await asyncio.gather(*(wait_terminal(session, a, j) for j in ids))
    log = await replay_all(session, b)
    missed = [e for e in log if e["seq"] > last]
    resumed = await Watcher(session, a, since=last).start()
    try:
        async with asyncio.timeout(LONG):
            while len(resumed.events) < len(missed):
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.3)
    finally:
        await resumed.stop()
    assert not [m for m in resumed.messages if m["type"] in ("reset", "snapshot")]
    assert [(e["seq"], e["job"]) for e in resumed.events] == [(e["seq"], e["job"]) for e in missed]


async def test_redis_process_while_redis_stopped_answers_503(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    """Manual mode, a pending job, Redis SIGSTOPped: POST /v1/process must answer 503 +
    Retry-After (like submit/cancel/config do), not hang."""
    env = {"LEASE_S": "2", "ERROR_RATE": "0", "AUTO_PROCESS": "false", "RATE_LIMIT": "100000"}
    cluster = Cluster(tmp_path, processes=1, admin_token=ADMIN_TOKEN, env=env, appendfsync="always")
    try:
        cluster.start_redis()
        cluster.start_backend(0)
        base = cluster.backend_url(0)
        job = await submit(session, base, scenario={"outcome": "stuck"})
        assert cluster.redis is not None
        cluster.redis.send_signal(signal.SIGSTOP)
        try:
            async with asyncio.timeout(30):  # the other writes answer 503 within ~5 s
                async with session.post(
                    f"{base}/v1/process", json={"count": 1}, headers=ADMIN
                ) as resp:
                    answer: Any = (resp.status, resp.headers.get("Retry-After"))
        except TimeoutError:
            answer = "no answer within 30 s while Redis was stopped"
        finally:
            cluster.redis.send_signal(signal.SIGCONT)
        await wait_healthy(session, base)
        await asyncio.sleep(1.0)
        async with session.get(f"{base}/v1/jobs/{job['id']}") as resp:
            after = (await resp.json())["status"]
        assert answer != "no answer within 30 s while Redis was stopped", answer
        assert answer[0] == 503 and answer[1], answer
        assert after == "pending", after
    finally:
        if cluster.redis is not None and cluster.redis.poll() is None:
            cluster.redis.send_signal(signal.SIGCONT)
        cluster.stop()
