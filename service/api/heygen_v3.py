"""HeyGen's video translation API, v3: `/v3/video-translations...`, over JobService.

    POST   /v3/video-translations                 one job per output language
    GET    /v3/video-translations                 ?limit=&token= -> has_more, next_token
    GET    /v3/video-translations/languages
    GET    /v3/video-translations/{id}            status pending | running | completed | failed
    PATCH  /v3/video-translations/{id}            {"title"}
    DELETE /v3/video-translations/{id}            cancels it if unfinished; then 404 here
    GET    /v3/video-translations/{id}/caption    ?format=srt|vtt
    POST   /v3/video-translations/proofreads      one proofread job per output language
    GET    /v3/video-translations/proofreads/{id} processing | completed | failed
    GET    /v3/video-translations/proofreads/{id}/srt
    PUT    /v3/video-translations/proofreads/{id}/srt
    POST   /v3/video-translations/proofreads/{id}/generate  -> a new translation job

Success is `{"data": ...}` (the list: `{"data": [...], "has_more", "next_token"}`); errors
`{"error": {"code", "message", "param", "doc_url"}}`. A proofread is a dubsim job too (the
script being transcribed and translated): `processing` until it completes.
"""

from __future__ import annotations

import contextlib
from typing import Annotated, Final, Literal

import msgspec
from aiohttp import web

from ..appkeys import SERVICE
from ..auth import ascii_digits
from ..errors import Conflict
from ..jobs import Record
from ..models import Status
from ._heygen import (
    FACADE,
    LANGUAGES,
    PROOFREAD,
    TRANSLATION,
    Asset,
    AssetId,
    AssetUrl,
    Call,
    Facade,
    Meta,
    Mode,
    Offset,
    Speakers,
    Text,
    Url,
    created_at,
    failure_message,
    install,
    invalid,
    languages,
    ok,
    parse_tag,
    query_choice,
    read_fault,
    refuse_the_rest,
    route,
)
from ._http import json_response, read_json

V3: Final = "v3"
MAX_PAGE: Final = 100

WORDS: Final[dict[Status, str]] = {
    Status.PENDING: "pending",
    Status.PROCESSING: "running",
    Status.FAILED: "running",  # a retry follows
    Status.COMPLETED: "completed",
    Status.PERMANENTLY_FAILED: "failed",
    Status.CANCELLED: "failed",
}
PROOFREAD_WORDS: Final[dict[Status, str]] = {
    Status.PENDING: "processing",
    Status.PROCESSING: "processing",
    Status.FAILED: "processing",
    Status.COMPLETED: "completed",
    Status.PERMANENTLY_FAILED: "failed",
    Status.CANCELLED: "failed",
}

Languages = Annotated[list[Text], msgspec.Meta(min_length=1)]


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """CreateVideoTranslationRequest."""

    video: Asset
    output_languages: Languages
    title: Text | None = None
    translate_audio_only: bool = False
    speaker_num: Speakers | None = None
    callback_id: Text | None = None
    callback_url: Url | None = None
    mode: Mode = "speed"
    enable_caption: bool = False
    input_language: Text | None = None
    audio: Asset | None = None
    srt: Asset | None = None
    srt_role: Literal["input", "output"] | None = None
    brand_voice_id: Text | None = None
    folder_id: Text | None = None
    fps_mode: Text | None = None
    keep_the_same_format: bool | None = None
    disable_music_track: bool = False
    enable_dynamic_duration: bool = True
    enable_speech_enhancement: bool = False
    enable_watermark: bool = False
    start_time: Offset | None = None
    end_time: Offset | None = None


class ProofreadRequest(msgspec.Struct, forbid_unknown_fields=True):
    """CreateProofreadRequest. `title` is required by the published schema though its
    properties omit it; it is accepted here (see tests/contract/README.md)."""

    video: Asset
    output_languages: Languages
    title: Text
    mode: Mode = "speed"
    speaker_num: Speakers | None = None
    srt: Asset | None = None
    brand_voice_id: Text | None = None
    folder_id: Text | None = None
    disable_music_track: bool = False
    enable_speech_enhancement: bool = False
    enable_video_stretching: bool = False
    keep_the_same_format: bool = False


class RenameRequest(msgspec.Struct, forbid_unknown_fields=True):
    """UpdateVideoTranslationRequest: `title` (required; see tests/contract/README.md)."""

    title: Annotated[str, msgspec.Meta(min_length=1, max_length=1000)]


class GenerateRequest(msgspec.Struct, forbid_unknown_fields=True):
    callback_id: Text | None = None
    callback_url: Url | None = None
    captions: bool = False
    translate_audio_only: bool = False


class SrtRequest(msgspec.Struct, forbid_unknown_fields=True):
    srt: Asset


def _video(asset: Asset, param: str) -> tuple[str | None, str | None]:
    """(video_url, video_asset_id); asset ids are recorded, not resolved (a simulation)."""
    if isinstance(asset, AssetUrl):
        if not asset.url.startswith(("http://", "https://")):
            raise invalid(f"{param}.url must be an http(s) URL", f"{param}.url")
        return asset.url, None
    return None, asset.asset_id


def detail(request: web.Request, record: Record, meta: Meta) -> dict[str, object]:
    """VideoTranslationDetail (+ title): links are made anew on each read."""
    job = record.job
    result = None
    if job.status is Status.COMPLETED:
        result = request.app[FACADE].link(request, job.id, "result")
    return {
        "id": job.id,
        "title": meta.title,
        "status": WORDS[job.status],
        "output_language": meta.output_language,
        "input_language": meta.input_language,
        "created_at": created_at(record),
        "duration": None,
        "failure_message": failure_message(record),
        "callback_id": meta.callback_id,
        "translate_audio_only": meta.translate_audio_only,
        "video_url": None if meta.translate_audio_only else result,
        "audio_url": result if meta.translate_audio_only else None,
    }


# ---- translations --------------------------------------------------------------------


async def create(request: web.Request, call: Call) -> web.Response:
    """POST /v3/video-translations -> data.video_translation_ids"""
    body = await read_json(request, CreateRequest, lenient_type=True)
    names = languages(body.output_languages, "output_languages")
    video_url, asset_id = _video(body.video, "video")
    start, end = body.start_time, body.end_time
    if start is not None and end is not None and end <= start:
        raise invalid("end_time must be after start_time", "end_time")
    metas = [
        Meta(
            output_language=name,
            title=body.title,
            video_url=video_url,
            video_asset_id=asset_id,
            input_language=body.input_language,
            callback_id=body.callback_id,
            callback_url=body.callback_url,
            mode=body.mode,
            translate_audio_only=body.translate_audio_only,
            enable_caption=body.enable_caption,
            speaker_num=body.speaker_num,
        )
        for name in names
    ]
    records = await request.app[FACADE].submit(request, call, TRANSLATION, metas)
    return ok(V3, {"video_translation_ids": [record.job.id for record in records]})


async def list_translations(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations?limit=&token= : the caller's, newest first."""
    facade = request.app[FACADE]
    limit = _limit(request.query.get("limit", "10"))
    token = request.query.get("token")
    before = None
    if token is not None:
        if not (ascii_digits(token) and len(token) <= 18):
            raise invalid("token is not one this API gave out", "token")
        before = int(token)
    page: list[tuple[Record, Meta]] = []
    has_more = False
    for record in request.app[SERVICE].select(user=call.caller.user_id, before=before):
        tagged = parse_tag(record)
        if tagged is None or tagged[0] != TRANSLATION:
            continue
        meta, _ = await facade.meta(record)
        if meta.deleted:
            continue
        if len(page) == limit:
            has_more = True
            break
        page.append((record, meta))
    body = {
        "data": [detail(request, record, meta) for record, meta in page],
        "has_more": has_more,
        "next_token": str(page[-1][0].ordinal) if has_more else None,
    }
    return json_response(body)


def _limit(raw: str) -> int:
    if not (ascii_digits(raw) and len(raw) <= 6) or not 1 <= int(raw) <= MAX_PAGE:
        raise invalid(f"limit must be an integer in [1, {MAX_PAGE}]", "limit")
    return int(raw)


async def languages_list(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations/languages"""
    return ok(V3, {"languages": list(LANGUAGES)})


async def get_translation(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations/{id}"""
    fault = await read_fault(request, V3)
    if fault is not None:
        return fault
    facade = request.app[FACADE]
    record, meta = await facade.owned(call.caller, request.match_info["id"], TRANSLATION)
    return ok(V3, detail(request, record, meta))


async def rename(request: web.Request, call: Call) -> web.Response:
    """PATCH /v3/video-translations/{id} {"title"}"""
    facade = request.app[FACADE]
    record, _ = await facade.owned(call.caller, request.match_info["id"], TRANSLATION)
    body = await read_json(request, RenameRequest, lenient_type=True)
    meta = await facade.update(record, lambda m: msgspec.structs.replace(m, title=body.title))
    return ok(V3, detail(request, record, meta))


async def delete(request: web.Request, call: Call) -> web.Response:
    """DELETE /v3/video-translations/{id}: an unfinished one is cancelled first."""
    facade = request.app[FACADE]
    record, _ = await facade.owned(call.caller, request.match_info["id"], TRANSLATION)
    if not record.job.status.terminal:
        with contextlib.suppress(Conflict):  # it finished meanwhile: nothing left to stop
            await request.app[SERVICE].cancel(record.job.id, "deleted through the HeyGen API")
    await facade.update(record, lambda m: msgspec.structs.replace(m, deleted=True))
    return ok(V3, {"id": record.job.id})


async def caption(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations/{id}/caption?format=srt|vtt"""
    facade = request.app[FACADE]
    record, _ = await facade.owned(call.caller, request.match_info["id"], TRANSLATION)
    kind = query_choice(request, "format", ("srt", "vtt"))
    if record.job.status is not Status.COMPLETED:
        raise invalid(
            f"the video translation is {WORDS[record.job.status]}; captions come once completed",
            "video_translation_id",
        )
    return ok(V3, {"caption_url": facade.link(request, record.job.id, f"captions.{kind}")})


# ---- proofreads ------------------------------------------------------------------------


def proofread_detail(record: Record, meta: Meta) -> dict[str, object]:
    return {
        "id": record.job.id,
        "status": PROOFREAD_WORDS[record.job.status],
        "created_at": created_at(record),
        "failure_message": failure_message(record),
        "input_language": meta.input_language,
        "output_language": meta.output_language,
        "submitted_for_review": None,
    }


async def create_proofread(request: web.Request, call: Call) -> web.Response:
    """POST /v3/video-translations/proofreads -> data.proofread_ids, status processing"""
    body = await read_json(request, ProofreadRequest, lenient_type=True)
    names = languages(body.output_languages, "output_languages")
    video_url, asset_id = _video(body.video, "video")
    srt_url, srt_asset = (None, None) if body.srt is None else _srt(body.srt)
    metas = [
        Meta(
            output_language=name,
            title=body.title,
            video_url=video_url,
            video_asset_id=asset_id,
            mode=body.mode,
            speaker_num=body.speaker_num,
            srt_url=srt_url,
            srt_asset_id=srt_asset,
        )
        for name in names
    ]
    records = await request.app[FACADE].submit(request, call, PROOFREAD, metas)
    return ok(V3, {"proofread_ids": [r.job.id for r in records], "status": "processing"})


def _srt(asset: Asset) -> tuple[str | None, str | None]:
    if isinstance(asset, AssetId):
        return None, asset.asset_id
    if not asset.url.startswith(("http://", "https://")):
        raise invalid("srt.url must be an http(s) URL", "srt.url")
    return asset.url, None


async def get_proofread(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations/proofreads/{id}"""
    facade = request.app[FACADE]
    record, meta = await facade.owned(call.caller, request.match_info["id"], PROOFREAD)
    return ok(V3, proofread_detail(record, meta))


async def _completed_proofread(
    request: web.Request, call: Call, facade: Facade
) -> tuple[Record, Meta]:
    record, meta = await facade.owned(call.caller, request.match_info["id"], PROOFREAD)
    if record.job.status is not Status.COMPLETED:
        word = PROOFREAD_WORDS[record.job.status]
        raise invalid(
            "the proofread failed: it has no SRT; make a new one"
            if word == "failed"
            else f"the proofread is {word}; wait until it is completed",
            "proofread_id",
        )
    return record, meta


async def get_srt(request: web.Request, call: Call) -> web.Response:
    """GET /v3/video-translations/proofreads/{id}/srt -> srt_url (the edited one, if any)"""
    facade = request.app[FACADE]
    record, meta = await _completed_proofread(request, call, facade)
    original = facade.link(request, record.job.id, "captions.srt")
    return ok(V3, {"srt_url": meta.srt_url or original, "original_srt_url": original})


async def put_srt(request: web.Request, call: Call) -> web.Response:
    """PUT /v3/video-translations/proofreads/{id}/srt {"srt": {type: url|asset_id, ...}}"""
    facade = request.app[FACADE]
    record, _ = await _completed_proofread(request, call, facade)
    body = await read_json(request, SrtRequest, lenient_type=True)
    url, asset = _srt(body.srt)
    meta = await facade.update(
        record, lambda m: msgspec.structs.replace(m, srt_url=url, srt_asset_id=asset)
    )
    return ok(V3, proofread_detail(record, meta))


async def generate(request: web.Request, call: Call) -> web.Response:
    """POST /v3/video-translations/proofreads/{id}/generate -> a new video translation"""
    facade = request.app[FACADE]
    record, meta = await _completed_proofread(request, call, facade)
    body = await read_json(request, GenerateRequest, lenient_type=True)
    translation = Meta(
        output_language=meta.output_language,
        title=meta.title,
        video_url=meta.video_url,
        video_asset_id=meta.video_asset_id,
        input_language=meta.input_language,
        callback_id=body.callback_id,
        callback_url=body.callback_url,
        mode=meta.mode,
        translate_audio_only=body.translate_audio_only,
        enable_caption=body.captions,
        speaker_num=meta.speaker_num,
        proofread_id=record.job.id,
    )
    made = await facade.submit(request, call, TRANSLATION, [translation])
    return ok(V3, {"video_translation_id": made[0].job.id, "status": "processing"})


def setup(app: web.Application) -> None:
    install(app)
    r, base = app.router, "/v3/video-translations"
    r.add_post(base, route(V3)(create))
    r.add_get(base, route(V3)(list_translations))
    r.add_get(f"{base}/languages", route(V3)(languages_list))
    r.add_post(f"{base}/proofreads", route(V3)(create_proofread))
    r.add_get(f"{base}/proofreads/{{id}}", route(V3)(get_proofread))
    r.add_get(f"{base}/proofreads/{{id}}/srt", route(V3)(get_srt))
    r.add_put(f"{base}/proofreads/{{id}}/srt", route(V3)(put_srt))
    r.add_post(f"{base}/proofreads/{{id}}/generate", route(V3)(generate))
    r.add_get(f"{base}/{{id}}", route(V3)(get_translation))
    r.add_patch(f"{base}/{{id}}", route(V3)(rename))
    r.add_delete(f"{base}/{{id}}", route(V3)(delete))
    r.add_get(f"{base}/{{id}}/caption", route(V3)(caption))
    refuse_the_rest(app, V3, base, base)
