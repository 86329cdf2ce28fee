"""Redis stalls: how long two dubsim processes take to recover after Redis is SIGSTOPped and
SIGCONTed.

    python -m bench.redis_stall [--stalls 1,3,5,7,10] [--rounds 1] [--busy 2] [--writers 6]

redis-server and two processes as `make cluster` runs them (deploy/cluster.py, on a temp
directory). For each stall length, twice: once idle (nothing but the processes' own lease and
webhook rounds), once under load (per process: `--writers` tasks submitting and cancelling,
long polls on half the jobs, an admin WebSocket on everything, list and config requests; plus
`--busy` processes spinning on the CPU for the whole step). Redis is stopped for the stall,
then continued, and the step records, from the SIGCONT:

  healthy_s   until each process answers /healthz 200 (null: not within 60 s)
  sees_s      until a job made on one process (retried until made) is found on the other
              (tried once both are healthy or given up on, so that its write heals nothing)
  during      what /healthz answered just before the SIGCONT

Stalls shorter than the socket timeout (5 s) may end before anything failed. Every loop is
bounded in count and time, traffic stays on 127.0.0.1, processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import TOKEN, write_result
from deploy.cluster import Cluster

NAME = "redis_stall"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"LEASE_S": "2", "ERROR_RATE": "0", "TRANSLATION_DELAY": "0.3", "RATE_LIMIT": "100000",
       "WORKERS": "4", "HEARTBEAT_S": "2", "RETRY_DELAY": "0.05"}  # fmt: skip
RECOVER_LIMIT_S = 60.0
REQUEST_S = 20.0


async def _writer(s: aiohttp.ClientSession, base: str, stop: asyncio.Event, tag: str) -> None:
    polls: set[asyncio.Task[None]] = set()
    for n in range(2000):
        if stop.is_set():
            break
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with (
                asyncio.timeout(REQUEST_S),
                s.post(
                    f"{base}/v1/jobs",
                    json={"scenario": {"duration_s": 0.5}},
                    headers={"Idempotency-Key": f"{tag}{n}"},
                ) as r,  # fmt: skip
            ):
                job_id = (await r.json())["id"] if r.status in (200, 201) else None
            if job_id and n % 2:
                async with s.post(f"{base}/v1/jobs/{job_id}/cancel", json={}, headers=ADMIN) as r:
                    await r.read()
            elif job_id:
                task = asyncio.create_task(_long_poll(s, base, job_id))
                polls.add(task)
                task.add_done_callback(polls.discard)
        await asyncio.sleep(0.01)
    await asyncio.gather(*polls)


async def _long_poll(s: aiohttp.ClientSession, base: str, job_id: str) -> None:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with (
            asyncio.timeout(REQUEST_S),
            s.get(f"{base}/v1/jobs/{job_id}?wait=5&until=terminal") as r,
        ):
            await r.read()


async def _reader(s: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> None:
    for _ in range(5000):
        if stop.is_set():
            break
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with asyncio.timeout(REQUEST_S):
                async with s.get(f"{base}/v1/jobs?limit=10", headers=ADMIN) as r:
                    await r.read()
                async with s.patch(f"{base}/v1/config", json={"error_rate": 0}, headers=ADMIN) as r:
                    await r.read()
        await asyncio.sleep(0.05)


async def _watcher(s: aiohttp.ClientSession, base: str, stop: asyncio.Event) -> None:
    with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
        async with s.ws_connect(f"{base}/v1/ws", headers=ADMIN) as ws:
            await ws.send_json({"op": "subscribe", "all": True})
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1):
                        if (await ws.receive()).type != aiohttp.WSMsgType.TEXT:
                            return


async def _health(s: aiohttp.ClientSession, base: str) -> tuple[int, str] | str:
    try:
        async with asyncio.timeout(5), s.get(f"{base}/healthz") as r:
            return r.status, (await r.text())[:160]
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return repr(exc)


async def _healthy_after(s: aiohttp.ClientSession, base: str, t0: float) -> float | None:
    while time.monotonic() - t0 < RECOVER_LIMIT_S:
        answer = await _health(s, base)
        if isinstance(answer, tuple) and answer[0] == 200:
            return round(time.monotonic() - t0, 3)
        await asyncio.sleep(0.05)
    return None


async def _sees_after(
    s: aiohttp.ClientSession, writer: str, reader: str, t0: float, key: str
) -> float | None:
    job_id, started = None, time.monotonic()  # counted from t0, given its own time limit
    while time.monotonic() - started < RECOVER_LIMIT_S:
        with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
            async with asyncio.timeout(5):
                if job_id is None:
                    async with s.post(f"{writer}/v1/jobs", json={"scenario": {"outcome": "stuck"}},
                                      headers={"Idempotency-Key": key}) as r:  # fmt: skip
                        if r.status in (200, 201):
                            job_id = (await r.json())["id"]
                if job_id is not None:
                    async with s.get(f"{reader}/v1/jobs/{job_id}", headers=ADMIN) as r:
                        if r.status == 200:
                            return round(time.monotonic() - t0, 3)
        await asyncio.sleep(0.05)
    return None


async def _step(
    cluster: Cluster, s: aiohttp.ClientSession, stall: float, loaded: bool, args: Any, tag: str
) -> dict[str, Any]:
    a, b = cluster.backend_url(0), cluster.backend_url(1)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    hogs: list[asyncio.subprocess.Process] = []
    if loaded:
        for base in (a, b):
            tasks += [asyncio.create_task(_writer(s, base, stop, f"{tag}-{base[-5:]}-{i}-"))
                      for i in range(args.writers)]  # fmt: skip
            tasks += [asyncio.create_task(_reader(s, base, stop))]
            tasks += [asyncio.create_task(_watcher(s, base, stop))]
        spin = f"import time\nt = time.time()\nwhile time.time() - t < {stall + 30}: pass"
        hogs = [await asyncio.create_subprocess_exec(sys.executable, "-c", spin)
                for _ in range(args.busy)]  # fmt: skip
    try:
        await asyncio.sleep(1.0)
        assert cluster.redis is not None
        cluster.redis.send_signal(signal.SIGSTOP)
        try:
            await asyncio.sleep(stall)
            during = await asyncio.gather(_health(s, a), _health(s, b))
        finally:
            cluster.redis.send_signal(signal.SIGCONT)
        t0 = time.monotonic()
        healthy = await asyncio.gather(_healthy_after(s, a, t0), _healthy_after(s, b, t0))
        sees = await asyncio.gather(
            _sees_after(s, a, b, t0, f"{tag}-ab"), _sees_after(s, b, a, t0, f"{tag}-ba")
        )
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for hog in hogs:
            hog.kill()
            await hog.wait()
    return {
        "stall_s": stall,
        "load": loaded,
        "healthy_s": healthy,
        "sees_s": sees,
        "during": [d[0] if isinstance(d, tuple) else d for d in during],
    }


async def run(args: Any) -> list[dict[str, Any]]:
    directory = Path(tempfile.mkdtemp(prefix="dubsim-redis-stall-"))
    cluster = Cluster(directory, processes=2, admin_token=TOKEN, env=ENV, appendfsync="always")
    steps: list[dict[str, Any]] = []
    try:
        cluster.start_redis()
        cluster.start_backend(0)
        cluster.start_backend(1)
        async with aiohttp.ClientSession() as s:
            for r in range(args.rounds):
                for stall in args.stalls:
                    for loaded in (False, True):
                        step = await _step(cluster, s, stall, loaded, args, f"{r}-{stall}-{loaded}")
                        print(step, flush=True)
                        steps.append(step)
    finally:
        if cluster.redis is not None and cluster.redis.poll() is None:
            cluster.redis.send_signal(signal.SIGCONT)
        cluster.stop()
        print(f"logs in {directory}")
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--stalls", default="1,3,5,7,10", help="stall lengths, s (comma-separated)")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--busy", type=int, default=2, help="CPU-spinning processes under load")
    parser.add_argument("--writers", type=int, default=6, help="writer tasks per process")
    args = parser.parse_args(argv)
    args.stalls = [float(x) for x in args.stalls.split(",")]
    steps = asyncio.run(run(args))
    times = [t for step in steps for t in step["healthy_s"] + step["sees_s"]]
    figures = {
        "steps": steps,
        "not_recovered": sum(t is None for t in times),
        "worst_s": max((t for t in times if t is not None), default=None),
    }
    write_result(NAME, figures, {k: v for k, v in vars(args).items()})


if __name__ == "__main__":
    main()
