from service.ratelimit import MovingWindow


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_window_allows_limit_then_refuses_and_frees_up_as_time_passes() -> None:
    clock = Clock()
    window = MovingWindow(window_s=3600, clock=clock)
    for i in range(5):
        decision = window.hit("alice", 5)
        assert decision.allowed and decision.remaining == 4 - i
        clock.now += 60
    refused = window.hit("alice", 5)
    assert not refused.allowed and refused.remaining == 0
    # the oldest hit leaves the window exactly one hour after it happened
    assert refused.reset_s == 3600 - 5 * 60
    clock.now += refused.reset_s
    assert window.hit("alice", 5).allowed
    assert not window.hit("alice", 5).allowed


def test_users_have_separate_buckets_and_headers_are_whole_seconds() -> None:
    clock = Clock()
    window = MovingWindow(clock=clock)
    assert not window.hit("a", 0).allowed
    decision = window.hit("b", 1)
    assert decision.allowed
    assert decision.headers() == {
        "RateLimit-Limit": "1",
        "RateLimit-Remaining": "0",
        "RateLimit-Reset": "3600",
    }


def test_recorded_past_hits_count_until_they_age_out() -> None:
    clock = Clock()
    window = MovingWindow(clock=clock)
    window.record("a", clock.now - 3000)
    window.record("a", clock.now - 4000)  # already outside the window: ignored
    assert window.hit("a", 2).allowed
    assert not window.hit("a", 2).allowed
    clock.now += 600
    assert window.hit("a", 2).allowed


def test_a_zero_limit_refuses_with_nothing_to_wait_for() -> None:
    decision = MovingWindow(clock=Clock()).hit("a", 0)
    assert (decision.allowed, decision.remaining, decision.reset_s) == (False, 0, 0.0)


def test_reset_counts_down_below_a_second() -> None:
    clock = Clock()
    window = MovingWindow(window_s=3600, clock=clock)
    window.hit("a", 1)
    clock.now += 3599.5
    assert window.hit("a", 1).reset_s == 0.5


def test_hits_replayed_out_of_order_are_kept_in_order() -> None:
    clock = Clock()
    window = MovingWindow(window_s=3600, clock=clock)
    window.record("a", clock.now - 1000)
    window.record("a", clock.now - 3000)  # older, replayed later
    refused = window.hit("a", 2)
    assert not refused.allowed and refused.reset_s == 600  # the older one leaves first
    clock.now += 600
    assert window.hit("a", 2).allowed
    assert not window.hit("a", 2).allowed
