"""Scheduler: a priority queue, worker tasks, and the simulated work itself.

Premium before free, first come first served within a plan. Each attempt runs in its own task
so that a cancel interrupts exactly that attempt and nothing else. Retries are data: a failed
job carries `not_before`, and one ordered queue requeues it when due, here or after a restart.
Randomness is drawn from a generator seeded by (SEED, the job's submission ordinal, the
attempt), so a seeded run gives the same durations, outcomes and error codes however the
workers interleave.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import math
import random
from collections.abc import Awaitable, Callable, Coroutine
from typing import Final, Protocol

import msgspec

from .jobs import JobService, Record
from .models import ERROR_CODES, EventType, Outcome, Role, Status, parse_iso
from .store import CapReached, StoreUnavailable

log = logging.getLogger(__name__)

PROGRESS_STEP: Final = 0.05  # progress events at most every 5 % ...
PROGRESS_MIN_INTERVAL_S: Final = 0.25  # ... and at most every 250 ms
RETRY_BACKOFF_CAP_S: Final = 60.0
HINT_MARGIN_S: Final = 0.02  # poll just after the ETA, not just before it
HINT_CAP_S: Final = 30.0
MANUAL_HINT_S: Final = 5.0  # manual mode: nothing moves until an admin says so
STORE_RETRY_S: Final = 1.0  # while the store refuses writes, try a transition again this often
HANDBACK_S: Final = 3.0  # on stop, how long to try handing running jobs back (shared store)
STOP_GRACE_S: Final = 5.0  # on stop, how long cancelled attempts and loops may take to end
# jobs POST /v1/process claims at once: one small group commit per batch, so starting 10,000
# doesn't hold the loop for everyone (it held it 0.7 s in one batch)
START_BATCH: Final = 200
# events after which a running attempt must stop: someone else decided the job's fate
INTERRUPTING: Final = frozenset({EventType.CANCELLED, EventType.DELETED, EventType.RETRYING})

ERROR_MESSAGES: Final = {
    "timeout": "the translation backend did not answer in time",
    "internal_error": "the translation backend reported an internal error",
    "unexpected_failure": "the attempt ended unexpectedly",
    "media_error": "processing the video failed (ffmpeg or espeak-ng reported an error)",
}


class Plan(msgspec.Struct, frozen=True):
    """What one attempt will do, decided when it starts."""

    duration_s: float
    fail_at: float | None = None  # fraction of duration at which it fails
    error_code: str = "internal_error"
    retryable: bool = True
    stuck_at: float | None = None  # fraction at which it hangs forever


class AttemptRunner(Protocol):
    """Real work for some jobs (media jobs: service/media/) instead of the timer.

    `run` does the attempt, reporting through JobService, and returns the plan to conclude
    it with (the one given: completed or its scripted failure; or a failure of its own).
    `release()` gives the attempt's worker slot back (a hung attempt calls it)."""

    def handles(self, record: Record) -> bool: ...
    async def run(
        self, record: Record, attempt: int, plan: Plan, release: Callable[[], None]
    ) -> Plan: ...
    def job_deleted(self, job_id: str) -> None: ...


class Scheduler:
    """Runs attempts for the jobs this process claims.

    The ready queue (pending jobs, premium first, then by submission) and the retry queue
    (failed jobs by `not_before`) are built from committed events, so every process sharing a
    store holds the same queues; starting an attempt is a compare-and-set on the job, so exactly
    one process wins each job. On a shared store each running attempt holds a lease that this
    process renews; a job whose lease runs out (its process died) is put back by whoever
    notices first.
    """

    def __init__(self, service: JobService, seed: int | None, *, lease_s: float = 10.0) -> None:
        self.service = service
        self.seed = seed
        self.lease_s = lease_s
        self._queue: list[tuple[int, int, str]] = []  # (-priority, ordinal, job id)
        self._queued: set[str] = set()
        self._retries: list[tuple[float, str]] = []  # (due, job id)
        self._has_work = asyncio.Event()
        self._retry_wake = asyncio.Event()
        self._expiry_wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()  # starting or running: counts to WORKERS
        self._loops: list[asyncio.Task[None]] = []
        self._attempts: dict[str, asyncio.Task[None]] = {}
        self._entropy = random.Random()
        self.runner: AttemptRunner | None = None
        # Per-user concurrency (the HeyGen facade's plans): how many of a job's user's jobs
        # may run at once, or None (every v1 job: only WORKERS bounds it). Jobs over the limit
        # wait, parked per user, and go back to the queue one per slot that frees.
        self.admission: Callable[[Record], int | None] = _unlimited
        self._busy: dict[str, set[str]] = {}  # user -> limited jobs being started or running
        self._parked: dict[str, list[tuple[int, int, str]]] = {}  # user -> queue entries
        service.dispatcher = self

    # ---- Dispatcher ------------------------------------------------------------

    def job_changed(self, record: Record, event: EventType) -> None:
        job = record.job
        if event in INTERRUPTING:
            task = self._attempts.get(job.id)
            if task is not None:
                task.cancel()
        if event is EventType.DELETED and self.runner is not None and self.runner.handles(record):
            self.runner.job_deleted(job.id)  # only a media job has files to remove
        if job.status is Status.PROCESSING or job.user_id in self._busy:
            self._account(record)
        if job.status is Status.PENDING and event is not EventType.DELETED:
            self._enqueue(record)
        elif job.status is Status.FAILED:
            due = parse_iso(job.not_before) if job.not_before else 0.0
            heapq.heappush(self._retries, (due, job.id))
            self._retry_wake.set()

    def _enqueue(self, record: Record) -> None:
        if record.job.id in self._queued:
            return
        self._queued.add(record.job.id)
        heapq.heappush(self._queue, (-record.job.priority, record.ordinal, record.job.id))
        self._has_work.set()

    async def start_now(self, count: int) -> list[Record]:
        """Manual mode: start the next `count` queued jobs now, premium first."""
        started: list[Record] = []
        while len(started) < count:
            batch: list[Record] = []
            want = min(count - len(started), START_BATCH)
            while len(batch) < want and (record := self._pop()) is not None:
                batch.append(record)
            if not batch:
                break
            # a batch at once: one group commit, and their events published together
            claims = await asyncio.gather(
                *(self._claim(record) for record in batch), return_exceptions=True
            )
            refused: StoreUnavailable | None = None
            full = False
            for record, claimed in zip(batch, claims, strict=True):
                if isinstance(claimed, CapReached):  # the plan is full on other processes
                    full = True
                    self._release(record)
                    self._enqueue(record)
                elif isinstance(claimed, StoreUnavailable):
                    refused = claimed
                    self._release(record)
                    self._enqueue(record)  # still pending, still queued
                elif isinstance(claimed, BaseException):
                    raise claimed
                elif claimed is not None:
                    self._spawn(self._attempt(record, *claimed), record.job.id)
                    started.append(record)
            if refused is not None:
                if not started:
                    raise refused  # nothing started: the caller gets 503, nothing changed
                break
            if full:  # not again in this call: the queue parks it once it sees the plan full
                break
        return started

    def poll_hint(self, record: Record) -> float | None:
        """Seconds until polling this job again is likely to show something new."""
        job = record.job
        if job.status.terminal:
            return None
        expected = self._expected_duration(record)
        now = self.service.clock.now()
        if job.status is Status.PROCESSING:
            if job.eta is None:
                return min(expected, HINT_CAP_S)
            remaining = parse_iso(job.eta) - now
            if remaining > 0:
                return remaining + HINT_MARGIN_S
            # overdue (stuck, or about to finish): back off in proportion to the delay
            return min(max(-remaining / 2, HINT_MARGIN_S), HINT_CAP_S)
        if job.status is Status.FAILED:
            wait = parse_iso(job.not_before) - now if job.not_before else 0.0
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
        self._has_work.set()  # more (or fewer) workers, or auto_process switched
        self._expiry_wake.set()  # JOB_TTL_S may have changed

    # ---- lifecycle -------------------------------------------------------------

    def start(self) -> None:
        """Queue what the read model holds, then start the workers and the timers."""
        for record in self.service.records():
            if record.job.status in (Status.PENDING, Status.FAILED):
                self.job_changed(record, EventType.RETRYING)
            elif record.job.status is Status.PROCESSING:  # running on another process
                self._account(record)
        self._loops.append(asyncio.create_task(self._retry_loop(), name="retries"))
        if self.service.store.shared:
            self._loops.append(asyncio.create_task(self._lease_loop(), name="leases"))
        self._loops.append(asyncio.create_task(self._dispatch_loop(), name="dispatch"))
        self._loops.append(asyncio.create_task(self._expiry_loop(), name="expiry"))

    async def stop(self) -> None:
        """Stop workers and attempts. On a private store the interrupted jobs stay processing
        and are requeued at the next start; on a shared one they are handed back at once, so
        another process takes them over without waiting for the lease to run out."""
        tasks = [*self._loops, *(self._tasks | set(self._attempts.values()))]
        running = list(self._attempts)
        for task in tasks:
            task.cancel()
        if tasks:  # a stop never hangs on a task that doesn't end: it is named instead
            _, stuck = await asyncio.wait(tasks, timeout=STOP_GRACE_S)
            if stuck:
                names = sorted({task.get_name() for task in stuck})
                log.warning("scheduler: %d tasks still running after stop: %s", len(stuck), names)
        self._loops.clear()
        if self.service.store.shared and running:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(HANDBACK_S):
                    await asyncio.gather(*(self.service.interrupted(j) for j in running))

    @property
    def running(self) -> int:
        return len(self._attempts)

    # ---- dispatching -------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        """Start queued jobs while fewer than WORKERS are being started or running. One loop
        woken per change, rather than WORKERS idle tasks all woken by every new job."""
        while True:
            self._has_work.clear()
            config = self.service.config
            while config.auto_process and len(self._tasks) < config.workers:
                record = self._pop()
                if record is None:
                    break
                self._spawn(self._run(record))
            await self._has_work.wait()

    def _spawn(self, work: Coroutine[None, None, None], job_id: str | None = None) -> None:
        task = asyncio.create_task(work, name=None if job_id is None else f"attempt {job_id}")
        self.service.clock.busy(task)  # a virtual clock's advance waits for it to settle
        self._tasks.add(task)
        if job_id is not None:
            self._attempts[job_id] = task
        task.add_done_callback(functools.partial(self._done, job_id))

    def _done(self, job_id: str | None, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if job_id is not None and self._attempts.get(job_id) is task:
            del self._attempts[job_id]
        if not task.cancelled() and task.exception() is not None:
            log.error("an attempt crashed", exc_info=task.exception())
        self._has_work.set()  # a worker is free

    async def _run(self, record: Record) -> None:
        """One job, start to end, in one task: claim it, then run the attempt."""
        try:
            claimed = await self._claim(record)
        except (StoreUnavailable, CapReached):
            self._release(record)
            # still pending: try again once the store is back, or (its plan full on other
            # processes) once the queue sees a slot free; at most once per STORE_RETRY_S
            self._enqueue(record)
            await asyncio.sleep(STORE_RETRY_S)
            return
        if claimed is None:
            return
        job_id, task = record.job.id, asyncio.current_task()
        self._attempts[job_id] = task  # type: ignore[assignment]  # a cancel interrupts it
        try:
            await self._attempt(record, *claimed)
        finally:
            if self._attempts.get(job_id) is task:
                del self._attempts[job_id]

    def _pop(self) -> Record | None:
        while self._queue:
            entry = heapq.heappop(self._queue)
            job_id = entry[2]
            self._queued.discard(job_id)
            record = self.service.find(job_id)
            if record is None or record.job.status is not Status.PENDING:
                continue
            limit = self.admission(record)
            if limit is not None:
                busy = self._busy.setdefault(record.job.user_id, set())
                if len(busy) >= limit:  # the user's plan is full: wait for a slot
                    heapq.heappush(self._parked.setdefault(record.job.user_id, []), entry)
                    continue
                busy.add(job_id)  # reserved until its claim commits (or fails)
            return record
        return None

    # ---- per-user concurrency (admission) ------------------------------------------

    def _account(self, record: Record) -> None:
        """Keep `_busy` in step with committed events (from any process): a limited job
        counts while it runs; when it stops, one of its user's parked jobs is queued."""
        job = record.job
        busy = self._busy.get(job.user_id)
        if job.status is Status.PROCESSING:
            if self.admission(record) is None:  # not limited (a v1 job): holds no slot
                return
            if busy is None:
                busy = self._busy[job.user_id] = set()
            busy.add(job.id)
        elif busy is not None and job.id in busy:
            self._release(record)

    def _release(self, record: Record) -> None:
        """A reserved or running limited job no longer holds its user's slot."""
        user = record.job.user_id
        busy = self._busy.get(user)
        if busy is None or record.job.id not in busy:
            return
        busy.discard(record.job.id)
        parked = self._parked.get(user)
        while parked:
            entry = heapq.heappop(parked)
            waiting = self.service.find(entry[2])
            if waiting is not None and waiting.job.status is Status.PENDING:
                if entry[2] not in self._queued:
                    self._queued.add(entry[2])
                    heapq.heappush(self._queue, entry)
                    self._has_work.set()
                break
        if not parked:
            self._parked.pop(user, None)
            if not busy:
                del self._busy[user]

    async def _claim(self, record: Record) -> tuple[int, Plan] | None:
        """pending -> processing, for this process: (attempt, plan), or None if we lost it.
        Raises StoreUnavailable, or CapReached (the plan's slots are taken on other processes),
        the job staying pending either way."""
        plan = self._plan(record)
        store = self.service.store
        lease = self.lease_s if store.shared else None
        # the ETA is the planned duration even for an attempt that will fail or hang:
        # like a real backend, the simulator can't know that in advance
        try:
            started = await self.service.begin_attempt(
                record, plan.duration_s, lease, self.admission(record)
            )
        except CapReached:  # another process's start took the plan's last slot first
            await store.sync()  # that start is known here now: the queue parks the job
            raise
        if not started:
            return None
        return record.job.attempt, plan

    # ---- timers: retries due, leases --------------------------------------------

    async def _retry_loop(self) -> None:
        clock = self.service.clock
        while True:
            self._retry_wake.clear()
            due = []
            while self._retries and self._retries[0][0] <= clock.now():
                due.append(heapq.heappop(self._retries)[1])
            if due:  # together: one group commit (or one pipeline) for all that are due
                results = await asyncio.gather(
                    *(_persist(self.service.requeue, job_id) for job_id in due),
                    return_exceptions=True,
                )
                for error in results:
                    if isinstance(error, Exception):  # a bug, not the store: say so, go on
                        log.error("requeueing a failed job crashed", exc_info=error)
            wait = self._retries[0][0] - clock.now() if self._retries else None
            await clock.wait(self._retry_wake, wait)

    async def _expiry_loop(self) -> None:
        """Finished jobs go JOB_TTL after they finished (swept every tenth of it, at most
        every minute), so nothing is kept forever. Nothing can expire before the oldest
        finished job does, so the loop sleeps until then (a virtual clock's long advance
        wakes it a few times, not once a minute); a config change wakes it to look again."""
        clock = self.service.clock
        while True:
            self._expiry_wake.clear()
            ttl = self.service.config.job_ttl_s
            oldest = self.service.oldest_finished()  # kept as jobs finish: not a scan
            due = (clock.now() if oldest is None else oldest) + ttl
            wait = max(max(0.05, min(60.0, ttl / 10)), due - clock.now())
            if await clock.wait(self._expiry_wake, wait):
                continue
            try:
                await self.service.cleanup(older_than_s=self.service.config.job_ttl_s)
            except StoreUnavailable:
                pass  # the next sweep tries again
            except Exception:
                log.exception("expiring finished jobs failed; the next sweep tries again")

    async def _lease_loop(self) -> None:
        """Renew our leases; put back jobs whose lease ran out (their process died). A lease
        is about a process being alive, which happens in real time: it reads the store's wall
        clock (the one every process sharing it agrees on), whatever the service's clock says."""
        store = self.service.store
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await store.renew_leases(list(self._attempts), self.lease_s, store.wall())
                for job_id in await store.expired_leases(store.wall()):
                    if job_id not in self._attempts:
                        await self.service.interrupted(job_id)
            except StoreUnavailable:
                pass  # the next round tries again
            except Exception:
                log.exception("taking over expired leases failed; the next round tries again")

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

    async def _attempt(self, record: Record, attempt: int, plan: Plan) -> None:
        service = self.service
        try:
            # a watchdog, as a real service has: an attempt past its deadline fails (timeout)
            async with service.clock.timeout(service.config.attempt_timeout_s):
                if self.runner is not None and self.runner.handles(record):
                    plan = await self.runner.run(record, attempt, plan, self._release_slot)
                else:
                    await self._simulate(record, attempt, plan)
        except TimeoutError:
            plan = Plan(plan.duration_s, fail_at=1.0, error_code="timeout", retryable=True)
        if plan.fail_at is None:
            await _persist(service.complete, record, attempt)
            return
        delay = min(service.config.retry_delay * 2 ** (attempt - 1), RETRY_BACKOFF_CAP_S)
        message = ERROR_MESSAGES[plan.error_code]

        async def fail() -> Status:
            return await service.fail_attempt(
                record,
                attempt,
                plan.error_code,
                message,
                retryable=plan.retryable,
                retry_in_s=delay,
            )

        await _persist(fail)

    async def _simulate(self, record: Record, attempt: int, plan: Plan) -> None:
        """The attempt's simulated work: progress until its end, or until it hangs."""
        stop_at = plan.fail_at if plan.fail_at is not None else plan.stuck_at
        await self._progress(record, attempt, plan.duration_s, 1.0 if stop_at is None else stop_at)
        if plan.stuck_at is not None:
            # a hung remote holds no worker of ours: the slot goes to the next job, and the
            # watchdog (or a cancel) ends this attempt
            self._release_slot()
            await self.service.clock.sleep(math.inf)

    def _release_slot(self) -> None:
        """The current attempt hangs: its worker slot goes to the next job."""
        task = asyncio.current_task()
        if task in self._tasks:
            self._tasks.discard(task)
            self._has_work.set()

    async def _progress(self, record: Record, attempt: int, duration: float, until: float) -> None:
        """Sleep through the attempt, reporting progress in bounded steps."""
        clock = self.service.clock
        start = clock.now()
        end = start + duration * until
        interval = max(duration * PROGRESS_STEP, PROGRESS_MIN_INTERVAL_S)
        while (remaining := end - clock.now()) > 0:
            await clock.sleep(min(interval, remaining))
            now = clock.now()
            if now < end:
                done = (now - start) / duration if duration > 0 else 1.0
                with contextlib.suppress(StoreUnavailable):  # progress is news, not state
                    await self.service.report_progress(record, int(done * 100), attempt)
        if duration <= 0:
            await asyncio.sleep(0)  # an instant job still yields once, like any other


def _unlimited(record: Record) -> int | None:
    return None


async def _persist(step: Callable[..., Awaitable[object]], *args: object) -> None:
    """Run a transition until the store takes it: the attempt's outcome is not dropped while
    the store is down (the job stays as it is on disk meanwhile); a cancel still ends it."""
    while True:
        try:
            await step(*args)
            return
        except StoreUnavailable:
            await asyncio.sleep(STORE_RETRY_S)
