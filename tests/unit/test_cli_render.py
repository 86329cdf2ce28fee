"""What the `dubsim` command line shows at 80 columns, without a TTY, and with --json."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import StringIO
from typing import Any

import msgspec
from rich.console import Console

from client import Event, Job
from client import _render as render
from tests.conftest import ApiFactory

STATUSES = ["pending", "processing", "completed", "failed", "permanently_failed", "cancelled"]


def job(n: int, status: str, user: str = "a-rather-long-user-name@example.com") -> Job:
    at = datetime(2026, 1, 2, 3, 4, 5, 678_000, tzinfo=UTC)
    return msgspec.convert(
        {
            "id": f"{n:02d}WhdSq-a7ZirzHURP_1w",  # 22 characters, like the server's ids
            "user_id": user,
            "role": "premium",
            "status": status,
            "progress": 100,
            "attempt": 10,
            "max_attempts": 10,
            "priority": 1,
            "target_language": "es",
            "created_at": at,
            "eta": at + timedelta(hours=1) if status == "processing" else None,
        },
        Job,
    )


def rendered(renderable: Any, width: int = 80) -> list[str]:
    console = Console(width=width, file=StringIO(), color_system=None)
    console.print(renderable)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return [line.rstrip() for line in text.splitlines()]


def assert_whole(lines: list[str], jobs: list[Job]) -> None:
    assert all(len(line) <= 80 for line in lines), "\n".join(lines)
    for j in jobs:
        (row,) = [line for line in lines if j.id in line]  # the id on one line, whole
        assert f" {j.status.value} " in f" {row} "  # the status whole too, on the same line


def test_jobs_table_keeps_ids_and_statuses_whole_at_80_columns() -> None:
    jobs = [job(n, status) for n, status in enumerate(STATUSES)]
    lines = rendered(render.jobs_table(jobs, 80, "created", lambda j: "03:04:05"))
    assert_whole(lines, jobs)
    assert len(lines) == len(jobs) + 1  # a header and one line per job: nothing wraps
    assert all("03:04:05" in line for line in lines[1:])  # no column was dropped


def test_watch_table_keeps_ids_and_statuses_whole_at_80_columns() -> None:
    jobs = {j.id: j for j in (job(n, status) for n, status in enumerate(STATUSES))}
    lines = rendered(render.watch_table(jobs, [], 80))
    assert_whole(lines, list(jobs.values()))


def test_short_user_names_are_not_cut() -> None:
    lines = rendered(render.jobs_table([job(1, "completed", "alice")], 80, "t", lambda j: ""))
    assert "alice" in lines[1]


def test_event_line_is_plain_and_whole() -> None:
    j = job(3, "permanently_failed")
    line = render.event_line(Event(seq=41, type="job.permanently_failed", job=j))
    assert line.startswith(f"41 job.permanently_failed {j.id} permanently_failed 100% 10/10")
    assert "\n" not in line and "[" not in line  # no rich markup in a pipe


async def test_json_output_is_the_servers_own_encoding(api: ApiFactory) -> None:
    client = await api(translation_delay=0.05)
    resp = await client.post("/v1/jobs", json={"scenario": {"duration_s": 0.05}})
    raw = await (await client.get(f"/v1/jobs/{(await resp.json())['id']}?wait=5")).read()
    decoded = msgspec.json.decode(raw, type=Job)
    assert render.to_wire(decoded) == json.loads(raw)  # same fields, same time strings

    resp = await client.get(f"/v1/events?job={decoded.id}&last_event_id=0")
    frames: list[dict[str, Any]] = []
    while len(frames) < 3:
        line = (await resp.content.readline()).decode()
        if line.startswith("data: "):
            frames.append(json.loads(line[6:]))
    resp.close()
    for frame in frames:
        event = msgspec.convert(frame, Event)
        assert render.to_wire(event) == frame
    assert any("at" in frame for frame in frames)  # an event time, in microseconds
