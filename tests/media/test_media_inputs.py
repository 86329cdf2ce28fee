"""Bad inputs are refused with a clear 4xx naming why, and leave no file behind."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from tests.conftest import ApiFactory, free_port, wait_for_status
from tests.media.conftest import Inputs

ALICE = {"X-User-Id": "alice"}


def parts(media_dir: Path) -> list[Path]:
    return list(media_dir.glob("assets/*.part"))


def leftovers(media_dir: Path) -> list[Path]:
    return [p for p in media_dir.rglob("*") if p.is_file()]


@pytest.mark.parametrize(
    ("name", "status", "code", "reason"),
    [
        ("no_audio", 422, "invalid_video", "no_audio"),
        ("corrupt", 422, "invalid_video", "unreadable"),
        ("truncated", 422, "invalid_video", "unreadable"),
        ("empty", 422, "validation_error", "empty"),
        ("text", 422, "invalid_video", "unreadable"),
        ("too_large", 413, "payload_too_large", None),
        ("too_large_streamed", 413, "payload_too_large", None),
        ("multipart_without_file", 422, "validation_error", None),
    ],
)
async def test_bad_uploads_are_refused_and_leave_nothing(
    api: ApiFactory,
    inputs: Inputs,
    tmp_path: Path,
    name: str,
    status: int,
    code: str,
    reason: str | None,
) -> None:
    client = await api(media_dir=str(tmp_path), max_upload_mb=1)
    kw: dict[str, Any] = {}
    match name:
        case "empty":
            kw["data"] = b""
        case "text":
            kw["data"] = b"hello, I am not a video\n" * 100
        case "too_large":
            kw["data"] = io.BytesIO(b"\0" * ((1 << 20) + 1))
        case "too_large_streamed":  # no Content-Length: caught while streaming

            async def chunks() -> Any:
                for _ in range(40):
                    yield b"\0" * 65536

            kw["data"] = chunks()
        case "multipart_without_file":
            form = aiohttp.FormData(default_to_multipart=True)
            form.add_field("title", "no file here")
            kw["data"] = form
        case _:
            kw["data"] = getattr(inputs, name).read_bytes()
    resp = await client.post("/v1/assets", headers=ALICE, **kw)
    assert resp.status == status, await resp.text()
    error = (await resp.json())["error"]
    assert error["code"] == code and error["message"]
    if reason is not None:
        assert error["details"]["reason"] == reason
    assert leftovers(tmp_path) == []


async def test_multipart_upload_takes_the_file_part(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    form = aiohttp.FormData()
    form.add_field("title", "my clip")
    form.add_field("file", inputs.ok.read_bytes(), filename="clip.mp4", content_type="video/mp4")
    resp = await client.post("/v1/assets", data=form, headers=ALICE)
    assert resp.status == 201, await resp.text()
    asset = await resp.json()
    assert asset["size"] == inputs.ok.stat().st_size
    assert (tmp_path / "assets" / asset["id"]).read_bytes() == inputs.ok.read_bytes()


async def test_an_upload_cut_off_midway_leaves_no_file(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    data = inputs.ok.read_bytes()
    host, port = client.server.host, client.server.port
    _reader, writer = await asyncio.open_connection(host, port)
    writer.write(
        b"POST /v1/assets HTTP/1.1\r\nHost: x\r\nX-User-Id: alice\r\n"
        b"Content-Type: video/mp4\r\nContent-Length: %d\r\n\r\n" % len(data)
    )
    writer.write(data[: len(data) // 2])
    await writer.drain()
    async with asyncio.timeout(10):  # the part file appears while the body streams in
        while not parts(tmp_path):
            await asyncio.sleep(0.01)
    writer.close()
    async with asyncio.timeout(10):
        while leftovers(tmp_path):
            await asyncio.sleep(0.02)
    assert (await client.get("/healthz")).status == 200


async def test_a_job_names_only_its_own_existing_asset(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    client = await api(media_dir=str(tmp_path))
    asset = await (
        await client.post("/v1/assets", data=inputs.ok.read_bytes(), headers=ALICE)
    ).json()
    for user, asset_id in (("bob", asset["id"]), ("alice", "nope"), ("alice", "../x")):
        resp = await client.post(
            "/v1/jobs",
            json={"video": {"type": "asset_id", "asset_id": asset_id}},
            headers={"X-User-Id": user},
        )
        assert resp.status == 422, (user, asset_id)
        assert (await resp.json())["error"]["details"]["reason"] == "unknown_asset"
    resp = await client.get(f"/v1/assets/{asset['id']}", headers={"X-User-Id": "bob"})
    assert resp.status == 404
    resp = await client.post("/v1/jobs", json={"video": {"type": "ftp", "url": "x"}})
    assert resp.status == 422
    jobs = await (await client.get("/v1/jobs", headers={"X-User-Id": "bob"})).json()
    assert jobs["jobs"] == []


async def serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


async def test_a_job_can_fetch_its_video_from_a_url(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    origin = web.Application()
    data = inputs.ok.read_bytes()

    async def video(request: web.Request) -> web.Response:
        return web.Response(body=data, content_type="video/mp4")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(30)
        return web.Response(body=data)

    async def big(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()  # no Content-Length: the size is found while reading
        await resp.prepare(request)
        for _ in range(40):
            await resp.write(b"\0" * 65536)
        return resp

    origin.router.add_get("/clip.mp4", video)
    origin.router.add_get("/slow.mp4", slow)
    origin.router.add_get("/big.mp4", big)
    server = await serve(origin)
    try:
        client = await api(media_dir=str(tmp_path), max_upload_mb=1, media_fetch_timeout_s=1)
        base = f"http://127.0.0.1:{server.port}"
        resp = await client.post(
            "/v1/jobs", json={"video": {"type": "url", "url": f"{base}/clip.mp4"}}, headers=ALICE
        )
        assert resp.status == 201, await resp.text()
        job = await resp.json()
        assert job["video"]["type"] == "asset_id"
        await wait_for_status(client, job["id"], {"completed"}, timeout=60)

        dead = f"http://127.0.0.1:{free_port()}/x.mp4"
        cases = [
            (f"{base}/missing.mp4", "video_unreachable"),
            (dead, "video_unreachable"),
            (f"{base}/slow.mp4", "video_unreachable"),
            (f"{base}/big.mp4", "video_unreachable"),
            ("ftp://example.com/x.mp4", "validation_error"),
            ("file:///etc/passwd", "validation_error"),
        ]
        before = sorted(p.name for p in leftovers(tmp_path))
        for url, code in cases:
            resp = await client.post(
                "/v1/jobs", json={"video": {"type": "url", "url": url}}, headers=ALICE
            )
            assert resp.status == 422, (url, resp.status)
            assert (await resp.json())["error"]["code"] == code, url
        assert sorted(p.name for p in leftovers(tmp_path)) == before
    finally:
        await server.close()


async def test_missing_tools_are_one_clear_422(
    api: ApiFactory, inputs: Inputs, tmp_path: Path
) -> None:
    from service.api.media import MEDIA

    client = await api(media_dir=str(tmp_path))
    client.app[MEDIA].tools.paths["espeak-ng"] = None
    resp = await client.post("/v1/assets", data=inputs.ok.read_bytes(), headers=ALICE)
    assert resp.status == 422
    error = (await resp.json())["error"]
    assert error["code"] == "media_unavailable" and error["details"]["missing"] == ["espeak-ng"]
    resp = await client.post(
        "/v1/jobs", json={"video": {"type": "asset_id", "asset_id": "x"}}, headers=ALICE
    )
    assert resp.status == 422 and (await resp.json())["error"]["code"] == "media_unavailable"
    # plain jobs don't need the tools
    assert (await client.post("/v1/jobs", json={}, headers=ALICE)).status == 201
    assert leftovers(tmp_path) == []
