"""The read model only moves forward: an event older than what it holds (a process that loaded
a job's newer state from Redis, then tails the stream from before it) is history for resume,
never a step back for the job, its ETag or the hub's snapshot."""

import asyncio
import gc
from collections.abc import AsyncIterator

import msgspec
import pytest

from service.hub import Hub, Wire
from service.jobs import JobService
from service.models import EventType, Role, Status, SubmitRequest
from service.settings import Config
from service.store import Committed, SQLiteStore

SNAPSHOTS = Wire("test", lambda pub: pub.job_bytes, lambda seq, job: job, lambda r, s: b"")


@pytest.fixture
async def service() -> AsyncIterator[JobService]:
    svc = JobService(SQLiteStore(":memory:"), Hub(buffer_size=100, queue_limit=100), Config())
    await svc.open()
    yield svc
    await svc.store.close()


async def test_a_stale_event_is_history_not_a_step_back(service: JobService) -> None:
    record, _, _ = await service.submit("u", SubmitRequest(role=Role.PREMIUM))
    created, created_seq = record.job, record.version
    assert await service.begin_attempt(record, 1.0)
    now = (record.job, record.data, record.version)
    replayed = Committed(
        created_seq, EventType.CREATED, "t", created, msgspec.json.encode(created), record.ordinal
    )
    service._on_commit([replayed])
    assert (record.job, record.data, record.version) == now
    assert service.get(created.id) is record and record.job.status is Status.PROCESSING
    # a new subscriber's snapshot is the current state, not the replayed one
    sub = service.hub.open(SNAPSHOTS)
    service.hub.subscribe(sub, jobs=[created.id])
    assert sub._frames == [record.data]
    # and history stays in seq order: nothing was appended behind the newest event
    seqs = [pub.seq for pub in service.hub.broker.recent()]
    assert seqs == sorted(set(seqs)) and seqs[-1] == record.version


async def test_a_crash_downstream_of_a_commit_does_not_hang_the_store(
    service: JobService, caplog: pytest.LogCaptureFixture
) -> None:
    """If applying a committed change raises (a bug in a subscriber of the read model), the
    writer lives on: the caller is answered (the change is durable) and later commits work."""

    class Exploding:
        def job_changed(self, record: object, event: object) -> None:
            raise RuntimeError("a bug in a consumer")

        async def start_now(self, count: int) -> list[object]:
            return []

        def config_changed(self) -> None:
            pass

        def poll_hint(self, record: object) -> None:
            return None

    service.dispatcher = Exploding()  # type: ignore[assignment]
    first, created, _ = await asyncio.wait_for(
        service.submit("u", SubmitRequest(role=Role.PREMIUM)), 10
    )
    assert created and "applying committed changes failed" in caplog.text
    second, created, _ = await asyncio.wait_for(
        service.submit("u", SubmitRequest(role=Role.PREMIUM)), 10
    )
    assert created and second.job.id != first.job.id
    assert service.store.health() is None


async def test_the_read_model_is_not_walked_by_the_cyclic_collector(service: JobService) -> None:
    # docs/architecture.md: records, jobs and the SQLite writer's job index are never in a
    # cycle, so the collector does not track them (a full collection walked every job a busy
    # process held: most of the collector's time)
    record, _, _ = await service.submit("u", SubmitRequest(role=Role.PREMIUM))
    assert not gc.is_tracked(record)
    assert not gc.is_tracked(record.job)
    store = service.store
    assert isinstance(store, SQLiteStore)
    assert not gc.is_tracked(store._jobs[record.job.id])
