"""SQLite (WAL) store: the embedded default, one process per database file.

One writer task owns the connection, which lives on one dedicated thread. Every change handed
over while a transaction is being written joins the next one (group commit): under load many
changes share a commit, while a lone change still commits at once. A change is checked against
the job's committed version inside the transaction (compare-and-set), gets the next seq, and is
written together with its event; only after COMMIT returns are the events handed to
`on_commit` (the read model and the fan-out) and the callers answered. A failed COMMIT rolls
the whole batch back and fails its callers with StoreUnavailable: nothing of it is applied or
published anywhere, and `health()` names the cause until a later write succeeds (a probe retries
every second).

`synchronous=NORMAL` in WAL mode survives a killed process (kill -9) but not a power cut: the
last transactions before a power loss may be lost (`synchronous=FULL` would keep them, at the
cost of an fsync per commit). An exclusive flock on the database file itself keeps a second
process off it, whatever path names the file: two writers would hand out the same seqs and
ordinals.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import msgspec

from ..errors import StartupError
from ..models import EventType, Job
from ..ratelimit import Decision, MovingWindow
from ..settings import Config
from .base import (
    Change,
    Committed,
    Doc,
    DuplicateSubmission,
    Loaded,
    OnCommit,
    OnConfig,
    OnResync,
    StoredJob,
    StoreUnavailable,
    VersionConflict,
)

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    ordinal INTEGER PRIMARY KEY,  -- the rowid: inserts append, updates find their row at once
    id TEXT NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    data BLOB NOT NULL,
    version INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY,
    type TEXT NOT NULL,
    at TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    idempotency_key TEXT,
    request_hash TEXT,
    data BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS rate_hits (user_id TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rate_hits_at ON rate_hits (at);
CREATE TABLE IF NOT EXISTS docs (
    kind TEXT NOT NULL, id TEXT NOT NULL, version INTEGER NOT NULL, body BLOB NOT NULL,
    PRIMARY KEY (kind, id)
);
"""
RATE_WINDOW_S = 3600.0
SCHEMA_VERSION = 2
BUSY_TIMEOUT_S = 2.0  # a database locked longer than this fails the commit (503), loudly
PROBE_INTERVAL_S = 1.0  # while commits fail, try a small write this often to notice recovery
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
# version 1 had no per-job version and no event log; a version is never 0 (0 means "create")
_MIGRATE_FROM_1 = """
ALTER TABLE jobs ADD COLUMN version INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET version = max(1, coalesce((SELECT value FROM meta WHERE key = 'seq_floor'), 0));
"""


_DocWrite = tuple[str, str, bytes | None, int | None]  # kind, id, body (None: delete), expect
_Outcome = tuple[list[Committed | Exception], list[int | Exception]]  # per change, per doc


class _Batch:
    __slots__ = ("changes", "config", "docs", "hits", "probe", "waiters")

    def __init__(self) -> None:
        self.changes: list[tuple[Change, asyncio.Future[int]]] = []
        self.docs: list[tuple[_DocWrite, asyncio.Future[int]]] = []
        self.hits: list[tuple[str, float]] = []
        self.config: bytes | None = None
        self.waiters: list[asyncio.Future[None]] = []  # config saves and flushes
        self.probe = False

    def __bool__(self) -> bool:
        return bool(self.changes or self.docs or self.hits or self.waiters or self.probe) or (
            self.config is not None
        )


class _Job(msgspec.Struct, gc=False):
    """What the writer thread knows of a committed job: enough to check and place a change.
    Untracked by the cyclic collector (numbers and strings): one per job, for the process's life."""

    ordinal: int
    version: int
    user_id: str
    idempotency_key: str | None


class SQLiteStore:
    """Store backed by one SQLite file (or `:memory:`)."""

    shared = False

    def __init__(
        self, path: str, *, event_buffer: int = 10_000, now: Callable[[], float] = time.time
    ) -> None:
        self._path = path
        self._now = now  # the service's clock: rate windows are in its time
        self._event_buffer = event_buffer
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="sqlite")
        self._conn: sqlite3.Connection | None = None
        self._lock_file: IO[bytes] | None = None
        self._batch = _Batch()
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._closing = False
        self._encoder = msgspec.json.Encoder()
        self._on_commit: OnCommit = lambda events: None
        self._failure: str | None = None
        self._window = MovingWindow(RATE_WINDOW_S, now)
        # owned by the writer thread once open: the committed truth the CAS checks against
        self._jobs: dict[str, _Job] = {}
        self._keys: dict[tuple[str, str], str] = {}  # (user, idempotency key) -> job id
        self._seq = 0
        self._next_ordinal = 1
        self._doc_versions: dict[tuple[str, str], int] = {}  # writer thread's, like _jobs
        self._docs: dict[str, dict[str, Doc]] = {}  # the event loop's copy, for reads

    # ---- the Store protocol ----------------------------------------------------

    async def open(
        self, on_commit: OnCommit, on_config: OnConfig, on_resync: OnResync | None = None
    ) -> Loaded:  # one process: every event it commits it applies, nothing to resync
        self._on_commit = on_commit  # on_config: never called, one process makes every change
        self._take_lock()
        loop = asyncio.get_running_loop()
        try:
            loaded = await loop.run_in_executor(self._executor, self._open_sync)
        except (sqlite3.Error, OSError) as exc:
            self._release_lock()
            raise StartupError("DB", f"cannot open {self._path}: {exc}") from exc
        self._closing = False
        self._writer = asyncio.create_task(self._write_loop(), name="sqlite-writer")
        return loaded

    async def commit(self, change: Change) -> int:
        self._check_writable()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._batch.changes.append((change, future))
        self._wake.set()
        return await future

    async def commit_all(self, changes: list[Change]) -> list[int]:
        """Handed over together, so one transaction writes them all. A create's `cap` is not
        checked here: one process owns the file, and JobService's own count (its read model
        plus the submissions it is making) is exact and already checked. Each change is still
        checked on its own: a duplicate Idempotency-Key refuses that one only (the facade's
        keys are unique per request, so on one process that is a bug, not a race)."""
        self._check_writable()
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[int]] = [loop.create_future() for _ in changes]
        self._batch.changes.extend(zip(changes, futures, strict=True))
        self._wake.set()
        results = await asyncio.gather(*futures, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return [r for r in results if isinstance(r, int)]

    async def rate_hit(self, user_id: str, limit: int, now: float, count: int = 1) -> Decision:
        decision = self._window.hit(user_id, limit, now, count)
        if decision.allowed:  # durable with the submissions that follow
            self._batch.hits.extend([(user_id, now)] * count)
        return decision

    async def save_config(self, config: Config) -> None:
        self._batch.config = self._encoder.encode(config)
        await self._flush()

    async def put_doc(
        self, kind: str, doc_id: str, body: bytes | None, expect: int | None = None
    ) -> int:
        self._check_writable()
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._batch.docs.append(((kind, doc_id, body, expect), future))
        self._wake.set()
        return await future

    async def get_doc(self, kind: str, doc_id: str) -> Doc | None:
        return self._docs.get(kind, {}).get(doc_id)

    async def docs(self, kind: str) -> list[Doc]:
        return [doc for _, doc in sorted(self._docs.get(kind, {}).items())]

    async def sync(self) -> None:
        return None  # one process: everything committed is applied before commit() returns

    def wall(self) -> float:
        return time.time()  # one process: its own clock is the only one

    async def renew_leases(self, job_ids: list[str], lease_s: float, now: float) -> None:
        return None  # one process: a restart requeues what it was running

    async def expired_leases(self, now: float) -> list[str]:
        return []

    async def claim_key(self, user_id: str, key: str, ttl_s: float) -> bool:
        return True  # one process: JobService holds a key against its own other requests

    async def release_key(self, user_id: str, key: str) -> None:
        return None

    def health(self) -> str | None:
        return self._failure

    def _check_writable(self) -> None:
        """A write with no writer to take it (before open, while or after closing) would wait
        forever: it is refused instead."""
        if self._writer is None or self._closing:
            raise StoreUnavailable(
                "the store is not open" if self._writer is None else "the store is closing"
            )

    async def close(self) -> None:
        if self._writer is not None:
            self._closing = True  # what the flush below writes is all that is written
            with contextlib.suppress(StoreUnavailable):
                await self._flush()
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close_sync)
        self._executor.shutdown(wait=True)
        self._release_lock()

    async def _flush(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._batch.waiters.append(waiter)
        self._wake.set()
        await waiter

    # ---- one writer per file ---------------------------------------------------

    def _take_lock(self) -> None:
        """An exclusive flock on the database file itself, so a second process is refused
        whatever path (a symlink, a hard link) it names the file by. flock and SQLite's own
        POSIX locks don't interact on Linux; the descriptor stays open until close()."""
        if self._path == ":memory:" or self._path.startswith("file:"):
            return
        try:
            handle = open(self._path, "ab")  # noqa: SIM115 - held open for the process's life
        except OSError as exc:
            raise StartupError("DB", f"cannot open {self._path}: {exc.strerror}") from exc
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise StartupError(
                "DB",
                f"{self._path} is in use by another dubsim process; SQLite allows one server "
                "process per file (use REDIS_URL to run several)",
            ) from None
        self._lock_file = handle

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # closing drops the flock
            self._lock_file = None

    # ---- the writer task -------------------------------------------------------

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if self._failure is None:
                await self._wake.wait()
            else:  # probe until the database takes writes again
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), PROBE_INTERVAL_S)
                self._batch.probe = True
            self._wake.clear()
            batch, self._batch = self._batch, _Batch()
            if not batch:
                continue
            try:
                results = await asyncio.shield(
                    loop.run_in_executor(self._executor, self._write_sync, batch)
                )
            except Exception as exc:  # the whole batch is rolled back: fail it loudly
                self._fail(batch, exc)
                continue
            if self._failure is not None:
                log.warning("sqlite writes succeed again")
                self._failure = None
            self._deliver(batch, results)

    def _fail(self, batch: _Batch, exc: Exception) -> None:
        reason = f"database write failed: {exc}"
        if self._failure is None:
            log.error("sqlite %s", reason)
        self._failure = reason
        self._window.forget(batch.hits)
        error = StoreUnavailable(reason)
        for _, future in batch.changes:
            if not future.done():
                future.set_exception(error)
        for _, written in batch.docs:
            if not written.done():
                written.set_exception(error)
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_exception(error)

    def _deliver(self, batch: _Batch, outcome: _Outcome) -> None:
        results, doc_results = outcome
        for ((kind, doc_id, body, _), future), done in zip(batch.docs, doc_results, strict=True):
            if isinstance(done, int):
                of_kind = self._docs.setdefault(kind, {})
                if body is None:
                    of_kind.pop(doc_id, None)
                else:
                    of_kind[doc_id] = Doc(doc_id, body, done)
            if future.done():
                continue
            if isinstance(done, int):
                future.set_result(done)
            else:
                future.set_exception(done)
        committed = [r for r in results if isinstance(r, Committed)]
        if committed:
            try:
                self._on_commit(committed)
            except Exception:  # a bug downstream: the batch is durable, its callers are told
                log.exception("applying committed changes failed")
        for (_, future), result in zip(batch.changes, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Committed):
                future.set_result(result.seq)
            else:
                future.set_exception(result)
        for waiter in batch.waiters:
            if not waiter.done():
                waiter.set_result(None)

    # ---- on the store's thread -------------------------------------------------

    def _open_sync(self) -> Loaded:
        if self._path != ":memory:":
            directory = os.path.dirname(os.path.abspath(self._path))
            if not os.path.isdir(directory):
                raise OSError(f"no directory {directory}")
        conn = sqlite3.connect(
            self._path, check_same_thread=False, isolation_level=None, timeout=BUSY_TIMEOUT_S
        )
        try:
            return self._load(conn)
        except BaseException:
            conn.close()
            raise

    def _load(self, conn: sqlite3.Connection) -> Loaded:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        has_jobs = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'jobs'").fetchone()
        if has_jobs and version > SCHEMA_VERSION:
            raise sqlite3.DatabaseError(f"written by a newer dubsim (schema {version})")
        conn.execute("BEGIN IMMEDIATE")  # also proves the file is writable, before we serve
        if has_jobs and version == 0:
            _script(conn, _MIGRATE_FROM_0)
        _script(conn, _SCHEMA)
        if has_jobs and version <= 1:
            _script(conn, _MIGRATE_FROM_1)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("DELETE FROM rate_hits WHERE at <= ?", (self._now() - RATE_WINDOW_S,))
        conn.execute("COMMIT")
        self._conn = conn
        decoder = msgspec.json.Decoder(Job)
        jobs: list[StoredJob] = []
        for ordinal, key, digest, data, ver in conn.execute(
            "SELECT ordinal, idempotency_key, request_hash, data, version FROM jobs"
            " ORDER BY ordinal"
        ):
            job = decoder.decode(data)
            jobs.append(StoredJob(job, ordinal, ver, key, digest))
            self._jobs[job.id] = _Job(ordinal, ver, job.user_id, key)
            if key is not None:
                self._keys[(job.user_id, key)] = job.id
            self._next_ordinal = ordinal + 1
        events = [
            Committed(seq, EventType(kind), at, decoder.decode(data), data, ordinal, key, digest)
            for seq, kind, at, ordinal, key, digest, data in reversed(
                conn.execute(
                    "SELECT seq, type, at, ordinal, idempotency_key, request_hash, data"
                    " FROM events ORDER BY seq DESC LIMIT ?",
                    (self._event_buffer,),
                ).fetchall()
            )
        ]
        row = conn.execute("SELECT value FROM meta WHERE key = 'seq_floor'").fetchone()
        self._seq = max(
            row[0] if row else 0,  # seqs handed out before the event log existed
            events[-1].seq if events else 0,
            max((j.version for j in jobs), default=0),
        )
        row = conn.execute("SELECT value FROM meta WHERE key = 'next_ordinal'").fetchone()
        self._next_ordinal = max(self._next_ordinal, row[0] if row else 1)
        for user, at in conn.execute("SELECT user_id, at FROM rate_hits ORDER BY at"):
            self._window.record(user, at)
        row = conn.execute("SELECT value FROM settings WHERE key = 'config'").fetchone()
        config = msgspec.json.decode(row[0], type=Config) if row else None
        for kind, doc_id, ver, body in conn.execute("SELECT kind, id, version, body FROM docs"):
            self._doc_versions[(kind, doc_id)] = ver
            self._docs.setdefault(kind, {})[doc_id] = Doc(doc_id, bytes(body), ver)
        return Loaded(jobs=jobs, seq=self._seq, events=events, config=config)

    def _write_sync(self, batch: _Batch) -> _Outcome:
        conn = self._conn
        if conn is None:
            raise RuntimeError("store is not open")
        # decide every change against the committed truth, as it will be after this batch
        jobs: dict[str, _Job | None] = {}
        keys: dict[tuple[str, str], str | None] = {}
        seq, ordinal = self._seq, self._next_ordinal
        results: list[Committed | Exception] = []
        inserts: list[tuple[int, str, str | None, str | None, bytes, int]] = []
        updates: list[tuple[bytes, int, int, str]] = []
        deletes: list[int] = []
        events: list[tuple[object, ...]] = []
        for change, _ in batch.changes:
            job_id = change.job.id
            current = jobs[job_id] if job_id in jobs else self._jobs.get(job_id)
            if change.expect == 0:
                key = change.idempotency_key
                user = change.job.user_id
                if key is not None:
                    existing = (
                        keys[(user, key)] if (user, key) in keys else self._keys.get((user, key))
                    )
                    if existing is not None:
                        results.append(DuplicateSubmission(existing))
                        continue
                if current is not None:
                    results.append(VersionConflict(job_id))
                    continue
                seq += 1
                entry = _Job(ordinal, seq, user, key)
                ordinal += 1
                if key is not None:
                    keys[(user, key)] = job_id
            else:
                if current is None or current.version != change.expect:
                    results.append(VersionConflict(job_id))
                    continue
                seq += 1
                entry = _Job(current.ordinal, seq, current.user_id, current.idempotency_key)
            data = self._encoder.encode(change.job)
            jobs[job_id] = None if change.event is EventType.DELETED else entry
            if change.expect == 0:
                inserts.append(
                    (entry.ordinal, job_id, change.idempotency_key, change.request_hash, data, seq)
                )
            elif change.event is EventType.DELETED:
                deletes.append(entry.ordinal)
                if entry.idempotency_key is not None:
                    keys[(entry.user_id, entry.idempotency_key)] = None
            else:
                updates.append((data, seq, entry.ordinal, job_id))
            created = change.expect == 0
            key = change.idempotency_key if created else None
            digest = change.request_hash if created else None
            events.append((seq, change.event.value, change.at, entry.ordinal, key, digest, data))
            results.append(
                Committed(
                    seq, change.event, change.at, change.job, data, entry.ordinal, key, digest
                )
            )
        doc_versions: dict[tuple[str, str], int] = {}
        doc_results: list[int | Exception] = []
        for (kind, doc_id, body, expect), _ in batch.docs:
            pair = (kind, doc_id)
            now_at = doc_versions.get(pair, self._doc_versions.get(pair, 0))
            if expect is not None and expect != now_at:
                doc_results.append(VersionConflict(f"{kind}/{doc_id}"))
                continue
            doc_versions[pair] = 0 if body is None else now_at + 1
            doc_results.append(doc_versions[pair])
        # a job changed twice in one batch is written once, in its last state
        rows: dict[int, tuple[object, ...]] = {row[0]: row for row in inserts}
        for data, version, at_ordinal, job_id in updates:
            first = rows.get(at_ordinal)
            if first is None:
                rows[at_ordinal] = (at_ordinal, job_id, None, None, data, version)
            else:
                rows[at_ordinal] = (*first[:4], data, version)
        inserted = {row[0] for row in inserts}
        gone = []  # deleted rows that exist on disk (not those born in this very batch)
        for at_ordinal in deletes:
            rows.pop(at_ordinal, None)
            if at_ordinal not in inserted:
                gone.append(at_ordinal)
        conn.execute("BEGIN IMMEDIATE")
        try:
            # multi-row statements: one call into SQLite (and one GIL hand-off) per chunk, not
            # per row; per-row executemany let the event loop's thread starve this one
            _many(conn, _UPSERT_JOBS, list(rows.values()))
            _many(conn, _INSERT_EVENTS, events)
            for start in range(0, len(gone), _CHUNK):
                chunk = gone[start : start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                conn.execute(f"DELETE FROM jobs WHERE ordinal IN ({marks})", chunk)
            if events:
                conn.execute("DELETE FROM events WHERE seq <= ?", (seq - self._event_buffer,))
            if batch.hits:
                conn.executemany("INSERT INTO rate_hits (user_id, at) VALUES (?, ?)", batch.hits)
                conn.execute("DELETE FROM rate_hits WHERE at <= ?", (self._now() - RATE_WINDOW_S,))
            for ((kind, doc_id, body, _), _), written in zip(batch.docs, doc_results, strict=True):
                if not isinstance(written, int):
                    continue
                if body is None:
                    conn.execute("DELETE FROM docs WHERE kind = ? AND id = ?", (kind, doc_id))
                else:
                    conn.execute(
                        "INSERT INTO docs (kind, id, version, body) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT(kind, id) DO UPDATE SET version = excluded.version,"
                        " body = excluded.body",
                        (kind, doc_id, written, body),
                    )
            if batch.config is not None:
                conn.execute(
                    "INSERT INTO settings (key, value) VALUES ('config', ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (batch.config,),
                )
            if events or batch.probe:
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)"
                    " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    [("seq_floor", seq), ("next_ordinal", ordinal)],
                )
            conn.execute("COMMIT")
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
        # durable: now the batch's outcome becomes the truth the next batch is checked against
        for job_id, known in jobs.items():
            if known is None:
                self._jobs.pop(job_id, None)
            else:
                self._jobs[job_id] = known
        for pair, owner in keys.items():
            if owner is None:
                self._keys.pop(pair, None)
            else:
                self._keys[pair] = owner
        for pair, version in doc_versions.items():
            if version == 0:
                self._doc_versions.pop(pair, None)
            else:
                self._doc_versions[pair] = version
        self._seq, self._next_ordinal = seq, ordinal
        return results, doc_results

    def _close_sync(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


_CHUNK = 400  # rows per statement: 7 columns x 400 stays far below SQLite's 32,766 variables
_UPSERT_JOBS = (
    "INSERT INTO jobs (ordinal, id, idempotency_key, request_hash, data, version) VALUES {}"
    " ON CONFLICT(ordinal) DO UPDATE SET data = excluded.data, version = excluded.version",
    6,
)
_INSERT_EVENTS = ("INSERT INTO events VALUES {}", 7)


def _many(
    conn: sqlite3.Connection, statement: tuple[str, int], rows: list[tuple[object, ...]]
) -> None:
    """Run a multi-row VALUES statement over `rows`, in chunks."""
    template, width = statement
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        conn.execute(template.format(_values(width, len(chunk))), [v for row in chunk for v in row])


@functools.cache
def _values(width: int, count: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return ",".join([one] * count)


def _script(conn: sqlite3.Connection, script: str) -> None:
    """Run `;`-separated statements inside the caller's transaction (executescript commits)."""
    for statement in script.split(";"):
        if statement.strip():
            conn.execute(statement)
