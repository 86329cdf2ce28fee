"""`make cluster`: redis-server, N dubsim processes sharing it, and nginx in front on one port.

    python -m deploy.cluster [--processes 2] [--port 4780] [--dir DIR]

Everything runs in the foreground and stops on Ctrl-C (or SIGTERM), each process by its PID.
Redis runs with `appendonly yes` (fsync every second): an acknowledged change survives a
restart of Redis. The tests drive the same class (tests/cluster/).
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from deploy.redis_server import RedisServer

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not answer in time")


class Cluster:
    """The processes of one local cluster, started and stopped together."""

    def __init__(
        self,
        directory: Path,
        *,
        processes: int = 2,
        port: int | None = None,
        admin_token: str | None = None,
        env: dict[str, str] | None = None,
        appendfsync: str = "everysec",
    ) -> None:
        self.dir = directory
        self.port = port or free_port()
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.env = env or {}
        self.appendfsync = appendfsync
        self.backend_ports = [free_port() for _ in range(processes)]
        self.backends: list[subprocess.Popen[bytes] | None] = [None] * processes
        self.redis_server: RedisServer | None = None
        self.redis: subprocess.Popen[bytes] | None = None  # its process, for signals
        self.nginx: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def redis_url(self) -> str:
        return f"unix://{self.dir / 'redis.sock'}"

    def backend_url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.backend_ports[index]}"

    def start(self) -> None:
        self.start_redis()
        for index in range(len(self.backends)):
            self.start_backend(index)
        self.start_nginx()

    def start_redis(self) -> None:
        if self.redis_server is not None:  # a restart: the old one is dead or is stopped now
            self.redis_server.stop()
        server = RedisServer(self.dir, appendonly=True, appendfsync=self.appendfsync)
        server.start()
        self.redis_server, self.redis = server, server.proc

    def start_backend(self, index: int) -> None:
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "REDIS_URL": self.redis_url,
            "ADMIN_TOKEN": self.admin_token,
            "PORT": str(self.backend_ports[index]),
            "HOST": "127.0.0.1",
            **self.env,
        }
        log = open(self.dir / f"dubsim-{index}.log", "ab")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [sys.executable, "-m", "service"], cwd=ROOT, env=env, stdout=log, stderr=log
        )
        log.close()
        self.backends[index] = proc
        _wait_http(self.backend_url(index) + "/healthz", 30, proc)

    def start_nginx(self) -> None:
        servers = "\n".join(
            f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=2s;" for p in self.backend_ports
        )
        conf = (HERE / "nginx.conf").read_text()
        conf = conf.replace("{prefix}", str(self.dir)).replace("{port}", str(self.port))
        conf = conf.replace("{servers}", servers)
        path = self.dir / "nginx.conf"
        path.write_text(conf)
        self.nginx = subprocess.Popen(
            [NGINX, "-p", str(self.dir), "-c", str(path), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        _wait_http(self.url + "/healthz", 10, self.nginx)

    def kill_backend(self, index: int, sig: int = signal.SIGKILL) -> None:
        proc = self.backends[index]
        if proc is not None and proc.poll() is None:
            proc.send_signal(sig)
            proc.wait(timeout=30)
        self.backends[index] = None

    def stop(self) -> None:
        procs = [self.nginx, *self.backends]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            if proc is not None:
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        if self.nginx is not None and self.nginx.stderr is not None:
            self.nginx.stderr.close()
        if self.redis_server is not None:
            self.redis_server.stop()
        self.nginx, self.redis, self.redis_server = None, None, None
        self.backends = [None] * len(self.backends)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m deploy.cluster", description=__doc__)
    parser.add_argument("--processes", type=int, default=2, help="dubsim processes (default 2)")
    parser.add_argument("--port", type=int, default=4780, help="nginx's port (default 4780)")
    parser.add_argument("--dir", help="where Redis keeps its AOF and logs go (default: temp)")
    args = parser.parse_args()
    directory = Path(args.dir or tempfile.mkdtemp(prefix="dubsim-cluster-"))
    directory.mkdir(parents=True, exist_ok=True)
    cluster = Cluster(
        directory,
        processes=args.processes,
        port=args.port,
        admin_token=os.environ.get("ADMIN_TOKEN"),
    )
    stop = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        cluster.start()
        backends = ", ".join(cluster.backend_url(i) for i in range(args.processes))
        print(f"dubsim cluster serving on {cluster.url}  (backends: {backends})")
        print(f"admin token: {cluster.admin_token}")
        print(f"redis: {cluster.redis_url} (appendonly yes), logs and AOF in {directory}")
        print("Ctrl-C stops everything.", flush=True)
        while not stop:
            time.sleep(0.2)
    finally:
        cluster.stop()


if __name__ == "__main__":
    main()
