"""Auth's edges: inputs no browser sends (lone surrogates, non-ASCII digits, outsized expiries,
genuinely signed but malformed cookies) are refused, never a crash; a stale cookie is a 401."""

from __future__ import annotations

import hashlib
import hmac
from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from service.auth import AUTH, COOKIE, Auth, ascii_digits
from service.errors import Unauthorized

TOKEN = "unit-admin-token"
NOW = 1_800_000_000.0


def signed(payload: str) -> str:
    """A cookie carrying a genuine signature over `payload` (as the server signs: HMAC-SHA256
    under a key derived from the token), so only the shape checks can refuse it."""
    key = hmac.new(TOKEN.encode(), b"dubsim session cookie v1", hashlib.sha256).digest()
    data = payload.encode("utf-8", "surrogatepass")
    return f"{payload}.{hmac.new(key, data, hashlib.sha256).hexdigest()}"


def ok_at(auth: Auth, cookie: str) -> bool:
    with mock.patch("service.auth.time") as clock:
        clock.time.return_value = NOW
        return auth.session_ok(cookie)


def request(**headers: str) -> web.Request:
    app = web.Application()
    app[AUTH] = Auth(TOKEN)
    return make_mocked_request("GET", "/", headers=headers, app=app)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0", True), ("1234567890", True), ("", False), ("12a", False), ("²", False),
     ("٣٣", False), ("\uff11\uff12", False), ("-1", False), ("1.5", False)],
)  # fmt: skip
def test_ascii_digits_are_0_to_9_only(text: str, expected: bool) -> None:
    assert ascii_digits(text) is expected


def test_a_genuine_cookie_is_accepted_the_helper_signs_like_the_server() -> None:
    assert ok_at(Auth(TOKEN), signed(f"{int(NOW) + 60}.nonce"))


@pytest.mark.parametrize(
    "payload",
    [
        f"{'٣' * 10}.nonce",  # Arabic-Indic digits: int() reads them as a far-future expiry
        f"{chr(0xFF19) * 10}.nonce",  # fullwidth digits, likewise
        "9999999999999999.nonce",  # 16 digits: an expiry hundreds of millions of years away
        f"{int(NOW) + 60}.",  # no nonce: nothing a logout could revoke
    ],
)
async def test_genuinely_signed_but_malformed_cookies_are_refused(payload: str) -> None:
    auth = Auth(TOKEN)
    cookie = signed(payload)
    assert not ok_at(auth, cookie)
    await auth.close_session(cookie)  # and a logout with one is a no-op, not an error


def test_an_expiry_of_fifteen_digits_is_still_well_formed() -> None:
    assert ok_at(Auth(TOKEN), signed("999999999999999.nonce"))


@pytest.mark.parametrize("token", ["\ud800", "\udcff" * 16, f"{TOKEN[:-1]}\udfff"])
def test_a_token_with_a_lone_surrogate_is_wrong_not_a_crash(token: str) -> None:
    auth = Auth(TOKEN)
    assert auth.token_ok(token) is False


@pytest.mark.parametrize(
    "cookie",
    [f"{int(NOW) + 60}.\ud800.{'0' * 64}", f"{int(NOW) + 60}.n\udcff.{'a' * 64}"],
)
async def test_a_cookie_with_a_lone_surrogate_is_refused_not_a_crash(cookie: str) -> None:
    auth = Auth(TOKEN)
    assert not ok_at(auth, cookie)
    await auth.close_session(cookie)


def test_a_surrogate_nonce_is_signed_consistently() -> None:
    """The signature covers the nonce's code points as they are (surrogates passed through),
    so a cookie is verified against exactly what was signed."""
    assert ok_at(Auth(TOKEN), signed(f"{int(NOW) + 60}.\ud800"))


def test_a_stale_cookie_is_detected_and_is_a_401_where_the_admin_sees_more() -> None:
    auth = Auth(TOKEN)
    good = auth.open_session()
    stale = signed("1000000000.nonce")  # genuine, expired in 2001
    assert auth.stale_cookie(request(Cookie=f"{COOKIE}={stale}"))
    assert auth.stale_cookie(request(Cookie=f"{COOKIE}=garbage"))
    assert not auth.stale_cookie(request(Cookie=f"{COOKIE}={good}"))
    assert not auth.stale_cookie(request())
    assert not auth.stale_cookie(request(Cookie=f"other={stale}"))
    with pytest.raises(Unauthorized) as info:
        auth.is_admin(request(Cookie=f"{COOKIE}={stale}"))
    assert info.value.message == "session expired or revoked: log in again"
    assert auth.is_admin(request(Cookie=f"{COOKIE}={good}")) is True
    # a Bearer token decides by itself: the stale cookie beside it is not looked at
    both = request(Cookie=f"{COOKIE}={stale}", Authorization=f"Bearer {TOKEN}")
    assert auth.is_admin(both) is True
    assert auth.is_admin(request()) is False
