"""Key management (admin only): make, list and revoke API keys. See service/keys.py."""

from __future__ import annotations

from aiohttp import web

from ..auth import admin_only
from ..keys import KEYS, CreateKey, KeyList
from ._http import json_response, read_json


@admin_only
async def create_key(request: web.Request) -> web.Response:
    """POST /v1/keys {user_id, plan, name?} -> 201 with the key, shown this once."""
    body = await read_json(request, CreateKey)
    made = await request.app[KEYS].create(body)
    headers = {"Location": f"/v1/keys/{made.id}", "Cache-Control": "no-store"}
    return json_response(made, 201, headers)


@admin_only
async def list_keys(request: web.Request) -> web.Response:
    """GET /v1/keys: every live key, without secrets (a prefix recognises each)."""
    return json_response(KeyList(await request.app[KEYS].list()))


@admin_only
async def revoke_key(request: web.Request) -> web.Response:
    """DELETE /v1/keys/{id}: the key is refused from its next request on, on every process."""
    revoked = await request.app[KEYS].revoke(request.match_info["id"])
    return json_response(revoked)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/keys", create_key)
    app.router.add_get("/v1/keys", list_keys)
    app.router.add_delete("/v1/keys/{id}", revoke_key)
