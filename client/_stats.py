"""ClientStats: what a client has done so far, for logs, dashboards and tests."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass
class ClientStats:
    """Counters since the client was created. `AsyncClient.stats` returns a copy."""

    requests: int = 0  # HTTP requests sent (retries included)
    sockets_opened: int = 0  # WebSocket connections established by the shared subscription
    waits: int = 0  # waits started (each job of wait_many / as_completed counts once)
    waits_polled: int = 0  # waits that fell back to polling at least once
    polls: int = 0  # GET /v1/jobs/{id} requests made by those fallbacks
    resumed: int = 0  # jobs re-subscribed with `since` after a reconnect
    resets: int = 0  # `reset` answers: the gap was too old, fresh snapshots followed
