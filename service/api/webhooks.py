"""Webhook endpoints: register, list, change, delete, rotate the secret, deliveries, replay.

A user manages their own endpoints (another user's is a 404); the admin sees every one and
the endpoints it makes (owner `*`) receive every user's jobs. docs/webhooks.md.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web
from msgspec import Meta

from ..appkeys import AUTH
from ..auth import user_id
from ..errors import Forbidden, ValidationFailed
from ..models import iso_ms
from ..webhooks import ADMIN_OWNER, WEBHOOKS, Delivery, EndpointView, created_view, view
from ._http import json_response, read_json

Url = Annotated[str, Meta(min_length=1, max_length=2048)]
EventName = Annotated[str, Meta(min_length=1, max_length=64)]
Events = Annotated[list[EventName], Meta(max_length=20)]
Description = Annotated[str, Meta(max_length=500)]
MAX_LIMIT: Final = 1000
DELIVERY_STATUSES: Final = ("pending", "succeeded", "failed")


class CreateWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: Url
    events: Events | None = None
    description: Description = ""


class PatchWebhook(msgspec.Struct, forbid_unknown_fields=True):
    url: Url | None = None
    events: Events | None = None
    description: Description | None = None
    status: Literal["enabled", "disabled"] | None = None


class ReplayRequest(msgspec.Struct, forbid_unknown_fields=True):
    since: Annotated[int, Meta(ge=0)] | Annotated[str, Meta(max_length=64)]


class WebhookList(msgspec.Struct):
    webhooks: list[EndpointView]


class Rotated(msgspec.Struct):
    secret: str
    previous_secret_expires_at: str


class Deliveries(msgspec.Struct):
    deliveries: list[Delivery]


class Replayed(msgspec.Struct):
    queued: int


class CallbackSecret(msgspec.Struct):
    secret: str


def _who(request: web.Request) -> tuple[str, str | None]:
    """(owner for what this caller creates, owner filter for what it may see: None = all)."""
    if request.app[AUTH].is_admin(request):
        return ADMIN_OWNER, None
    me = user_id(request)
    if me == ADMIN_OWNER:  # "*" names the admin's endpoints: no user may call itself that
        raise Forbidden(f"user id {ADMIN_OWNER!r} is reserved for the admin's webhooks")
    return me, me


async def create(request: web.Request) -> web.Response:
    """POST /v1/webhooks"""
    body = await read_json(request, CreateWebhook)
    owner, _ = _who(request)
    endpoint = await request.app[WEBHOOKS].register(
        body.url, owner=owner, events=body.events, description=body.description
    )
    headers = {"Location": f"/v1/webhooks/{endpoint.id}"}
    return json_response(created_view(endpoint), 201, headers)


async def list_webhooks(request: web.Request) -> web.Response:
    """GET /v1/webhooks"""
    _, scope = _who(request)
    found = await request.app[WEBHOOKS].endpoints(scope)
    return json_response(WebhookList([view(e) for e in found]))


async def get_webhook(request: web.Request) -> web.Response:
    """GET /v1/webhooks/{id}"""
    _, scope = _who(request)
    endpoint = await request.app[WEBHOOKS].endpoint(request.match_info["id"], scope)
    return json_response(view(endpoint))


async def patch_webhook(request: web.Request) -> web.Response:
    """PATCH /v1/webhooks/{id}"""
    body = await read_json(request, PatchWebhook)
    _, scope = _who(request)
    endpoint = await request.app[WEBHOOKS].update(
        request.match_info["id"],
        scope,
        url=body.url,
        events=body.events,
        description=body.description,
        status=body.status,
    )
    return json_response(view(endpoint))


async def delete_webhook(request: web.Request) -> web.Response:
    """DELETE /v1/webhooks/{id}"""
    _, scope = _who(request)
    await request.app[WEBHOOKS].delete(request.match_info["id"], scope)
    return web.Response(status=204)


async def rotate(request: web.Request) -> web.Response:
    """POST /v1/webhooks/{id}/rotate-secret"""
    _, scope = _who(request)
    secret, expires = await request.app[WEBHOOKS].rotate(request.match_info["id"], scope)
    return json_response(Rotated(secret, iso_ms(expires)))


async def deliveries(request: web.Request) -> web.Response:
    """GET /v1/webhooks/{id}/deliveries?limit=&status="""
    _, scope = _who(request)
    raw = request.query.get("limit", "50")
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise ValidationFailed(f"limit must be an integer in [1, {MAX_LIMIT}]", field="limit")
    status = request.query.get("status")
    if status is not None and status not in DELIVERY_STATUSES:
        raise ValidationFailed(
            f"status must be one of {', '.join(DELIVERY_STATUSES)}", field="status"
        )
    found = await request.app[WEBHOOKS].deliveries(
        request.match_info["id"], scope, limit=int(raw), status=status
    )
    return json_response(Deliveries(found))


async def redeliver(request: web.Request) -> web.Response:
    """POST /v1/webhooks/{id}/deliveries/{delivery_id}/redeliver"""
    _, scope = _who(request)
    delivery = await request.app[WEBHOOKS].redeliver(
        request.match_info["id"], scope, request.match_info["delivery_id"]
    )
    return json_response(delivery, 202)


async def replay(request: web.Request) -> web.Response:
    """POST /v1/webhooks/{id}/replay"""
    body = await read_json(request, ReplayRequest)
    _, scope = _who(request)
    queued = await request.app[WEBHOOKS].replay(request.match_info["id"], scope, body.since)
    return json_response(Replayed(queued), 202)


async def callback_secret(request: web.Request) -> web.Response:
    """GET /v1/webhooks/callback-secret: what signs this user's jobs' callback_url POSTs."""
    owner, _ = _who(request)
    return json_response(CallbackSecret(request.app[WEBHOOKS].lane_secret(owner)))


def setup(app: web.Application) -> None:
    app.router.add_get("/v1/webhooks/callback-secret", callback_secret)
    app.router.add_post("/v1/webhooks", create)
    app.router.add_get("/v1/webhooks", list_webhooks)
    app.router.add_get("/v1/webhooks/{id}", get_webhook)
    app.router.add_patch("/v1/webhooks/{id}", patch_webhook)
    app.router.add_delete("/v1/webhooks/{id}", delete_webhook)
    app.router.add_post("/v1/webhooks/{id}/rotate-secret", rotate)
    app.router.add_get("/v1/webhooks/{id}/deliveries", deliveries)
    app.router.add_post("/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver", redeliver)
    app.router.add_post("/v1/webhooks/{id}/replay", replay)
