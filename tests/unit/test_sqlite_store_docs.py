"""The SQLite store's documents beside the jobs, past the shared contract in test_store.py:
a write in a failed batch changes nothing and tells its caller (503); writes in one batch are
decided in order against each other; a delete, a re-create and a reopen give the documented
versions (starting at 1, +1 per write, 0 once deleted)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

import pytest

from service.store import SQLiteStore, StoreUnavailable, VersionConflict
from service.store import sqlite as sqlite_module
from tests.unit.test_store import Log, create


async def reopen(path: str) -> SQLiteStore:
    store = SQLiteStore(path, event_buffer=100)
    await store.open(Log(), lambda config: None)
    return store


async def test_a_document_write_in_a_failed_batch_is_refused_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_module, "BUSY_TIMEOUT_S", 0.05)
    monkeypatch.setattr(sqlite_module, "PROBE_INTERVAL_S", 0.05)
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    assert await store.put_doc("keys", "k1", b"one") == 1
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        results = await asyncio.gather(
            store.put_doc("keys", "k1", b"two", expect=1),
            store.put_doc("keys", "k2", b"new"),
            store.put_doc("keys", "k1", None),
            store.commit(create("a")),
            return_exceptions=True,
        )
        assert [type(r) for r in results] == [StoreUnavailable] * 4, results
        assert all("database write failed" in str(r) for r in results)
        doc = await store.get_doc("keys", "k1")
        assert doc is not None and (doc.body, doc.version) == (b"one", 1)
        assert await store.get_doc("keys", "k2") is None
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    for _ in range(500):
        if store.health() is None:
            break
        await asyncio.sleep(0.01)
    # the same decision is taken once the store is back: version 1 was never superseded
    assert await store.put_doc("keys", "k1", b"two", expect=1) == 2
    await store.close()
    again = await reopen(path)
    assert [(d.id, d.body, d.version) for d in await again.docs("keys")] == [("k1", b"two", 2)]
    await again.close()


async def test_document_writes_in_one_batch_are_decided_in_order(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    results = await asyncio.gather(
        store.put_doc("hooks", "h", b"v1", expect=0),
        store.put_doc("hooks", "h", b"v2", expect=1),  # sees the write just before it
        store.put_doc("hooks", "h", b"lost", expect=1),  # decided on a superseded version
        store.put_doc("hooks", "h", b"v3"),
        store.put_doc("hooks", "g", b"g1"),
        store.put_doc("hooks", "g", None, expect=1),  # born and gone in one batch
        store.put_doc("other", "h", b"x", expect=0),  # kinds are separate
        return_exceptions=True,
    )
    assert results[:2] == [1, 2] and isinstance(results[2], VersionConflict)
    assert results[3:] == [3, 1, 0, 1]
    doc = await store.get_doc("hooks", "h")
    assert doc is not None and (doc.id, doc.body, doc.version) == ("h", b"v3", 3)
    assert await store.get_doc("hooks", "g") is None
    assert await store.get_doc("nothing", "h") is None
    await store.close()
    again = await reopen(path)
    assert [(d.id, d.body, d.version) for d in await again.docs("hooks")] == [("h", b"v3", 3)]
    assert [(d.id, d.version) for d in await again.docs("other")] == [("h", 1)]
    await again.close()


async def test_a_deleted_document_starts_again_at_version_1_also_after_a_reopen(
    tmp_path: Path,
) -> None:
    path = str(tmp_path / "s.db")
    store = await reopen(path)
    assert await store.put_doc("keys", "k", b"a") == 1
    assert await store.put_doc("keys", "k", b"b") == 2
    assert await store.put_doc("keys", "k", None, expect=2) == 0
    with pytest.raises(VersionConflict):  # gone: expecting its old version fails
        await store.put_doc("keys", "k", b"c", expect=2)
    assert await store.put_doc("keys", "k", b"c", expect=0) == 1  # "must not exist": it doesn't
    assert await store.put_doc("keys", "gone", b"x") == 1
    assert await store.put_doc("keys", "gone", None) == 0
    await store.close()
    again = await reopen(path)
    assert await again.get_doc("keys", "gone") is None
    with pytest.raises(VersionConflict):  # the version survives a reopen: 1, not 0
        await again.put_doc("keys", "k", b"d", expect=0)
    assert await again.put_doc("keys", "k", b"d", expect=1) == 2
    assert await again.put_doc("keys", "gone", b"y", expect=0) == 1
    await again.close()


async def test_deleting_a_document_that_does_not_exist_is_a_no_op(tmp_path: Path) -> None:
    store = await reopen(str(tmp_path / "s.db"))
    assert await store.put_doc("keys", "never", None) == 0
    assert await store.put_doc("nothing-of-this-kind", "never", None) == 0
    with pytest.raises(VersionConflict):
        await store.put_doc("keys", "never", None, expect=1)
    assert await store.put_doc("keys", "k", b"v") == 1  # the store still writes
    assert await store.docs("keys") == [(await store.get_doc("keys", "k"))]
    await store.close()


async def test_every_write_runs_on_the_stores_one_thread(tmp_path: Path) -> None:
    """The connection lives on one dedicated thread (named sqlite…): opening, every batch
    and closing run there, never on the event loop's default executor."""
    store = SQLiteStore(str(tmp_path / "s.db"))
    threads: list[str] = []
    for name in ("_open_sync", "_write_sync", "_close_sync"):
        real = getattr(store, name)

        def spy(*args: object, _real: object = real) -> object:
            threads.append(threading.current_thread().name)
            return _real(*args)  # type: ignore[operator]

        setattr(store, name, spy)
    await store.open(Log(), lambda config: None)
    await store.commit(create("a"))
    await store.put_doc("keys", "k", b"v")
    await store.close()
    assert len(threads) >= 4
    assert len(set(threads)) == 1 and threads[0].startswith("sqlite")
