"""Redis store: several server processes, one service.

Layout (all keys under `dubsim:`):

    seq, ordinal      counters (INCR)
    job:<id>          hash: data (the job's JSON), v (version = seq of its last event), ord,
                      ik / rh (Idempotency-Key and request hash, if any), f ('1' while the
                      job is unfinished and counted in `inflight`, else '0'), r ('1' while
                      a plan-limited job is processing and counted in `running`)
    inflight          hash: user id -> that user's unfinished jobs (what MAX_IN_FLIGHT and the
                      HeyGen queue bound count), moved by the commit script itself
    running           hash: user id -> that user's plan-limited jobs processing (what a plan's
                      concurrency bounds: a start over it is refused), moved likewise
    counted           set once `inflight` has been built from the jobs already there
    jobs              sorted set: ordinal -> job id (loading in submission order)
    keys              hash: "<user>\\n<Idempotency-Key>" -> job id
    log               stream: the ordered event log; entry id "<seq>-0"
    leases            sorted set: job id -> when its processing lease runs out
    config            the runtime config (JSON)
    hits:<user>       sorted set: the user's free-plan submissions in the last hour
    doc:<kind>        hash: document id -> body; docv:<kind> hash: id -> version

A change is one Lua script: check the job's version, take the next seq, write the job and
append its event to the stream, atomically, so two processes can never both move a job. The
same script keeps each user's count of unfinished jobs and refuses a create past the cap it
carries, so a cap holds across every process; the creates of one multi-job request are one
script, all or nothing.
Scripts are sent in pipelined batches (group commit), the way SQLite batches transactions.
Every process tails the stream (XREAD BLOCK): it is the replication log that keeps each
process's read model current, the replay buffer for resume, and the only way events reach
the fan-out, so a commit returns only once this process has applied it (read-your-writes),
and everything published anywhere is already in Redis.

Durability is Redis's: with `appendonly yes` and `appendfsync everysec` (what `make cluster`
ships) an acknowledged change survives a Redis restart or a killed Redis process, and up to a
second of changes can be lost on a power cut; `appendfsync always` closes that at the cost of
an fsync per write; without AOF (or with RDB only) a Redis restart loses recent changes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any, Final

import msgspec
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import NoScriptError, RedisError

from ..errors import StartupError
from ..models import TERMINAL, EventType, Job
from ..ratelimit import Decision
from ..settings import Config
from .base import (
    CapReached,
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

P: Final = "dubsim:"
# an Idempotency-Key held while one process submits with it (JobService.submit_all)
_RELEASE_CLAIM: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"
)


def _claim_name(user_id: str, key: str) -> str:
    return P + "claim:" + hashlib.sha256(f"{user_id}\n{key}".encode()).hexdigest()


SEQ, ORDINAL, JOBS, KEYS, LOG, LEASES, CONFIG = (
    f"{P}{name}" for name in ("seq", "ordinal", "jobs", "keys", "log", "leases", "config")
)
INFLIGHT, COUNTED, RUNNING = f"{P}inflight", f"{P}counted", f"{P}running"
RATE_WINDOW_S: Final = 3600.0
TAIL_BLOCK_MS: Final = 500  # also how long closing waits for the tail to notice
RETRY_AFTER_S: Final = 1.0
BATCH: Final = 256  # changes per pipeline
SOCKET_TIMEOUT_S: Final = 5.0
POOL_SIZE: Final = 128  # connections to Redis per process; more commands at once wait for one
DEADLINE_S: Final = 3.0  # a command not run by then (Redis's clock) is refused: see _EXPIRED
APPLY_TIMEOUT_S: Final = 10.0  # a committed change not seen on the stream by then: 503
PROBE_INTERVAL_S: Final = 1.0
Entries = list[tuple[bytes, dict[bytes, bytes]]]  # entries of the log, as one XREAD gives them
CLOCK_SYNC_S: Final = 30.0  # how often Redis's clock is measured against ours
CLOCK_RTT_S: Final = 0.25  # a TIME answer slower than this is not used to measure it
CLOCK_WARN_S: Final = 1.0  # a skew worth a line in the log
DISCONNECT_S: Final = 2.0  # closing never waits on a connection longer than this
CONFIG_EVENT: Final = "config"

# Every script first checks its deadline against Redis's own clock: a command that reaches Redis
# after its sender gave up (and answered 503) must change nothing, or a retried 503 would act twice.
_EXPIRED = """
local now = redis.call('TIME')
if tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000) > tonumber(ARGV[#ARGV]) then
  return 'expired'
end
"""

# One script commits a group of changes (one, or the creates of one multi-job request) all or
# nothing: every change is checked first (version, Idempotency-Key, the user's cap on unfinished
# jobs, a start's plan slots), then all are written. KEYS: 1 seq, 2 jobs, 3 keys, 4 log, 5 leases,
# 6 ordinal, 7 inflight, 8 running, 8+i the i-th job's hash. ARGV: 1 n, 2 the stream's length,
# 13 per change (`_args`), the deadline. A job's hash keeps `f` ('1': counted in inflight, i.e.
# not terminal) and `r` ('1': holds one of its user's plan slots in running, i.e. a plan-limited
# job processing), so the counts move in the same script as the job and can't drift from it.
_COMMIT = (
    _EXPIRED
    + """
local n, buffer, width = tonumber(ARGV[1]), ARGV[2], 13
local counts, seen = {}, {}
for i = 1, n do
  local a = 2 + (i - 1) * width
  local id, expect, _, _, _, ik, _, user, _, _, live, cap, slots = unpack(ARGV, a + 1, a + width)
  expect = tonumber(expect)
  local current = redis.call('HGET', KEYS[8 + i], 'v')
  if seen[id] then return {'conflict'} end
  seen[id] = true
  if expect == 0 then
    if ik ~= '' then
      local named = user .. '\\n' .. ik
      local owner = redis.call('HGET', KEYS[3], named) or seen[named]
      if owner then return {'dup', owner} end
      seen[named] = id
    end
    if current then return {'conflict'} end
    local count = counts[user] or tonumber(redis.call('HGET', KEYS[7], user) or '0')
    if cap ~= '' and count >= tonumber(cap) then return {'cap', cap, count} end
    if live == '1' then counts[user] = count + 1 end
  elseif (not current) or tonumber(current) ~= expect then
    return {'conflict'}
  elseif slots ~= '' and redis.call('HGET', KEYS[8 + i], 'r') ~= '1' then
    local running = tonumber(redis.call('HGET', KEYS[8], user) or '0')
    if running >= tonumber(slots) then return {'cap', slots, running} end
  end
end
local function uncount(hash, user)
  if redis.call('HINCRBY', hash, user, -1) <= 0 then redis.call('HDEL', hash, user) end
end
local out = {'ok'}
for i = 1, n do
  local a = 2 + (i - 1) * width
  local id, expect, data, kind, at, ik, rh, user, lease, status, live, _, slots =
    unpack(ARGV, a + 1, a + width)
  expect = tonumber(expect)
  local job = KEYS[8 + i]
  local seq = redis.call('INCR', KEYS[1])
  local ord
  if expect == 0 then
    ord = redis.call('INCR', KEYS[6])
    redis.call('HSET', job, 'data', data, 'v', seq, 'ord', ord, 'ik', ik, 'rh', rh, 'f', live)
    redis.call('ZADD', KEYS[2], ord, id)
    if ik ~= '' then redis.call('HSET', KEYS[3], user .. '\\n' .. ik, id) end
    if live == '1' then redis.call('HINCRBY', KEYS[7], user, 1) end
  else
    local was = redis.call('HMGET', job, 'ord', 'f', 'r')
    -- no `f`: a job written before the count existed and never counted (_COUNT_UNFINISHED
    -- marks every job it finds; this keeps a job some older process wrote since right too)
    local counted, slotted = was[2] == '1', was[3] == '1'
    ord = was[1]
    if slotted and (status ~= 'processing' or kind == 'job.deleted') then
      uncount(KEYS[8], user)
      redis.call('HSET', job, 'r', '0')
    elseif not slotted and status == 'processing' and slots ~= '' then
      redis.call('HINCRBY', KEYS[8], user, 1)
      redis.call('HSET', job, 'r', '1')
    end
    if kind == 'job.deleted' then
      local old = redis.call('HGET', job, 'ik')
      if old and old ~= '' then redis.call('HDEL', KEYS[3], user .. '\\n' .. old) end
      redis.call('DEL', job)
      redis.call('ZREM', KEYS[2], id)
      if counted then uncount(KEYS[7], user) end
    else
      redis.call('HSET', job, 'data', data, 'v', seq, 'f', live)
      if live == '1' and not counted then
        redis.call('HINCRBY', KEYS[7], user, 1)
      elseif live ~= '1' and counted then
        uncount(KEYS[7], user)
      end
    end
  end
  if status ~= 'processing' or kind == 'job.deleted' then
    redis.call('ZREM', KEYS[5], id)
  elseif lease ~= '' then
    redis.call('ZADD', KEYS[5], lease, id)
  end
  if expect ~= 0 then ik, rh = '', '' end
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', buffer, seq .. '-0',
    't', kind, 'at', at, 'j', data, 'o', ord, 'ik', ik, 'rh', rh)
  out[#out + 1] = seq
end
return out
"""
)

# The per-user count of unfinished jobs, built once from the jobs a Redis already holds (one
# written before the count existed): one script, so no commit can fall between the count and
# the jobs it counts, and a second process opening at the same moment finds it built.
# KEYS: 1 jobs, 2 inflight, 3 the marker; ARGV: 1 the job hash prefix, 2.. terminal statuses.
_COUNT_UNFINISHED = (
    _EXPIRED
    + """
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local terminal = {}
for i = 2, #ARGV - 1 do terminal[ARGV[i]] = true end
redis.call('DEL', KEYS[2])
local counted = 0
for _, id in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local key = ARGV[1] .. id
  local data = redis.call('HGET', key, 'data')
  if data then
    local job = cjson.decode(data)
    if terminal[job.status] then
      redis.call('HSET', key, 'f', '0')
    else
      redis.call('HSET', key, 'f', '1')
      redis.call('HINCRBY', KEYS[2], job.user_id, 1)
      counted = counted + 1
    end
  end
end
redis.call('SET', KEYS[3], '1')
return counted
"""
)

_SAVE_CONFIG = (
    _EXPIRED
    + """
local seq = redis.call('INCR', KEYS[1])
redis.call('SET', KEYS[2], ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[2], seq .. '-0', 't', 'config', 'c', ARGV[1])
return seq
"""
)

# a document write, compare-and-set on its version (ARGV[3]: '' unconditional; ARGV[2]: '' deletes)
_PUT_DOC = (
    _EXPIRED
    + """
local id, body, expect, delete = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local current = tonumber(redis.call('HGET', KEYS[2], id) or '0')
if expect ~= '' and tonumber(expect) ~= current then return -1 end
if delete == '1' then
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  return 0
end
redis.call('HSET', KEYS[1], id, body)
redis.call('HSET', KEYS[2], id, current + 1)
return current + 1
"""
)

# a moving window: at most ARGV[2] hits within ARGV[3] seconds before ARGV[1]
_RATE_HIT = (
    _EXPIRED
    + """
local now, limit, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n = tonumber(ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local count = redis.call('ZCARD', KEYS[1])
local allowed = 0
if count + n <= limit then  -- one request's submissions: all of them, or none
  for i = 1, n do redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. i) end
  count = count + n
  allowed = 1
end
if ARGV[5] == '1' then redis.call('EXPIRE', KEYS[1], math.ceil(window)) end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2] or ARGV[1]
return {allowed, count, tostring(oldest)}
"""
)


class RedisStore:
    """Store shared by every process with the same REDIS_URL."""

    shared = True

    def __init__(
        self,
        url: str,
        *,
        event_buffer: int = 10_000,
        expire_windows: bool = True,
        local_time: Callable[[], float] = time.time,
    ) -> None:
        self._url = url
        # this machine's clock, and how far Redis's is ahead of it: deadlines and leases are
        # in Redis's time, which every process reads alike whatever its own clock's skew
        self._local_time = local_time
        self._offset_s = 0.0
        # a rate window's key expires with it (in real time); under a virtual clock the window
        # is in virtual time, which no real expiry can follow: its old hits are trimmed instead
        self._expire_windows = expire_windows
        self._event_buffer = event_buffer
        self._redis: aioredis.Redis | None = None
        self._tail_conn: aioredis.Redis | None = None
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder(Job)
        self._on_commit: OnCommit = lambda events: None
        self._on_config: OnConfig = lambda config: None
        self._on_resync: OnResync | None = None
        self.resyncs = 0  # times this process fell behind the trimmed log and caught up
        self._pending: list[tuple[list[Change], asyncio.Future[list[int]]]] = []
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._applied = 0  # the last seq this process has applied from the stream
        self._last_id = "0-0"
        self._waiters: list[tuple[int, asyncio.Future[Any], object]] = []
        self._failure: str | None = None
        self._tail_failure: str | None = None
        self._failed = asyncio.Event()  # a failure was recorded: wakes the probe loop
        self._nonce = 0
        self._closing = False
        # this store's own mark in Redis: the tail connection's name (close() finds its
        # blocked read by it), the value of the Idempotency-Key holds it takes
        self._token = secrets.token_hex(8)
        self._tail_name = f"dubsim-tail-{self._token}"

    # ---- the Store protocol ----------------------------------------------------

    async def open(
        self, on_commit: OnCommit, on_config: OnConfig, on_resync: OnResync | None = None
    ) -> Loaded:
        self._on_commit, self._on_config = on_commit, on_config
        self._on_resync = on_resync
        try:
            # timeouts, so that a hung Redis fails requests (503) instead of hanging them
            # no client-side retries either: a failure is a 503 now, the caller retries
            options: dict[str, Any] = {
                "socket_timeout": SOCKET_TIMEOUT_S,
                "socket_connect_timeout": 2,
                "retry": Retry(NoBackoff(), 0),
            }
            # more commands at once than the pool holds wait for a connection (at most
            # SOCKET_TIMEOUT_S), instead of redis-py's default pool refusing them (a 503)
            pool = aioredis.BlockingConnectionPool.from_url(
                self._url, max_connections=POOL_SIZE, timeout=SOCKET_TIMEOUT_S, **options
            )
            self._redis = aioredis.Redis.from_pool(pool)
            # named, so that close() can find its blocked XREAD and end it (CLIENT UNBLOCK)
            self._tail_conn = aioredis.from_url(self._url, client_name=self._tail_name, **options)
            await self._redis.ping()
            await self._sync_clock()
            if abs(self._offset_s) > CLOCK_WARN_S:
                log.warning(
                    "this machine's clock is %+.1f s off redis's; deadlines and leases use redis's",
                    -self._offset_s,
                )
            for script in (_COMMIT, _SAVE_CONFIG, _RATE_HIT, _PUT_DOC):
                await self._redis.script_load(script)
            counted = await self._call(
                _COUNT_UNFINISHED,
                [JOBS, INFLIGHT, COUNTED],
                [f"{P}job:", *sorted(TERMINAL)],
            )
            if int(counted) >= 0:
                log.info("counted %d unfinished jobs already in redis", int(counted))
            loaded = await self._load()
        except (RedisError, OSError, ValueError) as exc:
            await self._disconnect()
            raise StartupError("REDIS_URL", f"cannot use {self._url}: {exc}") from exc
        self._tasks = [
            asyncio.create_task(self._write_loop(), name="redis-writer"),
            asyncio.create_task(self._tail_loop(), name="redis-tail"),
            asyncio.create_task(self._probe_loop(), name="redis-probe"),
            asyncio.create_task(self._clock_loop(), name="redis-clock"),
        ]
        return loaded

    async def commit(self, change: Change) -> int:
        return (await self.commit_all([change]))[-1]

    async def commit_all(self, changes: list[Change]) -> list[int]:
        if self._closing or not self._tasks:  # no writer to take it: it would wait forever
            raise StoreUnavailable(
                "the store is closing" if self._closing else "the store is not open"
            )
        future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
        self._pending.append((changes, future))
        self._wake.set()
        return await future

    async def rate_hit(self, user_id: str, limit: int, now: float, count: int = 1) -> Decision:
        self._nonce += 1
        member = f"{now!r}:{id(self)}:{self._nonce}"
        expire = "1" if self._expire_windows else "0"
        allowed, held, oldest = await self._call(
            _RATE_HIT,
            [f"{P}hits:{user_id}"],
            [repr(now), limit, RATE_WINDOW_S, member, expire, count],
        )
        reset_s = max(0.0, float(oldest) + RATE_WINDOW_S - now) if held else 0.0
        return Decision(bool(allowed), limit, max(0, limit - int(held)), reset_s)

    async def save_config(self, config: Config) -> None:
        seq = await self._call(
            _SAVE_CONFIG,
            [SEQ, CONFIG, LOG],
            [self._encoder.encode(config), self._event_buffer],
        )
        await self._applied_up_to(int(seq))

    async def put_doc(
        self, kind: str, doc_id: str, body: bytes | None, expect: int | None = None
    ) -> int:
        version = await self._call(
            _PUT_DOC,
            [f"{P}doc:{kind}", f"{P}docv:{kind}"],
            [doc_id, body or b"", "" if expect is None else expect, "1" if body is None else "0"],
        )
        if int(version) < 0:
            raise VersionConflict(f"{kind}/{doc_id}")
        return int(version)

    async def get_doc(self, kind: str, doc_id: str) -> Doc | None:
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.hget(f"{P}doc:{kind}", doc_id)
                pipe.hget(f"{P}docv:{kind}", doc_id)
                body, version = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return None if body is None or version is None else Doc(doc_id, body, int(version))

    async def docs(self, kind: str) -> list[Doc]:
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                pipe.hgetall(f"{P}doc:{kind}")
                pipe.hgetall(f"{P}docv:{kind}")
                bodies, versions = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return [
            Doc(key.decode(), body, int(versions[key]))
            for key, body in sorted(bodies.items())
            if key in versions
        ]

    async def sync(self) -> None:
        try:
            client: Any = self._client()
            raw = await client.get(SEQ)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        await self._applied_up_to(int(raw or 0))

    async def renew_leases(self, job_ids: list[str], lease_s: float, now: float) -> None:
        if not job_ids:
            return
        until = now + lease_s
        try:
            async with self._client().pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.zadd(LEASES, {job_id: until}, xx=True)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc

    async def claim_key(self, user_id: str, key: str, ttl_s: float) -> bool:
        try:
            held = await self._client().set(
                _claim_name(user_id, key), self._token, nx=True, px=max(1, int(ttl_s * 1000))
            )
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return bool(held)

    async def release_key(self, user_id: str, key: str) -> None:
        # only our own hold: one that expired and was taken by another process is theirs
        with contextlib.suppress(RedisError, OSError, StoreUnavailable):
            await self._client().eval(_RELEASE_CLAIM, 1, _claim_name(user_id, key), self._token)

    async def expired_leases(self, now: float) -> list[str]:
        try:
            client: Any = self._client()
            ids = await client.zrangebyscore(LEASES, "-inf", now, start=0, num=100)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        return [i.decode() for i in ids]

    def health(self) -> str | None:
        return self._failure or self._tail_failure

    def wall(self) -> float:
        return self._local_time() + self._offset_s

    def _deadline(self) -> int:
        """Epoch milliseconds, on Redis's clock, after which a script must refuse to act (well
        inside the socket timeout, so a change we report as refused is one Redis refuses too)."""
        return int((self.wall() + DEADLINE_S) * 1000)

    async def _sync_clock(self) -> None:
        """Measure Redis's clock against ours (TIME, halfway through the round trip)."""
        before = self._local_time()
        seconds, micros = await self._client().time()
        after = self._local_time()
        if after - before <= CLOCK_RTT_S:  # a slow answer says little about when it was read
            self._offset_s = seconds + micros / 1e6 - (before + after) / 2

    async def _clock_loop(self) -> None:
        """Clocks drift and get stepped: measure again now and then."""
        while True:
            await asyncio.sleep(CLOCK_SYNC_S)
            with contextlib.suppress(RedisError, OSError, StoreUnavailable):
                await self._sync_clock()

    async def close(self) -> None:
        # the tail is not cancelled mid-XREAD (redis-py can't always take that back): it is
        # told to stop, and its blocked read is ended as its BLOCK timeout would end it (else
        # it stops within one BLOCK period)
        self._closing = True
        for task in self._tasks:
            if task.get_name() != "redis-tail":
                task.cancel()
        if self._tasks:
            await self._unblock_tail()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(TAIL_BLOCK_MS / 1000 + 2):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        error = StoreUnavailable("the store is closing")
        for _, future in self._pending:
            if not future.done():
                future.set_exception(error)
        await self._disconnect()

    async def _unblock_tail(self) -> None:
        """End the tail's pending XREAD BLOCK now, with nothing read (CLIENT UNBLOCK, which
        answers it as a timeout would): a close need not wait out TAIL_BLOCK_MS. Best effort,
        bounded: with Redis away the tail's own timeout ends it."""
        client: Any = self._redis
        if client is None:
            return
        with contextlib.suppress(TimeoutError, RedisError, OSError):
            async with asyncio.timeout(DISCONNECT_S):
                for entry in await client.client_list(_type="normal"):
                    if entry.get("name") == self._tail_name:
                        await client.client_unblock(int(entry["id"]))

    async def _disconnect(self) -> None:
        for conn in (self._redis, self._tail_conn):
            if conn is not None:
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(DISCONNECT_S):
                        await conn.aclose()
        self._redis = self._tail_conn = None

    # ---- loading ---------------------------------------------------------------

    async def _load(self) -> Loaded:
        r: Any = self._client()  # redis-py's return types are unions of every reply shape
        floor = int(await r.get(SEQ) or 0)  # read first: every seq up to it is in the log (or
        newest = await r.xrevrange(LOG, count=self._event_buffer)  # trimmed), atomically
        events = [self._committed(entry_id, fields) for entry_id, fields in reversed(newest)]
        self._last_id = newest[0][0].decode() if newest else "0-0"
        # a log trimmed to nothing still has had `floor` entries: the next one is no gap
        self._applied = max(int(self._last_id.split("-")[0]), floor)
        jobs = await self._jobs()
        raw = await r.get(CONFIG)
        config = msgspec.json.decode(raw, type=Config) if raw else None
        job_events = [e for e in events if e is not None]
        return Loaded(jobs=jobs, seq=self._applied, events=job_events, config=config)

    async def _jobs(self) -> list[StoredJob]:
        """Every job as Redis holds it now, in submission order."""
        r: Any = self._client()
        jobs: list[StoredJob] = []
        ids = await r.zrange(JOBS, 0, -1)
        for start in range(0, len(ids), 1000):
            async with r.pipeline(transaction=False) as pipe:
                for job_id in ids[start : start + 1000]:
                    pipe.hgetall(f"{P}job:".encode() + job_id)
                rows = await pipe.execute()
            for row in rows:
                if row:  # deleted between the two reads: its event is in the stream
                    jobs.append(
                        StoredJob(
                            self._decoder.decode(row[b"data"]),
                            int(row[b"ord"]),
                            int(row[b"v"]),
                            row[b"ik"].decode() or None,
                            row[b"rh"].decode() or None,
                        )
                    )
        return jobs

    def _committed(self, entry_id: bytes, fields: dict[bytes, bytes]) -> Committed | None:
        seq = _seq(entry_id)
        kind = fields[b"t"].decode()
        if kind == CONFIG_EVENT:
            return None
        data = fields[b"j"]
        return Committed(
            seq,
            EventType(kind),
            fields[b"at"].decode(),
            self._decoder.decode(data),
            data,
            int(fields[b"o"]),
            fields[b"ik"].decode() or None,
            fields[b"rh"].decode() or None,
        )

    # ---- writing: pipelined batches of scripts -----------------------------------

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
                try:
                    await self._write(batch)
                except Exception as exc:  # a bug must not end the writer: every commit waits on it
                    log.exception("writing a batch failed")
                    error = self._unavailable(exc)
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(error)

    async def _probe_loop(self) -> None:
        """While a failure is recorded, try a write every PROBE_INTERVAL_S until one succeeds.
        A failure may come from any path (a read, a rate hit, a lease round), not only from
        the writer, and nothing else may come along to clear it: an idle process must report
        healthy again by itself once Redis answers."""
        while True:
            await self._failed.wait()
            self._failed.clear()
            while True:
                await asyncio.sleep(PROBE_INTERVAL_S)
                if self._failure is None:  # a command that worked meanwhile cleared it
                    break
                await self._probe()

    async def _probe(self) -> None:
        try:
            await self._client().set(f"{P}probe", repr(time.time()))
        except (RedisError, OSError, StoreUnavailable):
            return
        except Exception:  # whatever it is, the next probe tries again: this loop never stops
            log.exception("probing redis failed")
            return
        if self._failure is not None:
            log.warning("redis takes writes again")
            self._failure = None

    async def _write(self, batch: list[tuple[list[Change], asyncio.Future[list[int]]]]) -> None:
        try:
            results = await self._pipeline(batch)
            if any(isinstance(r, NoScriptError) for r in results):
                # Redis restarted and forgot the script: nothing in this batch ran; again
                await self._client().script_load(_COMMIT)
                results = await self._pipeline(batch)
        except (RedisError, OSError) as exc:
            error = self._unavailable(exc)
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        self._failure = None
        for (_, future), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, Exception):
                future.set_exception(self._unavailable(result))
            elif result == b"expired":
                future.set_exception(self._unavailable(TimeoutError("redis answered too late")))
            elif result[0] == b"ok":
                seqs = [int(seq) for seq in result[1:]]
                self._when_applied(seqs[-1], future, seqs)
            elif result[0] == b"dup":
                future.set_exception(DuplicateSubmission(result[1].decode()))
            elif result[0] == b"cap":
                future.set_exception(CapReached(int(result[1])))
            else:
                future.set_exception(VersionConflict())

    async def _pipeline(
        self, batch: list[tuple[list[Change], asyncio.Future[list[int]]]]
    ) -> list[Any]:
        sha = _sha(_COMMIT)
        pipe: Any
        async with self._client().pipeline(transaction=False) as pipe:
            for changes, _ in batch:
                keys = [SEQ, JOBS, KEYS, LOG, LEASES, ORDINAL, INFLIGHT, RUNNING]
                args: list[Any] = [len(changes), self._event_buffer]
                for change in changes:
                    keys.append(f"{P}job:{change.job.id}")
                    args += self._args(change)
                args.append(self._deadline())
                pipe.evalsha(sha, len(keys), *keys, *args)
            results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def _args(self, change: Change) -> list[Any]:
        """One change's 13 fields of _COMMIT's ARGV."""
        job = change.job
        lease = "" if change.lease_s is None else repr(self.wall() + change.lease_s)
        return [
            job.id,
            change.expect,
            self._encoder.encode(job),
            change.event.value,
            change.at,
            change.idempotency_key or "",
            change.request_hash or "",
            job.user_id,
            lease,
            job.status.value,
            "0" if job.status.terminal else "1",
            "" if change.cap is None else change.cap,
            "" if change.slots is None else change.slots,
        ]

    # ---- the tail: every committed event, in order, from any process --------------

    async def _tail_loop(self) -> None:
        conn: Any = self._tail_conn
        if conn is None:
            return
        backoff = 0.05
        while not self._closing:
            try:
                answer = await conn.xread({LOG: self._last_id}, block=TAIL_BLOCK_MS, count=1000)
                batches = await self._past_a_gap([entries for _, entries in answer])
            except Exception as exc:  # whatever it is, the tail goes on: every commit waits on it
                if not isinstance(exc, RedisError | OSError):  # not Redis being away: a bug
                    log.exception("reading the stream failed")
                self._tail_failure = f"redis unavailable: {exc}"
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
                continue  # from the same point: a gap not caught up with is seen again
            self._tail_failure, backoff = None, 0.05
            for entries in batches:
                try:
                    self._apply(entries)
                except Exception:  # a bug downstream must not stop the tail (every commit waits)
                    log.exception("applying committed changes failed")
                    self._last_id = entries[-1][0].decode()
                    self._applied = int(self._last_id.split("-")[0])
                    self._wake_waiters()

    async def _past_a_gap(self, batches: list[Entries]) -> list[Entries]:
        """The entries read, once caught up with any that were trimmed before they were read
        (seqs are contiguous: a first entry past the one after the last applied is a gap)."""
        if not batches or not batches[0] or _seq(batches[0][0][0]) <= self._applied + 1:
            return batches
        await self._resync(_seq(batches[0][0][0]))
        return [
            kept
            for entries in batches
            if (kept := [e for e in entries if _seq(e[0]) > self._applied])
        ]

    async def _resync(self, first: int) -> None:
        """Entries after the last one applied here were trimmed from the log before this
        process read them (it fell behind by more than EVENT_BUFFER): their events are lost to
        it. Take the jobs as Redis holds them now instead, so that nothing stays stale."""
        r: Any = self._client()
        floor = int(await r.get(SEQ) or 0)  # every change up to it is in the jobs read next
        jobs = await self._jobs()
        log.error(
            "this process fell behind the shared event log: events %d-%d were trimmed before "
            "it read them (EVENT_BUFFER is too small for this stall or load); reloaded %d jobs "
            "as of seq %d",
            self._applied + 1,
            first - 1,
            len(jobs),
            floor,
        )
        self.resyncs += 1
        if self._on_resync is not None:
            self._on_resync(jobs, floor)
        self._applied = max(self._applied, floor)
        self._last_id = f"{self._applied}-0"
        self._wake_waiters()

    def _apply(self, entries: Entries) -> None:
        committed: list[Committed] = []
        for entry_id, fields in entries:
            event = self._committed(entry_id, fields)
            if event is not None:
                committed.append(event)
            elif fields[b"t"] == CONFIG_EVENT.encode():
                if committed:  # keep the order: jobs before, then the config
                    self._on_commit(committed)
                    committed = []
                self._on_config(msgspec.json.decode(fields[b"c"], type=Config))
        if committed:
            self._on_commit(committed)
        if entries:
            self._last_id = entries[-1][0].decode()
            self._applied = int(self._last_id.split("-")[0])
            self._wake_waiters()

    async def _applied_up_to(self, seq: int) -> None:
        if self._applied >= seq:
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._when_applied(seq, future, None)
        await future

    def _when_applied(self, seq: int, future: asyncio.Future[Any], value: object) -> None:
        """Resolve `future` with `value` once this process has applied `seq` (the change is
        durable already; a tail that can't catch up in time makes it a 503, not a hang)."""
        if self._applied >= seq:
            future.set_result(value)
            return
        self._waiters.append((seq, future, value))
        loop = asyncio.get_running_loop()
        loop.call_later(APPLY_TIMEOUT_S, self._too_late, future)

    def _too_late(self, future: asyncio.Future[Any]) -> None:
        if not future.done():
            reason = "committed, but this process could not read it back from redis in time"
            future.set_exception(StoreUnavailable(reason, RETRY_AFTER_S))

    def _wake_waiters(self) -> None:
        still: list[tuple[int, asyncio.Future[Any], object]] = []
        for seq, future, value in self._waiters:
            if seq <= self._applied:
                if not future.done():
                    future.set_result(value)
            elif not future.done():
                still.append((seq, future, value))
        self._waiters = still

    # ---- helpers ---------------------------------------------------------------

    def _client(self) -> aioredis.Redis:
        if self._redis is None:
            raise StoreUnavailable("the store is not open")
        return self._redis

    async def _call(self, script: str, keys: list[str], args: list[Any]) -> Any:
        client: Any = self._client()
        args = [*args, self._deadline()]
        try:
            try:
                result = await client.evalsha(_sha(script), len(keys), *keys, *args)
            except NoScriptError:
                await client.script_load(script)
                result = await client.evalsha(_sha(script), len(keys), *keys, *args)
        except (RedisError, OSError) as exc:
            raise self._unavailable(exc) from exc
        if result == b"expired":
            raise self._unavailable(TimeoutError("redis answered too late"))
        self._failure = None
        return result

    def _unavailable(self, exc: BaseException) -> StoreUnavailable:
        reason = f"redis unavailable: {exc}"
        if self._failure is None:
            log.error(reason)
        self._failure = reason
        self._failed.set()  # the probe loop clears it once Redis takes writes again
        return StoreUnavailable(reason, RETRY_AFTER_S)


def _seq(entry_id: bytes) -> int:
    return int(entry_id.split(b"-")[0])


@functools.cache
def _sha(script: str) -> str:
    return hashlib.sha1(script.encode()).hexdigest()
