"""The backoff policy: when to ask again. Pure functions, no I/O, no hidden clock or randomness.

Order of precedence for the next delay:

1. a 429's `Retry-After` (the server says "not before");
2. the server's poll hint on a job answer (`X-Poll-After-Ms`, else `Retry-After`): it knows the
   job's ETA, so it knows when asking again is useful;
3. capped exponential backoff with full jitter: `uniform(0, min(cap, base * 2**attempt))`.
   Full jitter spreads many clients that failed together, so they don't retry in lockstep.

Whatever the source, a delay never runs past the caller's deadline.
"""

from __future__ import annotations

import email.utils
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

__all__ = ["Backoff", "PollPolicy", "clamp_to_deadline", "next_delay", "parse_retry_after"]

Random = Callable[[], float]
"""A source of floats in [0, 1), e.g. `random.random` (injected so tests are exact)."""


@dataclass(frozen=True)
class Backoff:
    """Capped exponential backoff with full jitter."""

    base: float = 0.2
    cap: float = 5.0

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay after `attempt` failures (0-based): min(cap, base*2**n)."""
        # Past ~60 doublings the float overflows to inf; the cap is reached long before anyway.
        return min(self.cap, self.base * 2.0 ** min(attempt, 60))

    def delay(self, attempt: int, rand: Random) -> float:
        """A full-jitter delay: uniform in [0, ceiling(attempt))."""
        return rand() * self.ceiling(attempt)


@dataclass(frozen=True)
class PollPolicy:
    """How `wait` polls when the live subscription is not available, and how requests retry."""

    backoff: Backoff = field(default_factory=Backoff)
    long_poll: bool = True  # use `?wait=S` so the server answers on the change itself
    long_poll_max_s: float = 30.0  # the server allows up to 60; shorter survives idle proxies
    long_poll_min_s: float = 1.0  # below this a long poll is not worth its connection
    hint_cap_s: float = 60.0  # never trust a hint further out than this (the ETA may move)
    retries: int = 3  # extra tries of an idempotent request on a retryable failure
    reconnect: Backoff = field(default_factory=lambda: Backoff(base=0.25, cap=10.0))
    ws_grace_s: float = 1.0  # how long a fresh subscription may take before polling starts


def parse_retry_after(value: str | None, now_wall: float) -> float | None:
    """Parse `Retry-After` (delta seconds or an HTTP date) into seconds from now, or None.

    `now_wall` is the current epoch time, used only for the HTTP-date form.
    """
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        seconds = when.timestamp() - now_wall
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def poll_hint(headers: Mapping[str, str], now_wall: float) -> float | None:
    """The server's "ask again in" hint: `X-Poll-After-Ms` (precise) before `Retry-After`."""
    millis = headers.get("x-poll-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    return parse_retry_after(headers.get("retry-after"), now_wall)


def clamp_to_deadline(delay: float, now: float, deadline: float | None) -> float:
    """Never sleep past the deadline, never sleep a negative time."""
    if deadline is not None:
        delay = min(delay, deadline - now)
    return max(0.0, delay)


def next_delay(
    policy: PollPolicy,
    *,
    attempt: int,
    rand: Random,
    now: float,
    deadline: float | None,
    retry_after: float | None = None,
    hint: float | None = None,
) -> float:
    """The delay before the next request, by the precedence in the module docstring.

    `attempt` counts the consecutive failures (or unchanged polls) so far, from 0.
    """
    if retry_after is not None:
        delay = retry_after
    elif hint is not None:
        delay = min(hint, policy.hint_cap_s)
    else:
        delay = policy.backoff.delay(attempt, rand)
    return clamp_to_deadline(delay, now, deadline)
