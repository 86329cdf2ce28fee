"""Webhooks on the client's side: verifying what the server signs, and the endpoint types.

dubsim signs webhooks per Standard Webhooks (https://www.standardwebhooks.com/): headers
`webhook-id`, `webhook-timestamp` (epoch seconds) and `webhook-signature` (space-separated
`v1,<base64 HMAC-SHA256>`), the HMAC keyed with the base64-decoded part of a `whsec_...` secret
over `"{id}.{timestamp}.{body}"`. The signing itself is the `standardwebhooks` package's; the
timestamp window is checked here, because that package's is fixed at five minutes and reads
the wall clock (a receiver under a virtual clock, or with a wider tolerance, needs both).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import msgspec
from standardwebhooks.webhooks import EmptyWebhookSecretError
from standardwebhooks.webhooks import Webhook as _Signer

from ._errors import DubsimError

__all__ = [
    "EVENT_TYPES",
    "ClockState",
    "Delivery",
    "DeliveryAttempt",
    "SecretRotation",
    "Webhook",
    "WebhookVerificationError",
    "generate_secret",
    "sign_webhook",
    "verify_webhook",
]

SECRET_PREFIX = "whsec_"
# every event a webhook can carry, in a job's life order
EVENT_TYPES = (
    "job.created",
    "job.started",
    "job.progress",
    "job.failed",
    "job.retrying",
    "job.completed",
    "job.permanently_failed",
    "job.cancelled",
    "job.deleted",
)


class WebhookVerificationError(DubsimError):
    """A webhook's signature, timestamp or headers do not check out: do not trust its body."""


def _signer(secret: str) -> _Signer:
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("a webhook secret starts with whsec_")
    try:
        base64.b64decode(secret[len(SECRET_PREFIX) :], validate=True)
        return _Signer(secret)
    except (binascii.Error, EmptyWebhookSecretError, ValueError) as exc:
        raise ValueError(f"not a webhook secret: {exc}") from None


def generate_secret() -> str:
    """A fresh `whsec_` secret: 32 random bytes, base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def sign_webhook(
    body: bytes | str, secret: str, msg_id: str, timestamp: float | None = None
) -> dict[str, str]:
    """The three Standard Webhooks headers for `body`, signed with `secret`."""
    stamp = int(time.time() if timestamp is None else timestamp)
    text = body.decode() if isinstance(body, bytes) else body
    signature = _signer(secret).sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), text)
    return {"webhook-id": msg_id, "webhook-timestamp": str(stamp), "webhook-signature": signature}


def verify_webhook(
    body: bytes | str,
    headers: Mapping[str, str],
    secret: str,
    *,
    tolerance_s: float = 300,
    now: float | None = None,
) -> dict[str, Any]:
    """Check a delivery's signature and timestamp; return its event (the JSON body).

    `headers` may be any mapping (lookups ignore case); `body` must be the raw bytes received,
    not a re-encoding. A timestamp more than `tolerance_s` from `now` (default: the wall clock)
    is refused, against replays. Raises WebhookVerificationError; ValueError for a secret
    that is not a `whsec_` one.
    """
    signer = _signer(secret)
    lowered = {key.lower(): value for key, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    stamp_text = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and stamp_text and signatures):
        raise WebhookVerificationError(
            "missing header: webhook-id, webhook-timestamp and webhook-signature are required"
        )
    if not (stamp_text.isascii() and stamp_text.isdigit() and len(stamp_text) < 16):
        raise WebhookVerificationError("webhook-timestamp must be epoch seconds")
    stamp = int(stamp_text)
    current = time.time() if now is None else now
    if stamp < current - tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too old (a replay?)")
    if stamp > current + tolerance_s:
        raise WebhookVerificationError("webhook-timestamp too far in the future")
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
    except UnicodeDecodeError:
        raise WebhookVerificationError("the body is not UTF-8") from None
    expected = signer.sign(msg_id, datetime.fromtimestamp(stamp, tz=UTC), text).encode()
    matched = False
    for candidate in signatures.split():
        # every candidate is compared (constant time), so the position of a match leaks nothing
        matched |= candidate.startswith("v1,") and hmac.compare_digest(candidate.encode(), expected)
    if not matched:
        raise WebhookVerificationError("no matching signature")
    try:
        event = json.loads(text)
    except ValueError:
        raise WebhookVerificationError("the body is not JSON") from None
    if not isinstance(event, dict):
        raise WebhookVerificationError("the body is not a JSON object")
    return event


# ---- the endpoint API's types (docs/protocol.md, "Webhooks") ------------------------------


class Webhook(msgspec.Struct, frozen=True):
    """A webhook endpoint. `secret` is only in the answer that created it."""

    id: str
    url: str
    events: list[str] | None = None  # None: every event
    description: str | None = None
    status: str = "enabled"
    disabled_reason: str | None = None
    owner: str | None = None
    created_at: datetime | None = None
    secret: str | None = None


class WebhookList(msgspec.Struct, frozen=True):
    webhooks: list[Webhook]


class DeliveryAttempt(msgspec.Struct, frozen=True):
    """One try at delivering: the receiver's status code (None: no answer) and how long."""

    at: datetime
    status_code: int | None = None
    duration_ms: float | None = None
    error: str | None = None


class Delivery(msgspec.Struct, frozen=True):
    """One event on its way to one endpoint."""

    id: str
    event_type: str
    seq: int
    status: str
    job_id: str | None = None
    attempts: list[DeliveryAttempt] = []
    next_attempt_at: datetime | None = None


class DeliveryList(msgspec.Struct, frozen=True):
    deliveries: list[Delivery]


class SecretRotation(msgspec.Struct, frozen=True):
    """A new secret; the previous one keeps signing too until `previous_secret_expires_at`."""

    secret: str
    previous_secret_expires_at: datetime | None = None


class Replay(msgspec.Struct, frozen=True):
    queued: int


class ClockState(msgspec.Struct, frozen=True):
    """`GET /v1/clock` and `POST /v1/clock/advance`: the server's time (and its mode)."""

    now: datetime
    mode: str | None = None
    advanced_s: float | None = None
