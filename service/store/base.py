"""The Store contract: what JobService needs to survive a restart, nothing more.

Reads are served from memory by JobService; the store only makes state durable.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from ..models import Job


class StoredJob(msgspec.Struct):
    """A job and the bookkeeping that is not part of the wire schema."""

    job: Job
    ordinal: int  # submission order: seeds the job's random draws
    idempotency_key: str | None = None
    request_hash: str | None = None


class Loaded(msgspec.Struct):
    jobs: list[StoredJob]
    seq_floor: int  # every seq ever handed out is below this
    rate_hits: list[tuple[str, float]] = []  # (user id, epoch s) of recent free submissions


class Store(Protocol):
    async def open(self) -> Loaded:
        """Open (creating if needed) and return everything stored."""

    async def insert(self, job: StoredJob) -> None:
        """Return only once the job is durable."""

    def save(self, ordinal: int, data: bytes) -> None:
        """Record a job's new state (its JSON); durable soon (group-committed), in order.

        Jobs are keyed by their ordinal, which only grows: a store can append and find a row
        without indexing random ids."""

    def delete(self, ordinals: list[int]) -> None:
        """Forget jobs; durable soon."""

    def record_hit(self, user_id: str, at: float) -> None:
        """Remember a rate-limited submission, so the window survives cleanup and restarts."""

    def reserve_seq(self, floor: int) -> None:
        """Record that sequence numbers below `floor` may have been handed out."""

    async def flush(self) -> None:
        """Wait until everything handed over so far is durable."""

    async def close(self) -> None: ...
