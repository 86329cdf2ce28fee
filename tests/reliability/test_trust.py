"""The trust boundary: wrong credentials are 401 everywhere, cookie-borne mutations must be
same-origin JSON, admin-token guesses are throttled, short admin tokens are refused, and open
streams are capped (MAX_CONNECTIONS)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import WSServerHandshakeError

from service.auth import Auth, Throttle
from service.settings import Settings, SettingsError
from tests.conftest import ADMIN, ADMIN_TOKEN, ROOT, ApiFactory, ServerProcess, make_settings
from tests.reliability.conftest import fingerprint

WRONG = {"Authorization": "Bearer not-the-admin-token"}


def http_routes() -> list[tuple[str, str]]:
    """(method, path) of every HTTP route but the WebSocket (it closes 1008 instead) and the
    HeyGen facade's, whose Authorization carries an API key (tests/integration/test_heygen*)."""
    from service.app import create_app

    app = create_app(make_settings())
    found = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
        and route.method not in ("HEAD", "*")
        and not getattr(route.handler, "own_credentials", False)
    }
    return sorted(r for r in found if r[1] != "/v1/ws")


HTTP_ROUTES = http_routes()


def test_route_table_covers_public_and_legacy_routes() -> None:
    for route in [("GET", "/v1/jobs"), ("POST", "/v1/jobs"), ("GET", "/jobs"), ("GET", "/")]:
        assert route in HTTP_ROUTES


@pytest.mark.parametrize(("method", "path"), HTTP_ROUTES, ids=[f"{m} {p}" for m, p in HTTP_ROUTES])
async def test_a_wrong_bearer_is_401_on_every_route(
    api: ApiFactory, method: str, path: str
) -> None:
    client = await api(auto_process=False)
    job_id = (await (await client.post("/v1/jobs", json={})).json())["id"]
    before = fingerprint(client.app)
    url = path.replace("{id}", job_id).replace("{name:.+}", "app.js")
    resp = await client.request(method, url, json={}, headers=WRONG)
    assert resp.status == 401, (resp.status, await resp.text())
    body = await resp.json()  # the v1 error, or the legacy shape on seed-era routes
    assert body.get("error", {}).get("code") == "unauthorized" or body == {
        "message": "Unauthorized access",
        "status": "failed",
    }
    assert fingerprint(client.app) == before


async def test_stale_cookie_is_401_where_admin_sees_more_and_ignored_elsewhere(
    api: ApiFactory,
) -> None:
    client = await api(auto_process=False)
    stale = {"Cookie": "dubsim_session=4102444800.nonce.0000"}  # forged/expired alike
    for path in ("/v1/jobs", "/jobs", "/v1/events?all=1"):
        resp = await client.get(path, headers=stale)
        assert resp.status == 401, (path, resp.status)
    # "am I logged in?" is answered, and the browser is told to drop the cookie
    resp = await client.get("/v1/session", headers=stale)
    assert resp.status == 200 and (await resp.json()) == {"admin": False}
    assert resp.cookies["dubsim_session"].value == ""
    # where the admin gets nothing more, the stale cookie is ignored
    resp = await client.post("/v1/jobs", json={}, headers=stale)
    assert resp.status == 201
    resp = await client.get(f"/v1/jobs/{(await resp.json())['id']}", headers=stale)
    assert resp.status == 200


# ---- CSRF on the dashboard's cookie ---------------------------------------------------------


async def logged_in(api: ApiFactory, **settings: Any) -> tuple[Any, str, str]:
    """A client whose jar holds the admin session; a pending job; the server's own origin."""
    client = await api(auto_process=False, **settings)
    assert (await client.post("/v1/session", json={"token": ADMIN_TOKEN})).status == 204
    own = str(client.make_url("")).rstrip("/")
    resp = await client.post("/v1/jobs", json={}, headers={"Origin": own})
    return client, (await resp.json())["id"], own


async def test_cookie_mutations_must_be_same_origin_json(api: ApiFactory) -> None:
    client, job_id, own = await logged_in(api, allowed_origins="https://dash.example")
    other_port = own.rsplit(":", 1)[0] + ":1"
    other_host = own.replace("127.0.0.1", "localhost")
    refused: list[tuple[dict[str, str], Any]] = [
        ({}, {}),  # neither Origin nor Sec-Fetch-Site
        ({"Origin": "http://evil.example"}, {}),
        ({"Origin": other_port}, {}),  # same site, another port
        ({"Origin": other_host}, {}),  # another host name for the same server
        ({"Origin": "null"}, {}),
        ({"Sec-Fetch-Site": "same-site"}, {}),
        ({"Sec-Fetch-Site": "cross-site"}, {}),
        ({"Origin": own, "Content-Type": "text/plain"}, {"data": b'{"reason": "csrf"}'}),
        ({"Origin": own, "Content-Type": "application/x-www-form-urlencoded"}, {"data": b"a=b"}),
        ({"Origin": own}, {"data": b""}),  # no content type at all
    ]
    before = fingerprint(client.app)
    for headers, body in refused:
        kwargs = body or {"json": {"reason": "csrf"}}
        for path in (f"/v1/jobs/{job_id}/cancel", "/v1/cleanup", f"/cancel/{job_id}"):
            resp = await client.post(path, headers=headers, **kwargs)
            assert resp.status == 403, (headers, path, resp.status, await resp.text())
            assert resp.content_type == "application/json"
        kwargs = body or {"json": {"error_rate": 1}}
        resp = await client.patch("/v1/config", headers=headers, **kwargs)
        assert resp.status == 403, headers
    assert fingerprint(client.app) == before
    # the dashboard's own requests pass: Origin or Sec-Fetch-Site, and JSON
    ok = await client.patch("/v1/config", headers={"Origin": own}, json={"error_rate": 0.5})
    assert ok.status == 200
    ok = await client.post("/v1/process", headers={"Sec-Fetch-Site": "same-origin"}, json={})
    assert ok.status == 200
    ok = await client.post(
        f"/v1/jobs/{job_id}/cancel", headers={"Origin": "https://dash.example"}, json={}
    )
    assert ok.status == 200  # an ALLOWED_ORIGINS page
    # a Bearer token is not a cookie: no origin asked
    fresh = (await (await client.post("/v1/jobs", json={}, headers={"Origin": own})).json())["id"]
    resp = await client.post(f"/v1/jobs/{fresh}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200


# ---- throttling admin-token guesses -----------------------------------------------------------


async def test_failed_admin_attempts_are_throttled_per_address(api: ApiFactory) -> None:
    client = await api(auth_failures=3, auth_window_s=600)
    before = fingerprint(client.app)
    assert (await client.post("/v1/process", json={}, headers=WRONG)).status == 401
    assert (await client.post("/v1/session", json={"token": "wrong-token"})).status == 401
    assert (await client.get("/v1/jobs", headers=WRONG)).status == 401
    for headers in (WRONG, ADMIN):  # locked out: even the right token, so guessing stops
        resp = await client.post("/v1/process", json={}, headers=headers)
        assert resp.status == 429, await resp.text()
        assert int(resp.headers["Retry-After"]) > 0
        assert (await resp.json())["error"]["code"] == "rate_limited"
    resp = await client.post("/v1/session", json={"token": ADMIN_TOKEN})
    assert resp.status == 429 and "Set-Cookie" not in resp.headers
    resp = await client.post("/cleanup", headers=ADMIN)  # legacy route, legacy body
    assert resp.status == 429 and (await resp.json())["status"] == "failed"
    assert fingerprint(client.app) == before
    # requests that present no token are not affected
    assert (await client.get("/v1/jobs")).status == 200


def test_throttle_window_slides_and_success_clears() -> None:
    now = [0.0]
    throttle = Throttle(failures=2, window_s=10, clock=lambda: now[0])
    throttle.record("a", ok=False)
    throttle.record("a", ok=True)  # a success forgets the failures
    throttle.record("a", ok=False)
    throttle.check("a")
    throttle.record("a", ok=False)
    with pytest.raises(Exception, match="too many failed") as info:
        throttle.check("a")
    assert getattr(info.value, "reset_s", 0) == pytest.approx(10)
    throttle.check("b")  # per address
    now[0] = 10.5
    throttle.check("a")  # the window has passed


def test_throttle_remembers_a_bounded_number_of_addresses() -> None:
    throttle = Throttle(failures=1, window_s=60)
    for i in range(20_000):
        throttle.record(f"10.0.{i // 256}.{i % 256}", ok=False)
    assert len(throttle._seen) <= 10_000


# ---- the admin token itself ------------------------------------------------------------------


@pytest.mark.parametrize("token", ["x" * 8, "x" * 15, "123456789012345"])
def test_short_admin_tokens_are_refused(token: str) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load([], environ={"ADMIN_TOKEN": token})
    assert info.value.name == "ADMIN_TOKEN"
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        Auth(token)
    assert Settings.load([], environ={"ADMIN_TOKEN": "y" * 16}).admin_token == "y" * 16


def test_server_refuses_to_start_with_a_short_admin_token() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "service", "--admin-token", "short-token", "--db", ":memory:"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "ADMIN_TOKEN" in result.stderr, result.stderr


def test_cli_with_a_wrong_token_exits_non_zero(server_process: Any) -> None:
    server: ServerProcess = server_process(db=":memory:")
    result = subprocess.run(
        [sys.executable, "-m", "client", "jobs", "--url", server.url, "--token", "stale-token"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert "401" in result.stderr or "unauthorized" in result.stderr.lower(), result.stderr


# ---- MAX_CONNECTIONS ------------------------------------------------------------------------


async def expect_503(resp: Any) -> None:
    assert resp.status == 503, await resp.text()
    assert int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["error"]["code"] == "unavailable"


async def test_open_streams_are_capped(api: ApiFactory) -> None:
    client = await api(max_connections=2, auto_process=False)
    job_id = (await (await client.post("/v1/jobs", json={})).json())["id"]
    ws = await client.ws_connect("/v1/ws")
    sse = await client.get(f"/v1/events?job={job_id}")
    assert sse.status == 200
    with pytest.raises(WSServerHandshakeError) as info:
        await client.ws_connect("/v1/ws")
    assert info.value.status == 503
    await expect_503(await client.get(f"/v1/events?job={job_id}"))
    await expect_503(await client.get(f"/v1/jobs/{job_id}?wait=30"))
    # plain reads are not streams: they still answer
    assert (await client.get(f"/v1/jobs/{job_id}")).status == 200
    assert (await client.get("/healthz")).status == 200
    await ws.close()
    async with client.ws_connect("/v1/ws") as again:  # a freed slot is reusable
        await again.send_json({"op": "ping", "id": 1})
        assert (await again.receive_json(timeout=10))["type"] == "pong"
    sse.close()


async def test_idle_and_slow_header_connections_are_cut(server_process: Any) -> None:
    server: ServerProcess = server_process(db=":memory:", idle_timeout_s=1)
    writers = []
    for i in range(50):
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        # half send nothing, half send a request line and then stall mid-headers
        if i % 2:
            writer.write(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
            await writer.drain()
        writers.append((reader, writer))
    async with aiohttp.ClientSession() as http, http.get(server.url + "/healthz") as resp:
        assert resp.status == 200  # the stalled sockets don't block anyone
    for reader, writer in writers:
        assert await _eof_within(reader, 15), "connection not cut"
        writer.close()


async def _eof_within(reader: asyncio.StreamReader, seconds: float) -> bool:
    try:
        async with asyncio.timeout(seconds):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    return True
