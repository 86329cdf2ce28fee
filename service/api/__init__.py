"""HTTP handlers, grouped by audience. `setup(app)` adds every route."""

from __future__ import annotations

from aiohttp import web

from . import admin, compat, jobs, meta, stream


def setup(app: web.Application) -> None:
    jobs.setup(app)
    admin.setup(app)
    stream.setup(app)
    compat.setup(app)
    meta.setup(app)
