"""What a reopened SQLite store gives back, field by field (the replay buffer's events as they
were committed, each job's key and request hash, the free plan's recent hits), what a key
deleted after a reopen frees, how a startup failure is worded, and that a caller who gave up
on a commit does not hold up the others in its batch."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest

from service.errors import StartupError
from service.models import EventType, Status
from service.store import Change, Committed, SQLiteStore, VersionConflict
from tests.unit.test_store import Log, create, job, move


async def reopen(path: str, log: Log | None = None) -> tuple[SQLiteStore, object]:
    store = SQLiteStore(path, event_buffer=100)
    loaded = await store.open(log or Log(), lambda config: None)
    return store, loaded


async def test_the_replay_buffer_comes_back_exactly_as_committed(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    log = Log()
    store, _ = await reopen(path, log)
    await store.commit(create("a", key="key-a"))
    await store.commit(create("b"))
    await store.commit(move("a", Status.PROCESSING, expect=1))
    await store.commit(Change(job("b"), EventType.DELETED, "t9", 2))
    await store.close()
    committed: list[Committed] = log.events
    assert [e.at for e in committed] == ["t0", "t0", "t1", "t9"]
    again, loaded = await reopen(path)
    await again.close()
    assert loaded.events == committed  # type: ignore[attr-defined]  # every field
    assert loaded.events[0].idempotency_key == "key-a"  # type: ignore[attr-defined]
    assert loaded.events[0].request_hash == "hash"  # type: ignore[attr-defined]
    stored = loaded.jobs[0]  # type: ignore[attr-defined]
    assert (stored.job.id, stored.idempotency_key, stored.request_hash) == ("a", "key-a", "hash")


async def test_a_keyed_job_deleted_after_a_reopen_frees_its_key(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    await store.commit(create("a", key="k"))
    await store.close()
    again, _ = await reopen(path)
    await again.commit(Change(job("a"), EventType.DELETED, "t", 1))
    assert await again.commit(create("b", key="k")) == 3  # the user's key is free again
    await again.close()


async def test_recent_rate_hits_come_back_after_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    now = time.time()
    assert (await store.rate_hit("u", 1, now)).allowed
    await store.commit(create("a"))
    await store.close()
    again, _ = await reopen(path)
    assert not (await again.rate_hit("u", 1, now + 1)).allowed  # the hit a second ago counts
    await again.close()


async def test_a_missing_directory_is_named_in_the_startup_error(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such"
    path = f"file:{missing}/s.db?mode=rwc"  # a URI: no lock file, so the open itself checks
    with pytest.raises(StartupError) as caught:
        await SQLiteStore(path).open(Log(), lambda config: None)
    assert caught.value.setting == "DB"
    # (not a URI to sqlite3 here: the name is a relative path, resolved from the cwd)
    assert caught.value.problem.startswith(f"cannot open {path}: no directory ")
    assert caught.value.problem.endswith(f"file:{missing}")


async def test_a_newer_files_schema_is_named_in_the_startup_error(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 9")
    conn.close()
    with pytest.raises(StartupError) as caught:
        await reopen(path)
    assert caught.value.problem == f"cannot open {path}: written by a newer dubsim (schema 9)"


async def test_a_caller_that_gave_up_does_not_hold_up_the_rest_of_its_batch(
    tmp_path: Path,
) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    await store.commit(create("a"))
    changes = [
        asyncio.create_task(store.commit(create("x"))),
        asyncio.create_task(store.commit(create("y"))),
        asyncio.create_task(store.commit(move("a", Status.PROCESSING, expect=1))),
    ]
    docs = [
        asyncio.create_task(store.put_doc("keys", "p", b"1")),
        asyncio.create_task(store.put_doc("keys", "q", b"2")),
    ]
    await asyncio.sleep(0)  # all handed over: one batch
    changes[0].cancel()
    docs[0].cancel()
    async with asyncio.timeout(10):
        assert await asyncio.gather(*changes[1:]) == [3, 4]
        assert await docs[1] == 1
    # the abandoned ones were written all the same: durable, just unanswered
    assert [d.id for d in await store.docs("keys")] == ["p", "q"]
    await store.close()


async def test_a_failing_on_commit_is_logged_and_the_commit_still_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(events: list[Committed]) -> None:
        raise KeyError("bug")

    store = SQLiteStore(str(tmp_path / "s.db"))
    await store.open(broken, lambda config: None)
    with caplog.at_level(logging.ERROR, logger="service.store.sqlite"):
        async with asyncio.timeout(10):
            assert await store.commit(create("a")) == 1
    assert [r.getMessage() for r in caplog.records] == ["applying committed changes failed"]
    assert caplog.records[0].exc_info is not None
    await store.close()


async def test_seqs_are_never_reused_even_when_the_event_log_is_gone(tmp_path: Path) -> None:
    import sqlite3

    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    for name in "abc":
        await store.commit(create(name))
    await store.commit(Change(job("c"), EventType.DELETED, "t", 3))  # seq 4: the last
    await store.close()
    conn = sqlite3.connect(path)
    conn.execute("DELETE FROM events")  # as in a file from before the event log
    conn.commit()
    conn.close()
    again, loaded = await reopen(path)
    assert loaded.seq == 4  # type: ignore[attr-defined]
    assert await again.commit(create("d")) == 5
    await again.close()


async def test_a_conflict_in_a_batch_does_not_stop_the_changes_after_it(tmp_path: Path) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    await store.commit(create("a"))
    results = await asyncio.gather(
        store.commit(create("a")),  # exists
        store.commit(create("x")),
        store.commit(move("zzz", Status.PROCESSING, expect=1)),  # never existed
        store.commit(create("y")),
        return_exceptions=True,
    )
    assert [type(r).__name__ for r in results] == [
        "VersionConflict",
        "int",
        "VersionConflict",
        "int",
    ]
    assert str(results[0]) == "a" and str(results[2]) == "zzz"  # it names the job
    assert results[1] == 2 and results[3] == 3
    with pytest.raises(VersionConflict) as caught:
        await store.put_doc("keys", "k1", b"v", expect=3)
    assert str(caught.value) == "keys/k1"
    await store.close()


async def test_a_deleted_job_can_not_be_moved(tmp_path: Path) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    await store.commit(create("a"))
    assert await store.commit(Change(job("a"), EventType.DELETED, "t", 1)) == 2
    with pytest.raises(VersionConflict):  # decided on the version the delete left
        await store.commit(move("a", Status.PROCESSING, expect=2))
    await store.close()


async def test_hundreds_of_deletes_in_one_batch_all_reach_the_file(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    names = [f"j{n}" for n in range(900)]  # more than two statements' worth of rows
    seqs = await asyncio.gather(*(store.commit(create(n)) for n in names))
    deleted = await asyncio.gather(
        *(
            store.commit(Change(job(n), EventType.DELETED, "t", s))
            for n, s in zip(names, seqs, strict=True)
        )
    )
    assert len(set(deleted)) == 900
    await store.commit(create("kept"))
    await store.close()
    again, loaded = await reopen(path)
    await again.close()
    assert [s.job.id for s in loaded.jobs] == ["kept"]  # type: ignore[attr-defined]


async def test_a_store_that_never_opened_closes_at_once(tmp_path: Path) -> None:
    async with asyncio.timeout(10):
        await SQLiteStore(str(tmp_path / "s.db")).close()


async def test_the_writer_task_is_named(tmp_path: Path) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    assert store._writer is not None and store._writer.get_name() == "sqlite-writer"
    await store.close()


async def test_startup_errors_say_what_is_wrong_with_the_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "no" / "s.db")
    with pytest.raises(StartupError) as caught:
        await reopen(missing)
    assert caught.value.problem == f"cannot open {missing}: No such file or directory"
    path = str(tmp_path / "s.db")
    first, _ = await reopen(path)
    with pytest.raises(StartupError) as caught:
        await reopen(path)
    assert caught.value.problem == (
        f"{path} is in use by another dubsim process; SQLite allows one server process per "
        "file (use REDIS_URL to run several)"
    )
    await first.close()


async def test_a_statement_failing_mid_batch_rolls_it_all_back_and_the_store_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from service.store import StoreUnavailable
    from service.store import sqlite as sqlite_module

    path = str(tmp_path / "s.db")
    store, _ = await reopen(path)
    await store.commit(create("a"))
    monkeypatch.setattr(sqlite_module, "_INSERT_EVENTS", ("INSERT INTO nowhere VALUES {}", 7))
    with pytest.raises(StoreUnavailable):  # the job row was written, then the events failed
        await store.commit(create("b"))
    monkeypatch.undo()
    async with asyncio.timeout(10):
        assert await store.commit(create("c")) == 2  # seq 2 was never handed out
    await store.close()
    again, loaded = await reopen(path)
    await again.close()
    assert [s.job.id for s in loaded.jobs] == ["a", "c"]  # type: ignore[attr-defined]


async def test_a_deleted_job_can_not_be_moved_on_its_old_version_either(tmp_path: Path) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    await store.commit(create("a"))
    await store.commit(Change(job("a"), EventType.DELETED, "t", 1))
    with pytest.raises(VersionConflict):
        await store.commit(move("a", Status.PROCESSING, expect=1))
    await store.close()


async def test_a_keyed_job_born_and_deleted_in_one_batch(tmp_path: Path) -> None:
    store, _ = await reopen(str(tmp_path / "s.db"))
    results = await asyncio.gather(
        store.commit(create("a", key="k")),
        store.commit(Change(job("a"), EventType.DELETED, "t", 1)),
    )
    assert results == [1, 2]
    assert await store.commit(create("b", key="k")) == 3  # the key is free
    await store.close()
