"""JobService enforces exactly the documented transitions (docs/api.md), driven by hand (no scheduler)."""

from collections.abc import AsyncIterator

import pytest

from service.errors import Conflict, RateLimited
from service.hub import Hub
from service.jobs import TRANSITIONS, JobService, Record
from service.models import EventType, Role, Status, SubmitRequest
from service.settings import Config
from service.store import SQLiteStore


@pytest.fixture
async def service() -> AsyncIterator[JobService]:
    svc = JobService(SQLiteStore(":memory:"), Hub(buffer_size=100, queue_limit=100), Config())
    await svc.open()
    yield svc
    await svc.store.close()


async def new_job(service: JobService, role: Role = Role.PREMIUM) -> Record:
    record, created, _ = await service.submit("u", SubmitRequest(role=role))
    assert created
    return record


async def at_status(service: JobService, status: Status) -> Record:
    """Walk a fresh job to `status` through the public transitions."""
    record = await new_job(service)
    if status is Status.PENDING:
        return record
    if status is Status.CANCELLED:
        service.cancel(record.job.id, "test")
        return record
    assert service.begin_attempt(record, 1.0)
    if status is Status.COMPLETED:
        assert service.complete(record)
    elif status is Status.FAILED:
        assert service.fail_attempt(record, "timeout", "t", retryable=True) is Status.FAILED
    elif status is Status.PERMANENTLY_FAILED:
        service.fail_attempt(record, "timeout", "t", retryable=False)
    assert record.job.status is status
    return record


PAIRS = [(a, b) for a in Status for b in Status if a is not b]


@pytest.mark.parametrize(("start", "to"), PAIRS, ids=[f"{a}->{b}" for a, b in PAIRS])
async def test_every_transition_is_legal_or_refused(
    service: JobService, start: Status, to: Status
) -> None:
    record = await at_status(service, start)
    if to in TRANSITIONS[start]:
        service._move(record, to, EventType.PROGRESS)
        assert record.job.status is to
    else:
        with pytest.raises(Conflict):
            service._move(record, to, EventType.PROGRESS)
        assert record.job.status is start


@pytest.mark.parametrize(
    "terminal", [Status.COMPLETED, Status.CANCELLED, Status.PERMANENTLY_FAILED]
)
async def test_terminal_jobs_refuse_cancel_and_scheduler_moves(
    service: JobService, terminal: Status
) -> None:
    record = await at_status(service, terminal)
    before = record.job
    with pytest.raises(Conflict):
        service.cancel(record.job.id, "late")
    assert not service.begin_attempt(record, 1.0)
    assert not service.complete(record)
    assert service.fail_attempt(record, "timeout", "t", retryable=True) is terminal
    service.report_progress(record, 50)
    assert record.job == before


async def test_cancelled_job_never_completes(service: JobService) -> None:
    record = await at_status(service, Status.PROCESSING)
    service.cancel(record.job.id, "stop")
    assert not service.complete(record)
    assert record.job.status is Status.CANCELLED and record.job.cancel_reason == "stop"


async def test_retry_only_from_permanently_failed(service: JobService) -> None:
    for status in (Status.PENDING, Status.COMPLETED, Status.CANCELLED, Status.FAILED):
        record = await at_status(service, status)
        with pytest.raises(Conflict):
            service.retry(record.job.id)
    record = await at_status(service, Status.PERMANENTLY_FAILED)
    service.retry(record.job.id)
    assert record.job.status is Status.PENDING and record.job.attempt == 0


async def test_attempts_are_capped_by_max_attempts(service: JobService) -> None:
    record = await new_job(service)
    statuses = []
    for _ in range(3):
        if record.job.status is Status.FAILED:
            assert service.requeue(record)
        assert service.begin_attempt(record, 0.1)
        statuses.append(service.fail_attempt(record, "timeout", "t", retryable=True))
    assert statuses == [Status.FAILED, Status.FAILED, Status.PERMANENTLY_FAILED]
    assert record.job.attempt == record.job.max_attempts == 3


async def test_free_submissions_are_rate_limited_premium_are_not(service: JobService) -> None:
    for _ in range(5):
        await new_job(service, Role.FREE)
    with pytest.raises(RateLimited):
        await new_job(service, Role.FREE)
    await new_job(service, Role.PREMIUM)
