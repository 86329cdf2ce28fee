"""Every plan has quotas: a submission rate for premium too, and a cap on each user's
unfinished jobs; over either, 429 with Retry-After and nothing is created."""

from __future__ import annotations

from typing import Any

from tests.conftest import ADMIN, ApiFactory


async def count(client: Any, user: str) -> int:
    listed = await (await client.get(f"/v1/jobs?user={user}", headers=ADMIN)).json()
    return len(listed["jobs"])


async def test_premium_has_a_submission_rate_too(api: ApiFactory) -> None:
    client = await api(premium_rate_limit=3)
    who = {"X-User-Id": "vip"}
    for _ in range(3):
        resp = await client.post("/v1/jobs", json={"role": "premium"}, headers=who)
        assert resp.status == 201
    resp = await client.post("/v1/jobs", json={"role": "premium"}, headers=who)
    assert resp.status == 429
    body = await resp.json()
    assert body["error"]["code"] == "rate_limited" and "premium" in body["error"]["message"]
    assert 3500 < int(resp.headers["Retry-After"]) <= 3600
    assert await count(client, "vip") == 3
    # the window is the user's: someone else's premium jobs are not counted against it
    resp = await client.post("/v1/jobs", json={"role": "premium"}, headers={"X-User-Id": "b"})
    assert resp.status == 201


async def test_unfinished_jobs_per_user_are_capped(api: ApiFactory) -> None:
    client = await api(max_in_flight=2, rate_limit=100)
    who = {"X-User-Id": "hog"}
    stuck = {"role": "premium", "scenario": {"outcome": "stuck"}}
    ids = []
    for _ in range(2):
        resp = await client.post("/v1/jobs", json=stuck, headers=who)
        assert resp.status == 201
        ids.append((await resp.json())["id"])
    resp = await client.post("/v1/jobs", json=stuck, headers=who)
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert "unfinished" in (await resp.json())["error"]["message"]
    resp = await client.post("/translate", json={"role": "free"}, headers=who)  # legacy too
    assert resp.status == 429
    assert await count(client, "hog") == 2
    # others are not held back by the hog
    resp = await client.post("/v1/jobs", json=stuck, headers={"X-User-Id": "other"})
    assert resp.status == 201
    # once one of the hog's jobs ends, the hog may submit again
    resp = await client.post(f"/v1/jobs/{ids[0]}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200
    resp = await client.post("/v1/jobs", json=stuck, headers=who)
    assert resp.status == 201
