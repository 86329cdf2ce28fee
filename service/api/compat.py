"""The seed-era routes the two older clients call: thin adapters over JobService.

Nothing here keeps state or decides a transition: each handler translates the old request
into one JobService call and the answer back into the old vocabulary. Errors leave in the
old shape, `{"message": ..., "status": "failed"}`, never the v1 one (`_legacy` below catches
the domain's ServiceErrors before the app's error middleware would).

Vocabulary
    GET /status answers `status` with the old words and `result` for client B:

        v1 status            status                result
        pending              pending               pending
        processing           pending               pending     (old clients know no "processing")
        failed               pending               pending     (a retry follows: not final)
        completed            completed             completed
        permanently_failed   permanently failed    error
        cancelled            cancelled             error

    GET /jobs groups by the old keys: processing jobs go under `pending` (same reading as
    /status: the work is not done yet); `failed` holds the jobs whose attempt failed and whose
    retry is scheduled, which is what the seed-era `failed` group meant. Each job in a group
    is the v1 Job snapshot, as served by GET /v1/jobs/{id}.

Who may call what (the hard requirement is that the old clients work unchanged: they send a
token to /cancel and never call /config POST, /cleanup or /process, so every route that
changes the service for everyone needs the admin token exactly like its v1 twin):
    POST /cancel/{id}   admin, always (the seed route was; the clients send the token).
    POST /cleanup       admin (as POST /v1/cleanup): removes every finished job.
    POST /config        admin (as PATCH /v1/config), and only the three legacy keys.
    POST /process       admin (as POST /v1/process; also /process_jobs): starts the next
                        queued job now, premium first.
                        The admin routes answer 401 in the legacy body, so
                        `service.auth.admin_only` (v1 body) is not used; each handler
                        carries `admin_only = True` all the same, for the security tests.
    GET /jobs           anyone, but like GET /v1/jobs: a caller sees only the jobs of its
                        own `X-User-Id` (default `anonymous`, where an old client that sets
                        no header submitted them); the admin sees everyone's. The old
                        shape stays intact, and a public list no longer leaks other
                        users' ids (knowing an id is the right to read the job).
    GET /config         anyone (as GET /v1/config).
    POST /translate     anyone, free-plan rate limit per `X-User-Id`.
    POST /start         anyone: a free job for `X-User-Id` (client B sends none, so it is
                        `anonymous`), counted by the same free-plan limit; a keyless route
                        that skipped the limit would be a way around it. Over it: 429.
    A credential that is presented but wrong is refused with 401 on every route (a wrong
    token by the app's guard, in this module's body shape; a stale session cookie on /jobs,
    where the admin would see more), never silently answered with the narrower view.
    Cookie-borne mutations must be same-origin JSON (`service.api._guard`).
"""

from __future__ import annotations

import asyncio
import functools
import math
from collections.abc import Awaitable, Callable
from typing import Any, Final

import msgspec
from aiohttp import web

from ..appkeys import AUTH, SERVICE
from ..auth import plan_for, user_id
from ..errors import Conflict, NotFound, RateLimited, ServiceError
from ..jobs import Record
from ..models import CancelRequest, Role, Status, SubmitRequest
from ..ratelimit import Decision
from ..settings import ConfigPatch
from ..store import StoreUnavailable
from ._http import field_of, http_status, injected_fault, json_response, read_json
from .jobs import hint_headers, submitted_plan

# GET /status `status`: only the four words client A knows; non-final states poll on.
STATUS_WORDS: Final[dict[Status, str]] = {
    Status.PENDING: "pending",
    Status.PROCESSING: "pending",
    Status.FAILED: "pending",
    Status.COMPLETED: "completed",
    Status.PERMANENTLY_FAILED: "permanently failed",
    Status.CANCELLED: "cancelled",
}

# GET /status `result`: client B stops at completed or error.
RESULT_WORDS: Final[dict[Status, str]] = {
    Status.PENDING: "pending",
    Status.PROCESSING: "pending",
    Status.FAILED: "pending",
    Status.COMPLETED: "completed",
    Status.PERMANENTLY_FAILED: "error",
    Status.CANCELLED: "error",
}

# GET /jobs answers every group, each with free and premium, even when empty.
GROUPS: Final = ("pending", "completed", "cancelled", "failed", "permanently_failed")
GROUP_OF: Final[dict[Status, str]] = {
    Status.PENDING: "pending",
    Status.PROCESSING: "pending",
    Status.FAILED: "failed",
    Status.COMPLETED: "completed",
    Status.PERMANENTLY_FAILED: "permanently_failed",
    Status.CANCELLED: "cancelled",
}

# jobs GET /jobs groups or writes before it lets the loop serve others: the admin's list of
# 200,000 jobs (143 MB) was one encode and one write, a second of loop for everyone
LIST_CHUNK: Final = 2_000

LEGACY_KEYS: Final = ("TRANSLATION_DELAY", "ERROR_RATE", "RATE_LIMIT")
NOT_FOUND: Final = "Job ID not found"
UNAUTHORIZED: Final = "Unauthorized access"


# ---- wire shapes ------------------------------------------------------------------


class TranslateRequest(msgspec.Struct):
    """POST /translate. Unknown fields are ignored, as the seed server did."""

    role: Role = Role.FREE


class Submitted(msgspec.Struct):
    job_id: str
    role: Role
    priority: int


class Started(msgspec.Struct):
    job_id: str


class StatusAnswer(msgspec.Struct):
    job_id: str
    status: str
    result: str
    progress: int


class Failure(msgspec.Struct):
    message: str
    status: str = "failed"


class CancelAnswer(msgspec.Struct):
    message: str
    reason: str | None
    status: str = "success"


class CleanupAnswer(msgspec.Struct):
    message: str
    deleted: int
    older_than_s: float | None


class ProcessAnswer(msgspec.Struct):
    message: str
    role: Role
    job_id: str


LegacyHandler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def failed(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """The seed-era error: `{"message": ..., "status": "failed"}`."""
    return json_response(Failure(message), status, headers)


def _legacy(handler: LegacyHandler) -> LegacyHandler:
    """Answer the domain's errors in the legacy shape (the v1 middleware never sees them)."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StoreUnavailable as exc:
            return failed(503, exc.reason, {"Retry-After": str(math.ceil(exc.retry_after_s))})
        except ServiceError as exc:
            return legacy_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return failed(exc.status, exc.reason)

    # what the app's guard refuses before the handler runs is answered in this shape too
    wrapper.legacy_error = legacy_error  # type: ignore[attr-defined]
    return wrapper


def legacy_error(exc: ServiceError) -> web.Response:
    """A ServiceError in the seed servers' words and statuses."""
    if isinstance(exc, RateLimited):
        return failed(429, "Rate limit exceeded", _rate_headers(exc))
    if isinstance(exc, NotFound):
        return failed(404, NOT_FOUND)
    status = http_status(exc)
    if status == 401:
        return failed(401, UNAUTHORIZED)
    # the seed servers knew one client-error status: 409/415/422 read as 400
    return failed(status if status in (403, 413, 503) else 400, exc.message)


def _rate_headers(exc: RateLimited) -> dict[str, str]:
    decision = Decision(False, exc.limit, exc.remaining, exc.reset_s)
    return {"Retry-After": str(max(1, math.ceil(exc.reset_s))), **decision.headers()}


def _token(request: web.Request) -> bool | None:
    """True for the admin, False for a wrong token or a stale session cookie, None when
    neither was presented."""
    auth = request.app[AUTH]
    bearer = auth.bearer_admin(request)
    if bearer is not None:
        return bearer
    if auth.cookie_admin(request):
        return True
    return False if auth.stale_cookie(request) else None


def _legacy_admin(handler: LegacyHandler) -> LegacyHandler:
    """An admin-only seed-era route: 401 in the legacy body without the token."""

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        if _token(request) is not True:
            return failed(401, UNAUTHORIZED)
        return await handler(request)

    wrapped = _legacy(wrapper)
    wrapped.admin_only = True  # type: ignore[attr-defined]  # how the security test finds them
    return wrapped


# ---- submit and read ----------------------------------------------------------------


@_legacy
async def translate(request: web.Request) -> web.StreamResponse:
    """POST /translate {"role"} -> 201 {"job_id", "role", "priority"}"""
    body = await read_json(request, TranslateRequest, lenient_type=True)
    record, decision = await _submit(request, await submitted_plan(request, body.role))
    job = record.job
    return json_response(Submitted(job.id, job.role, job.priority), 201, _decision(decision))


@_legacy
async def start(request: web.Request) -> web.StreamResponse:
    """POST /start (client B, no body) -> 200 {"job_id"}: a free job for X-User-Id."""
    record, decision = await _submit(request, plan_for(request, None))
    return json_response(Started(record.job.id), 200, _decision(decision))


async def _submit(request: web.Request, role: Role) -> tuple[Record, Decision | None]:
    user = user_id(request)
    record, _, decision = await request.app[SERVICE].submit(user, SubmitRequest(role=role))
    return record, decision


def _decision(decision: Decision | None) -> dict[str, str] | None:
    return None if decision is None else decision.headers()


@_legacy
async def status(request: web.Request) -> web.StreamResponse:
    """GET /status/{id} -> {"job_id", "status", "result", "progress"} with poll hints."""
    fault = await injected_fault(request)
    if fault is not None:
        return fault
    record = await request.app[SERVICE].fetch(request.match_info["id"])
    job = record.job
    answer = StatusAnswer(job.id, STATUS_WORDS[job.status], RESULT_WORDS[job.status], job.progress)
    return json_response(answer, headers=hint_headers(request, record) or None)


@_legacy
async def list_jobs(request: web.Request) -> web.StreamResponse:
    """GET /jobs -> {group: {role: {job_id: job}}}; own jobs, or everyone's for the admin."""
    admin = _token(request)
    if admin is False:
        return failed(401, UNAUTHORIZED)
    user = None if admin else user_id(request)
    groups: dict[tuple[str, str], list[bytes]] = {
        (group, role.value): [] for group in GROUPS for role in Role
    }
    records = list(request.app[SERVICE].select(user=user))
    records.reverse()  # oldest first, as the seed servers listed them
    encode = msgspec.json.encode
    for start in range(0, len(records), LIST_CHUNK):
        if start:
            await asyncio.sleep(0)
        for record in records[start : start + LIST_CHUNK]:
            job, data = record.job, record.data  # one state: both move together
            groups[GROUP_OF[job.status], job.role.value].append(encode(job.id) + b":" + data)
    resp = web.StreamResponse(headers={"Content-Type": "application/json"})
    await resp.prepare(request)
    out = [b"{"]
    for g, group in enumerate(GROUPS):
        out.append(b"," * (g > 0) + encode(group) + b":{")
        for r, role in enumerate(Role):
            out.append(b"," * (r > 0) + encode(role.value) + b":{")
            members = groups[group, role.value]
            for start in range(0, len(members), LIST_CHUNK):
                out.append(b"," * (start > 0) + b",".join(members[start : start + LIST_CHUNK]))
                await resp.write(b"".join(out))
                out = []
            out.append(b"}")
        out.append(b"}")
    out.append(b"}")
    await resp.write(b"".join(out))
    await resp.write_eof()
    return resp


# ---- commands -------------------------------------------------------------------------


@_legacy_admin
async def cancel(request: web.Request) -> web.StreamResponse:
    """POST /cancel/{id} (admin) {"reason"}: JSON is read whatever the Content-Type says."""
    body = await read_json(request, CancelRequest, lenient_type=True)
    job_id = request.match_info["id"]
    service = request.app[SERVICE]
    await service.fetch(job_id)
    try:
        record = await service.cancel(job_id, body.reason)
    except Conflict:
        word = STATUS_WORDS[request.app[SERVICE].get(job_id).job.status]
        return failed(400, f"Job already {word}, cannot cancel a {word} job.")
    job = record.job
    return json_response(CancelAnswer(f"Job {job.id} cancelled successfully", job.cancel_reason))


@_legacy_admin
async def cleanup(request: web.Request) -> web.StreamResponse:
    """POST /cleanup (admin): remove every finished job, as POST /v1/cleanup does."""
    deleted = await request.app[SERVICE].cleanup(None)
    return json_response(CleanupAnswer("Processed jobs removed", deleted, None))


@_legacy_admin
async def process(request: web.Request) -> web.StreamResponse:
    """POST /process, /process_jobs (admin): start the next queued job (premium first),
    204 if none."""
    started = await request.app[SERVICE].process(1)
    if not started:
        return web.Response(status=204)
    job = started[0].job
    return json_response(ProcessAnswer(f"Processed job {job.id}", job.role, job.id))


# ---- config -------------------------------------------------------------------------


def _config_answer(request: web.Request, message: str | None = None) -> dict[str, Any]:
    config = request.app[SERVICE].config
    answer: dict[str, Any] = {
        "TRANSLATION_DELAY": config.translation_delay,
        "ERROR_RATE": config.error_rate,
        "RATE_LIMIT": config.rate_limit,
    }
    if message is not None:
        answer["message"] = message
    return answer


@_legacy
async def get_config(request: web.Request) -> web.StreamResponse:
    """GET /config -> {"TRANSLATION_DELAY", "ERROR_RATE", "RATE_LIMIT"}"""
    return json_response(_config_answer(request))


@_legacy_admin
async def post_config(request: web.Request) -> web.StreamResponse:
    """POST /config (admin), any subset of the legacy keys; validated whole before any change."""
    body = await read_json(request, dict[str, Any], lenient_type=True)
    unknown = sorted(set(body) - set(LEGACY_KEYS))
    if unknown:
        return failed(400, f"unknown key(s) {', '.join(unknown)}; use {', '.join(LEGACY_KEYS)}")
    try:
        patch = msgspec.convert({key.lower(): value for key, value in body.items()}, ConfigPatch)
    except msgspec.ValidationError as exc:
        problem = str(exc).split(" - at ")[0]
        field = field_of(exc)
        return failed(400, f"{field.upper()}: {problem}" if field else problem)
    await request.app[SERVICE].update_config(patch)
    return json_response(_config_answer(request, "Configuration updated successfully"))


def setup(app: web.Application) -> None:
    """Add the seed-era routes."""
    app.router.add_post("/translate", translate)
    app.router.add_post("/start", start)
    app.router.add_get("/status/{id}", status)
    app.router.add_get("/jobs", list_jobs)
    app.router.add_post("/cancel/{id}", cancel)
    app.router.add_post("/cleanup", cleanup)
    app.router.add_post("/process", process)
    app.router.add_post("/process_jobs", process)
    app.router.add_get("/config", get_config)
    app.router.add_post("/config", post_config)
