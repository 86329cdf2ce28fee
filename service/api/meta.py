"""Health, metrics, the OpenAPI document, and the dashboard's static files."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Final

from aiohttp import web

from ..appkeys import HUB, METRICS, SERVICE
from ..errors import NotFound
from ..models import Health
from . import openapi
from ._http import json_response


def _web_dir() -> Path:
    """The dashboard's files: inside the package when installed from a wheel
    (dubsim/server/web/), beside the source tree in a clone or an editable install (web/)."""
    package = Path(__file__).resolve().parents[1]
    installed = package / "web"
    return installed if (installed / "index.html").is_file() else package.parent / "web"


WEB_DIR: Final = _web_dir()
STARTED = web.AppKey("started", float)
OPENAPI = web.AppKey("openapi", bytes)


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 while the store takes writes; 503 naming the cause while it doesn't."""
    app = request.app
    service = app[SERVICE]
    problem = service.store.health()
    uptime = round(time.time() - app[STARTED], 3)
    health = Health("ok" if problem is None else "unavailable", len(service), app[HUB].seq, uptime)
    if problem is None:
        return json_response(health)
    health.reason = problem
    return json_response(health, 503, {"Retry-After": "1"})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics"""
    body = request.app[METRICS].render()
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4"})


async def openapi_json(request: web.Request) -> web.Response:
    """GET /openapi.json"""
    return json_response(request.app[OPENAPI])


async def dashboard(request: web.Request) -> web.FileResponse:
    """GET /"""
    return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.FileResponse:
    """GET /static/{name}: the dashboard's files. They revalidate (cheap 304s), so an upgrade
    never mixes old and new ones; a handler of our own rather than a response signal, which
    would run on every response."""
    name = request.match_info["name"]
    if not name.isprintable():  # NUL would make resolve() raise; no file has such a name
        raise NotFound("no such file")
    path = (WEB_DIR / name).resolve()
    if not path.is_relative_to(WEB_DIR) or not path.is_file():
        raise NotFound("no such file")
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


def setup(app: web.Application) -> None:
    import msgspec

    app[STARTED] = time.time()
    app[OPENAPI] = msgspec.json.encode(openapi.build())
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/", dashboard)
    app.router.add_get("/static/{name:.+}", static_file)
