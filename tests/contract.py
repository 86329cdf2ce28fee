"""The job life cycle as docs/architecture.md draws it, written out by hand.

Tests judge the service against this table, never against the service's own `TRANSITIONS`:
a table that is edited in the code (a completed job requeued, a cancel during retry backoff
refused) must turn a test red.
"""

from __future__ import annotations

from typing import Final

# state -> the states it may move to
LEGAL: Final[dict[str, frozenset[str]]] = {
    "pending": frozenset({"processing", "cancelled"}),
    "processing": frozenset(
        {
            "completed",
            "failed",
            "permanently_failed",
            "cancelled",
            "pending",  # requeued after a restart interrupted the attempt
        }
    ),
    "failed": frozenset({"pending", "cancelled"}),  # retry after backoff, or cancel during it
    "permanently_failed": frozenset({"pending"}),  # an admin retry only
    "completed": frozenset(),
    "cancelled": frozenset(),
}

STATES: Final = frozenset(LEGAL)
TERMINAL: Final = frozenset({"completed", "permanently_failed", "cancelled"})
# what an admin's cancel accepts, and what its retry accepts
CANCELLABLE: Final = frozenset(s for s, to in LEGAL.items() if "cancelled" in to)
RETRYABLE: Final = frozenset({"permanently_failed"})
