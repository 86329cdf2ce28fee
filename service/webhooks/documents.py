"""Webhook documents: the Store documents' msgspec Structs, their encoding, the API's views.

    webhook/{id}        Endpoint
    webhook_state/{id}  State (the cursor, the delivery in progress, redeliveries, held events)
    webhook_log/{id}    DeliveryLog
    webhook_lease/{id}  Lease
    webhook_key/master  the master key the per-owner callback secrets derive from
    webhook_routes/{id} Routes: which callback origins have a lane of their own (id: the
                        owner's shared lane)

Also what routing reads of an event (`peek`, `event_body`) and the small changes the engine
makes to these documents (`_done`, `_disable`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from ..errors import ValidationFailed
from ..hub import Published
from ..models import EventType, WebhookFaults, parse_iso

KIND: Final = "webhook"
KIND_STATE: Final = "webhook_state"
KIND_LOG: Final = "webhook_log"
KIND_LEASE: Final = "webhook_lease"
KIND_KEY: Final = "webhook_key"
KIND_ROUTES: Final = "webhook_routes"
ADMIN_OWNER: Final = "*"
ALL_EVENTS: Final = "*"
EVENT_TYPES: Final = frozenset(e.value for e in EventType)
DEFAULT_EVENTS: Final = ("job.completed", "job.permanently_failed", "job.cancelled")
TERMINAL_EVENTS: Final = frozenset(DEFAULT_EVENTS)


class Endpoint(msgspec.Struct, kw_only=True):
    """webhook/{id}: one receiver. `url` None: a lane (each job's callback_url)."""

    id: str
    url: str | None
    events: list[str]
    description: str = ""
    status: str = "enabled"
    disabled_reason: str | None = None
    owner: str
    created_at: str
    secret: str
    previous_secret: str | None = None
    previous_secret_expires_at: float | None = None
    signed: bool = True
    transform: str | None = None
    lane: bool = False
    # an origin lane: the callbacks of its owner's jobs whose callback_url is at this origin
    # (scheme://host:port) and that its group's Routes send here; `group` is the owner's
    # shared lane (None: this is one, or not a lane), whose id the webhook-ids derive from
    origin: str | None = None
    group: str | None = None

    def wants(self, event_type: str) -> bool:
        return ALL_EVENTS in self.events or event_type in self.events

    def covers(self, user_id: str) -> bool:
        return self.owner == ADMIN_OWNER or self.owner == user_id


class EndpointView(msgspec.Struct):
    """An endpoint as the API shows it (never its secret)."""

    id: str
    url: str | None
    events: list[str]
    description: str
    status: str
    disabled_reason: str | None
    owner: str
    created_at: str


class EndpointCreated(msgspec.Struct):
    id: str
    url: str | None
    events: list[str]
    description: str
    status: str
    disabled_reason: str | None
    owner: str
    created_at: str
    secret: str


class Item(msgspec.Struct, kw_only=True):
    """One delivery to make: the body is kept, so a retry days later sends the same bytes."""

    id: str
    seq: int
    event_type: str
    job_id: str
    body: str
    url: str | None  # a lane's: the job's callback_url
    faults: WebhookFaults | None = None
    live: bool = True  # from the live stream: moves the cursor once done
    tries: int = 0  # attempts in the current run of the schedule
    next_at: float | None = None


class State(msgspec.Struct, kw_only=True):
    """webhook_state/{id}: everything that must survive a restart to lose nothing."""

    cursor: int  # the last seq of the live stream this endpoint is done with
    current: Item | None = None
    queue: list[Item] = []  # redeliveries (and released held events), before live ones
    held: list[Item] = []  # out_of_order: waiting for their job's terminal delivery
    replay_from: int | None = None  # a replay: seqs in (replay_from, replay_to]
    replay_to: int | None = None


class Routes(msgspec.Struct):
    """webhook_routes/{shared lane id}: the callback origins of one (owner, lane name) that
    have a lane of their own, each with the seq from which that lane sends its callbacks
    (None: admitted, that seq not fixed yet; any process fixes it). Origins are only ever
    added, at most MAX_CALLBACK_ORIGINS: once full, the set never changes again."""

    origins: dict[str, int | None] = {}


class Attempt(msgspec.Struct):
    at: str
    status_code: int | None
    duration_ms: float
    error: str | None


class Delivery(msgspec.Struct):
    id: str
    event_type: str
    seq: int
    job_id: str
    status: str  # pending | succeeded | failed
    attempts: list[Attempt]
    next_attempt_at: str | None


class DeliveryLog(msgspec.Struct):
    deliveries: list[Delivery] = []  # oldest first


class Lease(msgspec.Struct):
    holder: str
    until: float


class _Peek(msgspec.Struct):
    """What routing needs from a job's JSON (decoded only when the job has any of it)."""

    callback_url: str | None = None
    scenario: _PeekScenario | None = None


class _PeekScenario(msgspec.Struct):
    webhook: WebhookFaults | None = None


_peek_decoder = msgspec.json.Decoder(_Peek)
_NO_PEEK: Final = _Peek()


def peek(job_bytes: bytes) -> _Peek:
    if b'"webhook":{' not in job_bytes and b'"callback_url":"' not in job_bytes:
        return _NO_PEEK
    return _peek_decoder.decode(job_bytes)


@functools.lru_cache(maxsize=4096)
def origin_of(url: str) -> str:
    """A callback URL's origin, the key of its lane: scheme://host:port, lowercased, with the
    scheme's default port written out (http://A.example/x and http://a.example:80/y are one).
    An URL the checks let through always has one; anything unreadable is its own origin."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return url
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if port is None:
        port = _DEFAULT_PORTS.get(scheme, 0)
    if ":" in host:  # an IPv6 address: bracketed, as in a URL
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


_DEFAULT_PORTS: Final = {"http": 80, "https": 443}


def event_body(pub: Published) -> bytes:
    """The event exactly as the SSE stream's `data:` carries it (docs/protocol.md)."""
    head = f'{{"seq":{pub.seq},"type":"{pub.type}","at":"{pub.at}","job":'
    return head.encode() + pub.job_bytes + b"}"


Transformer = Callable[[Published], bytes | None]


def validate_events(events: list[str] | None) -> list[str]:
    if events is None:
        return list(DEFAULT_EVENTS)
    if not events:
        raise ValidationFailed("events must not be empty (omit it for the default)", field="events")
    unknown = [e for e in events if e != ALL_EVENTS and e not in EVENT_TYPES]
    if unknown:
        allowed = ", ".join(sorted(EVENT_TYPES))
        raise ValidationFailed(
            f"unknown event type {unknown[0][:100]!r}; allowed: {allowed} or *", field="events"
        )
    return list(dict.fromkeys(events))


def _done(state: State, item: Item) -> None:
    if state.current is not None and state.current.id == item.id:
        state.current = None
    elif state.queue and state.queue[0].id == item.id:
        state.queue.pop(0)
        return
    if item.live:
        state.cursor = max(state.cursor, item.seq)
    elif state.replay_from is not None:
        state.replay_from = max(state.replay_from, item.seq)
        if state.replay_to is not None and state.replay_from >= state.replay_to:
            state.replay_from = state.replay_to = None


def _disable(endpoint: Endpoint, reason: str) -> None:
    endpoint.status = "disabled"
    endpoint.disabled_reason = reason


def _event_time(body: str) -> float:
    marker = body.find('"at":"')
    if marker < 0:
        raise ValueError("no time")
    return parse_iso(body[marker + 6 : body.index('"', marker + 6)])


def _encode(value: Any) -> bytes:
    return msgspec.json.encode(value)


_endpoint_decoder = msgspec.json.Decoder(Endpoint)
_log_decoder = msgspec.json.Decoder(DeliveryLog)
_routes_decoder = msgspec.json.Decoder(Routes)


def _decode_endpoint(body: bytes) -> Endpoint:
    return _endpoint_decoder.decode(body)


def _decode_endpoint_doc(doc: Any) -> Endpoint:
    return _endpoint_decoder.decode(doc.body)


def _decode_log(body: bytes) -> DeliveryLog:
    return _log_decoder.decode(body)


def _decode_routes(body: bytes) -> Routes:
    return _routes_decoder.decode(body)


def view(endpoint: Endpoint) -> EndpointView:
    return EndpointView(
        endpoint.id,
        endpoint.url,
        endpoint.events,
        endpoint.description,
        endpoint.status,
        endpoint.disabled_reason,
        endpoint.owner,
        endpoint.created_at,
    )


def created_view(endpoint: Endpoint) -> EndpointCreated:
    e = endpoint
    return EndpointCreated(
        e.id,
        e.url,
        e.events,
        e.description,
        e.status,
        e.disabled_reason,
        e.owner,
        e.created_at,
        e.secret,
    )
