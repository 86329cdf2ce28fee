"""The trust checks every request passes before its handler: one place, not one per route.

- A credential that is presented is checked: a wrong `Authorization` header is 401 on every
  route (never a silent downgrade to the anonymous view; the WebSocket closes with 1008
  instead), and failed attempts are throttled per client address (429 + Retry-After; see
  `service.auth.Throttle`).
- A mutation that rides on the dashboard's session cookie (a non-GET with a valid session
  cookie and no `Authorization` header) must come from the dashboard itself: same origin
  (`Origin`, or `Sec-Fetch-Site: same-origin` when a browser sends no Origin) and a JSON
  body type, which no cross-site `<form>` or no-cors `fetch` can send. Otherwise 403.
  Clients that authenticate with the token in a header are not exposed to CSRF.
- An API key that is presented (`x-api-key`, `Authorization: Bearer dsk_...`, or `?api_key=`
  on the WebSocket and SSE) is looked up (`service.keys.KeyRing`): unknown or revoked is 401;
  a good one sets the request's identity (`service.auth.IDENTITY`), which `user_id` and
  `plan_for` then answer from. This holds in both modes.
- AUTH=keys: a request with neither a good key nor the admin's token or session is 401 on
  every route but PUBLIC_ROUTES, whatever its family (REST, WebSocket upgrade, SSE, long
  poll, seed-era routes, and routes added later: deny is the default).
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, Final

from aiohttp import web

from ..appkeys import AUTH, SETTINGS
from ..auth import COOKIE, IDENTITY, KEYS_ONLY, presented_key
from ..errors import Forbidden, Unauthorized
from ..keys import KEYS

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
# Open without a key in AUTH=keys: health and metrics (aggregates, no one's jobs), the API
# description, the dashboard's files, and the session routes (logging in takes the admin
# token). A route added later is closed unless it is named here.
PUBLIC_ROUTES: Final = frozenset(
    {"/healthz", "/metrics", "/openapi.json", "/", "/static/{name}", "/v1/session"}
)
# a signed, expiring artifact link is its own credential (the handler checks the signature, and
# without a key falls back to nobody's rights): what `result_url` and HeyGen's `url` hand out
SIGNED_ROUTES: Final = frozenset(
    {"/v1/jobs/{id}/result", "/v1/jobs/{id}/captions.srt", "/v1/jobs/{id}/captions.vtt"}
)
# where a key may ride in the query string: what browsers open without setting headers
KEY_IN_QUERY: Final = frozenset({"/v1/ws", "/v1/events"})


def guard(request: web.Request) -> Coroutine[Any, Any, None] | None:
    """Raise the request's 401/403/429, or return to let it through. A request that carries
    an API key or the session cookie needs the store: then a coroutine to await."""
    if getattr(request.match_info.handler, "own_credentials", False):
        return None  # an API facade that checks its own keys and ignores the cookie (HeyGen's)
    key = presented_key(request, allow_query=_route(request) in KEY_IN_QUERY)
    if key is not None or COOKIE in request.cookies:
        return _checked(request, key)
    _check_admin(request)
    _require_credential(request)
    return None


async def _checked(request: web.Request, key: str | None) -> None:
    if key is not None:
        identity = await request.app[KEYS].lookup(key)
        if identity is None:
            raise Unauthorized("unknown or revoked API key")
        request[IDENTITY] = identity
    cookie = request.cookies.get(COOKIE)
    if cookie is not None:
        await request.app[AUTH].sync_session(cookie)
    _check_admin(request)
    _require_credential(request)


def _route(request: web.Request) -> str | None:
    resource = request.match_info.route.resource
    return None if resource is None else resource.canonical


def _require_credential(request: web.Request) -> None:
    """AUTH=keys: no anonymous caller gets past here (the admin and key holders do)."""
    if request.app[SETTINGS].auth != "keys" or IDENTITY in request:
        return
    if request.match_info.http_exception is not None:
        return  # no such route (404/405): nothing to protect, and the answer says so
    route = _route(request)
    if route in PUBLIC_ROUTES or (route in SIGNED_ROUTES and "sig" in request.query):
        request[KEYS_ONLY] = True  # let in without a credential: then nobody's rights
        return
    if "Authorization" in request.headers:
        return  # the admin token: checked already (a WebSocket checks it itself: 1008)
    if _websocket(request) and "token" in request.query:
        return  # the admin token where a browser can't set headers; the socket checks it
    if request.app[AUTH].cookie_admin(request):
        return
    raise Unauthorized("an API key is required (x-api-key: <key>, or Authorization: Bearer <key>)")


def _check_admin(request: web.Request) -> None:
    if "Authorization" in request.headers and not _websocket(request):
        admin = request.app[AUTH].bearer_admin(request)
        if admin is False:
            raise Unauthorized("wrong credentials (Authorization: Bearer <admin token>)")
        if admin:
            return
    if request.method in SAFE_METHODS or COOKIE not in request.cookies:
        return
    if not request.app[AUTH].cookie_admin(request):
        return  # a stale or forged cookie carries no authority to forge requests with
    if not same_origin(request):
        raise Forbidden(
            "a request carrying the dashboard's session cookie must come from the dashboard "
            "(same origin); other clients send Authorization: Bearer <token>"
        )
    ctype = request.content_type
    if ctype != "application/json" and not ctype.endswith("+json"):
        raise Forbidden(
            "a request carrying the dashboard's session cookie must send "
            "Content-Type: application/json"
        )


def _websocket(request: web.Request) -> bool:
    """A WebSocket upgrade: /v1/ws refuses a wrong token itself, with its documented close
    code (1008 "bad admin token"), which clients act on, rather than a handshake 401."""
    return request.headers.get("Upgrade", "").lower() == "websocket"


def same_origin(request: web.Request) -> bool:
    """The request comes from a page of this server (or an ALLOWED_ORIGINS one).

    Browsers send `Origin` on every cross-origin request and on same-origin non-GET ones;
    where it is absent, `Sec-Fetch-Site` says where the request came from. A request with
    neither is not from a modern browser and gets no benefit of the doubt.
    """
    origin = request.headers.get("Origin")
    if origin is None:
        return request.headers.get("Sec-Fetch-Site") == "same-origin"
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[SETTINGS].allowed_origins
