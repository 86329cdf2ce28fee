"""The Store contract, on a real SQLite file and on a real Redis: compare-and-set commits, the
durable event log, what survives a reopen; and, SQLite only, failure that is loud and changes
nothing, one process per file, old files migrate. (Redis failures: test_store_failure.py.)
"""

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import msgspec
import pytest

from service.errors import StartupError
from service.models import EventType, Job, Role, Status
from service.settings import Config
from service.store import (
    Change,
    Committed,
    DuplicateSubmission,
    Loaded,
    SQLiteStore,
    Store,
    StoreUnavailable,
    VersionConflict,
)


def job(job_id: str, status: Status = Status.PENDING, user: str = "u") -> Job:
    return Job(
        id=job_id, user_id=user, role=Role.FREE, status=status, progress=0, attempt=0,
        max_attempts=3, priority=0, target_language="es", created_at="2026-11-26T06:00:00.000Z",
    )  # fmt: skip


def create(job_id: str, key: str | None = None) -> Change:
    return Change(job(job_id), EventType.CREATED, "t0", 0, key, "hash" if key else None)


def move(job_id: str, status: Status, expect: int, event: EventType = EventType.STARTED) -> Change:
    return Change(job(job_id, status), event, "t1", expect)


class Log:
    """An on_commit callback that records what it was given, in order."""

    def __init__(self) -> None:
        self.events: list[Committed] = []

    def __call__(self, events: list[Committed]) -> None:
        self.events.extend(events)


async def opened(path: str, log: Log | None = None) -> SQLiteStore:
    store = SQLiteStore(path, event_buffer=100)
    await store.open(log or Log(), lambda config: None)
    return store


Opener = Callable[..., Awaitable[tuple[Store, Loaded]]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """`store, loaded = await open_store(log, event_buffer=100)`: the same backing each call.
    A Redis store a failed test left open is closed here: its tail would keep the test's loop
    from ever finishing (a hang past the timeout instead of a red test)."""

    async def sqlite(log: Log | None = None, event_buffer: int = 100) -> tuple[Store, Loaded]:
        store = SQLiteStore(str(tmp_path / "s.db"), event_buffer=event_buffer)
        return store, await store.open(log or Log(), lambda config: None)

    if request.param == "sqlite":
        yield sqlite
        return
    url = request.getfixturevalue("redis_url")
    from service.store.redis import RedisStore

    opened: list[RedisStore] = []

    async def redis(log: Log | None = None, event_buffer: int = 100) -> tuple[Store, Loaded]:
        store = RedisStore(url, event_buffer=event_buffer)
        opened.append(store)
        return store, await store.open(log or Log(), lambda config: None)

    yield redis
    for store in opened:
        if store._redis is not None:
            await store.close()


async def test_commit_is_compare_and_set_and_gets_the_next_seq(open_store: Opener) -> None:
    log = Log()
    store, _ = await open_store(log)
    assert await store.commit(create("a")) == 1
    assert await store.commit(create("b")) == 2
    assert await store.commit(move("a", Status.PROCESSING, expect=1)) == 3
    with pytest.raises(VersionConflict):  # decided on version 1, but "a" is at 3 now
        await store.commit(move("a", Status.CANCELLED, expect=1, event=EventType.CANCELLED))
    with pytest.raises(VersionConflict):  # a job that exists can't be created again
        await store.commit(create("b"))
    with pytest.raises(VersionConflict):  # nor can a job that never existed be moved
        await store.commit(move("zzz", Status.PROCESSING, expect=1))
    assert [(e.seq, e.type, e.job.id, e.job.status) for e in log.events] == [
        (1, EventType.CREATED, "a", Status.PENDING),
        (2, EventType.CREATED, "b", Status.PENDING),
        (3, EventType.STARTED, "a", Status.PROCESSING),
    ]
    assert [e.ordinal for e in log.events] == [1, 2, 1]
    await store.close()


async def test_a_write_to_a_closed_store_is_refused_not_left_waiting(open_store: Opener) -> None:
    store, _ = await open_store()
    await store.commit(create("a"))
    await store.close()
    # nothing is left to write it: each is a StoreUnavailable at once, never a wait forever
    async with asyncio.timeout(10):
        with pytest.raises(StoreUnavailable):
            await store.commit(move("a", Status.PROCESSING, 1))
        with pytest.raises(StoreUnavailable):
            await store.commit_all([create("b"), create("c")])
        with pytest.raises(StoreUnavailable):
            await store.put_doc("kind", "d", b"{}", 0)
    # and nothing was written
    again, loaded = await open_store()
    try:
        assert [(j.job.id, j.job.status) for j in loaded.jobs] == [("a", Status.PENDING)]
        assert await again.get_doc("kind", "d") is None
    finally:
        await again.close()


async def test_racing_changes_in_one_batch_only_one_wins(open_store: Opener) -> None:
    store, _ = await open_store()
    await store.commit(create("a"))
    results = await asyncio.gather(
        store.commit(move("a", Status.PROCESSING, expect=1)),
        store.commit(move("a", Status.CANCELLED, expect=1, event=EventType.CANCELLED)),
        return_exceptions=True,
    )
    assert results[0] == 2 and isinstance(results[1], VersionConflict)
    await store.close()


async def test_an_idempotency_key_names_one_job_per_user(open_store: Opener) -> None:
    store, _ = await open_store()
    await store.commit(create("a", key="k"))
    with pytest.raises(DuplicateSubmission) as caught:
        await store.commit(create("b", key="k"))
    assert caught.value.job_id == "a"
    other = Change(job("c", user="v"), EventType.CREATED, "t0", 0, "k", "hash")
    assert await store.commit(other) == 2  # another user's key of the same name is its own
    await store.close()


async def test_one_requests_submissions_fit_the_window_all_or_none(open_store: Opener) -> None:
    store, _ = await open_store()
    now = 1e12  # in the future: inside the window whatever the real time
    refused = await store.rate_hit("u", 3, now, 4)  # four do not fit in three: none counted
    assert (refused.allowed, refused.remaining) == (False, 3)
    taken = await store.rate_hit("u", 3, now, 2)
    assert (taken.allowed, taken.remaining) == (True, 1)
    assert (await store.rate_hit("u", 3, now, 2)).allowed is False  # one left, not two
    assert (await store.rate_hit("u", 3, now)).allowed is True  # the last one
    assert (await store.rate_hit("u", 3, now)).allowed is False
    await store.commit(create("a"))  # (SQLite makes hits durable with a submission)
    await store.close()


async def test_jobs_versions_events_and_config_survive_a_reopen(open_store: Opener) -> None:
    store, _ = await open_store()
    await store.commit(create("a", key="key-1"))
    await store.commit(create("b"))
    await store.commit(create("c"))
    await store.commit(move("b", Status.PROCESSING, expect=2))
    await store.commit(Change(job("c"), EventType.DELETED, "t2", 3))
    assert (await store.rate_hit("u", 5, 1e12)).allowed  # in the future: inside the window
    await store.commit(create("d"))  # the hit is made durable with the submission
    await store.save_config(Config(translation_delay=3.5))  # (on Redis it takes a seq too)
    await store.close()

    again, loaded = await open_store()
    assert [(s.job.id, s.ordinal, s.version, s.job.status) for s in loaded.jobs] == [
        ("a", 1, 1, Status.PENDING),
        ("b", 2, 4, Status.PROCESSING),
        ("d", 4, 6, Status.PENDING),
    ]
    assert loaded.jobs[0].idempotency_key == "key-1"
    assert loaded.seq >= 6
    assert [(e.seq, e.type, e.job.id) for e in loaded.events] == [
        (1, EventType.CREATED, "a"),
        (2, EventType.CREATED, "b"),
        (3, EventType.CREATED, "c"),
        (4, EventType.STARTED, "b"),
        (5, EventType.DELETED, "c"),
        (6, EventType.CREATED, "d"),
    ]
    assert loaded.config == Config(translation_delay=3.5)
    assert (await again.rate_hit("u", 1, 1e12)).allowed is False  # the window came back
    assert await again.commit(move("b", Status.COMPLETED, expect=4)) == loaded.seq + 1
    await again.close()


async def test_the_event_log_keeps_the_newest_event_buffer_entries(open_store: Opener) -> None:
    store, _ = await open_store(event_buffer=3)
    for name in "abcde":
        await store.commit(create(name))
    await store.close()
    again, loaded = await open_store(event_buffer=3)
    await again.close()
    assert [e.seq for e in loaded.events] == [3, 4, 5]


async def test_a_locked_database_fails_the_commit_loudly_and_recovers(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    log = Log()
    store = await opened(path, log)
    await store.commit(create("a"))
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # another program holds the file for longer than we wait
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await store.commit(move("a", Status.PROCESSING, expect=1))
        assert "locked" in caught.value.reason
        assert store.health() is not None and "locked" in store.health()  # type: ignore[operator]
        assert [e.seq for e in log.events] == [1]  # nothing of the failed batch was applied
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # the probe notices without anyone writing; then the same decision commits
    for _ in range(100):
        if store.health() is None:
            break
        await asyncio.sleep(0.1)
    assert store.health() is None
    assert await store.commit(move("a", Status.PROCESSING, expect=1)) == 2
    await store.close()
    loaded = await (again := SQLiteStore(path)).open(Log(), lambda c: None)
    await again.close()
    assert [(s.job.status, s.version) for s in loaded.jobs] == [(Status.PROCESSING, 2)]


async def test_a_second_store_on_the_same_file_refuses_to_open(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    first = await opened(path)
    with pytest.raises(StartupError) as caught:
        await opened(path)
    assert caught.value.setting == "DB" and "in use" in caught.value.problem
    await first.close()
    second = await opened(path)  # the lock goes with the first store
    await second.close()


async def test_an_unwritable_path_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(StartupError) as caught:
        await opened(str(tmp_path / "no" / "such" / "dir" / "s.db"))
    assert caught.value.setting == "DB"


@pytest.mark.parametrize("schema", [0, 1])
async def test_older_files_are_migrated(tmp_path: Path, schema: int) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    key = "id TEXT PRIMARY KEY, ordinal INTEGER NOT NULL" if schema == 0 else (
        "ordinal INTEGER PRIMARY KEY, id TEXT NOT NULL"
    )  # fmt: skip
    conn.executescript(
        f"""
        CREATE TABLE jobs ({key}, idempotency_key TEXT, request_hash TEXT, data BLOB NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('seq_floor', 42);
        PRAGMA user_version = {schema};
        """
    )
    columns = "(id, ordinal, idempotency_key, request_hash, data)"
    conn.execute(
        f"INSERT INTO jobs {columns} VALUES (?, ?, NULL, NULL, ?)",
        ("old", 7, msgspec.json.encode(job("old"))),
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    loaded = await store.open(Log(), lambda c: None)
    assert [(s.job.id, s.ordinal, s.version) for s in loaded.jobs] == [("old", 7, 42)]
    assert loaded.seq == 42  # seqs handed out before the upgrade are never reused
    assert await store.commit(move("old", Status.CANCELLED, 42, EventType.CANCELLED)) == 43
    assert await store.commit(create("new")) == 44
    await store.close()
    store = SQLiteStore(path)
    loaded = await store.open(Log(), lambda c: None)
    await store.close()
    assert [(s.job.id, s.ordinal, s.job.status) for s in loaded.jobs] == [
        ("old", 7, Status.CANCELLED),
        ("new", 8, Status.PENDING),
    ]


# ---- documents: small durable records beside the jobs (keys, webhooks, assets) ----------


async def test_documents_are_compare_and_set_and_survive_a_reopen(open_store: Opener) -> None:
    store, _ = await open_store()
    assert await store.get_doc("keys", "k1") is None
    assert await store.put_doc("keys", "k1", b'{"a":1}', expect=0) == 1
    with pytest.raises(VersionConflict):  # "must not exist", but it does
        await store.put_doc("keys", "k1", b'{"a":2}', expect=0)
    with pytest.raises(VersionConflict):  # decided on a version that is gone
        await store.put_doc("keys", "k1", b'{"a":2}', expect=7)
    assert await store.put_doc("keys", "k1", b'{"a":2}', expect=1) == 2
    assert await store.put_doc("keys", "k0", b"zero") == 1  # unconditional
    assert await store.put_doc("hooks", "k1", b"other kind") == 1
    doc = await store.get_doc("keys", "k1")
    assert doc is not None and (doc.id, doc.body, doc.version) == ("k1", b'{"a":2}', 2)
    assert [(d.id, d.body) for d in await store.docs("keys")] == [
        ("k0", b"zero"),
        ("k1", b'{"a":2}'),
    ]
    assert await store.put_doc("keys", "k0", None) == 0  # delete
    assert await store.get_doc("keys", "k0") is None
    await store.close()

    again, _ = await open_store()
    assert [(d.id, d.body, d.version) for d in await again.docs("keys")] == [("k1", b'{"a":2}', 2)]
    assert [d.body for d in await again.docs("hooks")] == [b"other kind"]
    assert await again.docs("nothing") == []
    await again.close()


async def test_racing_document_writes_only_one_wins(open_store: Opener) -> None:
    store, _ = await open_store()
    await store.put_doc("lease", "endpoint-1", b"free", expect=0)
    results = await asyncio.gather(
        *(store.put_doc("lease", "endpoint-1", f"owner {i}".encode(), expect=1) for i in range(5)),
        return_exceptions=True,
    )
    assert sorted(type(r).__name__ for r in results) == ["VersionConflict"] * 4 + ["int"]
    doc = await store.get_doc("lease", "endpoint-1")
    winner = next(i for i, r in enumerate(results) if r == 2)
    assert doc is not None and doc.body == f"owner {winner}".encode() and doc.version == 2
    await store.close()
