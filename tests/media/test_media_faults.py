"""Media jobs under faults: cancel mid-mix, scripted failures and hangs per stage, kill -9."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from aiohttp.test_utils import TestClient

from tests.conftest import ADMIN, ApiFactory, ServerProcess, wait_for_status
from tests.media.conftest import Inputs, ffprobe

ALICE = {"X-User-Id": "alice"}


def tools_under(path: Path) -> list[psutil.Process]:
    """Live processes (ffmpeg, espeak-ng) working on files under `path`."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if any(str(path) in arg for arg in proc.info["cmdline"] or []):
                found.append(proc)
        except psutil.Error:
            continue
    return found


async def until(
    client: TestClient[Any, Any] | aiohttp.ClientSession,
    base: str,
    job_id: str,
    check: Callable[[dict[str, Any]], bool],
) -> dict[str, Any]:
    async with asyncio.timeout(60):
        while True:
            job: dict[str, Any] = await (await client.get(f"{base}/v1/jobs/{job_id}")).json()
            if check(job):
                return job
            await asyncio.sleep(0.02)


def read(path: Path) -> bytes:
    return path.read_bytes()


def mixing(job: dict[str, Any]) -> bool:
    return job.get("stage") == "mix" and job.get("stage_progress", 0) > 0


async def media_job(
    client: TestClient[Any, Any], inputs: Inputs, video: Path | None = None, **extra: Any
) -> dict[str, Any]:
    resp = await client.post("/v1/assets", data=read(video or inputs.ok), headers=ALICE)
    asset = await resp.json()
    body = {"video": {"type": "asset_id", "asset_id": asset["id"]}, **extra}
    resp = await client.post("/v1/jobs", json=body, headers=ALICE)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def test_cancel_mid_mix_kills_ffmpeg_and_leaves_no_partial_file(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path), media_realtime=True)
    # a 60 s input mixed in real time: only a kill ends that ffmpeg within the waits below
    job = await media_job(client, inputs, inputs.long)
    await until(client, "", job["id"], mixing)
    job_dir = tmp_path / "jobs" / job["id"]
    assert tools_under(job_dir), "ffmpeg should be mixing now"
    resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200
    async with asyncio.timeout(10):
        while list(job_dir.glob("work-*")):
            await asyncio.sleep(0.02)
    assert tools_under(job_dir) == []
    assert list(job_dir.iterdir()) == []  # no result.mp4, no captions, no work files
    resp = await client.get(f"/v1/jobs/{job['id']}/result", headers=ALICE)
    assert resp.status == 409


async def test_a_scripted_failure_happens_at_the_chosen_stage(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    job = await media_job(client, inputs, scenario={"fail_attempts": 1, "fail_stage": "synthesize"})
    assert job["scenario"]["fail_stage"] == "synthesize"
    url = f"/v1/events?job={job['id']}&until=terminal&last_event_id=0"
    body = await asyncio.wait_for((await client.get(url, headers=ALICE)).text(), 60)
    import json

    events = [json.loads(x[5:]) for x in body.splitlines() if x.startswith("data:")]
    types = [e["type"] for e in events]
    failed = types.index("job.failed")
    assert events[failed]["job"]["stage"] == "synthesize"
    first = [e["job"].get("stage") for e in events[:failed] if e["type"] == "job.progress"]
    assert "synthesize" in first and "mix" not in first and "write" not in first
    assert types[-1] == "job.completed" and events[-1]["job"]["attempt"] == 2
    second = [e["job"]["stage"] for e in events[failed:] if e["type"] == "job.progress"]
    assert second[0] == "probe"  # the retry starts over
    resp = await client.get(f"/v1/jobs/{job['id']}/result", headers=ALICE)
    assert resp.status == 200


async def test_a_stuck_stage_hangs_without_holding_a_worker(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path), workers=1)
    job = await media_job(client, inputs, scenario={"outcome": "stuck", "fail_stage": "mix"})
    await until(client, "", job["id"], lambda j: j.get("stage") == "mix")
    plain = await (await client.post("/v1/jobs", json={}, headers=ALICE)).json()
    await wait_for_status(client, plain["id"], {"completed"})
    assert (await client.get(f"/v1/jobs/{job['id']}")).status == 200
    resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
    assert (await resp.json())["status"] == "cancelled"
    job_dir = tmp_path / "jobs" / job["id"]
    async with asyncio.timeout(10):
        while list(job_dir.glob("work-*")):
            await asyncio.sleep(0.02)
    assert tools_under(tmp_path) == []


async def test_kill_9_mid_mix_restarts_the_attempt_after_restart(
    tmp_path: Path, inputs: Inputs, server_process: Callable[..., ServerProcess]
) -> None:
    media_dir = tmp_path / "media"
    server = server_process(media_dir=str(media_dir), media_realtime="true")
    async with aiohttp.ClientSession() as http:
        # 60 s mixed in real time: its ffmpeg can only be gone soon after the kill if the
        # kill ended it (it dies writing progress to the dead server's pipe)
        resp = await http.post(server.url + "/v1/assets", data=read(inputs.long), headers=ALICE)
        asset = await resp.json()
        body = {"video": {"type": "asset_id", "asset_id": asset["id"]}}
        resp = await http.post(server.url + "/v1/jobs", json=body, headers=ALICE)
        job = await resp.json()
        await until(http, server.url, job["id"], mixing)
        server.kill(signal.SIGKILL)
        job_dir = media_dir / "jobs" / job["id"]
        async with asyncio.timeout(20):
            while tools_under(job_dir):
                await asyncio.sleep(0.05)
        assert not (job_dir / "result.mp4").exists()
        server.flags["media_realtime"] = "false"  # the retry runs at full speed
        await asyncio.to_thread(server.start)
        done = await until(http, server.url, job["id"], lambda j: j["status"] == "completed")
        assert done["attempt"] == 1  # the interrupted attempt didn't count
        resp = await http.get(f"{server.url}/v1/jobs/{job['id']}/result", headers=ALICE)
        out = tmp_path / "out.mp4"
        out.write_bytes(await resp.read())
    assert len(ffprobe(out)["streams"]) == 2
    assert [p.name for p in job_dir.iterdir() if p.name.startswith("work-")] == []
