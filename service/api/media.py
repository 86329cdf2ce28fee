"""Media routes: upload an input video (assets); download a job's result and captions.

`POST /v1/assets` streams the body (raw, or the first file of a multipart form) to disk and
answers once ffprobe has checked it. A completed job's artifacts are served by
`GET /v1/jobs/{id}/result` (MP4, with Range/ETag) and `/captions.srt|.vtt`: to anyone holding
a valid signed link (`?expires=&sig=`, service/links.py), otherwise to the job's owner or the
admin. A plain job (no video) gets a small placeholder MP4 and captions of its simulated
script; a job not completed yet gets 409.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Final

from aiohttp import BodyPartReader, web
from aiohttp.typedefs import Handler

from ..appkeys import AUTH, SERVICE
from ..auth import user_id
from ..errors import Conflict, Forbidden, Gone, NotFound, PayloadTooLarge, ValidationFailed
from ..jobs import Record
from ..links import Links
from ..media import PLACEHOLDER, Media, script
from ..models import Status
from ._http import json_response

MEDIA = web.AppKey("media", Media)
CHUNK: Final = 256 * 1024
FILES: Final = {
    "result": "result.mp4",
    "captions.srt": "captions.srt",
    "captions.vtt": "captions.vtt",
}
TYPES: Final = {
    "result": "video/mp4",
    "captions.srt": "application/x-subrip; charset=utf-8",
    "captions.vtt": "text/vtt; charset=utf-8",
}


async def upload(request: web.Request) -> web.Response:
    """POST /v1/assets: a video, raw or multipart (its first file part)."""
    media = request.app[MEDIA]
    owner = user_id(request)
    media.tools.require()
    if (request.content_length or 0) > media.assets.max_bytes:
        raise PayloadTooLarge(
            f"the video is larger than MAX_UPLOAD_MB ({media.assets.max_bytes >> 20} MB)",
            limit_bytes=media.assets.max_bytes,
        )
    if request.content_type.startswith("multipart/"):
        chunks = await _multipart(request)
    else:
        chunks = request.content.iter_chunked(CHUNK)
    asset = await media.assets.ingest(owner, chunks)
    return json_response(asset, 201, {"Location": asset.url})


async def _multipart(request: web.Request) -> AsyncIterator[bytes]:
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise ValidationFailed("the multipart form has no file part", field="file")
        if isinstance(part, BodyPartReader) and part.filename is not None:
            return _part_chunks(part)
        if isinstance(part, BodyPartReader):
            await part.release()


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(CHUNK):
        yield chunk


async def get_asset(request: web.Request) -> web.Response:
    """GET /v1/assets/{id}: its metadata (its owner, or the admin)."""
    media = request.app[MEDIA]
    asset = await media.assets.get(request.match_info["id"])
    if asset.user_id != user_id(request) and not request.app[AUTH].is_admin(request):
        raise NotFound("no asset with this id", asset_id=asset.id)
    return json_response(asset)


def _artifact_handler(artifact: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        return await _artifact(request, artifact)

    handler.__name__ = f"get_{artifact.replace('.', '_')}"
    handler.__doc__ = f"GET /v1/jobs/{{id}}/{artifact}"
    return handler


async def _artifact(request: web.Request, artifact: str) -> web.StreamResponse:
    service, media = request.app[SERVICE], request.app[MEDIA]
    record = await service.fetch(request.match_info["id"])
    _authorize(request, record, media.links, artifact)
    job = record.job
    if job.status is not Status.COMPLETED:
        raise Conflict(
            f"the job is {job.status}: its {artifact} exists once it is completed",
            status=job.status,
        )
    headers = {"Content-Type": TYPES[artifact], "Cache-Control": "private, max-age=3600"}
    if media.handles(record):
        path = media.job_dir(job.id) / FILES[artifact]
        if not path.is_file():
            raise Gone(f"the job's {artifact} is no longer on disk", artifact=artifact)
        return web.FileResponse(path, headers=headers)
    if artifact == "result":
        return web.FileResponse(PLACEHOLDER, headers=headers)
    cues = media.placeholder_captions(record)
    text = script.srt(cues) if artifact == "captions.srt" else script.vtt(cues)
    headers["ETag"] = f'"{job.id}-{artifact}"'
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=text.encode(), headers=headers)


def _authorize(request: web.Request, record: Record, links: Links, artifact: str) -> None:
    query = request.query
    if "sig" in query or "expires" in query:
        now = request.app[SERVICE].clock.now()
        sig, expires = query.get("sig", ""), query.get("expires", "")
        if links.valid(record.job.id, artifact, expires, sig, now):
            return
        if not _owner_or_admin(request, record):
            raise Forbidden(
                "this link has expired or its signature is wrong; ask for the job again",
                reason="link_invalid",
            )
        return
    if not _owner_or_admin(request, record):
        raise Forbidden("only the job's owner or the admin may download its result")


def _owner_or_admin(request: web.Request, record: Record) -> bool:
    return record.job.user_id == user_id(request) or request.app[AUTH].is_admin(request)


def setup(app: web.Application) -> None:
    app.router.add_post("/v1/assets", upload)
    app.router.add_get("/v1/assets/{id}", get_asset)
    for artifact in FILES:
        app.router.add_get(f"/v1/jobs/{{id}}/{artifact}", _artifact_handler(artifact))
