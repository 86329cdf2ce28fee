"""JobService's promises beyond the transition table: what each move writes into the job (times,
attempt, progress, eta, retry due time, error, result URL), what it publishes, the reads
(lookup, listing pages, counts) and cleanup. A fixed clock makes every time exact."""

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from service.errors import Conflict, IdempotencyKeyReused, NotFound, RateLimited
from service.hub import Hub, Published, Wire
from service.jobs import JobService, Record, _Ids
from service.models import (
    EventType,
    JobError,
    Role,
    Scenario,
    Status,
    SubmitRequest,
    iso_ms,
    parse_iso,
)
from service.settings import Config, ConfigPatch
from service.store import Committed, SQLiteStore, StoredJob
from service.store.base import OnCommit, OnConfig

T0 = 1_795_000_000.0  # 2026-11-18T...Z: any fixed instant


class FixedClock:
    def __init__(self, now: float = T0) -> None:
        self.t = now

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += seconds


def _event(pub: Published) -> bytes:
    assert pub.at.endswith("Z") and len(pub.at) == 27  # the commit's time, in microseconds
    return msgspec.json.encode({"seq": pub.seq, "type": str(pub.type), "job": pub.job_id})


def _nothing(*_: object) -> bytes:
    return b""


EVENTS = Wire("events", _event, _nothing, _nothing)


def events(service: JobService, sub: object) -> list[tuple[str, str]]:
    """(type, job id) of what a subscriber to everything was sent since last asked."""
    queued = list(sub._frames)  # type: ignore[attr-defined]
    sub._frames.clear()  # type: ignore[attr-defined]
    return [(e["type"], e["job"]) for e in map(msgspec.json.decode, queued)]


async def make(path: str = ":memory:", clock: FixedClock | None = None) -> JobService:
    svc = JobService(
        SQLiteStore(path),
        Hub(buffer_size=100, queue_limit=1000),
        Config(rate_limit=100),
        clock=clock or FixedClock(),
    )
    await svc.open()
    return svc


@pytest.fixture
async def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
async def service(clock: FixedClock) -> AsyncIterator[JobService]:
    svc = await make(clock=clock)
    yield svc
    await svc.store.close()


async def submit(
    service: JobService, user: str = "u", role: Role = Role.PREMIUM, language: str = "es"
) -> Record:
    record, created, _ = await service.submit(
        user, SubmitRequest(role=role, target_language=language)
    )
    assert created
    return record


# ---- submit ----------------------------------------------------------------------------


async def test_a_submitted_job_is_pending_stamped_and_prioritised_by_plan(
    service: JobService,
) -> None:
    premium = await submit(service, "u", Role.PREMIUM, "fr")
    free = await submit(service, "v", Role.FREE)
    job = premium.job
    assert (job.user_id, job.role, job.status, job.target_language) == (
        "u", Role.PREMIUM, Status.PENDING, "fr",
    )  # fmt: skip
    assert (job.progress, job.attempt, job.max_attempts) == (0, 0, 3)
    assert job.created_at == job.updated_at == iso_ms(T0)
    assert job.started_at is job.finished_at is job.error is job.result_url is None
    assert (premium.job.priority, free.job.priority) == (1, 0)  # premium runs first
    assert premium.job.id != free.job.id and len(premium.job.id) == 22  # 128 random bits
    assert service.submitted == {Role.PREMIUM: 1, Role.FREE: 1}
    await submit(service, "w", Role.FREE)
    assert service.submitted == {Role.PREMIUM: 1, Role.FREE: 2}
    assert premium.version == 1 and free.version == 2 and premium.etag == '"1"'
    assert premium.ordinal < free.ordinal
    assert msgspec.json.decode(premium.data) == msgspec.to_builtins(premium.job)


async def test_each_plan_gets_its_own_rate_decision(service: JobService) -> None:
    _, _, decision = await service.submit("u", SubmitRequest(role=Role.FREE))
    assert decision is not None and decision.allowed and decision.limit == 100
    assert decision.remaining == 99
    _, _, premium = await service.submit("u", SubmitRequest(role=Role.PREMIUM))
    # premium has a window of its own (PREMIUM_RATE_LIMIT), not the free one's
    assert premium is not None and premium.allowed
    assert premium.limit == service.config.premium_rate_limit and premium.remaining == (
        service.config.premium_rate_limit - 1
    )


async def test_max_attempts_is_the_config_at_submission(service: JobService) -> None:
    await service.update_config(ConfigPatch(max_attempts=5))
    assert service.config.max_attempts == 5
    assert (await submit(service)).job.max_attempts == 5


async def test_an_idempotency_key_replays_the_same_job_for_the_same_body(
    service: JobService,
) -> None:
    body = SubmitRequest(role=Role.FREE, target_language="de")
    first, created, _ = await service.submit("u", body, "k")
    again, created_again, decision = await service.submit("u", body, "k")
    assert created and not created_again and decision is None
    assert again is first and len(service) == 1
    assert service.submitted[Role.FREE] == 1
    other, created_other, _ = await service.submit("v", body, "k")  # keys are per user
    assert created_other and other is not first
    with pytest.raises(IdempotencyKeyReused) as caught:
        await service.submit("u", SubmitRequest(role=Role.FREE, target_language="fr"), "k")
    assert caught.value.details == {"job_id": first.job.id}
    assert caught.value.message == "this Idempotency-Key was used with a different body"


async def test_a_deleted_jobs_key_can_be_used_again(service: JobService) -> None:
    record, _, _ = await service.submit("u", SubmitRequest(role=Role.PREMIUM), "k")
    await service.cancel(record.job.id, None)
    assert await service.cleanup() == 1
    again, created, _ = await service.submit("u", SubmitRequest(role=Role.PREMIUM), "k")
    assert created and again.job.id != record.job.id


# ---- the scheduler's moves ---------------------------------------------------------------


async def test_begin_attempt_starts_the_clock_and_counts_the_attempt(
    service: JobService, clock: FixedClock
) -> None:
    record = await submit(service)
    clock.t = T0 + 10
    assert await service.begin_attempt(record, 4.5)
    job = record.job
    assert (job.status, job.attempt, job.progress) == (Status.PROCESSING, 1, 0)
    assert job.started_at == job.updated_at == iso_ms(T0 + 10)
    assert job.eta == iso_ms(T0 + 14.5)
    assert job.finished_at is None
    assert not await service.begin_attempt(record, 4.5)  # already processing: not made twice
    assert record.job.attempt == 1


async def test_begin_attempt_without_a_duration_has_no_eta(service: JobService) -> None:
    record = await submit(service)
    assert await service.begin_attempt(record, None)
    assert record.job.eta is None


async def test_progress_only_moves_forward_and_stops_short_of_100(service: JobService) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 1.0)
    await service.report_progress(record, 40, 1)
    assert record.job.progress == 40
    version = record.version
    await service.report_progress(record, 40, 1)  # no change: no event
    await service.report_progress(record, 30, 1)  # backwards: ignored
    await service.report_progress(record, 90, 2)  # another attempt's report: ignored
    assert (record.job.progress, record.version) == (40, version)
    await service.report_progress(record, 41, 1)
    assert record.job.progress == 41
    await service.report_progress(record, 100, 1)  # 100 means completed, which it is not yet
    assert record.job.progress == 99 and record.job.status is Status.PROCESSING


async def test_progress_is_ignored_unless_processing(service: JobService) -> None:
    record = await submit(service)
    await service.report_progress(record, 50, 0)
    assert record.job.progress == 0 and record.version == 1


async def test_complete_sets_the_result_and_finishes(
    service: JobService, clock: FixedClock
) -> None:
    record = await submit(service, language="ja")
    await service.begin_attempt(record, 3.0)
    clock.t = T0 + 3
    assert not await service.complete(record, 2)  # a stale attempt's outcome is ignored
    assert await service.complete(record, 1)
    job = record.job
    assert (job.status, job.progress, job.eta) == (Status.COMPLETED, 100, None)
    assert job.result_url == f"/v1/jobs/{job.id}/result.ja.vtt"
    assert job.finished_at == job.updated_at == iso_ms(T0 + 3)
    assert job.started_at == iso_ms(T0)
    assert not await service.complete(record, 1)  # not twice


async def test_a_retryable_failure_schedules_the_retry(
    service: JobService, clock: FixedClock
) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 3.0)
    await service.report_progress(record, 30, 1)
    clock.t = T0 + 1
    status = await service.fail_attempt(
        record, 1, "timeout", "too slow", retryable=True, retry_in_s=7.5
    )
    job = record.job
    assert status is job.status is Status.FAILED
    assert job.error == JobError("timeout", "too slow")
    assert job.not_before == iso_ms(T0 + 8.5) and job.eta is None
    assert job.finished_at is None and job.updated_at == iso_ms(T0 + 1)
    # the retry is due at not_before, not before
    clock.t = T0 + 8.4
    assert not await service.requeue(job.id)
    assert record.job.status is Status.FAILED
    clock.t = T0 + 8.5
    assert await service.requeue(job.id)
    job = record.job
    assert (job.status, job.progress, job.attempt) == (Status.PENDING, 0, 1)
    assert job.error == JobError("timeout", "too slow")  # kept until the next attempt starts
    assert not await service.requeue(job.id)  # only from failed
    assert await service.begin_attempt(record, 1.0)
    assert record.job.error is None and record.job.not_before is None
    assert record.job.attempt == 2


async def test_a_failure_without_a_retry_is_permanent(
    service: JobService, clock: FixedClock
) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 3.0)
    clock.t = T0 + 2
    assert (
        await service.fail_attempt(record, 2, "timeout", "x", retryable=False, retry_in_s=1)
        is Status.PROCESSING
    )  # another attempt's failure changes nothing
    status = await service.fail_attempt(
        record, 1, "internal_error", "boom", retryable=False, retry_in_s=1
    )
    job = record.job
    assert status is job.status is Status.PERMANENTLY_FAILED
    assert job.error == JobError("internal_error", "boom")
    assert job.finished_at == iso_ms(T0 + 2) and job.eta is None


async def test_the_last_allowed_attempt_fails_permanently(service: JobService) -> None:
    await service.update_config(ConfigPatch(max_attempts=1))
    record = await submit(service)
    await service.begin_attempt(record, 1.0)
    status = await service.fail_attempt(record, 1, "timeout", "t", retryable=True, retry_in_s=1)
    assert status is Status.PERMANENTLY_FAILED


async def test_a_requeue_with_no_due_time_is_due_at_once(service: JobService) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 1.0)
    failed = service._move(record, Status.FAILED, EventType.FAILED)  # not_before unset
    await service.store.commit(failed)
    assert await service.requeue(record.job.id)
    assert record.job.status is Status.PENDING


async def test_an_interrupted_attempt_is_requeued_and_not_counted(
    service: JobService, clock: FixedClock
) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 5.0)
    await service.report_progress(record, 60, 1)
    clock.t = T0 + 2
    assert await service.interrupted(record.job.id)
    job = record.job
    assert (job.status, job.attempt, job.progress, job.eta) == (Status.PENDING, 0, 0, None)
    assert job.updated_at == iso_ms(T0 + 2)
    assert not await service.interrupted(record.job.id)  # only a processing job
    await service.begin_attempt(record, 5.0)
    await service.fail_attempt(record, 1, "timeout", "t", retryable=True, retry_in_s=0)
    await service.requeue(record.job.id)
    await service.begin_attempt(record, 5.0)
    assert record.job.attempt == 2
    assert await service.interrupted(record.job.id)
    assert record.job.attempt == 1  # the one that failed still counts
    assert not await service.interrupted("no-such-job")


async def test_a_restart_requeues_what_was_running(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first = await make(path)
    running = await submit(first)
    waiting = await submit(first)
    done = await submit(first)
    await first.begin_attempt(running, 1.0)
    await first.begin_attempt(done, 1.0)
    await first.complete(done, 1)
    await first.store.close()

    again = await make(path)
    try:
        assert again.get(running.job.id).job.status is Status.PENDING
        assert again.get(running.job.id).job.attempt == 0
        assert again.get(waiting.job.id).job.status is Status.PENDING
        assert again.get(done.job.id).job.status is Status.COMPLETED
        assert again.hub.seq == again.get(running.job.id).version  # the requeue is the last
        assert [r.job.id for r in again.records()] == [
            running.job.id, waiting.job.id, done.job.id,
        ]  # fmt: skip
    finally:
        await again.store.close()


async def test_a_stored_config_that_overrides_the_settings_says_so_at_start(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "s.db")
    first = await make(path)
    await first.update_config(ConfigPatch(max_attempts=4, translation_delay=7.0))
    await first.store.close()
    with caplog.at_level(logging.WARNING, logger="service.jobs"):
        again = await make(path)  # started with Config(rate_limit=100): the defaults otherwise
    await again.store.close()
    assert again.config.max_attempts == 4 and again.config.translation_delay == 7.0
    assert [r.getMessage() for r in caplog.records] == [
        "the stored runtime config (from PATCH /v1/config) overrides the settings for: "
        "max_attempts=4, translation_delay=7.0"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="service.jobs"):
        same = JobService(
            SQLiteStore(path),
            Hub(buffer_size=100, queue_limit=1000),
            Config(rate_limit=100, max_attempts=4, translation_delay=7.0),
            clock=FixedClock(),
        )
        await same.open()  # the settings say what is stored: nothing to say
    await same.store.close()
    assert caplog.records == []


async def test_a_reopened_service_keeps_versions_history_and_config(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first = await make(path)
    record, _, _ = await first.submit("u", SubmitRequest(role=Role.PREMIUM), "key")
    await first.cancel(record.job.id, "no")
    await first.update_config(ConfigPatch(max_attempts=4))
    await first.store.close()

    again = await make(path)
    try:
        loaded = again.get(record.job.id)
        assert loaded.version == record.version == 2 and loaded.data == record.data
        assert loaded.job == record.job
        assert again.config.max_attempts == 4
        assert [p.seq for p in again.hub.broker.recent()] == [1, 2]
        assert again.hub.knows(record.job.id)
        snapshots = again.hub.open(Wire("s", _event, lambda seq, job: job, _nothing))
        again.hub.subscribe(snapshots, user="u")
        assert snapshots._frames == [record.data]  # the loaded state, by its owner's filter
        # the key still names the job after the restart
        replayed, created, _ = await again.submit("u", SubmitRequest(role=Role.PREMIUM), "key")
        assert not created and replayed is loaded
    finally:
        await again.store.close()


# ---- the admin's moves -----------------------------------------------------------------


async def test_cancel_records_the_reason_and_finishes(
    service: JobService, clock: FixedClock
) -> None:
    given = await submit(service)
    default = await submit(service)
    await service.begin_attempt(default, 5.0)
    clock.t = T0 + 1
    await service.cancel(given.job.id, "too long")
    await service.cancel(default.job.id, None)
    assert given.job.cancel_reason == "too long"
    assert default.job.cancel_reason == "cancelled by admin"
    for job in (given.job, default.job):
        assert job.status is Status.CANCELLED
        assert job.finished_at == job.updated_at == iso_ms(T0 + 1)
        assert job.eta is None and job.not_before is None
    with pytest.raises(Conflict) as caught:
        await service.cancel(given.job.id, "again")
    assert caught.value.details == {"status": Status.CANCELLED}
    assert caught.value.message == "job is cancelled, it can no longer be cancelled"


async def test_cancel_while_failed_clears_the_pending_retry(service: JobService) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 1.0)
    await service.fail_attempt(record, 1, "timeout", "t", retryable=True, retry_in_s=60)
    await service.cancel(record.job.id, None)
    assert record.job.status is Status.CANCELLED and record.job.not_before is None


async def test_an_admin_retry_starts_over(service: JobService) -> None:
    record = await submit(service)
    await service.begin_attempt(record, 1.0)
    await service.report_progress(record, 40, 1)
    await service.fail_attempt(record, 1, "timeout", "t", retryable=False, retry_in_s=1)
    assert await service.retry(record.job.id) is record
    job = record.job
    assert (job.status, job.attempt, job.progress) == (Status.PENDING, 0, 0)
    assert job.error is None and job.finished_at is None
    with pytest.raises(Conflict) as caught:
        await service.retry(record.job.id)
    assert caught.value.details == {"status": Status.PENDING}
    assert caught.value.message == (
        "only permanently_failed jobs can be retried; this one is pending"
    )


async def test_each_move_is_published_once_with_its_event_type(service: JobService) -> None:
    sub = service.hub.open(EVENTS)
    service.hub.subscribe(sub, everything=True)
    mine = service.hub.open(EVENTS)
    service.hub.subscribe(mine, user="u")
    theirs = await submit(service, user="v")
    a = await submit(service)
    await service.begin_attempt(a, 1.0)
    await service.report_progress(a, 10, 1)
    await service.fail_attempt(a, 1, "timeout", "t", retryable=True, retry_in_s=0)
    await service.requeue(a.job.id)
    await service.begin_attempt(a, 1.0)
    await service.complete(a, 2)
    b = await submit(service)
    await service.begin_attempt(b, 1.0)
    await service.fail_attempt(b, 1, "timeout", "t", retryable=False, retry_in_s=0)
    await service.retry(b.job.id)
    await service.cancel(b.job.id, None)
    await service.cleanup()
    x, y = a.job.id, b.job.id
    assert events(service, sub)[0] == ("job.created", theirs.job.id)
    assert events(service, mine) == [
        ("job.created", x), ("job.started", x), ("job.progress", x), ("job.failed", x),
        ("job.retrying", x), ("job.started", x), ("job.completed", x),
        ("job.created", y), ("job.started", y), ("job.permanently_failed", y),
        ("job.retrying", y), ("job.cancelled", y),
        ("job.deleted", x), ("job.deleted", y),
    ]  # fmt: skip
    assert service.hub.published == 15 and service.hub.seq == 15


# ---- cleanup -------------------------------------------------------------------------


async def test_cleanup_deletes_finished_jobs_only(service: JobService) -> None:
    pending = await submit(service)
    cancelled = await submit(service)
    await service.cancel(cancelled.job.id, None)
    completed = await submit(service)
    await service.begin_attempt(completed, 1.0)
    await service.complete(completed, 1)
    assert await service.cleanup() == 2
    assert [r.job.id for r in service.records()] == [pending.job.id]
    assert service.find(cancelled.job.id) is None and not service.hub.knows(cancelled.job.id)
    assert await service.cleanup() == 0


async def test_cleanup_older_than_keeps_the_recently_finished(
    service: JobService, clock: FixedClock
) -> None:
    old = await submit(service)
    await service.cancel(old.job.id, None)  # finished at T0
    clock.t = T0 + 100
    recent = await submit(service)
    await service.cancel(recent.job.id, None)  # finished at T0 + 100
    clock.t = T0 + 120
    assert await service.cleanup(older_than_s=120) == 0  # exactly 120 s: not older than that
    clock.t = T0 + 120.5
    assert await service.cleanup(older_than_s=120) == 1
    assert service.find(old.job.id) is None and service.find(recent.job.id) is recent
    assert await service.cleanup(older_than_s=20) == 1
    slow = await submit(service)  # created at T0 + 120.5
    clock.t = T0 + 300
    await service.cancel(slow.job.id, None)
    clock.t = T0 + 310
    assert await service.cleanup(older_than_s=60) == 0  # finished 10 s ago, however old
    assert await service.cleanup(older_than_s=5) == 1


async def test_concurrent_cleanups_count_each_deletion_once(service: JobService) -> None:
    for _ in range(3):
        await service.cancel((await submit(service)).job.id, None)
    assert sum(await asyncio.gather(service.cleanup(), service.cleanup())) == 3
    assert len(service) == 0


# ---- reads ---------------------------------------------------------------------------


async def test_get_and_find(service: JobService) -> None:
    record = await submit(service)
    assert service.get(record.job.id) is record is service.find(record.job.id)
    assert await service.fetch(record.job.id) is record
    assert service.find("nope") is None
    long_id = "x" * 300
    for lookup in (service.get, service.fetch):
        with pytest.raises(NotFound) as caught:
            result = lookup(long_id)
            if not isinstance(result, Record):
                await result
        assert caught.value.details == {"job_id": "x" * 200}  # echoed, but bounded
        assert caught.value.message == "no job with this id"


async def listing(service: JobService) -> dict[str, Record]:
    """Six jobs: a..f in submission order, over two users, roles and statuses."""
    made = {}
    for name, user, role in [
        ("a", "u", Role.FREE), ("b", "v", Role.PREMIUM), ("c", "u", Role.PREMIUM),
        ("d", "u", Role.FREE), ("e", "v", Role.FREE), ("f", "u", Role.PREMIUM),
    ]:  # fmt: skip
        made[name] = await submit(service, user, role)
    await service.cancel(made["c"].job.id, None)
    await service.cancel(made["e"].job.id, None)
    return made


def names(made: dict[str, Record], records: object) -> str:
    by_id = {r.job.id: n for n, r in made.items()}
    return "".join(by_id[r.job.id] for r in records)  # type: ignore[attr-defined]


async def test_select_is_newest_first_and_filters(service: JobService) -> None:
    made = await listing(service)
    assert names(made, service.records()) == "abcdef"
    assert names(made, service.select()) == "fedcba"
    assert names(made, service.select(user="u")) == "fdca"
    assert names(made, service.select(status=Status.CANCELLED)) == "ec"
    assert names(made, service.select(role=Role.FREE)) == "eda"
    assert names(made, service.select(user="u", role=Role.PREMIUM)) == "fc"
    assert names(made, service.select(user="v", status=Status.PENDING)) == "b"
    assert names(made, service.select(before=made["d"].ordinal)) == "cba"  # exclusive
    assert names(made, service.select(user="nobody")) == ""


async def test_pages_walk_the_listing_with_a_cursor(service: JobService) -> None:
    made = await listing(service)
    page, cursor = service.page(2)
    assert names(made, page) == "fe" and cursor == made["e"].ordinal
    page, cursor = service.page(2, before=cursor)
    assert names(made, page) == "dc" and cursor == made["c"].ordinal
    page, cursor = service.page(2, before=cursor)
    assert names(made, page) == "ba" and cursor is None  # exactly full, nothing after
    page, cursor = service.page(3, user="u")
    assert names(made, page) == "fdc" and cursor == made["c"].ordinal
    page, cursor = service.page(3, user="u", before=cursor)
    assert names(made, page) == "a" and cursor is None
    page, cursor = service.page(10, status=Status.CANCELLED, role=Role.FREE)
    assert names(made, page) == "e" and cursor is None


async def test_counts_by_status_and_role(service: JobService) -> None:
    await listing(service)
    assert service.counts() == {
        (Status.PENDING, Role.FREE): 2,
        (Status.PENDING, Role.PREMIUM): 2,
        (Status.CANCELLED, Role.PREMIUM): 1,
        (Status.CANCELLED, Role.FREE): 1,
    }
    assert len(service) == 6


async def test_counts_follow_every_move_a_delete_and_a_reopen(
    service: JobService, clock: FixedClock, tmp_path: Path
) -> None:
    """counts() (what /metrics shows) is kept as the read model moves, not counted per call:
    each move, a delete and a reload must leave it equal to the jobs held."""
    a, b, c, d = [await submit(service, role=r) for r in (Role.PREMIUM,) * 3 + (Role.FREE,)]
    await service.begin_attempt(a, 1.0)
    await service.begin_attempt(b, 1.0)
    await service.complete(b, 1)
    await service.begin_attempt(c, 1.0)
    await service.fail_attempt(c, 1, "timeout", "too slow", retryable=True, retry_in_s=1.0)
    await service.cancel(d.job.id, None)
    assert service.counts() == {
        (Status.PROCESSING, Role.PREMIUM): 1,
        (Status.COMPLETED, Role.PREMIUM): 1,
        (Status.FAILED, Role.PREMIUM): 1,
        (Status.CANCELLED, Role.FREE): 1,
    }
    clock.t += 2
    assert await service.requeue(c.job.id)
    assert await service.cleanup() == 2  # b and d: finished, deleted
    assert service.counts() == {
        (Status.PROCESSING, Role.PREMIUM): 1,
        (Status.PENDING, Role.PREMIUM): 1,
    }
    assert len(service) == 2

    path = str(tmp_path / "counts.db")  # a reload counts what it loads, once
    disk = await make(path, clock)
    for role in (Role.FREE, Role.FREE, Role.PREMIUM):
        await submit(disk, role=role)
    await disk.store.close()
    again = await make(path, clock)
    try:
        assert again.counts() == {(Status.PENDING, Role.FREE): 2, (Status.PENDING, Role.PREMIUM): 1}
    finally:
        await again.store.close()


async def test_an_illegal_move_names_it(service: JobService) -> None:
    record = await submit(service)
    with pytest.raises(Conflict) as caught:
        service._move(record, Status.COMPLETED, EventType.COMPLETED)
    assert caught.value.message == "illegal transition pending -> completed"


class TickingClock(FixedClock):
    """Every reading is a millisecond later than the last."""

    def now(self) -> float:
        self.t += 0.001
        return self.t


async def test_a_start_is_stamped_with_one_instant() -> None:
    service = await make(clock=TickingClock())
    try:
        record = await submit(service)
        assert await service.begin_attempt(record, 2.0)
        job = record.job
        assert job.started_at == job.updated_at
        assert job.eta == iso_ms(parse_iso(job.started_at or "") + 2.0)
    finally:
        await service.store.close()


async def test_without_a_scheduler_nothing_starts_and_there_is_no_hint(
    service: JobService,
) -> None:
    record = await submit(service)
    assert await service.process(5) == []
    assert service.poll_hint(record) is None


class Recorder:
    """A scheduler stand-in that records what JobService tells and asks it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def job_changed(self, record: Record, event: EventType) -> None:
        self.calls.append(("changed", event))
        assert record.job.status in Status  # the record as it is now

    async def start_now(self, count: int) -> list[Record]:
        self.calls.append(("start", count))
        return []

    def config_changed(self) -> None:
        self.calls.append(("config", None))

    def poll_hint(self, record: Record) -> float | None:
        self.calls.append(("hint", record.job.id))
        return 2.5


async def test_the_scheduler_hears_of_changes_and_is_asked_for_starts_and_hints(
    service: JobService,
) -> None:
    service.dispatcher = recorder = Recorder()
    record = await submit(service)
    await service.cancel(record.job.id, None)
    await service.update_config(ConfigPatch(max_attempts=2))
    assert await service.process(7) == []
    assert service.poll_hint(record) == 2.5
    assert recorder.calls == [
        ("changed", EventType.CREATED),
        ("changed", EventType.CANCELLED),
        ("config", None),
        ("start", 7),
        ("hint", record.job.id),
    ]


class SharedStore(SQLiteStore):
    """A store shared with other processes, simulated: `elsewhere` holds what another process
    committed, which this one applies on its next sync."""

    shared = True

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.elsewhere: list[Committed] = []
        self.syncs = 0
        self.on_commit: OnCommit | None = None
        self.on_config: OnConfig | None = None

    async def open(self, on_commit: OnCommit, on_config: OnConfig, on_resync: object = None):  # type: ignore[no-untyped-def]
        self.on_commit, self.on_config = on_commit, on_config
        return await super().open(on_commit, on_config, on_resync)

    async def sync(self) -> None:
        self.syncs += 1
        if self.elsewhere and self.on_commit is not None:
            self.on_commit(self.elsewhere)
            self.elsewhere = []


async def test_on_a_shared_store_a_job_made_elsewhere_is_fetched_not_404() -> None:
    store = SharedStore()
    service = JobService(store, Hub(buffer_size=10, queue_limit=10), Config(), clock=FixedClock())
    await service.open()
    try:
        mine = await submit(service)
        assert await service.fetch(mine.job.id) is mine and store.syncs == 0  # no round trip
        theirs = msgspec.structs.replace(mine.job, id="made-elsewhere")
        data = msgspec.json.encode(theirs)
        store.elsewhere = [Committed(9, EventType.CREATED, "t", theirs, data, 5)]
        assert service.find("made-elsewhere") is None
        fetched = await service.fetch("made-elsewhere")
        assert fetched.job == theirs and fetched.version == 9 and store.syncs == 1
        with pytest.raises(NotFound):
            await service.fetch("made-nowhere")
        assert store.syncs == 2
        # a runtime config saved by another process reaches this one
        service.dispatcher = recorder = Recorder()
        assert store.on_config is not None
        store.on_config(Config(max_attempts=6))
        assert service.config == Config(max_attempts=6)
        assert recorder.calls == [("config", None)]
        assert (await submit(service)).job.max_attempts == 6
    finally:
        await store.close()


def test_job_ids_are_128_random_bits_url_safe_and_distinct() -> None:
    ids = _Ids()
    made = [ids() for _ in range(3 * _Ids.BATCH + 5)]  # across several refills
    assert len(set(made)) == len(made)
    assert all(len(i) == 22 and set(i) <= set(URL_SAFE) for i in made)


URL_SAFE = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


async def test_a_replay_is_not_counted_against_the_free_plan() -> None:
    service = JobService(
        SQLiteStore(":memory:"), Hub(buffer_size=10, queue_limit=10), Config(rate_limit=1)
    )
    await service.open()
    try:
        body = SubmitRequest(role=Role.FREE)
        first, _, _ = await service.submit("u", body, "k")
        for _ in range(3):  # a client retrying its POST gets its job, not a 429
            again, created, _ = await service.submit("u", body, "k")
            assert again is first and not created
        for _ in range(2):
            with pytest.raises(RateLimited) as caught:
                await service.submit("u", body, "other")
        assert caught.value.message == "free plan: at most 1 submissions per hour"
        error = caught.value
        assert (error.limit, error.remaining) == (1, 0) and 0 < error.reset_s <= 3600
        assert service.rate_limited == 2 and service.submitted[Role.FREE] == 1
    finally:
        await service.store.close()


async def test_two_submissions_racing_with_one_key_make_one_job(service: JobService) -> None:
    body = SubmitRequest(role=Role.PREMIUM, scenario=Scenario(duration_s=2.0))
    (a, made_a, _), (b, made_b, _) = await asyncio.gather(
        service.submit("u", body, "k"), service.submit("u", body, "k")
    )  # both miss the key in the read model; the store lets one through
    assert a is b and (made_a, made_b) == (True, False) and len(service) == 1
    assert a.job.scenario == Scenario(duration_s=2.0)
    other = SubmitRequest(role=Role.PREMIUM)
    results = await asyncio.gather(
        service.submit("v", body, "k2"), service.submit("v", other, "k2"), return_exceptions=True
    )
    assert isinstance(results[1], IdempotencyKeyReused)  # the loser's body differs


async def test_a_decision_that_lost_a_race_is_made_again(service: JobService) -> None:
    record = await submit(service)
    started, cancelled = await asyncio.gather(
        service.begin_attempt(record, 1.0), service.cancel(record.job.id, "stop")
    )  # both decided on the pending job; the start committed first
    assert started is True and cancelled is record
    assert record.job.status is Status.CANCELLED and record.job.attempt == 1
    other = await submit(service)
    cancelled, started = await asyncio.gather(
        service.cancel(other.job.id, "stop"), service.begin_attempt(other, 1.0)
    )
    assert started is False and other.job.status is Status.CANCELLED  # the start was not made


# ---- a resync: the shared log lost events this process had not applied -------------------------


async def test_a_resync_takes_the_stores_jobs_and_tells_every_subscriber(
    service: JobService,
) -> None:
    """What a process that fell behind the trimmed log is told: the jobs as they are now.
    Jobs changed, made or deleted meanwhile move the read model (counts, keys, the hub's
    snapshots, the scheduler) as their own last events would; every subscriber gets a reset
    (`events_lost`) and fresh snapshots; the lost history can't be resumed into."""
    kept = await submit(service, user="u")  # seq 1
    finished = await submit(service, user="u")  # seq 2
    gone = await submit(service, user="v")  # seq 3
    frames: list[bytes] = []
    wire = Wire(
        "t",
        _event,
        lambda seq, job: b"snapshot " + job,
        lambda reason, seq: f"reset {reason} {seq}".encode(),
    )
    sub = service.hub.open(wire)
    service.hub.subscribe(sub, user="u")
    sub._frames.clear()  # type: ignore[attr-defined]
    heard: list[tuple[str, EventType]] = []
    service.dispatcher.job_changed = lambda record, kind: heard.append((record.job.id, kind))  # type: ignore[method-assign]
    assert service.in_flight("u") == 2 and service.in_flight("v") == 1

    # meanwhile, elsewhere: `finished` completed (seq 9), `gone` was deleted, `new` was made
    # (seq 10, with an Idempotency-Key); events 4-10 never reached this process
    done = msgspec.structs.replace(finished.job, status=Status.COMPLETED, progress=100)
    new = msgspec.structs.replace(kept.job, id="new-job", user_id="u")
    jobs = [
        StoredJob(kept.job, kept.ordinal, kept.version),
        StoredJob(done, finished.ordinal, 9),
        StoredJob(new, 4, 10, "idem", "hash"),
    ]
    service._resync(jobs, 10)

    assert service.get(finished.job.id).job.status is Status.COMPLETED
    assert service.get(finished.job.id).version == 9
    assert service.find(gone.job.id) is None
    assert service.get("new-job").ordinal == 4
    assert service.in_flight("u") == 2 and service.in_flight("v") == 0  # kept + new; none
    assert service.counts() == {
        (Status.PENDING, Role.PREMIUM): 2,  # kept, new
        (Status.COMPLETED, Role.PREMIUM): 1,  # finished; gone is not counted any more
    }
    with pytest.raises(IdempotencyKeyReused):  # its key is known here now (another body)
        await service.submit("u", SubmitRequest(), "idem")
    assert sorted(heard) == sorted(
        [
            (finished.job.id, EventType.COMPLETED),
            (gone.job.id, EventType.DELETED),
            ("new-job", EventType.CREATED),
        ]
    )
    frames = sub._frames  # type: ignore[attr-defined]
    assert frames[0] == b"reset events_lost 10"
    assert sorted(frames[1:]) == sorted(
        [b"snapshot " + service.get(i).data for i in (kept.job.id, finished.job.id, "new-job")]
    )
    assert service.hub.broker.since(2) == "since_too_old"  # the lost events can't be replayed
    assert service.hub.broker.since(10) == []
    assert not service.hub.knows(gone.job.id)
