"""The v1 job routes for everyone: submit, read (with ETag, long poll and hints), list."""

from __future__ import annotations

import asyncio
import math
import re
from typing import Final, TypeVar
from urllib.parse import parse_qs, urlsplit

import msgspec
from aiohttp import web

from ..appkeys import AUTH, HUB, SERVICE
from ..auth import IDENTITY, ascii_digits, plan_for, user_id
from ..errors import BadRequest, Forbidden, ValidationFailed
from ..hub import Wire
from ..jobs import JobService, Record
from ..models import Role, Status, SubmitRequest
from ._gate import GATE
from ._http import decode_json, injected_fault, json_response, read_json

MAX_WAIT_S: Final = 60.0
MAX_PAGE: Final = 500
MAX_IDEMPOTENCY_KEY: Final = 200
DISCONNECT_CHECK_S: Final = 0.1  # how soon a Prefer: wait notices that its client is gone


def _nothing(*_: object) -> bytes:
    return b""


# long poll only needs to be woken: it never reads the frames
POLL_WIRE: Final = Wire("poll", _nothing, _nothing, _nothing)


def hint_headers(request: web.Request, record: Record) -> dict[str, str]:
    hint = request.app[SERVICE].poll_hint(record)
    if hint is None:
        return {}
    return {
        "Retry-After": str(max(1, math.ceil(hint))),
        "X-Poll-After-Ms": str(math.ceil(hint * 1000)),
    }


def job_headers(request: web.Request, record: Record) -> dict[str, str]:
    return {"ETag": record.etag, "Cache-Control": "no-cache", **hint_headers(request, record)}


async def submit(request: web.Request) -> web.Response:
    """POST /v1/jobs [Prefer: wait=N]"""
    service = request.app[SERVICE]
    body = await read_json(request, SubmitRequest)
    key = request.headers.get("Idempotency-Key")
    if key is not None and not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise BadRequest(f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} printable characters")
    wait = _prefer_wait(request)  # checked before anything is created
    user = user_id(request)
    role = await submitted_plan(request, body.role)
    if role is not body.role:
        body = msgspec.structs.replace(body, role=role)
    record, created, decision = await service.submit(user, body, key)
    extra: dict[str, str] = {}
    if wait is not None:
        # the job is durable already: the wait only delays the answer, and holds nothing
        # once the client has gone (or the server is shutting down)
        applied = record.job.status.terminal
        if not applied and await _wait_for_outcome(request, record, wait):
            record, applied = service.find(record.job.id) or record, True
        if applied:  # not when no slot was free (MAX_CONNECTIONS) or shutdown had begun
            extra["Preference-Applied"] = f"wait={_show(wait)}"
    headers = {"Location": f"/v1/jobs/{record.job.id}", **job_headers(request, record), **extra}
    if decision is not None:
        headers.update(decision.headers())
    return json_response(record.data, 201 if created else 200, headers)


def _prefer_wait(request: web.Request) -> float | None:
    """`Prefer: wait=N` (RFC 7240; other preferences are ignored): N in [0, 60] seconds."""
    raw: str | None = None
    for header in request.headers.getall("Prefer", []):
        for preference in header.split(","):
            name, _, value = preference.split(";")[0].strip().partition("=")
            if name.strip().lower() == "wait":
                raw = value.strip().strip('"')
    if raw is None:
        return None
    try:
        wait = _seconds(raw)
    except ValueError:
        raise ValidationFailed("Prefer: wait must be a number of seconds", field="Prefer") from None
    if not (0 <= wait <= MAX_WAIT_S) or math.isnan(wait):
        raise ValidationFailed(f"Prefer: wait must be in [0, {MAX_WAIT_S:g}]", field="Prefer")
    return wait


def _show(seconds: float) -> str:
    return str(int(seconds)) if seconds.is_integer() else str(seconds)


async def _wait_for_outcome(request: web.Request, record: Record, wait: float) -> bool:
    """Wait (at most `wait` s) until the job is terminal; False if the wait was not taken
    (no slot free, or shutting down). Ends early when the client disconnects."""
    gate = request.app[GATE]
    if wait <= 0:
        return True  # no wait asked for: nothing to hold
    if gate.closing or gate.open >= gate.limit:
        return False
    hub, service, job_id = request.app[HUB], request.app[SERVICE], record.job.id
    with gate.enter("wait"):
        sub = hub.open(POLL_WIRE, limit=1_000)
        try:
            # subscribe first, then look: a change before this is in the read model, one
            # after it reaches the subscription, so the outcome can't slip between the two
            hub.subscribe(sub, jobs=[job_id], since=hub.seq)

            async def outcome() -> None:
                while True:
                    current = service.find(job_id)
                    if current is None or current.job.status.terminal:
                        return
                    if not await sub.get():  # closed (shutdown): answer with the job as it is
                        return

            waiting = asyncio.ensure_future(outcome())
            gone = asyncio.ensure_future(_disconnected(request))
            try:
                await asyncio.wait(
                    [waiting, gone], timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
            finally:
                for task in (waiting, gone):
                    task.cancel()
                await asyncio.gather(waiting, gone, return_exceptions=True)
        finally:
            hub.unsubscribe_all(sub)
    return True


async def _disconnected(request: web.Request) -> None:
    """Return once the client's connection is gone (aiohttp does not cancel the handler)."""
    # polled: aiohttp offers no hook for a lost connection once the body has been read
    while request.transport is not None and not request.transport.is_closing():  # noqa: ASYNC110
        await asyncio.sleep(DISCONNECT_CHECK_S)


class _AskedPlan(msgspec.Struct):
    role: Role | None = None


async def submitted_plan(request: web.Request, parsed: Role) -> Role:
    """The plan a submission runs on. Without an API key, what the body said (`parsed`,
    free when it said nothing); with one, the key's plan, and a body `role` naming another
    plan is refused (403): the plan is what the key was issued for, not what a body claims."""
    if IDENTITY not in request:
        return parsed
    raw = await request.read()  # read already: aiohttp keeps the body
    asked = decode_json(raw, _AskedPlan).role if raw.strip() else None
    return plan_for(request, asked)


async def get_job(request: web.Request) -> web.StreamResponse:
    """GET /v1/jobs/{id}[?wait=S[&until=terminal]]"""
    service = request.app[SERVICE]
    if service.config.fault_rate > 0:  # the common case pays no coroutine for it
        fault = await injected_fault(request)
        if fault is not None:
            return fault
    record = await service.fetch(request.match_info["id"])
    etag = request.headers.get("If-None-Match")
    if request.query_string:  # a long poll
        wait = _wait_seconds(request)
        until = request.query.get("until", "change")
        if until not in ("change", "terminal"):
            raise ValidationFailed("until must be change or terminal", field="until")
        # a plain long poll ends on any change since the ETag (at once if it is already
        # stale); until=terminal ends only on the outcome, whatever the ETag says
        stale = etag is not None and etag != record.etag
        waiting = not record.job.status.terminal and (until == "terminal" or not stale)
        # during shutdown a long poll answers at once with the job as it is: its goodbye
        if wait and waiting and not request.app[GATE].closing:
            with request.app[GATE].enter("poll"):
                await _wait_for_change(
                    request, record.job.id, wait, terminal_only=until == "terminal"
                )
            record = service.find(record.job.id) or record
    fresh = _with_fresh_link(service, record)
    if fresh is not None:  # never a 304 for a copy whose link has died: here is one valid now
        return json_response(fresh, headers=job_headers(request, record))
    if etag is not None and etag == record.etag:
        return web.Response(status=304, headers=job_headers(request, record))
    return json_response(record.data, headers=job_headers(request, record))


def _with_fresh_link(service: JobService, record: Record) -> bytes | None:
    """The job's JSON with its `result_url` signed anew, if the one it was completed with has
    expired (RESULT_URL_TTL_S): asking for the job again is how a link-holder gets a link that
    works. None (serve the stored bytes) while it is still good, which is the common case."""
    job = record.job
    if job.result_url is None or service.result_link is None:
        return None
    expires = parse_qs(urlsplit(job.result_url).query).get("expires", [""])[0]
    if expires.isascii() and expires.isdigit() and int(expires) > service.clock.now():
        return None
    return msgspec.json.encode(msgspec.structs.replace(job, result_url=service.result_link(job)))


_SECONDS = re.compile(r"[0-9.eE+-]+")


def _seconds(raw: str) -> float:
    """A number of seconds as plain ASCII (`30`, `2.5`, `1e-05`): float() alone also takes
    "1_0", fullwidth and Arabic-Indic digits, and surrounding spaces. ValueError otherwise."""
    if not raw.isascii() or _SECONDS.fullmatch(raw) is None:
        raise ValueError(raw)
    return float(raw)


def _wait_seconds(request: web.Request) -> float:
    raw = request.query.get("wait")
    if raw is None:
        return 0.0
    try:
        wait = _seconds(raw)
    except ValueError:
        raise ValidationFailed("wait must be a number of seconds", field="wait") from None
    if not (0 < wait <= MAX_WAIT_S) or math.isnan(wait):
        raise ValidationFailed(f"wait must be in (0, {MAX_WAIT_S:g}]", field="wait")
    return wait


async def _wait_for_change(
    request: web.Request, job_id: str, wait: float, *, terminal_only: bool
) -> None:
    """Return on the job's next event (or, with terminal_only, its outcome), after `wait` s,
    or as soon as the hub closes the subscription (shutdown: "going away")."""
    hub, service = request.app[HUB], request.app[SERVICE]
    sub = hub.open(POLL_WIRE, limit=1_000)
    try:
        hub.subscribe(sub, jobs=[job_id], since=hub.seq)
        async with asyncio.timeout(wait):
            while True:
                if not await sub.get():  # closed: get() would return at once, forever
                    return
                record = service.find(job_id)
                if not terminal_only or record is None or record.job.status.terminal:
                    return
    except TimeoutError:
        pass
    finally:
        hub.unsubscribe_all(sub)


async def list_jobs(request: web.Request) -> web.Response:
    """GET /v1/jobs: own jobs, or everyone's for the admin; newest first."""
    service = request.app[SERVICE]
    query = request.query
    admin = request.app[AUTH].is_admin(request)
    me = user_id(request)
    user: str | None = query.get("user")
    if not admin:
        if user is not None and user != me:
            raise Forbidden("only the admin can list other users' jobs")
        user = me
    status = _enum(Status, query.get("status"), "status")
    role = _enum(Role, query.get("role"), "role")
    limit = _int(query.get("limit", "100"), "limit", 1, MAX_PAGE)
    before = _int(query["cursor"], "cursor", 1, 2**62) if "cursor" in query else None
    page, cursor = service.page(limit, user=user, status=status, role=role, before=before)
    next_cursor = None if cursor is None else str(cursor)
    body = b'{"jobs":[' + b",".join(r.data for r in page) + b'],"next_cursor":'
    body += (b'"' + next_cursor.encode() + b'"' if next_cursor else b"null") + b"}"
    return json_response(body)


E = TypeVar("E", Status, Role)


def _enum(kind: type[E], raw: str | None, name: str) -> E | None:
    if raw is None:
        return None
    try:
        return kind(raw)
    except ValueError:
        allowed = ", ".join(m.value for m in kind)
        raise ValidationFailed(f"{name} must be one of {allowed}", field=name) from None


def _int(raw: str, name: str, low: int, high: int) -> int:
    # plain ASCII digits: int() also takes Arabic-Indic or fullwidth digits, "+5", " 5" and "5_0"
    if not ascii_digits(raw):
        raise ValidationFailed(f"{name} must be an integer (ASCII digits)", field=name)
    value = int(raw) if len(raw) <= 20 else high + 1
    if not low <= value <= high:
        raise ValidationFailed(f"{name} must be in [{low}, {high}]", field=name)
    return value


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/jobs", submit)
    app.router.add_get("/v1/jobs", list_jobs)
    app.router.add_get("/v1/jobs/{id}", get_job)
