"""A real redis-server on a unix socket in a directory of ours, stopped by its PID.

Used by `make cluster` (deploy/cluster.py) and by the tests. `make test` installs the Debian
package; without it the Redis tests fail rather than skip, so a green run always means both
backends were tested.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    """One redis-server process. `appendonly` makes every acknowledged write survive a kill
    of Redis itself, within `appendfsync` (`always`: every write; `everysec`: up to a second
    on a power cut)."""

    def __init__(
        self, directory: Path, *, appendonly: bool = False, appendfsync: str = "always"
    ) -> None:
        self.directory = directory
        self.socket = str(directory / "redis.sock")
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout: float = 10.0) -> None:
        args = [
            REDIS_SERVER,
            "--port", "0",
            "--unixsocket", self.socket,
            "--unixsocketperm", "700",
            "--dir", str(self.directory),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", self.appendfsync,
            "--daemonize", "no",
            "--loglevel", "warning",
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {err}")
            try:
                with socket.socket(socket.AF_UNIX) as sock:
                    sock.connect(self.socket)
                    sock.sendall(b"PING\r\n")
                    if sock.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("redis-server did not answer PING in time")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=15)
        if self.proc is not None and self.proc.stderr is not None:
            self.proc.stderr.close()
        self.proc = None

    def flush(self) -> None:
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(self.socket)
            sock.sendall(b"FLUSHALL\r\n")
            reply = sock.recv(16)
            if not reply.startswith(b"+OK"):
                raise RuntimeError(f"FLUSHALL answered {reply!r}")
