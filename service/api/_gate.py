"""The gate in front of every open-ended request: WebSockets, SSE streams and long polls.

It counts them against MAX_CONNECTIONS (503 + Retry-After beyond it, so memory and file
descriptors stay bounded whoever connects) and, once shutdown has begun, lets no new one in:
the open ones are being told goodbye and the process is about to exit.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from aiohttp import web

from ..errors import Unavailable

RETRY_AFTER_S: Final = 1.0


class Gate:
    """Open streams and long polls, counted; `closing` from the start of shutdown."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.limit = limit
        self.open = 0
        self.closing = False
        self.refused = 0  # read by tests and /metrics-style diagnostics

    @contextmanager
    def enter(self, kind: str) -> Iterator[None]:
        """Hold one slot while the body runs; Unavailable (503) when none is free."""
        if self.closing:
            self.refused += 1
            raise Unavailable("the server is shutting down", retry_after_s=RETRY_AFTER_S)
        if self.open >= self.limit:
            self.refused += 1
            raise Unavailable(
                f"too many open connections (MAX_CONNECTIONS={self.limit}); retry later",
                retry_after_s=RETRY_AFTER_S,
                kind=kind,
            )
        self.open += 1
        try:
            yield
        finally:
            self.open -= 1


GATE = web.AppKey("gate", Gate)
