"""How the `dubsim` command line shows things: JSON for scripts, rich tables and bars for people."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TaskProgressColumn, TextColumn
from rich.table import Column, Table

from ._models import Event, Job, Status

STATUS_STYLE = {
    Status.PENDING: "yellow",
    Status.PROCESSING: "cyan",
    Status.COMPLETED: "green",
    Status.FAILED: "magenta",
    Status.PERMANENTLY_FAILED: "red",
    Status.CANCELLED: "bright_black",
}


def print_json(value: Any) -> None:
    # Plain stdout, not rich: scripts parse this.
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(value).decode(), indent=2) + "\n")
    sys.stdout.flush()


def print_jobs(jobs: list[Job], as_json: bool, out: Console, *, single: bool = False) -> None:
    if as_json:
        print_json(jobs[0] if single else jobs)
        return
    table = Table(
        Column("id", overflow="fold"), "user", "role", "status", "progress", "attempt", "created"
    )
    for job in jobs:
        table.add_row(
            job.id,
            job.user_id,
            job.role.value,
            styled(job.status),
            f"{job.progress}%",
            f"{job.attempt}/{job.max_attempts}",
            job.created_at.strftime("%H:%M:%S"),
        )
    out.print(table)


def styled(status: Status) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status.value}[/]"


def outcome_line(job: Job) -> str:
    line = f"{job.id} {styled(job.status)}"
    if job.status is Status.COMPLETED and job.result_url:
        line += f" {job.result_url}"
    elif job.error is not None:
        line += f" ({job.error.code}: {job.error.message})"
    elif job.cancel_reason:
        line += f" ({job.cancel_reason})"
    return line


def eta(job: Job) -> str:
    if job.terminal or job.eta is None:
        return ""
    left = (job.eta - datetime.now(UTC)).total_seconds()
    return f"ETA {max(0.0, left):.0f}s"


class Bars:
    """One rich progress bar per job: percent, status, attempt, ETA (on stderr)."""

    def __init__(self, console: Console, *, enabled: bool) -> None:
        self._enabled = enabled
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("{task.fields[status]}"),
            TextColumn("attempt {task.fields[attempt]}"),
            TextColumn("{task.fields[eta]}"),
            console=console,
            disable=not enabled,
        )
        self._tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bars:
        if self._enabled:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._enabled:
            self._progress.stop()

    def add(self, job: Job) -> None:
        self._tasks[job.id] = self._progress.add_task(job.id, total=100, **self._fields(job))

    def update(self, job: Job) -> None:
        task = self._tasks.get(job.id)
        if task is not None:
            self._progress.update(task, **self._fields(job))

    @staticmethod
    def _fields(job: Job) -> dict[str, Any]:
        return {
            "completed": job.progress,
            "status": styled(job.status),
            "attempt": f"{job.attempt}/{job.max_attempts}",
            "eta": eta(job),
        }


def watch_table(jobs: dict[str, Job], last: list[Event]) -> Table:
    caption = f"seq {last[0].seq}: {last[0].type}" if last else "waiting for events..."
    table = Table(
        "id",
        "user",
        "role",
        "status",
        "progress",
        "attempt",
        "eta",
        title="dubsim jobs (live)",
        caption=caption,
    )
    newest = sorted(jobs.values(), key=lambda j: j.created_at, reverse=True)[:30]
    for job in newest:
        table.add_row(
            job.id,
            job.user_id,
            job.role.value,
            styled(job.status),
            f"{job.progress}%",
            f"{job.attempt}/{job.max_attempts}",
            eta(job),
        )
    return table
