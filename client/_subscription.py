"""One shared WebSocket per client: every wait subscribes through it, and it resumes by seq.

`SharedSubscription.add(job_id, listener)` registers interest in a job; the first interest in a
job subscribes it on the socket, the last one leaving unsubscribes it. Subscriptions made in the
same loop iteration go out as one message, so 100 concurrent waits cost one socket and one
subscribe. When the socket drops, it reconnects with backoff and resubscribes: jobs that already
had their snapshot resume with `since` (the server replays what was missed), the others ask for
a snapshot. Listeners hear `on_live(False)` while the socket is down, so they can poll meanwhile.
"""

from __future__ import annotations

import asyncio
import enum
import itertools
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec

from ._errors import TransportError
from ._models import Job
from ._polling import PollPolicy, Random
from ._stats import ClientStats
from ._transport import WebSocketConnection

__all__ = ["Listener", "Registration", "SharedSubscription", "SocketState"]

logger = logging.getLogger("dubsim")

MAX_IDS_PER_MESSAGE = 1000  # the server's limit (MAX_JOBS_PER_MESSAGE in service/api/stream.py)


class SocketState(enum.Enum):
    """The shared socket's condition, as listeners need to know it."""

    IDLE = "idle"  # no socket and nobody interested
    CONNECTING = "connecting"  # first attempt in progress: worth a short grace before polling
    OPEN = "open"  # connected; subscriptions are (being) made
    DOWN = "down"  # an attempt failed or the socket dropped; reconnecting with backoff


class Listener(Protocol):
    """What a subscriber hears. Called in the event loop; must not block."""

    def on_job(self, job: Job, seq: int | None) -> None:
        """A snapshot of the job (initial or after a change)."""

    def on_live(self, live: bool) -> None:
        """The job's subscription became live (True) or the socket is down (False)."""

    def on_missing(self) -> None:
        """The server doesn't know the job (yet): ask REST, which can say 404 for sure."""


class _Message(msgspec.Struct):
    """Any server -> client WebSocket message (fields by `type`, see docs/protocol.md)."""

    type: str
    id: int | str | None = None
    seq: int | None = None
    job: Job | None = None
    event_type: str | None = None
    at: datetime | None = None
    reason: str | None = None
    code: str | None = None
    message: str | None = None
    jobs: list[str] | None = None


_decoder = msgspec.json.Decoder(_Message)
_encoder = msgspec.json.Encoder()


def decode_message(text: str) -> _Message | None:
    """Decode one frame; None (and a DEBUG line) for anything that isn't a protocol message."""
    try:
        return _decoder.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        logger.debug("ignoring undecodable websocket message: %s", exc)
        return None


class Registration:
    """One listener's interest in one job; `remove()` ends it (idempotent)."""

    def __init__(self, owner: SharedSubscription, job_id: str, listener: Listener) -> None:
        self._owner = owner
        self.job_id = job_id
        self._listener = listener
        self._active = True

    def remove(self) -> None:
        """Stop listening; the job is unsubscribed when nobody else listens to it."""
        if self._active:
            self._active = False
            self._owner._remove(self.job_id, self._listener)


class SharedSubscription:
    """The client's one WebSocket, multiplexed over every wait."""

    def __init__(
        self,
        connect: Callable[[], Awaitable[WebSocketConnection]],
        *,
        policy: PollPolicy,
        rand: Random,
        idle_close_s: float = 5.0,
        stats: ClientStats | None = None,
    ) -> None:
        self._connect = connect
        self._stats = stats if stats is not None else ClientStats()
        self._policy = policy
        self._rand = rand
        self._idle_close_s = idle_close_s
        self._listeners: dict[str, set[Listener]] = {}
        self._latest: dict[str, tuple[Job, int | None]] = {}  # newest snapshot per job
        self._snapshotted: set[str] = set()  # had a snapshot: resuming with `since` suffices
        self._live: set[str] = set()  # subscribed on the current socket and confirmed
        self._on_socket: set[str] = set()  # subscribe sent on the current socket
        self._to_subscribe: set[str] = set()
        self._to_unsubscribe: set[str] = set()
        self._resume_requests: dict[int | str, list[str]] = {}
        self._ids = itertools.count(1)
        self._seq: int | None = None  # the resume point: newest seq received
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.state = SocketState.IDLE
        self.connections = 0  # sockets opened so far (a test and a debugging aid)

    # ---- listeners ------------------------------------------------------------------

    def add(self, job_id: str, listener: Listener) -> Registration:
        """Listen to `job_id`. A job already live delivers its newest snapshot at once."""
        if self._closed:
            raise RuntimeError("the client is closed")
        listeners = self._listeners.setdefault(job_id, set())
        listeners.add(listener)
        if len(listeners) == 1:
            if job_id in self._to_unsubscribe:
                # Still subscribed on the socket (its unsubscribe not sent yet): keep it, and
                # the cached snapshot below stands in for the one the server won't resend.
                self._to_unsubscribe.discard(job_id)
            elif job_id not in self._on_socket:
                self._to_subscribe.add(job_id)
        if job_id in self._live:
            latest = self._latest.get(job_id)
            if latest is not None:
                listener.on_job(*latest)
            listener.on_live(True)
        self._ensure_running()
        self._wake.set()
        return Registration(self, job_id, listener)

    def _remove(self, job_id: str, listener: Listener) -> None:
        listeners = self._listeners.get(job_id)
        if listeners is None:
            return
        listeners.discard(listener)
        if listeners:
            return
        del self._listeners[job_id]
        self._to_subscribe.discard(job_id)
        if job_id in self._on_socket:
            self._to_unsubscribe.add(job_id)  # its cache stays valid until that is sent
        else:
            self._forget(job_id)
        self._wake.set()

    def _forget(self, job_id: str) -> None:
        self._latest.pop(job_id, None)
        self._snapshotted.discard(job_id)
        self._live.discard(job_id)

    def _ensure_running(self) -> None:
        if self._task is None or self._task.done():
            if self.state is SocketState.IDLE:
                self.state = SocketState.CONNECTING
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        """Close the socket and stop reconnecting."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state = SocketState.IDLE

    # ---- the connection loop -------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        while self._listeners:
            try:
                ws = await self._connect()
            except TransportError as exc:
                logger.debug("websocket connect failed: %s", exc)
                self._set_down()
                delay = self._policy.reconnect.delay(failures, self._rand)
                failures += 1
                await asyncio.sleep(delay)
                continue
            failures = 0
            self.connections += 1
            self._stats.sockets_opened += 1
            self.state = SocketState.OPEN
            logger.debug("websocket connected (%d so far)", self.connections)
            try:
                await self._serve(ws)
            finally:
                await ws.close()
                self._set_down()
            logger.debug("websocket closed (code %s)", ws.close_code)
        self.state = SocketState.IDLE

    def _set_down(self) -> None:
        self.state = SocketState.DOWN
        self._live.clear()
        self._on_socket.clear()
        self._resume_requests.clear()
        # Every job is subscribed again on the next socket.
        self._to_subscribe = set(self._listeners)
        for job_id in self._to_unsubscribe:
            self._forget(job_id)  # off the socket now, and nobody listens
        self._to_unsubscribe.clear()
        for listeners in list(self._listeners.values()):
            for listener in list(listeners):
                _safely(listener.on_live, False)

    async def _serve(self, ws: WebSocketConnection) -> None:
        self._wake.set()  # flush the pending subscriptions right away
        writer = asyncio.get_running_loop().create_task(self._write(ws))
        reader = asyncio.get_running_loop().create_task(self._read(ws))
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, reader):
                task.cancel()
            results = await asyncio.gather(writer, reader, return_exceptions=True)
            for result in results:
                if isinstance(result, Exception) and not isinstance(result, TransportError):
                    logger.debug("websocket task failed: %r", result)

    async def _write(self, ws: WebSocketConnection) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush(ws)
            if not self._listeners:
                # Nobody waits: keep the socket a little for the next wait, then let it go.
                try:
                    await asyncio.wait_for(self._wake.wait(), self._idle_close_s)
                except TimeoutError:
                    if not self._listeners:
                        return

    async def _flush(self, ws: WebSocketConnection) -> None:
        subscribe, self._to_subscribe = self._to_subscribe, set()
        unsubscribe, self._to_unsubscribe = self._to_unsubscribe, set()
        resumed = sorted(j for j in subscribe if j in self._snapshotted)
        fresh = sorted(j for j in subscribe if j not in self._snapshotted)
        # Resumes go first so their replays arrive before any newer snapshot's seq.
        self._stats.resumed += len(resumed)
        for chunk in _chunks(resumed):
            message_id = next(self._ids)
            self._resume_requests[message_id] = chunk
            await self._send(
                ws, {"op": "subscribe", "jobs": chunk, "since": self._seq, "id": message_id}
            )
            self._on_socket.update(chunk)
        for chunk in _chunks(fresh):
            await self._send(ws, {"op": "subscribe", "jobs": chunk, "id": next(self._ids)})
            self._on_socket.update(chunk)
        for chunk in _chunks(sorted(unsubscribe)):
            await self._send(ws, {"op": "unsubscribe", "jobs": chunk, "id": next(self._ids)})
            self._on_socket.difference_update(chunk)
            for job_id in chunk:
                self._forget(job_id)

    @staticmethod
    async def _send(ws: WebSocketConnection, message: dict[str, Any]) -> None:
        if message.get("since", 0) is None:
            del message["since"]
        logger.debug("websocket -> %s %d job(s)", message["op"], len(message.get("jobs", ())))
        await ws.send(_encoder.encode(message).decode())

    async def _read(self, ws: WebSocketConnection) -> None:
        while (text := await ws.receive()) is not None:
            message = decode_message(text)
            if message is not None:
                self._dispatch(message)

    def _dispatch(self, message: _Message) -> None:
        kind = message.type
        logger.debug("websocket <- %s seq=%s", kind, message.seq)
        if kind in ("snapshot", "event") and message.job is not None:
            if message.seq is not None:
                self._seq = message.seq if self._seq is None else max(self._seq, message.seq)
            self._deliver(message.job, message.seq)
        elif kind == "subscribed" and message.id is not None:
            # A resumed job is live once acknowledged; a fresh one once its snapshot arrives.
            for job_id in self._resume_requests.pop(message.id, ()):
                self._mark_live(job_id)
        elif kind == "reset":
            self._stats.resets += 1
            logger.debug("websocket reset (%s): fresh snapshots follow", message.reason)
        elif kind == "error":
            logger.debug("websocket error %s: %s", message.code, message.message)
            if message.id is not None:
                self._resume_requests.pop(message.id, None)
            for job_id in message.jobs or ():
                for listener in list(self._listeners.get(job_id, ())):
                    _safely(listener.on_missing)

    def _deliver(self, job: Job, seq: int | None) -> None:
        if job.id not in self._listeners and job.id not in self._on_socket:
            return  # unsubscribed meanwhile
        self._latest[job.id] = (job, seq)
        self._snapshotted.add(job.id)
        for listener in list(self._listeners.get(job.id, ())):
            _safely(listener.on_job, job, seq)
        self._mark_live(job.id)

    def _mark_live(self, job_id: str) -> None:
        if job_id in self._live or job_id not in self._on_socket:
            return
        self._live.add(job_id)
        for listener in list(self._listeners.get(job_id, ())):
            _safely(listener.on_live, True)


def _chunks(ids: list[str]) -> list[list[str]]:
    return [ids[i : i + MAX_IDS_PER_MESSAGE] for i in range(0, len(ids), MAX_IDS_PER_MESSAGE)]


def _safely(callback: Callable[..., None], *args: Any) -> None:
    # One listener's bug must not take the shared socket down for everyone else.
    try:
        callback(*args)
    except Exception:
        logger.exception("subscription listener failed")
