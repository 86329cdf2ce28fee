"""JobService against what only a shared store (or a lost race) produces, staged without one:
an event delivered again, a catch-up batch with history before news, a store that always
reports a lost race, a job deleted while a scheduler move was being re-decided, and the lease
a shared store is handed with each start."""

from __future__ import annotations

from collections.abc import AsyncIterator

import msgspec
import pytest

from service.errors import Conflict
from service.hub import Hub
from service.jobs import JobService
from service.models import EventType, Status
from service.settings import Config
from service.store import Change, Committed, SQLiteStore, VersionConflict
from tests.unit.test_job_service import EVENTS, FixedClock, Recorder, events, make, submit


@pytest.fixture
async def jobs() -> AsyncIterator[JobService]:
    svc = await make()
    yield svc
    await svc.store.close()


def replayed(service: JobService, job_id: str, seq: int, kind: EventType) -> Committed:
    record = service.get(job_id)
    return Committed(seq, kind, "2026-11-18T00:00:00.000000Z", record.job, record.data,
                     record.ordinal)  # fmt: skip


async def test_an_event_delivered_again_is_history_not_news(jobs: JobService) -> None:
    service = jobs
    record = await submit(service)
    await service.cancel(record.job.id, None)
    sub = service.hub.open(EVENTS)
    service.hub.subscribe(sub, everything=True)
    sub._frames.clear()  # type: ignore[attr-defined]  # the snapshot
    service.dispatcher = recorder = Recorder()
    version = service.get(record.job.id).version
    # the very event already applied, seen again (a stream re-read after a reconnect)
    service._on_commit([replayed(service, record.job.id, version, EventType.CANCELLED)])
    assert events(service, sub) == []
    assert recorder.calls == []
    assert service.get(record.job.id).version == version


async def test_history_before_news_in_one_batch_does_not_hide_the_news(jobs: JobService) -> None:
    service = jobs
    one, two = await submit(service), await submit(service)
    sub = service.hub.open(EVENTS)
    service.hub.subscribe(sub, everything=True)
    sub._frames.clear()  # type: ignore[attr-defined]  # the snapshot
    stale = replayed(service, one.job.id, one.version, EventType.CREATED)
    cancelled = msgspec.structs.replace(two.job, status=Status.CANCELLED)
    fresh = Committed(9, EventType.CANCELLED, "2026-11-18T00:00:01.000000Z", cancelled,
                      msgspec.json.encode(cancelled), two.ordinal)  # fmt: skip
    service._on_commit([stale, fresh])
    assert service.get(two.job.id).job.status is Status.CANCELLED
    assert service.get(two.job.id).version == 9
    assert events(service, sub) == [("job.cancelled", two.job.id)]


class AlwaysLosing(SQLiteStore):
    """Every commit after the first `wins` loses a race: another process always got there
    first. `on_sync` runs at each catch-up, as the other process's changes arrive."""

    def __init__(self, wins: int) -> None:
        super().__init__(":memory:")
        self.wins = wins
        self.tries = 0
        self.on_sync: list[object] = []

    async def commit(self, change: Change) -> int:
        if self.wins > 0:
            self.wins -= 1
            return await super().commit(change)
        self.tries += 1
        raise VersionConflict(change.job.id)

    async def sync(self) -> None:
        while self.on_sync:
            action = self.on_sync.pop(0)
            action()  # type: ignore[operator]


async def test_a_job_that_keeps_changing_is_a_409_after_max_conflicts_tries() -> None:
    store = AlwaysLosing(wins=1)
    service = JobService(store, Hub(buffer_size=10, queue_limit=10), Config(), clock=FixedClock())
    await service.open()
    try:
        record = await submit(service)
        with pytest.raises(Conflict) as info:
            await service.cancel(record.job.id, None)
        assert info.value.message == (
            "the job kept changing while this request was deciding; try again"
        )
        assert store.tries == 20  # MAX_CONFLICTS re-decisions, then loudly
        assert service.get(record.job.id).job.status is Status.PENDING
    finally:
        await store.close()


async def test_a_job_deleted_while_a_scheduler_move_is_re_decided_is_not_made() -> None:
    store = AlwaysLosing(wins=1)
    service = JobService(store, Hub(buffer_size=10, queue_limit=10), Config(), clock=FixedClock())
    await service.open()
    try:
        record = await submit(service)
        job = record.job
        # the race is lost; catching up brings the job's deletion by another process
        gone = Committed(5, EventType.DELETED, "2026-11-18T00:00:01.000000Z", job,
                         record.data, record.ordinal)  # fmt: skip
        store.on_sync.append(lambda: service._on_commit([gone]))
        assert await service.begin_attempt(record, 1.0, None) is False
        assert service.find(job.id) is None
    finally:
        await store.close()


class Leases(SQLiteStore):
    shared = True

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.leases: list[tuple[EventType, float | None]] = []

    async def commit(self, change: Change) -> int:
        self.leases.append((change.event, change.lease_s))
        return await super().commit(change)


async def test_the_lease_asked_for_reaches_the_store_with_the_start() -> None:
    store = Leases()
    service = JobService(store, Hub(buffer_size=10, queue_limit=10), Config(), clock=FixedClock())
    await service.open()
    try:
        record = await submit(service)
        assert await service.begin_attempt(record, 2.0, 7.5)
        assert store.leases == [(EventType.CREATED, None), (EventType.STARTED, 7.5)]
    finally:
        await store.close()
