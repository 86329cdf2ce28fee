"""Every exception the client raises, in one tree.

```
DubsimError                     anything this library raises on purpose
├── TransportError              no usable HTTP answer: refused, reset, timed out (retry may help)
├── APIError(status, code, message)
│   │                           the server answered with an error body
│   ├── RateLimited(retry_after)    429: come back after `retry_after` seconds
│   ├── Unauthorized                401/403: missing or wrong admin token
│   ├── JobNotFound                 404 for a job id: it never existed or was cleaned up
│   ├── Conflict                    409: e.g. cancelling a job that already ended
│   └── InvalidRequest              400/413/415/422: the request itself is wrong
├── JobError(job)               the job ended badly; final, waiting again changes nothing
│   ├── JobFailed                   status permanently_failed (`job.error` says why)
│   └── JobCancelled                status cancelled (`job.cancel_reason` says why)
└── WaitTimeout                 the deadline passed first; the job goes on on the server
```

`APIError.retryable` tells whether sending the same request again can help (408, 429, 5xx).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._models import Job

__all__ = [
    "APIError",
    "Conflict",
    "DubsimError",
    "InvalidRequest",
    "JobCancelled",
    "JobError",
    "JobFailed",
    "JobNotFound",
    "RateLimited",
    "TransportError",
    "Unauthorized",
    "WaitTimeout",
]

RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


class DubsimError(Exception):
    """Base class of every error this library raises on purpose."""


class TransportError(DubsimError):
    """No usable HTTP answer (connection refused or reset, timeout, bad WebSocket).

    The server may be down or unreachable; retrying later can help.
    """

    retryable = True


class APIError(DubsimError):
    """The server answered with an error: `status`, its `code` and `message`, and `details`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, object] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.details: Mapping[str, object] = details or {}

    @property
    def retryable(self) -> bool:
        """True when the same request may succeed later (408, 429, 5xx)."""
        return self.status in RETRYABLE_STATUSES


class RateLimited(APIError):
    """429: too many submissions; `retry_after` is the server's wait in seconds (or None)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Mapping[str, object] | None = None,
        *,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(status, code, message, details)
        self.retry_after = retry_after


class Unauthorized(APIError):
    """401/403: an admin route without a valid token."""


class JobNotFound(APIError):
    """404 for a job id: no such job (never existed, or cleaned up)."""


class Conflict(APIError):
    """409: the job is not in a state that allows this (e.g. already terminal)."""


class InvalidRequest(APIError):
    """400/413/415/422: the request is malformed or a value is out of range."""


class JobError(DubsimError):
    """The job reached a bad terminal state; `job` is its final snapshot."""

    def __init__(self, job: Job) -> None:
        super().__init__(self._describe(job))
        self.job = job

    @staticmethod
    def _describe(job: Job) -> str:
        return f"job {job.id} ended {job.status}"


class JobFailed(JobError):
    """The job ended `permanently_failed`; `job.error` has the last attempt's code and message."""

    @staticmethod
    def _describe(job: Job) -> str:
        why = f": {job.error.code}: {job.error.message}" if job.error else ""
        return f"job {job.id} permanently failed after {job.attempt} attempt(s){why}"


class JobCancelled(JobError):
    """The job was cancelled; `job.cancel_reason` says why (if a reason was given)."""

    @staticmethod
    def _describe(job: Job) -> str:
        why = f": {job.cancel_reason}" if job.cancel_reason else ""
        return f"job {job.id} was cancelled{why}"


class WaitTimeout(DubsimError):
    """The deadline passed before the job(s) finished. The jobs go on on the server.

    `job_ids` are the ids still unfinished; `jobs` the last snapshot seen of each (if any).
    """

    def __init__(self, timeout: float, job_ids: Sequence[str], jobs: Sequence[Job] = ()) -> None:
        names = ", ".join(job_ids[:5]) + (" ..." if len(job_ids) > 5 else "")
        super().__init__(f"job(s) {names} not finished after {timeout:g} s")
        self.timeout = timeout
        self.job_ids = list(job_ids)
        self.jobs = list(jobs)

    @property
    def job(self) -> Job | None:
        """The last snapshot of the first unfinished job, if one was seen."""
        return self.jobs[0] if self.jobs else None
