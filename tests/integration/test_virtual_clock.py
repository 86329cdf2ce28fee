"""CLOCK=virtual: time moves only on POST /v1/clock/advance, and every timer follows it.

Each test writes the expected times literally: a job of 3600 s completes at advance 3600 and
not at 3599, a retry is due after RETRY_DELAY, a rate window frees up after an hour, a
finished job expires JOB_TTL_S after it finished, a session dies after 12 h.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.models import parse_iso
from tests.conftest import ADMIN, ApiFactory

START = "2030-01-01T00:00:00Z"
T0 = parse_iso(START)


async def virtual(api: ApiFactory, **overrides: Any) -> TestClient[Any, Any]:
    # the watchdog (ATTEMPT_TIMEOUT_S, 3600 by default) out of the way of hour-long jobs
    settings = {"attempt_timeout_s": 10 * 86_400, **overrides}
    return await api(clock="virtual", clock_start="2030-01-01T00:00:00+00:00", **settings)


async def advance(client: TestClient[Any, Any], seconds: float) -> dict[str, Any]:
    resp = await client.post("/v1/clock/advance", json={"seconds": seconds}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


async def job(client: TestClient[Any, Any], job_id: str) -> dict[str, Any]:
    resp = await client.get(f"/v1/jobs/{job_id}")
    body: dict[str, Any] = await resp.json()
    return body


async def submit(client: TestClient[Any, Any], **body: Any) -> str:
    resp = await client.post("/v1/jobs", json=body, headers={"X-User-Id": "alice"})
    assert resp.status == 201, await resp.text()
    return str((await resp.json())["id"])


async def test_clock_reads_and_advances(api: ApiFactory) -> None:
    client = await virtual(api)
    assert await (await client.get("/v1/clock")).json() == {
        "mode": "virtual",
        "now": "2030-01-01T00:00:00.000Z",
    }
    assert await advance(client, 90) == {"now": "2030-01-01T00:01:30.000Z", "advanced_s": 90}
    assert (await (await client.get("/v1/clock")).json())["now"] == "2030-01-01T00:01:30.000Z"


async def test_an_hour_long_job_completes_at_the_hour_not_before(api: ApiFactory) -> None:
    client = await virtual(api)
    job_id = await submit(client, scenario={"duration_s": 3600})
    await advance(client, 0.001)  # let it start (it claims at once; time stands still)
    started = await job(client, job_id)
    assert started["status"] == "processing"
    assert started["started_at"] == "2030-01-01T00:00:00.000Z"
    assert started["eta"] == "2030-01-01T01:00:00.000Z"

    await advance(client, 3599)
    before = await job(client, job_id)
    assert before["status"] == "processing"
    assert 90 <= before["progress"] <= 99  # progress moved with virtual time

    await advance(client, 1)
    done = await job(client, job_id)
    assert done["status"] == "completed"
    assert done["finished_at"] == "2030-01-01T01:00:00.000Z"


async def test_progress_events_carry_virtual_times(api: ApiFactory) -> None:
    client = await virtual(api)
    job_id = await submit(client, scenario={"duration_s": 3600})
    async with client.get(f"/v1/events?job={job_id}&until=terminal") as stream:
        await advance(client, 3600.001)
        text = (await asyncio.wait_for(stream.content.read(), 30)).decode()
    # progress every 5 % of 3600 s: 180 s of virtual time apart, in order
    times = [
        line.split('"updated_at":"')[1][:24]
        for line in text.splitlines()
        if line.startswith("data:") and '"job.progress"' in line
    ]
    assert times[:3] == [
        "2030-01-01T00:03:00.000Z",
        "2030-01-01T00:06:00.000Z",
        "2030-01-01T00:09:00.000Z",
    ]
    assert '"job.completed"' in text


async def test_retry_backoff_follows_the_clock(api: ApiFactory) -> None:
    client = await virtual(api, retry_delay=50)
    job_id = await submit(client, scenario={"duration_s": 10, "fail_attempts": 1})
    await advance(client, 10.001)
    failed = await job(client, job_id)
    assert failed["status"] == "failed"
    assert failed["not_before"] == "2030-01-01T00:01:00.000Z"  # failed at 10 s, + 50 s
    await advance(client, 49)
    assert (await job(client, job_id))["status"] == "failed"
    await advance(client, 1)  # due: requeued and started again
    again = await job(client, job_id)
    assert again["status"] == "processing"
    assert again["attempt"] == 2
    await advance(client, 10)
    assert (await job(client, job_id))["status"] == "completed"


async def test_the_watchdog_follows_the_clock(api: ApiFactory) -> None:
    client = await virtual(api, attempt_timeout_s=7200, max_attempts=1)
    job_id = await submit(client, scenario={"duration_s": 60, "outcome": "stuck"})
    await advance(client, 7199)
    assert (await job(client, job_id))["status"] == "processing"
    await advance(client, 1.001)
    ended = await job(client, job_id)
    assert ended["status"] == "permanently_failed"
    assert ended["error"]["code"] == "timeout"


async def test_rate_window_resets_after_an_hour(api: ApiFactory) -> None:
    client = await virtual(api, rate_limit=2)
    await submit(client, scenario={"outcome": "stuck"})
    await submit(client, scenario={"outcome": "stuck"})
    resp = await client.post("/v1/jobs", json={}, headers={"X-User-Id": "alice"})
    assert resp.status == 429
    assert resp.headers["RateLimit-Reset"] == "3600"
    await advance(client, 3599)
    assert (await client.post("/v1/jobs", json={}, headers={"X-User-Id": "alice"})).status == 429
    await advance(client, 1)
    assert (await client.post("/v1/jobs", json={}, headers={"X-User-Id": "alice"})).status == 201


async def test_finished_jobs_expire_after_job_ttl(api: ApiFactory) -> None:
    client = await virtual(api, job_ttl_s=86_400)
    job_id = await submit(client, scenario={"duration_s": 1})
    await advance(client, 1)
    assert (await job(client, job_id))["status"] == "completed"
    await advance(client, 86_000)
    assert (await client.get(f"/v1/jobs/{job_id}")).status == 200
    await advance(client, 86_400 * 2)
    assert (await client.get(f"/v1/jobs/{job_id}")).status == 404


async def test_sessions_expire_after_twelve_virtual_hours(api: ApiFactory) -> None:
    client = await virtual(api)
    resp = await client.post("/v1/session", json={"token": ADMIN["Authorization"][7:]})
    assert resp.status == 204
    assert (await (await client.get("/v1/session")).json()) == {"admin": True}
    await advance(client, 12 * 3600 - 1)
    assert (await (await client.get("/v1/session")).json()) == {"admin": True}
    await advance(client, 1)
    assert (await (await client.get("/v1/session")).json()) == {"admin": False}


async def test_advance_is_refused_on_a_real_clock_and_for_bad_seconds(api: ApiFactory) -> None:
    real = await api()
    resp = await real.post("/v1/clock/advance", json={"seconds": 1}, headers=ADMIN)
    assert resp.status == 409
    assert (await resp.json())["error"]["code"] == "conflict"
    assert (await (await real.get("/v1/clock")).json())["mode"] == "real"

    client = await virtual(api)
    for bad in [{"seconds": 0}, {"seconds": -5}, {"seconds": "1"}, {}, {"seconds": 1e12}]:
        resp = await client.post("/v1/clock/advance", json=bad, headers=ADMIN)
        assert resp.status == 422, bad
    resp = await client.post("/v1/clock/advance", json={"seconds": 5})
    assert resp.status == 401
    assert (await (await client.get("/v1/clock")).json())["now"] == "2030-01-01T00:00:00.000Z"


@pytest.mark.parametrize("backend", ["sqlite"], indirect=True)
async def test_three_days_of_sleeps_take_well_under_the_real_time(api: ApiFactory) -> None:
    client = await virtual(api, workers=2)
    ids = [await submit(client, scenario={"duration_s": 86_400}) for _ in range(3)]
    await advance(client, 3 * 86_400 + 1)
    # two workers: two finish after a day, the third after two
    for job_id in ids:
        assert (await job(client, job_id))["status"] == "completed"
    finished = sorted([(await job(client, i))["finished_at"] for i in ids])
    assert finished[2].startswith("2030-01-03T00:00:00")


async def test_two_processes_on_one_redis_share_one_virtual_time(
    aiohttp_client: Any, redis_url: str
) -> None:
    from service.app import create_app
    from tests.conftest import make_settings

    def settings(start: str) -> Any:
        return make_settings(
            redis_url=redis_url,
            clock="virtual",
            clock_start=start,
            attempt_timeout_s=10 * 86_400,
            workers=1,
        )

    first = await aiohttp_client(create_app(settings("2030-01-01T00:00:00+00:00")))
    # the second adopts the service's time, whatever its own CLOCK_START says
    second = await aiohttp_client(create_app(settings("2040-06-01T00:00:00+00:00")))
    for client in (first, second):
        state = await (await client.get("/v1/clock")).json()
        assert state == {"mode": "virtual", "now": "2030-01-01T00:00:00.000Z"}

    # two hour-long jobs, one worker each: wherever each runs, the advance on one process
    # moves both, and returns once both have run what came due
    ids = [await submit(first, scenario={"duration_s": 3600}) for _ in range(2)]
    await advance(second, 3599)
    for client in (first, second):
        assert (await (await client.get("/v1/clock")).json())["now"] == "2030-01-01T00:59:59.000Z"
        for job_id in ids:
            assert (await job(client, job_id))["status"] == "processing"
    await advance(second, 1)
    for client in (first, second):
        for job_id in ids:
            done = await job(client, job_id)
            assert done["status"] == "completed"
            assert done["finished_at"] == "2030-01-01T01:00:00.000Z"


async def test_a_restart_keeps_the_virtual_time(aiohttp_client: Any, tmp_path: Any) -> None:
    from service.app import create_app
    from tests.conftest import make_settings

    def settings(start: str) -> Any:
        return make_settings(db=str(tmp_path / "v.db"), clock="virtual", clock_start=start)

    first = await aiohttp_client(create_app(settings("2030-01-01T00:00:00+00:00")))
    await advance(first, 3600)
    await first.close()
    # the stored time wins over CLOCK_START: time never goes back under the stored jobs
    second = await aiohttp_client(create_app(settings("2020-01-01T00:00:00+00:00")))
    assert (await (await second.get("/v1/clock")).json())["now"] == "2030-01-01T01:00:00.000Z"


async def test_redis_rate_windows_expire_in_real_time_only_under_a_real_clock(
    aiohttp_client: Any, redis_url: str
) -> None:
    import redis.asyncio as aioredis

    from service.app import create_app
    from tests.conftest import make_settings

    real = await aiohttp_client(create_app(make_settings(redis_url=redis_url)))
    await submit(real, scenario={"outcome": "stuck"})
    await real.close()
    conn = aioredis.from_url(redis_url)
    try:
        assert 0 < await conn.ttl("dubsim:hits:alice") <= 3600
        await conn.flushall()
        virtual_app = await aiohttp_client(
            create_app(make_settings(redis_url=redis_url, clock="virtual"))
        )
        await submit(virtual_app, scenario={"outcome": "stuck"})
        # a real expiry would forget hits the virtual window still holds
        assert await conn.ttl("dubsim:hits:alice") == -1
    finally:
        await conn.aclose()
