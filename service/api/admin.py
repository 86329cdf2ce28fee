"""Admin routes: cancel, retry, manual processing, cleanup, config, and the dashboard session."""

from __future__ import annotations

from aiohttp import web

from ..appkeys import AUTH, SERVICE
from ..auth import COOKIE, SESSION_TTL_S, admin_only
from ..errors import Unauthorized
from ..models import (
    CancelRequest,
    CleanupRequest,
    CleanupResult,
    ProcessRequest,
    SessionRequest,
    SessionState,
)
from ..settings import ConfigPatch
from ._http import json_response, read_json


@admin_only
async def cancel(request: web.Request) -> web.Response:
    """POST /v1/jobs/{id}/cancel"""
    body = await read_json(request, CancelRequest)
    service = request.app[SERVICE]
    await service.fetch(request.match_info["id"])
    record = await service.cancel(request.match_info["id"], body.reason)
    return json_response(record.data)


@admin_only
async def retry(request: web.Request) -> web.Response:
    """POST /v1/jobs/{id}/retry"""
    service = request.app[SERVICE]
    await service.fetch(request.match_info["id"])
    record = await service.retry(request.match_info["id"])
    return json_response(record.data)


@admin_only
async def process(request: web.Request) -> web.Response:
    """POST /v1/process: start the next N queued jobs now, premium first."""
    body = await read_json(request, ProcessRequest)
    started = await request.app[SERVICE].process(body.count)
    return json_response(b'{"started":[' + b",".join(r.data for r in started) + b"]}")


@admin_only
async def cleanup(request: web.Request) -> web.Response:
    """POST /v1/cleanup: delete finished jobs."""
    body = await read_json(request, CleanupRequest)
    deleted = await request.app[SERVICE].cleanup(body.older_than_s)
    return json_response(CleanupResult(deleted))


async def get_config(request: web.Request) -> web.Response:
    """GET /v1/config"""
    return json_response(request.app[SERVICE].config)


@admin_only
async def patch_config(request: web.Request) -> web.Response:
    """PATCH /v1/config: validated as a whole before anything changes."""
    patch = await read_json(request, ConfigPatch)
    return json_response(await request.app[SERVICE].update_config(patch))


async def open_session(request: web.Request) -> web.Response:
    """POST /v1/session {"token"}: exchange the admin token for a cookie."""
    body = await read_json(request, SessionRequest)
    auth = request.app[AUTH]
    if not auth.attempt(request, body.token):  # throttled per address, like a Bearer
        raise Unauthorized("wrong admin token")
    response = web.Response(status=204)
    response.set_cookie(
        COOKIE,
        auth.open_session(),
        max_age=SESSION_TTL_S,
        path="/",
        httponly=True,
        samesite="Strict",
        secure=request.secure,
    )
    return response


async def session_state(request: web.Request) -> web.Response:
    """GET /v1/session: how the dashboard asks "am I logged in?". A stale cookie is the
    question's answer (no), not an error; the answer drops it from the browser."""
    auth = request.app[AUTH]
    if auth.stale_cookie(request) and "Authorization" not in request.headers:
        response = json_response(SessionState(admin=False))
        response.del_cookie(COOKIE, path="/")
        return response
    return json_response(SessionState(admin=auth.is_admin(request)))


async def close_session(request: web.Request) -> web.Response:
    """DELETE /v1/session: log out."""
    sid = request.cookies.get(COOKIE)
    if sid is not None:
        await request.app[AUTH].close_session(sid)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/jobs/{id}/cancel", cancel)
    app.router.add_post("/v1/jobs/{id}/retry", retry)
    app.router.add_post("/v1/process", process)
    app.router.add_post("/v1/cleanup", cleanup)
    app.router.add_get("/v1/config", get_config)
    app.router.add_patch("/v1/config", patch_config)
    app.router.add_post("/v1/session", open_session)
    app.router.add_get("/v1/session", session_state)
    app.router.add_delete("/v1/session", close_session)
