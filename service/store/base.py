"""The Store contract: durable job state and the ordered event log, shared by every backend.

JobService decides a change against the state it has read (at some version) and hands it to
`commit`. The store applies it only if the job is still at that version (compare-and-set),
gives it the next sequence number, makes it durable together with its event, and only then
delivers the committed event to the `on_commit` callback given to `open`. That callback is the
one place the in-memory read model moves and events are published, so nothing is acknowledged
or pushed before it is durable, and every process (one for SQLite, many for Redis) applies the
same events in the same order.

    JobService ──commit(Change)──> Store ──durable──> on_commit([Committed, ...]) ──> read model
                                                                                   └─> fan-out
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import msgspec

from ..models import EventType, Job
from ..ratelimit import Decision
from ..settings import Config


class StoredJob(msgspec.Struct):
    """A job and the bookkeeping that is not part of the wire schema."""

    job: Job
    ordinal: int  # submission order: seeds the job's random draws, orders listings
    version: int = 0  # seq of the job's last committed event: its ETag, the CAS token
    idempotency_key: str | None = None
    request_hash: str | None = None


class Change(msgspec.Struct):
    """One job's next state, decided against the job at version `expect`.

    `expect == 0` creates the job (it must not exist); `event is DELETED` removes it.
    """

    job: Job
    event: EventType
    at: str  # the event's time (microseconds)
    expect: int = 0
    idempotency_key: str | None = None
    request_hash: str | None = None
    lease_s: float | None = None  # processing under this process's lease (shared backends)
    # a create only: refused (CapReached) if the user already has this many unfinished jobs,
    # counted in the store, atomically with the create (shared backends; see Store.commit)
    cap: int | None = None
    # a start only: refused (CapReached) if the user already has this many plan-limited jobs
    # processing, counted in the store atomically with the start (shared backends); the job
    # then holds one of those slots until it leaves processing
    slots: int | None = None


class Committed(msgspec.Struct):
    """One entry of the durable event log, as every process applies it."""

    seq: int
    type: EventType
    at: str
    job: Job
    data: bytes  # the job's JSON, encoded once
    ordinal: int = 0  # set on job.created
    idempotency_key: str | None = None  # set on job.created
    request_hash: str | None = None


class Doc(msgspec.Struct):
    """A small durable document beside the jobs: an API key, a webhook endpoint, an asset.

    Features that are not jobs keep their state here, so that they are durable on SQLite and
    shared by every process on Redis without a table or a key layout of their own.
    """

    id: str
    body: bytes  # the owner's encoding (JSON)
    version: int  # starts at 1, +1 per write: the compare-and-set token


class Loaded(msgspec.Struct):
    jobs: list[StoredJob]
    seq: int  # the last committed seq
    events: list[Committed] = []  # the newest events, oldest first (the replay buffer)
    config: Config | None = None  # the runtime config last saved, if any


OnCommit = Callable[[list[Committed]], None]
OnConfig = Callable[[Config], None]
# the jobs as the store holds them now, and the seq they are current to: a shared store's log
# lost events this process had not applied yet (see Store.open)
OnResync = Callable[[list["StoredJob"], int], None]


class StoreError(Exception):
    """Base of what a store raises to JobService."""


class VersionConflict(StoreError):
    """The job moved on since the change was decided (or, for a new job, it exists)."""


class DuplicateSubmission(StoreError):
    """A job with this user's Idempotency-Key exists already."""

    def __init__(self, job_id: str) -> None:
        super().__init__(job_id)
        self.job_id = job_id


class CapReached(StoreError):
    """A create was refused: its user already has `cap` (or more) unfinished jobs; or a start
    was: its user already has `cap` plan-limited jobs processing (`Change.slots`). Nothing of
    the change (or of its group) was written."""

    def __init__(self, cap: int) -> None:
        super().__init__(f"at most {cap} unfinished jobs")
        self.cap = cap


class StoreUnavailable(StoreError):
    """The store could not make the change durable: nothing changed. Retry later."""

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after_s = retry_after_s


class Store(Protocol):
    """What JobService needs from a backend (sqlite.py, redis.py)."""

    shared: bool  # several processes share it (leases, takeover, cross-process reads)

    async def open(
        self, on_commit: OnCommit, on_config: OnConfig, on_resync: OnResync | None = None
    ) -> Loaded:
        """Open (creating if needed) and return what is stored. Raises StartupError.

        `on_commit` then hears every committed event in seq order; `on_config` every runtime
        config saved by another process (shared backends); `on_resync` the jobs as they are
        now, should a shared log have dropped events this process had not applied yet (it
        fell behind by more than the log keeps): what follows on `on_commit` is then newer."""

    async def commit(self, change: Change) -> int:
        """Make `change` durable and return its seq, once `on_commit` has applied it.

        Raises VersionConflict, DuplicateSubmission, CapReached or StoreUnavailable (nothing
        changed). A create's `cap` is enforced here by shared backends (one count of each
        user's unfinished jobs, kept with the jobs); a private one (SQLite: one process) may
        ignore it, the caller's own count being exact there."""

    async def commit_all(self, changes: list[Change]) -> list[int]:
        """Commit the creates of one request (distinct jobs) all or nothing; their seqs.

        Each create's `cap` counts the ones before it in the list, so k creates under cap C
        fit only if the user has at most C - k unfinished jobs. Raises like `commit`."""

    async def rate_hit(self, user_id: str, limit: int, now: float, count: int = 1) -> Decision:
        """Count `count` submissions (one request's) in the user's moving window (durable,
        shared): all of them if they all fit, else none (refused)."""

    async def save_config(self, config: Config) -> None:
        """Make a runtime config durable (and, shared, every process's)."""

    async def sync(self) -> None:
        """Wait until this process has applied everything committed anywhere so far."""

    def wall(self) -> float:
        """Real time (epoch seconds) as every process sharing this store reads it: a shared
        store's own clock (processes on different machines disagree by their clocks' skew),
        this process's clock for a private one. Leases and deadlines are in this time."""

    async def renew_leases(self, job_ids: list[str], lease_s: float, now: float) -> None:
        """Extend this process's leases on its running attempts (shared backends); `now` is
        `wall()`."""

    async def expired_leases(self, now: float) -> list[str]:
        """Jobs whose processing lease ran out: their process died (shared backends)."""

    async def claim_key(self, user_id: str, key: str, ttl_s: float) -> bool:
        """Hold the user's Idempotency-Key while this process submits with it: False while
        another process holds it (shared backends; a private one has no other process and
        always grants it). The hold ends with `release_key`, or by itself after `ttl_s` (the
        holder died). It only saves the rate window a hit: the commit refuses a second job
        with one key (DuplicateSubmission) whether or not the key was held."""

    async def release_key(self, user_id: str, key: str) -> None:
        """End a hold `claim_key` granted (best effort: it also ends by itself)."""

    async def put_doc(
        self, kind: str, doc_id: str, body: bytes | None, expect: int | None = None
    ) -> int:
        """Durably write (`body`) or delete (`None`) the document `kind`/`doc_id`.

        `expect`: None writes unconditionally, 0 requires that it does not exist, n that it is
        at version n (VersionConflict otherwise). Returns the new version (0 once deleted).
        Raises VersionConflict or StoreUnavailable (nothing changed)."""

    async def get_doc(self, kind: str, doc_id: str) -> Doc | None:
        """The committed document, read from the store (every process sees every write)."""

    async def docs(self, kind: str) -> list[Doc]:
        """Every committed document of `kind`, in id order."""

    def health(self) -> str | None:
        """None when commits succeed; otherwise why they don't."""

    async def close(self) -> None: ...
