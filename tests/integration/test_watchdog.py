"""No caller can starve everyone: an attempt has a deadline (ATTEMPT_TIMEOUT_S) past which it
fails with error `timeout` and follows the retry rules; a `stuck` job (a hung remote) holds no
worker; finished jobs expire after JOB_TTL_S."""

from __future__ import annotations

import asyncio

from tests.conftest import ADMIN, ApiFactory, wait_for_status


async def submit(client: object, body: dict[str, object]) -> dict[str, object]:
    resp = await client.post("/v1/jobs", json=body)  # type: ignore[attr-defined]
    assert resp.status == 201, await resp.text()
    job: dict[str, object] = await resp.json()
    return job


async def test_an_attempt_past_its_deadline_fails_with_timeout_and_retries(
    api: ApiFactory,
) -> None:
    client = await api(attempt_timeout_s=0.3, max_attempts=2, retry_delay=0.01)
    job = await submit(client, {"role": "premium", "scenario": {"outcome": "stuck"}})
    final = await wait_for_status(client, str(job["id"]), {"permanently_failed"}, timeout=30)
    assert final["error"]["code"] == "timeout"
    assert final["attempt"] == 2  # the first timeout was retried, by the usual rules
    slow = await submit(client, {"role": "premium", "scenario": {"duration_s": 5}})
    final = await wait_for_status(client, str(slow["id"]), {"failed", "permanently_failed"})
    assert final["error"]["code"] == "timeout"  # a long job is cut the same way


async def test_stuck_jobs_hold_no_worker(api: ApiFactory) -> None:
    client = await api(workers=1, attempt_timeout_s=3600)
    stuck = [
        await submit(
            client, {"role": "premium", "scenario": {"outcome": "stuck", "duration_s": 0.1}}
        )
        for _ in range(4)
    ]
    async with asyncio.timeout(20):  # all four hang in processing (plain reads: nothing moves)
        for job in stuck:
            while (await (await client.get(f"/v1/jobs/{job['id']}")).json())["status"] != (
                "processing"
            ):
                await asyncio.sleep(0.02)
    # with the only worker's "slot" taken by four hung remotes, another user's job still runs
    other = await submit(client, {"role": "free", "scenario": {"duration_s": 0.1}})
    assert (await wait_for_status(client, str(other["id"]), {"completed"}))["status"] == "completed"
    # and the hung ones can still be cancelled
    resp = await client.post(f"/v1/jobs/{stuck[0]['id']}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"


async def test_finished_jobs_expire_after_job_ttl(api: ApiFactory) -> None:
    client = await api(job_ttl_s=0.5)
    done = await submit(client, {"role": "premium", "scenario": {"duration_s": 0.05}})
    running = await submit(client, {"role": "premium", "scenario": {"outcome": "stuck"}})
    await wait_for_status(client, str(done["id"]), {"completed"})
    async with asyncio.timeout(30):
        while (await client.get(f"/v1/jobs/{done['id']}")).status != 404:
            await asyncio.sleep(0.1)
    # an unfinished job never expires
    assert (await client.get(f"/v1/jobs/{running['id']}")).status == 200
