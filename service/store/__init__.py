"""Durable state behind JobService. `open_store(settings)` picks the backend."""

from __future__ import annotations

from .base import Loaded, Store, StoredJob
from .sqlite import SQLiteStore

__all__ = ["Loaded", "SQLiteStore", "Store", "StoredJob"]
