"""AsyncClient: the one implementation of the client (the sync Client drives this one)."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import enum
import logging
import os
import random
import weakref
from collections.abc import AsyncGenerator, Iterable, Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ._api import Api, decode, error_from
from ._errors import WaitTimeout
from ._events import EventStream
from ._flows import drive_async, poll_flow, request_flow
from ._models import (
    ApiKey,
    Asset,
    CleanupResult,
    Config,
    Job,
    JobPage,
    KeyList,
    ProcessResult,
    Role,
    Scenario,
)
from ._polling import PollPolicy, Random
from ._stats import ClientStats
from ._subscription import SharedSubscription
from ._transport import AiohttpTransport, AsyncTransport, Request, Response, WebSocketConnection
from ._wait import ProgressCallback, Tracker, outcome, wait_for_terminal
from ._webhooks import (
    ClockState,
    Delivery,
    DeliveryList,
    Replay,
    SecretRotation,
    Webhook,
    WebhookList,
)

__all__ = ["DEFAULT_URL", "AsyncClient"]

logger = logging.getLogger("dubsim")

DEFAULT_URL = "http://127.0.0.1:4777"


class _State(enum.Enum):
    OPEN = "open"  # usable; the HTTP session and the socket are made on first use
    CLOSED = "closed"  # aclose() ran: every call raises RuntimeError


class AsyncClient:
    """An asyncio client for a dubsim server.

    ```python
    async with AsyncClient("http://127.0.0.1:4777", user_id="alice") as client:
        job = await client.submit(role="premium")
        job = await client.wait(job.id, timeout=60)
    ```

    `token` is the admin token (cancel, retry, process, cleanup, update_config, `all` events,
    API keys); `user_id` is sent as `X-User-Id`; `api_key` (a server with AUTH=keys) as
    `x-api-key`, on every request and the WebSocket upgrade: it names the user and the plan.
    `timeout` bounds each HTTP request; `policy` tunes polling, retries and reconnects;
    `transport` replaces the network (see MockTransport).
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
        self._api = Api(base_url, token=token, user_id=user_id, timeout=timeout, api_key=api_key)
        self._policy = policy or PollPolicy()
        self._transport: AsyncTransport = transport or AiohttpTransport()
        self._rand: Random = rand or random.random
        self._stats = ClientStats()
        self._subscription: SharedSubscription | None = None
        self._streams: weakref.WeakSet[EventStream] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state = _State.OPEN

    @property
    def base_url(self) -> str:
        """The server's base URL."""
        return self._api.base_url

    @property
    def user_id(self) -> str | None:
        """The `X-User-Id` sent with every request (None: the server says `anonymous`)."""
        return self._api.user_id

    # ---- lifecycle -------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop every wait and stream, close the socket and the HTTP connections."""
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for stream in list(self._streams):
            await stream.aclose()
        if self._subscription is not None:
            await self._subscription.aclose()
        await self._transport.aclose()

    def _check_open(self) -> None:
        if self._state is _State.CLOSED:
            raise RuntimeError("this client is closed")

    # ---- plumbing --------------------------------------------------------------------

    @property
    def stats(self) -> ClientStats:
        """What this client has done so far (a copy): requests, sockets, polling, resumes."""
        return dataclasses.replace(self._stats)

    async def _send(self, request: Request) -> Response:
        self._check_open()
        self._stats.requests += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            response = await self._transport.handle(request)
        except Exception as exc:
            logger.debug("%s %s -> %r", request.method, request.url, exc)
            raise
        logger.debug(
            "%s %s -> %d (%.1f ms)",
            request.method,
            request.url,
            response.status,
            (loop.time() - started) * 1000,
        )
        return response

    async def _call(
        self, request: Request, type_: type[Any], *, idempotent: bool, job_id: str | None = None
    ) -> Any:
        flow = request_flow(
            request,
            policy=self._policy,
            rand=self._rand,
            clock=asyncio.get_running_loop().time,
            idempotent=idempotent,
        )
        response = await drive_async(flow, self._send)
        if type_ is type(None):  # an answer without a body (204)
            if not 200 <= response.status < 300:
                raise error_from(response)
            return None
        return decode(response, type_, job_id=job_id)

    async def _connect_ws(self) -> WebSocketConnection:
        self._check_open()
        return await self._transport.connect_websocket(self._api.ws_url(), self._api.ws_headers())

    def _shared(self) -> SharedSubscription:
        self._check_open()
        if self._subscription is None:
            self._subscription = SharedSubscription(
                self._connect_ws, policy=self._policy, rand=self._rand, stats=self._stats
            )
        return self._subscription

    # ---- jobs ------------------------------------------------------------------------

    async def submit(
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
        """Submit a job; returns it (status pending). RateLimited for a free user over the limit.

        With an `idempotency_key` a lost answer is retried safely (the server returns the same
        job); without one a submit is sent once. A media job names its video: `video_url` (the
        server fetches it now; InvalidRequest `video_unreachable` if it can't) or `asset_id` (an
        `upload()`ed file of the same user). `callback_url` gets the job's terminal events
        (docs/webhooks.md), `callback_id` is echoed back.
        """
        request = self._api.submit(
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
        job: Job = await self._call(request, Job, idempotent=idempotency_key is not None)
        return job

    async def upload(self, path: str | os.PathLike[str], *, user_id: str | None = None) -> Asset:
        """Upload a video file (streamed from disk) as an asset for media jobs: submit with
        `asset_id=asset.id`. InvalidRequest if it is no video with sound, or over the server's
        limits (size, duration, frame size); sent once (each upload makes a new asset)."""
        file = Path(path)
        if not await asyncio.to_thread(file.is_file):
            raise FileNotFoundError(f"no such file: {file}")
        asset: Asset = await self._call(
            self._api.upload(file, user_id=user_id), Asset, idempotent=False
        )
        return asset

    async def get(self, job_id: str) -> Job:
        """The job's current snapshot. JobNotFound if there is no such job."""
        job: Job = await self._call(self._api.get_job(job_id), Job, idempotent=True, job_id=job_id)
        return job

    async def list(
        self,
        *,
        status: str | None = None,
        role: str | None = None,
        user: str | None = None,
        page_size: int = 100,
    ) -> AsyncGenerator[Job, None]:
        """Every job visible to this client (own jobs; all for admin), newest first.

        Follows the cursor page by page as you iterate.
        """
        cursor: str | None = None
        while True:
            request = self._api.list_jobs(
                status=status, role=role, user=user, limit=page_size, cursor=cursor
            )
            page: JobPage = await self._call(request, JobPage, idempotent=True)
            for job in page.jobs:
                yield job
            cursor = page.next_cursor
            if not cursor:
                return

    async def cancel(self, job_id: str, *, reason: str | None = None) -> Job:
        """Cancel a job (admin). Conflict if it already ended."""
        job: Job = await self._call(
            self._api.cancel(job_id, reason=reason), Job, idempotent=False, job_id=job_id
        )
        return job

    async def retry(self, job_id: str) -> Job:
        """Requeue a permanently_failed job (admin). Conflict for any other status."""
        job: Job = await self._call(self._api.retry(job_id), Job, idempotent=False, job_id=job_id)
        return job

    async def process(self, count: int = 1) -> builtins.list[Job]:
        """Start the next `count` queued jobs now, premium first (admin; manual mode)."""
        result: ProcessResult = await self._call(
            self._api.process(count), ProcessResult, idempotent=False
        )
        return result.started

    async def cleanup(self, older_than_s: float | None = None) -> int:
        """Delete finished jobs (optionally only those older than this); returns how many."""
        result: CleanupResult = await self._call(
            self._api.cleanup(older_than_s), CleanupResult, idempotent=False
        )
        return result.deleted

    async def config(self) -> Config:
        """The server's runtime settings."""
        config: Config = await self._call(self._api.config(), Config, idempotent=True)
        return config

    async def update_config(self, **changes: Any) -> Config:
        """Change runtime settings (admin), e.g. `update_config(error_rate=0)`.

        All or nothing: InvalidRequest names a bad field and nothing changes.
        """
        config: Config = await self._call(self._api.update_config(changes), Config, idempotent=True)
        return config

    # ---- webhooks and the clock ------------------------------------------------------

    async def create_webhook(
        self,
        url: str,
        events: Iterable[str] | None = None,
        description: str | None = None,
    ) -> Webhook:
        """Register an endpoint for `events` (None: all). The answer carries its `secret`,
        the only time it is shown: keep it to verify deliveries (`dubsim.verify_webhook`)."""
        events = None if events is None else builtins.list(events)
        request = self._api.create_webhook(url, events, description)
        hook: Webhook = await self._call(request, Webhook, idempotent=False)
        return hook

    async def list_webhooks(self) -> builtins.list[Webhook]:
        """Every endpoint this client may see (own; all for the admin)."""
        page: WebhookList = await self._call(
            self._api.list_webhooks(), WebhookList, idempotent=True
        )
        return page.webhooks

    async def get_webhook(self, webhook_id: str) -> Webhook:
        """One endpoint (without its secret)."""
        hook: Webhook = await self._call(
            self._api.get_webhook(webhook_id), Webhook, idempotent=True
        )
        return hook

    async def update_webhook(self, webhook_id: str, **fields: Any) -> Webhook:
        """Change an endpoint, e.g. `update_webhook(id, events=["job.completed"])`."""
        request = self._api.update_webhook(webhook_id, fields)
        hook: Webhook = await self._call(request, Webhook, idempotent=True)
        return hook

    async def delete_webhook(self, webhook_id: str) -> None:
        """Remove an endpoint; nothing more is delivered to it."""
        await self._call(self._api.delete_webhook(webhook_id), type(None), idempotent=False)

    async def rotate_webhook_secret(self, webhook_id: str) -> SecretRotation:
        """A new secret; deliveries carry both signatures until the old one expires."""
        request = self._api.rotate_webhook_secret(webhook_id)
        rotation: SecretRotation = await self._call(request, SecretRotation, idempotent=False)
        return rotation

    async def webhook_deliveries(
        self, webhook_id: str, limit: int | None = None, status: str | None = None
    ) -> builtins.list[Delivery]:
        """The endpoint's recent deliveries (newest first), with every attempt."""
        request = self._api.webhook_deliveries(webhook_id, limit, status)
        page: DeliveryList = await self._call(request, DeliveryList, idempotent=True)
        return page.deliveries

    async def redeliver(self, webhook_id: str, delivery_id: str) -> Delivery:
        """Send one delivery again (queued: the answer is the delivery as queued)."""
        request = self._api.redeliver(webhook_id, delivery_id)
        delivery: Delivery = await self._call(request, Delivery, idempotent=False)
        return delivery

    async def replay_webhook(self, webhook_id: str, since: Any) -> int:
        """Queue again every event since `since` (as the server takes it: a seq or an ISO
        time; a datetime is sent as ISO 8601); returns how many were queued."""
        if isinstance(since, datetime):
            since = since.isoformat()
        request = self._api.replay_webhook(webhook_id, since)
        replay: Replay = await self._call(request, Replay, idempotent=False)
        return replay.queued

    async def clock(self) -> ClockState:
        """The server's time, and whether it is real or virtual."""
        state: ClockState = await self._call(self._api.clock(), ClockState, idempotent=True)
        return state

    async def advance_clock(self, seconds: float) -> ClockState:
        """Move a virtual clock on (admin; CLOCK=virtual, else Conflict). Returns once what
        came due has run (docs/testing-integrations.md says exactly what that means)."""
        request = self._api.advance_clock(seconds)
        state: ClockState = await self._call(request, ClockState, idempotent=False)
        return state

    # ---- API keys (admin) ------------------------------------------------------------

    async def create_key(self, user_id: str, plan: str = "free", name: str | None = None) -> ApiKey:
        """Make an API key for `user_id` on `plan` (admin). The returned `key` is the only
        time the secret is shown: store it now."""
        made: ApiKey = await self._call(
            self._api.create_key(user_id, plan, name), ApiKey, idempotent=False
        )
        return made

    async def list_keys(self) -> builtins.list[ApiKey]:
        """Every live API key (admin), without secrets."""
        listed: KeyList = await self._call(self._api.list_keys(), KeyList, idempotent=True)
        return listed.keys

    async def revoke_key(self, key_id: str) -> ApiKey:
        """Revoke an API key (admin): refused from its next request on, on every process."""
        revoked: ApiKey = await self._call(self._api.revoke_key(key_id), ApiKey, idempotent=True)
        return revoked

    # ---- live ------------------------------------------------------------------------

    def events(
        self,
        *,
        jobs: Iterable[str] | None = None,
        mine: bool = False,
        all: bool = False,
        since: int | None = None,
    ) -> EventStream:
        """The live event stream (its own WebSocket), resumed by seq after a drop.

        Select `jobs=[ids]`, `mine=True` (needs `user_id`) or `all=True` (needs the token);
        with none given: all with a token, else mine. `since` resumes after that seq.

        ```python
        async with client.events(all=True) as stream:
            async for event in stream:
                print(event.seq, event.type, event.job and event.job.status)
        ```
        """
        self._check_open()
        selection: dict[str, Any]
        if jobs is not None:
            selection = {"jobs": builtins.list(jobs)}
        elif all or (not mine and self._api.token is not None):
            selection = {"all": True}
        else:
            selection = {"mine": True}
        stream = EventStream(
            self._connect_ws, selection, since=since, policy=self._policy, rand=self._rand
        )
        self._streams.add(stream)
        return stream

    async def wait(
        self,
        job_id: str,
        # The public API's name; asyncio.timeout() can't express "WaitTimeout, job goes on".
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
    ) -> Job:
        """Wait until the job ends; return it if completed.

        Raises JobFailed (permanently_failed), JobCancelled, JobNotFound, or WaitTimeout when
        `timeout` seconds pass first (the job goes on). `on_progress(job)` is called once for
        every change seen, the first snapshot and the final one included. Transport trouble,
        5xx and injected faults are retried until the deadline.
        """
        loop = asyncio.get_running_loop()
        deadline = _deadline(loop, timeout)
        trackers: builtins.list[Tracker] = []
        try:
            async with asyncio.timeout_at(deadline):
                job = await self._wait_terminal(job_id, deadline, on_progress, trackers)
        except TimeoutError as exc:
            seen = [t.job for t in trackers if t.job is not None]
            raise WaitTimeout(timeout or 0.0, [job_id], seen) from exc
        return outcome(job)

    async def wait_many(
        self,
        job_ids: Iterable[str],
        # The public API's name; asyncio.timeout() can't express "WaitTimeout, job goes on".
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
    ) -> builtins.list[Job]:
        """Wait until every job has ended; their final snapshots, in the order given.

        Unlike `wait`, a failed or cancelled job is returned (check `status`), not raised.
        WaitTimeout (listing the unfinished ids) if the one deadline passes first.
        """
        ids = builtins.list(dict.fromkeys(job_ids))
        finished: dict[str, Job] = {}
        async with contextlib.aclosing(self.as_completed(ids, timeout, on_progress)) as jobs:
            async for job in jobs:
                finished[job.id] = job
        return [finished[job_id] for job_id in ids]

    async def as_completed(
        self,
        job_ids: Iterable[str],
        # The public API's name; asyncio.timeout() can't express "WaitTimeout, job goes on".
        timeout: float | None = None,  # noqa: ASYNC109
        on_progress: ProgressCallback | None = None,
    ) -> AsyncGenerator[Job, None]:
        """Yield each job's final snapshot as soon as it ends (any terminal status).

        One deadline covers all: WaitTimeout when it passes with jobs unfinished. Close the
        iterator early with `contextlib.aclosing` (or let the client close) to stop the rest.
        """
        loop = asyncio.get_running_loop()
        ids = builtins.list(dict.fromkeys(job_ids))
        deadline = _deadline(loop, timeout)
        trackers: dict[str, builtins.list[Tracker]] = {job_id: [] for job_id in ids}
        tasks = {
            self._spawn(
                self._wait_terminal(job_id, deadline, on_progress, trackers[job_id])
            ): job_id
            for job_id in ids
        }
        pending = set(tasks)
        try:
            while pending:
                remaining = None if deadline is None else deadline - loop.time()
                done: set[asyncio.Task[Job]] = set()
                if remaining is None or remaining > 0:
                    done, pending = await asyncio.wait(
                        pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                if not done:
                    unfinished = [job_id for task, job_id in tasks.items() if task in pending]
                    seen = [t.job for i in unfinished for t in trackers[i] if t.job is not None]
                    raise WaitTimeout(timeout or 0.0, unfinished, seen)
                for task in sorted(done, key=lambda t: ids.index(tasks[t])):
                    yield task.result()
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> asyncio.Task[Job]:
        self._check_open()
        task: asyncio.Task[Job] = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_terminal(
        self,
        job_id: str,
        deadline: float | None,
        on_progress: ProgressCallback | None,
        trackers: builtins.list[Tracker],
    ) -> Job:
        loop = asyncio.get_running_loop()
        stats = self._stats
        stats.waits += 1
        polled = False

        async def send_poll(request: Request) -> Response:
            stats.polls += 1
            return await self._send(request)

        async def poll(on_job: Any) -> Job | None:
            nonlocal polled
            if not polled:
                polled = True
                stats.waits_polled += 1
            flow = poll_flow(
                self._api,
                job_id,
                policy=self._policy,
                rand=self._rand,
                clock=loop.time,
                deadline=deadline,
                on_job=on_job,
                outcome_only=on_progress is None,  # nobody to tell about progress
            )
            return await drive_async(flow, send_poll)

        return await wait_for_terminal(
            job_id,
            subscription=self._shared(),
            poll=poll,
            grace_s=self._policy.ws_grace_s,
            on_progress=on_progress,
            tracker_out=trackers,
        )


def _deadline(loop: asyncio.AbstractEventLoop, timeout: float | None) -> float | None:
    if timeout is None:
        return None
    if timeout < 0:
        raise ValueError(f"timeout must be >= 0 or None, not {timeout!r}")
    return loop.time() + timeout
