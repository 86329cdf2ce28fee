"""Who is asking: the admin token, API keys, users' ids, and the dashboard's cookie session."""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from .errors import BadRequest, Forbidden, RateLimited, Unauthorized
from .keys import KEY_PREFIX, PLANS, Identity
from .models import Role
from .store.base import Store, StoreUnavailable, VersionConflict

USER_HEADER: Final = "X-User-Id"
ANONYMOUS: Final = "anonymous"
COOKIE: Final = "dubsim_session"
SESSION_TTL_S: Final = 12 * 3600
MAX_USER_ID: Final = 128
MIN_ADMIN_TOKEN: Final = 16
MAX_TRACKED_ADDRESSES: Final = 10_000
KEY_HEADER: Final = "x-api-key"
KEY_QUERY: Final = "api_key"  # WebSocket and SSE only: browsers can't set headers there
REVOKED_SESSION: Final = "session_revoked"  # Store document kind: a logged-out nonce


def ascii_digits(text: str) -> bool:
    """`str.isdigit()` also accepts "²" and "٣", which int() then refuses or misreads."""
    return text.isascii() and text.isdigit()


class Throttle:
    """Failed admin-token attempts per client address, in a sliding window.

    After `failures` failures within `window_s`, every further attempt from that address
    (right or wrong: a guesser must not learn which) is refused until the oldest failure
    leaves the window. A success clears the address's record. At most
    MAX_TRACKED_ADDRESSES addresses are remembered (the oldest is forgotten first), so a
    spray from many addresses costs bounded memory.
    """

    def __init__(
        self,
        failures: int = 10,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failures < 1 or window_s <= 0:
            raise ValueError("failures must be >= 1 and window_s > 0")
        self.failures = failures
        self.window_s = window_s
        self._clock = clock
        self._seen: dict[str, deque[float]] = {}
        self.refused = 0  # attempts refused while locked out

    def check(self, address: str) -> None:
        """Raise RateLimited while `address` is locked out."""
        times = self._seen.get(address)
        if times is None:
            return
        now = self._clock()
        while times and times[0] <= now - self.window_s:
            times.popleft()
        if len(times) >= self.failures:
            self.refused += 1
            wait = times[0] + self.window_s - now
            raise RateLimited(
                f"too many failed admin-token attempts from this address; retry in "
                f"{math.ceil(wait)} s",
                limit=self.failures,
                remaining=0,
                reset_s=wait,
            )
        if not times:
            del self._seen[address]

    def record(self, address: str, ok: bool) -> None:
        if ok:
            self._seen.pop(address, None)
            return
        times = self._seen.pop(address, None) or deque(maxlen=self.failures)
        times.append(self._clock())
        self._seen[address] = times  # re-inserted: the dict's order is the eviction order
        if len(self._seen) > MAX_TRACKED_ADDRESSES:
            del self._seen[next(iter(self._seen))]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Auth:
    """Checks the admin token in constant time and signs the dashboard's session cookies.

    A session is `expiry.nonce.signature`, signed with a key derived from the admin token: it
    survives a restart (the dashboard stays logged in) and dies when the token changes. A
    logout revokes the nonce durably, as a Store document (kind `session_revoked`, pruned once
    the session would have expired), so it holds across a restart and on every process on
    Redis: the guard reads the nonce's document before any request that carries the cookie
    (`sync_session`), and a revocation it finds is remembered here until the session expires.

    The admin-token throttle (`Throttle`) stays per process, on purpose: with N processes a
    guesser gets N x AUTH_FAILURES tries per window, which against a token of at least 16
    characters is no help, while sharing it would put a store write on every failed attempt.
    """

    def __init__(
        self,
        admin_token: str,
        throttle: Throttle | None = None,
        clock: Callable[[], float] | None = None,
        store: Store | None = None,
    ) -> None:
        if not admin_token:
            raise ValueError("an admin token is required")
        if len(admin_token) < MIN_ADMIN_TOKEN:
            raise ValueError(f"ADMIN_TOKEN must be at least {MIN_ADMIN_TOKEN} characters")
        self._token = admin_token.encode()
        self._key = hmac.new(self._token, b"dubsim session cookie v1", hashlib.sha256).digest()
        self._revoked: dict[str, float] = {}  # nonce -> expiry
        # the service's clock (sessions expire in its time); read late, so tests can patch time
        self.clock: Callable[[], float] = clock or (lambda: time.time())
        self.throttle = throttle or Throttle(clock=self.clock)
        self.store = store

    def token_ok(self, token: str) -> bool:
        return hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._token)

    def attempt(self, request: web.Request, token: str) -> bool:
        """Check a presented token, throttled per client address (429 while locked out)."""
        address = request.remote or "unknown"
        self.throttle.check(address)
        ok = self.token_ok(token)
        self.throttle.record(address, ok)
        return ok

    def open_session(self) -> str:
        payload = f"{int(self.clock() + SESSION_TTL_S)}.{secrets.token_urlsafe(16)}"
        return f"{payload}.{self._sign(payload)}"

    async def close_session(self, cookie: str) -> None:
        """Log out: the nonce is revoked here at once, and durably for every process."""
        parsed = self._verify(cookie)
        if parsed is None:
            return
        now = self.clock()
        self._revoked = {n: exp for n, exp in self._revoked.items() if exp > now}
        self._revoked[parsed[1]] = parsed[0]
        if self.store is None:
            return
        body = str(parsed[0]).encode()
        await self.store.put_doc(REVOKED_SESSION, parsed[1], body)
        for doc in await self.store.docs(REVOKED_SESSION):  # forget the expired ones
            try:
                if float(doc.body) <= now:
                    await self.store.put_doc(REVOKED_SESSION, doc.id, None, expect=doc.version)
            except (ValueError, VersionConflict, StoreUnavailable):
                pass

    async def sync_session(self, cookie: str) -> None:
        """Learn whether another process (or this one before a restart) revoked the cookie's
        session: one store read, for requests that carry the cookie (the dashboard's)."""
        parsed = self._verify(cookie)
        if parsed is None or parsed[1] in self._revoked or self.store is None:
            return
        if await self.store.get_doc(REVOKED_SESSION, parsed[1]) is not None:
            self._revoked[parsed[1]] = parsed[0]

    def session_ok(self, cookie: str | None) -> bool:
        parsed = None if cookie is None else self._verify(cookie)
        return parsed is not None and parsed[1] not in self._revoked

    def _sign(self, payload: str) -> str:
        data = payload.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, data, hashlib.sha256).hexdigest()

    def _verify(self, cookie: str) -> tuple[float, str] | None:
        """(expiry, nonce) of a genuine, unexpired cookie; None otherwise."""
        expiry, _, rest = cookie.partition(".")
        nonce, _, signature = rest.partition(".")
        if not (ascii_digits(expiry) and len(expiry) < 16 and nonce and signature.isascii()):
            return None
        # bytes, not str: compare_digest raises TypeError on a non-ASCII str
        expected = self._sign(f"{expiry}.{nonce}").encode()
        if not hmac.compare_digest(signature.encode(), expected):
            return None
        if int(expiry) <= self.clock():
            return None
        return float(expiry), nonce

    def bearer_admin(self, request: web.Request, *, allow_query: bool = False) -> bool | None:
        """True/False when a token was presented, None when none was. Throttled: raises
        RateLimited while the caller's address is locked out after failed attempts."""
        header = request.headers.get("Authorization")
        if header is not None:
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer":
                return False
            token = token.strip()
            if token.startswith(KEY_PREFIX):
                return None  # an API key, not an attempt at the admin token
            return self.attempt(request, token)
        if allow_query and "token" in request.query:
            return self.attempt(request, request.query["token"])
        return None

    def cookie_admin(self, request: web.Request) -> bool:
        return self.session_ok(request.cookies.get(COOKIE))

    def stale_cookie(self, request: web.Request) -> bool:
        """A session cookie is presented and is not (or no longer) valid."""
        cookie = request.cookies.get(COOKIE)
        return cookie is not None and not self.session_ok(cookie)

    def is_admin(self, request: web.Request, *, allow_query: bool = False) -> bool:
        """Whether the caller is the admin, on a route where the admin sees or may do more.

        A credential that is presented but wrong is 401, never a silent downgrade to the
        anonymous view: a wrong Bearer token (refused for every route by the middleware
        already), and here a stale session cookie (expired, revoked, or signed with an
        older ADMIN_TOKEN) when it is the only credential. Routes where the admin gets
        nothing more never ask, so a stale cookie is ignored there.
        """
        bearer = self.bearer_admin(request, allow_query=allow_query)
        if bearer is not None:
            return bearer
        if self.stale_cookie(request):
            raise Unauthorized("session expired or revoked: log in again")
        return self.cookie_admin(request)


IDENTITY = web.RequestKey("identity", Identity)
"""Set by the guard on a request whose API key it has checked."""


def presented_key(request: web.Request, *, allow_query: bool = False) -> str | None:
    """The API key the request carries: `x-api-key`, `Authorization: Bearer dsk_...`, or
    (`allow_query`: the WebSocket and SSE, which browsers open without headers) `?api_key=`.

    Two different keys on one request are refused (401): neither is taken silently over the
    other, or a revoked key could ride along unnoticed beside a good one."""
    header = request.headers.get(KEY_HEADER)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    bearer = token if scheme.lower() == "bearer" and token.startswith(KEY_PREFIX) else None
    queried = request.query.getall(KEY_QUERY, []) if allow_query else []
    given = None if header is None else header.strip()
    if len({key for key in (given, bearer, *queried) if key is not None}) > 1:
        raise Unauthorized("two different API keys on one request")
    if given is not None:
        return given
    if "Authorization" in request.headers:
        return bearer
    return queried[0] if queried else None


# set by the guard in AUTH=keys: then X-User-Id names nobody
KEYS_ONLY = web.RequestKey("keys_only", bool)


def user_id(request: web.Request, *, allow_query: bool = False) -> str:
    """The caller's user id: the API key's user when a key was presented; otherwise
    `X-User-Id` (or `?user=` where headers can't be set), which AUTH=open trusts as given.

    With a key, an `X-User-Id` (or `?user=`) naming someone else is refused (403): the key
    names the user, and a request that says otherwise is a mistake worth hearing about."""
    value = request.headers.get(USER_HEADER)
    if value is None and allow_query:
        value = request.query.get("user")
    identity: Identity | None = request.get(IDENTITY)
    if identity is not None:
        if value is not None and value.strip() != identity.user_id:
            raise Forbidden(
                f"this API key belongs to user {identity.user_id!r}; {USER_HEADER} can't "
                "name another"
            )
        return identity.user_id
    if value is None or KEYS_ONLY in request:
        return ANONYMOUS  # AUTH=keys: a user is named by a key, never by a header
    value = value.strip()
    if not value or len(value) > MAX_USER_ID or not value.isprintable():
        raise BadRequest(f"{USER_HEADER} must be 1..{MAX_USER_ID} printable characters")
    return value


def plan_for(request: web.Request, asked: Role | None) -> Role:
    """The plan a submission runs on: with an API key, the key's (a body asking for another
    plan is refused, 403); otherwise what the body asked for (free by default)."""
    identity: Identity | None = request.get(IDENTITY)
    if identity is None:
        return Role.FREE if asked is None else asked
    if identity.plan not in PLANS:  # a key made for a plan since withdrawn
        raise Forbidden(f"this API key's plan {identity.plan!r} is not offered any more")
    if asked is not None and asked != identity.role:
        raise Forbidden(f"this API key is on the {identity.plan} plan; a job can't ask for {asked}")
    return identity.role


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
