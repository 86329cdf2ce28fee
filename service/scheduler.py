"""Scheduler: a priority queue, worker tasks, and the simulated work itself.

Premium before free, first come first served within a plan. Each attempt runs in its own task
so that a cancel interrupts exactly that attempt and nothing else. Randomness is drawn from a
generator seeded by (SEED, the job's submission ordinal, the attempt), so a seeded run gives
the same durations, outcomes and error codes however the workers interleave.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import random
import time
from typing import Final

import msgspec

from .jobs import JobService, Record
from .models import ERROR_CODES, Outcome, Role, Status, parse_iso

log = logging.getLogger(__name__)

PROGRESS_STEP: Final = 0.05  # progress events at most every 5 % ...
PROGRESS_MIN_INTERVAL_S: Final = 0.25  # ... and at most every 250 ms
RETRY_BACKOFF_CAP_S: Final = 60.0
HINT_MARGIN_S: Final = 0.02  # poll just after the ETA, not just before it
HINT_CAP_S: Final = 30.0
MANUAL_HINT_S: Final = 5.0  # manual mode: nothing moves until an admin says so

ERROR_MESSAGES: Final = {
    "timeout": "the translation backend did not answer in time",
    "internal_error": "the translation backend reported an internal error",
    "unexpected_failure": "the attempt ended unexpectedly",
}


class Plan(msgspec.Struct, frozen=True):
    """What one attempt will do, decided when it starts."""

    duration_s: float
    fail_at: float | None = None  # fraction of duration at which it fails
    error_code: str = "internal_error"
    retryable: bool = True
    stuck_at: float | None = None  # fraction at which it hangs forever


class Scheduler:
    def __init__(self, service: JobService, seed: int | None) -> None:
        self.service = service
        self.seed = seed
        self._queue: list[tuple[int, int, str]] = []  # (-priority, tiebreak, job id)
        self._tiebreak = itertools.count()
        self._has_work = asyncio.Event()
        self._workers: list[asyncio.Task[None]] = []
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._entropy = random.Random()
        service.dispatcher = self

    # ---- Dispatcher ------------------------------------------------------------

    def enqueue(self, record: Record) -> None:
        heapq.heappush(self._queue, (-record.job.priority, next(self._tiebreak), record.job.id))
        self._has_work.set()

    def interrupt(self, job_id: str) -> None:
        timer = self._timers.pop(job_id, None)
        if timer is not None:
            timer.cancel()
        task = self._attempts.get(job_id)
        if task is not None:
            task.cancel()

    def start_now(self, count: int) -> list[Record]:
        """Manual mode: start the next `count` queued jobs now, premium first."""
        started: list[Record] = []
        while len(started) < count:
            record = self._pop()
            if record is None:
                break
            self._spawn(record)
            if record.job.status is Status.PROCESSING:
                started.append(record)
        return started

    def poll_hint(self, record: Record) -> float | None:
        """Seconds until polling this job again is likely to show something new."""
        job = record.job
        if job.status.terminal:
            return None
        expected = self._expected_duration(record)
        if job.status is Status.PROCESSING:
            if job.eta is None:
                return min(expected, HINT_CAP_S)
            remaining = parse_iso(job.eta) - time.time()
            if remaining > 0:
                return remaining + HINT_MARGIN_S
            # overdue (stuck, or about to finish): back off in proportion to the delay
            return min(max(-remaining / 2, HINT_MARGIN_S), HINT_CAP_S)
        if job.status is Status.FAILED:
            timer = self._timers.get(job.id)
            wait = timer.when() - asyncio.get_running_loop().time() if timer else 0.0
            return min(max(wait, 0.0) + expected + HINT_MARGIN_S, HINT_CAP_S)
        if not self.service.config.auto_process:
            return MANUAL_HINT_S
        backlog = len(self._queue) + len(self._attempts)
        waves = backlog // max(1, self.service.config.workers)
        return min(expected * (waves + 1) + HINT_MARGIN_S, HINT_CAP_S)

    def _expected_duration(self, record: Record) -> float:
        job = record.job
        if job.scenario is not None and job.scenario.duration_s is not None:
            return job.scenario.duration_s
        config = self.service.config
        speedup = config.premium_speedup if job.role is Role.PREMIUM else 1.0
        return config.translation_delay * speedup

    def config_changed(self) -> None:
        self._resize(self.service.config.workers)
        self._has_work.set()

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        self._resize(self.service.config.workers)

    async def stop(self) -> None:
        """Stop workers and attempts; interrupted jobs stay processing and are requeued at
        the next start."""
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()
        tasks = [*self._workers, *self._attempts.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._workers.clear()

    @property
    def running(self) -> int:
        return len(self._attempts)

    # ---- workers ---------------------------------------------------------------

    def _resize(self, workers: int) -> None:
        self._workers = [w for w in self._workers if not w.done()]
        while len(self._workers) < workers:
            self._workers.append(asyncio.create_task(self._work(), name="worker"))
        for extra in self._workers[workers:]:
            extra.cancel()  # only idle waits are cancelled: attempts run in their own tasks
        del self._workers[workers:]

    async def _work(self) -> None:
        while True:
            record = self._pop() if self.service.config.auto_process else None
            if record is None:
                self._has_work.clear()
                await self._has_work.wait()
                continue
            task = self._spawn(record)
            if task is None:
                continue
            try:
                await task
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # type: ignore[union-attr]
                    raise  # this worker is being stopped, not just its job's attempt
            except Exception:
                pass  # reported by _attempt_done

    def _pop(self) -> Record | None:
        while self._queue:
            _, _, job_id = heapq.heappop(self._queue)
            record = self._pending(job_id)
            if record is not None:
                return record
        return None

    def _pending(self, job_id: str) -> Record | None:
        record = self.service.jobs.get(job_id)
        if record is None or record.job.status is not Status.PENDING:
            return None
        return record

    def _spawn(self, record: Record) -> asyncio.Task[None] | None:
        plan = self._plan(record)
        # the ETA is the planned duration even for an attempt that will fail or hang:
        # like a real backend, the simulator can't know that in advance
        if not self.service.begin_attempt(record, plan.duration_s):
            return None
        job_id = record.job.id
        task = asyncio.create_task(self._attempt(record, plan), name=f"attempt-{job_id}")
        self._attempts[job_id] = task
        task.add_done_callback(lambda t: self._attempt_done(job_id, t))
        return task

    def _attempt_done(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._attempts.get(job_id) is task:
            del self._attempts[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("attempt for %s crashed", job_id, exc_info=task.exception())

    # ---- one attempt -----------------------------------------------------------

    def _plan(self, record: Record) -> Plan:
        job = record.job
        attempt = job.attempt + 1
        rng = (
            random.Random(f"{self.seed}/{record.ordinal}/{attempt}")
            if self.seed is not None
            else self._entropy
        )
        config = self.service.config
        duration = config.translation_delay * rng.uniform(0.9, 1.1)
        if job.role is Role.PREMIUM:
            duration *= config.premium_speedup
        code = rng.choice(ERROR_CODES)
        scenario = job.scenario
        if scenario is None:
            if rng.random() < config.error_rate:
                return Plan(duration, fail_at=rng.uniform(0.3, 1.0), error_code=code)
            return Plan(duration)
        if scenario.duration_s is not None:
            duration = scenario.duration_s
        match scenario.outcome:
            case Outcome.COMPLETED if attempt <= scenario.fail_attempts:
                return Plan(duration, fail_at=1.0, error_code=code)
            case Outcome.COMPLETED:
                return Plan(duration)
            case Outcome.FAILED:
                return Plan(duration, fail_at=1.0, error_code=code)
            case Outcome.PERMANENTLY_FAILED:
                return Plan(duration, fail_at=1.0, error_code=code, retryable=False)
            case Outcome.STUCK:
                return Plan(duration, stuck_at=rng.uniform(0.3, 0.9))

    async def _attempt(self, record: Record, plan: Plan) -> None:
        stop_at = plan.fail_at if plan.fail_at is not None else plan.stuck_at
        await self._progress(record, plan.duration_s, 1.0 if stop_at is None else stop_at)
        if plan.stuck_at is not None:
            await asyncio.Event().wait()  # until cancelled
        if plan.fail_at is None:
            self.service.complete(record)
            return
        status = self.service.fail_attempt(
            record, plan.error_code, ERROR_MESSAGES[plan.error_code], retryable=plan.retryable
        )
        if status is Status.FAILED:
            self._schedule_retry(record)

    async def _progress(self, record: Record, duration: float, until: float) -> None:
        """Sleep through the attempt, reporting progress in bounded steps."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        end = start + duration * until
        interval = max(duration * PROGRESS_STEP, PROGRESS_MIN_INTERVAL_S)
        while (remaining := end - loop.time()) > 0:
            await asyncio.sleep(min(interval, remaining))
            done = (loop.time() - start) / duration if duration > 0 else 1.0
            if loop.time() < end:
                self.service.report_progress(record, int(done * 100))
        if duration <= 0:
            await asyncio.sleep(0)  # an instant job still yields once, like any other

    def _schedule_retry(self, record: Record) -> None:
        attempt = record.job.attempt
        delay = min(self.service.config.retry_delay * 2 ** (attempt - 1), RETRY_BACKOFF_CAP_S)
        job_id = record.job.id

        def fire() -> None:
            self._timers.pop(job_id, None)
            self.service.requeue(record)

        self._timers[job_id] = asyncio.get_running_loop().call_later(delay, fire)
