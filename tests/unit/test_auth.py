"""Auth without a server: the admin token, users' ids and the dashboard's signed cookie."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Any
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from service.auth import AUTH, Auth, admin_only, user_id
from service.errors import BadRequest, Unauthorized

TOKEN = "unit-admin-token"
NOW = 1_800_000_000.0
TTL = 12 * 3600  # the documented session lifetime


def request(path: str = "/", **headers: str) -> web.Request:
    app = web.Application()
    app[AUTH] = Auth(TOKEN)
    return make_mocked_request("GET", path, headers=headers, app=app)


def opened_at(at: float, auth: Auth | None = None) -> str:
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = at
        return (auth or Auth(TOKEN)).open_session()


def checked_at(at: float, auth: Auth, cookie: str | None) -> bool:
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = at
        return auth.session_ok(cookie)


# ---- the token --------------------------------------------------------------------------


def test_the_token_must_match_exactly() -> None:
    auth = Auth(TOKEN)
    assert auth.token_ok(TOKEN)
    for wrong in ("", TOKEN[:-1], TOKEN + "x", TOKEN.upper(), " " + TOKEN):
        assert not auth.token_ok(wrong), wrong


def test_an_empty_token_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"^an admin token is required$"):
        Auth("")


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"Bearer {TOKEN}", True),
        (f"bearer {TOKEN}", True),  # the scheme is case-insensitive
        (f"Bearer  {TOKEN} ", True),  # surrounding spaces are not part of the token
        ("Bearer wrong-token", False),
        (f"Basic {TOKEN}", False),
        (TOKEN, False),
        ("", False),
    ],
)
def test_bearer_header(header: str, expected: bool) -> None:
    req = request(Authorization=header)
    assert req.app[AUTH].bearer_admin(req) is expected
    assert req.app[AUTH].is_admin(req) is expected


def test_no_token_presented_is_none_and_the_query_only_counts_where_allowed() -> None:
    auth = Auth(TOKEN)
    assert auth.bearer_admin(request()) is None
    assert auth.bearer_admin(request(f"/?token={TOKEN}")) is None
    assert auth.bearer_admin(request(f"/?token={TOKEN}"), allow_query=True) is True
    assert auth.bearer_admin(request("/?token=nope"), allow_query=True) is False
    assert auth.is_admin(request(f"/?token={TOKEN}"), allow_query=True) is True
    assert auth.is_admin(request(f"/?token={TOKEN}")) is False
    # a header, when there is one, is what counts
    header = request(f"/?token={TOKEN}", Authorization="Bearer nope")
    assert auth.bearer_admin(header, allow_query=True) is False


# ---- the session cookie -----------------------------------------------------------------


def test_a_cookie_is_expiry_nonce_signature_and_lives_the_ttl() -> None:
    auth = Auth(TOKEN)
    cookie = opened_at(NOW, auth)
    expiry, nonce, signature = cookie.split(".")
    assert int(expiry) == int(NOW) + TTL
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", nonce)  # 128 random bits, URL-safe
    assert re.fullmatch(r"[0-9a-f]{64}", signature)
    assert opened_at(NOW, auth).split(".")[1] != nonce  # a fresh nonce each time
    assert checked_at(NOW, auth, cookie)
    assert checked_at(NOW + TTL - 1, auth, cookie)
    assert not checked_at(NOW + TTL, auth, cookie)  # expired at its expiry, not a second later
    assert not checked_at(NOW + TTL + 1, auth, cookie)


def test_the_signature_is_pinned() -> None:
    """HMAC-SHA256 with a key derived from the token under a fixed label: changing either
    logs every dashboard out, so it must be a decision, not an accident."""
    key = hmac.new(TOKEN.encode(), b"dubsim session cookie v1", hashlib.sha256).digest()
    payload = f"{int(NOW) + TTL}.AAAAAAAAAAAAAAAAAAAAAA"
    signature = hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()
    assert checked_at(NOW, Auth(TOKEN), f"{payload}.{signature}")


def test_a_cookie_survives_a_restart_but_not_a_new_token() -> None:
    cookie = opened_at(NOW)
    assert checked_at(NOW, Auth(TOKEN), cookie)  # another instance, the same token
    assert not checked_at(NOW, Auth("another-admin-token"), cookie)


def test_tampered_or_malformed_cookies_are_refused() -> None:
    auth = Auth(TOKEN)
    cookie = opened_at(NOW, auth)
    expiry, nonce, signature = cookie.split(".")
    later = str(int(expiry) + 3600)
    flipped = signature[:-1] + ("0" if signature[-1] != "0" else "1")
    for bad in (
        None,
        "",
        f"{later}.{nonce}.{signature}",  # expiry pushed out
        f"{expiry}.{nonce}x.{signature}",
        f"{expiry}.{nonce}.{flipped}",
        f"{expiry}.{nonce}.",
        f"{expiry}..{signature}",
        f".{nonce}.{signature}",
        f"{expiry}.{nonce}",
        f"-{expiry}.{nonce}.{signature}",
        f"x{expiry}.{nonce}.{signature}",
    ):
        assert not checked_at(NOW, auth, bad), bad


async def test_logout_revokes_that_session_only_and_a_forged_one_revokes_nothing() -> None:
    auth = Auth(TOKEN)
    one, two = opened_at(NOW, auth), opened_at(NOW, auth)
    expiry, nonce, _ = two.split(".")
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = NOW
        await auth.close_session(f"{expiry}.{nonce}.{'0' * 64}")  # forged: not a logout of two
        await auth.close_session("garbage")
        assert auth.session_ok(two)
        await auth.close_session(one)
        assert not auth.session_ok(one)
        assert auth.session_ok(two)
        await auth.close_session(two)
        assert not auth.session_ok(two)


async def test_revocations_are_forgotten_once_their_cookie_has_expired() -> None:
    auth = Auth(TOKEN)
    old = opened_at(NOW, auth)
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = NOW
        await auth.close_session(old)
        clock.time.return_value = NOW + TTL  # the old cookie's expiry: it is dead anyway
        await auth.close_session(opened_at(NOW + TTL, auth))
    assert old.split(".")[1] not in auth._revoked  # memory stays bounded
    assert len(auth._revoked) == 1


def test_cookie_admin_reads_the_dashboard_cookie() -> None:
    auth = Auth(TOKEN)
    good = auth.open_session()
    assert auth.cookie_admin(request(Cookie=f"dubsim_session={good}"))
    assert auth.is_admin(request(Cookie=f"dubsim_session={good}"))
    assert not auth.cookie_admin(request(Cookie=f"other={good}"))
    assert not auth.cookie_admin(request())
    # a wrong bearer token is not rescued by a good cookie
    both = request(Cookie=f"dubsim_session={good}", Authorization="Bearer wrong")
    assert auth.is_admin(both) is False


# ---- users ------------------------------------------------------------------------------


def test_user_id_from_the_header_or_where_allowed_the_query() -> None:
    assert user_id(request()) == "anonymous"
    assert user_id(request(**{"X-User-Id": "  alice "})) == "alice"
    assert user_id(request("/?user=bob")) == "anonymous"
    assert user_id(request("/?user=bob"), allow_query=True) == "bob"
    assert user_id(request("/?user=bob", **{"X-User-Id": "al"}), allow_query=True) == "al"
    assert user_id(request(**{"X-User-Id": "u" * 128})) == "u" * 128


@pytest.mark.parametrize("bad", ["", "   ", "u" * 129, "tab\there"])
def test_bad_user_ids_are_refused(bad: str) -> None:
    with pytest.raises(BadRequest, match="X-User-Id"):
        user_id(request(**{"X-User-Id": bad}))


async def test_admin_only_checks_before_the_handler_and_marks_it() -> None:
    calls: list[web.Request] = []

    async def handler(req: web.Request) -> web.StreamResponse:
        """The doc."""
        calls.append(req)
        return web.Response(text="ok")

    guarded: Any = admin_only(handler)
    assert guarded.admin_only is True
    assert (guarded.__name__, guarded.__doc__) == ("handler", "The doc.")
    with pytest.raises(Unauthorized) as info:
        await guarded(request())
    assert info.value.message == "admin token required (Authorization: Bearer <token>)"
    with pytest.raises(Unauthorized):
        await guarded(request(Authorization="Bearer nope"))
    assert calls == []
    ok = request(Authorization=f"Bearer {TOKEN}")
    response = await guarded(ok)
    assert calls == [ok] and response.text == "ok"
