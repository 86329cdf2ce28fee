"""Webhooks: committed events POSTed to HTTP endpoints, signed, retried, replayable.

Only committed events are delivered: the engine listens to the hub (a Subscription whose
`deliver` hands each published event over), and the hub hears only what `_on_commit` applied,
after it was durable. Each endpoint has one worker that sends one delivery at a time, in seq
order, and keeps its progress durable as Store documents:

    webhook/{id}        the endpoint (url, event filter, owner, secrets, enabled/disabled)
    webhook_state/{id}  the cursor (last seq handled), the delivery in progress (its attempts
                        and when the next is due), redeliveries, a replay range, held events
    webhook_log/{id}    the last WEBHOOK_LOG deliveries (GET .../deliveries)
    webhook_lease/{id}  on a shared store: which process sends this endpoint's deliveries
    webhook_routes/{id} per (owner, lane name): the callback origins with a lane of their own

What is queued in memory per endpoint is bounded (WEBHOOK_QUEUE); beyond it, and after a
restart, the worker reads on from its cursor in the durable event log (the broker's history,
the last EVENT_BUFFER events). The `webhook-id` of a delivery is derived from (endpoint, seq),
so a resend after a crash, a redelivery and a replay carry the same id: receivers dedupe on it.

Every wait of the retry schedule goes through the service's injectable clock.

Internal interface for other features (the HeyGen facade): `register(...)` makes an endpoint
with an owner, an event filter, a named payload transformer (`transformers[name]`, a function
from the event to the body bytes, or None to skip it) and `signed=False` for unsigned
deliveries; `ensure_lane(owner, ..., url=)` makes (durably, before the job is accepted) the
lane that will POST the terminal event of that owner's job to its own `callback_url`: one lane
per callback origin (scheme://host:port), at most MAX_CALLBACK_ORIGINS per owner and lane name,
the rest through the owner's shared lane; `lane_claims` lets such a lane keep its jobs from the
default lanes; `update(..., transform=)` changes an endpoint's transformer.

The package, one concern a module:

    documents.py     the documents' Structs, their encoding, the API's views, event filters
    engine.py        WebhookService: lifecycle, intake, workers, sending, the API's operations
    delivery_log.py  EndpointLog: one endpoint's delivery log, written behind
    leases.py        Leases: which process sends an endpoint's deliveries on a shared store
    signing.py       secrets, Standard Webhooks signatures, message ids
    targets.py       URL checks, private addresses, the resolver that refuses them
    schedule.py      the retry schedule's parsing, Retry-After
    sender.py        Sender: one HTTP attempt, its signed headers, what came of it
    metrics.py       DeliveryMetrics (what the engine counts), the Prometheus collector
"""

from __future__ import annotations

from .documents import (
    ADMIN_OWNER,
    ALL_EVENTS,
    DEFAULT_EVENTS,
    EVENT_TYPES,
    KIND,
    KIND_KEY,
    KIND_LEASE,
    KIND_LOG,
    KIND_ROUTES,
    KIND_STATE,
    TERMINAL_EVENTS,
    Attempt,
    Delivery,
    DeliveryLog,
    Endpoint,
    EndpointCreated,
    EndpointView,
    Item,
    Lease,
    Routes,
    State,
    Transformer,
    created_view,
    event_body,
    origin_of,
    peek,
    validate_events,
    view,
)
from .engine import (
    MAX_CALLBACK_ORIGINS,
    MAX_ENDPOINTS_PER_OWNER,
    MAX_HELD,
    MAX_REDELIVERIES,
    STOP_GRACE_S,
    WEBHOOKS,
    WebhookService,
)
from .schedule import _retry_after, parse_schedule
from .sender import USER_AGENT
from .signing import message_id, new_secret, sign
from .targets import _private, check_public, validate_url

__all__ = [
    "ADMIN_OWNER",
    "ALL_EVENTS",
    "DEFAULT_EVENTS",
    "EVENT_TYPES",
    "KIND",
    "KIND_KEY",
    "KIND_LEASE",
    "KIND_LOG",
    "KIND_ROUTES",
    "KIND_STATE",
    "MAX_CALLBACK_ORIGINS",
    "MAX_ENDPOINTS_PER_OWNER",
    "MAX_HELD",
    "MAX_REDELIVERIES",
    "STOP_GRACE_S",
    "TERMINAL_EVENTS",
    "USER_AGENT",
    "WEBHOOKS",
    "Attempt",
    "Delivery",
    "DeliveryLog",
    "Endpoint",
    "EndpointCreated",
    "EndpointView",
    "Item",
    "Lease",
    "Routes",
    "State",
    "Transformer",
    "WebhookService",
    "_private",
    "_retry_after",
    "check_public",
    "created_view",
    "event_body",
    "message_id",
    "new_secret",
    "origin_of",
    "parse_schedule",
    "peek",
    "sign",
    "validate_events",
    "validate_url",
    "view",
]
