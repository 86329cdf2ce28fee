"""Who is asking: the admin token, users' ids, and the dashboard's cookie session."""

from __future__ import annotations

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
    """Checks the admin token in constant time and keeps dashboard sessions in memory."""

    def __init__(self, admin_token: str) -> None:
        if not admin_token:
            raise ValueError("an admin token is required")
        self._token = admin_token.encode()
        self._sessions: dict[str, float] = {}  # session id -> expiry (epoch s)

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token.encode(), self._token)

    def open_session(self) -> str:
        now = time.time()
        self._sessions = {sid: exp for sid, exp in self._sessions.items() if exp > now}
        sid = secrets.token_urlsafe(32)
        self._sessions[sid] = now + SESSION_TTL_S
        return sid

    def close_session(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def session_ok(self, sid: str | None) -> bool:
        return sid is not None and self._sessions.get(sid, 0) > time.time()

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
