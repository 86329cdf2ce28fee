"""The poll and request flows, driven synchronously with a fake clock: decisions, no sleeping."""

from __future__ import annotations

from collections.abc import Callable
from random import Random
from typing import Any

import msgspec
import pytest

from client import JobNotFound, Request, Response, TransportError
from client._api import Api
from client._flows import Sleep, drive_sync, poll_flow, request_flow
from client._models import Job
from client._polling import Backoff, PollPolicy

API = Api("http://test", user_id="alice")
POLICY = PollPolicy(backoff=Backoff(base=1.0, cap=8.0), long_poll=False, retries=2)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def job(status: str = "processing", progress: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "id": "j1",
        "user_id": "alice",
        "role": "free",
        "status": status,
        "progress": progress,
        "attempt": 1,
        "max_attempts": 3,
        "priority": 0,
        "target_language": "es",
        "created_at": "2026-11-26T06:00:00.000Z",
        "updated_at": f"2026-11-26T06:00:{progress // 10:02d}.000Z",
        "future_field": "ignored",  # a newer server's extra field must not break decoding
        **extra,
    }


def ok(body: Any, status: int = 200, **headers: str) -> Response:
    return Response(status, headers, msgspec.json.encode(body))


def error(status: int, code: str, **headers: str) -> Response:
    return ok({"error": {"code": code, "message": code, "details": {}}}, status, **headers)


Script = list[Response | Exception]


def scripted(script: Script) -> tuple[Callable[[Request], Response], list[Request]]:
    sent: list[Request] = []

    def send(request: Request) -> Response:
        sent.append(request)
        item = script.pop(0)
        if isinstance(item, Exception):
            raise item
        return item

    return send, sent


def run_poll(
    script: Script, *, policy: PollPolicy = POLICY, deadline: float | None = None
) -> tuple[Job | None, FakeClock, list[Request], list[Job]]:
    clock = FakeClock()
    send, sent = scripted(script)
    seen: list[Job] = []
    flow = poll_flow(
        API,
        "j1",
        policy=policy,
        rand=lambda: 0.5,
        clock=clock,
        wall=lambda: 0.0,
        deadline=None if deadline is None else clock.now + deadline,
        on_job=seen.append,
    )
    result = drive_sync(flow, send, clock.sleep)
    return result, clock, sent, seen


def test_poll_follows_the_server_hint_until_terminal() -> None:
    result, clock, sent, seen = run_poll(
        [
            ok(job(progress=10), **{"X-Poll-After-Ms": "1500", "ETag": '"a"'}),
            ok(job(progress=50), **{"Retry-After": "2", "ETag": '"b"'}),
            ok(job("completed", 100)),
        ]
    )
    assert result is not None and result.status == "completed"
    assert clock.sleeps == [1.5, 2.0]
    assert [j.progress for j in seen] == [10, 50, 100]
    assert sent[1].headers["if-none-match"] == '"a"'
    assert sent[2].headers["if-none-match"] == '"b"'


def test_no_hint_means_full_jitter_backoff_growing_while_nothing_changes() -> None:
    same = job(progress=10)
    result, clock, _, seen = run_poll([ok(same), ok(same), Response(304), ok(job("cancelled", 10))])
    assert result is not None and result.status == "cancelled"
    # rand=0.5: half of 1, 2, 4 (attempts 0, 1, 2: nothing new each time)
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert [j.progress for j in seen] == [10, 10, 10]  # the tracker (not the flow) dedupes


def test_failed_is_not_an_outcome() -> None:
    result, _, _, seen = run_poll(
        [ok(job("failed", 30), **{"Retry-After": "1"}), ok(job("permanently_failed", 30))]
    )
    assert result is not None and result.status == "permanently_failed"
    assert [j.status for j in seen] == ["failed", "permanently_failed"]


def test_errors_and_faults_are_retried_with_backoff() -> None:
    result, clock, _, _ = run_poll(
        [
            TransportError("refused"),
            error(503, "injected_fault"),
            error(408, "injected_fault"),
            error(500, "injected_fault", **{"Retry-After": "3"}),
            ok(job("completed", 100)),
        ]
    )
    assert result is not None and result.status == "completed"
    # failures 1, 2, 3 -> jitter 0.5 * (1, 2, 4); the 4th carries a hint of 3 s
    assert clock.sleeps == [0.5, 1.0, 2.0, 3.0]


def test_429_waits_its_retry_after() -> None:
    _, clock, _, _ = run_poll(
        [error(429, "rate_limited", **{"Retry-After": "6"}), ok(job("completed", 100))]
    )
    assert clock.sleeps == [6.0]


def test_404_raises_at_once() -> None:
    with pytest.raises(JobNotFound):
        run_poll([error(404, "not_found")])


def test_the_deadline_ends_the_flow_and_clamps_sleeps() -> None:
    stuck = ok(job(progress=10), **{"Retry-After": "30"})
    result, clock, sent, _ = run_poll([stuck, stuck, stuck], deadline=45.0)
    assert result is None
    assert clock.sleeps == [30.0, 15.0]  # the second sleep stops at the deadline
    assert len(sent) == 2


def test_long_poll_after_the_first_answer_and_fallback_when_refused() -> None:
    policy = PollPolicy(backoff=Backoff(base=1.0, cap=8.0), long_poll=True, long_poll_max_s=20)
    result, clock, sent, _ = run_poll(
        [
            ok(job(progress=10), ETag='"a"', **{"Retry-After": "1"}),
            Response(304),  # the long poll ran out: ask again at once
            ok(job(progress=20), ETag='"b"'),  # a change: ask again at once
            error(422, "validation_error"),  # this server won't long-poll
            ok(job(progress=20), ETag='"b"', **{"Retry-After": "2"}),
            ok(job("completed", 100)),
        ],
        policy=policy,
        deadline=100.0,
    )
    assert result is not None and result.status == "completed"
    queries = [r.url.partition("?")[2] for r in sent]
    assert queries == ["", "wait=20", "wait=20", "wait=20", "", ""]
    assert clock.sleeps == [2.0]
    assert sent[1].timeout is not None and sent[1].timeout >= 20  # room for the long poll


def test_long_poll_never_outlasts_the_deadline() -> None:
    policy = PollPolicy(long_poll=True, long_poll_max_s=30)
    _, _, sent, _ = run_poll(
        [ok(job(progress=10)), Response(304), ok(job("completed", 100))],
        policy=policy,
        deadline=12.5,
    )
    assert sent[1].url.endswith("wait=12")


def test_request_flow_retries_idempotent_requests_only() -> None:
    request = API.config()
    send, sent = scripted([TransportError("reset"), error(503, "injected_fault"), ok({})])
    clock = FakeClock()
    flow = request_flow(request, policy=POLICY, rand=lambda: 1.0, clock=clock)
    assert drive_sync(flow, send, clock.sleep).status == 200
    assert len(sent) == 3 and clock.sleeps == [1.0, 2.0]

    send, sent = scripted([error(503, "injected_fault")])
    flow = request_flow(request, policy=POLICY, rand=lambda: 1.0, clock=clock, idempotent=False)
    assert drive_sync(flow, send, clock.sleep).status == 503
    assert len(sent) == 1


def test_request_flow_gives_up_after_its_retries() -> None:
    send, sent = scripted([TransportError("a"), TransportError("b"), TransportError("c")])
    clock = FakeClock()
    flow = request_flow(API.config(), policy=POLICY, rand=lambda: 0.0, clock=clock)
    with pytest.raises(TransportError, match="c"):
        drive_sync(flow, send, clock.sleep)
    assert len(sent) == POLICY.retries + 1


def test_request_flow_does_not_retry_429() -> None:
    send, _ = scripted([error(429, "rate_limited", **{"Retry-After": "60"})])
    clock = FakeClock()
    flow = request_flow(API.config(), policy=POLICY, rand=lambda: 0.0, clock=clock)
    assert drive_sync(flow, send, clock.sleep).status == 429
    assert clock.sleeps == []


def test_sleep_is_an_action_of_its_own() -> None:
    clock = FakeClock()
    flow = poll_flow(
        API,
        "j1",
        policy=POLICY,
        rand=lambda: 0.5,
        clock=clock,
        wall=lambda: 0.0,
        deadline=None,
        on_job=lambda _: None,
    )
    first = next(flow)
    assert isinstance(first, Request) and first.url == "http://test/v1/jobs/j1"
    assert first.headers["x-user-id"] == "alice"
    assert flow.send(ok(job(), **{"Retry-After": "4"})) == Sleep(4.0)
    flow.close()


def test_outcome_only_long_polls_ask_for_the_terminal_state() -> None:
    policy = PollPolicy(long_poll=True, long_poll_max_s=20)
    flow = poll_flow(
        Api("http://x"),
        "j1",
        policy=policy,
        rand=Random(0),
        clock=lambda: 0.0,
        deadline=100.0,
        on_job=lambda job: None,
        outcome_only=True,
    )
    request = next(flow)
    assert request.url.partition("?")[2] == "wait=20&until=terminal"
