"""The HeyGen facade attacked from the outside: each test is a break found by driving a running
server the way a demanding HeyGen integrator would, reading only docs/heygen.md and
docs/webhooks.md. The expected answers are the docs' words, written out here literally (not
read from the code).

- A HeyGen endpoint is also one of the user's /v1/webhooks (docs/heygen.md). Editing it there
  (its description, its events) must not make the v3 view claim events it is not sent, or
  shapes HeyGen never answers; a v3 PATCH of `events` must make the endpoint receive them.
- Idempotency-Key: "a repeat of the same request gets the first answer again, another request
  with the same key 400". The same JSON sent with its keys in another order or other spacing
  is the same request; the same body with another X-Dubsim-Plan or X-Dubsim-Scenario (which
  decide what the jobs are) is another request.
- "429 + Retry-After": a request that no wait can let in (more languages than the plan's
  concurrency + HEYGEN_QUEUE, fixed while the process runs) must not be told to come back in a
  second; it is bad input, a 400 naming `output_languages`, and nothing is made.
- "param names the field": a nested field is named by its path (`video.asset_id`), the same
  whichever way it is wrong.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient
from multidict import CIMultiDict

from tests.conftest import ADMIN, ApiFactory, ServerProcess, wait_for_status
from tests.webhook_support import Receiver

VIDEO = {"type": "url", "url": "https://videos.example/talk.mp4"}
SENT_TYPES = {
    "video_translate.success",
    "video_translate.fail",
    "proofread_creation.success",
    "proofread_creation.fail",
}


def key(user: str, **headers: str) -> dict[str, str]:
    return {"x-api-key": user, **headers}


async def user_jobs(client: TestClient[Any, Any], user: str) -> int:
    resp = await client.get(f"/v1/jobs?user={user}&limit=500", headers=ADMIN)
    return len((await resp.json())["jobs"])


async def v3_endpoints(client: TestClient[Any, Any], user: str) -> list[dict[str, Any]]:
    """Every page of the user's v3 endpoints."""
    found: list[dict[str, Any]] = []
    token = None
    while True:
        query = "limit=100" + (f"&token={token}" if token else "")
        resp = await client.get(f"/v3/webhooks/endpoints?{query}", headers=key(user))
        assert resp.status == 200
        page = await resp.json()
        found += page["data"]
        token = page["next_token"]
        if token is None:
            return found


@pytest.fixture
async def receiver() -> Any:
    r = await Receiver().start()
    yield r
    await r.close()


# ---- a HeyGen endpoint edited through /v1 ----------------------------------------------------


async def test_a_v1_description_edit_leaves_the_v3_events_true(api: ApiFactory) -> None:
    client = await api()
    made = await client.post(
        "/v3/webhooks/endpoints",
        json={"url": "http://127.0.0.1:9/hook", "events": ["video_translate.success"]},
        headers=key("alice"),
    )
    assert made.status == 200
    endpoint_id = (await made.json())["data"]["endpoint_id"]
    # docs/webhooks.md: PATCH /v1/webhooks/{id} {description?}: the user's own endpoint
    edited = await client.patch(
        f"/v1/webhooks/{endpoint_id}", json={"description": "prod"}, headers={"X-User-Id": "alice"}
    )
    assert edited.status == 200
    (listed,) = await v3_endpoints(client, "alice")
    assert listed["events"] == ["video_translate.success"]


async def test_a_v1_events_edit_shows_in_v3_and_a_v3_patch_restores_delivery(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    made = await client.post(
        "/v3/webhooks/endpoints", json={"url": receiver.url("/e")}, headers=key("erin")
    )
    endpoint_id = (await made.json())["data"]["endpoint_id"]
    edited = await client.patch(
        f"/v1/webhooks/{endpoint_id}",
        json={"events": ["job.created"]},
        headers={"X-User-Id": "erin"},
    )
    assert edited.status == 200
    # the endpoint is sent no HeyGen event now: the v3 view must not say "all of them" (null)
    (listed,) = await v3_endpoints(client, "erin")
    assert listed["events"] is not None
    assert not set(listed["events"]) & SENT_TYPES
    # a HeyGen client sets its events back through v3: they are delivered again
    patched = await client.patch(
        f"/v3/webhooks/endpoints/{endpoint_id}",
        json={"events": ["video_translate.success"]},
        headers=key("erin"),
    )
    assert patched.status == 200
    assert (await patched.json())["data"]["events"] == ["video_translate.success"]
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", "output_language": "French"},
        headers=key("erin"),
    )
    job_id = (await resp.json())["data"]["video_translate_id"]
    await wait_for_status(client, job_id, {"completed"})
    (got,) = await receiver.wait_for(1)
    assert got.event["event_type"] == "video_translate.success"
    assert got.event["event_data"]["video_translate_id"] == job_id


# ---- Idempotency-Key ------------------------------------------------------------------------


async def test_the_same_json_in_another_order_or_spacing_is_the_same_request(
    api: ApiFactory,
) -> None:
    client = await api()
    body = {"video": VIDEO, "output_languages": ["Spanish", "French"], "title": "t"}
    headers = key("ord", **{"Idempotency-Key": "k-1", "Content-Type": "application/json"})
    first = await client.post("/v3/video-translations", data=json.dumps(body), headers=headers)
    assert first.status == 200
    ids = (await first.json())["data"]["video_translation_ids"]
    reordered = json.dumps(dict(reversed(list(body.items()))), indent=2)
    again = await client.post("/v3/video-translations", data=reordered, headers=headers)
    assert again.status == 200, await again.text()
    assert again.headers.get("Idempotent-Replayed") == "true"
    assert (await again.json())["data"]["video_translation_ids"] == ids
    assert await user_jobs(client, "ord") == 2


@pytest.mark.parametrize(
    ("header", "first", "second"),
    [
        ("X-Dubsim-Plan", "pro", "scale"),
        ("X-Dubsim-Scenario", '{"outcome": "stuck"}', '{"outcome": "permanently_failed"}'),
    ],
)
async def test_another_plan_or_scenario_with_the_same_key_is_another_request(
    api: ApiFactory, header: str, first: str, second: str
) -> None:
    client = await api()
    body = {"video": VIDEO, "output_languages": ["German"]}
    one = await client.post(
        "/v3/video-translations",
        json=body,
        headers=key("hdr", **{"Idempotency-Key": "k-2", header: first}),
    )
    assert one.status == 200
    two = await client.post(
        "/v3/video-translations",
        json=body,
        headers=key("hdr", **{"Idempotency-Key": "k-2", header: second}),
    )
    assert two.status == 400, await two.text()
    error = (await two.json())["error"]
    assert (error["code"], error["param"]) == ("invalid_parameter", "Idempotency-Key")
    assert await user_jobs(client, "hdr") == 1


# ---- a request no wait lets in ---------------------------------------------------------------


async def test_more_languages_than_the_plan_ever_holds_is_a_400_not_a_retry(
    api: ApiFactory,
) -> None:
    client = await api(heygen_queue=2)  # pro: 3 at once + 2 waiting = 5 unfinished at most
    six = ["Spanish", "French", "German", "Italian", "Dutch", "Polish"]
    resp = await client.post(
        "/v3/video-translations", json={"video": VIDEO, "output_languages": six}, headers=key("big")
    )
    assert resp.status == 400, await resp.text()
    assert "Retry-After" not in resp.headers
    error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == ("invalid_parameter", "output_languages")
    assert await user_jobs(client, "big") == 0
    # five fit: the same request with one language fewer is made
    ok = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": six[:5]},
        headers=key("big"),
    )
    assert ok.status == 200


# ---- param names a nested field by its path --------------------------------------------------


@pytest.mark.parametrize(
    ("video", "param"),
    [
        ({"type": "asset_id"}, "video.asset_id"),  # missing
        ({"type": "asset_id", "asset_id": ""}, "video.asset_id"),  # empty
        ({"type": "url", "url": "https://e.example/a", "extra": 1}, "video.extra"),  # unknown
    ],
)
async def test_a_nested_field_is_named_by_its_path(
    api: ApiFactory, video: dict[str, Any], param: str
) -> None:
    client = await api()
    resp = await client.post(
        "/v3/video-translations",
        json={"video": video, "output_languages": ["French"]},
        headers=key("nest"),
    )
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["code"], error["param"]) == ("invalid_parameter", param)


# ---- at most 100 endpoints per owner, also made at once through two processes ---------------


async def test_at_most_100_endpoints_per_owner_made_at_once_on_two_processes(
    server_process: Any, redis_url: str
) -> None:
    """docs/webhooks.md: "At most 100 endpoints per owner" (409 beyond); on Redis the
    processes are one service (found: 110 made by 110 requests sent at once to two)."""
    one: ServerProcess = server_process(redis_url=redis_url)
    two: ServerProcess = server_process(redis_url=redis_url)
    async with aiohttp.ClientSession() as http:

        async def make(i: int) -> int:
            base = (one, two)[i % 2].url
            async with http.post(
                f"{base}/v3/webhooks/endpoints",
                json={"url": f"http://127.0.0.1:9/hook{i}"},
                headers=key("many"),
            ) as resp:
                return resp.status

        codes = await asyncio.gather(*(make(i) for i in range(120)))
        # 503 (+ Retry-After) is the documented answer when the store can't take them all
        assert set(codes) <= {200, 409, 503}, codes
        made: list[str] = []
        token = None
        while True:
            query = "limit=100" + (f"&token={token}" if token else "")
            async with http.get(
                f"{one.url}/v3/webhooks/endpoints?{query}", headers=key("many")
            ) as resp:
                page = await resp.json()
            made += [e["endpoint_id"] for e in page["data"]]
            token = page["next_token"]
            if token is None:
                break
    assert codes.count(200) == len(made) <= 100, (codes.count(200), len(made))


# ---- one header, two values ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "values", "status", "param"),
    [
        # docs/heygen.md names one key per request ("neither is taken silently over the other"
        # for x-api-key and Bearer): two x-api-key headers that differ are the same doubt
        ("x-api-key", ("alice", "bob"), 401, None),
        ("Idempotency-Key", ("k-1", "k-2"), 400, "Idempotency-Key"),
        ("X-Dubsim-Plan", ("free", "scale"), 400, "X-Dubsim-Plan"),
        ("X-Dubsim-Scenario", ('{"duration_s": 1}', '{"duration_s": 2}'), 400, "X-Dubsim-Scenario"),
    ],
)
async def test_a_header_sent_twice_with_different_values_is_refused(
    api: ApiFactory, name: str, values: tuple[str, str], status: int, param: str | None
) -> None:
    client = await api()
    headers = CIMultiDict([("x-api-key", "alice")]) if name != "x-api-key" else CIMultiDict()
    for value in values:
        headers.add(name, value)
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", "output_language": "French"},
        headers=headers,
    )
    assert resp.status == status, await resp.text()
    body = await resp.json()
    assert body["data"] is None and body["error"]["param"] == param
    assert await user_jobs(client, "alice") == await user_jobs(client, "bob") == 0
    # the same value twice is one value
    same = CIMultiDict([("x-api-key", "alice"), (name, values[0]), (name, values[0])])
    ok = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", "output_language": "French"},
        headers=same,
    )
    assert ok.status == 200, await ok.text()


# ---- a method a HeyGen path does not have ----------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "v2"),
    [
        ("PUT", "/v3/video-translations/some-id", False),
        ("POST", "/v3/video-translations/some-id/caption", False),
        ("PATCH", "/v3/video-translations", False),
        ("GET", "/v3/webhooks/endpoints/some-id", False),
        ("PUT", "/v3/webhooks/endpoints", False),
        ("DELETE", "/v2/video_translate/some-id", True),
        ("POST", "/v2/video_translate/some-id", True),
    ],
)
async def test_a_method_the_route_has_not_is_a_heygen_4xx_not_a_revoked_key(
    api: ApiFactory, method: str, path: str, v2: bool
) -> None:
    """Found: with AUTH=open and the key "alice", `PUT /v3/video-translations/{id}` answered
    401 "unknown or revoked API key" in /v1's envelope: the key is fine, the method is not.
    docs/heygen.md: errors are `{"error": {code, message, param, doc_url}}` (v2 adds
    `"data": null`), bad input a 4xx in that envelope."""
    client = await api()
    resp = await client.request(method, path, json={}, headers=key("alice"))
    assert 400 <= resp.status < 500 and resp.status != 401, await resp.text()
    body = await resp.json()
    assert set(body["error"]) == {"code", "message", "param", "doc_url"}
    assert body["error"]["code"] == "method_not_allowed"
    assert ("data" in body) is v2 and body.get("data") is None


@pytest.mark.parametrize(
    ("path", "v2"),
    [
        ("/v3/video-translations/some-id/nothing", False),
        ("/v3/video-translations/proofreads/some-id/nothing", False),
        ("/v3/webhooks/nothing", False),
        ("/v3/nothing", False),
        ("/v2/video_translate/some-id/nothing", True),
        ("/v2/nothing", True),
    ],
)
async def test_a_path_no_heygen_route_has_is_a_heygen_404_not_a_revoked_key(
    api: ApiFactory, path: str, v2: bool
) -> None:
    client = await api()
    resp = await client.get(path, headers=key("alice"))
    assert resp.status == 404, await resp.text()
    body = await resp.json()
    assert set(body["error"]) == {"code", "message", "param", "doc_url"}
    assert body["error"]["code"] == "not_found"
    assert ("data" in body) is v2 and body.get("data") is None
    # without a key it is the 401 of every HeyGen route
    assert (await client.get(path)).status == 401


# ---- renames at once -------------------------------------------------------------------------


async def test_renames_at_once_all_apply_and_none_is_refused(api: ApiFactory) -> None:
    """Found: 60 PATCH {"title"} at once on one translation: 49 answered 409 "conflict" (a code
    docs/heygen.md does not have: its 409 is request_in_progress + Retry-After). A rename is a
    last-writer-wins write; each must be applied, in some order."""
    client = await api()
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", "output_language": "French"},
        headers=key("renamer", **{"X-Dubsim-Scenario": '{"outcome": "stuck"}'}),
    )
    job_id = (await resp.json())["data"]["video_translate_id"]
    titles = [f"title {n}" for n in range(60)]

    async def rename(title: str) -> int:
        answer = await client.patch(
            f"/v3/video-translations/{job_id}", json={"title": title}, headers=key("renamer")
        )
        return answer.status

    codes = await asyncio.gather(*(rename(t) for t in titles))
    assert codes == [200] * len(titles), codes
    got = await client.get(f"/v3/video-translations/{job_id}", headers=key("renamer"))
    assert (await got.json())["data"]["title"] in titles


async def test_deletes_at_once_one_deletes_the_rest_are_404(api: ApiFactory) -> None:
    """docs/heygen.md: DELETE "cancels it if unfinished; from then on 404 here". Found: ten
    DELETEs (and renames) at once all answered 200, renames applied after the delete too."""
    client = await api()
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://videos.example/a.mp4", "output_language": "French"},
        headers=key("deleter", **{"X-Dubsim-Scenario": '{"outcome": "stuck"}'}),
    )
    job_id = (await resp.json())["data"]["video_translate_id"]
    path = f"/v3/video-translations/{job_id}"

    async def delete() -> int:
        return (await client.delete(path, headers=key("deleter"))).status

    async def rename(n: int) -> tuple[int, str | None]:
        answer = await client.patch(path, json={"title": f"t{n}"}, headers=key("deleter"))
        return answer.status, (await answer.json())["error"] if answer.status != 200 else None

    deletes = [asyncio.ensure_future(delete()) for _ in range(10)]
    renames = [asyncio.ensure_future(rename(n)) for n in range(10)]
    codes = await asyncio.gather(*deletes)
    assert sorted(codes) == [200] + [404] * 9, codes
    for status, error in await asyncio.gather(*renames):
        assert status in (200, 404), (status, error)
    assert (await client.get(path, headers=key("deleter"))).status == 404


async def test_endpoint_changes_at_once_all_apply_and_one_delete_wins(api: ApiFactory) -> None:
    """Found: 60 PATCHes of one endpoint at once: 9 answered 409 "conflict"; ten DELETEs at
    once on one process: four answered 200. A DELETE makes the endpoint 404 from then on."""
    client = await api()
    made = await client.post(
        "/v3/webhooks/endpoints", json={"url": "http://127.0.0.1:9/hook"}, headers=key("ed")
    )
    path = f"/v3/webhooks/endpoints/{(await made.json())['data']['endpoint_id']}"
    choices = [["video_translate.success"], ["video_translate.fail"]]

    async def patch(n: int) -> int:
        answer = await client.patch(path, json={"events": choices[n % 2]}, headers=key("ed"))
        return answer.status

    codes = await asyncio.gather(*(patch(n) for n in range(60)))
    assert codes == [200] * 60, codes
    (listed,) = await v3_endpoints(client, "ed")
    assert listed["events"] in choices

    async def delete() -> int:
        return (await client.delete(path, headers=key("ed"))).status

    codes = await asyncio.gather(*(delete() for _ in range(10)))
    assert sorted(codes) == [200] + [404] * 9, codes
    assert await v3_endpoints(client, "ed") == []


async def test_a_failed_proofread_is_not_told_to_wait(api: ApiFactory) -> None:
    """Found: the SRT or `generate` of a failed proofread answered "the proofread is failed;
    wait until it is completed": a failed proofread never completes (docs/heygen.md: status
    `processing` -> `completed` (or `failed`))."""
    client = await api()
    resp = await client.post(
        "/v3/video-translations/proofreads",
        json={"video": VIDEO, "output_languages": ["French"], "title": "p"},
        headers=key(
            "proofer",
            **{"X-Dubsim-Scenario": '{"outcome": "permanently_failed", "duration_s": 0.05}'},
        ),
    )
    (proofread,) = (await resp.json())["data"]["proofread_ids"]
    await wait_for_status(client, proofread, {"permanently_failed"})
    base = f"/v3/video-translations/proofreads/{proofread}"
    for answer in (
        await client.get(f"{base}/srt", headers=key("proofer")),
        await client.post(f"{base}/generate", json={}, headers=key("proofer")),
    ):
        assert answer.status == 400
        error = (await answer.json())["error"]
        assert error["param"] == "proofread_id"
        assert "wait" not in error["message"], error["message"]


async def test_deletes_of_an_endpoint_through_two_processes_one_wins(
    server_process: Any, redis_url: str
) -> None:
    """Found: ten DELETEs of one endpoint at once, sent to two Redis processes: two answered
    200. From a DELETE on, the endpoint is 404 (docs/heygen.md), on every process."""
    one: ServerProcess = server_process(redis_url=redis_url)
    two: ServerProcess = server_process(redis_url=redis_url)
    async with aiohttp.ClientSession() as http:
        for round_ in range(6):
            async with http.post(
                f"{one.url}/v3/webhooks/endpoints",
                json={"url": f"http://127.0.0.1:9/hook{round_}"},
                headers=key("twice-deleted"),
            ) as resp:
                endpoint_id = (await resp.json())["data"]["endpoint_id"]

            async def delete(n: int, endpoint_id: str = endpoint_id) -> int:
                base = (one, two)[n % 2].url
                async with http.delete(
                    f"{base}/v3/webhooks/endpoints/{endpoint_id}", headers=key("twice-deleted")
                ) as resp:
                    return resp.status

            codes = await asyncio.gather(*(delete(n) for n in range(10)))
            assert sorted(codes) == [200] + [404] * 9, (round_, codes)
