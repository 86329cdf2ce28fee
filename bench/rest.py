"""REST throughput with wrk: GET /v1/jobs/{id} and POST /v1/jobs against a bare aiohttp hello.

Each target gets the same wrk command (1 thread, 50 connections, a bounded -d) on the same
machine; the bare hello and dubsim's GET alternate for --rounds short runs and their medians are
compared (the machine is shared and noisy: single runs swing by 2x). POST uses a wrk Lua script with a
JSON body and the premium plan (free submissions are rate-limited; the limit is raised too).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path
from typing import Any

from bench._common import RESULTS, bare, dubsim, pyplot, write_result

NAME = "rest"
POST_LUA = """
wrk.method = "POST"
wrk.body = '{"role": "premium", "target_language": "es"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-User-Id"] = "wrk"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def wrk(url: str, seconds: int, connections: int, script: str | None = None) -> dict[str, Any]:
    argv = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if script:
        argv += ["-s", script]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    lat = {}
    for q in ("50", "99"):
        m = re.search(rf"^\s+{q}(?:\.000)?%\s+([\d.]+)(us|ms|s)", out, re.M)
        if m:
            lat[f"p{q}_ms"] = round(float(m.group(1)) * _UNITS[m.group(2)], 3)
    return {
        "requests_per_s": round(rps),
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "latency": lat,
        "command": " ".join([*argv, url]),
    }


def plot(figures: dict[str, Any], path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = ["bare hello", "dubsim GET /v1/jobs/{id}", "dubsim POST /v1/jobs"]
    keys = ["bare_hello", "get_job", "post_job"]
    values = [figures[k]["requests_per_s"] for k in keys]
    ax.barh(names, values, color=["tab:gray", "tab:blue", "tab:green"])
    for y, v in enumerate(values):
        ax.text(v, y, f" {v:,}", va="center")
    ax.set_xlabel("requests / s (wrk -t1 -c50)")
    ax.set_title(f"REST: GET is {figures['get_vs_bare']:.0%} of a bare aiohttp hello")
    ax.invert_yaxis()
    ax.set_xlim(0, max(values) * 1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.rest", description=__doc__)
    parser.add_argument("--seconds", type=int, default=3, help="wrk -d per run")
    parser.add_argument("--rounds", type=int, default=9, help="alternating bare/GET runs")
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args(argv)
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is missing: apt-get install -y wrk (or make system-deps)")
    runs: dict[str, list[dict[str, Any]]] = {"bare_hello": [], "get_job": [], "post_job": []}
    with tempfile.TemporaryDirectory() as tmp:
        lua = Path(tmp) / "post.lua"
        lua.write_text(POST_LUA)
        with bare("hello") as hello, dubsim(rate_limit=1_000_000, error_rate=0) as server:
            req = urllib.request.Request(
                server.url + "/v1/jobs",
                data=b'{"role": "premium"}',
                headers={"Content-Type": "application/json", "X-User-Id": "wrk"},
            )
            with urllib.request.urlopen(req) as resp:
                job_id = json.load(resp)["id"]
            for _ in range(args.rounds):
                runs["bare_hello"].append(wrk(hello.url + "/hello", args.seconds, args.connections))
                runs["get_job"].append(
                    wrk(f"{server.url}/v1/jobs/{job_id}", args.seconds, args.connections)
                )
        with dubsim(rate_limit=1_000_000, error_rate=0) as server:
            runs["post_job"].append(
                wrk(server.url + "/v1/jobs", args.seconds * 2, args.connections, str(lua))
            )
    figures: dict[str, Any] = {
        k: sorted(v, key=lambda r: r["requests_per_s"])[len(v) // 2] for k, v in runs.items()
    }
    figures["all_runs"] = {k: [r["requests_per_s"] for r in v] for k, v in runs.items()}
    figures["get_vs_bare"] = round(
        figures["get_job"]["requests_per_s"] / figures["bare_hello"]["requests_per_s"], 3
    )
    figures["post_vs_bare"] = round(
        figures["post_job"]["requests_per_s"] / figures["bare_hello"]["requests_per_s"], 3
    )
    figures["target"] = "GET >= 0.80 x bare hello"
    for k in ("bare_hello", "get_job", "post_job"):
        print(f"{k:12} {figures[k]['requests_per_s']:>7,} req/s  {figures[k]['latency']}")
    print(f"GET / bare = {figures['get_vs_bare']:.2f}")
    plot(figures, str(RESULTS / f"{NAME}.png"))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
