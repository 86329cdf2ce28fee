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


# ---- the edges a mutation run found untested ------------------------------------------

HTTP_DATE_PAST = "Thu, 26 Nov 2026 05:00:00 GMT"  # long before any test's wall clock


def run_flow(
    script: Script,
    *,
    policy: PollPolicy = POLICY,
    deadline: float | None = None,
    rand: float = 0.5,
    wall: float = 0.0,
) -> tuple[Job | None, FakeClock, list[Request]]:
    clock = FakeClock()
    send, sent = scripted(script)
    flow = poll_flow(
        API,
        "j1",
        policy=policy,
        rand=lambda: rand,
        clock=clock,
        wall=lambda: wall,
        deadline=None if deadline is None else clock.now + deadline,
        on_job=lambda _: None,
    )
    return drive_sync(flow, send, clock.sleep), clock, sent


def test_request_flow_waits_the_servers_hint_capped_by_its_backoff() -> None:
    clock = FakeClock()
    send, _ = scripted(
        [
            error(503, "x", **{"X-Poll-After-Ms": "3000"}),
            error(503, "x", **{"Retry-After": "100"}),
            error(503, "x", **{"Retry-After": HTTP_DATE_PAST}),  # a date: already past
            ok({}),
        ]
    )
    policy = PollPolicy(backoff=Backoff(base=1.0, cap=8.0), retries=3)
    flow = request_flow(API.config(), policy=policy, rand=lambda: 0.0, clock=clock)
    assert drive_sync(flow, send, clock.sleep).status == 200
    # the hint beats a zero backoff; a long one is cut to the cap; a past one is no sleep at all
    assert clock.sleeps == [3.0, 8.0]


def test_request_flow_logs_each_retry(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="dubsim")
    clock = FakeClock()
    send, _ = scripted([error(502, "x"), ok({})])
    flow = request_flow(API.config(), policy=POLICY, rand=lambda: 0.0, clock=clock)
    drive_sync(flow, send, clock.sleep)
    assert caplog.messages == ["retrying GET http://test/v1/config after 502"]


def test_a_zero_delay_is_no_sleep_at_all() -> None:
    _, clock, sent = run_flow(
        [TransportError("a"), error(503, "x"), ok(job("completed", 100))], rand=0.0
    )
    assert clock.sleeps == [] and len(sent) == 3


def test_consecutive_failures_grow_the_backoff() -> None:
    _, clock, _ = run_flow(
        [TransportError("a"), TransportError("b"), TransportError("c"), ok(job("completed"))]
    )
    assert clock.sleeps == [0.5, 1.0, 2.0]


def test_the_deadline_clamps_the_sleep_after_a_failure() -> None:
    result, clock, _ = run_flow(
        [TransportError("a"), TransportError("b"), TransportError("c"), TransportError("d")],
        policy=PollPolicy(backoff=Backoff(base=4.0, cap=8.0), long_poll=False),
        deadline=5.0,
    )
    assert result is None and clock.sleeps == [2.0, 3.0]


def test_the_first_request_is_unconditional_and_a_304_before_any_job_backs_off() -> None:
    result, clock, sent = run_flow([Response(304), ok(job("completed", 100))])
    assert "if-none-match" not in sent[0].headers
    assert result is not None
    assert clock.sleeps == [1.0]  # nothing new: attempt 1, half of base * 2


def test_an_answer_without_etag_keeps_the_last_one() -> None:
    _, _, sent = run_flow(
        [ok(job(progress=10), ETag='"a"'), ok(job(progress=20)), ok(job("completed", 100))]
    )
    assert [r.headers.get("if-none-match") for r in sent] == [None, '"a"', '"a"']


def test_hints_and_retry_after_dates_read_the_wall_clock() -> None:
    now = 1795672800.0  # 2026-11-26 06:00:00 GMT
    date = "Thu, 26 Nov 2026 06:00:04 GMT"
    result, clock, _ = run_flow(
        [
            ok(job(progress=10), **{"Retry-After": date}),
            error(429, "rate_limited", **{"Retry-After": date}),
            ok(job("completed", 100)),
        ],
        wall=now,
    )
    assert result is not None and clock.sleeps == [4.0, 4.0]


def test_a_429_waits_its_full_retry_after_while_hints_are_capped() -> None:
    policy = PollPolicy(backoff=Backoff(base=1.0, cap=8.0), long_poll=False, hint_cap_s=60.0)
    _, clock, _ = run_flow(
        [
            error(429, "rate_limited", **{"Retry-After": "100"}),
            error(503, "x", **{"Retry-After": "100"}),  # a fault's Retry-After is a hint
            ok(job("completed", 100)),
        ],
        policy=policy,
    )
    assert clock.sleeps == [100.0, 60.0]


def test_a_304_waits_the_hint_clamped_to_the_deadline() -> None:
    result, clock, _ = run_flow(
        [
            ok(job(progress=10), ETag='"a"', **{"Retry-After": "5"}),
            Response(304, {"Retry-After": "30"}),
            Response(304),
        ],
        deadline=20.0,
    )
    assert result is None and clock.sleeps == [5.0, 15.0]


def test_a_long_poll_needs_time_left_before_the_deadline() -> None:
    policy = PollPolicy(long_poll=True, long_poll_max_s=30, long_poll_min_s=1.0)
    # 0.5 s left: no long poll fits, so it sleeps (to the deadline) instead of asking at once
    result, clock, sent = run_flow(
        [ok(job(progress=10), **{"Retry-After": "5"}), ok(job(progress=10))],
        policy=policy,
        deadline=0.5,
    )
    assert result is None and clock.sleeps == [0.5] and len(sent) == 1
    # exactly the minimum left: a long poll of that length
    _, _, sent = run_flow(
        [ok(job(progress=10)), ok(job("completed", 100))], policy=policy, deadline=1.0
    )
    assert sent[1].url.endswith("?wait=1")


def test_a_long_poll_without_a_deadline_waits_the_policys_maximum() -> None:
    policy = PollPolicy(long_poll=True, long_poll_max_s=25)
    _, _, sent = run_flow([ok(job(progress=10)), ok(job("completed", 100))], policy=policy)
    assert sent[1].url.endswith("?wait=25")


def test_a_failed_long_poll_is_retried_not_taken_for_a_refusal() -> None:
    policy = PollPolicy(backoff=Backoff(base=1.0, cap=8.0), long_poll=True, long_poll_max_s=20)
    _, clock, sent = run_flow(
        [ok(job(progress=10)), error(503, "x"), ok(job(progress=20)), ok(job("completed"))],
        policy=policy,
        deadline=100.0,
    )
    assert [r.url.partition("?")[2] for r in sent] == ["", "wait=20", "", "wait=20"]
    assert clock.sleeps == [0.5]


@pytest.mark.parametrize("status", [400, 422])
def test_a_refused_long_poll_falls_back_to_polling(
    status: int, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG", logger="dubsim")
    policy = PollPolicy(long_poll=True, long_poll_max_s=20)
    _, _, sent = run_flow(
        [ok(job(progress=10)), error(status, "x"), ok(job("completed"))],
        policy=policy,
        deadline=100.0,
    )
    assert [r.url.partition("?")[2] for r in sent] == ["", "wait=20", ""]
    assert caplog.messages == [f"poll j1: long poll refused ({status}), polling instead"]


def test_no_answer_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="dubsim")
    run_flow([TransportError("refused"), ok(job("completed"))])
    assert caplog.messages == ["poll j1: refused"]


def test_other_errors_are_raised_typed() -> None:
    from client import Unauthorized

    with pytest.raises(Unauthorized) as info:
        run_flow([error(403, "forbidden")])
    assert info.value.status == 403 and info.value.code == "forbidden"


def test_an_undecodable_job_is_a_bad_response() -> None:
    from client import APIError

    with pytest.raises(APIError) as info:
        run_flow([Response(200, {}, b'{"id": 5}')])
    assert (info.value.status, info.value.code) == (200, "bad_response")
    assert info.value.message.startswith("cannot decode Job: ")


def test_a_request_must_be_answered() -> None:
    flow = request_flow(API.config(), policy=POLICY, rand=lambda: 0.0, clock=FakeClock())
    next(flow)
    with pytest.raises(TypeError) as info:
        flow.send(None)
    assert str(info.value) == "a flow's request must be answered with a Response"


def test_the_deadline_clamps_the_sleep_after_a_fault() -> None:
    result, clock, _ = run_flow(
        [error(503, "x"), error(503, "x"), error(503, "x")],
        policy=PollPolicy(backoff=Backoff(base=4.0, cap=8.0), long_poll=False),
        deadline=5.0,
    )
    assert result is None and clock.sleeps == [2.0, 3.0]
