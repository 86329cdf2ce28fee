"""The webhook engine: `WebhookService` and its per-endpoint workers.

Lifecycle, the intake of committed events from the hub, one worker per endpoint (its state
written compare-and-set, its progress written behind), sending one delivery and its retries,
the lease rounds on shared stores, and the operations the API calls. A worker's delivery log is
an `EndpointLog` (delivery_log.py); the lease documents are `Leases`' (leases.py); an HTTP
attempt and its headers are the `Sender`'s (sender.py); the counters are `DeliveryMetrics`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import random
import secrets
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from typing import Final, Generic, TypeVar

import msgspec
from aiohttp import web
from prometheus_client.registry import Collector

from ..clock import Clock
from ..errors import Conflict, NotFound, ValidationFailed
from ..hub import Hub, Published, Subscription, Wire
from ..models import iso_ms, parse_iso
from ..store import Store, StoreUnavailable, VersionConflict
from . import targets
from .delivery_log import EndpointLog
from .documents import (
    DEFAULT_EVENTS,
    KIND,
    KIND_KEY,
    KIND_LEASE,
    KIND_LOG,
    KIND_ROUTES,
    KIND_STATE,
    TERMINAL_EVENTS,
    Attempt,
    Delivery,
    DeliveryLog,
    Endpoint,
    Item,
    Routes,
    State,
    Transformer,
    _decode_endpoint,
    _decode_endpoint_doc,
    _decode_log,
    _decode_routes,
    _disable,
    _done,
    _encode,
    _event_time,
    _Peek,
    event_body,
    origin_of,
    peek,
    validate_events,
)
from .leases import Leases
from .metrics import QUEUE_LABELS, DeliveryMetrics, _Collector
from .sender import Sender
from .signing import message_id, new_secret

log = logging.getLogger(__name__)

STOP_GRACE_S: Final = 3.0  # what stopping may spend writing progress and releasing leases
MAX_REDELIVERIES: Final = 100  # queued per endpoint
MAX_HELD: Final = 1000  # out_of_order events held per endpoint
MAX_ENDPOINTS_PER_OWNER: Final = 100
MAX_RACES: Final = 50  # an endpoint write that keeps losing to others gives up (409)
# callback lanes: the origins (scheme://host:port) of one owner's callback_urls that get a lane
# of their own; jobs to any further origin go through the owner's shared lane (never refused)
MAX_CALLBACK_ORIGINS: Final = 32
MAX_ROUTE_RACES: Final = 500  # a routes write losing to other processes' (each wins once)
LANE_CACHE: Final = 4096  # lane ids and callback routes this process remembers (least recent go)


def _too_many_endpoints() -> Conflict:
    return Conflict(f"at most {MAX_ENDPOINTS_PER_OWNER} endpoints per owner")


def shared_lane_id(owner: str, name: str = "callbacks") -> str:
    """The owner's shared callbacks lane (the one lane of each owner before origin lanes)."""
    return "cb_" + hashlib.sha256(f"{name}/{owner}".encode()).hexdigest()[:20]


def origin_lane_id(owner: str, origin: str, name: str = "callbacks") -> str:
    """The lane of the owner's callbacks to one origin (a user id holds no newline)."""
    return "cb_" + hashlib.sha256(f"{name}/{owner}\n{origin}".encode()).hexdigest()[:20]


_K = TypeVar("_K")
_V = TypeVar("_V")


class _Lru(Generic[_K, _V]):
    """A bounded mapping that forgets the least recently used entry first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[_K, _V] = OrderedDict()

    def get(self, key: _K) -> _V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: _K, value: _V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class _Tap(Subscription):
    """A hub subscription that hands every committed event to the engine, never queueing."""

    __slots__ = ("engine",)

    def __init__(self, engine: WebhookService) -> None:
        super().__init__(Wire("webhooks", _no_frame, _no_snapshot, _no_reset), 1)
        self.engine = engine

    def deliver(self, pub: Published) -> bool:
        self.engine.on_event(pub)
        return True


def _no_frame(pub: Published) -> bytes:
    return b""


def _no_snapshot(seq: int, job: bytes) -> bytes:
    return b""


def _no_reset(reason: str, seq: int) -> bytes:
    return b""


class _Worker:
    """One endpoint's sender on this process: its memory queue and its cached state."""

    def __init__(self, endpoint: Endpoint, bound: int, log: EndpointLog) -> None:
        self.id = endpoint.id
        self.endpoint = endpoint
        self.bound = bound
        self.queue: deque[tuple[Published, _Peek]] = deque()
        self.overflow = True  # read from the log first (a restart, or more than `bound`)
        self.scanned = 0  # the newest seq looked at (matching or not)
        self.state: State | None = None
        self.state_version = 0
        self.log = log
        self.wake = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.lock = asyncio.Lock()  # one state write at a time (compare-and-set on our version)
        self.dirty = False  # progress made in memory, its write still to come
        self.flusher: asyncio.Task[None] | None = None

    def offer(self, pub: Published, info: _Peek) -> None:
        if self.overflow or len(self.queue) >= self.bound:
            self.overflow = True  # the rest is read from the durable log later
            return
        self.queue.append((pub, info))
        self.wake.set()

    @property
    def depth(self) -> int:
        state = self.state
        extra = 0 if state is None else len(state.queue) + (state.current is not None)
        return len(self.queue) + extra


class WebhookService:
    def __init__(
        self,
        store: Store,
        hub: Hub,
        clock: Callable[[], Clock],
        *,
        timeout_s: float = 10.0,
        schedule: Iterable[float] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400),
        secret_grace_s: float = 86_400.0,
        allow_private: bool = True,
        log_size: int = 100,
        queue_size: int = 1000,
        lease_s: float = 10.0,
        seed: int | None = None,
    ) -> None:
        self.store = store
        self.hub = hub
        self._service_clock = clock
        self.clock_override: Clock | None = None
        self.schedule = [float(s) for s in schedule] or [0.0]
        self.secret_grace_s = secret_grace_s
        self.allow_private = allow_private
        self.log_size = log_size
        self.queue_size = queue_size
        self.rng = random.Random(seed)
        self.transformers: dict[str, Transformer] = {}
        # the default callbacks lane (no transform) leaves alone a job one of these claims:
        # another lane, with its own transform, POSTs that job's callback (the HeyGen facade)
        self.lane_claims: list[Callable[[Published], bool]] = []
        self.sender = Sender(lambda: self.clock, timeout_s=timeout_s, allow_private=allow_private)
        self.leases = Leases(store, lease_s)  # on a shared store: who sends which endpoint
        self._workers: dict[str, _Worker] = {}
        self._tap: _Tap | None = None
        self._lease_task: asyncio.Task[None] | None = None
        self._master: bytes | None = None
        # lane ids known to be durable: shared lane id -> itself, (shared id, origin) -> the
        # lane its callbacks go through; and the callback routes last read (bounded: LRU)
        self._lanes: _Lru[tuple[str, str | None], str] = _Lru(LANE_CACHE)
        self._routes: _Lru[str, Routes] = _Lru(LANE_CACHE)
        # one change of an owner's routes at a time in this process (only processes compete)
        self._route_locks: weakref.WeakValueDictionary[str, asyncio.Lock] = (
            weakref.WeakValueDictionary()
        )
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.metrics = DeliveryMetrics()

    @property
    def clock(self) -> Clock:
        return self.clock_override or self._service_clock()

    @property
    def holder(self) -> str:
        """This process, as a lease holder."""
        return self.leases.holder

    # ---- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.sender.open()
        self._master = await self._master_key()
        # not in hub.subscriptions: it is no client's stream (not counted, not closed at
        # shutdown, so events committed while stopping still reach the endpoints)
        self._tap = _Tap(self)
        self.hub.subscribe(self._tap, everything=True, since=self.hub.seq)
        for doc in await self.store.docs(KIND):
            self._consider(_decode_endpoint(doc.body))
        if self.store.shared:
            self._lease_task = asyncio.create_task(self._lease_loop())

    async def stop(self) -> None:
        self._closing = True
        if self._tap is not None:
            self.hub.unsubscribe_all(self._tap)
        if self._lease_task is not None:
            self._lease_task.cancel()
        workers = list(self._workers.values())
        for worker in workers:
            if worker.task is not None:
                worker.task.cancel()
            # and woken: a cancel that a store client swallowed (redis-py's pipeline can, on
            # Python 3.11) would leave the worker idling until the grace ran out; woken, it
            # sees _closing and ends
            worker.wake.set()
        # a task caught in a store call may take its time to end: stopping does not wait on
        # it past the grace (the loop or the process ends it); writes in flight may land
        stopping = [t for t in (self._lease_task, *(w.task for w in workers)) if t is not None]
        stopping += list(self._tasks)
        if stopping:
            await asyncio.wait(stopping, timeout=STOP_GRACE_S)
        # progress and leases are written if the store answers in time; a stop never hangs on
        # it (what was not written is sent again after the restart, with the same ids)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(STOP_GRACE_S):
                for worker in workers:
                    with contextlib.suppress(Exception):
                        await self._settle(worker)
                    with contextlib.suppress(Exception):
                        await worker.log.flush()
                    if self.store.shared:
                        with contextlib.suppress(Exception):
                            await self.leases.release(worker.id)
        self._workers.clear()
        await self.sender.close()

    def _consider(self, endpoint: Endpoint) -> None:
        """Start a worker for an endpoint this process may send for (all, on a private store)."""
        if self.store.shared or endpoint.id in self._workers or self._closing:
            if self.store.shared and endpoint.id not in self._workers and not self._closing:
                task = asyncio.get_running_loop().create_task(self._try_lease(endpoint))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            return
        self._spawn(endpoint)

    def _spawn(self, endpoint: Endpoint) -> None:
        # attempts kept per delivery: as many as the schedule has, and 10 more
        log = EndpointLog(self.store, endpoint.id, self.log_size, len(self.schedule) + 10)
        worker = _Worker(endpoint, self.queue_size, log)
        self._workers[endpoint.id] = worker
        worker.task = asyncio.create_task(self._run(worker), name=f"webhook {endpoint.id}")

    def _stop_worker(self, endpoint_id: str) -> None:
        worker = self._workers.pop(endpoint_id, None)
        if worker is not None and worker.task is not None:
            worker.task.cancel()

    # ---- events in ---------------------------------------------------------------------

    def on_event(self, pub: Published) -> None:
        """A committed event (from the hub): queue it for every endpoint that wants it."""
        if not self._workers:
            return
        info: _Peek | None = None
        for worker in self._workers.values():
            endpoint = worker.endpoint
            if endpoint.covers(pub.user_id):
                if info is None:
                    info = peek(pub.job_bytes)
                if self._matches(endpoint, pub, info):
                    worker.offer(pub, info)
                    continue
            if not worker.overflow:  # looked at and not wanted: the cursor may pass it
                worker.scanned = max(worker.scanned, pub.seq)

    def _matches(self, endpoint: Endpoint, pub: Published, info: _Peek) -> bool:
        if not endpoint.covers(pub.user_id):
            return False
        if endpoint.lane:
            url = info.callback_url
            return (
                url is not None
                and pub.type in TERMINAL_EVENTS
                and (endpoint.origin is None or origin_of(url) == endpoint.origin)
            )
        return endpoint.wants(pub.type) or (
            # out_of_order: the job's terminal event releases what was held
            info.scenario is not None
            and info.scenario.webhook is not None
            and info.scenario.webhook.out_of_order
            and pub.type in TERMINAL_EVENTS
        )

    # ---- the worker ----------------------------------------------------------------------

    async def _run(self, worker: _Worker) -> None:
        try:
            while not self._closing:
                endpoint = await self._endpoint_or_none(worker.id)
                if endpoint is None:
                    self._workers.pop(worker.id, None)
                    return
                worker.endpoint = endpoint
                state = await self._state(worker)
                if endpoint.status != "enabled":
                    await self._idle(worker)
                    continue
                item = await self._next_item(worker, endpoint, state)
                if item is None:
                    await self._idle(worker)
                    continue
                await self._deliver(worker, endpoint, item)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("webhook worker %s failed; it restarts", worker.id)
            self._workers.pop(worker.id, None)
            if not self._closing:
                await asyncio.sleep(1)  # not a schedule wait: a pause before a restart
                endpoint = await self._endpoint_or_none(worker.id)
                if endpoint is not None and worker.id not in self._workers:
                    self._spawn(endpoint)

    async def _idle(self, worker: _Worker) -> None:
        """Nothing to send: make progress durable, then wait to be woken."""
        worker.wake.clear()  # first: a wake-up during the writes below must not be lost
        await self._settle(worker)
        state = worker.state
        if (
            state is not None
            and not worker.queue
            and not worker.overflow
            and state.current is None
            and worker.scanned > state.cursor
        ):
            scanned = worker.scanned

            def advance(s: State) -> None:
                s.cursor = max(s.cursor, scanned)

            await self._update_state(worker, advance)
        await worker.log.flush()
        if worker.endpoint.status == "enabled" and (worker.queue or worker.overflow):
            await asyncio.sleep(0)  # more to do: only let others run first
            return
        if not self._closing:
            await worker.wake.wait()

    async def _state(self, worker: _Worker) -> State:
        if worker.state is None:
            doc = await self.store.get_doc(KIND_STATE, worker.id)
            if doc is None:
                state = State(cursor=self.hub.seq)
                try:
                    worker.state_version = await self.store.put_doc(
                        KIND_STATE, worker.id, _encode(state), expect=0
                    )
                except VersionConflict:
                    return await self._state(worker)
            else:
                state = msgspec.json.decode(doc.body, type=State)
                worker.state_version = doc.version
            worker.state = state
            worker.queue.clear()
            worker.overflow = True
            worker.scanned = state.cursor
        return worker.state

    async def _update_state(self, worker: _Worker, change: Callable[[State], None]) -> State:
        """Change the endpoint's state compare-and-set; on a conflict re-read and redo."""
        async with worker.lock:
            for _ in range(50):
                state = await self._state(worker)
                change(state)
                try:
                    worker.state_version = await self.store.put_doc(
                        KIND_STATE, worker.id, _encode(state), expect=worker.state_version
                    )
                    worker.dirty = False
                    return state
                except VersionConflict:
                    worker.state = None  # someone else wrote it (an API call, another process)
        raise Conflict("webhook state kept changing")

    def _done_later(self, worker: _Worker, item: Item) -> None:
        """A success: move on at once, write the progress behind (one write in flight, the
        latest state each time). A crash before it lands re-sends those deliveries, with
        their ids: the at-least-once window is one state write."""
        if worker.state is None:
            task = asyncio.get_running_loop().create_task(self._redo_done(worker, item))
        else:
            _done(worker.state, item)
            worker.dirty = True
            if worker.flusher is not None and not worker.flusher.done():
                return
            task = worker.flusher = asyncio.get_running_loop().create_task(
                self._flush_state(worker)
            )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _redo_done(self, worker: _Worker, item: Item) -> None:
        await self._update_state(worker, lambda s: _done(s, item))

    async def _flush_state(self, worker: _Worker) -> None:
        while worker.dirty:
            async with worker.lock:
                state = worker.state
                if not worker.dirty or state is None:
                    return
                worker.dirty = False
                try:
                    worker.state_version = await self.store.put_doc(
                        KIND_STATE, worker.id, _encode(state), expect=worker.state_version
                    )
                except VersionConflict:
                    # written elsewhere meanwhile (rare: another process's API call): re-read;
                    # what this write carried is sent again, with the same ids
                    worker.state = None
                    return
                except StoreUnavailable:
                    worker.dirty = True  # the next success or the idle write retries it
                    return

    async def _settle(self, worker: _Worker) -> None:
        """Wait for the write-behind of progress (before idling, stopping)."""
        if worker.flusher is not None:
            await asyncio.gather(worker.flusher, return_exceptions=True)
        if worker.dirty and worker.state is not None:
            await self._update_state(worker, lambda s: None)

    async def _next_item(self, worker: _Worker, endpoint: Endpoint, state: State) -> Item | None:
        if state.current is not None:
            return state.current
        if state.queue:
            return state.queue[0]
        if state.replay_from is not None and state.replay_to is not None:
            item = self._replay_item(endpoint, state)
            if item is not None:
                return item
        while True:
            if not worker.queue and worker.overflow:
                self._refill(worker, endpoint, state)
            if not worker.queue:
                return None
            pub, info = worker.queue.popleft()
            if pub.seq <= state.cursor:
                continue
            worker.scanned = max(worker.scanned, pub.seq)
            item = self._item(endpoint, pub, info, live=True)
            if item is None:
                continue
            if endpoint.lane and not await self._routed_here(endpoint, pub, info):
                continue  # another lane of this owner sends it
            faults = item.faults
            if faults is not None and faults.out_of_order:
                if pub.type not in TERMINAL_EVENTS and len(state.held) < MAX_HELD:
                    if not endpoint.wants(pub.type):
                        continue

                    def hold(s: State, item: Item = item) -> None:
                        s.held.append(item)
                        s.cursor = max(s.cursor, item.seq)

                    state = await self._update_state(worker, hold)
                    continue
                job_id = item.job_id
                wanted = endpoint.wants(pub.type) or endpoint.lane

                def release(
                    s: State, item: Item = item, wanted: bool = wanted, job_id: str = job_id
                ) -> None:
                    mine = [h for h in s.held if h.job_id == job_id]
                    s.held = [h for h in s.held if h.job_id != job_id]
                    s.queue = mine + s.queue
                    if wanted:
                        s.current = item
                    else:
                        s.cursor = max(s.cursor, item.seq)

                state = await self._update_state(worker, release)
                if state.current is not None:
                    return state.current
                if state.queue:
                    return state.queue[0]
                continue
            return item

    def _refill(self, worker: _Worker, endpoint: Endpoint, state: State) -> None:
        start = max(state.cursor, worker.scanned)
        history = self.hub.broker.since(start)
        if isinstance(history, str):
            oldest = self.hub.broker.recent()
            log.warning(
                "webhook %s: events after seq %d are gone from the log (%s); resuming at %s",
                worker.id,
                start,
                history,
                oldest[0].seq if oldest else self.hub.seq,
            )
            self.metrics.count("lost")
            history = oldest if history != "since_in_future" else []
        worker.overflow = False
        for pub in history:
            if pub.seq <= start:
                continue
            if len(worker.queue) >= worker.bound:
                worker.overflow = True
                return
            info = peek(pub.job_bytes)
            worker.scanned = pub.seq
            if self._matches(endpoint, pub, info):
                worker.queue.append((pub, info))

    def _replay_item(self, endpoint: Endpoint, state: State) -> Item | None:
        assert state.replay_from is not None and state.replay_to is not None
        history = self.hub.broker.since(state.replay_from)
        if isinstance(history, str):
            history = self.hub.broker.recent()
        for pub in history:
            if pub.seq <= state.replay_from:
                continue
            if pub.seq > state.replay_to:
                break
            info = peek(pub.job_bytes)
            if self._matches(endpoint, pub, info) and (endpoint.lane or endpoint.wants(pub.type)):
                item = self._item(endpoint, pub, info, live=False)
                if item is not None:
                    return item
        state.replay_from = state.replay_to = None
        return None

    def _item(self, endpoint: Endpoint, pub: Published, info: _Peek, *, live: bool) -> Item | None:
        if endpoint.transform is not None:
            transform = self.transformers.get(endpoint.transform)
            body = transform(pub) if transform is not None else None
            if body is None:
                return None
        else:
            if endpoint.lane and any(claim(pub) for claim in self.lane_claims):
                return None
            body = event_body(pub)
        faults = info.scenario.webhook if info.scenario is not None else None
        return Item(
            # a lane's: the same for the callback whichever of the owner's lanes sends it
            id=message_id(endpoint.group or endpoint.id, pub.seq),
            seq=pub.seq,
            event_type=str(pub.type),
            job_id=pub.job_id,
            body=body.decode(),
            url=info.callback_url if endpoint.lane else None,
            faults=faults,
            live=live,
        )

    # ---- sending one delivery ------------------------------------------------------------

    async def _deliver(self, worker: _Worker, endpoint: Endpoint, item: Item) -> None:
        clock = self.clock
        if item.next_at is not None and item.next_at > clock.now():
            worker.log.pending(item)
            if await self._sleep(worker, item.next_at - clock.now()):
                return  # woken: the endpoint changed; start over with fresh documents
        faults = item.faults
        if faults is not None and faults.delay_s > 0 and item.tries == 0:
            await clock.sleep(faults.delay_s)
        started = clock.now()
        code: int | None = None
        error: str | None = "dropped by the job's scenario (drop_first)"
        retry_after: float | None = None
        duration = 0.0
        if faults is None or item.tries >= faults.drop_first:
            code, error, retry_after, duration = await self.sender.post(endpoint, item)
        ok = code is not None and 200 <= code < 300
        attempt = Attempt(iso_ms(started), code, round(duration * 1000, 3), error)
        item.tries += 1
        if ok:
            self.metrics.count("succeeded")
            self.metrics.observe(self.metrics.latency, duration)
            if item.live:
                with contextlib.suppress(ValueError):
                    now = self._service_clock().now()
                    self.metrics.observe(self.metrics.lag, max(0.0, now - _event_time(item.body)))
            for _ in range(faults.duplicate if faults is not None else 0):
                await self.sender.post(endpoint, item)
            self._log(worker, item, attempt, "succeeded", None)
            self._done_later(worker, item)
            return
        self.metrics.count("failed_attempt")
        gone = code == 410
        if gone or item.tries >= len(self.schedule):
            reason = (
                "the receiver answered 410 Gone"
                if gone
                else f"{item.tries} attempts failed (last: {error or code})"
            )
            self.metrics.count("failed")
            self._log(worker, item, attempt, "failed", None)
            if endpoint.lane:  # a lane serves many jobs: drop this delivery, go on
                await self._update_state(worker, lambda s: _done(s, item))
                return
            item.tries, item.next_at = 0, None  # a re-enable starts the schedule afresh

            def park(s: State) -> None:
                if item.live:
                    s.current = item
                elif s.queue and s.queue[0].id == item.id:
                    s.queue[0] = item
                else:
                    s.current = item

            await self._update_state(worker, park)
            await self._update_endpoint(
                endpoint.id, lambda e: _disable(e, f"{reason}; re-enable it with PATCH")
            )
            await worker.log.flush()
            return
        wait = retry_after if retry_after is not None else self._jitter(self.schedule[item.tries])
        item.next_at = clock.now() + wait
        self._log(worker, item, attempt, "pending", item.next_at)

        def again(s: State) -> None:
            if not item.live and s.queue and s.queue[0].id == item.id:
                s.queue[0] = item
            else:
                s.current = item

        await self._update_state(worker, again)
        await worker.log.flush()

    async def _sleep(self, worker: _Worker, seconds: float) -> bool:
        """Sleep on the service clock; True if woken early (the endpoint changed)."""
        worker.wake.clear()
        sleeper = asyncio.ensure_future(self.clock.sleep(max(0.0, seconds)))
        waker = asyncio.ensure_future(worker.wake.wait())
        try:
            done, _ = await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()
        return waker in done and sleeper not in done

    def _jitter(self, seconds: float) -> float:
        return seconds * self.rng.uniform(0.9, 1.1)

    # ---- the delivery log ----------------------------------------------------------------

    def _log(
        self, worker: _Worker, item: Item, attempt: Attempt, status: str, next_at: float | None
    ) -> None:
        if worker.log.record(item, attempt, status, next_at):
            task = asyncio.get_running_loop().create_task(worker.log.flush())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # ---- metrics -------------------------------------------------------------------------

    def queue_depths(self) -> list[tuple[str, int]]:
        """(endpoint, queued) for the deepest QUEUE_LABELS endpoints, then ("other", rest)."""
        depths = sorted(((w.id, w.depth) for w in self._workers.values()), key=lambda p: -p[1])
        head = depths[:QUEUE_LABELS]
        rest = sum(d for _, d in depths[QUEUE_LABELS:])
        return [*head, ("other", rest)] if len(depths) > QUEUE_LABELS else head

    def collector(self) -> Collector:
        return _Collector(self.metrics, self.queue_depths)

    # ---- leases (shared stores) ------------------------------------------------------------

    async def _lease_loop(self) -> None:
        while True:
            try:
                await self._lease_round()
            except asyncio.CancelledError:
                raise
            except StoreUnavailable as exc:  # the store is down: /healthz says so, once a line
                log.warning("webhook lease round skipped: %s", exc)
            except Exception:
                log.exception("webhook lease round failed")
            # liveness is real time, whatever the service's clock says (a virtual advance
            # must not age a live process's leases, nor run a lease round per LEASE_S/3)
            await asyncio.sleep(self.leases.lease_s / 3)

    async def _lease_round(self) -> None:
        endpoints = {e.id: e for e in map(_decode_endpoint_doc, await self.store.docs(KIND))}
        for endpoint_id in list(self._workers):
            if endpoint_id not in endpoints:
                self._stop_worker(endpoint_id)
        for endpoint in endpoints.values():
            if endpoint.id in self._workers:
                if not await self.leases.renew(endpoint.id):
                    self._stop_worker(endpoint.id)
                    continue
                await self._notice_changes(endpoint)
            else:
                await self._try_lease(endpoint)

    async def _notice_changes(self, endpoint: Endpoint) -> None:
        """Another process may have patched it or queued a redelivery: wake its worker."""
        worker = self._workers.get(endpoint.id)
        if worker is None:
            return
        if endpoint != worker.endpoint:
            worker.endpoint = endpoint
            worker.wake.set()
        doc = await self.store.get_doc(KIND_STATE, endpoint.id)
        if doc is not None and doc.version != worker.state_version and worker.state is not None:
            worker.state = None  # re-read: a redelivery or replay was queued elsewhere
            worker.wake.set()

    async def _try_lease(self, endpoint: Endpoint) -> None:
        if endpoint.id in self._workers or self._closing:
            return
        if not await self.leases.take(endpoint.id):
            return
        if endpoint.id not in self._workers and not self._closing:
            self._spawn(endpoint)

    # ---- the API's operations ----------------------------------------------------------------

    async def register(
        self,
        url: str | None,
        *,
        owner: str,
        events: list[str] | None = None,
        description: str = "",
        transform: str | None = None,
        signed: bool = True,
        lane: bool = False,
        endpoint_id: str | None = None,
        origin: str | None = None,
        group: str | None = None,
    ) -> Endpoint:
        """Make an endpoint (validated); its deliveries start with the next event."""
        if url is not None:
            await self.validate_url(url)
        chosen = validate_events(events)
        if not lane and len(await self.endpoints(owner)) >= MAX_ENDPOINTS_PER_OWNER:
            raise _too_many_endpoints()
        endpoint = Endpoint(
            id=endpoint_id or "wh_" + secrets.token_urlsafe(12),
            url=url,
            events=chosen,
            description=description,
            owner=owner,
            created_at=iso_ms(self.clock.now()),
            secret=self.lane_secret(owner) if lane else new_secret(),
            signed=signed,
            transform=transform,
            lane=lane,
            origin=origin,
            group=group,
        )
        # the state first: its cursor says which events are this endpoint's
        state = State(cursor=self.hub.seq)
        with contextlib.suppress(VersionConflict):
            await self.store.put_doc(KIND_STATE, endpoint.id, _encode(state), expect=0)
        await self.store.put_doc(KIND, endpoint.id, _encode(endpoint), expect=0)
        if not lane and len(await self.endpoints(owner)) > MAX_ENDPOINTS_PER_OWNER:
            # requests made at once (on any process) all passed the check above: each looks
            # again after its own commit and the one that sees too many takes its endpoint
            # back, so the count never stays over (it may refuse one that would have fitted)
            await self.store.put_doc(KIND, endpoint.id, None)
            with contextlib.suppress(VersionConflict):
                await self.store.put_doc(KIND_STATE, endpoint.id, None)
            raise _too_many_endpoints()
        self._consider(endpoint)
        return endpoint

    async def ensure_lane(
        self,
        owner: str,
        *,
        name: str = "callbacks",
        transform: str | None = None,
        signed: bool = True,
        url: str | None = None,
    ) -> str:
        """The lane that will POST the terminal event of `owner`'s next job with callback
        `url` (made durable first): the lane of the URL's origin, or the owner's shared lane
        past MAX_CALLBACK_ORIGINS origins. Without `url`: the shared lane.

        Which lane sends a callback is decided here, before the job is committed, and kept in
        the `webhook_routes` document that every process reads (`_routed_here`): an origin
        admitted there with seq S has its callbacks of events after S sent by its own lane,
        everything else by the shared lane. Admission is only ever added (compare-and-set, at
        most MAX_CALLBACK_ORIGINS), so the decision never changes once made."""
        shared = shared_lane_id(owner, name)
        origin = None if url is None else origin_of(url)
        known = self._lanes.get((shared, origin))
        if known is not None:
            return known
        lane = shared
        if origin is not None:
            lane = await self._route(shared, owner, name, origin, transform, signed)
        # the shared lane is made only when something goes through it (an owner of a few
        # origins has their lanes alone); the routes and the webhook-ids are keyed by its id
        if lane == shared and self._lanes.get((shared, None)) is None:
            await self._make_lane(shared, owner, name, transform, signed)
            self._lanes.put((shared, None), shared)
        self._lanes.put((shared, origin), lane)  # durable, and final: remembered
        return lane

    async def _route(
        self,
        shared: str,
        owner: str,
        name: str,
        origin: str,
        transform: str | None,
        signed: bool,
    ) -> str:
        lane = origin_lane_id(owner, origin, name)
        async with self._route_lock(shared):
            routes = await self._read_routes(shared)
            if origin not in routes.origins:
                if len(routes.origins) >= MAX_CALLBACK_ORIGINS:
                    return shared  # full: it stays so; this origin goes through the shared lane
                # the lane first, so an admitted origin always has one; its cursor (this
                # process's seq now) is no later than the seq its admission fixes below
                await self._make_lane(lane, owner, name, transform, signed, origin, shared)
                if not await self._admit(shared, origin):
                    # filled by others meanwhile: this origin can never be admitted now, so
                    # no callback is routed to this lane; it goes
                    await self._drop_lane(lane)
                    return shared
        await self._route_of(shared, origin)  # its seq fixed before a job is routed there
        return lane

    def _route_lock(self, shared: str) -> asyncio.Lock:
        lock = self._route_locks.get(shared)
        if lock is None:
            lock = self._route_locks[shared] = asyncio.Lock()
        return lock

    async def _backoff(self, attempt: int) -> None:
        """After a lost compare-and-set of the routes: let the other process's write land
        (real time, not a schedule wait: the service clock may be virtual)."""
        await asyncio.sleep(self.rng.uniform(0, 0.002) * min(attempt, 10))

    async def _make_lane(
        self,
        lane_id: str,
        owner: str,
        name: str,
        transform: str | None,
        signed: bool,
        origin: str | None = None,
        group: str | None = None,
    ) -> None:
        if await self.store.get_doc(KIND, lane_id) is not None:
            return
        with contextlib.suppress(VersionConflict):  # made meanwhile, here or elsewhere
            await self.register(
                None,
                owner=owner,
                events=list(DEFAULT_EVENTS),
                description=f"{name} for {owner}" + ("" if origin is None else f" to {origin}"),
                transform=transform,
                signed=signed,
                lane=True,
                endpoint_id=lane_id,
                origin=origin,
                group=group,
            )

    async def _drop_lane(self, lane_id: str) -> None:
        with contextlib.suppress(VersionConflict):
            await self.store.put_doc(KIND, lane_id, None)
        self._stop_worker(lane_id)
        await self._drop_documents(lane_id)

    async def _read_routes(self, shared: str) -> Routes:
        doc = await self.store.get_doc(KIND_ROUTES, shared)
        routes = Routes() if doc is None else _decode_routes(doc.body)
        self._routes.put(shared, routes)
        return routes

    async def _admit(self, shared: str, origin: str) -> bool:
        """Add `origin` to the shared lane's routes (its seq still open); False when full."""
        for attempt in range(MAX_ROUTE_RACES):
            if attempt:
                await self._backoff(attempt)
            doc = await self.store.get_doc(KIND_ROUTES, shared)
            routes = Routes() if doc is None else _decode_routes(doc.body)
            self._routes.put(shared, routes)
            if origin in routes.origins:
                return True
            if len(routes.origins) >= MAX_CALLBACK_ORIGINS:
                return False
            # a new document: the cached one stays what was read until this one is written
            admitted = Routes({**routes.origins, origin: None})
            try:
                await self.store.put_doc(
                    KIND_ROUTES,
                    shared,
                    _encode(admitted),
                    expect=0 if doc is None else doc.version,
                )
            except VersionConflict:
                continue  # another origin (or this one) admitted meanwhile: look again
            self._routes.put(shared, admitted)
            return True
        raise Conflict("the callback lanes kept changing; try again")

    async def _route_of(self, shared: str, origin: str) -> int | None:
        """Where the callbacks of `origin` go: None, the shared lane (not admitted); S, the
        shared lane for events up to seq S and the origin's own lane after it."""
        cached = self._routes.get(shared)
        if cached is not None:
            since = cached.origins.get(origin)
            if since is not None:
                return since  # fixed: final
            if origin not in cached.origins and len(cached.origins) >= MAX_CALLBACK_ORIGINS:
                return None  # full without it: final
        routes = await self._read_routes(shared)  # admitted since it was read, perhaps
        if origin not in routes.origins:
            return None
        since = routes.origins[origin]
        return since if since is not None else await self._fix(shared, origin)

    async def _fix(self, shared: str, origin: str) -> int:
        """Fix an admitted origin's seq: a seq at least as new as every event committed before
        the admission, so the shared lane, which saw the origin unadmitted for no later event,
        and the origin's lane split its callbacks without a gap or an overlap. Any process
        may do it (the one that admitted it may have died): the first write wins. The origins
        still open in the document read before the sync (each admitted before it) are fixed
        by the same write."""
        async with self._route_lock(shared):
            doc = await self.store.get_doc(KIND_ROUTES, shared)
            if doc is None:
                raise RuntimeError(f"callback routes {shared} vanished")
            routes = _decode_routes(doc.body)
            open_ = {o for o, s in routes.origins.items() if s is None}
            await self.store.sync()  # every event committed anywhere so far is in self.hub
            seq = self.hub.seq  # good for the origins admitted before the sync: `open_`
            for attempt in range(MAX_ROUTE_RACES):
                if attempt:
                    await self._backoff(attempt)
                    doc = await self.store.get_doc(KIND_ROUTES, shared)
                    if doc is None:
                        raise RuntimeError(f"callback routes {shared} vanished")
                    routes = _decode_routes(doc.body)
                self._routes.put(shared, routes)
                since = routes.origins.get(origin)
                if since is not None:
                    return since
                fixed = Routes(
                    {o: seq if s is None and o in open_ else s for o, s in routes.origins.items()}
                )
                try:
                    await self.store.put_doc(
                        KIND_ROUTES, shared, _encode(fixed), expect=doc.version
                    )
                except VersionConflict:
                    continue  # the cache keeps what was read, never a write that did not land
                self._routes.put(shared, fixed)
                return seq
        raise Conflict("the callback lanes kept changing; try again")

    async def _routed_here(self, lane: Endpoint, pub: Published, info: _Peek) -> bool:
        """Whether this lane sends this callback, from durable data every process reads alike
        (the job's callback_url, the routes), so exactly one lane of the owner sends it."""
        if info.callback_url is None:
            return False
        origin = origin_of(info.callback_url)
        since = await self._route_of(lane.group or lane.id, origin)
        if lane.origin is None:  # the shared lane
            return since is None or pub.seq <= since
        return lane.origin == origin and since is not None and pub.seq > since

    async def prepare_callback(self, owner: str, url: str) -> None:
        """Before a job with a callback_url is committed: a valid URL, a durable lane."""
        await self.validate_url(url)
        await self.ensure_lane(owner, url=url)

    async def endpoints(self, owner: str | None) -> list[Endpoint]:
        """Visible endpoints: the owner's, or every one (owner None: the admin)."""
        found = [_decode_endpoint_doc(doc) for doc in await self.store.docs(KIND)]
        return [e for e in found if not e.lane and (owner is None or e.owner == owner)]

    async def endpoint(self, endpoint_id: str, owner: str | None) -> Endpoint:
        found = await self._endpoint_or_none(endpoint_id)
        if found is None or found.lane or (owner is not None and found.owner != owner):
            raise NotFound("no webhook endpoint with this id", id=endpoint_id[:200])
        return found

    async def _endpoint_or_none(self, endpoint_id: str) -> Endpoint | None:
        doc = await self.store.get_doc(KIND, endpoint_id)
        return None if doc is None else _decode_endpoint(doc.body)

    async def _update_endpoint(
        self, endpoint_id: str, change: Callable[[Endpoint], None]
    ) -> Endpoint:
        for _ in range(50):
            doc = await self.store.get_doc(KIND, endpoint_id)
            if doc is None:
                raise NotFound("no webhook endpoint with this id", id=endpoint_id[:200])
            endpoint = _decode_endpoint(doc.body)
            change(endpoint)
            try:
                await self.store.put_doc(KIND, endpoint_id, _encode(endpoint), expect=doc.version)
            except VersionConflict:
                continue
            worker = self._workers.get(endpoint_id)
            if worker is not None:
                worker.endpoint = endpoint
                worker.wake.set()
            return endpoint
        raise Conflict("the endpoint kept changing; try again")

    async def update(
        self,
        endpoint_id: str,
        owner: str | None,
        *,
        url: str | None = None,
        events: list[str] | None = None,
        description: str | None = None,
        status: str | None = None,
        transform: str | None = None,
    ) -> Endpoint:
        await self.endpoint(endpoint_id, owner)
        if url is not None:
            await self.validate_url(url)
        chosen = validate_events(events) if events is not None else None

        def change(e: Endpoint) -> None:
            if url is not None:
                e.url = url
            if chosen is not None:
                e.events = chosen
            if description is not None:
                e.description = description
            if transform is not None:
                e.transform = transform
            if status is not None:
                if status == "enabled" and e.status != "enabled":
                    e.disabled_reason = None
                elif status == "disabled" and e.status != "disabled":
                    e.disabled_reason = "disabled by request"
                e.status = status

        updated = await self._update_endpoint(endpoint_id, change)
        self._consider(updated)
        return updated

    async def delete(self, endpoint_id: str, owner: str | None) -> None:
        await self.endpoint(endpoint_id, owner)
        for _ in range(MAX_RACES):  # compare-and-set: of deletes at once (any process) one wins
            doc = await self.store.get_doc(KIND, endpoint_id)
            if doc is None:
                raise NotFound("no webhook endpoint with this id", id=endpoint_id[:200])
            try:
                await self.store.put_doc(KIND, endpoint_id, None, expect=doc.version)
            except VersionConflict:
                continue  # changed meanwhile: look again
            break
        else:
            raise Conflict("the endpoint kept changing; try again")
        self._stop_worker(endpoint_id)  # before its documents go, so it writes none back
        await self._drop_documents(endpoint_id)

    async def _drop_documents(self, endpoint_id: str) -> None:
        for kind in (KIND_STATE, KIND_LOG, KIND_LEASE):
            if await self.store.get_doc(kind, endpoint_id) is not None:
                await self.store.put_doc(kind, endpoint_id, None)

    async def rotate(self, endpoint_id: str, owner: str | None) -> tuple[str, float]:
        await self.endpoint(endpoint_id, owner)
        secret = new_secret()
        expires = self.clock.now() + self.secret_grace_s

        def change(e: Endpoint) -> None:
            e.previous_secret, e.previous_secret_expires_at = e.secret, expires
            e.secret = secret

        await self._update_endpoint(endpoint_id, change)
        return secret, expires

    async def deliveries(
        self, endpoint_id: str, owner: str | None, *, limit: int, status: str | None
    ) -> list[Delivery]:
        await self.endpoint(endpoint_id, owner)
        worker = self._workers.get(endpoint_id)
        if worker is not None:
            book = await worker.log.load()
        else:
            doc = await self.store.get_doc(KIND_LOG, endpoint_id)
            book = DeliveryLog() if doc is None else _decode_log(doc.body)
        found = [d for d in reversed(book.deliveries) if status is None or d.status == status]
        return found[:limit]

    async def redeliver(self, endpoint_id: str, owner: str | None, delivery_id: str) -> Delivery:
        endpoint = await self.endpoint(endpoint_id, owner)
        entries = await self.deliveries(endpoint_id, owner, limit=self.log_size, status=None)
        entry = next((d for d in entries if d.id == delivery_id), None)
        if entry is None:
            raise NotFound("no such delivery in this endpoint's log", id=delivery_id[:200])
        pub = next((p for p in self.hub.broker.recent() if p.seq == entry.seq), None)
        if pub is None:
            raise Conflict(
                "that event is no longer in the event log (EVENT_BUFFER); it can't be resent"
            )
        item = self._item(endpoint, pub, peek(pub.job_bytes), live=False)
        if item is None:
            raise Conflict("the endpoint's transformer skips this event")

        def queue(s: State) -> None:
            if len(s.queue) >= MAX_REDELIVERIES:
                raise Conflict(f"at most {MAX_REDELIVERIES} redeliveries may wait per endpoint")
            s.queue.append(item)

        await self._change_state(endpoint_id, queue)
        entry.status, entry.next_attempt_at = "pending", None
        worker = self._workers.get(endpoint_id)
        if worker is not None:
            worker.log.pending(item)
        return entry

    async def replay(self, endpoint_id: str, owner: str | None, since: int | str) -> int:
        endpoint = await self.endpoint(endpoint_id, owner)
        recent = self.hub.broker.recent()
        if isinstance(since, str):
            try:
                cutoff = parse_iso(since)
            except ValueError:
                raise ValidationFailed(
                    "since must be a seq or an ISO time", field="since"
                ) from None
            first = next((p.seq for p in recent if parse_iso(p.at) >= cutoff), None)
            start = self.hub.seq if first is None else first - 1
        else:
            start = since
        if start < 0:
            raise ValidationFailed("since must be >= 0", field="since")
        upto = self.hub.seq
        count = 0
        for pub in recent:
            if start < pub.seq <= upto:
                info = peek(pub.job_bytes)
                if self._matches(endpoint, pub, info) and (
                    endpoint.lane or endpoint.wants(pub.type)
                ):
                    count += 1

        def mark(s: State) -> None:
            s.replay_from, s.replay_to = start, upto

        await self._change_state(endpoint_id, mark)
        return count

    async def _change_state(self, endpoint_id: str, change: Callable[[State], None]) -> None:
        worker = self._workers.get(endpoint_id)
        if worker is not None:
            await self._update_state(worker, change)
            worker.wake.set()
            return
        for _ in range(50):  # sent by another process: write the document; it notices
            doc = await self.store.get_doc(KIND_STATE, endpoint_id)
            state = (
                State(cursor=self.hub.seq)
                if doc is None
                else msgspec.json.decode(doc.body, type=State)
            )
            change(state)
            try:
                await self.store.put_doc(
                    KIND_STATE, endpoint_id, _encode(state), 0 if doc is None else doc.version
                )
                return
            except VersionConflict:
                continue
        raise Conflict("the endpoint's state kept changing; try again")

    # ---- secrets ----------------------------------------------------------------------------

    async def _master_key(self) -> bytes:
        """A random key made once (durable, shared) that per-owner callback secrets derive from."""
        doc = await self.store.get_doc(KIND_KEY, "master")
        if doc is None:
            key = secrets.token_bytes(32)
            try:
                await self.store.put_doc(KIND_KEY, "master", base64.b64encode(key), expect=0)
                return key
            except VersionConflict:
                doc = await self.store.get_doc(KIND_KEY, "master")
        if doc is None:
            raise RuntimeError("webhook master key vanished")
        return base64.b64decode(doc.body)

    def lane_secret(self, owner: str) -> str:
        """What signs `owner`'s callback_url deliveries (GET /v1/webhooks/callback-secret)."""
        if self._master is None:
            raise RuntimeError("webhooks not started")
        digest = hmac.new(self._master, f"callbacks/{owner}".encode(), hashlib.sha256).digest()
        return "whsec_" + base64.b64encode(digest[:24]).decode()

    async def validate_url(self, url: str) -> None:
        await targets.validate_url(url, allow_private=self.allow_private)


WEBHOOKS = web.AppKey("webhooks", WebhookService)
