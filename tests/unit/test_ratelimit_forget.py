"""MovingWindow.forget: hits whose submissions never became durable are taken back, so a
failed write does not cost the user a submission (docs/reliability.md, the SQLite store)."""

from __future__ import annotations

from service.ratelimit import MovingWindow


def test_a_forgotten_hit_no_longer_counts_and_only_that_one() -> None:
    window = MovingWindow(3600.0, clock=lambda: 1000.0)
    assert window.hit("u", 2, 1000.0).allowed
    assert window.hit("u", 2, 1001.0).allowed
    assert not window.hit("u", 2, 1002.0).allowed
    window.forget([("u", 1001.0)])
    decision = window.hit("u", 2, 1003.0)
    assert decision.allowed and decision.remaining == 0
    assert decision.reset_s == 3600.0 - 3.0  # the hit at 1000 is still there


def test_forgetting_what_is_not_there_is_harmless() -> None:
    window = MovingWindow(3600.0, clock=lambda: 1000.0)
    assert window.hit("u", 1, 1000.0).allowed
    window.forget([("nobody", 1000.0), ("u", 999.0)])  # an unknown user, an unknown time
    assert not window.hit("u", 1, 1000.5).allowed  # u's hit still counts
    window.forget([])


def test_forgetting_a_users_last_hit_forgets_the_user() -> None:
    window = MovingWindow(3600.0, clock=lambda: 1000.0)
    window.hit("u", 5, 1000.0)
    window.hit("v", 5, 1000.0)
    window.forget([("u", 1000.0)])
    assert "u" not in window._hits  # memory stays bounded by users with live hits
    assert "v" in window._hits


def test_one_forget_takes_back_one_of_two_equal_hits() -> None:
    window = MovingWindow(3600.0, clock=lambda: 1000.0)
    window.hit("u", 3, 1000.0)
    window.hit("u", 3, 1000.0)
    window.forget([("u", 1000.0)])
    assert window.hit("u", 3, 1000.0).remaining == 1  # two left in the window
