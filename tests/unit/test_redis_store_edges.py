"""The Redis store's edges that the mutation run found unpinned: closing (what a commit still
waiting is told, a tail that finishes its read, a tail or a connection that hangs), a store once
closed, the free plan's window key and its expiry, a load of more jobs than one pipeline reads,
and a document read whole while another process writes it. Each test states the contract;
docs/mutation.md names the mutants each one kills."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from service.settings import Config
from service.store import StoreUnavailable
from service.store import redis as redis_module
from service.store.base import Doc
from service.store.redis import RedisStore
from tests.unit.test_store import Log, create

Opener = Callable[..., Any]


@pytest.fixture
async def stores(redis_url: str) -> AsyncIterator[Opener]:
    """`await stores(**kwargs)`: an open RedisStore; those a test did not close are closed."""
    opened: list[RedisStore] = []

    async def open_one(log: Log | None = None, **kwargs: Any) -> RedisStore:
        store = RedisStore(redis_url, event_buffer=100, **kwargs)
        await store.open(log or Log(), lambda config: None)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        if store._redis is not None:
            await store.close()


def tail_of(store: RedisStore) -> asyncio.Task[None]:
    """The store's tail task (found by what it runs, not by its name: close goes by the name)."""
    runs = [getattr(task.get_coro(), "__qualname__", "") for task in store._tasks]
    (tail,) = [task for task, name in zip(store._tasks, runs, strict=True) if "tail" in name]
    return tail


# ---- closing ----------------------------------------------------------------------------


async def test_a_commit_still_waiting_when_the_store_closes_is_refused_and_changes_nothing(
    stores: Opener, raw: Any
) -> None:
    store = await stores()
    waiting = asyncio.create_task(store.commit(create("a")))
    await asyncio.sleep(0)  # handed to the store; its writer has not run yet
    async with asyncio.timeout(10):
        await store.close()
        with pytest.raises(StoreUnavailable) as info:
            await waiting
    assert info.value.reason == "the store is closing"
    assert info.value.retry_after_s == 1.0
    assert await raw.exists("dubsim:job:a") == 0  # refused means not written
    assert await raw.get("dubsim:seq") is None


async def test_closing_lets_the_tail_finish_its_read_instead_of_cancelling_it(
    stores: Opener,
) -> None:
    # redis-py can't always take back an XREAD cancelled in flight: the tail is told to stop
    # and ends by itself within one BLOCK period
    store = await stores()
    await store.commit(create("a"))  # the tail is running (it applied "a")
    tail = tail_of(store)
    async with asyncio.timeout(10):
        await store.close()
    assert tail.done()
    assert not tail.cancelled()
    # nor asked to: a cancel the read absorbed would leave it ending normally all the same
    assert tail.cancelling() == 0


async def test_closing_ends_the_tails_blocked_read_instead_of_waiting_it_out(
    stores: Opener, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # a tail blocked in XREAD for a minute: close ends that read (CLIENT UNBLOCK, answered as
    # a timeout) rather than waiting the BLOCK out, cancelling it, or letting the socket's
    # timeout break it (which the tail would record as Redis failing); and logs no failure
    monkeypatch.setattr(redis_module, "TAIL_BLOCK_MS", 60_000)
    store = await stores()
    await store.commit(create("a"))  # the tail applied "a" and is blocked in its next read
    tail = tail_of(store)
    async with asyncio.timeout(10):  # far below the 60 s BLOCK
        await store.close()
    assert tail.done() and not tail.cancelled() and tail.cancelling() == 0
    assert store._tail_failure is None  # the read ended with an answer, not an error
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []


async def test_a_tail_that_never_returns_holds_up_close_for_a_bounded_time_only(
    stores: Opener,
) -> None:
    store = await stores()
    tail = tail_of(store)
    conn: Any = store._tail_conn
    entered, never = asyncio.Event(), asyncio.Event()

    async def hung(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await never.wait()

    conn.xread = hung
    async with asyncio.timeout(10):
        await entered.wait()  # the tail is inside a read that will not return
    async with asyncio.timeout(10):
        await store.close()  # neither hangs nor raises
    assert tail.cancelled()  # given up on, after the bound


async def test_a_connection_that_fails_or_hangs_on_close_does_not_stop_close(
    stores: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "DISCONNECT_S", 0.1)
    store = await stores()
    main: Any = store._redis
    tail: Any = store._tail_conn
    real_main, real_tail = main.aclose, tail.aclose
    never = asyncio.Event()

    async def fails() -> None:
        raise RedisConnectionError("connection reset while closing")

    async def hangs() -> None:
        await never.wait()

    main.aclose, tail.aclose = fails, hangs
    try:
        async with asyncio.timeout(10):
            await store.close()  # no error out of close, and no hang
        with pytest.raises(StoreUnavailable) as info:
            await store.get_doc("keys", "k")
        assert info.value.reason == "the store is not open"  # closed all the same
    finally:
        del main.aclose, tail.aclose  # the real ones again, for the teardown
        await real_main()
        await real_tail()


async def test_a_closed_store_answers_not_open_to_every_call(stores: Opener) -> None:
    store = await stores()
    await store.close()
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: store.get_doc("keys", "k"),
        lambda: store.docs("keys"),
        lambda: store.put_doc("keys", "k", b"v"),
        lambda: store.sync(),
        lambda: store.expired_leases(0.0),
        lambda: store.renew_leases(["a"], 1.0, 0.0),
        lambda: store.rate_hit("u", 1, 1000.0),
        lambda: store.save_config(Config(max_attempts=4)),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable) as info:
            await call()
        assert info.value.reason == "the store is not open"


# ---- the free plan's window key -----------------------------------------------------------


async def test_a_windows_key_expires_in_real_time_unless_the_clock_is_virtual(
    stores: Opener, raw: Any
) -> None:
    real = await stores()
    virtual = await stores(expire_windows=False)
    assert (await real.rate_hit("u", 5, 1000.0)).allowed
    ttl = await raw.ttl("dubsim:hits:u")
    assert 3500 < ttl <= 3600  # the key goes when its newest hit leaves the hour
    assert (await virtual.rate_hit("v", 5, 1000.0)).allowed
    assert await raw.ttl("dubsim:hits:v") == -1  # no real expiry: old hits are trimmed instead
    # a later hit on a real clock renews the key's life
    await raw.expire("dubsim:hits:u", 10)
    assert (await real.rate_hit("u", 5, 1001.0)).allowed
    assert 3500 < await raw.ttl("dubsim:hits:u") <= 3600


# ---- loading ------------------------------------------------------------------------------


async def test_more_jobs_than_one_load_pipeline_each_load_once_in_submission_order(
    stores: Opener, redis_url: str
) -> None:
    n = 1001  # one more than a pipeline of the load reads
    store = await stores()
    ids = [f"j{i:04}" for i in range(n)]
    async with asyncio.timeout(30):
        for start in range(0, n, 250):
            await asyncio.gather(*(store.commit(create(i)) for i in ids[start : start + 250]))
    await store.close()
    again = RedisStore(redis_url, event_buffer=100)
    loaded = await again.open(Log(), lambda config: None)
    await again.close()
    got = [stored.job.id for stored in loaded.jobs]
    assert len(got) == n and sorted(got) == ids  # each job once, none lost
    ordinals = [stored.ordinal for stored in loaded.jobs]
    assert ordinals == sorted(ordinals) and len(set(ordinals)) == n


# ---- the tail -------------------------------------------------------------------------------


async def test_an_idle_tail_waits_inside_redis_instead_of_polling(stores: Opener, raw: Any) -> None:
    await stores()
    async with asyncio.timeout(10):  # a blocked XREAD: Redis answers when there is news
        while not any(c["cmd"] == "xread" and "b" in c["flags"] for c in await raw.client_list()):
            await asyncio.sleep(0.01)


async def test_failed_tail_reads_are_reported_then_retried_and_the_store_goes_on(
    stores: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_module, "APPLY_TIMEOUT_S", 5.0)
    log = Log()
    store = await stores(log)
    conn: Any = store._tail_conn
    real = conn.xread
    failures = 2  # in a row: the retry after a retry backs off too
    failed = asyncio.Event()
    health_when_retrying: list[str | None] = []

    async def fails_twice(*args: Any, **kwargs: Any) -> Any:
        nonlocal failures
        if failures:
            if failures == 1:
                health_when_retrying.append(store.health())
            failures -= 1
            failed.set()
            raise RedisConnectionError(f"tail read failed ({failures} more)")
        if len(health_when_retrying) == 1:
            health_when_retrying.append(store.health())
        return await real(*args, **kwargs)

    conn.xread = fails_twice
    async with asyncio.timeout(10):
        await failed.wait()
        assert await store.commit(create("a")) == 1  # applied: the tail read again
    assert health_when_retrying == [
        "redis unavailable: tail read failed (1 more)",
        "redis unavailable: tail read failed (0 more)",
    ]
    assert store.health() is None  # a read that works clears it
    assert [e.job.id for e in log.events] == ["a"]


async def test_a_reopened_store_keeps_each_jobs_key_and_request_hash(
    stores: Opener, redis_url: str
) -> None:
    store = await stores()
    await store.commit(create("keyed", key="k"))  # request hash "hash"
    await store.commit(create("plain"))
    await store.close()
    again = RedisStore(redis_url, event_buffer=100)
    loaded = await again.open(Log(), lambda config: None)
    await again.close()
    assert [(s.job.id, s.idempotency_key, s.request_hash) for s in loaded.jobs] == [
        ("keyed", "k", "hash"),
        ("plain", None, None),
    ]


async def test_a_store_just_opened_is_healthy(stores: Opener) -> None:
    store = await stores()  # its tail has not finished a read yet
    assert store.health() is None


async def test_a_bug_downstream_of_the_tail_is_logged_and_the_tail_goes_on(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(redis_module, "APPLY_TIMEOUT_S", 3.0)
    seen: list[str] = []

    def on_commit(events: list[Any]) -> None:
        for event in events:
            if event.job.id == "boom":
                raise RuntimeError("a bug in on_commit")
            seen.append(event.job.id)

    store = RedisStore(redis_url, event_buffer=100)
    await store.open(on_commit, lambda config: None)
    try:
        with caplog.at_level(logging.ERROR, logger="service.store.redis"):
            async with asyncio.timeout(10):
                assert await store.commit(create("boom")) == 1  # durable: it answers
                assert await store.commit(create("after")) == 2  # the tail went on
                await store.sync()
        assert seen == ["after"]
        (record,) = caplog.records
        assert record.exc_info is not None and "a bug in on_commit" in str(record.exc_info[1])
        assert store.health() is None
    finally:
        await store.close()


async def test_a_dropped_connection_is_a_503_at_once_and_not_retried_by_the_client(
    stores: Opener, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # "a failure is a 503 now, the caller retries": redis-py must not resend on its own
    log = Log()
    store = await stores(log)
    client: Any = store._redis
    cls: Any = client.connection_pool.connection_class
    real = cls.send_packed_command
    drop: list[bytes] = []  # the next command holding this marker fails once
    health_at_next_read: list[str | None] = []
    dropped_read, reading_again = asyncio.Event(), asyncio.Event()

    async def dropping(self: Any, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes) else b"".join(command)
        if drop and drop[0] in packed:
            if drop[0] == b"XREAD":
                dropped_read.set()
            drop.clear()
            raise RedisConnectionError("connection dropped")
        if b"XREAD" in packed and dropped_read.is_set() and not reading_again.is_set():
            health_at_next_read.append(store.health())
            reading_again.set()
        return await real(self, command, check_health)  # type: ignore[no-any-return]

    monkeypatch.setattr(cls, "send_packed_command", dropping)
    drop.append(b"dubsim:doc:keys")
    with pytest.raises(StoreUnavailable) as info:
        await store.put_doc("keys", "k", b"v")
    assert info.value.reason == "redis unavailable: connection dropped"
    assert await raw.hget("dubsim:doc:keys", "k") is None  # not sent again behind our back
    assert await store.put_doc("keys", "k", b"v") == 1  # the caller's retry goes through
    # the tail's read: reported (health names it), not hidden by a retry inside redis-py
    drop.append(b"XREAD")
    async with asyncio.timeout(10):
        await store.commit(create("a"))  # the read in flight brings it; the next one fails
        await reading_again.wait()  # and the one after that is the tail's own retry
        await store.commit(create("b"))
    assert health_at_next_read == ["redis unavailable: connection dropped"]
    assert store.health() is None
    assert [e.job.id for e in log.events] == ["a", "b"]


# ---- a document is read whole ---------------------------------------------------------------


def commands_of(packed: bytes) -> list[bytes]:
    """Split packed RESP commands (`*N` arrays of bulk strings) into one chunk each."""
    chunks, at = [], 0
    while at < len(packed):
        end = packed.index(b"\r\n", at)
        cursor = end + 2
        for _ in range(int(packed[at + 1 : end])):
            end = packed.index(b"\r\n", cursor)
            cursor = end + 2 + int(packed[cursor + 1 : end]) + 2
        chunks.append(packed[at:cursor])
        at = cursor
    return chunks


def write_between_the_reads(
    store: RedisStore, raw: Any, monkeypatch: pytest.MonkeyPatch, write: Callable[[], Any]
) -> None:
    """The store's next read of a document goes to Redis in two parts: up to its first read
    (HGET/HGETALL), and the rest once Redis has run that first read and `write` has landed.
    This is the race a write from another process can win at any time."""
    client: Any = store._redis
    cls: Any = client.connection_pool.connection_class
    real = cls.send_packed_command
    armed = [True]

    async def split(self: Any, command: Any, check_health: bool = True) -> None:
        packed = command if isinstance(command, bytes) else b"".join(command)
        chunks = commands_of(packed) if armed[0] and b"\r\nHGET" in packed else []
        if not chunks:
            return await real(self, command, check_health)  # type: ignore[no-any-return]
        armed[0] = False
        first = next(n for n, c in enumerate(chunks) if b"\r\nHGET" in c) + 1
        await real(self, b"".join(chunks[:first]), check_health)
        async with asyncio.timeout(10):  # Redis has run (or queued) the first read
            while not any(c["cmd"] in ("hget", "hgetall") for c in await raw.client_list()):
                await asyncio.sleep(0.005)
        await write()
        await real(self, b"".join(chunks[first:]), check_health)

    monkeypatch.setattr(cls, "send_packed_command", split)


async def test_a_document_is_read_whole_though_a_write_lands_between_its_reads(
    stores: Opener, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    other = await stores()  # another process
    assert await store.put_doc("keys", "k", b"one") == 1
    write_between_the_reads(store, raw, monkeypatch, lambda: other.put_doc("keys", "k", b"two"))
    doc = await store.get_doc("keys", "k")
    assert doc is not None and (doc.body, doc.version) in ((b"one", 1), (b"two", 2))
    assert await store.get_doc("keys", "k") == Doc("k", b"two", 2)  # and after it, the new one


async def test_a_listing_of_documents_is_read_whole_though_a_write_lands_between_its_reads(
    stores: Opener, raw: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await stores()
    other = await stores()
    assert await store.put_doc("keys", "k", b"one") == 1
    write_between_the_reads(store, raw, monkeypatch, lambda: other.put_doc("keys", "k", b"two"))
    (doc,) = await store.docs("keys")
    assert (doc.body, doc.version) in ((b"one", 1), (b"two", 2))


async def test_a_burst_past_the_connection_pool_waits_instead_of_failing(stores: Opener) -> None:
    # redis-py's pool refuses a command past its size ("Too many connections", 100 by
    # default): a burst of requests became 503s and /healthz said the store was down. More
    # commands at once than the pool holds wait for a connection instead.
    store = await stores()
    await store.put_doc("burst", "d", b"body")
    burst = 3 * redis_module.POOL_SIZE
    results = await asyncio.gather(
        *(store.get_doc("burst", "d") for _ in range(burst)), return_exceptions=True
    )
    assert [r for r in results if not isinstance(r, Doc)] == []
    assert store.health() is None
    written = await asyncio.gather(
        *(store.put_doc("burst", f"n{i}", b"x") for i in range(burst)), return_exceptions=True
    )
    assert written == [1] * burst
    assert store.health() is None
