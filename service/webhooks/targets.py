"""Webhook targets: which URLs an endpoint may have, and the refusal of private addresses
(checked when an endpoint is made or changed, and again at connect time by the resolver)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Final
from urllib.parse import urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

from ..errors import ValidationFailed


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
    if not allow_private:
        await check_public(url)


_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix, IPv4 in the last 32 bits
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")  # local use (RFC 8215): private


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries to (mapped, IPv4-compatible, 6to4, NAT64,
    Teredo): a packet to it may end up there, so each must be public too."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip.packed[:12] == bytes(12) or ip in _NAT64:
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    return found


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in _LOCAL_NAT64 or any(not v4.is_global or v4.is_multicast for v4 in inner):
            return True
    return not ip.is_global or ip.is_multicast


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


class _PublicOnlyResolver(AbstractResolver):
    """Checks every address a name resolves to at connect time (no DNS-rebinding detour)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if _private(result["host"]):
                raise OSError(f"{host} resolves to a private address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()
