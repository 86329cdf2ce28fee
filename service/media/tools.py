"""ffmpeg, ffprobe and espeak-ng as asyncio subprocesses: capped, cancellable, never blocking.

Every tool runs in its own process group (a new session), under one semaphore per service
(`MEDIA_WORKERS`). A cancelled caller kills the whole group at once (SIGKILL) and reaps it
before the CancelledError goes on, so a cancel leaves no process behind; and a tool gets
SIGKILL when the server dies (Linux parent-death signal, set by `setpriv`), so a crash leaves
none either. ffmpeg's progress
comes from its `-progress pipe:1` output (`out_time_us=` lines), not from a timer.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
from collections.abc import Callable, Sequence
from typing import Final

from ..errors import ValidationFailed

TOOLS: Final = ("ffmpeg", "ffprobe", "espeak-ng")
NICE: Final = 10  # the tools' scheduling priority (nice), relative to the default 0
STDERR_TAIL: Final = 2000  # bytes of a failed tool's stderr kept for the log and the error


class MediaUnavailable(ValidationFailed):
    """A tool the media pipeline needs is not installed: 422 media_unavailable."""

    code = "media_unavailable"


class ToolFailed(Exception):
    """A tool exited non-zero; `stderr` is the tail of what it said."""

    def __init__(self, tool: str, returncode: int, stderr: str) -> None:
        super().__init__(f"{tool} exited with {returncode}: {stderr[-500:]}")
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr


class ToolTimedOut(ToolFailed):
    """A tool ran longer than the `timeout_s` it was given (and was killed)."""

    def __init__(self, tool: str, timeout_s: float) -> None:
        super().__init__(tool, -1, f"{tool} ran longer than {timeout_s:g} s")
        self.timeout_s = timeout_s


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


class Tools:
    """Where the tools are, and the cap on how many run at once."""

    def __init__(self, workers: int | None = None) -> None:
        self.paths: dict[str, str | None] = {name: shutil.which(name) for name in TOOLS}
        # util-linux's setpriv execs the tool with a parent-death signal: if this process is
        # killed (-9), its tools die with it instead of working on for nobody
        self.reaper = shutil.which("setpriv")
        self.workers = workers or default_workers()
        self._slots = asyncio.Semaphore(self.workers)
        self.running: set[int] = set()  # pids of the process groups alive now

    def missing(self) -> list[str]:
        return [name for name, path in self.paths.items() if path is None]

    def require(self) -> None:
        """Raise MediaUnavailable (422) naming what is missing."""
        missing = self.missing()
        if missing:
            raise MediaUnavailable(
                f"media jobs need {', '.join(missing)}, which this server does not have "
                "(install ffmpeg and espeak-ng)",
                missing=missing,
            )

    async def run(
        self,
        tool: str,
        args: Sequence[str],
        *,
        on_line: Callable[[str], None] | None = None,
        timeout_s: float | None = None,
    ) -> tuple[bytes, bytes]:
        """Run `tool args`, return (stdout, stderr) (ToolFailed on a non-zero exit).

        With `on_line`, stdout is read line by line as it comes (ffmpeg -progress) and each
        line is handed over; the stdout returned is then empty. With `timeout_s`, a tool still
        running that long after it started (not counting the wait for a slot) is killed:
        ToolTimedOut."""
        path = self.paths.get(tool)
        if path is None:
            self.require()
            raise MediaUnavailable(f"{tool} is not installed")
        async with self._slots:
            argv = [path, *args]
            if self.reaper is not None:
                argv = [self.reaper, "--pdeathsig", "KILL", *argv]
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: one kill ends all of it
            )
            self.running.add(proc.pid)
            # below the server's priority: on a busy machine the event loop gets the CPU
            # first, and the media work takes what is left
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, proc.pid, NICE)
            try:
                try:
                    async with asyncio.timeout(timeout_s):
                        out, err = await _communicate(proc, on_line)
                except TimeoutError:
                    raise ToolTimedOut(tool, timeout_s or 0.0) from None
            except BaseException:
                _kill_group(proc.pid)
                with contextlib.suppress(Exception):
                    # reaped here, shielded: a second cancel must not leave a zombie
                    await asyncio.shield(proc.wait())
                raise
            finally:
                self.running.discard(proc.pid)
        if proc.returncode != 0:
            text = err[-STDERR_TAIL:].decode(errors="replace")
            raise ToolFailed(tool, proc.returncode or -1, text)
        return out, err


async def _communicate(
    proc: asyncio.subprocess.Process, on_line: Callable[[str], None] | None
) -> tuple[bytes, bytes]:
    if on_line is None:
        return await proc.communicate()
    if proc.stdout is None or proc.stderr is None:  # both are PIPEs: never
        raise RuntimeError("subprocess without pipes")
    errors = asyncio.ensure_future(proc.stderr.read())
    try:
        async for raw in proc.stdout:
            on_line(raw.decode(errors="replace").strip())
        await proc.wait()
        return b"", await errors
    finally:
        if not errors.done():
            errors.cancel()


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class FfmpegProgress:
    """Turns `-progress` lines into a fraction of `duration_s` done, reported on change."""

    def __init__(self, duration_s: float, report: Callable[[float], None]) -> None:
        self.duration_us = max(duration_s, 1e-3) * 1e6
        self.report = report

    def __call__(self, line: str) -> None:
        key, _, value = line.partition("=")
        if key in ("out_time_us", "out_time_ms") and value.strip().lstrip("-").isdigit():
            # out_time_ms is microseconds too (an old ffmpeg misnomer)
            self.report(min(1.0, max(0.0, int(value) / self.duration_us)))
        elif key == "progress" and value == "end":
            self.report(1.0)
