"""The webhook engine's leases on both stores: one process sends an endpoint's deliveries.

A lease is the `webhook_lease/{endpoint}` document {"holder", "until"} (real time). Another
process can't take a lease that still runs, nor renew it; it can take one that ran out; a
stopping holder deletes its own (so another takes over at once) and never another's.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from service.store import SQLiteStore, Store
from service.store.redis import RedisStore
from service.webhooks.leases import Leases
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
    gone = msgspec.json.encode({"holder": "a-dead-process", "until": time.time() - 1})
    await store.put_doc("webhook_lease", "wh_1", gone, expect=0)
    before = time.time()
    assert await b.take("wh_1") is True
    doc = await store.get_doc("webhook_lease", "wh_1")
    assert doc is not None
    lease = msgspec.json.decode(doc.body)
    assert lease["holder"] == b.holder
    assert lease["until"] >= before + 30.0  # its own 30 s, from when it was taken
