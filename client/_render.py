"""How the `dubsim` command line shows things: JSON for scripts, rich tables and bars for people."""

from __future__ import annotations

import enum
import sys
from collections.abc import Callable, Sequence
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
    sys.stdout.write(msgspec.json.format(msgspec.json.encode(to_wire(value)).decode(), indent=2))
    sys.stdout.write("\n")
    sys.stdout.flush()


# fields the server writes only on media jobs (docs/protocol.md): absent elsewhere, as there
_ABSENT_WHEN_NONE = frozenset({"video", "stage", "stage_progress", "fail_stage"})


def to_wire(value: Any, key: str = "") -> Any:
    """`value` as the server's JSON has it: every field, times as the server writes them
    (`...T06:00:00.123Z` on jobs, microseconds on an event's `at`). Events leave out what the
    server's frames leave out (no `at` on a snapshot, `reason` only on a reset)."""
    if isinstance(value, msgspec.Struct):
        fields = {
            f: to_wire(getattr(value, f), f)
            for f in value.__struct_fields__
            if not (f in _ABSENT_WHEN_NONE and getattr(value, f) is None)
        }
        if isinstance(value, Event):
            fields = {k: v for k, v in fields.items() if v is not None or k == "seq"}
        return fields
    if isinstance(value, datetime):
        return _iso(value, micro=key == "at")
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    if isinstance(value, dict):
        return {k: to_wire(v, k) for k, v in value.items()}
    return value


def _iso(at: datetime, *, micro: bool) -> str:
    at = at.astimezone(UTC)
    fraction = f"{at.microsecond:06d}" if micro else f"{at.microsecond // 1000:03d}"
    return f"{at:%Y-%m-%dT%H:%M:%S}.{fraction}Z"


def print_jobs(jobs: list[Job], as_json: bool, out: Console, *, single: bool = False) -> None:
    if as_json:
        print_json(jobs[0] if single else jobs)
        return
    out.print(jobs_table(jobs, out.width, "created", lambda j: j.created_at.strftime("%H:%M:%S")))


GAP = 2  # between columns: one space of padding on each side


def jobs_table(
    jobs: Sequence[Job], width: int, last: str, last_value: Callable[[Job], str], **kw: Any
) -> Table:
    """Jobs as a table that fits `width` columns. Ids and statuses always print whole (an id
    is copied from here); the user column gets what the others leave, cut short with an
    ellipsis if it must."""
    rows = [
        (
            job.id,
            job.user_id,
            job.role.value,
            job.status,
            f"{job.progress}%",
            f"{job.attempt}/{job.max_attempts}",
            last_value(job),
        )
        for job in jobs
    ]
    headers = ("id", "user", "role", "status", "%", "try", last)
    widths = [max([len(h), *(len(str(row[i])) for row in rows)]) for i, h in enumerate(headers)]
    room = width - sum(widths) + widths[1] - GAP * (len(headers) - 1)
    columns = [Column(h, no_wrap=True, min_width=w) for h, w in zip(headers, widths, strict=True)]
    columns[1] = Column("user", no_wrap=True, overflow="ellipsis", max_width=max(4, room))
    columns[4].justify = "right"
    table = Table(*columns, box=None, pad_edge=False, padding=(0, 1), header_style="bold", **kw)
    for row in rows:
        table.add_row(*row[:3], styled(row[3]), *row[4:])
    return table


def event_line(event: Event) -> str:
    """One plain line per event, for a log or a pipe: seq, type, and the job's id and state."""
    parts = [str(event.seq), event.type]
    job = event.job
    if job is not None:
        parts += [job.id, job.status.value, f"{job.progress}%", f"{job.attempt}/{job.max_attempts}"]
        if job.result_url and job.status is Status.COMPLETED:
            parts.append(job.result_url)
        elif job.error is not None and job.status is not Status.PROCESSING:
            parts.append(f"{job.error.code}: {job.error.message}")
    if event.reason:
        parts.append(event.reason)
    return " ".join(parts)


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


def watch_table(jobs: dict[str, Job], last: list[Event], width: int) -> Table:
    caption = f"seq {last[0].seq}: {last[0].type}" if last else "waiting for events..."
    newest = sorted(jobs.values(), key=lambda j: j.created_at, reverse=True)[:30]
    return jobs_table(newest, width, "eta", eta, title="dubsim jobs (live)", caption=caption)
