"""Trust and quotas, attacked from the outside (API keys, plans, the HeyGen facade).

Each test reproduces a break an outsider found against a running server, and states the
contract literally:

- Quotas are a bound, not a hint: N concurrent submits from one user never leave more than
  MAX_IN_FLIGHT unfinished jobs (v1), nor more than the plan's concurrency + HEYGEN_QUEUE
  (HeyGen facade). Found broken: the check read a counter that only moves when a commit lands,
  so 60 concurrent submits all passed it (60 of 60 accepted with a bound of 21; 30 of 30 with
  MAX_IN_FLIGHT=10), on both backends.
- A key made with `dubsim keys create` is a secret in both AUTH modes: in AUTH=open the HeyGen
  facade took it as a user id, so the key itself was written in the clear into every job it
  made (the store, `/v1/jobs`, the `all` stream, the dashboard), it ran on HeyGen's default
  plan instead of the key's, and a revoked key still worked there.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

from aiohttp.test_utils import TestClient

from service.app import create_app
from service.appkeys import SERVICE
from service.keys import KEYS
from tests.conftest import ADMIN, ApiFactory, make_settings

VIDEO = {"type": "url", "url": "https://videos.example/talk.mp4"}
STUCK = {"outcome": "stuck"}


async def make_key(client: TestClient[Any, Any], user: str, plan: str) -> dict[str, Any]:
    resp = await client.post("/v1/keys", json={"user_id": user, "plan": plan}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def user_jobs(client: TestClient[Any, Any], user: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/jobs?user={user}&limit=500", headers=ADMIN)
    assert resp.status == 200
    return (await resp.json())["jobs"]  # type: ignore[no-any-return]


# ---- quotas under concurrency --------------------------------------------------------------


async def test_concurrent_submits_never_pass_max_in_flight(api: ApiFactory) -> None:
    client = await api(max_in_flight=5, rate_limit=1000)

    async def submit() -> int:
        resp = await client.post(
            "/v1/jobs", json={"scenario": STUCK}, headers={"X-User-Id": "racer"}
        )
        await resp.read()
        return resp.status

    codes = collections.Counter(await asyncio.gather(*(submit() for _ in range(30))))
    assert codes == {201: 5, 429: 25}
    assert len(await user_jobs(client, "racer")) == 5
    # and the bound is per user: another user still gets in
    other = await client.post("/v1/jobs", json={"scenario": STUCK}, headers={"X-User-Id": "o"})
    assert other.status == 201


async def test_concurrent_heygen_submits_never_pass_the_queue_bound(api: ApiFactory) -> None:
    # the free plan runs 1 job at once; with HEYGEN_QUEUE=4 a user holds at most 5 unfinished
    client = await api(heygen_queue=4, rate_limit=1000)
    headers = {
        "x-api-key": "racer",
        "X-Dubsim-Plan": "free",
        "X-Dubsim-Scenario": '{"outcome": "stuck"}',
    }

    async def submit(languages: list[str]) -> int:
        resp = await client.post(
            "/v3/video-translations",
            json={"video": VIDEO, "output_languages": languages},
            headers=headers,
        )
        body = await resp.json()
        if resp.status == 429:
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert int(resp.headers["Retry-After"]) >= 1
        return resp.status

    # 20 requests at once: one language each, and two each (whose second job is made after
    # the first's commit: the request must hold both from its check on)
    pairs = [["Spanish", "French"], ["German", "Italian"], ["Portuguese", "Japanese"]]
    requests = [["Korean"] if i % 2 else pairs[i % 3] for i in range(20)]
    codes = await asyncio.gather(*(submit(languages) for languages in requests))
    made = sum(
        len(languages) for languages, code in zip(requests, codes, strict=True) if code == 200
    )
    assert set(codes) == {200, 429}
    assert 4 <= made <= 5  # the bound, filled as far as the requests' sizes allow
    assert len(await user_jobs(client, "racer")) == made


async def test_concurrent_submits_on_two_processes_never_pass_max_in_flight(
    aiohttp_client: Any, redis_url: str
) -> None:
    settings = make_settings(redis_url=redis_url, max_in_flight=5, rate_limit=1000)
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))

    async def submit(client: TestClient[Any, Any]) -> int:
        resp = await client.post(
            "/v1/jobs", json={"scenario": STUCK}, headers={"X-User-Id": "racer"}
        )
        await resp.read()
        return resp.status

    codes = collections.Counter(
        await asyncio.gather(*(submit(a if i % 2 else b) for i in range(30)))
    )
    assert codes == {201: 5, 429: 25}
    assert len(await user_jobs(a, "racer")) == 5


async def test_concurrent_heygen_submits_on_two_processes_never_pass_the_queue_bound(
    aiohttp_client: Any, redis_url: str
) -> None:
    """The queue bound holds across processes too, and a request's languages are made all or
    none (found: each process counted only its own submissions, so N processes admitted up
    to N x the bound)."""
    settings = make_settings(redis_url=redis_url, heygen_queue=4, rate_limit=1000)
    a = await aiohttp_client(create_app(settings))
    b = await aiohttp_client(create_app(settings))
    headers = {
        "x-api-key": "racer",
        "X-Dubsim-Plan": "free",
        "X-Dubsim-Scenario": '{"outcome": "stuck"}',
    }

    async def submit(client: TestClient[Any, Any], languages: list[str]) -> int:
        resp = await client.post(
            "/v3/video-translations",
            json={"video": VIDEO, "output_languages": languages},
            headers=headers,
        )
        body = await resp.json()
        if resp.status == 429:
            assert body["error"]["code"] == "rate_limit_exceeded"
            assert int(resp.headers["Retry-After"]) >= 1
        return resp.status

    # free plan: 1 running + HEYGEN_QUEUE 4 = at most 5 unfinished, over both processes
    pairs = [["Spanish", "French"], ["German", "Italian"], ["Portuguese", "Japanese"]]
    requests = [["Korean"] if i % 2 else pairs[i % 3] for i in range(20)]
    codes = await asyncio.gather(
        *(submit(a if i % 4 < 2 else b, languages) for i, languages in enumerate(requests))
    )
    made = sum(
        len(languages) for languages, code in zip(requests, codes, strict=True) if code == 200
    )
    assert set(codes) == {200, 429}
    assert 4 <= made <= 5  # the bound, filled as far as the requests' sizes allow
    assert len(await user_jobs(a, "racer")) == made  # no request made only some of its jobs


# ---- a made key in AUTH=open ---------------------------------------------------------------


async def test_open_mode_heygen_takes_a_made_key_for_its_user_and_plan(api: ApiFactory) -> None:
    client = await api(rate_limit=1000)  # AUTH=open, HEYGEN_PLAN=pro
    made = await make_key(client, "bob", "free")
    key = made["key"]
    # the key names bob on the free plan, as it does on /v1 in this mode; X-Dubsim-Plan can't
    # lift it
    resp = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": ["Spanish"]},
        headers={"x-api-key": key, "X-Dubsim-Plan": "scale"},
    )
    assert resp.status == 200, await resp.text()
    job_id = (await resp.json())["data"]["video_translation_ids"][0]
    job = await (await client.get(f"/v1/jobs/{job_id}", headers=ADMIN)).json()
    assert job["user_id"] == "bob" and job["role"] == "free"
    v2 = await client.post(
        "/v2/video_translate",
        json={"video_url": VIDEO["url"], "output_language": "French"},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert v2.status == 200, await v2.text()
    # bob lists them with his key, and with /v1's X-User-Id (the same user)
    listed = await (await client.get("/v3/video-translations", headers={"x-api-key": key})).json()
    assert len(listed["data"]) == 2
    assert len(await user_jobs(client, "bob")) == 2
    # the secret is nowhere in clear: not in any job, event or document the store keeps
    everything = await (await client.get("/v1/jobs?limit=500", headers=ADMIN)).text()
    assert key not in everything and key[8:] not in everything
    store = client.app[SERVICE].store
    for record in client.app[SERVICE].records():
        assert key.encode() not in record.data
    for kind in ("heygen", "heygen-idempotency"):
        for doc in await store.docs(kind):
            assert key.encode() not in doc.id.encode() + doc.body
    # revoked: refused here as on /v1, never taken for a user id
    assert (await client.delete(f"/v1/keys/{made['id']}", headers=ADMIN)).status == 200
    for path in ("/v3/video-translations", "/v3/video-translations/languages"):
        resp = await client.get(path, headers={"x-api-key": key})
        assert resp.status == 401, await resp.text()
        assert (await resp.json())["error"]["code"] == "unauthorized"
        assert "WWW-Authenticate" in resp.headers
    refused = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": ["German"]},
        headers={"x-api-key": key},
    )
    assert refused.status == 401
    v1 = await client.get("/v1/jobs", headers={"x-api-key": key})
    assert v1.status == 401
    # a key shaped like dubsim's that no one made: 401 (as /v1 answers it), not a user id
    forged = await client.get("/v3/video-translations", headers={"x-api-key": "dsk_forged"})
    assert forged.status == 401
    assert len(await user_jobs(client, "bob")) == 2
    assert not await user_jobs(client, key) and not await user_jobs(client, "dsk_forged")
    # any other non-empty key is still a sandbox user id, as documented
    plain = await client.get("/v3/video-translations", headers={"x-api-key": "my-sandbox-key"})
    assert plain.status == 200


# ---- a revocation racing a lookup ----------------------------------------------------------


async def test_a_lookup_in_flight_during_a_revocation_does_not_revive_the_key(
    api: ApiFactory,
) -> None:
    """The revoking process refuses the key's next request, even when a request with that key
    was reading the key's document while the revocation ran (found: that lookup put the key
    back into the process's cache, so the key kept working there for KEY_CACHE_S)."""
    client = await api(auth="keys", key_cache_s=30)
    made = await make_key(client, "carol", "free")
    headers = {"x-api-key": made["key"]}
    ring = client.app[KEYS]
    store = ring.store
    read, release = asyncio.Event(), asyncio.Event()
    real_get_doc = store.get_doc

    async def slow_get_doc(kind: str, doc_id: str) -> Any:
        doc = await real_get_doc(kind, doc_id)
        if kind == "apikey":
            read.set()
            await release.wait()  # the document is read; the revocation runs now
        return doc

    store.get_doc = slow_get_doc
    try:
        in_flight = asyncio.ensure_future(client.get("/v1/jobs", headers=headers))
        async with asyncio.timeout(10):
            await read.wait()
        revoked = await client.delete(f"/v1/keys/{made['id']}", headers=ADMIN)
        assert revoked.status == 200
        release.set()
        first = await in_flight  # it began before the revocation: either answer is fair
        assert first.status in (200, 401)
    finally:
        store.get_doc = real_get_doc
    after = await client.get("/v1/jobs", headers=headers)
    assert after.status == 401, await after.text()
    heygen = await client.get("/v3/video-translations", headers=headers)
    assert heygen.status == 401


# ---- the HeyGen facade as an admin-token oracle --------------------------------------------


async def test_the_heygen_facade_is_no_admin_token_oracle(api: ApiFactory) -> None:
    """Found: guesses at the admin token sent as a HeyGen key were never throttled (15 in a
    row, then 12 more while the address was locked out on /v1: no 429), and the right one got
    its own answer ("the admin token is not an API key"), unlike any wrong one."""
    client = await api(auth="keys", auth_failures=3)
    token = ADMIN["Authorization"].removeprefix("Bearer ")
    path = "/v3/video-translations"
    made = await make_key(client, "dora", "premium")
    # AUTH=keys: the admin token is not a key, refused exactly as any unknown key is
    right = await client.get(path, headers={"x-api-key": token})
    wrong = await client.get(path, headers={"x-api-key": "not-the-admin-token-at-all"})
    assert right.status == wrong.status == 401
    assert await right.json() == await wrong.json()
    v2 = await client.get("/v2/video_translate/target_languages", headers={"x-api-key": token})
    assert v2.status == 401 and "admin" not in (await v2.json())["error"]["message"]
    # locked out by wrong tokens on /v1: every further guess is 429 here too, right or wrong
    for n in range(3):
        bad = await client.patch("/v1/config", json={}, headers={"Authorization": f"Bearer x{n}"})
        assert bad.status == 401
    for guess in (token, "another-guess-of-the-token"):
        for headers in ({"x-api-key": guess}, {"Authorization": f"Bearer {guess}"}):
            resp = await client.get(path, headers=headers)
            assert resp.status == 429, await resp.text()
            assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
            assert int(resp.headers["Retry-After"]) >= 1
    # a made key is not a guess at the token: it still works from that address
    assert (await client.get(path, headers={"x-api-key": made["key"]})).status == 200


async def test_open_mode_heygen_guesses_are_throttled_too(api: ApiFactory) -> None:
    client = await api(auth_failures=3)  # AUTH=open: any key is a user id, but not the token
    token = ADMIN["Authorization"].removeprefix("Bearer ")
    path = "/v3/video-translations"
    refused = await client.get(path, headers={"x-api-key": token})
    assert refused.status == 401  # never kept as a user id in the clear
    for n in range(3):
        bad = await client.patch("/v1/config", json={}, headers={"Authorization": f"Bearer x{n}"})
        assert bad.status == 401
    for guess in (token, "some-sandbox-key"):
        resp = await client.get(path, headers={"x-api-key": guess})
        assert resp.status == 429, await resp.text()


# ---- Idempotency-Key after an error --------------------------------------------------------


async def test_after_an_error_the_idempotency_key_may_be_used_again(api: ApiFactory) -> None:
    """docs/heygen.md: "Only successes are remembered: after an error the key may be used
    again." Found: the corrected request was refused, 400 "this Idempotency-Key was used with
    another request in the last 24 h"."""
    client = await api()
    headers = {"x-api-key": "idem-after-error", "Idempotency-Key": "order-7"}
    bad = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": ["Klingon"]},
        headers=headers,
    )
    assert bad.status == 400
    assert (await bad.json())["error"]["param"] == "output_languages"
    assert not await user_jobs(client, "idem-after-error")
    good = {"video": VIDEO, "output_languages": ["Spanish", "French"]}
    fixed = await client.post("/v3/video-translations", json=good, headers=headers)
    assert fixed.status == 200, await fixed.text()
    ids = (await fixed.json())["data"]["video_translation_ids"]
    assert len(ids) == 2
    # from now on it is remembered: a repeat replays, another request is refused
    again = await client.post("/v3/video-translations", json=good, headers=headers)
    assert again.status == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["data"]["video_translation_ids"] == ids
    other = await client.post(
        "/v3/video-translations",
        json={"video": VIDEO, "output_languages": ["German"]},
        headers=headers,
    )
    assert other.status == 400
    assert (await other.json())["error"]["param"] == "Idempotency-Key"
    assert sorted(j["id"] for j in await user_jobs(client, "idem-after-error")) == sorted(ids)
    # the same on v2, and for a PATCH whose first try was refused
    v2 = {"x-api-key": "idem-after-error", "Idempotency-Key": "v2-order"}
    first = await client.post("/v2/video_translate", json={"video_url": VIDEO["url"]}, headers=v2)
    assert first.status == 400
    second = await client.post(
        "/v2/video_translate",
        json={"video_url": VIDEO["url"], "output_language": "Italian"},
        headers=v2,
    )
    assert second.status == 200, await second.text()
    rename = {"x-api-key": "idem-after-error", "Idempotency-Key": "rename-1"}
    path = f"/v3/video-translations/{ids[0]}"
    assert (await client.patch(path, json={"title": 5}, headers=rename)).status == 400
    renamed = await client.patch(path, json={"title": "Talk"}, headers=rename)
    assert renamed.status == 200 and (await renamed.json())["data"]["title"] == "Talk"


async def test_a_request_the_hourly_window_refuses_makes_none_and_its_retry_all(
    api: ApiFactory,
) -> None:
    """A HeyGen request for k languages is all or none, the hourly window included: refused,
    it makes no job and uses none of the window; retried with its Idempotency-Key once
    allowed, it makes the set; retried again at the queue bound, it replays the set instead of
    counting its own jobs against the bound (found before: a retry near the bound was 429
    until its own jobs finished)."""
    # free plan: 1 running + HEYGEN_QUEUE 2 = at most 3 unfinished; 2 submissions an hour
    client = await api(heygen_queue=2, rate_limit=2)
    headers = {
        "x-api-key": "part-way",
        "X-Dubsim-Plan": "free",
        "X-Dubsim-Scenario": '{"outcome": "stuck"}',
        "Idempotency-Key": "three-languages",
    }
    request = {"video": VIDEO, "output_languages": ["Spanish", "French", "German"]}
    first = await client.post("/v3/video-translations", json=request, headers=headers)
    assert first.status == 429  # three do not fit in a window of two: none is made
    assert await user_jobs(client, "part-way") == []
    other = {**headers, "x-api-key": "window-check", "Idempotency-Key": "two"}
    two = {"video": VIDEO, "output_languages": ["Spanish", "French"]}
    fits = await client.post("/v3/video-translations", json=two, headers=other)
    assert fits.status == 200, await fits.text()  # a window of two, untouched by the refusal
    raised = await client.patch("/v1/config", json={"rate_limit": 10}, headers=ADMIN)
    assert raised.status == 200
    retry = await client.post("/v3/video-translations", json=request, headers=headers)
    assert retry.status == 200, await retry.text()
    ids = (await retry.json())["data"]["video_translation_ids"]
    jobs = await user_jobs(client, "part-way")
    assert len(ids) == len(set(ids)) == 3 and sorted(ids) == sorted(j["id"] for j in jobs)
    assert sorted(j["target_language"] for j in jobs) == ["de", "es", "fr"]
    again = await client.post("/v3/video-translations", json=request, headers=headers)
    assert again.status == 200, await again.text()  # at the bound (3): the same set, replayed
    assert (await again.json())["data"]["video_translation_ids"] == ids


# ---- two keys on one request ---------------------------------------------------------------


async def test_two_different_keys_on_one_request_are_refused(api: ApiFactory) -> None:
    """Found: `x-api-key: <good>` with `Authorization: Bearer <revoked or unknown dsk_ key>`
    was served as the good key's user, the other key never checked (a presented credential
    must be checked, never silently passed over)."""
    client = await api(auth="keys")
    good = (await make_key(client, "vera", "free"))["key"]
    other = await make_key(client, "walt", "premium")
    assert (await client.delete(f"/v1/keys/{other['id']}", headers=ADMIN)).status == 200
    for second in (other["key"], "dsk_never-made", (await make_key(client, "xena", "free"))["key"]):
        both = {"x-api-key": good, "Authorization": f"Bearer {second}"}
        for path in ("/v1/jobs", "/jobs", "/v3/video-translations"):
            resp = await client.get(path, headers=both)
            assert resp.status == 401, (path, await resp.text())
            assert "WWW-Authenticate" in resp.headers
        sse = await client.get(f"/v1/events?mine=1&api_key={good}", headers=both)
        assert sse.status == 401
        # where a key may ride in the URL: beside a header's, or twice
        for url, headers in (
            (f"/v1/events?mine=1&api_key={second}", {"x-api-key": good}),
            (f"/v1/events?mine=1&api_key={good}&api_key={second}", {}),
            (f"/v1/ws?api_key={second}", {"x-api-key": good}),
            (f"/v1/ws?api_key={good}&api_key={second}", {}),
        ):
            resp = await client.get(url, headers=headers)
            assert resp.status == 401, (url, await resp.text())
    # the same key twice is one key
    same = {"x-api-key": good, "Authorization": f"Bearer {good}"}
    assert (await client.get("/v1/jobs", headers=same)).status == 200
    assert (await client.get("/v3/video-translations", headers=same)).status == 200
    # and a key beside the admin token is still the key's request, the token checked
    admin_too = {"x-api-key": good, **ADMIN}
    assert (await client.get("/v1/jobs", headers=admin_too)).status == 200
