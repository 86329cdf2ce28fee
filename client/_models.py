"""The client's view of the wire types (docs/api.md, docs/protocol.md).

The structs ignore fields they don't know, so a newer server with extra fields keeps working.
Times are aware `datetime`s in UTC.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

__all__ = ["ApiKey", "Config", "ErrorInfo", "Event", "Job", "Role", "Scenario", "Status"]


class Status(enum.StrEnum):
    """Where a job is in its life. Terminal states never change again."""

    PENDING = "pending"  # queued, waiting for a worker
    PROCESSING = "processing"  # an attempt is running
    COMPLETED = "completed"  # terminal: done, `result_url` is set
    FAILED = "failed"  # this attempt failed and a retry is scheduled: not an outcome
    PERMANENTLY_FAILED = "permanently_failed"  # terminal: attempts exhausted
    CANCELLED = "cancelled"  # terminal: an admin cancelled it

    @property
    def terminal(self) -> bool:
        """True for completed, permanently_failed and cancelled."""
        return self in _TERMINAL


_TERMINAL = frozenset({Status.COMPLETED, Status.PERMANENTLY_FAILED, Status.CANCELLED})


class Role(enum.StrEnum):
    """The customer's plan: premium jobs run first and faster."""

    FREE = "free"  # rate limited per user
    PREMIUM = "premium"  # prioritised, sped up


class ErrorInfo(msgspec.Struct, frozen=True):
    """Why the last attempt failed: `code` is timeout, internal_error or unexpected_failure
    (a media job's tool failing for real: media_error)."""

    code: str
    message: str


class Scenario(msgspec.Struct, frozen=True, omit_defaults=True):
    """A scripted job (overrides chance): outcome completed, failed, permanently_failed or stuck."""

    duration_s: float | None = None
    outcome: str = "completed"
    fail_attempts: int = 0
    fail_stage: str | None = None  # a media job's stage where the scripted failure happens
    webhook: dict[str, Any] | None = None  # faults in this job's webhook deliveries


class Job(msgspec.Struct, frozen=True):
    """A translation job snapshot, as the server sent it."""

    id: str
    user_id: str
    role: Role
    status: Status
    progress: int
    attempt: int
    max_attempts: int
    priority: int
    target_language: str
    created_at: datetime
    started_at: datetime | None = None
    updated_at: datetime | None = None
    finished_at: datetime | None = None
    eta: datetime | None = None
    error: ErrorInfo | None = None
    cancel_reason: str | None = None
    scenario: Scenario | None = None
    result_url: str | None = None
    not_before: datetime | None = None  # a failed attempt's retry is due then
    callback_url: str | None = None  # its terminal events are POSTed here (docs/webhooks.md)
    callback_id: str | None = None  # the submitter's own reference, echoed
    # a media job (docs/media.md): its input video, and while an attempt runs its stage
    video: dict[str, Any] | None = None
    stage: str | None = None
    stage_progress: int | None = None

    @property
    def terminal(self) -> bool:
        """True once the job can never change again."""
        return self.status.terminal


class Asset(msgspec.Struct, frozen=True):
    """An uploaded input video, as ffprobe found it (POST /v1/assets); `id` is what a media job
    names as `asset_id`."""

    id: str
    url: str
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    size: int
    user_id: str = ""
    created_at: str = ""


class Event(msgspec.Struct, frozen=True):
    """One message of the live stream.

    `type` is a job event (`job.created` ... `job.deleted`), `snapshot` (the current state right
    after subscribing) or `reset` (the resume point was lost; fresh snapshots follow, `job` is
    None and `reason` says why). `seq` is the server's sequence number, the resume point.
    """

    seq: int
    type: str
    job: Job | None = None
    at: datetime | None = None
    reason: str | None = None


class Config(msgspec.Struct, frozen=True):
    """The server's runtime settings (GET/PATCH /v1/config)."""

    translation_delay: float
    error_rate: float
    rate_limit: int
    premium_speedup: float
    max_attempts: int
    retry_delay: float
    workers: int
    auto_process: bool
    fault_rate: float
    fault_stall_s: float
    # later settings, with the server's defaults for a server that predates them
    premium_rate_limit: int = 1_000
    max_in_flight: int = 1_000
    attempt_timeout_s: float = 3600.0
    job_ttl_s: float = 7 * 86_400.0


class JobPage(msgspec.Struct, frozen=True):
    """One page of `GET /v1/jobs`."""

    jobs: list[Job]
    next_cursor: str | None = None


class ProcessResult(msgspec.Struct, frozen=True):
    """The answer of `POST /v1/process`."""

    started: list[Job]


class CleanupResult(msgspec.Struct, frozen=True):
    """The answer of `POST /v1/cleanup`."""

    deleted: int


class ErrorDetail(msgspec.Struct, frozen=True):
    """The `error` member of an error body."""

    code: str = "unknown"
    message: str = ""
    details: dict[str, Any] = {}


class ErrorBody(msgspec.Struct, frozen=True):
    """`{"error": {...}}`: every error the server sends."""

    error: ErrorDetail


# ---- API keys (AUTH=keys) ------------------------------------------------------------


class ApiKey(msgspec.Struct, frozen=True):
    """An API key as the admin sees it. `key` (the secret, `dsk_...`) is set only in the
    answer to `create_key`: the server keeps its hash and never shows it again; `prefix`
    (`dsk_ab12…`) recognises it in a listing."""

    id: str
    prefix: str
    user_id: str
    plan: str
    created_at: datetime
    name: str | None = None
    last_used_at: datetime | None = None
    key: str | None = None


class KeyList(msgspec.Struct, frozen=True):
    keys: list[ApiKey]
