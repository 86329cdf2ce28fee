"""Client: the blocking face. A thin driver: it runs AsyncClient on an event loop in a thread.

No logic lives here; each method hands the async method's coroutine to the loop and waits.
`on_progress` callbacks are passed back to the calling thread, so they run where the caller
runs and can't stall the loop.
"""

from __future__ import annotations

import asyncio
import builtins
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Generic, TypeVar

from ._async import DEFAULT_URL, AsyncClient
from ._events import EventStream
from ._models import ApiKey, Asset, Config, Event, Job, Role, Scenario
from ._polling import PollPolicy, Random
from ._stats import ClientStats
from ._transport import AsyncTransport
from ._wait import ProgressCallback
from ._webhooks import ClockState, Delivery, SecretRotation, Webhook

__all__ = ["Client", "SyncEventStream"]

T = TypeVar("T")

_DONE = object()


class _Relay:
    """Carries `on_progress` calls from the loop thread to the caller's thread."""

    def __init__(self, on_progress: ProgressCallback | None) -> None:
        self.on_progress = on_progress
        self.items: queue.SimpleQueue[object] = queue.SimpleQueue()

    @property
    def callback(self) -> ProgressCallback | None:
        """What the async side calls (in the loop thread): it only enqueues."""
        return None if self.on_progress is None else self.items.put


class _Portal:
    """An event loop running in a daemon thread, and a way to run coroutines on it."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="dubsim-client", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    def call(self, coro: Coroutine[Any, Any, T], relay: _Relay | None = None) -> T:
        """Run `coro` on the loop and wait for it, delivering `relay`'s callbacks meanwhile."""
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("a sync Client can't be called from inside its own loop")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            if relay is None or relay.on_progress is None:
                return future.result()
            return self._relay_until_done(future, relay, relay.on_progress)
        except BaseException:
            # KeyboardInterrupt or a failing callback: stop the work it was waiting for.
            future.cancel()
            raise

    @staticmethod
    def _relay_until_done(future: Future[T], relay: _Relay, on_progress: ProgressCallback) -> T:
        future.add_done_callback(lambda _: relay.items.put(_DONE))
        while True:
            item = relay.items.get()
            if item is _DONE:
                # Progress queued before completion is delivered before the result.
                while not relay.items.empty():
                    extra = relay.items.get_nowait()
                    if isinstance(extra, Job):
                        on_progress(extra)
                return future.result()
            if isinstance(item, Job):
                on_progress(item)

    def stop(self) -> None:
        """Stop the loop and join its thread."""
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()


class _SyncIterator(Generic[T]):
    """A blocking iterator over an async iterator that lives on the portal's loop."""

    def __init__(
        self, portal: _Portal, source: AsyncIterator[T], relay: _Relay | None = None
    ) -> None:
        self._portal = portal
        self._source = source
        self._relay = relay
        self._closed = False

    def __iter__(self) -> _SyncIterator[T]:
        return self

    def __next__(self) -> T:
        if self._closed:
            raise StopIteration
        try:
            return self._portal.call(_anext(self._source), self._relay)
        except StopAsyncIteration:
            self._closed = True
            raise StopIteration from None

    def __enter__(self) -> _SyncIterator[T]:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop early; releases what the iteration holds (tasks, sockets)."""
        if not self._closed:
            self._closed = True
            aclose = getattr(self._source, "aclose", None)
            if aclose is not None:
                self._portal.call(aclose())


class SyncEventStream(_SyncIterator[Event]):
    """`Client.events()`: iterate events; `seq` is the resume point. Close it or use `with`."""

    def __init__(self, portal: _Portal, stream: EventStream) -> None:
        super().__init__(portal, stream)
        self._stream = stream

    @property
    def seq(self) -> int | None:
        """The newest seq received: pass it as `since` to resume later."""
        return self._stream.seq


async def _anext(source: AsyncIterator[T]) -> T:
    return await source.__anext__()


class Client:
    """The blocking client: the same methods as AsyncClient, same arguments, same errors.

    ```python
    with Client("http://127.0.0.1:4777", user_id="alice") as client:
        job = client.wait(client.submit(role="premium").id, timeout=60)
    ```

    It runs an AsyncClient on an event loop in a background thread; close it (or use `with`)
    to stop that thread. A Client may be shared by threads.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        token: str | None = None,
        user_id: str | None = None,
        timeout: float = 10.0,
        policy: PollPolicy | None = None,
        transport: AsyncTransport | None = None,
        rand: Random | None = None,
        api_key: str | None = None,
    ) -> None:
        self._async = AsyncClient(
            base_url,
            token=token,
            user_id=user_id,
            timeout=timeout,
            policy=policy,
            transport=transport,
            rand=rand,
            api_key=api_key,
        )
        self._portal = _Portal()
        self._lock = threading.Lock()
        self._closed = False

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self._async.base_url

    @property
    def user_id(self) -> str | None:
        """The `X-User-Id` sent with every request."""
        return self._async.user_id

    @property
    def stats(self) -> ClientStats:
        """What this client has done so far (a copy): requests, sockets, polling, resumes."""
        return self._async.stats

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop every wait and stream, close connections, stop the background thread."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self._portal.call(self._async.aclose())
        finally:
            self._portal.stop()

    def _run(self, coro: Coroutine[Any, Any, T], relay: _Relay | None = None) -> T:
        if self._closed:
            coro.close()
            raise RuntimeError("this client is closed")
        return self._portal.call(coro, relay)

    # ---- the same methods as AsyncClient -----------------------------------------------

    def submit(
        self,
        *,
        role: Role | str | None = None,
        user_id: str | None = None,
        target_language: str | None = None,
        scenario: Scenario | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
        video_url: str | None = None,
        asset_id: str | None = None,
        callback_url: str | None = None,
        callback_id: str | None = None,
    ) -> Job:
        """See AsyncClient.submit."""
        return self._run(
            self._async.submit(
                role=role,
                user_id=user_id,
                target_language=target_language,
                scenario=scenario,
                idempotency_key=idempotency_key,
                video_url=video_url,
                asset_id=asset_id,
                callback_url=callback_url,
                callback_id=callback_id,
            )
        )

    def upload(self, path: str | os.PathLike[str], *, user_id: str | None = None) -> Asset:
        """See AsyncClient.upload."""
        return self._run(self._async.upload(path, user_id=user_id))

    def get(self, job_id: str) -> Job:
        """See AsyncClient.get."""
        return self._run(self._async.get(job_id))

    def list(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        user: str | None = None,
        page_size: int = 100,
    ) -> _SyncIterator[Job]:
        """See AsyncClient.list (pages are fetched as you iterate)."""
        source = self._async.list(status=status, role=role, user=user, page_size=page_size)
        return _SyncIterator(self._portal, source)

    def cancel(self, job_id: str, *, reason: str | None = None) -> Job:
        """See AsyncClient.cancel."""
        return self._run(self._async.cancel(job_id, reason=reason))

    def retry(self, job_id: str) -> Job:
        """See AsyncClient.retry."""
        return self._run(self._async.retry(job_id))

    def process(self, count: int = 1) -> builtins.list[Job]:
        """See AsyncClient.process."""
        return self._run(self._async.process(count))

    def cleanup(self, older_than_s: float | None = None) -> int:
        """See AsyncClient.cleanup."""
        return self._run(self._async.cleanup(older_than_s))

    def config(self) -> Config:
        """See AsyncClient.config."""
        return self._run(self._async.config())

    def update_config(self, **changes: Any) -> Config:
        """See AsyncClient.update_config."""
        return self._run(self._async.update_config(**changes))

    # ---- webhooks and the clock ------------------------------------------------------

    def create_webhook(
        self, url: str, events: Iterable[str] | None = None, description: str | None = None
    ) -> Webhook:
        """See AsyncClient.create_webhook."""
        return self._run(self._async.create_webhook(url, events, description))

    def list_webhooks(self) -> builtins.list[Webhook]:
        """See AsyncClient.list_webhooks."""
        return self._run(self._async.list_webhooks())

    def get_webhook(self, webhook_id: str) -> Webhook:
        """See AsyncClient.get_webhook."""
        return self._run(self._async.get_webhook(webhook_id))

    def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        """See AsyncClient.update_webhook."""
        return self._run(self._async.update_webhook(webhook_id, **fields))

    def delete_webhook(self, webhook_id: str) -> None:
        """See AsyncClient.delete_webhook."""
        self._run(self._async.delete_webhook(webhook_id))

    def rotate_webhook_secret(self, webhook_id: str) -> SecretRotation:
        """See AsyncClient.rotate_webhook_secret."""
        return self._run(self._async.rotate_webhook_secret(webhook_id))

    def webhook_deliveries(
        self, webhook_id: str, limit: int | None = None, status: str | None = None
    ) -> builtins.list[Delivery]:
        """See AsyncClient.webhook_deliveries."""
        return self._run(self._async.webhook_deliveries(webhook_id, limit, status))

    def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """See AsyncClient.redeliver."""
        return self._run(self._async.redeliver(webhook_id, delivery_id))

    def replay_webhook(self, webhook_id: str, since: Any) -> int:
        """See AsyncClient.replay_webhook."""
        return self._run(self._async.replay_webhook(webhook_id, since))

    def clock(self) -> ClockState:
        """See AsyncClient.clock."""
        return self._run(self._async.clock())

    def advance_clock(self, seconds: float) -> ClockState:
        """See AsyncClient.advance_clock."""
        return self._run(self._async.advance_clock(seconds))

    def events(
        self,
        *,
        jobs: Iterable[str] | None = None,
        mine: bool = False,
        all: bool = False,
        since: int | None = None,
    ) -> SyncEventStream:
        """See AsyncClient.events."""
        stream = self._async.events(jobs=jobs, mine=mine, all=all, since=since)
        return SyncEventStream(self._portal, stream)

    def wait(
        self,
        job_id: str,
        timeout: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
    ) -> Job:
        """See AsyncClient.wait. `on_progress` runs in the calling thread."""
        relay = _Relay(on_progress)
        return self._run(self._async.wait(job_id, timeout, relay.callback), relay)

    def wait_many(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
    ) -> builtins.list[Job]:
        """See AsyncClient.wait_many. `on_progress` runs in the calling thread."""
        relay = _Relay(on_progress)
        return self._run(self._async.wait_many(job_ids, timeout, relay.callback), relay)

    def as_completed(
        self,
        job_ids: Iterable[str],
        timeout: float | None = None,
        on_progress: Callable[[Job], object] | None = None,
    ) -> _SyncIterator[Job]:
        """See AsyncClient.as_completed. `on_progress` runs in the calling thread."""
        relay = _Relay(on_progress)
        source = self._async.as_completed(job_ids, timeout, relay.callback)
        return _SyncIterator(self._portal, source, relay)

    # ---- API keys (admin) --------------------------------------------------------------

    def create_key(self, user_id: str, plan: str = "free", name: str | None = None) -> ApiKey:
        """See AsyncClient.create_key."""
        return self._run(self._async.create_key(user_id, plan, name))

    def list_keys(self) -> builtins.list[ApiKey]:
        """See AsyncClient.list_keys."""
        return self._run(self._async.list_keys())

    def revoke_key(self, key_id: str) -> ApiKey:
        """See AsyncClient.revoke_key."""
        return self._run(self._async.revoke_key(key_id))
