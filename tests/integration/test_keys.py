"""AUTH=keys: API keys name the user and the plan; no key, a wrong key or a revoked one is 401
on every route family; keys are shown once and stored hashed; a revocation holds on every
process; one key's traffic can't use up another user's window."""

from __future__ import annotations

import asyncio
import hashlib
import re
from typing import Any

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError
from aiohttp.test_utils import TestClient

from service.api._guard import PUBLIC_ROUTES
from service.app import create_app
from service.appkeys import SERVICE
from service.keys import KEYS
from tests.conftest import ADMIN, ApiFactory, make_settings, wait_for_status
from tests.reliability.conftest import fingerprint

KEYS_MODE = {"auth": "keys", "auto_process": False}


async def make_key(client: TestClient[Any, Any], user: str, plan: str = "free") -> dict[str, Any]:
    resp = await client.post("/v1/keys", json={"user_id": user, "plan": plan}, headers=ADMIN)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


def as_key(made: dict[str, Any], **extra: str) -> dict[str, str]:
    return {"x-api-key": made["key"], **extra}


def routes(client: TestClient[Any, Any]) -> list[tuple[str, str]]:
    """(method, path) of every HTTP route a key guards: all but the public ones and the WS."""
    found = {
        (route.method, route.resource.canonical)
        for route in client.app.router.routes()
        if route.resource is not None and route.method not in ("HEAD", "*")
    }
    return sorted(r for r in found if r[1] not in PUBLIC_ROUTES and r[1] != "/v1/ws")


# ---- keys: made, shown once, stored hashed -------------------------------------------------


async def test_a_key_is_shown_once_and_only_its_hash_is_stored(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    made = await make_key(client, "alice", "premium")
    key = made["key"]
    assert key.startswith("dsk_") and len(key) >= 40
    assert made["user_id"] == "alice" and made["plan"] == "premium"
    assert made["id"].startswith("key_") and made["prefix"] == key[:8] + "…"

    listed = await (await client.get("/v1/keys", headers=ADMIN)).json()
    assert [k["id"] for k in listed["keys"]] == [made["id"]]
    assert "key" not in listed["keys"][0]
    assert key not in str(listed) and key[8:] not in str(listed)

    # the raw documents, as the store keeps them: the hash is there, the key nowhere
    docs = await client.app[SERVICE].store.docs("apikey")
    assert len(docs) == 1
    raw = docs[0].id.encode() + docs[0].body
    assert key.encode() not in raw and key[8:].encode() not in raw
    assert hashlib.sha256(key.encode()).hexdigest().encode() in raw

    # and the key works
    resp = await client.get("/v1/jobs", headers=as_key(made))
    assert resp.status == 200


async def test_key_management_is_admin_only_and_validated(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    alice = await make_key(client, "alice")
    body = {"user_id": "bob", "plan": "free"}
    assert (await client.post("/v1/keys", json=body)).status == 401
    assert (await client.post("/v1/keys", json=body, headers=as_key(alice))).status == 401
    assert (await client.get("/v1/keys", headers=as_key(alice))).status == 401
    assert (await client.delete(f"/v1/keys/{alice['id']}", headers=as_key(alice))).status == 401
    for bad in (
        {"user_id": "bob", "plan": "gold"},
        {"user_id": "bob"},
        {"plan": "free"},
        {"user_id": "", "plan": "free"},
        {"user_id": "bob", "plan": "free", "role": "premium"},
        {"user_id": "b\nob", "plan": "free"},
    ):
        resp = await client.post("/v1/keys", json=bad, headers=ADMIN)
        assert resp.status == 422, (bad, resp.status)
        assert (await resp.json())["error"]["code"] == "validation_error"
    assert (await client.delete("/v1/keys/key_nope", headers=ADMIN)).status == 404
    listed = await (await client.get("/v1/keys", headers=ADMIN)).json()
    assert [k["user_id"] for k in listed["keys"]] == ["alice"]


async def test_a_key_is_never_the_admin(api: ApiFactory) -> None:
    from tests.reliability.test_security import ADMIN_ROUTES

    client = await api(**KEYS_MODE)
    alice = await make_key(client, "alice", "premium")
    job_id = (await (await client.post("/v1/jobs", json={}, headers=as_key(alice))).json())["id"]
    before = fingerprint(client.app)
    assert len(ADMIN_ROUTES) >= 13
    for method, path in ADMIN_ROUTES:
        url = path.replace("{id}", job_id)
        resp = await client.request(method, url, json={}, headers=as_key(alice))
        assert resp.status == 401, (method, path, resp.status)
    for url in ("/v1/events?all=1", "/v1/jobs?user=bob"):
        assert (await client.get(url, headers=as_key(alice))).status in (401, 403), url
    assert fingerprint(client.app) == before


# ---- refused: no key, a wrong key, a revoked key, on every route family --------------------


@pytest.mark.parametrize("credential", ["none", "wrong", "revoked", "not-a-key"])
async def test_keys_mode_refuses_without_a_good_key_on_every_route(
    api: ApiFactory, credential: str
) -> None:
    client = await api(**KEYS_MODE)
    alice = await make_key(client, "alice")
    job_id = (await (await client.post("/v1/jobs", json={}, headers=as_key(alice))).json())["id"]
    headers: dict[str, str] = {}
    if credential == "wrong":
        headers = {"x-api-key": "dsk_" + "A" * 43}
    elif credential == "not-a-key":
        headers = {"x-api-key": "hello"}
    elif credential == "revoked":
        bob = await make_key(client, "bob")
        assert (await client.get("/v1/jobs", headers=as_key(bob))).status == 200
        assert (await client.delete(f"/v1/keys/{bob['id']}", headers=ADMIN)).status == 200
        headers = as_key(bob)
    before = fingerprint(client.app)
    table = routes(client)
    assert ("POST", "/v1/jobs") in table and ("GET", "/status/{id}") in table  # v1 and legacy
    assert ("GET", "/v1/events") in table and ("POST", "/translate") in table
    for method, path in table:
        url = re.sub(r"\{[^}]+\}", job_id, path)  # every path parameter: a real value
        resp = await client.request(method, url, json={}, headers=headers)
        assert resp.status == 401, (method, path, resp.status, await resp.text())
        assert resp.headers["WWW-Authenticate"].startswith("Bearer"), (method, path)
        body = await resp.json()  # the v1 error, or the legacy shape on seed-era routes
        assert body.get("error", {}).get("code") == "unauthorized" or body == {
            "message": "Unauthorized access",
            "status": "failed",
        }, (method, path, body)
    # the families spelled out: a long poll, an SSE stream (also with the key in the query)
    for url in (f"/v1/jobs/{job_id}?wait=5", f"/v1/events?job={job_id}", "/v1/events?mine=1"):
        assert (await client.get(url, headers=headers)).status == 401, url
    if credential != "none":
        query = f"/v1/events?job={job_id}&api_key={headers['x-api-key']}"
        assert (await client.get(query)).status == 401
    # the WebSocket: refused at the upgrade, with the key in a header or in the query
    with pytest.raises(WSServerHandshakeError) as refused:
        await client.ws_connect("/v1/ws", headers=headers)
    assert refused.value.status == 401
    if credential != "none":
        with pytest.raises(WSServerHandshakeError) as refused:
            await client.ws_connect(f"/v1/ws?api_key={headers['x-api-key']}")
        assert refused.value.status == 401
    assert fingerprint(client.app) == before
    # what stays open without a key
    for url in ("/healthz", "/openapi.json", "/", "/v1/session"):
        assert (await client.get(url)).status == 200, url


async def test_a_key_as_bearer_and_in_the_query_of_streams(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    alice = await make_key(client, "alice")
    bearer = {"Authorization": f"Bearer {alice['key']}"}
    resp = await client.post("/v1/jobs", json={}, headers=bearer)
    assert resp.status == 201
    job = await resp.json()
    assert job["user_id"] == "alice"
    # SSE and WebSocket with ?api_key= (what a browser can do), `mine` = the key's user
    sse = await client.get(f"/v1/events?mine=1&api_key={alice['key']}")
    assert sse.status == 200
    line = await sse.content.readline()
    while not line.startswith(b"data:"):
        line = await sse.content.readline()
    assert job["id"].encode() in line
    sse.close()
    ws = await client.ws_connect(f"/v1/ws?api_key={alice['key']}")
    await ws.send_json({"op": "subscribe", "mine": True})
    assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
    snapshot = await ws.receive_json(timeout=10)
    assert snapshot["type"] == "snapshot" and snapshot["job"]["id"] == job["id"]
    await ws.close()
    # a key in the query string counts only on the streams
    assert (await client.get(f"/v1/jobs?api_key={alice['key']}")).status == 401


async def test_the_admin_token_still_works_in_keys_mode(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    resp = await client.post(
        "/v1/jobs", json={"role": "premium"}, headers={**ADMIN, "X-User-Id": "carol"}
    )
    assert resp.status == 201
    job = await resp.json()
    assert (job["user_id"], job["role"]) == ("carol", "premium")
    assert (await client.get("/v1/jobs", headers=ADMIN)).status == 200
    assert (await client.get(f"/v1/events?job={job['id']}&until=terminal", headers=ADMIN)).status
    ws = await client.ws_connect("/v1/ws", headers=ADMIN)
    await ws.send_json({"op": "subscribe", "all": True})
    assert (await ws.receive_json(timeout=10))["type"] == "subscribed"
    await ws.close()
    # a wrong admin token on the socket keeps its documented close code
    ws = await client.ws_connect("/v1/ws", headers={"Authorization": "Bearer wrong-wrong-wrong"})
    await ws.receive(timeout=10)
    assert ws.close_code == 1008


# ---- the key names the user and the plan -------------------------------------------------


async def test_the_plan_and_the_user_come_from_the_key(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    free, premium = (
        await make_key(client, "alice", "free"),
        await make_key(client, "pat", "premium"),
    )
    before = fingerprint(client.app)
    for refused in (
        client.post("/v1/jobs", json={"role": "premium"}, headers=as_key(free)),
        client.post("/v1/jobs", json={}, headers=as_key(free, **{"X-User-Id": "bob"})),
        client.get("/v1/jobs?user=bob", headers=as_key(free)),
        client.post("/v1/jobs", json={"role": "free"}, headers=as_key(premium)),
    ):
        resp = await refused
        assert resp.status == 403, await resp.text()
    legacy = await client.post("/translate", json={"role": "premium"}, headers=as_key(free))
    assert legacy.status == 403
    assert fingerprint(client.app) == before

    job = await (await client.post("/v1/jobs", json={}, headers=as_key(free))).json()
    assert (job["user_id"], job["role"]) == ("alice", "free")
    job = await (await client.post("/v1/jobs", json={"role": "free"}, headers=as_key(free))).json()
    assert (job["user_id"], job["role"]) == ("alice", "free")
    same = as_key(free, **{"X-User-Id": "alice"})
    assert (await client.post("/v1/jobs", json={}, headers=same)).status == 201
    job = await (await client.post("/v1/jobs", json={}, headers=as_key(premium))).json()
    assert (job["user_id"], job["role"]) == ("pat", "premium")
    started = await (await client.post("/start", headers=as_key(premium))).json()
    listed = await (await client.get("/v1/jobs", headers=as_key(premium))).json()
    assert {j["id"] for j in listed["jobs"]} == {job["id"], started["job_id"]}
    assert {j["role"] for j in listed["jobs"]} == {"premium"}
    mine = await (await client.get("/v1/jobs", headers=as_key(free))).json()
    assert {j["user_id"] for j in mine["jobs"]} == {"alice"} and len(mine["jobs"]) == 3


async def test_one_keys_traffic_cannot_exhaust_another_users_window(api: ApiFactory) -> None:
    """The outsider's case: in open mode 5 submits as `X-User-Id: dave` lock dave out; with
    keys, mallory's key can only spend mallory's window."""
    client = await api(**KEYS_MODE, rate_limit=2)
    mallory, dave = await make_key(client, "mallory"), await make_key(client, "dave")
    for _ in range(2):
        assert (await client.post("/v1/jobs", json={}, headers=as_key(mallory))).status == 201
    assert (await client.post("/v1/jobs", json={}, headers=as_key(mallory))).status == 429
    as_dave = as_key(mallory, **{"X-User-Id": "dave"})
    for _ in range(5):
        assert (await client.post("/v1/jobs", json={}, headers=as_dave)).status == 403
        assert (await client.post("/translate", json={}, headers=as_dave)).status == 403
    for _ in range(2):
        assert (await client.post("/v1/jobs", json={}, headers=as_key(dave))).status == 201
    assert (await client.post("/v1/jobs", json={}, headers=as_key(dave))).status == 429


async def test_open_mode_honours_a_key_and_still_trusts_x_user_id(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    alice = await make_key(client, "alice", "premium")
    job = await (await client.post("/v1/jobs", json={}, headers=as_key(alice))).json()
    assert (job["user_id"], job["role"]) == ("alice", "premium")
    assert (await client.post("/v1/jobs", json={}, headers={"x-api-key": "dsk_x"})).status == 401
    anyone = await client.post("/v1/jobs", json={}, headers={"X-User-Id": "alice"})
    assert anyone.status == 201 and (await anyone.json())["user_id"] == "alice"


async def test_last_used_is_recorded(api: ApiFactory) -> None:
    client = await api(**KEYS_MODE)
    alice = await make_key(client, "alice")
    assert alice["last_used_at"] is None
    assert (await client.get("/v1/jobs", headers=as_key(alice))).status == 200
    listed = await (await client.get("/v1/keys", headers=ADMIN)).json()
    assert listed["keys"][0]["last_used_at"] is not None


# ---- several processes on one Redis ---------------------------------------------------------


@pytest.mark.parametrize("cache_s", [0.0, 1.0])
async def test_a_revocation_on_one_process_refuses_the_key_on_another(
    aiohttp_client: Any, redis_url: str, cache_s: float
) -> None:
    settings = {"redis_url": redis_url, "key_cache_s": cache_s, **KEYS_MODE}
    a = await aiohttp_client(create_app(make_settings(**settings)))
    b = await aiohttp_client(create_app(make_settings(**settings)))
    alice = await make_key(a, "alice")
    made = await b.post("/v1/jobs", json={}, headers=as_key(alice))
    assert made.status == 201
    job_id = (await made.json())["id"]
    for client in (a, b):  # both processes have checked (and, with a cache, kept) the key
        assert (await client.get(f"/v1/jobs/{job_id}", headers=as_key(alice))).status == 200
    assert (await a.delete(f"/v1/keys/{alice['id']}", headers=ADMIN)).status == 200
    # the revoking process: at once, whatever its cache
    assert (await a.get(f"/v1/jobs/{job_id}", headers=as_key(alice))).status == 401
    if cache_s == 0:  # no cache: the very next request on B, with no wait
        assert (await b.get(f"/v1/jobs/{job_id}", headers=as_key(alice))).status == 401
    else:  # within KEY_CACHE_S on B (waited for generously, not timed)
        async with asyncio.timeout(30):
            while (await b.get(f"/v1/jobs/{job_id}", headers=as_key(alice))).status != 401:
                await asyncio.sleep(0.1)
    assert (await b.post("/v1/jobs", json={}, headers=as_key(alice))).status == 401
    with pytest.raises(WSServerHandshakeError):
        await b.ws_connect("/v1/ws", headers=as_key(alice))
    assert (await (await b.get("/v1/keys", headers=ADMIN)).json())["keys"] == []


async def test_a_dashboard_logout_on_one_process_holds_on_another(
    aiohttp_client: Any, redis_url: str
) -> None:
    settings = {"redis_url": redis_url, "auto_process": False}
    a = await aiohttp_client(create_app(make_settings(**settings)))
    b = await aiohttp_client(create_app(make_settings(**settings)))
    login = await a.post("/v1/session", json={"token": ADMIN["Authorization"][7:]})
    assert login.status == 204
    cookie = {"Cookie": f"dubsim_session={login.cookies['dubsim_session'].value}"}
    for client in (a, b):
        state = await (await client.get("/v1/session", headers=cookie)).json()
        assert state == {"admin": True}
        assert (await client.get("/v1/jobs?all=1", headers=cookie)).status == 200
    same_origin = {**cookie, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert (await a.delete("/v1/session", headers=same_origin)).status == 204
    state = await (await b.get("/v1/session", headers=cookie)).json()
    assert state == {"admin": False}
    # a stale cookie is 401 where it is the only credential (never the anonymous view)
    assert (await b.get("/v1/jobs", headers=cookie)).status == 401
    # and a restart (a third process) remembers it too
    c = await aiohttp_client(create_app(make_settings(**settings)))
    assert (await c.get("/v1/jobs", headers=cookie)).status == 401


async def test_a_logout_survives_a_restart_on_sqlite(aiohttp_client: Any, tmp_path: Any) -> None:
    db = str(tmp_path / "dubsim.db")
    first = create_app(make_settings(db=db, auto_process=False))
    a = await aiohttp_client(first)
    login = await a.post("/v1/session", json={"token": ADMIN["Authorization"][7:]})
    cookie = {"Cookie": f"dubsim_session={login.cookies['dubsim_session'].value}"}
    same_origin = {**cookie, "Sec-Fetch-Site": "same-origin", "Content-Type": "application/json"}
    assert (await a.delete("/v1/session", headers=same_origin)).status == 204
    await a.close()
    b = await aiohttp_client(create_app(make_settings(db=db, auto_process=False)))
    assert (await b.get("/v1/jobs", headers=cookie)).status == 401


async def test_a_keyed_job_runs_to_completion(api: ApiFactory) -> None:
    client = await api(auth="keys")
    alice = await make_key(client, "alice", "premium")

    class Keyed:  # wait_for_status with the key on each long poll
        async def get(self, url: str, headers: dict[str, str]) -> aiohttp.ClientResponse:
            return await client.get(url, headers={**headers, **as_key(alice)})

    job = await (await client.post("/v1/jobs", json={}, headers=as_key(alice))).json()
    done = await wait_for_status(Keyed(), job["id"], {"completed"})  # type: ignore[arg-type]
    assert done["role"] == "premium"


async def test_a_revocation_racing_a_last_used_write_stays_revoked(api: ApiFactory) -> None:
    """The key's document is deleted between a lookup's read and its last_used_at write: the
    write is on the read version, so it fails instead of bringing the key back."""
    client = await api(**KEYS_MODE, key_cache_s=0)
    alice = await make_key(client, "alice")
    ring = client.app[KEYS]
    real = ring.store

    class RevokeAfterRead:
        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

        async def get_doc(self, kind: str, doc_id: str) -> Any:
            doc = await real.get_doc(kind, doc_id)
            await real.put_doc(kind, doc_id, None)  # the admin's DELETE lands right here
            return doc

    ring.store = RevokeAfterRead()  # type: ignore[assignment]
    try:
        assert await ring.lookup(alice["key"]) is not None  # read before the revocation
    finally:
        ring.store = real
    assert await real.docs("apikey") == []
    assert (await client.get("/v1/jobs", headers=as_key(alice))).status == 401


async def test_a_signed_result_link_is_its_own_credential_and_a_header_names_nobody(
    api: ApiFactory,
) -> None:
    """In keys mode a signed `result_url` downloads without a key (that is what it is for), a
    wrong signature does not, and `X-User-Id` alone never makes a caller the job's owner."""
    client = await api(auth="keys", auto_process=True)
    alice = await make_key(client, "alice", "premium")
    resp = await client.post(
        "/v1/jobs", json={"scenario": {"duration_s": 0.01}}, headers=as_key(alice)
    )
    assert resp.status == 201
    job_id = (await resp.json())["id"]
    wait = await client.get(f"/v1/jobs/{job_id}?wait=30&until=terminal", headers=as_key(alice))
    job = await wait.json()
    assert job["status"] == "completed", job
    link = job["result_url"].split("://", 1)[1].split("/", 1)[1]  # path and query
    assert (await client.get("/" + link)).status == 200  # no key: the link is the credential
    forged = "/" + link[:-4] + ("0000" if not link.endswith("0000") else "1111")
    for headers in ({}, {"X-User-Id": "alice"}):
        assert (await client.get(forged, headers=headers)).status in (401, 403)
    unsigned = f"/v1/jobs/{job['id']}/result"
    assert (await client.get(unsigned, headers={"X-User-Id": "alice"})).status == 401
    assert (await client.get(unsigned, headers=as_key(alice))).status == 200
