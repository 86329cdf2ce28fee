"""The real `python -m service` process: served over TCP, durable across kill -9."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
from typing import Any

import aiohttp

from tests.conftest import ADMIN, ROOT


def durable_status(db: str, job_id: str) -> str | None:
    """The job's status as the SQLite file holds it."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        row = conn.execute("SELECT data FROM jobs WHERE id = ?", (job_id,)).fetchone()
    except sqlite3.OperationalError:  # not created yet
        return None
    finally:
        conn.close()
    return None if row is None else str(json.loads(row[0])["status"])


async def test_real_process_serves_and_survives_kill_9(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    server = server_process(translation_delay=30)
    async with session.post(
        server.url + "/v1/jobs", json={"role": "premium"}, headers={"X-User-Id": "k"}
    ) as resp:
        assert resp.status == 201
        job = await resp.json()
    async with session.post(
        server.url + "/v1/jobs", json={"scenario": {"duration_s": 0.05}}
    ) as resp:
        quick = await resp.json()
    async with session.get(server.url + f"/v1/jobs/{quick['id']}?wait=10") as resp:
        pass
    async with session.get(server.url + "/healthz") as resp:
        seq_before = (await resp.json())["seq"]
    async with asyncio.timeout(20):  # group-committed soon after: kill once it is on disk
        while durable_status(server.db, job["id"]) != "processing":
            await asyncio.sleep(0.05)
    server.kill(signal.SIGKILL)

    # restarted in manual mode, so the requeued job stays where the restart put it
    server.flags["auto_process"] = False
    server.start()
    async with session.get(server.url + f"/v1/jobs/{job['id']}") as resp:
        assert resp.status == 200
        again = await resp.json()
    assert again["id"] == job["id"] and again["user_id"] == "k"
    # it was processing when killed: requeued as pending, the interrupted attempt not counted
    assert (again["status"], again["attempt"], again["progress"]) == ("pending", 0, 0)
    async with session.get(server.url + "/v1/jobs", headers=ADMIN) as resp:
        ids = [j["id"] for j in (await resp.json())["jobs"]]
    assert sorted(ids) == sorted([job["id"], quick["id"]])  # nothing lost, nothing doubled
    async with session.get(server.url + "/healthz") as resp:
        assert (await resp.json())["seq"] > seq_before  # seq continues, never reused
    async with session.post(
        server.url + f"/v1/jobs/{job['id']}/cancel", json={"reason": "done"}, headers=ADMIN
    ) as resp:
        assert (await resp.json())["status"] == "cancelled"


async def test_sigterm_shuts_down_gracefully(
    server_process: Any, session: aiohttp.ClientSession
) -> None:
    server = server_process()
    async with session.ws_connect(server.url + "/v1/ws") as ws:
        await ws.send_json({"op": "ping"})
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "pong"
        assert server.proc is not None
        server.proc.send_signal(signal.SIGTERM)
        msg = await ws.receive(timeout=15)
        assert msg.type is aiohttp.WSMsgType.CLOSE and msg.data == 1001
    assert server.proc.wait(timeout=15) == 0


def test_generated_admin_token_is_printed_and_works() -> None:
    from tests.conftest import free_port

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "service", "--port", str(port), "--db", ":memory:"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "admin token" in first
        token = first.rsplit(" ", 1)[-1].strip()
        assert len(token) >= 24
        assert f"http://127.0.0.1:{port}" in proc.stdout.readline()
        import time
        import urllib.error
        import urllib.request

        deadline = time.monotonic() + 15
        while True:
            req = urllib.request.Request(
                f"http://127.0.0.1:{port}/v1/session", headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=2) as resp:
                    assert json.loads(resp.read())["admin"] is True
                    break
            except urllib.error.URLError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stdout:
            proc.stdout.close()
