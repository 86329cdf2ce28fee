"""WebSocket, SSE and long polling: the promises in docs/protocol.md."""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from datetime import datetime
from typing import Any

import pytest
from aiohttp import WSMsgType

from service.appkeys import HUB
from service.hub import Published
from service.models import EventType
from tests.conftest import ADMIN, ApiFactory, wait_for_status

FINAL_EVENTS = {"job.completed", "job.permanently_failed", "job.cancelled"}


async def submit(client: Any, body: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    resp = await client.post("/v1/jobs", json=body or {}, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def receive(ws: Any, timeout: float = 10) -> dict[str, Any]:
    msg = await ws.receive(timeout=timeout)
    assert msg.type is WSMsgType.TEXT, msg
    return json.loads(msg.data)  # type: ignore[no-any-return]


async def until(ws: Any, predicate: Any, timeout: float = 20) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    async with asyncio.timeout(timeout):
        while True:
            seen.append(await receive(ws, timeout))
            if predicate(seen[-1]):
                return seen


def sse_parse(raw: bytes) -> list[dict[str, str]]:
    """Parse an SSE byte stream the way a browser does (blank line ends an event)."""
    events = []
    for block in raw.decode().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if not line or line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields[name] = value[1:] if value.startswith(" ") else value
        if fields:
            events.append(fields)
    return events


async def read_sse(resp: Any, stop: Any, timeout: float = 20) -> list[dict[str, str]]:
    raw = b""
    async with asyncio.timeout(timeout):
        async for chunk in resp.content.iter_any():
            raw += chunk
            if raw.endswith(b"\n\n") and stop(sse_parse(raw)):
                return sse_parse(raw)
    return sse_parse(raw)


# ---- WebSocket ----------------------------------------------------------------------


async def test_ws_finished_job_snapshot_arrives_at_once(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 0.05}})
    await wait_for_status(client, job["id"], {"completed"})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]], "id": 1})
        ack = await receive(ws)
        assert ack["type"] == "subscribed" and ack["id"] == 1
        snap = await receive(ws)
        assert snap["type"] == "snapshot" and snap["job"]["status"] == "completed"
        assert snap["seq"] == ack["seq"]


async def test_ws_live_events_in_order_to_completion(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 1.5}})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
        seen = await until(ws, lambda m: m.get("event_type") in FINAL_EVENTS)
    events = [m for m in seen if m["type"] == "event"]
    seqs = [m["seq"] for m in events]
    assert seqs == sorted(set(seqs))
    assert events[-1]["event_type"] == "job.completed"
    progress = [m["job"]["progress"] for m in events if m["event_type"] == "job.progress"]
    # how many steps a loaded machine fits in is not the promise; their order and range are
    assert progress == sorted(progress) and all(0 < p < 100 for p in progress)
    assert all(m["at"].endswith("Z") and len(m["at"]) == 27 for m in events)  # microseconds


async def test_ws_resume_gets_exactly_the_missed_events(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 1.2}})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
        seen = await until(ws, lambda m: m.get("event_type") == "job.progress")
        last = seen[-1]["seq"]
    # disconnected; the job goes on and finishes
    await wait_for_status(client, job["id"], {"completed"})
    hub = client.app[HUB]
    missed = [p.seq for p in hub.broker.recent() if p.job_id == job["id"] and p.seq > last]
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]], "since": last})
        got = await until(ws, lambda m: m.get("event_type") == "job.completed")
    replayed = [m["seq"] for m in got if m["type"] == "event"]
    assert replayed == missed and missed  # at least its completion was missed
    assert not [m for m in got if m["type"] == "snapshot"]


async def test_ws_resume_too_old_gets_reset_then_snapshot(api: ApiFactory) -> None:
    client = await api(event_buffer=5)
    job = await submit(client, {"scenario": {"duration_s": 0.05}})
    for _ in range(3):
        await submit(client, {"scenario": {"duration_s": 0.05}, "role": "premium"})
    await wait_for_status(client, job["id"], {"completed"})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]], "since": 1})
        ack, reset, snap = await receive(ws), await receive(ws), await receive(ws)
    assert ack["type"] == "subscribed"
    assert reset == {"type": "reset", "reason": "since_too_old", "seq": ack["seq"]}
    assert snap["type"] == "snapshot" and snap["job"]["status"] == "completed"


async def test_ws_two_hundred_jobs_over_one_socket(api: ApiFactory) -> None:
    client = await api(rate_limit=1000, translation_delay=0.3)
    ids = [(await submit(client, {"role": "premium"}))["id"] for _ in range(200)]
    done: set[str] = set()
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": ids})
        async with asyncio.timeout(60):
            while len(done) < 200:
                msg = await receive(ws)
                if msg["type"] in ("snapshot", "event") and msg["job"]["status"] == "completed":
                    done.add(msg["job"]["id"])
    assert done == set(ids)


async def test_ws_bad_frames_get_errors_and_the_socket_stays_usable(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 0.05}})
    async with client.ws_connect("/v1/ws") as ws:
        for bad, code in [
            ("{not json", "invalid_json"),
            ('{"op": "dance"}', "invalid_message"),
            ('{"op": "subscribe", "jobs": "abc"}', "invalid_message"),
            ('{"op": "subscribe", "since": -1, "jobs": ["x"]}', "invalid_message"),
            ('{"op": "subscribe", "all": true}', "forbidden"),
            ('{"op": "subscribe", "jobs": ["no-such-job"]}', None),
            (
                json.dumps({"op": "subscribe", "jobs": [str(i) for i in range(1001)]}),
                "invalid_message",
            ),
        ]:
            await ws.send_str(bad)
            msg = await receive(ws)
            if code is None:  # unknown id: acknowledged, then an error naming it
                assert msg["type"] == "subscribed"
                msg = await receive(ws)
                assert msg["code"] == "not_found" and msg["jobs"] == ["no-such-job"]
            else:
                assert msg["type"] == "error" and msg["code"] == code, (bad, msg)
        # a message that fails validation still has its valid id echoed on the error
        for bad, echoed in [
            ('{"op": "dance", "id": 7}', 7),
            ('{"op": "subscribe", "jobs": "abc", "id": "s-1"}', "s-1"),
            ('{"op": "dance", "id": "' + "x" * 65 + '"}', None),  # an invalid id is no id
            ('{"op": "dance", "id": [1]}', None),
        ]:
            await ws.send_str(bad)
            msg = await receive(ws)
            assert (msg["code"], msg.get("id")) == ("invalid_message", echoed), (bad, msg)
        await ws.send_bytes(b"\x00\x01binary")
        assert (await receive(ws))["code"] == "binary_not_supported"
        await ws.send_json({"op": "ping", "id": "p"})
        assert (await receive(ws))["type"] == "pong"
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
        await until(ws, lambda m: m["type"] == "snapshot")
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_str("x" * (70 * 1024))
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1009
    assert (await client.get("/healthz")).status == 200


async def test_ws_admin_all_and_user_mine(api: ApiFactory) -> None:
    client = await api()
    async with (
        client.ws_connect("/v1/ws", headers=ADMIN) as admin,
        client.ws_connect("/v1/ws", headers={"X-User-Id": "alice"}) as alice,
        client.ws_connect("/v1/ws?user=bob") as bob,
    ):
        for ws, msg in ((admin, {"all": True}), (alice, {"mine": True}), (bob, {"mine": True})):
            await ws.send_json({"op": "subscribe", **msg})
            assert (await receive(ws))["type"] == "subscribed"
        job = await submit(client, {"scenario": {"duration_s": 0.05}}, **{"X-User-Id": "alice"})
        for ws in (admin, alice):
            got = await until(ws, lambda m: m.get("event_type") == "job.completed")
            assert got[-1]["job"]["id"] == job["id"]
        # bob must see nothing: anything queued for him would arrive before his pong
        await bob.send_json({"op": "ping"})
        assert (await receive(bob))["type"] == "pong"  # the first thing bob sees is his pong


async def test_ws_bad_admin_token_closes_1008(api: ApiFactory) -> None:
    client = await api()
    async with client.ws_connect("/v1/ws", headers={"Authorization": "Bearer wrong"}) as ws:
        msg = await ws.receive(timeout=10)
        assert msg.type is WSMsgType.CLOSE and msg.data == 1008


async def test_ws_slow_consumer_is_closed_while_a_reader_gets_everything(api: ApiFactory) -> None:
    client = await api(subscriber_queue=50)
    hub = client.app[HUB]
    padding = json.dumps({"id": "x", "pad": "p" * 20_000}).encode()
    hub.track("x", "u", padding)
    received = 0
    async with (
        client.ws_connect("/v1/ws", headers=ADMIN) as slow,
        client.ws_connect("/v1/ws", headers=ADMIN) as fast,
    ):
        for ws in (slow, fast):
            await ws.send_json({"op": "subscribe", "jobs": ["x"], "since": hub.seq})
            assert (await receive(ws))["type"] == "subscribed"

        async def read_all() -> None:
            nonlocal received
            while received < 2000:
                msg = await receive(fast)
                received += msg["type"] == "event"

        reader = asyncio.create_task(read_all())
        for i in range(2000):
            hub.publish(Published(hub.seq + 1, EventType.PROGRESS, "t", "x", "u", padding))
            if i % 20 == 0:
                await asyncio.sleep(0.001)  # let the reader's writer run; the slow one never reads
        await asyncio.wait_for(reader, 30)
        assert received == 2000
        async with asyncio.timeout(20):
            while hub.slow_consumers < 1:
                await asyncio.sleep(0.05)
        assert len(hub.subscriptions) == 1  # only the reader is left
        # a peer whose socket is full can't take even the close frame: it may be aborted
        # (the close frame itself is test_ws_slow_consumer_gets_close_4000_slow_consumer's)
        async with asyncio.timeout(20):
            while (msg := await slow.receive()).type is WSMsgType.TEXT:
                pass
        assert msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR)
        if msg.type is WSMsgType.CLOSE:
            assert msg.data == 4000


async def burst(client: Any, jobs: int) -> None:
    """Queue `jobs` jobs in manual mode, then start them all at once: one event per job,
    published in one go, faster than any writer can drain them."""
    for _ in range(jobs):
        await submit(client, {"role": "premium", "scenario": {"outcome": "stuck"}})
    resp = await client.post("/v1/process", json={"count": jobs}, headers=ADMIN)
    assert len((await resp.json())["started"]) == jobs


async def test_ws_slow_consumer_gets_close_4000_slow_consumer(api: ApiFactory) -> None:
    """A subscriber that falls more than SUBSCRIBER_QUEUE frames behind is closed with the
    close frame 4000 "slow_consumer" (its socket still has room: nothing excuses an abort)."""
    client = await api(subscriber_queue=5, auto_process=False, rate_limit=1000)
    async with client.ws_connect("/v1/ws", headers=ADMIN) as ws:
        await ws.send_json({"op": "subscribe", "all": True, "id": 1})
        assert (await receive(ws))["type"] == "subscribed"
        # from here on it reads nothing until the burst is over
        await burst(client, 20)
        frames: list[dict[str, Any]] = []
        async with asyncio.timeout(20):
            while (msg := await ws.receive()).type is WSMsgType.TEXT:
                frames.append(json.loads(msg.data))
    assert msg.type is WSMsgType.CLOSE, msg
    assert (msg.data, msg.extra) == (4000, "slow_consumer")
    started = [f for f in frames if f.get("event_type") == "job.started"]
    assert len(started) < 20  # it was cut off, not handed everything
    assert client.app[HUB].slow_consumers == 1


async def test_sse_slow_consumer_gets_an_error_event_and_the_stream_ends(
    api: ApiFactory,
) -> None:
    client = await api(subscriber_queue=5, auto_process=False, rate_limit=1000)
    first = await submit(client, {"role": "premium", "scenario": {"outcome": "stuck"}})
    resp = await client.get("/v1/events?all=1", headers=ADMIN)
    assert resp.status == 200
    head = await resp.content.readuntil(b"\n\n")  # the snapshot: subscribed
    assert first["id"].encode() in head
    await burst(client, 20)
    async with asyncio.timeout(20):
        rest = await resp.content.read()  # to the end of the stream
    assert resp.content.at_eof()
    events = sse_parse(rest)
    assert events[-1]["event"] == "error"
    assert json.loads(events[-1]["data"])["code"] == "slow_consumer"
    resp.close()


async def test_shutdown_closes_ws_with_1001_and_ends_sse(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 30}})
    ws = await client.ws_connect("/v1/ws")
    await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
    await until(ws, lambda m: m["type"] == "snapshot")
    sse = await client.get(f"/v1/events?job={job['id']}")
    await sse.content.readuntil(b"\n\n")
    closer = asyncio.create_task(client.server.close())
    msg = await ws.receive(timeout=10)
    while msg.type is WSMsgType.TEXT:
        msg = await ws.receive(timeout=10)
    assert msg.type is WSMsgType.CLOSE and msg.data == 1001
    rest = await asyncio.wait_for(sse.read(), 10)
    assert b"going_away" in rest
    await closer
    sse.close()
    await ws.close()


# ---- SSE ------------------------------------------------------------------------------


async def test_sse_raw_stream_like_curl(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 0.6}})
    resp = await client.get(f"/v1/events?job={job['id']}")
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await read_sse(resp, lambda evs: evs[-1].get("event") in FINAL_EVENTS)
    resp.close()
    assert events[0]["event"] == "snapshot"
    names = [e["event"] for e in events]
    assert "job.progress" in names and names[-1] == "job.completed"
    for e in events:
        data = json.loads(e["data"])
        assert int(e["id"]) == data["seq"]
        assert data["job"]["id"] == job["id"]
        if e["event"] != "snapshot":
            assert data["type"] == e["event"]


async def test_sse_finished_job_snapshot_and_resume_by_last_event_id(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 0.3}})
    await wait_for_status(client, job["id"], {"completed"})
    resp = await client.get(f"/v1/events?job={job['id']}")
    snap = await read_sse(resp, lambda evs: True)
    resp.close()
    assert snap[0]["event"] == "snapshot"
    assert json.loads(snap[0]["data"])["job"]["status"] == "completed"
    # resume from the very first event: everything for that job, in order, no snapshot
    resp = await client.get(f"/v1/events?job={job['id']}", headers={"Last-Event-ID": "0"})
    replay = await read_sse(resp, lambda evs: evs[-1].get("event") == "job.completed")
    resp.close()
    names = [e["event"] for e in replay]
    assert names[0] == "job.created" and names[-1] == "job.completed" and "snapshot" not in names
    seqs = [int(e["id"]) for e in replay]
    assert seqs == sorted(set(seqs))
    # same thing with the query parameter a browser can set on its first connect
    resp = await client.get(f"/v1/events?job={job['id']}&last_event_id={seqs[-2]}")
    tail = await read_sse(resp, lambda evs: evs[-1].get("event") == "job.completed")
    resp.close()
    assert [int(e["id"]) for e in tail] == seqs[-1:]


async def test_sse_gap_and_future_ids_reset(api: ApiFactory) -> None:
    client = await api(event_buffer=3)
    job = await submit(client, {"scenario": {"duration_s": 0.05}})
    for _ in range(3):
        await submit(client, {"scenario": {"duration_s": 0.05}, "role": "premium"})
    await wait_for_status(client, job["id"], {"completed"})
    for last in ("1", "999999"):
        resp = await client.get(f"/v1/events?job={job['id']}", headers={"Last-Event-ID": last})
        events = await read_sse(resp, lambda evs: evs[-1].get("event") == "snapshot")
        resp.close()
        assert events[0]["event"] == "reset" and events[1]["event"] == "snapshot"


async def test_sse_bad_requests(api: ApiFactory) -> None:
    client = await api()
    for url, headers, status in [
        ("/v1/events?job=nope", {}, 404),
        ("/v1/events?all=1", {}, 401),
        ("/v1/events?all=1", {"Authorization": "Bearer nope"}, 401),
        ("/v1/events?mine=1", {"Last-Event-ID": "abc"}, 422),
        ("/v1/events?mine=1", {"Last-Event-ID": "-5"}, 422),
    ]:
        resp = await client.get(url, headers=headers)
        assert resp.status == status, url
        assert "error" in await resp.json()


async def test_sse_mine_only_sees_own_jobs(api: ApiFactory) -> None:
    client = await api()
    resp = await client.get("/v1/events?mine=1", headers={"X-User-Id": "carol"})
    await submit(client, {"scenario": {"duration_s": 0.05}}, **{"X-User-Id": "dave"})
    mine = await submit(client, {"scenario": {"duration_s": 0.05}}, **{"X-User-Id": "carol"})
    events = await read_sse(resp, lambda evs: evs[-1].get("event") == "job.completed")
    resp.close()
    assert {json.loads(e["data"])["job"]["id"] for e in events} == {mine["id"]}


# ---- long polling and hints -----------------------------------------------------------


async def test_long_poll_returns_on_change_and_on_timeout(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    job = await submit(client, {"scenario": {"duration_s": 0.1}})
    first = await client.get(f"/v1/jobs/{job['id']}")
    etag = first.headers["ETag"]
    started = time.monotonic()
    resp = await client.get(f"/v1/jobs/{job['id']}?wait=1", headers={"If-None-Match": etag})
    assert resp.status == 304 and time.monotonic() - started >= 0.9
    poll = asyncio.create_task(
        client.get(f"/v1/jobs/{job['id']}?wait=30", headers={"If-None-Match": etag})
    )
    await asyncio.sleep(0.2)
    assert not poll.done()
    await client.post("/v1/process", json={"count": 1}, headers=ADMIN)
    resp = await asyncio.wait_for(poll, 10)  # well before its 30 s
    assert resp.status == 200 and (await resp.json())["status"] == "processing"
    for bad in ("0", "61", "abc", "nan"):
        assert (await client.get(f"/v1/jobs/{job['id']}?wait={bad}")).status == 422


async def seq_now(client: Any) -> int:
    return int((await (await client.get("/healthz")).json())["seq"])


async def test_long_poll_with_a_stale_etag_answers_at_once_with_the_new_state(
    api: ApiFactory,
) -> None:
    client = await api(auto_process=False)
    # processing for an hour: its next progress event is minutes away
    job = await submit(client, {"role": "premium", "scenario": {"outcome": "stuck", "duration_s": 3600}})  # fmt: skip
    url = f"/v1/jobs/{job['id']}"
    old = (await client.get(url)).headers["ETag"]
    await client.post("/v1/process", json={"count": 1}, headers=ADMIN)
    current = (await client.get(url)).headers["ETag"]
    assert current != old
    seq = await seq_now(client)
    # nothing else happens to the job, so only the stale ETag can end this 60 s poll; the
    # test's bound is half of that, generous for "at once" and short of a full wait
    resp = await asyncio.wait_for(client.get(url + "?wait=60", headers={"If-None-Match": old}), 30)
    assert resp.status == 200
    assert resp.headers["ETag"] == current
    assert (await resp.json())["status"] == "processing"
    assert await seq_now(client) == seq  # no event woke it


@pytest.mark.parametrize("status", ["pending", "completed"])
async def test_304_carries_the_etag_cache_control_and_the_poll_hint(
    api: ApiFactory, status: str
) -> None:
    client = await api(auto_process=status == "completed")
    job = await submit(client, {"scenario": {"duration_s": 0.05}})
    url = f"/v1/jobs/{job['id']}"
    if status == "completed":
        await wait_for_status(client, job["id"], {"completed"})
    full = await client.get(url)
    assert full.status == 200 and (await full.json())["status"] == status
    etag = full.headers["ETag"]
    for query in ("", "?wait=0.05"):
        resp = await client.get(url + query, headers={"If-None-Match": etag})
        assert resp.status == 304, query
        assert resp.headers["ETag"] == etag
        assert resp.headers["Cache-Control"] == "no-cache"
        assert await resp.read() == b""
        if status == "pending":  # not terminal: when to ask again, as on the 200
            ms = int(resp.headers["X-Poll-After-Ms"])
            assert ms == int(full.headers["X-Poll-After-Ms"]) > 0  # manual mode: a fixed hint
            assert int(resp.headers["Retry-After"]) == max(1, math.ceil(ms / 1000))
        else:  # terminal: nothing more to learn
            assert "Retry-After" not in resp.headers and "X-Poll-After-Ms" not in resp.headers


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def assert_whole_seconds_agree(headers: Any) -> int:
    ms = int(headers["X-Poll-After-Ms"])
    assert ms > 0
    assert int(headers["Retry-After"]) == max(1, math.ceil(ms / 1000))
    return ms


async def test_polling_at_the_hint_follows_the_eta_to_the_outcome(api: ApiFactory) -> None:
    client = await api()
    resp = await client.post("/v1/jobs", json={"scenario": {"duration_s": 3}})
    job = await resp.json()
    # queued with every worker idle: it should be done one run (3 s) from now, just past it
    hint_ms = assert_whole_seconds_agree(resp.headers)
    assert 3000 <= hint_ms <= 3100
    async with asyncio.timeout(30):
        while True:
            await asyncio.sleep(hint_ms / 1000)
            resp = await client.get(f"/v1/jobs/{job['id']}")
            body = await resp.json()
            if body["status"] == "completed":
                break
            hint_ms = assert_whole_seconds_agree(resp.headers)
    assert "X-Poll-After-Ms" not in resp.headers and "Retry-After" not in resp.headers
    assert body["progress"] == 100


async def test_a_processing_jobs_hint_points_just_past_its_eta(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"outcome": "stuck", "duration_s": 60}})
    await wait_for_status(client, job["id"], {"processing"})
    sent = time.time()
    resp = await client.get(f"/v1/jobs/{job['id']}")
    answered = time.time()
    eta = epoch((await resp.json())["eta"])
    assert eta > answered  # a minute ahead
    hint_ms = assert_whole_seconds_agree(resp.headers)
    # wherever the server's clock stood between our send and its answer, the hint is the
    # time left to the ETA plus a small margin
    assert (eta - answered) * 1000 <= hint_ms <= (eta - sent) * 1000 + 100


async def test_metrics_count_subscribers_by_transport(api: ApiFactory) -> None:
    client = await api()
    job = await submit(client, {"scenario": {"duration_s": 5}})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [job["id"]]})
        await until(ws, lambda m: m["type"] == "snapshot")
        sse = await client.get(f"/v1/events?job={job['id']}")
        await sse.content.readuntil(b"\n\n")
        text = await (await client.get("/metrics")).text()
        sse.close()
    assert 'dubsim_subscribers{transport="ws"} 1.0' in text
    assert 'dubsim_subscribers{transport="sse"} 1.0' in text


async def test_one_socket_many_subscriptions_unsubscribe(api: ApiFactory) -> None:
    client = await api()
    a = await submit(client, {"scenario": {"duration_s": 0.5}})
    b = await submit(client, {"scenario": {"duration_s": 0.5}})
    async with client.ws_connect("/v1/ws") as ws:
        await ws.send_json({"op": "subscribe", "jobs": [a["id"], b["id"]]})
        await until(ws, lambda m: m["type"] == "snapshot" and m["job"]["id"] == b["id"])
        await ws.send_json({"op": "unsubscribe", "jobs": [a["id"]], "id": 3})
        await until(ws, lambda m: m["type"] == "unsubscribed")
        got = await until(ws, lambda m: m.get("event_type") == "job.completed")
        after = [m for m in got if m["type"] == "event"]
    assert after and {m["job"]["id"] for m in after} == {b["id"]}


async def poll_waiters(client: Any) -> float:
    text = await (await client.get("/metrics")).text()
    found = re.search(r'dubsim_subscribers\{transport="poll"\} ([0-9.e+]+)', text)
    return float(found.group(1)) if found else 0.0


async def test_long_poll_until_terminal_ignores_other_changes(api: ApiFactory) -> None:
    client = await api(auto_process=False)
    job = await submit(client, {"role": "premium", "scenario": {"outcome": "stuck"}})
    poll = asyncio.create_task(client.get(f"/v1/jobs/{job['id']}?wait=30&until=terminal"))
    async with asyncio.timeout(20):  # the poll is waiting before anything changes
        while await poll_waiters(client) < 1:
            await asyncio.sleep(0.01)
    resp = await client.post("/v1/process", json={"count": 1}, headers=ADMIN)
    assert (await resp.json())["started"][0]["status"] == "processing"  # a change, not the end
    resp = await client.post(f"/v1/jobs/{job['id']}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200
    resp = await asyncio.wait_for(poll, 20)
    assert resp.status == 200 and (await resp.json())["status"] == "cancelled"
    assert (await client.get(f"/v1/jobs/{job['id']}?wait=1&until=soon")).status == 422
