"""The HeyGen facade against HeyGen's published contract (tests/contract/).

Every response of every facade route, success and error, is validated against the schema the
contract gives for that route and status (`$ref`s resolved by jsonschema); the route table is
checked against the contract's paths both ways. The one route the published subset lacks,
GET /v2/video_translate/{id}, is checked against the shape written out below by hand.
The schemas leave most fields optional, so the happy paths also assert fields literally.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from jsonschema import Draft202012Validator

from service.appkeys import SERVICE
from tests.conftest import ADMIN, ROOT, ApiFactory

SPEC: dict[str, Any] = json.loads(
    (ROOT / "tests" / "contract" / "heygen-openapi-subset.json").read_text(encoding="utf-8")
)
ERROR_ENVELOPE = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"$ref": "#/components/schemas/StandardAPIError"}},
}
# statuses HeyGen answers on any route besides the ones each route lists
GENERIC = {402, 403, 404, 409, 500, 503}
# the v2 status read, absent from the published subset: written from HeyGen's reference
V2_STATUS = {
    "type": "object",
    "required": ["error", "data"],
    "properties": {
        "error": {"type": "null"},
        "data": {
            "type": "object",
            "required": ["video_translate_id", "title", "status", "url", "message"],
            "properties": {
                "video_translate_id": {"type": "string"},
                "title": {"type": ["string", "null"]},
                "status": {"enum": ["pending", "running", "success", "failed"]},
                "url": {"type": ["string", "null"]},
                "message": {"type": ["string", "null"]},
                "callback_id": {"type": ["string", "null"]},
                "output_language": {"type": ["string", "null"]},
            },
        },
    },
}
KEY = {"x-api-key": "contract-user"}
VIDEO = {"type": "url", "url": "https://videos.example/talk.mp4"}
FACADE_PATHS = set(SPEC["paths"])
checked: set[tuple[str, str, int]] = set()


def schema_for(method: str, path: str, status: int) -> dict[str, Any]:
    if (method, path) == ("get", "/v2/video_translate/{video_translate_id}"):
        return V2_STATUS if status == 200 else ERROR_ENVELOPE
    responses = SPEC["paths"][path][method]["responses"]
    if str(status) in responses:
        return responses[str(status)]["content"]["application/json"]["schema"]  # type: ignore[no-any-return]
    assert status in GENERIC, f"{method.upper()} {path} answered {status}, which it never documents"
    return ERROR_ENVELOPE


def validate(method: str, path: str, status: int, body: Any) -> None:
    schema = {**schema_for(method, path, status), "components": SPEC["components"]}
    Draft202012Validator(schema).validate(body)
    if status >= 400:  # errors: the envelope always, whatever the route documents
        Draft202012Validator({**ERROR_ENVELOPE, "components": SPEC["components"]}).validate(body)
        assert set(body["error"]) == {"code", "message", "param", "doc_url"}
    checked.add((method, path, status))


async def call(
    client: TestClient[Any, Any],
    method: str,
    path: str,
    url: str,
    expect: int,
    *,
    headers: dict[str, str] | None = None,
    **kwargs: Any,
) -> Any:
    """Send, check the status, validate the body against the contract; return the body."""
    resp = await client.request(method, url, headers=KEY if headers is None else headers, **kwargs)
    body = await resp.json()
    assert resp.status == expect, (method, url, resp.status, body)
    assert resp.content_type == "application/json"
    validate(method, path, resp.status, body)
    if resp.status == 429:
        assert int(resp.headers["Retry-After"]) >= 1
    return body


async def finished(client: TestClient[Any, Any], job_id: str) -> None:
    resp = await client.get(f"/v1/jobs/{job_id}?wait=30&until=terminal")
    assert (await resp.json())["status"] in ("completed", "permanently_failed", "cancelled")


def test_the_facade_serves_exactly_the_contract_paths() -> None:
    from service.app import create_app
    from tests.conftest import make_settings

    app = create_app(make_settings())
    served: dict[str, set[str]] = {}
    for route in app.router.routes():
        # "*": the refusal of a method a path has not (in HeyGen's envelope), no operation
        if getattr(route.handler, "own_credentials", False) and route.method not in ("HEAD", "*"):
            assert route.resource is not None
            served.setdefault(route.resource.canonical, set()).add(route.method.lower())
    expected = {
        path.replace("{video_translation_id}", "{id}")
        .replace("{proofread_id}", "{id}")
        .replace("{endpoint_id}", "{id}"): set(ops)
        for path, ops in SPEC["paths"].items()
        if path in FACADE_PATHS
    }
    expected["/v2/video_translate/{id}"] = {"get"}  # the status read the subset leaves out
    assert served == expected


async def test_every_route_happy_and_failing_matches_the_contract(api: ApiFactory) -> None:
    client = await api(heygen_queue=3, rate_limit=100)
    p = "/v2/video_translate"
    # ---- v2 ----
    body = await call(
        client, "post", p, p, 200, json={"video_url": VIDEO["url"], "output_language": "Spanish"}
    )
    assert body["error"] is None and set(body["data"]) == {"video_translate_id"}
    v2_id = body["data"]["video_translate_id"]
    body = await call(
        client,
        "post",
        p,
        p,
        200,
        json={"video_url": VIDEO["url"], "output_languages": ["French", "German"]},
    )
    assert len(body["data"]["video_translate_ids"]) == 2
    await call(client, "post", p, p, 400, json={"video_url": VIDEO["url"]})  # no language
    await call(client, "post", p, p, 401, headers={}, json={})
    await call(client, "post", p, p, 400, json={"video_url": 5, "output_language": "Spanish"})
    await call(client, "post", p, p, 400, data=b"[", headers={**KEY, "Content-Type": "x/y"})

    sp = "/v2/video_translate/{video_translate_id}"
    body = await call(client, "get", sp, f"{p}/{v2_id}", 200)
    assert body["data"]["video_translate_id"] == v2_id
    assert body["data"]["status"] in ("pending", "running", "success")  # words: test_heygen.py
    await call(client, "get", sp, f"{p}/nope", 404)
    await call(client, "get", sp, f"{p}/{v2_id}", 401, headers={})
    await call(client, "get", sp, f"{p}/{v2_id}", 404, headers={"x-api-key": "someone-else"})

    tp = "/v2/video_translate/target_languages"
    body = await call(client, "get", tp, tp, 200)
    assert "Spanish" in body["data"]["languages"]
    await call(client, "get", tp, tp, 401, headers={})

    cp = "/v2/video_translate/caption"
    # not ready: a job that never finishes (its own user, out of the queue bound's way)
    waiting = {"x-api-key": "waiting", "X-Dubsim-Scenario": '{"outcome": "stuck"}'}
    body = await call(
        client,
        "post",
        p,
        p,
        200,
        headers=waiting,
        json={"video_url": VIDEO["url"], "output_language": "Thai"},
    )
    stuck_v2 = body["data"]["video_translate_id"]
    url = f"{cp}?video_translate_id={stuck_v2}&caption_type=srt"
    await call(client, "get", cp, url, 400, headers=waiting)
    await finished(client, v2_id)
    body = await call(client, "get", sp, f"{p}/{v2_id}", 200)
    assert body["data"]["status"] == "success" and body["data"]["url"].startswith("http://")
    body = await call(client, "get", cp, f"{cp}?video_translate_id={v2_id}&caption_type=vtt", 200)
    assert "/captions.vtt?" in body["data"]["caption_url"]
    await call(client, "get", cp, f"{cp}?video_translate_id={v2_id}&caption_type=txt", 400)
    await call(client, "get", cp, f"{cp}?caption_type=srt", 400)
    await call(client, "get", cp, f"{cp}?video_translate_id=nope&caption_type=srt", 404)
    await call(
        client, "get", cp, f"{cp}?video_translate_id={v2_id}&caption_type=srt", 401, headers={}
    )

    # ---- v3 translations ----
    v = "/v3/video-translations"
    body = await call(
        client, "post", v, v, 200, json={"video": VIDEO, "output_languages": ["Japanese"]}
    )
    (v3_id,) = body["data"]["video_translation_ids"]
    await call(client, "post", v, v, 400, json={"video": VIDEO, "output_languages": []})
    await call(client, "post", v, v, 400, json={"video": VIDEO, "output_languages": ["Elvish"]})
    await call(
        client, "post", v, v, 400, json={"video": {"type": "file"}, "output_languages": ["Hindi"]}
    )
    await call(
        client, "post", v, v, 400, json={"video": VIDEO, "output_languages": ["Hindi"], "x": 1}
    )
    await call(client, "post", v, v, 401, headers={"x-api-key": ""}, json={})
    # over the queue bound (free: 1 running + 3 queued), with jobs that never finish
    stuck = {
        "x-api-key": "queued",
        "X-Dubsim-Plan": "free",
        "X-Dubsim-Scenario": '{"outcome": "stuck"}',
    }
    four = ["Hindi", "Thai", "Greek", "Czech"]
    await call(
        client, "post", v, v, 200, headers=stuck, json={"video": VIDEO, "output_languages": four}
    )
    await call(
        client,
        "post",
        v,
        v,
        429,
        headers=stuck,
        json={"video": VIDEO, "output_languages": ["Thai"]},
    )
    await call(
        client,
        "post",
        v,
        v,
        400,
        headers={**KEY, "X-Dubsim-Plan": "platinum"},
        json={"video": VIDEO, "output_languages": ["Hindi"]},
    )

    body = await call(client, "get", v, f"{v}?limit=2", 200)
    assert len(body["data"]) == 2 and body["has_more"] is True
    body = await call(client, "get", v, f"{v}?limit=2&token={body['next_token']}", 200)
    await call(client, "get", v, f"{v}?limit=0", 400)
    await call(client, "get", v, f"{v}?token=abc", 400)
    await call(client, "get", v, v, 401, headers={})

    lp = f"{v}/languages"
    body = await call(client, "get", lp, lp, 200)
    assert "Japanese" in body["data"]["languages"]
    await call(client, "get", lp, lp, 401, headers={})

    ip = f"{v}/{{video_translation_id}}"
    body = await call(client, "get", ip, f"{v}/{v3_id}", 200)
    assert body["data"]["id"] == v3_id and body["data"]["output_language"] == "Japanese"
    await call(client, "get", ip, f"{v}/nope", 404)
    await call(client, "get", ip, f"{v}/{v3_id}", 401, headers={})
    body = await call(client, "patch", ip, f"{v}/{v3_id}", 200, json={"title": "renamed"})
    assert body["data"]["title"] == "renamed"
    await call(client, "patch", ip, f"{v}/{v3_id}", 400, json={"name": "x"})
    await call(client, "patch", ip, f"{v}/nope", 404, json={"title": "x"})
    await call(client, "patch", ip, f"{v}/{v3_id}", 401, headers={}, json={"title": "x"})

    capp = f"{v}/{{video_translation_id}}/caption"
    await finished(client, v3_id)
    body = await call(client, "get", capp, f"{v}/{v3_id}/caption?format=srt", 200)
    assert "/captions.srt?" in body["data"]["caption_url"]
    await call(client, "get", capp, f"{v}/{v3_id}/caption", 400)
    await call(client, "get", capp, f"{v}/nope/caption?format=srt", 404)
    await call(client, "get", capp, f"{v}/{v3_id}/caption?format=srt", 401, headers={})

    body = await call(client, "delete", ip, f"{v}/{v3_id}", 200)
    assert body["data"] == {"id": v3_id}
    await call(client, "delete", ip, f"{v}/{v3_id}", 404)
    await call(client, "delete", ip, f"{v}/{v3_id}", 401, headers={})

    # ---- proofreads ----
    pr = f"{v}/proofreads"
    body = await call(
        client,
        "post",
        pr,
        pr,
        200,
        headers={"x-api-key": "proofreader"},
        json={"video": VIDEO, "output_languages": ["Korean"], "title": "talk"},
    )
    assert body["data"]["status"] == "processing"
    (proof,) = body["data"]["proofread_ids"]
    await call(client, "post", pr, pr, 400, json={"video": VIDEO, "output_languages": ["Korean"]})
    await call(client, "post", pr, pr, 401, headers={}, json={})
    pk = {"x-api-key": "proofreader"}

    gp = f"{pr}/{{proofread_id}}"
    srt = f"{pr}/{{proofread_id}}/srt"
    gen = f"{pr}/{{proofread_id}}/generate"
    new_srt = {"srt": {"type": "url", "url": "https://subs.example/edited.srt"}}
    body = await call(
        client,
        "post",
        pr,
        pr,
        200,
        headers=waiting,
        json={"video": VIDEO, "output_languages": ["Thai"], "title": "never done"},
    )
    (unready,) = body["data"]["proofread_ids"]
    await call(client, "get", srt, f"{pr}/{unready}/srt", 400, headers=waiting)
    await call(client, "put", srt, f"{pr}/{unready}/srt", 400, headers=waiting, json=new_srt)
    await call(client, "post", gen, f"{pr}/{unready}/generate", 400, headers=waiting, json={})
    await finished(client, proof)
    body = await call(client, "get", gp, f"{pr}/{proof}", 200, headers=pk)
    assert body["data"]["status"] == "completed" and body["data"]["output_language"] == "Korean"
    await call(client, "get", gp, f"{pr}/nope", 404, headers=pk)
    await call(client, "get", gp, f"{pr}/{proof}", 401, headers={})
    await call(client, "get", gp, f"{pr}/{proof}", 404)  # another user's

    body = await call(client, "get", srt, f"{pr}/{proof}/srt", 200, headers=pk)
    assert body["data"]["srt_url"] == body["data"]["original_srt_url"]
    body = await call(client, "put", srt, f"{pr}/{proof}/srt", 200, headers=pk, json=new_srt)
    assert body["data"]["id"] == proof
    body = await call(client, "get", srt, f"{pr}/{proof}/srt", 200, headers=pk)
    assert body["data"]["srt_url"] == "https://subs.example/edited.srt"
    await call(client, "put", srt, f"{pr}/{proof}/srt", 400, headers=pk, json={"srt": {}})
    await call(client, "get", srt, f"{pr}/nope/srt", 404, headers=pk)
    await call(client, "put", srt, f"{pr}/nope/srt", 404, headers=pk, json=new_srt)
    await call(client, "get", srt, f"{pr}/{proof}/srt", 401, headers={})
    await call(client, "put", srt, f"{pr}/{proof}/srt", 401, headers={}, json=new_srt)

    body = await call(
        client, "post", gen, f"{pr}/{proof}/generate", 200, headers=pk, json={"captions": True}
    )
    assert body["data"]["status"] == "processing"
    made = body["data"]["video_translation_id"]
    await call(client, "post", gen, f"{pr}/{proof}/generate", 400, headers=pk, json={"c": 1})
    await call(client, "post", gen, f"{pr}/nope/generate", 404, headers=pk, json={})
    await call(client, "post", gen, f"{pr}/{proof}/generate", 401, headers={}, json={})
    body = await call(client, "get", ip, f"{v}/{made}", 200, headers=pk)
    assert body["data"]["output_language"] == "Korean" and body["data"]["title"] == "talk"
    # a proofread is not a translation, nor the reverse
    await call(client, "get", ip, f"{v}/{proof}", 404, headers=pk)
    await call(client, "get", gp, f"{pr}/{made}", 404, headers=pk)

    await webhook_routes(client)

    # every route of the contract answered at least one success and one error
    for path in FACADE_PATHS:
        for method in SPEC["paths"][path]:
            statuses = {s for m, p_, s in checked if (m, p_) == (method, path)}
            assert any(s < 300 for s in statuses), (method, path)
            assert any(s >= 400 for s in statuses), (method, path)


async def webhook_routes(client: TestClient[Any, Any]) -> None:
    """/v3/webhooks/...: each route's successes and errors, against the contract."""
    ep, one = "/v3/webhooks/endpoints", "/v3/webhooks/endpoints/{endpoint_id}"
    rot = "/v3/webhooks/endpoints/{endpoint_id}/rotate-secret"
    hook = "http://127.0.0.1:9/heygen"  # loopback, nothing listens: deliveries just fail
    body = await call(client, "post", ep, ep, 200, json={"url": hook})
    created = body["data"]
    assert (created["url"], created["status"], created["events"]) == (hook, "enabled", None)
    assert created["secret"].startswith("whsec_")
    first = created["endpoint_id"]
    body = await call(
        client, "post", ep, ep, 200, json={"url": hook, "events": ["video_translate.fail"]}
    )
    assert body["data"]["events"] == ["video_translate.fail"]
    second = body["data"]["endpoint_id"]
    await call(client, "post", ep, ep, 400, json={"url": "ftp://x"})
    await call(client, "post", ep, ep, 400, json={"url": hook, "events": ["video.done"]})
    await call(client, "post", ep, ep, 400, json={"url": hook, "events": []})
    await call(client, "post", ep, ep, 400, json={"url": hook, "entity_id": "project-1"})
    await call(client, "post", ep, ep, 400, json={"events": None})
    await call(client, "post", ep, ep, 401, headers={}, json={"url": hook})

    body = await call(client, "get", ep, f"{ep}?limit=1", 200)
    assert [e["endpoint_id"] for e in body["data"]] == [first]
    assert body["has_more"] is True and body["data"][0]["secret"] is None
    body = await call(client, "get", ep, f"{ep}?limit=1&token={body['next_token']}", 200)
    assert [e["endpoint_id"] for e in body["data"]] == [second]
    assert (body["has_more"], body["next_token"]) == (False, None)
    await call(client, "get", ep, f"{ep}?limit=0", 400)
    await call(client, "get", ep, f"{ep}?token=nope", 400)
    await call(client, "get", ep, ep, 401, headers={})
    body = await call(client, "get", ep, ep, 200, headers={"x-api-key": "someone-else"})
    assert body["data"] == []

    body = await call(
        client, "patch", one, f"{ep}/{second}", 200, json={"events": ["video_translate.success"]}
    )
    assert body["data"]["events"] == ["video_translate.success"] and body["data"]["url"] == hook
    await call(client, "patch", one, f"{ep}/{second}", 400, json={})
    await call(client, "patch", one, f"{ep}/{second}", 400, json={"url": "nope"})
    await call(client, "patch", one, f"{ep}/nope", 404, json={"url": hook})
    await call(client, "patch", one, f"{ep}/{second}", 401, headers={}, json={"url": hook})
    other = {"x-api-key": "someone-else"}
    await call(client, "patch", one, f"{ep}/{second}", 404, headers=other, json={"url": hook})

    body = await call(client, "post", rot, f"{ep}/{first}/rotate-secret", 200)
    assert body["data"]["endpoint_id"] == first
    assert body["data"]["secret"].startswith("whsec_")
    assert body["data"]["secret"] != created["secret"]
    await call(client, "post", rot, f"{ep}/nope/rotate-secret", 404)
    await call(client, "post", rot, f"{ep}/{first}/rotate-secret", 404, headers=other)
    await call(client, "post", rot, f"{ep}/{first}/rotate-secret", 401, headers={})

    await call(client, "delete", one, f"{ep}/{second}", 404, headers=other)
    await call(client, "delete", one, f"{ep}/{second}", 401, headers={})
    body = await call(client, "delete", one, f"{ep}/{second}", 200)
    assert body["error"] is None
    await call(client, "delete", one, f"{ep}/{second}", 404)

    et = "/v3/webhooks/event-types"
    body = await call(client, "get", et, et, 200)
    assert [t["event_type"] for t in body["data"]] == [
        "video_translate.success",
        "video_translate.fail",
        "proofread_creation.success",
        "proofread_creation.fail",
    ]
    await call(client, "get", et, et, 401, headers={})

    ev = "/v3/webhooks/events"
    body = await call(client, "get", ev, f"{ev}?event_type=video_translate.success", 200)
    assert body["data"] and all(e["event_type"] == "video_translate.success" for e in body["data"])
    await call(client, "get", ev, f"{ev}?event_type=video.done", 400)
    await call(client, "get", ev, f"{ev}?limit=101", 400)
    await call(client, "get", ev, f"{ev}?token=x", 400)
    await call(client, "get", ev, ev, 401, headers={})


async def test_rate_limits_and_store_failures_answer_in_the_envelope(api: ApiFactory) -> None:
    client = await api(rate_limit=1)
    free = {**KEY, "X-Dubsim-Plan": "free"}
    v = "/v3/video-translations"
    await call(
        client, "post", v, v, 200, headers=free, json={"video": VIDEO, "output_languages": ["Thai"]}
    )
    body = await call(
        client, "post", v, v, 429, headers=free, json={"video": VIDEO, "output_languages": ["Thai"]}
    )
    assert body["error"]["code"] == "rate_limit_exceeded"
    p = "/v2/video_translate"
    body = await call(
        client,
        "post",
        p,
        p,
        429,
        headers=free,
        json={"video_url": VIDEO["url"], "output_language": "Thai"},
    )
    assert body["data"] is None  # v2 errors keep the data key
    # an injected read fault is HeyGen-shaped too
    await client.patch("/v1/config", json={"fault_rate": 1, "fault_stall_s": 0}, headers=ADMIN)
    resp = await client.get(f"{v}/anything", headers=KEY)
    assert resp.status in (500, 503, 408)
    body = await resp.json()
    assert body["error"]["code"] == "injected_fault" and body["error"]["doc_url"] is None


@pytest.mark.parametrize("header", ["x-api-key", "Authorization"])
async def test_either_key_header_names_the_user(api: ApiFactory, header: str) -> None:
    client = await api()
    value = "Bearer carol-key" if header == "Authorization" else "carol-key"
    v = "/v3/video-translations"
    body = await call(
        client,
        "post",
        v,
        v,
        200,
        headers={header: value},
        json={"video": VIDEO, "output_languages": ["Dutch"]},
    )
    job_id = body["data"]["video_translation_ids"][0]
    job = await (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["user_id"] == "carol-key" and job["target_language"] == "nl"
    assert job["role"] == "premium"  # HEYGEN_PLAN=pro: a paid plan


BAD_BODIES: list[Any] = [
    b"",
    b"not json",
    b"[]",
    b"null",
    b'"text"',
    b"{" * 5000,
    b'{"video": {"type": "url", "url": 1}, "output_languages": ["Spanish"]}',
    b'{"video": {"type": "url", "url": "ftp://x"}, "output_languages": ["Spanish"]}',
    b'{"video": {"type": "url", "url": "https://x"}, "output_languages": "Spanish"}',
    b'{"video": {"type": "url", "url": "https://x"}, "output_languages": ["Spanish", "spanish"]}',
    b'{"video_url": "https://x", "output_language": "Spanish", "output_languages": ["French"]}',
    b'{"video_url": "https://x", "output_language": "Spanish", "speaker_num": -1}',
    b'{"video_url": "https://x", "output_language": "Spanish", "start_time": 5, "end_time": 1}',
    b'{"video_url": "https://x", "output_language": "Spanish", "mode": "fast"}',
    b'{"video_url": "\\u0000", "output_language": "\\ud800"}',
    b'{"title": ' + b'"x"' * 2 + b"}",
    b'{"title": "' + b"x" * 2000 + b'"}',
    b'{"srt": {"type": "asset_id"}}',
    b'{"captions": "yes"}',
]


async def test_bad_input_is_a_heygen_4xx_never_a_500(api: ApiFactory) -> None:
    """Garbage to every facade route: a HeyGen-shaped 4xx each time, and nothing changes."""
    from tests.reliability.conftest import fingerprint

    client = await api(auto_process=False)
    v = "/v3/video-translations"
    (job,) = (
        await call(client, "post", v, v, 200, json={"video": VIDEO, "output_languages": ["Hindi"]})
    )["data"]["video_translation_ids"]
    proof = (
        await call(
            client,
            "post",
            f"{v}/proofreads",
            f"{v}/proofreads",
            200,
            json={"video": VIDEO, "output_languages": ["Hindi"], "title": "t"},
        )
    )["data"]["proofread_ids"][0]
    (endpoint,) = (
        (
            await call(
                client,
                "post",
                "/v3/webhooks/endpoints",
                "/v3/webhooks/endpoints",
                200,
                json={"url": "http://127.0.0.1:9/h"},
            )
        )["data"]["endpoint_id"],
    )
    before = fingerprint(client.app), await client.app[SERVICE].store.docs("webhook")
    odd_headers: list[dict[str, str]] = [
        KEY,
        {**KEY, "X-Dubsim-Scenario": "{not json"},
        {**KEY, "X-Dubsim-Scenario": '{"outcome": "exploded"}'},
        {**KEY, "X-Dubsim-Plan": "enterprise"},
        {**KEY, "Idempotency-Key": "x" * 300},
        {"x-api-key": "k" * 500},
        {"Authorization": "Basic Zm9vOmJhcg=="},
    ]
    for path in sorted(FACADE_PATHS):
        for method in SPEC["paths"][path]:
            url = (
                path.replace("{video_translation_id}", job)
                .replace("{proofread_id}", proof)
                .replace("{endpoint_id}", endpoint)
            )
            for headers in odd_headers:
                identified = headers.get("x-api-key") == KEY["x-api-key"]
                takes_nothing = method == "delete" or path.endswith("/rotate-secret")
                if takes_nothing and identified and "X-Dubsim-Plan" not in headers:
                    continue  # no body, no scenario: it would succeed
                for data in BAD_BODIES if method in ("post", "put", "patch") else [b""]:
                    resp = await client.request(
                        method,
                        url,
                        data=data,
                        headers={"Content-Type": "application/json", **headers},
                    )
                    body = await resp.json()
                    # reads ignore a body and the mutation-only headers; everything else is 4xx
                    read_ok = method == "get" and resp.status == 200
                    assert read_ok or 400 <= resp.status < 500, (method, url, headers, data, body)
                    validate(method, path, resp.status, body)
    assert (fingerprint(client.app), await client.app[SERVICE].store.docs("webhook")) == before


async def test_the_admin_token_is_not_an_api_key(api: ApiFactory) -> None:
    """It would be kept as a user id, in the clear, in every job it made."""
    client = await api()
    v = "/v3/video-translations"
    for headers in (ADMIN, {"x-api-key": ADMIN["Authorization"].split()[1]}):
        body = await call(
            client,
            "post",
            v,
            v,
            401,
            headers=headers,
            json={"video": VIDEO, "output_languages": ["Thai"]},
        )
        assert body["error"]["code"] == "unauthorized"
    assert (await (await client.get("/v1/jobs", headers=ADMIN)).json())["jobs"] == []
