"""Webhook targets: which URLs an endpoint may have, and the refusal of private addresses
(checked when an endpoint is made or changed, and again at connect time by the resolver)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit

from ..egress import PublicOnlyResolver as _PublicOnlyResolver
from ..egress import ip_literal
from ..egress import is_private as _private
from ..errors import ValidationFailed

__all__ = ["_PublicOnlyResolver", "_private", "check_public", "validate_url"]


async def validate_url(url: str, *, allow_private: bool) -> None:
    """An endpoint's URL: http(s), a host, no credentials, a valid port; a public host unless
    `allow_private` (WebhookService.validate_url, with WEBHOOK_ALLOW_PRIVATE)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed "[" of an IPv6 host
        raise ValidationFailed("url is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationFailed("url must be an http:// or https:// URL with a host", field="url")
    if parts.username or parts.password:
        raise ValidationFailed("url must not carry credentials", field="url")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        raise ValidationFailed("url has a bad port", field="url") from None
    address = ip_literal(parts.hostname)
    if address is not None and address != parts.hostname:
        # 2130706433, 0x7f000001, 127.1: the C library reads them as addresses, the sender
        # (aiohttp) refuses them, so every delivery would fail: say so now
        raise ValidationFailed(
            f"url host {parts.hostname} is an IPv4 address in another form; write it as {address}",
            field="url",
        )
    if not allow_private:
        await check_public(url)


async def check_public(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, any non-public address."""
    host = urlsplit(url).hostname or ""
    try:
        addresses = [str(ipaddress.ip_address(host))]
    except ValueError:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise ValidationFailed(f"url host does not resolve: {exc}", field="url") from None
        addresses = [str(info[4][0]) for info in infos]
    for address in addresses:
        if _private(address):
            raise ValidationFailed(
                f"url resolves to a private or loopback address ({address}); "
                "WEBHOOK_ALLOW_PRIVATE is off",
                field="url",
            )
