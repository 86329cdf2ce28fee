"""An outsider's attack on dubsim at scale and under contention (docs/reliability.md, "Scale
and contention, attacked from the outside"): the read model with 100k-200k jobs, cleanups and
`JOB_TTL_S` expiry of many jobs at once, the Idempotency-Key under concurrent retries, the
list's query parameters, subscribing to every job, and the virtual clock on two processes.

Each test states the contract literally and reproduces the break at a scale that runs in
seconds (thousands of jobs, not hundreds of thousands): it asserts on the algorithm (how many
deletes are in flight, how many records a call walks), not on wall-clock time; the timings
measured on real servers are in docs/reliability.md.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp import WSMsgType, web

from service.api.stream import WS_WIRE
from service.appkeys import HUB, SCHEDULER, SERVICE
from service.hub import SLOW_CONSUMER, Hub, Wire
from service.jobs import JobService
from service.models import EventType, Role, Scenario, SubmitRequest
from tests.conftest import ADMIN, ApiFactory

STUCK = SubmitRequest(role=Role.PREMIUM, scenario=Scenario(outcome="stuck"))


async def finished_jobs(service: JobService, count: int, users: int = 20) -> list[str]:
    """`count` cancelled (so finished) jobs, made and cancelled through the service."""
    ids: list[str] = []
    for start in range(0, count, 500):
        made = await asyncio.gather(
            *(service.submit(f"u{n % users}", STUCK) for n in range(start, min(count, start + 500)))
        )
        ids += [record.job.id for record, _, _ in made]
    for start in range(0, count, 500):
        await asyncio.gather(*(service.cancel(i, "done") for i in ids[start : start + 500]))
    return ids


def in_flight_peak(
    monkeypatch: pytest.MonkeyPatch, store: Any, event: EventType
) -> Callable[[], int]:
    """Count the store's commits of `event` in flight at once; returns the peak's reader."""
    real_commit = store.commit
    in_flight = most = 0

    async def commit(change: Any) -> int:
        nonlocal in_flight, most
        if change.event is not event:
            return await real_commit(change)
        in_flight += 1
        most = max(most, in_flight)
        try:
            return await real_commit(change)
        finally:
            in_flight -= 1

    monkeypatch.setattr(store, "commit", commit)
    return lambda: most


# ---- cleanups and JOB_TTL_S of many jobs at once --------------------------------------------


async def test_a_cleanup_of_thousands_keeps_its_deletes_in_small_batches(
    api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a real server: `POST /v1/cleanup` of 100,000 finished jobs held the event
    loop for 19 s in one piece (every WebSocket ping, every push, every request waited), 5,000
    jobs for 0.6 s: all the deletes were committed at once, so one group commit's events were
    applied, published and their callers woken in a single turn of the loop. The contract: a
    cleanup keeps at most a few hundred deletes in flight, so each turn applies a small batch
    (the same path serves the `JOB_TTL_S` sweep)."""
    client = await api(auto_process=False)
    service = client.app[SERVICE]
    await finished_jobs(service, 2_000)
    store = service.store
    peak = in_flight_peak(monkeypatch, store, EventType.DELETED)
    resp = await client.post("/v1/cleanup", json={}, headers=ADMIN)
    assert resp.status == 200
    assert await resp.json() == {"deleted": 2_000}
    assert len(service) == 0
    assert 0 < peak() <= 500, f"{peak()} deletes were in flight at once"


async def test_deleting_plain_jobs_starts_no_file_removal(
    api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every deleted job, media or not, started a thread-pool `rmtree` of a directory only
    media jobs have: 100,000 of them queued in one turn of the loop (most of a 5,000-job
    cleanup's stall: 0.9 s of which 0.7 s was this). Plain jobs write no files (docs/media.md),
    so deleting them removes none; a media job's files still go with it
    (tests/media/test_media_jobs.py::test_files_go_with_the_job)."""
    client = await api(auto_process=False)
    runner = client.app[SCHEDULER].runner
    assert runner is not None
    removed: list[str] = []
    monkeypatch.setattr(runner, "job_deleted", removed.append)
    await finished_jobs(client.app[SERVICE], 300)
    resp = await client.post("/v1/cleanup", json={}, headers=ADMIN)
    assert await resp.json() == {"deleted": 300}
    assert removed == []


async def test_the_job_ttl_sweep_walks_only_what_expires(
    api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a real server holding 200,000 finished jobs: a cleanup that deletes nothing
    (`older_than_s` past every job, what each JOB_TTL_S sweep is until jobs are due) held the
    loop 190-290 ms, and the sweep itself first parsed every finished job's `finished_at` to
    find the oldest: two full scans with a date parse per job, every sweep (at most a minute
    apart once jobs expire steadily). The contract: a sweep costs what it deletes, not what
    is held, and still deletes every job exactly JOB_TTL_S after it finished (virtual clock:
    1,000 jobs finished at t0 go by t0+3660, the one finished at t0+1800 by t0+5520: the sweep
    runs every tenth of JOB_TTL_S, at most a minute apart)."""
    import service.jobs
    import service.scheduler

    client = await api(clock="virtual", auto_process=False, job_ttl_s=3600)
    service_ = client.app[SERVICE]
    await finished_jobs(service_, 1_000)
    await client.post("/v1/clock/advance", json={"seconds": 1800}, headers=ADMIN)
    last = await finished_jobs(service_, 1)
    parsed = 0

    def counting(parse: Any) -> Any:
        def wrapper(text: str) -> float:
            nonlocal parsed
            parsed += 1
            return float(parse(text))

        return wrapper

    monkeypatch.setattr(service.jobs, "parse_iso", counting(service.jobs.parse_iso))
    monkeypatch.setattr(service.scheduler, "parse_iso", counting(service.scheduler.parse_iso))
    await client.post("/v1/clock/advance", json={"seconds": 1799}, headers=ADMIN)
    assert len(service_) == 1_001
    # swept every tenth of JOB_TTL_S, at most every minute (docs/architecture.md)
    await client.post("/v1/clock/advance", json={"seconds": 60}, headers=ADMIN)
    assert len(service_) == 1
    assert parsed <= 10, f"the sweep parsed {parsed} job times to delete 1,000 jobs"
    resp = await client.post("/v1/cleanup", json={"older_than_s": 1900}, headers=ADMIN)
    assert await resp.json() == {"deleted": 0}
    await client.post("/v1/clock/advance", json={"seconds": 1739}, headers=ADMIN)  # t0+5399
    assert service_.find(last[0]) is not None
    await client.post("/v1/clock/advance", json={"seconds": 120}, headers=ADMIN)
    assert len(service_) == 0
    assert parsed <= 10, f"the sweeps parsed {parsed} job times"


async def test_starting_thousands_by_hand_claims_them_in_small_batches(
    api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a real server in manual mode (AUTO_PROCESS=false) with 12,000 jobs queued:
    `POST /v1/process {"count": 10000}` (the documented maximum) held the loop 0.72 s: every
    claim committed at once, one group commit applied in one turn. The contract: at most a
    few hundred claims in flight, and every job asked for started."""
    client = await api(auto_process=False)
    service_ = client.app[SERVICE]
    for start in range(0, 1_500, 500):
        await asyncio.gather(
            *(service_.submit(f"s{n % 20}", STUCK) for n in range(start, start + 500))
        )
    store = service_.store
    peak = in_flight_peak(monkeypatch, store, EventType.STARTED)
    resp = await client.post("/v1/process", json={"count": 1_200}, headers=ADMIN)
    assert resp.status == 200
    started = (await resp.json())["started"]
    assert len(started) == 1_200
    assert {job["status"] for job in started} == {"processing"}
    assert 0 < peak() <= 500, f"{peak()} claims were in flight at once"


# ---- Idempotency-Key: concurrent retries -----------------------------------------------------


async def test_concurrent_retries_of_an_idempotency_key_do_not_spend_the_window(
    api: ApiFactory,
) -> None:
    """A client that retries a submission while the first try is still in flight (a timeout,
    a proxy retry) sends the same Idempotency-Key twice at once. Seen (RATE_LIMIT=5, 20 requests
    at once over 3 keys, SQLite and Redis): 3 jobs made, 2 replays (200), 15 answered 429, and
    the user's hourly window full with 3 jobs: every request with the key counted a hit before
    the commit found the duplicate. The contract (docs/api.md: the header is honoured; a replay
    does not count): each key makes one job and counts once, every other request with it is
    the replay (200), none is refused by the window, and 2 of the 5 submissions are left."""
    client = await api(rate_limit=5)
    user = {"X-User-Id": "yan"}

    async def submit(n: int) -> tuple[int, str]:
        headers = {**user, "Idempotency-Key": f"key{n % 3}"}
        resp = await client.post(
            "/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers=headers
        )
        return resp.status, (await resp.json()).get("id", "")

    answers = await asyncio.gather(*(submit(n) for n in range(20)))
    assert Counter(status for status, _ in answers) == {201: 3, 200: 17}
    assert len({job_id for _, job_id in answers}) == 3
    left = [
        (
            await client.post("/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers=user)
        ).status
        for _ in range(3)
    ]
    assert left == [201, 201, 429]


async def test_concurrent_retries_of_a_key_on_two_processes_do_not_spend_the_window(
    aiohttp_client: Any, redis_url: str
) -> None:
    """The same attack through two processes on one Redis (the retry reaches the other
    process, as behind a load balancer): seen three times in three runs, 3 jobs, 15 replays
    and 2 answered 429, and the window full (the next 3 submissions 429): the rate hit was
    taken before the commit script found the key, and nothing gave it back. A key is now held
    in Redis while one process submits with it; the other waits for its job and replays it.
    Contract as above: one job per key, one hit per key, the rest replays."""
    from service.app import create_app
    from tests.conftest import make_settings

    def app() -> Any:
        return create_app(make_settings(redis_url=redis_url, rate_limit=5))

    first, second = await aiohttp_client(app()), await aiohttp_client(app())
    user = {"X-User-Id": "yan"}

    async def submit(n: int) -> tuple[int, str]:
        headers = {**user, "Idempotency-Key": f"key{n % 3}"}
        body = {"scenario": {"outcome": "stuck"}}
        resp = await (first if n % 2 else second).post("/v1/jobs", json=body, headers=headers)
        return resp.status, (await resp.json()).get("id", "")

    answers = await asyncio.gather(*(submit(n) for n in range(20)))
    assert Counter(status for status, _ in answers) == {201: 3, 200: 17}
    left = [
        (await first.post("/v1/jobs", json={"scenario": {"outcome": "stuck"}}, headers=user)).status
        for _ in range(3)
    ]
    assert left == [201, 201, 429]


async def test_a_key_held_by_a_process_that_died_delays_a_retry_for_a_bounded_time_only(
    aiohttp_client: Any, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process that dies while submitting with a key leaves the key held in Redis until the
    hold expires: a retry on another process waits for it at most KEY_HOLD_S, then goes on
    and makes the job (nothing was made under the key). A hold is released only by its own
    holder."""
    import service.jobs as jobs_module
    from service.app import create_app
    from tests.conftest import make_settings

    monkeypatch.setattr(jobs_module, "KEY_HOLD_S", 0.3)
    dead = await aiohttp_client(create_app(make_settings(redis_url=redis_url)))
    alive = await aiohttp_client(create_app(make_settings(redis_url=redis_url)))
    dead_store, alive_store = dead.app[SERVICE].store, alive.app[SERVICE].store
    assert await dead_store.claim_key("yan", "k", 60)  # held for a minute, never released
    assert not await alive_store.claim_key("yan", "k", 60)
    await alive_store.release_key("yan", "k")  # not its hold: changes nothing
    assert not await alive_store.claim_key("yan", "k", 60)
    headers = {"X-User-Id": "yan", "Idempotency-Key": "k"}
    async with asyncio.timeout(20):
        resp = await alive.post("/v1/jobs", json={"role": "premium"}, headers=headers)
    assert resp.status == 201


# ---- the list's query parameters -------------------------------------------------------------


@pytest.mark.parametrize(
    "query",
    [
        "cursor=%D9%A3",  # Arabic-Indic three
        "cursor=%EF%BC%91%EF%BC%92",  # fullwidth 12
        "cursor=%2B5",  # +5
        "cursor=%205",  # leading space
        "cursor=5%20",  # trailing space
        "cursor=5_0",
        "limit=%D9%A3",
        "limit=1_0",
        "limit=%2B5",
        "limit=%205",
    ],
)
async def test_cursor_and_limit_are_plain_ascii_digits(api: ApiFactory, query: str) -> None:
    """`?cursor=` in Arabic-Indic or fullwidth digits, `?limit=1_0`, `?limit=+5`, `?limit=%205` were read by
    Python's int() and served a page; `?wait=` refuses the same spellings (docs/reliability.md,
    streams attack). The contract: 422 `validation_error` naming the field."""
    client = await api()
    await client.post("/v1/jobs", json={}, headers={"X-User-Id": "ann"})
    resp = await client.get("/v1/jobs?" + query, headers=ADMIN)
    assert resp.status == 422, await resp.text()
    body = await resp.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["field"] == query.split("=")[0]
    ok = await client.get("/v1/jobs?limit=5&cursor=99", headers=ADMIN)
    assert ok.status == 200


class Walked(dict[str, Any]):
    """A dict that counts the values and items its callers walk (the read model's records,
    the hub's latest snapshots): how much of everything held one request looked at."""

    walked = 0

    def _count(self, it: Iterator[Any]) -> Iterator[Any]:
        for value in it:
            self.walked += 1
            yield value

    def values(self) -> Any:
        outer = self

        class View:
            def __iter__(self) -> Iterator[Any]:
                return outer._count(iter(dict.values(outer)))

            def __reversed__(self) -> Iterator[Any]:
                return outer._count(reversed(dict.values(outer)))

            def __len__(self) -> int:
                return dict.__len__(outer)

        return View()

    def items(self) -> Any:
        return list(self._count(iter(dict.items(self))))


async def test_a_users_list_and_mine_walk_only_that_users_jobs(api: ApiFactory) -> None:
    """Measured on a real server with 200,000 jobs: `GET /v1/jobs` of a user with none (or a
    few) took 30-50 ms of loop, `subscribe mine` 50-76 ms, `GET /jobs` (legacy) the same: each
    walked every job held to find the caller's, so a few users polling their lists kept the
    loop busy for everyone. The contract: a user's page and a `mine` subscription walk that
    user's jobs, not everyone's (3,000 jobs of others held here, 2 of the caller's)."""
    client = await api(auto_process=False)
    service_ = client.app[SERVICE]
    hub = client.app[HUB]
    await finished_jobs(service_, 3_000, users=30)
    own = [(await client.post("/v1/jobs", json={}, headers={"X-User-Id": "zoe"})) for _ in range(2)]
    assert [r.status for r in own] == [201, 201]
    service_._records = records = Walked(service_._records)  # type: ignore[assignment]
    hub._latest = latest = Walked(hub._latest)  # type: ignore[assignment]
    for url in ("/v1/jobs?limit=10", "/v1/jobs?limit=10&status=failed", "/jobs"):
        resp = await client.get(url, headers={"X-User-Id": "zoe"})
        assert resp.status == 200
    resp = await client.get("/v1/jobs?limit=10", headers={"X-User-Id": "nobody"})
    assert await resp.json() == {"jobs": [], "next_cursor": None}
    ws = await client.ws_connect("/v1/ws", headers={"X-User-Id": "zoe"})
    await ws.send_json({"op": "subscribe", "mine": True})
    kinds = [(await ws.receive_json())["type"] for _ in range(3)]
    assert kinds == ["subscribed", "snapshot", "snapshot"]
    await ws.close()
    assert records.walked <= 20, f"the lists walked {records.walked} of 3,002 jobs"
    assert latest.walked <= 20, f"the mine snapshot walked {latest.walked} of 3,002 jobs"


# ---- subscribing to every job ----------------------------------------------------------------


def test_a_subscribe_past_its_burst_stops_encoding_snapshots() -> None:
    """Measured on a real server: an admin `subscribe all` (the dashboard, `dubsim watch
    --token`, SSE `?all=1`) with 100,000 jobs held stalled the loop 146 ms, with 200,000 jobs
    262 ms, and every reconnect of it again: the snapshots went past SUBSCRIBER_BURST_BYTES
    (16 MiB, ~23,000 jobs) and closed the subscription, but the loop went on encoding a
    snapshot frame of every remaining job, each thrown away. The contract: once the
    subscription is closed, the remaining snapshots are not made."""
    hub = Hub(buffer_size=100, queue_limit=1_000)
    job = b'{"id":"%06d","user_id":"u","status":"completed","padding":"' + b"x" * 500 + b'"}'
    for n in range(2_000):
        hub.track(f"{n:06d}", "u", job)
    made = 0

    def snapshot(seq: int, data: bytes) -> bytes:
        nonlocal made
        made += 1
        return WS_WIRE.snapshot(seq, data)

    wire = Wire("counting", WS_WIRE.event, snapshot, WS_WIRE.reset)
    sub = hub.open(wire)
    sub.burst_bytes = 64 * 1024  # room for about 120 of these snapshots
    hub.subscribe(sub, everything=True)
    assert sub.closed_reason == SLOW_CONSUMER
    assert made <= 200, f"{made} snapshots encoded for a subscription closed after ~120"


@pytest.mark.xfail(
    strict=True,
    reason="an `all` subscription whose snapshots pass SUBSCRIBER_BURST_BYTES is closed 4000 "
    "before anything is sent: the dashboard shows nothing once the server holds ~23k jobs",
)
async def test_the_dashboard_can_follow_all_jobs_past_the_burst(api: ApiFactory) -> None:
    """Seen on a real server with 100,000 jobs (and 200,000): the dashboard's WebSocket
    `subscribe all` gets close 4000 `slow_consumer` with not even its `subscribed`, SSE
    `?all=1` one `event: error`; each reconnect is the same, so neither the dashboard nor
    `dubsim watch --token` can show anything once the snapshots of every job pass
    SUBSCRIBER_BURST_BYTES (16 MiB: about 23,000 jobs of ~700 bytes). Here the same with the
    bounds made small (16 KiB) and 100 jobs. The contract it should meet: a subscriber that
    reads gets `subscribed` and a snapshot of every job (at the pace it reads), then live
    events; only one that stops reading is cut."""
    client = await api(
        auto_process=False, subscriber_queue_bytes=16 * 1024, subscriber_burst_bytes=16 * 1024
    )
    for n in range(100):
        resp = await client.post("/v1/jobs", json={}, headers={"X-User-Id": f"u{n}"})
        assert resp.status == 201
    ws = await client.ws_connect("/v1/ws", headers=ADMIN)
    await ws.send_json({"op": "subscribe", "all": True})
    kinds: Counter[str] = Counter()
    async with asyncio.timeout(10):
        while kinds["snapshot"] < 100:
            msg = await ws.receive()
            assert msg.type is WSMsgType.TEXT, f"closed {ws.close_code} after {dict(kinds)}"
            kinds[msg.json()["type"]] += 1
    assert kinds == {"subscribed": 1, "snapshot": 100}
    await ws.close()


# ---- the virtual clock on two processes ------------------------------------------------------


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["at"].replace("Z", "+00:00")).timestamp()


@pytest.mark.xfail(
    strict=True,
    reason="CLOCK=virtual on two Redis processes: the follower jumps to the advance's target "
    "and requeues the other's failed jobs there, not at their not_before",
)
async def test_two_processes_on_a_virtual_clock_retry_when_due(
    aiohttp_client: Any, redis_url: str
) -> None:
    """Seen with two processes on one Redis, CLOCK=virtual, RETRY_DELAY=7: 20 jobs that fail
    their first attempts (1 s to 3599 s long), one advance of 30 days: every job completed,
    but for 14-16 of them a retry came 30 s to 2,528,829 s after its failure instead of
    7 x 2^k s, and the events' `at` went back in time 2,189 times in seq order (200 jobs).
    One process alone does it exactly (0 of 200 wrong). The process that did not advance
    follows the shared time by jumping to the target (running only its own sleepers on the
    way), so a job that fails on the advancing process at T is found overdue by the other
    one's retry queue and requeued at the other's now. docs/testing-integrations.md: a retry
    is due exactly RETRY_DELAY after the failure (doubling), every step seeing its due time,
    one time for the whole service on Redis."""
    from service.app import create_app
    from tests.conftest import make_settings

    def app() -> Any:
        return create_app(
            make_settings(
                redis_url=redis_url,
                clock="virtual",
                clock_start="2030-01-01T00:00:00+00:00",
                retry_delay=7.0,
                max_attempts=4,
                workers=2,
                job_ttl_s=31_536_000,
            )
        )

    first, second = await aiohttp_client(app()), await aiohttp_client(app())
    ws = await first.ws_connect("/v1/ws", headers=ADMIN)
    await ws.send_json({"op": "subscribe", "all": True})
    assert (await ws.receive_json())["type"] == "subscribed"
    ids = []
    for n in range(10):
        body = {"role": "premium", "scenario": {"duration_s": 1 + 100 * n, "fail_attempts": 2}}
        resp = await (first if n % 2 else second).post("/v1/jobs", json=body)
        ids.append((await resp.json())["id"])
    resp = await first.post("/v1/clock/advance", json={"seconds": 86_400}, headers=ADMIN)
    assert resp.status == 200
    events: list[dict[str, Any]] = []
    async with asyncio.timeout(20):
        while sum(e["event_type"] == "job.completed" for e in events) < len(ids):
            msg = await ws.receive_json()
            if msg["type"] == "event":
                events.append(msg)
    await ws.close()
    late = []
    for job_id in ids:
        mine = [e for e in events if e["job"]["id"] == job_id]
        failed = [_at(e) for e in mine if e["event_type"] == "job.failed"]
        retried = [_at(e) for e in mine if e["event_type"] == "job.retrying"]
        assert len(failed) == len(retried) == 2
        late += [
            (job_id, k, r - f)
            for k, (f, r) in enumerate(zip(failed, retried, strict=True))
            if abs(r - f - 7 * 2**k) > 0.001
        ]
    assert late == [], f"retries not at failure + RETRY_DELAY x 2^k: {late}"


async def test_the_legacy_list_of_every_job_is_written_in_pieces(
    api: ApiFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Measured on a real server with 200,000 jobs: the admin's `GET /jobs` (the seed-era list
    of every job, 143 MB) held the loop 0.73-1.0 s: one encode of everything, one write. The
    contract: the list is grouped and written a piece at a time (LIST_CHUNK jobs), the body
    still the old shape: every group with free and premium, oldest first."""
    import service.api.compat as compat

    monkeypatch.setattr(compat, "LIST_CHUNK", 3, raising=False)
    client = await api(auto_process=False)
    service_ = client.app[SERVICE]
    made = []
    for n in range(8):
        role = "premium" if n % 2 else "free"
        resp = await client.post("/v1/jobs", json={"role": role}, headers={"X-User-Id": f"l{n}"})
        made.append(await resp.json())
    for job in made[:3]:
        await service_.cancel(job["id"], "gone")
    writes = 0
    real_write = web.StreamResponse.write

    async def write(self: web.StreamResponse, data: bytes) -> None:
        nonlocal writes
        writes += 1
        await real_write(self, data)

    monkeypatch.setattr(web.StreamResponse, "write", write)
    resp = await client.get("/jobs", headers=ADMIN)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "application/json"
    body = await resp.json()
    assert writes >= 4, f"{writes} writes for 8 jobs in pieces of 3"

    def ids(group: str, role: str) -> list[str]:
        return list(body[group][role])

    assert list(body) == ["pending", "completed", "cancelled", "failed", "permanently_failed"]
    assert all(list(body[group]) == ["free", "premium"] for group in body)
    assert ids("cancelled", "free") == [made[0]["id"], made[2]["id"]]
    assert ids("cancelled", "premium") == [made[1]["id"]]
    assert ids("pending", "free") == [made[4]["id"], made[6]["id"]]
    assert ids("pending", "premium") == [made[3]["id"], made[5]["id"], made[7]["id"]]
    assert body["pending"]["premium"][made[7]["id"]]["user_id"] == "l7"
    assert ids("completed", "free") == ids("failed", "premium") == []


async def test_the_virtual_clock_stops_short_of_year_10000(api: ApiFactory) -> None:
    """CLOCK_START=9999-12-30 and two advances gave `"now": "10000-01-02T00:00:00.000Z"` and
    jobs created at that time: not an RFC 3339 time (four-digit years), which a client's
    parser refuses (Python's `datetime.fromisoformat` among them). The contract: an advance
    past 9999-12-31T23:59:59.999Z is 422 naming `seconds`, the time unchanged; up to it, 200."""
    client = await api(clock="virtual", clock_start="9999-12-30T00:00:00+00:00")
    resp = await client.post("/v1/clock/advance", json={"seconds": 2 * 86_400}, headers=ADMIN)
    assert resp.status == 422
    body = await resp.json()
    assert body["error"]["code"] == "validation_error"
    assert body["error"]["details"]["field"] == "seconds"
    state = await (await client.get("/v1/clock")).json()
    assert state["now"] == "9999-12-30T00:00:00.000Z"
    resp = await client.post("/v1/clock/advance", json={"seconds": 86_399}, headers=ADMIN)
    assert resp.status == 200
    assert (await resp.json())["now"] == "9999-12-30T23:59:59.000Z"
