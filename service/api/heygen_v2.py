"""HeyGen's Video Translate API, v2: `/v2/video_translate...`, over JobService.

    POST /v2/video_translate                  one job per output language
    GET  /v2/video_translate/{id}             status pending | running | success | failed
    GET  /v2/video_translate/target_languages
    GET  /v2/video_translate/caption          ?video_translate_id=&caption_type=srt|vtt

Success is `{"error": null, "data": {...}}`; errors `{"error": {"code", "message", "param",
"doc_url"}, "data": null}`. Status words, from dubsim's:

    pending                       pending
    processing, failed (retrying) running
    completed                     success   (url: the signed result link, made anew per read)
    permanently_failed, cancelled failed    (message: why)
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec
from aiohttp import web

from ..jobs import Record
from ..models import Status
from ._heygen import (
    FACADE,
    LANGUAGES,
    TRANSLATION,
    Call,
    Meta,
    Mode,
    Offset,
    Speakers,
    Text,
    Url,
    failure_message,
    install,
    invalid,
    language_name,
    languages,
    ok,
    query_choice,
    read_fault,
    refuse_the_rest,
    route,
)
from ._http import read_json

V2: Final = "v2"

WORDS: Final[dict[Status, str]] = {
    Status.PENDING: "pending",
    Status.PROCESSING: "running",
    Status.FAILED: "running",  # a retry follows
    Status.COMPLETED: "success",
    Status.PERMANENTLY_FAILED: "failed",
    Status.CANCELLED: "failed",
}


class CreateRequest(msgspec.Struct, forbid_unknown_fields=True):
    """MCPVideoTranslateCreateRequest. Fields dubsim has no use for are checked and kept
    out of the way; the ones HeyGen echoes are kept in the job's document."""

    video_url: Url
    output_language: Text | None = None
    output_languages: list[Text] | None = None
    title: Text | None = None
    translate_audio_only: bool = False
    speaker_num: Speakers | None = None
    callback_id: Text | None = None
    callback_url: Url | None = None
    mode: Mode = "speed"
    enable_caption: bool = False
    input_language: Text | None = None
    audio_url: Url | None = None
    srt_url: Url | None = None
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


async def create(request: web.Request, call: Call) -> web.Response:
    """POST /v2/video_translate -> data.video_translate_id (or video_translate_ids)"""
    body = await read_json(request, CreateRequest, lenient_type=True)
    if body.output_language is not None and body.output_languages is not None:
        raise invalid("send output_language or output_languages, not both", "output_languages")
    if body.output_language is not None:
        names = [language_name(body.output_language, "output_language")]
    elif body.output_languages is not None:
        names = languages(body.output_languages, "output_languages")
    else:
        raise invalid("output_language is required", "output_language")
    if not body.video_url.startswith(("http://", "https://")):
        raise invalid("video_url must be an http(s) URL", "video_url")
    start, end = body.start_time, body.end_time
    if start is not None and end is not None and end <= start:
        raise invalid("end_time must be after start_time", "end_time")
    metas = [
        Meta(
            output_language=name,
            title=body.title,
            video_url=body.video_url,
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
    ids = [record.job.id for record in records]
    if body.output_language is not None:
        return ok(V2, {"video_translate_id": ids[0]})
    return ok(V2, {"video_translate_ids": ids})


def status_of(request: web.Request, record: Record, meta: Meta) -> dict[str, object]:
    job = record.job
    done = job.status is Status.COMPLETED
    return {
        "video_translate_id": job.id,
        "title": meta.title,
        "status": WORDS[job.status],
        "url": request.app[FACADE].link(request, job.id, "result") if done else None,
        "message": failure_message(record),
        "output_language": meta.output_language,
        "callback_id": meta.callback_id,
    }


async def status(request: web.Request, call: Call) -> web.Response:
    """GET /v2/video_translate/{video_translate_id}"""
    fault = await read_fault(request, V2)
    if fault is not None:
        return fault
    facade = request.app[FACADE]
    record, meta = await facade.owned(call.caller, request.match_info["id"], TRANSLATION)
    return ok(V2, status_of(request, record, meta))


async def target_languages(request: web.Request, call: Call) -> web.Response:
    """GET /v2/video_translate/target_languages"""
    return ok(V2, {"languages": list(LANGUAGES)})


async def caption(request: web.Request, call: Call) -> web.Response:
    """GET /v2/video_translate/caption?video_translate_id=&caption_type=srt|vtt"""
    job_id = request.query.get("video_translate_id")
    if not job_id:
        raise invalid("video_translate_id is required", "video_translate_id")
    kind = query_choice(request, "caption_type", ("srt", "vtt"))
    facade = request.app[FACADE]
    record, _ = await facade.owned(call.caller, job_id, TRANSLATION)
    if record.job.status is not Status.COMPLETED:
        raise invalid(
            f"the video translation is {WORDS[record.job.status]}; captions come with success",
            "video_translate_id",
        )
    return ok(V2, {"caption_url": facade.link(request, record.job.id, f"captions.{kind}")})


def setup(app: web.Application) -> None:
    install(app)
    app.router.add_post("/v2/video_translate", route(V2)(create))
    app.router.add_get("/v2/video_translate/target_languages", route(V2)(target_languages))
    app.router.add_get("/v2/video_translate/caption", route(V2)(caption))
    app.router.add_get("/v2/video_translate/{id}", route(V2)(status))
    refuse_the_rest(app, V2, "/v2/video_translate", "/v2")
