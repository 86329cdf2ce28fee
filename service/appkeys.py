"""Typed keys for what the application holds (aiohttp AppKey)."""

from __future__ import annotations

import random
import weakref

from aiohttp import web

from .auth import AUTH
from .hub import Hub
from .jobs import JobService
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", JobService)
SCHEDULER = web.AppKey("scheduler", Scheduler)
HUB = web.AppKey("hub", Hub)
METRICS = web.AppKey("metrics", Metrics)
FAULTS = web.AppKey("faults", random.Random)
__all__ = ["AUTH", "FAULTS", "HUB", "METRICS", "SCHEDULER", "SERVICE", "SETTINGS", "SOCKETS"]

SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.StreamResponse])
