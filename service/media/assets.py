"""Input videos: streamed to disk, checked by ffprobe, described by a durable document.

An upload (or a URL fetch) is written to `assets/<id>.part` chunk by chunk (never held in
memory), probed, then renamed to `assets/<id>` and recorded with `Store.put_doc("assets", …)`.
Anything refused on the way (too large, not a video, no audio, unreachable) removes the part
file before the error goes out.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import IO, Final
from urllib.parse import urljoin, urlsplit, urlunsplit

import aiohttp
import msgspec

from ..clock import Clock
from ..egress import PrivateAddress, PublicOnlyResolver, ip_literal, private_literal
from ..errors import InsufficientStorage, NotFound, PayloadTooLarge, ValidationFailed
from ..models import Asset, iso_ms
from ..store import Store
from .probe import Limits, probe
from .tools import Tools

KIND: Final = "assets"
FLUSH_BYTES: Final = 1 << 20  # chunks are gathered and written off the loop per MiB
FULL: Final = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})  # no room for the file
MAX_REDIRECTS: Final = 5
REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})


class VideoUnreachable(ValidationFailed):
    code = "video_unreachable"


class Assets:
    def __init__(
        self,
        store: Store,
        tools: Tools,
        root: Path,
        *,
        max_bytes: int,
        fetch_timeout_s: float,
        clock: Clock,
        limits: Limits | None = None,
        allow_private: bool = True,
    ) -> None:
        self.store, self.tools, self.root = store, tools, root / "assets"
        self.max_bytes, self.fetch_timeout_s, self.clock = max_bytes, fetch_timeout_s, clock
        self.limits = limits
        self.allow_private = allow_private

    def path(self, asset_id: str) -> Path:
        if not asset_id.replace("-", "").replace("_", "").isalnum():
            raise NotFound("no asset with this id", asset_id=asset_id[:64])
        return self.root / asset_id

    async def get(self, asset_id: str) -> Asset:
        doc = None
        if asset_id.replace("-", "").replace("_", "").isalnum() and len(asset_id) <= 64:
            doc = await self.store.get_doc(KIND, asset_id)
        if doc is None:
            raise NotFound("no asset with this id", asset_id=asset_id[:64])
        return msgspec.json.decode(doc.body, type=Asset)

    async def ingest(self, user_id: str, chunks: AsyncIterator[bytes]) -> Asset:
        """Write `chunks` to disk, probe them, record the asset. Nothing is left if refused."""
        self.tools.require()
        asset_id = secrets.token_urlsafe(16)
        final = self.path(asset_id)
        part = final.with_suffix(".part")
        try:
            await asyncio.to_thread(self.root.mkdir, parents=True, exist_ok=True)
            size = await self._write(part, chunks)
            if size == 0:
                raise ValidationFailed("the upload is empty", reason="empty")
            info = await probe(self.tools, part, self.limits)
            if self.limits is not None:
                self.limits.check(info)
            await asyncio.to_thread(part.rename, final)
            asset = Asset(
                id=asset_id,
                url=f"/v1/assets/{asset_id}",
                duration_s=info.duration_s,
                width=info.width,
                height=info.height,
                video_codec=info.video_codec,
                audio_codec=info.audio_codec,
                size=size,
                user_id=user_id,
                created_at=iso_ms(self.clock.now()),
            )
            await self.store.put_doc(KIND, asset_id, msgspec.json.encode(asset), expect=0)
            return asset
        except BaseException:
            for leftover in (part, final):
                with contextlib.suppress(OSError):
                    leftover.unlink()
            raise

    async def _write(self, part: Path, chunks: AsyncIterator[bytes]) -> int:
        try:
            return await self._write_all(part, chunks)
        except OSError as exc:
            if exc.errno not in FULL:
                raise
            raise InsufficientStorage(
                "the server has no room to store this video; try again later",
                reason="disk_full",
            ) from None

    async def _write_all(self, part: Path, chunks: AsyncIterator[bytes]) -> int:
        size = 0
        pending: list[bytes] = []
        pending_size = 0
        handle: IO[bytes] = await asyncio.to_thread(part.open, "wb")
        try:
            async for chunk in chunks:
                size += len(chunk)
                if size > self.max_bytes:
                    raise PayloadTooLarge(
                        f"the video is larger than MAX_UPLOAD_MB ({self.max_bytes >> 20} MB)",
                        limit_bytes=self.max_bytes,
                    )
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= FLUSH_BYTES:
                    await asyncio.to_thread(handle.write, b"".join(pending))
                    pending, pending_size = [], 0
            if pending:
                await asyncio.to_thread(handle.write, b"".join(pending))
        finally:
            await asyncio.to_thread(handle.close)
        return size

    async def fetch(self, user_id: str, url: str) -> Asset:
        """Fetch a job's video from `url` (http/https, size and time limited) into an asset.

        Redirects are followed here, hop by hop, so that each address is checked: with
        MEDIA_FETCH_ALLOW_PRIVATE off no hop may be a private IP literal, and the connector's
        resolver refuses any name that resolves to one (DNS rebinding included)."""
        self.tools.require()
        deadline = asyncio.get_running_loop().time() + self.fetch_timeout_s
        resolver = None if self.allow_private else PublicOnlyResolver()
        try:
            async with aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(resolver=resolver)
            ) as session:
                for _ in range(MAX_REDIRECTS + 1):
                    url = self._check_url(url)
                    left = deadline - asyncio.get_running_loop().time()
                    if left <= 0:
                        raise TimeoutError
                    async with session.get(
                        url, allow_redirects=False, timeout=aiohttp.ClientTimeout(total=left)
                    ) as response:
                        location = response.headers.get("Location")
                        if response.status in REDIRECTS and location:
                            url = urljoin(str(response.url), location)
                            continue
                        return await self._take(user_id, response)
                raise VideoUnreachable(
                    f"video.url redirected more than {MAX_REDIRECTS} times",
                    field="video.url",
                    reason="too_many_redirects",
                )
        except TimeoutError:
            raise VideoUnreachable(
                f"fetching video.url took longer than {self.fetch_timeout_s:g} s",
                field="video.url",
                reason="timeout",
            ) from None
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, PrivateAddress):
                raise self._private(str(exc.os_error)) from None
            raise self._unreachable(exc) from None
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            raise self._unreachable(exc) from None

    def _check_url(self, url: str) -> str:
        """The URL to fetch: `url`, with an IPv4 host written in another form than a.b.c.d
        (2130706433, 0x7f000001, 127.1) as the address it denotes (egress.ip_literal)."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailed(
                "video.url must be an http:// or https:// URL", field="video.url"
            )
        host = parts.hostname
        if not self.allow_private and (address := private_literal(host)):
            raise self._private(address if address == host else f"{host} is {address}")
        address = ip_literal(host)
        if address is None or address == host:
            return url
        # aiohttp takes only a.b.c.d as an IPv4 literal (and refuses 2130706433 or 127.1)
        userinfo, at, _ = parts.netloc.rpartition("@")
        port = f":{parts.port}" if parts.port is not None else ""
        return urlunsplit(parts._replace(netloc=f"{userinfo}{at}{address}{port}"))

    async def _take(self, user_id: str, response: aiohttp.ClientResponse) -> Asset:
        if response.status != 200:
            raise VideoUnreachable(
                f"fetching video.url answered HTTP {response.status}",
                field="video.url",
                status=response.status,
            )
        if (response.content_length or 0) > self.max_bytes:
            raise VideoUnreachable(
                f"the video at video.url is larger than MAX_UPLOAD_MB ({self.max_bytes >> 20} MB)",
                field="video.url",
                reason="too_large",
            )
        try:
            return await self.ingest(user_id, response.content.iter_chunked(64 * 1024))
        except PayloadTooLarge as exc:
            raise VideoUnreachable(exc.message, field="video.url", reason="too_large") from None

    @staticmethod
    def _private(said: str) -> VideoUnreachable:
        return VideoUnreachable(
            f"video.url leads to a private or loopback address ({said}); "
            "MEDIA_FETCH_ALLOW_PRIVATE is off",
            field="video.url",
            reason="private_address",
        )

    @staticmethod
    def _unreachable(exc: Exception) -> VideoUnreachable:
        return VideoUnreachable(
            f"video.url could not be fetched: {type(exc).__name__}: {exc}"[:300],
            field="video.url",
            reason="unreachable",
        )

    async def delete(self, asset_id: str) -> None:
        await self.store.put_doc(KIND, asset_id, None)
        with contextlib.suppress(OSError):
            await asyncio.to_thread(self.path(asset_id).unlink)
