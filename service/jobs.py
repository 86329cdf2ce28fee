"""JobService: the state machine, and the only writer of job state.

Every change goes the same way: read the job, decide its next state (checking the transition
is legal), and hand that decision to the store with the version it was made on. The store
commits it only if the job is still at that version, durably, and then hands the committed
event back through `_on_commit`, which is the one place the read model moves and events are
published. So a caller is answered, and a subscriber hears of a change, only after it is
durable; and two writers (two requests, or two processes on Redis) can never both move a job:
the loser's decision is re-made against the new state.

    pending ──> processing ──> completed                         (terminal)
       ▲            ├──> failed ──(retry once not_before is due)──> pending
       │            └──> permanently_failed                      (terminal; admin retry)
       └── cancel from pending / processing / failed ──> cancelled (terminal)
    processing ──> pending: the attempt was interrupted (a restart, or its process died)
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import itertools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Final, Protocol

import msgspec

from .clock import Clock, RealClock
from .errors import Conflict, IdempotencyKeyReused, NotFound, RateLimited, ValidationFailed
from .hub import Hub, Published
from .models import (
    AssetVideo,
    EventType,
    Job,
    JobError,
    Role,
    Stage,
    Status,
    SubmitRequest,
    iso_ms,
    iso_us,
    parse_iso,
)
from .ratelimit import Decision
from .settings import Config, ConfigPatch
from .store import (
    CapReached,
    Change,
    Committed,
    DuplicateSubmission,
    Store,
    StoredJob,
    VersionConflict,
)

log = logging.getLogger(__name__)

# The only legal moves.
TRANSITIONS: Final[dict[Status, frozenset[Status]]] = {
    Status.PENDING: frozenset({Status.PROCESSING, Status.CANCELLED}),
    Status.PROCESSING: frozenset(
        {
            Status.COMPLETED,
            Status.FAILED,
            Status.PERMANENTLY_FAILED,
            Status.CANCELLED,
            Status.PENDING,  # the attempt was interrupted (restart, or its process died)
        }
    ),
    Status.FAILED: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.PERMANENTLY_FAILED: frozenset({Status.PENDING}),  # only by an admin retry
    Status.COMPLETED: frozenset(),
    Status.CANCELLED: frozenset(),
}

MAX_CONFLICTS: Final = 20  # re-decisions after losing a race, before giving up loudly
# deletes a cleanup has in flight at once: each batch is about one group commit and one turn of
# the event loop applying its events, so deleting 100k jobs never holds the loop for seconds
CLEANUP_BATCH: Final = 200
# an Idempotency-Key held in a shared store while one process submits with it: how long a hold
# lasts (a holder that dies lets go after it) and how often a request waiting on it looks again
KEY_HOLD_S: Final = 30.0
KEY_POLL_S: Final = 0.01


class Record(msgspec.Struct, gc=False):
    """A job in the read model with its encoded form (served to GETs as is) and bookkeeping.
    Never in a reference cycle (a job, bytes, numbers, strings), so the cyclic collector does
    not track it: the read model is most of a busy process's long-lived objects."""

    job: Job
    data: bytes
    ordinal: int
    version: int  # seq of the last committed change: the ETag and the CAS token
    idempotency_key: str | None = None
    request_hash: str | None = None

    @property
    def etag(self) -> str:
        return f'"{self.version}"'


class Dispatcher(Protocol):
    """What JobService needs from the scheduler (kept abstract to keep the arrow one-way)."""

    def job_changed(self, record: Record, event: EventType) -> None: ...
    def start_now(self, count: int) -> Awaitable[list[Record]]: ...
    def config_changed(self) -> None: ...
    def poll_hint(self, record: Record) -> float | None: ...


class _NoDispatcher:
    """Until a scheduler attaches itself: queues nothing, starts nothing."""

    def job_changed(self, record: Record, event: EventType) -> None:
        pass

    async def start_now(self, count: int) -> list[Record]:
        return []

    def config_changed(self) -> None:
        pass

    def poll_hint(self, record: Record) -> float | None:
        return None


Decide = Callable[[Record], Change | None]
Submitted = tuple[Record, bool, Decision | None]  # the job, made now (not replayed), its window


class _Again(Exception):
    """A submission's Idempotency-Key was taken meanwhile (another process): decide again."""


# media jobs (service/media/): the video of a submission as an asset (None: a plain job), and
# the result link of a completed job
Prepare = Callable[[str, SubmitRequest], Awaitable[AssetVideo | None]]
ResultLink = Callable[[Job], str]


class JobService:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        config: Config,
        *,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self.config = config
        self.clock = clock or RealClock()
        self.dispatcher: Dispatcher = _NoDispatcher()
        self.prepare: Prepare | None = None
        self.result_link: ResultLink | None = None
        self._records: dict[str, Record] = {}  # insertion order = submission order
        # user -> that user's records, in the same order: a user's list walks only its own
        self._by_user: dict[str, dict[str, Record]] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (user, Idempotency-Key) -> job id
        self._encoder = msgspec.json.Encoder()
        self._in_flight: dict[str, int] = {}  # user -> jobs not yet terminal
        # user -> submissions past the MAX_IN_FLIGHT check whose commit has not landed yet:
        # counted with _in_flight, so concurrent submits can't all pass the check at once
        self._submitting: dict[str, int] = {}
        # (user, Idempotency-Key) -> done when the submission using it on this process ends:
        # a second request with the key waits for it, then replays (it must not spend the rate
        # window, nor be refused by it, for a job the first one makes)
        self._claims: dict[tuple[str, str], asyncio.Future[None]] = {}
        # (status, plan) -> jobs held: kept as the read model moves, so /metrics is not a scan
        self._tally: dict[tuple[Status, Role], int] = {}
        # finished jobs: id -> when it finished, and a heap of (when, id), oldest first, whose
        # entries for jobs deleted or retried since are dropped as they come up: what cleanup
        # and the JOB_TTL_S sweep read, instead of parsing every job's finished_at each time
        self._finished_at: dict[str, float] = {}
        self._finished: list[tuple[float, str]] = []
        self.submitted: dict[Role, int] = {Role.FREE: 0, Role.PREMIUM: 0}
        self.rate_limited = 0
        # webhooks: validates a callback_url and makes its lane durable before the job exists
        self.prepare_callback: Callable[[str, str], Awaitable[None]] | None = None

    # ---- lifecycle -------------------------------------------------------------

    async def open(self, on_store: Callable[[Store], Awaitable[None]] | None = None) -> None:
        """Load what the store has; on a private store, requeue attempts a restart interrupted.
        `on_store` runs once the store is open, before anything is decided (a virtual clock
        adopts the stored time there)."""
        loaded = await self.store.open(self._on_commit, self._on_config, self._resync)
        if on_store is not None:
            await on_store(self.store)
        if loaded.config is not None:
            overridden = sorted(
                name
                for name in msgspec.structs.asdict(loaded.config)
                if getattr(loaded.config, name) != getattr(self.config, name)
            )
            if overridden:  # a PATCH /v1/config outlives restarts: say so, or env vars seem dead
                log.warning(
                    "the stored runtime config (from PATCH /v1/config) overrides the settings "
                    "for: %s",
                    ", ".join(f"{n}={getattr(loaded.config, n)!r}" for n in overridden),
                )
            self.config = loaded.config
        for stored in sorted(loaded.jobs, key=lambda s: s.ordinal):
            self._add(stored)
        for committed in loaded.events:
            self.hub.remember(_published(committed))
        self.hub.broker.advance(loaded.seq)
        if not self.store.shared:
            # the attempts died with the process, not of their own failure: they don't count
            interrupted = [r.job.id for r in self._records.values() if _running(r)]
            await asyncio.gather(*(self.interrupted(job_id) for job_id in interrupted))

    def _add(self, stored: StoredJob, data: bytes | None = None) -> Record:
        job = stored.job
        record = Record(
            job,
            self._encoder.encode(job) if data is None else data,
            stored.ordinal,
            stored.version,
            stored.idempotency_key,
            stored.request_hash,
        )
        self._records[job.id] = record
        self._by_user.setdefault(job.user_id, {})[job.id] = record
        self._tally_move(None, job)
        self._finish_move(None, job)
        if not job.status.terminal:
            self._count(job.user_id, +1)
        self.hub.track(job.id, job.user_id, record.data)
        if stored.idempotency_key is not None:
            self._keys[(job.user_id, stored.idempotency_key)] = job.id
        return record

    # ---- the one way the read model moves ---------------------------------------

    def _on_commit(self, events: list[Committed]) -> None:
        for committed in events:
            record = self._apply(committed)
            if record is None:  # older than what the read model has: history, not news
                self.hub.remember(_published(committed))
                continue
            self.hub.publish(_published(committed))
            try:
                self.dispatcher.job_changed(record, committed.type)
            except Exception:  # the read model and the stream stay right for the others
                log.exception("applying committed changes failed (scheduler)")

    def _resync(self, jobs: list[StoredJob], seq: int) -> None:
        """The shared log lost events this process had not applied (it fell behind by more
        than the log keeps): take every job as the store holds it now. Each job that changed
        moves the read model and the scheduler as its own event would have (its last one, by
        its status); subscribers get a reset and fresh snapshots instead of the lost events."""
        at = iso_us(self.clock.now())
        moved: list[tuple[Record, EventType]] = []
        fresh = {stored.job.id for stored in jobs}
        for record in list(self._records.values()):
            if record.job.id not in fresh and record.version <= seq:  # deleted meanwhile
                gone = Committed(seq, EventType.DELETED, at, record.job, record.data)
                if self._apply(gone) is not None:
                    moved.append((record, EventType.DELETED))
        for stored in jobs:
            known = self._records.get(stored.job.id)
            if known is not None and known.version >= stored.version:
                continue
            kind = EventType.CREATED if known is None else _LAST_EVENT[stored.job.status]
            applied = self._apply(
                Committed(
                    stored.version,
                    kind,
                    at,
                    stored.job,
                    self._encoder.encode(stored.job),
                    stored.ordinal,
                    stored.idempotency_key,
                    stored.request_hash,
                )
            )
            if applied is not None:
                moved.append((applied, kind))
        self.hub.resync(seq, {r.job.id: (r.job.user_id, r.data) for r in self._records.values()})
        for record, kind in moved:
            try:
                self.dispatcher.job_changed(record, kind)
            except Exception:
                log.exception("applying a resync failed (scheduler)")

    def _apply(self, committed: Committed) -> Record | None:
        job = committed.job
        known = self._records.get(job.id)
        if known is not None and committed.seq <= known.version:
            return None  # already applied (a job loaded in a state newer than this event)
        if committed.type is EventType.CREATED:
            stored = StoredJob(
                job,
                committed.ordinal,
                committed.seq,
                committed.idempotency_key,
                committed.request_hash,
            )
            return self._add(stored, committed.data)
        record = known
        if record is None:
            return None  # deleted already (an event from before a load that missed the job)
        if record.job.status.terminal != job.status.terminal:  # finished, or retried by an admin
            self._count(job.user_id, -1 if job.status.terminal else +1)
        if committed.type is EventType.DELETED:
            if not record.job.status.terminal:
                self._count(job.user_id, -1)
            del self._records[job.id]
            own = self._by_user[job.user_id]
            del own[job.id]
            if not own:
                del self._by_user[job.user_id]
            if record.idempotency_key is not None:
                self._keys.pop((job.user_id, record.idempotency_key), None)
            self._tally_move(record.job, None)
            self._finish_move(record.job, None)
        else:
            self._tally_move(record.job, job)
            self._finish_move(record.job, job)
        record.job, record.data, record.version = job, committed.data, committed.seq
        return record

    def _tally_move(self, old: Job | None, new: Job | None) -> None:
        tally = self._tally
        if old is not None:
            key = (old.status, old.role)
            left = tally[key] - 1
            if left:
                tally[key] = left
            else:
                del tally[key]
        if new is not None:
            key = (new.status, new.role)
            tally[key] = tally.get(key, 0) + 1

    def _finish_move(self, old: Job | None, new: Job | None) -> None:
        if new is not None and new.status.terminal:
            if old is None or not old.status.terminal or old.finished_at != new.finished_at:
                at = parse_iso(new.finished_at or new.created_at)
                self._finished_at[new.id] = at
                heapq.heappush(self._finished, (at, new.id))
        elif old is not None and old.status.terminal:
            del self._finished_at[old.id]
            if len(self._finished) > 2 * len(self._finished_at) + 1_000:  # mostly dropped ones
                self._finished = [(at, job_id) for job_id, at in self._finished_at.items()]
                heapq.heapify(self._finished)

    def oldest_finished(self) -> float | None:
        """When the longest-finished job held finished (None: no finished job)."""
        heap = self._finished
        while heap and self._finished_at.get(heap[0][1]) != heap[0][0]:
            heapq.heappop(heap)  # deleted or retried since
        return heap[0][0] if heap else None

    def _count(self, user_id: str, delta: int) -> None:
        left = self._in_flight.get(user_id, 0) + delta
        if left > 0:
            self._in_flight[user_id] = left
        else:
            self._in_flight.pop(user_id, None)

    def _on_config(self, config: Config) -> None:
        self.config = config
        self.dispatcher.config_changed()

    # ---- reads -----------------------------------------------------------------

    def get(self, job_id: str) -> Record:
        record = self._records.get(job_id)
        if record is None:
            raise NotFound("no job with this id", job_id=job_id[:200])
        return record

    def find(self, job_id: str) -> Record | None:
        return self._records.get(job_id)

    def find_by_key(self, user_id: str, idempotency_key: str) -> Record | None:
        """The user's job made under this Idempotency-Key, if it is still here."""
        job_id = self._keys.get((user_id, idempotency_key))
        return None if job_id is None else self._records.get(job_id)

    async def fetch(self, job_id: str) -> Record:
        """Like get, but a job just made on another process is waited for, not a 404."""
        record = self._records.get(job_id)
        if record is None and self.store.shared:
            await self.store.sync()
            record = self._records.get(job_id)
        if record is None:
            raise NotFound("no job with this id", job_id=job_id[:200])
        return record

    def __len__(self) -> int:
        return len(self._records)

    def in_flight(self, user_id: str) -> int:
        """How many of the user's jobs are unfinished or being submitted (what MAX_IN_FLIGHT
        counts)."""
        return self._in_flight.get(user_id, 0) + self._submitting.get(user_id, 0)

    def _hold(self, user_id: str, delta: int) -> None:
        left = self._submitting.get(user_id, 0) + delta
        if left > 0:
            self._submitting[user_id] = left
        else:
            self._submitting.pop(user_id, None)

    def records(self) -> Iterator[Record]:
        """Every job, oldest first."""
        return iter(list(self._records.values()))

    def select(
        self,
        *,
        user: str | None = None,
        status: Status | None = None,
        role: Role | None = None,
        before: int | None = None,
    ) -> Iterator[Record]:
        """Newest first; `before` is an ordinal (the cursor)."""
        held = self._records if user is None else self._by_user.get(user, {})
        for record in reversed(held.values()):
            if before is not None and record.ordinal >= before:
                continue
            job = record.job
            if user is not None and job.user_id != user:
                continue
            if status is not None and job.status is not status:
                continue
            if role is not None and job.role is not role:
                continue
            yield record

    def page(
        self,
        limit: int,
        *,
        user: str | None = None,
        status: Status | None = None,
        role: Role | None = None,
        before: int | None = None,
    ) -> tuple[list[Record], int | None]:
        """At most `limit` jobs, newest first, and the cursor of the next page (or None)."""
        page: list[Record] = []
        more = False
        for record in self.select(user=user, status=status, role=role, before=before):
            if len(page) == limit:
                more = True
                break
            page.append(record)
        return page, (page[-1].ordinal if more else None)

    def counts(self) -> dict[tuple[Status, Role], int]:
        """Jobs held, by (status, plan); only the pairs that have any. Kept as the read
        model moves (not counted on each call: a scrape of /metrics must not scan every job)."""
        return dict(self._tally)

    def poll_hint(self, record: Record) -> float | None:
        """When polling this job again is useful (None once it is terminal)."""
        return self.dispatcher.poll_hint(record)

    # ---- commands --------------------------------------------------------------

    async def submit(
        self, user_id: str, request: SubmitRequest, idempotency_key: str | None = None
    ) -> tuple[Record, bool, Decision | None]:
        """Accept a job. Returns (record, created, rate decision) once it is durable."""
        made, refused = await self.submit_all(user_id, [(request, idempotency_key)])
        if refused is not None:
            raise refused
        return made[0]

    async def submit_all(
        self,
        user_id: str,
        requests: Sequence[tuple[SubmitRequest, str | None]],
        *,
        cap: int | None = None,
    ) -> tuple[list[Submitted], RateLimited | None]:
        """Accept the jobs of one request (each with its Idempotency-Key, if any).

        Jobs a retry finds again are replayed; the others are made together, all or none:
        the user's unfinished jobs plus these must fit MAX_IN_FLIGHT and `cap` (else 429,
        nothing made). The count is checked here (this process's read model and submissions)
        and again by a shared store, atomically with the creates, so the bound holds across
        processes. The rate window counts them together too: all fit, or none is made (the
        refusal is returned, with any jobs a retry found again)."""
        keys = {(user_id, key) for _, key in requests if key is not None}
        while busy := [self._claims[k] for k in keys if k in self._claims]:
            await asyncio.wait(busy)  # the same key being submitted here: its outcome first
        done = asyncio.get_running_loop().create_future()
        for claimed in keys:  # no await since the check: nobody else holds these keys now
            self._claims[claimed] = done
        held: list[tuple[str, str]] = []
        try:
            if keys and self.store.shared:
                held = await self._hold_keys_across_processes(keys)
            for _ in range(MAX_CONFLICTS):
                try:
                    return await self._submit_all(user_id, requests, cap)
                except _Again:  # an Idempotency-Key raced us on another process: replay it
                    continue
            raise Conflict("this request's Idempotency-Keys kept racing; try again")
        finally:
            for claimed in keys:
                del self._claims[claimed]
            done.set_result(None)
            for user_key in held:
                await self.store.release_key(*user_key)

    async def _hold_keys_across_processes(
        self, keys: set[tuple[str, str]]
    ) -> list[tuple[str, str]]:
        """On a shared store, the same as `_claims` across processes: each key is held in the
        store while this request uses it; a key another process holds is waited for until its
        job is here (then this request replays it) or the hold ends (then this one goes on).
        The held ones are returned. Bounded by KEY_HOLD_S: past it the request goes on, and
        the commit still refuses a second job with the key (one more rate hit at worst)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + KEY_HOLD_S
        held: list[tuple[str, str]] = []
        waiting = sorted(keys)
        try:
            while True:
                for user_key in list(waiting):
                    if await self.store.claim_key(*user_key, KEY_HOLD_S):
                        held.append(user_key)
                        waiting.remove(user_key)
                if not waiting or loop.time() >= deadline:
                    return held
                await asyncio.sleep(KEY_POLL_S)
                await self.store.sync()  # a job made with the key elsewhere: replay it
                waiting = [k for k in waiting if k not in self._keys]
        except BaseException:
            for user_key in held:
                await self.store.release_key(*user_key)
            raise

    async def _submit_all(
        self,
        user_id: str,
        requests: Sequence[tuple[SubmitRequest, str | None]],
        cap: int | None,
    ) -> tuple[list[Submitted], RateLimited | None]:
        hashes = [_hash(msgspec.json.encode(r)) if key else None for r, key in requests]
        found: list[Record | None] = []
        for (_, key), request_hash in zip(requests, hashes, strict=True):
            existing = None if key is None else self._keys.get((user_id, key))
            if existing is not None and existing in self._records:
                found.append(self._replay(existing, request_hash))
            else:
                found.append(None)
        fresh = [i for i, record in enumerate(found) if record is None]
        if not fresh:
            return [(record, False, None) for record in found if record is not None], None
        if self._over(user_id, len(fresh), cap) and self.store.shared:
            await self.store.sync()  # jobs finished on another process a moment ago count out
        limit = self._over(user_id, len(fresh), cap)
        if limit is not None:
            self.rate_limited += 1
            raise self._limited(limit)
        # held from the check until the commit has landed in _in_flight (no await between the
        # check and the hold): concurrent submits each see the others
        self._hold(user_id, len(fresh))
        try:
            return await self._create(user_id, requests, hashes, found, fresh, cap)
        finally:
            self._hold(user_id, -len(fresh))

    def _over(self, user_id: str, count: int, cap: int | None) -> int | None:
        """The limit `count` more unfinished jobs would pass (None: they fit)."""
        limit = self._limit(cap)
        return limit if self.in_flight(user_id) + count > limit else None

    def _limit(self, cap: int | None) -> int:
        limit = self.config.max_in_flight
        return limit if cap is None else min(limit, cap)

    def _limited(self, limit: int) -> RateLimited:
        return RateLimited(
            f"at most {limit} unfinished jobs per user; wait for some to finish",
            limit=limit,
            remaining=0,
            reset_s=max(1.0, self.config.translation_delay),
        )

    async def _create(
        self,
        user_id: str,
        requests: Sequence[tuple[SubmitRequest, str | None]],
        hashes: list[str | None],
        found: list[Record | None],
        fresh: list[int],
        cap: int | None,
    ) -> tuple[list[Submitted], RateLimited | None]:
        """submit_all, past the local count: callbacks, videos, the rate window, the commit."""
        if self.prepare_callback is not None:
            urls = {requests[i][0].callback_url for i in fresh}
            for url in sorted(u for u in urls if u is not None):
                await self.prepare_callback(user_id, url)
        limit = self._limit(cap)
        videos: dict[int, AssetVideo | msgspec.UnsetType] = {}
        for i in fresh:
            request = requests[i][0]
            # a media job's video is checked (a URL fetched) before the rate window counts it:
            # a refused video changes nothing
            videos[i] = msgspec.UNSET
            if request.video is not None:
                if self.prepare is None:
                    raise ValidationFailed("this server takes no media jobs", field="video")
                videos[i] = await self.prepare(user_id, request) or msgspec.UNSET
        now = self.clock.now()
        decisions = await self._count_in_windows(user_id, [requests[i][0] for i in fresh], now)
        if isinstance(decisions, RateLimited):
            return [(record, False, None) for record in found if record is not None], decisions
        made: dict[int, tuple[Change, Decision]] = {}
        for i, decision in zip(fresh, decisions, strict=True):
            request, key = requests[i]
            job = self._new_job(user_id, request, videos[i], now)
            made[i] = (
                Change(job, EventType.CREATED, iso_us(now), 0, key, hashes[i], cap=limit),
                decision,
            )
        changes = [change for change, _ in made.values()]
        try:
            if len(changes) == 1:
                await self.store.commit(changes[0])
            elif changes:
                await self.store.commit_all(changes)
        except DuplicateSubmission as dup:  # the same key raced us, here or on another process
            await self.store.sync()
            if len(requests) == 1:
                return [(self._replay(dup.job_id, hashes[0]), False, None)], None
            raise _Again from None
        except CapReached as over:  # other processes' submissions filled it meanwhile
            self.rate_limited += 1
            raise self._limited(over.cap) from None
        results: list[Submitted] = []
        for i, record in enumerate(found):
            if record is not None:
                results.append((record, False, None))
            else:
                change, decision = made[i]
                self.submitted[change.job.role] += 1
                results.append((self._records[change.job.id], True, decision))
        return results, None

    async def _count_in_windows(
        self, user_id: str, requests: list[SubmitRequest], now: float
    ) -> list[Decision] | RateLimited:
        """Count one request's submissions in their plan's hourly window, all or none: each
        one's decision, or the refusal. Every plan has a window (premium's is larger, not
        unlimited); one request's jobs share a plan, so one window in practice."""
        windows: dict[Role, list[int]] = {}
        for n, request in enumerate(requests):
            windows.setdefault(request.role, []).append(n)
        decided: dict[int, Decision] = {}
        for role, members in windows.items():
            premium = role is Role.PREMIUM
            decision = await self.store.rate_hit(
                f"premium:{user_id}" if premium else user_id,
                self.config.premium_rate_limit if premium else self.config.rate_limit,
                now,
                len(members),
            )
            if not decision.allowed:
                self.rate_limited += 1
                return RateLimited(
                    f"{role} plan: at most {decision.limit} submissions per hour",
                    limit=decision.limit,
                    remaining=decision.remaining,
                    reset_s=decision.reset_s,
                )
            decided.update(dict.fromkeys(members, decision))
        return [decided[n] for n in range(len(requests))]

    def _new_job(
        self,
        user_id: str,
        request: SubmitRequest,
        video: AssetVideo | msgspec.UnsetType,
        now: float,
    ) -> Job:
        return Job(
            id=_new_id(),
            user_id=user_id,
            role=request.role,
            status=Status.PENDING,
            progress=0,
            attempt=0,
            max_attempts=self.config.max_attempts,
            priority=1 if request.role is Role.PREMIUM else 0,
            target_language=request.target_language,
            created_at=iso_ms(now),
            updated_at=iso_ms(now),
            scenario=request.scenario,
            video=video,
            callback_url=request.callback_url,
            callback_id=request.callback_id,
        )

    def _replay(self, job_id: str, request_hash: str | None) -> Record:
        record = self.get(job_id)
        if record.request_hash != request_hash:
            raise IdempotencyKeyReused(
                "this Idempotency-Key was used with a different body", job_id=record.job.id
            )
        return record

    async def cancel(self, job_id: str, reason: str | None) -> Record:
        def decide(record: Record) -> Change:
            if record.job.status.terminal:
                raise Conflict(
                    f"job is {record.job.status}, it can no longer be cancelled",
                    status=record.job.status,
                )
            return self._move(
                record,
                Status.CANCELLED,
                EventType.CANCELLED,
                cancel_reason=reason or "cancelled by admin",
                finished=True,
                eta=None,
                not_before=None,
            )

        return await self._change(job_id, decide)

    async def retry(self, job_id: str) -> Record:
        def decide(record: Record) -> Change:
            if record.job.status is not Status.PERMANENTLY_FAILED:
                raise Conflict(
                    f"only permanently_failed jobs can be retried; this one is {record.job.status}",
                    status=record.job.status,
                )
            return self._move(
                record,
                Status.PENDING,
                EventType.RETRYING,
                attempt=0,
                progress=0,
                error=None,
                finished_at=None,
            )

        return await self._change(job_id, decide)

    async def process(self, count: int) -> list[Record]:
        return await self.dispatcher.start_now(count)

    async def cleanup(self, older_than_s: float | None = None) -> int:
        """Delete finished jobs (optionally only those finished more than N s ago)."""
        cutoff = None if older_than_s is None else self.clock.now() - older_than_s
        every = list(self._finished_at) if cutoff is None else []
        taken: list[tuple[float, str]] = []  # off the heap: put back what is not deleted

        def decide(record: Record) -> Change | None:
            if not record.job.status.terminal:  # retried by an admin meanwhile
                return None
            return Change(record.job, EventType.DELETED, iso_us(self.clock.now()), record.version)

        async def delete(job_id: str) -> bool:
            try:
                await self._change(job_id, decide)
            except NotFound:
                return False  # deleted by someone else meanwhile
            return job_id not in self._records

        deleted = 0
        try:
            for start in itertools.count(0, CLEANUP_BATCH):
                if cutoff is None:
                    batch = every[start : start + CLEANUP_BATCH]
                else:  # oldest first off the heap: a sweep walks only what it deletes
                    due = self._due(cutoff, CLEANUP_BATCH)
                    taken += due
                    batch = [job_id for _, job_id in due]
                if not batch:
                    break
                deleted += sum(await asyncio.gather(*(delete(job_id) for job_id in batch)))
        finally:
            for at, job_id in taken:  # not deleted (the store failed): still due
                if self._finished_at.get(job_id) == at:
                    heapq.heappush(self._finished, (at, job_id))
        return deleted

    def _due(self, cutoff: float, count: int) -> list[tuple[float, str]]:
        """Up to `count` finished jobs that finished before `cutoff`, oldest first, taken off
        the heap."""
        heap, due = self._finished, list[tuple[float, str]]()
        while heap and heap[0][0] < cutoff and len(due) < count:
            at, job_id = heapq.heappop(heap)
            if self._finished_at.get(job_id) == at:
                due.append((at, job_id))
        return due

    async def update_config(self, patch: ConfigPatch) -> Config:
        config = patch.apply(self.config)
        await self.store.save_config(config)
        self.config = config
        self.dispatcher.config_changed()
        return config

    # ---- transitions driven by the scheduler -----------------------------------

    async def begin_attempt(
        self,
        record: Record,
        duration_s: float | None,
        lease_s: float | None = None,
        slots: int | None = None,
    ) -> bool:
        """pending -> processing. False if the job moved on meanwhile (e.g. cancelled).
        `slots`: the user's plan runs at most this many at once; a shared store refuses the
        start (CapReached) when other processes' starts took them all."""

        def decide(current: Record) -> Change | None:
            if current.job.status is not Status.PENDING:
                return None
            now = self.clock.now()
            change = self._move(
                current,
                Status.PROCESSING,
                EventType.STARTED,
                now=now,
                started=True,
                attempt=current.job.attempt + 1,
                progress=0,
                eta=None if duration_s is None else iso_ms(now + duration_s),
                error=None,
                not_before=None,
                stage=msgspec.UNSET,  # a media job's stages start over
                stage_progress=msgspec.UNSET,
            )
            change.lease_s = lease_s
            change.slots = slots
            return change

        return await self._by_id(record.job.id, decide)

    async def report_progress(
        self,
        record: Record,
        progress: int,
        attempt: int,
        *,
        stage: Stage | None = None,
        stage_progress: int = 0,
    ) -> None:
        """Progress of a running attempt; media jobs also say which stage and how far in it."""

        def decide(current: Record) -> Change | None:
            job = current.job
            if job.status is not Status.PROCESSING or job.attempt != attempt:
                return None
            if stage is None:
                if progress <= job.progress:
                    return None
                return self._move(
                    current, Status.PROCESSING, EventType.PROGRESS, progress=min(progress, 99)
                )
            if isinstance(job.stage, Stage) and isinstance(job.stage_progress, int):
                order = list(Stage)
                was = (order.index(job.stage), job.stage_progress)
                if (order.index(stage), stage_progress) <= was:
                    return None  # late news of an earlier point
            return self._move(
                current,
                Status.PROCESSING,
                EventType.PROGRESS,
                progress=max(job.progress, min(progress, 99)),
                stage=stage,
                stage_progress=min(max(stage_progress, 0), 100),
            )

        await self._by_id(record.job.id, decide)

    async def complete(self, record: Record, attempt: int) -> bool:
        def decide(current: Record) -> Change | None:
            if current.job.status is not Status.PROCESSING or current.job.attempt != attempt:
                return None
            job_id = current.job.id
            return self._move(
                current,
                Status.COMPLETED,
                EventType.COMPLETED,
                progress=100,
                finished=True,
                eta=None,
                result_url=self.result_link(current.job)
                if self.result_link is not None
                else f"/v1/jobs/{job_id}/result.{current.job.target_language}.vtt",
            )

        return await self._by_id(record.job.id, decide)

    async def fail_attempt(
        self,
        record: Record,
        attempt: int,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_in_s: float,
    ) -> Status:
        """processing -> failed (a retry is due after `retry_in_s`) or permanently_failed."""

        def decide(current: Record) -> Change | None:
            job = current.job
            if job.status is not Status.PROCESSING or job.attempt != attempt:
                return None
            error = JobError(code, message)
            if retryable and job.attempt < job.max_attempts:
                due = iso_ms(self.clock.now() + retry_in_s)
                return self._move(
                    current, Status.FAILED, EventType.FAILED, error=error, eta=None, not_before=due
                )
            return self._move(
                current,
                Status.PERMANENTLY_FAILED,
                EventType.PERMANENTLY_FAILED,
                error=error,
                finished=True,
                eta=None,
            )

        await self._by_id(record.job.id, decide)
        return record.job.status

    async def requeue(self, job_id: str) -> bool:
        """failed -> pending once its not_before is due."""

        def decide(record: Record) -> Change | None:
            job = record.job
            if job.status is not Status.FAILED:
                return None
            if job.not_before is not None and parse_iso(job.not_before) > self.clock.now():
                return None
            return self._move(record, Status.PENDING, EventType.RETRYING, progress=0)

        return await self._by_id(job_id, decide)

    async def interrupted(self, job_id: str) -> bool:
        """processing -> pending: the attempt died with its process; it doesn't count."""

        def decide(record: Record) -> Change | None:
            job = record.job
            if job.status is not Status.PROCESSING:
                return None
            return self._move(
                record,
                Status.PENDING,
                EventType.RETRYING,
                attempt=max(0, job.attempt - 1),
                progress=0,
                eta=None,
            )

        return await self._by_id(job_id, decide)

    async def _by_id(self, job_id: str, decide: Decide) -> bool:
        """Run a scheduler's transition; True if this call made it."""
        if job_id not in self._records:
            return False
        try:
            return (await self._decide_and_commit(job_id, decide))[1]
        except NotFound:
            return False

    # ---- deciding and committing -------------------------------------------------

    async def _change(self, job_id: str, decide: Decide) -> Record:
        """Decide against the job as it is, commit; on a lost race, decide again."""
        return (await self._decide_and_commit(job_id, decide))[0]

    async def _decide_and_commit(self, job_id: str, decide: Decide) -> tuple[Record, bool]:
        """The job after the change (or as it is, if `decide` made none), and whether this
        call made one."""
        for _ in range(MAX_CONFLICTS):
            record = self.get(job_id)
            change = decide(record)
            if change is None:
                return record, False
            try:
                await self.store.commit(change)
            except VersionConflict:
                await self.store.sync()  # someone else moved it: catch up, then decide again
                continue
            return self._records.get(job_id, record), True
        raise Conflict("the job kept changing while this request was deciding; try again")

    def _move(
        self,
        record: Record,
        to: Status,
        event: EventType,
        *,
        now: float | None = None,
        started: bool = False,
        finished: bool = False,
        **fields: object,
    ) -> Change:
        job = record.job
        if to is not job.status and to not in TRANSITIONS[job.status]:
            raise Conflict(f"illegal transition {job.status} -> {to}")
        now = self.clock.now() if now is None else now
        stamp = iso_ms(now)
        if started:
            fields["started_at"] = stamp
        if finished:
            fields["finished_at"] = stamp
        new = msgspec.structs.replace(job, status=to, updated_at=stamp, **fields)
        return Change(new, event, iso_us(now), record.version)


def _running(record: Record) -> bool:
    return record.job.status is Status.PROCESSING


# what a job's last event was, told by its status (a resync knows states, not events)
_LAST_EVENT: Final = {
    Status.PENDING: EventType.RETRYING,
    Status.PROCESSING: EventType.STARTED,
    Status.FAILED: EventType.FAILED,
    Status.COMPLETED: EventType.COMPLETED,
    Status.CANCELLED: EventType.CANCELLED,
    Status.PERMANENTLY_FAILED: EventType.PERMANENTLY_FAILED,
}


def _published(committed: Committed) -> Published:
    job = committed.job
    return Published(
        committed.seq, committed.type, committed.at, job.id, job.user_id, committed.data
    )


class _Ids:
    """Unguessable job ids (128 random bits, URL-safe), from the OS's CSPRNG like
    secrets.token_urlsafe, but one read per 256 ids: a syscall per submission showed up."""

    SIZE = 16
    BATCH = 256

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        if self._at >= len(self._pool):
            self._pool, self._at = os.urandom(self.SIZE * self.BATCH), 0
        raw = self._pool[self._at : self._at + self.SIZE]
        self._at += self.SIZE
        text = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        # never a leading "-": a command line would read the id as an option (`dubsim wait -x`)
        return "_" + text[1:] if text[0] == "-" else text


_new_id = _Ids()


def _hash(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()[:18]).decode()
