"""Soak: a real server under steady load for minutes; does its memory level off?

    python -m bench.soak                      # 10 minutes, 200 jobs/s, 100 subscribers
    python -m bench.soak --minutes 1 --rate 50

Starts `python -m service` on a free loopback port with a throwaway SQLite file, then for
`--minutes`:

- submits `--rate` jobs per second (both plans, mixed scenario outcomes; free users get a rate
  limit high enough never to refuse them), spread over `--subscribers` users;
- keeps `--subscribers` live subscribers, each following one user's jobs ("mine"): half over
  WebSocket, half over SSE; a dropped one reconnects and resumes by seq;
- applies a retention TTL: dubsim has no automatic retention setting yet, so the soak itself
  calls `POST /v1/cleanup {"older_than_s": TTL}` every `--cleanup-every` seconds;
- samples the server's RSS (from /proc/PID/status) every `--sample-every` seconds.

After the warm-up (`--warmup-minutes`, default a fifth of the run) the RSS must grow less than
`--max-growth` (10 %): the median of the last three samples against the median of the first
three after warm-up. Prints the series, writes bench/results/soak.json and soak.png, and exits 1
when the growth bound is broken. Loopback only; everything it starts it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SCENARIOS: list[dict[str, Any] | None] = [
    None,  # chance (the server's error_rate)
    None,
    None,
    {"outcome": "completed", "fail_attempts": 1},
    {"outcome": "failed"},
    {"outcome": "permanently_failed"},
]
TERMINAL_EVENTS = {"job.completed", "job.permanently_failed", "job.cancelled"}


@dataclass
class Counters:
    submitted: int = 0
    submit_errors: int = 0
    cleanups: int = 0
    deleted: int = 0
    frames: int = 0
    terminal_events: int = 0
    reconnects: int = 0
    resumed: int = 0
    status_codes: dict[str, int] = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="run length (default 10)")
    p.add_argument("--rate", type=float, default=200.0, help="jobs submitted per second")
    p.add_argument("--subscribers", type=int, default=100, help="live subscribers (WS + SSE)")
    p.add_argument(
        "--ttl", type=float, default=10.0, help="retention: delete jobs finished N s ago"
    )
    p.add_argument("--cleanup-every", type=float, default=5.0, help="seconds between cleanups")
    p.add_argument("--sample-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--warmup-minutes", type=float, default=None, help="default: minutes / 5")
    p.add_argument("--max-growth", type=float, default=0.10, help="allowed RSS growth (0.10)")
    p.add_argument("--translation-delay", type=float, default=0.3, help="server's job duration")
    p.add_argument("--out", type=Path, default=RESULTS, help="where soak.json / soak.png go")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.subscribers < 0:
        p.error("--minutes and --rate must be > 0, --subscribers >= 0")
    if args.minutes > 120:
        p.error("--minutes is capped at 120: a soak is bounded")
    if args.warmup_minutes is None:
        args.warmup_minutes = args.minutes / 5
    return args


# ---- the server -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def start_server(
    db: str, token: str, args: argparse.Namespace
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    in_flight = args.rate * args.translation_delay * 3
    flags = {
        "host": "127.0.0.1",
        "port": port,
        "db": db,
        "admin-token": token,
        "translation-delay": args.translation_delay,
        "retry-delay": 0.05,
        "error-rate": 0.05,
        "rate-limit": 1_000_000,
        "workers": max(16, int(in_flight)),
        "seed": 1,
    }
    cmd = [sys.executable, "-m", "service"]
    for key, value in flags.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


async def wait_healthy(
    session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url + "/healthz") as resp:
                if resp.status == 200:
                    return
        await asyncio.sleep(0.1)
    raise RuntimeError("server did not become healthy")


# ---- load ------------------------------------------------------------------------------


async def submitter(
    session: aiohttp.ClientSession, url: str, args: argparse.Namespace, c: Counters, stop: float
) -> None:
    rng = random.Random(7)
    users = max(1, args.subscribers)
    tick = 0.05
    per_tick = args.rate * tick
    owed = 0.0
    loop = asyncio.get_running_loop()
    next_at = loop.time()

    async def one(i: int) -> None:
        body: dict[str, Any] = {
            "role": "premium" if rng.random() < 0.5 else "free",
            "scenario": rng.choice(SCENARIOS),
        }
        try:
            async with session.post(
                url + "/v1/jobs", json=body, headers={"X-User-Id": f"u{i % users}"}
            ) as resp:
                await resp.read()
                key = str(resp.status)
                c.status_codes[key] = c.status_codes.get(key, 0) + 1
                if resp.status == 201:
                    c.submitted += 1
                else:
                    c.submit_errors += 1
        except (aiohttp.ClientError, OSError):
            c.submit_errors += 1

    pending: set[asyncio.Task[None]] = set()
    n = 0
    while loop.time() < stop:
        owed += per_tick
        batch = int(owed)
        owed -= batch
        for _ in range(batch):
            task = asyncio.create_task(one(n))
            n += 1
            pending.add(task)
            task.add_done_callback(pending.discard)
        next_at += tick
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    await asyncio.gather(*pending, return_exceptions=True)


async def ws_subscriber(
    session: aiohttp.ClientSession, url: str, user: str, c: Counters, stop: float
) -> None:
    since: int | None = None
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        try:
            async with session.ws_connect(url + f"/v1/ws?user={user}", compress=0) as ws:
                msg: dict[str, Any] = {"op": "subscribe", "mine": True}
                if since is not None:
                    msg["since"] = since
                    c.resumed += 1
                await ws.send_json(msg)
                while loop.time() < stop:
                    try:
                        frame = await ws.receive(timeout=max(0.1, stop - loop.time()))
                    except TimeoutError:
                        break
                    if frame.type is not aiohttp.WSMsgType.TEXT:
                        break
                    c.frames += 1
                    data = json.loads(frame.data)
                    if "seq" in data:
                        since = data["seq"] if since is None else max(since, data["seq"])
                    if data.get("event_type") in TERMINAL_EVENTS:
                        c.terminal_events += 1
        except (aiohttp.ClientError, OSError):
            pass
        if loop.time() < stop:
            c.reconnects += 1
            await asyncio.sleep(0.2)


async def sse_subscriber(
    session: aiohttp.ClientSession, url: str, user: str, c: Counters, stop: float
) -> None:
    last_id: str | None = None
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        headers = {"X-User-Id": user}
        if last_id is not None:
            headers["Last-Event-ID"] = last_id
            c.resumed += 1
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
            async with session.get(
                url + "/v1/events?mine=1", headers=headers, timeout=timeout
            ) as resp:
                async with asyncio.timeout(max(0.1, stop - loop.time())):
                    async for line in resp.content:
                        if line.startswith(b"id: "):
                            last_id = line[4:].decode().strip()
                        elif line.startswith(b"event: "):
                            c.frames += 1
                            if line[7:].decode().strip() in TERMINAL_EVENTS:
                                c.terminal_events += 1
        except (aiohttp.ClientError, OSError, TimeoutError):
            pass
        if loop.time() < stop:
            c.reconnects += 1
            await asyncio.sleep(0.2)


async def retention(
    session: aiohttp.ClientSession,
    url: str,
    token: str,
    args: argparse.Namespace,
    c: Counters,
    stop: float,
) -> None:
    loop = asyncio.get_running_loop()
    while loop.time() < stop:
        await asyncio.sleep(args.cleanup_every)
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.post(
                url + "/v1/cleanup",
                json={"older_than_s": args.ttl},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp:
                if resp.status == 200:
                    c.cleanups += 1
                    c.deleted += (await resp.json())["deleted"]


async def sampler(
    pid: int,
    session: aiohttp.ClientSession,
    url: str,
    args: argparse.Namespace,
    c: Counters,
    series: list[dict[str, float]],
    stop: float,
) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    while True:
        jobs = seq = -1
        with contextlib.suppress(aiohttp.ClientError, OSError, KeyError, ValueError):
            async with session.get(url + "/healthz") as resp:
                health = await resp.json()
                jobs, seq = health["jobs"], health["seq"]
        point = {
            "t_s": round(loop.time() - start, 1),
            "rss_mib": round(rss_kib(pid) / 1024, 2),
            "jobs_held": jobs,
            "seq": seq,  # events published so far: the resume window is EVENT_BUFFER of these
            "submitted": c.submitted,
        }
        series.append(point)
        print(
            f"  t={point['t_s']:7.1f}s  rss={point['rss_mib']:8.2f} MiB  jobs held={jobs:6d}"
            f"  submitted={c.submitted:8d}  frames={c.frames:9d}",
            flush=True,
        )
        if loop.time() >= stop:
            return
        await asyncio.sleep(min(args.sample_every, max(0.0, stop - loop.time())))


# ---- the run ---------------------------------------------------------------------------


def growth(series: list[dict[str, float]], warmup_s: float) -> tuple[float, float, float]:
    after = [p["rss_mib"] for p in series if p["t_s"] >= warmup_s]
    if len(after) < 2:
        raise SystemExit("run too short for its warm-up: no samples after it")
    base = statistics.median(after[:3])
    end = statistics.median(after[-3:])
    return base, end, (end - base) / base


def plot(series: list[dict[str, float]], warmup_s: float, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.plot([p["t_s"] for p in series], [p["rss_mib"] for p in series], marker=".")
    ax.axvline(warmup_s, color="grey", linestyle="--", label="end of warm-up")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    ax2 = ax.twinx()
    ax2.plot(
        [p["t_s"] for p in series], [p["jobs_held"] for p in series], color="tab:orange", alpha=0.4
    )
    ax2.set_ylabel("jobs held by the server", color="tab:orange")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


async def run(args: argparse.Namespace) -> int:
    token = secrets.token_urlsafe(24)
    c = Counters()
    series: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="dubsim-soak-") as tmp:
        proc, url = start_server(os.path.join(tmp, "soak.db"), token, args)
        try:
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as session:
                await wait_healthy(session, url, proc)
                loop = asyncio.get_running_loop()
                stop = loop.time() + args.minutes * 60
                print(
                    f"soak: {args.minutes:g} min, {args.rate:g} jobs/s, {args.subscribers} "
                    f"subscribers, TTL {args.ttl:g} s via POST /v1/cleanup every "
                    f"{args.cleanup_every:g} s; server pid {proc.pid} at {url}",
                    flush=True,
                )
                subs = [
                    (ws_subscriber if i % 2 == 0 else sse_subscriber)(
                        session, url, f"u{i}", c, stop
                    )
                    for i in range(args.subscribers)
                ]
                await asyncio.gather(
                    sampler(proc.pid, session, url, args, c, series, stop),
                    submitter(session, url, args, c, stop),
                    retention(session, url, token, args, c, stop),
                    *subs,
                )
                alive = proc.poll() is None
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            if proc.stderr:
                proc.stderr.close()
    warmup_s = args.warmup_minutes * 60
    base, end, grew = growth(series, warmup_s)
    seconds = args.minutes * 60
    ok = grew < args.max_growth and alive
    published = [p for p in series if p["seq"] >= 0]
    events_per_s = (
        (published[-1]["seq"] - published[0]["seq"]) / (published[-1]["t_s"] - published[0]["t_s"])
        if len(published) > 1 and published[-1]["t_s"] > published[0]["t_s"]
        else 0.0
    )
    result = {
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "achieved_jobs_per_s": round(c.submitted / seconds, 1),
        "events_per_s": round(events_per_s, 1),
        "counters": asdict(c),
        "rss_after_warmup_mib": base,
        "rss_end_mib": end,
        "rss_peak_mib": max(p["rss_mib"] for p in series),
        "growth_after_warmup": round(grew, 4),
        "passed": ok,
        "server_stderr_tail": stderr[-2000:],
        "series": series,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.json").write_text(json.dumps(result, indent=1) + "\n")
    title = (
        f"dubsim soak: {args.rate:g} jobs/s, {args.subscribers} subscribers, "
        f"TTL {args.ttl:g} s — growth after warm-up {grew:+.1%}"
    )
    plot(series, warmup_s, args.out / "soak.png", title)
    print(
        f"\nsubmitted {c.submitted} jobs ({result['achieved_jobs_per_s']} /s), "
        f"{c.submit_errors} refused/failed, {c.frames} frames to subscribers "
        f"({c.terminal_events} outcomes), {c.reconnects} reconnects ({c.resumed} resumed), "
        f"{c.cleanups} cleanups deleted {c.deleted} jobs; {events_per_s:.0f} events/s published"
    )
    print(
        f"RSS after warm-up {base:.1f} MiB -> end {end:.1f} MiB: {grew:+.1%} "
        f"(bound {args.max_growth:.0%}) {'PASS' if ok else 'FAIL'}"
    )
    if not alive:
        print("the server died during the soak:\n" + stderr[-2000:])
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> None:
    raise SystemExit(asyncio.run(run(parse_args(argv))))


if __name__ == "__main__":
    main()
