"""OpenAPI 3.1 document, generated from the msgspec wire types and one table of routes."""

from __future__ import annotations

from typing import Any, NamedTuple

import msgspec

from ..keys import CreateKey, KeyInfo, KeyList, NewKey
from ..models import (
    Asset,
    CancelRequest,
    CleanupRequest,
    CleanupResult,
    ErrorBody,
    Event,
    Health,
    Job,
    JobPage,
    ProcessRequest,
    ProcessResult,
    SessionRequest,
    SessionState,
    SubmitRequest,
)
from ..settings import Config, ConfigPatch
from ..webhooks import EndpointCreated, EndpointView
from .clock import Advanced, AdvanceRequest, ClockState
from .webhooks import (
    CallbackSecret,
    CreateWebhook,
    Deliveries,
    PatchWebhook,
    Replayed,
    ReplayRequest,
    Rotated,
    WebhookList,
)


class Route(NamedTuple):
    method: str
    path: str
    summary: str
    body: type | None = None
    answer: type | None = None
    ok: int = 200
    errors: tuple[int, ...] = ()
    admin: bool = False
    params: tuple[tuple[str, str, dict[str, Any]], ...] = ()  # (name, in, schema)
    content_type: str = "application/json"
    legacy: bool = False  # errors use the old {"message", "status"} shape
    also_ok: int | None = None  # a second success status with the same body


_ID = (("id", "path", {"type": "string", "minLength": 1}),)
_USER = (("X-User-Id", "header", {"type": "string", "minLength": 1, "maxLength": 128}),)

ROUTES: tuple[Route, ...] = (
    Route(
        "post",
        "/v1/assets",
        "Upload an input video (raw body or multipart; checked by ffprobe)",
        None,
        Asset,
        201,
        (400, 413, 422, 507),
        params=_USER,
    ),
    Route("get", "/v1/assets/{id}", "Read an asset", None, Asset, 200, (404,), params=_ID),
    *(
        Route(
            "get",
            f"/v1/jobs/{{id}}/{artifact}",
            f"Download a completed job's {artifact} (signed link, or owner/admin)",
            None,
            None,
            200,
            (206, 304, 403, 404, 409, 410),
            params=(
                *_ID,
                ("expires", "query", {"type": "string"}),
                ("sig", "query", {"type": "string"}),
            ),
            content_type=content_type,
        )
        for artifact, content_type in (
            ("result", "video/mp4"),
            ("captions.srt", "application/x-subrip"),
            ("captions.vtt", "text/vtt"),
        )
    ),
    Route(
        "post",
        "/v1/jobs",
        "Submit a job",
        SubmitRequest,
        Job,
        201,
        (400, 413, 415, 422, 429),
        params=(
            *_USER,
            ("Idempotency-Key", "header", {"type": "string", "maxLength": 200}),
            # RFC 7240: answer once the job is terminal or after N s (Preference-Applied)
            ("Prefer", "header", {"type": "string", "examples": ["wait=30"]}),
        ),
        also_ok=200,  # an Idempotency-Key replay answers the existing job
    ),
    Route(
        "get",
        "/v1/jobs",
        "List jobs (own; admin: all)",
        None,
        JobPage,
        200,
        (400, 403, 422),
        params=(
            *_USER,
            ("status", "query", {"type": "string"}),
            ("role", "query", {"type": "string"}),
            ("user", "query", {"type": "string"}),
            ("limit", "query", {"type": "integer"}),
            ("cursor", "query", {"type": "string"}),
        ),
    ),
    Route(
        "get",
        "/v1/jobs/{id}",
        "Read a job (ETag, long poll with ?wait=)",
        None,
        Job,
        200,
        (304, 404, 408, 422, 500, 503),
        params=(
            *_ID,
            ("wait", "query", {"type": "number"}),
            ("until", "query", {"type": "string", "enum": ["change", "terminal"]}),
            ("If-None-Match", "header", {"type": "string"}),
        ),
    ),
    Route(
        "post",
        "/v1/jobs/{id}/cancel",
        "Cancel a job",
        CancelRequest,
        Job,
        200,
        (401, 404, 409, 413, 415, 422, 429),
        admin=True,
        params=_ID,
    ),
    Route(
        "post",
        "/v1/jobs/{id}/retry",
        "Requeue a permanently failed job",
        None,
        Job,
        200,
        (401, 404, 409, 429),
        admin=True,
        params=_ID,
    ),
    Route(
        "post",
        "/v1/process",
        "Start the next N queued jobs",
        ProcessRequest,
        ProcessResult,
        200,
        (401, 413, 415, 422, 429),
        admin=True,
    ),
    Route(
        "post",
        "/v1/cleanup",
        "Delete finished jobs",
        CleanupRequest,
        CleanupResult,
        200,
        (401, 413, 415, 422, 429),
        admin=True,
    ),
    Route("get", "/v1/config", "Runtime settings", None, Config),
    Route(
        "patch",
        "/v1/config",
        "Change runtime settings",
        ConfigPatch,
        Config,
        200,
        (401, 413, 415, 422, 429),
        admin=True,
    ),
    Route(
        "post",
        "/v1/session",
        "Exchange the admin token for a session cookie",
        SessionRequest,
        None,
        204,
        (401, 413, 415, 422, 429),
    ),
    Route("get", "/v1/session", "Is this session admin?", None, SessionState),
    Route(
        "post",
        "/v1/keys",
        "Make an API key (shown once)",
        CreateKey,
        NewKey,
        201,
        (401, 413, 415, 422, 429),
        admin=True,
    ),
    Route("get", "/v1/keys", "List API keys (no secrets)", None, KeyList, 200, (401,), admin=True),
    Route(
        "delete",
        "/v1/keys/{id}",
        "Revoke an API key, at once, everywhere",
        None,
        KeyInfo,
        200,
        (401, 404),
        admin=True,
        params=_ID,
    ),
    Route("delete", "/v1/session", "Log out", None, None, 204),
    Route(
        "get",
        "/v1/events",
        "Server-Sent Events stream (see docs/protocol.md)",
        None,
        Event,
        200,
        (400, 401, 404, 422, 503),
        content_type="text/event-stream",
    ),
    Route("get", "/v1/clock", "The service's clock: mode and now", None, ClockState),
    Route(
        "post",
        "/v1/clock/advance",
        "Move a virtual clock on (CLOCK=virtual; 409 on a real one)",
        AdvanceRequest,
        Advanced,
        200,
        (401, 409, 413, 415, 422, 429),
        admin=True,
    ),
    Route("get", "/healthz", "Liveness", None, Health),
    Route("get", "/metrics", "Prometheus metrics", None, None, content_type="text/plain"),
    Route("get", "/openapi.json", "This document", None, dict),
    Route("get", "/", "The dashboard", None, None, content_type="text/html"),
    Route(
        "get",
        "/v1/ws",
        "WebSocket upgrade (see docs/protocol.md)",
        None,
        None,
        101,
        (400,),
        content_type="application/octet-stream",
    ),
    # the seed-era routes: their bodies are the old free-form shapes (service/api/compat.py)
    Route(
        "post",
        "/translate",
        "Legacy submit",
        dict,
        dict,
        201,
        (400, 413, 429),
        legacy=True,
        params=_USER,
    ),
    Route("post", "/start", "Legacy submit (client B)", None, dict, 200, (429,), legacy=True),
    Route(
        "get",
        "/status/{id}",
        "Legacy status",
        None,
        dict,
        200,
        (404, 408, 500, 503),
        legacy=True,
        params=_ID,
    ),
    Route(
        "post",
        "/cancel/{id}",
        "Legacy cancel (admin)",
        dict,
        dict,
        200,
        (400, 401, 404, 413, 429),
        legacy=True,
        admin=True,
        params=_ID,
    ),
    Route(
        "get",
        "/jobs",
        "Legacy listing grouped by status and plan",
        None,
        dict,
        200,
        (401,),
        legacy=True,
        params=_USER,
    ),
    Route(
        "post",
        "/cleanup",
        "Legacy cleanup (admin)",
        None,
        dict,
        200,
        (401, 413, 429),
        legacy=True,
        admin=True,
    ),
    Route(
        "post",
        "/process",
        "Legacy: start the next job (admin)",
        None,
        dict,
        200,
        (204, 401, 429),
        legacy=True,
        admin=True,
    ),
    Route(
        "post",
        "/process_jobs",
        "Legacy alias of /process (admin)",
        None,
        dict,
        200,
        (204, 401, 429),
        legacy=True,
        admin=True,
    ),
    Route("get", "/config", "Legacy config", None, dict, legacy=True),
    Route(
        "post",
        "/config",
        "Legacy config update (admin)",
        dict,
        dict,
        200,
        (400, 401, 413, 429),
        legacy=True,
        admin=True,
    ),
    # webhooks (docs/webhooks.md)
    Route(
        "post",
        "/v1/webhooks",
        "Register a webhook endpoint (the secret is shown only here)",
        CreateWebhook,
        EndpointCreated,
        201,
        (413, 415, 422),
        params=_USER,
    ),
    Route("get", "/v1/webhooks", "List webhook endpoints", None, WebhookList, params=_USER),
    Route(
        "get",
        "/v1/webhooks/callback-secret",
        "The secret that signs this user's callback_url deliveries",
        None,
        CallbackSecret,
        params=_USER,
    ),
    Route(
        "get",
        "/v1/webhooks/{id}",
        "A webhook endpoint",
        None,
        EndpointView,
        200,
        (404,),
        params=(*_ID, *_USER),
    ),
    Route(
        "patch",
        "/v1/webhooks/{id}",
        "Change a webhook endpoint (re-enable resumes where delivery stopped)",
        PatchWebhook,
        EndpointView,
        200,
        (404, 413, 415, 422),
        params=(*_ID, *_USER),
    ),
    Route(
        "delete",
        "/v1/webhooks/{id}",
        "Delete a webhook endpoint",
        None,
        None,
        204,
        (404,),
        params=(*_ID, *_USER),
    ),
    Route(
        "post",
        "/v1/webhooks/{id}/rotate-secret",
        "Rotate the signing secret (the old one also signs for WEBHOOK_SECRET_GRACE_S)",
        None,
        Rotated,
        200,
        (404,),
        params=(*_ID, *_USER),
    ),
    Route(
        "get",
        "/v1/webhooks/{id}/deliveries",
        "Recent deliveries, newest first",
        None,
        Deliveries,
        200,
        (404, 422),
        params=(
            *_ID,
            *_USER,
            ("limit", "query", {"type": "integer", "minimum": 1, "maximum": 1000}),
            ("status", "query", {"enum": ["pending", "succeeded", "failed"]}),
        ),
    ),
    Route(
        "post",
        "/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver",
        "Send a delivery again (same webhook-id)",
        None,
        dict,
        202,
        (404, 409),
        params=(
            *_ID,
            ("delivery_id", "path", {"type": "string", "minLength": 1}),
            *_USER,
        ),
    ),
    Route(
        "post",
        "/v1/webhooks/{id}/replay",
        "Send again every event since a seq or a time (within EVENT_BUFFER)",
        ReplayRequest,
        Replayed,
        202,
        (404, 413, 415, 422),
        params=(*_ID, *_USER),
    ),
)


def build() -> dict[str, Any]:
    types = [
        SubmitRequest,
        Job,
        JobPage,
        CancelRequest,
        ProcessRequest,
        ProcessResult,
        CleanupRequest,
        CleanupResult,
        Config,
        ConfigPatch,
        SessionRequest,
        SessionState,
        CreateKey,
        NewKey,
        KeyList,
        KeyInfo,
        Event,
        Health,
        ErrorBody,
        ClockState,
        AdvanceRequest,
        Advanced,
        Asset,
        CreateWebhook,
        PatchWebhook,
        EndpointCreated,
        EndpointView,
        WebhookList,
        Rotated,
        Deliveries,
        ReplayRequest,
        Replayed,
        CallbackSecret,
    ]
    (_, components) = msgspec.json.schema_components(
        types, ref_template="#/components/schemas/{name}"
    )
    paths: dict[str, dict[str, Any]] = {}
    for route in ROUTES:
        op: dict[str, Any] = {"summary": route.summary, "operationId": _op_id(route)}
        params = list(route.params)
        if route.admin:
            op["security"] = [{"bearer": []}, {"cookie": []}]
        if params:
            op["parameters"] = [
                {"name": n, "in": where, "required": where == "path", "schema": schema}
                for n, where, schema in params
            ]
        if route.body is not None:
            op["requestBody"] = {
                "required": False,
                "content": {"application/json": {"schema": _ref(route.body)}},
            }
        responses: dict[str, Any] = {}
        ok: dict[str, Any] = {"description": "OK"}
        if route.answer is not None and route.content_type == "application/json":
            ok["content"] = {route.content_type: {"schema": _ref(route.answer)}}
        elif route.answer is not None:  # an SSE stream: each event's data is JSON
            schema = {
                "type": "object",
                "description": f"one SSE event; `data` is JSON: a {route.answer.__name__}, "
                "a snapshot, a reset or an error (docs/protocol.md)",
                "properties": {
                    "event": {"type": "string"},
                    "id": {"type": "string", "pattern": "^[0-9]+$"},
                    "data": {"type": "string", "contentMediaType": "application/json"},
                },
                "required": ["data"],
                "x-data-schema": _ref(route.answer),
            }
            ok["content"] = {route.content_type: {"schema": schema}}
        elif route.content_type != "application/json":
            ok["content"] = {route.content_type: {"schema": {"type": "string"}}}
        responses[str(route.ok)] = ok
        if route.also_ok is not None:
            responses[str(route.also_ok)] = ok
        errors = set(route.errors)
        if route.body is not None or route.params:
            errors.add(400)  # malformed JSON, or a malformed header such as X-User-Id
        for status in sorted(errors):
            if status in (204, 304):
                responses[str(status)] = {"description": "No content"}
                continue
            schema = _ref(dict) if route.legacy else _ref(ErrorBody)
            responses[str(status)] = {
                "description": "Error",
                "content": {"application/json": {"schema": schema}},
            }
        op["responses"] = responses
        paths.setdefault(route.path, {})[route.method] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dubsim",
            "version": "1",
            "description": "Live video-translation job service",
        },
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "dubsim_session"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "x-api-key"},
            },
        },
    }


def _ref(kind: type) -> dict[str, Any]:
    if kind is dict:
        return {"type": "object"}
    return {"$ref": f"#/components/schemas/{kind.__name__}"}


def _op_id(route: Route) -> str:
    cleaned = route.path.strip("/").replace("/", "_").replace("{", "").replace("}", "")
    return f"{route.method}_{cleaned or 'root'}"
