"""AsyncClient and Client over MockTransport: error mapping and the wait logic's decisions."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
import pytest

import client
from client import (
    APIError,
    AsyncClient,
    Backoff,
    Client,
    Conflict,
    InvalidRequest,
    Job,
    JobCancelled,
    JobFailed,
    JobNotFound,
    MockServerSocket,
    MockTransport,
    PollPolicy,
    RateLimited,
    Request,
    Response,
    TransportError,
    Unauthorized,
    WaitTimeout,
)

FAST = PollPolicy(
    backoff=Backoff(base=0.01, cap=0.05),
    reconnect=Backoff(base=0.01, cap=0.05),
    long_poll=False,
    ws_grace_s=0.05,
)


def job_body(
    job_id: str = "j1", status: str = "processing", progress: int = 0, tick: int = 0
) -> dict[str, Any]:
    return {
        "id": job_id,
        "user_id": "alice",
        "role": "premium",
        "status": status,
        "progress": progress,
        "attempt": 1,
        "max_attempts": 3,
        "priority": 1,
        "target_language": "es",
        "created_at": "2026-11-26T06:00:00.000Z",
        "updated_at": f"2026-11-26T06:{tick // 60:02d}:{tick % 60:02d}.000Z",
    }


def respond(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(
        status, {"content-type": "application/json", **headers}, msgspec.json.encode(body)
    )


def error(status: int, code: str, **headers: str) -> Response:
    return respond(
        {"error": {"code": code, "message": f"says {code}", "details": {}}}, status, **headers
    )


class FakeServer:
    """Jobs in a dict; REST and the WebSocket protocol's subscribe/resume, enough for decisions."""

    def __init__(self) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.seq = 0
        self.log: list[tuple[str, int | None]] = []  # (job id, seq) of every event published
        self.sockets: list[MockServerSocket] = []
        self.subs: dict[int, set[str]] = {}  # socket index -> subscribed job ids
        self.messages: list[dict[str, Any]] = []
        self.gets = 0
        self.http_fails = 0  # answer this many GETs with 503 first
        self.ws_enabled = True
        self.subscribed = asyncio.Event()

    def transport(self) -> MockTransport:
        return MockTransport(self.http, self.ws)

    def http(self, request: Request) -> Response:
        job_id = request.url.rsplit("/", 1)[-1].partition("?")[0]
        if request.method == "GET" and request.url.startswith("http://test/v1/jobs/"):
            self.gets += 1
            if self.http_fails:
                self.http_fails -= 1
                return error(503, "injected_fault")
            if job_id not in self.jobs:
                return error(404, "not_found")
            return respond(self.jobs[job_id])
        raise AssertionError(f"unexpected {request.method} {request.url}")

    async def ws(self, sock: MockServerSocket) -> None:
        if not self.ws_enabled:
            return  # closes at once, like a refused upgrade
        index = len(self.sockets)
        self.sockets.append(sock)
        self.subs[index] = set()
        while (msg := await sock.receive_json()) is not None:
            self.messages.append(msg)
            jobs = msg.get("jobs", [])
            if msg["op"] == "unsubscribe":
                self.subs[index].difference_update(jobs)
                await sock.send_json({"type": "unsubscribed", "id": msg.get("id")})
                continue
            self.subs[index].update(jobs)
            await sock.send_json({"type": "subscribed", "id": msg.get("id"), "seq": self.seq})
            unknown = [j for j in jobs if j not in self.jobs]
            if unknown:
                await sock.send_json(
                    {
                        "type": "error",
                        "code": "not_found",
                        "id": msg.get("id"),
                        "message": "no job",
                        "jobs": unknown,
                    }
                )
            if "since" in msg:
                for job_id, seq in self.log:
                    if seq is not None and seq > msg["since"] and job_id in jobs:
                        await sock.send_json(self._event(job_id, seq))
            else:
                for j in jobs:
                    if j in self.jobs:
                        await sock.send_json(
                            {"type": "snapshot", "seq": self.seq, "job": self.jobs[j]}
                        )
            self.subscribed.set()

    def _event(self, job_id: str, seq: int) -> dict[str, Any]:
        return {
            "type": "event",
            "seq": seq,
            "event_type": "job.progress",
            "at": "2026-11-26T06:00:00.000000Z",
            "job": self.history[seq],
        }

    history: dict[int, dict[str, Any]]

    async def publish(self, job_id: str, status: str, progress: int) -> None:
        """Change a job and push the event to every socket subscribed to it."""
        self.seq += 1
        self.jobs[job_id] = job_body(job_id, status, progress, tick=self.seq)
        if not hasattr(self, "history"):
            self.history = {}
        self.history[self.seq] = self.jobs[job_id]
        self.log.append((job_id, self.seq))
        for index, sock in enumerate(self.sockets):
            if job_id in self.subs[index] and sock.close_code is None:
                await sock.send_json(self._event(job_id, self.seq))


@pytest.fixture
def server() -> FakeServer:
    return FakeServer()


def make_client(server: FakeServer, **kw: Any) -> AsyncClient:
    return AsyncClient(
        "http://test", user_id="alice", policy=FAST, transport=server.transport(), **kw
    )


# ---- the public face ---------------------------------------------------------------


def test_all_matches_the_exported_names() -> None:
    public = {name for name in dir(client) if not name.startswith("_")}
    modules = {name for name in public if type(getattr(client, name)).__name__ == "module"}
    assert set(client.__all__) == public - modules
    assert client.__all__ == sorted(client.__all__)


def test_every_public_name_has_a_docstring() -> None:
    for name in client.__all__:
        value = getattr(client, name)
        if callable(value):
            assert value.__doc__, name


# ---- error mapping -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "kind"),
    [
        (error(401, "unauthorized"), Unauthorized),
        (error(403, "forbidden"), Unauthorized),
        (error(404, "not_found"), JobNotFound),
        (error(409, "conflict"), Conflict),
        (error(422, "validation_error"), InvalidRequest),
        (error(400, "invalid_json"), InvalidRequest),
        (error(429, "rate_limited", **{"Retry-After": "12"}), RateLimited),
        (Response(502, {}, b"<html>bad gateway</html>"), APIError),
    ],
)
async def test_errors_map_to_the_tree(response: Response, kind: type[APIError]) -> None:
    async with AsyncClient(
        "http://test", token="t", policy=FAST, transport=MockTransport(lambda r: response)
    ) as c:
        with pytest.raises(kind) as info:
            await c.cancel("j1", reason="no")
    err = info.value
    assert type(err) is kind
    assert err.status == response.status
    if isinstance(err, RateLimited):
        assert err.retry_after == 12.0 and err.code == "rate_limited"
    if response.status == 502:
        assert err.code == "http_502" and "bad gateway" in err.message and err.retryable


async def test_transport_errors_surface_after_retries_with_their_cause() -> None:
    calls = 0

    def refuse(request: Request) -> Response:
        nonlocal calls
        calls += 1
        raise TransportError("connection refused")

    async with AsyncClient("http://test", policy=FAST, transport=MockTransport(refuse)) as c:
        with pytest.raises(TransportError):
            await c.get("j1")
    assert calls == FAST.retries + 1


async def test_requests_carry_identity_and_escape_ids() -> None:
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return respond(job_body("a/b"), 201)

    async with AsyncClient(
        "http://test/", token="tok", user_id="alice", policy=FAST, transport=MockTransport(handler)
    ) as c:
        await c.submit(
            role="premium", user_id="bob", idempotency_key="k1", scenario={"outcome": "stuck"}
        )
        await c.get("a/b")
    submit, get = seen
    assert submit.headers["x-user-id"] == "bob" and submit.headers["idempotency-key"] == "k1"
    assert submit.headers["authorization"] == "Bearer tok"
    assert msgspec.json.decode(submit.content or b"") == {
        "role": "premium",
        "scenario": {"outcome": "stuck"},
    }
    assert get.url == "http://test/v1/jobs/a%2Fb" and get.headers["x-user-id"] == "alice"


async def test_list_follows_the_cursor() -> None:
    pages = {
        None: {"jobs": [job_body("a"), job_body("b")], "next_cursor": "2"},
        "2": {"jobs": [job_body("c")], "next_cursor": None},
    }

    def handler(request: Request) -> Response:
        cursor = request.url.partition("cursor=")[2] or None
        return respond(pages[cursor])

    async with AsyncClient("http://test", policy=FAST, transport=MockTransport(handler)) as c:
        assert [j.id async for j in c.list(page_size=2)] == ["a", "b", "c"]


async def test_a_closed_client_refuses_calls(server: FakeServer) -> None:
    c = make_client(server)
    await c.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await c.get("j1")


# ---- wait decisions ----------------------------------------------------------------


async def test_finished_job_returns_from_its_snapshot_without_polling(server: FakeServer) -> None:
    server.jobs["j1"] = job_body(status="completed", progress=100)
    async with make_client(server) as c:
        job = await c.wait("j1", timeout=5)
    assert job.status == "completed"
    assert server.gets == 0


@pytest.mark.parametrize(
    ("status", "kind"), [("permanently_failed", JobFailed), ("cancelled", JobCancelled)]
)
async def test_bad_endings_raise_with_the_job(
    server: FakeServer, status: str, kind: type[Exception]
) -> None:
    server.jobs["j1"] = job_body(status=status)
    async with make_client(server) as c:
        with pytest.raises(kind) as info:
            await c.wait("j1", timeout=5)
    assert isinstance(info.value, client.JobError) and info.value.job.status == status


async def test_progress_once_per_change_and_failed_is_not_an_outcome(server: FakeServer) -> None:
    server.jobs["j1"] = job_body(progress=0)
    seen: list[tuple[str, int]] = []
    async with make_client(server) as c:
        waiting = asyncio.create_task(
            c.wait("j1", timeout=10, on_progress=lambda j: seen.append((j.status, j.progress)))
        )
        await asyncio.wait_for(server.subscribed.wait(), 5)
        await server.publish("j1", "processing", 40)
        await server.publish("j1", "failed", 40)
        await server.publish("j1", "pending", 0)
        await server.publish("j1", "completed", 100)
        job = await asyncio.wait_for(waiting, 5)
    assert job.status == "completed"
    assert seen == [
        ("processing", 0),
        ("processing", 40),
        ("failed", 40),
        ("pending", 0),
        ("completed", 100),
    ]


async def test_concurrent_waits_share_one_socket_and_one_subscribe(server: FakeServer) -> None:
    ids = [f"j{i}" for i in range(100)]
    for job_id in ids:
        server.jobs[job_id] = job_body(job_id)
    async with make_client(server) as c:
        waits = [asyncio.create_task(c.wait(job_id, timeout=10)) for job_id in ids]
        await asyncio.wait_for(server.subscribed.wait(), 5)
        for job_id in ids:
            await server.publish(job_id, "completed", 100)
        jobs = await asyncio.wait_for(asyncio.gather(*waits), 5)
    assert [j.id for j in jobs] == ids
    assert len(server.sockets) == 1
    subscribes = [m for m in server.messages if m["op"] == "subscribe"]
    assert len(subscribes) == 1 and sorted(subscribes[0]["jobs"]) == sorted(ids)


async def test_cancelling_a_wait_unsubscribes(server: FakeServer) -> None:
    server.jobs["j1"] = job_body()
    async with make_client(server) as c:
        waiting = asyncio.create_task(c.wait("j1"))
        await asyncio.wait_for(server.subscribed.wait(), 5)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        for _ in range(100):
            if any(m["op"] == "unsubscribe" for m in server.messages):
                break
            await asyncio.sleep(0.01)
    assert {"op": "unsubscribe", "jobs": ["j1"]}.items() <= server.messages[-1].items()
    assert server.gets == 0


async def test_unknown_job_is_confirmed_by_rest_at_once(server: FakeServer) -> None:
    async with make_client(server) as c:
        with pytest.raises(JobNotFound):
            await c.wait("nope", timeout=30)
    assert server.gets == 1


async def test_no_socket_means_polling_through_faults(server: FakeServer) -> None:
    server.ws_enabled = False
    server.jobs["j1"] = job_body(status="completed", progress=100)
    server.http_fails = 3
    async with make_client(server) as c:
        job = await c.wait("j1", timeout=10)
    assert job.status == "completed"
    assert server.gets == 4


async def test_deadline_raises_wait_timeout_with_the_last_snapshot(server: FakeServer) -> None:
    server.jobs["j1"] = job_body(progress=30)
    async with make_client(server) as c:
        with pytest.raises(WaitTimeout) as info:
            await c.wait("j1", timeout=2)  # the snapshot comes within ms: room to spare
    assert info.value.job_ids == ["j1"]
    assert info.value.job is not None and info.value.job.progress == 30


async def test_socket_drop_polls_then_resumes_with_since(server: FakeServer) -> None:
    server.jobs["j1"] = job_body(progress=0)
    seen: list[int] = []
    async with make_client(server) as c:
        waiting = asyncio.create_task(
            c.wait("j1", timeout=10, on_progress=lambda j: seen.append(j.progress))
        )
        await asyncio.wait_for(server.subscribed.wait(), 5)
        await server.publish("j1", "processing", 10)
        server.subscribed.clear()
        gets_before = server.gets
        server.ws_enabled = False  # the next connection attempts are refused
        await server.sockets[0].close(1001)
        # While the socket is down, polling carries on and sees the change.
        await server.publish("j1", "processing", 20)
        for _ in range(500):
            if 20 in seen:
                break
            await asyncio.sleep(0.01)
        assert server.gets > gets_before
        server.ws_enabled = True
        await asyncio.wait_for(server.subscribed.wait(), 5)
        await server.publish("j1", "completed", 100)
        job = await asyncio.wait_for(waiting, 5)
    assert job.status == "completed"
    assert seen == [0, 10, 20, 100]  # each change once, whichever path brought it
    resumed = [m for m in server.messages if m["op"] == "subscribe"][-1]
    assert resumed["since"] >= 1  # the resume point survived the drop


async def test_a_failing_callback_ends_the_wait_with_its_error(server: FakeServer) -> None:
    server.jobs["j1"] = job_body()

    def boom(job: Job) -> None:
        raise KeyError("mine")

    async with make_client(server) as c:
        with pytest.raises(KeyError, match="mine"):
            await c.wait("j1", timeout=5, on_progress=boom)


async def test_wait_many_and_as_completed(server: FakeServer) -> None:
    for job_id in ("a", "b", "c"):
        server.jobs[job_id] = job_body(job_id)
    async with make_client(server) as c:
        many = asyncio.create_task(c.wait_many(["a", "b", "c"], timeout=10))
        await asyncio.wait_for(server.subscribed.wait(), 5)
        await server.publish("c", "cancelled", 5)
        await server.publish("a", "completed", 100)
        await server.publish("b", "permanently_failed", 5)
        jobs = await asyncio.wait_for(many, 5)
        assert [(j.id, j.status) for j in jobs] == [
            ("a", "completed"),
            ("b", "permanently_failed"),
            ("c", "cancelled"),
        ]

        server.jobs["d"] = job_body("d")
        order = []
        with pytest.raises(WaitTimeout) as info:
            async for job in c.as_completed(["a", "d"], timeout=2):
                order.append(job.id)
        assert order == ["a"] and info.value.job_ids == ["d"]


# ---- the sync twin -----------------------------------------------------------------


def test_sync_client_drives_the_same_core_and_calls_back_in_the_callers_thread() -> None:
    def handler(request: Request) -> Response:
        if request.method == "POST":
            return respond(job_body("s1", "pending"), 201)
        return respond(job_body("s1", "completed", 100))

    threads: list[threading.Thread] = []
    with Client("http://test", policy=FAST, transport=MockTransport(handler)) as c:
        job = c.submit(role="premium")
        assert job.status == "pending"
        done = c.wait(
            job.id, timeout=5, on_progress=lambda j: threads.append(threading.current_thread())
        )
        assert done.status == "completed"
        assert [j.id for j in c.as_completed([job.id], timeout=5)] == ["s1"]
        with pytest.raises(ValueError, match="timeout"):
            c.wait("s1", timeout=-1)
    assert threads == [threading.current_thread()]
    with pytest.raises(RuntimeError, match="closed"):
        c.get("s1")


async def test_back_to_back_waits_reuse_the_cached_snapshot(server: FakeServer) -> None:
    server.jobs["j1"] = job_body(status="completed", progress=100)
    async with make_client(server) as c:
        first = await c.wait("j1", timeout=5)
        second = await c.wait("j1", timeout=5)  # the unsubscribe of the first isn't sent yet
    assert first == second
    assert server.gets == 0  # no grace period ran out, nothing was polled


async def test_config_carries_every_runtime_setting_the_server_has() -> None:
    """`config()` / `update_config()` (and `dubsim config`) show every field of the server's
    Config: a runtime setting the client dropped could be changed but never seen."""
    from service.settings import Config as ServerConfig

    body = msgspec.json.encode(ServerConfig(max_in_flight=7, job_ttl_s=60.0))

    def handler(request: Request) -> Response:
        return Response(200, {"content-type": "application/json"}, body)

    async with AsyncClient("http://test", transport=MockTransport(handler)) as c:
        config = await c.config()
    assert msgspec.structs.asdict(config) == msgspec.json.decode(body)
    assert config.max_in_flight == 7 and config.job_ttl_s == 60.0


async def test_a_media_jobs_fields_reach_the_client() -> None:
    """docs/protocol.md: a media job carries `video`, `stage`, `stage_progress`, and its
    scenario `fail_stage`; the client's Job keeps them (a plain job's stay None)."""
    media = {
        "id": "m1", "user_id": "alice", "role": "free", "status": "processing", "progress": 40,
        "attempt": 1, "max_attempts": 3, "priority": 0, "target_language": "fr",
        "created_at": "2026-12-02T03:10:11.623Z",
        "scenario": {"duration_s": None, "outcome": "failed", "fail_attempts": 0,
                     "fail_stage": "mix", "webhook": None},
        "video": {"type": "asset_id", "asset_id": "a1"}, "stage": "mix", "stage_progress": 25,
    }  # fmt: skip
    plain = {k: v for k, v in media.items() if k not in ("video", "stage", "stage_progress")}
    plain["id"], plain["scenario"] = "p1", None

    def handler(request: Request) -> Response:
        job = media if request.url.endswith("/m1") else plain
        return Response(200, {"content-type": "application/json"}, msgspec.json.encode(job))

    async with AsyncClient("http://test", transport=MockTransport(handler)) as c:
        got = await c.get("m1")
        other = await c.get("p1")
    assert got.video == {"type": "asset_id", "asset_id": "a1"}
    assert (got.stage, got.stage_progress) == ("mix", 25)
    assert got.scenario is not None and got.scenario.fail_stage == "mix"
    assert (other.video, other.stage, other.stage_progress) == (None, None, None)
    # a Scenario sent by the client names fail_stage only when it is set
    assert b"fail_stage" not in msgspec.json.encode(client.Scenario(duration_s=1))


def test_to_wire_leaves_out_the_media_fields_a_plain_job_has_not() -> None:
    """`--json` and `dubsim listen` write a job as the server does: a plain job without
    `video`/`stage`/`stage_progress` (and no `fail_stage` in its scenario), a media job with."""
    from client._render import to_wire

    plain = msgspec.json.decode(
        b'{"id": "p1", "user_id": "u", "role": "free", "status": "pending", "progress": 0,'
        b' "attempt": 0, "max_attempts": 3, "priority": 0, "target_language": "es",'
        b' "created_at": "2026-12-02T03:10:11.623Z",'
        b' "scenario": {"duration_s": null, "outcome": "stuck", "fail_attempts": 0,'
        b' "webhook": null}}',
        type=Job,
    )
    wire = to_wire(plain)
    assert not {"video", "stage", "stage_progress"} & wire.keys()
    assert wire["scenario"] == {
        "duration_s": None, "outcome": "stuck", "fail_attempts": 0, "webhook": None
    }  # fmt: skip
    media = msgspec.structs.replace(plain, video={"type": "asset_id", "asset_id": "a"}, stage="mix")
    assert to_wire(media)["video"] == {"type": "asset_id", "asset_id": "a"}
    assert to_wire(media)["stage"] == "mix"
