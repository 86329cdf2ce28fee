"""AsyncClient against the real in-process server: every method, and wait() in bad weather."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import WSCloseCode, web
from aiohttp.test_utils import TestServer

from client import (
    AiohttpTransport,
    AsyncClient,
    Backoff,
    Conflict,
    InvalidRequest,
    Job,
    JobCancelled,
    JobFailed,
    JobNotFound,
    PollPolicy,
    RateLimited,
    TransportError,
    Unauthorized,
    WaitTimeout,
    WebSocketConnection,
)
from service.app import create_app
from service.appkeys import SOCKETS
from tests.conftest import ADMIN_TOKEN, free_port, make_settings

# Quick reconnects and backoff so bad-weather tests finish fast; timeouts stay generous.
QUICK = PollPolicy(
    backoff=Backoff(base=0.05, cap=0.5),
    reconnect=Backoff(base=0.05, cap=0.5),
)

ServerFactory = Callable[..., Awaitable[TestServer]]


@pytest.fixture
def serve(aiohttp_server: Any) -> ServerFactory:
    """`server = await serve(error_rate=0.5)`: a fresh app with test settings."""

    async def factory(port: int | None = None, **overrides: Any) -> TestServer:
        app = create_app(make_settings(**overrides))
        kwargs = {"port": port} if port is not None else {}
        return await aiohttp_server(app, **kwargs)  # type: ignore[no-any-return]

    return factory


def url(server: TestServer) -> str:
    return str(server.make_url("")).rstrip("/")


@pytest.fixture
async def admin(serve: ServerFactory) -> AsyncIterator[AsyncClient]:
    server = await serve(rate_limit=1000)
    async with AsyncClient(url(server), token=ADMIN_TOKEN, user_id="alice", policy=QUICK) as c:
        yield c


async def ws_subscribers(client: AsyncClient) -> dict[str, float]:
    """The server's `dubsim_subscribers{transport=...}` gauge, by transport."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(client.base_url + "/metrics") as resp,
    ):
        text = await resp.text()
    found = re.findall(r'dubsim_subscribers\{transport="(\w+)"\} ([0-9.e+]+)', text)
    return {name: float(value) for name, value in found}


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


# ---- every method ------------------------------------------------------------------


async def test_submit_get_list_and_identity(admin: AsyncClient) -> None:
    job = await admin.submit(role="premium", target_language="de", idempotency_key="k-1")
    again = await admin.submit(role="premium", target_language="de", idempotency_key="k-1")
    assert again.id == job.id  # the key made the retry safe
    assert job.role == "premium" and job.target_language == "de" and job.user_id == "alice"
    assert (await admin.get(job.id)).id == job.id
    bob = await admin.submit(user_id="bob")
    assert bob.user_id == "bob"
    for _ in range(3):
        await admin.submit()
    listed = [j.id async for j in admin.list(page_size=2)]  # three pages at least
    assert len(listed) == 5 and set(listed) >= {job.id, bob.id}
    assert [j.id async for j in admin.list(user="bob")] == [bob.id]
    with pytest.raises(JobNotFound):
        await admin.get("no-such-job")


async def test_cancel_retry_process_cleanup(serve: ServerFactory) -> None:
    server = await serve(auto_process=False)
    async with AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK) as c:
        first = await c.submit(scenario={"outcome": "permanently_failed", "duration_s": 0.05})
        second = await c.submit()
        started = await c.process(count=1)
        assert [j.id for j in started] == [first.id]
        with pytest.raises(JobFailed):
            await c.wait(first.id, timeout=20)
        requeued = await c.retry(first.id)
        assert requeued.status == "pending"
        cancelled = await c.cancel(second.id, reason="not needed")
        assert cancelled.status == "cancelled" and cancelled.cancel_reason == "not needed"
        with pytest.raises(Conflict):
            await c.cancel(second.id)
        with pytest.raises(Conflict):
            await c.retry(second.id)
        assert await c.cleanup() == 1  # the cancelled one; the requeued one isn't finished
        with pytest.raises(JobNotFound):
            await c.get(second.id)
        assert await c.cleanup(older_than_s=3600) == 0


async def test_config_and_admin_errors(serve: ServerFactory) -> None:
    server = await serve()
    async with AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK) as c:
        assert (await c.config()).translation_delay == pytest.approx(0.2)
        updated = await c.update_config(error_rate=0.5, workers=2)
        assert updated.error_rate == 0.5 and updated.workers == 2
        with pytest.raises(InvalidRequest) as info:
            await c.update_config(error_rate=2)
        assert info.value.status == 422
        assert (await c.config()).error_rate == 0.5  # nothing changed
    async with AsyncClient(url(server), policy=QUICK) as anonymous:
        with pytest.raises(Unauthorized):
            await anonymous.update_config(error_rate=0)
    async with AsyncClient(url(server), token="wrong-token", policy=QUICK) as wrong:
        with pytest.raises(Unauthorized):
            await wrong.process()


async def test_rate_limited_submit(serve: ServerFactory) -> None:
    server = await serve(rate_limit=1)
    async with AsyncClient(url(server), user_id="free-user", policy=QUICK) as c:
        await c.submit()
        with pytest.raises(RateLimited) as info:
            await c.submit()
    assert info.value.retry_after is not None and info.value.retry_after > 0


async def test_events_stream_and_resume(admin: AsyncClient) -> None:
    job = await admin.submit(role="premium")
    seen: list[str] = []
    async with admin.events(jobs=[job.id]) as stream:
        async for event in stream:
            seen.append(event.type)
            if event.job is not None and event.job.terminal:
                break
        last = stream.seq
    assert seen[0] == "snapshot" and seen[-1] == "job.completed"
    assert last is not None
    # Resuming after the last seq replays nothing old: the next event is a new one.
    await admin.cancel((await admin.submit(scenario={"outcome": "stuck"})).id)
    async with admin.events(all=True, since=last) as stream:
        first = await anext(stream)
    assert first.seq > last and first.type == "job.created"


async def test_a_ready_stream_misses_nothing_after_it_even_across_a_drop(
    serve: ServerFactory,
) -> None:
    """`ready()` returns once the server holds the subscription, at a seq the stream resumes
    from: cut at once by the server, it still tells a job made right after as `job.created`
    (a lazy first connection, or a reconnect from nowhere, would start with the job's
    snapshot instead)."""
    server = await serve(rate_limit=1000)
    client = AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK)
    async with client as c, c.events(all=True) as stream:
        await stream.ready()
        ready_at = stream.seq
        assert ready_at is not None
        for ws in list(server.app[SOCKETS]):
            if isinstance(ws, web.WebSocketResponse):
                await ws.close(code=WSCloseCode.SERVICE_RESTART)
        job = await c.submit(scenario={"outcome": "stuck"})
        event = await asyncio.wait_for(anext(stream), 20)
    assert (event.type, event.job and event.job.id) == ("job.created", job.id)
    assert event.seq > ready_at


async def test_all_events_need_the_admin_token(serve: ServerFactory) -> None:
    server = await serve()
    async with AsyncClient(url(server), policy=QUICK) as c:
        with pytest.raises(Unauthorized):
            async with c.events(all=True) as stream:
                await anext(stream)


async def users_events_until(stream: Any, job_id: str) -> set[str]:
    """The owners of every job the stream tells about, up to and including `job_id`."""
    owners: set[str] = set()
    async with asyncio.timeout(20):
        async for event in stream:
            if event.job is not None:
                owners.add(event.job.user_id)
                if event.job.id == job_id:
                    return owners
    raise AssertionError("the stream ended")


async def test_mine_events_carry_only_the_users_own_jobs(serve: ServerFactory) -> None:
    """mine=True means the user's jobs, even for a client holding the admin token."""
    server = await serve(rate_limit=1000)
    stuck = {"outcome": "stuck"}
    async with (
        AsyncClient(url(server), token=ADMIN_TOKEN, user_id="alice", policy=QUICK) as admin,
        AsyncClient(url(server), user_id="mia", policy=QUICK) as mia,
    ):
        await admin.submit(user_id="bob", scenario=stuck)  # before: not in any snapshot
        async with admin.events(mine=True) as alices, mia.events(mine=True) as mias:
            await admin.submit(user_id="bob", scenario=stuck)  # after: not in any event
            own = await admin.submit(scenario=stuck)
            hers = await mia.submit(scenario=stuck)
            assert await users_events_until(alices, own.id) == {"alice"}
            assert await users_events_until(mias, hers.id) == {"mia"}


# ---- wait() ------------------------------------------------------------------------


async def test_wait_on_a_finished_job_returns_at_once(admin: AsyncClient) -> None:
    job = await admin.submit(role="premium", scenario={"duration_s": 0.05})
    done = await admin.wait(job.id, timeout=20)
    assert done.status == "completed" and done.result_url
    calls: list[Job] = []
    again = await admin.wait(job.id, timeout=20, on_progress=calls.append)
    assert again == done and calls == [done]


async def test_wait_through_progress_sees_each_change_once(admin: AsyncClient) -> None:
    job = await admin.submit(scenario={"duration_s": 0.6, "fail_attempts": 1})
    seen: list[Job] = []
    done = await admin.wait(job.id, timeout=30, on_progress=seen.append)
    assert done.status == "completed" and done.attempt == 2
    assert seen[-1] == done
    assert "failed" in {j.status for j in seen}  # a retried attempt is progress, not an end
    keys = [(j.status, j.progress, j.attempt, j.updated_at) for j in seen]
    assert len(keys) == len(set(keys))


async def test_wait_on_a_stuck_job_times_out_and_the_job_goes_on(admin: AsyncClient) -> None:
    job = await admin.submit(scenario={"outcome": "stuck"})
    with pytest.raises(WaitTimeout) as info:
        await admin.wait(job.id, timeout=0.5)
    assert info.value.job_ids == [job.id] and info.value.timeout == 0.5
    assert (await admin.get(job.id)).status in ("pending", "processing")


async def test_wait_raises_job_failed(admin: AsyncClient) -> None:
    job = await admin.submit(scenario={"outcome": "failed", "duration_s": 0.05})
    with pytest.raises(JobFailed) as info:
        await admin.wait(job.id, timeout=30)
    assert info.value.job.status == "permanently_failed" and info.value.job.error is not None


async def test_wait_raises_job_cancelled(admin: AsyncClient) -> None:
    job = await admin.submit(scenario={"outcome": "stuck"})
    waiting = asyncio.create_task(admin.wait(job.id, timeout=30))
    await admin.cancel(job.id, reason="changed my mind")
    with pytest.raises(JobCancelled) as info:
        await waiting
    assert info.value.job.cancel_reason == "changed my mind"


async def test_wait_on_an_unknown_job(admin: AsyncClient) -> None:
    with pytest.raises(JobNotFound):
        await admin.wait("no-such-job", timeout=30)


async def test_hundred_waits_share_one_socket(serve: ServerFactory) -> None:
    server = await serve(auto_process=False, workers=20)
    async with AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK) as c:
        jobs = [await c.submit(role="premium", scenario={"duration_s": 0.05}) for _ in range(100)]
        snapshots: set[str] = set()
        waits = [
            asyncio.create_task(c.wait(j.id, timeout=60, on_progress=lambda j: snapshots.add(j.id)))
            for j in jobs
        ]
        await eventually(lambda: len(snapshots) == 100)  # every wait has its snapshot
        gauge = await ws_subscribers(c)
        assert gauge["ws"] == 1 and gauge["poll"] == 0
        await c.process(count=100)
        done = await asyncio.gather(*waits)
    assert {j.status for j in done} == {"completed"}


async def test_cancelling_a_wait_unsubscribes(admin: AsyncClient) -> None:
    job = await admin.submit(scenario={"outcome": "stuck"})
    seen = asyncio.Event()
    waiting = asyncio.create_task(admin.wait(job.id, on_progress=lambda _: seen.set()))
    await asyncio.wait_for(seen.wait(), 10)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    # The socket stays (for the next wait) but carries nothing for that job any more.
    other = await admin.submit(role="premium", scenario={"duration_s": 0.05})
    assert (await admin.wait(other.id, timeout=20)).status == "completed"
    await admin.cancel(job.id)


async def test_socket_closed_mid_wait_polls_then_resumes(
    serve: ServerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="dubsim")
    server = await serve()
    async with AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK) as c:
        job = await c.submit(role="premium", scenario={"duration_s": 2.0})
        seen: list[Job] = []
        live = asyncio.Event()

        def on_progress(j: Job) -> None:
            seen.append(j)
            if j.status == "processing":
                live.set()

        waiting = asyncio.create_task(c.wait(job.id, timeout=60, on_progress=on_progress))
        await asyncio.wait_for(live.wait(), 10)
        caplog.clear()
        for ws in list(server.app[SOCKETS]):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"test")
        done = await waiting
        log = caplog.text
    assert done.status == "completed"
    assert re.search(rf"GET \S+/v1/jobs/{re.escape(job.id)}\S* -> 200", log), log
    assert "websocket connected (2 so far)" in log
    keys = [(j.status, j.progress, j.updated_at) for j in seen]
    assert len(keys) == len(set(keys))
    assert seen[-1] == done


async def test_server_down_at_first_then_up_within_the_deadline(
    serve: ServerFactory, tmp_path: Path
) -> None:
    port = free_port()
    db = str(tmp_path / "restart.db")
    first = await serve(port=port, db=db, auto_process=False)
    async with AsyncClient(url(first), policy=QUICK) as c:
        job = await c.submit(role="premium", scenario={"duration_s": 0.1})
        await first.close()
        waiting = asyncio.create_task(c.wait(job.id, timeout=60))
        with pytest.raises(TransportError):
            await c.get(job.id)  # really down
        await serve(port=port, db=db, auto_process=True)
        done = await waiting
    assert done.status == "completed"


class _NoWebSocket(AiohttpTransport):
    """A network where WebSockets never get through (a proxy that strips upgrades)."""

    async def connect_websocket(self, url: str, headers: Any) -> WebSocketConnection:
        raise TransportError("upgrades blocked")


@pytest.mark.parametrize("websocket", [True, False], ids=["socket", "polling-only"])
async def test_injected_read_faults_still_give_the_right_outcome(
    serve: ServerFactory, websocket: bool
) -> None:
    server = await serve(fault_rate=0.5, fault_stall_s=0.02)
    transport = AiohttpTransport() if websocket else _NoWebSocket()
    async with AsyncClient(url(server), token=ADMIN_TOKEN, policy=QUICK, transport=transport) as c:
        ok = await c.submit(role="premium", scenario={"duration_s": 0.3})
        bad = await c.submit(role="premium", scenario={"outcome": "permanently_failed"})
        assert (await c.wait(ok.id, timeout=60)).status == "completed"
        with pytest.raises(JobFailed):
            await c.wait(bad.id, timeout=60)
    # Plain reads retry too: with enough tries a 50 % fault rate doesn't show (p = 2**-13).
    patient = PollPolicy(backoff=Backoff(base=0.01, cap=0.05), retries=12)
    async with AsyncClient(url(server), policy=patient) as c:
        assert (await c.get(ok.id)).status == "completed"


async def test_wait_many_and_as_completed(admin: AsyncClient) -> None:
    fast = await admin.submit(role="premium", scenario={"duration_s": 0.05})
    failing = await admin.submit(role="premium", scenario={"outcome": "permanently_failed"})
    slow = await admin.submit(role="premium", scenario={"duration_s": 0.8})
    jobs = await admin.wait_many([slow.id, fast.id, failing.id], timeout=30)
    assert [j.id for j in jobs] == [slow.id, fast.id, failing.id]
    assert [j.status for j in jobs] == ["completed", "completed", "permanently_failed"]

    stuck = await admin.submit(scenario={"outcome": "stuck"})
    order: list[str] = []
    with pytest.raises(WaitTimeout) as info:
        async for job in admin.as_completed([stuck.id, fast.id], timeout=1.0):
            order.append(job.id)
    assert order == [fast.id] and info.value.job_ids == [stuck.id]
