"""One HTTP attempt of a delivery: the POST with its headers (signed per Standard Webhooks),
and what came of it. Without WEBHOOK_ALLOW_PRIVATE the session's resolver refuses private
addresses at connect time (targets.py)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import aiohttp

from ..clock import Clock
from ..errors import ValidationFailed
from .documents import Endpoint, Item
from .schedule import _retry_after
from .signing import new_secret, sign
from .targets import _PublicOnlyResolver, check_public

VERSION: Final = "0.1.0"
USER_AGENT: Final = f"dubsim-webhooks/{VERSION}"
STALE_S: Final = 3600  # scenario stale_timestamp: how old the timestamp claims to be


class Sender:
    """The engine's HTTP side: one session for every endpoint, opened at start."""

    def __init__(
        self, clock: Callable[[], Clock], *, timeout_s: float, allow_private: bool
    ) -> None:
        self._clock = clock  # the engine's: the service's clock, or the override
        self.timeout_s = timeout_s
        self.allow_private = allow_private
        self._session: aiohttp.ClientSession | None = None

    @property
    def clock(self) -> Clock:
        return self._clock()

    def open(self) -> None:
        resolver = None if self.allow_private else _PublicOnlyResolver()
        connector = aiohttp.TCPConnector(limit=0, resolver=resolver)
        self._session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def post(
        self, endpoint: Endpoint, item: Item
    ) -> tuple[int | None, str | None, float | None, float]:
        """One HTTP attempt: (status, error, Retry-After seconds, duration)."""
        url = item.url if endpoint.lane else endpoint.url
        body = item.body.encode()
        headers = self.headers(endpoint, item)
        started = time.perf_counter()
        if url is None:
            return None, "no URL", None, 0.0
        session = self._session
        if session is None:
            return None, "not started", None, 0.0
        try:
            if not self.allow_private:
                await check_public(url)
            async with session.post(
                url,
                data=body,
                headers=headers,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
            ) as resp:
                duration = time.perf_counter() - started
                code = resp.status
                retry_after = None
                if code in (429, 503):
                    retry_after = _retry_after(resp.headers.get("Retry-After"), self.clock.now())
                if 300 <= code < 400:
                    return code, "redirect not followed", None, duration
                if not 200 <= code < 300:
                    return code, f"HTTP {code}", retry_after, duration
                return code, None, None, duration
        except TimeoutError:
            return (
                None,
                f"timed out after {self.timeout_s:g} s",
                None,
                time.perf_counter() - started,
            )
        except ValidationFailed as exc:
            return None, exc.message, None, time.perf_counter() - started
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            text = str(exc) or type(exc).__name__
            return None, text[:300], None, time.perf_counter() - started

    def headers(self, endpoint: Endpoint, item: Item) -> dict[str, str]:
        faults = item.faults
        timestamp = int(self.clock.now())
        if faults is not None and faults.stale_timestamp:
            timestamp -= STALE_S
        headers = {
            "content-type": "application/json",
            "user-agent": USER_AGENT,
            "webhook-id": item.id,
            "webhook-timestamp": str(timestamp),
        }
        if endpoint.signed:
            keys = [endpoint.secret]
            if (
                endpoint.previous_secret is not None
                and endpoint.previous_secret_expires_at is not None
                and endpoint.previous_secret_expires_at > self.clock.now()
            ):
                keys.append(endpoint.previous_secret)
            if faults is not None and faults.bad_signature:
                keys = [new_secret()]
            headers["webhook-signature"] = " ".join(
                sign(key, item.id, timestamp, item.body) for key in keys
            )
        return headers
