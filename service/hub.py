"""Hub: local fan-out of committed events to bounded subscriptions.

JobService publishes one event per committed state change; every transport (WebSocket, SSE,
long poll) is just a Subscription. Publishing never awaits: it appends the event's shared,
pre-encoded frame to each matching subscription's bounded deque and wakes that subscription's
writer.
A subscription that would grow past its bound is closed as a slow consumer instead; it can
resume by seq.

Frames are produced by *formats* (a transport's function from a Published event to bytes),
cached on the event, so an event is encoded once per transport however many subscribers get
it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final

from .broker import EVENTS_LOST, Broker
from .models import EventType

Format = Callable[["Published"], bytes]
SnapshotFormat = Callable[[int, bytes], bytes]
ResetFormat = Callable[[str, int], bytes]

SLOW_CONSUMER: Final = "slow_consumer"
GOING_AWAY: Final = "going_away"
DEFAULT_BYTE_LIMIT: Final = 1024 * 1024  # SUBSCRIBER_QUEUE_BYTES
DEFAULT_BURST_BYTES: Final = 16 * 1024 * 1024  # SUBSCRIBER_BURST_BYTES


class Published:
    """One event as it travels: its identity, the job's JSON, and frames cached by format."""

    __slots__ = ("_frames", "at", "job_bytes", "job_id", "seq", "type", "user_id")

    def __init__(
        self, seq: int, type: EventType, at: str, job_id: str, user_id: str, job_bytes: bytes
    ) -> None:
        self.seq = seq
        self.type = type
        self.at = at
        self.job_id = job_id
        self.user_id = user_id
        self.job_bytes = job_bytes
        self._frames: dict[Format, bytes] = {}

    def frame(self, fmt: Format) -> bytes:
        frame = self._frames.get(fmt)
        if frame is None:
            frame = self._frames[fmt] = fmt(self)
        return frame


class Wire:
    """How one transport spells events, snapshots and resets."""

    __slots__ = ("event", "name", "reset", "snapshot")

    def __init__(
        self, name: str, event: Format, snapshot: SnapshotFormat, reset: ResetFormat
    ) -> None:
        self.name = name
        self.event = event
        self.snapshot = snapshot
        self.reset = reset


class Subscription:
    """One consumer's filter and its bounded queue of frames, drained by its own writer.

    Kept small on purpose (slots, a plain list, a future only while someone waits): an idle
    connection costs little more than its socket.

    Bounded twice: `limit` frames and `byte_limit` bytes for live pushes; what was asked for
    at subscribe time (snapshots, a replay: `push_unbounded`) may pass those once, up to
    `burst_bytes` queued in all. Past a bound the subscription closes as a slow consumer.
    """

    __slots__ = (
        "_bytes",
        "_frames",
        "_last_seq",
        "_waiter",
        "burst_bytes",
        "byte_limit",
        "closed_reason",
        "everything",
        "jobs",
        "limit",
        "on_close",
        "users",
        "wire",
    )

    def __init__(
        self,
        wire: Wire,
        limit: int,
        *,
        byte_limit: int = DEFAULT_BYTE_LIMIT,
        burst_bytes: int = DEFAULT_BURST_BYTES,
    ) -> None:
        self.wire = wire
        self.limit = limit
        self.byte_limit = byte_limit
        self.burst_bytes = burst_bytes
        self.jobs: set[str] = set()
        self.users: set[str] = set()
        self.everything = False
        self.closed_reason: str | None = None
        self.on_close: Callable[[str], None] | None = None
        self._frames: list[bytes] = []
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._last_seq = -1

    @property
    def pending(self) -> int:
        return len(self._frames)

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def push(self, frame: bytes) -> bool:
        """Queue a frame; False (and closed as slow consumer) when the queue is full."""
        if self.closed_reason is not None:
            return False
        if len(self._frames) >= self.limit or self._bytes + len(frame) > self.byte_limit:
            self.close(SLOW_CONSUMER)
            return False
        self._frames.append(frame)
        self._bytes += len(frame)
        self._wake()
        return True

    def push_unbounded(self, frame: bytes) -> None:
        """Queue what the subscriber asked for at subscribe time (snapshots, a replay): it may
        exceed the live bounds once, or a large resume could never succeed; but not
        `burst_bytes`, or repeated subscribes by a client that never reads would grow
        without end."""
        if self.closed_reason is not None:
            return
        if self._bytes + len(frame) > self.burst_bytes:
            self.close(SLOW_CONSUMER)
            return
        self._frames.append(frame)
        self._bytes += len(frame)
        self._wake()

    def deliver(self, pub: Published) -> bool:
        if pub.seq == self._last_seq:  # matched through more than one filter
            return True
        self._last_seq = pub.seq
        return self.push(pub.frame(self.wire.event))

    async def get(self) -> list[bytes]:
        """Everything queued so far; waits while empty. Empty list means: closed."""
        while not self._frames:
            if self.closed_reason is not None:
                return []
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        frames, self._frames = self._frames, []
        self._bytes = 0
        return frames

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self, reason: str) -> None:
        if self.closed_reason is not None:
            return
        self.closed_reason = reason
        if reason == SLOW_CONSUMER:  # it will not read them: don't hold them
            self._frames = []
            self._bytes = 0
        self._wake()
        if self.on_close is not None:
            self.on_close(reason)


class Hub:
    """Local fan-out: the latest snapshot of every job, and the subscriptions it feeds.

    Seq numbers and history (resume) are the broker's; the hub only hears of committed events.
    """

    def __init__(self, *, buffer_size: int, queue_limit: int) -> None:
        self.broker = Broker(buffer_size)
        self.queue_limit = queue_limit
        self._latest: dict[str, tuple[str, bytes]] = {}  # job id -> (user id, job JSON)
        # user -> that user's job ids, in the same order: a `mine` snapshot walks only those
        self._user_jobs: dict[str, dict[str, None]] = {}
        self._everything: set[Subscription] = set()
        self._by_job: dict[str, set[Subscription]] = {}
        self._by_user: dict[str, set[Subscription]] = {}
        self.subscriptions: set[Subscription] = set()
        # counters read by /metrics
        self.published = 0
        self.slow_consumers = 0
        self.replays = 0
        self.resets = 0

    @property
    def seq(self) -> int:
        """The seq of the last committed event this process has applied."""
        return self.broker.seq

    # ---- publishing ------------------------------------------------------------

    def track(self, job_id: str, user_id: str, job_bytes: bytes) -> None:
        """Know a job's current state without an event (jobs loaded at start)."""
        self._latest[job_id] = (user_id, job_bytes)
        self._user_jobs.setdefault(user_id, {})[job_id] = None

    def remember(self, pub: Published) -> None:
        """An event from before this start: history for resumes, not news for anyone."""
        self.broker.append(pub)

    def publish(self, pub: Published) -> None:
        """Fan a committed event out to every matching subscription (never awaits)."""
        if pub.type is EventType.DELETED:
            if self._latest.pop(pub.job_id, None) is not None:
                own = self._user_jobs.get(pub.user_id, {})
                own.pop(pub.job_id, None)
                if not own:
                    self._user_jobs.pop(pub.user_id, None)
        else:
            self._latest[pub.job_id] = (pub.user_id, pub.job_bytes)
            self._user_jobs.setdefault(pub.user_id, {})[pub.job_id] = None
        self.broker.append(pub)
        self.published += 1
        # No copies of the sets on this hot path: subscribers that overflow are dropped after.
        dropped = [
            sub
            for subs in (
                self._everything,
                self._by_job.get(pub.job_id, ()),
                self._by_user.get(pub.user_id, ()),
            )
            for sub in subs
            if not sub.deliver(pub)
        ]
        for sub in dropped:
            self.unsubscribe_all(sub)

    # ---- subscribing -----------------------------------------------------------

    def open(self, wire: Wire, *, limit: int | None = None) -> Subscription:
        sub = Subscription(wire, self.queue_limit if limit is None else limit)
        self.subscriptions.add(sub)
        return sub

    def knows(self, job_id: str) -> bool:
        return job_id in self._latest

    def missing(self, jobs: Iterable[str], since: int | None = None) -> list[str]:
        """The ids of `jobs` a subscription can't serve: unknown here and, when it resumes
        with `since`, without an event after `since` left in the buffer (a job deleted while
        the client was away still has its missed events, `job.deleted` last, to replay)."""
        unknown = [job_id for job_id in jobs if job_id not in self._latest]
        if unknown and since is not None:
            history = self.broker.since(since)
            if not isinstance(history, str):
                replayable = {pub.job_id for pub in history}
                unknown = [job_id for job_id in unknown if job_id not in replayable]
        return unknown

    def subscribe(
        self,
        sub: Subscription,
        *,
        jobs: Iterable[str] = (),
        user: str | None = None,
        everything: bool = False,
        since: int | None = None,
    ) -> list[str]:
        """Add to sub's filter, then queue snapshots or the replay. Returns unknown job ids.

        Runs without awaiting, so no event can slip between the snapshot and the live stream.
        """
        new_jobs: list[str] = []
        unknown: list[str] = []
        for job_id in jobs:
            if job_id in sub.jobs:
                continue
            if job_id not in self._latest:
                unknown.append(job_id)
                continue
            sub.jobs.add(job_id)
            self._by_job.setdefault(job_id, set()).add(sub)
            new_jobs.append(job_id)
        new_user = user if user is not None and user not in sub.users else None
        if new_user is not None:
            sub.users.add(new_user)
            self._by_user.setdefault(new_user, set()).add(sub)
        new_everything = everything and not sub.everything
        if new_everything:
            sub.everything = True
            self._everything.add(sub)

        def covered(job_id: str, user_id: str) -> bool:
            return new_everything or job_id in new_jobs or user_id == new_user

        if since is not None:
            history = self.broker.since(since)
            if isinstance(history, str):  # a reset: fresh snapshots of all it follows
                self._reset(sub, history)
                self._snapshots(sub, self._follows(sub), self._followed(sub))
                return unknown
            self.replays += 1
            gone = set(unknown)  # asked for, deleted since: their missed events still count
            for pub in history:
                wanted = covered(pub.job_id, pub.user_id) or pub.job_id in gone
                if wanted and pub.seq != sub._last_seq:
                    sub._last_seq = pub.seq
                    sub.push_unbounded(pub.frame(sub.wire.event))
            return unknown
        only: list[str] | None = new_jobs
        if new_everything:
            only = None
        elif new_user is not None:
            only = list(dict.fromkeys([*new_jobs, *self._user_jobs.get(new_user, ())]))
        self._snapshots(sub, covered, only)
        return unknown

    def resync(self, seq: int, latest: dict[str, tuple[str, bytes]]) -> None:
        """This process missed events up to `seq` (a shared log trimmed past it): every job is
        as `latest` says (id -> (user id, job JSON)), history before `seq` is gone, and every
        subscriber is told (`reset`, reason `events_lost`, then fresh snapshots of what it
        follows)."""
        self._latest = dict(latest)
        self._user_jobs = {}
        for job_id, (user_id, _) in self._latest.items():
            self._user_jobs.setdefault(user_id, {})[job_id] = None
        self.broker.forget(seq)
        for sub in list(self.subscriptions):
            self._reset(sub, EVENTS_LOST)
            self._snapshots(sub, self._follows(sub), self._followed(sub))

    @staticmethod
    def _follows(sub: Subscription) -> Callable[[str, str], bool]:
        """Whether `sub`'s whole filter covers a job (by id, its user, or everything)."""

        def covered(job_id: str, user_id: str) -> bool:
            return sub.everything or job_id in sub.jobs or user_id in sub.users

        return covered

    def _followed(self, sub: Subscription) -> list[str] | None:
        """The ids of the jobs `sub` follows, by id or by user (None: every job)."""
        if sub.everything:
            return None
        ids = dict.fromkeys(sub.jobs)
        for user in sub.users:
            ids.update(self._user_jobs.get(user, {}))
        return list(ids)

    def _reset(self, sub: Subscription, reason: str) -> None:
        self.resets += 1
        sub.push_unbounded(sub.wire.reset(reason, self.seq))

    def _snapshots(
        self, sub: Subscription, covered: Callable[[str, str], bool], only: list[str] | None
    ) -> None:
        if only is not None:
            latest = self._latest
            items: Iterable[tuple[str, tuple[str, bytes]]] = (
                (job_id, latest[job_id]) for job_id in only if job_id in latest
            )
        else:
            items = self._latest.items()
        for job_id, (user_id, job_bytes) in items:
            if covered(job_id, user_id):
                if sub.closed_reason is not None:  # past its burst: encoding the rest is waste
                    return
                sub.push_unbounded(sub.wire.snapshot(self.seq, job_bytes))

    def unsubscribe(
        self,
        sub: Subscription,
        *,
        jobs: Iterable[str] = (),
        user: str | None = None,
        everything: bool = False,
    ) -> None:
        for job_id in jobs:
            sub.jobs.discard(job_id)
            _discard(self._by_job, job_id, sub)
        if user is not None:
            sub.users.discard(user)
            _discard(self._by_user, user, sub)
        if everything:
            sub.everything = False
            self._everything.discard(sub)

    def unsubscribe_all(self, sub: Subscription) -> None:
        if sub.closed_reason == SLOW_CONSUMER and sub in self.subscriptions:
            self.slow_consumers += 1
        self.unsubscribe(sub, jobs=list(sub.jobs), everything=True)
        for user in list(sub.users):
            self.unsubscribe(sub, user=user)
        self.subscriptions.discard(sub)

    def close_all(self, reason: str) -> None:
        for sub in list(self.subscriptions):
            sub.close(reason)
            self.unsubscribe_all(sub)

    def count(self, wire_name: str) -> int:
        return sum(1 for sub in self.subscriptions if sub.wire.name == wire_name)


def _discard(index: dict[str, set[Subscription]], key: str, sub: Subscription) -> None:
    subs = index.get(key)
    if subs is not None:
        subs.discard(sub)
        if not subs:
            del index[key]
