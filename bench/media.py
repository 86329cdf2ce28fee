"""Media jobs: throughput on a 10 s 720p clip, and what they cost everyone else.

A 10 s 1280x720 30 fps H.264 + AAC clip is made with ffmpeg lavfi, uploaded once, and `--jobs`
media jobs on it are submitted at once, with MEDIA_WORKERS 1 and then 2 (WORKERS 16, so the
media cap is what limits). Meanwhile plain jobs (0.2 s scenario) are submitted at
`--plain-rate` per second, as they are for `--baseline-s` before the media jobs (the baseline).

- throughput: media jobs per minute (first submit to last completion) and the real-time
  factor, media seconds processed per wall second (and per job: processing time / 10 s);
- event loop: the server's own loop, probed every 5 ms (bench/_loop_probe.py): p99 scheduling
  delay while the media jobs run, against the baseline (target <= 5 ms);
- push lag of plain jobs: receipt of `job.completed` on an admin SSE stream minus the event's
  `at`, during the media load against the baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import PYTHON, TOKEN, Proc, free_port, pct, summary_ms, write_result

NAME = "media"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CLIP_S = 10.0


def make_clip(path: Path) -> None:
    subprocess.run(
        [
            *("ffmpeg", "-v", "error", "-y"),
            *("-f", "lavfi", "-i", f"testsrc2=s=1280x720:r=30:d={CLIP_S:g}"),
            *("-f", "lavfi", "-i", f"sine=f=300:sample_rate=48000:d={CLIP_S:g}"),
            *("-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p"),
            *("-c:a", "aac", str(path)),
        ],
        check=True,
        timeout=300,
    )


def _at(text: str) -> float:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Watch:
    """One admin SSE stream: push lag of plain completions, media jobs' outcomes."""

    def __init__(self) -> None:
        self.plain_lag: list[tuple[float, float]] = []  # (received, lag s)
        self.media_done: dict[str, dict[str, Any]] = {}

    async def run(self, http: aiohttp.ClientSession, url: str) -> None:
        async with http.get(f"{url}/v1/events?all=1", headers=ADMIN) as resp:
            async for raw in resp.content:
                line = raw.decode().strip()
                if not line.startswith("data:"):
                    continue
                now = time.time()
                data = json.loads(line[5:])
                job = data.get("job")
                if not job or data.get("type") != "job.completed":
                    continue
                if job.get("video"):
                    self.media_done[job["id"]] = job
                else:
                    self.plain_lag.append((now, now - _at(data["at"])))


async def plain_feed(
    http: aiohttp.ClientSession, url: str, rate: float, stop: asyncio.Event
) -> int:
    sent = 0
    body = {"role": "premium", "scenario": {"duration_s": 0.2}}
    while not stop.is_set():
        async with http.post(f"{url}/v1/jobs", json=body, headers={"X-User-Id": "plain"}) as r:
            r.raise_for_status()
        sent += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1 / rate)
    return sent


async def run_one(workers: int, data: bytes, tmp: Path, args: argparse.Namespace) -> dict[str, Any]:
    port = free_port()
    probe_out = tmp / f"loop-{workers}.json"
    os.environ["LOOP_PROBE_OUT"] = str(probe_out)
    flags: dict[str, Any] = {
        "db": ":memory:",
        "admin_token": TOKEN,
        "heartbeat_s": 600,
        "premium_rate_limit": 1_000_000,
        "max_in_flight": 10_000_000,
        "media_dir": str(tmp / f"media-{workers}"),
        "media_workers": workers,
        "workers": 16,
        "error_rate": 0,
        "seed": 1,
    }
    argv = [PYTHON, "-m", "bench._loop_probe", "--port", str(port)]
    for name, value in flags.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    proc = Proc(argv, port, "/healthz")
    url = proc.url
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as http:
            async with http.post(
                f"{url}/v1/assets", data=data, headers={"X-User-Id": "media"}
            ) as resp:
                asset = await resp.json()
            watch = Watch()
            watcher = asyncio.create_task(watch.run(http, url))
            await asyncio.sleep(0.2)
            stop = asyncio.Event()
            base_start = time.time()
            feed = asyncio.create_task(plain_feed(http, url, args.plain_rate, stop))
            await asyncio.sleep(args.baseline_s)
            base_end = load_start = time.time()
            body = {"role": "premium", "video": {"type": "asset_id", "asset_id": asset["id"]}}
            ids = []
            for _ in range(args.jobs):
                async with http.post(
                    f"{url}/v1/jobs", json=body, headers={"X-User-Id": "media"}
                ) as resp:
                    ids.append((await resp.json())["id"])
            async with asyncio.timeout(args.jobs * 120):
                while len(watch.media_done) < len(ids):
                    await asyncio.sleep(0.05)
            load_end = time.time()
            stop.set()
            plain_sent = await feed
            await asyncio.sleep(0.5)  # the last plain completions
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiohttp.ClientError):
                await watcher
    finally:
        proc.stop()
    samples = json.loads(probe_out.read_text())
    wall = load_end - load_start
    per_job = [
        _at(job["finished_at"]) - _at(job["started_at"]) for job in watch.media_done.values()
    ]

    def loop_p99(start: float, end: float) -> float | None:
        lags = [lag for t, lag in samples if start <= t <= end]
        value = pct(lags, 99)
        return None if value is None else round(value * 1000, 3)

    def lag(start: float, end: float) -> dict[str, float | None]:
        return summary_ms([x for t, x in watch.plain_lag if start <= t <= end])

    return {
        "media_workers": workers,
        "jobs": args.jobs,
        "wall_s": round(wall, 3),
        "jobs_per_min": round(args.jobs / wall * 60, 2),
        "realtime_factor": round(args.jobs * CLIP_S / wall, 2),
        "per_job_s": summary_ms(per_job),
        "per_job_rtf_mean": round(sum(per_job) / len(per_job) / CLIP_S, 3),
        "loop_p99_ms": {
            "baseline": loop_p99(base_start, base_end),
            "media": loop_p99(load_start, load_end),
        },
        "loop_max_ms": round(
            max(lag for t, lag in samples if load_start <= t <= load_end) * 1000, 3
        ),
        "plain_push_lag": {
            "baseline": lag(base_start, base_end),
            "media": lag(load_start, load_end),
        },
        "plain_jobs_sent": plain_sent,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.media", description=__doc__)
    parser.add_argument("--jobs", type=int, default=6)
    parser.add_argument("--plain-rate", type=float, default=20.0)
    parser.add_argument("--baseline-s", type=float, default=3.0)
    parser.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="dubsim-bench-media-") as name:
        tmp = Path(name)
        clip = tmp / "clip.mp4"
        make_clip(clip)
        runs = []
        for workers in args.workers:
            run = asyncio.run(run_one(workers, clip.read_bytes(), tmp, args))
            print(json.dumps(run, indent=2), flush=True)
            runs.append(run)
    figures = {
        "clip": {"duration_s": CLIP_S, "size": "1280x720", "fps": 30, "codec": "h264+aac"},
        "runs": runs,
        "loop_p99_target_ms": 5,
    }
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
