"""The code's transition table is exactly the documented one (tests/contract.py)."""

from service.jobs import TRANSITIONS
from tests.contract import CANCELLABLE, LEGAL, TERMINAL


def as_strings(table: object) -> dict[str, frozenset[str]]:
    assert isinstance(table, dict)
    return {str(state): frozenset(str(to) for to in moves) for state, moves in table.items()}


def test_transitions_are_exactly_the_documented_table() -> None:
    assert as_strings(TRANSITIONS) == LEGAL


def test_the_literal_says_what_the_docs_say() -> None:
    # the table's own shape, spelled out once more so a slip in the literal shows too
    assert {"pending", "processing", "failed"} == CANCELLABLE
    assert {s for s, to in LEGAL.items() if not to} == {"completed", "cancelled"}
    assert {s for s, to in LEGAL.items() if "pending" in to} == {
        "processing",
        "failed",
        "permanently_failed",
    }
    assert {"completed", "permanently_failed", "cancelled"} == TERMINAL
    assert sum(len(to) for to in LEGAL.values()) == 10
