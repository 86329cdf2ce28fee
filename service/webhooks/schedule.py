"""The retry schedule: WEBHOOK_RETRY_SCHEDULE's parsing and a receiver's Retry-After."""

from __future__ import annotations

import math
from email.utils import parsedate_to_datetime


def parse_schedule(text: str) -> list[float]:
    values = [float(part) for part in text.split(",") if part.strip()]
    if not values or any(math.isnan(v) or v < 0 for v in values):
        raise ValueError("a retry schedule is a comma-separated list of seconds")
    return values


def _retry_after(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        return min(float(value), 86_400.0)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return min(max(0.0, when.timestamp() - now), 86_400.0)
