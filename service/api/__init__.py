"""HTTP handlers, grouped by audience. `setup(app)` adds every route."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import AUTH, SETTINGS
from ..auth import Throttle
from . import admin, compat, jobs, media, meta, stream
from ._gate import GATE, Gate


def setup(app: web.Application) -> None:
    settings = app[SETTINGS]
    app[GATE] = Gate(settings.max_connections)
    app[AUTH].throttle = Throttle(settings.auth_failures, settings.auth_window_s)
    jobs.setup(app)
    admin.setup(app)
    stream.setup(app)
    compat.setup(app)
    meta.setup(app)
    media.setup(app)
