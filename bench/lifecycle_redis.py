"""Lifecycle throughput on Redis against SQLite, in one run: the same N jobs three times.

bench/lifecycle.py's measurement (wrk submits N premium jobs with zero delay, completed jobs/s
from the first submit to the last `finished_at`), run on (1) SQLite, one process, (2) Redis as
shipped (`appendonly yes`, `appendfsync everysec`) with one dubsim process, (3) the same Redis
with two processes, each fed by its own wrk (half the jobs and half the connections each).
Each case gets a fresh server (and a fresh Redis). Reported: each case's figures, Redis-1 /
SQLite (target >= 0.5) and Redis-2 / Redis-1. Server CPU is the sum over dubsim processes;
redis-server's CPU is given apart.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from bench._common import write_result
from bench.lifecycle import run_case

NAME = "lifecycle_redis"
CASES = (("sqlite", 1), ("redis", 1), ("redis", 2))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--connections", type=int, default=50, help="in all, over the wrks")
    parser.add_argument("--workers", type=int, default=50, help="each server's WORKERS")
    parser.add_argument("--max-seconds", type=float, default=120, help="per case")
    args = parser.parse_args(argv)
    cases: dict[str, dict[str, Any]] = {}
    for backend, processes in CASES:
        key = backend if backend == "sqlite" else f"{backend}_{processes}"
        print(f"-- {key}", flush=True)
        cases[key] = run_case(
            backend,
            processes,
            jobs=args.jobs,
            connections=args.connections,
            workers=args.workers,
            max_seconds=args.max_seconds,
        )
        print(json.dumps(cases[key]), flush=True)
    rate = {k: c["completed_per_s"] for k, c in cases.items()}
    figures = {
        "cases": cases,
        "redis_1_vs_sqlite": round(rate["redis_1"] / rate["sqlite"], 3),
        "redis_2_vs_redis_1": round(rate["redis_2"] / rate["redis_1"], 3),
        "target": "redis_1 >= 0.5 x sqlite; redis_2 / redis_1 reported",
    }
    print(json.dumps({k: v for k, v in figures.items() if k != "cases"}, indent=2))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
