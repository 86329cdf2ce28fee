"""The backoff policy as pure functions: injected clock and random source, no sleeping."""

from __future__ import annotations

import pytest

from client._polling import (
    Backoff,
    PollPolicy,
    clamp_to_deadline,
    next_delay,
    parse_retry_after,
    poll_hint,
)

POLICY = PollPolicy(backoff=Backoff(base=0.5, cap=4.0), hint_cap_s=30.0)


def always(value: float):
    return lambda: value


@pytest.mark.parametrize("attempt", range(8))
def test_full_jitter_spans_zero_to_the_ceiling(attempt: int) -> None:
    ceiling = min(4.0, 0.5 * 2**attempt)
    low = POLICY.backoff.delay(attempt, always(0.0))
    high = POLICY.backoff.delay(attempt, always(0.999999))
    assert low == 0.0
    assert high == pytest.approx(ceiling, rel=1e-5)
    assert high <= ceiling


def test_jitter_is_uniform_in_between() -> None:
    assert POLICY.backoff.delay(2, always(0.25)) == pytest.approx(0.25 * 2.0)


def test_ceiling_doubles_then_caps() -> None:
    ceilings = [POLICY.backoff.ceiling(n) for n in range(6)]
    assert ceilings == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert POLICY.backoff.ceiling(10_000) == 4.0  # no overflow for absurd attempt counts


def test_backoff_is_used_without_hints() -> None:
    delay = next_delay(POLICY, attempt=1, rand=always(0.5), now=0.0, deadline=None)
    assert delay == pytest.approx(0.5)


def test_server_hint_beats_backoff() -> None:
    delay = next_delay(POLICY, attempt=5, rand=always(0.9), now=0.0, deadline=None, hint=1.25)
    assert delay == 1.25


def test_429_retry_after_beats_the_hint() -> None:
    delay = next_delay(
        POLICY, attempt=0, rand=always(0.0), now=0.0, deadline=None, retry_after=7.0, hint=1.0
    )
    assert delay == 7.0


def test_a_hint_is_capped_but_retry_after_is_not() -> None:
    assert next_delay(POLICY, attempt=0, rand=always(0), now=0, deadline=None, hint=500) == 30.0
    assert (
        next_delay(POLICY, attempt=0, rand=always(0), now=0, deadline=None, retry_after=500) == 500
    )


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"retry_after": 60.0}, 2.5),
        ({"hint": 10.0}, 2.5),
        ({}, 2.5),  # backoff ceiling 4.0 * 0.99 clamped too
        ({"hint": 1.0}, 1.0),  # inside the deadline: untouched
    ],
)
def test_every_source_is_clamped_to_the_deadline(kwargs: dict[str, float], expected: float) -> None:
    delay = next_delay(POLICY, attempt=9, rand=always(0.99), now=100.0, deadline=102.5, **kwargs)
    assert delay == pytest.approx(expected)


def test_deadline_in_the_past_means_no_sleep() -> None:
    assert clamp_to_deadline(3.0, now=10.0, deadline=9.0) == 0.0
    assert clamp_to_deadline(-1.0, now=0.0, deadline=None) == 0.0


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("3", now_wall=0.0) == 3.0
    assert parse_retry_after(" 1.5 ", now_wall=0.0) == 1.5
    # 2026-11-26 06:00:10 GMT, with "now" ten seconds earlier
    now = 1795672800.0
    assert parse_retry_after("Thu, 26 Nov 2026 06:00:10 GMT", now_wall=now) == pytest.approx(10.0)
    assert parse_retry_after("Thu, 26 Nov 2026 05:00:00 GMT", now_wall=now) == 0.0  # past
    assert parse_retry_after("soon", now_wall=0.0) is None
    assert parse_retry_after(None, now_wall=0.0) is None
    assert parse_retry_after("nan", now_wall=0.0) is None


def test_poll_hint_prefers_the_precise_header() -> None:
    assert poll_hint({"x-poll-after-ms": "1500", "retry-after": "2"}, 0.0) == 1.5
    assert poll_hint({"retry-after": "2"}, 0.0) == 2.0
    assert poll_hint({"x-poll-after-ms": "junk", "retry-after": "2"}, 0.0) == 2.0
    assert poll_hint({}, 0.0) is None


def test_poll_hint_in_ms_is_exact_and_never_negative() -> None:
    assert poll_hint({"x-poll-after-ms": "500"}, 0.0) == 0.5
    assert poll_hint({"x-poll-after-ms": "-20"}, 0.0) == 0.0
    now = 1795672800.0  # 2026-11-26 06:00:00 GMT
    assert poll_hint({"retry-after": "Thu, 26 Nov 2026 06:00:03 GMT"}, now) == 3.0
