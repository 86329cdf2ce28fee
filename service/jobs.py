"""JobService: the state machine, and the only writer of job state.

Every change goes the same way: check the transition is legal, mutate the job, encode it once,
hand the bytes to the store (group-committed) and publish one event to the hub.

    pending ──> processing ──> completed                         (terminal)
       ▲            ├──> failed ──(retry after backoff)──> pending
       │            └──> permanently_failed                      (terminal; admin retry)
       └── cancel from pending / processing / failed ──> cancelled (terminal)
"""

from __future__ import annotations

import base64
import hashlib
import os
import time
from collections.abc import Callable, Iterator
from typing import Final, Protocol

import msgspec

from .errors import Conflict, IdempotencyKeyReused, NotFound, RateLimited
from .hub import Hub
from .models import (
    EventType,
    Job,
    JobError,
    Role,
    Status,
    SubmitRequest,
    iso_ms,
    iso_us,
    parse_iso,
)
from .ratelimit import Decision, MovingWindow
from .settings import Config, ConfigPatch
from .store import Store, StoredJob

# The only legal moves. Requeue on restart/retry goes back to pending.
TRANSITIONS: Final[dict[Status, frozenset[Status]]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.CANCELLED}),
    Status.PROCESSING: frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.PERMANENTLY_FAILED,
            Status.CANCELLED,
            Status.PENDING,  # requeued after a restart interrupted the attempt
        }
    ),
    Status.FAILED: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.PERMANENTLY_FAILED: frozenset({Status.PENDING}),  # only by an admin retry
    Status.COMPLETED: frozenset(),
    Status.CANCELLED: frozenset(),
}

SEQ_BLOCK: Final = 100_000  # seqs reserved ahead in the store, so a crash never reuses one


class Record:
    """A job in memory with its encoded form (served to GETs as is) and bookkeeping."""

    __slots__ = ("data", "idempotency_key", "job", "ordinal", "request_hash", "version")

    def __init__(self, stored: StoredJob, data: bytes, version: int) -> None:
        self.job = stored.job
        self.ordinal = stored.ordinal
        self.idempotency_key = stored.idempotency_key
        self.request_hash = stored.request_hash
        self.data = data
        self.version = version  # seq of the last change: the ETag

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class Dispatcher(Protocol):
    """What JobService needs from the scheduler (kept abstract to keep the arrow one-way)."""

    def enqueue(self, record: Record) -> None: ...
    def interrupt(self, job_id: str) -> None: ...
    def start_now(self, count: int) -> list[Record]: ...
    def config_changed(self) -> None: ...
    def poll_hint(self, record: Record) -> float | None: ...


class _NoDispatcher:
    """Until a scheduler attaches itself: queues nothing, starts nothing."""

    def enqueue(self, record: Record) -> None:
        pass

    def interrupt(self, job_id: str) -> None:
        pass

    def start_now(self, count: int) -> list[Record]:
        return []

    def config_changed(self) -> None:
        pass

    def poll_hint(self, record: Record) -> float | None:
        return None


class JobService:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        config: Config,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self.clock = clock
        self.dispatcher: Dispatcher = _NoDispatcher()
        self.jobs: dict[str, Record] = {}  # insertion order = submission order
        self.window = MovingWindow(clock=clock)
        self._idempotency: dict[tuple[str, str], str] = {}
        self._next_ordinal = 1
        self._seq_floor = 0
        self._encoder = msgspec.json.Encoder()
        self.submitted: dict[Role, int] = {Role.FREE: 0, Role.PREMIUM: 0}
        self.rate_limited = 0

    # ---- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        """Load what the store has; requeue attempts a restart interrupted."""
        loaded = await self.store.open()
        self.hub.seq = loaded.seq_floor
        self._reserve_seq(self.hub.seq)
        self.hub.on_seq = self._on_seq
        for stored in loaded.jobs:
            record = Record(stored, self._encoder.encode(stored.job), 0)
            self.jobs[stored.job.id] = record
            self.hub.track(stored.job.id, stored.job.user_id, record.data)
            self._next_ordinal = max(self._next_ordinal, stored.ordinal + 1)
            if stored.idempotency_key is not None:
                self._idempotency[(stored.job.user_id, stored.idempotency_key)] = stored.job.id
        for user, at in loaded.rate_hits:
            self.window.record(user, at)
        for record in list(self.jobs.values()):
            if record.job.status is Status.PROCESSING:
                # the attempt died with the process, not of its own failure: it doesn't count
                self._move(
                    record,
                    Status.PENDING,
                    EventType.RETRYING,
                    attempt=record.job.attempt - 1,
                    progress=0,
                    eta=None,
                )
            if record.job.status is Status.PENDING:
                self.dispatcher.enqueue(record)
            elif record.job.status is Status.FAILED:  # its retry timer died with the process
                self._move(record, Status.PENDING, EventType.RETRYING, error=None)
                self.dispatcher.enqueue(record)

    def _on_seq(self, seq: int) -> None:
        if seq >= self._seq_floor - SEQ_BLOCK // 2:
            self._reserve_seq(seq)

    def _reserve_seq(self, seq: int) -> None:
        self._seq_floor = seq + SEQ_BLOCK
        self.store.reserve_seq(self._seq_floor)

    # ---- reads -----------------------------------------------------------------

    def get(self, job_id: str) -> Record:
        record = self.jobs.get(job_id)
        if record is None:
            raise NotFound("no job with this id", job_id=job_id[:200])
        return record

    def iter_jobs(
        self,
        *,
        user: str | None = None,
        status: Status | None = None,
        role: Role | None = None,
        before: int | None = None,
    ) -> Iterator[Record]:
        """Newest first; `before` is an ordinal (the cursor)."""
        for record in reversed(self.jobs.values()):
            if before is not None and record.ordinal >= before:
                continue
            job = record.job
            if user is not None and job.user_id != user:
                continue
            if status is not None and job.status is not status:
                continue
            if role is not None and job.role is not role:
                continue
            yield record

    def poll_hint(self, record: Record) -> float | None:
        """When polling this job again is useful (None once it is terminal)."""
        return self.dispatcher.poll_hint(record)

    # ---- commands --------------------------------------------------------------

    async def submit(
        self, user_id: str, request: SubmitRequest, idempotency_key: str | None = None
    ) -> tuple[Record, bool, Decision | None]:
        """Accept a job. Returns (record, created, rate decision). Durable before it returns."""
        request_hash = _hash(msgspec.json.encode(request)) if idempotency_key else None
        if idempotency_key is not None:
            existing = self._idempotency.get((user_id, idempotency_key))
            if existing is not None and existing in self.jobs:
                record = self.jobs[existing]
                if record.request_hash != request_hash:
                    raise IdempotencyKeyReused(
                        "this Idempotency-Key was used with a different body",
                        job_id=record.job.id,
                    )
                return record, False, None
        decision = None
        if request.role is Role.FREE:
            decision = self.window.hit(user_id, self.config.rate_limit)
            if decision.allowed:
                self.store.record_hit(user_id, self.clock())
            else:
                self.rate_limited += 1
                raise RateLimited(
                    f"free plan: at most {decision.limit} submissions per hour",
                    limit=decision.limit,
                    remaining=decision.remaining,
                    reset_s=decision.reset_s,
                )
        now = self.clock()
        job = Job(
            id=_new_id(),
            user_id=user_id,
            role=request.role,
            status=Status.PENDING,
            progress=0,
            attempt=0,
            max_attempts=self.config.max_attempts,
            priority=1 if request.role is Role.PREMIUM else 0,
            target_language=request.target_language,
            created_at=iso_ms(now),
            updated_at=iso_ms(now),
            scenario=request.scenario,
        )
        stored = StoredJob(job, self._next_ordinal, idempotency_key, request_hash)
        self._next_ordinal += 1
        record = Record(stored, self._encoder.encode(job), 0)
        self.jobs[job.id] = record
        if idempotency_key is not None:
            self._idempotency[(user_id, idempotency_key)] = job.id
        try:
            await self.store.insert(stored)
        except BaseException:
            # not durable, so not accepted: forget it as if it never was
            self.jobs.pop(job.id, None)
            if idempotency_key is not None:
                self._idempotency.pop((user_id, idempotency_key), None)
            raise
        self.submitted[job.role] += 1
        self._emit(record, EventType.CREATED, now, persist=False)
        self.dispatcher.enqueue(record)
        return record, True, decision

    def cancel(self, job_id: str, reason: str | None) -> Record:
        record = self.get(job_id)
        if record.job.status.terminal:
            raise Conflict(
                f"job is {record.job.status}, it can no longer be cancelled",
                status=record.job.status,
            )
        self._move(
            record,
            Status.CANCELLED,
            EventType.CANCELLED,
            cancel_reason=reason or "cancelled by admin",
            finished=True,
            eta=None,
        )
        self.dispatcher.interrupt(job_id)
        return record

    def retry(self, job_id: str) -> Record:
        record = self.get(job_id)
        if record.job.status is not Status.PERMANENTLY_FAILED:
            raise Conflict(
                f"only permanently_failed jobs can be retried; this one is {record.job.status}",
                status=record.job.status,
            )
        self._move(
            record,
            Status.PENDING,
            EventType.RETRYING,
            attempt=0,
            progress=0,
            error=None,
            finished_at=None,
        )
        self.dispatcher.enqueue(record)
        return record

    def process(self, count: int) -> list[Record]:
        return self.dispatcher.start_now(count)

    def cleanup(self, older_than_s: float | None = None) -> int:
        """Delete finished jobs (optionally only those finished more than N s ago)."""
        cutoff = None if older_than_s is None else self.clock() - older_than_s
        doomed = [
            record
            for record in self.jobs.values()
            if record.job.status.terminal
            and (cutoff is None or _epoch(record.job.finished_at or record.job.created_at) < cutoff)
        ]
        for record in doomed:
            del self.jobs[record.job.id]
            if record.idempotency_key is not None:
                self._idempotency.pop((record.job.user_id, record.idempotency_key), None)
            self._emit(record, EventType.DELETED, self.clock(), persist=False)
        self.store.delete([r.ordinal for r in doomed])
        return len(doomed)

    def update_config(self, patch: ConfigPatch) -> Config:
        self.config = patch.apply(self.config)
        self.dispatcher.config_changed()
        return self.config

    # ---- transitions driven by the scheduler -----------------------------------

    def begin_attempt(self, record: Record, duration_s: float | None) -> bool:
        """pending -> processing. False if the job moved on meanwhile (e.g. cancelled)."""
        if record.job.status is not Status.PENDING or record.job.id not in self.jobs:
            return False
        now = self.clock()
        self._move(
            record,
            Status.PROCESSING,
            EventType.STARTED,
            attempt=record.job.attempt + 1,
            progress=0,
            started_at=iso_ms(now),
            eta=None if duration_s is None else iso_ms(now + duration_s),
            error=None,
        )
        return True

    def report_progress(self, record: Record, progress: int) -> None:
        if record.job.status is Status.PROCESSING and progress > record.job.progress:
            self._move(record, Status.PROCESSING, EventType.PROGRESS, progress=min(progress, 99))

    def complete(self, record: Record) -> bool:
        if record.job.status is not Status.PROCESSING:
            return False
        self._move(
            record,
            Status.COMPLETED,
            EventType.COMPLETED,
            progress=100,
            finished=True,
            eta=None,
            result_url=f"/v1/jobs/{record.job.id}/result.{record.job.target_language}.vtt",
        )
        return True

    def fail_attempt(self, record: Record, code: str, message: str, *, retryable: bool) -> Status:
        """processing -> failed (a retry follows) or permanently_failed."""
        if record.job.status is not Status.PROCESSING:
            return record.job.status
        error = JobError(code, message)
        if retryable and record.job.attempt < record.job.max_attempts:
            self._move(record, Status.FAILED, EventType.FAILED, error=error, eta=None)
        else:
            self._move(
                record,
                Status.PERMANENTLY_FAILED,
                EventType.PERMANENTLY_FAILED,
                error=error,
                finished=True,
                eta=None,
            )
        return record.job.status

    def requeue(self, record: Record) -> bool:
        """failed -> pending once its backoff is over."""
        if record.job.status is not Status.FAILED or record.job.id not in self.jobs:
            return False
        self._move(record, Status.PENDING, EventType.RETRYING, progress=0)
        self.dispatcher.enqueue(record)
        return True

    # ---- the one way state changes ---------------------------------------------

    def _move(
        self,
        record: Record,
        to: Status,
        event: EventType,
        *,
        finished: bool = False,
        **fields: object,
    ) -> None:
        job = record.job
        if to is not job.status and to not in TRANSITIONS[job.status]:
            raise Conflict(f"illegal transition {job.status} -> {to}")
        now = self.clock()
        if finished:
            fields["finished_at"] = iso_ms(now)
        record.job = msgspec.structs.replace(
            job,
            status=to,
            updated_at=iso_ms(now),
            **fields,
        )
        self._emit(record, event, now, persist=True)

    def _emit(self, record: Record, event: EventType, now: float, *, persist: bool) -> None:
        record.data = self._encoder.encode(record.job)
        pub = self.hub.publish(event, iso_us(now), record.job.id, record.job.user_id, record.data)
        record.version = pub.seq
        if persist:
            self.store.save(record.ordinal, record.data)


class _Ids:
    """Unguessable job ids (128 random bits, URL-safe), from the OS's CSPRNG like
    secrets.token_urlsafe, but one read per 256 ids: a syscall per submission showed up."""

    SIZE = 16
    BATCH = 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(self.SIZE * self.BATCH), 0
        raw = self._pool[self._at : self._at + self.SIZE]
        self._at += self.SIZE
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


_new_id = _Ids()


def _hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()[:18]).decode()


def _epoch(text: str) -> float:
    return parse_iso(text)
