"""The Redis store's own promises, past the shared contract in test_store.py: leases (held by a
start, renewed, expired), the free plan's window on Redis, a config saved by another process,
catching up with another process, scripts Redis forgot, the deadline a late command is refused
by, and what a store that is not open (or a Redis that is not there) answers."""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from service.errors import StartupError
from service.models import EventType, Status
from service.settings import Config
from service.store import CapReached, Change, DuplicateSubmission, StoreUnavailable, VersionConflict
from service.store import redis as redis_module
from service.store.redis import RedisStore
from tests.unit.test_store import Log, create, job, move

LEASES = "dubsim:leases"


class Configs:
    def __init__(self) -> None:
        self.seen: list[Config] = []

    def __call__(self, config: Config) -> None:
        self.seen.append(config)


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Callable[..., Any]]:
    opened: list[RedisStore] = []

    async def open_one(log: Log | None = None, configs: Configs | None = None) -> RedisStore:
        store = RedisStore(redis_url, event_buffer=100)
        await store.open(log or Log(), configs or Configs())
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


_TRUE_OFFSET: weakref.WeakKeyDictionary[RedisStore, float] = weakref.WeakKeyDictionary()


def late(store: RedisStore, on: bool) -> None:
    """Make every command reach Redis after its deadline, as after a long stall (the store is
    told Redis's clock is a minute behind what it is), or stop doing so."""
    true = _TRUE_OFFSET.setdefault(store, store._offset_s)
    store._offset_s = true - 60.0 if on else true


def start(job_id: str, expect: int, lease_s: float | None) -> Change:
    return Change(job(job_id, Status.PROCESSING), EventType.STARTED, "t1", expect, lease_s=lease_s)


# ---- leases -------------------------------------------------------------------------


async def test_a_start_holds_a_lease_that_is_renewed_and_runs_out(
    stores: Callable[..., Any], raw: Any
) -> None:
    store = await stores()
    await store.commit(create("a"))
    await store.commit(create("b"))
    before = time.time()
    await store.commit(start("a", 1, 30.0))
    after = time.time()
    score = await raw.zscore(LEASES, "a")
    assert before + 30.0 <= score <= after + 30.0  # the lease runs out lease_s from now
    await store.commit(start("b", 2, None))
    assert await raw.zscore(LEASES, "b") is None  # no lease asked for: none held
    # renewed to now + lease_s; a job that holds no lease is not given one
    await store.renew_leases(["a", "b", "nobody"], 100.0, 1000.0)
    assert await raw.zscore(LEASES, "a") == 1100.0
    assert await raw.zscore(LEASES, "b") is None
    assert await raw.zscore(LEASES, "nobody") is None
    assert await store.expired_leases(1099.0) == []
    assert await store.expired_leases(1100.0) == ["a"]  # runs out at its time
    await store.renew_leases([], 100.0, 5000.0)  # nothing to renew: nothing asked of Redis
    assert await store.expired_leases(1100.0) == ["a"]


async def test_at_most_100_expired_leases_are_taken_back_per_round_oldest_first(
    stores: Callable[..., Any], raw: Any
) -> None:
    store = await stores()
    await raw.zadd(LEASES, {f"job-{n:03}": float(n) for n in range(150)})
    expired = await store.expired_leases(1000.0)
    assert expired == [f"job-{n:03}" for n in range(100)]
    assert await store.expired_leases(49.5) == [f"job-{n:03}" for n in range(50)]


# ---- the free plan's window ---------------------------------------------------------


async def test_the_moving_window_on_redis(stores: Callable[..., Any]) -> None:
    store = await stores()
    hit = store.rate_hit
    d = await hit("u", 2, 1000.0)
    assert (d.allowed, d.limit, d.remaining, d.reset_s) == (True, 2, 1, 3600.0)
    d = await hit("u", 2, 1010.0)
    assert (d.allowed, d.limit, d.remaining, d.reset_s) == (True, 2, 0, 3590.0)
    d = await hit("u", 2, 1020.0)
    assert (d.allowed, d.limit, d.remaining, d.reset_s) == (False, 2, 0, 3580.0)
    d = await hit("other", 2, 1020.0)  # per user
    assert (d.allowed, d.remaining) == (True, 1)
    d = await hit("u", 2, 4600.5)  # the hit at 1000 has left the window
    assert (d.allowed, d.remaining) == (True, 0)
    assert d.reset_s == pytest.approx(1010.0 + 3600.0 - 4600.5)
    d = await hit("nobody", 0, 1000.0)  # a limit of 0: refused, and no window to wait for
    assert (d.allowed, d.limit, d.remaining, d.reset_s) == (False, 0, 0, 0.0)
    # two hits at the same instant are two hits, not one
    await hit("same", 2, 7000.0)
    d = await hit("same", 2, 7000.0)
    assert (d.allowed, d.remaining) == (True, 0)


# ---- other processes ----------------------------------------------------------------


async def test_a_config_saved_by_another_process_reaches_this_one(
    stores: Callable[..., Any],
) -> None:
    mine, theirs = Configs(), Configs()
    log = Log()
    store = await stores(log, mine)
    other = await stores(Log(), theirs)
    await store.commit(create("a"))
    await other.save_config(Config(max_attempts=7))
    await other.commit(create("b"))
    await until(lambda: [e.job.id for e in log.events] == ["a", "b"])
    assert mine.seen == [Config(max_attempts=7)]
    assert theirs.seen == [Config(max_attempts=7)]
    # a process started later loads it
    late = RedisStore(store._url)
    try:
        assert (await late.open(Log(), Configs())).config == Config(max_attempts=7)
    finally:
        await late.close()


async def test_sync_catches_up_with_another_processes_commits(stores: Callable[..., Any]) -> None:
    log = Log()
    store = await stores(log)
    other = await stores()
    for n in range(5):
        await other.commit(create(f"j{n}"))
    await store.sync()  # returns once everything committed anywhere so far is applied here
    assert [e.job.id for e in log.events] == [f"j{n}" for n in range(5)]


async def test_scripts_redis_forgot_are_loaded_again(stores: Callable[..., Any], raw: Any) -> None:
    store = await stores()
    await raw.script_flush()  # as after a Redis restart
    assert await store.commit(create("a")) == 1
    await raw.script_flush()
    assert await store.put_doc("keys", "k", b"v") == 1
    await raw.script_flush()
    assert (await store.rate_hit("u", 1, 1000.0)).allowed
    await raw.script_flush()
    await store.save_config(Config(max_attempts=4))
    assert store.health() is None


async def test_a_command_that_reaches_redis_after_its_deadline_changes_nothing(
    stores: Callable[..., Any], raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    assert await store.commit(create("a")) == 1
    # the deadline (now + DEADLINE_S) is already past on Redis's clock when a command gets there
    late(store, True)
    with pytest.raises(StoreUnavailable) as info:
        await store.put_doc("keys", "k", b"v")
    assert info.value.reason == "redis unavailable: redis answered too late"
    assert store.health() == "redis unavailable: redis answered too late"
    with pytest.raises(StoreUnavailable) as info:
        await store.commit(start("a", 1, None))
    assert info.value.reason == "redis unavailable: redis answered too late"
    assert await raw.hget("dubsim:doc:keys", "k") is None
    assert await raw.hget("dubsim:job:a", "v") == b"1"
    late(store, False)
    assert await store.put_doc("keys", "k", b"v") == 1
    assert store.health() is None  # a command that succeeds clears it
    assert await store.commit(start("a", 1, None)) == 2


def test_the_deadline_is_deadline_s_from_now_in_milliseconds(redis_url: str) -> None:
    store = RedisStore(redis_url, local_time=lambda: 1000.25)  # not open: Redis's clock agrees
    assert store._deadline() == 1_003_250
    assert redis_module.DEADLINE_S == 3.0


# ---- not open, not there ------------------------------------------------------------


async def test_a_store_that_is_not_open_is_unavailable(redis_url: str) -> None:
    store = RedisStore(redis_url)
    for call in (
        store.get_doc("keys", "k"),
        store.docs("keys"),
        store.put_doc("keys", "k", b"v"),
        store.sync(),
        store.expired_leases(0.0),
        store.renew_leases(["a"], 1.0, 0.0),
    ):
        with pytest.raises(StoreUnavailable) as info:
            await call
        assert info.value.reason == "the store is not open"


async def test_no_redis_at_the_url_is_a_startup_error() -> None:
    store = RedisStore("redis://127.0.0.1:1/0")
    with pytest.raises(StartupError) as info:
        await store.open(Log(), Configs())
    assert info.value.setting == "REDIS_URL"
    assert info.value.problem.startswith("cannot use redis://127.0.0.1:1/0: ")


# ---- a tail that lags, a Redis that fails ---------------------------------------------


def gate_tail(store: RedisStore) -> asyncio.Event:
    """Hold this process's tail back (its next XREAD waits for the returned event)."""
    gate = asyncio.Event()
    conn: Any = store._tail_conn
    real = conn.xread

    async def gated(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real(*args, **kwargs)

    conn.xread = gated
    return gate


async def test_sync_waits_for_the_tail_to_apply_what_redis_holds(
    stores: Callable[..., Any],
) -> None:
    log = Log()
    store = await stores(log)
    other = await stores()
    async with asyncio.timeout(5):
        await store.sync()  # an empty Redis: nothing to wait for
    gate = gate_tail(store)
    await asyncio.sleep(0.6)  # the XREAD in flight returns (BLOCK 500 ms); the next one waits
    for n in range(3):
        await other.commit(create(f"j{n}"))
    syncing = asyncio.create_task(store.sync())
    await asyncio.sleep(0.2)
    assert not syncing.done()  # Redis is at seq 3, this process is not yet
    gate.set()
    async with asyncio.timeout(10):
        await syncing
    assert [e.job.id for e in log.events] == ["j0", "j1", "j2"]


async def test_a_commit_this_process_can_not_read_back_in_time_is_a_503(
    stores: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, raw: Any
) -> None:
    monkeypatch.setattr(redis_module, "APPLY_TIMEOUT_S", 0.2)
    store = await stores()
    gate = gate_tail(store)
    await asyncio.sleep(0.6)
    with pytest.raises(StoreUnavailable) as info:
        await store.commit(create("a"))
    assert info.value.reason == (
        "committed, but this process could not read it back from redis in time"
    )
    assert info.value.retry_after_s == 1.0
    assert await raw.hget("dubsim:job:a", "v") == b"1"  # durable all the same
    gate.set()


async def test_a_failing_redis_is_a_503_that_names_the_error_logged_once(
    stores: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    store = await stores()
    working = store._redis
    store._redis = aioredis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=2)
    calls = [
        lambda: store.sync(),
        lambda: store.renew_leases(["a"], 1.0, 0.0),
        lambda: store.expired_leases(0.0),
        lambda: store.get_doc("keys", "k"),
        lambda: store.docs("keys"),
        lambda: store.put_doc("keys", "k", b"v"),
        lambda: store.rate_hit("u", 1, 1000.0),
        lambda: store.commit(create("x")),
    ]
    try:
        with caplog.at_level(logging.ERROR, logger="service.store.redis"):
            for call in calls:
                with pytest.raises(StoreUnavailable) as info:
                    await call()
                reason = info.value.reason  # names the error underneath
                assert reason.startswith("redis unavailable: ") and "127.0.0.1:1" in reason
                assert info.value.retry_after_s == 1.0
        errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
        assert len(errors) == 1 and errors[0].startswith("redis unavailable: ")  # once
        assert store.health() is not None
    finally:
        await store._redis.aclose()
        store._redis = working


async def test_after_a_failed_write_a_probe_notices_that_redis_takes_writes_again(
    stores: Callable[..., Any],
    raw: Any,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(redis_module, "PROBE_INTERVAL_S", 0.05)
    store = await stores()
    late(store, True)
    with caplog.at_level(logging.INFO, logger="service.store.redis"):
        with pytest.raises(StoreUnavailable):
            await store.commit(create("a"))
        assert store.health() == "redis unavailable: redis answered too late"
        late(store, False)
        await until(lambda: store.health() is None)  # nobody wrote: the probe did
        # the probe ended that failure: the next one is news again, and logged
        late(store, True)
        with pytest.raises(StoreUnavailable):
            await store.commit(create("b"))
        late(store, False)
    assert [r.getMessage() for r in caplog.records][:3] == [
        "redis unavailable: redis answered too late",
        "redis takes writes again",
        "redis unavailable: redis answered too late",
    ]
    probe = await raw.get("dubsim:probe")
    assert abs(float(probe) - time.time()) < 60.0  # the probe wrote the time, on our clock


async def test_hits_at_one_instant_are_distinct_across_calls_and_processes(
    stores: Callable[..., Any],
) -> None:
    store = await stores()
    other = await stores()
    assert (await store.rate_hit("u", 3, 5000.0)).allowed
    assert (await other.rate_hit("u", 3, 5000.0)).allowed  # another process, the same instant
    assert (await store.rate_hit("u", 3, 5000.0)).allowed
    refused = await store.rate_hit("u", 3, 5000.0)
    assert (refused.allowed, refused.remaining) == (False, 0)  # three hits counted, not one
    assert (await store.rate_hit("w", 1, 1000.0)).allowed
    d = await store.rate_hit("w", 1, 4599.5)
    assert (d.allowed, d.reset_s) == (False, 0.5)  # half a second left, not rounded up


async def test_an_empty_document_is_kept_empty_and_a_conflict_names_the_document(
    stores: Callable[..., Any],
) -> None:
    store = await stores()
    assert await store.put_doc("keys", "empty", b"") == 1
    doc = await store.get_doc("keys", "empty")
    assert doc is not None and doc.body == b""
    with pytest.raises(VersionConflict) as caught:
        await store.put_doc("keys", "empty", b"x", expect=5)
    assert str(caught.value) == "keys/empty"


async def test_events_from_the_tail_carry_their_time_and_bytes(stores: Callable[..., Any]) -> None:
    log = Log()
    store = await stores(log)
    await store.commit(create("a", key="k"))
    await store.commit(move("a", Status.PROCESSING, expect=1))
    first, second = log.events
    assert (first.at, first.idempotency_key, first.request_hash) == ("t0", "k", "hash")
    assert (second.at, second.idempotency_key, second.request_hash) == ("t1", None, None)
    assert first.data == msgspec.json.encode(first.job)
    await store.commit(create("plain"))  # no key, no request hash
    third = log.events[2]
    assert (third.idempotency_key, third.request_hash) == (None, None)
    assert msgspec.json.decode(second.data)["status"] == "processing"


async def test_each_new_failure_after_a_success_is_logged_again(
    stores: Callable[..., Any], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store = await stores()
    with caplog.at_level(logging.ERROR, logger="service.store.redis"):
        for _ in range(2):
            late(store, True)
            for _ in range(2):  # a streak of failures: logged once
                with pytest.raises(StoreUnavailable):
                    await store.put_doc("keys", "k", b"v")
            late(store, False)
            await store.put_doc("keys", "k", b"v")
            assert store.health() is None
    assert [r.getMessage() for r in caplog.records] == [
        "redis unavailable: redis answered too late"
    ] * 2


async def test_one_tail_read_with_jobs_a_config_and_jobs_applies_all_in_order(
    stores: Callable[..., Any], caplog: pytest.LogCaptureFixture
) -> None:
    log, configs = Log(), Configs()
    store = await stores(log, configs)
    other = await stores()
    gate = gate_tail(store)
    await asyncio.sleep(0.6)  # the XREAD in flight returns; the next one waits
    await other.commit(create("a"))
    await other.save_config(Config(max_attempts=5))
    await other.commit(create("b"))
    with caplog.at_level(logging.ERROR, logger="service.store.redis"):
        gate.set()  # one XREAD now returns all three
        await until(lambda: [e.job.id for e in log.events] == ["a", "b"])
        await store.sync()
    assert configs.seen == [Config(max_attempts=5)]
    assert caplog.records == []  # applied as it came, not rescued by the error path


async def test_commits_applied_one_tail_read_at_a_time_all_answer(
    stores: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "APPLY_TIMEOUT_S", 3.0)
    store = await stores()
    gate = gate_tail(store)
    conn: Any = store._tail_conn
    gated = conn.xread

    async def one_at_a_time(*args: Any, **kwargs: Any) -> Any:
        return await gated(*args, **{**kwargs, "count": 1})

    conn.xread = one_at_a_time
    await asyncio.sleep(0.6)
    commits = [asyncio.create_task(store.commit(create(n))) for n in ("a", "b", "c")]
    await asyncio.sleep(0.1)  # all three committed in Redis, none applied here yet
    gate.set()
    async with asyncio.timeout(10):
        assert sorted(await asyncio.gather(*commits)) == [1, 2, 3]  # no waiter dropped


async def test_a_commit_redis_refuses_is_a_503_and_an_abandoned_one_holds_up_no_other(
    stores: Callable[..., Any],
) -> None:
    from redis.exceptions import ResponseError

    store = await stores()
    real = store._pipeline

    async def one_refused(batch: list[Any]) -> list[Any]:
        results = await real(batch)
        return [ResponseError("boom") if c[0].job.id == "bad" else r for (c, _), r in
                zip(batch, results, strict=True)]  # fmt: skip

    store._pipeline = one_refused  # type: ignore[method-assign]
    tasks = [asyncio.create_task(store.commit(create(n))) for n in ("gone", "bad", "ok")]
    await asyncio.sleep(0)  # handed over together: one pipeline
    tasks[0].cancel()
    async with asyncio.timeout(10):
        results = await asyncio.gather(*tasks[1:], return_exceptions=True)
    assert isinstance(results[0], StoreUnavailable)
    assert results[0].reason == "redis unavailable: boom"
    assert isinstance(results[1], int)  # answered although the one before it was abandoned


# ---- each user's unfinished jobs, counted by the commit script -------------------------------

INFLIGHT = "dubsim:inflight"


def capped(job_id: str, cap: int, user: str = "u", key: str | None = None) -> Change:
    return Change(job(job_id, user=user), EventType.CREATED, "t0", 0, key, None, cap=cap)


async def test_a_create_past_its_cap_is_refused_with_nothing_written(
    stores: Callable[..., Any], raw: Any
) -> None:
    a, b = await stores(), await stores()
    assert await a.commit(capped("one", 2)) == 1
    assert await b.commit(capped("two", 2)) == 2
    with pytest.raises(CapReached) as refused:
        await a.commit(capped("three", 2))
    assert refused.value.cap == 2
    assert await raw.get("dubsim:seq") == b"2"  # no seq taken
    assert not await raw.exists("dubsim:job:three")
    assert await raw.hget(INFLIGHT, "u") == b"2"
    assert await b.commit(capped("other", 2, user="v")) == 3  # the cap is per user
    assert await b.commit(create("uncapped")) == 4  # no cap: counted, never refused
    assert await raw.hget(INFLIGHT, "u") == b"3"
    # over the cap (it was lowered, say): the refusal names the cap, not the count
    with pytest.raises(CapReached) as over:
        await a.commit(capped("four", 2))
    assert over.value.cap == 2


async def test_the_count_moves_with_every_transition_in_the_script(
    stores: Callable[..., Any], raw: Any
) -> None:
    store = await stores()
    for name in ("a", "b", "c", "d"):
        await store.commit(create(name))
    assert await raw.hget(INFLIGHT, "u") == b"4"
    await store.commit(move("a", Status.PROCESSING, 1))  # 5
    await store.commit(move("a", Status.FAILED, 5, EventType.FAILED))  # 6: awaiting a retry
    assert await raw.hget(INFLIGHT, "u") == b"4"
    await store.commit(move("a", Status.COMPLETED, 6, EventType.COMPLETED))  # 7
    await store.commit(move("b", Status.CANCELLED, 2, EventType.CANCELLED))  # 8
    await store.commit(move("c", Status.PERMANENTLY_FAILED, 3, EventType.PERMANENTLY_FAILED))
    assert await raw.hget(INFLIGHT, "u") == b"1"
    await store.commit(move("c", Status.PENDING, 9, EventType.RETRYING))  # 10: counted again
    assert await raw.hget(INFLIGHT, "u") == b"2"
    await store.commit(move("a", Status.COMPLETED, 7, EventType.DELETED))  # finished: no change
    assert await raw.hget(INFLIGHT, "u") == b"2"
    await store.commit(move("d", Status.PENDING, 4, EventType.DELETED))  # unfinished: uncounted
    await store.commit(move("c", Status.CANCELLED, 10, EventType.CANCELLED))
    assert await raw.hget(INFLIGHT, "u") is None  # a user at 0 leaves the hash


async def test_the_creates_of_one_request_are_made_all_or_none(
    stores: Callable[..., Any], raw: Any
) -> None:
    store = await stores()
    await store.commit(capped("first", 5))
    with pytest.raises(CapReached):  # 1 + 5 > 5: none of the five
        await store.commit_all([capped(f"j{i}", 5) for i in range(5)])
    assert await raw.get("dubsim:seq") == b"1"
    assert await raw.zcard("dubsim:jobs") == 1
    await store.commit(capped("keyed", 9, key="k"))
    with pytest.raises(DuplicateSubmission):  # one taken key refuses the whole group
        await store.commit_all([capped("x", 9), capped("y", 9, key="k")])
    assert not await raw.exists("dubsim:job:x")
    assert await store.commit_all([capped(f"j{i}", 6) for i in range(4)]) == [3, 4, 5, 6]
    assert await raw.hget(INFLIGHT, "u") == b"6"


async def test_the_count_is_built_from_jobs_a_redis_held_before_it_existed(
    stores: Callable[..., Any], raw: Any
) -> None:
    store = await stores()
    for name in ("a", "b", "c"):
        await store.commit(create(name))
    await store.commit(Change(job("v1", user="v"), EventType.CREATED, "t0", 0))
    await store.commit(move("a", Status.COMPLETED, 1, EventType.COMPLETED))
    await store.close()
    for name in ("a", "b", "c", "v1"):  # as an older dubsim wrote them
        await raw.hdel(f"dubsim:job:{name}", "f")
    await raw.delete(INFLIGHT, "dubsim:counted")
    again = await stores()
    assert await raw.hgetall(INFLIGHT) == {b"u": b"2", b"v": b"1"}
    with pytest.raises(CapReached):
        await again.commit(capped("d", 2))
    await again.commit(move("b", Status.CANCELLED, 2, EventType.CANCELLED))
    assert await raw.hget(INFLIGHT, "u") == b"1"
    await (await stores()).close()  # built once: a later start counts nothing again
    assert await raw.hget(INFLIGHT, "u") == b"1"


# ---- each user's plan-limited jobs processing, counted by the commit script ---------------------

RUNNING = "dubsim:running"


def slotted(job_id: str, expect: int, slots: int | None) -> Change:
    """A start that takes one of the user's `slots` plan slots (None: a job of no plan)."""
    return Change(job(job_id, Status.PROCESSING), EventType.STARTED, "t1", expect, slots=slots)


async def test_a_start_past_the_plans_slots_is_refused_with_nothing_written(
    stores: Callable[..., Any], raw: Any
) -> None:
    """Two processes start a user's jobs under a plan of 2 slots: the third start is refused
    whichever process asks, and a slot freed (finished, cancelled, handed back, deleted) is
    one more start."""
    a, b = await stores(), await stores()
    for name in ("j1", "j2", "j3", "j4"):
        await a.commit(create(name))  # seqs 1-4
    assert await a.commit(slotted("j1", 1, 2)) == 5
    assert await b.commit(slotted("j2", 2, 2)) == 6
    assert await raw.hget(RUNNING, "u") == b"2"
    with pytest.raises(CapReached) as refused:
        await b.commit(slotted("j3", 3, 2))
    assert refused.value.cap == 2
    assert await raw.get("dubsim:seq") == b"6"  # no seq taken
    assert await raw.hget("dubsim:job:j3", "v") == b"3"  # still as created
    assert await b.commit(slotted("j4", 4, None)) == 7  # no plan: neither counted nor refused
    assert await raw.hget(RUNNING, "u") == b"2"
    await a.commit(move("j1", Status.COMPLETED, 5, EventType.COMPLETED))  # 8: a slot is free
    assert await raw.hget(RUNNING, "u") == b"1"
    assert await b.commit(slotted("j3", 3, 2)) == 9
    with pytest.raises(CapReached):
        await a.commit(slotted("j1", 8, 2))  # a finished job retried by hand: full again
    await b.commit(move("j2", Status.PENDING, 6, EventType.RETRYING))  # 10: handed back
    await a.commit(move("j3", Status.PROCESSING, 9, EventType.DELETED))  # 11: deleted running
    assert await raw.hget(RUNNING, "u") is None  # a user at 0 leaves the hash
    await a.commit(move("j4", Status.COMPLETED, 7, EventType.COMPLETED))  # never counted
    assert await raw.hget(RUNNING, "u") is None
