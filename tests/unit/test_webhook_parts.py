"""The webhook engine's parts: its leases and an endpoint's delivery log (on both stores),
its metrics.

Leases: a lease is the `webhook_lease/{endpoint}` document {"holder", "until"} (real time).
Another process can't take a lease that still runs, nor renew it; it can take one that ran
out; a stopping holder deletes its own (so another takes over at once) and never another's.

The delivery log: `webhook_log/{endpoint}` {"deliveries": [...]} oldest first, at most `size`
of them, each with at most `attempts` attempts; a write is due every 32 changes; a write that
finds the document changed keeps the other writer's entries under its own; the first read keeps
the entries made before it.

The metrics: outcome counters, histograms with Prometheus' cumulative buckets (le), and the
queue depths the engine reports.

The sender: without WEBHOOK_ALLOW_PRIVATE its session refuses, at connect time, a name that
resolves to a private address, even one the check before the POST let through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from service.clock import RealClock
from service.store import SQLiteStore, Store
from service.store.redis import RedisStore
from service.webhooks import sender as sender_module
from service.webhooks.delivery_log import EndpointLog
from service.webhooks.documents import Attempt, Endpoint, Item
from service.webhooks.leases import Leases
from service.webhooks.metrics import DeliveryMetrics, _Collector
from service.webhooks.sender import Sender
from service.webhooks.signing import new_secret
from tests.unit.test_store import Log


@pytest.fixture(params=["sqlite", "redis"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    opened: Store
    if request.param == "sqlite":
        opened = SQLiteStore(str(tmp_path / "s.db"), event_buffer=100)
    else:
        opened = RedisStore(request.getfixturevalue("redis_url"), event_buffer=100)
    await opened.open(Log(), lambda config: None)
    yield opened
    await opened.close()


async def holder_of(leases: Leases, endpoint_id: str) -> str | None:
    doc = await leases.store.get_doc("webhook_lease", endpoint_id)
    return None if doc is None else str(msgspec.json.decode(doc.body)["holder"])


async def test_a_running_lease_is_its_holders_alone(store: Store) -> None:
    a, b = Leases(store, 30.0), Leases(store, 30.0)
    assert a.holder != b.holder
    assert await a.take("wh_1") is True
    assert await holder_of(a, "wh_1") == a.holder
    assert await b.take("wh_1") is False  # a's runs for 30 s
    assert await b.renew("wh_1") is False
    assert await holder_of(a, "wh_1") == a.holder
    assert await a.renew("wh_1") is True
    assert await a.take("wh_1") is True  # taking one's own again is a renewal
    assert await b.renew("wh_2") is False  # no lease: nothing to renew


async def test_a_released_lease_is_taken_at_once_and_release_spares_anothers(
    store: Store,
) -> None:
    a, b = Leases(store, 30.0), Leases(store, 30.0)
    assert await a.take("wh_1") is True
    await b.release("wh_1")  # not b's: left alone
    assert await holder_of(a, "wh_1") == a.holder
    await a.release("wh_1")
    assert await store.get_doc("webhook_lease", "wh_1") is None
    assert await a.renew("wh_1") is False
    assert await b.take("wh_1") is True
    assert await holder_of(b, "wh_1") == b.holder


async def test_a_lease_that_ran_out_may_be_taken(store: Store) -> None:
    b = Leases(store, 30.0)
    gone = msgspec.json.encode({"holder": "a-dead-process", "until": store.wall() - 1})
    await store.put_doc("webhook_lease", "wh_1", gone, expect=0)
    before = store.wall()  # leases are in the store's time (Redis's own clock on Redis)
    assert await b.take("wh_1") is True
    doc = await store.get_doc("webhook_lease", "wh_1")
    assert doc is not None
    lease = msgspec.json.decode(doc.body)
    assert lease["holder"] == b.holder
    assert lease["until"] >= before + 30.0  # its own 30 s, from when it was taken


# ---- the delivery log ---------------------------------------------------------------------


def item(n: int, next_at: float | None = None) -> Item:
    return Item(
        id=f"msg_{n}", seq=n, event_type="job.completed", job_id=f"j{n}", body="{}", url=None,
        next_at=next_at,
    )  # fmt: skip


def attempt(code: int) -> Attempt:
    return Attempt("2026-12-01T00:00:00.000Z", code, 1.0, None)


async def stored(store: Store) -> list[dict[str, Any]]:
    doc = await store.get_doc("webhook_log", "wh_1")
    assert doc is not None
    deliveries: list[dict[str, Any]] = msgspec.json.decode(doc.body)["deliveries"]
    return deliveries


async def test_a_write_that_finds_the_log_changed_keeps_the_others_entries_under_its_own(
    store: Store,
) -> None:
    log = EndpointLog(store, "wh_1", 3, 12)
    log.record(item(1), attempt(500), "pending", None)
    await log.flush()
    assert [d["id"] for d in await stored(store)] == ["msg_1"]
    # another writer, meanwhile: an entry this log does not have
    doc = await store.get_doc("webhook_log", "wh_1")
    assert doc is not None
    theirs = {"deliveries": [{"id": "msg_x", "event_type": "job.completed", "seq": 9,
              "job_id": "jx", "status": "pending", "attempts": [], "next_attempt_at": None}]}  # fmt: skip
    await store.put_doc("webhook_log", "wh_1", msgspec.json.encode(theirs), expect=doc.version)
    log.record(item(1), attempt(200), "succeeded", None)
    log.record(item(2), attempt(200), "succeeded", None)
    await log.flush()
    got = await stored(store)
    assert [(d["id"], d["status"]) for d in got] == [
        ("msg_x", "pending"), ("msg_1", "succeeded"), ("msg_2", "succeeded"),
    ]  # fmt: skip
    assert [a["status_code"] for a in got[1]["attempts"]] == [500, 200]
    log.record(item(3), attempt(200), "succeeded", None)  # a 4th: the oldest goes (size 3)
    await log.flush()
    assert [d["id"] for d in await stored(store)] == ["msg_1", "msg_2", "msg_3"]
    # a merge is bounded too: the other writer's entry is the oldest, so it goes first
    doc = await store.get_doc("webhook_log", "wh_1")
    assert doc is not None
    theirs["deliveries"][0]["id"] = "msg_y"
    await store.put_doc("webhook_log", "wh_1", msgspec.json.encode(theirs), expect=doc.version)
    log.record(item(4), attempt(200), "succeeded", None)
    await log.flush()
    assert [d["id"] for d in await stored(store)] == ["msg_2", "msg_3", "msg_4"]


async def test_the_first_read_keeps_the_entries_made_before_it(store: Store) -> None:
    old = EndpointLog(store, "wh_1", 2, 12)  # a previous process's
    old.record(item(1), attempt(200), "succeeded", None)
    old.record(item(2), attempt(200), "succeeded", None)
    await old.flush()
    log = EndpointLog(store, "wh_1", 2, 12)
    log.record(item(3), attempt(200), "succeeded", None)
    book = await log.load()
    assert [d.id for d in book.deliveries] == ["msg_2", "msg_3"]  # size 2: the oldest went
    await log.flush()
    assert [d["id"] for d in await stored(store)] == ["msg_2", "msg_3"]


async def test_a_write_is_due_every_32_changes_and_attempts_are_bounded(store: Store) -> None:
    log = EndpointLog(store, "wh_1", 100, 12)
    due = [log.record(item(1), attempt(500 + n), "pending", None) for n in range(32)]
    assert due == [False] * 31 + [True]
    entry = log.entry(item(1))
    assert [a.status_code for a in entry.attempts] == list(range(520, 532))  # the last 12
    log.pending(item(2, next_at=1_795_000_000.5))
    await log.flush()
    got = await stored(store)
    assert [(d["id"], d["status"], d["next_attempt_at"]) for d in got] == [
        ("msg_1", "pending", None), ("msg_2", "pending", "2026-11-18T11:06:40.500Z"),
    ]  # fmt: skip


# ---- the metrics ----------------------------------------------------------------------------


def test_the_collector_shows_outcomes_histograms_and_queue_depths() -> None:
    metrics = DeliveryMetrics()
    metrics.count("succeeded")
    metrics.count("succeeded")
    metrics.count("lost")
    metrics.observe(metrics.latency, 0.003)  # in the 0.005 bucket
    metrics.observe(metrics.latency, 60.0)  # past the last bound: +Inf only
    metrics.observe(metrics.lag, 0.001)  # on a bound: that bucket (le)
    registry = CollectorRegistry()
    registry.register(_Collector(metrics, lambda: [("wh_1", 3), ("other", 5)]))
    text = generate_latest(registry).decode()
    for line in [
        'dubsim_webhook_deliveries_total{outcome="succeeded"} 2.0',
        'dubsim_webhook_deliveries_total{outcome="failed_attempt"} 0.0',
        'dubsim_webhook_deliveries_total{outcome="failed"} 0.0',
        'dubsim_webhook_deliveries_total{outcome="lost"} 1.0',
        'dubsim_webhook_attempt_seconds_bucket{le="0.0025"} 0.0',
        'dubsim_webhook_attempt_seconds_bucket{le="0.005"} 1.0',
        'dubsim_webhook_attempt_seconds_bucket{le="30.0"} 1.0',
        'dubsim_webhook_attempt_seconds_bucket{le="+Inf"} 2.0',
        "dubsim_webhook_attempt_seconds_count 2.0",
        "dubsim_webhook_attempt_seconds_sum 60.003",
        'dubsim_webhook_lag_seconds_bucket{le="0.001"} 1.0',
        "dubsim_webhook_lag_seconds_count 1.0",
        'dubsim_webhook_queue_depth{endpoint="wh_1"} 3.0',
        'dubsim_webhook_queue_depth{endpoint="other"} 5.0',
    ]:
        assert line in text.splitlines(), line


# ---- the sender -----------------------------------------------------------------------------


async def test_the_session_refuses_a_private_address_at_connect_time(
    monkeypatch: pytest.MonkeyPatch, aiohttp_server: Any
) -> None:
    got: list[bytes] = []

    async def receive(request: web.Request) -> web.Response:
        got.append(await request.read())
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/", receive)
    server = await aiohttp_server(app)

    # the check before the POST found the name public (then it changed: DNS rebinding)
    async def public(url: str) -> None:
        return None

    monkeypatch.setattr(sender_module, "check_public", public)
    clock = RealClock()
    endpoint = Endpoint(
        id="wh_1", url=f"http://localhost:{server.port}/", events=["*"], owner="u",
        created_at="2026-12-01T00:00:00.000Z", secret=new_secret(),
    )  # fmt: skip
    outcomes = []
    for allow_private in (False, True):
        sender = Sender(lambda: clock, timeout_s=5.0, allow_private=allow_private)
        sender.open()
        try:
            code, error, _, _ = await sender.post(endpoint, item(1))
        finally:
            await sender.close()
        outcomes.append((code, error is None, len(got)))
    # refused without a request; allowed, the same URL is delivered
    assert outcomes == [(None, False, 0), (204, True, 1)]
