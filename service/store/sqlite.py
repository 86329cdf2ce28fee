"""SQLite (WAL) store: the embedded default.

One writer task owns the connection, which lives on one dedicated thread. Everything handed
over while a transaction is being written joins the next one, so under load many inserts and
state changes share a commit (group commit) while a lone insert still commits at once.
`synchronous=NORMAL` in WAL mode survives a killed process (not a power cut), which is the
durability this simulator promises.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import msgspec

from ..models import Job
from .base import Loaded, StoredJob

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    ordinal INTEGER PRIMARY KEY,  -- the rowid: inserts append, updates find their row at once
    id TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rate_hits (user_id TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rate_hits_at ON rate_hits (at);
"""
RATE_WINDOW_S = 3600.0
SCHEMA_VERSION = 1
# version 0 keyed jobs by their random id (a random insert into a growing B-tree per job)
_MIGRATE_FROM_0 = """
ALTER TABLE jobs RENAME TO jobs_v0;
CREATE TABLE jobs (
    ordinal INTEGER PRIMARY KEY, id TEXT NOT NULL, idempotency_key TEXT, request_hash TEXT,
    data BLOB NOT NULL
);
INSERT INTO jobs (ordinal, id, idempotency_key, request_hash, data)
    SELECT ordinal, id, idempotency_key, request_hash, data FROM jobs_v0;
DROP TABLE jobs_v0;
"""


class _Batch:
    __slots__ = ("deletes", "hits", "inserts", "saves", "seq_floor", "waiters")

    def __init__(self) -> None:
        self.inserts: list[tuple[int, str, str | None, str | None, bytes]] = []
        self.saves: dict[int, bytes] = {}
        self.deletes: list[int] = []
        self.hits: list[tuple[str, float]] = []
        self.seq_floor: int | None = None
        self.waiters: list[asyncio.Future[None]] = []

    def __bool__(self) -> bool:
        return bool(self.inserts or self.saves or self.deletes or self.hits or self.waiters) or (
            self.seq_floor is not None
        )


class SQLiteStore:
    """Store backed by one SQLite file (or `:memory:`)."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._encoder = msgspec.json.Encoder()

    async def open(self) -> Loaded:
        loop = asyncio.get_running_loop()
        loaded = await loop.run_in_executor(self._executor, self._open_sync)
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")
        return loaded

    async def insert(self, job: StoredJob) -> None:
        data = self._encoder.encode(job.job)
        self._batch.inserts.append(
            (job.ordinal, job.job.id, job.idempotency_key, job.request_hash, data)
        )
        await self.flush()

    def save(self, ordinal: int, data: bytes) -> None:
        self._batch.saves[ordinal] = data
        self._wake.set()

    def delete(self, ordinals: list[int]) -> None:
        for ordinal in ordinals:
            self._batch.saves.pop(ordinal, None)
        self._batch.deletes.extend(ordinals)
        self._wake.set()

    def record_hit(self, user_id: str, at: float) -> None:
        self._batch.hits.append((user_id, at))
        self._wake.set()

    def reserve_seq(self, floor: int) -> None:
        self._batch.seq_floor = floor
        self._wake.set()

    async def flush(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._batch.waiters.append(waiter)
        self._wake.set()
        await waiter

    async def close(self) -> None:
        if self._writer is not None:
            await self.flush()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)

    # ---- the writer task -------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._batch = self._batch, _Batch()
            if not batch:
                continue
            try:
                await asyncio.shield(loop.run_in_executor(self._executor, self._write_sync, batch))
            except Exception as exc:  # a failed commit must reach whoever waits on it
                log.exception("sqlite write failed")
                for waiter in batch.waiters:
                    if not waiter.done():
                        waiter.set_exception(exc)
                continue
            for waiter in batch.waiters:
                if not waiter.done():
                    waiter.set_result(None)

    # ---- on the store's thread -------------------------------------------------

    def _open_sync(self) -> Loaded:
        conn = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        has_jobs = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
        if has_jobs and version == 0:
            conn.executescript(f"BEGIN; {_MIGRATE_FROM_0} COMMIT;")
        elif has_jobs and version > SCHEMA_VERSION:
            raise RuntimeError(f"{self._path} was written by a newer dubsim (schema {version})")
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        self._conn = conn
        decoder = msgspec.json.Decoder(Job)
        rows = conn.execute(
            "SELECT ordinal, idempotency_key, request_hash, data FROM jobs ORDER BY ordinal"
        ).fetchall()
        jobs = [
            StoredJob(job=decoder.decode(data), ordinal=o, idempotency_key=k, request_hash=h)
            for o, k, h, data in rows
        ]
        row = conn.execute("SELECT value FROM meta WHERE key = 'seq_floor'").fetchone()
        cutoff = time.time() - RATE_WINDOW_S
        conn.execute("DELETE FROM rate_hits WHERE at <= ?", (cutoff,))
        hits = conn.execute("SELECT user_id, at FROM rate_hits ORDER BY at").fetchall()
        return Loaded(jobs=jobs, seq_floor=row[0] if row else 0, rate_hits=hits)

    def _write_sync(self, batch: _Batch) -> None:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store is not open")
        conn.execute("BEGIN")
        try:
            if batch.inserts:
                conn.executemany(
                    "INSERT INTO jobs (ordinal, id, idempotency_key, request_hash, data)"
                    " VALUES (?, ?, ?, ?, ?)",
                    batch.inserts,
                )
            if batch.saves:
                conn.executemany(
                    "UPDATE jobs SET data = ? WHERE ordinal = ?",
                    [(data, ordinal) for ordinal, data in batch.saves.items()],
                )
            if batch.hits:
                conn.executemany("INSERT INTO rate_hits (user_id, at) VALUES (?, ?)", batch.hits)
                conn.execute("DELETE FROM rate_hits WHERE at <= ?", (time.time() - RATE_WINDOW_S,))
            if batch.deletes:
                conn.executemany(
                    "DELETE FROM jobs WHERE ordinal = ?", [(o,) for o in batch.deletes]
                )
            if batch.seq_floor is not None:
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('seq_floor', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (batch.seq_floor,),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
