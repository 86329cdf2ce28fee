"""SQLiteStore on a real file: what is handed over survives a reopen; old files migrate."""

import sqlite3
from pathlib import Path

import msgspec

from service.models import Job, Role, Status
from service.store import SQLiteStore, StoredJob


def job(job_id: str, status: Status = Status.PENDING) -> Job:
    return Job(
        id=job_id, user_id="u", role=Role.FREE, status=status, progress=0, attempt=0,
        max_attempts=3, priority=0, target_language="es", created_at="2026-11-26T06:00:00.000Z",
    )  # fmt: skip


async def test_insert_save_delete_and_seq_floor_survive_a_reopen(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    store = SQLiteStore(path)
    assert (await store.open()).jobs == []
    await store.insert(StoredJob(job("a"), 1, "key-1", "hash"))
    await store.insert(StoredJob(job("b"), 2))
    await store.insert(StoredJob(job("c"), 3))
    store.save(2, msgspec.json.encode(job("b", Status.COMPLETED)))
    store.delete([3])
    store.reserve_seq(500)
    store.record_hit("u", 1e12)  # in the future: still inside the window at reopen
    await store.flush()
    await store.close()

    again = SQLiteStore(path)
    loaded = await again.open()
    await again.close()
    assert [(s.job.id, s.ordinal, s.job.status) for s in loaded.jobs] == [
        ("a", 1, Status.PENDING),
        ("b", 2, Status.COMPLETED),
    ]
    assert loaded.jobs[0].idempotency_key == "key-1"
    assert loaded.seq_floor == 500
    assert loaded.rate_hits == [("u", 1e12)]


async def test_a_file_from_schema_0_is_migrated(tmp_path: Path) -> None:
    path = str(tmp_path / "old.db")
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE jobs (id TEXT PRIMARY KEY, ordinal INTEGER NOT NULL,
                           idempotency_key TEXT, request_hash TEXT, data BLOB NOT NULL);
        CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
        INSERT INTO meta VALUES ('seq_floor', 42);
        """
    )
    conn.execute(
        "INSERT INTO jobs VALUES (?, ?, NULL, NULL, ?)", ("old", 7, msgspec.json.encode(job("old")))
    )
    conn.commit()
    conn.close()
    store = SQLiteStore(path)
    loaded = await store.open()
    store.save(7, msgspec.json.encode(job("old", Status.CANCELLED)))
    await store.flush()
    await store.close()
    assert [(s.job.id, s.ordinal) for s in loaded.jobs] == [("old", 7)]
    assert loaded.seq_floor == 42
    store = SQLiteStore(path)
    assert (await store.open()).jobs[0].job.status is Status.CANCELLED
    await store.close()
