"""The SQLite store's own promises, past the shared contract in test_store.py: group commit
(changes handed over together are decided in order against each other, and a job changed
twice is written once in its last state), what a reopen restores (seqs and ordinals are never
reused, old rate hits are dropped), and a failed write that changes nothing, not even the
free plan's count, and is noticed again without anyone writing."""

import asyncio
import logging
import os
import sqlite3
from pathlib import Path

import pytest

from service.errors import StartupError
from service.models import EventType, Status
from service.settings import Config
from service.store import Change, DuplicateSubmission, SQLiteStore, StoreUnavailable
from service.store import sqlite as sqlite_module
from tests.unit.test_store import Log, create, job, move


async def reopen(path: str, log: Log | None = None, event_buffer: int = 100) -> SQLiteStore:
    store = SQLiteStore(path, event_buffer=event_buffer)
    await store.open(log or Log(), lambda config: None)
    return store


def exists(path: str) -> bool:
    return os.path.exists(path)


def rows(path: str, sql: str) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


async def test_one_batch_decides_changes_in_order_against_each_other(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    log = Log()
    store = await reopen(path, log)
    await store.commit(create("old"))
    results = await asyncio.gather(
        store.commit(create("a", key="k")),
        store.commit(create("b", key="k")),  # the same user's key, one change later
        store.commit(move("a", Status.PROCESSING, expect=2)),  # a's version within the batch
        store.commit(move("a", Status.COMPLETED, expect=3, event=EventType.COMPLETED)),
        store.commit(create("c")),
        store.commit(Change(job("c"), EventType.DELETED, "t", 5)),  # born and gone at once
        store.commit(move("old", Status.CANCELLED, expect=1, event=EventType.CANCELLED)),
        store.commit(create("a")),  # exists (since this batch)
        return_exceptions=True,
    )
    assert results[0] == 2 and results[2:4] == [3, 4] and results[4:7] == [5, 6, 7]
    assert isinstance(results[1], DuplicateSubmission) and results[1].job_id == "a"
    assert type(results[7]).__name__ == "VersionConflict"
    assert [(e.seq, e.type, e.job.id) for e in log.events] == [
        (1, EventType.CREATED, "old"),
        (2, EventType.CREATED, "a"),
        (3, EventType.STARTED, "a"),
        (4, EventType.COMPLETED, "a"),
        (5, EventType.CREATED, "c"),
        (6, EventType.DELETED, "c"),
        (7, EventType.CANCELLED, "old"),
    ]
    assert [e.ordinal for e in log.events] == [1, 2, 2, 2, 3, 3, 1]
    assert [(e.idempotency_key, e.request_hash) for e in log.events[1:3]] == [
        ("k", "hash"),
        (None, None),  # only a creation carries the key
    ]
    await store.close()
    # written once, in the last state; the job born and deleted in the batch is not there
    on_disk = rows(path, "SELECT ordinal, id, idempotency_key, version FROM jobs ORDER BY 1")
    assert on_disk == [(1, "old", None, 7), (2, "a", "k", 4)]
    again = await reopen(path)
    assert await again.commit(create("d")) == 8
    with pytest.raises(DuplicateSubmission):
        await again.commit(create("e", key="k"))  # the key survived with its job
    await again.close()
    loaded = await (third := SQLiteStore(path)).open(Log(), lambda c: None)
    await third.close()
    assert [(s.job.id, s.job.status, s.ordinal) for s in loaded.jobs] == [
        ("old", Status.CANCELLED, 1),
        ("a", Status.COMPLETED, 2),
        ("d", Status.PENDING, 4),  # ordinal 3 went with c, and is not handed out again
    ]


async def test_a_deleted_jobs_key_and_ordinal_after_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    await store.commit(create("a"))
    await store.commit(create("b", key="k"))
    await store.commit(Change(job("b"), EventType.DELETED, "t", 2))
    assert await store.commit(create("c", key="k")) == 4  # the key is free again at once
    await store.commit(Change(job("c"), EventType.DELETED, "t", 4))
    await store.close()
    again = await reopen(path, event_buffer=1)  # the log no longer shows seq 4 or 5's jobs
    log = Log()
    again._on_commit = log
    assert await again.commit(create("d", key="k")) == 6  # seqs go on
    assert log.events[0].ordinal == 4  # ordinals 2 and 3 are never reused
    await again.close()


async def test_the_newest_event_buffer_events_are_kept_on_disk(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path, event_buffer=3)
    for name in "abcde":
        await store.commit(create(name))
    await store.close()
    assert [r[0] for r in rows(path, "SELECT seq FROM events ORDER BY seq")] == [3, 4, 5]


async def test_old_rate_hits_are_not_restored(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    now = 4_000_000_000.0  # far future: the load's clean-up (by wall time) keeps these
    assert (await store.rate_hit("u", 2, now)).allowed
    assert (await store.rate_hit("u", 2, now + 1)).allowed
    await store.commit(create("a"))
    await store.close()
    again = await reopen(path)
    assert not (await again.rate_hit("u", 2, now + 2)).allowed  # both came back
    assert (await again.rate_hit("u", 2, now + 3600.5)).allowed  # the first left the window
    await again.close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO rate_hits VALUES ('old', 1000.0)")  # long out of the window
    conn.commit()
    conn.close()
    third = await reopen(path)
    assert ("old",) not in rows(path, "SELECT user_id FROM rate_hits")
    await third.close()


async def test_a_config_alone_is_saved(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    await store.save_config(Config(max_attempts=7))
    await store.save_config(Config(max_attempts=8))  # the last one wins
    await store.close()
    loaded = await (again := SQLiteStore(path)).open(Log(), lambda c: None)
    await again.close()
    assert loaded.config == Config(max_attempts=8) and loaded.jobs == [] and loaded.seq == 0


async def test_a_file_from_a_newer_version_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {sqlite_module.SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StartupError) as caught:
        await reopen(path)
    assert "newer" in caught.value.problem
    await (await reopen(path.replace("s.db", "other.db"))).close()  # the lock was released
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {sqlite_module.SCHEMA_VERSION}")
    conn.close()
    await (await reopen(path)).close()


async def test_a_fresh_file_gets_the_current_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    await (await reopen(path)).close()
    assert rows(path, "PRAGMA user_version") == [(sqlite_module.SCHEMA_VERSION,)]
    assert rows(path, "PRAGMA journal_mode") == [("wal",)]


async def test_memory_and_uri_databases_need_no_lock() -> None:
    for path in (":memory:", "file:mem1?mode=memory&cache=shared"):
        first = await reopen(path)
        second = await reopen(path)  # nothing on disk to guard
        assert await first.commit(create("a")) == 1
        await first.close()
        await second.close()


async def test_a_failed_write_changes_nothing_and_is_noticed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.store.sqlite")
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(sqlite_module, "PROBE_INTERVAL_S", 0.05)
    path = str(tmp_path / "s.db")
    log = Log()
    store = await reopen(path, log)
    await store.commit(create("a"))
    assert store.health() is None
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        assert (await store.rate_hit("u", 1, 4e9)).allowed
        results = await asyncio.gather(
            store.commit(create("b")),
            store.commit(move("a", Status.PROCESSING, expect=1)),
            store.save_config(Config(max_attempts=9)),
            return_exceptions=True,
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        reason = store.health()
        assert reason is not None and reason.startswith("database write failed: ")
        assert [e.job.id for e in log.events] == ["a"]
        # the submission failed, so its hit does not count against the plan
        assert (await store.rate_hit("u", 1, 4e9 + 1)).allowed
        store._window.forget([("u", 4e9 + 1)])
        for _ in range(5):  # the probes keep failing while the lock is held
            await asyncio.sleep(0.06)
        assert store.health() == reason
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for _ in range(200):  # the probe notices, with no write asked for
        if store.health() is None:
            break
        await asyncio.sleep(0.01)
    assert store.health() is None
    # loud once when writes start failing, and once when they succeed again; not per probe
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", f"sqlite {reason}"),
        ("WARNING", "sqlite writes succeed again"),
    ]
    assert await store.commit(create("b")) == 2  # seq 2 was never used
    assert await store.commit(move("a", Status.PROCESSING, expect=1)) == 3
    await store.close()
    loaded = await (again := SQLiteStore(path)).open(Log(), lambda c: None)
    await again.close()
    assert loaded.config is None  # the failed save is not there either
    assert [(s.job.id, s.version) for s in loaded.jobs] == [("a", 3), ("b", 2)]


async def test_close_flushes_and_a_closed_store_can_be_reopened(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    await store.commit(create("a"))
    assert await store.rate_hit("u", 5, 4e9)  # pending with no commit after it
    await store.close()
    assert rows(path, "SELECT user_id FROM rate_hits") == [("u",)]  # flushed by close
    assert not exists(path + "-wal")  # the connection was closed: WAL checkpointed
    again = await reopen(path)
    await again.close()
