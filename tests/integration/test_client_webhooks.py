"""The clients' webhook and clock methods against a stub server that answers per the contract.

The stub records each request (method, path, query, JSON body, headers) and answers what
docs/protocol.md's "Webhooks" section promises; each test states the exact request it expects.
Both clients: AsyncClient directly, Client (blocking) from a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from client import (
    APIError,
    AsyncClient,
    Client,
    Conflict,
    Delivery,
    DeliveryAttempt,
    InvalidRequest,
    SecretRotation,
    Webhook,
)

HOOK = {
    "id": "wh_1",
    "url": "https://example.test/hooks",
    "events": ["job.completed"],
    "description": "ci",
    "status": "enabled",
    "disabled_reason": None,
    "owner": "alice",
    "created_at": "2030-01-01T00:00:00.000Z",
}
DELIVERY = {
    "id": "dl_1",
    "event_type": "job.completed",
    "seq": 42,
    "job_id": "j1",
    "status": "failed",
    "attempts": [
        {"at": "2030-01-01T00:00:01.000Z", "status_code": 500, "duration_ms": 12.5, "error": None},
        {
            "at": "2030-01-01T00:00:31.000Z",
            "status_code": None,
            "duration_ms": 10000,
            "error": "timeout",
        },
    ],
    "next_attempt_at": "2030-01-01T00:02:31.000Z",
}
T0 = datetime(2030, 1, 1, tzinfo=UTC)


class Stub:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.append(
            {
                "method": request.method,
                "path": request.raw_path.split("?")[0],
                "query": dict(request.query),
                "json": json.loads(body) if body else None,
                "auth": request.headers.get("Authorization"),
                "user": request.headers.get("X-User-Id"),
            }
        )
        route = (request.method, request.raw_path.split("?")[0])
        answers: dict[tuple[str, str], Callable[[], web.StreamResponse]] = {
            ("POST", "/v1/webhooks"): lambda: web.json_response(
                {**HOOK, "secret": "whsec_c2VjcmV0"}, status=201
            ),
            ("GET", "/v1/webhooks"): lambda: web.json_response({"webhooks": [HOOK, HOOK]}),
            ("GET", "/v1/webhooks/wh_1"): lambda: web.json_response(HOOK),
            ("PATCH", "/v1/webhooks/wh_1"): lambda: web.json_response({**HOOK, "events": None}),
            ("DELETE", "/v1/webhooks/wh_1"): lambda: web.Response(status=204),
            ("POST", "/v1/webhooks/wh_1/rotate-secret"): lambda: web.json_response(
                {"secret": "whsec_bmV3", "previous_secret_expires_at": "2030-01-02T00:00:00Z"}
            ),
            ("GET", "/v1/webhooks/wh_1/deliveries"): lambda: web.json_response(
                {"deliveries": [DELIVERY]}
            ),
            ("POST", "/v1/webhooks/wh_1/deliveries/dl_1/redeliver"): lambda: web.json_response(
                {**DELIVERY, "status": "pending"}, status=202
            ),
            ("POST", "/v1/webhooks/wh_1/replay"): lambda: web.json_response(
                {"queued": 3}, status=202
            ),
            ("POST", "/v1/clock/advance"): lambda: web.json_response(
                {"now": "2030-01-01T01:00:00.000Z", "advanced_s": 3600}
            ),
            ("GET", "/v1/clock"): lambda: web.json_response(
                {"mode": "virtual", "now": "2030-01-01T00:00:00.000Z"}
            ),
            ("DELETE", "/v1/webhooks/gone"): lambda: web.json_response(
                {"error": {"code": "not_found", "message": "no webhook gone"}}, status=404
            ),
            ("POST", "/v1/webhooks/wh_1/deliveries/dl_2/redeliver"): lambda: web.json_response(
                {"error": {"code": "conflict", "message": "still in flight"}}, status=409
            ),
        }
        answer = answers.get(route)
        if answer is None:
            return web.json_response(
                {"error": {"code": "validation_error", "message": "no"}}, status=422
            )
        return answer()


@pytest.fixture
async def stub() -> Any:
    stub = Stub()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", stub.handle)
    server = TestServer(app)
    await server.start_server()
    yield stub, str(server.make_url("/")).rstrip("/")
    await server.close()


async def exercise(call: Callable[..., Any]) -> dict[str, Any]:
    """Every method once, in order; returns what each gave back."""
    return {
        "create": await call(
            "create_webhook", "https://example.test/hooks", ["job.completed"], "ci"
        ),
        "create_min": await call("create_webhook", "https://example.test/hooks"),
        "list": await call("list_webhooks"),
        "get": await call("get_webhook", "wh_1"),
        "update": await call("update_webhook", "wh_1", events=None, description="x"),
        "delete": await call("delete_webhook", "wh_1"),
        "rotate": await call("rotate_webhook_secret", "wh_1"),
        "deliveries": await call("webhook_deliveries", "wh_1", limit=5, status="failed"),
        "deliveries_all": await call("webhook_deliveries", "wh_1"),
        "redeliver": await call("redeliver", "wh_1", "dl_1"),
        "replay": await call("replay_webhook", "wh_1", 40),
        "replay_time": await call("replay_webhook", "wh_1", T0),
        "advance": await call("advance_clock", 3600),
        "clock": await call("clock"),
    }


EXPECTED_REQUESTS = [
    (
        "POST",
        "/v1/webhooks",
        {},
        {"url": "https://example.test/hooks", "events": ["job.completed"], "description": "ci"},
    ),
    ("POST", "/v1/webhooks", {}, {"url": "https://example.test/hooks"}),
    ("GET", "/v1/webhooks", {}, None),
    ("GET", "/v1/webhooks/wh_1", {}, None),
    ("PATCH", "/v1/webhooks/wh_1", {}, {"events": None, "description": "x"}),
    ("DELETE", "/v1/webhooks/wh_1", {}, None),
    ("POST", "/v1/webhooks/wh_1/rotate-secret", {}, {}),
    ("GET", "/v1/webhooks/wh_1/deliveries", {"limit": "5", "status": "failed"}, None),
    ("GET", "/v1/webhooks/wh_1/deliveries", {}, None),
    ("POST", "/v1/webhooks/wh_1/deliveries/dl_1/redeliver", {}, {}),
    ("POST", "/v1/webhooks/wh_1/replay", {}, {"since": 40}),
    ("POST", "/v1/webhooks/wh_1/replay", {}, {"since": "2030-01-01T00:00:00+00:00"}),
    ("POST", "/v1/clock/advance", {}, {"seconds": 3600}),
    ("GET", "/v1/clock", {}, None),
]


def check(stub: Stub, got: dict[str, Any]) -> None:
    assert [(s["method"], s["path"], s["query"], s["json"]) for s in stub.seen] == EXPECTED_REQUESTS
    assert all(s["auth"] == "Bearer tok-tok-tok-tok-1" and s["user"] == "alice" for s in stub.seen)
    created = got["create"]
    assert isinstance(created, Webhook)
    assert created.secret == "whsec_c2VjcmV0"
    assert created.events == ["job.completed"] and created.owner == "alice"
    assert created.created_at == T0
    assert got["list"] == [Webhook(**{**HOOK, "created_at": T0})] * 2
    assert got["get"].secret is None
    assert got["update"].events is None
    assert got["delete"] is None
    assert got["rotate"] == SecretRotation("whsec_bmV3", datetime(2030, 1, 2, tzinfo=UTC))
    [delivery] = got["deliveries"]
    assert isinstance(delivery, Delivery)
    assert (delivery.id, delivery.seq, delivery.job_id, delivery.status) == (
        "dl_1",
        42,
        "j1",
        "failed",
    )
    assert delivery.attempts[0] == DeliveryAttempt(
        datetime(2030, 1, 1, 0, 0, 1, tzinfo=UTC), 500, 12.5
    )
    assert delivery.attempts[1].status_code is None and delivery.attempts[1].error == "timeout"
    assert got["redeliver"].status == "pending"
    assert got["replay"] == 3 and got["replay_time"] == 3
    assert got["advance"].now == datetime(2030, 1, 1, 1, tzinfo=UTC)
    assert got["advance"].advanced_s == 3600
    assert got["clock"].mode == "virtual" and got["clock"].now == T0


async def test_async_client_speaks_the_contract(stub: Any) -> None:
    recorder, url = stub
    async with AsyncClient(url, token="tok-tok-tok-tok-1", user_id="alice") as client:

        async def call(name: str, *args: Any, **kw: Any) -> Any:
            return await getattr(client, name)(*args, **kw)

        got = await exercise(call)
    check(recorder, got)


async def test_sync_client_speaks_the_contract(stub: Any) -> None:
    recorder, url = stub
    client = Client(url, token="tok-tok-tok-tok-1", user_id="alice")
    try:

        async def call(name: str, *args: Any, **kw: Any) -> Any:
            return await asyncio.to_thread(getattr(client, name), *args, **kw)

        got = await exercise(call)
    finally:
        await asyncio.to_thread(client.close)
    check(recorder, got)


async def test_errors_are_the_typed_ones(stub: Any) -> None:
    recorder, url = stub
    async with AsyncClient(url, token="tok-tok-tok-tok-1", user_id="alice") as client:
        with pytest.raises(APIError) as missing:
            await client.delete_webhook("gone")
        assert missing.value.status == 404
        with pytest.raises(Conflict):
            await client.redeliver("wh_1", "dl_2")
        with pytest.raises(InvalidRequest):
            await client.update_webhook("other", url="ftp://x")
        with pytest.raises(ValueError):
            await client.get_webhook("")
    # an id is data, never a path
    async with AsyncClient(url, user_id="alice") as client:
        with pytest.raises(InvalidRequest):
            await client.get_webhook("../jobs")
    assert recorder.seen[-1]["path"] == "/v1/webhooks/..%2Fjobs"
