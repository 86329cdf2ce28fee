"""The legacy vocabulary covers every status, in words the old clients know."""

from __future__ import annotations

from service.api.compat import GROUP_OF, GROUPS, RESULT_WORDS, STATUS_WORDS
from service.models import Status

CLIENT_A_WORDS = {"pending", "completed", "failed", "permanently failed", "cancelled"}


def test_every_status_has_a_legacy_word_a_group_and_a_result() -> None:
    assert set(STATUS_WORDS) == set(RESULT_WORDS) == set(GROUP_OF) == set(Status)
    assert set(STATUS_WORDS.values()) <= CLIENT_A_WORDS
    assert set(RESULT_WORDS.values()) <= {"pending", "completed", "error"}
    assert set(GROUP_OF.values()) <= set(GROUPS)


def test_only_terminal_states_end_the_old_clients_wait() -> None:
    for status in Status:
        final_for_a = STATUS_WORDS[status] != "pending"
        final_for_b = RESULT_WORDS[status] != "pending"
        assert final_for_a == final_for_b == status.terminal, status
