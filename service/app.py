"""create_app(settings) -> web.Application: wiring only."""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from . import api
from .api import heygen_v2, heygen_v3
from .api._http import http_middleware
from .api.stream import close_streams
from .appkeys import AUTH, FAULTS, HUB, METRICS, SCHEDULER, SERVICE, SETTINGS, SOCKETS
from .auth import Auth
from .hub import Hub
from .jobs import JobService
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import Settings
from .store import store_from_settings

MAX_BODY = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    """Build the application; the store opens and the workers start when it starts."""
    if not settings.admin_token:
        raise ValueError("settings.admin_token is required (python -m service makes one)")
    hub = Hub(buffer_size=settings.event_buffer, queue_limit=settings.subscriber_queue)
    service = JobService(store_from_settings(settings), hub, settings.config)
    scheduler = Scheduler(service, settings.seed, lease_s=settings.lease_s)
    metrics = Metrics(service, hub)

    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[http_middleware(metrics.latency.observe)]
    )
    app[SETTINGS] = settings
    app[HUB] = hub
    app[SERVICE] = service
    app[SCHEDULER] = scheduler
    app[METRICS] = metrics
    app[AUTH] = Auth(settings.admin_token)
    app[FAULTS] = random.Random(settings.seed)
    app[SOCKETS] = weakref.WeakSet()
    api.setup(app)
    for facade in (heygen_v2, heygen_v3):  # the HeyGen-compatible API: docs/heygen.md
        facade.setup(app)
    app.cleanup_ctx.append(_run_service)
    app.on_shutdown.append(close_streams)
    return app


async def _run_service(app: web.Application) -> AsyncIterator[None]:
    service, scheduler = app[SERVICE], app[SCHEDULER]
    await service.open()
    scheduler.start()
    yield
    await scheduler.stop()
    await service.store.close()
