"""A per-user moving window for the free plan.

Hand-written rather than the `limits` library's moving window because the window must be
rebuilt from the stored jobs after a restart (limits can't record a hit in the past) and
tested with an injected clock; it is a sliding log of timestamps, a dozen lines.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import msgspec


class Decision(msgspec.Struct):
    allowed: bool
    limit: int
    remaining: int
    reset_s: float  # seconds until the oldest hit in the window leaves it

    def headers(self) -> dict[str, str]:
        """IETF RateLimit header fields (draft 6 names)."""
        return {
            "RateLimit-Limit": str(self.limit),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset_s)),
        }


class MovingWindow:
    """At most `limit` hits per key within any `window_s` seconds."""

    def __init__(self, window_s: float = 3600.0, clock: Callable[[], float] = time.time) -> None:
        self.window_s = window_s
        self.clock = clock
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str, limit: int, now: float | None = None, count: int = 1) -> Decision:
        """Count `count` hits at once: all if they fit in the window, else none."""
        now = self.clock() if now is None else now
        hits = self._hits.setdefault(key, deque())
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        allowed = len(hits) + count <= limit
        if allowed:
            hits.extend([now] * count)
        reset_s = hits[0] + self.window_s - now if hits else 0.0
        if not hits:
            del self._hits[key]
        return Decision(allowed, limit, max(0, limit - len(hits)), max(0.0, reset_s))

    def record(self, key: str, at: float) -> None:
        """Replay a hit that happened at `at` (rebuilding the window after a restart)."""
        if at > self.clock() - self.window_s:
            hits = self._hits.setdefault(key, deque())
            hits.append(at)
            if len(hits) > 1 and hits[-2] > at:
                self._hits[key] = deque(sorted(hits))

    def forget(self, hits: list[tuple[str, float]]) -> None:
        """Take back hits whose submissions were never made durable."""
        for key, at in hits:
            window = self._hits.get(key)
            if window is not None and at in window:
                window.remove(at)
                if not window:
                    del self._hits[key]
