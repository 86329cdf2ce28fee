"""What every handler shares: JSON in and out, the error middleware, injected faults."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from ..appkeys import FAULTS, SERVICE
from ..errors import (
    Conflict,
    Forbidden,
    Gone,
    IdempotencyKeyReused,
    InsufficientStorage,
    InvalidJSON,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    ServiceError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
    ValidationFailed,
)
from ..models import ErrorBody, ErrorDetail
from ..store import StoreUnavailable
from ._guard import guard

T = TypeVar("T")
CHALLENGE: Final = 'Bearer realm="dubsim"'  # WWW-Authenticate on every 401
log = logging.getLogger(__name__)

_encoder = msgspec.json.Encoder()
_FIELD = re.compile(r"at `\$\.([^`]+)`|unknown field `([^`]+)`|missing required field `([^`]+)`")

HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    410: "gone",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    500: "internal_error",
    503: "unavailable",
}


# The one table from the domain's errors to HTTP statuses (the first match along the MRO).
HTTP_STATUS: Final[dict[type[ServiceError], int]] = {
    Unauthorized: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    Gone: 410,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InsufficientStorage: 507,
    ValidationFailed: 422,
    IdempotencyKeyReused: 422,
    RateLimited: 429,
    Unavailable: 503,
    ServiceError: 400,  # BadRequest, InvalidJSON, and anything not named above
}


def http_status(exc: ServiceError) -> int:
    """The HTTP status a domain error is answered with."""
    for kind in type(exc).__mro__:
        status = HTTP_STATUS.get(kind)
        if status is not None:
            return status
    return 400


def json_response(
    body: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    data = body if isinstance(body, bytes) else _encoder.encode(body)
    # the header given directly, not content_type=: that path parses and rebuilds it per response
    all_headers = {"Content-Type": "application/json"}
    if headers:
        all_headers.update(headers)
    return web.Response(body=data, status=status, headers=all_headers)


def error_response(
    status: int,
    code: str,
    message: str,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    body = ErrorBody(ErrorDetail(code, message, details or {}))
    return json_response(body, status, headers)


async def read_json(request: web.Request, type_: type[T], *, lenient_type: bool = False) -> T:
    """Decode the body into `type_`. An empty body means `{}` (all defaults).

    400 malformed JSON, 415 a body that says it isn't JSON, 422 wrong types or unknown fields
    (naming the field); 413 comes from aiohttp's client_max_size.
    """
    body = await request.read()
    if not body.strip():
        try:
            return msgspec.convert({}, type_)
        except msgspec.ValidationError as exc:
            raise ValidationFailed(str(exc), field=field_of(exc)) from exc
    ctype = request.content_type
    if not lenient_type and ctype not in ("application/json", "") and not ctype.endswith("+json"):
        raise UnsupportedMediaType(
            f"send JSON (Content-Type: application/json), not {request.content_type}"
        )
    return decode_json(body, type_)


def decode_json(data: bytes | str, type_: type[T]) -> T:
    """msgspec's decode with its errors in the service's vocabulary (400 / 422)."""
    try:
        return msgspec.json.decode(data, type=type_)
    except msgspec.ValidationError as exc:
        raise ValidationFailed(str(exc), field=field_of(exc)) from exc
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise InvalidJSON(f"malformed JSON: {exc}") from exc
    except RecursionError:  # msgspec recurses per nesting level: 30k `[` exhaust the stack
        raise InvalidJSON("malformed JSON: nested too deeply") from None


def field_of(exc: msgspec.ValidationError) -> str | None:
    match = _FIELD.search(str(exc))
    if match is None:
        return None
    return next(group for group in match.groups() if group)


Observe = Callable[[str, str, float], None]


def http_middleware(observe: Observe) -> Middleware:
    """The one middleware: every error leaves as `{"error": {"code", "message", "details"}}`,
    and every request's latency goes to `observe(method, route, seconds)`. One layer, not two:
    each middleware layer is paid on every request."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        start = time.perf_counter()
        try:
            checking = guard(request)
            if checking is not None:  # a key or a session cookie: the store is asked
                await checking
            return await handler(request)
        except Exception as exc:
            response = _error_response_for(request, exc)
            if response is None:
                raise
            return response
        finally:
            observe(request.method, route, time.perf_counter() - start)

    return middleware


def _error_response_for(request: web.Request, exc: Exception) -> web.Response | None:
    """The JSON answer for an exception a handler raised; None to let it propagate."""
    if isinstance(exc, ServiceError):
        headers = None
        if isinstance(exc, Unavailable):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        if isinstance(exc, RateLimited):
            reset = str(max(1, math.ceil(exc.reset_s)))
            headers = {
                "Retry-After": reset,
                "RateLimit-Limit": str(exc.limit),
                "RateLimit-Remaining": str(exc.remaining),
                "RateLimit-Reset": reset,
            }
        if isinstance(exc, Unauthorized):
            headers = {"WWW-Authenticate": CHALLENGE}
        legacy_error = getattr(request.match_info.handler, "legacy_error", None)
        if legacy_error is not None:  # the seed-era routes answer in their own shape
            legacy: web.Response = legacy_error(exc)
            if headers and legacy.status == 401:
                legacy.headers.update(headers)
            return legacy
        return error_response(http_status(exc), exc.code, exc.message, exc.details, headers)
    if isinstance(exc, StoreUnavailable):
        retry = str(max(1, math.ceil(exc.retry_after_s)))
        return error_response(503, "store_unavailable", exc.reason, headers={"Retry-After": retry})
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        code = HTTP_CODES.get(exc.status, "http_error")
        message = (
            exc.reason if exc.text is None or exc.text.startswith(str(exc.status)) else exc.text
        )
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        return error_response(exc.status, code, message, headers=headers or None)
    if isinstance(exc, ConnectionError):
        return None  # the peer left: nobody to answer
    # a bug: say so in JSON, and leave the traceback in the log
    log.exception("unhandled error on %s %s", request.method, request.path, exc_info=exc)
    return error_response(500, "internal_error", "internal server error")


FAULT_STATUSES = (500, 503, 408)


async def injected_fault(request: web.Request) -> web.Response | None:
    """With FAULT_RATE > 0, stall and then fail that share of reads (state still advances)."""
    config = request.app[SERVICE].config
    if config.fault_rate <= 0:
        return None
    rng = request.app[FAULTS]
    if rng.random() >= config.fault_rate:
        return None
    status = rng.choice(FAULT_STATUSES)
    await asyncio.sleep(config.fault_stall_s)
    return error_response(
        status, "injected_fault", f"injected fault (FAULT_RATE={config.fault_rate})"
    )
