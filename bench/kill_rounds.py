"""kill -9 rounds: acknowledged changes, pushed terminal states and client waits survive.

SQLite: one process on a temp file, killed and restarted on the same file and port.
Redis: redis-server as shipped (`appendonly yes`, `appendfsync everysec`), two dubsim
processes and nginx in front (deploy/cluster.py); each round kills one process at random and
restarts it on its port. Everything is seeded (--seed), so a run repeats its choices.

Each round submits a batch of premium jobs (scenario: completed, permanently_failed, stuck; a
duration of 0.2-1.5 s), submits spaced over about a second, and for every acknowledged job
runs a client `wait()` (dubsim's AsyncClient, through nginx for Redis) and, for every stuck
job and some others, a cancel at a random moment (retried until it is answered 2xx or 409).
At a random moment in the first 2.5 s one process gets SIGKILL and is restarted at once.
An admin WebSocket observer on every process (`all`, resuming with `since` after a
disconnect) records every event with its receive time. When every wait has returned, each
job's final state is read, and the round counts:

  lost       acknowledged changes missing: a 201 submit whose job is gone, a 2xx cancel whose
             job is not `cancelled`
  changed    jobs whose terminal state, seen in an event before the kill, differs in any later
             event or in the final state
  wrong      waits whose outcome is not the job's final state (or a timeout/error), or a final
             state the scenario can't give (e.g. stuck but not cancelled)
  acks in 100 ms before kill   how many 2xx arrived just before the kill (the risky ones)
  takeover   kill to the last `job.retrying` of a job that was processing at the kill (the
             interrupted attempts put back: by lease expiry on Redis, at restart on SQLite)

Every loop is bounded in count and time, traffic stays on 127.0.0.1, processes are stopped by
PID. Unacknowledged submits (answer lost in the kill) may still have made a job: those are
cancelled at the end of the round so that stuck ones don't pile up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench._common import TOKEN, Proc, dubsim, free_port, pct, temp_db, write_result
from client import AsyncClient, Conflict, JobCancelled, JobFailed, JobNotFound
from deploy.cluster import Cluster

NAME = "kill_rounds"
TERMINAL = {"completed", "permanently_failed", "cancelled"}
OUTCOMES = ("completed", "completed", "permanently_failed", "stuck")
WAIT_TIMEOUT_S = 45.0
ROUND_MAX_S = 90.0


# ---- the servers -------------------------------------------------------------------


class SQLiteTarget:
    """One process on one file; a kill and restart keep the file and the port."""

    def __init__(self, db: str, lease_s: float) -> None:
        self.db = db
        self.port = free_port()
        self.proc: Proc | None = None
        self.url = f"http://127.0.0.1:{self.port}"
        self.observe = [self.url]

    def start(self) -> None:
        self.proc = dubsim(port=self.port, db=self.db, workers=50, error_rate=0)

    def kill(self, rng: random.Random) -> int:
        assert self.proc is not None
        self.proc.proc.kill()
        self.proc.proc.wait(30)
        self.proc.stop()  # closes its log
        return 0

    def restart(self, index: int) -> None:
        self.start()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop()


class RedisTarget:
    """deploy/cluster.py: redis-server (AOF, everysec), two processes, nginx in front."""

    def __init__(self, directory: Path, lease_s: float) -> None:
        env = {"WORKERS": "50", "ERROR_RATE": "0", "LEASE_S": str(lease_s)}
        self.cluster = Cluster(directory, processes=2, admin_token=TOKEN, env=env)
        self.url = self.cluster.url
        self.observe = [self.cluster.backend_url(i) for i in range(2)]

    def start(self) -> None:
        self.cluster.start()

    def kill(self, rng: random.Random) -> int:
        index = rng.randrange(2)
        self.cluster.kill_backend(index)
        return index

    def restart(self, index: int) -> None:
        self.cluster.start_backend(index)

    def stop(self) -> None:
        self.cluster.stop()


# ---- the observer ------------------------------------------------------------------


@dataclass
class Seen:
    """One event as the observer received it."""

    recv: float
    seq: int
    type: str
    status: str


@dataclass
class Observer:
    """Admin WebSocket subscribers on every process; events deduplicated by seq."""

    urls: list[str]
    seq: int = 0
    by_job: dict[str, list[Seen]] = field(default_factory=dict)
    seqs: set[int] = field(default_factory=set)
    resets: int = 0
    reconnects: int = 0
    stopping: bool = False

    async def run(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(*(self._follow(session, url) for url in self.urls))

    async def _follow(self, session: aiohttp.ClientSession, url: str) -> None:
        first = True
        while not self.stopping:  # bounded: stops with the benchmark
            try:
                ws_url = url.replace("http", "ws", 1) + "/v1/ws?token=" + TOKEN
                async with session.ws_connect(ws_url, heartbeat=5) as ws:
                    sub: dict[str, Any] = {"op": "subscribe", "all": True}
                    if not first:
                        sub["since"] = self.seq
                        self.reconnects += 1
                    first = False
                    await ws.send_json(sub)
                    async for msg in ws:
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            self._on(json.loads(msg.data))
            except (aiohttp.ClientError, OSError, TimeoutError):
                pass
            await asyncio.sleep(0.05)

    def _on(self, data: dict[str, Any]) -> None:
        if data.get("type") == "reset":
            self.resets += 1
            return
        if data.get("type") != "event" or data["seq"] in self.seqs:
            return
        self.seqs.add(data["seq"])
        self.seq = max(self.seq, data["seq"])
        job = data["job"]
        seen = Seen(time.time(), data["seq"], data["event_type"], job["status"])
        self.by_job.setdefault(job["id"], []).append(seen)


# ---- one round ---------------------------------------------------------------------


async def _outcome(client: AsyncClient, job_id: str) -> str:
    try:
        job = await client.wait(job_id, timeout=WAIT_TIMEOUT_S)
        return str(job.status)
    except JobFailed:
        return "permanently_failed"
    except JobCancelled:
        return "cancelled"
    except Exception as exc:  # any other end is a wrong wait
        return f"error:{type(exc).__name__}"


async def _cancel(
    client: AsyncClient, job_id: str, delay: float, acked: set[str], ack_times: list[float]
) -> None:
    await asyncio.sleep(delay)
    deadline = time.monotonic() + WAIT_TIMEOUT_S
    while time.monotonic() < deadline:
        try:
            await client.cancel(job_id, reason="kill_rounds")
            acked.add(job_id)
            ack_times.append(time.time())
            return
        except Conflict:  # it ended first
            return
        except Exception:  # the process died under it: not acknowledged, again
            await asyncio.sleep(0.1)


async def _final(client: AsyncClient, job_id: str) -> str | None:
    for _ in range(50):
        try:
            return str((await client.get(job_id)).status)
        except JobNotFound:
            return None
        except Exception:
            await asyncio.sleep(0.2)
    return "unreadable"


async def one_round(
    target: Any,
    client: AsyncClient,
    observer: Observer,
    rng: random.Random,
    jobs: int,
    user: str,
) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    plans = [(rng.choice(OUTCOMES), round(rng.uniform(0.2, 1.5), 3)) for _ in range(jobs)]
    extra_cancels = set(rng.sample(range(jobs), k=max(1, jobs // 10)))
    cancel_delays = [rng.uniform(0.1, 3.0) for _ in range(jobs)]
    kill_at = rng.uniform(0.05, 2.5)
    acked: dict[str, str] = {}  # job id -> scenario outcome
    cancel_acked: set[str] = set()
    cancel_sent: set[str] = set()
    waits: dict[str, asyncio.Task[str]] = {}
    side: list[asyncio.Task[None]] = []
    unacked = 0
    ack_times: list[float] = []  # when each 2xx (submit or cancel) arrived
    kill: dict[str, Any] = {}

    async def submit(i: int) -> None:
        nonlocal unacked
        await asyncio.sleep(i * 0.025)
        outcome, duration = plans[i]
        try:
            job = await client.submit(
                role="premium", scenario={"outcome": outcome, "duration_s": duration}
            )
        except Exception:  # no 2xx: not acknowledged
            unacked += 1
            return
        acked[job.id] = outcome
        ack_times.append(time.time())
        waits[job.id] = asyncio.create_task(_outcome(client, job.id))
        if outcome == "stuck" or i in extra_cancels:
            cancel_sent.add(job.id)
            side.append(
                asyncio.create_task(
                    _cancel(client, job.id, cancel_delays[i], cancel_acked, ack_times)
                )
            )

    async def killer() -> None:
        await asyncio.sleep(kill_at)
        kill["at"] = time.time()
        kill["index"] = await loop.run_in_executor(None, target.kill, rng)
        kill["down_s"] = time.time() - kill["at"]
        await loop.run_in_executor(None, target.restart, kill["index"])
        kill["restart_s"] = round(time.time() - kill["at"], 3)

    async with asyncio.timeout(ROUND_MAX_S):
        await asyncio.gather(killer(), *(submit(i) for i in range(jobs)))
        results = dict(zip(waits, await asyncio.gather(*waits.values()), strict=True))
        await asyncio.gather(*side)
        finals = {job_id: await _final(client, job_id) for job_id in acked}
        await asyncio.sleep(0.3)  # the observer has the last events

    killed_at = kill["at"]
    lost = [j for j in acked if finals[j] is None]
    lost += [j for j in cancel_acked if finals[j] != "cancelled"]
    changed = []
    takeover = None
    for job_id in acked:
        events = observer.by_job.get(job_id, [])
        before = [e for e in events if e.recv < killed_at]
        terminal = next((e.status for e in before if e.status in TERMINAL), None)
        if terminal is not None:
            later = [e for e in events if e.recv >= killed_at]
            if finals[job_id] != terminal or any(e.status != terminal for e in later):
                changed.append(job_id)
        if before and before[-1].status == "processing":
            retried = [e.recv for e in events if e.recv >= killed_at and e.type == "job.retrying"]
            if retried:
                takeover = max(takeover or 0.0, retried[0] - killed_at)
    wrong = []
    for job_id, outcome in acked.items():
        final, got = finals[job_id], results[job_id]
        allowed = {"stuck": set()}.get(outcome, {outcome})
        if job_id in cancel_sent:
            allowed = allowed | {"cancelled"}
        if got != final or final not in allowed:
            wrong.append({"job": job_id, "scenario": outcome, "wait": got, "final": final})
    # unacknowledged submits may have made jobs (stuck ones would run forever): end them
    with contextlib.suppress(Exception):
        async for job in client.list(user=user, status="processing"):
            if job.id not in acked:
                with contextlib.suppress(Exception):
                    await client.cancel(job.id)
    return {
        "acked_submits": len(acked),
        "unacked_submits": unacked,
        "acked_cancels": len(cancel_acked),
        "kill_at_s": round(kill_at, 3),
        "acks_in_100ms_before_kill": sum(1 for t in ack_times if killed_at - 0.1 <= t < killed_at),
        "killed": kill["index"],
        "restart_s": kill["restart_s"],
        "takeover_s": None if takeover is None else round(takeover, 3),
        "lost": len(lost),
        "changed": len(changed),
        "wrong": len(wrong),
        "wrong_detail": wrong[:5],
        "outcomes": {k: sum(1 for v in finals.values() if v == k) for k in sorted(TERMINAL)},
    }


async def run_backend(backend: str, rounds: int, jobs: int, seed: int, lease_s: float) -> Any:
    rng = random.Random(f"{seed}/{backend}")
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            target: Any = SQLiteTarget(stack.enter_context(temp_db()), lease_s)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dubsim-kill-"))
            target = RedisTarget(Path(tmp), lease_s)
        target.start()
        stack.callback(target.stop)
        observer = Observer(target.observe)
        user = f"kill-{backend}"
        per_round = []
        async with aiohttp.ClientSession() as session:
            watching = asyncio.create_task(observer.run(session))
            await asyncio.sleep(0.3)
            async with AsyncClient(target.url, token=TOKEN, user_id=user, timeout=5) as client:
                for r in range(rounds):
                    result = await one_round(target, client, observer, rng, jobs, user)
                    print(f"{backend} round {r + 1}: {json.dumps(result)}", flush=True)
                    per_round.append(result)
            observer.stopping = True
            watching.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watching
    takeovers = [r["takeover_s"] for r in per_round if r["takeover_s"] is not None]
    return {
        "rounds": len(per_round),
        "acked_submits": sum(r["acked_submits"] for r in per_round),
        "acked_cancels": sum(r["acked_cancels"] for r in per_round),
        "unacked_submits": sum(r["unacked_submits"] for r in per_round),
        "acks_in_100ms_before_kill": sum(r["acks_in_100ms_before_kill"] for r in per_round),
        "lost": sum(r["lost"] for r in per_round),
        "changed": sum(r["changed"] for r in per_round),
        "wrong": sum(r["wrong"] for r in per_round),
        "takeover_s": {
            "rounds_with": len(takeovers),
            "p50": pct(takeovers, 50),
            "max": max(takeovers) if takeovers else None,
        },
        "observer_resets": observer.resets,
        "observer_reconnects": observer.reconnects,
        "per_round": per_round,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--rounds", type=int, default=20, help="per backend")
    parser.add_argument("--jobs", type=int, default=40, help="submits per round")
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--lease-s", type=float, default=5.0, help="LEASE_S on Redis")
    parser.add_argument("--backends", nargs="+", default=["sqlite", "redis"])
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures: dict[str, Any] = {"load_average_1m_before": round(os.getloadavg()[0], 2)}
    for backend in args.backends:
        figures[backend] = asyncio.run(
            run_backend(backend, args.rounds, args.jobs, args.seed, args.lease_s)
        )
    figures["wall_s"] = round(time.monotonic() - started, 1)
    figures["target"] = "0 lost, 0 changed, 0 wrong waits"
    summary = {
        b: {k: v for k, v in f.items() if k != "per_round"}
        for b, f in figures.items()
        if isinstance(f, dict)
    }
    print(json.dumps(summary, indent=2))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
