"""The service's error vocabulary: what went wrong, as a stable code and a message.

Raised by the domain (JobService) and the handlers alike. They name no HTTP status: each
transport maps them in one table (v1: `service/api/_http.py` HTTP_STATUS, whose error
middleware answers `{"error": {"code", "message", "details"}}`; the seed-era routes:
`service/api/compat.py`, in their old words; the WebSocket answers with the code).
"""

from __future__ import annotations

from typing import Any


class ServiceError(Exception):
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
    code = "unauthorized"


class Forbidden(ServiceError):
    code = "forbidden"


class NotFound(ServiceError):
    code = "not_found"


class Conflict(ServiceError):
    code = "conflict"


class PayloadTooLarge(ServiceError):
    code = "payload_too_large"


class Gone(ServiceError):
    """It existed, and is no more (a media result whose file was removed)."""

    code = "gone"


class InsufficientStorage(ServiceError):
    """The disk is full (or a file-size limit was hit) while storing what was sent."""

    code = "insufficient_storage"


class UnsupportedMediaType(ServiceError):
    code = "unsupported_media_type"


class ValidationFailed(ServiceError):
    code = "validation_error"


class IdempotencyKeyReused(ServiceError):
    code = "idempotency_key_reused"


class RateLimited(ServiceError):
    code = "rate_limited"

    def __init__(self, message: str, *, limit: int, remaining: int, reset_s: float) -> None:
        super().__init__(message, limit=limit, retry_after_s=reset_s)
        self.limit = limit
        self.remaining = remaining
        self.reset_s = reset_s


class Unavailable(ServiceError):
    """The server can't take this now (connection cap, shutting down); retry later."""

    code = "unavailable"

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
