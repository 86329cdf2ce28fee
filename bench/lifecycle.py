"""Lifecycle throughput: N jobs submitted over HTTP, zero delay, through to `completed`.

The submitter is wrk (a separate process, 1 thread, 50 connections, a Lua script that POSTs a
premium job and stops after N answers); the server runs with translation_delay 0, error_rate 0,
SQLite on a temp file (WAL, group commit) and publishes every event to the hub. Completed jobs/s
is N over the time from the first submit to the last job's `finished_at`; peak RSS is sampled
every 0.2 s. `--backend redis --processes N` runs the same on Redis (as shipped: AOF, fsync
every second) with N processes, one wrk each (bench/lifecycle_redis.py compares them in one
run). The whole run is bounded (--max-seconds); if it runs out, the jobs completed so far
are what is reported.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

from bench._common import (
    PYTHON,
    RESULTS,
    TOKEN,
    Proc,
    dubsim,
    free_port,
    pyplot,
    temp_db,
    write_result,
)
from deploy.cluster import Cluster

NAME = "lifecycle"
LUA = """
wrk.method = "POST"
wrk.body = '{"role": "premium"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-Id"] = "lifecycle"
local answered = 0
response = function(status, headers, body)
  answered = answered + 1
  if answered >= %d then wrk.thread:stop() end
end
"""
_COMPLETED = re.compile(rb'^dubsim_jobs\{status="completed"\} ([\d.e+]+)', re.M)


def completed(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=30) as resp:
        m = _COMPLETED.search(resp.read())
    return int(float(m.group(1))) if m else 0


def last_finished(url: str) -> float:
    req = urllib.request.Request(
        url + "/v1/jobs?status=completed&limit=500", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        jobs = json.load(resp)["jobs"]
    return max(
        dt.datetime.fromisoformat(j["finished_at"].replace("Z", "+00:00")).timestamp() for j in jobs
    )


def plot(samples: list[tuple[float, int, float]], path: str) -> None:
    plt = pyplot()
    fig, ax1 = plt.subplots(figsize=(7, 4))
    ts = [s[0] for s in samples]
    ax1.plot(ts, [s[1] for s in samples], color="tab:blue", label="completed jobs")
    ax1.set_xlabel("seconds")
    ax1.set_ylabel("completed jobs", color="tab:blue")
    ax2 = ax1.twinx()
    ax2.plot(ts, [s[2] for s in samples], color="tab:red", label="server RSS")
    ax2.set_ylabel("server RSS, MB", color="tab:red")
    ax1.set_title("lifecycle: jobs completed over time, and server memory")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


@contextlib.contextmanager
def servers(backend: str, processes: int, workers: int) -> Iterator[tuple[list[Proc], Any]]:
    """The server processes of one case, and the redis-server's psutil.Process (or None).

    sqlite: one process on a temp file. redis: a redis-server as shipped (`appendonly yes`,
    `appendfsync everysec`, deploy/cluster.py) and `processes` dubsim processes sharing it.
    """
    flags = {"translation_delay": 0, "error_rate": 0, "workers": workers, "rate_limit": 1_000_000}
    with contextlib.ExitStack() as stack:
        if backend == "bare":  # the same-run baseline: bench/_bare_lifecycle.py
            db = stack.enter_context(temp_db())
            port = free_port()
            argv = [PYTHON, "-m", "bench._bare", "lifecycle", "--port", str(port), "--db", db]
            yield [stack.enter_context(Proc(argv, port, "/healthz"))], None
            return
        if backend == "sqlite":
            if processes != 1:
                raise ValueError("SQLite is one process per file")
            db = stack.enter_context(temp_db())
            yield [stack.enter_context(dubsim(db=db, **flags))], None
            return
        tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="dubsim-bench-")))
        cluster = Cluster(tmp, processes=0)
        cluster.start_redis()
        stack.callback(cluster.stop)
        assert cluster.redis is not None
        procs = [
            stack.enter_context(dubsim(redis_url=cluster.redis_url, **flags))
            for _ in range(processes)
        ]
        yield procs, psutil.Process(cluster.redis.pid)


def _cpu(ps: Any) -> float:
    times = ps.cpu_times()
    return float(times.user + times.system)


def run_case(
    backend: str,
    processes: int,
    *,
    jobs: int,
    connections: int,
    workers: int,
    max_seconds: float,
    samples: list[tuple[float, int, float]] | None = None,
) -> dict[str, Any]:
    """Submit `jobs` premium jobs with wrk (split evenly over the processes, one wrk each) and
    measure completed jobs/s; `samples` gets (s, completed, RSS MB of all servers) each second."""
    samples = [] if samples is None else samples
    load_before = round(os.getloadavg()[0], 2)
    per = [jobs // processes + (i < jobs % processes) for i in range(processes)]
    conns = max(1, connections // processes)
    with (
        tempfile.TemporaryDirectory() as tmp,
        servers(backend, processes, workers) as (
            procs,
            redis_ps,
        ),
    ):
        url = procs[0].url

        def rss() -> int:
            return sum(p.rss() for p in procs)

        rss0 = rss()
        cpu0 = [p.cpu_seconds() for p in procs]
        redis_cpu0 = _cpu(redis_ps) if redis_ps is not None else 0.0
        argvs = []
        for i, (proc, n) in enumerate(zip(procs, per, strict=True)):
            lua = Path(tmp) / f"submit{i}.lua"
            lua.write_text(LUA % n)
            argvs.append(
                [
                    "wrk", "-t1", f"-c{conns}", f"-d{int(max_seconds)}s",
                    "-s", str(lua), proc.url + "/v1/jobs",
                ]
            )  # fmt: skip
        t_start = time.time()
        wrks = [subprocess.Popen(a, stdout=subprocess.PIPE, text=True) for a in argvs]
        peak = rss0
        done = 0
        next_check = 0.0
        submits_done_at = None
        while time.time() - t_start < max_seconds:
            time.sleep(0.2)
            peak = max(peak, rss())
            if submits_done_at is None and all(w.poll() is not None for w in wrks):
                submits_done_at = time.time()
            if time.time() >= next_check:
                done = completed(url)
                samples.append((time.time() - t_start, done, rss() / 2**20))
                next_check = time.time() + 1.0
                if done >= jobs:
                    break
        outs = []
        for w in wrks:
            if w.poll() is None:
                w.terminate()
            outs.append(w.communicate()[0])
        done = completed(url)
        cpu = sum(p.cpu_seconds() - c for p, c in zip(procs, cpu0, strict=True))
        redis_cpu = _cpu(redis_ps) - redis_cpu0 if redis_ps is not None else None
        t_end = last_finished(url) if done else time.time()
    elapsed = t_end - t_start
    counts = [re.search(r"(\d+) requests in", out) for out in outs]
    submitted = sum(int(m.group(1)) for m in counts if m) if any(counts) else None
    return {
        "backend": backend,
        "processes": processes,
        "jobs_requested": jobs,
        "jobs_submitted": submitted,
        "jobs_completed": done,
        "elapsed_s": round(elapsed, 2),
        "submit_phase_s": round((submits_done_at or time.time()) - t_start, 2),
        "completed_per_s": round(done / elapsed),
        "server_cpu_s": round(cpu, 1),
        "redis_cpu_s": None if redis_cpu is None else round(redis_cpu, 1),
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_per_job_kb": round((peak - rss0) / max(1, done) / 1024, 2),
        "load_average_1m_before": load_before,
        "wrk": " | ".join(" ".join(a) for a in argvs),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=50, help="the server's WORKERS")
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--backend", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--processes", type=int, default=1, help="server processes (redis)")
    parser.add_argument(
        "--no-baseline",
        dest="baseline",
        action="store_false",
        help="skip the bare durable lifecycle (bench/_bare_lifecycle.py) run after dubsim's",
    )
    args = parser.parse_args(argv)
    samples: list[tuple[float, int, float]] = []
    baseline = args.backend == "sqlite" and args.baseline

    def bare() -> dict[str, Any]:
        return run_case(
            "bare",
            1,
            jobs=args.jobs,
            connections=args.connections,
            workers=args.workers,
            max_seconds=args.max_seconds,
        )

    # the least this stack can do with three durable states per job, just before and just
    # after dubsim's run on the same machine: what makes figures of different days comparable
    # (the machine's speed drifts within minutes, so the baseline brackets the run)
    before = bare() if baseline else None
    figures = run_case(
        args.backend,
        args.processes,
        jobs=args.jobs,
        connections=args.connections,
        workers=args.workers,
        max_seconds=args.max_seconds,
        samples=samples,
    )
    figures["target"] = ">= 6000 completed jobs/s (ack and publish after durable)"
    if before is not None:
        after = bare()
        rate = (before["completed_per_s"] + after["completed_per_s"]) / 2
        figures["bare_durable"] = {"completed_per_s": round(rate), "before": before, "after": after}
        figures["ratio_to_bare_durable"] = round(figures["completed_per_s"] / max(1, rate), 2)
    print(json.dumps(figures, indent=2))
    if args.backend == "sqlite":  # the section and plot of docs/benchmarks.md
        plot(samples, str(RESULTS / f"{NAME}.png"))
        write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
