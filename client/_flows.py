"""Multi-step flows written once, as plain generators, and the drivers that run them.

A flow yields what it wants done next, a `Request` to send or a `Sleep`, and receives the
`Response` (or `None` after a sleep). A request that got no answer is thrown into the flow as
`TransportError`. The flow returns its result. This is httpx's `auth_flow` shape: the decisions
live here, the I/O lives in the driver, so the same flow runs under `drive_async` (the client)
and `drive_sync` (tests with a fake clock: no event loop, no real sleeping).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass
from typing import TypeVar

import msgspec

from ._api import Api, error_from
from ._errors import RETRYABLE_STATUSES, APIError, TransportError
from ._models import Job
from ._polling import PollPolicy, Random, next_delay, parse_retry_after, poll_hint
from ._transport import Request, Response

__all__ = ["Flow", "Sleep", "drive_async", "drive_sync", "poll_flow", "request_flow"]

logger = logging.getLogger("dubsim")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Sleep:
    """Wait this long before the flow's next step."""

    seconds: float


Flow = Generator[Request | Sleep, Response | None, T]
Clock = Callable[[], float]


def drive_sync(
    flow: Flow[T],
    send: Callable[[Request], Response],
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Run `flow` with a blocking `send`."""
    try:
        action = next(flow)
        while True:
            if isinstance(action, Sleep):
                sleep(action.seconds)
                action = flow.send(None)
                continue
            try:
                response = send(action)
            except TransportError as exc:
                action = flow.throw(exc)
            else:
                action = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        flow.close()


async def drive_async(
    flow: Flow[T],
    send: Callable[[Request], Awaitable[Response]],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """Run `flow` with an async `send`. The same loop as `drive_sync`, awaiting instead."""
    try:
        action = next(flow)
        while True:
            if isinstance(action, Sleep):
                await sleep(action.seconds)
                action = flow.send(None)
                continue
            try:
                response = await send(action)
            except TransportError as exc:
                action = flow.throw(exc)
            else:
                action = flow.send(response)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        flow.close()


def request_flow(
    request: Request,
    *,
    policy: PollPolicy,
    rand: Random,
    clock: Clock,
    idempotent: bool = True,
) -> Flow[Response]:
    """Send `request`; retry an idempotent one on no answer, 408 or 5xx (`policy.retries` times).

    Returns the last response whatever its status (the caller maps it to a result or an
    error); raises the last TransportError when no try got an answer. A 429 is not retried
    here: it is the caller's to see (RateLimited carries the wait).
    """
    tries = policy.retries + 1 if idempotent else 1
    for attempt in range(tries):
        last = attempt == tries - 1
        try:
            response = _must((yield request))
        except TransportError:
            if last:
                raise
            hint = None
        else:
            if response.status not in _REQUEST_RETRY_STATUSES or last:
                return response
            hint = poll_hint(response.headers, time.time())
            if hint is not None:
                # A plain call has no deadline: don't let a long hint stall it.
                hint = min(hint, policy.backoff.cap)
            logger.debug("retrying %s %s after %s", request.method, request.url, response.status)
        delay = next_delay(
            policy, attempt=attempt, rand=rand, now=clock(), deadline=None, hint=hint
        )
        if delay > 0:
            yield Sleep(delay)
    raise AssertionError("unreachable: the last try returns or raises")  # pragma: no cover


_REQUEST_RETRY_STATUSES = RETRYABLE_STATUSES - {429}


def poll_flow(
    api: Api,
    job_id: str,
    *,
    policy: PollPolicy,
    rand: Random,
    clock: Clock,
    deadline: float | None,
    on_job: Callable[[Job], None],
    wall: Clock = time.time,
    outcome_only: bool = False,
) -> Flow[Job | None]:
    """Poll `GET /v1/jobs/{id}` until the job is terminal (returned) or the deadline (None).

    Every snapshot goes to `on_job` (the caller decides what is news). After the first answer
    it long-polls with `If-None-Match` so the server answers on the change itself; with
    `outcome_only` it long-polls from the first request and only the outcome ends one. If the
    server
    refuses `?wait=`, it polls at the server's hint, else with capped exponential backoff. No
    answer, 408 and 5xx are retried with full-jitter backoff; 429 waits its `Retry-After`;
    404 raises JobNotFound; any other error is raised as is.
    """
    etag: str | None = None
    seen: Job | None = None
    failures = 0  # consecutive requests without a usable answer
    idle = 0  # consecutive plain polls that brought nothing new
    long_poll = policy.long_poll
    while True:
        now = clock()
        if deadline is not None and now >= deadline:
            return None
        # Someone watching progress gets the current state at once; a caller who wants only
        # the outcome long-polls from the first request.
        first_plain = seen is None and not outcome_only
        wait_s = _long_poll_wait(
            policy, long_poll and failures == 0 and not first_plain, now, deadline
        )
        request = api.get_job(job_id, etag=etag, wait=wait_s, until_terminal=outcome_only)
        try:
            response = yield request
        except TransportError as exc:
            logger.debug("poll %s: %s", job_id, exc)
            failures += 1
            delay = next_delay(
                policy, attempt=failures - 1, rand=rand, now=clock(), deadline=deadline
            )
        else:
            response = _must(response)
            status = response.status
            hint = poll_hint(response.headers, wall())
            if status == 200:
                failures = 0
                job = _decode_job(response)
                etag = response.headers.get("etag", etag)
                idle = 0 if job != seen else idle + 1
                seen = job
                on_job(job)
                if job.terminal:
                    return job
                if long_poll and _long_poll_wait(policy, True, clock(), deadline) is not None:
                    continue  # the next long poll asks right away and waits on the server
                delay = next_delay(
                    policy, attempt=idle, rand=rand, now=clock(), deadline=deadline, hint=hint
                )
            elif status == 304:
                failures = 0
                if wait_s is not None:
                    continue  # the long poll ran out with nothing new: ask again
                idle += 1
                delay = next_delay(
                    policy, attempt=idle, rand=rand, now=clock(), deadline=deadline, hint=hint
                )
            elif status == 404:
                raise error_from(response, job_id=job_id)
            elif wait_s is not None and status in (400, 422):
                # This server won't long-poll: fall back to plain polling at its hints.
                logger.debug("poll %s: long poll refused (%s), polling instead", job_id, status)
                long_poll = False
                continue
            elif status in RETRYABLE_STATUSES:
                failures += 1
                retry_after = (
                    parse_retry_after(response.headers.get("retry-after"), wall())
                    if status == 429
                    else None
                )
                delay = next_delay(
                    policy,
                    attempt=failures - 1,
                    rand=rand,
                    now=clock(),
                    deadline=deadline,
                    retry_after=retry_after,
                    hint=hint,
                )
            else:
                raise error_from(response, job_id=job_id)
        if delay > 0:
            yield Sleep(delay)


def _long_poll_wait(
    policy: PollPolicy, enabled: bool, now: float, deadline: float | None
) -> float | None:
    """The `?wait=` seconds for the next request, or None for a plain GET."""
    if not enabled:
        return None
    budget = (
        policy.long_poll_max_s if deadline is None else min(policy.long_poll_max_s, deadline - now)
    )
    if budget < policy.long_poll_min_s:
        return None
    # Whole seconds: the server's limit is in seconds and a rounded wait never overshoots.
    return float(int(budget))


def _decode_job(response: Response) -> Job:
    try:
        return msgspec.json.decode(response.content, type=Job)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise APIError(response.status, "bad_response", f"cannot decode Job: {exc}") from exc


def _must(response: Response | None) -> Response:
    if response is None:
        raise TypeError("a flow's request must be answered with a Response")
    return response
