"""Broker: the sequence of committed events and their recent history (for resume).

Seq numbers come from the store (they are the durable event log's positions); the broker keeps
the newest EVENT_BUFFER of them in memory, loaded from the log at start, so a client that
resumes after a restart (or on another process sharing the log) gets exactly the events it
missed while they are within the buffer. The hub (fan-out) asks it for history; it knows
nothing of subscribers.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from .hub import Published

SINCE_IN_FUTURE: Final = "since_in_future"
SINCE_TOO_OLD: Final = "since_too_old"
EVENTS_LOST: Final = "events_lost"  # this process missed events of the shared log (resync)


class Broker:
    """The newest events in seq order, and the seq of the last one."""

    def __init__(self, buffer_size: int) -> None:
        self.seq = 0
        self._buffer: deque[Published] = deque(maxlen=buffer_size)

    def append(self, pub: Published) -> None:
        if pub.seq <= self.seq:
            return  # already history (replayed on a load): the buffer stays in seq order
        self.seq = pub.seq
        self._buffer.append(pub)

    def advance(self, seq: int) -> None:
        """Seqs up to `seq` were used by entries that are not job events (gaps are allowed)."""
        self.seq = max(self.seq, seq)

    def forget(self, seq: int) -> None:
        """Events up to `seq` can't be replayed from here (some never reached this process):
        the history starts after it, so a resume from before it is a reset, never a gap."""
        self._buffer.clear()
        self.seq = max(self.seq, seq)

    def recent(self) -> list[Published]:
        """Everything still in the buffer, oldest first."""
        return list(self._buffer)

    def since(self, seq: int) -> list[Published] | str:
        """Every event after `seq`, oldest first; or why that can't be had (a reset reason)."""
        if seq > self.seq:
            return SINCE_IN_FUTURE
        if not self._buffer:
            return [] if seq == self.seq else SINCE_TOO_OLD
        first = self._buffer[0].seq
        if seq < first - 1:
            return SINCE_TOO_OLD
        # seqs may have gaps: skip by value, not by position
        skip = 0
        for pub in self._buffer:
            if pub.seq > seq:
                break
            skip += 1
        return list(itertools.islice(self._buffer, skip, None))
