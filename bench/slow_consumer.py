"""Slow consumer: one WebSocket subscriber that never reads, beside 100 that do.

Two kinds of run, alternated (--rounds of each) on a fresh server every time: 100 reading
subscribers (all events, in a separate process) while a separate load process submits jobs at a
fixed rate; and the same with one more subscriber that subscribes to all events and then never
reads (its receive buffer shrunk to 4 KiB so it backs up quickly). The readers' p99
publish-to-receive latency must stay within +10 % of the run without it (the median of the
rounds is compared), and the server's RSS must stay bounded: the never-reader is disconnected
as a slow consumer once SUBSCRIBER_QUEUE frames pile up, instead of growing the server.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import socket
import statistics
import time
import urllib.request
from typing import Any

from bench._common import (
    RESULTS,
    TOKEN,
    child,
    dubsim,
    pyplot,
    raise_nofile,
    read_json_line,
    summary_ms,
    tell,
    write_result,
)
from bench._subscribers import masked_text

NAME = "slow_consumer"


def never_reader(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/ws?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    sock.sendall(masked_text(b'{"op":"subscribe","all":true}'))
    return sock  # and never read again


def slow_consumers(url: str) -> int:
    with urllib.request.urlopen(url + "/metrics", timeout=10) as resp:
        m = re.search(rb"^dubsim_slow_consumers_total ([\d.e+]+)", resp.read(), re.M)
    return int(float(m.group(1))) if m else 0


def one_run(with_slow: bool, args: argparse.Namespace) -> dict[str, Any]:
    server = dubsim(translation_delay=0, error_rate=0, workers=8, rate_limit=1_000_000)
    subs = load = slow = None
    rss: list[tuple[float, float]] = []
    try:
        if with_slow:
            slow = never_reader(server.port)
        subs = child(
            "bench._subscribers", "--port", server.port, "--kind", "ws",
            "--path", f"/v1/ws?token={TOKEN}", "--count", args.readers, "--sample", 1,
            "--hello", '{"op":"subscribe","all":true}',
        )  # fmt: skip
        read_json_line(subs)
        rss0 = server.rss()
        load = child(
            "bench._load", "--port", server.port, "--rate", args.rate,
            "--concurrency", 16, "--seconds", args.seconds + 3,
        )  # fmt: skip
        start = time.time()
        t0 = start + 1.0
        t1 = t0 + args.seconds
        tell(subs, {"window": [t0, t1]})
        while time.time() < t1:
            rss.append((time.time() - start, server.rss() / 2**20))
            time.sleep(0.25)
        report = read_json_line(subs)
        load.stdin.close()  # type: ignore[union-attr]
        load_report = read_json_line(load)
        closed_slow = slow_consumers(server.url)
    finally:
        for proc in (subs, load):
            if proc is not None and proc.poll() is None:
                proc.stdin.close()  # type: ignore[union-attr]
                proc.wait(10)
        if slow is not None:
            slow.close()
        server.stop()
    return {
        "with_slow_consumer": with_slow,
        "latency": summary_ms(report["latencies"]),
        "frames": report["frames"],
        "readers_disconnected": report["closed"],
        "slow_consumers_closed": closed_slow,
        "submitted": load_report["submitted"],
        "rss_start_mb": round(rss0 / 2**20, 1),
        "rss_peak_mb": round(max(r for _, r in rss), 1),
        "rss_series": [(round(t, 2), round(r, 1)) for t, r in rss],
    }


def plot(runs: list[dict[str, Any]], path: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for run in runs:
        ts = [t for t, _ in run["rss_series"]]
        rs = [r for _, r in run["rss_series"]]
        label = "with never-reader" if run["with_slow_consumer"] else "readers only"
        color = "tab:red" if run["with_slow_consumer"] else "tab:blue"
        ax.plot(ts, rs, color=color, alpha=0.7, label=f"{label}: p99 {run['latency']['p99_ms']} ms")
    ax.set_xlabel("seconds")
    ax.set_ylabel("server RSS, MB")
    ax.set_title("slow consumer: server memory over each run")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.slow_consumer", description=__doc__)
    parser.add_argument("--readers", type=int, default=100)
    parser.add_argument(
        "--rate",
        type=float,
        default=150,
        help="jobs/s (3 events each); below saturation, see docs/benchmarks.md",
    )
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument(
        "--rounds",
        type=int,
        default=4,
        help="runs of each kind; the medians are compared (runs swing by 2x here)",
    )
    args = parser.parse_args(argv)
    raise_nofile()
    runs = []
    for _ in range(args.rounds):
        for with_slow in (False, True):
            run = one_run(with_slow, args)
            runs.append(run)
            print(
                f"slow={with_slow!s:5} p50 {run['latency']['p50_ms']} p99 {run['latency']['p99_ms']} ms"
                f"  rss peak {run['rss_peak_mb']} MB  slow closed {run['slow_consumers_closed']}"
            )

    def med(with_slow: bool, key: str) -> float:
        return statistics.median(
            r["latency"][key] for r in runs if r["with_slow_consumer"] is with_slow
        )

    base, slow = med(False, "p99_ms"), med(True, "p99_ms")
    figures = {
        "runs": runs,
        "p99_ms_without": base,
        "p99_ms_with": slow,
        "p50_ms_without": med(False, "p50_ms"),
        "p50_ms_with": med(True, "p50_ms"),
        "p99_change": round(slow / base - 1, 3),
        "rss_peak_mb_without": max(r["rss_peak_mb"] for r in runs if not r["with_slow_consumer"]),
        "rss_peak_mb_with": max(r["rss_peak_mb"] for r in runs if r["with_slow_consumer"]),
        "target": "readers' p99 within +10 %; RSS bounded",
    }
    print(f"p99 without {base} ms, with {slow} ms: {figures['p99_change']:+.1%}")
    plot(runs, str(RESULTS / f"{NAME}.png"))
    write_result(NAME, figures, vars(args))


if __name__ == "__main__":
    main()
