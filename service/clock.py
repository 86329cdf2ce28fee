"""One clock for everything that reads time: JobService, the scheduler, the rate window.

Injected rather than read from `time` directly, so that a virtual clock (time that moves only
when a test says so) is one more small class, not a rewrite.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""

    async def sleep(self, seconds: float) -> None:
        """Return after `seconds` of this clock's time."""


class RealClock:
    """The wall clock, and asyncio's sleep."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
