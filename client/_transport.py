"""The swappable I/O layer: one HTTP exchange, one WebSocket. Nothing above it imports aiohttp.

`AsyncTransport` is what the client needs from the network; `AiohttpTransport` is the real one
and `MockTransport` (in `_mock.py`) answers from a function, for tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

import aiohttp

from ._errors import TransportError

__all__ = ["AiohttpTransport", "AsyncTransport", "Request", "Response", "WebSocketConnection"]

logger = logging.getLogger("dubsim")


@dataclass(frozen=True, slots=True)
class Request:
    """One HTTP request: an absolute URL, headers, an optional body (bytes, or a file sent from
    disk as it is read) and a total timeout."""

    method: str
    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    content: bytes | Path | None = None
    timeout: float | None = None


class Response:
    """One HTTP response. Header names are lower-cased (the server's casing doesn't matter)."""

    __slots__ = ("content", "headers", "status")

    def __init__(
        self, status: int, headers: Mapping[str, str] | None = None, content: bytes = b""
    ) -> None:
        self.status = status
        self.headers: dict[str, str] = {k.lower(): v for k, v in (headers or {}).items()}
        self.content = content

    def __repr__(self) -> str:
        return f"<Response {self.status} {len(self.content)} bytes>"


class WebSocketConnection(Protocol):
    """A connected WebSocket carrying JSON text frames."""

    async def send(self, text: str) -> None:
        """Send one text frame; raises TransportError when the socket is gone."""

    async def receive(self) -> str | None:
        """The next text frame, or None once the socket is closed (see `close_code`)."""

    async def close(self) -> None:
        """Close the socket (normal closure); safe to call twice."""

    @property
    def close_code(self) -> int | None:
        """The close code once closed, else None."""


class AsyncTransport(Protocol):
    """What the client needs from the network. Raise TransportError for no usable answer."""

    async def handle(self, request: Request) -> Response:
        """Send `request`, return the whole response (any status)."""

    async def connect_websocket(self, url: str, headers: Mapping[str, str]) -> WebSocketConnection:
        """Open a WebSocket to `url` (ws:// or wss://)."""

    async def aclose(self) -> None:
        """Release connections; the transport is not used afterwards."""


class _AiohttpWebSocket:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws

    async def send(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            # aiohttp raises RuntimeError/ConnectionResetError when the socket is closing.
            raise TransportError(f"websocket send failed: {_describe(exc)}") from exc

    async def receive(self) -> str | None:
        while True:
            try:
                msg = await self._ws.receive()
            except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
                logger.debug("websocket receive failed: %r", exc)
                return None
            if msg.type is aiohttp.WSMsgType.TEXT:
                return str(msg.data)
            if msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSING,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            ):
                return None
            # BINARY is not part of the protocol; pings are answered by aiohttp itself.

    async def close(self) -> None:
        await self._ws.close()

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code


class AiohttpTransport:
    """The real transport: one aiohttp session, created lazily inside the running loop."""

    def __init__(
        self,
        *,
        heartbeat_s: float = 30.0,
        # 0: no cap, so one wait's long poll never queues behind another's
        connection_limit: int = 0,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._session: aiohttp.ClientSession | None = None
        self._heartbeat_s = heartbeat_s
        self._limit = connection_limit
        self._closed = False

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the client is closed")
        if self._session is None:
            # aiohttp binds a session to the running loop, so it can't be made in __init__.
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=self._limit),
                auto_decompress=True,
            )
        return self._session

    async def handle(self, request: Request) -> Response:
        session = self._get_session()
        timeout = aiohttp.ClientTimeout(total=request.timeout)
        try:
            with contextlib.ExitStack() as files:
                data: bytes | BinaryIO | None
                if isinstance(request.content, Path):  # streamed from disk, never held whole
                    data = files.enter_context(request.content.open("rb"))
                else:
                    data = request.content
                async with session.request(
                    request.method,
                    request.url,
                    headers=dict(request.headers),
                    data=data,
                    timeout=timeout,
                    allow_redirects=False,
                ) as resp:
                    content = await resp.read()
                    return Response(resp.status, dict(resp.headers), content)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"{request.method} {request.url}: {_describe(exc)}") from exc

    async def connect_websocket(self, url: str, headers: Mapping[str, str]) -> WebSocketConnection:
        session = self._get_session()
        try:
            # A server that accepts the TCP connection but never finishes the upgrade must not
            # hold the reconnect loop forever.
            async with asyncio.timeout(self._connect_timeout_s):
                ws = await session.ws_connect(
                    url,
                    headers=dict(headers),
                    heartbeat=self._heartbeat_s,
                    compress=0,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=5.0),
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise TransportError(f"websocket {url}: {_describe(exc)}") from exc
        return _AiohttpWebSocket(ws)

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()
            self._session = None


def _describe(exc: BaseException) -> str:
    """Why no answer came, in words (not aiohttp's class names and connection keys)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        cause = exc.os_error
        if isinstance(cause, socket.gaierror):
            return f"can't resolve host {exc.host!r}"
        reason = os.strerror(cause.errno).lower() if cause.errno else str(cause)
        return f"can't connect to {exc.host}:{exc.port} ({reason})"
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    # Some aiohttp/asyncio errors have an empty str(); the class name still says something.
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
