"""Webhooks against real aiohttp receivers on loopback: signing, filtering, retries on a fake
clock, Retry-After, 410, redirects, redeliver/replay, scenario faults, callbacks, bad input."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service.app import create_app
from service.webhooks import WEBHOOKS
from tests.conftest import ADMIN, ApiFactory, make_settings, wait_for_status
from tests.webhook_support import FakeClock, Receiver, verify

ALICE = {"X-User-Id": "alice"}
BOB = {"X-User-Id": "bob"}
QUICK = {"duration_s": 0.05}


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


async def sqlite_app(aiohttp_client: Any, **overrides: Any) -> TestClient[Any, Any]:
    return await aiohttp_client(create_app(make_settings(**overrides)))  # type: ignore[no-any-return]


async def hook(
    client: TestClient[Any, Any], url: str, headers: dict[str, str] = ALICE, **body: Any
) -> dict[str, Any]:
    resp = await client.post("/v1/webhooks", json={"url": url, **body}, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def job(
    client: TestClient[Any, Any], headers: dict[str, str] = ALICE, **body: Any
) -> dict[str, Any]:
    body.setdefault("scenario", QUICK)
    body.setdefault("role", "premium")  # out of the free plan's hourly limit
    resp = await client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def deliveries(
    client: TestClient[Any, Any], hook_id: str, headers: dict[str, str] = ALICE
) -> list[dict[str, Any]]:
    resp = await client.get(f"/v1/webhooks/{hook_id}/deliveries", headers=headers)
    assert resp.status == 200
    return (await resp.json())["deliveries"]  # type: ignore[no-any-return]


async def until(predicate: Any, timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not await predicate():
            await asyncio.sleep(0.02)


# ---- the contract ---------------------------------------------------------------------------


async def test_signed_delivery_of_a_terminal_event(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    created = await hook(client, receiver.url())
    assert created["id"].startswith("wh_") and created["secret"].startswith("whsec_")
    assert created["events"] == ["job.completed", "job.permanently_failed", "job.cancelled"]
    assert created["status"] == "enabled" and created["disabled_reason"] is None
    assert created["owner"] == "alice"
    submitted = await job(client)
    (got,) = await receiver.wait_for(1)
    assert verify(created["secret"], got.headers, got.body)
    assert got.headers["content-type"] == "application/json"
    assert got.headers["user-agent"].startswith("dubsim-webhooks/")
    assert got.id.startswith("msg_")
    assert abs(int(got.headers["webhook-timestamp"]) - time.time()) < 60
    event = got.event
    assert list(event) == ["seq", "type", "at", "job"]  # the SSE stream's event, as it is
    assert event["type"] == "job.completed" and event["job"]["id"] == submitted["id"]
    assert event["job"]["status"] == "completed"
    # the listing never shows the secret; the delivery log names the same webhook-id
    listed = (await (await client.get("/v1/webhooks", headers=ALICE)).json())["webhooks"]
    assert [w["id"] for w in listed] == [created["id"]] and "secret" not in listed[0]

    async def logged() -> bool:
        found = await deliveries(client, created["id"])
        return bool(found) and found[0]["status"] == "succeeded"

    await until(logged)
    (entry,) = await deliveries(client, created["id"])
    assert entry["id"] == got.id and entry["seq"] == event["seq"]
    assert entry["event_type"] == "job.completed" and entry["job_id"] == submitted["id"]
    assert entry["attempts"][0]["status_code"] == 200


async def test_owner_filter_and_event_filter(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    mine = await hook(client, receiver.url("/alice"), events=["job.created", "job.completed"])
    everyone = await hook(client, receiver.url("/admin"), headers=ADMIN, events=["*"])
    assert everyone["owner"] == "*"
    a = await job(client)
    b = await job(client, BOB)
    await wait_for_status(client, a["id"], {"completed"})
    await wait_for_status(client, b["id"], {"completed"})
    alice = await receiver.wait_for(2, path="/alice")
    admin = await receiver.wait_for(6, path="/admin")  # created, started, completed x 2
    assert {(g.event["type"], g.event["job"]["id"]) for g in alice} == {
        ("job.created", a["id"]),
        ("job.completed", a["id"]),
    }
    assert {g.event["job"]["id"] for g in admin} == {a["id"], b["id"]}
    assert all(verify(everyone["secret"], g.headers, g.body) for g in admin)
    assert all(verify(mine["secret"], g.headers, g.body) for g in alice)
    # bob can't see alice's endpoint; the admin sees both
    assert (await client.get(f"/v1/webhooks/{mine['id']}", headers=BOB)).status == 404
    listed = (await (await client.get("/v1/webhooks", headers=ADMIN)).json())["webhooks"]
    assert {w["id"] for w in listed} == {mine["id"], everyone["id"]}


async def test_in_seq_order_one_at_a_time(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    await hook(client, receiver.url(), events=["*"])
    jobs = [await job(client) for _ in range(5)]
    for j in jobs:
        await wait_for_status(client, j["id"], {"completed"})
    got = await receiver.wait_for(15)
    seqs = [g.event["seq"] for g in got]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_rotate_secret_signs_with_both_during_grace(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    created = await hook(client, receiver.url())
    resp = await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=ALICE)
    assert resp.status == 200
    rotated = await resp.json()
    assert rotated["secret"] != created["secret"] and rotated["secret"].startswith("whsec_")
    assert rotated["previous_secret_expires_at"].endswith("Z")
    await job(client)
    (got,) = await receiver.wait_for(1)
    assert len(got.headers["webhook-signature"].split(" ")) == 2
    assert verify(created["secret"], got.headers, got.body)
    assert verify(rotated["secret"], got.headers, got.body)


async def test_rotation_without_grace_signs_with_the_new_secret_only(
    aiohttp_client: Any, receiver: Receiver
) -> None:
    client = await sqlite_app(aiohttp_client, webhook_secret_grace_s=0)
    created = await hook(client, receiver.url())
    rotated = await (
        await client.post(f"/v1/webhooks/{created['id']}/rotate-secret", headers=ALICE)
    ).json()
    await job(client)
    (got,) = await receiver.wait_for(1)
    assert verify(rotated["secret"], got.headers, got.body)
    assert not verify(created["secret"], got.headers, got.body)


async def test_patch_and_delete(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    created = await hook(client, receiver.url("/one"))
    resp = await client.patch(
        f"/v1/webhooks/{created['id']}",
        json={"url": receiver.url("/two"), "events": ["job.started"], "description": "x"},
        headers=ALICE,
    )
    assert resp.status == 200
    patched = await resp.json()
    assert patched["url"].endswith("/two") and patched["events"] == ["job.started"]
    await job(client)
    (got,) = await receiver.wait_for(1, path="/two")
    assert got.event["type"] == "job.started"
    assert (await client.delete(f"/v1/webhooks/{created['id']}", headers=BOB)).status == 404
    assert (await client.delete(f"/v1/webhooks/{created['id']}", headers=ALICE)).status == 204
    assert (await client.get(f"/v1/webhooks/{created['id']}", headers=ALICE)).status == 404
    before = len(receiver.got)
    await wait_for_status(client, (await job(client))["id"], {"completed"})
    await asyncio.sleep(0.2)
    assert len(receiver.got) == before


# ---- failures, retries, the schedule --------------------------------------------------------


async def test_retries_follow_the_schedule_on_the_service_clock(
    aiohttp_client: Any, receiver: Receiver
) -> None:
    client = await sqlite_app(aiohttp_client, webhook_retry_schedule="0,5,300,1800")
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    created = await hook(client, receiver.url())
    receiver.plan.extend([(500, {}), (502, {}), (500, {})])
    await job(client)
    await receiver.wait_for(1)
    wait = await clock.next_wait()
    assert 4.5 <= wait <= 5.5  # 5 s ± 10 %
    (entry,) = await deliveries(client, created["id"])
    assert entry["status"] == "pending" and entry["attempts"][0]["status_code"] == 500
    assert entry["next_attempt_at"] is not None
    clock.advance(wait)
    await receiver.wait_for(2)
    wait = await clock.next_wait()
    assert 270 <= wait <= 330
    clock.advance(wait)
    await receiver.wait_for(3)
    wait = await clock.next_wait()
    assert 1620 <= wait <= 1980
    clock.advance(wait)
    got = await receiver.wait_for(4)
    assert len({g.id for g in got}) == 1  # every attempt is the same message

    async def done() -> bool:
        return (await deliveries(client, created["id"]))[0]["status"] == "succeeded"

    await until(done)
    (entry,) = await deliveries(client, created["id"])
    assert [a["status_code"] for a in entry["attempts"]] == [500, 502, 500, 200]


async def test_failing_past_the_schedule_disables_and_reenable_resumes(
    aiohttp_client: Any, receiver: Receiver
) -> None:
    client = await sqlite_app(aiohttp_client, webhook_retry_schedule="0,5")
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    created = await hook(client, receiver.url())
    receiver.plan.extend([(500, {}), (500, {})])
    await job(client)
    await receiver.wait_for(1)
    clock.advance(await clock.next_wait())
    await receiver.wait_for(2)

    async def disabled() -> bool:
        found = await (await client.get(f"/v1/webhooks/{created['id']}", headers=ALICE)).json()
        return found["status"] == "disabled"  # type: ignore[no-any-return]

    await until(disabled)
    endpoint = await (await client.get(f"/v1/webhooks/{created['id']}", headers=ALICE)).json()
    assert "2 attempts failed" in endpoint["disabled_reason"]
    assert (await deliveries(client, created["id"]))[0]["status"] == "failed"
    # a second job's event waits behind it: nothing is sent while disabled
    await wait_for_status(client, (await job(client))["id"], {"completed"})
    await asyncio.sleep(0.2)
    assert len(receiver.got) == 2
    resp = await client.patch(
        f"/v1/webhooks/{created['id']}", json={"status": "enabled"}, headers=ALICE
    )
    assert (await resp.json())["disabled_reason"] is None
    got = await receiver.wait_for(4)
    assert got[2].id == got[0].id  # resumed where it stopped, the same message
    assert got[3].event["seq"] > got[2].event["seq"]


async def test_retry_after_is_honoured_on_429(aiohttp_client: Any, receiver: Receiver) -> None:
    client = await sqlite_app(aiohttp_client, webhook_retry_schedule="0,5,300")
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    await hook(client, receiver.url())
    receiver.plan.append((429, {"Retry-After": "120"}))
    await job(client)
    await receiver.wait_for(1)
    assert await clock.next_wait() == pytest.approx(120)
    clock.advance(120)
    got = await receiver.wait_for(2)
    assert got[0].id == got[1].id


async def test_410_disables_the_endpoint(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    created = await hook(client, receiver.url())
    receiver.plan.append((410, {}))
    await job(client)
    await receiver.wait_for(1)

    async def disabled() -> bool:
        found = await (await client.get(f"/v1/webhooks/{created['id']}", headers=ALICE)).json()
        return found["status"] == "disabled"  # type: ignore[no-any-return]

    await until(disabled)
    endpoint = await (await client.get(f"/v1/webhooks/{created['id']}", headers=ALICE)).json()
    assert "410" in endpoint["disabled_reason"]


async def test_a_redirect_is_a_failure_and_is_not_followed(
    aiohttp_client: Any, receiver: Receiver
) -> None:
    client = await sqlite_app(aiohttp_client, webhook_retry_schedule="0,5")
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    created = await hook(client, receiver.url("/hook"))
    receiver.plan.append((307, {"Location": receiver.url("/elsewhere")}))
    await job(client)
    await receiver.wait_for(1)
    await clock.next_wait()  # a retry is scheduled: it failed
    (entry,) = await deliveries(client, created["id"])
    assert entry["attempts"][0]["status_code"] == 307
    assert entry["attempts"][0]["error"] == "redirect not followed"
    assert receiver.of("/elsewhere") == []


# ---- redeliver and replay -------------------------------------------------------------------


async def test_redeliver_and_replay_keep_the_webhook_id(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    created = await hook(client, receiver.url(), events=["*"])
    first = await job(client)
    await wait_for_status(client, first["id"], {"completed"})
    original = await receiver.wait_for(3)

    async def logged() -> bool:
        return len(await deliveries(client, created["id"])) == 3

    await until(logged)
    newest = (await deliveries(client, created["id"]))[0]
    resp = await client.post(
        f"/v1/webhooks/{created['id']}/deliveries/{newest['id']}/redeliver", headers=ALICE
    )
    assert resp.status == 202 and (await resp.json())["id"] == newest["id"]
    got = await receiver.wait_for(4)
    assert got[3].id == newest["id"] and got[3].body == original[2].body
    # replay everything since the first event's seq - 1: all three again, same ids
    since = original[0].event["seq"] - 1
    resp = await client.post(
        f"/v1/webhooks/{created['id']}/replay", json={"since": since}, headers=ALICE
    )
    assert resp.status == 202 and (await resp.json()) == {"queued": 3}
    got = await receiver.wait_for(7)
    assert [g.id for g in got[4:]] == [g.id for g in original]
    # by time: an ISO time before everything replays all three again
    resp = await client.post(
        f"/v1/webhooks/{created['id']}/replay",
        json={"since": "2000-01-01T00:00:00Z"},
        headers=ALICE,
    )
    assert (await resp.json()) == {"queued": 3}
    await receiver.wait_for(10)
    missing = await client.post(
        f"/v1/webhooks/{created['id']}/deliveries/msg_nope/redeliver", headers=ALICE
    )
    assert missing.status == 404


# ---- scenario faults ------------------------------------------------------------------------


async def test_fault_duplicate(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    await hook(client, receiver.url())
    await job(client, scenario={**QUICK, "webhook": {"duplicate": 2}})
    got = await receiver.wait_for(3)
    assert len({g.id for g in got}) == 1 and len({g.body for g in got}) == 1


async def test_fault_drop_first(aiohttp_client: Any, receiver: Receiver) -> None:
    client = await sqlite_app(aiohttp_client, webhook_retry_schedule="0,5,5")
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    created = await hook(client, receiver.url())
    await job(client, scenario={**QUICK, "webhook": {"drop_first": 2}})
    for _ in range(2):
        clock.advance(await clock.next_wait())
    await receiver.wait_for(1)

    async def done() -> bool:
        return (await deliveries(client, created["id"]))[0]["status"] == "succeeded"

    await until(done)
    (entry,) = await deliveries(client, created["id"])
    assert [a["status_code"] for a in entry["attempts"]] == [None, None, 200]
    assert "drop_first" in entry["attempts"][0]["error"]
    assert len(receiver.got) == 1


async def test_fault_delay(aiohttp_client: Any, receiver: Receiver) -> None:
    client = await sqlite_app(aiohttp_client)
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    await hook(client, receiver.url())
    await job(client, scenario={**QUICK, "webhook": {"delay_s": 42}})
    assert await clock.next_wait() == pytest.approx(42)
    assert receiver.got == []
    clock.advance(42)
    await receiver.wait_for(1)


async def test_fault_out_of_order(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    await hook(client, receiver.url(), events=["*"])
    j = await job(client, scenario={**QUICK, "webhook": {"out_of_order": True}})
    await wait_for_status(client, j["id"], {"completed"})
    got = await receiver.wait_for(3)
    assert [g.event["type"] for g in got] == ["job.completed", "job.created", "job.started"]
    seqs = [g.event["seq"] for g in got]
    assert seqs[0] > seqs[1] and seqs[0] > seqs[2]


async def test_fault_bad_signature_and_stale_timestamp(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    created = await hook(client, receiver.url())
    await job(client, scenario={**QUICK, "webhook": {"bad_signature": True}})
    (bad,) = await receiver.wait_for(1)
    assert not verify(created["secret"], bad.headers, bad.body)
    await job(client, scenario={**QUICK, "webhook": {"stale_timestamp": True}})
    stale = (await receiver.wait_for(2))[1]
    assert verify(created["secret"], stale.headers, stale.body)  # genuine, but an hour old
    assert time.time() - int(stale.headers["webhook-timestamp"]) > 3000


# ---- per-job callbacks ------------------------------------------------------------------------


async def test_callback_url_gets_the_terminal_event_signed(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    submitted = await job(client, callback_url=receiver.url("/cb"), callback_id="order-17")
    assert submitted["callback_url"].endswith("/cb") and submitted["callback_id"] == "order-17"
    (got,) = await receiver.wait_for(1, path="/cb")
    assert got.event["type"] == "job.completed" and got.event["job"]["callback_id"] == "order-17"
    secret = (await (await client.get("/v1/webhooks/callback-secret", headers=ALICE)).json())[
        "secret"
    ]
    assert verify(secret, got.headers, got.body)
    other = (await (await client.get("/v1/webhooks/callback-secret", headers=BOB)).json())["secret"]
    assert other != secret and not verify(other, got.headers, got.body)
    # the lane is internal: not listed as an endpoint
    assert (await (await client.get("/v1/webhooks", headers=ALICE)).json())["webhooks"] == []


# ---- bad input ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"url": "ftp://example.com/x"}, 422),
        ({"url": "not a url"}, 422),
        ({"url": "http://"}, 422),
        ({"url": "http://u:p@example.com/"}, 422),
        ({"url": "http://example.com/", "events": ["job.exploded"]}, 422),
        ({"url": "http://example.com/", "events": []}, 422),
        ({"url": "http://example.com/", "extra": 1}, 422),
        ({"events": ["*"]}, 422),
        ({"url": 5}, 422),
    ],
)
async def test_bad_endpoint_input_is_a_4xx_json_error(
    aiohttp_client: Any, body: dict[str, Any], status: int
) -> None:
    client = await sqlite_app(aiohttp_client)
    resp = await client.post("/v1/webhooks", json=body, headers=ALICE)
    assert resp.status == status
    error = (await resp.json())["error"]
    assert error["code"] and error["message"]
    assert (await (await client.get("/v1/webhooks", headers=ALICE)).json())["webhooks"] == []


async def test_bad_requests_are_4xx_json(aiohttp_client: Any, receiver: Receiver) -> None:
    client = await sqlite_app(aiohttp_client)
    created = await hook(client, receiver.url())
    wid = created["id"]
    cases = [
        (
            client.post(
                "/v1/webhooks",
                data=b"{not json",
                headers={**ALICE, "Content-Type": "application/json"},
            ),
            400,
        ),
        (
            client.post(
                "/v1/webhooks", data=b"url=x", headers={**ALICE, "Content-Type": "text/plain"}
            ),
            415,
        ),
        (client.patch(f"/v1/webhooks/{wid}", json={"status": "paused"}, headers=ALICE), 422),
        (client.patch(f"/v1/webhooks/{wid}", json={"url": "gopher://x"}, headers=ALICE), 422),
        (client.patch(f"/v1/webhooks/{wid}", json={"status": "disabled"}, headers=BOB), 404),
        (client.post(f"/v1/webhooks/{wid}/rotate-secret", headers=BOB), 404),
        (client.get(f"/v1/webhooks/{wid}/deliveries", headers=BOB), 404),
        (client.get(f"/v1/webhooks/{wid}/deliveries?limit=0", headers=ALICE), 422),
        (client.get(f"/v1/webhooks/{wid}/deliveries?limit=x", headers=ALICE), 422),
        (client.get(f"/v1/webhooks/{wid}/deliveries?status=odd", headers=ALICE), 422),
        (client.post(f"/v1/webhooks/{wid}/replay", json={"since": -1}, headers=ALICE), 422),
        (
            client.post(f"/v1/webhooks/{wid}/replay", json={"since": "yesterday"}, headers=ALICE),
            422,
        ),
        (client.post(f"/v1/webhooks/{wid}/replay", json={}, headers=ALICE), 422),
        (client.post(f"/v1/webhooks/{wid}/replay", json={"since": 0}, headers=BOB), 404),
        (client.get("/v1/webhooks/wh_missing", headers=ALICE), 404),
        (client.post("/v1/jobs", json={"callback_url": "file:///etc/passwd"}, headers=ALICE), 422),
        (
            client.post(
                "/v1/jobs", json={"scenario": {"webhook": {"duplicate": 11}}}, headers=ALICE
            ),
            422,
        ),
        (
            client.post("/v1/jobs", json={"scenario": {"webhook": {"delay_s": -1}}}, headers=ALICE),
            422,
        ),
        (
            client.post(
                "/v1/jobs", json={"scenario": {"webhook": {"drop_first": 99}}}, headers=ALICE
            ),
            422,
        ),
        (
            client.post("/v1/jobs", json={"scenario": {"webhook": {"loud": True}}}, headers=ALICE),
            422,
        ),
    ]
    for request, status in cases:
        resp = await request
        assert resp.status == status, (status, await resp.text())
        assert resp.content_type == "application/json"
        assert "error" in await resp.json()
    endpoint = await (await client.get(f"/v1/webhooks/{wid}", headers=ALICE)).json()
    assert endpoint == {k: v for k, v in created.items() if k != "secret"}
    assert (await (await client.get("/v1/jobs", headers=ALICE)).json())["jobs"] == []


async def test_private_targets_refused_when_not_allowed(aiohttp_client: Any) -> None:
    client = await sqlite_app(aiohttp_client, webhook_allow_private=False)
    for url in (
        "http://127.0.0.1:9/x",
        "http://localhost:9/x",
        "http://10.1.2.3/x",
        "http://[::1]/x",
        "http://169.254.169.254/",
    ):
        resp = await client.post("/v1/webhooks", json={"url": url}, headers=ALICE)
        assert resp.status == 422, url
        assert "private" in (await resp.json())["error"]["message"]
    resp = await client.post(
        "/v1/jobs", json={"callback_url": "http://127.0.0.1:9/cb"}, headers=ALICE
    )
    assert resp.status == 422


async def test_an_ipv4_address_in_another_form_is_refused_naming_its_usual_form(
    aiohttp_client: Any,
) -> None:
    # the C library reads these as addresses, the sender refuses them as hosts: an endpoint or
    # callback with one would never be delivered to, so it is refused when made
    client = await sqlite_app(aiohttp_client, webhook_allow_private=True)
    for url, usual in (
        ("http://2130706433:9/x", "127.0.0.1"),
        ("http://0x7f000001:9/x", "127.0.0.1"),
        ("http://127.1:9/x", "127.0.0.1"),
        ("http://0010.0.0.1/x", "8.0.0.1"),
    ):
        resp = await client.post("/v1/webhooks", json={"url": url}, headers=ALICE)
        assert resp.status == 422, url
        error = (await resp.json())["error"]
        assert error["details"]["field"] == "url"
        assert f"write it as {usual}" in error["message"], error
        resp = await client.post("/v1/jobs", json={"callback_url": url}, headers=ALICE)
        assert resp.status == 422, url
    assert (await (await client.get("/v1/webhooks", headers=ALICE)).json())["webhooks"] == []
    assert (await (await client.get("/v1/jobs", headers=ALICE)).json())["jobs"] == []
    resp = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/x"}, headers=ALICE)
    assert resp.status == 201  # the usual form is taken (private targets allowed here)


async def test_metrics_count_deliveries(api: ApiFactory, receiver: Receiver) -> None:
    client = await api()
    created = await hook(client, receiver.url())
    await job(client)
    await receiver.wait_for(1)

    async def counted() -> bool:
        text = await (await client.get("/metrics")).text()
        return 'dubsim_webhook_deliveries_total{outcome="succeeded"} 1.0' in text

    await until(counted)
    text = await (await client.get("/metrics")).text()
    assert "dubsim_webhook_attempt_seconds_bucket" in text
    assert "dubsim_webhook_lag_seconds_count 1.0" in text
    assert f'dubsim_webhook_queue_depth{{endpoint="{created["id"]}"}} 0.0' in text


def _json(got: Any) -> Any:
    return json.loads(got.body)


async def test_stop_ends_a_worker_whose_cancel_a_store_call_swallowed(
    aiohttp_client: Any, receiver: Receiver
) -> None:
    """A store client can absorb a task's cancel (seen with redis-py on Python 3.11: the
    worker was cancelled inside its delivery-log write and then idled until the stop's grace
    ran out). Stopping must end such a worker anyway, not leave it waiting to be woken."""
    client = await sqlite_app(aiohttp_client)
    endpoint = await hook(client, receiver.url())
    engine = client.app[WEBHOOKS]
    worker = engine._workers[endpoint["id"]]
    in_write = asyncio.Event()

    async def swallowing_flush() -> None:
        in_write.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return  # absorbed, as the store client did

    worker.log.flush = swallowing_flush  # type: ignore[method-assign]
    worker.wake.set()  # a round of the worker's loop: it idles, and writes its log first
    async with asyncio.timeout(10):
        await in_write.wait()
    await engine.stop()
    assert worker.task is not None
    async with asyncio.timeout(1):  # well inside the stop's own grace (3 s): it has ended
        await asyncio.wait({worker.task})
    assert worker.task.done()
