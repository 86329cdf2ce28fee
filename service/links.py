"""Signed, expiring links to a job's artifacts (its result video, its captions).

A link is `/v1/jobs/<id>/<artifact>?expires=<unix seconds>&sig=<hex>`: anyone holding it may
download until it expires, without credentials, the way result URLs of hosted media APIs
work. The signature is an HMAC over the path and the expiry, keyed from the admin token, so
every process of one service (they share the token) accepts the links of every other, and a
token change invalidates them all.
"""

from __future__ import annotations

import hashlib
import hmac

from .auth import ascii_digits

ARTIFACTS = ("result", "captions.srt", "captions.vtt")


class Links:
    def __init__(self, admin_token: str) -> None:
        self._key = hmac.new(
            admin_token.encode(), b"dubsim artifact links v1", hashlib.sha256
        ).digest()

    def path(self, job_id: str, artifact: str, expires_at: int) -> str:
        """The signed path (and query) of `artifact` of `job_id`, valid until `expires_at`."""
        if artifact not in ARTIFACTS:
            raise ValueError(f"unknown artifact {artifact!r}")
        sig = self._sign(job_id, artifact, expires_at)
        return f"/v1/jobs/{job_id}/{artifact}?expires={expires_at}&sig={sig}"

    def valid(self, job_id: str, artifact: str, expires: str, sig: str, now: float) -> bool:
        """Whether `sig` signs this link and `expires` (the query's text) is still ahead."""
        if not ascii_digits(expires) or len(expires) > 12 or not sig.isascii():
            return False
        expires_at = int(expires)
        if expires_at < now:
            return False
        return hmac.compare_digest(self._sign(job_id, artifact, expires_at), sig)

    def _sign(self, job_id: str, artifact: str, expires_at: int) -> str:
        message = f"{job_id}\n{artifact}\n{expires_at}".encode()
        return hmac.digest(self._key, message, "sha256").hex()  # one call: one per finished job
