"""The seed-era routes, driven the way the two old clients drive them (docs/legacy.md).

Client A: POST /translate, then GET /status in a loop until a terminal word; any HTTP error
counts against it. Client B: POST /start without a body, then GET /status until `result` is
completed or error. Delays are short and every wait is a bounded poll loop, never a long sleep.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import ADMIN, ApiFactory, ServerProcess, wait_for_status

A_TERMINAL = {"completed", "failed", "permanently failed", "cancelled"}  # what client A stops on
FINAL = {"completed", "permanently_failed", "cancelled"}
UNAUTHORIZED = {"message": "Unauthorized access", "status": "failed"}
NOT_FOUND = {"message": "Job ID not found", "status": "failed"}
GROUPS = {"pending", "completed", "cancelled", "failed", "permanently_failed"}


async def translate(client: Any, role: str | None = "free", user: str = "anonymous") -> Any:
    body = {} if role is None else {"role": role}
    return await client.post("/translate", json=body, headers={"X-User-Id": user})


async def poll_like_client_a(
    client: Any, job_id: str, interval: float = 0.03, timeout: float = 10.0
) -> tuple[dict[str, Any], list[str]]:
    """GET /status until a terminal word; fail on any HTTP error or unknown word."""
    seen: list[str] = []
    async with asyncio.timeout(timeout):
        while True:
            resp = await client.get(f"/status/{job_id}")
            assert resp.status < 400, await resp.text()
            data: dict[str, Any] = await resp.json()
            seen.append(data["status"])
            if data["status"] in A_TERMINAL:
                return data, seen
            assert data["status"] == "pending", data  # any other word: client A gives up
            assert data["result"] == "pending"
            # the server's poll hint, in whole seconds and in ms, saying the same thing
            hint_ms = int(resp.headers["X-Poll-After-Ms"])
            assert int(resp.headers["Retry-After"]) == max(1, math.ceil(hint_ms / 1000))
            await asyncio.sleep(interval)


async def poll_like_client_b(client: Any, job_id: str) -> dict[str, Any]:
    """GET /status with doubling backoff (scaled down) until result completed or error."""
    delay = 0.01
    for _ in range(12):
        resp = await client.get(f"/status/{job_id}")
        assert resp.status == 200  # client B treats any HTTP error as "server offline"
        data: dict[str, Any] = await resp.json()
        if data["result"] in ("completed", "error"):
            return data
        await asyncio.sleep(delay)
        delay = min(delay * 2, 0.5)
    raise AssertionError("client B would have given up")


async def legacy_jobs(client: Any, **headers: str) -> dict[str, dict[str, dict[str, Any]]]:
    resp = await client.get("/jobs", headers=headers)
    assert resp.status == 200
    return await resp.json()  # type: ignore[no-any-return]


def group_of(jobs: dict[str, dict[str, dict[str, Any]]], job_id: str) -> tuple[str, str]:
    found = [(g, r) for g, roles in jobs.items() for r, ids in roles.items() if job_id in ids]
    assert len(found) == 1, found
    return found[0]


async def v1_submit(client: Any, body: dict[str, Any], user: str = "anonymous") -> str:
    resp = await client.post("/v1/jobs", json=body, headers={"X-User-Id": user})
    assert resp.status == 201, await resp.text()
    return (await resp.json())["id"]  # type: ignore[no-any-return]


# ---- client A ---------------------------------------------------------------------------


async def test_client_a_submits_and_polls_until_completed(api: ApiFactory) -> None:
    client = await api(translation_delay=0.2)
    resp = await translate(client, "premium", user="alice")
    assert resp.status == 201
    body = await resp.json()
    assert set(body) == {"job_id", "role", "priority"}
    assert body["role"] == "premium" and body["priority"] == 1
    final, seen = await poll_like_client_a(client, body["job_id"])
    assert final == {
        "job_id": body["job_id"],
        "status": "completed",
        "result": "completed",
        "progress": 100,
    }
    assert seen[0] == "pending"  # pending and processing both read as pending
    resp = await client.get(f"/status/{body['job_id']}")
    assert "Retry-After" not in resp.headers  # final: no poll hint
    job = await (await client.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["user_id"] == "alice"  # the same job, seen through v1


async def test_translate_defaults_to_free_and_refuses_bad_input(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    for role in (None, "free"):
        resp = await translate(client, role)
        assert resp.status == 201
        body = await resp.json()
        assert body == {"job_id": body["job_id"], "role": "free", "priority": 0}
    empty = await client.post("/translate")  # no body at all: free, like a missing role
    assert empty.status == 201 and (await empty.json())["role"] == "free"
    bad = [
        {"json": {"role": "gold"}},
        {"json": {"role": 5}},
        {"json": ["premium"]},
        {"data": b"{not json", "headers": {"Content-Type": "application/json"}},
        {"json": {}, "headers": {"X-User-Id": "x" * 500}},
    ]
    for kwargs in bad:
        resp = await client.post("/translate", **kwargs)
        assert resp.status == 400, kwargs
        data = await resp.json()
        assert data["status"] == "failed" and data["message"] and "error" not in data
    huge = await client.post(
        "/translate", data=b"x" * (65 * 1024), headers={"Content-Type": "application/json"}
    )
    assert huge.status == 413 and (await huge.json())["status"] == "failed"
    everyone = await legacy_jobs(client, **ADMIN)
    assert sum(len(ids) for roles in everyone.values() for ids in roles.values()) == 3


async def test_sixth_free_submission_in_an_hour_is_429_with_the_legacy_body(
    api: ApiFactory,
) -> None:
    client = await api(auto_process=False)
    for i in range(5):
        resp = await translate(client, "free", user="frank")
        assert resp.status == 201
        assert resp.headers["RateLimit-Remaining"] == str(4 - i)
    resp = await translate(client, "free", user="frank")
    assert resp.status == 429
    assert await resp.json() == {"message": "Rate limit exceeded", "status": "failed"}
    assert int(resp.headers["Retry-After"]) > 3500
    assert resp.headers["RateLimit-Limit"] == "5" and resp.headers["RateLimit-Remaining"] == "0"
    assert int(resp.headers["RateLimit-Reset"]) > 3500
    # premium is not limited, and the window is per user
    assert (await translate(client, "premium", user="frank")).status == 201
    assert (await translate(client, "free", user="grace")).status == 201


async def test_unknown_id_is_a_legacy_404(api: ApiFactory) -> None:
    client = await api()
    resp = await client.get("/status/no-such-job")
    assert resp.status == 404 and await resp.json() == NOT_FOUND
    resp = await client.post("/cancel/no-such-job", json={"reason": "x"}, headers=ADMIN)
    assert resp.status == 404 and await resp.json() == NOT_FOUND


async def test_a_failed_attempt_awaiting_retry_reads_pending(api: ApiFactory) -> None:
    client = await api(retry_delay=0.5)  # the failed state lasts long enough to be seen
    job_id = await v1_submit(client, {"scenario": {"duration_s": 0.2, "fail_attempts": 1}})
    failed = await wait_for_status(client, job_id, {"failed"})
    assert failed["attempt"] == 1
    resp = await client.get(f"/status/{job_id}")
    assert await resp.json() == {
        "job_id": job_id,
        "status": "pending",
        "result": "pending",
        "progress": failed["progress"],
    }
    assert "Retry-After" in resp.headers
    final, seen = await poll_like_client_a(client, job_id)
    assert final["status"] == "completed" and "failed" not in seen
    assert (await (await client.get(f"/v1/jobs/{job_id}")).json())["attempt"] == 2


async def test_permanently_failed_reads_with_a_space_and_result_error(api: ApiFactory) -> None:
    client = await api()
    job_id = await v1_submit(
        client, {"scenario": {"duration_s": 0.05, "outcome": "permanently_failed"}}
    )
    final, _ = await poll_like_client_a(client, job_id)
    assert final["status"] == "permanently failed" and final["result"] == "error"
    jobs = await legacy_jobs(client)
    assert group_of(jobs, job_id) == ("permanently_failed", "free")


async def test_cancel_needs_the_admin_token(api: ApiFactory) -> None:
    client = await api()
    job_id = await v1_submit(client, {"scenario": {"outcome": "stuck", "duration_s": 1}})
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic abc"}):
        resp = await client.post(f"/cancel/{job_id}", json={"reason": "x"}, headers=headers)
        assert resp.status == 401 and await resp.json() == UNAUTHORIZED
    resp = await client.post(f"/cancel/{job_id}", json={"reason": "user asked"}, headers=ADMIN)
    assert resp.status == 200
    body = await resp.json()
    assert body["status"] == "success" and body["reason"] == "user asked"
    assert job_id in body["message"]
    final, _ = await poll_like_client_a(client, job_id)
    assert final["status"] == "cancelled" and final["result"] == "error"
    again = await client.post(f"/cancel/{job_id}", headers=ADMIN)
    assert again.status == 400
    assert (await again.json())["status"] == "failed"
    assert "cancelled" in (await again.json())["message"]


async def test_cancel_a_completed_job_is_400(api: ApiFactory) -> None:
    client = await api()
    job_id = (await (await translate(client, "premium")).json())["job_id"]
    await poll_like_client_a(client, job_id)
    resp = await client.post(f"/cancel/{job_id}", json={"reason": "too late"}, headers=ADMIN)
    assert resp.status == 400
    body = await resp.json()
    assert body["status"] == "failed" and "completed" in body["message"]
    assert (await (await client.get(f"/status/{job_id}")).json())["status"] == "completed"


@pytest.mark.parametrize(
    ("data", "ctype", "reason"),
    [
        (b'{"reason": "from curl"}', "application/x-www-form-urlencoded", "from curl"),
        (b'{"reason": "no type"}', None, "no type"),
        (b'{"reason": "plain"}', "text/plain", "plain"),
        (b"", "application/x-www-form-urlencoded", "cancelled by admin"),
        (None, None, "cancelled by admin"),
    ],
)
async def test_cancel_reads_json_whatever_the_content_type(
    api: ApiFactory, data: bytes | None, ctype: str | None, reason: str
) -> None:
    """`curl -X POST -H 'Authorization: Bearer T' -d '{"reason": ...}' .../cancel/ID`"""
    client = await api()
    job_id = await v1_submit(client, {"scenario": {"outcome": "stuck", "duration_s": 1}})
    headers = {**ADMIN, **({"Content-Type": ctype} if ctype else {})}
    resp = await client.post(f"/cancel/{job_id}", data=data, headers=headers)
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["reason"] == reason
    job = await (await client.get(f"/v1/jobs/{job_id}")).json()
    assert job["status"] == "cancelled" and job["cancel_reason"] == reason


async def test_cancel_with_a_bad_body_is_400_and_changes_nothing(api: ApiFactory) -> None:
    client = await api()
    job_id = await v1_submit(client, {"scenario": {"outcome": "stuck", "duration_s": 1}})
    for data in (b"{oops", b'{"reason": 5}', b'{"reason": "' + b"r" * 600 + b'"}'):
        resp = await client.post(
            f"/cancel/{job_id}",
            data=data,
            headers={**ADMIN, "Content-Type": "application/x-www-form-urlencoded"},
        )
        assert resp.status == 400, data
        assert (await resp.json())["status"] == "failed"
    assert (await (await client.get(f"/v1/jobs/{job_id}")).json())["status"] != "cancelled"


# ---- GET /jobs ------------------------------------------------------------------------


async def test_jobs_are_grouped_by_old_status_then_role(api: ApiFactory) -> None:
    client = await api(auto_process=False, retry_delay=30, rate_limit=100)

    async def started(body: dict[str, Any]) -> str:
        job_id = await v1_submit(client, body, user="a")
        resp = await client.post("/process", headers=ADMIN)
        assert (await resp.json())["job_id"] == job_id
        return job_id

    completed = await started({"role": "premium", "scenario": {"duration_s": 0.05}})
    broken = await started(
        {"role": "premium", "scenario": {"duration_s": 0.05, "outcome": "permanently_failed"}}
    )
    retrying = await started(
        {"role": "premium", "scenario": {"duration_s": 0.05, "fail_attempts": 1}}
    )
    await wait_for_status(client, completed, FINAL)
    await wait_for_status(client, broken, FINAL)
    await wait_for_status(client, retrying, {"failed"})
    running = await started({"role": "premium", "scenario": {"outcome": "stuck", "duration_s": 1}})
    queued = (await (await translate(client, "free", user="a")).json())["job_id"]
    cancelled = (await (await translate(client, "free", user="a")).json())["job_id"]
    assert (await client.post(f"/cancel/{cancelled}", headers=ADMIN)).status == 200
    other = (await (await translate(client, "premium", user="b")).json())["job_id"]

    everyone = await legacy_jobs(client, **ADMIN)
    assert set(everyone) == GROUPS
    assert all(set(roles) == {"free", "premium"} for roles in everyone.values())
    assert group_of(everyone, completed) == ("completed", "premium")
    assert group_of(everyone, broken) == ("permanently_failed", "premium")
    assert group_of(everyone, retrying) == ("failed", "premium")
    assert group_of(everyone, running) == ("pending", "premium")  # processing reads as pending
    assert group_of(everyone, queued) == ("pending", "free")
    assert group_of(everyone, cancelled) == ("cancelled", "free")
    assert group_of(everyone, other) == ("pending", "premium")
    job = everyone["pending"]["premium"][running]
    assert job["id"] == running and job["status"] == "processing"  # the v1 snapshot

    # without the token a caller sees its own jobs only, in the same full shape
    mine = await legacy_jobs(client, **{"X-User-Id": "b"})
    assert set(mine) == GROUPS and all(set(r) == {"free", "premium"} for r in mine.values())
    assert [i for roles in mine.values() for ids in roles.values() for i in ids] == [other]
    anonymous = await legacy_jobs(client)
    assert all(ids == {} for roles in anonymous.values() for ids in roles.values())
    resp = await client.get("/jobs", headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401 and await resp.json() == UNAUTHORIZED


# ---- config, cleanup, manual processing ---------------------------------------------


async def test_config_get_and_post_with_upper_case_keys(api: ApiFactory) -> None:
    client = await api(translation_delay=0.2, error_rate=0.0, rate_limit=5)
    before = await (await client.get("/config")).json()
    assert before == {"TRANSLATION_DELAY": 0.2, "ERROR_RATE": 0.0, "RATE_LIMIT": 5}
    resp = await client.post("/config", json={"TRANSLATION_DELAY": 0.1, "RATE_LIMIT": 1})
    assert resp.status == 401 and await resp.json() == UNAUTHORIZED  # admin, like its v1 twin
    assert await (await client.get("/config")).json() == before
    resp = await client.post(
        "/config", json={"TRANSLATION_DELAY": 0.1, "RATE_LIMIT": 1}, headers=ADMIN
    )
    assert resp.status == 200
    answer = await resp.json()
    assert answer["message"]
    assert {k: answer[k] for k in before} == {
        "TRANSLATION_DELAY": 0.1,
        "ERROR_RATE": 0.0,
        "RATE_LIMIT": 1,
    }
    v1 = await (await client.get("/v1/config")).json()
    assert v1["translation_delay"] == 0.1 and v1["rate_limit"] == 1  # one config, not two
    assert (await translate(client, "free", user="c")).status == 201
    assert (await translate(client, "free", user="c")).status == 429  # the new limit applies

    current = await (await client.get("/config")).json()
    for body in (
        {"ERROR_RATE": 2},
        {"ERROR_RATE": 0.5, "TRANSLATION_DELAY": -1},  # one bad value: nothing changes
        {"RATE_LIMIT": "many"},
        {"RATE_LIMIT": 1.5},
        {"WORKERS": 1},  # v1-only settings stay behind PATCH /v1/config
        {"translation_delay": 1},
    ):
        resp = await client.post("/config", json=body, headers=ADMIN)
        assert resp.status == 400, body
        data = await resp.json()
        assert data["status"] == "failed" and data["message"], data
        assert await (await client.get("/config")).json() == current
    resp = await client.post(
        "/config", data=b"{nope", headers={"Content-Type": "application/json", **ADMIN}
    )
    assert resp.status == 400 and (await resp.json())["status"] == "failed"
    bad = await (await client.post("/config", json={"ERROR_RATE": 2}, headers=ADMIN)).json()
    assert "ERROR_RATE" in bad["message"]  # names the key the client sent


async def test_cleanup_needs_the_admin_token(api: ApiFactory) -> None:
    client = await api()
    done = (await (await translate(client, "premium")).json())["job_id"]
    await poll_like_client_a(client, done)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Cookie": "dubsim_session=1.x.y"}):
        resp = await client.post("/cleanup", headers=headers)
        assert resp.status == 401 and await resp.json() == UNAUTHORIZED, headers
    assert (await client.get(f"/status/{done}")).status == 200  # nothing was removed


async def test_admin_cleanup_removes_every_finished_job_at_once(api: ApiFactory) -> None:
    client = await api()
    done = (await (await translate(client, "premium")).json())["job_id"]
    pending = await v1_submit(client, {"scenario": {"outcome": "stuck", "duration_s": 1}})
    await poll_like_client_a(client, done)
    resp = await client.post("/cleanup", headers=ADMIN)
    body = await resp.json()
    assert body["message"] == "Processed jobs removed" and body["deleted"] == 1
    assert (await client.get(f"/status/{done}")).status == 404
    assert (await client.get(f"/status/{pending}")).status == 200


@pytest.mark.parametrize("path", ["/process", "/process_jobs"])
async def test_manual_processing_starts_premium_first(api: ApiFactory, path: str) -> None:
    client = await api(auto_process=False)
    free = (await (await translate(client, "free")).json())["job_id"]
    premium = (await (await translate(client, "premium")).json())["job_id"]
    for job_id in (free, premium):
        data = await (await client.get(f"/status/{job_id}")).json()
        assert data["status"] == "pending"
    refused = await client.post(path)  # admin, like POST /v1/process
    assert refused.status == 401 and await refused.json() == UNAUTHORIZED
    first = await client.post(path, headers=ADMIN)
    assert first.status == 200
    body = await first.json()
    assert body["role"] == "premium" and body["job_id"] == premium and body["message"]
    assert (await client.get(f"/v1/jobs/{premium}")).status == 200
    second = await (await client.post(path, headers=ADMIN)).json()
    assert second["role"] == "free" and second["job_id"] == free
    none_left = await client.post(path, headers=ADMIN)
    assert none_left.status == 204
    for job_id in (premium, free):
        final, _ = await poll_like_client_a(client, job_id)
        assert final["status"] == "completed"


async def test_processing_in_manual_mode_reads_pending_on_status(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    job_id = await v1_submit(client, {"scenario": {"outcome": "stuck", "duration_s": 1}})
    assert (await client.post("/process", headers=ADMIN)).status == 200
    await wait_for_status(client, job_id, {"processing"})
    data = await (await client.get(f"/status/{job_id}")).json()
    assert data["status"] == "pending" and data["result"] == "pending"


# ---- client B -------------------------------------------------------------------------


async def test_client_b_starts_a_job_and_waits_for_its_result(api: ApiFactory) -> None:
    client = await api(translation_delay=0.1)
    resp = await client.post("/start")  # no body, no headers
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"job_id"}
    final = await poll_like_client_b(client, body["job_id"])
    assert final["result"] == "completed" and final["status"] == "completed"
    job = await (await client.get(f"/v1/jobs/{body['job_id']}")).json()
    assert job["user_id"] == "anonymous" and job["role"] == "free"


async def test_client_b_sees_error_for_a_failed_job(api: ApiFactory) -> None:
    client = await api(translation_delay=0.05, error_rate=1.0, max_attempts=1)
    job_id = (await (await client.post("/start")).json())["job_id"]
    final = await poll_like_client_b(client, job_id)
    assert final["result"] == "error" and final["status"] == "permanently failed"


async def test_start_counts_against_the_free_limit(api: ApiFactory) -> None:
    client = await api(rate_limit=2, auto_process=False)
    assert (await client.post("/start")).status == 200
    assert (await translate(client, "free")).status == 201  # the same anonymous bucket
    resp = await client.post("/start")
    assert resp.status == 429
    assert await resp.json() == {"message": "Rate limit exceeded", "status": "failed"}
    assert "Retry-After" in resp.headers
    own = await client.post("/start", headers={"X-User-Id": "bob"})
    assert own.status == 200


# ---- faults and the admin marker ---------------------------------------------------------


async def test_injected_faults_hit_status_and_state_still_advances(api: ApiFactory) -> None:
    client = await api(fault_rate=1.0, fault_stall_s=0)
    job_id = (await (await translate(client, "premium")).json())["job_id"]
    statuses = {(await client.get(f"/status/{job_id}")).status for _ in range(20)}
    assert statuses and statuses <= {500, 503, 408}
    assert (await client.post("/config", json={"ERROR_RATE": 0.0}, headers=ADMIN)).status == 200
    await client.patch("/v1/config", json={"fault_rate": 0}, headers=ADMIN)
    final, _ = await poll_like_client_a(client, job_id)
    assert final["status"] == "completed"


async def test_every_legacy_admin_handler_refuses_without_a_token(api: ApiFactory) -> None:
    client = await api()
    marked = [
        route
        for route in client.app.router.routes()
        if getattr(route.handler, "admin_only", False)
        and not (route.resource is None or route.resource.canonical.startswith("/v1/"))
    ]
    assert {r.resource.canonical for r in marked if r.resource} == {
        "/cancel/{id}",
        "/cleanup",
        "/config",
        "/process",
        "/process_jobs",
    }
    for route in marked:
        assert route.resource is not None
        path = route.resource.canonical.replace("{id}", "any-id")
        resp = await client.request(route.method, path)
        assert resp.status == 401 and await resp.json() == UNAUTHORIZED


# ---- a real server process ------------------------------------------------------------


def _http(url: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST" if data else "GET")
    request.add_header("Content-Type", "application/json")
    request.add_header("X-User-Id", "client-a")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_client_a_against_a_real_server_process(
    server_process: Callable[..., ServerProcess],
) -> None:
    server = server_process(translation_delay=0.2)
    status, body = _http(server.url + "/translate", {"role": "free"})
    assert status == 201 and body["role"] == "free" and body["priority"] == 0
    deadline = time.monotonic() + 15
    while True:
        status, data = _http(f"{server.url}/status/{body['job_id']}")
        assert status == 200, data
        if data["status"] in A_TERMINAL:
            break
        assert data["status"] == "pending" and time.monotonic() < deadline
        time.sleep(0.05)
    final = {
        "job_id": body["job_id"],
        "status": "completed",
        "result": "completed",
        "progress": 100,
    }
    assert data == final
    assert _http(server.url + "/status/nope") == (404, NOT_FOUND)
    config = _http(server.url + "/config")
    assert config == (200, {"TRANSLATION_DELAY": 0.2, "ERROR_RATE": 0.0, "RATE_LIMIT": 5})
