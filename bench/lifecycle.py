"""Lifecycle throughput: N jobs submitted over HTTP, zero delay, through to `completed`.

The submitter is wrk (a separate process, 1 thread, 50 connections, a Lua script that POSTs a
premium job and stops after N answers); the server runs with translation_delay 0, error_rate 0,
SQLite on a temp file (WAL, group commit) and publishes every event to the hub. Completed jobs/s
is N over the time from the first submit to the last job's `finished_at`; peak RSS is sampled
every 0.2 s. The whole run is bounded (--max-seconds); if it runs out, the jobs completed so far
are what is reported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._common import RESULTS, TOKEN, dubsim, pyplot, temp_db, write_result

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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.lifecycle", description=__doc__)
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=50, help="the server's WORKERS")
    parser.add_argument("--max-seconds", type=float, default=120)
    args = parser.parse_args(argv)
    samples: list[tuple[float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp, temp_db() as db:
        lua = Path(tmp) / "submit.lua"
        lua.write_text(LUA % args.jobs)
        with dubsim(
            db=db, translation_delay=0, error_rate=0, workers=args.workers, rate_limit=1_000_000
        ) as server:
            rss0 = server.rss()
            cpu0 = server.cpu_seconds()
            argv_wrk = [
                "wrk", "-t1", f"-c{args.connections}", f"-d{int(args.max_seconds)}s",
                "-s", str(lua), server.url + "/v1/jobs",
            ]  # fmt: skip
            t_start = time.time()
            wrk = subprocess.Popen(argv_wrk, stdout=subprocess.PIPE, text=True)
            peak = rss0
            done = 0
            next_check = 0.0
            submits_done_at = None
            while time.time() - t_start < args.max_seconds:
                time.sleep(0.2)
                peak = max(peak, server.rss())
                if wrk.poll() is not None and submits_done_at is None:
                    submits_done_at = time.time()
                if time.time() >= next_check:
                    done = completed(server.url)
                    samples.append((time.time() - t_start, done, server.rss() / 2**20))
                    next_check = time.time() + 1.0
                    if done >= args.jobs:
                        break
            if wrk.poll() is None:
                wrk.terminate()
            wrk_out = wrk.communicate()[0]
            done = completed(server.url)
            cpu = server.cpu_seconds() - cpu0
            t_end = last_finished(server.url) if done else time.time()
    elapsed = t_end - t_start
    m = re.search(r"(\d+) requests in", wrk_out)
    submitted = int(m.group(1)) if m else None
    figures = {
        "jobs_requested": args.jobs,
        "jobs_submitted": submitted,
        "jobs_completed": done,
        "elapsed_s": round(elapsed, 2),
        "submit_phase_s": round((submits_done_at or time.time()) - t_start, 2),
        "completed_per_s": round(done / elapsed),
        "server_cpu_s": round(cpu, 1),
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(peak / 2**20, 1),
        "rss_per_job_kb": round((peak - rss0) / max(1, done) / 1024, 2),
        "target": ">= 5000 completed jobs/s",
        "wrk": " ".join(argv_wrk),
    }
    print(json.dumps(figures, indent=2))
    plot(samples, str(RESULTS / f"{NAME}.png"))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
