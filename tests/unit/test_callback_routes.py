"""Which lane sends a callback: the origin of a callback URL, and the split of one origin's
callbacks between the owner's shared lane (events up to the seq its admission fixed, or every
event while it is not admitted) and the origin's own lane (events after that seq). Written from
docs/webhooks.md ("Per-job callbacks"), on both stores."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from service.app import create_app
from service.hub import Published
from service.models import EventType
from service.webhooks import WEBHOOKS, Endpoint, origin_of
from service.webhooks.documents import _Peek
from tests.conftest import make_settings


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://A.Example/x?job=1", "http://a.example:80"),
        ("HTTP://a.example:80/y", "http://a.example:80"),
        ("https://h.example", "https://h.example:443"),
        ("https://h.example:443/p", "https://h.example:443"),
        ("https://h.example:8443/p", "https://h.example:8443"),
        ("http://h.example:443/", "http://h.example:443"),
        ("http://[::1]:8080/cb", "http://[::1]:8080"),
        ("http://127.0.0.1:9/cb", "http://127.0.0.1:9"),
    ],
)
def test_origin_of_a_callback_url(url: str, origin: str) -> None:
    assert origin_of(url) == origin


SHARED = "cb_" + hashlib.sha256(b"callbacks/alice").hexdigest()[:20]


def lane(origin: str | None) -> Endpoint:
    return Endpoint(
        id=SHARED if origin is None else "cb_" + origin,
        url=None,
        events=["job.completed"],
        owner="alice",
        created_at="2026-01-01T00:00:00.000Z",
        secret="whsec_x",
        lane=True,
        origin=origin,
        group=None if origin is None else SHARED,
    )


def event(seq: int, url: str) -> tuple[Published, _Peek]:
    job = json.dumps({"id": "j", "callback_url": url}).encode()
    return Published(seq, EventType.COMPLETED, "t", "j", "alice", job), _Peek(callback_url=url)


async def test_one_lane_of_the_owner_sends_each_callback(
    aiohttp_client: Any, backend: dict[str, Any]
) -> None:
    client = await aiohttp_client(create_app(make_settings(**backend)))
    webhooks = client.app[WEBHOOKS]
    resp = await client.post("/v1/jobs", json={}, headers={"X-User-Id": "bob"})
    assert resp.status == 201  # an event: this process's seq is not 0
    assert webhooks.hub.seq > 0
    a, b, c = "http://a.example:80", "http://b.example:80", "http://c.example:80"
    # a admitted with seq 10; b admitted, its seq not fixed yet; c not admitted
    routes = {"origins": {a: 10, b: None}}
    await webhooks.store.put_doc("webhook_routes", SHARED, json.dumps(routes).encode())
    shared, lane_a, lane_b, lane_c = lane(None), lane(a), lane(b), lane(c)

    async def senders(seq: int, url: str) -> list[str]:
        pub, info = event(seq, url)
        return [
            e.origin or "shared"
            for e in (shared, lane_a, lane_b, lane_c)
            if await webhooks._routed_here(e, pub, info)
        ]

    assert await senders(9, "http://A.example/x") == ["shared"]
    assert await senders(10, "http://a.example/x") == ["shared"]
    assert await senders(11, "http://a.example:80/y") == [a]
    assert await senders(11, "http://c.example/") == ["shared"]
    assert await senders(10**9, "http://c.example/") == ["shared"]
    # b's seq is fixed on first use, by whichever process: at the seq this one has seen
    seen = webhooks.hub.seq
    assert await senders(seen, "http://b.example/") == ["shared"]
    assert await senders(seen + 1, "http://b.example/") == [b]
    doc = await webhooks.store.get_doc("webhook_routes", SHARED)
    assert doc is not None and json.loads(doc.body) == {"origins": {a: 10, b: seen}}
