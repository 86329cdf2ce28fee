"""Media routes: upload an input video (assets); download a job's result and captions.

`POST /v1/assets` streams the body (raw, or the first file of a multipart form) to disk and
answers once ffprobe has checked it. A completed job's artifacts are served by
`GET /v1/jobs/{id}/result` (MP4, with Range/ETag) and `/captions.srt|.vtt`: to anyone holding
a valid signed link (`?expires=&sig=`, service/links.py), otherwise to the job's owner or the
admin. A plain job (no video) gets a small placeholder MP4 and captions of its simulated
script; a job not completed yet gets 409.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Final

from aiohttp import BodyPartReader, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Handler
from multidict import CIMultiDict

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
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if isinstance(part, BodyPartReader) and part.filename is not None:
                return _part_chunks(part)
            if isinstance(part, BodyPartReader):
                await part.release()
    except ValueError as exc:  # aiohttp's word for a form it can't parse
        raise _bad_form(exc) from None
    raise ValidationFailed("the multipart form has no file part", field="file")


def _bad_form(exc: ValueError) -> ValidationFailed:
    return ValidationFailed(f"the multipart form is malformed: {exc}"[:200], field="file")


async def _part_chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    try:
        while chunk := await part.read_chunk(CHUNK):
            yield chunk
    except ValueError as exc:
        raise _bad_form(exc) from None


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
        return _FileResponse(path, headers=headers)
    if artifact == "result":
        return _FileResponse(PLACEHOLDER, headers=headers)
    cues = media.placeholder_captions(record)
    text = script.srt(cues) if artifact == "captions.srt" else script.vtt(cues)
    headers["ETag"] = f'"{job.id}-{artifact}"'
    if request.headers.get("If-None-Match") == headers["ETag"]:
        return web.Response(status=304, headers=headers)
    return web.Response(body=text.encode(), headers=headers)


_ONE_RANGE: Final = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE | re.ASCII)


class _FileResponse(web.FileResponse):
    """aiohttp's FileResponse, with the rules of RFC 9110 (section 14) it does not apply.

    A Range that is not one valid byte range (another unit, several ranges, garbage, last
    before first) is ignored: 200 with the whole file, not 416. An `If-Range` naming another
    ETag gets the whole file (aiohttp only compares dates). `bytes=-0` asks for nothing: 416.
    """

    def __init__(self, path: Path, headers: dict[str, str]) -> None:
        super().__init__(path, headers=headers)
        self.file = path

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        rng = request.headers.get(hdrs.RANGE)
        if rng is not None:
            st = await asyncio.to_thread(self.file.stat)
            etag = f'"{st.st_mtime_ns:x}-{st.st_size:x}"'
            if_range = request.headers.get(hdrs.IF_RANGE, "")
            one = _ONE_RANGE.fullmatch(rng.strip())
            headers = CIMultiDict(request.headers)
            if (
                one is None
                or one.group(1) == one.group(2) == ""
                or (one.group(1) and one.group(2) and int(one.group(1)) > int(one.group(2)))
                or (if_range[:1] in ('"', "W") and if_range != etag)
            ):
                del headers[hdrs.RANGE]
                request = request.clone(headers=headers)
            elif one.group(1) == "" and int(one.group(2)) == 0:
                headers[hdrs.RANGE] = f"bytes={st.st_size}-"  # aiohttp's own 416
                request = request.clone(headers=headers)
        return await super().prepare(request)


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
