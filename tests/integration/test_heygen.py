"""The HeyGen facade's behaviour: status words, links, plans, Idempotency-Key, lists, deletes,
proofreads, and a HeyGen client's whole flow over real HTTP. Shapes are
test_heygen_contract.py's job; here the expected values are written out literally."""

from __future__ import annotations

import asyncio
import hashlib
import time
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import msgspec
from aiohttp.test_utils import TestClient

from service.api._heygen import FACADE
from service.appkeys import SERVICE
from service.links import Links
from tests.conftest import ADMIN, ADMIN_TOKEN, ApiFactory, ServerProcess, wait_for_status

VIDEO = {"type": "url", "url": "https://videos.example/talk.mp4"}
STUCK = '{"outcome": "stuck"}'
FAILURE_MESSAGES = {
    "the translation backend did not answer in time",
    "the translation backend reported an internal error",
    "the attempt ended unexpectedly",
}


def key(user: str, plan: str | None = None, scenario: str | None = None) -> dict[str, str]:
    headers = {"x-api-key": user}
    if plan is not None:
        headers["X-Dubsim-Plan"] = plan
    if scenario is not None:
        headers["X-Dubsim-Scenario"] = scenario
    return headers


async def v3_submit(
    client: TestClient[Any, Any], headers: dict[str, str], languages: list[str], **extra: Any
) -> list[str]:
    resp = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": languages, **extra},
        headers=headers,
    )
    body = await resp.json()
    assert resp.status == 200, body
    return body["data"]["video_translation_ids"]  # type: ignore[no-any-return]


async def statuses(client: TestClient[Any, Any], user: str) -> dict[str, int]:
    resp = await client.get(f"/v1/jobs?user={user}&limit=500", headers=ADMIN)
    counts: dict[str, int] = {}
    for job in (await resp.json())["jobs"]:
        counts[job["status"]] = counts.get(job["status"], 0) + 1
    return counts


async def until(client: TestClient[Any, Any], user: str, want: dict[str, int]) -> None:
    """Wait (generously) until the user's jobs are in exactly these states."""
    try:
        async with asyncio.timeout(20):
            while await statuses(client, user) != want:
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"{user}: {await statuses(client, user)}, not {want}") from None


async def reach(client: TestClient[Any, Any], job_id: str, status: str) -> None:
    """Wait (generously) for a job that may sit in `status` for good (a stuck one)."""
    async with asyncio.timeout(20):
        while (await (await client.get(f"/v1/jobs/{job_id}")).json())["status"] != status:
            await asyncio.sleep(0.02)


def link_parts(url: str) -> tuple[str, str, str, str]:
    """(origin, path, expires, sig) of a signed link."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    return f"{parts.scheme}://{parts.netloc}", parts.path, query["expires"][0], query["sig"][0]


# ---- status words and links ----------------------------------------------------------------


async def test_v2_status_moves_to_success_with_a_fresh_signed_link(api: ApiFactory) -> None:
    client = await api(result_url_ttl_s=120)
    alice = key("alice-key")
    resp = await client.post(
        "/v2/video_translate",
        json={
            "video_url": "https://videos.example/a.mp4",
            "output_language": "spanish",  # names match without regard to case
            "title": "Keynote",
            "callback_id": "cb-1",
            "callback_url": "http://127.0.0.1:9/heygen",  # loopback, nothing listens
            "mode": "precision",
            "enable_caption": True,
        },
        headers=alice,
    )
    assert resp.status == 200
    job_id = (await resp.json())["data"]["video_translate_id"]
    # an ordinary dubsim job: the key is the user, the language a code, pro a premium job
    job = await (await client.get(f"/v1/jobs/{job_id}")).json()
    assert (job["user_id"], job["target_language"], job["role"]) == ("alice-key", "es", "premium")
    await wait_for_status(client, job_id, {"completed"})
    before = time.time()
    data = (await (await client.get(f"/v2/video_translate/{job_id}", headers=alice)).json())["data"]
    assert data["status"] == "success"
    assert (data["title"], data["callback_id"], data["output_language"], data["message"]) == (
        "Keynote",
        "cb-1",
        "Spanish",
        None,
    )
    origin, path, expires, sig = link_parts(data["url"])
    assert origin == str(client.make_url("")).rstrip("/")
    assert path == f"/v1/jobs/{job_id}/result"
    assert before + 120 - 2 <= int(expires) <= time.time() + 120 + 1
    assert Links(ADMIN_TOKEN).valid(job_id, "result", expires, sig, time.time())
    v3 = (await (await client.get(f"/v3/video-translations/{job_id}", headers=alice)).json())[
        "data"
    ]
    assert (v3["status"], v3["title"], v3["callback_id"]) == ("completed", "Keynote", "cb-1")
    assert v3["video_url"].startswith(origin + f"/v1/jobs/{job_id}/result?expires=")
    assert v3["audio_url"] is None


async def test_waiting_and_running_words(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    headers = key("w", scenario=STUCK)
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://v.example/w.mp4", "output_language": "Thai"},
        headers=headers,
    )
    job_id = (await resp.json())["data"]["video_translate_id"]

    async def words() -> tuple[str, str]:
        v2 = await (await client.get(f"/v2/video_translate/{job_id}", headers=headers)).json()
        v3 = await (await client.get(f"/v3/video-translations/{job_id}", headers=headers)).json()
        return v2["data"]["status"], v3["data"]["status"]

    assert await words() == ("pending", "pending")
    assert (await client.post("/v1/process", json={"count": 1}, headers=ADMIN)).status == 200
    await reach(client, job_id, "processing")
    assert await words() == ("running", "running")


async def test_audio_only_translations_link_the_audio(api: ApiFactory) -> None:
    client = await api()
    (job_id,) = await v3_submit(client, key("u"), ["German"], translate_audio_only=True)
    await wait_for_status(client, job_id, {"completed"})
    data = (await (await client.get(f"/v3/video-translations/{job_id}", headers=key("u"))).json())[
        "data"
    ]
    assert data["video_url"] is None and "/result?expires=" in data["audio_url"]
    assert data["translate_audio_only"] is True


async def test_failed_and_deleted_translations(api: ApiFactory) -> None:
    client = await api()
    bad = key("bob", scenario='{"outcome": "permanently_failed", "duration_s": 0.05}')
    resp = await client.post(
        "/v2/video_translate",
        json={"video_url": "https://v.example/x.mp4", "output_language": "French"},
        headers=bad,
    )
    job_id = (await resp.json())["data"]["video_translate_id"]
    await wait_for_status(client, job_id, {"permanently_failed"})
    data = (await (await client.get(f"/v2/video_translate/{job_id}", headers=bad)).json())["data"]
    assert data["status"] == "failed" and data["url"] is None
    assert data["message"] in FAILURE_MESSAGES
    detail = (await (await client.get(f"/v3/video-translations/{job_id}", headers=bad)).json())[
        "data"
    ]
    assert detail["status"] == "failed" and detail["failure_message"] in FAILURE_MESSAGES

    (running,) = await v3_submit(client, key("bob", scenario=STUCK), ["Italian"])
    await reach(client, running, "processing")
    resp = await client.delete(f"/v3/video-translations/{running}", headers=key("bob"))
    assert resp.status == 200 and (await resp.json()) == {"data": {"id": running}}
    job = await (await client.get(f"/v1/jobs/{running}")).json()
    assert (job["status"], job["cancel_reason"]) == ("cancelled", "deleted through the HeyGen API")
    assert (await client.get(f"/v3/video-translations/{running}", headers=key("bob"))).status == 404
    listed = (await (await client.get("/v3/video-translations", headers=key("bob"))).json())["data"]
    assert [item["id"] for item in listed] == [job_id]


# ---- plans: concurrency and the queue bound ---------------------------------------------------


async def test_jobs_beyond_the_plans_concurrency_wait_their_turn(api: ApiFactory) -> None:
    client = await api(workers=50)
    free = key("free-user", "free", STUCK)
    first, *rest = await v3_submit(client, free, ["Spanish", "French", "German"])
    await until(client, "free-user", {"processing": 1, "pending": 2})
    pro = await v3_submit(
        client, key("pro-user", "pro", STUCK), ["Spanish", "French", "German", "Dutch"]
    )
    await until(client, "pro-user", {"processing": 3, "pending": 1})
    scale = key("scale-user", "scale", STUCK)
    await v3_submit(
        client, scale, ["Spanish", "French", "German", "Dutch", "Thai", "Greek", "Czech"]
    )
    await until(client, "scale-user", {"processing": 6, "pending": 1})
    # the free user's running job ends: the next one starts, and only one
    running = [
        j
        for j in [first, *rest]
        if (await (await client.get(f"/v1/jobs/{j}")).json())["status"] == "processing"
    ]
    assert len(running) == 1
    assert (await client.delete(f"/v3/video-translations/{running[0]}", headers=free)).status == 200
    await until(client, "free-user", {"cancelled": 1, "processing": 1, "pending": 1})
    # waiting ones read as pending
    words = {
        (await (await client.get(f"/v3/video-translations/{j}", headers=free)).json())["data"][
            "status"
        ]
        for j in [first, *rest]
        if j != running[0]
    }
    assert words == {"pending", "running"}
    # a v1 job of the same user is not held by the plan, and holds none of its slots
    v1 = await client.post(
        "/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers={"X-User-Id": "free-user"}
    )
    v1_id = (await v1.json())["id"]
    await reach(client, v1_id, "processing")
    (now_running,) = [
        j
        for j in [first, *rest]
        if (await (await client.get(f"/v1/jobs/{j}")).json())["status"] == "processing"
    ]
    assert (
        await client.delete(f"/v3/video-translations/{now_running}", headers=free)
    ).status == 200
    await until(client, "free-user", {"cancelled": 2, "processing": 2})
    assert len(pro) == 4


async def test_over_the_queue_bound_is_429_and_nothing_is_made(api: ApiFactory) -> None:
    client = await api(heygen_queue=2)
    free = key("q", "free", STUCK)
    await v3_submit(client, free, ["Spanish", "French"])
    await v3_submit(client, free, ["German"])  # 1 running + 2 waiting: the bound
    await until(client, "q", {"processing": 1, "pending": 2})
    resp = await client.post(
        "/v3/video-translations", json={"video": VIDEO, "output_languages": ["Thai"]}, headers=free
    )
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
    assert await statuses(client, "q") == {"processing": 1, "pending": 2}


# ---- Idempotency-Key --------------------------------------------------------------------------


def held_id(user: str, idem: str) -> str:
    return hashlib.sha256(f"{user}\n{idem}".encode()).hexdigest()


async def rewrite_held(client: TestClient[Any, Any], doc_id: str, **changes: Any) -> None:
    store = client.app[SERVICE].store
    doc = await store.get_doc("heygen-idempotency", doc_id)
    assert doc is not None
    body = {**msgspec.json.decode(doc.body), **changes}
    await store.put_doc("heygen-idempotency", doc_id, msgspec.json.encode(body), doc.version)


async def test_idempotency_key_replays_refuses_and_takes_over(api: ApiFactory) -> None:
    client = await api()
    headers = {**key("idem-user"), "Idempotency-Key": "order-1"}
    request = {"video": VIDEO, "output_languages": ["Spanish", "French"]}
    first = await client.post("/v3/video-translations", json=request, headers=headers)
    ids = (await first.json())["data"]["video_translation_ids"]
    again = await client.post("/v3/video-translations", json=request, headers=headers)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["data"]["video_translation_ids"] == ids
    assert sum((await statuses(client, "idem-user")).values()) == 2
    # the same key with another request: refused
    other = await client.post(
        "/v3/video-translations", json={**request, "title": "x"}, headers=headers
    )
    assert other.status == 400
    assert (await other.json())["error"]["param"] == "Idempotency-Key"
    # the same key on another user is another key
    assert (
        await client.post(
            "/v3/video-translations",
            json=request,
            headers={**key("else"), "Idempotency-Key": "order-1"},
        )
    ).status == 200
    doc_id = held_id("idem-user", "order-1")
    # still being processed (by another request): 409 request_in_progress
    now = time.time()
    await rewrite_held(client, doc_id, state="processing", claimed_at=now)
    busy = await client.post("/v3/video-translations", json=request, headers=headers)
    assert busy.status == 409 and int(busy.headers["Retry-After"]) >= 1
    assert (await busy.json())["error"]["code"] == "request_in_progress"
    # the first request died mid-way (processing for long): a retry takes over and finds the
    # jobs it had made instead of making them again
    await rewrite_held(client, doc_id, state="processing", claimed_at=now - 120)
    retry = await client.post("/v3/video-translations", json=request, headers=headers)
    assert retry.status == 200 and "Idempotent-Replayed" not in retry.headers
    assert (await retry.json())["data"]["video_translation_ids"] == ids
    assert sum((await statuses(client, "idem-user")).values()) == 2
    # 24 h later the key is free again
    await rewrite_held(client, doc_id, created_at=now - 25 * 3600)
    later = await client.post(
        "/v3/video-translations", json={**request, "title": "x"}, headers=headers
    )
    assert later.status == 200
    assert set((await later.json())["data"]["video_translation_ids"]).isdisjoint(ids)


async def test_an_error_frees_the_key_for_a_retry(api: ApiFactory) -> None:
    client = await api()
    headers = {**key("e"), "Idempotency-Key": "k"}
    bad = await client.patch("/v3/video-translations/nope", json={"title": "t"}, headers=headers)
    assert bad.status == 404
    again = await client.patch("/v3/video-translations/nope", json={"title": "t"}, headers=headers)
    assert again.status == 404  # run again, not a 409 and not a replay


# ---- lists and proofreads ---------------------------------------------------------------------


async def test_the_list_pages_newest_first_with_tokens(api: ApiFactory) -> None:
    client = await api()
    made: list[str] = []
    for language in ["Spanish", "French", "German", "Dutch", "Thai"]:
        made += await v3_submit(client, key("lister"), [language])
    await v3_submit(client, key("someone-else"), ["Spanish"])
    await client.post(
        "/v3/video-translations/proofreads",
        json={"video": VIDEO, "output_languages": ["Korean"], "title": "p"},
        headers=key("lister"),
    )
    seen: list[str] = []
    pages: list[tuple[int, bool]] = []
    url = "/v3/video-translations?limit=2"
    while True:
        body = await (await client.get(url, headers=key("lister"))).json()
        seen += [item["id"] for item in body["data"]]
        pages.append((len(body["data"]), body["has_more"]))
        if not body["has_more"]:
            assert body["next_token"] is None
            break
        url = f"/v3/video-translations?limit=2&token={body['next_token']}"
    assert pages == [(2, True), (2, True), (1, False)]
    assert seen == list(reversed(made))


async def test_proofread_edit_and_generate(api: ApiFactory) -> None:
    client = await api()
    editor = key("editor")
    resp = await client.post(
        "/v3/video-translations/proofreads",
        json={"video": VIDEO, "output_languages": ["Korean", "Hindi"], "title": "Demo"},
        headers=editor,
    )
    body = await resp.json()
    assert body["data"]["status"] == "processing"
    korean, hindi = body["data"]["proofread_ids"]
    jobs = [await (await client.get(f"/v1/jobs/{p}")).json() for p in (korean, hindi)]
    assert [j["target_language"] for j in jobs] == ["ko", "hi"]
    await wait_for_status(client, korean, {"completed"})
    base = f"/v3/video-translations/proofreads/{korean}"
    detail = (await (await client.get(base, headers=editor)).json())["data"]
    assert (detail["status"], detail["output_language"]) == ("completed", "Korean")
    original = (await (await client.get(f"{base}/srt", headers=editor)).json())["data"]
    assert f"/v1/jobs/{korean}/captions.srt?expires=" in original["original_srt_url"]
    edited = {"srt": {"type": "url", "url": "https://subs.example/ko.srt"}}
    assert (await client.put(f"{base}/srt", json=edited, headers=editor)).status == 200
    srt = (await (await client.get(f"{base}/srt", headers=editor)).json())["data"]
    assert srt["srt_url"] == "https://subs.example/ko.srt"
    resp = await client.post(f"{base}/generate", json={"callback_id": "gen-1"}, headers=editor)
    made = (await resp.json())["data"]["video_translation_id"]
    await wait_for_status(client, made, {"completed"})
    data = (await (await client.get(f"/v3/video-translations/{made}", headers=editor)).json())[
        "data"
    ]
    assert (data["status"], data["title"], data["output_language"], data["callback_id"]) == (
        "completed",
        "Demo",
        "Korean",
        "gen-1",
    )


async def test_sweep_drops_expired_keys_and_documents_of_deleted_jobs(api: ApiFactory) -> None:
    client = await api()
    headers = {**key("sweeper"), "Idempotency-Key": "s-1"}
    (job_id,) = await v3_submit(client, headers, ["Spanish"])
    await wait_for_status(client, job_id, {"completed"})
    store = client.app[SERVICE].store
    facade = client.app[FACADE]
    assert await facade.sweep() == 0  # nothing expired, nothing orphaned
    await rewrite_held(client, held_id("sweeper", "s-1"), created_at=time.time() - 25 * 3600)
    assert (await client.post("/v1/cleanup", json={}, headers=ADMIN)).status == 200
    assert await facade.sweep() == 2
    assert await store.get_doc("heygen", job_id) is None
    assert await store.get_doc("heygen-idempotency", held_id("sweeper", "s-1")) is None


# ---- a HeyGen client over real HTTP -----------------------------------------------------------


async def heygen_flow(base: str, api_key: str) -> dict[str, Any]:
    """What a HeyGen client does: submit, poll the status until success. Returns the data."""
    headers = {"X-Api-Key": api_key, "Content-Type": "application/json"}
    async with aiohttp.ClientSession(base) as http:
        async with http.post(
            "/v2/video_translate",
            json={
                "video_url": "https://v.example/in.mp4",
                "output_language": "Spanish",
                "title": "t",
            },
            headers=headers,
        ) as resp:
            assert resp.status == 200
            video_id = (await resp.json())["data"]["video_translate_id"]
        async with asyncio.timeout(30):
            while True:
                async with http.get(f"/v2/video_translate/{video_id}", headers=headers) as resp:
                    data: dict[str, Any] = (await resp.json())["data"]
                if data["status"] in ("success", "failed"):
                    return data
                await asyncio.sleep(0.1)


async def test_a_heygen_client_flow_over_http_survives_a_restart(
    server_process: Any, tmp_path: Any
) -> None:
    db = str(tmp_path / "heygen.db")
    server: ServerProcess = server_process(db=db)
    data = await heygen_flow(server.url, "flow-user")
    assert data["status"] == "success" and data["url"].startswith(server.url + "/v1/jobs/")
    server.kill()
    again: ServerProcess = server_process(db=db)
    async with (
        aiohttp.ClientSession(again.url) as http,
        http.get(
            f"/v2/video_translate/{data['video_translate_id']}", headers={"X-Api-Key": "flow-user"}
        ) as resp,
    ):
        after = (await resp.json())["data"]
    assert (after["status"], after["title"]) == ("success", "t")


async def test_a_heygen_client_flow_across_processes_on_redis(
    server_process: Any, redis_url: str
) -> None:
    one: ServerProcess = server_process(redis_url=redis_url)
    two: ServerProcess = server_process(redis_url=redis_url)
    data = await heygen_flow(one.url, "redis-user")
    assert data["status"] == "success"
    async with (
        aiohttp.ClientSession(two.url) as http,
        http.get(
            f"/v3/video-translations/{data['video_translate_id']}",
            headers={"X-Api-Key": "redis-user"},
        ) as resp,
    ):
        detail = (await resp.json())["data"]
    assert (detail["status"], detail["title"]) == ("completed", "t")
    assert detail["video_url"].startswith(two.url + "/v1/jobs/")


async def test_a_heygen_client_downloads_the_result_and_captions(server_process: Any) -> None:
    """Needs the artifact routes (GET /v1/jobs/{id}/result, /captions.srt|.vtt) that the media
    work adds; red until it is merged."""
    server: ServerProcess = server_process()
    data = await heygen_flow(server.url, "downloader")
    headers = {"X-Api-Key": "downloader"}
    async with aiohttp.ClientSession() as http:
        async with http.get(data["url"]) as resp:
            assert resp.status == 200
            video = await resp.read()
        assert video[4:8] == b"ftyp"  # an MP4
        captions = f"{server.url}/v2/video_translate/caption?video_translate_id={data['video_translate_id']}"
        for kind, starts in (("srt", b"1"), ("vtt", b"WEBVTT")):
            async with http.get(f"{captions}&caption_type={kind}", headers=headers) as resp:
                link = (await resp.json())["data"]["caption_url"]
            async with http.get(link) as resp:
                assert resp.status == 200
                assert (await resp.read()).lstrip(b"\xef\xbb\xbf").startswith(starts)


async def test_with_auth_keys_only_made_keys_work_and_the_key_decides_user_and_plan(
    api: ApiFactory,
) -> None:
    """AUTH=keys: a HeyGen client sends a key made with /v1/keys; anything else is 401, the
    job belongs to the key's user, and the plan is the key's (a header can't raise it)."""
    client = await api(auth="keys", auto_process=False)
    made = {}
    for user, plan in (("fay", "free"), ("pat", "premium")):
        resp = await client.post("/v1/keys", json={"user_id": user, "plan": plan}, headers=ADMIN)
        assert resp.status == 201
        made[user] = (await resp.json())["key"]
    for headers in (key("not-a-made-key"), {}, {"x-api-key": ADMIN_TOKEN}):
        resp = await client.post(
            "/v3/video-translations",
            json={"video": VIDEO, "output_languages": ["Spanish"]},
            headers=headers,
        )
        assert resp.status == 401, headers
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    # the free key asks for scale in a header: still free (the key's plan), and fay's job
    ids = await v3_submit(client, key(made["fay"], plan="scale"), ["Spanish"])
    job = await (await client.get(f"/v1/jobs/{ids[0]}", headers=ADMIN)).json()
    assert (job["user_id"], job["role"]) == ("fay", "free")
    ids = await v3_submit(client, {"x-api-key": made["pat"]}, ["Spanish"])
    job = await (await client.get(f"/v1/jobs/{ids[0]}", headers=ADMIN)).json()
    assert (job["user_id"], job["role"]) == ("pat", "premium")
    # and another key's holder can't read it
    resp = await client.get(f"/v3/video-translations/{ids[0]}", headers={"x-api-key": made["fay"]})
    assert resp.status == 404
