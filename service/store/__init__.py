"""Durable state behind JobService. `store_from_settings(settings)` picks the backend."""

from __future__ import annotations

import time
from collections.abc import Callable

from ..settings import Settings
from .base import (
    CapReached,
    Change,
    Committed,
    DuplicateSubmission,
    Loaded,
    Store,
    StoredJob,
    StoreUnavailable,
    VersionConflict,
)
from .sqlite import SQLiteStore

__all__ = [
    "CapReached",
    "Change",
    "Committed",
    "DuplicateSubmission",
    "Loaded",
    "SQLiteStore",
    "Store",
    "StoreUnavailable",
    "StoredJob",
    "VersionConflict",
    "store_from_settings",
]


def store_from_settings(settings: Settings, now: Callable[[], float] = time.time) -> Store:
    """Redis when REDIS_URL is set (several processes, one service); else the SQLite file.
    `now` is the service's clock (SQLite keeps rate windows in its time)."""
    if settings.redis_url:
        from .redis import RedisStore  # imported lazily: redis is only needed for this backend

        return RedisStore(
            settings.redis_url,
            event_buffer=settings.event_buffer,
            expire_windows=settings.clock == "real",
        )
    return SQLiteStore(settings.db, event_buffer=settings.event_buffer, now=now)
