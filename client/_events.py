"""`events()`: the live event stream as an async iterator, on its own WebSocket, resumed by seq."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import msgspec

from ._errors import InvalidRequest, TransportError, Unauthorized
from ._models import Event
from ._polling import PollPolicy, Random
from ._subscription import decode_message
from ._transport import WebSocketConnection

__all__ = ["EventStream"]

logger = logging.getLogger("dubsim")

_POLICY_VIOLATION = 1008


class EventStream:
    """Events as they happen: `snapshot`s first (unless resuming), then `job.*` events.

    Iterate with `async for`; close with `aclose()` or use `async with`. After a dropped
    connection it reconnects with backoff and resumes after `seq` (the newest seq received),
    so nothing is skipped; if the server can't replay that far it sends a `reset` event and
    fresh snapshots. Only the first connection's failure is raised (the server is unreachable).
    """

    def __init__(
        self,
        connect: Callable[[], Awaitable[WebSocketConnection]],
        selection: dict[str, Any],
        *,
        since: int | None,
        policy: PollPolicy,
        rand: Random,
    ) -> None:
        self._connect = connect
        self._selection = selection
        self._policy = policy
        self._rand = rand
        self._ws: WebSocketConnection | None = None
        self._connected_once = False
        self._closed = False
        self._early: list[Event] = []  # what arrived while `ready()` waited for its answer
        self.seq = since  # the resume point

    def __aiter__(self) -> EventStream:
        return self

    async def __aenter__(self) -> EventStream:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the socket; iteration ends."""
        self._closed = True
        ws, self._ws = self._ws, None
        if ws is not None:
            await ws.close()

    async def ready(self) -> None:
        """Connect and wait until the server holds the subscription: every event after this
        returns is delivered, also across a reconnect (the stream resumes from the seq the
        server answered with). Iterating without it connects lazily, on the first `anext`."""
        while (text := await self._receive()) is not None:
            message = decode_message(text)
            if message is not None and message.type == "subscribed":
                if self.seq is None:
                    self.seq = message.seq
                return
            event = self._event(text)
            if event is not None:
                self._early.append(event)

    async def __anext__(self) -> Event:
        if self._early:
            return self._early.pop(0)
        while (text := await self._receive()) is not None:
            event = self._event(text)
            if event is not None:
                return event
        raise StopAsyncIteration

    async def _receive(self) -> str | None:
        """The next frame, reconnecting (and resuming) across drops; None once closed."""
        while not self._closed:
            ws = self._ws or await self._open()
            text = await ws.receive()
            if text is not None:
                return text
            await ws.close()
            self._dropped(ws)
        return None

    def _dropped(self, ws: WebSocketConnection) -> None:
        self._ws = None
        if ws.close_code == _POLICY_VIOLATION:
            raise Unauthorized(403, "forbidden", "the server refused the event stream")
        logger.debug("event stream dropped (code %s), resuming after %s", ws.close_code, self.seq)

    def _event(self, text: str) -> Event | None:
        message = decode_message(text)
        if message is None or message.seq is None:
            if message is not None and message.type == "error":
                self._raise_refusal(message.code, message.message)
            return None
        if message.type == "event" and message.job is not None:
            if self.seq is not None and message.seq <= self.seq:
                return None  # already delivered before a reconnect
            kind = message.event_type or "job.unknown"
        elif message.type == "snapshot" and message.job is not None:
            kind = "snapshot"
        elif message.type == "reset":
            kind = "reset"
        else:
            return None
        self.seq = message.seq if self.seq is None else max(self.seq, message.seq)
        return Event(
            seq=message.seq, type=kind, job=message.job, at=message.at, reason=message.reason
        )

    @staticmethod
    def _raise_refusal(code: str | None, text: str | None) -> None:
        if code == "forbidden":
            raise Unauthorized(403, code, text or "forbidden")
        if code in ("user_required", "invalid_message", "too_many_jobs", "not_found"):
            raise InvalidRequest(400, code, text or code)
        logger.debug("event stream error %s: %s", code, text)

    async def _open(self) -> WebSocketConnection:
        attempt = 0
        while True:
            message = {"op": "subscribe", **self._selection}
            if self.seq is not None:
                message["since"] = self.seq
            try:
                ws = await self._connect()
                try:
                    await ws.send(msgspec.json.encode(message).decode())
                except TransportError:
                    await ws.close()
                    raise
                break
            except TransportError:
                if not self._connected_once:
                    raise  # never connected: the server is unreachable, say so
                delay = self._policy.reconnect.delay(attempt, self._rand)
                attempt += 1
                logger.debug("event stream reconnect failed; next try in %.2f s", delay)
                await asyncio.sleep(delay)
            if self._closed:
                raise StopAsyncIteration
        self._connected_once = True
        self._ws = ws
        return ws
