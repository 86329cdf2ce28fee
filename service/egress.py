"""Outgoing connections to addresses users name (webhook targets, a job's video.url): which
addresses count as private, and a resolver that refuses them at connect time, so a name that
resolves (or is redirected) to loopback or a private network is refused however it got there."""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Final

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")  # well-known prefix, IPv4 in the last 32 bits
_LOCAL_NAT64: Final = ipaddress.IPv6Network("64:ff9b:1::/48")  # local use (RFC 8215): private
# what inet_aton may read as an IPv4 address: digits, hex digits, "x" and dots, nothing else
# (it would also take "127.1 anything": whatever follows a space)
_IPV4_FORMS: Final = re.compile(r"[0-9a-fA-FxX.]+")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries to (mapped, IPv4-compatible, 6to4, NAT64,
    Teredo): a packet to it may end up there, so each must be public too."""
    found = [a for a in (ip.ipv4_mapped, ip.sixtofour) if a is not None]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip.packed[:12] == bytes(12) or ip in _NAT64:
        found.append(ipaddress.IPv4Address(ip.packed[12:]))
    return found


def is_private(address: str) -> bool:
    """Loopback, private, link-local, reserved, multicast, or carrying one of those inside."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded_ipv4(ip)
        if ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if ip in _LOCAL_NAT64 or any(not v4.is_global or v4.is_multicast for v4 in inner):
            return True
    return not ip.is_global or ip.is_multicast


class PrivateAddress(OSError):
    """A connection this process must not make: the host is, or resolves to, a private one."""


class PublicOnlyResolver(AbstractResolver):
    """Checks every address a name resolves to at connect time (no DNS-rebinding detour)."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        for result in results:
            if is_private(result["host"]):
                raise PrivateAddress(f"{host} resolves to a private address ({result['host']})")
        return results

    async def close(self) -> None:
        await self._inner.close()


def ip_literal(host: str) -> str | None:
    """The address `host` denotes if it is an IP address literal, written canonically; None for
    a name. IPv4 in every form the C library reads (inet_aton, as getaddrinfo does, never asking
    DNS): decimal `2130706433`, hex `0x7f000001`, short `127.1`, octal `0177.0.0.1` are all
    127.0.0.1. aiohttp takes only the canonical form as a literal (and consults no resolver for
    it, so the resolver alone can't refuse one), and refuses the others."""
    bare = host.split("%", 1)[0]
    try:
        ipaddress.ip_address(bare)
    except ValueError:
        pass
    else:
        return host
    if not _IPV4_FORMS.fullmatch(host):
        return None
    try:
        return str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:  # not an address, so a name ("deadbeef", "1.2.3.4.5")
        return None


def private_literal(host: str) -> str | None:
    """The address `host` denotes (ip_literal) if it is a private one; None for a name or a
    public address."""
    address = ip_literal(host)
    return address if address is not None and is_private(address) else None
