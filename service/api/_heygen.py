"""What the HeyGen-compatible API (heygen_v2.py, heygen_v3.py) shares: callers, errors,
envelopes, Idempotency-Key, the per-job documents, and submitting through JobService.

The facade keeps no state machine and no store of its own. A HeyGen translation (or
proofread) is an ordinary dubsim job, made by `JobService.submit` and moved by the scheduler
like every other; it shows in /v1, the dashboard, the streams and the metrics. What HeyGen has
and dubsim's job has not (title, video_url, callback_id, mode, the proofread's SRT, ...) is a
Store document `heygen/<job id>` (`Meta`), written once the job is durable.

A facade job is recognised by the dubsim Idempotency-Key it was submitted with,
`heygen:<kind>:<plan>:<request>:<n>` (kind `t` a translation, `p` a proofread; n the index of
its language in the request). That key is durable with the job on both stores and every
process knows it the moment the job exists, so: the scheduler reads the plan from it (per-plan
concurrency, without waiting for a document); listing a user's translations needs no document
reads to tell them from other jobs; and making the jobs of one request is idempotent: a retry
of a request that died half-way (same HeyGen Idempotency-Key, so the same <request>) finds the
jobs it already made instead of making them twice.

Who is calling comes from ONE function, `identify`: with AUTH=open (the only mode so far) any
non-empty API key (`x-api-key`, or `Authorization: Bearer`) is accepted and is the user id,
and the plan is the `X-Dubsim-Plan` header or HEYGEN_PLAN. Keyed auth replaces that function.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import math
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any, Final, Literal, NamedTuple

import msgspec
from aiohttp import hdrs, web
from msgspec import Meta as Constraint

from ..appkeys import AUTH, SCHEDULER, SERVICE, SETTINGS
from ..errors import (
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    ServiceError,
    Unauthorized,
    Unavailable,
)
from ..jobs import JobService, Record
from ..keys import KEY_PREFIX, KEYS
from ..links import Links
from ..models import Job, Role, Scenario, Status, SubmitRequest, parse_iso
from ..store import StoreUnavailable, VersionConflict
from ..webhooks import ADMIN_OWNER, WEBHOOKS
from ._http import CHALLENGE, decode_json, http_status, injected_fault, json_response

log = logging.getLogger(__name__)

# ---- plans, languages ----------------------------------------------------------------

# How many of a user's jobs run at once, per HeyGen plan; more wait in the queue.
PLAN_CONCURRENCY: Final[dict[str, int]] = {"free": 1, "pro": 3, "scale": 6, "pay-as-you-go": 10}
PLAN_HEADER: Final = "X-Dubsim-Plan"
SCENARIO_HEADER: Final = "X-Dubsim-Scenario"
KEY_HEADER: Final = "x-api-key"
MAX_KEY: Final = 128

# The languages a translation may target: HeyGen's names -> the code dubsim's job carries.
LANGUAGES: Final[dict[str, str]] = {
    "Arabic": "ar",
    "Chinese": "zh",
    "Chinese (Mandarin, Simplified)": "zh-Hans",
    "Czech": "cs",
    "Dutch": "nl",
    "English": "en",
    "English (United Kingdom)": "en-GB",
    "English (United States)": "en-US",
    "French": "fr",
    "French (Canada)": "fr-CA",
    "German": "de",
    "Greek": "el",
    "Hindi": "hi",
    "Hungarian": "hu",
    "Indonesian": "id",
    "Italian": "it",
    "Japanese": "ja",
    "Korean": "ko",
    "Polish": "pl",
    "Portuguese": "pt",
    "Portuguese (Brazil)": "pt-BR",
    "Romanian": "ro",
    "Russian": "ru",
    "Spanish": "es",
    "Spanish (Mexico)": "es-MX",
    "Swedish": "sv",
    "Thai": "th",
    "Turkish": "tr",
    "Ukrainian": "uk",
    "Vietnamese": "vi",
}
_BY_FOLDED: Final = {name.casefold(): name for name in LANGUAGES}
_BY_CODE: Final = {code: name for name, code in LANGUAGES.items()}
MAX_LANGUAGES: Final = len(LANGUAGES)

# ---- bounded inputs shared by the request bodies --------------------------------------

Text = Annotated[str, Constraint(max_length=1000)]
Url = Annotated[str, Constraint(min_length=1, max_length=2048)]
Speakers = Annotated[int, Constraint(ge=1, le=100)]
Offset = Annotated[float, Constraint(ge=0, le=86_400)]
Mode = Literal["speed", "precision"]


class AssetUrl(msgspec.Struct, tag_field="type", tag="url", forbid_unknown_fields=True):
    url: Url


class AssetId(msgspec.Struct, tag_field="type", tag="asset_id", forbid_unknown_fields=True):
    asset_id: Annotated[str, Constraint(min_length=1, max_length=200)]


Asset = AssetUrl | AssetId

# ---- webhook events ----------------------------------------------------------------------

# The events the facade sends (heygen_webhooks.py): (kind, succeeded) -> HeyGen's name
EVENT_NAMES: Final[dict[tuple[str, bool], str]] = {
    ("t", True): "video_translate.success",
    ("t", False): "video_translate.fail",
    ("p", True): "proofread_creation.success",
    ("p", False): "proofread_creation.fail",
}
HEYGEN_EVENTS: Final = tuple(EVENT_NAMES.values())
LANE: Final = "heygen"  # the name of each user's lane for callback_url deliveries


def transform_name(events: frozenset[str] | tuple[str, ...]) -> str:
    """The webhook transformer that sends these of HEYGEN_EVENTS: `heygen:` + one bit each.
    An endpoint's HeyGen event filter is its transformer (all 16 are registered at start)."""
    return "heygen:" + "".join("1" if e in events else "0" for e in HEYGEN_EVENTS)


# ---- errors and envelopes -------------------------------------------------------------


class HeyGenError(Exception):
    """An error answered as `{"error": {"code", "message", "param", "doc_url"}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers


def invalid(message: str, param: str | None = None) -> HeyGenError:
    return HeyGenError(400, "invalid_parameter", message, param)


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    param: str | None
    doc_url: str | None = None


# HeyGen's documented statuses pass as they are; any other client error reads as 400
PASSED: Final = frozenset({400, 401, 402, 403, 404, 409, 429})
CODES: Final[dict[int, str]] = {
    401: "unauthorized",
    402: "insufficient_credit",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limit_exceeded",
    503: "service_unavailable",
}


def error_response(api: str, exc: HeyGenError) -> web.Response:
    body: dict[str, Any] = {"error": ErrorDetail(exc.code, exc.message, exc.param)}
    if api == "v2":
        body["data"] = None
    headers = exc.headers
    if exc.status == 401:  # as every 401 of dubsim's says how to authenticate
        headers = {**(headers or {}), "WWW-Authenticate": CHALLENGE}
    return json_response(body, exc.status, headers)


def ok(api: str, data: Any) -> web.Response:
    """v2: `{"error": null, "data": ...}`; v3: `{"data": ...}`."""
    return json_response({"error": None, "data": data} if api == "v2" else {"data": data})


def _retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


# "Object missing required field `asset_id` - at `$.video`": the field is video.asset_id
_NESTED: Final = re.compile(r"(?:missing required|unknown) field `([^`]+)` - at `\$\.([^`]+)`")


def _path_of(message: str, field: object) -> str | None:
    """`param`: the field a validation error names, by its whole path (`video.asset_id`, as
    when the same field has a wrong value), not by its last name alone."""
    nested = _NESTED.search(message)
    if nested is not None:
        return f"{nested.group(2)}.{nested.group(1)}"
    return field if isinstance(field, str) else None


def translate_error(exc: BaseException) -> HeyGenError | None:
    """Any exception a handler let out, in HeyGen's words; None: not ours to answer."""
    if isinstance(exc, HeyGenError):
        return exc
    if isinstance(exc, RateLimited):
        return HeyGenError(429, "rate_limit_exceeded", exc.message, None, _retry_after(exc.reset_s))
    if isinstance(exc, Unavailable):
        headers = _retry_after(exc.retry_after_s)
        return HeyGenError(503, "service_unavailable", exc.message, None, headers)
    if isinstance(exc, ServiceError):
        status = http_status(exc)
        param = exc.details.get("field")
        if isinstance(exc, NotFound):
            return HeyGenError(404, "not_found", exc.message)
        if isinstance(exc, Unauthorized | Forbidden | Conflict):
            return HeyGenError(status, CODES[status], exc.message)
        return invalid(exc.message, _path_of(exc.message, param))
    if isinstance(exc, StoreUnavailable):
        headers = _retry_after(exc.retry_after_s)
        return HeyGenError(503, "service_unavailable", exc.reason, None, headers)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            return None
        status = exc.status if exc.status in PASSED or exc.status >= 500 else 400
        return HeyGenError(status, CODES.get(exc.status, "invalid_request"), exc.reason)
    if isinstance(exc, ConnectionError):
        return None  # the peer left: nobody to answer
    return HeyGenError(500, "internal_error", "internal server error")


# ---- who is calling ---------------------------------------------------------------------


def one_header(request: web.Request, name: str, error: HeyGenError) -> str | None:
    """A header's one value (sent twice alike: that value); sent twice with different values,
    `error`: neither is taken silently over the other."""
    values = request.headers.getall(name, [])
    if len(set(values)) > 1:
        raise error
    return values[0] if values else None


class Caller(NamedTuple):
    user_id: str
    plan: str


async def identify(request: web.Request) -> Caller:
    """The caller of a HeyGen route: the one place identity comes from (see the module doc).

    AUTH=open: any non-empty key is the user id; the plan is X-Dubsim-Plan or HEYGEN_PLAN. But
    a key shaped like dubsim's own (`dsk_...`) is a secret, never a user id (it would be kept
    in the clear in every job): it is looked up as in AUTH=keys, and unknown or revoked is 401.
    AUTH=keys: the key must be one the admin made (`/v1/keys`); it names the user, and its plan
    decides HeyGen's: a free key is HeyGen's free plan, a premium key HEYGEN_PLAN (X-Dubsim-Plan
    is not listened to: a caller does not pick its own plan)."""
    twice = HeyGenError(401, "unauthorized", "one API key per request (a header sent twice)")
    key = one_header(request, KEY_HEADER, twice)
    scheme, _, token = (one_header(request, "Authorization", twice) or "").partition(" ")
    bearer = token.strip() if scheme.lower() == "bearer" else None
    if key is None:
        key = bearer
    elif bearer is not None and bearer != key.strip():
        # two different keys: neither is taken silently over the other
        raise HeyGenError(401, "unauthorized", "two different API keys (x-api-key and Bearer)")
    key = (key or "").strip()
    if not key:
        raise HeyGenError(401, "unauthorized", f"send your API key in {KEY_HEADER}")
    if len(key) > MAX_KEY or not key.isprintable():
        raise HeyGenError(401, "unauthorized", f"an API key is 1..{MAX_KEY} printable characters")
    if key == ADMIN_OWNER:  # as an owner of webhooks, "*" means everyone
        raise HeyGenError(401, "unauthorized", f"{ADMIN_OWNER!r} is not an API key")
    settings = request.app[SETTINGS]
    if not key.startswith(KEY_PREFIX):
        # a key that may be a guess at the admin token: an address locked out by the admin
        # throttle is refused here too (429), or this route would be an unthrottled oracle
        request.app[AUTH].throttle.check(request.remote or "unknown")
        if settings.auth == "open" and request.app[AUTH].token_ok(key):
            # it would be kept as a user id, in the clear (with AUTH=keys it is simply not a
            # key: the same 401 as any unknown one, so the answer tells a guesser nothing)
            raise HeyGenError(401, "unauthorized", "the admin token is not an API key")
    if settings.auth == "keys" or key.startswith(KEY_PREFIX):
        identity = await request.app[KEYS].lookup(key)
        if identity is None:
            raise HeyGenError(401, "unauthorized", "unknown or revoked API key")
        return Caller(
            identity.user_id, "free" if identity.role is Role.FREE else settings.heygen_plan
        )
    wrong = invalid(f"{PLAN_HEADER} must be one of {', '.join(PLAN_CONCURRENCY)}", PLAN_HEADER)
    named = one_header(request, PLAN_HEADER, wrong)
    plan = (request.app[SETTINGS].heygen_plan if named is None else named).strip().lower()
    if plan not in PLAN_CONCURRENCY:
        raise wrong
    return Caller(key, plan)


def role_of(plan: str) -> Role:
    """Paid plans run as dubsim's premium role (first in the queue, PREMIUM_SPEEDUP)."""
    return Role.FREE if plan == "free" else Role.PREMIUM


# ---- the per-job document --------------------------------------------------------------

DOC: Final = "heygen"
IDEMPOTENCY_DOC: Final = "heygen-idempotency"
TRANSLATION: Final = "t"
PROOFREAD: Final = "p"


class Meta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What HeyGen keeps about a job that dubsim's job has not (Store document heygen/<id>)."""

    output_language: str
    title: str | None = None
    video_url: str | None = None
    video_asset_id: str | None = None
    input_language: str | None = None
    callback_id: str | None = None
    callback_url: str | None = None
    mode: str = "speed"
    translate_audio_only: bool = False
    enable_caption: bool = False
    speaker_num: int | None = None
    proofread_id: str | None = None  # a translation generated from this proofread
    srt_url: str | None = None  # a proofread's SRT, as uploaded with PUT .../srt
    srt_asset_id: str | None = None
    deleted: bool = False  # DELETE: gone from the HeyGen API (the dubsim job ages out)


_meta_decoder = msgspec.json.Decoder(Meta)


def tag(kind: str, plan: str, request_id: str, index: int) -> str:
    return f"heygen:{kind}:{plan}:{request_id}:{index}"


def parse_tag(record: Record) -> tuple[str, str] | None:
    """(kind, plan) of a facade job; None for any other job."""
    key = record.idempotency_key
    if key is None or not key.startswith("heygen:"):
        return None
    parts = key.split(":")
    if len(parts) != 5 or parts[2] not in PLAN_CONCURRENCY:
        return None
    return parts[1], parts[2]


def plan_admission(record: Record) -> int | None:
    """The scheduler's admission hook: a facade job's plan bounds its user's running jobs."""
    tagged = parse_tag(record)
    return None if tagged is None else PLAN_CONCURRENCY[tagged[1]]


def language_name(name: str, param: str) -> str:
    """A language as HeyGen spells it (matched without regard to case), or 400."""
    found = _BY_FOLDED.get(name.casefold()) if isinstance(name, str) else None
    if found is None:
        raise invalid(
            f"unsupported language {name[:100]!r}; GET the target languages route for the list",
            param,
        )
    return found


def language_of(code: str) -> str:
    """The HeyGen name of a job's target language code."""
    return _BY_CODE.get(code, code)


def languages(names: list[str], param: str) -> list[str]:
    if not names:
        raise invalid("name at least one output language", param)
    if len(names) > MAX_LANGUAGES:
        raise invalid(f"at most {MAX_LANGUAGES} output languages", param)
    found = [language_name(name, param) for name in names]
    if len(set(found)) != len(found):
        raise invalid("each output language once", param)
    return found


def created_at(record: Record) -> int:
    return int(parse_iso(record.job.created_at))


class _Turns:
    """One document's writers in this process, one at a time."""

    def __init__(self) -> None:
        self.lock = asyncio.Lock()
        self.users = 0


class Facade:
    """The facade's share of the app: links, settings, and the documents' reads and writes."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        settings = app[SETTINGS]
        if settings.admin_token is None:  # create_app refuses this before we get here
            raise ValueError("an admin token is required")
        self.links = Links(settings.admin_token)
        self.ttl_s = settings.result_url_ttl_s
        self.queue = settings.heygen_queue
        # where links in webhook bodies point (no request to take the host from)
        self.base = (settings.public_url or f"http://{settings.host}:{settings.port}").rstrip("/")
        # user -> jobs of requests past the queue-bound check not yet handed to the service
        # (which then counts them itself): concurrent requests each see the others
        self._pending: dict[str, int] = {}
        # what is written (a job id, an endpoint id) -> the turns its writers here take
        self._turns: dict[str, _Turns] = {}

    @property
    def service(self) -> JobService:
        return self.app[SERVICE]

    def link(self, request: web.Request, job_id: str, artifact: str) -> str:
        """An absolute, signed link to an artifact, valid RESULT_URL_TTL_S from now."""
        expires = int(self.service.clock.now() + self.ttl_s)
        return f"{request.scheme}://{request.host}{self.links.path(job_id, artifact, expires)}"

    def public_link(self, job_id: str, artifact: str) -> str:
        """The same link on PUBLIC_URL (or http://HOST:PORT): for webhook bodies."""
        expires = int(self.service.clock.now() + self.ttl_s)
        return self.base + self.links.path(job_id, artifact, expires)

    async def meta(self, record: Record) -> tuple[Meta, int]:
        """The job's document and its version (0: none yet; the defaults then)."""
        doc = await self.service.store.get_doc(DOC, record.job.id)
        if doc is None:
            name = _BY_CODE.get(record.job.target_language, record.job.target_language)
            return Meta(output_language=name), 0
        return _meta_decoder.decode(doc.body), doc.version

    @contextlib.asynccontextmanager
    async def turn(self, name: str) -> AsyncIterator[None]:
        """Requests of this process that write the same thing (a job's document, a webhook
        endpoint) take turns: none loses a compare-and-set race to another of this process,
        and one that follows a delete sees it."""
        turns = self._turns.setdefault(name, _Turns())
        turns.users += 1
        try:
            async with turns.lock:
                yield
        finally:
            turns.users -= 1
            if turns.users == 0:
                del self._turns[name]

    async def update(self, record: Record, change: Callable[[Meta], Meta]) -> Meta:
        """Rewrite the job's document compare-and-set (re-read and retry on a lost race).
        This process's writers of one document take turns (a lock per document), so only
        another process can win a race; many requests at once are all applied, in turn."""
        job_id = record.job.id
        async with self.turn(job_id):
            for attempt in range(10):
                meta, version = await self.meta(record)
                if meta.deleted:  # by a request that went before this one
                    tagged = parse_tag(record)
                    what = "proofread" if tagged and tagged[0] == PROOFREAD else "video translation"
                    raise HeyGenError(404, "not_found", f"no {what} with this id (deleted)")
                new = change(meta)
                try:
                    await self.service.store.put_doc(DOC, job_id, msgspec.json.encode(new), version)
                except VersionConflict:
                    # another process wrote it meanwhile: look again after a moment
                    await asyncio.sleep(0.005 * (attempt + 1) * secrets.randbelow(4))
                    continue
                return new
        raise HeyGenError(
            409,
            "request_in_progress",
            "the item kept changing; try again",
            None,
            {"Retry-After": "1"},
        )

    async def owned(self, caller: Caller, job_id: str, kind: str) -> tuple[Record, Meta]:
        """The caller's facade job of this kind and its document; 404 for anything else
        (another user's job is not found, not forbidden: ids are not confirmed to strangers)."""
        what = "video translation" if kind == TRANSLATION else "proofread"
        try:
            record = await self.service.fetch(job_id)
        except NotFound:
            raise HeyGenError(404, "not_found", f"no {what} with this id") from None
        tagged = parse_tag(record)
        if tagged is None or tagged[0] != kind or record.job.user_id != caller.user_id:
            raise HeyGenError(404, "not_found", f"no {what} with this id")
        meta, _ = await self.meta(record)
        if meta.deleted:
            raise HeyGenError(404, "not_found", f"no {what} with this id (deleted)")
        return record, meta

    async def submit(
        self, request: web.Request, call: Call, kind: str, metas: list[Meta]
    ) -> list[Record]:
        """One dubsim job per document (per output language), each durable with its
        document before this returns. Over the plan's queue bound: 429, nothing made.

        The bound is checked here first (this process's count, with a precise message), then
        by `JobService.submit_all`, which makes the request's new jobs in one store commit
        under `cap=bound`: on Redis the commit script counts the user's unfinished jobs
        across every process, so k languages are admitted only if all k fit."""
        service, caller = self.service, call.caller
        scenario = scenario_of(request)
        bound = PLAN_CONCURRENCY[caller.plan] + self.queue
        user = caller.user_id
        keys = [tag(kind, caller.plan, call.request_id, index) for index in range(len(metas))]

        # more languages than the plan could ever hold at once: no wait helps (the bound is
        # fixed while the process runs), so not a 429 whose Retry-After a client obeys for ever
        if len(metas) > bound:
            raise invalid(
                f"the {caller.plan} plan holds at most {bound} unfinished jobs "
                f"({PLAN_CONCURRENCY[caller.plan]} running, {self.queue} waiting): "
                f"ask for at most {bound} output languages in one request",
                "output_languages",
            )

        def over() -> bool:
            # a retry (Idempotency-Key) finds the jobs its first try made: those count already
            new = sum(service.find_by_key(user, key) is None for key in keys)
            return service.in_flight(user) + self._pending.get(user, 0) + new > bound

        if over() and service.store.shared:
            await service.store.sync()  # jobs finished on another process a moment ago
        if over():
            wait = service.config.translation_delay
            raise HeyGenError(
                429,
                "rate_limit_exceeded",
                f"the {caller.plan} plan runs {PLAN_CONCURRENCY[caller.plan]} jobs at once and "
                f"queues {self.queue} more; wait for some to finish",
                None,
                _retry_after(wait),
            )
        held = sum(service.find_by_key(user, key) is None for key in keys)
        self._hold(user, held)  # before any await: a concurrent request sees these at once
        try:
            callbacks = sorted({m.callback_url for m in metas if m.callback_url is not None})
            if callbacks:
                await self.prepare_callbacks(caller.user_id, callbacks)
        finally:
            # handed over: submit_all counts them before its first await (none from here)
            self._hold(user, -held)
        role = role_of(caller.plan)
        # callback_id/url ride on the job too: the webhook transformer reads them from the
        # committed event (heygen_webhooks.py), with no document read on the way
        submits = [
            (
                SubmitRequest(
                    role=role,
                    target_language=LANGUAGES[meta.output_language],
                    scenario=scenario,
                    callback_url=meta.callback_url,
                    callback_id=meta.callback_id,
                ),
                key,
            )
            for meta, key in zip(metas, keys, strict=True)
        ]
        made, refused = await service.submit_all(user, submits, cap=bound)
        records: list[Record] = []
        for meta, (record, _, _) in zip(metas, made, strict=False):
            # expect=0: a job found again by a retry keeps the document it has
            with contextlib.suppress(VersionConflict):
                await service.store.put_doc(DOC, record.job.id, msgspec.json.encode(meta), 0)
            records.append(record)
        if refused is not None:  # the hourly window: none of this request's jobs was made
            raise refused
        return records

    def _hold(self, user: str, delta: int) -> None:
        left = self._pending.get(user, 0) + delta
        if left > 0:
            self._pending[user] = left
        else:
            self._pending.pop(user, None)

    async def prepare_callbacks(self, user_id: str, urls: list[str]) -> None:
        """Before a job with a callback_url exists: a valid URL (400 naming callback_url), and
        the user's HeyGen lane for its origin, durable (unsigned HeyGen bodies to each job's
        callback_url)."""
        webhooks = self.app[WEBHOOKS]
        for url in urls:
            try:
                await webhooks.validate_url(url)
            except ServiceError as exc:
                raise invalid(f"callback_url: {exc.message}", "callback_url") from None
        for url in urls:  # each URL's origin gets its own lane (docs/webhooks.md)
            await webhooks.ensure_lane(
                user_id, name=LANE, transform=transform_name(HEYGEN_EVENTS), signed=False, url=url
            )

    async def sweep(self) -> int:
        """Delete expired Idempotency-Key records and the documents of jobs that are gone
        (JOB_TTL_S deleted them). Returns how many documents went."""
        service = self.service
        store = service.store
        now = service.clock.now()
        gone = 0
        for doc in await store.docs(IDEMPOTENCY_DOC):
            held = _idem_decoder.decode(doc.body)
            if now - held.created_at >= IDEMPOTENCY_TTL_S:
                with contextlib.suppress(VersionConflict):
                    await store.put_doc(IDEMPOTENCY_DOC, doc.id, None, doc.version)
                    gone += 1
        docs = await store.docs(DOC)
        await store.sync()  # every job whose document we just read is in the read model now
        for doc in docs:
            if service.find(doc.id) is None:
                with contextlib.suppress(VersionConflict):
                    await store.put_doc(DOC, doc.id, None, doc.version)
                    gone += 1
        return gone


def scenario_of(request: web.Request) -> Scenario | None:
    """The scenario every job of this request follows (X-Dubsim-Scenario: JSON), if any."""
    twice = invalid(f"one {SCENARIO_HEADER} per request", SCENARIO_HEADER)
    raw = one_header(request, SCENARIO_HEADER, twice)
    if raw is None:
        return None
    try:
        return decode_json(raw, Scenario)
    except ServiceError as exc:
        raise invalid(f"{SCENARIO_HEADER}: {exc.message}", SCENARIO_HEADER) from None


FACADE = web.AppKey("heygen", Facade)

# ---- Idempotency-Key ---------------------------------------------------------------------

IDEMPOTENCY_TTL_S: Final = 24 * 3600.0  # a key is remembered this long
# a request still "processing" this long after it began died with its process: a retry with
# the same key takes over (and, by the request id, finds the jobs it had made)
IDEMPOTENCY_LOCK_S: Final = 60.0
MAX_IDEMPOTENCY_KEY: Final = 200


class Held(msgspec.Struct):
    """An Idempotency-Key's record (Store document heygen-idempotency/<hash of user+key>)."""

    state: Literal["processing", "failed", "done"]
    fingerprint: str  # what the request that used the key was (`_fingerprint`)
    request_id: str
    created_at: float
    claimed_at: float
    status: int = 0
    body: str = ""


_idem_decoder = msgspec.json.Decoder(Held)


class Call(NamedTuple):
    """What a handler is called with: who, and this request's id (which names its jobs)."""

    caller: Caller
    request_id: str


Handler = Callable[[web.Request, Call], Awaitable[web.Response]]


def _canonical(raw: bytes) -> bytes:
    """JSON as it means: keys sorted, no spacing (the same request however it is spelled);
    anything else as it came."""
    try:
        return msgspec.json.encode(msgspec.json.decode(raw), order="sorted")
    except (msgspec.DecodeError, RecursionError):
        return raw


def _fingerprint(request: web.Request, caller: Caller, body: bytes) -> str:
    """What makes a repeat the same request: method, path and query, the body's JSON, and
    what decides its jobs beside the body: the plan (it names them: `tag`) and the scenario."""
    scenario = request.headers.get(SCENARIO_HEADER)
    parts = [
        f"{request.method} {request.path_qs}".encode(),
        caller.plan.encode(),
        b"-" if scenario is None else b"+" + _canonical(scenario.encode()),
        _canonical(body),
    ]
    return hashlib.sha256(b"\n".join(parts)).hexdigest()


async def _idempotent(
    request: web.Request, caller: Caller, key: str, handler: Handler
) -> web.Response:
    if not (0 < len(key) <= MAX_IDEMPOTENCY_KEY and key.isprintable()):
        raise invalid(
            f"Idempotency-Key must be 1..{MAX_IDEMPOTENCY_KEY} printable characters",
            "Idempotency-Key",
        )
    service = request.app[SERVICE]
    store = service.store
    doc_id = hashlib.sha256(f"{caller.user_id}\n{key}".encode()).hexdigest()
    fingerprint = _fingerprint(request, caller, await request.read())
    for _ in range(5):
        now = service.clock.now()
        doc = await store.get_doc(IDEMPOTENCY_DOC, doc_id)
        request_id, since, expect = secrets.token_urlsafe(12), now, 0
        if doc is not None:
            expect = doc.version
            held = _idem_decoder.decode(doc.body)
            # only successes are remembered: after an error the key may carry another request,
            # which starts afresh (a new request id: none of the failed request's jobs)
            other_after_error = held.fingerprint != fingerprint and held.state == "failed"
            if now - held.created_at < IDEMPOTENCY_TTL_S and not other_after_error:
                if held.fingerprint != fingerprint:
                    raise invalid(
                        "this Idempotency-Key was used with another request in the last 24 h",
                        "Idempotency-Key",
                    )
                if held.state == "done":
                    return json_response(
                        held.body.encode(), held.status, {"Idempotent-Replayed": "true"}
                    )
                if held.state == "processing" and now - held.claimed_at < IDEMPOTENCY_LOCK_S:
                    raise HeyGenError(
                        409,
                        "request_in_progress",
                        "a request with this Idempotency-Key is still being processed",
                        "Idempotency-Key",
                        {"Retry-After": "1"},
                    )
                # failed, or abandoned: run again under the same request id (same jobs)
                request_id, since = held.request_id, held.created_at
        claim = Held("processing", fingerprint, request_id, since, now)
        try:
            version = await store.put_doc(
                IDEMPOTENCY_DOC, doc_id, msgspec.json.encode(claim), expect
            )
        except VersionConflict:
            continue  # someone claimed or finished it meanwhile: look again
        break
    else:
        raise HeyGenError(
            409, "request_in_progress", "this Idempotency-Key is busy", "Idempotency-Key"
        )
    end = msgspec.structs.replace(claim, state="failed")
    try:
        response = await handler(request, Call(caller, request_id))
        if response.status < 300 and isinstance(response.body, bytes):
            answer = response.body.decode()
            end = msgspec.structs.replace(end, state="done", status=response.status, body=answer)
        return response
    finally:
        try:
            await store.put_doc(IDEMPOTENCY_DOC, doc_id, msgspec.json.encode(end), version)
        except (StoreUnavailable, VersionConflict):
            # the request stands; a retry takes over after IDEMPOTENCY_LOCK_S with the same
            # request id, so it finds the same jobs rather than making new ones
            log.warning("could not record the outcome of Idempotency-Key %s", doc_id[:12])


# ---- the route decorator -----------------------------------------------------------------


def route(
    api: Literal["v2", "v3"],
) -> Callable[[Handler], Callable[[web.Request], Awaitable[web.StreamResponse]]]:
    """A HeyGen handler: the caller identified, Idempotency-Key honoured on mutations, and
    every error (ours, the domain's, aiohttp's, a bug's) answered in HeyGen's envelope."""

    def decorate(handler: Handler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        @functools.wraps(handler)
        async def wrapper(request: web.Request) -> web.StreamResponse:
            try:
                caller = await identify(request)
                if request.method not in ("GET", "HEAD"):
                    twice = invalid("one Idempotency-Key per request", "Idempotency-Key")
                    key = one_header(request, "Idempotency-Key", twice)
                    if key is not None:
                        return await _idempotent(request, caller, key, handler)
                return await handler(request, Call(caller, secrets.token_urlsafe(12)))
            except Exception as exc:
                answer = translate_error(exc)
                if answer is None:
                    raise
                if answer.status >= 500 and not isinstance(
                    exc, HeyGenError | StoreUnavailable | Unavailable
                ):
                    log.exception("unhandled error on %s %s", request.method, request.path)
                return error_response(api, answer)

        # the app's guard leaves the credentials of these routes to them (API keys)
        wrapper.own_credentials = True  # type: ignore[attr-defined]
        return wrapper

    return decorate


async def read_fault(request: web.Request, api: str) -> web.Response | None:
    """FAULT_RATE applies to the facade's reads too, answered in HeyGen's envelope."""
    if request.app[SERVICE].config.fault_rate <= 0:
        return None
    fault = await injected_fault(request)
    if fault is None:
        return None
    return error_response(api, HeyGenError(fault.status, "injected_fault", "injected fault"))


def query_choice(request: web.Request, name: str, allowed: tuple[str, ...]) -> str:
    value = request.query.get(name)
    if value is None:
        raise invalid(f"{name} is required ({' or '.join(allowed)})", name)
    if value not in allowed:
        raise invalid(f"{name} must be {' or '.join(allowed)}", name)
    return value


def refuse_the_rest(
    app: web.Application, api: Literal["v2", "v3"], prefix: str, unknown_under: str
) -> None:
    """HeyGen's envelope, after the caller's key is checked, for what the facade does not
    serve (left to the router, it was the /v1 guard's 401 "unknown or revoked API key" for a
    good key): a method a path under `prefix` has not (400 method_not_allowed), and any path
    under `unknown_under` no route has (404). Call after adding the routes: the catch-all
    must come after every route under `unknown_under` (the router takes the first match)."""
    for resource in app.router.resources():
        if not isinstance(resource, web.Resource) or not resource.canonical.startswith(prefix):
            continue
        methods = sorted({r.method for r in resource} - {"HEAD"})
        if hdrs.METH_ANY in methods:
            continue
        allowed = ", ".join(methods)

        async def refuse(request: web.Request, call: Call, allowed: str = allowed) -> web.Response:
            raise HeyGenError(
                400, "method_not_allowed", f"{request.method} is not allowed here ({allowed})"
            )

        resource.add_route(hdrs.METH_ANY, route(api)(refuse))

    async def unknown(request: web.Request, call: Call) -> web.Response:
        raise HeyGenError(404, "not_found", f"no route {request.path[:200]}")

    app.router.add_route(hdrs.METH_ANY, unknown_under + "/{tail:.*}", route(api)(unknown))


# ---- installing ----------------------------------------------------------------------------


def install(app: web.Application) -> Facade:
    """The facade's shared part, once per app: its state, the scheduler's plan admission
    and the sweep of expired documents."""
    if FACADE in app:
        return app[FACADE]
    facade = app[FACADE] = Facade(app)
    app[SCHEDULER].admission = plan_admission
    app.cleanup_ctx.append(_sweeping)
    return facade


SWEEP_EVERY_S: Final = 3600.0


async def _sweeping(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            await asyncio.sleep(SWEEP_EVERY_S)
            try:
                await app[FACADE].sweep()
            except StoreUnavailable:
                pass  # the next sweep tries again
            except Exception:
                log.exception("sweeping HeyGen documents failed; the next sweep tries again")

    task = asyncio.create_task(loop(), name="heygen-sweep")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def failure_message(record: Record) -> str | None:
    return job_failure_message(record.job)


def job_failure_message(job: Job) -> str | None:
    if job.status is Status.PERMANENTLY_FAILED:
        return job.error.message if job.error is not None else "the translation failed"
    if job.status is Status.CANCELLED:
        return f"cancelled: {job.cancel_reason}" if job.cancel_reason else "cancelled"
    return None
