"""The push transports: WebSocket `/v1/ws` and Server-Sent Events `/v1/events`.

Both are hub subscribers and nothing more. Each connection's writer drains everything queued
per wake-up (SSE: one write of the joined frames); the frames are the shared bytes the hub
built once per event. docs/protocol.md is the contract.

`GET /v1/events?job=ID&until=terminal` ends the stream once every followed job has been seen in
a terminal state (in its snapshot or an event), so `curl -N` returns by itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import weakref
from collections.abc import Coroutine, Mapping
from typing import Annotated, Final, Literal

import aiohttp
import msgspec
from aiohttp import WSCloseCode, WSMsgType, web
from aiohttp_sse import EventSourceResponse

from ..appkeys import AUTH, HUB, SERVICE, SETTINGS, SOCKETS
from ..auth import ascii_digits, user_id
from ..errors import BadRequest, NotFound, Unauthorized, ValidationFailed
from ..hub import GOING_AWAY, SLOW_CONSUMER, Hub, Published, Subscription, Wire
from ..models import TERMINAL
from ..store.base import StoreUnavailable
from ._gate import GATE
from ._http import field_of

log = logging.getLogger(__name__)

MAX_FRAME: Final = 64 * 1024
# A stream socket's kernel send buffer. Left to autotuning it grows to megabytes on loopback,
# so a peer that stops reading goes unnoticed for thousands of events and pins that memory;
# bounded, it stalls soon and the hub's queue bound (SUBSCRIBER_QUEUE) decides, as designed.
SEND_BUFFER: Final = 256 * 1024
MAX_JOBS_PER_MESSAGE: Final = 1_000
MAX_JOBS_PER_SOCKET: Final = 10_000  # with `mine` and `all`, a socket's whole filter
MAX_MESSAGE_ID: Final = 64  # an `id` is echoed in replies: a long one would be memory
CLOSE_SLOW_CONSUMER: Final = 4000
CLOSE_WAIT_S: Final = 2.0  # a close frame that can't be sent in this long: abort instead
_json = msgspec.json.Encoder()

# ---- wire formats: built once per event (or per subscribe), shared by all subscribers ----


def _ws_event(pub: Published) -> bytes:
    head = f'{{"type":"event","seq":{pub.seq},"event_type":"{pub.type}","at":"{pub.at}","job":'
    return head.encode() + pub.job_bytes + b"}"


def _ws_snapshot(seq: int, job: bytes) -> bytes:
    return b'{"type":"snapshot","seq":%d,"job":%b}' % (seq, job)


def _ws_reset(reason: str, seq: int) -> bytes:
    return _json.encode({"type": "reset", "reason": reason, "seq": seq})


def _sse_event(pub: Published) -> bytes:
    data = f'{{"seq":{pub.seq},"type":"{pub.type}","at":"{pub.at}","job":'
    return f"event: {pub.type}\nid: {pub.seq}\ndata: {data}".encode() + pub.job_bytes + b"}\n\n"


def _sse_snapshot(seq: int, job: bytes) -> bytes:
    return b'event: snapshot\nid: %d\ndata: {"seq":%d,"type":"snapshot","job":%b}\n\n' % (
        seq,
        seq,
        job,
    )


def _sse_reset(reason: str, seq: int) -> bytes:
    return b"event: reset\ndata: %b\n\n" % _json.encode({"reason": reason, "seq": seq})


WS_WIRE: Final = Wire("ws", _ws_event, _ws_snapshot, _ws_reset)
SSE_WIRE: Final = Wire("sse", _sse_event, _sse_snapshot, _sse_reset)

# ---- WebSocket -------------------------------------------------------------------

JobId = Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class WsMessage(msgspec.Struct, forbid_unknown_fields=True):
    op: Literal["subscribe", "unsubscribe", "ping"]
    jobs: Annotated[list[JobId], msgspec.Meta(max_length=MAX_JOBS_PER_MESSAGE)] = []
    mine: bool = False
    all: bool = False
    since: Annotated[int, msgspec.Meta(ge=0)] | None = None
    id: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_ID)] | int | None = None


_ws_decoder = msgspec.json.Decoder(WsMessage)


class _OnlyId(msgspec.Struct):
    """A message that failed validation may still carry a valid `id`: its error echoes it."""

    id: Annotated[str, msgspec.Meta(max_length=MAX_MESSAGE_ID)] | int | None = None


_id_decoder = msgspec.json.Decoder(_OnlyId)


def _id_of(data: str | bytes) -> str | int | None:
    try:
        return _id_decoder.decode(data).id
    except (msgspec.DecodeError, RecursionError):  # no object, or its id is no valid id
        return None


class _Session:
    """One WebSocket connection: its identity, its single hub subscription, and the writer
    task draining it. The writer starts with the first message the client sends (nothing is
    queued before that), so an idle socket costs no task."""

    __slots__ = ("admin", "hub", "request", "sub", "user", "writer", "ws")

    def __init__(
        self,
        hub: Hub,
        ws: web.WebSocketResponse,
        request: web.Request,
        user: str | None,
        admin: bool,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.request = request
        self.sub = _open(request, WS_WIRE)
        self.sub.on_close = self._on_close
        self.user = user
        self.admin = admin
        self.writer: asyncio.Task[None] | None = None

    async def receive(self, msg: aiohttp.WSMessage) -> None:
        if self.writer is None:
            self.writer = asyncio.create_task(_ws_writer(self.ws, self.sub, self.request))
        if msg.type is WSMsgType.TEXT:
            await self.handle(msg.data)
        elif msg.type is WSMsgType.BINARY:
            self.error("binary_not_supported", "send JSON text frames")

    def _on_close(self, reason: str) -> None:
        if reason == SLOW_CONSUMER:  # its writer may be stuck on a full socket: don't wait
            if self.writer is not None:
                self.writer.cancel()
            closing = _close(self.ws, CLOSE_SLOW_CONSUMER, b"slow_consumer", self.request)
            _background(self.request.app, closing)

    async def end(self) -> None:
        self.hub.unsubscribe_all(self.sub)
        self.sub.close("closed")
        if self.writer is not None:
            self.writer.cancel()
            # the writer's own cancellation is its end; a cancellation of this task goes on
            await asyncio.gather(self.writer, return_exceptions=True)

    def reply(self, **fields: object) -> None:
        self.sub.push(_json.encode({k: v for k, v in fields.items() if v is not None}))

    def error(self, code: str, message: str, msg_id: object = None, **extra: object) -> None:
        self.reply(type="error", code=code, message=message, id=msg_id, **extra)

    async def handle(self, data: str | bytes) -> None:
        try:
            msg = _ws_decoder.decode(data)
        except msgspec.ValidationError as exc:
            self.error("invalid_message", str(exc), _id_of(data), field=field_of(exc))
            return
        except msgspec.DecodeError as exc:
            self.error("invalid_json", f"malformed JSON: {exc}")
            return
        except RecursionError:
            self.error("invalid_json", "malformed JSON: nested too deeply")
            return
        if msg.op == "ping":
            self.reply(type="pong", id=msg.id, seq=self.hub.seq)
        elif msg.op == "subscribe":
            await self.subscribe(msg)
        else:
            user = self._user_for(msg)
            if user is not False:
                self.hub.unsubscribe(self.sub, jobs=msg.jobs, user=user, everything=msg.all)
                self.reply(type="unsubscribed", id=msg.id)

    def _user_for(self, msg: WsMessage) -> str | Literal[False] | None:
        if not msg.mine:
            return None
        if self.user is None:
            self.error("user_required", "mine needs X-User-Id or ?user=", msg.id)
            return False
        return self.user

    async def subscribe(self, msg: WsMessage) -> None:
        if not (msg.jobs or msg.mine or msg.all):
            self.error("invalid_message", "subscribe to jobs, mine or all", msg.id)
            return
        if msg.all and not self.admin:
            self.error("forbidden", "all needs the admin token or session", msg.id)
            return
        if len(self.sub.jobs) + len(msg.jobs) > MAX_JOBS_PER_SOCKET:
            self.error("too_many_jobs", f"at most {MAX_JOBS_PER_SOCKET} jobs per socket", msg.id)
            return
        user = self._user_for(msg)
        if user is False:
            return
        try:
            unknown = await _missing(self.request.app, msg.jobs, msg.since)
        except StoreUnavailable as exc:
            self.error("unavailable", exc.reason, msg.id)
            return
        self.reply(type="subscribed", id=msg.id, seq=self.hub.seq)
        if unknown:
            self.error("not_found", "no job with these ids", msg.id, jobs=unknown)
        self.hub.subscribe(self.sub, jobs=msg.jobs, user=user, everything=msg.all, since=msg.since)


def _open(request: web.Request, wire: Wire) -> Subscription:
    """A hub subscription with the configured byte bounds."""
    settings = request.app[SETTINGS]
    sub = request.app[HUB].open(wire)
    sub.byte_limit = settings.subscriber_queue_bytes
    sub.burst_bytes = max(settings.subscriber_burst_bytes, settings.subscriber_queue_bytes)
    return sub


def _bound_send_buffer(request: web.Request) -> None:
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)


def _origin_ok(request: web.Request) -> bool:
    origin = request.headers.get("Origin")
    if origin is None:
        return True  # not a browser: cookies are not how it authenticates
    own = f"{request.scheme}://{request.host}"
    return origin == own or origin in request.app[SETTINGS].allowed_origins


async def websocket(request: web.Request) -> web.WebSocketResponse:
    """GET /v1/ws"""
    app = request.app
    with app[GATE].enter("ws"):
        return await _websocket(request)


async def _websocket(request: web.Request) -> web.WebSocketResponse:
    app = request.app
    auth, hub, settings = app[AUTH], app[HUB], app[SETTINGS]
    ws = web.WebSocketResponse(
        compress=False, heartbeat=settings.heartbeat_s, max_msg_size=MAX_FRAME
    )
    bearer = auth.bearer_admin(request, allow_query=True)
    cookie = bearer is None and auth.cookie_admin(request)
    try:
        user: str | None = user_id(request, allow_query=True)
    except BadRequest:
        user = None
    await ws.prepare(request)
    if bearer is False:
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"bad admin token")
        return ws
    if cookie and not _origin_ok(request):
        await ws.close(code=WSCloseCode.POLICY_VIOLATION, message=b"cross-origin cookie")
        return ws
    _bound_send_buffer(request)
    session = _Session(hub, ws, request, user, admin=bool(bearer or cookie))
    app[SOCKETS].add(ws)
    app[WS_REQUESTS][ws] = request
    try:
        async for msg in ws:
            await session.receive(msg)
            if session.sub.closed_reason is not None:
                break
    finally:
        await session.end()
        app[SOCKETS].discard(ws)
    return ws


async def _ws_writer(ws: web.WebSocketResponse, sub: Subscription, request: web.Request) -> None:
    try:
        while frames := await sub.get():
            for frame in frames:
                await ws.send_frame(frame, WSMsgType.TEXT)
    except (ConnectionError, RuntimeError):
        return  # the peer went away; the reader notices
    if sub.closed_reason == GOING_AWAY:
        await _close(ws, WSCloseCode.GOING_AWAY, b"going away", request)


async def _close(
    ws: web.WebSocketResponse,
    code: int,
    reason: bytes,
    request: web.Request,
    wait_s: float = CLOSE_WAIT_S,
) -> None:
    """Close, or abort a peer too stalled to take even the close frame.

    The transport is taken first: a stalled close has aiohttp close the transport gracefully
    and drop its reference, and a graceful close waits for the peer to read what is buffered,
    which a peer that never reads never does (the socket and its buffer would stay forever).
    """
    transport = request.transport
    try:
        async with asyncio.timeout(wait_s):
            await ws.close(code=code, message=reason)
    except (TimeoutError, ConnectionError, RuntimeError):
        pass
    except asyncio.CancelledError:
        # ws.close() also raises this when the reader's close future is cancelled under it
        # (the handler ended first); only a cancellation of this task is passed on
        if transport is not None:
            transport.abort()
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        return
    else:
        if transport is None or not transport.get_write_buffer_size():
            return  # closed cleanly, or closing with nothing left to send
    if transport is not None:
        transport.abort()


# Fire-and-forget closes (a slow consumer's socket), held so they aren't garbage-collected
# mid-flight; one set per app, awaited on shutdown.
CLOSING = web.AppKey("stream_closing", set[asyncio.Task[None]])


def _background(app: web.Application, coro: Coroutine[None, None, None]) -> None:
    tasks = app[CLOSING]
    task = asyncio.create_task(coro)
    tasks.add(task)
    task.add_done_callback(tasks.discard)


# ---- Server-Sent Events ------------------------------------------------------------


async def events(request: web.Request) -> web.StreamResponse:
    """GET /v1/events"""
    app = request.app
    auth = app[AUTH]
    query = request.query
    jobs = query.getall("job", [])
    everything = _flag(query, "all")
    mine = _flag(query, "mine") or not (jobs or everything)
    if len(jobs) > MAX_JOBS_PER_MESSAGE:
        raise ValidationFailed(f"at most {MAX_JOBS_PER_MESSAGE} job ids", field="job")
    if everything and not auth.is_admin(request):
        raise Unauthorized("all needs the admin token or session")
    since = _last_event_id(request)
    unknown = await _missing(app, jobs, since)
    if unknown:
        raise NotFound("no job with these ids", jobs=[j[:200] for j in unknown[:20]])
    user = user_id(request, allow_query=True) if mine else None
    until = query.get("until")
    if until is not None and until != "terminal":
        raise ValidationFailed("until must be terminal (or absent: stream forever)", field="until")
    if until and not jobs:
        raise ValidationFailed("until=terminal needs the jobs to follow (?job=ID)", field="until")
    pending = set(jobs) if until else None
    with app[GATE].enter("sse"):
        return await _stream_events(request, jobs, user, everything, since, pending)


async def _stream_events(
    request: web.Request,
    jobs: list[str],
    user: str | None,
    everything: bool,
    since: int | None,
    pending: set[str] | None,
) -> web.StreamResponse:
    app = request.app
    hub = app[HUB]
    resp = EventSourceResponse(ping_interval=app[SETTINGS].heartbeat_s)
    await resp.prepare(request)
    _bound_send_buffer(request)
    sub = _open(request, SSE_WIRE)
    hub.subscribe(sub, jobs=jobs, user=user, everything=everything, since=since)
    if pending:
        # a followed job that is over is over: its snapshot or the replay of its outcome is
        # queued, or (a resume past the outcome) the client has seen it already
        service = app[SERVICE]
        pending -= {j for j in jobs if (r := service.find(j)) is None or r.job.status.terminal}
    pump = asyncio.create_task(_sse_pump(resp, sub, pending))
    alive = asyncio.create_task(resp.wait())  # ends when a ping finds the peer gone
    transport = request.transport

    def on_close(reason: str) -> None:
        # the pump may be stuck writing to a peer that stopped reading: closing the
        # subscription doesn't reach it, so give it CLOSE_WAIT_S for the farewell, then cut
        if reason in (SLOW_CONSUMER, GOING_AWAY):
            _background(request.app, _cut_if_stalled(pump, transport))

    sub.on_close = on_close
    try:
        await asyncio.wait({pump, alive}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        hub.unsubscribe_all(sub)
        for task in (pump, alive):
            task.cancel()
        await asyncio.gather(pump, alive, return_exceptions=True)
        if resp.is_connected():
            resp.stop_streaming()
    return resp


async def _cut_if_stalled(task: asyncio.Task[None], transport: asyncio.Transport | None) -> None:
    await asyncio.wait({task}, timeout=CLOSE_WAIT_S)
    if not task.done() and transport is not None:
        transport.abort()


async def _sse_pump(resp: EventSourceResponse, sub: Subscription, pending: set[str] | None) -> None:
    """Write what the hub queues; with `pending` (until=terminal), stop once none is left and
    what was queued is written."""
    try:
        while pending is None or pending or sub.pending:
            frames = await sub.get()
            if not frames:
                break
            await resp.write(b"".join(frames))
            if pending is not None:
                pending.difference_update(_ended(frame) for frame in frames)
        else:
            return
        if sub.closed_reason in (SLOW_CONSUMER, GOING_AWAY):
            farewell = _json.encode({"code": sub.closed_reason, "message": "resume by seq"})
            async with asyncio.timeout(2):
                await resp.write(b"event: error\ndata: %b\n\n" % farewell)
    except (ConnectionError, RuntimeError, TimeoutError):
        return


class _JobState(msgspec.Struct):
    id: str
    status: str


class _Frame(msgspec.Struct):
    job: _JobState | None = None


_frame_decoder = msgspec.json.Decoder(_Frame)


def _ended(frame: bytes) -> str | None:
    """The id of the job an SSE frame shows in a terminal state, else None."""
    _, found, data = frame.partition(b"\ndata: ")
    if not found:
        return None
    try:
        job = _frame_decoder.decode(data).job
    except msgspec.DecodeError:
        return None
    return job.id if job is not None and job.status in TERMINAL else None


async def _missing(app: web.Application, jobs: list[str], since: int | None) -> list[str]:
    """The ids a subscription can't serve (Hub.missing). On a shared store this process may be
    a moment behind the log: an id it doesn't know (made on another process) or a resume point
    past its seq (seen on another process) first waits for it, as a GET does
    (JobService.fetch), rather than answering `not_found` or `reset` `since_in_future`."""
    hub, store = app[HUB], app[SERVICE].store
    ahead = since is not None and since > hub.seq
    if store.shared and (ahead or any(not hub.knows(job_id) for job_id in jobs)):
        await store.sync()
    return hub.missing(jobs, since)


def _flag(query: Mapping[str, str], name: str) -> bool:
    """`?all=` / `?mine=`: 1 or true selects, 0, false or empty doesn't; anything else is a
    422 rather than a silently different stream."""
    raw = query.get(name, "")
    if raw in ("1", "true"):
        return True
    if raw in ("", "0", "false"):
        return False
    raise ValidationFailed(f"{name} must be 1 or 0 (true or false)", field=name)


def _last_event_id(request: web.Request) -> int | None:
    raw = request.headers.get("Last-Event-ID", request.query.get("last_event_id"))
    if raw is None or raw == "":
        return None
    if not ascii_digits(raw) or len(raw) > 18:
        raise ValidationFailed(
            "Last-Event-ID must be a non-negative integer", field="last_event_id"
        )
    return int(raw)


WS_REQUESTS = web.AppKey(
    "ws_requests", weakref.WeakKeyDictionary[web.WebSocketResponse, web.Request]
)
"""Each open WebSocket's request: shutdown needs its transport to cut a stalled peer."""


def setup(app: web.Application) -> None:
    app[CLOSING] = set()
    app[WS_REQUESTS] = weakref.WeakKeyDictionary()
    app.router.add_get("/v1/ws", websocket)
    app.router.add_get("/v1/events", events)


async def close_streams(app: web.Application) -> None:
    """on_shutdown: no new stream or long poll; every subscription ends with "going away"
    (long polls answer, SSE streams send `event: error`, the WS writers close with 1001).

    Bounded: a peer that doesn't read can't hold shutdown up, since on_shutdown itself has no
    deadline (aiohttp applies SHUTDOWN_GRACE_S to the handlers only, after this returns).
    """
    app[GATE].closing = True
    app[HUB].close_all(GOING_AWAY)
    wait_s = min(CLOSE_WAIT_S, app[SETTINGS].shutdown_grace_s)
    # each close is bounded, and a peer too stalled to take the close frame is cut
    await asyncio.gather(
        *(
            _close(ws, WSCloseCode.GOING_AWAY, b"going away", request, wait_s)
            for ws, request in list(app[WS_REQUESTS].items())
        ),
        *app[CLOSING],
        return_exceptions=True,
    )
