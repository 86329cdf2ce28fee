"""One clock for everything that reads time: JobService, the scheduler, rate windows, sessions.

Injected rather than read from `time` directly. Two kinds:

- `RealClock` (CLOCK=real, the default): the wall clock and asyncio's timers.
- `VirtualClock` (CLOCK=virtual): time moves only when `advance(seconds)` says so. Every timer
  that reads it (job durations and progress, retry backoff, the attempt watchdog, JOB_TTL
  expiry, rate windows, session expiry, the auth throttle window, poll hints) is a sleeper in
  one heap; `advance` wakes them in time order, setting `now()` to each one's due time, and
  lets each woken task run before moving on, so a three-day schedule runs in milliseconds and
  every step sees the right `now()`.

What `advance(seconds)` guarantees when it returns: every clock wait due at or before the new
time has been woken, in order of due time (ties in the order they were registered), with
`now()` equal to its due time; and after each step, every task it woke (and every task the
scheduler started meanwhile) has run until it waits on the clock again or ends — or, if it
waits on something else (a store that does not answer), until SETTLE_S of real time have
passed. Then `now()` is the new time. Nothing else: HTTP timeouts (long polls, `Prefer: wait`,
heartbeats, idle and shutdown timers) and process liveness (Redis leases) stay in real time.

Shared: the virtual "now" is the store document `clock/now`, so every process on one Redis
has one time. `advance` writes it (compare-and-set), then runs its own sleepers; every other
process polls it every FOLLOW_S and runs its sleepers up to it, then writes its
acknowledgement (`clock-seen/<process>`); `advance` returns once every live process has
acknowledged the new time (or after FOLLOW_TIMEOUT_S). On SQLite the same document makes the
virtual time survive a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import itertools
import logging
import math
import os
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Final, Protocol

import msgspec

if TYPE_CHECKING:
    from .store import Store

log = logging.getLogger(__name__)

SETTLE_S: Final = 5.0  # a woken task blocked on something other than the clock: move on
QUIET_TURNS: Final = 5  # event-loop turns with nothing running before a step counts as settled
FOLLOW_S: Final = 0.05  # how often another process looks at the shared virtual time
BEAT_S: Final = 1.0  # how often a process says it is alive (virtual clock on a shared store)
STALE_S: Final = 3.0  # a process silent this long is not waited for
FOLLOW_TIMEOUT_S: Final = 5.0  # how long advance waits for the other processes to follow
MAX_ADVANCE_S: Final = 366 * 86_400.0
CLOCK_KIND: Final = "clock"
SEEN_KIND: Final = "clock-seen"


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` of this clock's time (math.inf: never; cancel it)."""

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        """Wait for `event` at most `seconds` of this clock's time (None: no limit); True if set."""

    def timeout(self, seconds: float) -> contextlib.AbstractAsyncContextManager[object]:
        """Like asyncio.timeout, in this clock's time (TimeoutError when it runs out)."""

    def busy(self, task: asyncio.Task[None]) -> None:
        """`task` is doing time-driven work: an advance waits until it waits on the clock."""


class RealClock:
    """The wall clock, and asyncio's timers."""

    virtual = False

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        if math.isinf(seconds):
            await asyncio.get_running_loop().create_future()
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        try:
            async with asyncio.timeout(seconds):
                await event.wait()
        except TimeoutError:
            return False
        return True

    def timeout(self, seconds: float) -> asyncio.Timeout:
        return asyncio.timeout(seconds)  # itself: every attempt enters one

    def busy(self, task: asyncio.Task[None]) -> None:
        pass


class _Entry:
    """One clock wait: what to do when it is due, and the task that will run then."""

    __slots__ = ("fire", "gone", "task")

    def __init__(self, fire: Callable[[], object], task: asyncio.Task[object] | None) -> None:
        self.fire = fire
        self.task = task
        self.gone = False  # fired or abandoned


class Moment(msgspec.Struct):
    """The shared virtual time (document clock/now)."""

    now: float


class Seen(msgspec.Struct):
    """One process's acknowledgement of the shared virtual time (document clock-seen/<id>)."""

    now: float
    beat: float  # the store's wall time of its last word: a silent process is not waited for


class VirtualClock:
    """Time that moves only when `advance` says so (see the module's docstring)."""

    virtual = True

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else start
        self._heap: list[tuple[float, int, _Entry]] = []
        self._order = itertools.count()
        self._running: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stepping = asyncio.Lock()
        self._store: Store | None = None
        self._process = f"{os.getpid()}-{secrets.token_hex(4)}"
        self._follower: asyncio.Task[None] | None = None

    # ---- reading and waiting ----------------------------------------------------

    def now(self) -> float:
        return self._now

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:  # its time has come: no advance needed
            await asyncio.sleep(0)
            return
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        task = asyncio.current_task()
        if math.isinf(seconds):  # parked for good: only a cancel ends it
            self._rest(task)
            await future
            return
        entry = self._push(seconds, functools.partial(_wake, future), task)
        try:
            await future
        finally:
            entry.gone = True

    async def wait(self, event: asyncio.Event, seconds: float | None) -> bool:
        if event.is_set():
            return True
        if seconds is not None and seconds <= 0:
            await asyncio.sleep(0)
            return event.is_set()
        waiter = asyncio.ensure_future(event.wait())
        entry = None
        if seconds is not None:
            entry = self._push(seconds, lambda: waiter.done() or waiter.cancel(), None)
            entry.task = asyncio.current_task()
        else:
            self._rest(asyncio.current_task())
        try:
            await asyncio.wait([waiter])
        finally:
            if entry is not None:
                entry.gone = True
            waiter.cancel()
        return event.is_set()

    @contextlib.asynccontextmanager
    async def timeout(self, seconds: float) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(loop.time() if seconds <= 0 else None) as scope:
            # registering is not waiting: the task goes on running until it waits on the clock
            entry = self._push(seconds, lambda: scope.reschedule(loop.time()), None, rest=False)
            entry.task = asyncio.current_task()
            try:
                yield
            finally:
                entry.gone = True

    def busy(self, task: asyncio.Task[None]) -> None:
        self._run(task)

    # ---- moving time --------------------------------------------------------------

    async def advance(self, seconds: float) -> float:
        """Move time on by `seconds` (for the whole service, on a shared store); returns the
        new time once what was due has run (see the module's docstring)."""
        if not (0 < seconds <= MAX_ADVANCE_S) or math.isnan(seconds):
            raise ValueError(f"seconds must be in (0, {MAX_ADVANCE_S:g}]")
        target = self._now + seconds
        if self._store is not None:
            target = await self._publish(seconds)
        await self.run_until(target)
        if self._store is not None and self._store.shared:
            await self._acknowledge()
            await self._wait_for_others(target)
            await self._store.sync()  # and what they committed meanwhile is applied here
        return self._now

    async def run_until(self, target: float) -> None:
        """Wake every sleeper due by `target`, in time order, letting each step settle."""
        async with self._stepping:
            while True:
                await self._settle()
                if not self._heap or self._heap[0][0] > target:
                    break
                due = self._heap[0][0]
                self._now = max(self._now, due)
                while self._heap and self._heap[0][0] <= self._now:
                    _, _, entry = heapq.heappop(self._heap)
                    if entry.gone:
                        continue
                    entry.gone = True
                    if entry.task is not None and not entry.task.done():
                        self._run(entry.task)
                    entry.fire()
            self._now = max(self._now, target)

    def _push(
        self,
        seconds: float,
        fire: Callable[[], object],
        task: asyncio.Task[object] | None,
        *,
        rest: bool = True,
    ) -> _Entry:
        entry = _Entry(fire, task)
        heapq.heappush(self._heap, (self._now + max(0.0, seconds), next(self._order), entry))
        if rest:
            self._rest(asyncio.current_task())
        return entry

    def _run(self, task: asyncio.Task[object] | asyncio.Task[None]) -> None:
        if task in self._running or task.done():
            return
        self._running.add(task)
        self._idle.clear()
        task.add_done_callback(self._rest)

    def _rest(self, task: asyncio.Task[object] | asyncio.Task[None] | None) -> None:
        if task is not None and task in self._running:
            self._running.discard(task)
            task.remove_done_callback(self._rest)
        if not self._running:
            self._idle.set()

    async def _settle(self) -> None:
        deadline = asyncio.get_running_loop().time() + SETTLE_S
        while True:
            for _ in range(QUIET_TURNS):
                await asyncio.sleep(0)
            if not self._running:
                return
            left = deadline - asyncio.get_running_loop().time()
            try:
                async with asyncio.timeout(max(0.0, left)):
                    await self._idle.wait()
            except TimeoutError:
                log.warning("virtual clock: %d task(s) still busy; moving on", len(self._running))
                self._running.clear()
                self._idle.set()
                return

    # ---- one time for every process -------------------------------------------------

    async def attach(self, store: Store) -> None:
        """Share the time through `store`: the stored time wins (every process on a shared
        store has one time; on SQLite a restart keeps it); if none is stored, ours is."""
        self._store = store
        while True:
            doc = await store.get_doc(CLOCK_KIND, "now")
            if doc is not None:
                self._now = msgspec.json.decode(doc.body, type=Moment).now
                return
            with contextlib.suppress(_conflict()):
                await store.put_doc(CLOCK_KIND, "now", msgspec.json.encode(Moment(self._now)), 0)
                return

    def start(self) -> None:
        """On a shared store: follow the others' advances and say we're alive."""
        if self._store is not None and self._store.shared and self._follower is None:
            self._follower = asyncio.create_task(self._follow(), name="clock-follower")

    async def stop(self) -> None:
        if self._follower is not None:
            self._follower.cancel()
            await asyncio.gather(self._follower, return_exceptions=True)
            self._follower = None
            if self._store is not None:
                with contextlib.suppress(Exception):
                    await self._store.put_doc(SEEN_KIND, self._process, None)

    async def _publish(self, seconds: float) -> float:
        store = self._store
        if store is None:
            raise RuntimeError("not attached")
        conflict = _conflict()
        while True:
            doc = await store.get_doc(CLOCK_KIND, "now")
            current = self._now if doc is None else msgspec.json.decode(doc.body, type=Moment).now
            target = max(current, self._now) + seconds
            body = msgspec.json.encode(Moment(target))
            try:
                await store.put_doc(
                    CLOCK_KIND, "now", body, expect=0 if doc is None else doc.version
                )
            except conflict:
                continue  # another advance got there first: add ours to it
            return target

    async def _follow(self) -> None:
        store = self._store
        if store is None:
            return
        last_beat = 0.0
        while True:
            try:
                doc = await store.get_doc(CLOCK_KIND, "now")
                if doc is not None:
                    target = msgspec.json.decode(doc.body, type=Moment).now
                    if target > self._now:
                        await self.run_until(target)
                        last_beat = 0.0
                if time.time() - last_beat >= BEAT_S:
                    await self._acknowledge()
                    last_beat = time.time()
            except asyncio.CancelledError:
                raise
            except Exception:  # the store is down: the next round tries again
                log.debug("virtual clock: following the shared time failed", exc_info=True)
            await asyncio.sleep(FOLLOW_S)

    async def _acknowledge(self) -> None:
        if self._store is not None:
            body = msgspec.json.encode(Seen(self._now, self._store.wall()))
            await self._store.put_doc(SEEN_KIND, self._process, body)

    async def _wait_for_others(self, target: float) -> None:
        store = self._store
        if store is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FOLLOW_TIMEOUT_S):
                while True:
                    behind = [
                        seen
                        for doc in await store.docs(SEEN_KIND)
                        if (seen := msgspec.json.decode(doc.body, type=Seen)).now < target
                        and store.wall() - seen.beat < STALE_S
                    ]
                    if not behind:
                        return
                    await asyncio.sleep(FOLLOW_S / 2)
        log.warning("virtual clock: some processes did not follow within %gs", FOLLOW_TIMEOUT_S)


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _conflict() -> type[Exception]:
    from .store import VersionConflict  # the store package imports settings, not this module

    return VersionConflict
