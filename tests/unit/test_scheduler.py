"""The scheduler without a server: what each attempt is planned to do, the queue's order, the
poll hints, how an attempt ends (completed, failed with its backoff, timed out, interrupted),
its progress reports, the workers bound, retries coming due, leases and expiry.

A JobService on an in-memory SQLite store, and a clock the test moves by hand, so every time
and every hint is exact. The contract is the module's docstrings and docs/reliability.md."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest

from service.clock import RealClock
from service.hub import Hub
from service.jobs import JobService, Record
from service.models import (
    EventType,
    JobError,
    Outcome,
    Role,
    Scenario,
    Status,
    SubmitRequest,
    iso_ms,
    parse_iso,
)
from service.scheduler import Plan, Scheduler, _persist
from service.settings import Config, ConfigPatch
from service.store import CapReached, SQLiteStore, StoreUnavailable

T0 = 1_795_000_000.0
CODES = ("timeout", "internal_error", "unexpected_failure")  # docs/protocol.md's error codes
MESSAGES = {
    "timeout": "the translation backend did not answer in time",
    "internal_error": "the translation backend reported an internal error",
    "unexpected_failure": "the attempt ended unexpectedly",
}


class InstantClock(RealClock):
    """Time moves only by sleeping, and a sleep returns at once (after yielding once). Its
    waits for an event and its timeouts are asyncio's (real time), as a test needs them."""

    def __init__(self, now: float = T0) -> None:
        self.t = now
        self.slept: list[float] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        if math.isinf(seconds):  # a hung attempt: until cancelled
            await asyncio.get_running_loop().create_future()
        self.slept.append(seconds)
        self.t += seconds
        await asyncio.sleep(0)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if event.is_set() or seconds is None:
            await event.wait()
            return True
        await self.sleep(seconds)
        return event.is_set()


class ManualClock(RealClock):
    """Time moves only when the test says so; sleepers wake when their time has come (waits for
    an event and timeouts are asyncio's, in real time)."""

    def __init__(self, now: float = T0) -> None:
        self.t = now
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        future = asyncio.get_running_loop().create_future()
        self._sleepers.append((self.t + seconds, future))
        await future

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if event.is_set() or seconds is None:
            await event.wait()
            return True
        sleeper = asyncio.ensure_future(self.sleep(seconds))
        waiter = asyncio.ensure_future(event.wait())
        _, pending = await asyncio.wait({sleeper, waiter}, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        return event.is_set()

    def advance(self, seconds: float) -> None:
        self.t += seconds
        for end, future in list(self._sleepers):
            if end <= self.t:
                self._sleepers.remove((end, future))
                if not future.done():
                    future.set_result(None)


Clock = InstantClock | ManualClock


async def make(
    config: Config | None = None,
    clock: Clock | None = None,
    seed: int | None = 7,
    store: SQLiteStore | None = None,
    **scheduler: Any,
) -> tuple[JobService, Scheduler]:
    service = JobService(
        store or SQLiteStore(":memory:"),
        Hub(buffer_size=1000, queue_limit=1000),
        config or Config(rate_limit=1000, auto_process=False, error_rate=0.0),
        clock=clock or InstantClock(),
    )
    await service.open()
    return service, Scheduler(service, seed, **scheduler)


@pytest.fixture
async def closing() -> AsyncIterator[list[tuple[JobService, Scheduler]]]:
    made: list[tuple[JobService, Scheduler]] = []
    yield made
    closed: list[object] = []
    for service, scheduler in made:
        await scheduler.stop()
        if not any(store is service.store for store in closed):
            closed.append(service.store)
            await service.store.close()


async def submit(
    service: JobService,
    role: Role = Role.FREE,
    scenario: Scenario | None = None,
    user: str = "u",
) -> Record:
    record, created, _ = await service.submit(
        user, SubmitRequest(role=role, target_language="es", scenario=scenario)
    )
    assert created
    return record


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.002)


async def advance_until(
    clock: ManualClock, predicate: Callable[[], bool], step: float = 0.25, limit: int = 2000
) -> None:
    """Move the clock in small steps, letting the attempts run between them, until true."""
    for _ in range(limit):
        if predicate():
            return
        clock.advance(step)
        await asyncio.sleep(0.002)
    assert predicate()


def status(service: JobService, record: Record) -> Status:
    return service.get(record.job.id).job.status


def at_attempt(record: Record, attempt: int, **changes: Any) -> Any:
    """The record as _plan sees it before attempt number `attempt` (job.attempt is the last)."""
    job = msgspec.structs.replace(record.job, attempt=attempt - 1, **changes)
    return type("R", (), {"job": job, "ordinal": record.ordinal})()


# ---- the plan: what an attempt will do ------------------------------------------------------


async def test_a_seeded_plan_is_drawn_from_seed_ordinal_and_attempt_and_is_pinned(
    closing: list[Any],
) -> None:
    """The simulator's randomness for one attempt comes from Random("SEED/ordinal/attempt"):
    duration, then error code, then the failure draw, then where it fails. Pinned: changing it
    changes every seeded run's outcomes (the benchmarks, the docs' examples)."""
    config = Config(rate_limit=1000, auto_process=False, translation_delay=10.0, error_rate=0.5)
    service, scheduler = await make(config, seed=42)
    closing.append((service, scheduler))
    record = await submit(service)
    for attempt in (1, 2, 3):
        rng = random.Random(f"42/{record.ordinal}/{attempt}")
        duration = 10.0 * rng.uniform(0.9, 1.1)
        code = rng.choice(CODES)
        if rng.random() < 0.5:
            expected = Plan(duration, fail_at=rng.uniform(0.3, 1.0), error_code=code)
        else:
            expected = Plan(duration)
        assert scheduler._plan(at_attempt(record, attempt)) == expected
    # the same inputs in another scheduler (another process, a rerun): the same plan
    _, again = await make(config, seed=42)
    closing.append((_, again))
    assert again._plan(at_attempt(record, 2)) == scheduler._plan(at_attempt(record, 2))


async def test_plans_differ_across_attempts_and_jobs_and_are_unseeded_without_a_seed(
    closing: list[Any],
) -> None:
    config = Config(rate_limit=1000, auto_process=False, translation_delay=10.0)
    service, seeded = await make(config, seed=1)
    _, unseeded = await make(config, seed=None)
    _, other = await make(config, seed=None)
    closing += [(service, seeded), (_, unseeded), (_, other)]
    one, two = await submit(service), await submit(service)
    durations = {seeded._plan(at_attempt(r, n)).duration_s for r in (one, two) for n in (1, 2)}
    assert len(durations) == 4
    assert unseeded._plan(at_attempt(one, 1)) != other._plan(at_attempt(one, 1))
    assert unseeded._plan(at_attempt(one, 1)) != unseeded._plan(at_attempt(one, 1))


async def test_durations_are_the_delay_within_ten_percent_premium_sped_up(
    closing: list[Any],
) -> None:
    config = Config(
        rate_limit=1000, auto_process=False, translation_delay=10.0, premium_speedup=0.5,
        error_rate=0.0,
    )  # fmt: skip
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    free, premium = await submit(service), await submit(service, Role.PREMIUM)
    free_d = [scheduler._plan(at_attempt(free, n)).duration_s for n in range(1, 201)]
    prem_d = [scheduler._plan(at_attempt(premium, n)).duration_s for n in range(1, 201)]
    assert all(9.0 <= d <= 11.0 for d in free_d)
    assert min(free_d) < 9.2 and max(free_d) > 10.8  # the whole ±10 %, not a narrower band
    assert all(4.5 <= d <= 5.5 for d in prem_d)
    assert min(prem_d) < 4.6 and max(prem_d) > 5.4
    assert all(scheduler._plan(at_attempt(free, n)) == Plan(free_d[n - 1]) for n in (1, 2))


async def test_the_error_rate_decides_failures_anywhere_from_30_to_100_percent_in(
    closing: list[Any],
) -> None:
    always = Config(rate_limit=1000, auto_process=False, error_rate=1.0)
    service, scheduler = await make(always)
    closing.append((service, scheduler))
    record = await submit(service)
    plans = [scheduler._plan(at_attempt(record, n)) for n in range(1, 301)]
    assert all(p.fail_at is not None and 0.3 <= p.fail_at <= 1.0 for p in plans)
    fail_at = [p.fail_at for p in plans if p.fail_at is not None]
    assert min(fail_at) < 0.35 and max(fail_at) > 0.95
    assert {p.error_code for p in plans} == set(CODES)
    assert all(p.retryable and p.stuck_at is None for p in plans)
    service.config = Config(rate_limit=1000, auto_process=False, error_rate=0.0)
    assert all(scheduler._plan(at_attempt(record, n)).fail_at is None for n in range(1, 101))
    service.config = Config(rate_limit=1000, auto_process=False, error_rate=0.5)
    failed = sum(scheduler._plan(at_attempt(record, n)).fail_at is not None for n in range(400))
    assert 100 < failed < 300


async def test_a_scenario_scripts_the_outcome_and_the_duration(closing: list[Any]) -> None:
    config = Config(rate_limit=1000, auto_process=False, error_rate=1.0, premium_speedup=0.5)
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    record = await submit(service, Role.PREMIUM)

    def plan(attempt: int, scenario: Scenario) -> Plan:
        return scheduler._plan(at_attempt(record, attempt, scenario=scenario))

    # completed after two failed attempts; the scenario's duration as is, even for premium
    flaky = Scenario(duration_s=3.0, outcome=Outcome.COMPLETED, fail_attempts=2)
    for attempt in (1, 2):
        first = plan(attempt, flaky)
        assert (first.duration_s, first.fail_at, first.retryable) == (3.0, 1.0, True)
        assert first.error_code in CODES and first.stuck_at is None
    assert plan(3, flaky) == Plan(3.0)
    assert plan(4, flaky) == Plan(3.0)
    # no error rate applies to a scripted job: error_rate is 1 here
    assert plan(1, Scenario(duration_s=2.0)) == Plan(2.0)
    failed = plan(5, Scenario(duration_s=2.0, outcome=Outcome.FAILED))
    assert (failed.fail_at, failed.retryable, failed.stuck_at) == (1.0, True, None)
    final = plan(1, Scenario(duration_s=2.0, outcome=Outcome.PERMANENTLY_FAILED))
    assert (final.fail_at, final.retryable, final.stuck_at) == (1.0, False, None)
    assert final.error_code in CODES
    stuck = [plan(n, Scenario(duration_s=2.0, outcome=Outcome.STUCK)) for n in range(1, 201)]
    assert all(s.fail_at is None and s.stuck_at is not None for s in stuck)
    at = [s.stuck_at for s in stuck if s.stuck_at is not None]
    assert all(0.3 <= a <= 0.9 for a in at) and min(at) < 0.35 and max(at) > 0.85
    # no duration in the scenario: the plan's own (premium: sped up)
    plain = plan(1, Scenario(outcome=Outcome.FAILED))
    assert 0.9 * 15.0 * 0.5 <= plain.duration_s <= 1.1 * 15.0 * 0.5


# ---- the queue: premium first, then first come first served -------------------------------


async def test_start_now_takes_premium_first_then_submission_order(closing: list[Any]) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    a = await submit(service)
    b = await submit(service, Role.PREMIUM)
    c = await submit(service)
    d = await submit(service, Role.PREMIUM)
    e = await submit(service)
    await service.cancel(c.job.id, None)  # no longer pending: skipped
    first = await scheduler.start_now(2)
    assert [r.job.id for r in first] == [b.job.id, d.job.id]
    rest = await scheduler.start_now(10)
    assert [r.job.id for r in rest] == [a.job.id, e.job.id]
    assert await scheduler.start_now(5) == []
    for record in (a, b, d, e):
        await until(lambda r=record: status(service, r) is Status.COMPLETED)  # type: ignore[misc]
    assert status(service, c) is Status.CANCELLED


async def test_a_job_is_queued_once_and_a_deleted_one_not_at_all(closing: list[Any]) -> None:
    service, scheduler = await make(Config(rate_limit=1000, translation_delay=1.0, workers=1))
    closing.append((service, scheduler))
    record = await submit(service)
    # the hint counts waves of the backlog (this job included) per worker, plus its own run
    assert scheduler.poll_hint(record) == pytest.approx(2 * 1.0 + 0.02)
    scheduler.job_changed(record, EventType.RETRYING)  # heard twice: still one entry
    assert scheduler.poll_hint(record) == pytest.approx(2 * 1.0 + 0.02)
    other = await submit(service)
    scheduler.job_changed(other, EventType.CREATED)
    assert scheduler.poll_hint(record) == pytest.approx(3 * 1.0 + 0.02)
    ghost = await submit(service, user="ghost")
    assert scheduler.poll_hint(record) == pytest.approx(4 * 1.0 + 0.02)
    started = await scheduler.start_now(10)
    assert [r.job.id for r in started] == [record.job.id, other.job.id, ghost.job.id]
    # a pending job whose delete is heard is not queued (it is gone)
    late = await submit(service, user="late")
    await scheduler.start_now(1)  # drains the queue
    scheduler.job_changed(service.get(late.job.id), EventType.DELETED)
    assert scheduler._queue == []


async def test_start_now_reports_a_refusing_store_only_if_nothing_started(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    one, two, three = await submit(service), await submit(service), await submit(service)
    real = service.begin_attempt
    refused: set[str] = set()

    async def begin(record: Record, *args: Any) -> bool:
        if record.job.id in refused:
            raise StoreUnavailable("disk full")
        return await real(record, *args)

    monkeypatch.setattr(service, "begin_attempt", begin)
    refused = {one.job.id, two.job.id, three.job.id}
    with pytest.raises(StoreUnavailable):
        await scheduler.start_now(2)  # nothing started: the caller's 503
    assert {status(service, r) for r in (one, two, three)} == {Status.PENDING}
    refused = {two.job.id}
    started = await scheduler.start_now(3)
    assert [r.job.id for r in started] == [one.job.id, three.job.id]  # two is still queued
    refused = set()
    assert [r.job.id for r in await scheduler.start_now(3)] == [two.job.id]


async def test_start_now_surfaces_a_bug_in_a_claim(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    await submit(service)

    async def broken(*_: Any) -> bool:
        raise KeyError("bug")

    monkeypatch.setattr(service, "begin_attempt", broken)
    with pytest.raises(KeyError):
        await scheduler.start_now(1)


async def test_start_now_keeps_taking_batches_until_count_or_the_queue_is_empty(
    closing: list[Any],
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    records = [await submit(service) for _ in range(4)]
    # another process (or a cancel) takes the first two between the queue and the claim
    for record in records[:2]:
        await service.cancel(record.job.id, None)
        scheduler._enqueue(service.get(record.job.id))  # stale entries still queued
    started = await scheduler.start_now(2)
    assert [r.job.id for r in started] == [r.job.id for r in records[2:]]


# ---- poll hints ----------------------------------------------------------------------


async def test_poll_hints_for_each_status(closing: list[Any]) -> None:
    clock = InstantClock()
    config = Config(
        rate_limit=1000, translation_delay=4.0, premium_speedup=0.5, workers=2,
        attempt_timeout_s=3600.0,
    )  # fmt: skip
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    free = await submit(service)
    assert scheduler.poll_hint(free) == pytest.approx(4.0 + 0.02)  # one run, just after
    premium = await submit(service, Role.PREMIUM)
    # two queued, two workers: one wave, then its own run; premium runs twice as fast
    assert scheduler.poll_hint(premium) == pytest.approx(2 * 2.0 + 0.02)
    scripted = await submit(service, scenario=Scenario(duration_s=1.5))
    assert scheduler.poll_hint(scripted) == pytest.approx(2 * 1.5 + 0.02)  # its own duration
    await submit(service)
    assert scheduler.poll_hint(free) == pytest.approx(3 * 4.0 + 0.02)  # four queued: 2 waves
    await submit(service)
    assert scheduler.poll_hint(free) == pytest.approx(3 * 4.0 + 0.02)  # five: still 2
    for _ in range(9):
        await submit(service)
    assert scheduler.poll_hint(free) == 30.0  # capped: 8 runs of 4 s
    service.config = Config(rate_limit=1000, auto_process=False, translation_delay=4.0)
    assert scheduler.poll_hint(free) == 5.0  # manual mode: nothing moves until an admin acts

    # processing
    await service.begin_attempt(free, 10.0)
    assert scheduler.poll_hint(free) == pytest.approx(10.0 + 0.02)
    clock.t += 4.0
    assert scheduler.poll_hint(free) == pytest.approx(6.0 + 0.02)
    clock.t = T0 + 9.5  # half a second to go: just after it, not the overdue back-off
    assert scheduler.poll_hint(free) == pytest.approx(0.5 + 0.02)
    clock.t = T0 + 13.0  # 3 s overdue: half the delay
    assert scheduler.poll_hint(free) == pytest.approx(1.5)
    clock.t += 100.0
    assert scheduler.poll_hint(free) == 30.0
    clock.t = T0 + 10.0 + 1e-6  # only just overdue: the margin, not ~0
    assert scheduler.poll_hint(free) == pytest.approx(0.02)
    await service.begin_attempt(premium, None)  # no ETA: one expected run
    assert scheduler.poll_hint(premium) == pytest.approx(2.0)
    service.config = Config(rate_limit=1000, auto_process=False, translation_delay=100.0)
    assert scheduler.poll_hint(premium) == 30.0

    # failed: its retry wait, then one run
    service.config = Config(rate_limit=1000, auto_process=False, translation_delay=4.0)
    clock.t = T0 + 1000.0
    await service.fail_attempt(free, 1, "timeout", "t", retryable=True, retry_in_s=5.0)
    assert status(service, free) is Status.FAILED
    assert scheduler.poll_hint(free) == pytest.approx(5.0 + 4.0 + 0.02)
    clock.t += 2.0
    assert scheduler.poll_hint(free) == pytest.approx(3.0 + 4.0 + 0.02)
    clock.t += 10.0  # overdue: no negative wait
    assert scheduler.poll_hint(free) == pytest.approx(4.0 + 0.02)
    await service.fail_attempt(premium, 1, "timeout", "t", retryable=True, retry_in_s=100.0)
    assert scheduler.poll_hint(premium) == 30.0

    # terminal: nothing more will happen
    await service.cancel(free.job.id, None)
    assert scheduler.poll_hint(service.get(free.job.id)) is None


async def test_a_failed_job_without_a_due_time_is_hinted_one_run(closing: list[Any]) -> None:
    service, scheduler = await make(Config(rate_limit=1000, translation_delay=2.0))
    closing.append((service, scheduler))
    record = await submit(service)
    failed = msgspec.structs.replace(record.job, status=Status.FAILED, not_before=None)
    fake = type("R", (), {"job": failed, "ordinal": record.ordinal})()
    assert scheduler.poll_hint(fake) == pytest.approx(2.0 + 0.02)


async def test_running_attempts_count_in_the_backlog(closing: list[Any]) -> None:
    config = Config(rate_limit=1000, translation_delay=1.0, workers=1, attempt_timeout_s=3600.0)
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    stuck = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    assert await scheduler.start_now(1)
    assert scheduler.running == 1
    queued = await submit(service)
    # the running one and this one: two waves for one worker, then its own run
    assert scheduler.poll_hint(queued) == pytest.approx(3 * 1.0 + 0.02)
    assert status(service, stuck) is Status.PROCESSING


# ---- one attempt, start to end --------------------------------------------------------


async def test_an_attempt_reports_progress_in_5_percent_steps_then_completes(
    closing: list[Any],
) -> None:
    clock = InstantClock()
    service, scheduler = await make(Config(rate_limit=1000, auto_process=False), clock)
    closing.append((service, scheduler))
    reported: list[int] = []
    real = service.report_progress

    async def spy(record: Record, progress: int, attempt: int) -> None:
        reported.append(progress)
        assert attempt == 1
        await real(record, progress, attempt)

    service.report_progress = spy  # type: ignore[method-assign]
    record = await submit(service, scenario=Scenario(duration_s=10.0))
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.COMPLETED)
    assert reported == list(range(5, 100, 5))  # every 5 % (0.5 s), not at the end
    assert clock.slept == [0.5] * 20
    job = service.get(record.job.id).job
    assert job.progress == 100 and job.finished_at == iso_ms(T0 + 10.0)
    assert job.started_at == iso_ms(T0) and job.eta is None


async def test_short_attempts_report_at_most_every_quarter_second(closing: list[Any]) -> None:
    clock = InstantClock()
    service, scheduler = await make(Config(rate_limit=1000, auto_process=False), clock)
    closing.append((service, scheduler))
    reported: list[int] = []
    real = service.report_progress

    async def spy(record: Record, progress: int, attempt: int) -> None:
        reported.append(progress)
        await real(record, progress, attempt)

    service.report_progress = spy  # type: ignore[method-assign]
    record = await submit(service, scenario=Scenario(duration_s=1.0))
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.COMPLETED)
    assert reported == [25, 50, 75]
    assert clock.slept == [0.25] * 4


async def test_a_failing_attempt_stops_where_it_fails(closing: list[Any]) -> None:
    clock = InstantClock()
    config = Config(rate_limit=1000, auto_process=False, error_rate=1.0, translation_delay=8.0)
    service, scheduler = await make(config, clock, seed=3)
    closing.append((service, scheduler))
    reported: list[int] = []
    real = service.report_progress

    async def spy(record: Record, progress: int, attempt: int) -> None:
        reported.append(progress)
        await real(record, progress, attempt)

    service.report_progress = spy  # type: ignore[method-assign]
    record = await submit(service)
    plan = scheduler._plan(at_attempt(record, 1))
    assert plan.fail_at is not None
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.FAILED)
    assert clock.t == pytest.approx(T0 + plan.duration_s * plan.fail_at)
    assert reported and max(reported) <= plan.fail_at * 100
    job = service.get(record.job.id).job
    assert job.error == JobError(plan.error_code, MESSAGES[plan.error_code])


async def test_a_reported_progress_refused_by_the_store_does_not_end_the_attempt(
    closing: list[Any],
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    calls: list[int] = []

    async def refusing(record: Record, progress: int, attempt: int) -> None:
        calls.append(progress)
        raise StoreUnavailable("disk full")  # progress is news, not state

    service.report_progress = refusing  # type: ignore[method-assign]
    record = await submit(service, scenario=Scenario(duration_s=1.0))
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.COMPLETED)
    assert calls == [25, 50, 75]


@pytest.mark.parametrize(
    ("attempt", "retry_delay", "wait"),
    [(1, 2.0, 2.0), (2, 2.0, 4.0), (3, 2.0, 8.0), (2, 40.0, 60.0), (1, 70.0, 60.0)],
)
async def test_a_failed_attempt_is_retried_after_a_doubling_backoff_capped_at_60_s(
    closing: list[Any], attempt: int, retry_delay: float, wait: float
) -> None:
    clock = InstantClock()
    config = Config(rate_limit=1000, auto_process=False, retry_delay=retry_delay, max_attempts=10)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.FAILED))
    for n in range(1, attempt + 1):
        started = clock.t
        assert len(await scheduler.start_now(1)) == 1
        await until(lambda: status(service, record) is Status.FAILED)
        job = service.get(record.job.id).job
        assert job.attempt == n
        if n < attempt:
            clock.t = started + 1.0 + 1000.0
            assert await service.requeue(record.job.id)
    assert job.not_before == iso_ms(started + 1.0 + wait)
    assert job.error is not None and job.error.message == MESSAGES[job.error.code]


async def test_a_permanent_failure_is_not_retried(closing: list[Any]) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    scenario = Scenario(duration_s=1.0, outcome=Outcome.PERMANENTLY_FAILED)
    record = await submit(service, scenario=scenario)
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.PERMANENTLY_FAILED)
    job = service.get(record.job.id).job
    assert job.attempt == 1 and job.not_before is None
    assert job.error is not None and job.error.message == MESSAGES[job.error.code]


async def test_a_hung_attempt_times_out_as_a_retryable_timeout(closing: list[Any]) -> None:
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=0.05, retry_delay=3.0)
    clock = InstantClock()
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    await scheduler.start_now(1)
    await until(lambda: status(service, record) is Status.FAILED)
    job = service.get(record.job.id).job
    assert job.error == JobError("timeout", "the translation backend did not answer in time")
    assert job.not_before == iso_ms(clock.t + 3.0)  # retryable, after the first backoff
    await until(lambda: scheduler.running == 0)  # the attempt's task ends with it


async def test_a_cancel_or_a_takeover_interrupts_the_running_attempt(closing: list[Any]) -> None:
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    stuck = Scenario(duration_s=1.0, outcome=Outcome.STUCK)
    one, two = await submit(service, scenario=stuck), await submit(service, scenario=stuck)
    await scheduler.start_now(2)
    assert scheduler.running == 2
    task = scheduler._attempts[one.job.id]
    await service.cancel(one.job.id, None)
    await until(lambda: scheduler.running == 1)
    assert task.cancelled()
    other = scheduler._attempts[two.job.id]
    assert await service.interrupted(two.job.id)  # another process took it back (shared store)
    await until(lambda: scheduler.running == 0)
    assert other.cancelled()
    assert status(service, two) is Status.PENDING
    assert status(service, one) is Status.CANCELLED
    # the interrupted job is queued again
    assert [r.job.id for r in await scheduler.start_now(5)] == [two.job.id]


async def test_progress_does_not_interrupt_an_attempt(closing: list[Any]) -> None:
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    await scheduler.start_now(1)
    task = scheduler._attempts[record.job.id]
    scheduler.job_changed(service.get(record.job.id), EventType.PROGRESS)
    scheduler.job_changed(service.get(record.job.id), EventType.STARTED)
    await asyncio.sleep(0.01)
    assert not task.done() and scheduler.running == 1


async def test_an_outcome_refused_by_the_store_is_retried_until_it_is_taken(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("service.scheduler.STORE_RETRY_S", 0.001)
    calls: list[object] = []

    async def flaky(*args: object) -> None:
        calls.append(args)
        if len(calls) < 3:
            raise StoreUnavailable("disk full")

    await _persist(flaky, "a", 1)
    assert calls == [("a", 1)] * 3

    async def broken(*args: object) -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await _persist(broken)


# ---- the workers, the timers ----------------------------------------------------------


async def test_at_most_workers_attempts_run_and_a_hung_one_frees_its_worker(
    closing: list[Any],
) -> None:
    clock = ManualClock()
    config = Config(
        rate_limit=1000, translation_delay=10.0, workers=2, attempt_timeout_s=3600.0,
        error_rate=0.0,
    )  # fmt: skip
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    scheduler.start()
    jobs = [await submit(service, scenario=Scenario(duration_s=10.0)) for _ in range(3)]
    await until(lambda: scheduler.running == 2)
    await asyncio.sleep(0.02)
    assert [status(service, r) for r in jobs] == [Status.PROCESSING] * 2 + [Status.PENDING]
    await advance_until(clock, lambda: status(service, jobs[0]) is Status.COMPLETED, step=0.5)
    await until(lambda: status(service, jobs[2]) is Status.PROCESSING)
    await advance_until(clock, lambda: status(service, jobs[2]) is Status.COMPLETED, step=0.5)
    # a hung remote holds no worker: once both hang, the next job runs beside them
    stuck = Scenario(duration_s=1.0, outcome=Outcome.STUCK)
    hung = [await submit(service, scenario=stuck) for _ in range(2)]
    after = await submit(service, scenario=Scenario(duration_s=1.0))
    await until(lambda: scheduler.running == 2)
    assert status(service, after) is Status.PENDING
    await advance_until(clock, lambda: status(service, after) is Status.COMPLETED)
    assert [status(service, r) for r in hung] == [Status.PROCESSING] * 2
    await until(lambda: scheduler.running == 2)  # after's task has ended


async def test_switching_auto_process_on_starts_the_queue(closing: list[Any]) -> None:
    clock = ManualClock()
    service, scheduler = await make(Config(rate_limit=1000, auto_process=False), clock)
    closing.append((service, scheduler))
    scheduler.start()
    record = await submit(service, scenario=Scenario(duration_s=1.0))
    await asyncio.sleep(0.02)
    assert status(service, record) is Status.PENDING
    await service.update_config(ConfigPatch(auto_process=True))
    await advance_until(clock, lambda: status(service, record) is Status.COMPLETED)


async def test_start_queues_what_the_read_model_holds(tmp_path: Any) -> None:
    """After a restart: pending jobs are queued, failed ones wait for their retry."""
    path = str(tmp_path / "jobs.db")
    clock = InstantClock()
    manual = Config(rate_limit=1000, auto_process=False, retry_delay=5.0, error_rate=0.0)
    service, scheduler = await make(manual, clock, store=SQLiteStore(path))
    pending = await submit(service, scenario=Scenario(duration_s=1.0))
    failing = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.FAILED))
    done = await submit(service, scenario=Scenario(duration_s=1.0))
    assert [r.job.id for r in await scheduler.start_now(1)] == [pending.job.id]
    await until(lambda: status(service, pending) is Status.COMPLETED)
    await scheduler.start_now(1)
    await until(lambda: status(service, failing) is Status.FAILED)
    await service.cancel(done.job.id, None)
    waiting = await submit(service, scenario=Scenario(duration_s=1.0))
    await scheduler.stop()
    await service.store.close()

    later = ManualClock(clock.t)
    service, scheduler = await make(
        Config(rate_limit=1000, retry_delay=5.0), later, store=SQLiteStore(path)
    )
    try:
        service.config = Config(rate_limit=1000, retry_delay=5.0, error_rate=0.0)
        scheduler.start()
        await advance_until(later, lambda: status(service, waiting) is Status.COMPLETED)
        assert status(service, failing) is Status.FAILED  # not due for 5 s
        due = parse_iso(service.get(failing.job.id).job.not_before or "")
        assert scheduler._retries == [(due, failing.job.id)]  # waiting for its retry
        assert status(service, pending) is Status.COMPLETED
        assert status(service, done) is Status.CANCELLED
    finally:
        await scheduler.stop()
        await service.store.close()


async def test_failed_jobs_are_requeued_when_due(closing: list[Any]) -> None:
    clock = ManualClock()
    config = Config(rate_limit=1000, auto_process=False, retry_delay=0.5)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    scheduler.start()
    failing = Scenario(duration_s=1.0, outcome=Outcome.FAILED)
    first = await submit(service, scenario=failing)
    second = await submit(service, scenario=failing)
    await scheduler.start_now(2)
    both = (first, second)
    await advance_until(clock, lambda: {status(service, r) for r in both} == {Status.FAILED})
    dues = {parse_iso(service.get(r.job.id).job.not_before or "") for r in both}
    clock.advance(min(dues) - 0.01 - clock.t)  # just before the first is due
    await asyncio.sleep(0.6)  # longer than the loop's wait
    assert {status(service, r) for r in both} == {Status.FAILED}
    clock.advance(max(dues) - clock.t)  # both due: the loop notices by itself
    await until(lambda: {status(service, r) for r in both} == {Status.PENDING})


async def test_a_crash_while_requeueing_is_logged_and_the_loop_goes_on(
    closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    clock = ManualClock()
    config = Config(rate_limit=1000, auto_process=False, retry_delay=0.1)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    real = service.requeue
    crashes = [KeyError("bug")]

    async def requeue(job_id: str) -> bool:
        if crashes:
            raise crashes.pop()
        return await real(job_id)

    service.requeue = requeue  # type: ignore[method-assign]
    scheduler.start()
    failing = Scenario(duration_s=1.0, outcome=Outcome.FAILED)
    record = await submit(service, scenario=failing)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        await scheduler.start_now(1)
        await advance_until(clock, lambda: not crashes)
        await until(lambda: bool(caplog.records))
        assert [r.getMessage() for r in caplog.records] == ["requeueing a failed job crashed"]
        exc_info = caplog.records[0].exc_info
        assert exc_info is not None and repr(exc_info[1]) == "KeyError('bug')"  # the traceback
        assert status(service, record) is Status.FAILED
        # the loop lives on: the next failure is requeued
        other = await submit(service, scenario=failing)
        await scheduler.start_now(5)
        await advance_until(clock, lambda: status(service, other) is Status.PENDING)


async def test_finished_jobs_expire_after_the_ttl_swept_every_tenth(
    closing: list[Any],
) -> None:
    clock = ManualClock()
    config = Config(rate_limit=1000, auto_process=False, job_ttl_s=100.0)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    record = await submit(service)
    await service.cancel(record.job.id, None)  # finished at T0
    scheduler.start()
    for _ in range(10):  # sweeps every 10 s: at T0+100 it is exactly TTL old, still kept
        await asyncio.sleep(0.01)
        clock.advance(10.0)
    await asyncio.sleep(0.05)
    assert service.find(record.job.id) is not None
    clock.advance(10.0)
    await until(lambda: service.find(record.job.id) is None)


@pytest.mark.parametrize("ttl", [1.0, 0.1, 3600.0])
async def test_with_nothing_finished_the_sweep_waits_a_whole_ttl(
    closing: list[Any], ttl: float
) -> None:
    """Nothing can expire before a whole TTL after the oldest finished job: with none, the
    sweep looks again a TTL later (a job finishing meanwhile is younger than that)."""
    clock = InstantClock()
    config = Config(rate_limit=1000, auto_process=False, job_ttl_s=ttl)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    swept: list[float | None] = []

    async def cleanup(older_than_s: float | None = None) -> int:
        swept.append(older_than_s)
        if len(swept) >= 3:
            await asyncio.Event().wait()
        return 0

    service.cleanup = cleanup  # type: ignore[method-assign]
    scheduler.start()
    await until(lambda: len(swept) == 3)
    assert swept == [ttl] * 3
    assert clock.slept[:3] == [pytest.approx(ttl)] * 3


async def test_a_failing_sweep_is_tried_again(
    closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    clock = InstantClock()
    service, scheduler = await make(Config(rate_limit=1000, job_ttl_s=1.0), clock)
    closing.append((service, scheduler))
    errors: list[Exception] = [StoreUnavailable("down"), KeyError("bug")]
    calls: list[int] = []

    async def cleanup(older_than_s: float | None = None) -> int:
        calls.append(1)
        if errors:
            raise errors.pop(0)
        await asyncio.Event().wait()
        return 0

    service.cleanup = cleanup  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.start()
        await until(lambda: len(calls) == 3)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["expiring finished jobs failed; the next sweep tries again"]


class SharedStore(SQLiteStore):
    """A store shared with other processes, simulated: leases recorded, expiries scripted."""

    shared = True

    def __init__(self) -> None:
        super().__init__(":memory:")
        self.renewed: list[tuple[list[str], float, float]] = []
        self.expired: list[str] = []
        self.asked: list[float] = []
        self.fail_next: Exception | None = None

    async def renew_leases(self, job_ids: list[str], lease_s: float, now: float) -> None:
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        self.renewed.append((sorted(job_ids), lease_s, now))

    async def expired_leases(self, now: float) -> list[str]:
        self.asked.append(now)
        expired, self.expired = self.expired, []
        return expired


async def test_on_a_shared_store_leases_are_renewed_and_expired_ones_taken_back(
    closing: list[Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def sleep(delay: float, *args: Any) -> Any:
        slept.append(delay)
        return await real_sleep(delay, *args)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    store = SharedStore()
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    claimed: list[float | None] = []
    service, scheduler = await make(config, ManualClock(), store=store, lease_s=0.06)
    closing.append((service, scheduler))
    real = service.begin_attempt

    async def begin(
        record: Record, duration: float | None, lease: float | None = None, slots: Any = None
    ) -> bool:
        claimed.append(lease)
        return await real(record, duration, lease, slots)

    service.begin_attempt = begin  # type: ignore[method-assign]
    stuck = Scenario(duration_s=1.0, outcome=Outcome.STUCK)
    mine = await submit(service, scenario=stuck)
    theirs = await submit(service, scenario=stuck)
    await scheduler.start_now(1)
    assert claimed == [0.06]  # the attempt holds a lease of lease_s
    # theirs: processing under another process's lease, which has run out
    assert await real(theirs, 1.0, 0.06)
    store.expired = [theirs.job.id, mine.job.id]  # ours is still running here: kept
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.start()
        names = [t.get_name() for t in scheduler._loops]
        assert names == ["retries", "leases", "dispatch", "expiry"]
        await until(lambda: status(service, theirs) is Status.PENDING)
        assert status(service, mine) is Status.PROCESSING
        await until(lambda: len(store.renewed) >= 2)
        ids, lease, now = store.renewed[-1]
        # a lease is about a process being alive, which happens in real time: renewed and
        # judged on the wall clock, not the service's (T0 is years away from it)
        assert ids == [mine.job.id] and lease == 0.06 and abs(now - time.time()) < 60
        assert store.asked and all(abs(t - time.time()) < 60 for t in store.asked)
        # renewed every third of the lease, so one late round does not lose it
        assert pytest.approx(0.02) in slept
        assert not [d for d in slept if d > 0.02 + 1e-9 and d != 1.0]
        store.fail_next = StoreUnavailable("down")
        count = len(store.renewed)
        await until(lambda: len(store.renewed) > count)
        assert caplog.records == []
        store.fail_next = KeyError("bug")
        count = len(store.renewed)
        await until(lambda: len(store.renewed) > count)
        assert [r.getMessage() for r in caplog.records] == [
            "taking over expired leases failed; the next round tries again"
        ]
    # stopping hands our running job back at once, for another process to take
    await scheduler.stop()
    assert status(service, mine) is Status.PENDING
    assert service.get(mine.job.id).job.attempt == 0


async def test_on_a_private_store_no_lease_and_a_stop_leaves_jobs_processing(
    closing: list[Any],
) -> None:
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    service, scheduler = await make(config, ManualClock(), lease_s=0.01)
    closing.append((service, scheduler))
    leases: list[float | None] = []
    real = service.begin_attempt

    async def begin(
        record: Record, duration: float | None, lease: float | None = None, slots: Any = None
    ) -> bool:
        leases.append(lease)
        return await real(record, duration, lease, slots)

    service.begin_attempt = begin  # type: ignore[method-assign]
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    scheduler.start()
    await scheduler.start_now(1)
    assert leases == [None]
    assert scheduler.running == 1
    assert [t.get_name() for t in scheduler._loops] == ["retries", "dispatch", "expiry"]
    await scheduler.stop()
    assert scheduler._loops == [] and scheduler.running == 0
    assert status(service, record) is Status.PROCESSING  # requeued at the next start


async def test_a_crashed_attempt_is_logged_and_frees_its_worker(
    closing: list[Any], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = ManualClock()
    service, scheduler = await make(Config(rate_limit=1000, workers=1, error_rate=0.0), clock)
    closing.append((service, scheduler))

    async def crash(*_: Any) -> None:
        raise KeyError("bug")

    monkeypatch.setattr(scheduler, "_simulate", crash)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.start()
        one = await submit(service)
        await until(lambda: any(r.getMessage() == "an attempt crashed" for r in caplog.records))
        crashed = next(r for r in caplog.records if r.getMessage() == "an attempt crashed")
        assert crashed.exc_info is not None and repr(crashed.exc_info[1]) == "KeyError('bug')"
        monkeypatch.undo()
        two = await submit(service, scenario=Scenario(duration_s=1.0))
        await advance_until(clock, lambda: status(service, two) is Status.COMPLETED)
    assert status(service, one) is Status.PROCESSING
    assert scheduler._tasks == set() or all(not t.done() for t in scheduler._tasks)


async def test_start_now_makes_up_for_a_lost_claim_but_never_exceeds_count(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    records = [await submit(service) for _ in range(5)]
    real = service.begin_attempt

    async def begin(record: Record, *args: Any) -> bool:
        if record.job.id == records[0].job.id:
            return False  # another process claimed it between our pop and our claim
        return await real(record, *args)

    monkeypatch.setattr(service, "begin_attempt", begin)
    started = await scheduler.start_now(2)
    assert [r.job.id for r in started] == [records[1].job.id, records[2].job.id]
    assert [status(service, r) for r in records[3:]] == [Status.PENDING] * 2


async def test_stop_cancels_hung_attempts_too(closing: list[Any]) -> None:
    clock = ManualClock()
    config = Config(rate_limit=1000, workers=1, attempt_timeout_s=3600.0)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    scheduler.start()
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    await until(lambda: scheduler.running == 1)
    task = scheduler._attempts[record.job.id]
    await advance_until(clock, lambda: task not in scheduler._tasks)  # hung: off the workers
    await scheduler.stop()
    assert task.cancelled() and scheduler.running == 0


class HandBack(SQLiteStore):
    shared = True


@pytest.mark.parametrize("how", ["refused", "hangs"])
async def test_a_failed_or_hung_hand_back_does_not_hold_up_stop(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    monkeypatch.setattr("service.scheduler.HANDBACK_S", 0.05)
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    service, scheduler = await make(config, ManualClock(), store=HandBack(":memory:"))
    closing.append((service, scheduler))
    record = await submit(service, scenario=Scenario(duration_s=1.0, outcome=Outcome.STUCK))
    await scheduler.start_now(1)
    asked: list[str] = []

    async def interrupted(job_id: str) -> bool:
        asked.append(job_id)
        if how == "refused":
            raise StoreUnavailable("down")
        await asyncio.Event().wait()
        return True

    service.interrupted = interrupted  # type: ignore[method-assign]
    async with asyncio.timeout(10):
        await scheduler.stop()  # returns, and raises nothing: the lease runs out instead
    assert asked == [record.job.id]


async def test_a_claim_refused_by_the_store_is_tried_again_later(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("service.scheduler.STORE_RETRY_S", 0.01)
    clock = ManualClock()
    service, scheduler = await make(Config(rate_limit=1000, error_rate=0.0), clock)
    closing.append((service, scheduler))
    real = service.begin_attempt
    refusals = [StoreUnavailable("down")]

    async def begin(record: Record, *args: Any) -> bool:
        if refusals:
            raise refusals.pop()
        return await real(record, *args)

    service.begin_attempt = begin  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        scheduler.start()
        record = await submit(service, scenario=Scenario(duration_s=1.0))
        await until(lambda: not refusals)
        await advance_until(clock, lambda: status(service, record) is Status.COMPLETED)
    assert caplog.records == []  # a refusal is not a crash


async def test_a_stuck_attempt_hangs_where_its_plan_says(closing: list[Any]) -> None:
    clock = InstantClock()
    config = Config(rate_limit=1000, auto_process=False, attempt_timeout_s=3600.0)
    service, scheduler = await make(config, clock)
    closing.append((service, scheduler))
    record = await submit(service, scenario=Scenario(duration_s=10.0, outcome=Outcome.STUCK))
    plan = scheduler._plan(at_attempt(record, 1))
    assert plan.stuck_at is not None
    await scheduler.start_now(1)
    task = scheduler._attempts[record.job.id]
    await until(lambda: task not in scheduler._tasks)  # hung: its worker is free
    assert clock.t == pytest.approx(T0 + 10.0 * plan.stuck_at, abs=0.5)  # no further
    job = service.get(record.job.id).job
    assert job.status is Status.PROCESSING and job.progress <= plan.stuck_at * 100
    assert not task.done()


async def test_an_instant_attempt_completes(
    closing: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    config = Config(rate_limit=1000, auto_process=False, translation_delay=0.0, error_rate=0.0)
    service, scheduler = await make(config)
    closing.append((service, scheduler))
    record = await submit(service)
    with caplog.at_level(logging.ERROR, logger="service.scheduler"):
        await scheduler.start_now(1)
        await until(lambda: status(service, record) is Status.COMPLETED)
    assert caplog.records == []


async def test_scripted_failures_draw_their_error_code_like_any_other(
    closing: list[Any],
) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    record = await submit(service)
    for scenario in (
        Scenario(duration_s=1.0, outcome=Outcome.FAILED),
        Scenario(duration_s=1.0, outcome=Outcome.PERMANENTLY_FAILED),
        Scenario(duration_s=1.0, outcome=Outcome.COMPLETED, fail_attempts=100),
    ):
        codes = {
            scheduler._plan(at_attempt(record, n, scenario=scenario)).error_code
            for n in range(1, 61)
        }
        assert codes == set(CODES), scenario


async def test_a_start_carries_the_planned_eta_and_the_default_lease_is_10_s(
    closing: list[Any],
) -> None:
    clock = ManualClock()
    service, scheduler = await make(clock=clock)
    closing.append((service, scheduler))
    assert scheduler.lease_s == 10.0
    record = await submit(service, scenario=Scenario(duration_s=7.5))
    await scheduler.start_now(1)
    job = service.get(record.job.id).job
    assert job.status is Status.PROCESSING and job.eta == iso_ms(T0 + 7.5)


async def test_a_job_deleted_while_queued_is_skipped(closing: list[Any]) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    gone, kept = await submit(service), await submit(service)
    await service.cancel(gone.job.id, None)
    assert await service.cleanup() == 1  # finished jobs go; its queue entry stays behind
    assert service.find(gone.job.id) is None
    assert [r.job.id for r in await scheduler.start_now(5)] == [kept.job.id]


async def test_a_failed_job_without_a_due_time_is_due_at_once(closing: list[Any]) -> None:
    service, scheduler = await make()
    closing.append((service, scheduler))
    record = await submit(service)
    failed = msgspec.structs.replace(record.job, status=Status.FAILED, not_before=None)
    fake = type("R", (), {"job": failed, "ordinal": record.ordinal})()
    scheduler.job_changed(fake, EventType.FAILED)
    assert [job_id for _, job_id in scheduler._retries] == [record.job.id]
    assert scheduler._retries[0][0] <= T0


async def test_a_start_the_store_refuses_for_the_plan_parks_the_job_until_a_slot_frees(
    closing: list[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A shared store refuses a start when another process's start took the plan's last slot
    first (CapReached): the job stays pending, parked (not claimed again and again while the
    plan is full), and the next of its user's jobs to stop running queues it again."""
    service, scheduler = await make()
    closing.append((service, scheduler))
    scheduler.admission = lambda record: 3  # every job of this test: a plan of 3 slots
    stuck = Scenario(outcome=Outcome.STUCK)
    running = [await submit(service, scenario=stuck) for _ in range(2)]
    late = await submit(service)
    elsewhere = await submit(service, scenario=stuck)
    real = service.begin_attempt
    asked: list[tuple[str, Any]] = []

    async def begin(record: Record, *args: Any) -> bool:
        asked.append((record.job.id, args[2] if len(args) > 2 else None))
        if record.job.id == late.job.id and len(asked) == 3:
            # meanwhile another process started `elsewhere` and took the last slot
            assert await real(elsewhere, None, None, 3)
            raise CapReached(3)
        return await real(record, *args)

    monkeypatch.setattr(service, "begin_attempt", begin)
    started = await scheduler.start_now(3)
    assert [r.job.id for r in started] == [r.job.id for r in running]
    assert asked == [(running[0].job.id, 3), (running[1].job.id, 3), (late.job.id, 3)]
    assert status(service, late) is Status.PENDING
    assert await scheduler.start_now(3) == []  # parked: not claimed again while the plan is full
    assert len(asked) == 3
    await service.cancel(elsewhere.job.id, "the other process's job ends")
    started = await scheduler.start_now(3)  # queued again by that stop, and started
    assert [r.job.id for r in started] == [late.job.id]
    assert status(service, late) is Status.PROCESSING
