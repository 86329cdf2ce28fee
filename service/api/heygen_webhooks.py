"""HeyGen's webhooks, v3: `/v3/webhooks/...`, on dubsim's webhook machinery.

    POST   /v3/webhooks/endpoints                     {url, events?, entity_id?} -> secret once
    GET    /v3/webhooks/endpoints                     ?limit=&token=
    PATCH  /v3/webhooks/endpoints/{id}                {url?, events?}
    DELETE /v3/webhooks/endpoints/{id}
    POST   /v3/webhooks/endpoints/{id}/rotate-secret  -> {endpoint_id, secret}
    GET    /v3/webhooks/event-types
    GET    /v3/webhooks/events                        ?event_type=&entity_id=&limit=&token=

There is no second delivery engine. A HeyGen endpoint IS a `service/webhooks/` endpoint
(owner: the caller's user id) whose transformer turns a committed terminal event of one of that
user's facade jobs into HeyGen's body, and skips everything else (plain /v1 jobs, other event
types): so it is signed (Standard Webhooks), retried, logged, leased and durable exactly like a
/v1 endpoint, and shows in that user's `/v1/webhooks` with its delivery log. Which HeyGen events
it wants is which transformer it has (`heygen:` + one bit per event, all 16 registered at start);
the event list as the caller gave it (HeyGen has more types than dubsim sends) is kept in its
description. A job's `callback_url` goes through the user's `heygen` lane, unsigned, as HeyGen
sends callbacks; the default callbacks lane leaves facade jobs to it (`lane_claims`).

The events list is read from the jobs themselves: each finished facade job of the caller is one
event (its outcome is final), so nothing new is recorded and the list lasts as long as the jobs
(JOB_TTL_S); links in it are made afresh per read, like the status routes'.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Final, Literal

import msgspec
from aiohttp import web

from ..appkeys import SERVICE
from ..auth import ascii_digits
from ..hub import Published
from ..jobs import Record
from ..models import Job, Status
from ..webhooks import DEFAULT_EVENTS, TERMINAL_EVENTS, WEBHOOKS, Endpoint, Transformer
from ._heygen import (
    EVENT_NAMES,
    FACADE,
    HEYGEN_EVENTS,
    TRANSLATION,
    Call,
    Facade,
    HeyGenError,
    install,
    invalid,
    job_failure_message,
    language_of,
    parse_tag,
    refuse_the_rest,
    route,
    transform_name,
)
from ._http import json_response, read_json

V3: Final = "v3"
MAX_PAGE: Final = 100
PREFIX: Final = "heygen:"
DESCRIBED: Final = "heygen events: "  # the endpoint's description: the events as given

# HeyGen's event types (WebhookEventType); dubsim sends only HEYGEN_EVENTS of them
HeyGenEventType = Literal[
    "avatar_video.success",
    "avatar_video.fail",
    "avatar_video_gif.success",
    "avatar_video_gif.fail",
    "video_translate.success",
    "video_translate.fail",
    "personalized_video",
    "instant_avatar.success",
    "instant_avatar.fail",
    "photo_avatar_generation.success",
    "photo_avatar_generation.fail",
    "photo_avatar_train.success",
    "photo_avatar_train.fail",
    "photo_avatar_add_motion.success",
    "photo_avatar_add_motion.fail",
    "proofread_creation.success",
    "proofread_creation.fail",
    "live_avatar.success",
    "live_avatar.fail",
    "avatar_video_caption.success",
    "avatar_video_caption.fail",
    "video_agent.success",
    "video_agent.fail",
]
ALL_TYPES: Final = frozenset(HeyGenEventType.__args__)  # type: ignore[attr-defined]
DESCRIPTIONS: Final[dict[str, str]] = {
    "video_translate.success": "A video translation completed; event_data.url downloads it.",
    "video_translate.fail": "A video translation failed; event_data.message says why.",
    "proofread_creation.success": "A proofread is ready; event_data.url is its SRT.",
    "proofread_creation.fail": "A proofread failed; event_data.message says why.",
}

Url = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]
Events = Annotated[list[HeyGenEventType], msgspec.Meta(min_length=1, max_length=len(ALL_TYPES))]


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """CreateWebhookEndpointRequest."""

    url: Url
    events: Events | None = None
    entity_id: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class UpdateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """UpdateWebhookEndpointRequest: `events` is replaced as a whole."""

    url: Url | None = None
    events: Events | None = None


# ---- the events ---------------------------------------------------------------------------


def event_of(
    job: Job, kind: str, link: Callable[[str, str], str]
) -> tuple[str, dict[str, Any]] | None:
    """(HeyGen event type, event_data) of a finished facade job; None while it runs."""
    if job.status is Status.COMPLETED:
        succeeded = True
    elif job.status in (Status.PERMANENTLY_FAILED, Status.CANCELLED):
        succeeded = False
    else:
        return None
    name = language_of(job.target_language)
    data: dict[str, Any]
    if kind == TRANSLATION:
        data = {"video_translate_id": job.id}
        if succeeded:
            data["url"] = link(job.id, "result")
        data["callback_id"] = job.callback_id
    else:
        data = {"proofread_id": job.id}
        if succeeded:
            data["url"] = link(job.id, "captions.srt")
    data["output_language"] = name
    if not succeeded:
        data["message"] = job_failure_message(job)
    return EVENT_NAMES[(kind, succeeded)], data


_job_decoder = msgspec.json.Decoder(Job)


def transformer(facade: Facade, wanted: frozenset[str]) -> Transformer:
    """A committed event -> HeyGen's body, for facade jobs' terminal events in `wanted`."""

    def transform(pub: Published) -> bytes | None:
        if pub.type not in TERMINAL_EVENTS:
            return None
        record = facade.service.find(pub.job_id)
        tagged = None if record is None else parse_tag(record)
        if tagged is None:
            return None  # a plain /v1 job (or one already gone): not HeyGen's to send
        found = event_of(_job_decoder.decode(pub.job_bytes), tagged[0], facade.public_link)
        if found is None or found[0] not in wanted:
            return None
        return msgspec.json.encode({"event_type": found[0], "event_data": found[1]})

    return transform


def claims(facade: Facade) -> Callable[[Published], bool]:
    """The default callbacks lane leaves facade jobs to the HeyGen lane."""

    def claim(pub: Published) -> bool:
        record = facade.service.find(pub.job_id)
        return record is not None and parse_tag(record) is not None

    return claim


# ---- endpoints ------------------------------------------------------------------------------


# the dubsim events a HeyGen event comes from: it is sent only if the endpoint takes them all
_FROM: Final[dict[str, tuple[str, ...]]] = {
    "video_translate.success": ("job.completed",),
    "proofread_creation.success": ("job.completed",),
    "video_translate.fail": ("job.permanently_failed", "job.cancelled"),
    "proofread_creation.fail": ("job.permanently_failed", "job.cancelled"),
}


def _sent(endpoint: Endpoint) -> list[str]:
    """The HeyGen events this endpoint is sent: its transformer's, of those the dubsim events
    it takes let through (a user may change those, and its description, through /v1)."""
    bits = (endpoint.transform or "").removeprefix(PREFIX)
    return [
        e
        for e, bit in zip(HEYGEN_EVENTS, bits, strict=False)
        if bit == "1" and all(endpoint.wants(t) for t in _FROM[e])
    ]


def _events_of(endpoint: Endpoint) -> list[str] | None:
    """The events as the caller gave them (kept in the description), while they still say
    what it is sent; else (edited through /v1) what it is sent. None: all of them."""
    sent = _sent(endpoint)
    listed = endpoint.description.removeprefix(DESCRIBED)
    if endpoint.description.startswith(DESCRIBED):
        if listed == "*":
            if len(sent) == len(HEYGEN_EVENTS):
                return None
        else:
            given = [e for e in listed.split(",") if e]
            if set(given) <= ALL_TYPES and [e for e in HEYGEN_EVENTS if e in given] == sent:
                return given
    return sent


def _described(events: Sequence[str] | None) -> str:
    return DESCRIBED + ("*" if events is None else ",".join(dict.fromkeys(events)))


def _transform_for(events: Sequence[str] | None) -> str:
    return transform_name(frozenset(HEYGEN_EVENTS if events is None else events))


def view(endpoint: Endpoint, secret: str | None = None) -> dict[str, Any]:
    """WebhookEndpointResponse."""
    return {
        "endpoint_id": endpoint.id,
        "url": endpoint.url,
        "status": endpoint.status,
        "created_at": endpoint.created_at,
        "events": _events_of(endpoint),
        "secret": secret,
    }


async def _mine(request: web.Request, call: Call) -> Endpoint:
    """The caller's HeyGen endpoint named in the path; anything else (another user's, a /v1
    endpoint, a lane) is 404."""
    endpoint_id = request.match_info["id"]
    endpoint = await request.app[WEBHOOKS].endpoint(endpoint_id, call.caller.user_id)
    if not (endpoint.transform or "").startswith(PREFIX):
        raise HeyGenError(404, "not_found", "no webhook endpoint with this id")
    return endpoint


async def create(request: web.Request, call: Call) -> web.Response:
    """POST /v3/webhooks/endpoints -> data (with `secret`, shown only here and on rotate)"""
    body = await read_json(request, CreateRequest, lenient_type=True)
    if body.entity_id is not None:
        raise invalid("entity_id scoping is not supported by dubsim; omit it", "entity_id")
    endpoint = await request.app[WEBHOOKS].register(
        body.url,
        owner=call.caller.user_id,
        events=list(DEFAULT_EVENTS),
        description=_described(body.events),
        transform=_transform_for(body.events),
        signed=True,
    )
    return json_response({"data": view(endpoint, endpoint.secret)})


async def list_endpoints(request: web.Request, call: Call) -> web.Response:
    """GET /v3/webhooks/endpoints?limit=&token= : oldest first."""
    limit = _limit(request)
    token = request.query.get("token")
    found = [
        e
        for e in await request.app[WEBHOOKS].endpoints(call.caller.user_id)
        if (e.transform or "").startswith(PREFIX)
    ]
    found.sort(key=lambda e: (e.created_at, e.id))
    if token is not None:
        at = next((i for i, e in enumerate(found) if e.id == token), None)
        if at is None:
            raise invalid("token is not one this API gave out (or its endpoint is gone)", "token")
        found = found[at + 1 :]
    page, has_more = found[:limit], len(found) > limit
    return json_response(
        {
            "data": [view(e) for e in page],
            "has_more": has_more,
            "next_token": page[-1].id if has_more else None,
        }
    )


async def update(request: web.Request, call: Call) -> web.Response:
    """PATCH /v3/webhooks/endpoints/{id} {url?, events?}"""
    await request.read()  # the body arrives before the turn is taken
    async with _turn(request):  # requests at once on one endpoint: each in turn
        endpoint = await _mine(request, call)
        body = await read_json(request, UpdateRequest, lenient_type=True)
        if body.url is None and body.events is None:
            raise invalid("send url or events (or both)", "url")
        changed = await request.app[WEBHOOKS].update(
            endpoint.id,
            call.caller.user_id,
            url=body.url,
            # events: the dubsim events every HeyGen one comes from (a /v1 edit may have narrowed)
            events=None if body.events is None else list(DEFAULT_EVENTS),
            description=None if body.events is None else _described(body.events),
            transform=None if body.events is None else _transform_for(body.events),
        )
    return json_response({"data": view(changed)})


async def delete(request: web.Request, call: Call) -> web.Response:
    """DELETE /v3/webhooks/endpoints/{id}"""
    async with _turn(request):  # of DELETEs at once one finds it, the others 404
        endpoint = await _mine(request, call)
        await request.app[WEBHOOKS].delete(endpoint.id, call.caller.user_id)
    return json_response({"error": None, "data": {"endpoint_id": endpoint.id}})


async def rotate(request: web.Request, call: Call) -> web.Response:
    """POST /v3/webhooks/endpoints/{id}/rotate-secret -> {endpoint_id, secret}"""
    async with _turn(request):
        endpoint = await _mine(request, call)
        secret, _ = await request.app[WEBHOOKS].rotate(endpoint.id, call.caller.user_id)
    return json_response({"data": {"endpoint_id": endpoint.id, "secret": secret}})


def _turn(request: web.Request) -> contextlib.AbstractAsyncContextManager[None]:
    return request.app[FACADE].turn("endpoint/" + request.match_info["id"])


async def event_types(request: web.Request, call: Call) -> web.Response:
    """GET /v3/webhooks/event-types: the ones dubsim sends."""
    items = [{"event_type": e, "description": DESCRIPTIONS[e]} for e in HEYGEN_EVENTS]
    return json_response({"data": items, "has_more": False, "next_token": None})


async def events(request: web.Request, call: Call) -> web.Response:
    """GET /v3/webhooks/events?event_type=&entity_id=&limit=&token= : newest job first."""
    limit = _limit(request)
    wanted = request.query.get("event_type")
    if wanted is not None and wanted not in ALL_TYPES:
        raise invalid("event_type is not a HeyGen webhook event type", "event_type")
    entity = request.query.get("entity_id")
    token = request.query.get("token")
    before = None
    if token is not None:
        if not (ascii_digits(token) and len(token) <= 18):
            raise invalid("token is not one this API gave out", "token")
        before = int(token)
    facade = request.app[FACADE]

    def link(job_id: str, artifact: str) -> str:
        return facade.link(request, job_id, artifact)

    page: list[tuple[Record, dict[str, Any]]] = []
    has_more = False
    for record in request.app[SERVICE].select(user=call.caller.user_id, before=before):
        if entity is not None and record.job.id != entity:
            continue
        tagged = parse_tag(record)
        found = None if tagged is None else event_of(record.job, tagged[0], link)
        if found is None or (wanted is not None and found[0] != wanted):
            continue
        if len(page) == limit:
            has_more = True
            break
        event_type, data = found
        page.append(
            (
                record,
                {
                    "event_id": event_id(record.job.id, event_type),
                    "event_type": event_type,
                    "event_data": data,
                    "created_at": record.job.finished_at or record.job.created_at,
                },
            )
        )
    return json_response(
        {
            "data": [item for _, item in page],
            "has_more": has_more,
            "next_token": str(page[-1][0].ordinal) if has_more else None,
        }
    )


def event_id(job_id: str, event_type: str) -> str:
    """One id per (job, outcome): a job ends once, so its event is one event."""
    return "evt_" + hashlib.sha256(f"{job_id}/{event_type}".encode()).hexdigest()[:24]


def _limit(request: web.Request) -> int:
    raw = request.query.get("limit", "10")
    if not (ascii_digits(raw) and len(raw) <= 6) or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid(f"limit must be an integer in [1, {MAX_PAGE}]", "limit")
    return int(raw)


def setup(app: web.Application) -> None:
    facade = install(app)
    webhooks = app[WEBHOOKS]
    for mask in range(1 << len(HEYGEN_EVENTS)):
        chosen = frozenset(e for i, e in enumerate(HEYGEN_EVENTS) if mask >> i & 1)
        webhooks.transformers[transform_name(chosen)] = transformer(facade, chosen)
    webhooks.lane_claims.append(claims(facade))
    r, base = app.router, "/v3/webhooks"
    r.add_post(f"{base}/endpoints", route(V3)(create))
    r.add_get(f"{base}/endpoints", route(V3)(list_endpoints))
    r.add_patch(f"{base}/endpoints/{{id}}", route(V3)(update))
    r.add_delete(f"{base}/endpoints/{{id}}", route(V3)(delete))
    r.add_post(f"{base}/endpoints/{{id}}/rotate-secret", route(V3)(rotate))
    r.add_get(f"{base}/event-types", route(V3)(event_types))
    r.add_get(f"{base}/events", route(V3)(events))
    # the last of the facade (service/app.py): the rest of /v3 is no route of it
    refuse_the_rest(app, V3, base, "/v3")
