"""The wire schema: every JSON body dubsim reads or writes is one of these Structs.

The same types generate the OpenAPI document, so the schema cannot drift from the code.
"""

from __future__ import annotations

import enum
import functools
import math
import time
from datetime import datetime
from typing import Annotated, Any

import msgspec
from msgspec import Meta


class Status(enum.StrEnum):
    """Where a job is in its life. Terminal states never change on their own."""

    PENDING = "pending"  # queued, waiting for a worker (or for POST /v1/process)
    PROCESSING = "processing"  # an attempt is running
    COMPLETED = "completed"  # terminal: the translation is done
    FAILED = "failed"  # this attempt failed; a retry is scheduled
    PERMANENTLY_FAILED = "permanently_failed"  # terminal: attempts exhausted
    CANCELLED = "cancelled"  # terminal: an admin cancelled it

    @property
    def terminal(self) -> bool:
        return self in TERMINAL


TERMINAL = frozenset({Status.COMPLETED, Status.PERMANENTLY_FAILED, Status.CANCELLED})


class Role(enum.StrEnum):
    """The customer's plan: premium jobs run first and faster."""

    FREE = "free"
    PREMIUM = "premium"


class Outcome(enum.StrEnum):
    """What a scenario makes of a job instead of chance."""

    COMPLETED = "completed"  # fail the first `fail_attempts` attempts, then complete
    FAILED = "failed"  # every attempt fails; permanently_failed after max_attempts
    PERMANENTLY_FAILED = "permanently_failed"  # the first attempt fails with no retry
    STUCK = "stuck"  # starts and never finishes until cancelled


class EventType(enum.StrEnum):
    CREATED = "job.created"
    STARTED = "job.started"
    PROGRESS = "job.progress"
    FAILED = "job.failed"
    RETRYING = "job.retrying"
    COMPLETED = "job.completed"
    PERMANENTLY_FAILED = "job.permanently_failed"
    CANCELLED = "job.cancelled"
    DELETED = "job.deleted"


ERROR_CODES = ("timeout", "internal_error", "unexpected_failure")

Seconds = Annotated[float, Meta(gt=0, le=86_400)]
# `$` alone also matches before a trailing newline in Python (msgspec uses `re.search`), so
# "es\n" would pass; `(?!\n)` refuses it and still reads the same as JSON Schema (ECMA) regex.
Language = Annotated[
    str,
    Meta(min_length=2, max_length=16, pattern=r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})?$(?!\n)"),
]
Reason = Annotated[str, Meta(max_length=500)]


class Stage(enum.StrEnum):
    """The stages of a media job's attempt, in order (docs/media.md)."""

    PROBE = "probe"
    EXTRACT = "extract"
    TRANSCRIBE = "transcribe"
    TRANSLATE = "translate"
    SYNTHESIZE = "synthesize"
    MIX = "mix"
    WRITE = "write"


class WebhookFaults(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """Deterministic faults in this job's webhook deliveries (docs/webhooks.md)."""

    duplicate: Annotated[int, Meta(ge=0, le=10)] = 0  # extra copies after a success
    delay_s: Annotated[float, Meta(ge=0, le=3600)] = 0.0  # wait before each delivery
    drop_first: Annotated[int, Meta(ge=0, le=10)] = 0  # attempts not sent (count as failures)
    out_of_order: bool = False  # non-terminal events held until the terminal one went out
    bad_signature: bool = False  # signed with a wrong key
    stale_timestamp: bool = False  # webhook-timestamp an hour old (signature still valid)


class Scenario(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=False):
    """A scripted job: overrides chance for this job only."""

    duration_s: Seconds | None = None
    outcome: Outcome = Outcome.COMPLETED
    fail_attempts: Annotated[int, Meta(ge=0, le=100)] = 0
    # media jobs: the stage at which a scripted failure (or a stuck attempt) happens;
    # absent from the JSON unless given, so plain jobs look as before
    fail_stage: Stage | msgspec.UnsetType = msgspec.UNSET
    webhook: WebhookFaults | None = None


class AssetVideo(msgspec.Struct, tag_field="type", tag="asset_id", forbid_unknown_fields=True):
    """A job's input video: an asset uploaded with POST /v1/assets."""

    asset_id: Annotated[str, Meta(min_length=1, max_length=64)]


class UrlVideo(msgspec.Struct, tag_field="type", tag="url", forbid_unknown_fields=True):
    """A job's input video fetched from a URL (http or https) at submission."""

    url: Annotated[str, Meta(min_length=1, max_length=2048)]


VideoInput = AssetVideo | UrlVideo


class JobError(msgspec.Struct):
    code: str
    message: str


class Job(msgspec.Struct, gc=False):
    """A translation job as clients see it. Times are UTC ISO-8601 with milliseconds."""

    id: str
    user_id: str
    role: Role
    status: Status
    progress: int
    attempt: int
    max_attempts: int
    priority: int
    target_language: str
    created_at: str
    started_at: str | None = None
    updated_at: str | None = None
    finished_at: str | None = None
    eta: str | None = None
    error: JobError | None = None
    cancel_reason: str | None = None
    scenario: Scenario | None = None
    result_url: str | None = None
    not_before: str | None = None  # a failed job's retry is due then (retries are data)
    # media jobs only (absent from plain jobs' JSON): the input, as an asset (a URL input is
    # fetched into one at submission), and where the running attempt is
    video: AssetVideo | msgspec.UnsetType = msgspec.UNSET
    stage: Stage | msgspec.UnsetType = msgspec.UNSET
    stage_progress: int | msgspec.UnsetType = msgspec.UNSET
    callback_url: str | None = None  # its terminal events are POSTed here (docs/webhooks.md)
    callback_id: str | None = None  # the submitter's own reference, echoed


class Event(msgspec.Struct):
    """One state change: the full snapshot after it. `at` has microseconds."""

    seq: int
    type: EventType
    at: str
    job: Job


# ---- request bodies -------------------------------------------------------------


CallbackUrl = Annotated[str, Meta(min_length=8, max_length=2048)]
CallbackId = Annotated[str, Meta(min_length=1, max_length=200)]


class SubmitRequest(msgspec.Struct, forbid_unknown_fields=True):
    role: Role = Role.FREE
    target_language: Language = "es"
    scenario: Scenario | None = None
    video: VideoInput | None = None  # a media job (docs/media.md); none: pure simulation
    callback_url: CallbackUrl | None = None
    callback_id: CallbackId | None = None


class CancelRequest(msgspec.Struct, forbid_unknown_fields=True):
    reason: Reason | None = None


class ProcessRequest(msgspec.Struct, forbid_unknown_fields=True):
    count: Annotated[int, Meta(ge=1, le=10_000)] = 1


class CleanupRequest(msgspec.Struct, forbid_unknown_fields=True):
    older_than_s: Annotated[float, Meta(ge=0, le=10**9)] | None = None


class SessionRequest(msgspec.Struct, forbid_unknown_fields=True):
    token: Annotated[str, Meta(max_length=1024)]


# ---- response bodies ------------------------------------------------------------


class JobPage(msgspec.Struct):
    jobs: list[Job]
    next_cursor: str | None


class ProcessResult(msgspec.Struct):
    started: list[Job]


class CleanupResult(msgspec.Struct):
    deleted: int


class SessionState(msgspec.Struct):
    admin: bool


class Health(msgspec.Struct):
    status: str  # ok | unavailable
    jobs: int
    seq: int
    uptime_s: float
    reason: str | None = None  # why the store refuses writes, while it does


class Asset(msgspec.Struct):
    """An uploaded (or fetched) input video, checked by ffprobe."""

    id: str
    url: str  # where its metadata is read: /v1/assets/{id}
    duration_s: float
    width: int
    height: int
    video_codec: str
    audio_codec: str
    size: int  # bytes
    user_id: str = ""
    created_at: str = ""


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: dict[str, Any] = {}


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


# ---- time -----------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def _split(ts: float) -> tuple[int, int]:
    """(whole seconds, microseconds), rounded exactly as datetime.fromtimestamp rounds."""
    frac, whole = math.modf(ts)
    micros = round(frac * 1e6)
    if micros >= 1_000_000:
        return int(whole) + 1, micros - 1_000_000
    if micros < 0:
        return int(whole) - 1, micros + 1_000_000
    return int(whole), micros


# the last timestamp formatted, both ways: a change stamps one `now` several times (created_at,
# updated_at, the event's time). One tuple, so a reader never sees half of an update.
_last: tuple[float, str, str] = (math.nan, "", "")


def _stamps(ts: float) -> tuple[float, str, str]:
    global _last
    last = _last
    if last[0] == ts:
        return last
    whole, micros = _split(ts)
    us = f"{_second(whole)}.{micros:06d}Z"
    last = _last = (ts, us[:-4] + "Z", us)  # milliseconds: the first three of the six digits
    return last


def iso_ms(ts: float) -> str:
    """Epoch seconds -> `2026-11-26T06:00:00.123Z` (on the hot path: the second is cached)."""
    return _stamps(ts)[1]


def iso_us(ts: float) -> str:
    """Epoch seconds -> `2026-11-26T06:00:00.123456Z` (event times, for lag measurement)."""
    return _stamps(ts)[2]


def parse_iso(text: str) -> float:
    """The inverse of iso_ms / iso_us."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
