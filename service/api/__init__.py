"""HTTP handlers, grouped by audience. `setup(app)` adds every route."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import AUTH, SETTINGS
from ..auth import Throttle
from . import admin, clock, compat, jobs, keys, media, meta, stream
from ._gate import GATE, Gate


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[GATE] = Gate(settings.max_connections)
    auth = app[AUTH]
    auth.throttle = Throttle(settings.auth_failures, settings.auth_window_s, auth.clock)
    jobs.setup(app)
    admin.setup(app)
    keys.setup(app)
    stream.setup(app)
    compat.setup(app)
    meta.setup(app)
    clock.setup(app)
    media.setup(app)
