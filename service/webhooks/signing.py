"""Webhook signing: endpoint secrets, Standard Webhooks signatures, delivery (message) ids."""

from __future__ import annotations

import base64
import hashlib
import secrets
from datetime import UTC, datetime

from standardwebhooks.webhooks import Webhook


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(24)).decode()


def sign(secret: str, msg_id: str, timestamp: int, body: str) -> str:
    """`v1,<base64 HMAC-SHA256>` per the Standard Webhooks spec (the standardwebhooks package)."""
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return Webhook(secret).sign(msg_id, when, body)


def message_id(endpoint_id: str, seq: int) -> str:
    """The webhook-id: the same for the same (endpoint, event), so receivers can dedupe."""
    digest = hashlib.sha256(f"{endpoint_id}/{seq}".encode()).digest()[:16]
    return "msg_" + base64.b32encode(digest).decode().rstrip("=").lower()
