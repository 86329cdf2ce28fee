"""The service's error vocabulary: each names its HTTP status and a stable code.

Raised by the domain and the handlers alike; one middleware turns them into
`{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    status = 400
    code = "bad_request"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(ServiceError):
    pass


class InvalidJSON(ServiceError):
    code = "invalid_json"


class Unauthorized(ServiceError):
    status, code = 401, "unauthorized"


class Forbidden(ServiceError):
    status, code = 403, "forbidden"


class NotFound(ServiceError):
    status, code = 404, "not_found"


class Conflict(ServiceError):
    status, code = 409, "conflict"


class UnsupportedMediaType(ServiceError):
    status, code = 415, "unsupported_media_type"


class ValidationFailed(ServiceError):
    status, code = 422, "validation_error"


class IdempotencyKeyReused(ServiceError):
    status, code = 422, "idempotency_key_reused"


class RateLimited(ServiceError):
    status, code = 429, "rate_limited"

    def __init__(self, message: str, *, limit: int, remaining: int, reset_s: float) -> None:
        super().__init__(message, limit=limit, retry_after_s=reset_s)
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


class Unavailable(ServiceError):
    """503: the server can't take this now (connection cap, shutting down); retry later."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after_s: float, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.retry_after_s = retry_after_s


class StartupError(Exception):
    """The service can't start as configured (a store it can't open, a port in use, ...).

    Not a ServiceError: it never reaches a client. `setting` names what to fix (an env var such
    as DB or PORT); `python -m service` prints `dubsim: <setting>: <problem>` and exits 2.
    """

    def __init__(self, setting: str, problem: str) -> None:
        super().__init__(f"{setting}: {problem}")
        self.setting = setting
        self.problem = problem
