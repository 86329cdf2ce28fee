"""Nobody reaches what isn't theirs: admin routes, the token, users' jobs, cookie, CORS, limits."""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from typing import Any
from unittest import mock

import pytest
from aiohttp import WSMsgType

from service.api.openapi import ROUTES
from service.app import create_app
from service.auth import COOKIE, SESSION_TTL_S, Auth
from service.settings import Settings
from tests.conftest import ADMIN, ADMIN_TOKEN, ROOT, ApiFactory, make_settings
from tests.reliability.conftest import ADMIN_ROUTES_KNOWN, fingerprint


def admin_routes() -> list[tuple[str, str]]:
    """(method, path) of every route whose handler carries the `admin_only` mark."""
    app = create_app(make_settings())
    found = set()
    for route in app.router.routes():
        if getattr(route.handler, "admin_only", False):
            found.add((route.method, route.resource.canonical if route.resource else ""))
    return sorted(found)


ADMIN_ROUTES = admin_routes()
BAD_CREDENTIALS = {
    "no-token": {},
    "wrong-token": {"Authorization": "Bearer not-the-admin-token"},
    "token-prefix": {"Authorization": f"Bearer {ADMIN_TOKEN[:-1]}"},
    "token-longer": {"Authorization": f"Bearer {ADMIN_TOKEN}x"},
    "wrong-scheme": {"Authorization": f"Basic {ADMIN_TOKEN}"},
    "empty-bearer": {"Authorization": "Bearer "},
    "forged-cookie": {"Cookie": "dubsim_session=forged"},
}


def test_admin_route_table_is_not_trivial() -> None:
    assert len(ADMIN_ROUTES) >= len(ADMIN_ROUTES_KNOWN)
    assert set(ADMIN_ROUTES_KNOWN) <= set(ADMIN_ROUTES), set(ADMIN_ROUTES_KNOWN) - set(ADMIN_ROUTES)


def test_openapi_admin_routes_are_marked_admin_only() -> None:
    documented = {(r.method.upper(), r.path) for r in ROUTES if r.admin}
    assert documented and documented <= set(ADMIN_ROUTES), documented - set(ADMIN_ROUTES)


@pytest.mark.parametrize("credentials", BAD_CREDENTIALS.values(), ids=BAD_CREDENTIALS.keys())
@pytest.mark.parametrize(
    ("method", "path"), ADMIN_ROUTES, ids=[f"{m} {p}" for m, p in ADMIN_ROUTES]
)
async def test_every_admin_route_refuses_without_the_token(
    api: ApiFactory, method: str, path: str, credentials: dict[str, str]
) -> None:
    client = await api(auto_process=False)
    resp = await client.post("/v1/jobs", json={"role": "premium"})
    job_id = (await resp.json())["id"]
    app = client.server.app
    before = fingerprint(app)
    url = path.replace("{id}", job_id) + "?token=" + ADMIN_TOKEN  # the query never counts
    resp = await client.request(method, url, json={}, headers={**credentials, "X-User-Id": "admin"})
    assert resp.status == 401, await resp.text()
    if method != "HEAD":  # a HEAD answer has no body, by HTTP
        body = await resp.json()  # JSON: v1 error, or the legacy shape on seed-era routes
        assert body.get("error", {}).get("code") == "unauthorized" or body.get("status") == "failed"
    assert "Set-Cookie" not in resp.headers
    assert fingerprint(app) == before
    # the same call with the token works, so the 401 above was about the token only
    ok = await client.request(method, path.replace("{id}", job_id), json={}, headers=ADMIN)
    assert ok.status != 401, await ok.text()


async def test_token_comparison_is_constant_time(api: ApiFactory) -> None:
    client = await api()
    with mock.patch("service.auth.hmac.compare_digest", wraps=hmac.compare_digest) as spy:
        assert (await client.post("/v1/process", json={}, headers=ADMIN)).status == 200
        assert spy.call_count >= 1
        bad = {"Authorization": "Bearer wrong-but-long-enough"}
        assert (await client.post("/v1/process", json={}, headers=bad)).status == 401
        assert spy.call_count >= 2
        resp = await client.post("/v1/session", json={"token": "wrong-token"})
        assert resp.status == 401 and spy.call_count >= 3
        async with client.ws_connect(f"/v1/ws?token={ADMIN_TOKEN}"):
            pass
        assert spy.call_count >= 4
    source = (ROOT / "service" / "auth.py").read_text()
    assert "hmac.compare_digest" in source
    assert not re.search(r"token\s*==|==\s*self\._token", source)


def test_no_default_admin_token() -> None:
    assert Settings().admin_token is None
    assert Settings.load([], environ={}).admin_token is None
    with pytest.raises(ValueError, match="admin_token"):
        create_app(Settings(db=":memory:"))
    with pytest.raises(ValueError):
        create_app(Settings(db=":memory:", admin_token=""))


def test_no_token_is_hard_coded_outside_tests() -> None:
    suspicious = re.compile(
        r"""(admin_token|ADMIN_TOKEN|token)\s*[:=]\s*["'][A-Za-z0-9_\-]{6,}["']"""
        r"""|Bearer\s+[A-Za-z0-9_\-]{12,}"""
    )
    offenders = []
    shipped = [*(ROOT / "service").rglob("*.py"), *(ROOT / "client").rglob("*.py")]
    shipped += [p for p in (ROOT / "web").rglob("*") if p.suffix in (".js", ".html")]
    for path in shipped:
        text = path.read_text(errors="replace")
        if ADMIN_TOKEN in text:
            offenders.append(f"{path}: the test token")
        offenders += [f"{path}: {m.group(0)}" for m in suspicious.finditer(text)]
    assert shipped and not offenders, offenders


# ---- users see only their own jobs ------------------------------------------------------


async def submit_as(client: Any, user: str) -> dict[str, Any]:
    resp = await client.post("/v1/jobs", json={"role": "premium"}, headers={"X-User-Id": user})
    assert resp.status == 201
    return await resp.json()  # type: ignore[no-any-return]


async def test_listing_shows_only_own_jobs(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    alice = {(await submit_as(client, "alice"))["id"] for _ in range(3)}
    bob = {(await submit_as(client, "bob"))["id"] for _ in range(2)}
    for user, own in (("alice", alice), ("bob", bob)):
        resp = await client.get("/v1/jobs", headers={"X-User-Id": user})
        assert {j["id"] for j in (await resp.json())["jobs"]} == own
    spy = await client.get("/v1/jobs?user=bob", headers={"X-User-Id": "alice"})
    assert spy.status == 403
    anon = await client.get("/v1/jobs")
    assert (await anon.json())["jobs"] == []
    # the header's case doesn't change who you are
    upper = await client.get("/v1/jobs", headers={"X-USER-ID": "alice"})
    assert {j["id"] for j in (await upper.json())["jobs"]} == alice
    admin = await client.get("/v1/jobs?user=bob", headers=ADMIN)
    assert {j["id"] for j in (await admin.json())["jobs"]} == bob


async def test_mine_websocket_carries_only_own_jobs(api: ApiFactory) -> None:
    client = await api(translation_delay=0.05)
    before = await submit_as(client, "bob")  # existing: must not appear in the snapshots
    async with client.ws_connect("/v1/ws", headers={"X-User-Id": "alice"}) as ws:
        await ws.send_json({"op": "subscribe", "mine": True, "id": 1})
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "subscribed"
        await submit_as(client, "bob")
        mine = await submit_as(client, "alice")
        seen: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while not (seen and seen[-1].get("event_type") == "job.completed"):
                msg = await ws.receive()
                assert msg.type is WSMsgType.TEXT, msg
                seen.append(json.loads(msg.data))
        # asking for everyone's is refused
        await ws.send_json({"op": "subscribe", "all": True, "id": 2})
        refused = json.loads((await ws.receive(timeout=10)).data)
        assert refused["type"] == "error" and refused["code"] == "forbidden"
    owners = {m["job"]["user_id"] for m in seen if "job" in m}
    assert owners == {"alice"}, owners
    assert before["id"] not in {m["job"]["id"] for m in seen if "job" in m}
    assert mine["id"] in {m["job"]["id"] for m in seen if "job" in m}


async def test_mine_sse_carries_only_own_jobs(api: ApiFactory) -> None:
    client = await api(translation_delay=0.05)
    await submit_as(client, "bob")
    raw = b""
    async with client.get("/v1/events?mine=1", headers={"X-User-Id": "alice"}) as resp:
        assert resp.status == 200
        await submit_as(client, "bob")
        mine = await submit_as(client, "alice")
        async with asyncio.timeout(20):
            async for chunk in resp.content.iter_any():
                raw += chunk
                if b"event: job.completed" in raw and raw.endswith(b"\n\n"):
                    break
    datas = [json.loads(line[6:]) for line in raw.split(b"\n") if line.startswith(b"data: ")]
    assert {d["job"]["user_id"] for d in datas if "job" in d} == {"alice"}
    assert mine["id"] in {d["job"]["id"] for d in datas if "job" in d}
    everyone = await client.get("/v1/events?all=1", headers={"X-User-Id": "alice"})
    assert everyone.status == 401


# ---- the dashboard's cookie session -------------------------------------------------------


async def login(client: Any) -> str:
    resp = await client.post("/v1/session", json={"token": ADMIN_TOKEN})
    assert resp.status == 204
    return resp.headers["Set-Cookie"]


async def test_session_cookie_is_httponly_and_samesite_strict(api: ApiFactory) -> None:
    client = await api()
    cookie = await login(client)
    attributes = {part.strip().split("=")[0].lower(): part for part in cookie.split(";")}
    assert cookie.startswith("dubsim_session=")
    assert "httponly" in attributes
    assert attributes["samesite"].strip().lower() == "samesite=strict"
    assert attributes["path"].strip() == "Path=/"
    # the jar now holds the cookie: a cookie-carrying POST must be same-origin (as a browser's)
    own = {"Origin": str(client.make_url("")).rstrip("/")}
    bad = await client.post("/v1/session", json={"token": "wrong-token"}, headers=own)
    assert bad.status == 401 and "Set-Cookie" not in bad.headers


def session_cookie(client: Any) -> dict[str, str]:
    """The session cookie as a header, taken out of the client's jar (which is emptied): a
    copy that a logout can't delete, like one an attacker kept."""
    jar = client.session.cookie_jar
    value = jar.filter_cookies(client.make_url("/"))[COOKIE].value
    jar.clear()
    return {"Cookie": f"{COOKIE}={value}"}


async def is_admin(client: Any, headers: dict[str, str]) -> bool:
    """Asked two ways: the session route, and an admin-only route (sent as the dashboard
    sends it: same origin, JSON; a cookie mutation from elsewhere is refused anyway)."""
    state = await (await client.get("/v1/session", headers=headers)).json()
    own = str(client.make_url("/")).rstrip("/")
    patch = await client.patch(
        "/v1/config", json={"workers": 4}, headers={**headers, "Origin": own}
    )
    assert patch.status in (200, 401), await patch.text()
    assert state["admin"] is (patch.status == 200)
    return bool(state["admin"])


async def test_logout_revokes_the_cookie_even_where_a_copy_is_kept(api: ApiFactory) -> None:
    client = await api()
    await login(client)
    cookie = session_cookie(client)
    assert await is_admin(client, cookie)
    own = str(client.make_url("/")).rstrip("/")  # as the dashboard logs out: same origin, JSON
    same_origin = {**cookie, "Origin": own, "Content-Type": "application/json"}
    resp = await client.delete("/v1/session", headers=same_origin)
    assert resp.status == 204
    assert f"{COOKIE}=" in resp.headers["Set-Cookie"]  # the browser is told to drop it
    client.session.cookie_jar.clear()
    assert not await is_admin(client, cookie)
    # logging out one session leaves others alone
    await login(client)
    assert await is_admin(client, session_cookie(client))


def cookie_opened_at(at: float) -> str:
    """A genuine cookie (signed with the test admin token) as if opened at `at`."""
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = at
        return f"{COOKIE}={Auth(ADMIN_TOKEN).open_session()}"


async def test_an_expired_cookie_is_refused_though_genuinely_signed(api: ApiFactory) -> None:
    client = await api()
    now = time.time()
    live = cookie_opened_at(now - SESSION_TTL_S + 600)  # ten minutes left
    expired = cookie_opened_at(now - SESSION_TTL_S - 5)  # expired five seconds ago
    assert await is_admin(client, {"Cookie": live})  # the forging is right ...
    assert not await is_admin(client, {"Cookie": expired})  # ... and expiry is what refuses
    other = Auth("another-admin-token").open_session()  # not signed with this server's token
    assert not await is_admin(client, {"Cookie": f"{COOKIE}={other}"})


async def test_cross_origin_cookie_websocket_is_refused(api: ApiFactory) -> None:
    client = await api()
    await login(client)  # the test client's cookie jar now holds the session
    own = str(client.make_url("")).rstrip("/")
    async with client.ws_connect("/v1/ws", headers={"Origin": own}) as ws:
        await ws.send_json({"op": "subscribe", "all": True, "id": 1})
        assert json.loads((await ws.receive(timeout=10)).data)["type"] == "subscribed"
    for origin in ("http://evil.example", own.replace("127.0.0.1", "localhost"), "null"):
        async with client.ws_connect("/v1/ws", headers={"Origin": origin}) as ws:
            msg = await ws.receive(timeout=10)
            assert msg.type is WSMsgType.CLOSE and msg.data == 1008, (origin, msg)


async def test_cors_is_closed_by_default(api: ApiFactory) -> None:
    client = await api()
    origin = {"Origin": "http://evil.example"}
    for method, path in (("GET", "/v1/jobs"), ("GET", "/v1/config"), ("POST", "/v1/jobs")):
        resp = await client.request(method, path, headers=origin, json={})
        assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    for path in ("/v1/jobs", "/v1/config", "/v1/session"):
        preflight = await client.options(
            path,
            headers={
                **origin,
                "Access-Control-Request-Method": "PATCH",
                "Access-Control-Request-Headers": "authorization, content-type",
            },
        )
        assert preflight.status >= 400, preflight.status
        assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]


async def test_rate_limit_is_not_dodged_by_header_case(api: ApiFactory) -> None:
    client = await api(rate_limit=3, auto_process=False)
    spellings = ["X-User-Id", "x-user-id", "X-USER-ID", "x-User-iD"]
    for name in spellings[:3]:
        resp = await client.post("/v1/jobs", json={}, headers={name: "mallory"})
        assert resp.status == 201
    for name in spellings:
        resp = await client.post("/v1/jobs", json={}, headers={name: "mallory"})
        assert resp.status == 429, (name, resp.status)
        assert resp.headers["RateLimit-Remaining"] == "0"
        # the oldest of the three hits leaves the hour's window in just under an hour
        assert 3500 < int(resp.headers["Retry-After"]) <= 3600
    # nor by padding the value
    resp = await client.post("/v1/jobs", json={}, headers={"X-User-Id": " mallory "})
    assert resp.status == 429
