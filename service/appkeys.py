"""Typed keys for what the application holds (aiohttp AppKey)."""

from __future__ import annotations

import random
import weakref

from aiohttp import web

from .auth import AUTH
from .clock import RealClock, VirtualClock
from .hub import Hub
from .jobs import JobService
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import Settings

SETTINGS = web.AppKey("settings", Settings)
SERVICE = web.AppKey("service", JobService)
SCHEDULER = web.AppKey("scheduler", Scheduler)
HUB = web.AppKey("hub", Hub)
CLOCK: web.AppKey[RealClock | VirtualClock] = web.AppKey("clock")
METRICS = web.AppKey("metrics", Metrics)
FAULTS = web.AppKey("faults", random.Random)
__all__ = [
    "AUTH",
    "CLOCK",
    "FAULTS",
    "HUB",
    "METRICS",
    "SCHEDULER",
    "SERVICE",
    "SETTINGS",
    "SOCKETS",
]

SOCKETS = web.AppKey("sockets", weakref.WeakSet[web.StreamResponse])
