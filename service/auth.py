"""Who is asking: the admin token, users' ids, and the dashboard's cookie session."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .errors import BadRequest, Unauthorized

USER_HEADER: Final = "X-User-Id"
ANONYMOUS: Final = "anonymous"
COOKIE: Final = "dubsim_session"
SESSION_TTL_S: Final = 12 * 3600
MAX_USER_ID: Final = 128

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Auth:
    """Checks the admin token in constant time and signs the dashboard's session cookies.

    A session is `expiry.nonce.signature`, signed with a key derived from the admin token: it
    survives a restart (the dashboard stays logged in) and dies when the token changes. A
    logout revokes the nonce in memory only, so a restart forgets revocations; the browser has
    dropped the cookie by then, and the session expires after SESSION_TTL_S regardless.
    """

    def __init__(self, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("an admin token is required")
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"dubsim session cookie v1", hashlib.sha256).digest()
        self._revoked: dict[str, float] = {}  # nonce -> expiry

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)

    def open_session(self) -> str:
        payload = f"{int(time.time() + SESSION_TTL_S)}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    def close_session(self, cookie: str) -> None:
        parsed = self._verify(cookie)
        if parsed is not None:
            now = time.time()
            self._revoked = {n: exp for n, exp in self._revoked.items() if exp > now}
            self._revoked[parsed[1]] = parsed[0]

    def session_ok(self, cookie: str | None) -> bool:
        parsed = None if cookie is None else self._verify(cookie)
        return parsed is not None and parsed[1] not in self._revoked

    def _sign(self, payload: str) -> str:
        return hmac.new(self._key, payload.encode(), hashlib.sha256).hexdigest()

    def _verify(self, cookie: str) -> tuple[float, str] | None:
        """(expiry, nonce) of a genuine, unexpired cookie; None otherwise."""
        expiry, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (expiry.isdigit() and nonce and signature):
            return None
        if not hmac.compare_digest(signature, self._sign(f"{expiry}.{nonce}")):
            return None
        if int(expiry) <= time.time():
            return None
        return float(expiry), nonce

    def bearer_admin(self, request: web.Request, *, allow_query: bool = False) -> bool | None:
        """True/False when a token was presented, None when none was."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            return scheme.lower() == "bearer" and self.token_ok(token.strip())
        if allow_query and "token" in request.query:
            return self.token_ok(request.query["token"])
        return None

    def cookie_admin(self, request: web.Request) -> bool:
        return self.session_ok(request.cookies.get(COOKIE))

    def is_admin(self, request: web.Request, *, allow_query: bool = False) -> bool:
        bearer = self.bearer_admin(request, allow_query=allow_query)
        if bearer is not None:
            return bearer
        return self.cookie_admin(request)


def user_id(request: web.Request, *, allow_query: bool = False) -> str:
    """The caller's user id: `X-User-Id` (or `?user=` where headers can't be set)."""
    value = request.headers.get(USER_HEADER)
    if value is None and allow_query:
        value = request.query.get("user")
    if value is None:
        return ANONYMOUS
    value = value.strip()
    if not value or len(value) > MAX_USER_ID or not value.isprintable():
        raise BadRequest(f"{USER_HEADER} must be 1..{MAX_USER_ID} printable characters")
    return value


def admin_only(handler: Handler) -> Handler:
    """Mark a handler as admin-only; the check runs before it. The mark lets a test find
    every admin route, so a new one can't be left open."""

    async def wrapper(request: web.Request) -> web.StreamResponse:
        if not request.app[AUTH].is_admin(request):
            raise Unauthorized("admin token required (Authorization: Bearer <token>)")
        return await handler(request)

    wrapper.admin_only = True  # type: ignore[attr-defined]
    wrapper.__name__ = handler.__name__
    wrapper.__doc__ = handler.__doc__
    return wrapper


AUTH = web.AppKey("auth", Auth)
