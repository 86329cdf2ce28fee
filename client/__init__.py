"""dubsim's Python client: submit translation jobs and learn their outcome as soon as it exists.

```python
from dubsim import Client

with Client("http://127.0.0.1:4777", user_id="alice") as client:
    job = client.submit(role="premium")
    job = client.wait(job.id, timeout=60)   # JobFailed / JobCancelled / WaitTimeout otherwise
    print(job.status, job.result_url)
```

`AsyncClient` has the same methods as coroutines. The library logs to the "dubsim" logger
(per-request detail at DEBUG) and never configures logging or prints.
"""

from ._async import AsyncClient
from ._errors import (
    APIError,
    Conflict,
    DubsimError,
    InvalidRequest,
    JobCancelled,
    JobError,
    JobFailed,
    JobNotFound,
    RateLimited,
    TransportError,
    Unauthorized,
    WaitTimeout,
)
from ._events import EventStream
from ._mock import MockServerSocket, MockTransport
from ._models import ApiKey, Asset, Config, ErrorInfo, Event, Job, Role, Scenario, Status
from ._polling import Backoff, PollPolicy
from ._stats import ClientStats
from ._sync import Client, SyncEventStream
from ._transport import AiohttpTransport, AsyncTransport, Request, Response, WebSocketConnection
from ._webhooks import (
    ClockState,
    Delivery,
    DeliveryAttempt,
    SecretRotation,
    Webhook,
    WebhookVerificationError,
    verify_webhook,
)

__all__ = [
    "APIError",
    "AiohttpTransport",
    "ApiKey",
    "Asset",
    "AsyncClient",
    "AsyncTransport",
    "Backoff",
    "Client",
    "ClientStats",
    "ClockState",
    "Config",
    "Conflict",
    "Delivery",
    "DeliveryAttempt",
    "DubsimError",
    "ErrorInfo",
    "Event",
    "EventStream",
    "InvalidRequest",
    "Job",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "MockServerSocket",
    "MockTransport",
    "PollPolicy",
    "RateLimited",
    "Request",
    "Response",
    "Role",
    "Scenario",
    "SecretRotation",
    "Status",
    "SyncEventStream",
    "TransportError",
    "Unauthorized",
    "WaitTimeout",
    "WebSocketConnection",
    "Webhook",
    "WebhookVerificationError",
    "verify_webhook",
]
