"""What every benchmark shares: free ports, server processes, percentiles, result files."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
PYTHON = sys.executable
HOST = "127.0.0.1"
TOKEN = "bench-admin-token"


def raise_nofile(want: int = 65536) -> int:
    """Raise this process's open-file limit as far as the hard limit allows (children inherit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_http(url: str, timeout: float = 20.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Until `url` answers 200 (e.g. /healthz); never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{url} did not answer within {timeout} s")
        time.sleep(0.05)


class Proc:
    """A child process on a loopback port, stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: Sequence[str], port: int, health: str) -> None:
        self.argv = list(argv)
        self.port = port
        self.url = f"http://{HOST}:{port}"
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (lives as long as the process)
        self.proc = subprocess.Popen(
            self.argv, cwd=ROOT, stdout=self._log, stderr=subprocess.STDOUT
        )
        try:
            wait_http(self.url + health, proc=self.proc)
        except Exception:
            self.stop()
            self._log.seek(0)
            sys.stderr.write(self._log.read().decode(errors="replace")[-2000:])
            raise
        self.ps = psutil.Process(self.proc.pid)

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self) -> Proc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def dubsim(port: int | None = None, **flags: Any) -> Proc:
    """Start `python -m service` with these settings (flag names as in service/settings.py),
    on `port` (a restart on the same port) or a free one."""
    port = port or free_port()
    settings = {
        "db": ":memory:",
        "admin_token": TOKEN,
        "heartbeat_s": 600,
        "premium_rate_limit": 1_000_000,  # quotas out of the way: the benches measure speed
        "max_in_flight": 10_000_000,
        **flags,
    }
    argv = [PYTHON, "-m", "service", "--port", str(port)]
    for name, value in settings.items():
        argv += ["--" + name.replace("_", "-"), str(value)]
    return Proc(argv, port, "/healthz")


def bare(kind: str) -> Proc:
    """Start a bare aiohttp baseline server (bench/_bare.py): hello, ws or sse."""
    port = free_port()
    return Proc([PYTHON, "-m", "bench._bare", kind, "--port", str(port)], port, "/healthz")


@contextlib.contextmanager
def temp_db() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="dubsim-bench-") as tmp:
        yield str(Path(tmp) / "bench.db")


def pct(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100), nearest-rank on sorted data; None for no data."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1))))
    return ordered[rank]


def summary_ms(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p99/max (and count) of durations given in seconds, in milliseconds."""

    def ms(v: float | None) -> float | None:
        return None if v is None else round(v * 1000, 3)

    return {
        "n": len(seconds),
        "p50_ms": ms(pct(seconds, 50)),
        "p99_ms": ms(pct(seconds, 99)),
        "max_ms": ms(max(seconds) if seconds else None),
        "mean_ms": ms(statistics.fmean(seconds) if seconds else None),
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "service", "client"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return out.stdout.strip() + ("+dirty" if dirty else "")
    except OSError:
        return "unknown"


def write_result(name: str, figures: dict[str, Any], params: dict[str, Any]) -> Path:
    """bench/results/<name>.json with the machine, commit, date and command beside the figures."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {
        "benchmark": name,
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "git_commit": git_commit(),
        "command": " ".join(
            shlex.quote(a) for a in ["python", "-m", f"bench.{name}", *sys.argv[1:]]
        ),
        "machine": {
            "cores": os.cpu_count(),
            "cpu": _cpu_model(),
            "python": sys.version.split()[0],
            "platform": sys.platform,
            # other work on a shared machine shows here: compare ratios from the same run
            "load_average_1m": round(os.getloadavg()[0], 2),
        },
        "params": params,
        "figures": figures,
    }
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {path.relative_to(ROOT)}")
    return path


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown"


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def child(module: str, *args: Any) -> subprocess.Popen[str]:
    """Start `python -m <module> args...` with pipes for a JSON-lines conversation."""
    return subprocess.Popen(
        [PYTHON, "-m", module, *map(str, args)],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def read_json_line(proc: subprocess.Popen[str]) -> Any:
    """The next JSON line a child prints (raises if it exits first; children bound themselves)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"child {proc.args} exited ({proc.wait()})")
    return json.loads(line)


def tell(proc: subprocess.Popen[str], message: Any) -> None:
    assert proc.stdin is not None
    proc.stdin.write(json.dumps(message) + "\n")
    proc.stdin.flush()
