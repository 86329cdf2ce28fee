"""HeyGen's webhooks on dubsim's webhook machinery, with real receivers on loopback: a job's
callback_url gets HeyGen's body unsigned; a registered endpoint gets it signed (checked with an
HMAC written here from the Standard Webhooks spec, not the service's code), only for its
owner's facade jobs; failures are retried by the machinery. Expected bodies are literal."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from tests.conftest import ADMIN, free_port, make_settings, wait_for_status
from tests.webhook_support import Got, Receiver

FAILS = '{"outcome": "permanently_failed", "duration_s": 0.05}'
MP4_MAGIC = b"ftyp"


def hmac_ok(secret: str, got: Got) -> bool:
    """base64(hmac_sha256(base64decode(secret[6:]), f"{id}.{ts}.{body}")), any v1 in the header."""
    assert secret.startswith("whsec_")
    key = base64.b64decode(secret[6:])
    signed = f"{got.headers['webhook-id']}.{got.headers['webhook-timestamp']}.".encode() + got.body
    want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(part == f"v1,{want}" for part in got.headers.get("webhook-signature", "").split(" "))


@pytest.fixture
async def receiver() -> Any:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest.fixture
def served(aiohttp_client: Any, backend: dict[str, Any]) -> Any:
    """An app on a known loopback port, so the links in webhook bodies (PUBLIC_URL unset:
    http://HOST:PORT) point at it and can be downloaded."""

    async def factory(**overrides: Any) -> TestClient[Any, Any]:
        port = free_port()
        settings = make_settings(**{**backend, "host": "127.0.0.1", "port": port, **overrides})
        return await aiohttp_client(create_app(settings), server_kwargs={"port": port})  # type: ignore[no-any-return]

    return factory


async def v2(
    client: TestClient[Any, Any], user: str, scenario: str | None = None, **body: Any
) -> str:
    headers = {"x-api-key": user}
    if scenario is not None:
        headers["X-Dubsim-Scenario"] = scenario
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", **body},
        headers=headers,
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer["data"]["video_translate_id"]  # type: ignore[no-any-return]


async def plain(client: TestClient[Any, Any], user: str, **body: Any) -> str:
    resp = await client.post("/v1/jobs", json=body, headers={"X-User-Id": user})
    answer = await resp.json()
    assert resp.status == 201, answer
    return answer["id"]  # type: ignore[no-any-return]


async def register(
    client: TestClient[Any, Any], user: str, url: str, **body: Any
) -> dict[str, Any]:
    resp = await client.post(
        "/v3/webhooks/endpoints", json={"url": url, **body}, headers={"x-api-key": user}
    )
    answer = await resp.json()
    assert resp.status == 200, answer
    return answer["data"]  # type: ignore[no-any-return]


async def test_v2_callback_url_gets_heygen_success_unsigned_and_only_facade_jobs(
    served: Any, receiver: Receiver
) -> None:
    client = await served()
    user = "cb-user"
    # B: a facade job with a callback; C: a plain /v1 job of the same user with its own;
    # D: another facade job, E: another plain one. Each lane sends in seq order, so once D and
    # E arrived, anything sent to the wrong place before them has arrived too.
    b = await v2(
        client,
        user,
        output_language="French",
        callback_id="order-7",
        callback_url=receiver.url("/heygen"),
    )
    await wait_for_status(client, b, {"completed"})
    c = await plain(client, user, callback_url=receiver.url("/v1"), callback_id="plain-1")
    await wait_for_status(client, c, {"completed"})
    d = await v2(client, user, output_language="German", callback_url=receiver.url("/heygen"))
    await wait_for_status(client, d, {"completed"})
    e = await plain(client, user, callback_url=receiver.url("/v1"))
    await receiver.wait_for(2, path="/heygen")
    await receiver.wait_for(2, path="/v1")

    first, second = receiver.of("/heygen")
    assert "webhook-signature" not in first.headers  # HeyGen's callbacks are unsigned
    assert first.headers["content-type"] == "application/json"
    url = first.event["event_data"]["url"]
    assert first.event == {
        "event_type": "video_translate.success",
        "event_data": {
            "video_translate_id": b,
            "url": url,
            "callback_id": "order-7",
            "output_language": "French",
        },
    }
    assert second.event["event_data"]["video_translate_id"] == d
    assert second.event["event_data"]["callback_id"] is None
    assert second.event["event_data"]["output_language"] == "German"
    # the link is absolute, signed, and downloads without credentials (a placeholder MP4)
    assert url.startswith(str(client.make_url("/v1/jobs/")) + b + "/result?expires=")
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.status == 200
        assert resp.content_type == "video/mp4"
        assert MP4_MAGIC in (await resp.read())[:16]
    # the plain jobs' callbacks stay dubsim's own: signed, the event as SSE carries it
    assert [g.event["job"]["id"] for g in receiver.of("/v1")] == [c, e]
    assert all("webhook-signature" in g.headers for g in receiver.of("/v1"))
    assert [g.event["type"] for g in receiver.of("/v1")] == ["job.completed"] * 2


async def test_failed_translation_calls_back_with_fail_and_message_v3(
    served: Any, receiver: Receiver
) -> None:
    client = await served()
    resp = await client.post(
        "/v3/video-translations",
        json={
            "video": {"type": "url", "url": "https://videos.example/a.mp4"},
            "output_languages": ["Japanese"],
            "callback_id": "v3-cb",
            "callback_url": receiver.url("/cb"),
        },
        headers={"x-api-key": "v3-user", "X-Dubsim-Scenario": FAILS},
    )
    assert resp.status == 200
    (job_id,) = (await resp.json())["data"]["video_translation_ids"]
    (got,) = await receiver.wait_for(1)
    event = got.event
    message = event["event_data"].pop("message")
    assert isinstance(message, str) and message
    assert event == {
        "event_type": "video_translate.fail",
        "event_data": {
            "video_translate_id": job_id,
            "callback_id": "v3-cb",
            "output_language": "Japanese",
        },
    }
    # the status route says the same
    status = await (
        await client.get(f"/v3/video-translations/{job_id}", headers={"x-api-key": "v3-user"})
    ).json()
    assert status["data"]["failure_message"] == message


async def test_a_registered_endpoint_gets_its_owners_facade_jobs_signed(
    served: Any, receiver: Receiver
) -> None:
    client = await served()
    endpoint = await register(client, "alice", receiver.url("/alice"))
    secret = endpoint["secret"]
    # before alice's own: bob's facade job, alice's plain /v1 job; nothing of them may arrive
    bob = await v2(client, "bob", output_language="Spanish")
    await wait_for_status(client, bob, {"completed"})
    mine_plain = await plain(client, "alice")
    await wait_for_status(client, mine_plain, {"completed"})
    mine = await v2(client, "alice", output_language="Italian", callback_id="a-1")
    failing = await v2(client, "alice", FAILS, output_language="Polish")
    got = await receiver.wait_for(2)
    assert len(got) == 2, [g.event for g in got]
    by_id = {g.event["event_data"]["video_translate_id"]: g for g in got}
    assert set(by_id) == {mine, failing}
    assert by_id[mine].event["event_type"] == "video_translate.success"
    assert by_id[mine].event["event_data"]["callback_id"] == "a-1"
    assert by_id[failing].event["event_type"] == "video_translate.fail"
    for g in got:
        assert hmac_ok(secret, g), g.headers
        assert not hmac_ok("whsec_" + base64.b64encode(b"x" * 24).decode(), g)
    # after a rotation, the new secret verifies what is sent next
    resp = await client.post(
        f"/v3/webhooks/endpoints/{endpoint['endpoint_id']}/rotate-secret",
        headers={"x-api-key": "alice"},
    )
    new_secret = (await resp.json())["data"]["secret"]
    later = await v2(client, "alice", output_language="Dutch")
    (*_, last) = await receiver.wait_for(3)
    assert last.event["event_data"]["video_translate_id"] == later
    assert hmac_ok(new_secret, last)


async def test_event_filter_patch_and_proofreads(served: Any, receiver: Receiver) -> None:
    client = await served()
    me = {"x-api-key": "filter-user"}
    endpoint = await register(
        client, "filter-user", receiver.url("/f"), events=["video_translate.fail"]
    )
    ok_job = await v2(client, "filter-user", output_language="Greek")
    await wait_for_status(client, ok_job, {"completed"})
    bad_job = await v2(client, "filter-user", FAILS, output_language="Greek")
    (got,) = await receiver.wait_for(1)
    assert (got.event["event_type"], got.event["event_data"]["video_translate_id"]) == (
        "video_translate.fail",
        bad_job,
    )
    resp = await client.patch(
        f"/v3/webhooks/endpoints/{endpoint['endpoint_id']}",
        json={"events": ["proofread_creation.success"]},
        headers=me,
    )
    assert resp.status == 200
    after = await v2(client, "filter-user", output_language="Greek")  # not wanted any more
    await wait_for_status(client, after, {"completed"})
    resp = await client.post(
        "/v3/video-translations/proofreads",
        json={
            "video": {"type": "url", "url": "https://videos.example/a.mp4"},
            "output_languages": ["Czech"],
            "title": "p",
        },
        headers=me,
    )
    (proof,) = (await resp.json())["data"]["proofread_ids"]
    got_all = await receiver.wait_for(2)
    assert len(got_all) == 2
    event = got_all[1].event
    assert event["event_type"] == "proofread_creation.success"
    assert event["event_data"]["proofread_id"] == proof
    assert event["event_data"]["output_language"] == "Czech"
    assert "/captions.srt?expires=" in event["event_data"]["url"]

    # the events list: every finished facade job of the caller, filterable
    listed = await (await client.get("/v3/webhooks/events", headers=me)).json()
    assert [
        (
            e["event_type"],
            e["event_data"].get("video_translate_id") or e["event_data"].get("proofread_id"),
        )
        for e in listed["data"]
    ] == [
        ("proofread_creation.success", proof),
        ("video_translate.success", after),
        ("video_translate.fail", bad_job),
        ("video_translate.success", ok_job),
    ]
    fails = await (
        await client.get("/v3/webhooks/events?event_type=video_translate.fail", headers=me)
    ).json()
    assert [e["event_data"]["video_translate_id"] for e in fails["data"]] == [bad_job]
    one = await (await client.get(f"/v3/webhooks/events?entity_id={ok_job}", headers=me)).json()
    assert [e["event_data"]["video_translate_id"] for e in one["data"]] == [ok_job]
    page = await (await client.get("/v3/webhooks/events?limit=3", headers=me)).json()
    assert page["has_more"] is True and len(page["data"]) == 3
    rest = await (
        await client.get(f"/v3/webhooks/events?limit=3&token={page['next_token']}", headers=me)
    ).json()
    assert [e["event_data"]["video_translate_id"] for e in rest["data"]] == [ok_job]
    other = await (await client.get("/v3/webhooks/events", headers={"x-api-key": "nobody"})).json()
    assert other["data"] == []


async def test_a_failing_receiver_gets_the_machinerys_retry(
    served: Any, receiver: Receiver
) -> None:
    client = await served(webhook_retry_schedule="0,0.1,0.1")
    endpoint = await register(client, "retry-user", receiver.url("/r"))
    receiver.plan.append((500, {}))
    job = await v2(client, "retry-user", output_language="Swedish")
    first, second = await receiver.wait_for(2)
    assert first.id == second.id and first.body == second.body  # the same delivery, resent
    assert second.event["event_data"]["video_translate_id"] == job
    # the machinery's delivery log (the endpoint is the user's own in /v1 too)
    log: list[dict[str, Any]] = []
    for _ in range(200):
        resp = await client.get(
            f"/v1/webhooks/{endpoint['endpoint_id']}/deliveries",
            headers={"X-User-Id": "retry-user"},
        )
        log = (await resp.json())["deliveries"]
        if log and log[0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.05)
    assert [a["status_code"] for a in log[0]["attempts"]] == [500, 200]
    assert log[0]["id"] == first.id


async def test_callback_url_bad_input_is_a_heygen_400(served: Any) -> None:
    client = await served()
    for url in ("ftp://hooks.example/x", "http://user:pw@hooks.example/x"):
        resp = await client.post(
            "/v2/video_translate",
            json={
                "video_url": "https://v.example/a.mp4",
                "output_language": "Thai",
                "callback_url": url,
            },
            headers={"x-api-key": "bad-user"},
        )
        body = await resp.json()
        assert resp.status == 400, body
        assert (body["error"]["code"], body["error"]["param"]) == (
            "invalid_parameter",
            "callback_url",
        )
    jobs = await (await client.get("/v1/jobs?user=bad-user", headers=ADMIN)).json()
    assert jobs["jobs"] == []
    # "*" would own every user's events: not a key
    resp = await client.get("/v3/webhooks/endpoints", headers={"x-api-key": "*"})
    assert resp.status == 401
    # a /v1 endpoint of the same user is not a HeyGen one
    resp = await client.post(
        "/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers={"X-User-Id": "bad-user"}
    )
    v1_id = (await resp.json())["id"]
    resp = await client.delete(f"/v3/webhooks/endpoints/{v1_id}", headers={"x-api-key": "bad-user"})
    assert resp.status == 404
    listed = await (
        await client.get("/v3/webhooks/endpoints", headers={"x-api-key": "bad-user"})
    ).json()
    assert listed["data"] == []
    assert json.loads(json.dumps(listed))["has_more"] is False
