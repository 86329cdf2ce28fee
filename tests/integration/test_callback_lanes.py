"""Per-job callbacks are sent through one lane per (owner, callback origin): a receiver that
fails does not hold back the owner's callbacks to other receivers; callbacks to one origin stay
one at a time in seq order; past 32 origins an owner's callbacks share one lane; each callback
goes through exactly one lane (two Redis processes, a new origin admitted on both at once); a
database from before origin lanes keeps delivering what it owed, once. Both store backends.

The contract is written here literally: the origin of a URL, the cap of 32, the documents'
names and fields, and (for the upgrade) the lane id and webhook-id the one-lane-per-owner code
used."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service.app import create_app
from service.appkeys import SERVICE
from service.models import parse_iso
from service.webhooks import WEBHOOKS
from tests.conftest import (
    ADMIN,
    ApiFactory,
    ServerProcess,
    free_port,
    make_settings,
    wait_for_status,
)
from tests.webhook_support import FakeClock, Receiver

ALICE = {"X-User-Id": "alice"}
QUICK = {"duration_s": 0.05}
CAP = 32  # origins with a lane of their own, per owner (docs/webhooks.md)


class AnyLoopback(Receiver):
    """A receiver on every loopback address (0.0.0.0): 127.0.0.N are N distinct origins."""

    async def start(self) -> AnyLoopback:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self.server = TestServer(app, host="0.0.0.0")
        await self.server.start_server()
        return self

    def at(self, host: str, path: str) -> str:
        assert self.server is not None
        return f"http://{host}:{self.server.port}{path}"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = await Receiver().start()
    yield r
    await r.close()


@pytest.fixture
async def loopbacks() -> AsyncIterator[AnyLoopback]:
    r = await AnyLoopback().start()
    yield r
    await r.close()


def dead_url(path: str = "/dead") -> str:
    """A closed port: every attempt fails with a connection error."""
    return f"http://127.0.0.1:{free_port()}{path}"


async def job(
    client: TestClient[Any, Any], headers: dict[str, str] = ALICE, **body: Any
) -> dict[str, Any]:
    body.setdefault("scenario", QUICK)
    body.setdefault("role", "premium")
    resp = await client.post("/v1/jobs", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    return await resp.json()  # type: ignore[no-any-return]


async def docs(client: TestClient[Any, Any], kind: str) -> dict[str, Any]:
    store = client.app[WEBHOOKS].store
    return {d.id: json.loads(d.body) for d in await store.docs(kind)}


async def state_of(client: TestClient[Any, Any], url: str) -> dict[str, Any] | None:
    """The lane state whose delivery in progress is the callback to `url`."""
    for state in (await docs(client, "webhook_state")).values():
        current = state.get("current")
        if current is not None and current["url"] == url:
            return state
    return None


async def retrying(client: TestClient[Any, Any], url: str) -> dict[str, Any]:
    """Wait until the callback to `url` failed its first attempt and waits for the next."""
    async with asyncio.timeout(20):
        while True:
            state = await state_of(client, url)
            if state is not None and state["current"]["tries"] >= 1:
                return state
            await asyncio.sleep(0.02)


def lag_ms(got: Any) -> float:
    """From the event's commit to its arrival at the receiver."""
    return (time.time() - parse_iso(got.event["at"])) * 1000


# ---- 1. a dead receiver does not hold back a healthy one -----------------------------------


async def test_a_dead_callback_origin_does_not_delay_a_healthy_one(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    clock = FakeClock()  # the retry waits never pass unless advanced
    client.app[WEBHOOKS].clock_override = clock
    dead = dead_url()
    stalled = await job(client, callback_url=dead)
    await wait_for_status(client, stalled["id"], {"completed"})
    before = await retrying(client, dead)
    healthy = await job(client, callback_url=receiver.url("/ok"))
    (got,) = await receiver.wait_for(1, timeout=10, path="/ok")
    print(f"\nhealthy callback while a dead one retries: {lag_ms(got):.1f} ms after its commit")
    assert got.event["type"] == "job.completed" and got.event["job"]["id"] == healthy["id"]
    # the dead one is still in its schedule: one attempt made, the next one due later
    after = await state_of(client, dead)
    assert after is not None and after["current"]["tries"] == 1
    assert after["current"]["next_at"] == before["current"]["next_at"] > clock.now()
    assert after["current"]["job_id"] == stalled["id"]
    # lanes stay internal
    assert (await (await client.get("/v1/webhooks", headers=ALICE)).json())["webhooks"] == []
    assert (await (await client.get("/v1/webhooks", headers=ADMIN)).json())["webhooks"] == []


# ---- 2. one origin: one at a time, in seq order ------------------------------------------------


async def test_one_origin_stays_one_at_a_time_in_seq_order(
    api: ApiFactory, receiver: Receiver
) -> None:
    client = await api()
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    receiver.plan.append((500, {}))  # the first callback fails once
    first = await job(client, callback_url=receiver.url("/a?job=1"))
    await wait_for_status(client, first["id"], {"completed"})
    await receiver.wait_for(1)
    # another path at the same origin (host and port the same, the port written out)
    port = receiver.url().split(":")[2].split("/")[0]
    second = await job(client, callback_url=f"HTTP://127.0.0.1:{port}/b")
    await wait_for_status(client, second["id"], {"completed"})
    wait = await clock.next_wait()  # the first's retry is due in ~5 s of the service clock
    await asyncio.sleep(0.3)  # the second, were it sent on its own, would show up now
    assert [g.path for g in receiver.got] == ["/a"]
    clock.advance(wait)
    got = await receiver.wait_for(3)
    assert [(g.path, g.event["job"]["id"]) for g in got] == [
        ("/a", first["id"]),
        ("/a", first["id"]),
        ("/b", second["id"]),
    ]
    assert got[0].id == got[1].id  # the retry of one delivery
    assert got[1].event["seq"] < got[2].event["seq"]


# ---- 3. the cap: 32 origin lanes per owner, the rest share a lane ------------------------------


async def test_past_32_origins_callbacks_share_the_owners_lane(
    api: ApiFactory, loopbacks: AnyLoopback
) -> None:
    client = await api()
    hosts = [f"127.0.0.{n}" for n in range(1, CAP + 2)]  # 33 origins
    jobs = {}
    for n, host in enumerate(hosts):
        jobs[n] = (await job(client, callback_url=loopbacks.at(host, f"/{n}")))["id"]
    got = await loopbacks.wait_for(CAP + 1, timeout=30)
    await asyncio.sleep(0.3)  # a second delivery of any would show up now
    assert sorted((g.path, g.event["job"]["id"]) for g in loopbacks.got) == sorted(
        (f"/{n}", job_id) for n, job_id in jobs.items()
    )
    assert len({g.id for g in got}) == CAP + 1
    lanes = {i: d for i, d in (await docs(client, "webhook")).items() if d["owner"] == "alice"}
    assert all(d["lane"] for d in lanes.values())
    assert len(lanes) == CAP + 1  # 32 origins' lanes and the shared one
    origins = {d.get("origin") for d in lanes.values()}
    assert origins == {None} | {f"http://{h}:{loopbacks.server.port}" for h in hosts[:CAP]}  # type: ignore[union-attr]
    (routes,) = (await docs(client, "webhook_routes")).values()
    assert len(routes["origins"]) == CAP
    # the 33rd went through the shared lane: its log has that job
    (shared,) = (i for i, d in lanes.items() if d.get("origin") is None)

    async def logged() -> list[str]:
        log = (await docs(client, "webhook_log")).get(shared)
        return [] if log is None else [d["job_id"] for d in log["deliveries"]]

    async with asyncio.timeout(20):  # written when the lane idles
        while not await logged():
            await asyncio.sleep(0.05)
    assert await logged() == [jobs[CAP]]
    # a further job to a new origin: still delivered, still no new lane
    late = await job(client, callback_url=loopbacks.at("127.0.0.200", "/late"))
    (arrived,) = await loopbacks.wait_for(1, path="/late")
    assert arrived.event["job"]["id"] == late["id"]
    assert len([d for d in (await docs(client, "webhook")).values() if d["owner"] == "alice"]) == (
        CAP + 1
    )


async def two_processes(
    aiohttp_client: Any, redis_url: str
) -> tuple[TestClient[Any, Any], TestClient[Any, Any]]:
    """Two apps on one Redis, as two server processes (a short lease: lanes move quickly)."""
    settings = make_settings(redis_url=redis_url, lease_s=1)
    return await aiohttp_client(create_app(settings)), await aiohttp_client(create_app(settings))


async def test_the_cap_reached_at_once_on_two_redis_processes_is_exact(
    aiohttp_client: Any, redis_url: str, loopbacks: AnyLoopback
) -> None:
    one, two = await two_processes(aiohttp_client, redis_url)
    hosts = [f"127.0.0.{n}" for n in range(1, 41)]  # 40 new origins at once
    made = await asyncio.gather(
        *(
            job((one, two)[n % 2], callback_url=loopbacks.at(host, f"/{n}"))
            for n, host in enumerate(hosts)
        )
    )
    await loopbacks.wait_for(len(hosts), timeout=30)
    await asyncio.sleep(1.0)  # a second delivery of any would show up now
    assert sorted(g.event["job"]["id"] for g in loopbacks.got) == sorted(j["id"] for j in made)
    assert len({g.id for g in loopbacks.got}) == len(hosts)
    (routes,) = (await docs(one, "webhook_routes")).values()
    assert len(routes["origins"]) == CAP
    lanes = [d for d in (await docs(one, "webhook")).values() if d["owner"] == "alice"]
    # 32 origins' lanes and the shared one: the lanes made for origins that lost the race
    # for the last places are gone again
    assert len(lanes) == CAP + 1
    assert {d.get("origin") for d in lanes} == {None, *routes["origins"]}


# ---- 4. exactly once across lanes: two Redis processes ---------------------------------------


async def test_two_redis_processes_send_each_callback_once(
    aiohttp_client: Any, redis_url: str, loopbacks: AnyLoopback
) -> None:
    one, two = await two_processes(aiohttp_client, redis_url)
    # alice also has the shared lane (as a database from one lane per owner has): it hears
    # every callback of hers and must leave those of admitted origins to their lanes
    await one.app[WEBHOOKS].ensure_lane("alice")
    hosts = ["127.0.0.1", "127.0.0.2", "127.0.0.3"]
    # the first job of each origin submitted on both processes at once: both admit it
    first = await asyncio.gather(
        *(
            job(client, callback_url=loopbacks.at(host, f"/{host}/{i}"))
            for host in hosts
            for i, client in enumerate((one, two))
        )
    )
    ids = [j["id"] for j in first]
    for i in range(12):
        client = (one, two)[i % 2]
        host = hosts[i % 3]
        ids.append((await job(client, callback_url=loopbacks.at(host, f"/{host}/x{i}")))["id"])
    for job_id in ids:
        await wait_for_status(one, job_id, {"completed"})
    await loopbacks.wait_for(len(ids), timeout=30)
    # the process that holds some lanes stops: the other takes them over
    await one.close()
    for i in range(3):
        host = hosts[i]
        ids.append((await job(two, callback_url=loopbacks.at(host, f"/{host}/late")))["id"])
    await loopbacks.wait_for(len(ids), timeout=30)
    await asyncio.sleep(1.0)  # a second sender would show up now
    counts = Counter(g.id for g in loopbacks.got)
    assert set(counts.values()) == {1}, counts
    assert sorted(g.event["job"]["id"] for g in loopbacks.got) == sorted(ids)
    (routes,) = (await docs(two, "webhook_routes")).values()
    port = loopbacks.server.port  # type: ignore[union-attr]
    assert set(routes["origins"]) == {f"http://{h}:{port}" for h in hosts}
    assert all(isinstance(since, int) for since in routes["origins"].values())


async def test_kill_9_with_callbacks_in_several_lanes_loses_none(
    server_process: Callable[..., ServerProcess],
    receiver: Receiver,
    loopbacks: AnyLoopback,
    tmp_path: Any,
) -> None:
    """A real server: origin A's first callback hangs at its receiver while B's and C's go
    out; kill -9; after the restart every callback arrives, and the only one twice is A's that
    was in flight (same webhook-id, same body)."""
    db = str(tmp_path / "lanes.db")
    server = await asyncio.to_thread(server_process, db=db, webhook_timeout_s=60)
    receiver.hold = asyncio.Event()
    urls = {
        "a": receiver.url,
        "b": lambda path: loopbacks.at("127.0.0.2", path),
        "c": lambda path: loopbacks.at("127.0.0.3", path),
    }
    ids: dict[str, list[str]] = {"a": [], "b": [], "c": []}
    body = {"role": "premium", "scenario": QUICK}
    async with aiohttp.ClientSession(server.url) as http:
        for n in range(2):
            for origin, url in urls.items():
                resp = await http.post(
                    "/v1/jobs", json={**body, "callback_url": url(f"/{n}")}, headers=ALICE
                )
                assert resp.status == 201, await resp.text()
                ids[origin].append((await resp.json())["id"])
    (held,) = await receiver.wait_for(1)  # A's first: in flight, unanswered
    await loopbacks.wait_for(4)  # B's and C's are not held back by it
    lanes = {o: i for i, o in _stored(db, "webhook", "origin").items() if o is not None}
    port = loopbacks.server.port  # type: ignore[union-attr]
    # each lane's progress durable up to the last callback it sent (a lane that went idle
    # before the other's last event needn't have moved its cursor past that event): a resend
    # of those is not this test's
    sent = {
        lanes[origin]: max(
            g.event["seq"]
            for g in loopbacks.got
            if g.event["job"]["callback_url"].startswith(origin)
        )
        for origin in (f"http://127.0.0.{n}:{port}" for n in (2, 3))
    }
    async with asyncio.timeout(20):
        while any(
            (_stored(db, "webhook_state", "cursor").get(i) or 0) < s for i, s in sent.items()
        ):
            await asyncio.sleep(0.05)
    await asyncio.to_thread(server.kill)
    hold, receiver.hold = receiver.hold, None
    hold.set()
    server = await asyncio.to_thread(server_process, db=db, webhook_timeout_s=60)
    async with aiohttp.ClientSession(server.url) as http:
        for origin, url in urls.items():
            resp = await http.post(
                "/v1/jobs", json={**body, "callback_url": url("/late")}, headers=ALICE
            )
            assert resp.status == 201, await resp.text()
            ids[origin].append((await resp.json())["id"])
    got_a = await receiver.wait_for(4)  # A's first again, its second, the late one
    got_bc = await loopbacks.wait_for(6)
    await asyncio.sleep(0.5)  # a second delivery of any would show up now
    assert sorted(g.event["job"]["id"] for g in receiver.got) == sorted([*ids["a"], ids["a"][0]])
    assert sorted(g.event["job"]["id"] for g in loopbacks.got) == sorted(ids["b"] + ids["c"])
    again = got_a[1]
    assert again.id == held.id and again.body == held.body
    assert [g.event["job"]["id"] for g in got_a] == [*ids["a"][:1], *ids["a"]]  # in order
    assert len({g.id for g in got_bc}) == 6


def _stored(db: str, kind: str, field: str) -> dict[str, Any]:
    """A field of every document of `kind` as committed to the SQLite file."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows = conn.execute("SELECT id, body FROM docs WHERE kind = ?", (kind,)).fetchall()
    return {i: json.loads(body).get(field) for i, body in rows}


# ---- 5. upgrade: what the one-lane-per-owner code left is delivered as it was ---------------


def old_lane_id(owner: str) -> str:
    """The one lane each owner had: "cb_" + sha256("callbacks/<owner>")[:20]."""
    return "cb_" + hashlib.sha256(f"callbacks/{owner}".encode()).hexdigest()[:20]


def webhook_id(endpoint_id: str, seq: int) -> str:
    """msg_ + base32(sha256("<endpoint>/<seq>")[:16]), lowercased, unpadded."""
    digest = hashlib.sha256(f"{endpoint_id}/{seq}".encode()).digest()[:16]
    return "msg_" + base64.b32encode(digest).decode().rstrip("=").lower()


async def test_upgrade_keeps_delivering_what_the_one_lane_owed_once(
    aiohttp_client: Any, backend: dict[str, Any], receiver: Receiver, tmp_path: Any
) -> None:
    settings = make_settings(
        **{"db": str(tmp_path / "old.db"), **backend}, webhook_retry_schedule="0,5,10"
    )
    old = await aiohttp_client(create_app(settings))
    webhooks = old.app[WEBHOOKS]
    webhooks.clock_override = FakeClock()

    async def one_lane(owner: str, url: str) -> None:  # what prepare_callback did before
        await webhooks.validate_url(url)
        await webhooks.ensure_lane(owner)

    old.app[SERVICE].prepare_callback = one_lane
    dead = dead_url()
    a = await job(old, callback_url=dead)  # failing, in its retries
    await wait_for_status(old, a["id"], {"completed"})
    await retrying(old, dead)
    d = await job(old, callback_url=receiver.url("/d"))  # waiting behind it
    b = await job(  # accepted, not finished yet: its terminal event comes after the upgrade
        old, callback_url=receiver.url("/b"), scenario={"duration_s": 0.05, "outcome": "stuck"}
    )
    await wait_for_status(old, d["id"], {"completed"})
    lanes = {i: v for i, v in (await docs(old, "webhook")).items() if v["lane"]}
    assert list(lanes) == [old_lane_id("alice")]  # the old state: one lane, no routes
    assert await docs(old, "webhook_routes") == {}
    assert receiver.got == []
    await old.close()

    app = create_app(settings)  # the new code on the same database
    clock = FakeClock()
    app[WEBHOOKS].clock_override = clock  # before it starts: the old lane resumes a retry wait
    new = await aiohttp_client(app)
    c = await job(new, callback_url=receiver.url("/c"))  # a lane for the healthy origin
    (got_c,) = await receiver.wait_for(1, path="/c")
    resp = await new.post(f"/v1/jobs/{b['id']}/cancel", json={}, headers=ADMIN)
    assert resp.status == 200, await resp.text()
    (got_b,) = await receiver.wait_for(1, path="/b")
    assert receiver.of("/d") == []  # still behind the dead one, on the old lane, as before
    # the dead one's schedule runs out; the old lane goes on with what waited behind it
    async with asyncio.timeout(20):
        while not receiver.of("/d"):
            with_waits = [t for t, f in clock.sleepers if not f.done()]
            if with_waits:
                clock.advance(max(0.0, min(with_waits) - clock.now()) + 0.001)
            await asyncio.sleep(0.01)
    await asyncio.sleep(0.3)  # a second delivery of any would show up now
    assert sorted(g.path for g in receiver.got) == ["/b", "/c", "/d"]
    (got_d,) = receiver.of("/d")
    assert got_d.event["job"]["id"] == d["id"] and got_d.event["type"] == "job.completed"
    assert got_b.event["job"]["id"] == b["id"] and got_b.event["type"] == "job.cancelled"
    assert got_c.event["job"]["id"] == c["id"]
    # the old lane sent D with the id it always had; every callback of alice's lanes keeps
    # ids derived from that lane, whichever lane sends it
    assert got_d.id == webhook_id(old_lane_id("alice"), got_d.event["seq"])
    assert got_b.id == webhook_id(old_lane_id("alice"), got_b.event["seq"])
    state = (await docs(new, "webhook_state"))[old_lane_id("alice")]
    assert state["current"] is None  # the dead one was given up, the lane not disabled
    assert (await docs(new, "webhook"))[old_lane_id("alice")]["status"] == "enabled"


# ---- 6. the HeyGen facade's callbacks ---------------------------------------------------------


async def test_heygen_callbacks_to_a_dead_origin_do_not_delay_a_healthy_one(
    aiohttp_client: Any, backend: dict[str, Any], receiver: Receiver
) -> None:
    client = await aiohttp_client(create_app(make_settings(**backend)))
    clock = FakeClock()
    client.app[WEBHOOKS].clock_override = clock
    headers = {"x-api-key": "hg-user"}

    async def translate(callback_url: str) -> str:
        resp = await client.post(
            "/v2/video_translate",
            json={
                "video_url": "https://videos.example/a.mp4",
                "output_language": "French",
                "callback_url": callback_url,
            },
            headers=headers,
        )
        answer = await resp.json()
        assert resp.status == 200, answer
        return answer["data"]["video_translate_id"]  # type: ignore[no-any-return]

    dead = dead_url()
    stalled = await translate(dead)
    await wait_for_status(client, stalled, {"completed"})
    await retrying(client, dead)
    healthy = await translate(receiver.url("/heygen"))
    await wait_for_status(client, healthy, {"completed"})
    done = time.time()
    (got,) = await receiver.wait_for(1, timeout=10, path="/heygen")
    print(f"\nHeyGen callback while a dead one retries: {(time.time() - done) * 1000:.1f} ms")
    assert got.event["event_type"] == "video_translate.success"
    assert got.event["event_data"]["video_translate_id"] == healthy
    assert "webhook-signature" not in got.headers
    after = await state_of(client, dead)
    assert after is not None and after["current"]["tries"] == 1
