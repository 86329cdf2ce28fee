"""create_app(settings) -> web.Application: wiring only."""

from __future__ import annotations

import random
import weakref
from collections.abc import AsyncIterator

from aiohttp import web

from . import api
from .api import heygen_v2, heygen_v3, heygen_webhooks
from .api import webhooks as webhooks_api
from .api._http import http_middleware
from .api.media import MEDIA
from .api.stream import close_streams
from .appkeys import AUTH, CLOCK, FAULTS, HUB, METRICS, SCHEDULER, SERVICE, SETTINGS, SOCKETS
from .auth import Auth
from .clock import RealClock, VirtualClock
from .hub import Hub
from .jobs import JobService
from .keys import KEYS, KeyRing
from .links import Links
from .media import Media
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import Settings
from .store import store_from_settings
from .webhooks import WEBHOOKS, WebhookService, parse_schedule

MAX_BODY = 64 * 1024


def create_app(settings: Settings) -> web.Application:
    """Build the application; the store opens and the workers start when it starts."""
    if not settings.admin_token:
        raise ValueError("settings.admin_token is required (python -m service makes one)")
    hub = Hub(buffer_size=settings.event_buffer, queue_limit=settings.subscriber_queue)
    start = settings.clock_start.timestamp() if settings.clock_start is not None else None
    clock = VirtualClock(start) if settings.clock == "virtual" else RealClock()
    store = store_from_settings(settings, clock.now)
    service = JobService(store, hub, settings.config, clock=clock)
    scheduler = Scheduler(service, settings.seed, lease_s=settings.lease_s)
    webhooks = WebhookService(
        service.store,
        hub,
        lambda: service.clock,
        timeout_s=settings.webhook_timeout_s,
        schedule=parse_schedule(settings.webhook_retry_schedule),
        secret_grace_s=settings.webhook_secret_grace_s,
        allow_private=settings.webhook_allow_private,
        log_size=settings.webhook_log,
        queue_size=settings.webhook_queue,
        lease_s=settings.lease_s,
        seed=settings.seed,
    )
    service.prepare_callback = webhooks.prepare_callback
    metrics = Metrics(service, hub)
    media = Media(settings, service, Links(settings.admin_token))
    service.prepare = media.prepare  # a job with a video is a media job (docs/media.md)
    service.result_link = media.result_url
    scheduler.runner = media
    metrics.add(webhooks.collector())

    app = web.Application(
        client_max_size=MAX_BODY, middlewares=[http_middleware(metrics.latency.observe)]
    )
    app[SETTINGS] = settings
    app[HUB] = hub
    app[SERVICE] = service
    app[SCHEDULER] = scheduler
    app[METRICS] = metrics
    app[MEDIA] = media
    app[AUTH] = Auth(settings.admin_token, store=service.store, clock=clock.now)
    app[CLOCK] = clock
    app[KEYS] = KeyRing(service.store, cache_s=settings.key_cache_s)
    app[FAULTS] = random.Random(settings.seed)
    app[SOCKETS] = weakref.WeakSet()
    app[WEBHOOKS] = webhooks
    api.setup(app)
    webhooks_api.setup(app)
    # the HeyGen-compatible API: docs/heygen.md
    for facade in (heygen_v2, heygen_v3, heygen_webhooks):
        facade.setup(app)
    app.cleanup_ctx.append(_run_service)
    app.on_shutdown.append(close_streams)
    return app


async def _run_service(app: web.Application) -> AsyncIterator[None]:
    service, scheduler, clock = app[SERVICE], app[SCHEDULER], app[CLOCK]
    # a virtual clock adopts the stored time (shared by every process) before jobs load
    await service.open(clock.attach if isinstance(clock, VirtualClock) else None)
    if isinstance(clock, VirtualClock):
        clock.start()
    await app[WEBHOOKS].start()
    scheduler.start()
    yield
    await scheduler.stop()
    await app[WEBHOOKS].stop()
    if isinstance(clock, VirtualClock):
        await clock.stop()
    await service.store.close()
