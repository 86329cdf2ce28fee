"""Fan-out: deliveries/s and publish-to-receive latency, dubsim against a bare broadcast loop.

Cases (each: the dubsim server, then in the same run the bare aiohttp server):
  ws-1000   1,000 WebSocket subscribers, each subscribed to all events
  ws-5000   5,000 WebSocket subscribers
  sse-1000  1,000 SSE subscribers
  idle      10,000 idle WebSocket subscribers: server RSS per connection

dubsim publishes as fast as it can: a separate load process submits zero-duration premium
jobs in a closed loop (each job is three events: created, started, completed), so the server's
one core is saturated by publishing and fan-out; the bare server's broadcast loop (bench/_bare.py)
builds one frame of the same size and awaits a send to every socket in turn, as fast as it can.
Subscribers are minimal raw-asyncio clients in separate processes (bench/_subscribers.py);
every 10th one times each event against its `at` timestamp.
"""

from __future__ import annotations

import argparse
import json
import time
import urllib.request
from typing import Any

import psutil

from bench._common import (
    RESULTS,
    TOKEN,
    Proc,
    bare,
    child,
    dubsim,
    pyplot,
    raise_nofile,
    read_json_line,
    summary_ms,
    tell,
    write_result,
)

NAME = "fanout"
CASES = {"ws-1000": ("ws", 1000), "ws-5000": ("ws", 5000), "sse-1000": ("sse", 1000)}


def _subscribers(server: Proc, kind: str, n: int, procs: int, is_dubsim: bool) -> list[Any]:
    if is_dubsim:
        path = "/v1/ws?token=" + TOKEN if kind == "ws" else "/v1/events?all=1"
    else:
        path = "/ws" if kind == "ws" else "/events"
    hello = '{"op":"subscribe","all":true}' if is_dubsim and kind == "ws" else ""
    children = []
    for i in range(procs):
        count = n // procs + (1 if i < n % procs else 0)
        args = ["--port", server.port, "--kind", kind, "--path", path, "--count", count]
        if is_dubsim and kind == "sse":
            args += ["--token", TOKEN]
        if hello:
            args += ["--hello", hello]
        children.append(child("bench._subscribers", *args))
    ready = sum(read_json_line(c)["ready"] for c in children)
    if ready != n:
        raise RuntimeError(f"only {ready} of {n} subscribers connected")
    return children


def _post(url: str) -> None:
    with urllib.request.urlopen(urllib.request.Request(url, method="POST"), timeout=10):
        pass


def measure(kind: str, n: int, is_dubsim: bool, seconds: float, procs: int) -> dict[str, Any]:
    server = (
        dubsim(translation_delay=0, error_rate=0, workers=8, rate_limit=1_000_000)
        if is_dubsim
        else bare(kind)
    )
    subs: list[Any] = []
    load = None
    try:
        subs = _subscribers(server, kind, n, procs, is_dubsim)
        cpu0 = server.cpu_seconds()
        sub_ps = [psutil.Process(c.pid) for c in subs]
        sub_cpu0 = sum(sum(p.cpu_times()[:2]) for p in sub_ps)
        if is_dubsim:
            load = child(
                "bench._load", "--port", server.port, "--concurrency", 8, "--seconds", seconds + 4
            )
        else:
            _post(server.url + "/start")
        t0 = time.time() + 1.5  # warm-up: queues and socket buffers reach their steady state
        t1 = t0 + seconds
        for c in subs:
            tell(c, {"window": [t0, t1]})
        rss_peak = 0
        while time.time() < t1:
            rss_peak = max(rss_peak, server.rss())
            time.sleep(0.5)
        reports = [read_json_line(c) for c in subs]
        cpu = server.cpu_seconds() - cpu0
        sub_cpu = sum(sum(p.cpu_times()[:2]) for p in sub_ps) - sub_cpu0
        if load is not None:
            load.stdin.close()  # type: ignore[union-attr]
            load_report = read_json_line(load)
        else:
            _post(server.url + "/stop")
            load_report = None
    finally:
        for c in subs:
            if c.poll() is None:
                c.stdin.close()
                c.wait(10)
        if load is not None and load.poll() is None:
            load.kill()
        server.stop()
    frames = sum(r["frames"] for r in reports)
    latencies = [x for r in reports for x in r["latencies"]]
    return {
        "server": "dubsim" if is_dubsim else "bare",
        "subscribers": n,
        "deliveries_per_s": round(frames / seconds),
        "events_per_s": round(frames / seconds / n, 1),
        "latency": summary_ms(latencies),
        "disconnected": sum(r["closed"] for r in reports),
        "server_cpu_s": round(cpu, 2),
        "subscribers_cpu_s": round(sub_cpu, 2),
        "wall_s": round(seconds + 2.0, 1),
        "server_rss_peak_mb": round(rss_peak / 2**20, 1),
        "load": load_report,
    }


def idle(n: int, procs: int, is_dubsim: bool) -> dict[str, Any]:
    server = dubsim() if is_dubsim else bare("ws")
    subs: list[Any] = []
    try:
        time.sleep(0.5)
        rss0 = server.rss()
        subs = _subscribers(server, "ws", n, procs, is_dubsim)
        time.sleep(1.0)
        rss1 = server.rss()
    finally:
        for c in subs:
            c.stdin.close()
            c.wait(10)
        server.stop()
    return {
        "server": "dubsim" if is_dubsim else "bare",
        "subscribers": n,
        "rss_before_mb": round(rss0 / 2**20, 1),
        "rss_after_mb": round(rss1 / 2**20, 1),
        "kb_per_connection": round((rss1 - rss0) / n / 1024, 1),
    }


def plot(cases: dict[str, Any], path: str) -> None:
    plt = pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(cases)
    xs = range(len(names))
    width = 0.38
    for offset, server, color in (
        (-width / 2, "dubsim", "tab:blue"),
        (width / 2, "bare", "tab:gray"),
    ):
        ax1.bar(
            [x + offset for x in xs],
            [cases[c][server]["deliveries_per_s"] for c in names],
            width,
            label=server,
            color=color,
        )
        ax2.bar(
            [x + offset for x in xs],
            [cases[c][server]["latency"]["p50_ms"] or 0 for c in names],
            width,
            label=f"{server} p50",
            color=color,
        )
        ax2.scatter(
            [x + offset for x in xs],
            [cases[c][server]["latency"]["p99_ms"] or 0 for c in names],
            marker="_",
            s=300,
            color="black",
        )
    for ax in (ax1, ax2):
        ax.set_xticks(list(xs), names)
        ax.legend()
    ax1.set_ylabel("deliveries / s (higher is better)")
    ax2.set_ylabel("publish-to-receive ms (bar p50, tick p99)")
    ax2.set_yscale("log")
    fig.suptitle("fan-out: dubsim vs bare sequential-send broadcast")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__)
    parser.add_argument("--seconds", type=float, default=10, help="measured window per run")
    parser.add_argument("--procs", type=int, default=2, help="subscriber processes per run")
    parser.add_argument("--idle", type=int, default=10_000, help="idle subscribers (0: skip)")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated subset")
    args = parser.parse_args(argv)
    raise_nofile()
    cases: dict[str, Any] = {}
    for name in args.cases.split(","):
        if not name:
            continue
        kind, n = CASES[name]
        dub = measure(kind, n, True, args.seconds, args.procs)
        ref = measure(kind, n, False, args.seconds, args.procs)
        ratio = dub["deliveries_per_s"] / max(1, ref["deliveries_per_s"])
        cases[name] = {"dubsim": dub, "bare": ref, "ratio": round(ratio, 2), "target": ">= 1.0x"}
        print(
            f"{name}: dubsim {dub['deliveries_per_s']}/s, bare {ref['deliveries_per_s']}/s, {ratio:.2f}x"
        )
        print(
            json.dumps(cases[name]["dubsim"]["latency"]), json.dumps(cases[name]["bare"]["latency"])
        )
    figures: dict[str, Any] = {"cases": cases}
    if args.idle:
        dub = idle(args.idle, max(args.procs, 4), True)
        ref = idle(args.idle, max(args.procs, 4), False)
        figures["idle"] = {"dubsim": dub, "bare": ref, "target_kb": 20}
        print(
            f"idle {args.idle}: dubsim {dub['kb_per_connection']} KB/conn, bare {ref['kb_per_connection']} KB/conn"
        )
    if cases:
        plot(cases, str(RESULTS / f"{NAME}.png"))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
