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
"""

from __future__ import annotations

from typing import Final

from aiohttp import web

from ..appkeys import AUTH, SETTINGS
from ..auth import COOKIE
from ..errors import Forbidden, Unauthorized

SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})


def guard(request: web.Request) -> None:
    """Raise the request's 401/403/429, or return to let it through."""
    if getattr(request.match_info.handler, "own_credentials", False):
        return  # an API facade that checks its own keys and ignores the cookie (HeyGen's)
    if "Authorization" in request.headers and not _websocket(request):
        if not request.app[AUTH].bearer_admin(request):
            raise Unauthorized("wrong credentials (Authorization: Bearer <admin token>)")
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
