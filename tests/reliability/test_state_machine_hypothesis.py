"""Random operation sequences against JobService never break its invariants.

Hypothesis drives service/jobs.py directly (in-memory SQLite store, a real Hub, no scheduler):
submit, the scheduler's moves (begin, progress, complete, fail, requeue), the admin's (cancel,
retry, cleanup) and config changes, in any order and on any job, legal or not. After every
step it checks what docs/architecture.md promises:

- terminal stays terminal, except an admin retry of a permanently_failed job;
- attempt <= max_attempts;
- seq strictly increases over the whole event log;
- each job's events are in order: created first, every status change a legal transition,
  nothing after job.deleted, and the job's ETag is the seq of its last event.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    rule,
)

from service.errors import Conflict, IdempotencyKeyReused, NotFound
from service.hub import Hub, Published, Wire
from service.jobs import TRANSITIONS, JobService, Record
from service.models import Role, Status, SubmitRequest
from service.settings import Config, ConfigPatch
from service.store import SQLiteStore


def _event(pub: Published) -> bytes:
    return msgspec.json.encode(
        {"seq": pub.seq, "type": str(pub.type), "job": msgspec.Raw(pub.job_bytes)}
    )


def _nothing(*_: object) -> bytes:
    return b""


RECORDER = Wire("recorder", _event, _nothing, _nothing)
TERMINAL_EVENT = {
    Status.COMPLETED: "job.completed",
    Status.PERMANENTLY_FAILED: "job.permanently_failed",
    Status.CANCELLED: "job.cancelled",
}


class JobServiceMachine(RuleBasedStateMachine):
    records = Bundle("records")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.hub = Hub(buffer_size=100, queue_limit=10**9)
        self.service = JobService(SQLiteStore(":memory:"), self.hub, Config(rate_limit=1000))
        self.loop.run_until_complete(self.service.open())
        self.sub = self.hub.open(RECORDER)
        self.hub.subscribe(self.sub, everything=True)
        self.last_seq = 0
        self.status: dict[str, Status] = {}  # each job's status as its events tell it
        self.last_event_seq: dict[str, int] = {}
        self.deleted: set[str] = set()
        self.retry_allowed: set[str] = set()
        self.events = 0

    def teardown(self) -> None:
        self.loop.run_until_complete(self.service.store.close())
        self.loop.close()

    # ---- operations ------------------------------------------------------------

    @rule(
        target=records,
        role=st.sampled_from(Role),
        user=st.sampled_from(["a", "b", "c"]),
        key=st.none() | st.sampled_from(["k1", "k2"]),
    )
    def submit(self, role: Role, user: str, key: str | None) -> Any:
        before = self.hub.seq
        try:
            record, created, _ = self.loop.run_until_complete(
                self.service.submit(user, SubmitRequest(role=role), key)
            )
        except IdempotencyKeyReused:
            # same key, other body: refused, and nothing happened
            assert key is not None and self.hub.seq == before
            return multiple()
        if not created:  # a replay of the same key and body: the same job, no event
            assert key is not None and self.hub.seq == before
            return multiple()
        return record

    @rule(record=records)
    def begin(self, record: Record) -> None:
        was = record.job.status
        started = self.service.begin_attempt(record, 1.0)
        assert started == (was is Status.PENDING and record.job.id not in self.deleted)

    @rule(record=records, progress=st.integers(-5, 150))
    def progress(self, record: Record, progress: int) -> None:
        self.service.report_progress(record, progress)

    @rule(record=records)
    def complete(self, record: Record) -> None:
        was = record.job.status
        assert self.service.complete(record) == (was is Status.PROCESSING)

    @rule(record=records, retryable=st.booleans())
    def fail(self, record: Record, retryable: bool) -> None:
        self.service.fail_attempt(record, "timeout", "t", retryable=retryable)

    @rule(record=records)
    def requeue(self, record: Record) -> None:
        self.service.requeue(record)

    @rule(record=records, reason=st.none() | st.text(max_size=5))
    def cancel(self, record: Record, reason: str | None) -> None:
        try:
            self.service.cancel(record.job.id, reason)
        except (Conflict, NotFound):
            assert record.job.status.terminal or record.job.id in self.deleted

    @rule(record=records)
    def retry(self, record: Record) -> None:
        job_id = record.job.id
        if record.job.status is Status.PERMANENTLY_FAILED and job_id not in self.deleted:
            self.retry_allowed.add(job_id)
        try:
            self.service.retry(job_id)
        except (Conflict, NotFound):
            assert record.job.status is not Status.PERMANENTLY_FAILED or job_id in self.deleted

    @rule(older_than=st.none() | st.just(0.0) | st.just(3600.0))
    def cleanup(self, older_than: float | None) -> None:
        before = {j for j, r in self.service.jobs.items() if r.job.status.terminal}
        deleted = self.service.cleanup(older_than)
        if older_than is None:
            assert deleted == len(before)

    @rule(max_attempts=st.integers(1, 4))
    def config(self, max_attempts: int) -> None:
        self.service.update_config(ConfigPatch(max_attempts=max_attempts))

    # ---- invariants ------------------------------------------------------------

    @invariant()
    def events_are_consistent(self) -> None:
        frames = list(self.sub._frames)
        self.sub._frames.clear()
        for frame in frames:
            event: dict[str, Any] = msgspec.json.decode(frame)
            job = event["job"]
            seq, kind, job_id = event["seq"], event["type"], job["id"]
            to = Status(job["status"])
            assert seq > self.last_seq, f"seq {seq} after {self.last_seq}"
            self.last_seq = seq
            self.events += 1
            assert job_id not in self.deleted, f"event {kind} after job.deleted"
            assert seq > self.last_event_seq.get(job_id, 0)
            self.last_event_seq[job_id] = seq
            was = self.status.get(job_id)
            if was is None:
                assert kind == "job.created" and to is Status.PENDING
            elif kind == "job.deleted":
                assert was.terminal and to is was
                self.deleted.add(job_id)
            elif was is not to:
                assert to in TRANSITIONS[was], f"{was} -> {to}"
                if was.terminal:  # the one way out of a terminal state
                    assert was is Status.PERMANENTLY_FAILED and job_id in self.retry_allowed
                    assert kind == "job.retrying"
                    self.retry_allowed.discard(job_id)
                if to.terminal:
                    assert kind == TERMINAL_EVENT[to]
            else:
                assert kind == "job.progress" and to is Status.PROCESSING
            self.status[job_id] = to

    @invariant()
    def jobs_agree_with_their_events(self) -> None:
        for job_id, record in self.service.jobs.items():
            job = record.job
            assert job_id not in self.deleted
            assert 0 <= job.attempt <= job.max_attempts
            assert 0 <= job.progress <= 100
            assert job.status is self.status[job_id]
            assert record.version == self.last_event_seq[job_id]  # the ETag is its last seq
            assert (job.finished_at is not None) == job.status.terminal
        assert self.hub.seq == self.last_seq


JobServiceMachine.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestJobServiceStateMachine = JobServiceMachine.TestCase
