"""The read model only moves forward: an event older than what it holds (a process that loaded
a job's newer state from Redis, then tails the stream from before it) is history for resume,
never a step back for the job, its ETag or the hub's snapshot."""

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
