"""The admin-token throttle, without a server: failed attempts per address in a sliding window.

The contract (service.auth.Throttle's docstring, docs/reliability.md): after `failures` failed
attempts within `window_s`, every further attempt from that address, right or wrong, is refused
with 429 until the oldest failure leaves the window; a success clears the address; at most
MAX_TRACKED_ADDRESSES addresses are remembered, the least recently failing forgotten first.
"""

from __future__ import annotations

import time

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from service.auth import AUTH, MAX_TRACKED_ADDRESSES, Auth, Throttle
from service.errors import RateLimited

TOKEN = "unit-admin-token"


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def fail(throttle: Throttle, address: str, times: int) -> None:
    for _ in range(times):
        throttle.check(address)
        throttle.record(address, False)


def locked(throttle: Throttle, address: str) -> bool:
    try:
        throttle.check(address)
    except RateLimited:
        return True
    return False


# ---- construction -----------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "window_s"), [(0, 60.0), (-1, 60.0), (3, 0.0), (3, -1.0)])
def test_nonsense_limits_are_refused(failures: int, window_s: float) -> None:
    with pytest.raises(ValueError, match=r"^failures must be >= 1 and window_s > 0$"):
        Throttle(failures, window_s)


def test_the_smallest_limits_are_accepted() -> None:
    clock = Clock()
    throttle = Throttle(1, 0.5, clock=clock)
    assert (throttle.failures, throttle.window_s, throttle.refused) == (1, 0.5, 0)
    throttle.record("a", False)
    assert locked(throttle, "a")
    clock.now += 0.5
    assert not locked(throttle, "a")


def test_the_defaults_are_ten_failures_a_minute() -> None:
    throttle = Throttle()
    assert (throttle.failures, throttle.window_s, throttle.refused) == (10, 60.0, 0)


def test_the_default_clock_is_monotonic_time() -> None:
    assert Throttle()._clock is time.monotonic  # not wall time: a clock step can't unlock


# ---- the window -------------------------------------------------------------------------


def test_the_nth_failure_locks_the_address_out_and_the_429_says_for_how_long() -> None:
    clock = Clock(1000.0)
    throttle = Throttle(3, 60.0, clock=clock)
    fail(throttle, "10.0.0.1", 2)
    assert not locked(throttle, "10.0.0.1")  # two of three: still allowed
    clock.now = 1010.0
    throttle.record("10.0.0.1", False)
    clock.now = 1020.5
    with pytest.raises(RateLimited) as info:
        throttle.check("10.0.0.1")
    error = info.value
    # the oldest failure (at 1000) leaves the window at 1060: 39.5 s from now
    assert error.reset_s == pytest.approx(39.5)
    assert (error.limit, error.remaining) == (3, 0)
    assert error.message == (
        "too many failed admin-token attempts from this address; retry in 40 s"
    )
    assert error.code == "rate_limited"
    assert throttle.refused == 1
    assert locked(throttle, "10.0.0.1")
    assert throttle.refused == 2  # every refused attempt counts


def test_the_lock_lifts_exactly_when_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock(1000.0)
    throttle = Throttle(2, 60.0, clock=clock)
    throttle.record("a", False)
    clock.now = 1030.0
    throttle.record("a", False)
    clock.now = 1059.999
    assert locked(throttle, "a")
    clock.now = 1060.0  # 1000 is one window old: out
    assert not locked(throttle, "a")
    # the failure at 1030 is still in the window: one more failure locks again
    throttle.record("a", False)
    with pytest.raises(RateLimited) as info:
        throttle.check("a")
    assert info.value.reset_s == pytest.approx(30.0)  # until 1090, when 1030 leaves
    clock.now = 1090.0
    assert not locked(throttle, "a")
    clock.now = 1120.0  # everything has left the window
    assert not locked(throttle, "a")
    fail(throttle, "a", 1)
    assert not locked(throttle, "a")  # one fresh failure, not two


def test_failures_spread_wider_than_the_window_never_lock() -> None:
    clock = Clock(0.0)
    throttle = Throttle(3, 10.0, clock=clock)
    for _ in range(10):
        fail(throttle, "a", 1)
        clock.now += 5.0  # two failures per window at most
    assert not locked(throttle, "a")
    assert throttle.refused == 0


def test_a_success_clears_the_address_and_other_addresses_are_unaffected() -> None:
    clock = Clock()
    throttle = Throttle(3, 60.0, clock=clock)
    fail(throttle, "a", 2)
    fail(throttle, "b", 3)
    throttle.record("a", True)
    fail(throttle, "a", 2)
    assert not locked(throttle, "a")  # the two before the success were forgotten
    assert locked(throttle, "b")
    assert not locked(throttle, "c")
    throttle.record("never-failed", True)  # nothing to clear: no error


def test_a_locked_out_address_is_not_kept_once_its_failures_have_expired() -> None:
    clock = Clock()
    throttle = Throttle(2, 10.0, clock=clock)
    fail(throttle, "a", 2)
    fail(throttle, "b", 1)
    clock.now += 10.0
    assert not locked(throttle, "a")
    assert "a" not in throttle._seen  # memory: an address with no failure left is dropped
    assert not locked(throttle, "b")
    assert throttle._seen == {}


def test_only_the_last_failures_are_kept_per_address() -> None:
    clock = Clock(0.0)
    throttle = Throttle(2, 10.0, clock=clock)
    throttle.record("a", False)
    clock.now = 5.0
    throttle.record("a", False)
    clock.now = 8.0
    throttle.record("a", False)  # a third failure while locked: the one at 0 is dropped
    assert list(throttle._seen["a"]) == [5.0, 8.0]
    with pytest.raises(RateLimited) as info:
        throttle.check("a")
    assert info.value.reset_s == pytest.approx(7.0)  # 5 + 10 - 8


# ---- bounded memory ---------------------------------------------------------------------


def test_at_most_max_tracked_addresses_are_remembered_the_least_recent_forgotten() -> None:
    assert MAX_TRACKED_ADDRESSES == 10_000
    clock = Clock()
    throttle = Throttle(1, 60.0, clock=clock)
    throttle.record("first", False)
    throttle.record("second", False)
    for n in range(MAX_TRACKED_ADDRESSES - 2):
        throttle.record(f"spray-{n}", False)
    assert len(throttle._seen) == MAX_TRACKED_ADDRESSES  # full, nothing forgotten yet
    assert locked(throttle, "first")
    throttle.record("first", False)  # fails again: now the most recent
    throttle.record("one-more", False)  # over the cap: the least recent ("second") goes
    assert len(throttle._seen) == MAX_TRACKED_ADDRESSES
    assert not locked(throttle, "second")
    assert locked(throttle, "first")
    assert locked(throttle, "one-more")


# ---- Auth.attempt: the throttle in front of the token -----------------------------------


def request(
    remote: str | None, headers: dict[str, str] | None = None, path: str = "/"
) -> web.Request:
    app = web.Application()
    app[AUTH] = Auth(TOKEN, Throttle(2, 60.0, clock=Clock()))
    req = make_mocked_request("GET", path, headers=headers or {}, app=app)
    return req.clone(remote=remote) if remote is not None else req


def test_auth_takes_the_given_throttle_or_a_default_one() -> None:
    throttle = Throttle(2, 5.0)
    assert Auth(TOKEN, throttle).throttle is throttle
    default = Auth(TOKEN).throttle
    assert (default.failures, default.window_s) == (10, 60.0)
    assert Auth(TOKEN).throttle is not default  # one per Auth, not shared


def test_a_short_admin_token_is_refused_at_construction() -> None:
    with pytest.raises(ValueError, match=r"^ADMIN_TOKEN must be at least 16 characters$"):
        Auth("x" * 15)
    Auth("x" * 16)


def test_attempts_are_throttled_per_address_and_a_lockout_refuses_the_right_token_too() -> None:
    auth = Auth(TOKEN, Throttle(2, 60.0, clock=Clock()))
    one, two = request("192.0.2.1"), request("192.0.2.2")
    assert auth.attempt(one, "wrong") is False
    assert auth.attempt(one, "wrong") is False
    with pytest.raises(RateLimited):
        auth.attempt(one, TOKEN)  # right, but locked out: a guesser must not learn it
    assert auth.throttle.refused == 1
    assert auth.attempt(two, TOKEN) is True  # another address is not affected
    assert auth.attempt(two, "wrong") is False
    assert auth.attempt(two, TOKEN) is True  # a success clears two's failure ...
    assert auth.attempt(two, "wrong") is False
    assert auth.attempt(two, "wrong") is False  # ... so it takes two fresh ones to lock
    with pytest.raises(RateLimited):
        auth.attempt(two, "wrong")


def test_requests_without_a_peer_address_share_one_bucket() -> None:
    auth = Auth(TOKEN, Throttle(1, 60.0, clock=Clock()))
    assert auth.attempt(request(None).clone(remote=""), "wrong") is False
    with pytest.raises(RateLimited):
        auth.attempt(request(None).clone(remote=""), TOKEN)
    assert "unknown" in auth.throttle._seen


def test_bearer_and_query_tokens_go_through_the_throttle() -> None:
    auth = Auth(TOKEN, Throttle(1, 60.0, clock=Clock()))
    assert auth.bearer_admin(request("192.0.2.9", {"Authorization": "Bearer wrong"})) is False
    with pytest.raises(RateLimited):
        auth.bearer_admin(request("192.0.2.9", {"Authorization": f"Bearer {TOKEN}"}))
    assert auth.bearer_admin(request("192.0.2.8", path="/?token=nope"), allow_query=True) is False
    with pytest.raises(RateLimited):
        auth.bearer_admin(request("192.0.2.8", path=f"/?token={TOKEN}"), allow_query=True)
    # a wrong scheme presents no token: nothing to count, nothing refused
    other = Auth(TOKEN, Throttle(1, 60.0, clock=Clock()))
    for _ in range(3):
        assert (
            other.bearer_admin(request("192.0.2.7", {"Authorization": f"Basic {TOKEN}"})) is False
        )
    assert other.throttle._seen == {}
