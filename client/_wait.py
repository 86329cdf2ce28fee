"""Waiting for a job's outcome: the shared subscription first, polling while it is not live.

The decisions (is this snapshot news? is it the outcome? should we poll now?) are pure and
live in `Tracker`, `outcome` and `should_poll`; `wait_for_terminal` only wires them to the
subscription, a poll task and the deadline.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from ._errors import JobCancelled, JobFailed
from ._models import Job, Status
from ._subscription import SharedSubscription, SocketState

__all__ = ["Tracker", "outcome", "should_poll", "wait_for_terminal"]

logger = logging.getLogger("dubsim")

ProgressCallback = Callable[[Job], object]


class Tracker:
    """Merges snapshots of one job from any source and says which ones are news.

    The socket's snapshots carry `seq`; polled ones don't, so a polled copy of a state already
    seen (or older, by `updated_at`) is recognised by content. Nothing after a terminal state is
    news: terminal states never change.
    """

    def __init__(self) -> None:
        self.job: Job | None = None
        self.seq: int | None = None

    def offer(self, job: Job, seq: int | None = None) -> bool:
        """Record `job`; True when it is a change the caller hasn't seen yet."""
        current = self.job
        if current is not None:
            if current.terminal:
                return False
            if seq is not None and self.seq is not None and seq <= self.seq:
                return False
            if job == current:
                self.seq = _newest(self.seq, seq)
                return False
            if (
                job.updated_at is not None
                and current.updated_at is not None
                and job.updated_at < current.updated_at
            ):
                return False
        self.job = job
        self.seq = _newest(self.seq, seq)
        return True


def _newest(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    return a if b is None else max(a, b)


def outcome(job: Job) -> Job:
    """The job if it completed; raise JobFailed / JobCancelled for the bad endings."""
    if job.status is Status.PERMANENTLY_FAILED:
        raise JobFailed(job)
    if job.status is Status.CANCELLED:
        raise JobCancelled(job)
    if job.status is not Status.COMPLETED:
        raise ValueError(f"job {job.id} is {job.status}, not finished")
    return job


def should_poll(*, live: bool, state: SocketState, now: float, grace_until: float) -> bool:
    """Poll unless the subscription is live, or a fresh socket still has its grace period."""
    if live:
        return False
    if state is SocketState.DOWN:
        return True
    return now >= grace_until


class _Waiter:
    """One wait's listener on the shared subscription and the poll task."""

    def __init__(self, job_id: str, on_progress: ProgressCallback | None) -> None:
        self.job_id = job_id
        self.tracker = Tracker()
        self.live = False
        self.missing = False  # the socket said "no such job": let REST confirm at once
        self.changed = asyncio.Event()
        self.done: asyncio.Future[Job] = asyncio.get_running_loop().create_future()
        self._on_progress = on_progress

    def on_job(self, job: Job, seq: int | None) -> None:
        if job.id != self.job_id or self.done.done() or not self.tracker.offer(job, seq):
            return
        if self._on_progress is not None:
            try:
                self._on_progress(job)
            except Exception as exc:
                # The caller's callback failed: end this wait with its error, like a raise.
                self.done.set_exception(exc)
                return
        if job.terminal:
            self.done.set_result(job)

    def on_missing(self) -> None:
        self.missing = True
        self.changed.set()

    def on_polled(self, job: Job) -> None:
        self.on_job(job, None)

    def on_live(self, live: bool) -> None:
        self.live = live
        self.changed.set()

    def poll_ended(self, task: asyncio.Task[Job | None]) -> None:
        if task.cancelled() or self.done.done():
            return
        exc = task.exception()
        if exc is not None:
            self.done.set_exception(exc)
        # A None result is the deadline; a Job result was already delivered through on_polled.


async def wait_for_terminal(
    job_id: str,
    *,
    subscription: SharedSubscription,
    poll: Callable[[Callable[[Job], None]], Coroutine[Any, Any, Job | None]],
    grace_s: float,
    on_progress: ProgressCallback | None = None,
    tracker_out: list[Tracker] | None = None,
) -> Job:
    """Wait (without a deadline: the caller wraps one around) until `job_id` is terminal.

    Subscribes first, so a job that ended before the call is answered by its snapshot at once.
    While the subscription is not live (socket down, or a fresh socket slower than `grace_s`),
    `poll` runs alongside; whichever learns the outcome first wins, `on_progress` hears each
    change once. Cancelling the caller removes the subscription and stops the poll.
    """
    loop = asyncio.get_running_loop()
    waiter = _Waiter(job_id, on_progress)
    if tracker_out is not None:
        tracker_out.append(waiter.tracker)
    registration = subscription.add(job_id, waiter)
    grace_until = loop.time() + grace_s
    poller: asyncio.Task[Job | None] | None = None
    try:
        while not waiter.done.done():
            now = loop.time()
            if waiter.missing:
                grace_until = now
            if should_poll(
                live=waiter.live, state=subscription.state, now=now, grace_until=grace_until
            ):
                if poller is None:
                    logger.debug("wait %s: polling (socket %s)", job_id, subscription.state.value)
                    poller = loop.create_task(poll(waiter.on_polled))
                    poller.add_done_callback(waiter.poll_ended)
            elif poller is not None:
                logger.debug("wait %s: subscription live, polling stops", job_id)
                poller.cancel()
                poller = None
            waiter.changed.clear()
            changed = loop.create_task(waiter.changed.wait())
            watched: set[asyncio.Future[Any]] = {waiter.done, changed}
            timeout = None if now >= grace_until else grace_until - now
            try:
                await asyncio.wait(watched, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                changed.cancel()
        return waiter.done.result()
    finally:
        registration.remove()
        if waiter.done.done() and not waiter.done.cancelled():
            waiter.done.exception()  # mark it retrieved: a cancelled caller won't read it
        if poller is not None:
            poller.cancel()
            await asyncio.gather(poller, return_exceptions=True)
