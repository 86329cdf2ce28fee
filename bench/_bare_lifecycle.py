"""The least a durable job lifecycle costs in this stack: section 4's same-run baseline.

    python -m bench._bare lifecycle --port P --db FILE

aiohttp and SQLite (WAL, `synchronous=NORMAL`, as dubsim ships) and nothing else: `POST
/v1/jobs` makes a `Job` (dubsim's own struct and timestamp formatting), commits it and answers
201 only after the commit; a task per job then commits `processing` and, after that commit,
`completed`. Every change writes the job's row and an event row with its JSON, and waits for
its commit; commits are grouped (whatever arrived during one commit goes into the next), done
on the event loop's thread. That is what ack-after-durable with three states per job needs.
It freezes what start-up made out of the garbage collector, as the server does.

What it leaves out is everything dubsim adds to each request: authentication and plans, the
hourly window, `MAX_IN_FLIGHT`, Idempotency-Keys, compare-and-set, the read model and its
counts, the hub and the durable resume log's bound, the priority queue and `WORKERS`,
retries and deadlines, poll hints, metrics, webhooks. `/metrics` and `GET /v1/jobs` answer
just enough for `bench.lifecycle` to measure it like dubsim.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import msgspec
from aiohttp import web

from service.models import Job, Role, Status, iso_ms

_SCHEMA = (
    "CREATE TABLE jobs (ordinal INTEGER PRIMARY KEY, id TEXT NOT NULL, data BLOB NOT NULL)",
    "CREATE TABLE events (seq INTEGER PRIMARY KEY, type TEXT, at TEXT, ordinal INT, data BLOB)",
)
STATE = web.AppKey("state", dict)


class Lifecycle:
    """Jobs, the group-committing writer, and the per-job tasks."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        for statement in _SCHEMA:
            self.conn.execute(statement)
        self.encoder = msgspec.json.Encoder()
        self.pending: list[tuple[Job, int, str, asyncio.Future[None]]] = []
        self.wake = asyncio.Event()
        self.seq = 0
        self.ordinal = 0
        self.completed = 0
        self.last_finished = ""
        self.tasks: set[asyncio.Task[None]] = set()

    def commit(self, job: Job, ordinal: int, event: str) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.pending.append((job, ordinal, event, done))
        self.wake.set()
        return done

    async def writer(self) -> None:
        while True:
            await self.wake.wait()
            self.wake.clear()
            batch, self.pending = self.pending, []
            rows: dict[int, tuple[int, str, bytes]] = {}
            events = []
            for job, ordinal, event, _ in batch:
                self.seq += 1
                data = self.encoder.encode(job)
                rows[ordinal] = (ordinal, job.id, data)
                events.append((self.seq, event, job.updated_at, ordinal, data))
            self.conn.execute("BEGIN IMMEDIATE")
            self.conn.executemany(
                "INSERT INTO jobs VALUES (?, ?, ?)"
                " ON CONFLICT(ordinal) DO UPDATE SET data = excluded.data",
                list(rows.values()),
            )
            self.conn.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?)", events)
            self.conn.execute("COMMIT")
            for job, _, event, done in batch:
                if event == "job.completed":
                    self.completed += 1
                    self.last_finished = job.finished_at or ""
                done.set_result(None)

    async def run(self, job: Job, ordinal: int) -> None:
        now = iso_ms(time.time())
        job = msgspec.structs.replace(
            job, status=Status.PROCESSING, attempt=1, started_at=now, updated_at=now
        )
        await self.commit(job, ordinal, "job.started")
        now = iso_ms(time.time())
        job = msgspec.structs.replace(
            job, status=Status.COMPLETED, progress=100, finished_at=now, updated_at=now
        )
        await self.commit(job, ordinal, "job.completed")


async def submit(request: web.Request) -> web.Response:
    state: Lifecycle = request.app[STATE]["lifecycle"]
    body = await request.json()
    now = iso_ms(time.time())
    state.ordinal += 1
    job = Job(
        id=os.urandom(11).hex(),
        user_id=request.headers.get("X-User-Id", "anonymous"),
        role=Role(body.get("role", "free")),
        status=Status.PENDING,
        progress=0,
        attempt=0,
        max_attempts=3,
        priority=1,
        target_language="es",
        created_at=now,
        updated_at=now,
    )
    await state.commit(job, state.ordinal, "job.created")
    task = asyncio.create_task(state.run(job, state.ordinal))
    state.tasks.add(task)
    task.add_done_callback(state.tasks.discard)
    return web.Response(
        body=state.encoder.encode(job),
        status=201,
        headers={"Content-Type": "application/json", "Location": f"/v1/jobs/{job.id}"},
    )


async def metrics(request: web.Request) -> web.Response:
    done = request.app[STATE]["lifecycle"].completed
    return web.Response(text=f'dubsim_jobs{{status="completed"}} {done}\n')


async def last_finished(request: web.Request) -> web.Response:
    at = request.app[STATE]["lifecycle"].last_finished
    return web.json_response({"jobs": [{"finished_at": at}] if at else []})


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app(path: str, lifecycle_type: type[Lifecycle] = Lifecycle) -> web.Application:
    app = web.Application()
    app[STATE] = {}

    async def start(app: web.Application) -> None:
        lifecycle = lifecycle_type(path)
        app[STATE]["lifecycle"] = lifecycle
        app[STATE]["writer"] = asyncio.create_task(lifecycle.writer())

    app.on_startup.append(start)
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", last_finished)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    return app
